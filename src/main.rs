//! The `defender-agent` binary: command line, tracing, exit codes (0 success, 1 runtime failure,
//! 2 bad input).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use defender_agent::agent::{self, oneshot};
use defender_agent::config::{self, Config, Severity};
use defender_agent::report::{self, validate};
use defender_agent::status;

/// Exit code for a runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Exit code for bad input (config, arguments, files).
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "defender-agent",
    version,
    about = "Device side of AWS IoT Device Defender: sample the device, publish metrics reports, detect locally."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: sample on a schedule, spool and publish reports over MQTT (mutual TLS).
    Run {
        /// The configuration file. Without it (only with --dry-run) a built-in default is used:
        /// this machine, a report every 10 s, printed to stdout.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print each report to stdout instead of spooling and publishing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Sample this machine twice, one interval apart, and print one metrics report.
    Report {
        /// The configuration file (default: built-in; no AWS account needed).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Report format (default: the config's `report.format`).
        #[arg(long, value_parser = ["json", "cbor"])]
        format: Option<String>,
        /// Key set (default: the config's `report.keys`).
        #[arg(long, value_parser = ["long", "short"])]
        keys: Option<String>,
        /// Seconds between the two samples (the deltas in network_stats cover them).
        #[arg(long, default_value_t = 1)]
        interval_secs: u64,
        /// Write the report to this file (raw bytes; required for CBOR unless stdout is a
        /// terminal, where CBOR is printed as hex).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Check a metrics report file (JSON or CBOR, long or short keys) against the spec.
    Validate {
        /// The report file.
        file: PathBuf,
        /// The file's format (default: sniffed from the content).
        #[arg(long, value_parser = ["json", "cbor"])]
        format: Option<String>,
    },
    /// Check a configuration file: exit 0, or print every problem with key, line and column.
    CheckConfig {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the example configuration (every key, with its default).
    PrintExampleConfig,
    /// Show what the running daemon is doing (from its status file).
    Status {
        /// The configuration file (for the state directory).
        #[arg(long)]
        config: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage local dimensions with the AWS API's verbs (create, describe, update, list, delete).
    Dimensions(defender_agent::manage::cli::DimensionsArgs),
    /// Manage local security profiles with the AWS API's verbs (create, describe, update, list, delete).
    SecurityProfiles(defender_agent::manage::cli::SecurityProfilesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run { config, dry_run } => cmd_run(config.as_deref(), dry_run),
        Command::Report {
            config,
            format,
            keys,
            interval_secs,
            output,
        } => cmd_report(
            config.as_deref(),
            format,
            keys,
            interval_secs,
            output.as_deref(),
        ),
        Command::Validate { file, format } => cmd_validate(&file, format.as_deref()),
        Command::CheckConfig { config } => return check_config(&config),
        Command::PrintExampleConfig => {
            print!("{}", config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config, json } => cmd_status(&config, json),
        Command::Dimensions(a) => return defender_agent::manage::cli::run_dimensions(a),
        Command::SecurityProfiles(a) => {
            return defender_agent::manage::cli::run_security_profiles(a)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("defender-agent: {e:#}");
            let bad_input = e
                .chain()
                .any(|c| c.downcast_ref::<config::Error>().is_some());
            ExitCode::from(if bad_input {
                EXIT_BAD_INPUT
            } else {
                EXIT_FAILURE
            })
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    // `DEFENDER_AGENT_LOG=info,defender_agent=debug` style directives. `Targets` needs no regex
    // engine (EnvFilter's would add about half a megabyte to the binary).
    let filter = std::env::var("DEFENDER_AGENT_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .init();
}

/// Loads `--config`, printing warnings; `None` = the built-in default.
fn load_config(path: Option<&Path>) -> anyhow::Result<(Config, bool)> {
    match path {
        Some(p) => {
            let c = Config::load(p)?;
            for w in &c.warnings {
                tracing::warn!("{}: {w}", p.display());
            }
            Ok((c, true))
        }
        None => Ok((Config::builtin(), false)),
    }
}

fn cmd_run(path: Option<&Path>, dry_run: bool) -> anyhow::Result<ExitCode> {
    let (mut config, from_file) = load_config(path)?;
    if !from_file {
        if !dry_run {
            anyhow::bail!("`run` needs --config FILE (or --dry-run to print reports from a built-in configuration)");
        }
        // Built-in demo: this machine, short intervals, nothing written outside a scratch dir.
        config.collect.sample_interval = Duration::from_secs(5);
        config.report.interval = Duration::from_secs(10);
        config.report.startup_jitter = Duration::ZERO;
        config.state_dir = agent::scratch_state_dir();
        tracing::info!(
            "Built-in configuration: a report every 10 s, printed to stdout (Ctrl-C stops)."
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let opts = agent::RunOptions {
        dry_run,
        config_path: path.map(Path::to_owned),
    };
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        spawn_signal_handlers(shutdown.clone(), reload_tx)?;
        agent::run(config, opts, shutdown, reload_rx).await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM and SIGINT cancel `shutdown`; SIGHUP asks for a configuration reload.
fn spawn_signal_handlers(
    shutdown: tokio_util::sync::CancellationToken,
    reload: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down."); shutdown.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down."); shutdown.cancel(); }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading the configuration."); let _ = reload.try_send(()); }
            }
        }
    });
    Ok(())
}

fn cmd_report(
    path: Option<&Path>,
    format: Option<String>,
    keys: Option<String>,
    interval_secs: u64,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (config, from_file) = load_config(path)?;
    let opts = oneshot::Options {
        format: format.map(|f| f.parse()).transpose()?,
        keys: keys.map(|k| k.parse()).transpose()?,
        interval: Duration::from_secs(interval_secs),
        persist_id: from_file,
    };
    let (encoded, notes) = oneshot::report_once(&config, &opts)?;
    for n in notes {
        tracing::warn!("{n}");
    }
    match (output, encoded.format) {
        (Some(path), _) => std::fs::write(path, &encoded.bytes)
            .with_context(|| format!("cannot write {}", path.display()))?,
        (None, report::Format::Json) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&encoded.bytes)?;
            out.write_all(b"\n")?;
        }
        (None, report::Format::Cbor) => {
            if std::io::stdout().is_terminal() {
                println!("{}", agent::hex(&encoded.bytes));
            } else {
                std::io::stdout().lock().write_all(&encoded.bytes)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_validate(file: &Path, format: Option<&str>) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let format: Option<report::Format> = format.map(str::parse).transpose()?;
    let problems = validate::validate(&bytes, format);
    let errors = problems.iter().filter(|p| p.is_error()).count();
    for p in &problems {
        let at = if p.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", p.path)
        };
        println!("{}: {}: {at}{}", file.display(), p.severity, p.message);
    }
    if errors == 0 {
        println!("{}: valid metrics report", file.display());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{}: {errors} error(s)", file.display());
        Ok(ExitCode::from(EXIT_BAD_INPUT))
    }
}

fn cmd_status(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let s = match status::read(&config.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("defender-agent: {e}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    let alive = status::process_alive(s.pid);
    if json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("running".into(), serde_json::Value::Bool(alive));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        print!("{}", status::render(&s, alive, now));
    }
    Ok(ExitCode::SUCCESS)
}

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("{}: {w}", path.display());
            }
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(config::Error::Invalid { origin, problems }) => {
            for p in &problems {
                eprintln!("{origin}: {p}");
            }
            let n = problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .count();
            eprintln!("{origin}: {n} error(s)");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

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
    /// Local Detect: validate behaviors, replay recorded input through profiles.
    Detect {
        #[command(subcommand)]
        command: DetectCommand,
    },
    /// Query and annotate the violation store (the Device Defender list APIs, locally).
    Violations {
        #[command(subcommand)]
        command: ViolationsCommand,
    },
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

#[derive(Subcommand)]
enum DetectCommand {
    /// ValidateSecurityProfileBehaviors: prints `{"valid":…,"validationErrors":[…]}` per file;
    /// exit 0 when all are valid, 2 when not.
    Validate {
        /// Files holding `{"behaviors":[…]}`, a profile document, or a list of behaviors
        /// (JSON, or TOML by the `.toml` extension).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Dimension documents (files or directories) the behaviors may name.
        #[arg(long)]
        dimension: Vec<PathBuf>,
        /// Custom metric documents (files or directories) the behaviors may name.
        #[arg(long)]
        custom_metric: Vec<PathBuf>,
    },
    /// Runs JSON-lines input through profiles; prints the ListViolationEvents response (newest
    /// first) and, with --active, the ListActiveViolations response as a second document.
    Replay {
        /// Profile documents (files or directories).
        #[arg(long, required = true)]
        profile: Vec<PathBuf>,
        /// Dimension documents.
        #[arg(long)]
        dimension: Vec<PathBuf>,
        /// Custom metric documents.
        #[arg(long)]
        custom_metric: Vec<PathBuf>,
        /// The thing name put in events (also the client id for `${iot:ClientId}`).
        #[arg(long, default_value = "thing")]
        thing_name: String,
        /// The JSON-lines input.
        #[arg(long)]
        input: PathBuf,
        /// Also print the active violations at the end.
        #[arg(long)]
        active: bool,
        /// How profiles are checked: strict (default: every rule) or load.
        #[arg(long, value_parser = ["strict", "load"], default_value = "strict")]
        mode: String,
        /// Evaluate aws:disconnect-duration with the unverified reconstruction (spec §2.3).
        #[arg(long)]
        disconnect_duration: bool,
        /// Statistical thresholds, as `[detect] statistical`: off (not evaluated) or
        /// local-history (nearest-rank percentile of this device's own history, spec §3.5).
        #[arg(long, value_parser = ["off", "local-history"], default_value = "off")]
        statistical: String,
        /// ML behaviors, as `[detect] ml`: off (not evaluated) or local-baseline (robust z
        /// against this device's 14-day baseline, not AWS ML Detect; spec §7.2).
        #[arg(long, value_parser = ["off", "local-baseline"], default_value = "off")]
        ml: String,
    },
}

#[derive(clap::Args)]
struct ViolationFilters {
    /// The daemon's configuration file (for the state directory).
    #[arg(long)]
    config: PathBuf,
    /// Filter by thing name.
    #[arg(long)]
    thing_name: Option<String>,
    /// Filter by security profile.
    #[arg(long)]
    security_profile_name: Option<String>,
    /// STATIC, STATISTICAL or MACHINE_LEARNING.
    #[arg(long)]
    behavior_criteria_type: Option<String>,
    /// true: only suppressed; false: only unsuppressed; absent: all.
    #[arg(long)]
    list_suppressed_alerts: Option<String>,
    /// FALSE_POSITIVE, BENIGN_POSITIVE, TRUE_POSITIVE or UNKNOWN.
    #[arg(long)]
    verification_state: Option<String>,
    /// 1..250 (default 250).
    #[arg(long, allow_negative_numbers = true)]
    max_results: Option<i64>,
    /// The token of the previous page.
    #[arg(long)]
    next_token: Option<String>,
}

#[derive(Subcommand)]
enum ViolationsCommand {
    /// ListViolationEvents: events in [start, end], newest first.
    List {
        /// Inclusive start: epoch seconds or RFC 3339.
        #[arg(long, allow_negative_numbers = true)]
        start_time: String,
        /// Inclusive end: epoch seconds or RFC 3339.
        #[arg(long, allow_negative_numbers = true)]
        end_time: String,
        #[command(flatten)]
        filters: ViolationFilters,
    },
    /// ListActiveViolations (as saved by the daemon).
    Active {
        #[command(flatten)]
        filters: ViolationFilters,
    },
    /// PutVerificationStateOnViolation.
    Verify {
        /// The violation id.
        violation_id: String,
        /// FALSE_POSITIVE, BENIGN_POSITIVE, TRUE_POSITIVE or UNKNOWN.
        #[arg(long)]
        state: String,
        /// A description (≤ 1000 characters).
        #[arg(long)]
        description: Option<String>,
        /// The daemon's configuration file (for the state directory).
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tune_malloc();
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
        Command::Detect { command } => detect_cli::run_detect(command),
        Command::Violations { command } => detect_cli::run_violations(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("defender-agent: {}", error_text(&e));
            let bad_input = e.chain().any(|c| {
                c.downcast_ref::<config::Error>().is_some()
                    || c.downcast_ref::<defender_agent::detect_files::Error>()
                        .is_some()
                    || c.downcast_ref::<defender_agent::detect::replay::ReplayError>()
                        .is_some()
                    || c.downcast_ref::<defender_agent::detect::ParseError>()
                        .is_some()
            });
            ExitCode::from(if bad_input {
                EXIT_BAD_INPUT
            } else {
                EXIT_FAILURE
            })
        }
    }
}

/// glibc malloc for a small, long-running daemon: one arena (the sampling thread would otherwise
/// get its own, which keeps its high-water mark), and a fixed mmap threshold (glibc raises it after
/// every large free, after which big short-lived buffers stay resident on the heap).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
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
            // No ANSI colours: logs go to journald or a file on a gateway.
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr),
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

/// `detect …` and `violations …`. Bad input exits 2: file and replay errors as a message on
/// stderr; API errors as the API's JSON body (`{"__type":"InvalidRequestException",…}`) on stderr.
mod detect_cli {
    use std::path::Path;
    use std::process::ExitCode;

    use anyhow::Context;
    use defender_agent::config::Config;
    use defender_agent::detect::query::{ListActiveViolationsRequest, ListViolationEventsRequest};
    use defender_agent::detect::replay::ReplayDocument;
    use defender_agent::detect::{
        self, replay, validate_behaviors_text, ApiError, EngineSettings, Mode, ValidationContext,
    };
    use defender_agent::detect_files;
    use defender_agent::store::violations::ViolationStore;

    use super::{DetectCommand, ViolationsCommand, EXIT_BAD_INPUT};

    pub fn run_detect(cmd: DetectCommand) -> anyhow::Result<ExitCode> {
        match cmd {
            DetectCommand::Validate {
                files,
                dimension,
                custom_metric,
            } => {
                let ctx = ValidationContext::new(
                    detect_files::load_dimensions(&dimension, Mode::Strict)?,
                    detect_files::load_custom_metrics(&custom_metric)?,
                );
                let mut all_valid = true;
                for f in &files {
                    let doc = detect_files::read_doc(f)?;
                    let r = validate_behaviors_text(&doc.text, &doc.name(), doc.format, &ctx)?;
                    all_valid &= r.valid;
                    println!("{}", serde_json::to_string_pretty(&r)?);
                }
                Ok(if all_valid {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_BAD_INPUT)
                })
            }
            DetectCommand::Replay {
                profile,
                dimension,
                custom_metric,
                thing_name,
                input,
                active,
                mode,
                disconnect_duration,
                statistical,
                ml,
            } => {
                let mode = if mode == "load" {
                    Mode::Load
                } else {
                    Mode::Strict
                };
                let loaded = detect_files::load_all(&profile, &dimension, &custom_metric, mode)?;
                let ctx = loaded.context();
                let mut settings = EngineSettings::new(&thing_name);
                // Replay lines carry the connection's source IP explicitly.
                settings.source_ip_from_connection = true;
                settings.disconnect_duration = disconnect_duration;
                if statistical == "local-history" {
                    settings.statistical = detect::StatMode::LocalHistory;
                }
                if ml == "local-baseline" {
                    settings.ml = detect::MlMode::LocalBaseline;
                }
                let profiles: Vec<_> = loaded.profiles.iter().map(|p| p.profile.clone()).collect();
                let engine = detect::DetectEngine::new(settings, &profiles, &ctx);
                for d in loaded
                    .profiles
                    .iter()
                    .flat_map(|p| &p.diagnostics)
                    .chain(engine.diagnostics())
                {
                    tracing::warn!("{d}");
                }
                let text = std::fs::read_to_string(&input)
                    .with_context(|| format!("cannot read {}", input.display()))?;
                let run = replay::replay(&text, engine, &thing_name)
                    .with_context(|| input.display().to_string())?;
                for n in &run.notes {
                    tracing::warn!("{}: {n}", input.display());
                }
                let events = ReplayDocument {
                    violation_events: run.events_newest_first(),
                    active_violations: None,
                };
                println!("{}", serde_json::to_string_pretty(&events)?);
                if active {
                    let a = detect::query::ListActiveViolationsResponse {
                        active_violations: run.engine.active_violations(),
                        next_token: None,
                    };
                    println!("{}", serde_json::to_string_pretty(&a)?);
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }

    fn open_store(path: &Path) -> anyhow::Result<ViolationStore> {
        let config = Config::load(path)?;
        let (retention, max_events) = match &config.detect {
            Some(d) => (d.retention, d.max_events),
            None => (std::time::Duration::from_secs(14 * 86_400), 100_000),
        };
        Ok(ViolationStore::open(
            &config.state_dir,
            retention,
            max_events,
        )?)
    }

    fn api_error(e: &ApiError) -> ExitCode {
        eprintln!("{}", serde_json::to_string(e).unwrap_or_default());
        ExitCode::from(EXIT_BAD_INPUT)
    }

    fn invalid(m: String) -> ApiError {
        ApiError::InvalidRequest(m)
    }

    fn parse_bool(v: Option<&str>) -> Result<Option<bool>, ApiError> {
        match v {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(o) => Err(invalid(format!(
                "listSuppressedAlerts {o} should be true or false"
            ))),
        }
    }

    /// Epoch seconds (integer or decimal) or RFC 3339 (`2026-11-25T16:00:00Z`, offsets allowed).
    pub fn parse_time(name: &str, s: &str) -> Result<f64, ApiError> {
        let bad = || {
            invalid(format!(
                "{name} {s:?} is not a time: use epoch seconds or RFC 3339"
            ))
        };
        if let Ok(v) = s.parse::<f64>() {
            return if v.is_finite() { Ok(v) } else { Err(bad()) };
        }
        rfc3339(s).ok_or_else(bad)
    }

    fn rfc3339(s: &str) -> Option<f64> {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let t = s.get(r)?;
            t.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| t.parse().ok())
                .flatten()
        };
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let mut i = 19;
        let mut frac = 0.0;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            frac = format!("0.{}", s.get(start..i)?).parse().ok()?;
        }
        let offset = match s.get(i..)? {
            "Z" | "z" => 0,
            o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
                let v = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
                if &o[..1] == "-" {
                    -v
                } else {
                    v
                }
            }
            _ => return None,
        };
        // Days from the civil date (Howard Hinnant's algorithm).
        let (yy, m) = if mo <= 2 {
            (y - 1, mo + 9)
        } else {
            (y, mo - 3)
        };
        let era = yy.div_euclid(400);
        let yoe = yy - era * 400;
        let doy = (153 * m + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some((days * 86_400 + h * 3600 + mi * 60 + se - offset) as f64 + frac)
    }

    pub fn run_violations(cmd: ViolationsCommand) -> anyhow::Result<ExitCode> {
        match cmd {
            ViolationsCommand::List {
                start_time,
                end_time,
                filters: f,
            } => {
                let store = open_store(&f.config)?;
                let req = (|| -> Result<ListViolationEventsRequest, ApiError> {
                    Ok(ListViolationEventsRequest {
                        start_time: parse_time("startTime", &start_time)?,
                        end_time: parse_time("endTime", &end_time)?,
                        thing_name: f.thing_name.clone(),
                        security_profile_name: f.security_profile_name.clone(),
                        behavior_criteria_type: f.behavior_criteria_type.clone(),
                        list_suppressed_alerts: parse_bool(f.list_suppressed_alerts.as_deref())?,
                        verification_state: f.verification_state.clone(),
                        next_token: f.next_token.clone(),
                        max_results: f.max_results,
                    })
                })();
                let req = match req {
                    Ok(r) => r,
                    Err(e) => return Ok(api_error(&e)),
                };
                match store.list_violation_events(&req)? {
                    Ok(resp) => {
                        println!("{}", serde_json::to_string_pretty(&resp)?);
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => Ok(api_error(&e)),
                }
            }
            ViolationsCommand::Active { filters: f } => {
                let store = open_store(&f.config)?;
                let req = parse_bool(f.list_suppressed_alerts.as_deref()).map(|s| {
                    ListActiveViolationsRequest {
                        thing_name: f.thing_name.clone(),
                        security_profile_name: f.security_profile_name.clone(),
                        behavior_criteria_type: f.behavior_criteria_type.clone(),
                        list_suppressed_alerts: s,
                        verification_state: f.verification_state.clone(),
                        next_token: f.next_token.clone(),
                        max_results: f.max_results,
                    }
                });
                let req = match req {
                    Ok(r) => r,
                    Err(e) => return Ok(api_error(&e)),
                };
                match store.list_active_violations(&req)? {
                    Ok(resp) => {
                        println!("{}", serde_json::to_string_pretty(&resp)?);
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => Ok(api_error(&e)),
                }
            }
            ViolationsCommand::Verify {
                violation_id,
                state,
                description,
                config,
            } => {
                let store = open_store(&config)?;
                match store.put_verification_state(&violation_id, &state, description.as_deref())? {
                    Ok(()) => {
                        // The API's response is an empty object.
                        println!("{{}}");
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => Ok(api_error(&e)),
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn times_are_epoch_seconds_or_rfc3339() {
            assert_eq!(parse_time("t", "1764086400").unwrap(), 1_764_086_400.0);
            assert_eq!(
                parse_time("t", "2025-11-25T16:00:00Z").unwrap(),
                1_764_086_400.0
            );
            assert_eq!(
                parse_time("t", "2025-11-25T18:00:00.5+02:00").unwrap(),
                1_764_086_400.5
            );
            assert_eq!(parse_time("t", "1970-01-01T00:00:00Z").unwrap(), 0.0);
            assert!(parse_time("t", "yesterday").is_err());
            assert!(parse_time("t", "2025-13-01T00:00:00Z").is_err());
        }
    }
}

/// The error and its causes, each cause only when the text so far does not already say it
/// (many of our errors include their source's message, and `{:#}` would repeat it).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let m = cause.to_string();
        if text.contains(&m) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&m);
    }
    text
}

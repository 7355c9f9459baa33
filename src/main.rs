//! The `defender-agent` binary: parse the command line, set up tracing, run the verb, map errors
//! to exit codes ([`cli::EXIT_FAILURE`], [`cli::EXIT_BAD_INPUT`]). The verbs live in
//! [`defender_agent::cli`].

use std::process::ExitCode;

use clap::Parser;
use defender_agent::cli::{self, Cli, Command};
use defender_agent::store::definitions;
use defender_agent::{config, detect};

fn main() -> ExitCode {
    tune_malloc();
    let args = Cli::parse();
    init_tracing();
    let result = match args.command {
        Command::Run { config, dry_run } => cli::run::run(config.as_deref(), dry_run),
        Command::Report {
            config,
            format,
            keys,
            interval_secs,
            output,
        } => cli::report::report(
            config.as_deref(),
            format,
            keys,
            interval_secs,
            output.as_deref(),
        ),
        Command::Validate { file, format } => cli::report::validate(&file, format.as_deref()),
        Command::CheckConfig {
            config,
            no_deployment,
        } => return cli::config::check_config(&config, !no_deployment),
        Command::PrintExampleConfig => return cli::config::print_example_config(),
        Command::Status { config, json } => cli::status::status(&config, json),
        Command::Dimensions(a) => return cli::manage::run_dimensions(a),
        Command::SecurityProfiles(a) => return cli::manage::run_security_profiles(a),
        Command::Detect { command } => cli::detect::run(command),
        Command::Violations { command } => cli::violations::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("defender-agent: {}", error_text(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Bad input (exit 2) when a cause is a config, Detect file, replay or profile error; any other
/// failure is a runtime failure (exit 1).
fn exit_code(e: &anyhow::Error) -> u8 {
    let bad_input = e.chain().any(|c| {
        c.downcast_ref::<config::Error>().is_some()
            || c.downcast_ref::<definitions::Error>().is_some()
            || c.downcast_ref::<detect::replay::ReplayError>().is_some()
            || c.downcast_ref::<detect::ParseError>().is_some()
    });
    if bad_input {
        cli::EXIT_BAD_INPUT
    } else {
        cli::EXIT_FAILURE
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

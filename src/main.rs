//! The `defender-agent` binary: command line, tracing, exit codes (0 success, 1 runtime failure,
//! 2 bad input).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use defender_agent::config::{self, Config, Severity};

/// Exit code for bad input (config, arguments, files).
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "defender-agent",
    version,
    about = "Device side of AWS IoT Device Defender: sample, report, detect."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file: exit 0, or print every problem with key, line and column.
    CheckConfig {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the example configuration (every key, with its default).
    PrintExampleConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::PrintExampleConfig => {
            print!("{}", config::EXAMPLE);
            ExitCode::SUCCESS
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("DEFENDER_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn check_config(path: &std::path::Path) -> ExitCode {
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

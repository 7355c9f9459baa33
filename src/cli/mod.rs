//! The command line: the clap tree of `defender-agent` and one file per verb family.
//!
//! `main.rs` parses [`Cli`], sets up tracing, calls the verb and turns an error into an exit code
//! ([`EXIT_FAILURE`], [`EXIT_BAD_INPUT`]). Each verb family has one home here:
//!
//! - [`run`]: `run` (the daemon, signals);
//! - [`report`]: `report` (one report of this machine) and `validate` (check a report file);
//! - [`config`]: `check-config`, `print-example-config`;
//! - [`status`]: `status` (from the daemon's status file);
//! - [`detect`]: `detect validate`, `detect replay`;
//! - [`violations`]: `violations list`, `active`, `verify` (the violation store);
//! - [`manage`]: `dimensions …`, `security-profiles …` (the AWS verbs on local files).
//!
//! Verbs return `anyhow::Result<ExitCode>`: this room is the binary's side of the library (the
//! only place besides `main.rs` that uses `anyhow`); the modules it calls keep typed errors.

pub mod config;
pub mod detect;
pub mod manage;
pub mod report;
pub mod run;
pub mod status;
pub mod violations;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// Exit code for a runtime failure (the OS, the network, a daemon that is not running).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad input (config, arguments, files, API errors).
pub const EXIT_BAD_INPUT: u8 = 2;

/// `defender-agent`: the parsed command line.
#[derive(Parser)]
#[command(
    name = "defender-agent",
    version,
    about = "Device side of AWS IoT Device Defender: sample the device, publish metrics reports, detect locally."
)]
pub struct Cli {
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Subcommand)]
pub enum Command {
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
    /// Check a configuration file and the deployment it describes (TLS files, endpoint, Detect
    /// files, state directory): exit 0, or print every problem with key, line and column.
    CheckConfig {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Check the file's text only, not the files and directories it names: for a template
        /// such as the packaged example, whose certificate paths are placeholders.
        #[arg(long)]
        no_deployment: bool,
    },
    /// Print the example configuration (every key, with its default).
    PrintExampleConfig,
    /// Local Detect: validate behaviors, replay recorded input through profiles.
    Detect {
        /// The detect verb.
        #[command(subcommand)]
        command: detect::DetectCommand,
    },
    /// Query and annotate the violation store (the Device Defender list APIs, locally).
    Violations {
        /// The violations verb.
        #[command(subcommand)]
        command: violations::ViolationsCommand,
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
    Dimensions(manage::DimensionsArgs),
    /// Manage local security profiles with the AWS API's verbs (create, describe, update, list, delete).
    SecurityProfiles(manage::SecurityProfilesArgs),
}

/// Loads `--config`, logging its warnings; `None` = the built-in default. The flag tells whether
/// the configuration came from a file.
fn load_config(path: Option<&Path>) -> anyhow::Result<(crate::config::Config, bool)> {
    match path {
        Some(p) => {
            let c = crate::config::Config::load(p)?;
            for w in &c.warnings {
                tracing::warn!("{}: {w}", p.display());
            }
            Ok((c, true))
        }
        None => Ok((crate::config::Config::builtin(), false)),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        // clap's own checks (duplicate flags, bad defaults, …), which it runs only on use.
        super::Cli::command().debug_assert();
    }
}

//! `check-config` (every problem of the file and its deployment, with key, line and column) and `print-example-config`.

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_BAD_INPUT;
use crate::config::{self, Config, Severity};

/// `check-config --config FILE [--no-deployment]`: the TOML and, unless `deployment` is false,
/// the deployment it describes (TLS files, Detect files, state directory:
/// [`Config::load_checked`], what `run` and a reload check too); warnings and errors on stderr,
/// `FILE: OK` on stdout; exit 2 on any error.
pub fn check_config(path: &Path, deployment: bool) -> ExitCode {
    let loaded = if deployment {
        Config::load_checked(path)
    } else {
        Config::load(path)
    };
    match loaded {
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

/// `print-example-config`: the embedded example, every key with its default.
pub fn print_example_config() -> ExitCode {
    print!("{}", config::EXAMPLE);
    ExitCode::SUCCESS
}

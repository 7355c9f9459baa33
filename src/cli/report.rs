//! `report` (sample this machine and print one metrics report) and `validate` (check a report
//! file against the spec).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::EXIT_BAD_INPUT;
use crate::agent::{self, oneshot};
use crate::report::{self, validate};

/// `report [--config FILE] [--format F] [--keys K] [--interval-secs N] [--output FILE]`.
pub fn report(
    path: Option<&Path>,
    format: Option<String>,
    keys: Option<String>,
    interval_secs: u64,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (config, from_file) = super::load_config(path)?;
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

/// `validate FILE [--format F]`: every problem on stdout; exit 2 when one is an error.
pub fn validate(file: &Path, format: Option<&str>) -> anyhow::Result<ExitCode> {
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

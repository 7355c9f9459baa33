//! `status`: what the running daemon is doing, from its status file.

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_FAILURE;
use crate::config::Config;
use crate::status;

/// `status --config FILE [--json]`: exit 1 when there is no status file to read.
pub fn status(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
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

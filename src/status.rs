//! The status file: what the running daemon is doing, kept in the state directory and read by
//! `defender-agent status`.
//!
//! The daemon rewrites it atomically on every change that matters (connection state, a report
//! published, an answer received, the spool changing); readers never see half a file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store;

/// File name inside the state directory.
pub const FILE_NAME: &str = "status.json";

/// Connection state of the MQTT link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// Starting up, not yet connected.
    Starting,
    /// Trying to connect (or reconnecting after a failure).
    Connecting,
    /// Connected and subscribed.
    Connected,
    /// Connection lost; reconnecting with backoff.
    Disconnected,
    /// No link: `run --dry-run` prints reports instead.
    DryRun,
    /// Shutting down.
    Stopping,
    /// Stopped cleanly.
    Stopped,
}

/// The last report built and spooled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastReport {
    /// Its report id.
    pub id: u64,
    /// When it was built (epoch seconds).
    pub time: u64,
}

/// The last accepted/rejected answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastAnswer {
    /// The report id it answers, when present.
    pub id: Option<u64>,
    /// `accepted` or `rejected`.
    pub status: String,
    /// `ErrorCode` of a rejection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<String>,
    /// `ErrorMessage` of a rejection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    /// When it arrived (epoch seconds).
    pub time: u64,
}

/// Spool depth and history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpoolStatus {
    /// Reports waiting to be published or answered.
    pub pending: u64,
    /// Older reports kept as history under `backlog = "latest"`.
    pub superseded: u64,
    /// Rejected reports kept for inspection.
    pub rejected: u64,
    /// Reports dropped because the spool was full, since the daemon started.
    pub dropped: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// Everything `defender-agent status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Daemon process id.
    pub pid: u32,
    /// Thing name.
    pub thing_name: String,
    /// When the daemon started (epoch seconds).
    pub started_at: u64,
    /// When this file was written (epoch seconds).
    pub updated_at: u64,
    /// Link state.
    pub connection: LinkState,
    /// The last connection error, if any, verbatim.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_error: Option<String>,
    /// The last report spooled.
    pub last_report: Option<LastReport>,
    /// The last answer from Device Defender.
    pub last_answer: Option<LastAnswer>,
    /// The spool.
    pub spool: SpoolStatus,
    /// MQTT traffic counters (`all` and one entry per dimension).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub traffic: Option<serde_json::Value>,
}

/// Where the status file of a state directory is.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Writes the status file atomically.
pub fn write(state_dir: &Path, status: &Status) -> Result<(), store::Error> {
    // Invariant: Status holds only strings, numbers and JSON values: serialisation cannot fail.
    let bytes = serde_json::to_vec_pretty(status).unwrap_or_default();
    // Rewritten every sample: atomic against crashes (rename), but not fsynced, to spare flash
    // wear; after a power loss a stale or empty status file is harmless.
    store::replace(&path(state_dir), &bytes)
}

/// Why the status file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No status file: the daemon has not run with this state directory.
    #[error("no status file at {0}: the daemon has not run with this state directory")]
    Missing(PathBuf),
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not a status file.
    #[error("{path} is not a valid status file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads the status file of a state directory.
pub fn read(state_dir: &Path) -> Result<Status, ReadError> {
    let p = path(state_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing(p)),
        Err(source) => return Err(ReadError::Io { path: p, source }),
    };
    serde_json::from_slice(&bytes).map_err(|source| ReadError::Parse { path: p, source })
}

/// True when a process with this pid exists (the daemon may have died without updating the file).
pub fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Human-readable rendering for `defender-agent status`.
pub fn render(s: &Status, alive: bool, now: u64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "thing:        {}", s.thing_name);
    let state = serde_json::to_value(s.connection)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    if alive {
        let _ = writeln!(
            out,
            "daemon:       running (pid {}), up {}s",
            s.pid,
            now.saturating_sub(s.started_at)
        );
    } else {
        let _ = writeln!(
            out,
            "daemon:       not running (pid {} is gone; status written {}s ago)",
            s.pid,
            now.saturating_sub(s.updated_at)
        );
    }
    let _ = writeln!(out, "connection:   {state}");
    if let Some(e) = &s.last_error {
        let _ = writeln!(out, "last error:   {e}");
    }
    match &s.last_report {
        Some(r) => {
            let _ = writeln!(
                out,
                "last report:  id {} ({}s ago)",
                r.id,
                now.saturating_sub(r.time)
            );
        }
        None => {
            let _ = writeln!(out, "last report:  none yet");
        }
    }
    match &s.last_answer {
        Some(a) => {
            let id = a.id.map_or_else(|| "?".to_owned(), |i| i.to_string());
            let _ = write!(
                out,
                "last answer:  {} for id {id} ({}s ago)",
                a.status,
                now.saturating_sub(a.time)
            );
            if let (Some(c), Some(m)) = (&a.code, &a.message) {
                let _ = write!(out, ": {c}: {m}");
            }
            out.push('\n');
        }
        None => {
            let _ = writeln!(out, "last answer:  none yet");
        }
    }
    let sp = &s.spool;
    let _ = writeln!(
        out,
        "spool:        {} pending, {} superseded, {} rejected, {} dropped, {} bytes",
        sp.pending, sp.superseded, sp.rejected, sp.dropped, sp.bytes
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            pid: 42,
            thing_name: "gw".into(),
            started_at: 1000,
            updated_at: 1300,
            connection: LinkState::Connected,
            last_error: None,
            last_report: Some(LastReport {
                id: 1290,
                time: 1290,
            }),
            last_answer: Some(LastAnswer {
                id: Some(1290),
                status: "rejected".into(),
                code: Some("InvalidPayload".into()),
                message: Some("Malformed metrics report".into()),
                time: 1291,
            }),
            spool: SpoolStatus {
                pending: 1,
                superseded: 2,
                rejected: 1,
                dropped: 0,
                bytes: 900,
            },
            traffic: None,
        }
    }

    #[test]
    fn a_written_status_reads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), sample());
    }

    #[test]
    fn a_missing_status_file_says_the_daemon_has_not_run() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(dir.path()), Err(ReadError::Missing(_))));
    }

    #[test]
    fn the_rendering_shows_the_rejection_code_and_spool_depth() {
        let text = render(&sample(), true, 1300);
        assert!(text.contains("connection:   connected"), "{text}");
        assert!(
            text.contains("InvalidPayload: Malformed metrics report"),
            "{text}"
        );
        assert!(text.contains("1 pending, 2 superseded"), "{text}");
    }
}

//! Durable local state: the last report id, the violation store ([`violations`]), the
//! definitions directories ([`definitions`]: profiles, dimensions, custom metrics), and atomic
//! file writes.
//!
//! Small state files are replaced atomically (write a temporary file, fsync it, rename it over the
//! old one, fsync the directory), so a crash or `kill -9` leaves either the old or the new content,
//! never half of one.

pub mod definitions;
pub mod violations;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A state-file operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct Error {
    /// What was being done (`read`, `write`, `rename`, `create directory`).
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

fn err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error { op, path, source }
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(err("create", &tmp))?;
        f.write_all(bytes).map_err(err("write", &tmp))?;
        f.sync_all().map_err(err("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(err("rename", path))?;
    sync_dir(dir)
}

/// Replaces `path` with `bytes` atomically (a reader sees the old or the new content) but without
/// fsync: for files whose loss in a power cut is harmless.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    fs::write(&tmp, bytes).map_err(err("write", &tmp))?;
    fs::rename(&tmp, path).map_err(err("rename", path))
}

/// Fsyncs a directory so a rename or a new file in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("fsync directory", dir))
}

/// Creates a directory (and parents) if it is missing.
pub fn ensure_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(err("create directory", dir))
}

/// Creates the state directory (and missing parents) if it is missing, private to the agent's
/// user (0700: it holds the spool, the report id and the violation history). An existing
/// directory keeps its mode (systemd's `StateDirectory=` or the operator chose it).
pub fn ensure_state_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err("create directory", dir))
}

/// How far ahead of the clock a stored report id may be: a day. Ids are epoch seconds, pushed
/// ahead of the clock only by a clock stepped back (one second per report, spec D.1).
pub const MAX_REPORT_ID_AHEAD_SECS: u64 = 86_400;

/// The last report id sent, persisted so ids keep increasing across restarts and reboots
/// (spec: metrics-report.md D.1).
#[derive(Debug, Clone)]
pub struct ReportIdFile {
    path: PathBuf,
}

impl ReportIdFile {
    /// File name inside the state directory.
    pub const FILE_NAME: &'static str = "last-report-id";

    /// The file inside `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        ReportIdFile {
            path: state_dir.join(Self::FILE_NAME),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last id, or `None` when the file does not exist. A file that does not hold a number
    /// (corrupt) is reported as an error so the caller can log it and start from the clock.
    pub fn load(&self) -> Result<Option<u64>, Error> {
        match fs::read_to_string(&self.path) {
            Ok(s) => s.trim().parse::<u64>().map(Some).map_err(|e| Error {
                op: "parse",
                path: self.path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("read", &self.path)(e)),
        }
    }

    /// [`ReportIdFile::load`], and an id more than [`MAX_REPORT_ID_AHEAD_SECS`] ahead of
    /// `now_epoch_secs` is an error too (a damaged or hand-edited file: trusted, it would pin every
    /// later id to itself, or past `u64::MAX`), so the caller logs it and starts from the clock.
    pub fn load_plausible(&self, now_epoch_secs: u64) -> Result<Option<u64>, Error> {
        match self.load()? {
            Some(id) if id > now_epoch_secs.saturating_add(MAX_REPORT_ID_AHEAD_SECS) => Err(Error {
                op: "check",
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the stored id {id} is more than a day ahead of the clock ({now_epoch_secs})"),
                ),
            }),
            id => Ok(id),
        }
    }

    /// Persists `id` durably: once the file exists, by overwriting it in place (a fixed width
    /// of 20 digits, then `fdatasync`): no new file, rename or directory fsync per report, one
    /// block rewritten. The write is 21 bytes at offset 0, inside one sector, so it is not torn
    /// in practice; a file that was torn anyway reads as corrupt, is logged, and the ids start
    /// from the clock (as for any corrupt file). A missing file, or one of another size (the
    /// earlier `"{id}\n"` form), is created by [`write_atomic`] first.
    pub fn save(&self, id: u64) -> Result<(), Error> {
        let text = format!("{id:020}\n");
        let bytes = text.as_bytes();
        match OpenOptions::new().write(true).open(&self.path) {
            Ok(mut f)
                if f.metadata()
                    .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64) =>
            {
                f.write_all(bytes).map_err(err("write", &self.path))?;
                f.sync_data().map_err(err("fsync", &self.path))
            }
            _ => write_atomic(&self.path, bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_report_id_is_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = ReportIdFile::new(dir.path());
        assert_eq!(f.load().unwrap(), None);
        f.save(1_717_171_717).unwrap();
        assert_eq!(f.load().unwrap(), Some(1_717_171_717));
        f.save(1_717_171_718).unwrap();
        assert_eq!(f.load().unwrap(), Some(1_717_171_718));
        assert!(!dir.path().join("last-report-id.tmp").exists());
        // In place once it exists: the same inode, the fixed width.
        use std::os::unix::fs::MetadataExt;
        let inode = fs::metadata(f.path()).unwrap().ino();
        f.save(1_717_171_719).unwrap();
        assert_eq!(fs::metadata(f.path()).unwrap().ino(), inode);
        assert_eq!(
            fs::read_to_string(f.path()).unwrap(),
            "00000000001717171719\n"
        );
        assert_eq!(f.load().unwrap(), Some(1_717_171_719));
        // The earlier form (another size) is replaced whole, then written in place.
        fs::write(f.path(), "42\n").unwrap();
        f.save(43).unwrap();
        assert_eq!(f.load().unwrap(), Some(43));
        assert_eq!(fs::metadata(f.path()).unwrap().len(), 21);
    }

    #[test]
    fn a_stored_report_id_more_than_a_day_ahead_of_the_clock_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = ReportIdFile::new(dir.path());
        let now = 1_800_000_000;
        assert_eq!(f.load_plausible(now).unwrap(), None);
        f.save(now + MAX_REPORT_ID_AHEAD_SECS).unwrap();
        assert_eq!(f.load_plausible(now).unwrap(), Some(now + 86_400));
        for implausible in [
            now + MAX_REPORT_ID_AHEAD_SECS + 1,
            i64::MAX as u64,
            u64::MAX,
        ] {
            f.save(implausible).unwrap();
            let e = f.load_plausible(now).unwrap_err();
            assert!(e.to_string().contains("more than a day ahead"), "{e}");
            assert_eq!(
                f.load().unwrap(),
                Some(implausible),
                "load itself is unchanged"
            );
        }
        std::fs::write(f.path(), b"soon").unwrap();
        assert!(f.load_plausible(now).is_err());
    }

    #[test]
    fn a_corrupt_report_id_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(ReportIdFile::FILE_NAME), b"\xff\x00garbage").unwrap();
        let e = ReportIdFile::new(dir.path()).load().unwrap_err();
        assert!(e.to_string().contains("last-report-id"));
    }
}

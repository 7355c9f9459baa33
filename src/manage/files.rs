//! The directory store behind the manage commands: one JSON file per resource, `<name>.json`,
//! holding the Describe shape (what the detect loaders read) plus `localMetadata`. Every write
//! goes through [`crate::store::write_atomic`] (temp file, fsync, rename, directory fsync), so a
//! crash leaves the old or the new file, never half of one.
//!
//! Files placed by hand (JSON or TOML, any file name) are found by the name inside them; a TOML
//! resource can be read and listed but not rewritten (we would lose its comments). Which files
//! count and the bounds are [`crate::store::definitions`]'s, the same as the daemon's.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ManageError, StoredDimension, StoredProfile};
use crate::detect::profile::parse_doc;
use crate::detect::SecurityProfile;
use crate::store::definitions;

/// A store operation that failed on the OS side (exit 1, not an API error).
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Reading a directory or file.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An atomic write or directory sync.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A directory over the definitions store's file bound.
    #[error(transparent)]
    Definitions(definitions::Error),
    /// The record could not be encoded (never write an empty file instead).
    #[error("encode {path}: {source}")]
    Encode {
        /// The file that was not written.
        path: PathBuf,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

/// A resource found in a directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<T> {
    /// Its file.
    pub path: PathBuf,
    /// Its content.
    pub record: T,
}

/// A resource kind's name accessor.
pub trait Named {
    /// The resource name inside the document.
    fn resource_name(&self) -> &str;
}

impl Named for StoredDimension {
    fn resource_name(&self) -> &str {
        &self.dimension.name
    }
}

impl Named for StoredProfile {
    fn resource_name(&self) -> &str {
        &self.profile.security_profile_name
    }
}

/// One directory of resources of type `T`.
#[derive(Debug, Clone)]
pub struct Dir {
    /// The directory.
    pub path: PathBuf,
}

impl Dir {
    /// A store over `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Dir {
        Dir { path: path.into() }
    }

    /// Every readable resource, sorted by file name, and a warning for each file skipped
    /// (malformed, or over the store's size bound). A missing directory is empty.
    pub fn read_all<T: DeserializeOwned + Named>(
        &self,
    ) -> Result<(Vec<Entry<T>>, Vec<String>), FilesError> {
        let (docs, skipped) =
            definitions::read_dir_reporting(&self.path).map_err(|e| self.files_error(e))?;
        let mut out = Vec::new();
        let mut warnings: Vec<String> = skipped
            .iter()
            .map(|e| format!("skipping unreadable file: {e}"))
            .collect();
        for doc in docs {
            match parse_doc::<T>(&doc.text, &doc.name(), doc.format) {
                Ok(record) => out.push(Entry {
                    path: doc.path,
                    record,
                }),
                Err(e) => warnings.push(format!("skipping unreadable file: {e}")),
            }
        }
        Ok((out, warnings))
    }

    fn files_error(&self, e: definitions::Error) -> FilesError {
        match e {
            definitions::Error::Read { path, source } => FilesError::Io {
                op: if path == self.path {
                    "read directory"
                } else {
                    "read"
                },
                path,
                source,
            },
            e => FilesError::Definitions(e),
        }
    }

    /// The resource named `name`, if any.
    pub fn find<T: DeserializeOwned + Named>(
        &self,
        name: &str,
    ) -> Result<Option<Entry<T>>, FilesError> {
        let (all, _) = self.read_all::<T>()?;
        Ok(all.into_iter().find(|e| e.record.resource_name() == name))
    }

    /// The file a new resource named `name` goes to.
    pub fn path_for(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.json"))
    }

    /// Writes `record` atomically to `existing`'s file (or `<name>.json`). A TOML resource is
    /// refused: the caller should edit it by hand.
    pub fn write<T: Serialize + Named>(
        &self,
        record: &T,
        existing: Option<&Path>,
    ) -> Result<Result<PathBuf, ManageError>, FilesError> {
        let path = match existing {
            Some(p) if p.extension().and_then(|e| e.to_str()) == Some("toml") => {
                return Ok(Err(ManageError::InvalidRequest(format!(
                    "{} is defined in the hand-written TOML file {}; edit that file instead",
                    record.resource_name(),
                    p.display()
                ))))
            }
            Some(p) => p.to_owned(),
            None => self.path_for(record.resource_name()),
        };
        if existing.is_none() && path.exists() {
            // A file of that name holds something unreadable or another resource: never clobber.
            return Ok(Err(ManageError::ResourceAlreadyExists(format!(
                "{} exists and does not hold {}",
                path.display(),
                record.resource_name()
            ))));
        }
        crate::store::ensure_dir(&self.path)?;
        let mut bytes = serde_json::to_vec_pretty(record).map_err(|source| FilesError::Encode {
            path: path.clone(),
            source,
        })?;
        bytes.push(b'\n');
        crate::store::write_atomic(&path, &bytes)?;
        Ok(Ok(path))
    }

    /// Removes a resource's file durably.
    pub fn remove(&self, path: &Path) -> Result<(), FilesError> {
        fs::remove_file(path).map_err(|source| FilesError::Io {
            op: "remove",
            path: path.to_owned(),
            source,
        })?;
        crate::store::sync_dir(&self.path)?;
        Ok(())
    }
}

/// An exclusive `flock(2)` on the managed directories, held for one command so two commands
/// never interleave their read-modify-write. Locks the directory itself: no lock file appears
/// among the profiles. Released on drop (closing the descriptors).
#[derive(Debug)]
pub struct DirLock {
    _held: Vec<fs::File>,
}

impl DirLock {
    /// Creates the directories if needed and locks each once (in sorted order, so two commands
    /// cannot deadlock; a directory named twice is locked once).
    pub fn acquire(dirs: &[&Path]) -> Result<DirLock, FilesError> {
        use std::os::fd::AsRawFd;
        let mut paths = Vec::new();
        for d in dirs {
            crate::store::ensure_dir(d)?;
            let canon = fs::canonicalize(d).map_err(|source| FilesError::Io {
                op: "resolve",
                path: d.to_path_buf(),
                source,
            })?;
            paths.push(canon);
        }
        paths.sort();
        paths.dedup();
        let mut held = Vec::new();
        for p in paths {
            let f = fs::File::open(&p).map_err(|source| FilesError::Io {
                op: "open directory",
                path: p.clone(),
                source,
            })?;
            // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if rc != 0 {
                return Err(FilesError::Io {
                    op: "lock directory",
                    path: p,
                    source: std::io::Error::last_os_error(),
                });
            }
            held.push(f);
        }
        Ok(DirLock { _held: held })
    }
}

/// The profiles of a directory (for dimension-in-use checks and list filters).
pub fn profiles(dir: &Dir) -> Result<Vec<SecurityProfile>, FilesError> {
    Ok(dir
        .read_all::<StoredProfile>()?
        .0
        .into_iter()
        .map(|e| e.record.profile)
        .collect())
}

/// Reads the custom metric definitions from files or directories (for STRICT validation);
/// unreadable ones are reported as warnings.
pub fn custom_metrics(paths: &[PathBuf]) -> (Vec<crate::detect::CustomMetric>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            match definitions::list_dir(p) {
                Ok(v) => files.extend(v),
                Err(e @ definitions::Error::TooManyFiles { .. }) => {
                    warnings.push(format!("skipping custom metrics: {e}"))
                }
                // As before the store: a directory that cannot be listed contributes nothing.
                Err(_) => {}
            }
        } else if p.is_file() {
            files.push(p.clone());
        }
    }
    for f in files {
        match definitions::read_doc(&f) {
            Ok(doc) => {
                match crate::detect::load_custom_metric(&doc.text, &doc.name(), doc.format) {
                    Ok(m) => out.push(m),
                    Err(e) => warnings.push(format!("skipping custom metric: {e}")),
                }
            }
            // `<path>: <OS error>`, as before.
            Err(e @ definitions::Error::Read { .. }) => {
                warnings.push(format!("skipping custom metric {e}"))
            }
            Err(e) => warnings.push(format!("skipping custom metric: {e}")),
        }
    }
    (out, warnings)
}

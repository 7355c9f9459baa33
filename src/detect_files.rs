//! The file edge of Detect: reads profile, dimension and custom-metric documents (AWS CLI JSON or
//! the same shapes in TOML) from files or directories and hands their text to `crate::detect`.
//!
//! A directory contributes its `*.json` and `*.toml` files, sorted by name, not recursively.
//! Bounds: a document is at most [`MAX_DOC_BYTES`]; a directory at most [`MAX_DIR_FILES`] documents
//! (more is an error, never a silent cut). spec: detect.md §4 (LOAD / STRICT).

use std::fs;
use std::path::{Path, PathBuf};

use crate::detect::{
    self, CustomMetric, Dimension, Format, LoadError, LoadedProfile, Mode, ValidationContext,
};

/// Largest document read (the biggest DescribeSecurityProfile output is well under 100 KiB).
pub const MAX_DOC_BYTES: u64 = 1024 * 1024;

/// Most documents taken from one directory.
pub const MAX_DIR_FILES: usize = 1000;

/// Why documents could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A document is larger than [`MAX_DOC_BYTES`].
    #[error("{}: {bytes} bytes is more than the {MAX_DOC_BYTES}-byte limit", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// A directory holds more than [`MAX_DIR_FILES`] documents.
    #[error("{}: more than {MAX_DIR_FILES} documents", path.display())]
    TooManyFiles {
        /// The directory.
        path: PathBuf,
    },
    /// A document is malformed or invalid (the message names the file, line, column, field).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Two dimensions or custom metrics share a name.
    #[error("{}: duplicate {what} name {name:?}", path.display())]
    Duplicate {
        /// The second file.
        path: PathBuf,
        /// `dimension` or `custom metric`.
        what: &'static str,
        /// The name.
        name: String,
    },
}

/// One document read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// Where it came from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// JSON or TOML, from the extension.
    pub format: Format,
}

impl Doc {
    /// The name used in messages.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// Everything Detect needs, loaded.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Profiles with their load-time diagnostics.
    pub profiles: Vec<LoadedProfile>,
    /// Dimensions.
    pub dimensions: Vec<Dimension>,
    /// Custom metric definitions.
    pub custom_metrics: Vec<CustomMetric>,
}

impl Loaded {
    /// The validation context of the dimensions and custom metrics.
    pub fn context(&self) -> ValidationContext {
        ValidationContext::new(self.dimensions.clone(), self.custom_metrics.clone())
    }
}

/// Reads every document named by `paths` (files, or directories of `*.json` / `*.toml`).
pub fn read_docs(paths: &[PathBuf]) -> Result<Vec<Doc>, Error> {
    let mut out = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).map_err(|source| Error::Read {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut files = Vec::new();
            let entries = fs::read_dir(p).map_err(|source| Error::Read {
                path: p.clone(),
                source,
            })?;
            for e in entries {
                let e = e.map_err(|source| Error::Read {
                    path: p.clone(),
                    source,
                })?;
                let path = e.path();
                let ext = path.extension().and_then(|x| x.to_str());
                if path.is_file() && matches!(ext, Some("json" | "toml")) {
                    files.push(path);
                    if files.len() > MAX_DIR_FILES {
                        return Err(Error::TooManyFiles { path: p.clone() });
                    }
                }
            }
            files.sort();
            for f in files {
                out.push(read_doc(&f)?);
            }
        } else {
            out.push(read_doc(p)?);
        }
    }
    Ok(out)
}

/// Reads one document.
pub fn read_doc(path: &Path) -> Result<Doc, Error> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let bytes = fs::metadata(path).map_err(read_err)?.len();
    if bytes > MAX_DOC_BYTES {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            bytes,
        });
    }
    let text = fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let format = Format::from_name(&path.to_string_lossy());
    Ok(Doc {
        path: path.to_owned(),
        text,
        format,
    })
}

/// Loads dimensions (names unique).
pub fn load_dimensions(paths: &[PathBuf], mode: Mode) -> Result<Vec<Dimension>, Error> {
    let mut out: Vec<Dimension> = Vec::new();
    for doc in read_docs(paths)? {
        let d = detect::load_dimension(&doc.text, &doc.name(), doc.format, mode)?;
        if out.iter().any(|x| x.name == d.name) {
            return Err(Error::Duplicate {
                path: doc.path,
                what: "dimension",
                name: d.name,
            });
        }
        out.push(d);
    }
    Ok(out)
}

/// Loads custom metric definitions (names unique).
pub fn load_custom_metrics(paths: &[PathBuf]) -> Result<Vec<CustomMetric>, Error> {
    let mut out: Vec<CustomMetric> = Vec::new();
    for doc in read_docs(paths)? {
        let m = detect::load_custom_metric(&doc.text, &doc.name(), doc.format)?;
        if out.iter().any(|x| x.metric_name == m.metric_name) {
            return Err(Error::Duplicate {
                path: doc.path,
                what: "custom metric",
                name: m.metric_name,
            });
        }
        out.push(m);
    }
    Ok(out)
}

/// Loads profiles against `ctx` in `mode`.
pub fn load_profiles(
    paths: &[PathBuf],
    ctx: &ValidationContext,
    mode: Mode,
) -> Result<Vec<LoadedProfile>, Error> {
    let mut out = Vec::new();
    for doc in read_docs(paths)? {
        out.push(detect::load_profile(
            &doc.text,
            &doc.name(),
            doc.format,
            ctx,
            mode,
        )?);
    }
    Ok(out)
}

/// Loads dimensions and custom metrics first, then the profiles against them.
pub fn load_all(
    profiles: &[PathBuf],
    dimensions: &[PathBuf],
    custom_metrics: &[PathBuf],
    mode: Mode,
) -> Result<Loaded, Error> {
    let dimensions = load_dimensions(dimensions, mode)?;
    let custom_metrics = load_custom_metrics(custom_metrics)?;
    let mut loaded = Loaded {
        profiles: Vec::new(),
        dimensions,
        custom_metrics,
    };
    loaded.profiles = load_profiles(profiles, &loaded.context(), mode)?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles")
    }

    #[test]
    fn the_example_directory_loads_in_load_mode() {
        let r = root();
        let l = load_all(
            std::slice::from_ref(&r),
            &[r.join("dimensions")],
            &[r.join("custom-metrics")],
            Mode::Load,
        )
        .unwrap();
        assert!(l.profiles.len() >= 6, "{}", l.profiles.len());
        assert!(!l.dimensions.is_empty());
        assert!(!l.custom_metrics.is_empty());
    }

    #[test]
    fn a_profile_naming_a_missing_dimension_fails_in_strict_mode_naming_the_file() {
        let r = root();
        let e = load_all(&[r.join("scoped-auth-topics.toml")], &[], &[], Mode::Strict).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("scoped-auth-topics.toml"), "{msg}");
    }

    #[test]
    fn a_malformed_file_is_reported_with_its_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        fs::write(&p, "{\n  \"securityProfileName\": \"x\",\n  oops\n}").unwrap();
        let e = load_profiles(&[p], &ValidationContext::default(), Mode::Load).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("bad.json") && msg.contains('3'), "{msg}");
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let e = read_docs(&[PathBuf::from("/nonexistent/p.json")]).unwrap_err();
        assert!(matches!(e, Error::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/p.json"));
    }
}

//! The definitions store: the directories (and files) of security profiles, dimensions and
//! custom metrics, read by the daemon's Detect loading, the `detect` CLI verbs, the manage verbs
//! and an applied push with one set of rules. Writes (atomic, under the directory lock) are the
//! manage side's, through [`crate::store::write_atomic`].
//!
//! The rules, the same for every reader:
//! - a directory contributes its regular `*.json` and `*.toml` files, sorted by name, not
//!   recursively; hidden files (`.name.json`) and the writer's temporary files (`name.json.tmp`)
//!   are not definitions;
//! - a directory holds at most [`MAX_DIR_FILES`] definitions and a document is at most
//!   [`MAX_DOC_BYTES`]; more is an error, never a silent cut;
//! - what is fatal: for the daemon and the `detect` verbs ([`read_docs`], [`load_all`]) every
//!   problem (a path that cannot be read, a bound, a malformed or invalid document, a duplicate
//!   name); for the manage verbs and the push ([`read_dir_reporting`]) a missing directory is an
//!   empty one, a directory or file the OS will not read and a directory over the file bound are
//!   errors, and a document over the size bound or malformed is reported and skipped (so one bad
//!   hand-placed file does not block managing the others); the custom metrics a verb validates
//!   against are read-only context, so every problem with them is reported, none is an error
//!   (`manage::files::custom_metrics`);
//! - an applied push hands Detect the records it validated ([`Validated`], [`load_all_with`]):
//!   they pass the same checks as a file read, and are not read back from disk.
//!
//! spec: detect.md §4 (LOAD / STRICT).

use std::fs;
use std::path::{Path, PathBuf};

use crate::detect::{
    self, CustomMetric, Dimension, Format, LoadError, LoadedProfile, Mode, SecurityProfile,
    ValidationContext,
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

/// Whether a directory entry's name makes it a definition (`*.json`, `*.toml`, not hidden).
pub fn is_definition_name(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden
        && matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("json" | "toml")
        )
}

/// The definition files of `dir`, sorted by name. A directory that cannot be listed is
/// [`Error::Read`] (its `source` says whether it is missing); more than [`MAX_DIR_FILES`] is
/// [`Error::TooManyFiles`].
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_err = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for e in fs::read_dir(dir).map_err(read_err)? {
        let path = e.map_err(read_err)?.path();
        if is_definition_name(&path) && path.is_file() {
            files.push(path);
            if files.len() > MAX_DIR_FILES {
                return Err(Error::TooManyFiles {
                    path: dir.to_owned(),
                });
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads one document (at most [`MAX_DOC_BYTES`]).
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
    let text = fs::read_to_string(path).map_err(read_err)?;
    let format = Format::from_name(&path.to_string_lossy());
    Ok(Doc {
        path: path.to_owned(),
        text,
        format,
    })
}

/// Reads every document named by `paths` (files, or directories of definitions); every problem
/// is fatal (the daemon and the `detect` verbs).
pub fn read_docs(paths: &[PathBuf]) -> Result<Vec<Doc>, Error> {
    let mut out = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).map_err(|source| Error::Read {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            for f in list_dir(p)? {
                out.push(read_doc(&f)?);
            }
        } else {
            out.push(read_doc(p)?);
        }
    }
    Ok(out)
}

/// The documents of one managed directory for a verb or a push: a missing directory is empty;
/// a document over [`MAX_DOC_BYTES`] is returned among the skipped ones; listing and OS read
/// errors and [`Error::TooManyFiles`] are errors.
pub fn read_dir_reporting(dir: &Path) -> Result<(Vec<Doc>, Vec<Error>), Error> {
    let files = match list_dir(dir) {
        Ok(f) => f,
        Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), Vec::new()))
        }
        Err(e) => return Err(e),
    };
    let mut docs = Vec::new();
    let mut skipped = Vec::new();
    for f in files {
        match read_doc(&f) {
            Ok(d) => docs.push(d),
            Err(e @ Error::TooLarge { .. }) => skipped.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok((docs, skipped))
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

/// The managed directories' content as an applied push validated and wrote it: handed to Detect
/// so it does not read back what was just written. Records are in file-name order, each with
/// the file it is in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validated {
    /// The managed profiles directory.
    pub profiles_dir: PathBuf,
    /// Its profiles.
    pub profiles: Vec<(PathBuf, SecurityProfile)>,
    /// The managed dimensions directory.
    pub dimensions_dir: PathBuf,
    /// Its dimensions.
    pub dimensions: Vec<(PathBuf, Dimension)>,
}

/// A parsed definition or a document still to parse.
enum Source<T> {
    Doc(Doc),
    Held(PathBuf, T),
}

/// The definitions named by `paths`, taking the directory `held_dir` from `held` instead of
/// reading it.
fn sources<T: Clone>(
    paths: &[PathBuf],
    held: Option<(&Path, &[(PathBuf, T)])>,
) -> Result<Vec<Source<T>>, Error> {
    let mut out = Vec::new();
    for p in paths {
        match held {
            Some((dir, records)) if dir == p.as_path() => out.extend(
                records
                    .iter()
                    .map(|(path, r)| Source::Held(path.clone(), r.clone())),
            ),
            _ => out.extend(
                read_docs(std::slice::from_ref(p))?
                    .into_iter()
                    .map(Source::Doc),
            ),
        }
    }
    Ok(out)
}

fn dimensions_from(
    paths: &[PathBuf],
    mode: Mode,
    held: Option<&Validated>,
) -> Result<Vec<Dimension>, Error> {
    let held = held.map(|v| (v.dimensions_dir.as_path(), v.dimensions.as_slice()));
    let mut out: Vec<Dimension> = Vec::new();
    for s in sources(paths, held)? {
        let (path, d) = match s {
            Source::Doc(doc) => {
                let d = detect::load_dimension(&doc.text, &doc.name(), doc.format, mode)?;
                (doc.path, d)
            }
            Source::Held(path, d) => {
                let d = detect::check_dimension(d, &path.display().to_string(), mode)?;
                (path, d)
            }
        };
        if out.iter().any(|x| x.name == d.name) {
            return Err(Error::Duplicate {
                path,
                what: "dimension",
                name: d.name,
            });
        }
        out.push(d);
    }
    Ok(out)
}

fn profiles_from(
    paths: &[PathBuf],
    ctx: &ValidationContext,
    mode: Mode,
    held: Option<&Validated>,
) -> Result<Vec<LoadedProfile>, Error> {
    let held = held.map(|v| (v.profiles_dir.as_path(), v.profiles.as_slice()));
    let mut out = Vec::new();
    for s in sources(paths, held)? {
        out.push(match s {
            Source::Doc(doc) => {
                detect::load_profile(&doc.text, &doc.name(), doc.format, ctx, mode)?
            }
            Source::Held(path, p) => {
                detect::check_profile(p, &path.display().to_string(), ctx, mode)?
            }
        });
    }
    Ok(out)
}

/// Loads dimensions (names unique).
pub fn load_dimensions(paths: &[PathBuf], mode: Mode) -> Result<Vec<Dimension>, Error> {
    dimensions_from(paths, mode, None)
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
    profiles_from(paths, ctx, mode, None)
}

/// Loads dimensions and custom metrics first, then the profiles against them.
pub fn load_all(
    profiles: &[PathBuf],
    dimensions: &[PathBuf],
    custom_metrics: &[PathBuf],
    mode: Mode,
) -> Result<Loaded, Error> {
    load_all_with(profiles, dimensions, custom_metrics, mode, None)
}

/// As [`load_all`], with the managed directories taken from what a push validated (`held`)
/// instead of read back; the other paths are read. The records go through the same checks.
pub fn load_all_with(
    profiles: &[PathBuf],
    dimensions: &[PathBuf],
    custom_metrics: &[PathBuf],
    mode: Mode,
    held: Option<&Validated>,
) -> Result<Loaded, Error> {
    let dimensions = dimensions_from(dimensions, mode, held)?;
    let custom_metrics = load_custom_metrics(custom_metrics)?;
    let mut loaded = Loaded {
        profiles: Vec::new(),
        dimensions,
        custom_metrics,
    };
    loaded.profiles = profiles_from(profiles, &loaded.context(), mode, held)?;
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

    const PROFILE: &str = r#"{"securityProfileName":"P","behaviors":[]}"#;

    #[test]
    fn a_directory_with_more_than_the_file_bound_is_an_error_for_every_reader() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..=MAX_DIR_FILES {
            fs::write(dir.path().join(format!("p{i:04}.json")), PROFILE).unwrap();
        }
        let p = dir.path().to_owned();
        assert!(matches!(
            read_docs(std::slice::from_ref(&p)),
            Err(Error::TooManyFiles { .. })
        ));
        assert!(matches!(
            read_dir_reporting(&p),
            Err(Error::TooManyFiles { .. })
        ));
        fs::remove_file(p.join("p0000.json")).unwrap();
        assert_eq!(
            read_docs(std::slice::from_ref(&p)).unwrap().len(),
            MAX_DIR_FILES
        );
    }

    #[test]
    fn a_document_over_the_size_bound_is_fatal_for_the_daemon_and_skipped_by_a_verb() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.json"), PROFILE).unwrap();
        let big = " ".repeat(MAX_DOC_BYTES as usize + 1);
        fs::write(dir.path().join("b.json"), big).unwrap();
        let p = dir.path().to_owned();
        let e = read_docs(std::slice::from_ref(&p)).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        let (docs, skipped) = read_dir_reporting(&p).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].to_string().contains("b.json"), "{}", skipped[0]);
    }

    #[test]
    fn only_visible_json_and_toml_files_are_definitions() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.toml",
            "a.json",
            ".hidden.json",
            "a.json.tmp",
            "notes.txt",
        ] {
            fs::write(dir.path().join(name), PROFILE).unwrap();
        }
        fs::create_dir(dir.path().join("sub.json")).unwrap();
        let names: Vec<String> = list_dir(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.json", "b.toml"]);
    }

    #[test]
    fn a_missing_directory_is_empty_for_a_verb_and_an_error_for_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("absent");
        assert!(read_dir_reporting(&p).unwrap().0.is_empty());
        assert!(matches!(read_docs(&[p]), Err(Error::Read { .. })));
    }

    #[test]
    fn held_records_replace_the_managed_directory_and_are_checked_as_files_are() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("profiles");
        let dimensions = dir.path().join("dimensions");
        fs::create_dir_all(&profiles).unwrap();
        fs::create_dir_all(&dimensions).unwrap();
        // On disk: a profile the push has replaced; it must not be read.
        fs::write(profiles.join("old.json"), "not json").unwrap();
        let p: SecurityProfile = serde_json::from_str(PROFILE).unwrap();
        let held = Validated {
            profiles_dir: profiles.clone(),
            profiles: vec![(profiles.join("P.json"), p)],
            dimensions_dir: dimensions.clone(),
            dimensions: Vec::new(),
        };
        let l = load_all_with(
            std::slice::from_ref(&profiles),
            std::slice::from_ref(&dimensions),
            &[],
            Mode::Load,
            Some(&held),
        )
        .unwrap();
        assert_eq!(l.profiles.len(), 1);
        assert!(load_all(&[profiles], &[dimensions], &[], Mode::Load).is_err());

        let twice: Dimension =
            serde_json::from_str(r#"{"name":"D","type":"TOPIC_FILTER","stringValues":["a/#"]}"#)
                .unwrap();
        let dup = Validated {
            dimensions: vec![
                (held.dimensions_dir.join("a.json"), twice.clone()),
                (held.dimensions_dir.join("b.json"), twice),
            ],
            ..held.clone()
        };
        let e = load_all_with(
            &[],
            std::slice::from_ref(&held.dimensions_dir),
            &[],
            Mode::Load,
            Some(&dup),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Duplicate { .. }), "{e}");
    }
}

//! Deployment checks: what `check-config`, `run` and a SIGHUP reload verify beyond the TOML's
//! text — the TLS files, the Detect files, the state directory — so that a file that passes is
//! one the daemon can start with. Each problem names its key and line, like the TOML's own.
//!
//! The checks read files and never write them (a Detect push directory that `run` would create is
//! not an error here); the Detect files go through the loader and engine that `run` uses, and what
//! `run` would log and carry on with (a diagnostic, a dimension left out) is a warning.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_spanned::Spanned;

use super::{file, line_col, parse_file, Config, Error, Problem, Severity, Validator};
use crate::mqtt::tls;
use crate::store::definitions;

impl Config {
    /// Reads and validates a configuration file, then checks the deployment it describes (see
    /// the module doc): [`Error::Invalid`] lists every problem of both stages; the warnings of
    /// both are in `warnings`. What `check-config`, `run` and a reload use.
    pub fn load_checked(path: &Path) -> Result<Config, Error> {
        let src = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse_checked(&src, &path.display().to_string())
    }

    /// As [`Config::load_checked`] on text; `origin` names it in errors.
    pub fn parse_checked(src: &str, origin: &str) -> Result<Config, Error> {
        let invalid = |problems| Error::Invalid {
            origin: origin.to_owned(),
            problems,
        };
        let file = parse_file(src).map_err(invalid)?;
        let mut v = Validator {
            src,
            problems: Vec::new(),
        };
        let config = v.config(&file);
        if let Some(c) = &config {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            v.problems.extend(check(c, &file, src, now));
        }
        if v.problems.iter().any(|p| p.severity == Severity::Error) {
            return Err(invalid(v.problems));
        }
        let mut config = config.ok_or_else(|| invalid(v.problems.clone()))?;
        config.warnings = v.problems;
        Ok(config)
    }
}

/// Every deployment problem of `config` (validated from `file`, the mirror of `src`) at `now`
/// (Unix seconds).
pub fn check(config: &Config, file: &file::File, src: &str, now: i64) -> Vec<Problem> {
    let mut out = Problems {
        src,
        list: Vec::new(),
    };
    state_dir(&mut out, config, file);
    if let (Some(m), Some(fm)) = (&config.mqtt, &file.mqtt) {
        let fm = fm.get_ref();
        if m.tls {
            let spans = [&fm.ca_file, &fm.cert_file, &fm.key_file];
            tls_files(
                &mut out,
                "mqtt",
                [&m.ca_file, &m.cert_file, &m.key_file],
                spans,
                now,
            );
        }
    }
    if let (Some(t), Some(ft)) = (&config.tap, &file.tap) {
        let ft = ft.get_ref();
        if t.tls {
            let spans = [&ft.ca_file, &ft.cert_file, &ft.key_file];
            tls_files(
                &mut out,
                "tap",
                [&t.ca_file, &t.cert_file, &t.key_file],
                spans,
                now,
            );
        }
    }
    if let (Some(d), Some(fd)) = (&config.detect, &file.detect) {
        detect_files(&mut out, config, d, fd);
    }
    out.list
}

/// The problems found so far, positioned in `src`.
struct Problems<'a> {
    src: &'a str,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn push<T>(&mut self, severity: Severity, key: &str, at: Option<&Spanned<T>>, message: String) {
        self.list.push(Problem {
            severity,
            key: key.to_owned(),
            position: at.map(|s| line_col(self.src, s.span().start)),
            message,
        });
    }
}

fn state_dir(out: &mut Problems<'_>, config: &Config, file: &file::File) {
    let at = file.state_dir.as_ref();
    let dir = &config.state_dir;
    if dir.as_os_str().is_empty() {
        return;
    }
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            let msg = format!("{} exists and is not a directory", dir.display());
            out.push(Severity::Error, "state_dir", at, msg);
            return;
        }
        Ok(_) => {}
        // Created by `run` when missing.
        Err(_) => return,
    }
    let spool_dir = dir.join(crate::spool::DIR_NAME);
    let log = spool_dir.join(crate::spool::LOG_NAME);
    match std::fs::metadata(&spool_dir) {
        Ok(m) if !m.is_dir() => {
            let msg = format!(
                "{} (the spool's directory) is not a directory",
                spool_dir.display()
            );
            out.push(Severity::Error, "state_dir", at, msg);
        }
        _ => {
            if let Ok(m) = std::fs::metadata(&log) {
                if !m.is_file() {
                    let msg = format!("{} (the spool) is not a regular file", log.display());
                    out.push(Severity::Error, "state_dir", at, msg);
                }
            }
        }
    }
}

fn tls_files(
    out: &mut Problems<'_>,
    section: &str,
    paths: [&Path; 3],
    spans: [&Option<Spanned<String>>; 3],
    now: i64,
) {
    // An empty or missing path is already a validation error.
    if paths.iter().any(|p| p.as_os_str().is_empty()) {
        return;
    }
    let [ca, cert, key] = paths;
    for p in tls::check_files(ca, cert, key, now) {
        let index = match p.file {
            tls::TlsFile::Ca => 0,
            tls::TlsFile::Cert => 1,
            tls::TlsFile::Key => 2,
        };
        let severity = if p.warning {
            Severity::Warning
        } else {
            Severity::Error
        };
        let key = format!("{section}.{}", p.file.key());
        out.push(severity, &key, spans[index].as_ref(), p.message);
    }
}

fn detect_files(
    out: &mut Problems<'_>,
    config: &Config,
    d: &crate::detect::Settings,
    fd: &Spanned<file::Detect>,
) {
    // `run` creates the managed directories of [detect.push] when they are missing.
    let managed = |list: &[std::path::PathBuf]| -> Vec<std::path::PathBuf> {
        list.iter()
            .enumerate()
            .filter(|(i, p)| !(d.push.is_some() && *i == 0 && !p.exists()))
            .map(|(_, p)| p.clone())
            .collect()
    };
    let profiles = managed(&d.profiles);
    let dimensions = managed(&d.dimensions);
    let loaded = match definitions::load_all(&profiles, &dimensions, &d.custom_metrics, d.mode) {
        Ok(l) => l,
        Err(e) => {
            out.push(Severity::Error, "detect", Some(fd), e.to_string());
            return;
        }
    };
    let ctx = loaded.context();
    let list: Vec<_> = loaded.profiles.iter().map(|p| p.profile.clone()).collect();
    let engine = crate::detect::engine::DetectEngine::new(
        d.engine_settings(&config.thing_name),
        &list,
        &ctx,
    );
    for diag in loaded
        .profiles
        .iter()
        .flat_map(|p| &p.diagnostics)
        .chain(engine.diagnostics())
    {
        out.push(Severity::Warning, "detect", Some(fd), diag.to_string());
    }
    // The topic filters of the dimensions, as `run` scopes the traffic counters.
    let client_id = config
        .mqtt
        .as_ref()
        .map_or(config.thing_name.as_str(), |m| m.client_id.as_str());
    let (_, mut unusable) = engine.traffic_scopes(client_id);
    for dim in &loaded.dimensions {
        for f in &dim.string_values {
            if let Err(e) = crate::topic_filter::TopicFilter::parse_with_client_id(f, client_id) {
                unusable.push((dim.name.clone(), format!("{f:?}: {e}")));
            }
        }
    }
    unusable.sort();
    unusable.dedup();
    for (dimension, why) in unusable {
        let msg = format!(
            "dimension {dimension}: {why}: not a usable topic filter after client id substitution; `run` leaves it out"
        );
        out.push(Severity::Warning, "detect", Some(fd), msg);
    }
}

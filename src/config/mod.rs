//! Configuration: `file` mirrors the TOML as written; [`Config`] holds validated, typed values.
//!
//! One TOML file configures the agent. Every key is documented, with its default, in
//! `config/agent.example.toml`, which is embedded here as [`EXAMPLE`] and parsed by a test.
//! Problems name the key path and the line and column in the file: every syntax error, or every
//! shape error (unknown key, wrong type) found key by key, is reported; when the shape is right,
//! every semantic problem is collected and reported.
//!
//! Config sits above the modules it sets up: each module owns its `Settings` (plain data, next to
//! the code that uses it), and one function per TOML section, in the file named after it, turns
//! the section into them: `collect.rs` (`[collect]`, `[[custom_metrics]]` → `collect::Settings`),
//! `report.rs`, `mqtt.rs`, `spool.rs`, `tap.rs`, `traffic.rs` (`[[traffic_exports]]` →
//! `traffic::Export`), `detect.rs` (`[detect]`, `[detect.push]` → `detect::Settings`), `alarm.rs`
//! (`[[alarms]]` → `alarm::Output`). This file holds [`Config`], the problems, and the checks
//! that span sections; `deploy.rs` checks the deployment a file describes (TLS, Detect files,
//! state directory: [`Config::load_checked`]).

mod alarm;
mod collect;
mod deploy;
mod detect;
pub mod file;
mod mqtt;
mod report;
mod spool;
mod tap;
mod traffic;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

/// The example configuration, every key with its default (`defender-agent print-example-config`).
pub const EXAMPLE: &str = include_str!("../../config/agent.example.toml");

/// AWS throttles reports to one per 5 minutes per device (spec: metrics-report.md A.4).
pub const AWS_MIN_REPORT_INTERVAL_SECS: u64 = 300;

/// How serious a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// Allowed, but probably not what the operator wants.
    Warning,
}

/// One problem in a configuration file, with the key and its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Dotted key path, e.g. `report.interval_secs` or `custom_metrics[1].type`.
    pub key: String,
    /// 1-based line and column of the key's value, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.position {
            Some((line, col)) => write!(f, "{sev}: line {line}, column {col}: ")?,
            None => write!(f, "{sev}: ")?,
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but has problems (every error and warning found).
    #[error("{}", render_problems(.origin, .problems))]
    Invalid {
        /// The file name (or `<example>`, `<built-in>`).
        origin: String,
        /// Every problem, errors and warnings.
        problems: Vec<Problem>,
    },
}

fn render_problems(origin: &str, problems: &[Problem]) -> String {
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let mut out = format!("{origin}: {errors} error(s) in configuration");
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

/// The validated configuration: each section is its module's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Thing name (≤ 128 bytes, no control characters).
    pub thing_name: String,
    /// State directory (also `spool.dir`).
    pub state_dir: PathBuf,
    /// Grace period for a clean shutdown.
    pub shutdown_timeout: Duration,
    /// `[collect]`, with `[[custom_metrics]]` in file order as its `custom` list.
    pub collect: crate::collect::Settings,
    /// `[report]`.
    pub report: crate::report::Settings,
    /// `[mqtt]`, if present; its `format` is `report.format` and its subscriptions are
    /// `[detect.push]`'s topic.
    pub mqtt: Option<crate::mqtt::Settings>,
    /// `[spool]`, in `state_dir`.
    pub spool: crate::spool::Settings,
    /// `[tap]`, when present and enabled.
    pub tap: Option<crate::tap::Settings>,
    /// `[[traffic_exports]]`.
    pub traffic_exports: Vec<crate::traffic::Export>,
    /// `[detect]`, when present and enabled.
    pub detect: Option<crate::detect::Settings>,
    /// `[[alarms]]`.
    pub alarms: Vec<crate::alarm::Output>,
    /// Warnings found while validating (the file is usable).
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let src = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&src, &path.display().to_string())
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(src: &str, origin: &str) -> Result<Config, Error> {
        let file = parse_file(src).map_err(|problems| Error::Invalid {
            origin: origin.to_owned(),
            problems,
        })?;
        let mut v = Validator {
            src,
            problems: Vec::new(),
        };
        let config = v.config(&file);
        if v.problems.iter().any(|p| p.severity == Severity::Error) {
            return Err(Error::Invalid {
                origin: origin.to_owned(),
                problems: v.problems,
            });
        }
        // Invariant: no errors were recorded, so every required value was present.
        let mut config = config.ok_or_else(|| Error::Invalid {
            origin: origin.to_owned(),
            problems: v.problems.clone(),
        })?;
        config.warnings = v.problems;
        Ok(config)
    }

    /// Whether `other` sets up the agent exactly as this one does: every value but the warnings
    /// (which also carry positions and day counts that change without the settings changing).
    pub fn same_settings(&self, other: &Config) -> bool {
        let plain = |c: &Config| Config {
            warnings: Vec::new(),
            ..c.clone()
        };
        plain(self) == plain(other)
    }

    /// The built-in default used when no `--config` is given: samples this machine, needs no AWS
    /// account and no state directory of its own (a temporary one is used by the callers).
    pub fn builtin() -> Config {
        let src = concat!(
            "thing_name = \"local-device\"\n",
            "state_dir = \"/var/lib/defender-agent\"\n",
            "[[custom_metrics]]\nname = \"cpu_usage\"\ntype = \"number\"\nbuiltin = \"cpu_usage_percent\"\n",
            "[[custom_metrics]]\nname = \"memory_used\"\ntype = \"number\"\nbuiltin = \"memory_used_percent\"\n",
            "[[custom_metrics]]\nname = \"load_average\"\ntype = \"number-list\"\nbuiltin = \"load_average\"\n",
        );
        // Invariant: the built-in text above is a valid configuration (tested).
        match Config::parse(src, "<built-in>") {
            Ok(c) => c,
            Err(e) => unreachable!("built-in configuration is invalid: {e}"),
        }
    }
}

/// Deserialises the file, turning every syntax error, or every shape error (unknown key, wrong
/// type) that can be found, into a positioned problem with its key path. The first problem is the
/// one a plain deserialisation stops at; the others come from deserialising each top-level key,
/// and each key of a table, alone (see [`shape_problems`]).
fn parse_file(src: &str) -> Result<file::File, Vec<Problem>> {
    parse_document(src)
}

/// Parses a TOML document into a mirror `T` whose every field is optional, as the agent's own:
/// every syntax error, or the first shape error (unknown key, wrong type) and then each part's
/// own, with key path, line and column. The fleet service reads its file with it too.
pub fn parse_document<T: serde::de::DeserializeOwned>(src: &str) -> Result<T, Vec<Problem>> {
    let (root, errors) = toml::de::DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        let mut out: Vec<Problem> = errors.iter().map(|e| syntax_problem(src, e)).collect();
        dedup(&mut out);
        return Err(out);
    }
    match deserialize::<T>(src, root.clone()) {
        Ok(f) => Ok(f),
        Err(first) => {
            let mut out = vec![first];
            out.extend(shape_problems::<T>(src, &root));
            dedup(&mut out);
            Err(out)
        }
    }
}

/// A syntax error; a duplicate key is named by its text at the error's position.
fn syntax_problem(src: &str, e: &toml::de::Error) -> Problem {
    let mut p = toml_problem(src, String::new(), e);
    if p.message.starts_with("duplicate key") {
        if let Some(key) = e.span().and_then(|s| src.get(s)) {
            p.key = key
                .trim()
                .trim_matches(['"', '\'', '[', ']'])
                .trim()
                .to_owned();
        }
    }
    p
}

/// Removes repeated problems (same key, position and message), keeping the first of each.
fn dedup(problems: &mut Vec<Problem>) {
    let mut seen = Vec::new();
    problems.retain(|p| {
        let id = (p.key.clone(), p.position, p.message.clone());
        let new = !seen.contains(&id);
        seen.push(id);
        new
    });
}

/// Deserialises a (partial) document into the mirror.
fn deserialize<T: serde::de::DeserializeOwned>(
    src: &str,
    table: Spanned<toml::de::DeTable<'_>>,
) -> Result<T, Problem> {
    let de = toml::de::Deserializer::from(table);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
        // Spanned<T> shows up as private path segments: keep only the user's keys.
        let path = e.path().to_string();
        let key = path
            .split('.')
            .filter(|seg| !seg.starts_with("$__serde_spanned"))
            .collect::<Vec<_>>()
            .join(".");
        toml_problem(src, key, e.inner())
    })
}

/// The shape errors of each part of the document on its own: each top-level key; each key of a
/// top-level table (a "missing field" there is an artefact of the split and left out, the whole
/// table's first problem is kept); each element of an array of tables. Every mirror field is optional at the top and in the sections,
/// so a part alone deserialises exactly when it is right.
fn shape_problems<T: serde::de::DeserializeOwned>(
    src: &str,
    root: &Spanned<toml::de::DeTable<'_>>,
) -> Vec<Problem> {
    use toml::de::{DeArray, DeTable, DeValue};
    let span = root.span();
    let alone = |key: &Spanned<toml::de::DeString<'_>>, value: Spanned<DeValue<'_>>| {
        let mut t = DeTable::new();
        t.insert(key.clone(), value);
        deserialize::<T>(src, Spanned::new(span.clone(), t)).err()
    };
    let mut out = Vec::new();
    for (k, v) in root.get_ref().iter() {
        match v.get_ref() {
            DeValue::Table(inner) => {
                // The section's first problem, then each of its keys alone.
                let Some(first) = alone(k, v.clone()) else {
                    continue;
                };
                out.push(first);
                for (ik, iv) in inner.iter() {
                    let mut t = DeTable::new();
                    t.insert(ik.clone(), iv.clone());
                    match alone(k, Spanned::new(v.span(), DeValue::Table(t))) {
                        Some(p) if !p.message.starts_with("missing field") => out.push(p),
                        _ => {}
                    }
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let mut a = DeArray::new();
                    a.push(item.clone());
                    if let Some(mut p) = alone(k, Spanned::new(v.span(), DeValue::Array(a))) {
                        let one = format!("{}[0]", k.get_ref());
                        if let Some(rest) = p.key.strip_prefix(&one) {
                            p.key = format!("{}[{i}]{rest}", k.get_ref());
                        }
                        out.push(p);
                    }
                }
            }
            _ => out.extend(alone(k, v.clone())),
        }
    }
    out
}

fn toml_problem(src: &str, key: String, e: &toml::de::Error) -> Problem {
    Problem {
        severity: Severity::Error,
        key,
        position: e.span().map(|s| line_col(src, s.start)),
        message: e.message().trim().to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// Collects every semantic problem while building the typed config, each with its key path and
/// the line and column of its value. The fleet service builds its configuration with it too.
pub struct Validator<'a> {
    src: &'a str,
    problems: Vec<Problem>,
}

impl<'a> Validator<'a> {
    /// A validator of the document `src` (the text the spans point into).
    pub fn new(src: &'a str) -> Validator<'a> {
        Validator {
            src,
            problems: Vec::new(),
        }
    }

    /// The problems found, in order.
    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// Whether an error (not only warnings) was found.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// A problem at `at`'s position.
    pub fn push<T>(&mut self, severity: Severity, key: &str, at: &Spanned<T>, message: String) {
        self.problems.push(Problem {
            severity,
            key: key.to_owned(),
            position: Some(line_col(self.src, at.span().start)),
            message,
        });
    }

    /// An error at `at`'s position.
    pub fn error<T>(&mut self, key: &str, at: &Spanned<T>, message: impl Into<String>) {
        self.push(Severity::Error, key, at, message.into());
    }

    /// An error without a position (a missing key).
    pub fn missing(&mut self, key: &str, message: &str) {
        self.problems.push(Problem {
            severity: Severity::Error,
            key: key.to_owned(),
            position: None,
            message: message.to_owned(),
        });
    }

    /// A number of seconds within `[min, max]`, or the default.
    pub fn secs(
        &mut self,
        key: &str,
        v: &Option<Spanned<u64>>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Duration {
        match v {
            None => Duration::from_secs(default),
            Some(s) if (min..=max).contains(s.get_ref()) => Duration::from_secs(*s.get_ref()),
            Some(s) => {
                self.error(
                    key,
                    s,
                    format!(
                        "must be between {min} and {max} seconds, got {}",
                        s.get_ref()
                    ),
                );
                Duration::from_secs(default)
            }
        }
    }

    fn path(&mut self, key: &str, v: &Option<Spanned<String>>, default: &str) -> PathBuf {
        match v {
            None => PathBuf::from(default),
            Some(s) if s.get_ref().is_empty() => {
                self.error(key, s, "must not be empty");
                PathBuf::from(default)
            }
            Some(s) => PathBuf::from(s.get_ref()),
        }
    }

    fn choice<T: Copy>(
        &mut self,
        key: &str,
        v: &Option<Spanned<String>>,
        default: T,
        choices: &[(&str, T)],
    ) -> T {
        let Some(s) = v else { return default };
        match choices.iter().find(|(name, _)| *name == s.get_ref()) {
            Some((_, value)) => *value,
            None => {
                let names: Vec<_> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.error(
                    key,
                    s,
                    format!(
                        "must be one of {}, got \"{}\"",
                        names.join(", "),
                        s.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn config(&mut self, f: &file::File) -> Option<Config> {
        let thing_name = match &f.thing_name {
            None => {
                self.missing(
                    "thing_name",
                    "is required: the AWS IoT thing name this device reports as",
                );
                None
            }
            Some(s) => match check_thing_name(s.get_ref()) {
                Ok(()) => Some(s.get_ref().clone()),
                Err(why) => {
                    self.error("thing_name", s, why);
                    None
                }
            },
        };
        let state_dir = match &f.state_dir {
            None => PathBuf::from("/var/lib/defender-agent"),
            Some(s) if s.get_ref().is_empty() => {
                self.error("state_dir", s, "must not be empty");
                PathBuf::new()
            }
            Some(s) if !Path::new(s.get_ref()).is_absolute() => {
                self.error(
                    "state_dir",
                    s,
                    "must be an absolute path (a relative one depends on the working directory)",
                );
                PathBuf::from(s.get_ref())
            }
            Some(s) => PathBuf::from(s.get_ref()),
        };
        let shutdown_timeout = self.secs(
            "shutdown_timeout_secs",
            &f.shutdown_timeout_secs,
            10,
            1,
            600,
        );
        let mut collect = self.collect(&f.collect);
        let report = self.report(&f.report);
        if collect.sample_interval > report.interval {
            if let Some(s) = &f.collect.sample_interval_secs {
                self.error(
                    "collect.sample_interval_secs",
                    s,
                    format!(
                        "must not be longer than report.interval_secs ({})",
                        report.interval.as_secs()
                    ),
                );
            }
        }
        collect.custom = self.custom_metrics(&f.custom_metrics);
        let thing = thing_name.as_deref().unwrap_or("");
        if let Some(g) = f
            .mqtt
            .as_ref()
            .and_then(|m| m.get_ref().shared_group.as_ref())
        {
            self.error(
                "mqtt.shared_group",
                g,
                "is a defender-fleet key: an agent subscribes to its own answers only",
            );
        }
        let mut mqtt = f.mqtt.as_ref().map(|m| self.mqtt(m, thing, report.format));
        let spool = self.spool(&f.spool, &state_dir);
        let tap = f.tap.as_ref().and_then(|t| self.tap(t, thing));
        let traffic_exports = self.traffic_exports(&f.traffic_exports);
        let detect = f.detect.as_ref().and_then(|d| self.detect(d));
        if let (Some(d), Some(fd)) = (&detect, &f.detect) {
            if d.push.is_some() && mqtt.is_none() {
                if let Some(p) = &fd.get_ref().push {
                    self.error(
                        "detect.push",
                        p,
                        "needs an [mqtt] table: pushes arrive on the agent's own link",
                    );
                }
            }
        }
        // Pushes arrive on the agent's own link.
        if let (Some(m), Some(p)) = (&mut mqtt, detect.as_ref().and_then(|d| d.push.as_ref())) {
            m.subscriptions = vec![p.topic.clone()];
        }
        let alarms = self.alarms(&f.alarms, tap.is_some(), f.mqtt.is_some());
        Some(Config {
            thing_name: thing_name?,
            state_dir,
            shutdown_timeout,
            collect,
            report,
            mqtt,
            spool,
            tap,
            traffic_exports,
            detect,
            alarms,
            warnings: Vec::new(),
        })
    }
}

/// Checks a thing name: 1..128 bytes of UTF-8, no control characters, and none of the MQTT
/// topic characters `/`, `+`, `#` (it becomes one topic level). spec: metrics-report.md A.1, D.14.
pub fn check_thing_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("must be 1 to 128 bytes, got {}", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || matches!(c, '/' | '+' | '#'))
    {
        return Err(format!(
            "must not contain {c:?} (control characters and '/', '+', '#' break the topic)"
        ));
    }
    if let Some(c) = name.chars().find(|&c| is_bidi_control(c)) {
        return Err(format!(
            "must not contain {c:?} (a bidirectional formatting character: the name would not read as it is)"
        ));
    }
    Ok(())
}

/// Unicode bidirectional formatting characters (marks, embeddings, overrides, isolates): they make
/// a name display differently from what it is (Unicode TR9; CVE-2021-42574 "Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(src: &str) -> Vec<Problem> {
        match Config::parse(src, "test.toml") {
            Ok(c) => c.warnings,
            Err(Error::Invalid { problems, .. }) => problems,
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn the_example_file_parses_without_problems() {
        let c = Config::parse(EXAMPLE, "<example>").expect("example config must be valid");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.report.interval, Duration::from_secs(300));
        assert_eq!(c.collect.interfaces_exclude, vec!["lo".to_owned()]);
    }

    #[test]
    fn the_builtin_default_is_valid() {
        let c = Config::builtin();
        assert_eq!(c.thing_name, "local-device");
        assert_eq!(c.report.format, crate::report::Format::Json);
        assert!(c.mqtt.is_none());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let p = problems("thing_name = \"t\"\n[report]\nintervall_secs = 300\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "report.intervall_secs");
        assert_eq!(p[0].position.map(|x| x.0), Some(3));
        assert!(p[0].message.contains("intervall_secs"), "{}", p[0].message);
    }

    #[test]
    fn a_wrong_type_names_the_key_path_and_line() {
        let p = problems("thing_name = \"t\"\n\n[collect]\nsample_interval_secs = \"60\"\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "collect.sample_interval_secs");
        assert_eq!(p[0].position.map(|x| x.0), Some(4));
    }

    #[test]
    fn a_missing_thing_name_is_an_error() {
        let p = problems("state_dir = \"/tmp/x\"\n");
        assert_eq!(p[0].key, "thing_name");
        assert!(p[0].message.contains("required"));
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let p = problems("thing_name = \"a/b\"\n[report]\nformat = \"xml\"\nkeys = \"tiny\"\n[spool]\nbacklog = \"some\"\n");
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "thing_name",
                "report.format",
                "report.keys",
                "spool.backlog"
            ]
        );
        assert_eq!(p[1].position, Some((3, 10)));
    }

    #[test]
    fn a_report_interval_below_300_is_allowed_with_a_warning() {
        let c = Config::parse("thing_name = \"t\"\n[report]\ninterval_secs = 60\n", "t").unwrap();
        assert_eq!(c.report.interval, Duration::from_secs(60));
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].severity, Severity::Warning);
        assert!(c.warnings[0].message.contains("throttles"));
    }

    #[test]
    fn custom_metrics_need_exactly_one_source() {
        let p =
            problems("thing_name = \"t\"\n[[custom_metrics]]\nname = \"x\"\ntype = \"number\"\n");
        assert_eq!(p[0].key, "custom_metrics[0]");
        let p = problems("thing_name = \"t\"\n[[custom_metrics]]\nname = \"x\"\ntype = \"number\"\nfile = \"/a\"\nbuiltin = \"uptime_secs\"\n");
        assert!(p[0].message.contains("exactly one source"));
    }

    #[test]
    fn custom_metric_names_and_types_are_checked() {
        let p = problems("thing_name = \"t\"\n[[custom_metrics]]\nname = \"aws:x\"\ntype = \"numbers\"\nbuiltin = \"uptime_secs\"\n");
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["custom_metrics[0].name", "custom_metrics[0].type"]);
    }

    #[test]
    fn a_builtin_with_the_wrong_type_is_refused() {
        let p = problems("thing_name = \"t\"\n[[custom_metrics]]\nname = \"x\"\ntype = \"string-list\"\nbuiltin = \"cpu_usage_percent\"\n");
        assert_eq!(p[0].key, "custom_metrics[0].type");
    }

    #[test]
    fn mutual_tls_files_are_required_unless_tls_is_off() {
        let p = problems("thing_name = \"t\"\n[mqtt]\nendpoint = \"localhost\"\n");
        assert_eq!(p.len(), 3, "{p:?}");
        let c = Config::parse(
            "thing_name = \"t\"\n[mqtt]\nendpoint = \"localhost\"\ntls = false\n",
            "t",
        )
        .unwrap();
        assert!(!c.mqtt.as_ref().unwrap().tls);
        assert_eq!(c.mqtt.unwrap().client_id, "t");
        assert_eq!(c.warnings[0].key, "mqtt.tls");
    }

    #[test]
    fn the_link_settings_take_the_report_format_and_the_push_topic() {
        let c = Config::parse(
            "thing_name = \"t\"\n[report]\nformat = \"cbor\"\n[mqtt]\nendpoint = \"localhost\"\ntls = false\n[detect.push]\ntopic = \"fleet/push\"\nresponse_topic = \"fleet/push/out\"\n",
            "t",
        )
        .unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!(m.thing_name, "t");
        assert_eq!(m.format, crate::report::Format::Cbor);
        assert_eq!(m.subscriptions, ["fleet/push"]);
        assert_eq!(c.spool.dir, c.state_dir);
        let c = Config::parse(
            "thing_name = \"t\"\n[mqtt]\nendpoint = \"localhost\"\ntls = false\n",
            "t",
        )
        .unwrap();
        assert!(c.mqtt.unwrap().subscriptions.is_empty());
    }

    #[test]
    fn thing_names_follow_the_aws_rules() {
        assert!(check_thing_name("gateway-42").is_ok());
        assert!(check_thing_name("").is_err());
        assert!(check_thing_name(&"x".repeat(129)).is_err());
        assert!(check_thing_name("a\u{7}b").is_err());
        assert!(check_thing_name("a+b").is_err());
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncdé\nf", 7), (2, 4));
        assert_eq!(line_col("x", 0), (1, 1));
    }

    #[test]
    fn tap_filters_are_checked_with_their_position() {
        let p = problems("thing_name = \"t\"\n[tap]\noutbound = [\"a/#/b\"]\n");
        assert_eq!(p[0].key, "tap.outbound[0]");
        assert_eq!(p[0].position.map(|x| x.0), Some(3));
        let c = Config::parse(
            "thing_name = \"t\"\n[tap]\noutbound = [\"sensors/#\"]\n",
            "t",
        )
        .unwrap();
        let tap = c.tap.unwrap();
        assert_eq!(tap.client_id, "t-tap");
        assert_eq!(tap.port, 1883);
    }

    #[test]
    fn alarms_need_the_keys_of_their_type_and_only_those() {
        let p = problems("thing_name = \"t\"\n[[alarms]]\ntype = \"file\"\ntopic = \"x\"\n");
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["alarms[0].topic", "alarms[0]"]);
        let p = problems("thing_name = \"t\"\n[[alarms]]\ntype = \"mqtt\"\ntopic = \"a/+\"\n");
        assert_eq!(p[0].key, "alarms[0].topic");
        let p = problems(
            "thing_name = \"t\"\n[[alarms]]\ntype = \"mqtt\"\ntopic = \"a\"\nvia = \"tap\"\n",
        );
        assert!(p[0].message.contains("[tap]"), "{p:?}");
    }

    #[test]
    fn a_disabled_detect_table_is_none() {
        let c = Config::parse("thing_name = \"t\"\n[detect]\nenabled = false\n", "t").unwrap();
        assert!(c.detect.is_none());
        let c = Config::parse(
            "thing_name = \"t\"\n[detect]\nprofiles = [\"/p\"]\nmode = \"strict\"\n",
            "t",
        )
        .unwrap();
        let d = c.detect.unwrap();
        assert_eq!(d.mode, crate::detect::Mode::Strict);
        assert_eq!(d.retention, Duration::from_secs(14 * 86_400));
    }

    #[test]
    fn detect_source_ip_must_be_an_address_and_disconnect_duration_is_off_by_default() {
        let p = problems("thing_name = \"t\"\n[detect]\nsource_ip = \"my.host\"\n");
        assert_eq!(p[0].key, "detect.source_ip");
        assert_eq!(p[0].position.map(|x| x.0), Some(3));
        assert!(p[0].message.contains("IPv4 or IPv6"), "{p:?}");
        let c = Config::parse(
            "thing_name = \"t\"\n[detect]\nsource_ip = \"2001:db8::1\"\n",
            "t",
        )
        .unwrap();
        let d = c.detect.unwrap();
        assert_eq!(d.source_ip, Some("2001:db8::1".parse().unwrap()));
        assert!(!d.disconnect_duration);
        let c = Config::parse(
            "thing_name = \"t\"\n[detect]\ndisconnect_duration = true\n",
            "t",
        )
        .unwrap();
        assert!(c.detect.unwrap().disconnect_duration);
    }

    #[test]
    fn the_fleet_services_shared_group_is_refused_by_the_agent() {
        let p = problems(
            "thing_name = \"gw\"\n[mqtt]\nendpoint = \"localhost\"\ntls = false\nshared_group = \"g\"\n",
        );
        let e = p
            .iter()
            .find(|p| p.key == "mqtt.shared_group")
            .expect("{p:?}");
        assert_eq!(e.severity, Severity::Error);
        assert_eq!(e.position.map(|x| x.0), Some(5));
        assert!(e.message.contains("defender-fleet"), "{e}");
    }

    #[test]
    fn mqtt_topic_root_names_the_topics_and_a_bad_one_names_key_and_line() {
        let base = "thing_name = \"gw\"\n[mqtt]\nendpoint = \"localhost\"\ntls = false\n";
        let c =
            Config::parse(&format!("{base}topic_root = \"fleet/{{thing}}/dd\"\n"), "t").unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!(m.topic_root.to_string(), "fleet/{thing}/dd");
        assert_eq!(
            m.topic_root.publish_topic(&m.thing_name, m.format),
            "fleet/gw/dd/json"
        );
        let c = Config::parse(base, "t").unwrap();
        assert_eq!(
            c.mqtt.unwrap().topic_root.to_string(),
            crate::mqtt::topics::DEFAULT_TOPIC_ROOT
        );
        let p = problems(&format!("{base}topic_root = \"fleet/+/dd\"\n"));
        let e = p
            .iter()
            .find(|p| p.key == "mqtt.topic_root")
            .expect("{p:?}");
        assert_eq!(e.severity, Severity::Error);
        assert_eq!(e.position.map(|x| x.0), Some(5));
        assert!(e.message.contains("'+'"), "{e}");
    }

    #[test]
    fn every_shape_error_is_listed_and_the_first_is_the_one_reported_before() {
        // Regression, issue 16 defect 2: parsing stopped at the first shape error.
        let src = "thing_name = \"t\"\n[report]\nintervall_secs = 300\n[mqtt]\nport = \"x\"\nbogus = 1\n\
                   [[custom_metrics]]\nname = \"a\"\ntype = \"number\"\nbuiltin = \"uptime_secs\"\n\
                   [[custom_metrics]]\nname = 1\ntype = \"number\"\nbuiltin = \"uptime_secs\"\nshutdown = 3\n";
        let p = problems(src);
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        let first = parse_first(src);
        assert_eq!(p[0], first);
        for key in [
            "report.intervall_secs",
            "mqtt.port",
            "mqtt.bogus",
            "custom_metrics[1].name",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert_eq!(
            p.iter()
                .find(|p| p.key == "mqtt.bogus")
                .and_then(|p| p.position)
                .map(|x| x.0),
            Some(6)
        );
        // A required key missing in a nested table is kept too.
        let p = problems("thing_name = \"t\"\n[detect.push]\ntopic = \"x\"\n[tap]\nbogus = 1\n");
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert!(
            keys.contains(&"detect.push") && keys.contains(&"tap.bogus"),
            "{p:?}"
        );
    }

    /// The one problem a plain deserialisation of the whole file reports.
    fn parse_first(src: &str) -> Problem {
        let (root, _) = toml::de::DeTable::parse_recoverable(src);
        deserialize::<file::File>(src, root).unwrap_err()
    }

    #[test]
    fn a_duplicate_key_is_named() {
        let p =
            problems("thing_name = \"t\"\n[report]\ninterval_secs = 300\ninterval_secs = 600\n");
        assert_eq!(p[0].key, "interval_secs", "{p:?}");
        assert!(p[0].message.contains("duplicate key"), "{p:?}");
        assert_eq!(p[0].position.map(|x| x.0), Some(4));
    }

    #[test]
    fn an_endpoint_with_a_scheme_port_space_or_path_is_an_error_at_its_line() {
        // Regression, issue 16 defect 2: these passed check-config and failed at connect.
        for (endpoint, says) in [
            ("mqtts://localhost", "scheme"),
            ("localhost:8883", "mqtt.port = 8883"),
            ("local host", "space"),
            ("localhost/x", "path"),
            ("[::1]", "brackets"),
            ("a..b", "empty label"),
        ] {
            let p = problems(&format!(
                "thing_name = \"t\"\n[mqtt]\ntls = false\nendpoint = \"{endpoint}\"\n"
            ));
            let e = p.iter().find(|p| p.key == "mqtt.endpoint").expect(endpoint);
            assert_eq!(e.severity, Severity::Error);
            assert_eq!(e.position.map(|x| x.0), Some(4), "{endpoint}");
            assert!(e.message.contains(says), "{endpoint}: {}", e.message);
        }
        for ok in [
            "localhost",
            "127.0.0.1",
            "::1",
            "abc-ats.iot.eu-west-1.amazonaws.com",
            "host.",
        ] {
            assert!(mqtt::check_endpoint(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_keep_alive_below_30_is_a_warning() {
        let c = Config::parse(
            "thing_name = \"t\"\n[mqtt]\nendpoint = \"localhost\"\ntls = false\nkeep_alive_secs = 10\n",
            "t",
        )
        .unwrap();
        let w = c
            .warnings
            .iter()
            .find(|w| w.key == "mqtt.keep_alive_secs")
            .unwrap();
        assert!(w.message.contains("raises"), "{w}");
        assert_eq!(c.mqtt.unwrap().keep_alive, Duration::from_secs(10));
    }

    #[test]
    fn a_thing_name_with_a_bidirectional_override_is_refused() {
        let e = check_thing_name("gw\u{202E}1").unwrap_err();
        assert!(e.contains("bidirectional"), "{e}");
        assert!(check_thing_name("gw\u{2066}1").is_err());
        assert!(check_thing_name("gw\u{85}1").is_err());
    }

    #[test]
    fn a_relative_state_dir_is_an_error() {
        let p = problems("thing_name = \"t\"\nstate_dir = \"var/lib/x\"\n");
        assert_eq!(p[0].key, "state_dir");
        assert!(p[0].message.contains("absolute"), "{p:?}");
    }

    #[test]
    fn a_state_dir_that_is_a_file_is_an_error_of_the_deployment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        std::fs::write(&file, "x").unwrap();
        let src = format!(
            "thing_name = \"t\"\nstate_dir = {:?}\n",
            file.display().to_string()
        );
        assert!(Config::parse(&src, "t").is_ok(), "the TOML alone is fine");
        let Err(Error::Invalid { problems, .. }) = Config::parse_checked(&src, "t") else {
            panic!("a file as state_dir must be refused");
        };
        assert_eq!(problems[0].key, "state_dir");
        assert_eq!(problems[0].position.map(|x| x.0), Some(2));
        assert!(
            problems[0].message.contains("not a directory"),
            "{problems:?}"
        );
    }

    #[test]
    fn settings_compare_without_their_warnings() {
        let a = Config::parse("thing_name = \"t\"\n[report]\ninterval_secs = 60\n", "t").unwrap();
        let b = Config::parse(
            "\n\nthing_name = \"t\"\n[report]\ninterval_secs = 60\n",
            "t",
        )
        .unwrap();
        assert_ne!(a, b, "the warnings' lines differ");
        assert!(a.same_settings(&b));
    }
}

//! The worked cases of detect.md (tests/fixtures/detect/cases/<case>/): reading a case directory
//! and comparing a replay's output with its `expected.json`. Shared, through `#[path]`, by the
//! integration test (the real binary) and the library table test (`detect::replay::replay`), so
//! both read the cases and judge them the same way. Test code only: it reads files.
//!
//! A case directory holds `profile*.json`, optional `dimension*.json` / `custom-metric*.json`,
//! `input.jsonl`, optional `args` (one CLI argument per line, values as `--flag=value`) and
//! `expected.json`, which is either
//! `{"violationEvents":[…], "activeViolations":[…]}` (the second only with `--active`) or
//! `{"error":{"exitCode":2,"contains":"…"}}` (the replay must fail with that text). Matching:
//! - objects match when every key of the expected object matches (unlisted keys are not checked);
//!   an expected `null` means the key is absent;
//! - arrays match element by element and must have the same length;
//! - numbers compare as numbers (`70` matches `70.0`), but times (`…Time`) must be written with a
//!   fraction (spec §1.5);
//! - `violationId` values are labels (`"A"`, `"B"`): one label must always stand for one id and
//!   two labels for two different ids (spec §3.4: one id per episode, a new id per episode);
//! - events are compared newest first (spec §6.6); events at the same time are ordered by
//!   (profile, behavior name), since the spec leaves their record order open. Active violations
//!   likewise by violationStartTime descending (§6.7), then (profile, behavior name).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One case directory, read.
pub struct Case {
    /// The directory name, e.g. `tc01-aws-polarity`.
    pub name: String,
    /// `profile*.json`, sorted.
    pub profiles: Vec<PathBuf>,
    /// `dimension*.json`, sorted.
    pub dimensions: Vec<PathBuf>,
    /// `custom-metric*.json`, sorted.
    pub custom_metrics: Vec<PathBuf>,
    /// `input.jsonl`.
    pub input: PathBuf,
    /// Extra CLI arguments from `args`.
    pub args: Vec<String>,
    /// `expected.json`.
    pub expected: Value,
}

impl Case {
    /// The text of `input.jsonl`.
    pub fn input_text(&self) -> String {
        fs::read_to_string(&self.input)
            .unwrap_or_else(|e| panic!("case {}: {}: {e}", self.name, self.input.display()))
    }

    /// The value of `--flag=value` in `args`, or whether a bare `--flag` is there ("").
    pub fn arg(&self, flag: &str) -> Option<&str> {
        self.args.iter().find_map(|a| {
            if a == flag {
                Some("")
            } else {
                a.strip_prefix(flag)?.strip_prefix('=')
            }
        })
    }
}

/// What a replay gave: the output document(s) merged into one object, or a failure.
#[derive(Debug)]
pub enum Outcome {
    /// `{"violationEvents":[…]}` plus `"activeViolations"` when asked for.
    Document(Value),
    /// The replay failed; `exit_code` is None when not observable (library call).
    Failed {
        /// The process exit code.
        exit_code: Option<i32>,
        /// The error text (stderr).
        message: String,
    },
}

/// `tests/fixtures/detect/cases`.
pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detect/cases")
}

/// Every case directory, sorted by name.
pub fn all_cases() -> Vec<Case> {
    let root = cases_dir();
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no case directories in {}",
        root.display()
    );
    dirs.iter().map(|d| load_case(d)).collect()
}

fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".json")
        })
        .collect();
    v.sort();
    v
}

/// Reads one case directory; panics naming the case when a file is missing or malformed.
pub fn load_case(dir: &Path) -> Case {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let read = |f: &str| {
        fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("case {name}: {f}: {e}"))
    };
    let expected: Value = serde_json::from_str(&read("expected.json"))
        .unwrap_or_else(|e| panic!("case {name}: expected.json: {e}"));
    let args: Vec<String> = if dir.join("args").exists() {
        read("args")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };
    let case = Case {
        profiles: files_starting(dir, "profile"),
        dimensions: files_starting(dir, "dimension"),
        custom_metrics: files_starting(dir, "custom-metric"),
        input: dir.join("input.jsonl"),
        args,
        expected,
        name,
    };
    check_fixture(&case);
    case
}

/// The fixture itself is well formed: a profile, an input, and expectations that name at least
/// the id, behavior, type and time of every event.
fn check_fixture(c: &Case) {
    let n = &c.name;
    assert!(!c.profiles.is_empty(), "case {n}: no profile*.json");
    assert!(c.input.is_file(), "case {n}: no input.jsonl");
    let e = &c.expected;
    if let Some(err) = e.get("error") {
        assert!(
            err.get("contains").and_then(Value::as_str).is_some(),
            "case {n}: error needs \"contains\""
        );
        return;
    }
    let events = e["violationEvents"]
        .as_array()
        .unwrap_or_else(|| panic!("case {n}: expected.json needs violationEvents or error"));
    let active = e.get("activeViolations");
    assert_eq!(
        active.is_some(),
        c.arg("--active").is_some(),
        "case {n}: activeViolations is expected exactly when args has --active"
    );
    for (i, ev) in events.iter().enumerate() {
        for key in ["violationId", "violationEventType", "violationEventTime"] {
            assert!(ev.get(key).is_some(), "case {n}: event {i} lacks {key}");
        }
        assert!(
            ev["behavior"]["name"].is_string(),
            "case {n}: event {i} lacks behavior.name"
        );
    }
    for (i, a) in active
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for key in ["violationId", "violationStartTime", "lastViolationTime"] {
            assert!(a.get(key).is_some(), "case {n}: active {i} lacks {key}");
        }
    }
}

fn sort_key<'a>(v: &'a Value, time: &str) -> (f64, &'a str, &'a str) {
    (
        -v[time].as_f64().unwrap_or(f64::NAN),
        v["securityProfileName"].as_str().unwrap_or(""),
        v["behavior"]["name"].as_str().unwrap_or(""),
    )
}

/// Events newest first, same-time events by (profile, behavior); active violations likewise by
/// start time. Stable, so same-behavior ties keep the output's order.
fn canonical(doc: &Value) -> Value {
    let mut doc = doc.clone();
    for (list, time) in [
        ("violationEvents", "violationEventTime"),
        ("activeViolations", "violationStartTime"),
    ] {
        if let Some(Value::Array(items)) = doc.get_mut(list) {
            items.sort_by(|a, b| {
                let (ka, kb) = (sort_key(a, time), sort_key(b, time));
                ka.0.total_cmp(&kb.0)
                    .then(ka.1.cmp(kb.1))
                    .then(ka.2.cmp(kb.2))
            });
        }
    }
    doc
}

struct Ids {
    by_label: BTreeMap<String, String>,
    by_id: BTreeMap<String, String>,
}

fn matches(path: &str, want: &Value, got: Option<&Value>, ids: &mut Ids, diffs: &mut Vec<String>) {
    let got_text = || got.map_or("(absent)".to_owned(), |g| g.to_string());
    match (want, got) {
        (Value::Null, None | Some(Value::Null)) => {}
        (Value::String(label), Some(Value::String(id))) if path.ends_with(".violationId") => {
            let a = ids
                .by_label
                .entry(label.clone())
                .or_insert_with(|| id.clone());
            let b = ids.by_id.entry(id.clone()).or_insert_with(|| label.clone());
            if a != id || b != label {
                diffs.push(format!(
                    "{path}: expected label {label} (= {a}), got {id} (= label {b})"
                ));
            }
        }
        (Value::Object(w), Some(Value::Object(g))) => {
            for (k, wv) in w {
                matches(&format!("{path}.{k}"), wv, g.get(k), ids, diffs);
            }
        }
        (Value::Array(w), Some(Value::Array(g))) => {
            if w.len() != g.len() {
                diffs.push(format!(
                    "{path}: expected {} items, got {}",
                    w.len(),
                    g.len()
                ));
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                matches(&format!("{path}[{i}]"), wv, Some(gv), ids, diffs);
            }
        }
        // spec §1.5: times are epoch seconds written with a fraction (`900.0`).
        (Value::Number(_), Some(Value::Number(g))) if path.ends_with("Time") && !g.is_f64() => {
            diffs.push(format!("{path}: {g} is written without a fraction"));
        }
        (Value::Number(w), Some(Value::Number(g))) if w.as_f64() == g.as_f64() => {}
        (w, Some(g)) if w == g => {}
        (w, _) => diffs.push(format!("{path}: expected {w}, got {}", got_text())),
    }
}

fn event_line(e: &Value) -> String {
    let value = e
        .get("metricValue")
        .map_or(String::new(), |v| format!(" {v}"));
    let info = e
        .get("violationEventAdditionalInfo")
        .map_or(String::new(), |v| format!(" {v}"));
    format!(
        "  {} {} {}/{}{value}{info} id={}",
        e["violationEventTime"],
        e["violationEventType"].as_str().unwrap_or("?"),
        e["securityProfileName"].as_str().unwrap_or("?"),
        e["behavior"]["name"].as_str().unwrap_or("?"),
        e["violationId"].as_str().unwrap_or("?"),
    )
}

fn active_line(a: &Value) -> String {
    format!(
        "  start {} last {} {}/{} {} id={}",
        a["violationStartTime"],
        a["lastViolationTime"],
        a["securityProfileName"].as_str().unwrap_or("?"),
        a["behavior"]["name"].as_str().unwrap_or("?"),
        a.get("lastViolationValue").unwrap_or(&Value::Null),
        a["violationId"].as_str().unwrap_or("?"),
    )
}

fn summary(doc: &Value) -> String {
    let mut out = String::from(" events (newest first):\n");
    for e in doc["violationEvents"].as_array().into_iter().flatten() {
        out.push_str(&event_line(e));
        out.push('\n');
    }
    if let Some(a) = doc.get("activeViolations").and_then(Value::as_array) {
        out.push_str(" active:\n");
        for x in a {
            out.push_str(&active_line(x));
            out.push('\n');
        }
    }
    out
}

/// Compares an outcome with the case's expectations; the error is a readable report (the case,
/// each difference by JSON path, then expected and got one event per line).
pub fn check(case: &Case, got: &Outcome) -> Result<(), String> {
    let name = &case.name;
    if let Some(err) = case.expected.get("error") {
        let contains = err["contains"].as_str().unwrap_or_default();
        return match got {
            Outcome::Failed { exit_code, message } => {
                let want_code = err.get("exitCode").and_then(Value::as_i64);
                let code_ok = match (want_code, exit_code) {
                    (Some(w), Some(g)) => i64::from(*g) == w,
                    _ => true,
                };
                if message.contains(contains) && code_ok {
                    Ok(())
                } else {
                    Err(format!(
                        "case {name}: expected a failure (exit {want_code:?}) containing {contains:?}, got exit {exit_code:?}: {message}"
                    ))
                }
            }
            Outcome::Document(doc) => Err(format!(
                "case {name}: expected a failure containing {contains:?}, got a document:\n{}",
                summary(doc)
            )),
        };
    }
    let doc = match got {
        Outcome::Document(doc) => doc,
        Outcome::Failed { exit_code, message } => {
            return Err(format!(
                "case {name}: the replay failed (exit {exit_code:?}): {message}"
            ))
        }
    };
    let want = canonical(&case.expected);
    let got = canonical(doc);
    let mut ids = Ids {
        by_label: BTreeMap::new(),
        by_id: BTreeMap::new(),
    };
    let mut diffs = Vec::new();
    matches("", &want, Some(&got), &mut ids, &mut diffs);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(format!(
        "case {name}:\n{}\n expected{}\n got{}",
        diffs
            .iter()
            .map(|d| format!("  {d}"))
            .collect::<Vec<_>>()
            .join("\n"),
        summary(&want),
        summary(&got)
    ))
}

/// Runs `run` on every case and panics once, listing every failing case.
pub fn check_all(run: impl Fn(&Case) -> Outcome) {
    let cases = all_cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c, &run(c)).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

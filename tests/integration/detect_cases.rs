//! Every replayable worked case of detect.md (§9 TC.., and the S-cases cited in §1–3) through the
//! real binary's `detect replay`, compared with the case's `expected.json`
//! (tests/fixtures/detect/cases; format and matching rules in `detect_cases/fixture.rs`).

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::agent_bin;

mod fixture;

use fixture::{Case, Outcome};

/// The worked cases of detect.md §9, and the S-cases of §1–3 that have a case directory.
const SPEC_CASES: &[&str] = &[
    "tc01", "tc02", "tc03", "tc04", "tc06", "tc07", "tc09", "tc10", "tc11", "tc12", "tc13", "tc14",
    "tc15", "tc18", "tc20", "tc21", "tc23", "tc24", "tc25", "tc26", "tc27", "tc28", "tc30", "tc31",
    "tc32", "tc34", "tc35", "tc38",
];

/// Cases with at least one directory `<id>-…` under tests/fixtures/detect/cases.
const REPLAYED: &[&str] = &[
    "tc01", "tc02", "tc03", "tc04", "tc06", "tc07", "tc09", "tc10", "tc11", "tc12", "tc13", "tc14",
    "tc15", "tc18", "tc21", "tc23", "tc25", "tc26", "tc27", "tc28", "tc31", "tc35", "s8", "s12",
    "s17", "s18",
];

/// Cases that are not an engine run over input lines, and the test that holds them instead
/// (file, function). TC23's fleet-supplied threshold and TC35's training summary are in the
/// engine tests too; TC31's notification sink and list filters in engine_tests / query.
const NOT_REPLAYED: &[(&str, &str, &str)] = &[
    // A pure function of (filter, topic).
    ("tc20", "src/topic_filter.rs", "tc20_matching_table_holds"),
    // A pure function of (history, statistic).
    (
        "tc24",
        "src/detect/criteria.rs",
        "nearest_rank_matches_the_tc24_table",
    ),
    // An UpdateSecurityProfile while in alarm: replay input has no profile-change line.
    (
        "tc30",
        "src/detect/engine_tests.rs",
        "tc30_behavior_change_while_in_alarm",
    ),
    // PutVerificationStateOnViolation and ListViolationEvents filters over the store.
    (
        "tc32",
        "src/detect/query.rs",
        "tc32_verification_state_rules",
    ),
    (
        "tc34",
        "src/detect/query.rs",
        "tc34_behavior_criteria_type_filters",
    ),
    // ValidateSecurityProfileBehaviors messages.
    (
        "tc38",
        "src/detect/validate.rs",
        "every_tc38_input_gives_exactly_one_error_with_the_template",
    ),
];

fn run_binary(case: &Case) -> Outcome {
    let mut cmd = Command::new(agent_bin());
    cmd.args(["detect", "replay", "--input"]).arg(&case.input);
    for p in &case.profiles {
        cmd.arg("--profile").arg(p);
    }
    for d in &case.dimensions {
        cmd.arg("--dimension").arg(d);
    }
    for m in &case.custom_metrics {
        cmd.arg("--custom-metric").arg(m);
    }
    cmd.args(&case.args);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", agent_bin().display()));
    if !out.status.success() {
        return Outcome::Failed {
            exit_code: out.status.code(),
            message: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
    }
    // One pretty document (ListViolationEvents), and a second (ListActiveViolations) with
    // --active: merged into one object for the comparison.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut merged = serde_json::Map::new();
    for doc in serde_json::Deserializer::from_str(&stdout).into_iter::<Value>() {
        match doc {
            Ok(Value::Object(o)) => merged.extend(o),
            other => {
                return Outcome::Failed {
                    exit_code: out.status.code(),
                    message: format!("stdout is not JSON objects ({other:?}):\n{stdout}"),
                }
            }
        }
    }
    Outcome::Document(Value::Object(merged))
}

#[test]
fn every_worked_case_gives_the_spec_events_through_detect_replay() {
    fixture::check_all(run_binary);
}

fn case_id(dir_name: &str) -> &str {
    dir_name.split('-').next().unwrap_or(dir_name)
}

#[test]
fn the_case_directories_cover_every_replayable_worked_case() {
    let dirs: Vec<String> = fs::read_dir(fixture::cases_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let missing: Vec<&str> = REPLAYED
        .iter()
        .copied()
        .filter(|id| !dirs.iter().any(|d| case_id(d) == *id))
        .collect();
    assert!(
        missing.is_empty(),
        "no case directory for {missing:?} in {}",
        fixture::cases_dir().display()
    );
    let unknown: Vec<&String> = dirs
        .iter()
        .filter(|d| !REPLAYED.contains(&case_id(d)))
        .collect();
    assert!(
        unknown.is_empty(),
        "case directories not listed in REPLAYED: {unknown:?}"
    );
    // Every spec TC is either replayed or named with the test that holds it, never both.
    for tc in SPEC_CASES {
        let replayed = REPLAYED.contains(tc);
        let elsewhere = NOT_REPLAYED.iter().filter(|n| n.0 == *tc).count();
        assert_eq!(
            usize::from(replayed) + elsewhere,
            1,
            "{tc}: replayed {replayed}, listed elsewhere {elsewhere} times"
        );
    }
    for (tc, file, test) in NOT_REPLAYED {
        assert!(SPEC_CASES.contains(tc), "{tc} is not a spec case");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            text.contains(&format!("fn {test}()")),
            "{tc}: {file} has no test fn {test}"
        );
    }
}

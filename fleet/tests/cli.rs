//! The `defender-fleet` binary's offline verbs: `replay`, `check-config`, `print-example-config`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_defender-fleet");
const P90: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/detect/fleet/p90-profile.json"
);

/// An epoch-sized start, a multiple of 300 s.
const T0: u64 = 1_700_000_100;

/// `things` things reporting every 300 s for `rounds` rounds (short keys, rid = report time,
/// arrival 3 s later); the `outliers` send 50,000 bytes out, the others 1000 + i.
fn fleet_input(things: usize, outliers: &BTreeSet<usize>, rounds: u64) -> String {
    let mut out = String::new();
    for i in 0..things {
        for r in 1..=rounds {
            let t = T0 + 300 * r + 10 + (i as u64 % 50);
            let n = if outliers.contains(&i) {
                50_000 + i as u64
            } else {
                1000 + i as u64
            };
            out.push_str(&format!(
                r#"{{"time":{},"thing":"thing-{i:03}","report":{{"hed":{{"rid":{t},"v":"1.0"}},"met":{{"ns":{{"bi":1,"bo":{n},"pi":1,"po":1}},"tp":{{"pts":[{{"pt":22}}],"t":1}}}}}}}}"#,
                t + 3
            ));
            out.push('\n');
        }
    }
    out
}

fn documents(stdout: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .expect("JSON documents on stdout")
}

#[test]
fn replay_of_two_hundred_things_alarms_exactly_the_twenty_outliers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fleet.jsonl");
    let outliers: BTreeSet<usize> = (0..200).filter(|i| i % 10 == 7).collect();
    assert_eq!(outliers.len(), 20);
    std::fs::write(&input, fleet_input(200, &outliers, 6)).unwrap();
    let out = Command::new(BIN)
        .args(["replay", "--profile", P90, "--input"])
        .arg(&input)
        .arg("--active")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(&out.stdout);
    assert_eq!(docs.len(), 2, "events, then active violations");
    let events = docs[0]["violationEvents"].as_array().unwrap();
    let in_alarm: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["violationEventType"] == "in-alarm")
        .collect();
    let alarmed: BTreeSet<String> = in_alarm
        .iter()
        .map(|e| e["thingName"].as_str().unwrap().to_owned())
        .collect();
    let want: BTreeSet<String> = outliers.iter().map(|i| format!("thing-{i:03}")).collect();
    assert_eq!(alarmed, want);
    assert_eq!(in_alarm.len(), 20, "one episode each");
    assert_eq!(events.len(), 20, "nothing else");
    let active = docs[1]["activeViolations"].as_array().unwrap();
    assert_eq!(active.len(), 20);
    assert!(active
        .iter()
        .all(|a| a["behavior"]["name"] == "BytesOutP90"));
    // --min-population above the fleet: nothing is evaluable, no alarm.
    let out = Command::new(BIN)
        .args([
            "replay",
            "--profile",
            P90,
            "--min-population",
            "201",
            "--input",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success());
    let docs = documents(&out.stdout);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["violationEvents"].as_array().unwrap().len(), 0);
}

#[test]
fn replay_of_a_bad_line_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "{\"time\": 1, \"thing\": \"a\"}\n").unwrap();
    let out = Command::new(BIN)
        .args(["replay", "--profile", P90, "--input"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1"), "{err}");
}

fn check(path: &Path) -> (Option<i32>, String, String) {
    check_with(path, &[])
}

fn check_with(path: &Path, flags: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .args(flags)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_printed_example_passes_check_config() {
    let out = Command::new(BIN)
        .arg("print-example-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    // Its certificate paths and Detect directories are placeholders: the text only.
    let (code, stdout, stderr) = check_with(&path, &["--no-deployment"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.ends_with(": OK\n"), "{stdout}");
    // The deployment it describes does not exist here: each file named, with its line.
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    for key in [
        "`mqtt.ca_file`",
        "`mqtt.cert_file`",
        "`mqtt.key_file`",
        "`detect`",
    ] {
        assert!(stderr.contains(key), "{key} in {stderr}");
    }
    assert!(stderr.contains("AmazonRootCA1.pem"), "{stderr}");
}

#[test]
fn check_config_reports_every_problem_with_line_and_column_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[mqtt]\nendpoint = \"localhost\"\ntls = false\nport = 0\n[store]\nengine = \"mysql\"\n",
    )
    .unwrap();
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("line 4, column 8: `mqtt.port`"), "{stderr}");
    assert!(
        stderr.contains("line 6, column 10: `store.engine`"),
        "{stderr}"
    );
    std::fs::write(&path, "[mqtt]\nendpoint = \"localhost\"\nbogus = 1\n").unwrap();
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("line 3, column 1"), "{stderr}");
    assert!(stderr.contains("bogus"), "{stderr}");
}

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_lists_the_verbs_and_violations_take_the_agents_flags() {
    let top = help(&[]);
    for verb in [
        "serve",
        "check-config",
        "print-example-config",
        "status",
        "violations",
        "thresholds",
        "replay",
    ] {
        assert!(top.contains(&format!("\n  {verb} ")), "{verb}:\n{top}");
    }
    for line in top
        .lines()
        .filter(|l| l.contains("status ") || l.contains("violations "))
    {
        assert!(line.chars().count() <= 100, "a short summary: {line}");
    }
    let status = help(&["status"]);
    for flag in ["--config", "--json", "--max-things"] {
        assert!(status.contains(flag), "{flag}:\n{status}");
    }
    let filters = [
        "--config",
        "--thing-name",
        "--security-profile-name",
        "--behavior-criteria-type",
        "--list-suppressed-alerts",
        "--verification-state",
        "--max-results",
        "--next-token",
    ];
    let list = help(&["violations", "list"]);
    for flag in filters.iter().chain(&["--start-time", "--end-time"]) {
        assert!(list.contains(flag), "{flag}:\n{list}");
    }
    let active = help(&["violations", "active"]);
    for flag in filters {
        assert!(active.contains(flag), "{flag}:\n{active}");
    }
    let verify = help(&["violations", "verify"]);
    for flag in ["<VIOLATION_ID>", "--state", "--description", "--config"] {
        assert!(verify.contains(flag), "{flag}:\n{verify}");
    }
}

#[test]
fn status_and_violations_with_a_bad_config_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[mqtt]\nendpoint = \"h\"\ntls = false\n[store]\nengin = 1\n",
    )
    .unwrap();
    for args in [
        vec!["status"],
        vec!["violations", "active"],
        vec!["violations", "verify", "x", "--state", "UNKNOWN"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("store.engin"), "{args:?}: {err}");
    }
}

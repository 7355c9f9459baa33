//! The command line, run as a user would: exit codes and messages.

use std::process::{Command, Output};

use crate::support::agent_bin;

fn run(args: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(args)
        .env("DEFENDER_AGENT_LOG", "warn")
        .output()
        .expect("run defender-agent")
}

fn check_config(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    let out = run(&["check-config", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn the_example_config_printed_by_the_binary_passes_check_config() {
    let out = run(&["print-example-config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("thing_name = \"gateway-42\""));
    // Its certificate paths are placeholders: the text passes, the deployment does not (yet).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, &text).unwrap();
    let path = path.to_str().unwrap();
    let out = run(&["check-config", "--config", path, "--no-deployment"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, stderr) = check_config(&text);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`mqtt.cert_file`"), "{stderr}");
}

#[test]
fn check_config_names_an_unknown_key_with_its_line_and_column() {
    let (code, stderr) = check_config("thing_name = \"t\"\n\n[collect]\nprocfs_rot = \"/proc\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("line 4, column 1"), "{stderr}");
    assert!(stderr.contains("collect.procfs_rot"), "{stderr}");
    assert!(stderr.contains("unknown field"), "{stderr}");
}

#[test]
fn check_config_names_a_wrong_type() {
    let (code, stderr) =
        check_config("thing_name = \"t\"\n[report]\ninterval_secs = \"five minutes\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("report.interval_secs"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn check_config_says_the_thing_name_is_missing() {
    let (code, stderr) = check_config("[report]\nformat = \"cbor\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("`thing_name`: is required"), "{stderr}");
}

#[test]
fn check_config_reports_every_semantic_problem() {
    let (code, stderr) = check_config(
        "thing_name = \"t\"\n[report]\nformat = \"xml\"\n[spool]\nbacklog = \"some\"\n",
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("`report.format`"), "{stderr}");
    assert!(stderr.contains("`spool.backlog`"), "{stderr}");
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

#[test]
fn check_config_on_an_unreadable_file_names_the_file_and_the_cause() {
    let out = run(&["check-config", "--config", "/nonexistent/agent.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/agent.toml"), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
}

#[test]
fn check_config_warns_about_a_report_interval_below_300_but_accepts_it() {
    let (code, stderr) = check_config("thing_name = \"t\"\n[report]\ninterval_secs = 60\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("warning"), "{stderr}");
    assert!(stderr.contains("throttles"), "{stderr}");
}

//! Integration tests for `detect`: example profiles load, validation over files, replay fixtures.

use std::fs;
use std::path::Path;

use defender_agent::detect::{
    self, profile, Format, LoadError, Mode, ParseError, ValidationContext,
};

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn example_context() -> ValidationContext {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
    let d = detect::load_dimension(
        &read(&root.join("dimensions/TopicFilterForAuthMessages.json")),
        "dimension",
        Format::Json,
        Mode::Strict,
    )
    .unwrap();
    let m = detect::load_custom_metric(
        &read(&root.join("custom-metrics/batteryPercentage.json")),
        "metric",
        Format::Json,
    )
    .unwrap();
    ValidationContext::new(vec![d], vec![m])
}

fn example_profiles() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
    let mut out = Vec::new();
    for e in fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push((p.display().to_string(), read(&p)));
        }
    }
    out.sort();
    assert!(
        out.len() >= 6,
        "expected the example profiles in {}",
        root.display()
    );
    out
}

#[test]
fn every_example_profile_loads_in_load_and_strict_mode_without_skips() {
    let ctx = example_context();
    for (name, text) in example_profiles() {
        for mode in [Mode::Load, Mode::Strict] {
            let loaded = detect::load_profile(&text, &name, Format::from_name(&name), &ctx, mode)
                .unwrap_or_else(|e| panic!("{name} ({mode:?}): {e}"));
            assert!(
                loaded
                    .diagnostics
                    .iter()
                    .all(|d| d.kind != detect::DiagnosticKind::Skipped),
                "{name}: {:?}",
                loaded.diagnostics
            );
        }
    }
}

#[test]
fn the_doc_example_with_spaces_in_names_fails_even_in_load_mode() {
    let text = r#"{"securityProfileName":"P","behaviors":[{"name":"Max Message Size","metric":"aws:message-byte-size","criteria":{"comparisonOperator":"less-than-equals","value":{"count":1024}}}]}"#;
    let err = detect::load_profile(
        text,
        "p.json",
        Format::Json,
        &ValidationContext::default(),
        Mode::Load,
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("Behavior Max Message Size is malformed."),
        "{err}"
    );
}

#[test]
fn load_mode_skips_non_wire_problems_with_a_diagnostic_and_strict_fails() {
    let text = r#"{"securityProfileName":"P","behaviors":[
        {"name":"Ok","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","value":{"count":5},"durationSeconds":300}},
        {"name":"Unknown","metric":"aws:foo","criteria":{"comparisonOperator":"less-than","value":{"count":5}}},
        {"name":"MissingDim","metric":"aws:num-messages-sent","metricDimension":{"dimensionName":"Nope"},"criteria":{"comparisonOperator":"less-than","value":{"count":5},"durationSeconds":300}},
        {"name":"Avg","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","statisticalThreshold":{"statistic":"Average"},"durationSeconds":300}}
    ]}"#;
    let ctx = ValidationContext::default();
    let loaded = detect::load_profile(text, "p.json", Format::Json, &ctx, Mode::Load).unwrap();
    let skipped: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.kind == detect::DiagnosticKind::Skipped)
        .map(|d| d.behavior.clone().unwrap_or_default())
        .collect();
    assert_eq!(skipped, vec!["Unknown", "MissingDim", "Avg"]);
    let err = detect::load_profile(text, "p.json", Format::Json, &ctx, Mode::Strict).unwrap_err();
    match err {
        LoadError::Invalid { errors, .. } => assert_eq!(errors.len(), 3, "{errors:?}"),
        other => panic!("{other}"),
    }
}

#[test]
fn a_wrong_value_kind_names_the_field_path() {
    let text = "{\"securityProfileName\":\"P\",\n\"behaviors\":[{\"name\":\"B\",\"metric\":\"aws:listening-tcp-ports\",\n\"criteria\":{\"comparisonOperator\":\"in-port-set\",\"value\":{\"ports\":\"443\"}}}]}";
    let err = detect::load_profile(
        text,
        "p.json",
        Format::Json,
        &ValidationContext::default(),
        Mode::Load,
    )
    .unwrap_err();
    match err {
        LoadError::Parse(ParseError::Json { line, path, .. }) => {
            assert_eq!(line, 3);
            assert_eq!(path, "behaviors[0].criteria.value.ports");
        }
        other => panic!("{other}"),
    }
    let _ = profile::Format::Json;
}

fn fixture(name: &str) -> String {
    read(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/detect")
            .join(name),
    )
}

fn replay_fixture(input: &str) -> detect::replay::ReplayRun {
    let ctx = ValidationContext::new(
        vec![detect::load_dimension(
            &fixture("replay-dimension.json"),
            "dim",
            Format::Json,
            Mode::Strict,
        )
        .unwrap()],
        vec![
            detect::load_custom_metric(&fixture("replay-custom-metric.json"), "cm", Format::Json)
                .unwrap(),
        ],
    );
    let p = detect::load_profile(
        &fixture("replay-profile.json"),
        "p",
        Format::Json,
        &ctx,
        Mode::Strict,
    )
    .unwrap();
    let mut settings = detect::EngineSettings::new("t1");
    settings.source_ip_from_connection = true;
    let engine = detect::DetectEngine::new(settings, &[p.profile], &ctx);
    assert!(
        engine.diagnostics().is_empty(),
        "{:?}",
        engine.diagnostics()
    );
    detect::replay::replay(input, engine, "t1").unwrap()
}

#[test]
fn a_recorded_replay_gives_the_golden_violation_events() {
    let run = replay_fixture(&fixture("replay-basic.jsonl"));
    let got = serde_json::to_string_pretty(&run.document(true)).unwrap();
    let want = fixture("replay-basic.expected.json");
    assert_eq!(got.trim(), want.trim(), "got:\n{got}");
    // Deterministic: a second run gives byte-identical output.
    let again = serde_json::to_string_pretty(
        &replay_fixture(&fixture("replay-basic.jsonl")).document(true),
    )
    .unwrap();
    assert_eq!(got, again);
    // The suppressed behavior's events are recorded but do not notify.
    for e in &run.events {
        assert_eq!(e.notify, e.event.behavior.name != "AuthTopicMessages");
    }
}

#[test]
fn a_replay_line_out_of_order_is_an_error_naming_the_line() {
    let mut input = fixture("replay-basic.jsonl");
    input.push_str("{\"time\": 1560276000, \"tick\": {}}\n");
    let ctx = ValidationContext::default();
    let engine = detect::DetectEngine::new(detect::EngineSettings::new("t1"), &[], &ctx);
    let err = detect::replay::replay(&input, engine, "t1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 17: time 1560276000 is before the previous time 1560277200 (times must not decrease)"
    );
}

#[test]
fn validating_the_s12_request_files_gives_the_published_responses() {
    let ctx = ValidationContext::default();
    let ok = detect::validate_behaviors_json(&fixture("validate-s12-valid.json"), "valid", &ctx)
        .unwrap();
    assert_eq!(
        serde_json::to_string(&ok).unwrap(),
        r#"{"valid":true,"validationErrors":[]}"#
    );
    let bad =
        detect::validate_behaviors_json(&fixture("validate-s12-invalid.json"), "invalid", &ctx)
            .unwrap();
    assert_eq!(
        serde_json::to_string(&bad).unwrap(),
        r#"{"valid":false,"validationErrors":[{"errorMessage":"Behavior Authorization is malformed. consecutiveDatapointsToAlarm 100000 should be in range[1,10]"}]}"#
    );
}

fn aws_cli(form: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/aws-cli")
        .join(form)
}

fn load_aws_cli(form: &str, mode: Mode) -> defender_agent::store::definitions::Loaded {
    let root = aws_cli(form);
    defender_agent::store::definitions::load_all(
        &[root.join("profiles")],
        &[root.join("dimensions")],
        &[root.join("custom-metrics")],
        mode,
    )
    .unwrap_or_else(|e| panic!("{form} ({mode:?}): {e}"))
}

#[test]
fn aws_cli_v2_iso_8601_documents_load_as_the_v1_epoch_seconds_ones() {
    // issue 15: `at creationDate: invalid type: string "2026-10-01T10:00:00.123000+00:00"`.
    for mode in [Mode::Load, Mode::Strict] {
        let v1 = load_aws_cli("v1", mode);
        let v2 = load_aws_cli("v2", mode);
        let profiles = |l: &defender_agent::store::definitions::Loaded| {
            l.profiles
                .iter()
                .map(|p| p.profile.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(profiles(&v2), profiles(&v1));
        assert_eq!(v2.dimensions, v1.dimensions);
        assert_eq!(v2.custom_metrics, v1.custom_metrics);
        let p = &v2.profiles[0].profile;
        assert_eq!(p.creation_date, Some(1_790_848_800.123));
        assert_eq!(p.last_modified_date, Some(1_790_929_800.0));
        assert_eq!(v2.dimensions[0].creation_date, Some(1_790_812_799.5));
        assert_eq!(v2.custom_metrics[0].creation_date, Some(1_789_473_600.54));
        assert!(
            v2.profiles[0].diagnostics.is_empty(),
            "{:?}",
            v2.profiles[0].diagnostics
        );
        // Written back as today: epoch seconds.
        let out = serde_json::to_value(p).unwrap();
        assert_eq!(out["creationDate"], serde_json::json!(1_790_848_800.123));
    }
    // A time that is neither form names the field.
    let text = read(&aws_cli("v2").join("dimensions/TopicFilterForAuthMessages.json"))
        .replace("2026-09-30T23:59:59.500000+00:00", "yesterday");
    let e = detect::load_dimension(&text, "d.json", Format::Json, Mode::Load).unwrap_err();
    assert!(e.to_string().contains("at creationDate"), "{e}");
    // TOML's own date-times are taken too.
    let toml = "name = \"D\"\ntype = \"TOPIC_FILTER\"\nstringValues = [\"a\"]\ncreationDate = 2026-10-01T10:00:00.123+00:00\n";
    let d = detect::load_dimension(toml, "d.toml", Format::Toml, Mode::Strict).unwrap();
    assert_eq!(d.creation_date, Some(1_790_848_800.123));
}

#[test]
fn strict_loads_refuse_a_member_the_model_does_not_have_and_load_mode_keeps_it_quiet() {
    let ctx = ValidationContext::default();
    let text = r#"{"securityProfileName":"P","behaviors":[{"name":"B","metric":"aws:num-messages-sent",
        "criteria":{"comparisonOperator":"less-than","value":{"count":5,"colour":1},"durationSeconds":300}}]}"#;
    assert!(detect::load_profile(text, "p.json", Format::Json, &ctx, Mode::Load).is_ok());
    let e = detect::load_profile(text, "p.json", Format::Json, &ctx, Mode::Strict).unwrap_err();
    match e {
        LoadError::Parse(ParseError::Json {
            path,
            message,
            line,
            ..
        }) => {
            assert_eq!(path, "behaviors[0].criteria.value");
            assert_eq!(message, "unknown field `colour`");
            assert_eq!(line, 2);
        }
        other => panic!("{other:?}"),
    }
    // A count written as a string: LOAD takes it (CloudFormation writes one), STRICT does not.
    let text = text.replace(r#""count":5,"colour":1"#, r#""count":"5""#);
    assert!(detect::load_profile(&text, "p.json", Format::Json, &ctx, Mode::Load).is_ok());
    let e = detect::load_profile(&text, "p.json", Format::Json, &ctx, Mode::Strict).unwrap_err();
    assert!(
        e.to_string().contains(
            "at behaviors[0].criteria.value.count: invalid type: string \"5\", expected a long"
        ),
        "{e}"
    );
    // The manage verbs' own member next to the Describe shape is not unknown.
    let stored = r#"{"name":"D","type":"TOPIC_FILTER","stringValues":["a"],"localMetadata":{"clientRequestToken":"t"}}"#;
    assert!(detect::load_dimension(stored, "d.json", Format::Json, Mode::Strict).is_ok());
}

fn run_agent(args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::support::agent_bin())
        .args(args)
        .env("DEFENDER_AGENT_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn detect_validate_names_an_unknown_member_and_refuses_a_non_document_as_an_api_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ok = r#"{"name":"B","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","value":{"count":5},"durationSeconds":300}}"#;
    // A behavior with a member the model does not have is malformed, with the member's path.
    let nested = write(
        "nested.json",
        &format!(
            r#"{{"behaviors":[{}]}}"#,
            ok.replace(
                r#""durationSeconds":300"#,
                r#""durationSeconds":300,"colour":1"#
            )
        ),
    );
    let out = run_agent(&["detect", "validate", &nested]);
    assert_eq!(out.status.code(), Some(2));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["validationErrors"][0]["errorMessage"],
        "Behavior B is malformed. unknown field `colour` at criteria"
    );
    // An unknown top-level member, and a file that is not a request or a profile at all.
    for (name, text, want) in [
        (
            "top.json",
            format!(r#"{{"behaviors":[{ok}],"colour":1}}"#),
            "unknown field `colour`",
        ),
        (
            "not-a-profile.json",
            r#"{"thingName":"x"}"#.to_owned(),
            "unknown field `thingName`",
        ),
        (
            "scalar.json",
            "42".to_owned(),
            "expected an object with behaviors or a list of behaviors",
        ),
    ] {
        let f = write(name, &text);
        let out = run_agent(&["detect", "validate", &f]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let e: serde_json::Value = serde_json::from_slice(&out.stderr)
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(e["__type"], "InvalidRequestException", "{name}");
        let m = e["message"].as_str().unwrap();
        assert!(m.contains(want) && m.contains(name), "{name}: {m}");
    }
    // A profile document as the AWS CLI v2 writes it validates.
    let v2 = aws_cli("v2");
    let profile = v2.join("profiles/BatteryAndAuth.json");
    let out = run_agent(&[
        "detect",
        "validate",
        profile.to_str().unwrap(),
        "--dimension",
        v2.join("dimensions").to_str().unwrap(),
        "--custom-metric",
        v2.join("custom-metrics").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn violation_lists_refuse_malformed_name_filters_as_invalid_requests() {
    // issue 15: `list` answered an empty list, `active` ResourceNotFoundException.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    fs::write(
        &config,
        format!(
            "thing_name = \"t\"\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let long = "x".repeat(129);
    for filter in [
        ["--security-profile-name", "no spaces"],
        ["--security-profile-name", long.as_str()],
        ["--thing-name", long.as_str()],
    ] {
        for verb in [
            vec!["violations", "list", "--start-time", "0", "--end-time", "1"],
            vec!["violations", "active"],
        ] {
            let mut args = verb.clone();
            args.extend(["--config", config.as_str()]);
            args.extend(filter);
            let out = run_agent(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let e: serde_json::Value = serde_json::from_slice(&out.stderr)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
            assert_eq!(e["__type"], "InvalidRequestException", "{args:?}");
        }
    }
}

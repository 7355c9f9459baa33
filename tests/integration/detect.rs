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

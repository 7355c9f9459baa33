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
    assert!(out.len() >= 6, "expected the example profiles in {}", root.display());
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
    let err = detect::load_profile(text, "p.json", Format::Json, &ValidationContext::default(), Mode::Load)
        .unwrap_err();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("Behavior Max Message Size is malformed."), "{err}");
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
    let err = detect::load_profile(text, "p.json", Format::Json, &ValidationContext::default(), Mode::Load)
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

//! `manage::push::plan` (a push message from MQTT, untrusted) on arbitrary UTF-8 against a fixed
//! state (one stored dimension, one stored profile using it, one custom metric): never panics; a
//! refusal carries at least one error; an accepted plan's records pass STRICT validation again
//! against the planned dimensions, and the same message planned against the result (after the
//! disk round trip: JSON out, JSON in) changes nothing, as the retained message is delivered
//! again at every connection.
#![no_main]

use defender_agent::detect::profile::parse_json;
use defender_agent::detect::validate::{check_dimension, check_profile};
use defender_agent::detect::{load_custom_metric, CustomMetric, Format, Mode, ValidationContext};
use defender_agent::manage::push::{plan, Outcome, PushPlan};
use defender_agent::manage::{Arns, StoredDimension, StoredProfile};
use libfuzzer_sys::fuzz_target;

const NOW: f64 = 1_800_000_000.5;

const DIMENSION: &str = r#"{"name":"Sensors","arn":"arn:aws:iot:local:000000000000:dimension/Sensors",
  "type":"TOPIC_FILTER","stringValues":["sensors/#"],"creationDate":1700000000.0,
  "lastModifiedDate":1700000000.0}"#;

const PROFILE: &str = r#"{"securityProfileName":"Stored",
  "securityProfileArn":"arn:aws:iot:local:000000000000:securityprofile/Stored",
  "behaviors":[{"name":"FewSensorMessages","metric":"aws:num-messages-sent",
    "metricDimension":{"dimensionName":"Sensors"},
    "criteria":{"comparisonOperator":"less-than","value":{"count":10},"durationSeconds":300}}],
  "version":3,"creationDate":1700000000.0,"lastModifiedDate":1700000100.0}"#;

fn state() -> (Vec<StoredDimension>, Vec<StoredProfile>) {
    let d = parse_json(DIMENSION, "fuzz dimension").expect("fuzz harness: the dimension parses");
    let p = parse_json(PROFILE, "fuzz profile").expect("fuzz harness: the profile parses");
    (vec![d], vec![p])
}

fn metrics() -> Vec<CustomMetric> {
    load_custom_metric(
        include_str!("../../tests/fixtures/detect/replay-custom-metric.json"),
        "replay-custom-metric.json",
        Format::Json,
    )
    .into_iter()
    .collect()
}

/// The state the daemon reads back after writing `plan`: each changed record replaces the one of
/// its name or is added, through the same JSON the files hold.
fn apply(
    plan: &PushPlan,
    dims: &[StoredDimension],
    profiles: &[StoredProfile],
) -> (Vec<StoredDimension>, Vec<StoredProfile>) {
    let mut dims = dims.to_vec();
    for d in &plan.dimensions {
        let record = round_trip_dimension(&d.record);
        match dims.iter_mut().find(|e| e.dimension.name == d.name) {
            Some(e) => *e = record,
            None => dims.push(record),
        }
    }
    let mut profiles = profiles.to_vec();
    for p in &plan.profiles {
        let record = round_trip_profile(&p.record);
        match profiles
            .iter_mut()
            .find(|e| e.profile.security_profile_name == p.name)
        {
            Some(e) => *e = record,
            None => profiles.push(record),
        }
    }
    (dims, profiles)
}

/// JSON out (as `files::Dir::write`), JSON in (as `files::Dir::read_all`).
macro_rules! round_trip_fn {
    ($name:ident, $t:ty) => {
        fn $name(t: &$t) -> $t {
            let text = serde_json::to_string_pretty(t).expect("a planned record serialises");
            parse_json(&text, "written record")
                .unwrap_or_else(|e| panic!("a written record does not read back: {e}\n{text}"))
        }
    };
}
round_trip_fn!(round_trip_dimension, StoredDimension);
round_trip_fn!(round_trip_profile, StoredProfile);

fuzz_target!(|data: &[u8]| {
    // The agent refuses a non-UTF-8 payload (and an oversized one) before `plan`.
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let (dims, profiles) = state();
    let arns = Arns::default();
    let first = match plan(body, &dims, &profiles, metrics(), NOW, &arns) {
        Ok(p) => p,
        Err(r) => {
            assert!(!r.errors.is_empty(), "a refusal without an error");
            let _ = serde_json::to_string(&Outcome::refused(&r)).expect("an outcome serialises");
            return;
        }
    };
    let _ = serde_json::to_string(&Outcome::applied(&first)).expect("an outcome serialises");

    let (new_dims, new_profiles) = apply(&first, &dims, &profiles);
    let ctx = ValidationContext::new(
        new_dims.iter().map(|d| d.dimension.clone()).collect(),
        metrics(),
    );
    for d in &first.dimensions {
        assert_eq!(d.record.dimension.name, d.name);
        let errors = check_dimension(&d.record.dimension, Mode::Strict);
        assert!(
            errors.is_empty(),
            "planned dimension {}: {errors:?}",
            d.name
        );
    }
    for p in &first.profiles {
        assert_eq!(p.record.profile.security_profile_name, p.name);
        let errors = check_profile(&p.record.profile, &ctx, Mode::Strict).errors;
        assert!(errors.is_empty(), "planned profile {}: {errors:?}", p.name);
    }
    // A push never deletes nor retypes a dimension, so the profile it left alone stays valid.
    for p in &new_profiles {
        let errors = check_profile(&p.profile, &ctx, Mode::Strict).errors;
        assert!(
            errors.is_empty(),
            "profile {} after the push: {errors:?}",
            p.profile.security_profile_name
        );
    }

    let again =
        plan(body, &new_dims, &new_profiles, metrics(), NOW + 60.0, &arns).unwrap_or_else(|r| {
            panic!(
                "an accepted push is refused the second time: {:?}",
                r.errors
            )
        });
    assert!(
        !again.changes_anything(),
        "the same push changes something again: {again:?}"
    );
    let (dims3, profiles3) = apply(&again, &new_dims, &new_profiles);
    assert_eq!(dims3, new_dims, "an unchanged push altered a dimension");
    assert_eq!(
        profiles3, new_profiles,
        "an unchanged push altered a profile"
    );
});

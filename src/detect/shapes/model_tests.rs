//! Our shapes and limits against the API model itself (`tests/fixtures/botocore-iot-shapes.json`,
//! extracted from botocore): a member, a type, a limit or an enum value that differs fails here.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::*;
use crate::detect::catalog::{self, ValueKind};
use crate::detect::validate::{self, is_valid_name, CriteriaType, Mode};
use crate::detect::{CustomMetric, Dimension, SecurityProfile};
use crate::manage;

/// The model, compiled in (a pure core's tests do no I/O either: `.ci/run`'s layer check).
fn model() -> Value {
    serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/botocore-iot-shapes.json"
    )))
    .unwrap()
}

fn shape<'a>(m: &'a Value, name: &str) -> &'a Value {
    m["shapes"]
        .get(name)
        .unwrap_or_else(|| panic!("the model has no shape {name}"))
}

/// Every shape we hold, each compared with the model's shape of the same name.
const OURS: &[&Shape] = &[
    &DESCRIBE_SECURITY_PROFILE,
    &DESCRIBE_DIMENSION,
    &DESCRIBE_CUSTOM_METRIC,
    &VALIDATE_BEHAVIORS_REQUEST,
    &CREATE_SECURITY_PROFILE_REQUEST,
    &UPDATE_SECURITY_PROFILE_REQUEST,
    &DESCRIBE_SECURITY_PROFILE_REQUEST,
    &DELETE_SECURITY_PROFILE_REQUEST,
    &LIST_SECURITY_PROFILES_REQUEST,
    &CREATE_DIMENSION_REQUEST,
    &UPDATE_DIMENSION_REQUEST,
    &DIMENSION_NAME_REQUEST,
    &LIST_DIMENSIONS_REQUEST,
];

fn same_type(m: &Value, ours: &Type, model_shape: &str, at: &str) {
    let s = shape(m, model_shape);
    let t = s["type"].as_str().unwrap();
    match ours {
        Type::Structure(o) => {
            assert_eq!(t, "structure", "{at}");
            assert_eq!(o.name, model_shape, "{at}");
            same_shape(m, o);
        }
        Type::List(inner) => {
            assert_eq!(t, "list", "{at}");
            same_type(m, inner, s["member"]["shape"].as_str().unwrap(), at);
        }
        Type::Map(inner) => {
            assert_eq!(t, "map", "{at}");
            same_type(m, inner, s["value"]["shape"].as_str().unwrap(), at);
        }
        scalar => {
            let want = match scalar {
                Type::String => "string",
                Type::Long => "long",
                Type::Integer => "integer",
                Type::Double => "double",
                Type::Boolean => "boolean",
                _ => "timestamp",
            };
            assert_eq!(t, want, "{at} ({model_shape})");
        }
    }
}

fn same_shape(m: &Value, ours: &Shape) {
    let s = shape(m, ours.name);
    let members = s["members"].as_object().unwrap();
    let model_names: Vec<&str> = members.keys().map(String::as_str).collect();
    let our_names: Vec<&str> = ours.members.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        our_names.iter().collect::<BTreeSet<_>>(),
        model_names.iter().collect::<BTreeSet<_>>(),
        "members of {}",
        ours.name
    );
    for (name, t) in ours.members {
        let target = members[*name]["shape"].as_str().unwrap();
        same_type(m, t, target, &format!("{}.{name}", ours.name));
    }
}

#[test]
fn every_shape_we_read_has_exactly_the_models_members_and_types() {
    let m = model();
    assert_eq!(m["apiVersion"], "2015-05-28");
    for s in OURS {
        same_shape(&m, s);
    }
    // DeleteDimensionRequest is DescribeDimensionRequest's twin (one type serves both).
    assert_eq!(
        shape(&m, "DeleteDimensionRequest")["members"],
        shape(&m, "DescribeDimensionRequest")["members"]
    );
    // The Describe outputs and the inputs of the verbs we emulate are the ones we hold.
    let ops = m["operations"].as_object().unwrap();
    for (op, ours) in [
        ("DescribeSecurityProfile", &DESCRIBE_SECURITY_PROFILE),
        ("DescribeDimension", &DESCRIBE_DIMENSION),
        ("DescribeCustomMetric", &DESCRIBE_CUSTOM_METRIC),
    ] {
        assert_eq!(ops[op]["output"], ours.name);
    }
    for (op, ours) in [
        ("CreateSecurityProfile", &CREATE_SECURITY_PROFILE_REQUEST),
        ("UpdateSecurityProfile", &UPDATE_SECURITY_PROFILE_REQUEST),
        (
            "DescribeSecurityProfile",
            &DESCRIBE_SECURITY_PROFILE_REQUEST,
        ),
        ("DeleteSecurityProfile", &DELETE_SECURITY_PROFILE_REQUEST),
        ("ListSecurityProfiles", &LIST_SECURITY_PROFILES_REQUEST),
        (
            "ValidateSecurityProfileBehaviors",
            &VALIDATE_BEHAVIORS_REQUEST,
        ),
        ("CreateDimension", &CREATE_DIMENSION_REQUEST),
        ("UpdateDimension", &UPDATE_DIMENSION_REQUEST),
        ("DescribeDimension", &DIMENSION_NAME_REQUEST),
        ("ListDimensions", &LIST_DIMENSIONS_REQUEST),
    ] {
        assert_eq!(ops[op]["input"], ours.name, "{op}");
    }
}

/// A value of the model's shape with every member set (enums: their first value).
fn sample(m: &Value, name: &str) -> Value {
    let s = shape(m, name);
    match s["type"].as_str().unwrap() {
        "structure" => Value::Object(
            s["members"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), sample(m, v["shape"].as_str().unwrap())))
                .collect(),
        ),
        "list" => json!([sample(m, s["member"]["shape"].as_str().unwrap())]),
        "map" => {
            let key = sample(m, s["key"]["shape"].as_str().unwrap());
            let mut o = Map::new();
            o.insert(
                key.as_str().unwrap().to_owned(),
                sample(m, s["value"]["shape"].as_str().unwrap()),
            );
            Value::Object(o)
        }
        "string" => match s.get("enum") {
            Some(e) => e[0].clone(),
            None => json!("x"),
        },
        "long" | "integer" => json!(7),
        "double" | "timestamp" => json!(1.5),
        "boolean" => json!(true),
        other => panic!("{name}: type {other}"),
    }
}

/// Every member of the model's shape is a field of `T` and kept (round trip); in STRICT, a
/// member the model does not have is refused at every level.
fn round_trip<T: DeserializeOwned + Serialize>(m: &Value, ours: &Shape) {
    let full = sample(m, ours.name);
    let t: T =
        serde_json::from_value(full.clone()).unwrap_or_else(|e| panic!("{}: {e}", ours.name));
    assert_eq!(serde_json::to_value(&t).unwrap(), full, "{}", ours.name);
    assert!(
        check(&full, ours, Root::Members(&[])).is_empty(),
        "{}",
        ours.name
    );
    // One unknown member in every structure of the sample: each is found.
    fn plant(v: &mut Value, n: &mut usize) {
        match v {
            Value::Object(o) => {
                for x in o.values_mut() {
                    plant(x, n);
                }
                o.insert("zzUnknown".into(), json!(1));
                *n += 1;
            }
            Value::Array(a) => a.iter_mut().for_each(|x| plant(x, n)),
            _ => {}
        }
    }
    let mut planted = full.clone();
    let mut n = 0;
    plant(&mut planted, &mut n);
    // Maps (alertTargets) are objects too but their keys are free: not a structure's member.
    let maps = usize::from(full.get("alertTargets").is_some());
    let found = check(&planted, ours, Root::Members(&[]));
    assert_eq!(found.len(), n - maps, "{}: {found:?}", ours.name);
    assert!(found
        .iter()
        .all(|p| p.message == "unknown field `zzUnknown`"));
}

#[test]
fn every_model_member_is_a_field_we_parse_and_keep_and_nothing_else_passes_strict() {
    let m = model();
    round_trip::<SecurityProfile>(&m, &DESCRIBE_SECURITY_PROFILE);
    round_trip::<Dimension>(&m, &DESCRIBE_DIMENSION);
    round_trip::<CustomMetric>(&m, &DESCRIBE_CUSTOM_METRIC);
    round_trip::<manage::CreateSecurityProfileRequest>(&m, &CREATE_SECURITY_PROFILE_REQUEST);
    round_trip::<manage::UpdateSecurityProfileRequest>(&m, &UPDATE_SECURITY_PROFILE_REQUEST);
    round_trip::<manage::ProfileNameRequest>(&m, &DESCRIBE_SECURITY_PROFILE_REQUEST);
    round_trip::<manage::DeleteSecurityProfileRequest>(&m, &DELETE_SECURITY_PROFILE_REQUEST);
    round_trip::<manage::ListSecurityProfilesRequest>(&m, &LIST_SECURITY_PROFILES_REQUEST);
    round_trip::<manage::CreateDimensionRequest>(&m, &CREATE_DIMENSION_REQUEST);
    round_trip::<manage::UpdateDimensionRequest>(&m, &UPDATE_DIMENSION_REQUEST);
    round_trip::<manage::DimensionNameRequest>(&m, &DIMENSION_NAME_REQUEST);
    round_trip::<manage::ListDimensionsRequest>(&m, &LIST_DIMENSIONS_REQUEST);
    // The violation lists' requests (built from flags): the model's members, no more.
    for (name, keys) in [
        (
            "ListViolationEventsRequest",
            serde_json::to_value(crate::detect::query::ListViolationEventsRequest {
                thing_name: Some("t".into()),
                security_profile_name: Some("p".into()),
                behavior_criteria_type: Some("STATIC".into()),
                list_suppressed_alerts: Some(true),
                verification_state: Some("UNKNOWN".into()),
                next_token: Some("n".into()),
                max_results: Some(1),
                ..Default::default()
            })
            .unwrap(),
        ),
        (
            "ListActiveViolationsRequest",
            serde_json::to_value(crate::detect::query::ListActiveViolationsRequest {
                thing_name: Some("t".into()),
                security_profile_name: Some("p".into()),
                behavior_criteria_type: Some("STATIC".into()),
                list_suppressed_alerts: Some(true),
                verification_state: Some("UNKNOWN".into()),
                next_token: Some("n".into()),
                max_results: Some(1),
            })
            .unwrap(),
        ),
    ] {
        let ours: BTreeSet<&String> = keys.as_object().unwrap().keys().collect();
        let model: BTreeSet<&String> = shape(&m, name)["members"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(ours, model, "{name}");
    }
}

fn meta(s: &Value) -> Limit {
    Limit {
        min: s["min"].as_i64(),
        max: s["max"].as_i64(),
        pattern: s["pattern"].as_str().map(|p| &*p.to_owned().leak()),
    }
}

/// The limits we enforce, by the model shape they come from.
const ENFORCED: &[(&str, &Limit)] = &[
    ("SecurityProfileName", &NAME),
    ("BehaviorName", &NAME),
    ("DimensionName", &NAME),
    ("MetricName", &NAME),
    ("RoleArn", &ROLE_ARN),
    ("MqttTopic", &MQTT_TOPIC),
    ("TagKey", &TAG_KEY),
    ("TagValue", &TAG_VALUE),
    ("ClientRequestToken", &CLIENT_REQUEST_TOKEN),
    ("DimensionStringValues", &DIMENSION_STRING_VALUES),
    ("DimensionStringValue", &DIMENSION_STRING_VALUE),
    ("DeviceDefenderThingName", &THING_NAME),
    ("Cidr", &CIDR),
    (
        "SecurityProfileDescription",
        &Limit {
            min: None,
            max: Some(1000),
            pattern: Some("[\\p{Graph}\\x20]*"),
        },
    ),
    (
        "VerificationStateDescription",
        &Limit {
            min: None,
            max: Some(1000),
            pattern: Some("[^\\p{Cntrl}]*"),
        },
    ),
    (
        "Behaviors",
        &Limit {
            min: None,
            max: Some(100),
            pattern: None,
        },
    ),
    ("ConsecutiveDatapointsToAlarm", &limit(1, 10, None)),
    ("ConsecutiveDatapointsToClear", &limit(1, 10, None)),
    ("Port", &limit(0, 65535, None)),
    ("MaxResults", &limit(1, 250, None)),
    (
        "UnsignedLong",
        &Limit {
            min: Some(0),
            max: None,
            pattern: None,
        },
    ),
];

/// Model limits we leave to someone else, and why.
const NOT_ENFORCED: &[(&str, &str)] = &[
    (
        "CustomMetricDisplayName",
        "custom metrics are read-only definitions here (no CreateCustomMetric verb), loaded as AWS wrote them",
    ),
    (
        "ViolationId",
        "an id we did not issue is not found whatever its form (PutVerificationStateOnViolation)",
    ),
    (
        "EvaluationStatistic",
        "its pattern is the list catalog::STATISTICS, checked below",
    ),
];

#[test]
fn every_limit_we_enforce_is_the_models_and_none_is_forgotten() {
    let m = model();
    for (name, ours) in ENFORCED {
        assert_eq!(meta(shape(&m, name)), **ours, "{name}");
    }
    let shapes = m["shapes"].as_object().unwrap();
    for (name, s) in shapes {
        let limited = ["min", "max", "pattern"]
            .iter()
            .any(|k| s.get(*k).is_some());
        let known =
            ENFORCED.iter().any(|(n, _)| n == name) || NOT_ENFORCED.iter().any(|(n, _)| n == name);
        assert!(
            !limited || known,
            "the model limits {name} ({s}): enforce it or say why not"
        );
    }
    // The statistic pattern is our list of percentiles.
    assert_eq!(
        shape(&m, "EvaluationStatistic")["pattern"],
        format!("({})", catalog::STATISTICS.join("|").replace('.', "\\."))
    );
}

#[test]
fn the_limits_hold_where_they_are_enforced() {
    for n in [0, 1, 128, 129] {
        assert_eq!(is_valid_name(&"a".repeat(n)), NAME.admits(n as i64), "{n}");
    }
    assert!(!is_valid_name("a b") && is_valid_name("a:b_c-9"));
    assert!(is_client_request_token("a-Z_9") && !is_client_request_token("a.b"));
    assert!(is_tag_key("env:prod/é 1=+-@_.") && !is_tag_key("a*b") && !is_tag_key("a\tb"));
    for (v, ok) in [
        ("10.0.0.0/8", true),
        ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", false),
    ] {
        let b: crate::detect::Behavior = serde_json::from_value(json!({"name":"B","metric":"aws:destination-ip-addresses","criteria":{"comparisonOperator":"in-cidr-set","value":{"cidrs":[v]}}})).unwrap();
        let ctx = validate::ValidationContext::default();
        assert_eq!(
            validate::check_behavior(&b, &ctx, Mode::Strict).is_empty(),
            ok,
            "{v}"
        );
    }
}

fn enum_values(m: &Value, name: &str) -> Vec<String> {
    shape(m, name)["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_enum_we_accept_is_the_models() {
    let m = model();
    let ops: BTreeSet<String> = [
        ValueKind::Count,
        ValueKind::Cidrs,
        ValueKind::Ports,
        ValueKind::Strings,
    ]
    .iter()
    .flat_map(|k| k.operators().iter().map(|s| s.to_string()))
    .collect();
    assert_eq!(
        ops,
        enum_values(&m, "ComparisonOperator").into_iter().collect()
    );
    for v in enum_values(&m, "ConfidenceLevel") {
        assert!(crate::detect::criteria::z_threshold(&v).is_some(), "{v}");
    }
    for v in enum_values(&m, "CustomMetricType") {
        serde_json::from_value::<crate::custom_metric::CustomMetricType>(json!(v)).unwrap();
    }
    let ctypes: Vec<String> = [
        CriteriaType::Static,
        CriteriaType::Statistical,
        CriteriaType::MachineLearning,
    ]
    .iter()
    .map(|c| c.as_str().to_owned())
    .collect();
    assert_eq!(ctypes, enum_values(&m, "BehaviorCriteriaType"));
    for v in enum_values(&m, "VerificationState") {
        assert!(
            crate::detect::violation::VerificationState::parse(&v).is_some(),
            "{v}"
        );
    }
    assert_eq!(enum_values(&m, "DimensionType"), ["TOPIC_FILTER"]);
    assert_eq!(enum_values(&m, "AlertTargetType"), ["SNS"]);
    assert_eq!(enum_values(&m, "DimensionValueOperator"), ["IN", "NOT_IN"]);
}

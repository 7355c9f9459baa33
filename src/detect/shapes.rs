//! The API model's shapes for what we read (botocore `iot` 2015-05-28: the Describe outputs and
//! the request inputs), and the STRICT check that refuses a member the model does not have, at
//! any depth, or a `long` written as a string. LOAD does not run it: AWS may add members.
//!
//! `tests/fixtures/botocore-iot-shapes.json` holds the model's own text for these shapes; the
//! tests below compare them member by member, and every limit we enforce with the model's.

use serde_json::Value;
use serde_path_to_error::Segment;

/// A member's type, as the model's `type` (structures and lists by their content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// `structure`.
    Structure(&'static Shape),
    /// `list` of the type.
    List(&'static Type),
    /// `map` from a string to the type.
    Map(&'static Type),
    /// `string`.
    String,
    /// `long`.
    Long,
    /// `integer`.
    Integer,
    /// `double`.
    Double,
    /// `boolean`.
    Boolean,
    /// `timestamp` (epoch seconds or ISO 8601, see [`super::timestamp`]).
    Timestamp,
}

/// A structure of the model: its name there and its members.
#[derive(Debug, PartialEq, Eq)]
pub struct Shape {
    /// The model's shape name.
    pub name: &'static str,
    /// Members in the model's order.
    pub members: &'static [(&'static str, Type)],
}

/// `Behavior`.
pub const BEHAVIOR: Shape = Shape {
    name: "Behavior",
    members: &[
        ("name", Type::String),
        ("metric", Type::String),
        ("metricDimension", Type::Structure(&METRIC_DIMENSION)),
        ("criteria", Type::Structure(&BEHAVIOR_CRITERIA)),
        ("suppressAlerts", Type::Boolean),
        ("exportMetric", Type::Boolean),
    ],
};

/// `MetricDimension`.
pub const METRIC_DIMENSION: Shape = Shape {
    name: "MetricDimension",
    members: &[("dimensionName", Type::String), ("operator", Type::String)],
};

/// `BehaviorCriteria`.
pub const BEHAVIOR_CRITERIA: Shape = Shape {
    name: "BehaviorCriteria",
    members: &[
        ("comparisonOperator", Type::String),
        ("value", Type::Structure(&METRIC_VALUE)),
        ("durationSeconds", Type::Integer),
        ("consecutiveDatapointsToAlarm", Type::Integer),
        ("consecutiveDatapointsToClear", Type::Integer),
        (
            "statisticalThreshold",
            Type::Structure(&STATISTICAL_THRESHOLD),
        ),
        (
            "mlDetectionConfig",
            Type::Structure(&MACHINE_LEARNING_DETECTION_CONFIG),
        ),
    ],
};

/// `MetricValue`.
pub const METRIC_VALUE: Shape = Shape {
    name: "MetricValue",
    members: &[
        ("count", Type::Long),
        ("cidrs", Type::List(&Type::String)),
        ("ports", Type::List(&Type::Integer)),
        ("number", Type::Double),
        ("numbers", Type::List(&Type::Double)),
        ("strings", Type::List(&Type::String)),
    ],
};

/// `StatisticalThreshold`.
pub const STATISTICAL_THRESHOLD: Shape = Shape {
    name: "StatisticalThreshold",
    members: &[("statistic", Type::String)],
};

/// `MachineLearningDetectionConfig`.
pub const MACHINE_LEARNING_DETECTION_CONFIG: Shape = Shape {
    name: "MachineLearningDetectionConfig",
    members: &[("confidenceLevel", Type::String)],
};

/// `AlertTarget`.
pub const ALERT_TARGET: Shape = Shape {
    name: "AlertTarget",
    members: &[("alertTargetArn", Type::String), ("roleArn", Type::String)],
};

/// `MetricToRetain`.
pub const METRIC_TO_RETAIN: Shape = Shape {
    name: "MetricToRetain",
    members: &[
        ("metric", Type::String),
        ("metricDimension", Type::Structure(&METRIC_DIMENSION)),
        ("exportMetric", Type::Boolean),
    ],
};

/// `MetricsExportConfig`.
pub const METRICS_EXPORT_CONFIG: Shape = Shape {
    name: "MetricsExportConfig",
    members: &[("mqttTopic", Type::String), ("roleArn", Type::String)],
};

/// `Tag`.
pub const TAG: Shape = Shape {
    name: "Tag",
    members: &[("Key", Type::String), ("Value", Type::String)],
};

/// `DescribeSecurityProfileResponse`: a profile document and a pushed profile.
pub const DESCRIBE_SECURITY_PROFILE: Shape = Shape {
    name: "DescribeSecurityProfileResponse",
    members: &[
        ("securityProfileName", Type::String),
        ("securityProfileArn", Type::String),
        ("securityProfileDescription", Type::String),
        ("behaviors", Type::List(&Type::Structure(&BEHAVIOR))),
        ("alertTargets", Type::Map(&Type::Structure(&ALERT_TARGET))),
        ("additionalMetricsToRetain", Type::List(&Type::String)),
        (
            "additionalMetricsToRetainV2",
            Type::List(&Type::Structure(&METRIC_TO_RETAIN)),
        ),
        ("version", Type::Long),
        ("creationDate", Type::Timestamp),
        ("lastModifiedDate", Type::Timestamp),
        (
            "metricsExportConfig",
            Type::Structure(&METRICS_EXPORT_CONFIG),
        ),
    ],
};

/// `DescribeDimensionResponse`: a dimension document and a pushed dimension.
pub const DESCRIBE_DIMENSION: Shape = Shape {
    name: "DescribeDimensionResponse",
    members: &[
        ("name", Type::String),
        ("arn", Type::String),
        ("type", Type::String),
        ("stringValues", Type::List(&Type::String)),
        ("creationDate", Type::Timestamp),
        ("lastModifiedDate", Type::Timestamp),
    ],
};

/// `ValidateSecurityProfileBehaviorsRequest`.
pub const VALIDATE_BEHAVIORS_REQUEST: Shape = Shape {
    name: "ValidateSecurityProfileBehaviorsRequest",
    members: &[("behaviors", Type::List(&Type::Structure(&BEHAVIOR)))],
};

/// `CreateSecurityProfileRequest`.
pub const CREATE_SECURITY_PROFILE_REQUEST: Shape = Shape {
    name: "CreateSecurityProfileRequest",
    members: &[
        ("securityProfileName", Type::String),
        ("securityProfileDescription", Type::String),
        ("behaviors", Type::List(&Type::Structure(&BEHAVIOR))),
        ("alertTargets", Type::Map(&Type::Structure(&ALERT_TARGET))),
        ("additionalMetricsToRetain", Type::List(&Type::String)),
        (
            "additionalMetricsToRetainV2",
            Type::List(&Type::Structure(&METRIC_TO_RETAIN)),
        ),
        ("tags", Type::List(&Type::Structure(&TAG))),
        (
            "metricsExportConfig",
            Type::Structure(&METRICS_EXPORT_CONFIG),
        ),
    ],
};

/// `UpdateSecurityProfileRequest`.
pub const UPDATE_SECURITY_PROFILE_REQUEST: Shape = Shape {
    name: "UpdateSecurityProfileRequest",
    members: &[
        ("securityProfileName", Type::String),
        ("securityProfileDescription", Type::String),
        ("behaviors", Type::List(&Type::Structure(&BEHAVIOR))),
        ("alertTargets", Type::Map(&Type::Structure(&ALERT_TARGET))),
        ("additionalMetricsToRetain", Type::List(&Type::String)),
        (
            "additionalMetricsToRetainV2",
            Type::List(&Type::Structure(&METRIC_TO_RETAIN)),
        ),
        ("deleteBehaviors", Type::Boolean),
        ("deleteAlertTargets", Type::Boolean),
        ("deleteAdditionalMetricsToRetain", Type::Boolean),
        ("expectedVersion", Type::Long),
        (
            "metricsExportConfig",
            Type::Structure(&METRICS_EXPORT_CONFIG),
        ),
        ("deleteMetricsExportConfig", Type::Boolean),
    ],
};

/// `DescribeSecurityProfileRequest`.
pub const DESCRIBE_SECURITY_PROFILE_REQUEST: Shape = Shape {
    name: "DescribeSecurityProfileRequest",
    members: &[("securityProfileName", Type::String)],
};

/// `DeleteSecurityProfileRequest`.
pub const DELETE_SECURITY_PROFILE_REQUEST: Shape = Shape {
    name: "DeleteSecurityProfileRequest",
    members: &[
        ("securityProfileName", Type::String),
        ("expectedVersion", Type::Long),
    ],
};

/// `ListSecurityProfilesRequest`.
pub const LIST_SECURITY_PROFILES_REQUEST: Shape = Shape {
    name: "ListSecurityProfilesRequest",
    members: &[
        ("nextToken", Type::String),
        ("maxResults", Type::Integer),
        ("dimensionName", Type::String),
        ("metricName", Type::String),
    ],
};

/// `CreateDimensionRequest`.
pub const CREATE_DIMENSION_REQUEST: Shape = Shape {
    name: "CreateDimensionRequest",
    members: &[
        ("name", Type::String),
        ("type", Type::String),
        ("stringValues", Type::List(&Type::String)),
        ("tags", Type::List(&Type::Structure(&TAG))),
        ("clientRequestToken", Type::String),
    ],
};

/// `UpdateDimensionRequest`.
pub const UPDATE_DIMENSION_REQUEST: Shape = Shape {
    name: "UpdateDimensionRequest",
    members: &[
        ("name", Type::String),
        ("stringValues", Type::List(&Type::String)),
    ],
};

/// `DescribeDimensionRequest` (DeleteDimensionRequest has the same single member).
pub const DIMENSION_NAME_REQUEST: Shape = Shape {
    name: "DescribeDimensionRequest",
    members: &[("name", Type::String)],
};

/// `ListDimensionsRequest`.
pub const LIST_DIMENSIONS_REQUEST: Shape = Shape {
    name: "ListDimensionsRequest",
    members: &[("nextToken", Type::String), ("maxResults", Type::Integer)],
};

/// `DescribeCustomMetricResponse`: a custom metric document (compared with the model in tests;
/// custom metric files are read-only context, loaded leniently).
pub const DESCRIBE_CUSTOM_METRIC: Shape = Shape {
    name: "DescribeCustomMetricResponse",
    members: &[
        ("metricName", Type::String),
        ("metricArn", Type::String),
        ("metricType", Type::String),
        ("displayName", Type::String),
        ("creationDate", Type::Timestamp),
        ("lastModifiedDate", Type::Timestamp),
    ],
};

/// A length (strings: characters; lists: entries) or range limit and a pattern, as the model's
/// `min`, `max` and `pattern` of a shape; the checks that enforce it name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Smallest length or value.
    pub min: Option<i64>,
    /// Largest length or value.
    pub max: Option<i64>,
    /// The model's pattern text (matched by hand where it is enforced).
    pub pattern: Option<&'static str>,
}

impl Limit {
    /// Whether a length or value is within `min..=max`.
    pub fn admits(&self, n: i64) -> bool {
        self.min.is_none_or(|m| n >= m) && self.max.is_none_or(|m| n <= m)
    }
}

const fn limit(min: i64, max: i64, pattern: Option<&'static str>) -> Limit {
    Limit {
        min: Some(min),
        max: Some(max),
        pattern,
    }
}

/// `SecurityProfileName`, `BehaviorName`, `DimensionName`, `MetricName` ([`super::validate::is_valid_name`]).
pub const NAME: Limit = limit(1, 128, Some("[a-zA-Z0-9:_-]+"));
/// `RoleArn` (alert targets and the metrics export config).
pub const ROLE_ARN: Limit = limit(20, 2048, None);
/// `MqttTopic` (metrics export config).
pub const MQTT_TOPIC: Limit = limit(1, 512, None);
/// `TagKey` ([`is_tag_key`]).
pub const TAG_KEY: Limit = limit(1, 128, Some("^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$"));
/// `TagValue`.
pub const TAG_VALUE: Limit = limit(0, 256, None);
/// `ClientRequestToken` ([`is_client_request_token`]).
pub const CLIENT_REQUEST_TOKEN: Limit = limit(1, 64, Some("^[a-zA-Z0-9-_]+$"));
/// `DimensionStringValues`.
pub const DIMENSION_STRING_VALUES: Limit = limit(1, 100, None);
/// `DimensionStringValue`.
pub const DIMENSION_STRING_VALUE: Limit = limit(1, 256, None);
/// `DeviceDefenderThingName` (the violation lists' filter).
pub const THING_NAME: Limit = limit(1, 128, None);
/// `Cidr` (a criteria value; the pattern's characters are a superset of what an IP or CIDR
/// parse takes).
pub const CIDR: Limit = limit(2, 43, Some("[a-fA-F0-9:\\.\\/]+"));

/// Whether `key` matches `TagKey`'s pattern `^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`: letters,
/// separators, numbers and `_.:/=+-@` (letters read as Rust's alphabetic, which also takes the
/// few combining marks Unicode counts as alphabetic).
pub fn is_tag_key(key: &str) -> bool {
    key.chars().all(|c| {
        c.is_alphabetic()
            || c.is_numeric()
            || (c.is_whitespace() && !c.is_control())
            || "_.:/=+-@".contains(c)
    })
}

/// Whether `t` matches `ClientRequestToken`'s pattern `^[a-zA-Z0-9-_]+$` (length apart).
pub fn is_client_request_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A member the model does not have, or a value of the wrong type, and where.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Where, as serde_path_to_error segments (empty = the document's root).
    pub path: Vec<Segment>,
    /// `unknown field `x`` or `invalid type: …`.
    pub message: String,
}

impl Problem {
    /// The path as `behaviors[0].criteria` (`.` for the root), as serde_path_to_error writes it.
    pub fn path_text(&self) -> String {
        path_text(&self.path)
    }
}

/// A path as serde_path_to_error prints one.
pub fn path_text(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// What [`check`] looks at on the document's root object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root<'a> {
    /// Every member: the shape's plus these (our own, e.g. `localMetadata`).
    Members(&'a [&'a str]),
    /// Only inside the known members (the root is checked by the typed parser itself).
    Inside,
}

/// Every member of `v` (an object of `shape`) the model does not have, at any depth, and every
/// `long` written as a string (the model's `count` is a number; LOAD takes digits too).
pub fn check(v: &Value, shape: &Shape, root: Root<'_>) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    walk_struct(v, shape, root, &mut path, &mut out);
    out
}

fn walk_struct(
    v: &Value,
    shape: &Shape,
    root: Root<'_>,
    path: &mut Vec<Segment>,
    out: &mut Vec<Problem>,
) {
    let Some(o) = v.as_object() else { return };
    for (k, v) in o {
        path.push(Segment::Map { key: k.clone() });
        match shape.members.iter().find(|(name, _)| name == k) {
            Some((_, t)) => walk(v, t, path, out),
            None => match root {
                Root::Members(extra) if extra.contains(&k.as_str()) => {}
                Root::Inside => {}
                Root::Members(_) => out.push(Problem {
                    // The member's parent: serde's "unknown field" is reported there too.
                    path: path[..path.len() - 1].to_vec(),
                    message: format!("unknown field `{k}`"),
                }),
            },
        }
        path.pop();
    }
}

fn walk(v: &Value, t: &Type, path: &mut Vec<Segment>, out: &mut Vec<Problem>) {
    match t {
        Type::Structure(s) => walk_struct(v, s, Root::Members(&[]), path, out),
        Type::List(t) => {
            for (index, v) in v.as_array().into_iter().flatten().enumerate() {
                path.push(Segment::Seq { index });
                walk(v, t, path, out);
                path.pop();
            }
        }
        Type::Map(t) => {
            for (k, v) in v.as_object().into_iter().flatten() {
                path.push(Segment::Map { key: k.clone() });
                walk(v, t, path, out);
                path.pop();
            }
        }
        Type::Long => {
            if let Value::String(s) = v {
                out.push(Problem {
                    path: path.clone(),
                    message: format!("invalid type: string {s:?}, expected a long"),
                });
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_member_is_found_at_any_depth_with_its_path() {
        let v: Value = serde_json::from_str(
            r#"{"behaviors":[{"name":"B","criteria":{"value":{"count":"5","colour":1},"x":2}}],"localMetadata":{},"y":3}"#,
        )
        .unwrap();
        let found: Vec<(String, String)> = check(
            &v,
            &DESCRIBE_SECURITY_PROFILE,
            Root::Members(&["localMetadata"]),
        )
        .into_iter()
        .map(|p| (p.path_text(), p.message))
        .collect();
        assert_eq!(
            found,
            vec![
                (
                    "behaviors[0].criteria.value".to_owned(),
                    "unknown field `colour`".to_owned()
                ),
                (
                    "behaviors[0].criteria.value.count".to_owned(),
                    "invalid type: string \"5\", expected a long".to_owned()
                ),
                (
                    "behaviors[0].criteria".to_owned(),
                    "unknown field `x`".to_owned()
                ),
                (".".to_owned(), "unknown field `y`".to_owned()),
            ]
        );
        let inside = check(&v, &DESCRIBE_SECURITY_PROFILE, Root::Inside);
        assert_eq!(inside.len(), 3);
    }
}

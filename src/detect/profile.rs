//! Security profiles, behaviors, dimensions and custom metrics in the AWS API JSON shapes, and
//! their loaders from JSON or TOML text (no I/O: the caller reads the file).
//!
//! spec: detect.md §1.3 (behaviour), §4 (validation), §5 (dimensions); API DescribeSecurityProfile.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use serde_path_to_error::Segment;

use super::{shapes, timestamp};
use crate::custom_metric::CustomMetricType;

/// The output of `aws iot describe-security-profile`, field order as the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityProfile {
    /// Profile name, `[a-zA-Z0-9:_-]+`, 1..128.
    pub security_profile_name: String,
    /// The profile's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_profile_arn: Option<String>,
    /// Free text, at most 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_profile_description: Option<String>,
    /// The behaviors (at most 100).
    #[serde(default)]
    pub behaviors: Vec<Behavior>,
    /// Alert targets by type (only `SNS` exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_targets: Option<BTreeMap<String, AlertTarget>>,
    /// Deprecated list of metric names retained for fleet indexing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metrics_to_retain: Option<Vec<String>>,
    /// Metrics retained for fleet indexing (never evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metrics_to_retain_v2: Option<Vec<MetricToRetain>>,
    /// Metrics export configuration, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_export_config: Option<MetricsExportConfig>,
    /// Incremented on each update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Epoch seconds (read from a number or an ISO 8601 string, written as a number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timestamp::de_opt"
    )]
    pub creation_date: Option<f64>,
    /// Epoch seconds (read from a number or an ISO 8601 string, written as a number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timestamp::de_opt"
    )]
    pub last_modified_date: Option<f64>,
}

/// An alert target (`alertTargets.SNS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertTarget {
    /// The SNS topic ARN.
    pub alert_target_arn: String,
    /// The role AWS assumes to publish.
    pub role_arn: String,
}

/// `metricsExportConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsExportConfig {
    /// The MQTT topic metrics are exported to.
    pub mqtt_topic: String,
    /// The role used to publish.
    pub role_arn: String,
}

/// One entry of `additionalMetricsToRetainV2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricToRetain {
    /// Metric name.
    pub metric: String,
    /// Optional dimension (retention only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_dimension: Option<MetricDimension>,
    /// Whether the metric is exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_metric: Option<bool>,
}

/// A behavior: what "normal" looks like for one metric (spec: detect.md §1.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Behavior {
    /// Behavior name, `[a-zA-Z0-9:_-]+`, 1..128, unique in the profile.
    pub name: String,
    /// The metric (`aws:*` or a custom metric name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Optional TOPIC_FILTER scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_dimension: Option<MetricDimension>,
    /// The criteria; a behavior without criteria is never evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criteria: Option<BehaviorCriteria>,
    /// Record violations but do not notify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_alerts: Option<bool>,
    /// Export the metric (kept verbatim, no local meaning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_metric: Option<bool>,
}

/// `metricDimension`: a dimension name and an optional operator (absent = IN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricDimension {
    /// The dimension's name.
    pub dimension_name: String,
    /// `IN` or `NOT_IN`; kept as text so a wrong value becomes a validation message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
}

/// `criteria`, field order as the API.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorCriteria {
    /// Operator text, checked by validation (§3.1, §3.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison_operator: Option<String>,
    /// Static threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<MetricValue>,
    /// Window length in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// CDA, 1..10, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_datapoints_to_alarm: Option<i64>,
    /// CDC, 1..10, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_datapoints_to_clear: Option<i64>,
    /// Statistical threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistical_threshold: Option<StatisticalThreshold>,
    /// ML Detect configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ml_detection_config: Option<MlDetectionConfig>,
}

/// `statisticalThreshold`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatisticalThreshold {
    /// `p0` … `p100` (text; checked by validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
}

/// `mlDetectionConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MlDetectionConfig {
    /// `LOW`, `MEDIUM` or `HIGH` (text; checked by validation).
    pub confidence_level: String,
}

/// `MetricValue`: used as a criteria value, an event's `metricValue` and `lastViolationValue`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    /// Built-in numeric metrics. Accepts a digit string too (CloudFormation writes one).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_count"
    )]
    pub count: Option<u64>,
    /// CIDRs or bare IPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidrs: Option<Vec<String>>,
    /// Ports; i64 so an out-of-range port is a validation message, not a parse error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<i64>>,
    /// Custom `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<f64>,
    /// Custom `number-list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numbers: Option<Vec<f64>>,
    /// Custom `string-list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strings: Option<Vec<String>>,
}

impl MetricValue {
    /// Names of the fields that are set, in API order.
    pub fn set_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.count.is_some() {
            out.push("count");
        }
        if self.cidrs.is_some() {
            out.push("cidrs");
        }
        if self.ports.is_some() {
            out.push("ports");
        }
        if self.number.is_some() {
            out.push("number");
        }
        if self.numbers.is_some() {
            out.push("numbers");
        }
        if self.strings.is_some() {
            out.push("strings");
        }
        out
    }

    /// Number of elements (counts, IPs, ports, …) for the 1000-per-profile quota (V4).
    pub fn element_count(&self) -> usize {
        usize::from(self.count.is_some())
            + usize::from(self.number.is_some())
            + self.cidrs.as_ref().map_or(0, Vec::len)
            + self.ports.as_ref().map_or(0, Vec::len)
            + self.numbers.as_ref().map_or(0, Vec::len)
            + self.strings.as_ref().map_or(0, Vec::len)
    }
}

/// Accepts `count` as a non-negative integer or a string of digits (spec: detect.md §3.1, CFN).
fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct CountVisitor;
    impl Visitor<'_> for CountVisitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative integer or a string of digits")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("count {v} must be >= 0")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!("count {v} must be a whole number >= 0")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(E::custom(format!("count {v:?} is not a string of digits")));
            }
            v.parse::<u64>()
                .map(Some)
                .map_err(|_| E::custom(format!("count {v:?} is out of range")))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(CountVisitor)
}

/// The output of `aws iot describe-dimension`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dimension {
    /// Dimension name, `[a-zA-Z0-9:_-]+`, 1..128.
    pub name: String,
    /// The dimension's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// Only `TOPIC_FILTER` exists (text; checked at load).
    #[serde(rename = "type")]
    pub dimension_type: String,
    /// Topic filters.
    pub string_values: Vec<String>,
    /// Epoch seconds (read from a number or an ISO 8601 string, written as a number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timestamp::de_opt"
    )]
    pub creation_date: Option<f64>,
    /// Epoch seconds (read from a number or an ISO 8601 string, written as a number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timestamp::de_opt"
    )]
    pub last_modified_date: Option<f64>,
}

/// The output of `aws iot describe-custom-metric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetric {
    /// Metric name (not starting with `aws:`).
    pub metric_name: String,
    /// The metric's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_arn: Option<String>,
    /// One of the four custom types.
    pub metric_type: CustomMetricType,
    /// Friendly name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Epoch seconds (read from a number or an ISO 8601 string, written as a number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timestamp::de_opt"
    )]
    pub creation_date: Option<f64>,
    /// Epoch seconds (read from a number or an ISO 8601 string, written as a number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timestamp::de_opt"
    )]
    pub last_modified_date: Option<f64>,
}

/// A syntax or shape error while parsing a document, naming where it happened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Malformed JSON or a JSON value of the wrong shape.
    #[error("{source_name}:{line}:{column}: at {path}: {message}")]
    Json {
        /// Caller-supplied name (usually the file path).
        source_name: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Field path, e.g. `behaviors[0].criteria.value.count` (`.` for the root).
        path: String,
        /// serde_json's message.
        message: String,
    },
    /// Malformed TOML or a TOML value of the wrong shape.
    #[error("{source_name}:{line}: at {path}: {message}")]
    Toml {
        /// Caller-supplied name.
        source_name: String,
        /// 1-based line (0 when toml gave no position).
        line: usize,
        /// Key path.
        path: String,
        /// toml's message (first line).
        message: String,
    },
}

/// Parses a JSON document into `T`, reporting line, column and field path on error.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    source_name: &str,
) -> Result<T, ParseError> {
    parse_doc_checked(text, source_name, Format::Json, None)
}

/// Parses a document into `T` as [`parse_doc`]; with `strict`, first refuses a member the API
/// model does not have or a `long` written as a string ([`shapes::check`]), naming its path and
/// position (the first one found).
pub fn parse_doc_checked<T: serde::de::DeserializeOwned>(
    text: &str,
    source_name: &str,
    format: Format,
    strict: Option<(&shapes::Shape, shapes::Root<'_>)>,
) -> Result<T, ParseError> {
    // Two steps, so each document type is deserialized (and monomorphized) from one kind of
    // input only, a `Value`: the text's syntax errors carry line and column from the first step;
    // a shape error's position is found afterwards by [`locate`], which walks the text once.
    let value = parse_value(text, source_name, format)?;
    if let Some((shape, root)) = strict {
        if let Some(p) = shapes::check(&value, shape, root).into_iter().next() {
            return Err(shape_error(text, source_name, format, &p.path, p.message));
        }
    }
    from_value(value, text, source_name, format)
}

/// A document's text as a JSON value (TOML converted), syntax errors with their position.
pub fn parse_value(
    text: &str,
    source_name: &str,
    format: Format,
) -> Result<serde_json::Value, ParseError> {
    match format {
        Format::Json => {
            serde_json::from_str(text).map_err(|e| json_error(source_name, ".".to_owned(), &e))
        }
        Format::Toml => {
            let de = toml::Deserializer::parse(text)
                .map_err(|e| toml_error(text, source_name, ".", &e))?;
            let mut v = serde::Deserialize::deserialize(de)
                .map_err(|e: toml::de::Error| toml_error(text, source_name, ".", &e))?;
            timestamp::unwrap_toml_datetimes(&mut v);
            Ok(v)
        }
    }
}

/// `T` from the value of a document's `text`, a shape error located in the text.
fn from_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    text: &str,
    source_name: &str,
    format: Format,
) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let message = e.into_inner().to_string();
        shape_error(text, source_name, format, &segments, message)
    })
}

/// A shape error at `path` of the document, with its line (and column, JSON).
pub(crate) fn shape_error(
    text: &str,
    source_name: &str,
    format: Format,
    path: &[Segment],
    message: String,
) -> ParseError {
    let path_text = shapes::path_text(path);
    match format {
        Format::Json => {
            let (line, column) = locate(text, path).unwrap_or((0, 0));
            ParseError::Json {
                source_name: source_name.to_owned(),
                line,
                column,
                path: path_text,
                message,
            }
        }
        Format::Toml => {
            let line = toml::Deserializer::parse(text)
                .ok()
                .and_then(|de| seek(de, path).err())
                .map_or(0, |found| toml_line(text, &found));
            ParseError::Toml {
                source_name: source_name.to_owned(),
                line,
                path: path_text,
                message,
            }
        }
    }
}

/// Line and column (1-based) of the value at `path` in a JSON text that parses (see [`seek`]).
fn locate(text: &str, path: &[Segment]) -> Option<(usize, usize)> {
    let mut de = serde_json::Deserializer::from_str(text);
    seek(&mut de, path).err().map(|e| (e.line(), e.column()))
}

const HERE: &str = "defender-agent: located";

/// Walks a document to the value at `path` and fails there on purpose: the deserializer stamps
/// the failure with its position (JSON: line and column; TOML: a span). `Ok` = not found. One
/// copy per input format, whatever the document type.
fn seek<'de, D: serde::Deserializer<'de>>(d: D, path: &[Segment]) -> Result<(), D::Error> {
    use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

    struct Seek<'a>(&'a [Segment]);
    impl<'de> DeserializeSeed<'de> for Seek<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            if self.0.is_empty() {
                return Err(D::Error::custom(HERE));
            }
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Seek<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let (first, rest) = match self.0.split_first() {
                Some((Segment::Map { key }, rest)) => (key, rest),
                _ => return Ok(()),
            };
            while let Some(k) = map.next_key::<String>()? {
                if &k == first {
                    return map.next_value_seed(Seek(rest));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let (index, rest) = match self.0.split_first() {
                Some((Segment::Seq { index }, rest)) => (*index, rest),
                _ => return Ok(()),
            };
            for _ in 0..index {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
            }
            seq.next_element_seed(Seek(rest)).map(|_| ())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }

    match Seek(path).deserialize(d) {
        // Only the planted failure has a position worth reporting.
        Err(e) if e.to_string().contains(HERE) => Err(e),
        _ => Ok(()),
    }
}

fn json_error(source_name: &str, path: String, e: &serde_json::Error) -> ParseError {
    // serde_json's Display appends " at line L column C"; strip it, we carry them as fields.
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        // Invariant: rfind returns a char boundary inside `full`.
        Some(i) => full[..i].to_owned(),
        None => full,
    };
    ParseError::Json {
        source_name: source_name.to_owned(),
        line: e.line(),
        column: e.column(),
        path,
        message,
    }
}

/// Parses a TOML document into `T`, reporting key path and line on error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    source_name: &str,
) -> Result<T, ParseError> {
    // As parse_json: TOML → `Value` → T, so T is monomorphized for one input kind only; a shape
    // error's line is found afterwards by walking the TOML once more (see `locate`).
    parse_doc_checked(text, source_name, Format::Toml, None)
}

fn toml_line(text: &str, e: &toml::de::Error) -> usize {
    e.span().map_or(0, |s| {
        text.as_bytes()[..s.start.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    })
}

fn toml_error(text: &str, source_name: &str, path: &str, e: &toml::de::Error) -> ParseError {
    let line = e
        .span()
        .map(|s| {
            // Invariant: the end is clamped to text.len().
            text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        })
        .unwrap_or(0);
    ParseError::Toml {
        source_name: source_name.to_owned(),
        line,
        path: path.to_owned(),
        message: e.message().lines().next().unwrap_or("").to_owned(),
    }
}

/// The text format of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// AWS CLI JSON output.
    Json,
    /// The same shapes written in TOML.
    Toml,
}

impl Format {
    /// Picks the format from a file name's extension (`.toml` → TOML, anything else → JSON).
    pub fn from_name(name: &str) -> Format {
        if name.ends_with(".toml") {
            Format::Toml
        } else {
            Format::Json
        }
    }
}

/// Parses a document in the given format.
pub fn parse_doc<T: serde::de::DeserializeOwned>(
    text: &str,
    source_name: &str,
    format: Format,
) -> Result<T, ParseError> {
    parse_doc_checked(text, source_name, format, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_can_be_a_number_or_a_digit_string() {
        let v: MetricValue = parse_json(r#"{"count":"100000"}"#, "t").unwrap();
        assert_eq!(v.count, Some(100000));
        let v: MetricValue = parse_json(r#"{"count":5}"#, "t").unwrap();
        assert_eq!(v.count, Some(5));
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"count":5}"#);
    }

    #[test]
    fn a_negative_count_names_the_field_path_line_and_column() {
        let text = "{\"name\":\"B\",\"criteria\":{\n\"value\":{\"count\":-1}}}";
        let err = parse_json::<Behavior>(text, "b.json").unwrap_err();
        match err {
            ParseError::Json {
                line,
                column,
                path,
                message,
                ..
            } => {
                assert_eq!(line, 2);
                // The value starts at column 18 (found after the fact, see `locate`).
                assert!((17..=18).contains(&column), "{column}");
                assert_eq!(path, "criteria.value.count");
                assert!(message.contains("must be >= 0"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err =
            parse_json::<SecurityProfile>("{\n  \"securityProfileName\": \"P\",,\n}", "p.json")
                .unwrap_err();
        match err {
            ParseError::Json { line, column, .. } => {
                assert_eq!(line, 2);
                assert!(column > 20);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn toml_profiles_use_the_same_shapes_and_errors_name_the_key_and_line() {
        let text = "securityProfileName = \"P\"\n[[behaviors]]\nname = \"B\"\nmetric = \"aws:num-messages-sent\"\n[behaviors.criteria]\ncomparisonOperator = \"less-than\"\ndurationSeconds = 300\n[behaviors.criteria.value]\ncount = 10\n";
        let p: SecurityProfile = parse_toml(text, "p.toml").unwrap();
        assert_eq!(
            p.behaviors[0]
                .criteria
                .as_ref()
                .unwrap()
                .value
                .as_ref()
                .unwrap()
                .count,
            Some(10)
        );
        let bad = text.replace("durationSeconds = 300", "durationSeconds = \"x\"");
        match parse_toml::<SecurityProfile>(&bad, "p.toml").unwrap_err() {
            ParseError::Toml { line, path, .. } => {
                assert_eq!(path, "behaviors[0].criteria.durationSeconds");
                assert_eq!(line, 7);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dimension_and_a_custom_metric_parse_from_cli_output() {
        let d: Dimension = parse_json(
            r#"{"name":"TopicFilterForAuthMessages","arn":"arn:aws:iot:eu-west-2:123456789012:dimension/TopicFilterForAuthMessages","type":"TOPIC_FILTER","stringValues":["device/+/auth"],"creationDate":1578620223.255,"lastModifiedDate":1578620223.255}"#,
            "d",
        )
        .unwrap();
        assert_eq!(d.string_values, vec!["device/+/auth"]);
        let m: CustomMetric = parse_json(
            r#"{"metricName":"batteryPercentage","metricArn":"arn:aws:iot:us-east-1:1234564789012:custommetric/batteryPercentage","metricType":"number","displayName":"Remaining battery percentage on device","creationDate":1615414393.54,"lastModifiedDate":1615414393.54}"#,
            "m",
        )
        .unwrap();
        assert_eq!(m.metric_type, CustomMetricType::Number);
    }
}

//! Behavior and profile validation: the ValidateSecurityProfileBehaviors emulation (STRICT) and
//! the lenient checks applied to profiles that came from AWS (LOAD).
//!
//! spec: detect.md §4 (rules V1–V18, profile-level rules, the two modes), §5 (dimension limits).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use serde_path_to_error::Segment;

use super::catalog::{self, MetricInfo, ValueKind};
use super::criteria::{z_threshold, Cidr};
use super::profile::{self, Behavior, CustomMetric, Dimension, ParseError, SecurityProfile};
use super::shapes;
use crate::custom_metric::{check_custom_metric_name, CustomMetricType};

/// Which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Profiles that came from AWS: wire rules fail the load, anything else skips the behavior.
    Load,
    /// ValidateSecurityProfileBehaviors emulation and locally authored profiles: every rule.
    Strict,
}

/// The dimensions and custom metrics behaviors may refer to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidationContext {
    /// Dimensions by name.
    pub dimensions: BTreeMap<String, Dimension>,
    /// Custom metrics by name.
    pub custom_metrics: BTreeMap<String, CustomMetric>,
}

impl ValidationContext {
    /// Builds a context from lists (later duplicates win).
    pub fn new(dimensions: Vec<Dimension>, custom_metrics: Vec<CustomMetric>) -> Self {
        ValidationContext {
            dimensions: dimensions
                .into_iter()
                .map(|d| (d.name.clone(), d))
                .collect(),
            custom_metrics: custom_metrics
                .into_iter()
                .map(|m| (m.metric_name.clone(), m))
                .collect(),
        }
    }
}

/// The ValidateSecurityProfileBehaviors response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationResult {
    /// True when there are no errors.
    pub valid: bool,
    /// One entry per problem.
    pub validation_errors: Vec<ValidationError>,
}

/// One validation error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationError {
    /// `Behavior <name> is malformed. <detail>`.
    pub error_message: String,
}

/// One problem found in a behavior; `wire` problems fail even a LOAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Enforced by the AWS API itself (holds in LOAD mode).
    pub wire: bool,
    /// The detail text after `Behavior <name> is malformed. `.
    pub detail: String,
}

impl Issue {
    fn wire(detail: String) -> Issue {
        Issue { wire: true, detail }
    }
    fn rule(detail: String) -> Issue {
        Issue {
            wire: false,
            detail,
        }
    }
}

/// The criteria type (spec: detect.md §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CriteriaType {
    /// `value` + operator.
    Static,
    /// `statisticalThreshold` + operator.
    Statistical,
    /// `mlDetectionConfig`.
    MachineLearning,
}

impl CriteriaType {
    /// The API text (`STATIC`, `STATISTICAL`, `MACHINE_LEARNING`).
    pub fn as_str(self) -> &'static str {
        match self {
            CriteriaType::Static => "STATIC",
            CriteriaType::Statistical => "STATISTICAL",
            CriteriaType::MachineLearning => "MACHINE_LEARNING",
        }
    }
}

/// Classifies a behavior: ML > STATISTICAL > STATIC (vorpalstacks' rule); `None` without criteria.
pub fn criteria_type(b: &Behavior) -> Option<CriteriaType> {
    let c = b.criteria.as_ref()?;
    if c.ml_detection_config.is_some() {
        Some(CriteriaType::MachineLearning)
    } else if c.statistical_threshold.is_some() {
        Some(CriteriaType::Statistical)
    } else {
        Some(CriteriaType::Static)
    }
}

/// Whether a name follows `[a-zA-Z0-9:_-]+`, 1..128 (BehaviorName, profile and dimension names).
pub fn is_valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

/// Resolves the behavior's metric to its catalogue entry. In LOAD mode an unknown custom metric's
/// type is inferred from the criteria (AWS already accepted it).
pub fn resolve_metric(
    b: &Behavior,
    ctx: &ValidationContext,
    mode: Mode,
) -> Result<MetricInfo, String> {
    let Some(metric) = b.metric.as_deref() else {
        return Err("metric is required".to_owned());
    };
    if let Some(i) = catalog::builtin(metric) {
        return Ok(i);
    }
    if metric.starts_with("aws:") {
        return Err(format!("metric {metric} is not a known metric"));
    }
    if check_custom_metric_name(metric).is_err() {
        return Err(format!(
            "metric {metric:?} must be 1-128 characters of [a-zA-Z0-9:_-]"
        ));
    }
    if let Some(m) = ctx.custom_metrics.get(metric) {
        return Ok(catalog::custom(m.metric_type));
    }
    if mode == Mode::Load {
        if let Some(t) = infer_custom_type(b) {
            return Ok(catalog::custom(t));
        }
    }
    Err(format!(
        "metric {metric} is not a known metric or a defined custom metric"
    ))
}

fn infer_custom_type(b: &Behavior) -> Option<CustomMetricType> {
    let c = b.criteria.as_ref()?;
    if c.statistical_threshold.is_some() || c.ml_detection_config.is_some() {
        return Some(CustomMetricType::Number);
    }
    let v = c.value.as_ref()?;
    if v.number.is_some() || v.count.is_some() {
        Some(CustomMetricType::Number)
    } else if v.numbers.is_some() {
        Some(CustomMetricType::NumberList)
    } else if v.strings.is_some() {
        Some(CustomMetricType::StringList)
    } else if v.cidrs.is_some() {
        Some(CustomMetricType::IpAddressList)
    } else {
        None
    }
}

/// Checks one behavior against V1, V5–V16 and V18 (the profile-level V2–V4, V17 are in
/// [`check_behaviors`]).
pub fn check_behavior(b: &Behavior, ctx: &ValidationContext, mode: Mode) -> Vec<Issue> {
    let mut out = Vec::new();
    // V1 (wire)
    if !is_valid_name(&b.name) {
        out.push(Issue::wire(format!(
            "name {:?} must be 1-128 characters matching [a-zA-Z0-9:_-]+",
            b.name
        )));
    }
    // V9 (wire): element ranges, independent of the metric.
    if let Some(v) = b.criteria.as_ref().and_then(|c| c.value.as_ref()) {
        if let Some(p) = v.ports.iter().flatten().find(|p| !(0..=65535).contains(*p)) {
            out.push(Issue::wire(format!("port {p} should be in range[0,65535]")));
        }
        for c in v.cidrs.iter().flatten() {
            if let Err(e) = Cidr::parse(c) {
                out.push(Issue::wire(e.to_string()));
            } else if !shapes::CIDR.admits(c.chars().count() as i64) {
                // A valid but long IPv6 form (e.g. an IPv4-mapped address written in full).
                out.push(Issue::rule(format!("cidr {c} must be 2-43 characters")));
            }
        }
        if let Some(x) = v
            .number
            .iter()
            .chain(v.numbers.iter().flatten())
            .find(|x| !x.is_finite())
        {
            out.push(Issue::wire(format!("number {x} is not finite")));
        }
    }
    // V16
    let Some(c) = b.criteria.as_ref() else {
        out.push(Issue::rule("criteria is required".to_owned()));
        return out;
    };
    // V10
    for (field, v) in [
        (
            "consecutiveDatapointsToAlarm",
            c.consecutive_datapoints_to_alarm,
        ),
        (
            "consecutiveDatapointsToClear",
            c.consecutive_datapoints_to_clear,
        ),
    ] {
        if let Some(v) = v {
            if !(1..=10).contains(&v) {
                out.push(Issue::rule(format!("{field} {v} should be in range[1,10]")));
            }
        }
    }
    // V5
    let info = match resolve_metric(b, ctx, mode) {
        Ok(i) => i,
        Err(e) => {
            out.push(Issue::rule(e));
            return out;
        }
    };
    let metric = b.metric.as_deref().unwrap_or_default();
    // V6
    let n = usize::from(c.value.is_some())
        + usize::from(c.statistical_threshold.is_some())
        + usize::from(c.ml_detection_config.is_some());
    if n != 1 {
        out.push(Issue::rule(format!(
            "criteria must contain exactly one of value, statisticalThreshold or mlDetectionConfig, found {n}"
        )));
        return out;
    }
    let ctype = criteria_type(b).unwrap_or(CriteriaType::Static);
    // V7
    match (ctype, c.comparison_operator.as_deref()) {
        (CriteriaType::MachineLearning, Some(op)) => out.push(Issue::rule(format!(
            "comparisonOperator {op} is not allowed with mlDetectionConfig"
        ))),
        (CriteriaType::MachineLearning, None) => {}
        (_, None) => out.push(Issue::rule("comparisonOperator is required".to_owned())),
        (_, Some(op)) => {
            let allowed = info.kind.operators();
            if !allowed.contains(&op) {
                out.push(Issue::rule(format!(
                    "comparisonOperator {op} is not allowed for metric {metric}; allowed: {}",
                    allowed.join(", ")
                )));
            }
        }
    }
    // V8
    if let Some(v) = &c.value {
        let fields = v.set_fields();
        let want = info.kind.field();
        let lenient_numeric = mode == Mode::Load
            && matches!(info.kind, ValueKind::Count | ValueKind::Number)
            && fields.len() == 1
            // Invariant: fields[0] is read only after a len() == 1 check (here and below).
            && matches!(fields[0], "count" | "number");
        if fields.len() != 1 {
            out.push(Issue::rule(format!(
                "value must set exactly one field ({want} for metric {metric}), found {}",
                if fields.is_empty() {
                    "none".to_owned()
                } else {
                    fields.join(", ")
                }
            )));
        } else if fields[0] != want && !lenient_numeric {
            out.push(Issue::rule(format!(
                "value must use {want} for metric {metric}, found {}",
                fields[0]
            )));
        }
    }
    // V11, V12
    match c.duration_seconds {
        Some(d) if ctype == CriteriaType::MachineLearning => out.push(Issue::rule(format!(
            "durationSeconds {d} is not allowed with mlDetectionConfig"
        ))),
        Some(d) if !info.duration_allowed => out.push(Issue::rule(format!(
            "durationSeconds {d} is not allowed for metric {metric}"
        ))),
        Some(d) if !catalog::DURATIONS.contains(&d) => out.push(Issue::rule(format!(
            "durationSeconds {d} should be one of [300, 600, 900, 1800, 3600]"
        ))),
        Some(_) => {}
        None if mode == Mode::Strict && ctype == CriteriaType::Statistical => out.push(
            Issue::rule("durationSeconds is required with statisticalThreshold".to_owned()),
        ),
        None if mode == Mode::Strict && ctype == CriteriaType::Static && info.duration_required => {
            out.push(Issue::rule(format!(
                "durationSeconds is required for metric {metric}"
            )))
        }
        None => {}
    }
    // V13
    if let Some(st) = &c.statistical_threshold {
        if !info.statistical {
            out.push(Issue::rule(format!(
                "statisticalThreshold is not supported for metric {metric}"
            )));
        } else {
            match st.statistic.as_deref() {
                None => out.push(Issue::rule(
                    "statisticalThreshold.statistic is required".to_owned(),
                )),
                Some(s) if catalog::percentile_of(s).is_none() => out.push(Issue::rule(format!(
                    "statistic {s} should be one of [{}]",
                    catalog::STATISTICS.join(", ")
                ))),
                Some(_) => {}
            }
        }
    }
    // V14
    if let Some(ml) = &c.ml_detection_config {
        if !info.ml {
            out.push(Issue::rule(format!(
                "mlDetectionConfig is not supported for metric {metric}"
            )));
        } else if z_threshold(&ml.confidence_level).is_none() {
            out.push(Issue::rule(format!(
                "confidenceLevel {} should be one of [LOW, MEDIUM, HIGH]",
                ml.confidence_level
            )));
        }
    }
    // V15
    if let Some(d) = &b.metric_dimension {
        if info.builtin.is_none() {
            out.push(Issue::rule(
                "metricDimension cannot be used with custom metrics".to_owned(),
            ));
        } else if !info.dimension {
            out.push(Issue::rule(format!(
                "metricDimension is not supported for metric {metric}"
            )));
        } else if ctype == CriteriaType::MachineLearning && !info.ml_dimension {
            out.push(Issue::rule(format!(
                "metricDimension is not supported with mlDetectionConfig for metric {metric}"
            )));
        } else if !is_valid_name(&d.dimension_name) {
            out.push(Issue::wire(format!(
                "dimensionName {:?} must be 1-128 characters matching [a-zA-Z0-9:_-]+",
                d.dimension_name
            )));
        } else if !ctx.dimensions.contains_key(&d.dimension_name) {
            out.push(Issue::rule(format!(
                "dimension {} does not exist",
                d.dimension_name
            )));
        }
        if let Some(op) = d.operator.as_deref() {
            if op != "IN" && op != "NOT_IN" {
                out.push(Issue::wire(format!(
                    "metricDimension operator {op} should be one of [IN, NOT_IN]"
                )));
            }
        }
    }
    out
}

/// A problem of one behavior in a list, with its index and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BehaviorIssue {
    /// Index in the list.
    pub index: usize,
    /// The behavior's name (as written).
    pub name: String,
    /// The problem.
    pub issue: Issue,
}

impl BehaviorIssue {
    /// `Behavior <name> is malformed. <detail>`.
    pub fn message(&self) -> String {
        format!("Behavior {} is malformed. {}", self.name, self.issue.detail)
    }
}

/// Checks a list of behaviors: every behavior plus V2 (unique names) and V3 (at most 100).
pub fn check_behaviors(
    behaviors: &[Behavior],
    ctx: &ValidationContext,
    mode: Mode,
) -> Vec<BehaviorIssue> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, b) in behaviors.iter().enumerate() {
        let mut push = |issue| {
            out.push(BehaviorIssue {
                index,
                name: b.name.clone(),
                issue,
            })
        };
        if index == 100 {
            push(Issue::wire(format!(
                "a security profile has at most 100 behaviors, found {}",
                behaviors.len()
            )));
        }
        if !seen.insert(b.name.as_str()) {
            push(Issue::rule(format!(
                "behavior name {} is used more than once in the security profile",
                b.name
            )));
        }
        for issue in check_behavior(b, ctx, mode) {
            push(issue);
        }
    }
    out
}

/// Non-fatal remarks about a list of behaviors: V4 (1000 value elements) and V17 (mixed ML/rules).
pub fn behavior_warnings(behaviors: &[Behavior]) -> Vec<String> {
    let mut out = Vec::new();
    let elements: usize = behaviors
        .iter()
        .filter_map(|b| b.criteria.as_ref()?.value.as_ref())
        .map(|v| v.element_count())
        .sum();
    if elements > 1000 {
        out.push(format!(
            "the behaviors hold {elements} value elements; the old AWS quota is 1000 per profile"
        ));
    }
    let ml = behaviors
        .iter()
        .filter(|b| criteria_type(b) == Some(CriteriaType::MachineLearning))
        .count();
    if ml > 0 && ml < behaviors.len() {
        out.push("the profile mixes ML and rule-based behaviors; AWS documents a profile as one or the other".to_owned());
    }
    out
}

/// The ValidateSecurityProfileBehaviors emulation (STRICT) over typed behaviors.
pub fn validate_behaviors(behaviors: &[Behavior], ctx: &ValidationContext) -> ValidationResult {
    let errors: Vec<String> = check_behaviors(behaviors, ctx, Mode::Strict)
        .iter()
        .map(BehaviorIssue::message)
        .collect();
    result(errors)
}

fn result(errors: Vec<String>) -> ValidationResult {
    ValidationResult {
        valid: errors.is_empty(),
        validation_errors: errors
            .into_iter()
            .map(|error_message| ValidationError { error_message })
            .collect(),
    }
}

/// The emulation over raw JSON: a request body `{"behaviors":[...]}`, a profile document, or a bare
/// array. A behavior of the wrong shape becomes a `Behavior <name> is malformed.` message; only
/// JSON that is not a list of objects at all is a [`ParseError`].
pub fn validate_behaviors_json(
    text: &str,
    source_name: &str,
    ctx: &ValidationContext,
) -> Result<ValidationResult, ParseError> {
    validate_behaviors_text(text, source_name, profile::Format::Json, ctx)
}

/// [`validate_behaviors_json`] for a document in JSON or TOML (a TOML document has a top-level
/// `behaviors` array of tables).
pub fn validate_behaviors_text(
    text: &str,
    source_name: &str,
    format: profile::Format,
    ctx: &ValidationContext,
) -> Result<ValidationResult, ParseError> {
    let doc = profile::parse_value(text, source_name, format)?;
    // A member the model does not have: outside the behaviors the document is refused (the
    // request or profile is malformed); inside, the behavior is (its message names the path).
    let problems = match &doc {
        serde_json::Value::Object(_) => shapes::check(
            &doc,
            &shapes::DESCRIBE_SECURITY_PROFILE,
            shapes::Root::Members(super::LOCAL_MEMBERS),
        ),
        _ => shapes::check(
            &serde_json::json!({ "behaviors": doc }),
            &shapes::VALIDATE_BEHAVIORS_REQUEST,
            shapes::Root::Inside,
        ),
    };
    let mut in_behavior: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for p in problems {
        match p.path.as_slice() {
            [Segment::Map { key }, Segment::Seq { index }, rest @ ..] if key == "behaviors" => {
                in_behavior.entry(*index).or_default().push(format!(
                    "{} at {}",
                    p.message,
                    shapes::path_text(rest)
                ))
            }
            _ => {
                return Err(profile::shape_error(
                    text,
                    source_name,
                    format,
                    &p.path,
                    p.message,
                ));
            }
        }
    }
    let list = match &doc {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) => match o.get("behaviors") {
            Some(serde_json::Value::Array(a)) => a.clone(),
            _ => {
                return Err(ParseError::Json {
                    source_name: source_name.to_owned(),
                    line: 1,
                    column: 1,
                    path: "behaviors".to_owned(),
                    message: "behaviors is required and must be a list".to_owned(),
                })
            }
        },
        _ => {
            return Err(ParseError::Json {
                source_name: source_name.to_owned(),
                line: 1,
                column: 1,
                path: ".".to_owned(),
                message: "expected an object with behaviors or a list of behaviors".to_owned(),
            })
        }
    };
    let mut typed = Vec::new();
    let mut shape_errors = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        let name = raw
            .get("name")
            .and_then(|n| n.as_str())
            .map_or_else(|| format!("#{i}"), str::to_owned);
        if let Some(found) = in_behavior.remove(&i) {
            shape_errors.extend(
                found
                    .into_iter()
                    .map(|m| format!("Behavior {name} is malformed. {m}")),
            );
            continue;
        }
        match serde_path_to_error::deserialize::<_, Behavior>(raw) {
            Ok(b) => typed.push(b),
            Err(e) => shape_errors.push(format!(
                "Behavior {name} is malformed. {} at {}",
                e.inner(),
                e.path()
            )),
        }
    }
    let mut errors = shape_errors;
    if list.len() > 100 && typed.len() <= 100 {
        errors.push(format!(
            "Behavior {} is malformed. a security profile has at most 100 behaviors, found {}",
            list.get(100)
                .and_then(|b| b.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or("#100"),
            list.len()
        ));
    }
    errors.extend(
        check_behaviors(&typed, ctx, Mode::Strict)
            .iter()
            .map(BehaviorIssue::message),
    );
    Ok(result(errors))
}

/// The outcome of checking a whole profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileCheck {
    /// Messages that fail the profile (wire rules in LOAD, everything in STRICT).
    pub errors: Vec<String>,
    /// LOAD only: behaviors skipped, by index, with the reason.
    pub skipped: BTreeMap<usize, Vec<String>>,
    /// Non-fatal remarks (V4, V17).
    pub warnings: Vec<String>,
}

/// Checks the profile-level rules and every behavior.
pub fn check_profile(p: &SecurityProfile, ctx: &ValidationContext, mode: Mode) -> ProfileCheck {
    let mut out = ProfileCheck::default();
    let name = &p.security_profile_name;
    if !is_valid_name(name) {
        out.errors.push(format!(
            "Security profile {name} is malformed. securityProfileName must be 1-128 characters matching [a-zA-Z0-9:_-]+"
        ));
    }
    if let Some(d) = &p.security_profile_description {
        if d.chars().count() > 1000 || d.chars().any(|c| c.is_control()) {
            out.errors.push(format!(
                "Security profile {name} is malformed. securityProfileDescription must be at most 1000 printable characters"
            ));
        }
    }
    if let Some(t) = &p.alert_targets {
        if let Some(k) = t.keys().find(|k| k.as_str() != "SNS") {
            out.errors.push(format!(
                "Security profile {name} is malformed. alertTargets key {k} should be SNS"
            ));
        }
    }
    if mode == Mode::Strict {
        // The model's limits AWS enforces on input (what AWS returned already met them).
        let role_arns = p
            .alert_targets
            .iter()
            .flatten()
            .map(|(k, t)| (format!("alertTargets.{k}.roleArn"), &t.role_arn))
            .chain(
                p.metrics_export_config
                    .iter()
                    .map(|c| ("metricsExportConfig.roleArn".to_owned(), &c.role_arn)),
            );
        for (at, arn) in role_arns {
            if !shapes::ROLE_ARN.admits(arn.chars().count() as i64) {
                out.errors.push(format!(
                    "Security profile {name} is malformed. {at} must be 20-2048 characters"
                ));
            }
        }
        if let Some(c) = &p.metrics_export_config {
            if !shapes::MQTT_TOPIC.admits(c.mqtt_topic.chars().count() as i64) {
                out.errors.push(format!(
                    "Security profile {name} is malformed. metricsExportConfig.mqttTopic must be 1-512 characters"
                ));
            }
        }
    }
    for issue in check_behaviors(&p.behaviors, ctx, mode) {
        if mode == Mode::Strict || issue.issue.wire {
            out.errors.push(issue.message());
        } else {
            out.skipped
                .entry(issue.index)
                .or_default()
                .push(issue.message());
        }
    }
    out.warnings = behavior_warnings(&p.behaviors);
    out
}

/// Checks a dimension: name, type and 1-100 values (wire); in STRICT also unique values and
/// valid filter syntax (spec: detect.md §5, A14; the API model's 1-100 over the spec's 5).
pub fn check_dimension(d: &Dimension, mode: Mode) -> Vec<String> {
    let mut out = Vec::new();
    let n = &d.name;
    if !is_valid_name(n) {
        out.push(format!(
            "Dimension {n} is malformed. name must be 1-128 characters matching [a-zA-Z0-9:_-]+"
        ));
    }
    if d.dimension_type != "TOPIC_FILTER" {
        out.push(format!(
            "Dimension {n} is malformed. type {} should be TOPIC_FILTER",
            d.dimension_type
        ));
    }
    if !shapes::DIMENSION_STRING_VALUES.admits(d.string_values.len() as i64) {
        out.push(format!(
            "Dimension {n} is malformed. stringValues has {} entries, should be in range[1,100]",
            d.string_values.len()
        ));
    }
    for v in &d.string_values {
        if !shapes::DIMENSION_STRING_VALUE.admits(v.chars().count() as i64) {
            out.push(format!(
                "Dimension {n} is malformed. string value {v:?} must be 1-256 characters"
            ));
        } else if mode == Mode::Strict
            && crate::topic_filter::TopicFilter::parse_dimension_value(v).is_err()
        {
            out.push(format!(
                "Dimension {n} is malformed. {v:?} is not a valid MQTT topic filter"
            ));
        }
    }
    if mode == Mode::Strict {
        let unique: BTreeSet<&String> = d.string_values.iter().collect();
        if unique.len() != d.string_values.len() {
            out.push(format!(
                "Dimension {n} is malformed. stringValues must be unique"
            ));
        }
    }
    out
}

/// Checks a custom metric definition (name rule).
pub fn check_custom_metric(m: &CustomMetric) -> Vec<String> {
    match check_custom_metric_name(&m.metric_name) {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!("Custom metric {} is malformed. {e}", m.metric_name)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(json: &str) -> Behavior {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_published_cda_message_is_reproduced_exactly() {
        let r = validate_behaviors(
            &[b(
                r#"{"name":"Authorization","metric":"aws:num-authorization-failures","criteria":{"comparisonOperator":"less-than","value":{"count":10},"durationSeconds":300,"consecutiveDatapointsToAlarm":100000,"consecutiveDatapointsToClear":1}}"#,
            )],
            &ValidationContext::default(),
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"valid":false,"validationErrors":[{"errorMessage":"Behavior Authorization is malformed. consecutiveDatapointsToAlarm 100000 should be in range[1,10]"}]}"#
        );
    }

    #[test]
    fn load_mode_accepts_number_for_count_and_fills_no_duration_error() {
        let x = b(
            r#"{"name":"B","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","value":{"number":10}}}"#,
        );
        assert!(check_behavior(&x, &ValidationContext::default(), Mode::Load).is_empty());
        assert_eq!(
            check_behavior(&x, &ValidationContext::default(), Mode::Strict).len(),
            2
        );
    }

    fn ctx() -> ValidationContext {
        ValidationContext::new(
            vec![serde_json::from_str(
                r#"{"name":"AuthTopics","type":"TOPIC_FILTER","stringValues":["device/+/auth"]}"#,
            )
            .unwrap()],
            vec![serde_json::from_str(
                r#"{"metricName":"batteryPercentage","metricType":"number"}"#,
            )
            .unwrap()],
        )
    }

    #[test]
    fn every_tc38_input_gives_exactly_one_error_with_the_template() {
        let ok = r#""metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","value":{"count":10},"durationSeconds":300}"#;
        let cases: Vec<(String, &str)> = vec![
            (format!(r#"{{"name":"B",{}}}"#, ok.replace(r#""durationSeconds":300"#, r#""durationSeconds":300,"consecutiveDatapointsToAlarm":0"#)), "consecutiveDatapointsToAlarm 0 should be in range[1,10]"),
            (format!(r#"{{"name":"B",{}}}"#, ok.replace(r#""durationSeconds":300"#, r#""durationSeconds":300,"consecutiveDatapointsToClear":11"#)), "consecutiveDatapointsToClear 11 should be in range[1,10]"),
            (format!(r#"{{"name":"B",{}}}"#, ok.replace("300", "120")), "durationSeconds 120 should be one of"),
            (r#"{"name":"B","metric":"aws:listening-tcp-ports","criteria":{"comparisonOperator":"in-port-set","value":{"ports":[443]},"durationSeconds":300}}"#.into(), "durationSeconds 300 is not allowed for metric aws:listening-tcp-ports"),
            (format!(r#"{{"name":"B",{}}}"#, ok.replace(r#""less-than""#, r#""in-port-set""#)), "comparisonOperator in-port-set is not allowed for metric aws:num-messages-sent"),
            (r#"{"name":"B","metric":"aws:source-ip-address","criteria":{"comparisonOperator":"less-than","value":{"cidrs":["10.0.0.0/8"]}}}"#.into(), "comparisonOperator less-than is not allowed for metric aws:source-ip-address"),
            (format!(r#"{{"name":"Max Message Size",{}}}"#, ok), "name \"Max Message Size\" must be"),
            (r#"{"name":"B","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","durationSeconds":300}}"#.into(), "exactly one of value, statisticalThreshold or mlDetectionConfig, found 0"),
            (r#"{"name":"B","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","value":{"count":1},"statisticalThreshold":{"statistic":"p90"},"durationSeconds":300}}"#.into(), "found 2"),
            (r#"{"name":"B","metric":"aws:all-bytes-out","metricDimension":{"dimensionName":"AuthTopics"},"criteria":{"comparisonOperator":"less-than","value":{"count":1}}}"#.into(), "metricDimension is not supported for metric aws:all-bytes-out"),
            (r#"{"name":"B","metric":"batteryPercentage","metricDimension":{"dimensionName":"AuthTopics"},"criteria":{"comparisonOperator":"less-than","value":{"number":1}}}"#.into(), "metricDimension cannot be used with custom metrics"),
            (r#"{"name":"B","metric":"aws:destination-ip-addresses","criteria":{"mlDetectionConfig":{"confidenceLevel":"HIGH"}}}"#.into(), "mlDetectionConfig is not supported for metric aws:destination-ip-addresses"),
            (r#"{"name":"B","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","statisticalThreshold":{"statistic":"p95"},"durationSeconds":300}}"#.into(), "statistic p95 should be one of"),
            (r#"{"name":"B","metric":"aws:listening-tcp-ports","criteria":{"comparisonOperator":"in-port-set","value":{"ports":[70000]}}}"#.into(), "port 70000 should be in range[0,65535]"),
            (r#"{"name":"B","metric":"aws:destination-ip-addresses","criteria":{"comparisonOperator":"in-cidr-set","value":{"cidrs":["10.0.0.0/33"]}}}"#.into(), "has a prefix longer than 32"),
            (r#"{"name":"B","metric":"aws:message-byte-size","criteria":{"comparisonOperator":"less-than","value":{"ports":[1]}}}"#.into(), "value must use count for metric aws:message-byte-size, found ports"),
            (r#"{"name":"B","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","statisticalThreshold":{"statistic":"p90"}}}"#.into(), "durationSeconds is required with statisticalThreshold"),
            (r#"{"name":"B","metric":"aws:num-messages-sent","criteria":{"mlDetectionConfig":{"confidenceLevel":"VERY_HIGH"}}}"#.into(), "confidenceLevel VERY_HIGH should be one of [LOW, MEDIUM, HIGH]"),
            (r#"{"name":"B","metric":"aws:foo","criteria":{"comparisonOperator":"less-than","value":{"count":1}}}"#.into(), "metric aws:foo is not a known metric"),
            (r#"{"name":"B","metric":"aws:num-messages-sent","metricDimension":{"dimensionName":"Missing"},"criteria":{"comparisonOperator":"less-than","value":{"count":1},"durationSeconds":300}}"#.into(), "dimension Missing does not exist"),
            (r#"{"name":"B","metric":"aws:num-messages-sent"}"#.into(), "criteria is required"),
            (r#"{"name":"B","metric":"aws:num-messages-sent","criteria":{"value":{"count":1},"durationSeconds":300}}"#.into(), "comparisonOperator is required"),
            (r#"{"name":"B","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","value":{"count":1}}}"#.into(), "durationSeconds is required for metric aws:num-messages-sent"),
            (r#"{"name":"B","metric":"batteryPercentage","criteria":{"comparisonOperator":"less-than","value":{"count":1}}}"#.into(), "value must use number for metric batteryPercentage, found count"),
            (r#"{"name":"B","metric":"aws:num-messages-sent","metricDimension":{"dimensionName":"AuthTopics","operator":"OUT"},"criteria":{"comparisonOperator":"less-than","value":{"count":1},"durationSeconds":300}}"#.into(), "operator OUT should be one of [IN, NOT_IN]"),
        ];
        for (json, want) in cases {
            let r = validate_behaviors(&[b(&json)], &ctx());
            assert!(!r.valid, "{json}");
            assert_eq!(
                r.validation_errors.len(),
                1,
                "{json}: {:?}",
                r.validation_errors
            );
            let msg = &r.validation_errors[0].error_message;
            assert!(msg.starts_with("Behavior "), "{msg}");
            assert!(msg.contains(" is malformed. "), "{msg}");
            assert!(msg.contains(want), "{json}\n got {msg}\n want {want}");
        }
    }

    #[test]
    fn profile_level_rules_give_one_error_each() {
        let one = r#"{"name":"X","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","value":{"count":1},"durationSeconds":300}}"#;
        let r = validate_behaviors(&[b(one), b(one)], &ctx());
        assert_eq!(r.validation_errors.len(), 1);
        assert!(r.validation_errors[0]
            .error_message
            .contains("Behavior X is malformed. behavior name X is used more than once"));
        let many: Vec<Behavior> = (0..101)
            .map(|i| {
                let mut x = b(one);
                x.name = format!("B{i}");
                x
            })
            .collect();
        let r = validate_behaviors(&many, &ctx());
        assert_eq!(r.validation_errors.len(), 1);
        assert!(r.validation_errors[0].error_message.starts_with(
            "Behavior B100 is malformed. a security profile has at most 100 behaviors, found 101"
        ));
    }

    #[test]
    fn the_s12_example_behaviors_are_valid() {
        let body = r#"{"behaviors":[{"name":"CellularBandwidth","metric":"aws:message-byte-size","criteria":{"comparisonOperator":"greater-than","value":{"count":128},"consecutiveDatapointsToAlarm":1,"consecutiveDatapointsToClear":1}},{"name":"Authorization","metric":"aws:num-authorization-failures","criteria":{"comparisonOperator":"less-than","value":{"count":10},"durationSeconds":300,"consecutiveDatapointsToAlarm":1,"consecutiveDatapointsToClear":1}}]}"#;
        let r = validate_behaviors_json(body, "body", &ctx()).unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"valid":true,"validationErrors":[]}"#
        );
    }

    #[test]
    fn a_behavior_of_the_wrong_shape_is_a_malformed_message_not_a_parse_error() {
        let body = r#"{"behaviors":[{"name":"W","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than","value":{"count":"ten"},"durationSeconds":300}}]}"#;
        let r = validate_behaviors_json(body, "body", &ctx()).unwrap();
        assert_eq!(r.validation_errors.len(), 1);
        let m = &r.validation_errors[0].error_message;
        assert!(m.starts_with("Behavior W is malformed. "), "{m}");
        assert!(m.contains("criteria.value.count"), "{m}");
        assert!(validate_behaviors_json("{\"behaviors\": [", "body", &ctx()).is_err());
        let toml = "[[behaviors]]\nname = \"T\"\nmetric = \"aws:num-messages-sent\"\ncriteria = { comparisonOperator = \"less-than\", value = { count = 1 } }\n";
        let r = validate_behaviors_text(toml, "b.toml", profile::Format::Toml, &ctx()).unwrap();
        assert_eq!(r.validation_errors.len(), 1);
        assert!(r.validation_errors[0]
            .error_message
            .contains("durationSeconds is required"));
    }

    #[test]
    fn dimensions_allow_100_values_and_unique_valid_filters_when_strict() {
        let mut d: Dimension =
            serde_json::from_str(r#"{"name":"D","type":"TOPIC_FILTER","stringValues":["a/#/b"]}"#)
                .unwrap();
        assert!(check_dimension(&d, Mode::Load).is_empty());
        assert_eq!(check_dimension(&d, Mode::Strict).len(), 1);
        // issue 15: the API model allows 1-100 values (the spec's 5 came from CloudFormation).
        d.string_values = (0..100).map(|i| format!("t/{i}")).collect();
        assert!(check_dimension(&d, Mode::Load).is_empty());
        assert!(check_dimension(&d, Mode::Strict).is_empty());
        d.string_values.push("t/100".into());
        for mode in [Mode::Load, Mode::Strict] {
            let e = check_dimension(&d, mode);
            assert_eq!(e.len(), 1);
            assert!(
                e[0].ends_with("has 101 entries, should be in range[1,100]"),
                "{e:?}"
            );
        }
        d.string_values = vec!["t".into(), "t".into()];
        assert_eq!(check_dimension(&d, Mode::Strict).len(), 1);
        d.dimension_type = "SOURCE_IP".into();
        assert_eq!(check_dimension(&d, Mode::Load).len(), 1);
    }
}

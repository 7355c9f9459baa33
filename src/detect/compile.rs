//! Compile: a profile's behavior (already validated) becomes its evaluable form — where the
//! datapoint comes from, the check it runs, the datapoints to alarm and clear, the window — or a
//! reason why this device cannot evaluate it (spec: detect.md §3, §3.5, §7.2).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::catalog::{BuiltIn, MetricInfo, Side, ValueKind};
use super::criteria::{self, Cidr, NumOp, SetOp};
use super::engine::{EngineSettings, Millis, MlMode, StatMode};
use super::input::{CloudMetric, Scope, ScopeOperator};
use super::profile::Behavior;
use super::validate::{self, criteria_type, CriteriaType, Mode, ValidationContext};
use super::DiagnosticKind;
use crate::custom_metric::CustomMetricType;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Source {
    Device(BuiltIn),
    Custom(String, CustomMetricType),
    Cloud(CloudMetric, Option<Scope>),
    ClientIp,
    /// `aws:disconnect-duration` (feature flag, §2.3).
    DisconnectDuration,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Check {
    Count(NumOp, u64),
    Number(NumOp, f64),
    Statistical(NumOp, f64, StatMode),
    Ml { level: String, k: f64, floor: f64 },
    Ports(SetOp, BTreeSet<u16>),
    Cidrs(SetOp, Vec<Cidr>),
    Strings(SetOp, BTreeSet<String>),
    Numbers(SetOp, Vec<f64>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Compiled {
    pub(super) profile: String,
    pub(super) behavior: Arc<Behavior>,
    pub(super) info: MetricInfo,
    pub(super) source: Source,
    pub(super) check: Check,
    pub(super) cda: u32,
    pub(super) cdc: u32,
    /// Window length in ms (None: the current report only).
    pub(super) window_ms: Option<Millis>,
    pub(super) ctype: CriteriaType,
}

impl Compiled {
    pub(super) fn op(&self) -> Option<NumOp> {
        match self.check {
            Check::Count(op, _) | Check::Number(op, _) | Check::Statistical(op, _, _) => Some(op),
            _ => None,
        }
    }
}

/// Builds the evaluable form of a behavior, or says why it cannot be evaluated here.
pub(super) fn compile(
    profile: &str,
    b: &Behavior,
    ctx: &ValidationContext,
    settings: &EngineSettings,
) -> Result<Compiled, (DiagnosticKind, String)> {
    let issues = validate::check_behavior(b, ctx, Mode::Load);
    if let Some(i) = issues.first() {
        return Err((DiagnosticKind::Skipped, i.detail.clone()));
    }
    let skip = |m: &str| (DiagnosticKind::Skipped, m.to_owned());
    let not_eval = |m: String| (DiagnosticKind::NotEvaluable, m);
    let info = validate::resolve_metric(b, ctx, Mode::Load).map_err(|e| skip(&e))?;
    // Invariant: check_behavior found no issue, so criteria and metric exist.
    let c = b
        .criteria
        .as_ref()
        .ok_or_else(|| skip("criteria is required"))?;
    let metric = b.metric.clone().unwrap_or_default();
    let ctype = criteria_type(b).unwrap_or(CriteriaType::Static);
    let scope = match &b.metric_dimension {
        None => None,
        Some(md) => {
            let d = ctx
                .dimensions
                .get(&md.dimension_name)
                .ok_or_else(|| skip("dimension does not exist"))?;
            Some(Scope {
                dimension: d.name.clone(),
                filters: d.string_values.clone(),
                operator: if md.operator.as_deref() == Some("NOT_IN") {
                    ScopeOperator::NotIn
                } else {
                    ScopeOperator::In
                },
            })
        }
    };
    let source = match (info.builtin, info.side) {
        (None, _) => {
            let t = ctx
                .custom_metrics
                .get(&metric)
                .map(|m| m.metric_type)
                .unwrap_or(match info.kind {
                    ValueKind::Numbers => CustomMetricType::NumberList,
                    ValueKind::Strings => CustomMetricType::StringList,
                    ValueKind::Cidrs => CustomMetricType::IpAddressList,
                    _ => CustomMetricType::Number,
                });
            Source::Custom(metric.clone(), t)
        }
        (Some(BuiltIn::SourceIp), _) => {
            if scope.is_some() {
                return Err(not_eval(
                    "aws:source-ip-address with a dimension is not evaluable locally".to_owned(),
                ));
            }
            if settings.source_ip.is_none() && !settings.source_ip_from_connection {
                return Err(not_eval(
                    "aws:source-ip-address needs a configured source IP (the device cannot see its public address)".to_owned(),
                ));
            }
            Source::ClientIp
        }
        (Some(BuiltIn::DisconnectDuration), _) => {
            if !settings.disconnect_duration {
                return Err(not_eval(
                    "aws:disconnect-duration is an unverified reconstruction; enable it with [detect] disconnect_duration = true"
                        .to_owned(),
                ));
            }
            Source::DisconnectDuration
        }
        (Some(bi), Side::Device) => Source::Device(bi),
        (Some(bi), Side::Cloud) => Source::Cloud(
            match bi {
                BuiltIn::MessagesSent => CloudMetric::MessagesSent,
                BuiltIn::MessagesReceived => CloudMetric::MessagesReceived,
                BuiltIn::MessageByteSize => CloudMetric::MessageByteSize,
                BuiltIn::AuthorizationFailures => CloudMetric::AuthorizationFailures,
                BuiltIn::ConnectionAttempts => CloudMetric::ConnectionAttempts,
                _ => CloudMetric::Disconnects,
            },
            scope,
        ),
    };
    let op_text = c.comparison_operator.as_deref().unwrap_or_default();
    let check = match ctype {
        CriteriaType::MachineLearning => {
            let level = c
                .ml_detection_config
                .as_ref()
                .map(|m| m.confidence_level.clone())
                .unwrap_or_default();
            if settings.ml_mode(profile, &b.name) == MlMode::Off {
                return Err(not_eval(
                    "ML Detect is off locally (training summary: PENDING_BUILD)".to_owned(),
                ));
            }
            let k = criteria::z_threshold(&level).ok_or_else(|| skip("bad confidenceLevel"))?;
            let floor = if info.kind == ValueKind::Number {
                1e-6
            } else {
                1.0
            };
            Check::Ml { level, k, floor }
        }
        CriteriaType::Statistical => {
            let op = NumOp::parse(op_text).ok_or_else(|| skip("bad comparisonOperator"))?;
            let p = c
                .statistical_threshold
                .as_ref()
                .and_then(|s| s.statistic.as_deref())
                .and_then(super::catalog::percentile_of)
                .ok_or_else(|| skip("bad statistic"))?;
            let mode = settings.stat_mode(profile, &b.name);
            if mode == StatMode::Off {
                return Err(not_eval(
                    "statistical thresholds are off locally (no fleet percentiles)".to_owned(),
                ));
            }
            Check::Statistical(op, p, mode)
        }
        CriteriaType::Static => {
            // Invariant: check_behavior accepted the value, so it exists with the right field.
            let v = c.value.clone().unwrap_or_default();
            if let Some(op) = NumOp::parse(op_text) {
                match (info.kind, v.count, v.number) {
                    (ValueKind::Count, Some(n), _) => Check::Count(op, n),
                    (_, Some(n), _) => Check::Number(op, n as f64),
                    (_, None, Some(x)) => Check::Number(op, x),
                    _ => return Err(skip("value has no count or number")),
                }
            } else {
                let op = SetOp::parse(op_text).ok_or_else(|| skip("bad comparisonOperator"))?;
                match info.kind {
                    ValueKind::Ports => Check::Ports(
                        op,
                        v.ports
                            .iter()
                            .flatten()
                            .filter_map(|p| u16::try_from(*p).ok())
                            .collect(),
                    ),
                    ValueKind::Cidrs => Check::Cidrs(
                        op,
                        v.cidrs
                            .iter()
                            .flatten()
                            .filter_map(|s| Cidr::parse(s).ok())
                            .collect(),
                    ),
                    ValueKind::Strings => {
                        Check::Strings(op, v.strings.iter().flatten().cloned().collect())
                    }
                    _ => Check::Numbers(op, v.numbers.clone().unwrap_or_default()),
                }
            }
        }
    };
    // spec: §3.3 — D = durationSeconds; cloud counters and message size default to 300.
    let window_ms = match (c.duration_seconds, info.side) {
        (Some(d), _) => Some(d * 1000),
        (None, Side::Cloud) => Some(300_000),
        (None, Side::Device) => None,
    };
    let clamp = |x: Option<i64>| x.map_or(1, |v| v.clamp(1, 10) as u32);
    Ok(Compiled {
        profile: profile.to_owned(),
        behavior: Arc::new(b.clone()),
        info,
        source,
        check,
        cda: clamp(c.consecutive_datapoints_to_alarm),
        cdc: clamp(c.consecutive_datapoints_to_clear),
        window_ms,
        ctype,
    })
}

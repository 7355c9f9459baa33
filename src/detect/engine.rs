//! The evaluation engine: turns reports, traffic windows and connections into datapoints, runs the
//! CDA/CDC alarm state machine per (profile, behavior), and emits ViolationEvents. Its state is
//! serde-serialisable so an alarm survives a restart with the same violationId.
//!
//! spec: detect.md §2.2 (values), §3 (evaluation), §6.3 (invalidation), §6.4 (suppressAlerts),
//! §7.2 (local baseline).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::catalog::{Aggregation, BuiltIn, MetricInfo, Side, ValueKind};
use super::criteria::{self, is_normal_u64, normalise, Cidr, NumOp, SetOp};
use super::profile::{Behavior, MetricValue, SecurityProfile};
use super::validate::{self, criteria_type, CriteriaType, Mode, ValidationContext};
use super::violation::{
    ms_to_secs, violation_id, ActiveViolation, AdditionalInfo, ViolationEvent, ViolationEventType,
};
use super::window::TimeWindow;
use super::{Diagnostic, DiagnosticKind};
use crate::metric::{CustomMetricType, CustomValue};

/// Epoch milliseconds.
pub type Millis = i64;

const DAY_MS: Millis = 86_400_000;

// ---------------------------------------------------------------------------------------------
// Inputs

/// Network counter deltas of one report (spec: detect.md §2.2 "Delta Metric").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkDeltas {
    /// `bytes_in`
    pub bytes_in: u64,
    /// `bytes_out`
    pub bytes_out: u64,
    /// `packets_in`
    pub packets_in: u64,
    /// `packets_out`
    pub packets_out: u64,
}

/// A `listening_*_ports` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList {
    /// Every listed port (one entry per interface; duplicates allowed).
    pub ports: Vec<u16>,
    /// `total`, when the report has it.
    pub total: Option<u64>,
}

/// The `tcp_connections.established_connections` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Established {
    /// Remote IP of each connection.
    pub remote_ips: Vec<IpAddr>,
    /// `total`, when the report has it.
    pub total: Option<u64>,
}

/// The parts of a metrics report the engine reads. `None` = block absent = no datapoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceReport {
    /// `network_stats`.
    pub network: Option<NetworkDeltas>,
    /// `listening_tcp_ports`.
    pub tcp_ports: Option<PortList>,
    /// `listening_udp_ports`.
    pub udp_ports: Option<PortList>,
    /// `tcp_connections.established_connections`.
    pub established: Option<Established>,
    /// `custom_metrics`.
    pub custom: Vec<(String, CustomValue)>,
}

/// A locally approximated cloud-side counter (spec: detect.md §2.2 "Cloud-side metrics").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CloudMetric {
    /// PUBLISH packets sent (first transmissions).
    MessagesSent,
    /// PUBLISH packets delivered to the client.
    MessagesReceived,
    /// Payload sizes of PUBLISH packets sent.
    MessageByteSize,
    /// Denied requests.
    AuthorizationFailures,
    /// CONNECT attempts.
    ConnectionAttempts,
    /// Connection losses.
    Disconnects,
}

/// `IN` or `NOT_IN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScopeOperator {
    /// Count only topics matching one of the filters.
    In,
    /// Count only topics matching none of the filters.
    NotIn,
}

/// A resolved TOPIC_FILTER dimension scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Dimension name.
    pub dimension: String,
    /// Its topic filters.
    pub filters: Vec<String>,
    /// IN or NOT_IN.
    pub operator: ScopeOperator,
}

impl Scope {
    /// Whether a topic is in scope (spec: detect.md §5 "Operator").
    pub fn admits(&self, topic_name: &str, client_id: &str) -> bool {
        let any = self.filters.iter().any(|f| {
            crate::topic_filter::TopicFilter::parse_with_client_id(f, client_id)
                .is_ok_and(|tf| tf.matches(topic_name))
        });
        match self.operator {
            ScopeOperator::In => any,
            ScopeOperator::NotIn => !any,
        }
    }
}

/// What a traffic window holds: event count and, for message sizes, sum/min/max.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowValue {
    /// Number of events in the window.
    pub count: u64,
    /// Sum of message sizes.
    pub bytes_sum: u64,
    /// Smallest message.
    pub bytes_min: Option<u64>,
    /// Largest message.
    pub bytes_max: Option<u64>,
}

/// The seam to the traffic module: counts in the window (end − duration, end].
/// `None` means "no coverage" (no datapoint); `Some` with count 0 is a real zero.
pub trait TrafficWindows {
    /// The window of `metric` restricted to `scope`.
    fn window(
        &self,
        scope: Option<&Scope>,
        metric: CloudMetric,
        end: Millis,
        duration_s: u64,
    ) -> Option<WindowValue>;

    /// Whole minutes the own link has been disconnected at `end` (0 while connected; `None`
    /// before the first connection): the `aws:disconnect-duration` reconstruction of §2.3.
    fn disconnected_minutes(&self, _end: Millis) -> Option<u64> {
        None
    }
}

/// One traffic event of the synthetic [`TrafficLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficRecord {
    /// A PUBLISH sent by the device.
    Publish {
        /// Topic.
        topic: String,
        /// Payload bytes.
        bytes: u64,
    },
    /// A PUBLISH delivered to the device.
    Receive {
        /// Topic.
        topic: String,
        /// Payload bytes.
        bytes: u64,
    },
    /// A CONNECT attempt.
    ConnectAttempt,
    /// A connection loss.
    Disconnect,
    /// A denied request; `topic` is `None` for CONNECT failures.
    AuthFailure {
        /// Topic (or subscribe filter) of the denied request.
        topic: Option<String>,
    },
}

/// A simple in-memory [`TrafficWindows`] over recorded events (replay and tests). Full policy:
/// events older than `retain_ms` before the newest are dropped on [`TrafficLog::record`], and at
/// `max_events` the oldest event is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficLog {
    events: Vec<(Millis, TrafficRecord)>,
    /// Client id substituted for `${iot:ClientId}`.
    pub client_id: String,
    /// How long events are kept (default 3600 s, the longest window).
    pub retain_ms: Millis,
    /// At most this many events (default 1,000,000).
    pub max_events: usize,
}

impl TrafficLog {
    /// An empty log.
    pub fn new(client_id: &str) -> TrafficLog {
        TrafficLog {
            events: Vec::new(),
            client_id: client_id.to_owned(),
            retain_ms: 3_600_000,
            max_events: 1_000_000,
        }
    }

    /// Records an event at `t` (non-decreasing times expected).
    pub fn record(&mut self, t: Millis, r: TrafficRecord) {
        let horizon = t - self.retain_ms;
        if self.events.first().is_some_and(|(ft, _)| *ft <= horizon) {
            self.events.retain(|(et, _)| *et > horizon);
        }
        if self.events.len() >= self.max_events.max(1) {
            // Invariant: len >= 1 here, so index 0 exists.
            self.events.remove(0);
        }
        self.events.push((t, r));
    }
}

impl TrafficWindows for TrafficLog {
    fn window(
        &self,
        scope: Option<&Scope>,
        metric: CloudMetric,
        end: Millis,
        duration_s: u64,
    ) -> Option<WindowValue> {
        let start = end - (duration_s as Millis) * 1000;
        let admits = |t: &str| scope.is_none_or(|s| s.admits(t, &self.client_id));
        let mut w = WindowValue::default();
        for (t, r) in &self.events {
            if *t <= start || *t > end {
                continue;
            }
            let size = match (metric, r) {
                (CloudMetric::MessagesSent, TrafficRecord::Publish { topic, .. })
                | (CloudMetric::MessagesReceived, TrafficRecord::Receive { topic, .. })
                    if admits(topic) =>
                {
                    None
                }
                (CloudMetric::MessageByteSize, TrafficRecord::Publish { topic, bytes })
                    if admits(topic) =>
                {
                    Some(*bytes)
                }
                (CloudMetric::AuthorizationFailures, TrafficRecord::AuthFailure { topic }) => {
                    // spec: §5 — CONNECT failures have no topic and are excluded from scoped counts.
                    match (scope, topic) {
                        (None, _) => None,
                        (Some(_), Some(tp)) if admits(tp) => None,
                        _ => continue,
                    }
                }
                (CloudMetric::ConnectionAttempts, TrafficRecord::ConnectAttempt)
                | (CloudMetric::Disconnects, TrafficRecord::Disconnect) => None,
                _ => continue,
            };
            w.count += 1;
            if let Some(b) = size {
                w.bytes_sum += b;
                w.bytes_min = Some(w.bytes_min.map_or(b, |m| m.min(b)));
                w.bytes_max = Some(w.bytes_max.map_or(b, |m| m.max(b)));
            }
        }
        Some(w)
    }
}

/// The traffic module's name for an engine scope: the dimension name for IN, `"<name>:NOT_IN"`
/// for NOT_IN (the agent builds `TrafficCounters` scopes with these names).
pub fn traffic_scope_name(scope: &Scope) -> String {
    match scope.operator {
        ScopeOperator::In => scope.dimension.clone(),
        ScopeOperator::NotIn => format!("{}:NOT_IN", scope.dimension),
    }
}

/// The agent's cloud-side input: the bucketed counters of `crate::traffic` (ticks are epoch
/// multiples of 300 s, so windows are bucket-aligned). A window the counters cannot give
/// (unknown scope, misaligned, forgotten) is no datapoint.
impl TrafficWindows for crate::traffic::TrafficCounters {
    fn window(
        &self,
        scope: Option<&Scope>,
        metric: CloudMetric,
        end: Millis,
        duration_s: u64,
    ) -> Option<WindowValue> {
        use crate::traffic::{SizeAggregate, TrafficMetric};
        let index = match scope {
            None => None,
            Some(s) => Some(self.scope_index(&traffic_scope_name(s))?),
        };
        let end_s = u64::try_from(end.div_euclid(1000)).ok()?;
        let get = |m: TrafficMetric| self.window(index, m, end_s, duration_s).ok();
        let counted = |m: TrafficMetric| -> Option<WindowValue> {
            Some(WindowValue {
                count: get(m)??,
                ..WindowValue::default()
            })
        };
        match metric {
            CloudMetric::MessagesSent => counted(TrafficMetric::MessagesSent),
            CloudMetric::MessagesReceived => counted(TrafficMetric::MessagesReceived),
            CloudMetric::AuthorizationFailures => counted(TrafficMetric::AuthorizationFailures),
            CloudMetric::ConnectionAttempts => counted(TrafficMetric::ConnectionAttempts),
            CloudMetric::Disconnects => counted(TrafficMetric::Disconnects),
            CloudMetric::MessageByteSize => {
                let count = get(TrafficMetric::MessagesSent)??;
                let size = |a| get(TrafficMetric::MessageByteSize(a)).flatten();
                Some(WindowValue {
                    count,
                    bytes_sum: size(SizeAggregate::Sum).unwrap_or(0),
                    bytes_min: size(SizeAggregate::Min),
                    bytes_max: size(SizeAggregate::Max),
                })
            }
        }
    }

    fn disconnected_minutes(&self, end: Millis) -> Option<u64> {
        self.disconnect_duration_minutes(u64::try_from(end.div_euclid(1000)).ok()?)
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

/// How statistical thresholds are resolved (spec: detect.md §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatMode {
    /// Not evaluated; reported as not evaluable.
    Off,
    /// A threshold pushed per (profile, behavior) via [`DetectEngine::set_fleet_threshold`].
    FleetSupplied,
    /// Nearest-rank percentile of this device's own history (labelled: NOT AWS semantics).
    LocalHistory,
}

/// How ML behaviors are evaluated (spec: detect.md §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MlMode {
    /// No datapoints (default).
    Off,
    /// Local robust-z baseline, `local-baseline-robust-z/v1` (labelled: NOT AWS ML Detect).
    LocalBaseline,
}

/// Engine configuration (plain data).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    /// The thing name put in events.
    pub thing_name: String,
    /// Default statistical mode.
    pub statistical: StatMode,
    /// Per (profile, behavior) statistical overrides.
    pub statistical_overrides: BTreeMap<(String, String), StatMode>,
    /// Default ML mode.
    pub ml: MlMode,
    /// Per (profile, behavior) ML overrides.
    pub ml_overrides: BTreeMap<(String, String), MlMode>,
    /// Local-history lookback (default 14 days).
    pub stat_lookback_s: u64,
    /// Local-history minimum points (default 30).
    pub stat_min_points: usize,
    /// Operator-supplied source IP for aws:source-ip-address.
    pub source_ip: Option<IpAddr>,
    /// Whether connection events carry a usable source IP (the local socket address).
    pub source_ip_from_connection: bool,
    /// Silence after which an active violation is invalidated (default 172800 s, strictly more).
    pub invalidate_after_s: u64,
    /// Max points per sliding window (full policy: drop oldest).
    pub window_cap: usize,
    /// Max points per history / baseline (full policy: drop oldest).
    pub history_cap: usize,
    /// Evaluate `aws:disconnect-duration` with the unverified reconstruction of §2.3 (feature
    /// flag, default off: such behaviors are reported as not evaluable).
    pub disconnect_duration: bool,
}

impl EngineSettings {
    /// Defaults for a thing: statistics and ML off, 14-day lookback, 2-day invalidation.
    pub fn new(thing_name: &str) -> EngineSettings {
        EngineSettings {
            thing_name: thing_name.to_owned(),
            statistical: StatMode::Off,
            statistical_overrides: BTreeMap::new(),
            ml: MlMode::Off,
            ml_overrides: BTreeMap::new(),
            stat_lookback_s: 14 * 86_400,
            stat_min_points: 30,
            source_ip: None,
            source_ip_from_connection: false,
            invalidate_after_s: 172_800,
            window_cap: 4096,
            history_cap: 8192,
            disconnect_duration: false,
        }
    }

    fn stat_mode(&self, profile: &str, behavior: &str) -> StatMode {
        self.statistical_overrides
            .get(&(profile.to_owned(), behavior.to_owned()))
            .copied()
            .unwrap_or(self.statistical)
    }

    fn ml_mode(&self, profile: &str, behavior: &str) -> MlMode {
        self.ml_overrides
            .get(&(profile.to_owned(), behavior.to_owned()))
            .copied()
            .unwrap_or(self.ml)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled behaviors

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Device(BuiltIn),
    Custom(String, CustomMetricType),
    Cloud(CloudMetric, Option<Scope>),
    ClientIp,
    /// `aws:disconnect-duration` (feature flag, §2.3).
    DisconnectDuration,
}

#[derive(Debug, Clone, PartialEq)]
enum Check {
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
struct Compiled {
    profile: String,
    behavior: Behavior,
    info: MetricInfo,
    source: Source,
    check: Check,
    cda: u32,
    cdc: u32,
    /// Window length in ms (None: the current report only).
    window_ms: Option<Millis>,
    ctype: CriteriaType,
}

impl Compiled {
    fn op(&self) -> Option<NumOp> {
        match self.check {
            Check::Count(op, _) | Check::Number(op, _) | Check::Statistical(op, _, _) => Some(op),
            _ => None,
        }
    }
}

/// Builds the evaluable form of a behavior, or says why it cannot be evaluated here.
fn compile(
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
        behavior: b.clone(),
        info,
        source,
        check,
        cda: clamp(c.consecutive_datapoints_to_alarm),
        cdc: clamp(c.consecutive_datapoints_to_clear),
        window_ms,
        ctype,
    })
}

// ---------------------------------------------------------------------------------------------
// State

/// Alarm mode of one (profile, behavior).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmMode {
    /// No active violation.
    Normal,
    /// An active violation.
    Alarm,
}

/// The active episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveState {
    /// violationId.
    pub id: String,
    /// Time of the in-alarm event.
    pub start: Millis,
    /// Time of the last violating datapoint.
    pub last_time: Millis,
    /// Its value.
    pub last_value: MetricValue,
}

/// ML training status (GetBehaviorModelTrainingSummaries emulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ModelStatus {
    /// Not enough data yet.
    PendingBuild,
    /// Baseline in use.
    Active,
    /// Rebuild failed 30 daily attempts in a row.
    Expired,
}

/// The local robust-z baseline of one ML behavior.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Median of the history.
    pub median: f64,
    /// Median absolute deviation.
    pub mad: f64,
    /// When it was built.
    pub built_at: Millis,
}

/// Everything the engine remembers about one (profile, behavior); serialisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviorState {
    /// The definition this state belongs to (a change of metric/dimension/criteria resets it).
    pub definition: Behavior,
    /// Alarm mode.
    pub mode: AlarmMode,
    /// Violating streak.
    pub v: u32,
    /// Compliant streak.
    pub c: u32,
    /// The active episode.
    pub active: Option<ActiveState>,
    /// Time of the last datapoint (for the two-day invalidation).
    pub last_datapoint: Option<Millis>,
    /// Sliding-window points (per-report values of windowed device metrics).
    pub window: TimeWindow,
    /// Trailing history of datapoint values (statistical local-history, ML baseline).
    pub history: TimeWindow,
    /// ML baseline.
    pub baseline: Option<Baseline>,
    /// ML status.
    pub model_status: ModelStatus,
    /// When the first ML datapoint was collected.
    pub training_start: Option<Millis>,
    /// Last daily rebuild attempt.
    pub last_attempt: Option<Millis>,
    /// Consecutive failed rebuilds after having been ACTIVE.
    pub failed_attempts: u32,
}

impl BehaviorState {
    fn new(definition: Behavior, s: &EngineSettings) -> BehaviorState {
        BehaviorState {
            definition,
            mode: AlarmMode::Normal,
            v: 0,
            c: 0,
            active: None,
            last_datapoint: None,
            window: TimeWindow::new(s.window_cap),
            history: TimeWindow::new(s.history_cap),
            baseline: None,
            model_status: ModelStatus::PendingBuild,
            training_start: None,
            last_attempt: None,
            failed_attempts: 0,
        }
    }

    /// Approximate heap bytes held by this state.
    pub fn heap_bytes(&self) -> usize {
        self.window.heap_bytes()
            + self.history.heap_bytes()
            + self.active.as_ref().map_or(0, |a| a.id.capacity())
            + serde_json::to_vec(&self.definition).map_or(0, |v| v.len())
    }
}

/// The whole engine state (persist it with serde; restore with [`DetectEngine::with_state`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// Violation-id sequence.
    pub seq: u64,
    /// profile → behavior → state.
    pub behaviors: BTreeMap<String, BTreeMap<String, BehaviorState>>,
    /// profile → behavior → fleet-supplied threshold.
    pub fleet_thresholds: BTreeMap<String, BTreeMap<String, f64>>,
}

/// An emitted event and whether the notification sink should be called (false when suppressed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emitted {
    /// The AWS-shaped event.
    pub event: ViolationEvent,
    /// Call the sink (the SNS equivalent) only when true (spec: §6.4).
    pub notify: bool,
}

/// A GetBehaviorModelTrainingSummaries entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainingSummary {
    /// Profile.
    pub security_profile_name: String,
    /// Behavior.
    pub behavior_name: String,
    /// First datapoint collected (epoch s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_data_collection_start_date: Option<f64>,
    /// Status.
    pub model_status: ModelStatus,
    /// collected / required · 100, capped at 100.
    pub datapoints_collection_percentage: f64,
    /// Last build (epoch s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_model_refresh_date: Option<f64>,
}

/// Observed datapoint value.
#[derive(Debug, Clone, PartialEq)]
enum Observed {
    Count(u64),
    Number(f64),
    Ports(Vec<u16>),
    Ips(Vec<IpAddr>),
    Strings(Vec<String>),
    Numbers(Vec<f64>),
}

impl Observed {
    fn scalar(&self) -> Option<f64> {
        match self {
            Observed::Count(n) => Some(*n as f64),
            Observed::Number(x) => Some(*x),
            _ => None,
        }
    }

    /// The `metricValue` form: lists sorted and deduplicated, IPs bare (spec: §3.2).
    fn to_metric_value(&self) -> MetricValue {
        let mut v = MetricValue::default();
        match self {
            Observed::Count(n) => v.count = Some(*n),
            Observed::Number(x) => v.number = Some(*x),
            Observed::Ports(p) => v.ports = Some(p.iter().map(|x| i64::from(*x)).collect()),
            Observed::Ips(ips) => {
                // spec: TC11 lists "10.1.2.3" before "8.8.8.8": sorted as text.
                let text: BTreeSet<String> = ips.iter().map(IpAddr::to_string).collect();
                v.cidrs = Some(text.into_iter().collect());
            }
            Observed::Strings(s) => v.strings = Some(s.clone()),
            Observed::Numbers(n) => v.numbers = Some(n.clone()),
        }
        v
    }
}

fn sorted_dedup<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let s: BTreeSet<T> = v.iter().cloned().collect();
    s.into_iter().collect()
}

fn sorted_dedup_f64(v: &[f64]) -> Vec<f64> {
    let mut out = v.to_vec();
    out.sort_by(f64::total_cmp);
    out.dedup();
    out
}

// ---------------------------------------------------------------------------------------------
// Engine

/// The local Detect engine for one thing.
#[derive(Debug, Clone)]
pub struct DetectEngine {
    settings: EngineSettings,
    compiled: Vec<Compiled>,
    state: EngineState,
    diagnostics: Vec<Diagnostic>,
    profile_names: BTreeSet<String>,
    /// ML behaviors not evaluated because ML is off (reported as PENDING_BUILD).
    ml_off: Vec<(String, String)>,
}

/// What happens to a behavior's stored state when the configuration changes.
fn definition_changed(old: &Behavior, new: &Behavior) -> bool {
    // spec: §6.3 — suppressAlerts / exportMetric alone do NOT invalidate.
    old.metric != new.metric
        || old.metric_dimension != new.metric_dimension
        || old.criteria != new.criteria
}

impl DetectEngine {
    /// An engine with fresh state over `profiles` (checked in LOAD mode; diagnostics kept).
    pub fn new(
        settings: EngineSettings,
        profiles: &[SecurityProfile],
        ctx: &ValidationContext,
    ) -> DetectEngine {
        let mut e = DetectEngine {
            settings,
            compiled: Vec::new(),
            state: EngineState::default(),
            diagnostics: Vec::new(),
            profile_names: BTreeSet::new(),
            ml_off: Vec::new(),
        };
        e.compile_all(profiles, ctx);
        let settings = e.settings.clone();
        for c in &e.compiled {
            e.state
                .behaviors
                .entry(c.profile.clone())
                .or_default()
                .entry(c.behavior.name.clone())
                .or_insert_with(|| BehaviorState::new(c.behavior.clone(), &settings));
        }
        e
    }

    /// An engine restored from persisted state. Episodes of behaviors that changed or vanished
    /// while the agent was down are invalidated at `now`.
    pub fn with_state(
        settings: EngineSettings,
        profiles: &[SecurityProfile],
        ctx: &ValidationContext,
        state: EngineState,
        now: Millis,
    ) -> (DetectEngine, Vec<Emitted>) {
        let mut e = DetectEngine {
            settings,
            compiled: Vec::new(),
            state,
            diagnostics: Vec::new(),
            profile_names: BTreeSet::new(),
            ml_off: Vec::new(),
        };
        let events = e.reconfigure(profiles, ctx, now);
        (e, events)
    }

    fn compile_all(&mut self, profiles: &[SecurityProfile], ctx: &ValidationContext) {
        self.compiled.clear();
        self.diagnostics.clear();
        self.ml_off.clear();
        self.profile_names = profiles
            .iter()
            .map(|p| p.security_profile_name.clone())
            .collect();
        let mut seen_profiles = BTreeSet::new();
        for p in profiles {
            let pname = &p.security_profile_name;
            if !seen_profiles.insert(pname.as_str()) {
                self.diagnostics.push(Diagnostic {
                    source_name: String::new(),
                    profile: pname.clone(),
                    behavior: None,
                    kind: DiagnosticKind::Skipped,
                    message: "duplicate security profile name; only the first is evaluated"
                        .to_owned(),
                });
                continue;
            }
            for w in validate::behavior_warnings(&p.behaviors) {
                self.diagnostics.push(Diagnostic {
                    source_name: String::new(),
                    profile: pname.clone(),
                    behavior: None,
                    kind: DiagnosticKind::Warning,
                    message: w,
                });
            }
            let mut seen = BTreeSet::new();
            for b in &p.behaviors {
                if !seen.insert(b.name.clone()) {
                    self.diagnostics.push(Diagnostic {
                        source_name: String::new(),
                        profile: pname.clone(),
                        behavior: Some(b.name.clone()),
                        kind: DiagnosticKind::Skipped,
                        message: "duplicate behavior name; only the first is evaluated".to_owned(),
                    });
                    continue;
                }
                match compile(pname, b, ctx, &self.settings) {
                    Ok(c) => self.compiled.push(c),
                    Err((kind, message)) => {
                        if kind == DiagnosticKind::NotEvaluable
                            && criteria_type(b) == Some(CriteriaType::MachineLearning)
                        {
                            self.ml_off.push((pname.clone(), b.name.clone()));
                        }
                        self.diagnostics.push(Diagnostic {
                            source_name: String::new(),
                            profile: pname.clone(),
                            behavior: Some(b.name.clone()),
                            kind,
                            message,
                        })
                    }
                }
            }
        }
    }

    /// Replaces the profiles, dimensions and custom metrics. Active violations of behaviors that
    /// were removed, changed (metric, dimension, criteria) or became unevaluable are invalidated
    /// at `now` (spec: §6.3); a change of suppressAlerts/exportMetric only keeps the episode.
    pub fn reconfigure(
        &mut self,
        profiles: &[SecurityProfile],
        ctx: &ValidationContext,
        now: Millis,
    ) -> Vec<Emitted> {
        self.compile_all(profiles, ctx);
        let mut out = Vec::new();
        let mut old = std::mem::take(&mut self.state.behaviors);
        let thing = self.settings.thing_name.clone();
        for c in &self.compiled {
            let prev = old
                .get_mut(&c.profile)
                .and_then(|m| m.remove(&c.behavior.name));
            let st = match prev {
                Some(mut st) if !definition_changed(&st.definition, &c.behavior) => {
                    st.definition = c.behavior.clone();
                    st
                }
                Some(st) => {
                    if let Some(ev) = invalidated(&thing, &c.profile, &st, now) {
                        out.push(ev);
                    }
                    BehaviorState::new(c.behavior.clone(), &self.settings)
                }
                None => BehaviorState::new(c.behavior.clone(), &self.settings),
            };
            self.state
                .behaviors
                .entry(c.profile.clone())
                .or_default()
                .insert(c.behavior.name.clone(), st);
        }
        // Whatever is left has no evaluable behavior any more.
        for (profile, m) in old {
            for (_, st) in m {
                if let Some(ev) = invalidated(&thing, &profile, &st, now) {
                    out.push(ev);
                }
            }
        }
        self.state
            .fleet_thresholds
            .retain(|p, _| self.profile_names.contains(p));
        out
    }

    /// Load and compile remarks (skipped and not-evaluable behaviors, warnings).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The serialisable state.
    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// Names of the configured profiles.
    pub fn profile_names(&self) -> &BTreeSet<String> {
        &self.profile_names
    }

    /// Number of evaluable behaviors.
    pub fn evaluable_behaviors(&self) -> usize {
        self.compiled.len()
    }

    /// Sets the fleet-supplied statistical threshold of a behavior (spec: §3.5 fleet-supplied).
    pub fn set_fleet_threshold(&mut self, profile: &str, behavior: &str, threshold: f64) {
        self.state
            .fleet_thresholds
            .entry(profile.to_owned())
            .or_default()
            .insert(behavior.to_owned(), threshold);
    }

    /// Evaluates every device-side and custom behavior on one accepted report received at `now`.
    pub fn evaluate_report(&mut self, report: &DeviceReport, now: Millis) -> Vec<Emitted> {
        let mut out = Vec::new();
        // Each distinct source is extracted once per report, however many behaviors use it.
        let mut cache: Vec<(Source, Option<Observed>)> = Vec::new();
        for i in 0..self.compiled.len() {
            // Invariant: the loop bound is compiled.len().
            let source = &self.compiled[i].source;
            if !matches!(source, Source::Device(_) | Source::Custom(..)) {
                continue;
            }
            let raw = match cache.iter().find(|(s, _)| s == source) {
                Some((_, v)) => v.clone(),
                None => {
                    let v = match source {
                        Source::Device(bi) => device_value(*bi, report),
                        Source::Custom(name, t) => custom_value(name, *t, report),
                        _ => None,
                    };
                    cache.push((source.clone(), v.clone()));
                    v
                }
            };
            if let Some(raw) = raw {
                self.datapoint(i, raw, now, &mut out);
            }
        }
        out
    }

    /// One cloud-side tick at `now` (the caller ticks at every epoch multiple of 300 s).
    pub fn evaluate_cloud(&mut self, traffic: &dyn TrafficWindows, now: Millis) -> Vec<Emitted> {
        let mut out = Vec::new();
        for i in 0..self.compiled.len() {
            // Invariant: the loop bound is compiled.len().
            let c = &self.compiled[i];
            if c.source == Source::DisconnectDuration {
                // spec: §2.3 — minutes since the loss while disconnected, 0 while connected.
                if let Some(m) = traffic.disconnected_minutes(now) {
                    self.datapoint_final(i, Observed::Count(m), now, &mut out);
                }
                continue;
            }
            let Source::Cloud(metric, scope) = &c.source else {
                continue;
            };
            let d = c.window_ms.unwrap_or(300_000);
            let Some(w) = traffic.window(scope.as_ref(), *metric, now, (d / 1000) as u64) else {
                continue;
            };
            let value = if *metric == CloudMetric::MessageByteSize {
                // spec: §3.3 — static: worst single message; statistical: sum; none: no datapoint.
                if w.count == 0 {
                    continue;
                }
                match (c.ctype, c.op()) {
                    (CriteriaType::Statistical, _) => w.bytes_sum,
                    (_, Some(op)) if !op.worst_is_max() => w.bytes_min.unwrap_or(0),
                    _ => w.bytes_max.unwrap_or(0),
                }
            } else {
                w.count
            };
            self.datapoint_final(i, Observed::Count(value), now, &mut out);
        }
        out
    }

    /// A successful connection: one aws:source-ip-address datapoint (spec: §2.2). The IP is the
    /// configured one if set, else `observed` when connection IPs are enabled.
    pub fn on_connection(&mut self, observed: Option<IpAddr>, now: Millis) -> Vec<Emitted> {
        let ip = self
            .settings
            .source_ip
            .or(if self.settings.source_ip_from_connection {
                observed
            } else {
                None
            });
        let Some(ip) = ip else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for i in 0..self.compiled.len() {
            // Invariant: the loop bound is compiled.len().
            if self.compiled[i].source == Source::ClientIp {
                self.datapoint_final(i, Observed::Ips(vec![normalise(ip)]), now, &mut out);
            }
        }
        out
    }

    /// Housekeeping (call at least every 300 s): invalidates active violations whose behavior has
    /// had no datapoint for more than `invalidate_after_s` (spec: §6.3).
    pub fn housekeeping(&mut self, now: Millis) -> Vec<Emitted> {
        let limit = (self.settings.invalidate_after_s as Millis) * 1000;
        let thing = self.settings.thing_name.clone();
        let mut out = Vec::new();
        for (profile, m) in self.state.behaviors.iter_mut() {
            for st in m.values_mut() {
                let silent = st.last_datapoint.is_none_or(|t| now - t > limit);
                if st.mode == AlarmMode::Alarm && silent {
                    if let Some(ev) = invalidated(&thing, profile, st, now) {
                        out.push(ev);
                    }
                    st.mode = AlarmMode::Normal;
                    st.v = 0;
                    st.c = 0;
                    st.active = None;
                }
            }
        }
        out
    }

    /// The ActiveViolations, newest start first (spec: §6.7).
    pub fn active_violations(&self) -> Vec<ActiveViolation> {
        let mut out: Vec<ActiveViolation> = Vec::new();
        for c in &self.compiled {
            let Some(st) = self.state_of(c) else { continue };
            let Some(a) = &st.active else { continue };
            out.push(ActiveViolation {
                violation_id: a.id.clone(),
                thing_name: self.settings.thing_name.clone(),
                security_profile_name: c.profile.clone(),
                behavior: c.behavior.clone(),
                last_violation_value: Some(a.last_value.clone()),
                violation_event_additional_info: additional_info(&c.behavior),
                verification_state: None,
                verification_state_description: None,
                last_violation_time: ms_to_secs(a.last_time),
                violation_start_time: ms_to_secs(a.start),
            });
        }
        out.sort_by(|a, b| b.violation_start_time.total_cmp(&a.violation_start_time));
        out
    }

    /// The TOPIC_FILTER scopes the evaluable cloud-side behaviors count under, deduplicated, as
    /// `crate::traffic` scopes named by [`traffic_scope_name`] with `${iot:ClientId}` replaced by
    /// `client_id`. A filter that does not parse after substitution is left out (returned apart).
    pub fn traffic_scopes(
        &self,
        client_id: &str,
    ) -> (Vec<crate::traffic::Scope>, Vec<(String, String)>) {
        let mut out: Vec<crate::traffic::Scope> = Vec::new();
        let mut bad = Vec::new();
        for c in &self.compiled {
            let Source::Cloud(_, Some(scope)) = &c.source else {
                continue;
            };
            let name = traffic_scope_name(scope);
            if out.iter().any(|s| s.name == name) {
                continue;
            }
            let mut filters = Vec::new();
            for f in &scope.filters {
                match crate::topic_filter::TopicFilter::parse_with_client_id(f, client_id) {
                    Ok(tf) => filters.push(tf),
                    Err(e) => bad.push((scope.dimension.clone(), format!("{f:?}: {e}"))),
                }
            }
            out.push(crate::traffic::Scope {
                name,
                filters,
                operator: match scope.operator {
                    ScopeOperator::In => crate::traffic::ScopeOperator::In,
                    ScopeOperator::NotIn => crate::traffic::ScopeOperator::NotIn,
                },
            });
        }
        (out, bad)
    }

    /// GetBehaviorModelTrainingSummaries emulation for the ML behaviors (evaluable or off).
    pub fn training_summaries(&self) -> Vec<TrainingSummary> {
        let mut out = Vec::new();
        for c in &self.compiled {
            let Check::Ml { .. } = c.check else { continue };
            let Some(st) = self.state_of(c) else { continue };
            out.push(TrainingSummary {
                security_profile_name: c.profile.clone(),
                behavior_name: c.behavior.name.clone(),
                training_data_collection_start_date: st.training_start.map(ms_to_secs),
                model_status: st.model_status,
                datapoints_collection_percentage: (st.history.len() as f64 / 2016.0 * 100.0)
                    .min(100.0),
                last_model_refresh_date: st.baseline.as_ref().map(|b| ms_to_secs(b.built_at)),
            });
        }
        // spec: §7.2 option 1 — ML off: PENDING_BUILD, nothing collected (0 / 25,000).
        for (profile, behavior) in &self.ml_off {
            out.push(TrainingSummary {
                security_profile_name: profile.clone(),
                behavior_name: behavior.clone(),
                training_data_collection_start_date: None,
                model_status: ModelStatus::PendingBuild,
                datapoints_collection_percentage: 0.0,
                last_model_refresh_date: None,
            });
        }
        out
    }

    fn state_of(&self, c: &Compiled) -> Option<&BehaviorState> {
        self.state.behaviors.get(&c.profile)?.get(&c.behavior.name)
    }

    /// Window aggregation for device metrics, then the final datapoint.
    fn datapoint(&mut self, i: usize, raw: Observed, now: Millis, out: &mut Vec<Emitted>) {
        // Invariant: every caller passes a loop index below compiled.len().
        let c = &self.compiled[i];
        let value = match (c.window_ms, c.info.aggregation, raw.scalar()) {
            (Some(d), Aggregation::Counter | Aggregation::Gauge, Some(x)) => {
                let worst_max = c.op().is_none_or(NumOp::worst_is_max);
                let counter = c.info.aggregation == Aggregation::Counter;
                let is_count = matches!(raw, Observed::Count(_));
                let Some(st) = self.state_mut(i) else { return };
                st.window.prune_through(now - d);
                st.window.push(now, x);
                let agg = if counter {
                    st.window.sum()
                } else if worst_max {
                    st.window.max().unwrap_or(x)
                } else {
                    st.window.min().unwrap_or(x)
                };
                if is_count {
                    Observed::Count(agg.max(0.0) as u64)
                } else {
                    Observed::Number(agg)
                }
            }
            _ => raw,
        };
        self.datapoint_final(i, value, now, out);
    }

    fn state_mut(&mut self, i: usize) -> Option<&mut BehaviorState> {
        // Invariant: called from datapoint with its in-bounds index.
        let c = &self.compiled[i];
        self.state
            .behaviors
            .get_mut(&c.profile)?
            .get_mut(&c.behavior.name)
    }

    /// Decides violating/normal for a windowed value and runs the state machine.
    fn datapoint_final(&mut self, i: usize, value: Observed, now: Millis, out: &mut Vec<Emitted>) {
        let lookback = (self.settings.stat_lookback_s as Millis) * 1000;
        let min_points = self.settings.stat_min_points;
        // Disjoint field borrows: no clone of the compiled behavior on the hot path.
        // Invariant: every caller passes a loop index below compiled.len().
        let c = &self.compiled[i];
        let thing = self.settings.thing_name.as_str();
        let seq = self.state.seq + 1;
        let fleet = self
            .state
            .fleet_thresholds
            .get(&c.profile)
            .and_then(|m| m.get(&c.behavior.name))
            .copied();
        let Some(st) = self
            .state
            .behaviors
            .get_mut(&c.profile)
            .and_then(|m| m.get_mut(&c.behavior.name))
        else {
            return;
        };
        let Some(violating) = evaluate(&c.check, &value, st, now, lookback, min_points, fleet)
        else {
            return;
        };
        st.last_datapoint = Some(now);
        let mut new_seq = false;
        // spec: §3.4 state machine.
        match st.mode {
            AlarmMode::Normal => {
                if violating {
                    st.v += 1;
                    if st.v >= c.cda {
                        let id = violation_id(thing, &c.profile, &c.behavior.name, now, seq);
                        new_seq = true;
                        st.mode = AlarmMode::Alarm;
                        st.v = 0;
                        st.c = 0;
                        st.active = Some(ActiveState {
                            id: id.clone(),
                            start: now,
                            last_time: now,
                            last_value: value.to_metric_value(),
                        });
                        out.push(event(
                            thing,
                            c,
                            id,
                            Some(value.to_metric_value()),
                            ViolationEventType::InAlarm,
                            now,
                        ));
                    }
                } else {
                    st.v = 0;
                }
            }
            AlarmMode::Alarm => {
                if violating {
                    st.c = 0;
                    if let Some(a) = st.active.as_mut() {
                        a.last_time = now;
                        a.last_value = value.to_metric_value();
                    }
                } else {
                    st.c += 1;
                    if st.c >= c.cdc {
                        st.mode = AlarmMode::Normal;
                        st.c = 0;
                        st.v = 0;
                        if let Some(a) = st.active.take() {
                            out.push(event(
                                thing,
                                c,
                                a.id,
                                Some(value.to_metric_value()),
                                ViolationEventType::AlarmCleared,
                                now,
                            ));
                        }
                    }
                }
            }
        }
        if new_seq {
            self.state.seq = seq;
        }
    }
}

/// Violating (Some(true)), normal (Some(false)) or no datapoint (None). Maintains the
/// statistical history and the ML baseline.
fn evaluate(
    check: &Check,
    value: &Observed,
    st: &mut BehaviorState,
    now: Millis,
    lookback: Millis,
    min_points: usize,
    fleet: Option<f64>,
) -> Option<bool> {
    let normal = match (check, value) {
        (Check::Count(op, v), Observed::Count(x)) => is_normal_u64(*op, *x, *v),
        (Check::Count(op, v), _) => op.is_normal(value.scalar()?, *v as f64),
        (Check::Number(op, v), _) => op.is_normal(value.scalar()?, *v),
        (Check::Statistical(op, p, mode), _) => {
            let x = value.scalar()?;
            let threshold = match mode {
                StatMode::Off => None,
                StatMode::FleetSupplied => fleet,
                StatMode::LocalHistory => {
                    st.history.prune_before(now - lookback);
                    let mut h: Vec<f64> = st.history.values().collect();
                    st.history.push(now, x);
                    // spec: §3.5 — |H| >= Nmin and no negative value.
                    if h.len() < min_points || h.iter().any(|v| *v < 0.0) {
                        None
                    } else {
                        h.sort_by(f64::total_cmp);
                        criteria::nearest_rank(&h, *p)
                    }
                }
            };
            op.is_normal(x, threshold?)
        }
        (Check::Ml { k, floor, .. }, _) => {
            let x = value.scalar()?;
            ml_step(st, x, now);
            let b = st.baseline.as_ref()?;
            criteria::robust_z(x, b.median, b.mad, *floor) <= *k
        }
        (Check::Ports(op, set), Observed::Ports(xs)) => op.is_normal(xs, |p| set.contains(p)),
        (Check::Cidrs(op, set), Observed::Ips(xs)) => {
            op.is_normal(xs, |ip| set.iter().any(|c| c.contains(*ip)))
        }
        (Check::Strings(op, set), Observed::Strings(xs)) => op.is_normal(xs, |s| set.contains(s)),
        (Check::Numbers(op, set), Observed::Numbers(xs)) => {
            op.is_normal(xs, |x| set.iter().any(|s| s == x))
        }
        _ => return None,
    };
    Some(!normal)
}

/// Feeds one value to the local baseline and rebuilds it daily (spec: §7.2).
fn ml_step(st: &mut BehaviorState, x: f64, now: Millis) {
    const LOOKBACK: Millis = 14 * DAY_MS;
    const MIN_POINTS: usize = 2016;
    st.training_start.get_or_insert(now);
    st.history.prune_before(now - LOOKBACK);
    st.history.push(now, x);
    let due = st.last_attempt.is_none_or(|t| now - t >= DAY_MS);
    let pending = st.baseline.is_none() && st.model_status != ModelStatus::Expired;
    if !(due || pending) {
        return;
    }
    let enough =
        st.history.len() >= MIN_POINTS && st.history.oldest().is_some_and(|o| now - o >= LOOKBACK);
    if enough {
        let values: Vec<f64> = st.history.values().collect();
        if let Some((median, mad)) = criteria::median_mad(&values) {
            st.baseline = Some(Baseline {
                median,
                mad,
                built_at: now,
            });
            st.model_status = ModelStatus::Active;
            st.failed_attempts = 0;
            st.last_attempt = Some(now);
        }
    } else if due {
        st.last_attempt = Some(now);
        if st.model_status == ModelStatus::Active {
            st.failed_attempts += 1;
            if st.failed_attempts >= 30 {
                st.model_status = ModelStatus::Expired;
                st.baseline = None;
            }
        }
    }
}

fn additional_info(b: &Behavior) -> Option<AdditionalInfo> {
    b.criteria
        .as_ref()?
        .ml_detection_config
        .as_ref()
        .map(|m| AdditionalInfo {
            confidence_level: m.confidence_level.clone(),
        })
}

fn event(
    thing: &str,
    c: &Compiled,
    id: String,
    metric_value: Option<MetricValue>,
    kind: ViolationEventType,
    now: Millis,
) -> Emitted {
    make_event(thing, &c.profile, &c.behavior, id, metric_value, kind, now)
}

fn make_event(
    thing: &str,
    profile: &str,
    behavior: &Behavior,
    id: String,
    metric_value: Option<MetricValue>,
    kind: ViolationEventType,
    now: Millis,
) -> Emitted {
    Emitted {
        notify: behavior.suppress_alerts != Some(true),
        event: ViolationEvent {
            violation_id: id,
            thing_name: thing.to_owned(),
            security_profile_name: profile.to_owned(),
            behavior: behavior.clone(),
            metric_value,
            violation_event_additional_info: additional_info(behavior),
            violation_event_type: kind,
            verification_state: None,
            verification_state_description: None,
            violation_event_time: ms_to_secs(now),
        },
    }
}

/// alarm-invalidated for a state in Alarm (no metricValue, unaligned time).
fn invalidated(thing: &str, profile: &str, st: &BehaviorState, now: Millis) -> Option<Emitted> {
    let a = st.active.as_ref()?;
    Some(make_event(
        thing,
        profile,
        &st.definition,
        a.id.clone(),
        None,
        ViolationEventType::AlarmInvalidated,
        now,
    ))
}

/// The raw per-report value of a device-side metric (spec: §2.2).
fn device_value(bi: BuiltIn, r: &DeviceReport) -> Option<Observed> {
    let distinct = |p: &PortList| sorted_dedup(&p.ports);
    Some(match bi {
        BuiltIn::BytesIn => Observed::Count(r.network?.bytes_in),
        BuiltIn::BytesOut => Observed::Count(r.network?.bytes_out),
        BuiltIn::PacketsIn => Observed::Count(r.network?.packets_in),
        BuiltIn::PacketsOut => Observed::Count(r.network?.packets_out),
        BuiltIn::NumListeningTcp => {
            let p = r.tcp_ports.as_ref()?;
            Observed::Count(p.total.unwrap_or(distinct(p).len() as u64))
        }
        BuiltIn::NumListeningUdp => {
            let p = r.udp_ports.as_ref()?;
            Observed::Count(p.total.unwrap_or(distinct(p).len() as u64))
        }
        BuiltIn::NumEstablished => {
            let e = r.established.as_ref()?;
            Observed::Count(e.total.unwrap_or(e.remote_ips.len() as u64))
        }
        BuiltIn::DestinationIps => {
            let e = r.established.as_ref()?;
            let ips: Vec<IpAddr> = e.remote_ips.iter().map(|ip| normalise(*ip)).collect();
            Observed::Ips(sorted_dedup(&ips))
        }
        BuiltIn::ListeningTcp => Observed::Ports(distinct(r.tcp_ports.as_ref()?)),
        BuiltIn::ListeningUdp => Observed::Ports(distinct(r.udp_ports.as_ref()?)),
        _ => return None,
    })
}

/// The value of a custom metric in the report, if present with the right type.
fn custom_value(name: &str, t: CustomMetricType, r: &DeviceReport) -> Option<Observed> {
    let (_, v) = r.custom.iter().find(|(n, _)| n == name)?;
    if v.metric_type() != t {
        return None;
    }
    Some(match v {
        CustomValue::Number(x) => Observed::Number(*x),
        CustomValue::NumberList(xs) => Observed::Numbers(sorted_dedup_f64(xs)),
        CustomValue::StringList(xs) => Observed::Strings(sorted_dedup(xs)),
        CustomValue::IpList(xs) => {
            let ips: Vec<IpAddr> = xs.iter().map(|ip| normalise(*ip)).collect();
            Observed::Ips(sorted_dedup(&ips))
        }
    })
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

//! What the engine reads: the parts of a device report, the cloud-side metrics and their
//! TOPIC_FILTER scopes, and the [`TrafficWindows`] seam to the traffic counters (spec: detect.md
//! §2.2).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::engine::Millis;
use crate::custom_metric::CustomValue;

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

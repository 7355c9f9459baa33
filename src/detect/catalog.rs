//! The metric catalogue: for every `aws:*` metric and custom type, its side, value kind,
//! operators, duration, statistical/ML/dimension support and aggregation class.
//!
//! spec: detect.md §2.1 (summary table), §3.3 (aggregation).

use crate::custom_metric::CustomMetricType;

/// Which field of `MetricValue` a metric uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ValueKind {
    /// `count` (u64).
    Count,
    /// `number` (f64).
    Number,
    /// `cidrs`.
    Cidrs,
    /// `ports`.
    Ports,
    /// `numbers`.
    Numbers,
    /// `strings`.
    Strings,
}

impl ValueKind {
    /// The `MetricValue` field name.
    pub fn field(self) -> &'static str {
        match self {
            ValueKind::Count => "count",
            ValueKind::Number => "number",
            ValueKind::Cidrs => "cidrs",
            ValueKind::Ports => "ports",
            ValueKind::Numbers => "numbers",
            ValueKind::Strings => "strings",
        }
    }

    /// Whether the kind is a list (set operators, no duration, no statistics).
    pub fn is_list(self) -> bool {
        !matches!(self, ValueKind::Count | ValueKind::Number)
    }

    /// The operators allowed for this kind (§2.1 "Ops").
    pub fn operators(self) -> &'static [&'static str] {
        match self {
            ValueKind::Count | ValueKind::Number => NUMERIC_OPS,
            ValueKind::Cidrs => &["in-cidr-set", "not-in-cidr-set"],
            ValueKind::Ports => &["in-port-set", "not-in-port-set"],
            ValueKind::Numbers | ValueKind::Strings => &["in-set", "not-in-set"],
        }
    }
}

/// The four numeric operators.
pub const NUMERIC_OPS: &[&str] = &[
    "less-than",
    "less-than-equals",
    "greater-than",
    "greater-than-equals",
];

/// Allowed `durationSeconds` values (spec: detect.md §3.3).
pub const DURATIONS: &[i64] = &[300, 600, 900, 1800, 3600];

/// Allowed `statistic` values (spec: detect.md §3.5).
pub const STATISTICS: &[&str] = &[
    "p0", "p0.1", "p0.01", "p1", "p10", "p50", "p90", "p99", "p99.9", "p99.99", "p100",
];

/// Where a metric is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// From the device's metrics report (one tick per report).
    Device,
    /// Approximated from the agent's own MQTT traffic (one tick per 300 s).
    Cloud,
}

/// How values inside a window combine (spec: detect.md §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Sum of per-report deltas / events (bytes, packets, messages, failures …).
    Counter,
    /// Worst case in the window (listening port counts, established connections, custom number).
    Gauge,
    /// The current report's list.
    List,
    /// Worst single message (static) or sum (statistical).
    MessageSize,
    /// One datapoint per connection (source IP).
    PerConnection,
    /// Feature-flagged reconstruction, never evaluated here (§2.3).
    DisconnectDuration,
}

/// Built-in metric identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltIn {
    /// aws:message-byte-size
    MessageByteSize,
    /// aws:num-messages-sent
    MessagesSent,
    /// aws:num-messages-received
    MessagesReceived,
    /// aws:num-authorization-failures
    AuthorizationFailures,
    /// aws:source-ip-address
    SourceIp,
    /// aws:num-connection-attempts
    ConnectionAttempts,
    /// aws:num-disconnects
    Disconnects,
    /// aws:disconnect-duration
    DisconnectDuration,
    /// aws:all-bytes-out
    BytesOut,
    /// aws:all-bytes-in
    BytesIn,
    /// aws:all-packets-out
    PacketsOut,
    /// aws:all-packets-in
    PacketsIn,
    /// aws:num-listening-tcp-ports
    NumListeningTcp,
    /// aws:num-listening-udp-ports
    NumListeningUdp,
    /// aws:num-established-tcp-connections
    NumEstablished,
    /// aws:destination-ip-addresses
    DestinationIps,
    /// aws:listening-tcp-ports
    ListeningTcp,
    /// aws:listening-udp-ports
    ListeningUdp,
}

/// What the catalogue knows about one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricInfo {
    /// Built-in identity, `None` for custom metrics.
    pub builtin: Option<BuiltIn>,
    /// Device or cloud.
    pub side: Side,
    /// Value field.
    pub kind: ValueKind,
    /// Aggregation class.
    pub aggregation: Aggregation,
    /// `durationSeconds` accepted.
    pub duration_allowed: bool,
    /// `durationSeconds` required in strict mode (V12, cloud counters).
    pub duration_required: bool,
    /// statisticalThreshold allowed.
    pub statistical: bool,
    /// mlDetectionConfig allowed.
    pub ml: bool,
    /// TOPIC_FILTER dimension allowed.
    pub dimension: bool,
    /// Dimension allowed together with ML.
    pub ml_dimension: bool,
}

const fn info(
    builtin: BuiltIn,
    side: Side,
    kind: ValueKind,
    aggregation: Aggregation,
    flags: (bool, bool, bool, bool, bool, bool),
) -> MetricInfo {
    MetricInfo {
        builtin: Some(builtin),
        side,
        kind,
        aggregation,
        duration_allowed: flags.0,
        duration_required: flags.1,
        statistical: flags.2,
        ml: flags.3,
        dimension: flags.4,
        ml_dimension: flags.5,
    }
}

/// Looks up a built-in `aws:*` metric.
pub fn builtin(name: &str) -> Option<MetricInfo> {
    use Aggregation as A;
    use BuiltIn as B;
    use Side::{Cloud, Device};
    use ValueKind as K;
    // flags: (duration allowed, duration required, statistical, ml, dimension, ml+dimension)
    let i = match name {
        "aws:message-byte-size" => info(
            B::MessageByteSize,
            Cloud,
            K::Count,
            A::MessageSize,
            (true, false, true, true, true, true),
        ),
        "aws:num-messages-sent" => info(
            B::MessagesSent,
            Cloud,
            K::Count,
            A::Counter,
            (true, true, true, true, true, true),
        ),
        "aws:num-messages-received" => info(
            B::MessagesReceived,
            Cloud,
            K::Count,
            A::Counter,
            (true, true, true, true, true, true),
        ),
        "aws:num-authorization-failures" => info(
            B::AuthorizationFailures,
            Cloud,
            K::Count,
            A::Counter,
            (true, true, true, true, true, true),
        ),
        "aws:source-ip-address" => info(
            B::SourceIp,
            Cloud,
            K::Cidrs,
            A::PerConnection,
            (false, false, false, false, true, false),
        ),
        "aws:num-connection-attempts" => info(
            B::ConnectionAttempts,
            Cloud,
            K::Count,
            A::Counter,
            (true, true, true, true, false, false),
        ),
        "aws:num-disconnects" => info(
            B::Disconnects,
            Cloud,
            K::Count,
            A::Counter,
            (true, true, true, true, false, false),
        ),
        "aws:disconnect-duration" => info(
            B::DisconnectDuration,
            Cloud,
            K::Count,
            A::DisconnectDuration,
            (false, false, false, false, false, false),
        ),
        "aws:all-bytes-out" => info(
            B::BytesOut,
            Device,
            K::Count,
            A::Counter,
            (true, false, true, true, false, false),
        ),
        "aws:all-bytes-in" => info(
            B::BytesIn,
            Device,
            K::Count,
            A::Counter,
            (true, false, true, true, false, false),
        ),
        "aws:all-packets-out" => info(
            B::PacketsOut,
            Device,
            K::Count,
            A::Counter,
            (true, false, true, true, false, false),
        ),
        "aws:all-packets-in" => info(
            B::PacketsIn,
            Device,
            K::Count,
            A::Counter,
            (true, false, true, true, false, false),
        ),
        "aws:num-listening-tcp-ports" => info(
            B::NumListeningTcp,
            Device,
            K::Count,
            A::Gauge,
            (true, false, true, true, false, false),
        ),
        "aws:num-listening-udp-ports" => info(
            B::NumListeningUdp,
            Device,
            K::Count,
            A::Gauge,
            (true, false, true, true, false, false),
        ),
        "aws:num-established-tcp-connections" => info(
            B::NumEstablished,
            Device,
            K::Count,
            A::Gauge,
            (true, false, true, true, false, false),
        ),
        "aws:destination-ip-addresses" => info(
            B::DestinationIps,
            Device,
            K::Cidrs,
            A::List,
            (false, false, false, false, false, false),
        ),
        "aws:listening-tcp-ports" => info(
            B::ListeningTcp,
            Device,
            K::Ports,
            A::List,
            (false, false, false, false, false, false),
        ),
        "aws:listening-udp-ports" => info(
            B::ListeningUdp,
            Device,
            K::Ports,
            A::List,
            (false, false, false, false, false, false),
        ),
        _ => return None,
    };
    Some(i)
}

/// What the catalogue knows about a custom metric of the given type.
pub fn custom(t: CustomMetricType) -> MetricInfo {
    let (kind, aggregation) = match t {
        CustomMetricType::Number => (ValueKind::Number, Aggregation::Gauge),
        CustomMetricType::NumberList => (ValueKind::Numbers, Aggregation::List),
        CustomMetricType::StringList => (ValueKind::Strings, Aggregation::List),
        CustomMetricType::IpAddressList => (ValueKind::Cidrs, Aggregation::List),
    };
    let number = t == CustomMetricType::Number;
    MetricInfo {
        builtin: None,
        side: Side::Device,
        kind,
        aggregation,
        // spec: detect.md §2.1 "Dur [AMBIG]" for custom number: accepted, gauge semantics.
        duration_allowed: number,
        duration_required: false,
        statistical: number,
        ml: number,
        dimension: false,
        ml_dimension: false,
    }
}

/// Parses a `pNN` statistic into a percentile (0..=100).
pub fn percentile_of(statistic: &str) -> Option<f64> {
    if !STATISTICS.contains(&statistic) {
        return None;
    }
    statistic.strip_prefix('p')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_of_the_table_is_known() {
        for name in [
            "aws:message-byte-size",
            "aws:num-messages-sent",
            "aws:num-messages-received",
            "aws:num-authorization-failures",
            "aws:source-ip-address",
            "aws:num-connection-attempts",
            "aws:num-disconnects",
            "aws:all-bytes-out",
            "aws:all-bytes-in",
            "aws:all-packets-out",
            "aws:all-packets-in",
            "aws:num-listening-tcp-ports",
            "aws:num-listening-udp-ports",
            "aws:num-established-tcp-connections",
            "aws:destination-ip-addresses",
            "aws:listening-tcp-ports",
            "aws:listening-udp-ports",
        ] {
            assert!(builtin(name).is_some(), "{name}");
        }
        assert!(builtin("aws:foo").is_none());
    }

    #[test]
    fn statistics_map_to_percentiles() {
        assert_eq!(percentile_of("p99.9"), Some(99.9));
        assert_eq!(percentile_of("p0"), Some(0.0));
        assert_eq!(percentile_of("p95"), None);
        assert_eq!(percentile_of("Average"), None);
    }
}

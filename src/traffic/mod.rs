//! Traffic counters: MQTT messages counted by TOPIC_FILTER dimension scope, in time buckets, for
//! the locally approximated cloud-side metrics (spec: detect.md §2.2 "Cloud-side metrics", §2.3,
//! §3.3, §5).
//!
//! # Inputs
//! - [`Scope`]s, built by the agent from dimensions (name, filters with `${iot:ClientId}` already
//!   substituted, IN or NOT_IN). Each scope is counted separately; unscoped "all" always exists.
//! - [`TrafficEvent`]s from the MQTT link (own connection) and the tap (local broker), recorded
//!   with [`TrafficCounters::record`] and the time they happened. The producers filter out what
//!   must not count: DUP retransmissions (link) and retained replays (tap). `bytes` is the
//!   PUBLISH payload length. [`TrafficCounters::record_publish`] takes a borrowed topic.
//! - [`TrafficCounters::replace_scopes`] when dimensions or profiles change.
//!
//! Events older than the history (or before 1970) count in the totals only, and in
//! `events_outside_history`. A clock stepped back by more than the history therefore leaves the
//! windows empty until it catches up; the agent stamps events itself, so late events are otherwise
//! impossible.
//!
//! # Outputs for the Detect engine
//! - [`TrafficCounters::window`]`(scope, metric, t, D)` = the metric over `(t−D, t]`, where `t` is a
//!   tick (epoch seconds) and `D` a `durationSeconds`, both multiples of the bucket width:
//!   counters are summed (`Some(0)` when nothing happened: still a datapoint, spec: detect.md §3.3);
//!   [`TrafficMetric::MessageByteSize`] gives the max, min or sum of sent payload sizes, `None`
//!   when no message was sent in the window (no datapoint, TC21).
//! - [`TrafficCounters::disconnect_duration_minutes`]`(t)` for `aws:disconnect-duration` (§2.3).
//! - [`TrafficCounters::export`] maps a window to a custom-metric `number`.
//! - [`TrafficCounters::totals`]: counts since start, serialised as `status --json`'s `traffic`
//!   object (keys: `all` and each scope name).
//!
//! # Counting rules (spec: detect.md §5 "Counting under a dimension")
//! - A publish counts for "all" and for every IN scope with a matching filter and every NOT_IN
//!   scope with none. Message byte size looks at sent messages only (§2.2).
//! - An authorization failure counts for "all"; for scopes only when it carries a topic (publish:
//!   the topic; subscribe: the requested filter, matched literally). CONNECT failures never count
//!   for scopes.
//! - Connection attempts and disconnects are unscoped: dimensions do not apply to them (§2.1).
//!
//! # Bounds
//! Memory is `history_buckets × (1 + scopes)` bucket cells plus the compiled matcher, whatever the
//! number of distinct topics (counting is per scope, never per topic). Scopes are capped at
//! [`MAX_SCOPES`] (filters at [`MAX_FILTERS_PER_SCOPE`] and [`MAX_TOTAL_FILTER_BYTES`]) and history
//! at [`MAX_HISTORY_BUCKETS`]. Recording a publish allocates nothing.

mod export;
mod matcher;
mod window;

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::custom_metric::CustomValue;
use crate::topic_filter::TopicFilter;

pub use export::Export;
use matcher::{ScopeBits, ScopeMatcher};
use window::{Cell, Ring};

/// Most scopes one counter set takes: 5 profiles per target × 100 behaviours, each with at most
/// one dimension (spec: detect.md §1.2).
pub const MAX_SCOPES: usize = 500;

/// Most filters one scope takes (API CreateDimension: `stringValues` 1..100 items).
pub const MAX_FILTERS_PER_SCOPE: usize = 100;

/// Most filter text over all scopes, bounding the trie (at most one node per byte plus one per
/// filter). 128 KiB is 500 values of 256 characters; real profiles use a few KiB.
pub const MAX_TOTAL_FILTER_BYTES: usize = 128 * 1024;

/// Most history buckets: one day of 300 s buckets; Detect windows need at most 3600 s.
pub const MAX_HISTORY_BUCKETS: usize = 288;

/// Widest bucket in seconds (the widest `durationSeconds`).
pub const MAX_BUCKET_SECS: u64 = 3600;

/// The key of the unscoped totals; no scope may use it.
pub const ALL_KEY: &str = "all";

/// Largest count exported as a custom `number` (15 significant digits, metrics-report.md A.2).
const MAX_EXPORTED: u64 = 999_999_999_999_999;

/// How traffic counters bucket time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Bucket width in seconds; ticks and windows must be multiples of it. Default 300.
    pub bucket_secs: u64,
    /// Buckets kept; `bucket_secs × history_buckets` is the longest window. Default 12 (3600 s).
    pub history_buckets: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bucket_secs: 300,
            history_buckets: 12,
        }
    }
}

/// How a scope uses its filters (API `MetricDimension.operator`; absent means IN).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScopeOperator {
    /// Count messages whose topic matches one of the filters.
    #[default]
    #[serde(rename = "IN")]
    In,
    /// Count messages whose topic matches none of the filters.
    #[serde(rename = "NOT_IN")]
    NotIn,
}

/// One counted scope: a dimension's filters with an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Key in [`Totals`] and for [`TrafficCounters::scope_index`]; unique, not `all`. The agent
    /// gives a NOT_IN use of a dimension its own name.
    pub name: String,
    /// The filters, `${iot:ClientId}` already substituted.
    pub filters: Vec<TopicFilter>,
    /// IN or NOT_IN.
    pub operator: ScopeOperator,
}

/// Which way a message went, seen from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The device published it (`aws:num-messages-sent`, `aws:message-byte-size`).
    Sent,
    /// The device received it (`aws:num-messages-received`).
    Received,
}

/// What request was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFailureKind {
    /// CONNACK not authorized; has no topic, so it never counts for scopes.
    Connect,
    /// SUBACK failure; the topic is the requested filter string.
    Subscribe,
    /// PUBACK not authorized, or a disconnect right after an unauthorized publish.
    Publish,
}

/// One thing that happened on an MQTT connection. Producers drop DUP retransmissions and
/// retained replays before building these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrafficEvent {
    /// A PUBLISH packet, first transmission only.
    Publish {
        /// The topic name.
        topic: String,
        /// Payload length in bytes (the message size of spec: detect.md §2.2).
        bytes: u64,
        /// Sent or received.
        direction: Direction,
    },
    /// A CONNECT attempt and whether it was accepted.
    ConnectAttempt {
        /// CONNACK accepted.
        ok: bool,
    },
    /// An established connection was lost, whatever the cause. Ignored when no accepted
    /// connection precedes it: a failed attempt is an attempt, not a disconnect.
    Disconnect,
    /// A request denied by the server.
    AuthFailure {
        /// What was denied.
        kind: AuthFailureKind,
        /// The publish topic or requested subscribe filter, when known.
        topic: Option<String>,
    },
}

/// Aggregate of sent payload sizes over a window (spec: detect.md §3.3, A4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeAggregate {
    /// Largest message: STATIC with less-than / less-than-equals.
    Max,
    /// Smallest message: STATIC with greater-than / greater-than-equals.
    Min,
    /// Total size: STATISTICAL.
    Sum,
}

/// A windowed traffic metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficMetric {
    /// `aws:num-messages-sent`.
    MessagesSent,
    /// `aws:num-messages-received`.
    MessagesReceived,
    /// Payload bytes sent (no AWS metric; status and custom export).
    BytesSent,
    /// Payload bytes received (no AWS metric; status and custom export).
    BytesReceived,
    /// `aws:num-authorization-failures`.
    AuthorizationFailures,
    /// `aws:num-connection-attempts` (unscoped only).
    ConnectionAttempts,
    /// `aws:num-disconnects` (unscoped only).
    Disconnects,
    /// `aws:message-byte-size`, aggregated as given.
    MessageByteSize(SizeAggregate),
}

impl TrafficMetric {
    /// The AWS metric name, if this is an AWS metric.
    pub fn aws_name(self) -> Option<&'static str> {
        match self {
            TrafficMetric::MessagesSent => Some("aws:num-messages-sent"),
            TrafficMetric::MessagesReceived => Some("aws:num-messages-received"),
            TrafficMetric::AuthorizationFailures => Some("aws:num-authorization-failures"),
            TrafficMetric::ConnectionAttempts => Some("aws:num-connection-attempts"),
            TrafficMetric::Disconnects => Some("aws:num-disconnects"),
            TrafficMetric::MessageByteSize(_) => Some("aws:message-byte-size"),
            TrafficMetric::BytesSent | TrafficMetric::BytesReceived => None,
        }
    }

    /// The metric for an AWS name; `size` picks the aggregation of `aws:message-byte-size` and
    /// is ignored otherwise. `None` for names this module does not count.
    pub fn from_aws_name(name: &str, size: SizeAggregate) -> Option<TrafficMetric> {
        Some(match name {
            "aws:num-messages-sent" => TrafficMetric::MessagesSent,
            "aws:num-messages-received" => TrafficMetric::MessagesReceived,
            "aws:num-authorization-failures" => TrafficMetric::AuthorizationFailures,
            "aws:num-connection-attempts" => TrafficMetric::ConnectionAttempts,
            "aws:num-disconnects" => TrafficMetric::Disconnects,
            "aws:message-byte-size" => TrafficMetric::MessageByteSize(size),
            _ => return None,
        })
    }

    /// Can the metric be asked for under a scope (TOPIC_FILTER dimension, spec: detect.md §2.1)?
    pub fn is_scopeable(self) -> bool {
        !matches!(
            self,
            TrafficMetric::ConnectionAttempts | TrafficMetric::Disconnects
        )
    }

    /// The metric's value in an aggregated cell.
    fn value(self, cell: &Cell) -> Option<u64> {
        let v = match self {
            TrafficMetric::MessagesSent => cell.messages_sent,
            TrafficMetric::MessagesReceived => cell.messages_received,
            TrafficMetric::BytesSent => cell.bytes_sent,
            TrafficMetric::BytesReceived => cell.bytes_received,
            TrafficMetric::AuthorizationFailures => cell.authorization_failures,
            TrafficMetric::ConnectionAttempts => cell.connection_attempts,
            TrafficMetric::Disconnects => cell.disconnects,
            // spec: detect.md TC21: no message in the window, no datapoint.
            TrafficMetric::MessageByteSize(_) if cell.messages_sent == 0 => return None,
            TrafficMetric::MessageByteSize(SizeAggregate::Max) => cell.size_max,
            TrafficMetric::MessageByteSize(SizeAggregate::Min) => cell.size_min,
            TrafficMetric::MessageByteSize(SizeAggregate::Sum) => cell.size_sum,
        };
        Some(v)
    }
}

/// Why counters cannot be built or a window cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrafficError {
    /// Bucket width or history out of range.
    #[error("traffic settings: bucket_secs must be 1..={max_secs} (got {bucket_secs}) and history_buckets 1..={max_buckets} (got {history_buckets})", max_secs = MAX_BUCKET_SECS, max_buckets = MAX_HISTORY_BUCKETS)]
    Settings {
        /// Given bucket width.
        bucket_secs: u64,
        /// Given history length.
        history_buckets: usize,
    },
    /// More scopes than [`MAX_SCOPES`].
    #[error("{count} traffic scopes, more than the limit of {max}")]
    TooManyScopes {
        /// Scopes given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A scope with more than [`MAX_FILTERS_PER_SCOPE`] filters, or all scopes together with more
    /// than [`MAX_TOTAL_FILTER_BYTES`] of filter text.
    #[error("traffic scope {name:?} makes the filters too many or too long ({filters} filters, {bytes} bytes in all scopes so far; limits {max_filters} per scope, {max_bytes} bytes)", max_filters = MAX_FILTERS_PER_SCOPE, max_bytes = MAX_TOTAL_FILTER_BYTES)]
    TooManyFilters {
        /// The scope where a limit was crossed.
        name: String,
        /// Its filter count.
        filters: usize,
        /// Filter bytes over all scopes up to and including it.
        bytes: usize,
    },
    /// A scope name is empty, `all`, or used twice.
    #[error("traffic scope name {name:?} is empty, reserved or used twice")]
    ScopeName {
        /// The offending name.
        name: String,
    },
    /// A scope index out of range.
    #[error("traffic scope {index} does not exist ({count} scopes)")]
    UnknownScope {
        /// The index asked for.
        index: usize,
        /// Number of scopes.
        count: usize,
    },
    /// A scope given with a metric dimensions do not apply to.
    #[error("{metric:?} cannot be counted under a dimension")]
    NotScopeable {
        /// The metric.
        metric: TrafficMetric,
    },
    /// Window end or duration not a positive multiple of the bucket width, or too long.
    #[error("window ending at {end_epoch_secs} lasting {duration_secs} s does not fit buckets of {bucket_secs} s with {history_buckets} kept")]
    Window {
        /// Window end, epoch seconds.
        end_epoch_secs: u64,
        /// Window length.
        duration_secs: u64,
        /// Bucket width.
        bucket_secs: u64,
        /// Buckets kept.
        history_buckets: usize,
    },
    /// The window reaches back before the oldest bucket still held.
    #[error("window ending at {end_epoch_secs} lasting {duration_secs} s reaches before the oldest bucket held, which ends at {oldest_epoch_secs}")]
    Forgotten {
        /// Window end, epoch seconds.
        end_epoch_secs: u64,
        /// Window length.
        duration_secs: u64,
        /// End of the oldest bucket held, epoch seconds.
        oldest_epoch_secs: u64,
    },
}

/// Counts since start for one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScopeTotals {
    /// PUBLISH packets sent.
    pub messages_sent: u64,
    /// PUBLISH packets received.
    pub messages_received: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Denied requests (scopes: only those with an in-scope topic).
    pub authorization_failures: u64,
}

/// Counts since start for everything, plus the link-only counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AllTotals {
    /// Messages, bytes and authorization failures of all traffic.
    #[serde(flatten)]
    pub traffic: ScopeTotals,
    /// CONNECT attempts, accepted or not.
    pub connection_attempts: u64,
    /// Lost connections.
    pub disconnects: u64,
    /// Events counted in the totals but too old (or before 1970) for the windows.
    pub events_outside_history: u64,
}

/// Counts since start: `all` plus every scope, in scope order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Unscoped totals.
    pub all: AllTotals,
    /// `(scope name, totals)` in scope order.
    pub scopes: Vec<(String, ScopeTotals)>,
}

impl Serialize for Totals {
    /// A map: `"all"` first, then one key per scope name.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1 + self.scopes.len()))?;
        map.serialize_entry(ALL_KEY, &self.all)?;
        for (name, totals) in &self.scopes {
            map.serialize_entry(name, totals)?;
        }
        map.end()
    }
}

/// Connection state, for disconnect counting and `aws:disconnect-duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// No accepted connection yet.
    NeverConnected,
    /// Connected now.
    Connected,
    /// Disconnected since this time (since the epoch).
    Disconnected(Duration),
}

/// The counters. Owned by the agent loop; every method is pure and synchronous.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use defender_agent::topic_filter::TopicFilter;
/// use defender_agent::traffic::*;
///
/// let auth = Scope {
///     name: "AuthTopics".into(),
///     filters: vec![TopicFilter::parse("device/+/auth").unwrap()],
///     operator: ScopeOperator::In,
/// };
/// let mut counters = TrafficCounters::new(vec![auth], Settings::default()).unwrap();
/// let event = TrafficEvent::Publish {
///     topic: "device/a/auth".into(),
///     bytes: 12,
///     direction: Direction::Sent,
/// };
/// counters.record(&event, UNIX_EPOCH + Duration::from_secs(1_700_000_100));
/// // The tick at 1_700_000_100 (a multiple of 300) with durationSeconds 300:
/// let scope = counters.scope_index("AuthTopics");
/// let count = counters.window(scope, TrafficMetric::MessagesSent, 1_700_000_100, 300);
/// assert_eq!(count, Ok(Some(1)));
/// ```
#[derive(Debug)]
pub struct TrafficCounters {
    /// Bucketing, as validated by [`TrafficCounters::new`].
    settings: Settings,
    /// The scopes, in index order.
    scopes: Vec<Scope>,
    /// Bit `i` set when scope `i` is NOT_IN: matched bits are XORed with it.
    not_in: ScopeBits,
    /// The compiled filters.
    matcher: ScopeMatcher,
    /// Buckets: column 0 = all, column `i + 1` = scope `i`.
    ring: Ring,
    /// Totals since start.
    all: AllTotals,
    /// Totals since start per scope.
    scope_totals: Vec<ScopeTotals>,
    /// For disconnects and disconnect duration.
    link: LinkState,
}

impl TrafficCounters {
    /// Builds counters for `scopes` (names unique, not `all`).
    pub fn new(scopes: Vec<Scope>, settings: Settings) -> Result<TrafficCounters, TrafficError> {
        if settings.bucket_secs == 0
            || settings.bucket_secs > MAX_BUCKET_SECS
            || settings.history_buckets == 0
            || settings.history_buckets > MAX_HISTORY_BUCKETS
        {
            return Err(TrafficError::Settings {
                bucket_secs: settings.bucket_secs,
                history_buckets: settings.history_buckets,
            });
        }
        if scopes.len() > MAX_SCOPES {
            return Err(TrafficError::TooManyScopes {
                count: scopes.len(),
                max: MAX_SCOPES,
            });
        }
        let mut names = HashSet::with_capacity(scopes.len());
        let mut bytes = 0usize;
        for scope in &scopes {
            bytes += scope
                .filters
                .iter()
                .map(|f| f.as_str().len())
                .sum::<usize>();
            if scope.filters.len() > MAX_FILTERS_PER_SCOPE || bytes > MAX_TOTAL_FILTER_BYTES {
                return Err(TrafficError::TooManyFilters {
                    name: scope.name.clone(),
                    filters: scope.filters.len(),
                    bytes,
                });
            }
            if scope.name.is_empty() || scope.name == ALL_KEY || !names.insert(&scope.name) {
                return Err(TrafficError::ScopeName {
                    name: scope.name.clone(),
                });
            }
        }
        let mut not_in = ScopeBits::new(scopes.len());
        for (i, scope) in scopes.iter().enumerate() {
            if scope.operator == ScopeOperator::NotIn {
                not_in.insert(i);
            }
        }
        let matcher = ScopeMatcher::new(scopes.iter().map(|s| s.filters.as_slice()));
        Ok(TrafficCounters {
            settings,
            ring: Ring::new(
                settings.bucket_secs,
                settings.history_buckets,
                1 + scopes.len(),
            ),
            scope_totals: vec![ScopeTotals::default(); scopes.len()],
            scopes,
            not_in,
            matcher,
            all: AllTotals::default(),
            link: LinkState::NeverConnected,
        })
    }

    /// Replaces the scopes (a dimension or profile changed; spec: detect.md §5 "Lifecycle": the
    /// new scope applies from the next tick).
    ///
    /// Unscoped counts, link state and history are kept. A new scope equal to an old one (same
    /// name, filters and operator) keeps its history and totals; any other starts empty, so its
    /// first windows are partial. On error nothing changes.
    pub fn replace_scopes(&mut self, scopes: Vec<Scope>) -> Result<(), TrafficError> {
        let mut fresh = TrafficCounters::new(scopes, self.settings)?;
        let old_index: Vec<Option<usize>> = fresh
            .scopes
            .iter()
            .map(|s| self.scopes.iter().position(|o| o == s))
            .collect();
        for (new, old) in old_index.iter().enumerate() {
            if let (Some(old), Some(t)) = (old, fresh.scope_totals.get_mut(new)) {
                *t = self.scope_totals.get(*old).copied().unwrap_or_default();
            }
        }
        fresh.ring = self
            .ring
            .remap(1 + fresh.scopes.len(), |column| match column {
                0 => Some(0),
                c => old_index.get(c - 1).copied().flatten().map(|o| o + 1),
            });
        fresh.all = self.all;
        fresh.link = self.link;
        *self = fresh;
        Ok(())
    }

    /// The bucketing in use.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// The scopes, in index order.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// The index of the scope called `name`.
    pub fn scope_index(&self, name: &str) -> Option<usize> {
        self.scopes.iter().position(|s| s.name == name)
    }

    /// Records one event that happened at `now`.
    pub fn record(&mut self, event: &TrafficEvent, now: SystemTime) {
        match event {
            TrafficEvent::Publish {
                topic,
                bytes,
                direction,
            } => self.record_publish(topic, *bytes, *direction, now),
            TrafficEvent::ConnectAttempt { ok } => {
                let row = self.row_for(now);
                self.all.connection_attempts = self.all.connection_attempts.saturating_add(1);
                if let Some(cell) = row.and_then(|r| self.ring.cell_mut(r, 0)) {
                    cell.connection_attempts = cell.connection_attempts.saturating_add(1);
                }
                if *ok {
                    self.link = LinkState::Connected;
                }
            }
            TrafficEvent::Disconnect => {
                if self.link != LinkState::Connected {
                    return;
                }
                let row = self.row_for(now);
                self.all.disconnects = self.all.disconnects.saturating_add(1);
                if let Some(cell) = row.and_then(|r| self.ring.cell_mut(r, 0)) {
                    cell.disconnects = cell.disconnects.saturating_add(1);
                }
                self.link =
                    LinkState::Disconnected(now.duration_since(UNIX_EPOCH).unwrap_or_default());
            }
            TrafficEvent::AuthFailure { kind, topic } => {
                // spec: detect.md §5: CONNECT failures have no topic and no scope.
                let topic = match kind {
                    AuthFailureKind::Connect => None,
                    _ => topic.as_deref(),
                };
                self.record_auth_failure(topic, now);
            }
        }
    }

    /// Records a PUBLISH without building a [`TrafficEvent`]; allocates nothing.
    pub fn record_publish(
        &mut self,
        topic: &str,
        bytes: u64,
        direction: Direction,
        now: SystemTime,
    ) {
        let row = self.row_for(now);
        let TrafficCounters {
            matcher,
            not_in,
            ring,
            all,
            scope_totals,
            ..
        } = self;
        add_publish_total(&mut all.traffic, bytes, direction);
        if let Some(cell) = row.and_then(|r| ring.cell_mut(r, 0)) {
            add_publish_cell(cell, bytes, direction);
        }
        matcher.match_topic(topic).for_each_xor(not_in, |i| {
            if let Some(t) = scope_totals.get_mut(i) {
                add_publish_total(t, bytes, direction);
            }
            if let Some(cell) = row.and_then(|r| ring.cell_mut(r, i + 1)) {
                add_publish_cell(cell, bytes, direction);
            }
        });
    }

    /// Counts a denied request; scoped only when it has a topic.
    fn record_auth_failure(&mut self, topic: Option<&str>, now: SystemTime) {
        let row = self.row_for(now);
        let TrafficCounters {
            matcher,
            not_in,
            ring,
            all,
            scope_totals,
            ..
        } = self;
        all.traffic.authorization_failures = all.traffic.authorization_failures.saturating_add(1);
        if let Some(cell) = row.and_then(|r| ring.cell_mut(r, 0)) {
            cell.authorization_failures = cell.authorization_failures.saturating_add(1);
        }
        let Some(topic) = topic else { return };
        matcher.match_topic(topic).for_each_xor(not_in, |i| {
            if let Some(t) = scope_totals.get_mut(i) {
                t.authorization_failures = t.authorization_failures.saturating_add(1);
            }
            if let Some(cell) = row.and_then(|r| ring.cell_mut(r, i + 1)) {
                cell.authorization_failures = cell.authorization_failures.saturating_add(1);
            }
        });
    }

    /// The bucket row for `now`, or `None` (counted) when it is older than the history.
    fn row_for(&mut self, now: SystemTime) -> Option<usize> {
        let row = now
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|t| self.ring.row_for_write(self.ring.bucket_of(t)));
        if row.is_none() {
            self.all.events_outside_history = self.all.events_outside_history.saturating_add(1);
        }
        row
    }

    /// `metric` over `(end − duration, end]` for `scope` (`None` = all traffic).
    ///
    /// `end_epoch_secs` and `duration_secs` must be positive multiples of the bucket width, and
    /// `duration_secs` at most `bucket_secs × history_buckets`. Counters give `Some(sum)` (0 when
    /// nothing happened); message byte size gives `None` when no message was sent in the window.
    pub fn window(
        &self,
        scope: Option<usize>,
        metric: TrafficMetric,
        end_epoch_secs: u64,
        duration_secs: u64,
    ) -> Result<Option<u64>, TrafficError> {
        let column = self.column(scope, metric)?;
        let b = self.ring.bucket_secs();
        let slots = self.ring.slots();
        // Invariant: the ring clamps bucket_secs to >= 1, so `b` is never a zero divisor.
        let fits = duration_secs > 0
            && duration_secs % b == 0
            && end_epoch_secs % b == 0
            && duration_secs / b <= slots as u64;
        if !fits {
            return Err(TrafficError::Window {
                end_epoch_secs,
                duration_secs,
                bucket_secs: b,
                history_buckets: slots,
            });
        }
        let last = end_epoch_secs / b;
        // Invariant: end_epoch_secs comes from i64 milliseconds / 1000, far below u64::MAX.
        let first = (last + 1).saturating_sub(duration_secs / b);
        let cell =
            self.ring
                .aggregate(column, first, last)
                .map_err(|f| TrafficError::Forgotten {
                    end_epoch_secs,
                    duration_secs,
                    oldest_epoch_secs: f.oldest_bucket.saturating_mul(b),
                })?;
        Ok(metric.value(&cell))
    }

    /// The ring column of `scope` for `metric`.
    fn column(&self, scope: Option<usize>, metric: TrafficMetric) -> Result<usize, TrafficError> {
        match scope {
            None => Ok(0),
            Some(_) if !metric.is_scopeable() => Err(TrafficError::NotScopeable { metric }),
            Some(index) if index < self.scopes.len() => Ok(index + 1),
            Some(index) => Err(TrafficError::UnknownScope {
                index,
                count: self.scopes.len(),
            }),
        }
    }

    /// `aws:disconnect-duration` at tick `at_epoch_secs` (spec: detect.md §2.3, unverified
    /// reconstruction): whole minutes since the last disconnect while disconnected, 0 while
    /// connected, `None` before the first accepted connection.
    pub fn disconnect_duration_minutes(&self, at_epoch_secs: u64) -> Option<u64> {
        match self.link {
            LinkState::NeverConnected => None,
            LinkState::Connected => Some(0),
            LinkState::Disconnected(since) => {
                Some(at_epoch_secs.saturating_sub(since.as_secs()) / 60)
            }
        }
    }

    /// Is the own link connected (an accepted attempt not followed by a disconnect)?
    pub fn is_connected(&self) -> bool {
        self.link == LinkState::Connected
    }

    /// A window as a custom-metric `number` (spec: metrics-report.md D.16: per-topic counts can
    /// only leave the device flattened into custom metrics). `None` when the window has no
    /// datapoint; counts above 15 digits are clamped.
    pub fn export(
        &self,
        scope: Option<usize>,
        metric: TrafficMetric,
        end_epoch_secs: u64,
        duration_secs: u64,
    ) -> Result<Option<CustomValue>, TrafficError> {
        let value = self.window(scope, metric, end_epoch_secs, duration_secs)?;
        // Invariant: ≤ 999_999_999_999_999 < 2^53, so the f64 is exact.
        Ok(value.map(|v| CustomValue::Number(v.min(MAX_EXPORTED) as f64)))
    }

    /// Counts since start, for `status --json`.
    pub fn totals(&self) -> Totals {
        Totals {
            all: self.all,
            scopes: self
                .scopes
                .iter()
                .zip(&self.scope_totals)
                .map(|(s, t)| (s.name.clone(), *t))
                .collect(),
        }
    }
}

/// Adds one publish to running totals.
fn add_publish_total(t: &mut ScopeTotals, bytes: u64, direction: Direction) {
    match direction {
        Direction::Sent => {
            t.messages_sent = t.messages_sent.saturating_add(1);
            t.bytes_sent = t.bytes_sent.saturating_add(bytes);
        }
        Direction::Received => {
            t.messages_received = t.messages_received.saturating_add(1);
            t.bytes_received = t.bytes_received.saturating_add(bytes);
        }
    }
}

/// Adds one publish to a bucket cell; sizes only for sent messages (spec: detect.md §2.2).
fn add_publish_cell(c: &mut Cell, bytes: u64, direction: Direction) {
    match direction {
        Direction::Sent => {
            c.messages_sent = c.messages_sent.saturating_add(1);
            c.bytes_sent = c.bytes_sent.saturating_add(bytes);
            c.size_max = c.size_max.max(bytes);
            c.size_min = c.size_min.min(bytes);
            c.size_sum = c.size_sum.saturating_add(bytes);
        }
        Direction::Received => {
            c.messages_received = c.messages_received.saturating_add(1);
            c.bytes_received = c.bytes_received.saturating_add(bytes);
        }
    }
}

#[cfg(test)]
mod tests;

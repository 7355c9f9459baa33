//! A millisecond-exact [`TrafficWindows`] over recorded events, for the tests and the benches
//! (the agent's real input is `crate::traffic::TrafficCounters`).

use super::engine::Millis;
use super::input::{CloudMetric, Scope, TrafficWindows, WindowValue};

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

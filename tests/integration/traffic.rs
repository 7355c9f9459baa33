//! Traffic counters seen from the Detect engine: events recorded as they happen, windows asked at
//! 300 s ticks, totals rendered for `status --json`. Public API only.

use std::time::{Duration, UNIX_EPOCH};

use defender_agent::topic_filter::TopicFilter;
use defender_agent::traffic::{
    Direction, Scope, ScopeOperator, Settings, SizeAggregate, TrafficCounters, TrafficEvent,
    TrafficMetric,
};

/// A 300-aligned epoch origin, so ticks are `T0 + 300·i` as in spec: detect.md §9.
const T0: u64 = 1_560_276_300;

#[test]
fn windows_slide_across_ticks_like_the_tc01_counts() {
    let scope = Scope {
        name: "Telemetry".to_owned(),
        filters: vec![TopicFilter::parse("dt/+/telemetry").unwrap()],
        operator: ScopeOperator::In,
    };
    let mut counters = TrafficCounters::new(vec![scope], Settings::default()).unwrap();
    let per_tick = [5u64, 15, 15, 3, 3]; // spec: detect.md TC01 counts
    for (i, &n) in per_tick.iter().enumerate() {
        let bucket_start = T0 + 300 * i as u64;
        for k in 0..n {
            let event = TrafficEvent::Publish {
                topic: format!("dt/dev{k}/telemetry"),
                bytes: 100 + k,
                direction: Direction::Sent,
            };
            // Spread inside (start, start + 300].
            let at = UNIX_EPOCH + Duration::from_secs(bucket_start + 1 + k * 19);
            counters.record(&event, at);
            // Noise outside the scope.
            let other = TrafficEvent::Publish {
                topic: "cmd/x".to_owned(),
                bytes: 1,
                direction: Direction::Received,
            };
            counters.record(&other, at);
        }
    }
    let scope = counters.scope_index("Telemetry");
    let at_tick = |i: u64, d: u64, m: TrafficMetric| counters.window(scope, m, T0 + 300 * i, d);
    let sent = TrafficMetric::MessagesSent;
    let d300: Vec<_> = (1..=5).map(|i| at_tick(i, 300, sent).unwrap()).collect();
    assert_eq!(d300, [Some(5), Some(15), Some(15), Some(3), Some(3)]);
    let d600: Vec<_> = (1..=5).map(|i| at_tick(i, 600, sent).unwrap()).collect();
    assert_eq!(d600, [Some(5), Some(20), Some(30), Some(18), Some(6)]);
    assert_eq!(
        at_tick(5, 3600, TrafficMetric::MessagesReceived).unwrap(),
        Some(0)
    );
    assert_eq!(
        at_tick(2, 300, TrafficMetric::MessageByteSize(SizeAggregate::Max)).unwrap(),
        Some(114)
    );
    let json = serde_json::to_value(counters.totals()).unwrap();
    assert_eq!(json["Telemetry"]["messages_sent"], 41);
    assert_eq!(json["all"]["messages_received"], 41);
}

//! Unit tests of the traffic counters: the spec's worked cases, buckets, windows, scoping rules.

use super::*;

/// Epoch seconds as a `SystemTime`.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn scope(name: &str, filters: &[&str], operator: ScopeOperator) -> Scope {
    Scope {
        name: name.to_owned(),
        filters: filters
            .iter()
            .map(|f| TopicFilter::parse(f).unwrap())
            .collect(),
        operator,
    }
}

fn counters(scopes: Vec<Scope>) -> TrafficCounters {
    TrafficCounters::new(scopes, Settings::default()).unwrap()
}

fn sent(topic: &str, bytes: u64) -> TrafficEvent {
    TrafficEvent::Publish {
        topic: topic.to_owned(),
        bytes,
        direction: Direction::Sent,
    }
}

fn received(topic: &str, bytes: u64) -> TrafficEvent {
    TrafficEvent::Publish {
        topic: topic.to_owned(),
        bytes,
        direction: Direction::Received,
    }
}

#[test]
fn tc18_in_and_not_in_scopes_count_their_messages() {
    // spec: detect.md §9 TC18
    let mut c = counters(vec![
        scope("AuthTopics", &["device/+/auth"], ScopeOperator::In),
        scope(
            "AuthTopics:NOT_IN",
            &["device/+/auth"],
            ScopeOperator::NotIn,
        ),
    ]);
    for (t, topic) in [
        (10, "device/a/auth"),
        (20, "device/b/auth"),
        (30, "device/c/auth"),
        (300, "telemetry/x"),
    ] {
        c.record(&sent(topic, 10), at(t));
    }
    let m = TrafficMetric::MessagesSent;
    assert_eq!(c.window(Some(0), m, 300, 300), Ok(Some(3)));
    assert_eq!(c.window(Some(1), m, 300, 300), Ok(Some(1)));
    assert_eq!(c.window(None, m, 300, 300), Ok(Some(4)));
}

#[test]
fn tc21_message_size_is_the_worst_case_per_window() {
    // spec: detect.md §9 TC21
    let mut c = counters(vec![]);
    for (t, size) in [(1, 100), (150, 2000), (299, 50)] {
        c.record(&sent("a/b", size), at(t));
    }
    // A received message never counts as a message size.
    c.record(&received("a/b", 1_000_000), at(200));
    let size = |agg| TrafficMetric::MessageByteSize(agg);
    assert_eq!(
        c.window(None, size(SizeAggregate::Max), 300, 300),
        Ok(Some(2000))
    );
    assert_eq!(
        c.window(None, size(SizeAggregate::Min), 300, 300),
        Ok(Some(50))
    );
    assert_eq!(
        c.window(None, size(SizeAggregate::Sum), 300, 300),
        Ok(Some(2150))
    );
    // A window with no message gives no datapoint, while counters give 0.
    assert_eq!(c.window(None, size(SizeAggregate::Max), 600, 300), Ok(None));
    assert_eq!(
        c.window(None, TrafficMetric::MessagesSent, 600, 300),
        Ok(Some(0))
    );
}

#[test]
fn message_size_under_a_scope_considers_only_in_scope_messages() {
    let mut c = counters(vec![scope("Small", &["small/#"], ScopeOperator::In)]);
    c.record(&sent("small/a", 10), at(5));
    c.record(&sent("big/a", 9000), at(6));
    let max = TrafficMetric::MessageByteSize(SizeAggregate::Max);
    assert_eq!(c.window(Some(0), max, 300, 300), Ok(Some(10)));
    assert_eq!(c.window(None, max, 300, 300), Ok(Some(9000)));
}

#[test]
fn window_ends_are_inclusive_and_starts_exclusive() {
    let mut c = counters(vec![]);
    c.record(&sent("a", 1), at(300)); // in (0, 300]
    c.record(&sent("a", 1), at(301)); // in (300, 600]
    let m = TrafficMetric::MessagesSent;
    assert_eq!(c.window(None, m, 300, 300), Ok(Some(1)));
    assert_eq!(c.window(None, m, 600, 300), Ok(Some(1)));
    assert_eq!(c.window(None, m, 600, 600), Ok(Some(2)));
}

#[test]
fn every_documented_duration_sums_its_buckets() {
    let mut c = counters(vec![]);
    // One message in each 300 s bucket ending at 300·k, k = 1..=12.
    for k in 1..=12u64 {
        c.record(&sent("a", 1), at(300 * k - 1));
    }
    let m = TrafficMetric::MessagesSent;
    for d in [300, 600, 900, 1800, 3600] {
        assert_eq!(c.window(None, m, 3600, d), Ok(Some(d / 300)), "D = {d}");
    }
}

#[test]
fn buckets_roll_over_and_old_ones_are_forgotten() {
    let mut c = counters(vec![]);
    let m = TrafficMetric::MessagesSent;
    c.record(&sent("a", 1), at(100));
    // Two hours later: the first bucket has been reused.
    c.record(&sent("a", 1), at(7200));
    assert_eq!(c.window(None, m, 7200, 3600), Ok(Some(1)));
    assert!(matches!(
        c.window(None, m, 300, 300),
        Err(TrafficError::Forgotten { .. })
    ));
    // Totals still know about both.
    assert_eq!(c.totals().all.traffic.messages_sent, 2);
}

#[test]
fn events_older_than_the_history_are_ignored_and_counted() {
    let mut c = counters(vec![]);
    c.record(&sent("a", 1), at(10_000));
    c.record(&sent("a", 1), at(10_000 - 3600)); // 12 buckets back: outside
    c.record(&sent("a", 1), at(10_000 - 3000)); // inside: a late but kept event
    let m = TrafficMetric::MessagesSent;
    assert_eq!(c.window(None, m, 10_200, 3600), Ok(Some(2)));
    let totals = c.totals();
    assert_eq!(totals.all.events_outside_history, 1);
    assert_eq!(totals.all.traffic.messages_sent, 3);
}

#[test]
fn a_time_before_1970_reaches_only_the_totals() {
    let mut c = counters(vec![]);
    c.record(&sent("a", 1), UNIX_EPOCH - Duration::from_secs(5));
    assert_eq!(c.totals().all.events_outside_history, 1);
    assert_eq!(c.totals().all.traffic.messages_sent, 1);
}

#[test]
fn a_quiet_period_gives_zero_not_stale_counts() {
    let mut c = counters(vec![]);
    let m = TrafficMetric::MessagesSent;
    c.record(&sent("a", 1), at(290));
    // Nothing recorded since; a later tick must not see bucket 1's count.
    assert_eq!(c.window(None, m, 3900, 300), Ok(Some(0)));
    assert_eq!(c.window(None, m, 3900, 3600), Ok(Some(0)));
}

#[test]
fn unaligned_or_oversized_windows_are_errors() {
    let c = counters(vec![]);
    let m = TrafficMetric::MessagesSent;
    for (end, d) in [(301, 300), (600, 120), (600, 0), (7200, 3900)] {
        assert!(
            matches!(c.window(None, m, end, d), Err(TrafficError::Window { .. })),
            "{end} {d}"
        );
    }
}

#[test]
fn link_metrics_have_no_scope() {
    let c = counters(vec![scope("S", &["#"], ScopeOperator::In)]);
    assert_eq!(
        c.window(Some(0), TrafficMetric::ConnectionAttempts, 300, 300),
        Err(TrafficError::NotScopeable {
            metric: TrafficMetric::ConnectionAttempts
        })
    );
    assert!(matches!(
        c.window(Some(1), TrafficMetric::MessagesSent, 300, 300),
        Err(TrafficError::UnknownScope { index: 1, count: 1 })
    ));
}

#[test]
fn connection_attempts_and_disconnects_are_counted_on_the_link() {
    let mut c = counters(vec![scope("S", &["#"], ScopeOperator::In)]);
    // A failed attempt, then a disconnect report for it: only an attempt.
    c.record(&TrafficEvent::ConnectAttempt { ok: false }, at(10));
    c.record(&TrafficEvent::Disconnect, at(11));
    c.record(&TrafficEvent::ConnectAttempt { ok: true }, at(20));
    assert!(c.is_connected());
    c.record(&TrafficEvent::Disconnect, at(100));
    c.record(&TrafficEvent::Disconnect, at(101)); // already down
    assert_eq!(
        c.window(None, TrafficMetric::ConnectionAttempts, 300, 300),
        Ok(Some(2))
    );
    assert_eq!(
        c.window(None, TrafficMetric::Disconnects, 300, 300),
        Ok(Some(1))
    );
    let totals = c.totals();
    assert_eq!(totals.all.connection_attempts, 2);
    assert_eq!(totals.all.disconnects, 1);
}

#[test]
fn disconnect_duration_counts_whole_minutes_since_the_loss() {
    let mut c = counters(vec![]);
    assert_eq!(c.disconnect_duration_minutes(300), None);
    c.record(&TrafficEvent::ConnectAttempt { ok: false }, at(100));
    assert_eq!(c.disconnect_duration_minutes(300), None);
    c.record(&TrafficEvent::ConnectAttempt { ok: true }, at(200));
    assert_eq!(c.disconnect_duration_minutes(300), Some(0));
    c.record(&TrafficEvent::Disconnect, at(1000));
    assert_eq!(c.disconnect_duration_minutes(1200), Some(3));
    // Failed retries do not restart the clock.
    c.record(&TrafficEvent::ConnectAttempt { ok: false }, at(1300));
    assert_eq!(c.disconnect_duration_minutes(1500), Some(8));
    c.record(&TrafficEvent::ConnectAttempt { ok: true }, at(1600));
    assert_eq!(c.disconnect_duration_minutes(1800), Some(0));
}

#[test]
fn authorization_failures_count_for_scopes_only_with_a_topic_in_scope() {
    let mut c = counters(vec![
        scope("Admin", &["admin/#"], ScopeOperator::In),
        scope("NotAdmin", &["admin/#"], ScopeOperator::NotIn),
    ]);
    let fail = |kind, topic: Option<&str>| TrafficEvent::AuthFailure {
        kind,
        topic: topic.map(str::to_owned),
    };
    c.record(&fail(AuthFailureKind::Publish, Some("admin/reboot")), at(1));
    c.record(&fail(AuthFailureKind::Subscribe, Some("admin/+")), at(2));
    c.record(&fail(AuthFailureKind::Subscribe, Some("other/#")), at(3));
    c.record(&fail(AuthFailureKind::Publish, None), at(4));
    // CONNECT failures never count for scopes, even with a topic.
    c.record(&fail(AuthFailureKind::Connect, Some("admin/x")), at(5));
    let m = TrafficMetric::AuthorizationFailures;
    assert_eq!(c.window(None, m, 300, 300), Ok(Some(5)));
    assert_eq!(c.window(Some(0), m, 300, 300), Ok(Some(2)));
    assert_eq!(c.window(Some(1), m, 300, 300), Ok(Some(1)));
}

#[test]
fn received_messages_and_bytes_are_counted_apart() {
    let mut c = counters(vec![scope("Cmd", &["cmd/+"], ScopeOperator::In)]);
    c.record(&received("cmd/1", 40), at(1));
    c.record(&received("cmd/2", 2), at(2));
    c.record(&sent("cmd/1", 7), at(3));
    assert_eq!(
        c.window(Some(0), TrafficMetric::MessagesReceived, 300, 300),
        Ok(Some(2))
    );
    assert_eq!(
        c.window(Some(0), TrafficMetric::BytesReceived, 300, 300),
        Ok(Some(42))
    );
    assert_eq!(
        c.window(Some(0), TrafficMetric::BytesSent, 300, 300),
        Ok(Some(7))
    );
}

#[test]
fn dollar_topics_count_for_all_but_not_for_leading_wildcards() {
    let mut c = counters(vec![
        scope("Everything", &["#"], ScopeOperator::In),
        scope("Defender", &["$aws/things/+/defender/#"], ScopeOperator::In),
        scope("NotEverything", &["#"], ScopeOperator::NotIn),
    ]);
    c.record(&sent("$aws/things/t/defender/metrics/json", 500), at(1));
    let m = TrafficMetric::MessagesSent;
    assert_eq!(c.window(None, m, 300, 300), Ok(Some(1)));
    assert_eq!(c.window(Some(0), m, 300, 300), Ok(Some(0)));
    assert_eq!(c.window(Some(1), m, 300, 300), Ok(Some(1)));
    assert_eq!(c.window(Some(2), m, 300, 300), Ok(Some(1)));
}

#[test]
fn totals_serialise_as_all_and_one_key_per_scope() {
    let mut c = counters(vec![scope(
        "AuthTopics",
        &["device/+/auth"],
        ScopeOperator::In,
    )]);
    c.record(&sent("device/a/auth", 3), at(1));
    c.record(&received("x", 4), at(2));
    c.record(&TrafficEvent::ConnectAttempt { ok: true }, at(3));
    let json = serde_json::to_value(c.totals()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "all": {
                "messages_sent": 1, "messages_received": 1, "bytes_sent": 3, "bytes_received": 4,
                "authorization_failures": 0, "connection_attempts": 1, "disconnects": 0,
                "events_outside_history": 0
            },
            "AuthTopics": {
                "messages_sent": 1, "messages_received": 0, "bytes_sent": 3, "bytes_received": 0,
                "authorization_failures": 0
            }
        })
    );
}

#[test]
fn scope_names_must_be_unique_and_not_all() {
    for names in [&["a", "a"][..], &["all"], &[""]] {
        let scopes = names
            .iter()
            .map(|n| scope(n, &["x"], ScopeOperator::In))
            .collect();
        assert!(matches!(
            TrafficCounters::new(scopes, Settings::default()),
            Err(TrafficError::ScopeName { .. })
        ));
    }
    let many = (0..=MAX_SCOPES)
        .map(|i| scope(&format!("s{i}"), &["x"], ScopeOperator::In))
        .collect();
    assert!(matches!(
        TrafficCounters::new(many, Settings::default()),
        Err(TrafficError::TooManyScopes { .. })
    ));
}

#[test]
fn settings_out_of_range_are_refused() {
    for (bucket_secs, history_buckets) in [(0, 12), (300, 0), (7200, 1), (300, 10_000)] {
        let settings = Settings {
            bucket_secs,
            history_buckets,
        };
        assert!(matches!(
            TrafficCounters::new(vec![], settings),
            Err(TrafficError::Settings { .. })
        ));
    }
}

#[test]
fn smaller_buckets_give_finer_windows() {
    let settings = Settings {
        bucket_secs: 60,
        history_buckets: 60,
    };
    let mut c = TrafficCounters::new(vec![], settings).unwrap();
    c.record(&sent("a", 1), at(250));
    c.record(&sent("a", 1), at(290));
    let m = TrafficMetric::MessagesSent;
    assert_eq!(c.window(None, m, 300, 60), Ok(Some(2)));
    assert_eq!(c.window(None, m, 240, 60), Ok(Some(0)));
    assert_eq!(c.window(None, m, 3600, 3600), Ok(Some(2)));
}

#[test]
fn export_gives_a_custom_number_or_nothing() {
    let mut c = counters(vec![]);
    c.record(&sent("a", 12), at(1));
    assert_eq!(
        c.export(None, TrafficMetric::MessagesSent, 300, 300),
        Ok(Some(CustomValue::Number(1.0)))
    );
    assert_eq!(
        c.export(
            None,
            TrafficMetric::MessageByteSize(SizeAggregate::Max),
            600,
            300
        ),
        Ok(None)
    );
}

#[test]
fn aws_names_map_both_ways() {
    for m in [
        TrafficMetric::MessagesSent,
        TrafficMetric::MessagesReceived,
        TrafficMetric::AuthorizationFailures,
        TrafficMetric::ConnectionAttempts,
        TrafficMetric::Disconnects,
        TrafficMetric::MessageByteSize(SizeAggregate::Min),
    ] {
        let name = m.aws_name().unwrap();
        assert_eq!(
            TrafficMetric::from_aws_name(name, SizeAggregate::Min),
            Some(m)
        );
    }
    assert_eq!(TrafficMetric::BytesSent.aws_name(), None);
    assert_eq!(
        TrafficMetric::from_aws_name("aws:all-bytes-out", SizeAggregate::Max),
        None
    );
}

#[test]
fn traffic_events_have_a_stable_json_form_for_recordings() {
    let e = sent("a/b", 5);
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(
        json,
        r#"{"event":"publish","topic":"a/b","bytes":5,"direction":"sent"}"#
    );
    assert_eq!(serde_json::from_str::<TrafficEvent>(&json).unwrap(), e);
    let e = TrafficEvent::AuthFailure {
        kind: AuthFailureKind::Subscribe,
        topic: Some("a/+".into()),
    };
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(
        json,
        r#"{"event":"auth_failure","kind":"subscribe","topic":"a/+"}"#
    );
}

#[test]
fn memory_does_not_grow_with_distinct_topics() {
    let mut c = counters(vec![scope("S", &["t/+"], ScopeOperator::In)]);
    for i in 0..10_000 {
        c.record_publish(&format!("t/{i}"), 1, Direction::Sent, at(1));
    }
    // Nothing is kept per topic: the only state is the per-scope counts.
    assert_eq!(
        c.window(Some(0), TrafficMetric::MessagesSent, 300, 300),
        Ok(Some(10_000))
    );
    assert_eq!(c.totals().scopes.len(), 1);
}

#[test]
fn replacing_scopes_keeps_unchanged_scopes_and_starts_changed_ones_empty() {
    let mut c = counters(vec![
        scope("Kept", &["a/#"], ScopeOperator::In),
        scope("Changed", &["b/#"], ScopeOperator::In),
        scope("Dropped", &["c/#"], ScopeOperator::In),
    ]);
    c.record(&TrafficEvent::ConnectAttempt { ok: true }, at(1));
    for topic in ["a/1", "b/1", "c/1"] {
        c.record(&sent(topic, 1), at(2));
    }
    c.replace_scopes(vec![
        scope("New", &["c/#"], ScopeOperator::In),
        scope("Changed", &["b/#"], ScopeOperator::NotIn),
        scope("Kept", &["a/#"], ScopeOperator::In),
    ])
    .unwrap();
    let m = TrafficMetric::MessagesSent;
    assert_eq!(c.scope_index("Kept"), Some(2));
    assert_eq!(c.window(Some(2), m, 300, 300), Ok(Some(1)));
    assert_eq!(c.window(Some(1), m, 300, 300), Ok(Some(0)));
    assert_eq!(c.window(Some(0), m, 300, 300), Ok(Some(0)));
    assert_eq!(c.window(None, m, 300, 300), Ok(Some(3)));
    assert!(c.is_connected());
    let totals = c.totals();
    assert_eq!(totals.all.traffic.messages_sent, 3);
    assert_eq!(
        totals.scopes[2],
        (
            "Kept".to_owned(),
            ScopeTotals {
                messages_sent: 1,
                bytes_sent: 1,
                ..ScopeTotals::default()
            }
        )
    );
    assert_eq!(totals.scopes[1].1, ScopeTotals::default());
    // New traffic uses the new scopes.
    c.record(&sent("c/2", 1), at(3));
    assert_eq!(c.window(Some(0), m, 300, 300), Ok(Some(1)));
    assert_eq!(c.window(Some(1), m, 300, 300), Ok(Some(1)));
}

#[test]
fn a_refused_replacement_changes_nothing() {
    let mut c = counters(vec![scope("S", &["#"], ScopeOperator::In)]);
    c.record(&sent("x", 1), at(1));
    let bad = vec![
        scope("T", &["#"], ScopeOperator::In),
        scope("T", &["#"], ScopeOperator::In),
    ];
    assert!(c.replace_scopes(bad).is_err());
    assert_eq!(c.scopes().len(), 1);
    assert_eq!(
        c.window(Some(0), TrafficMetric::MessagesSent, 300, 300),
        Ok(Some(1))
    );
}

#[test]
fn filters_are_bounded_per_scope_and_in_total() {
    let many: Vec<String> = (0..=MAX_FILTERS_PER_SCOPE)
        .map(|i| format!("t/{i}"))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(matches!(
        TrafficCounters::new(
            vec![scope("S", &refs, ScopeOperator::In)],
            Settings::default()
        ),
        Err(TrafficError::TooManyFilters { filters: 101, .. })
    ));
    let long = "x/".repeat(1000);
    let scopes: Vec<Scope> = (0..70)
        .map(|i| scope(&format!("s{i}"), &[long.as_str()], ScopeOperator::In))
        .collect();
    assert!(matches!(
        TrafficCounters::new(scopes, Settings::default()),
        Err(TrafficError::TooManyFilters { .. })
    ));
}

//! Worked cases of detect.md §9 as table tests through the engine API.

use super::*;
use crate::custom_metric::CustomValue;
use crate::detect::profile::{CustomMetric, Dimension};
use crate::detect::violation::ViolationEventType as T;
use crate::detect::{TrafficLog, TrafficRecord};

const TICK: Millis = 300_000;

fn profile(name: &str, behaviors: &[&str]) -> SecurityProfile {
    serde_json::from_str(&format!(
        r#"{{"securityProfileName":"{name}","behaviors":[{}]}}"#,
        behaviors.join(",")
    ))
    .unwrap()
}

fn ctx() -> ValidationContext {
    let d: Dimension = serde_json::from_str(
        r#"{"name":"AuthTopics","type":"TOPIC_FILTER","stringValues":["device/+/auth"]}"#,
    )
    .unwrap();
    let metrics: Vec<CustomMetric> = [
        r#"{"metricName":"batteryPercentage","metricType":"number"}"#,
        r#"{"metricName":"tags","metricType":"string-list"}"#,
        r#"{"metricName":"codes","metricType":"number-list"}"#,
        r#"{"metricName":"peers","metricType":"ip-address-list"}"#,
    ]
    .iter()
    .map(|s| serde_json::from_str(s).unwrap())
    .collect();
    ValidationContext::new(vec![d], metrics)
}

fn engine_with(behaviors: &[&str], settings: EngineSettings) -> DetectEngine {
    let e = DetectEngine::new(settings, &[profile("P", behaviors)], &ctx());
    assert!(
        e.diagnostics()
            .iter()
            .all(|d| d.kind == DiagnosticKind::Warning),
        "{:?}",
        e.diagnostics()
    );
    e
}

fn engine(behaviors: &[&str]) -> DetectEngine {
    engine_with(behaviors, EngineSettings::new("t1"))
}

/// (type, tick index, metricValue as JSON or "")
type Ev = (T, i64, String);

fn summarise(evs: &[Emitted]) -> Vec<Ev> {
    evs.iter()
        .map(|e| {
            (
                e.event.violation_event_type,
                (e.event.violation_event_time * 1000.0) as i64 / TICK,
                e.event
                    .metric_value
                    .as_ref()
                    .map_or(String::new(), |v| serde_json::to_string(v).unwrap()),
            )
        })
        .collect()
}

/// Publishes `counts[i]` messages in (d_i − 300, d_i] and ticks the cloud side at every d_i.
fn run_sent(e: &mut DetectEngine, counts: &[u64]) -> Vec<Emitted> {
    let mut log = TrafficLog::new("c1");
    let mut out = Vec::new();
    for (i, n) in counts.iter().enumerate() {
        let t = (i as i64 + 1) * TICK;
        for k in 0..*n {
            log.record(
                t - 1000 - k as i64,
                TrafficRecord::Publish {
                    topic: "x".into(),
                    bytes: 10,
                },
            );
        }
        out.extend(e.evaluate_cloud(&log, t));
    }
    out
}

fn auth_failures(e: &mut DetectEngine, counts: &[u64]) -> Vec<Emitted> {
    let mut log = TrafficLog::new("c1");
    let mut out = Vec::new();
    for (i, n) in counts.iter().enumerate() {
        let t = (i as i64 + 1) * TICK;
        for _ in 0..*n {
            log.record(t - 1000, TrafficRecord::AuthFailure { topic: None });
        }
        out.extend(e.evaluate_cloud(&log, t));
    }
    out
}

fn c(n: u64) -> String {
    format!(r#"{{"count":{n}}}"#)
}

const B_SENT: &str = r#"{"name":"B1","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"OP","value":{"count":10},"durationSeconds":300,"consecutiveDatapointsToAlarm":CDA,"consecutiveDatapointsToClear":CDC}}"#;

fn sent(op: &str, cda: u32, cdc: u32) -> String {
    B_SENT
        .replace("OP", op)
        .replace("CDA", &cda.to_string())
        .replace("CDC", &cdc.to_string())
}

#[test]
fn tc01_aws_polarity_alarms_when_the_normal_criteria_fail() {
    let mut e = engine(&[&sent("less-than-equals", 2, 2)]);
    let log_events = run_sent(&mut e, &[5, 15, 15]);
    assert_eq!(summarise(&log_events), vec![(T::InAlarm, 3, c(15))]);
    let active = e.active_violations();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].violation_start_time, 900.0);
    assert_eq!(active[0].last_violation_time, 900.0);
    assert_eq!(
        active[0].last_violation_value.as_ref().unwrap().count,
        Some(15)
    );
    let mut e = engine(&[&sent("less-than-equals", 2, 2)]);
    let evs = run_sent(&mut e, &[5, 15, 15, 3, 3]);
    assert_eq!(
        summarise(&evs),
        vec![(T::InAlarm, 3, c(15)), (T::AlarmCleared, 5, c(3))]
    );
    assert_eq!(evs[0].event.violation_id, evs[1].event.violation_id);
    assert!(e.active_violations().is_empty());
}

#[test]
fn tc02_greater_than_is_the_normal_range_not_the_alarm_condition() {
    let mut e = engine(&[&sent("greater-than", 2, 2)]);
    let evs = run_sent(&mut e, &[5, 15, 15, 3, 3]);
    assert_eq!(summarise(&evs), vec![(T::InAlarm, 5, c(3))]);
}

#[test]
fn tc03_defaults_are_one_datapoint_to_alarm_and_clear() {
    let mut e = engine(&[
        r#"{"name":"A","metric":"aws:num-authorization-failures","criteria":{"comparisonOperator":"less-than","value":{"count":5},"durationSeconds":300}}"#,
    ]);
    let evs = auth_failures(&mut e, &[1, 5, 4]);
    assert_eq!(
        summarise(&evs),
        vec![(T::InAlarm, 2, c(5)), (T::AlarmCleared, 3, c(4))]
    );
}

#[test]
fn tc04_boundaries_through_the_engine() {
    for (op, alarms) in [
        ("less-than", true),
        ("less-than-equals", false),
        ("greater-than", true),
        ("greater-than-equals", false),
    ] {
        let b = r#"{"name":"B","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"OP","value":{"count":5},"durationSeconds":300}}"#.replace("OP", op);
        let mut e = engine(&[&b]);
        assert_eq!(!run_sent(&mut e, &[5]).is_empty(), alarms, "{op}");
    }
}

#[test]
fn tc06_alarm_persists_last_violation_updates_and_the_clear_streak_resets() {
    let mut e = engine(&[&sent("less-than-equals", 1, 2)]);
    let mut log = TrafficLog::new("c");
    let mut evs = Vec::new();
    let mut snapshots = Vec::new();
    for (i, n) in [12u64, 13, 9, 14, 9, 9].iter().enumerate() {
        let t = (i as i64 + 1) * TICK;
        for _ in 0..*n {
            log.record(
                t - 1,
                TrafficRecord::Publish {
                    topic: "x".into(),
                    bytes: 1,
                },
            );
        }
        evs.extend(e.evaluate_cloud(&log, t));
        snapshots.push(e.active_violations());
    }
    assert_eq!(
        summarise(&evs),
        vec![(T::InAlarm, 1, c(12)), (T::AlarmCleared, 6, c(9))]
    );
    assert_eq!(snapshots[1][0].last_violation_time, 600.0);
    assert_eq!(
        snapshots[1][0].last_violation_value.as_ref().unwrap().count,
        Some(13)
    );
    assert_eq!(snapshots[3][0].last_violation_time, 1200.0);
    assert_eq!(snapshots[4][0].violation_id, evs[0].event.violation_id);
    assert_eq!(evs[1].event.violation_id, evs[0].event.violation_id);
}

#[test]
fn tc07_a_new_episode_gets_a_new_id() {
    let mut e = engine(&[&sent("less-than", 1, 1)]);
    let evs = run_sent(&mut e, &[20, 5, 30]);
    assert_eq!(
        summarise(&evs).iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![T::InAlarm, T::AlarmCleared, T::InAlarm]
    );
    assert_eq!(evs[0].event.violation_id, evs[1].event.violation_id);
    assert_ne!(evs[0].event.violation_id, evs[2].event.violation_id);
}

fn ports(tcp: Option<&[u16]>, udp: Option<&[u16]>) -> DeviceReport {
    DeviceReport {
        tcp_ports: tcp.map(|p| PortList {
            ports: p.to_vec(),
            total: None,
        }),
        udp_ports: udp.map(|p| PortList {
            ports: p.to_vec(),
            total: None,
        }),
        ..DeviceReport::default()
    }
}

#[test]
fn tc09_in_port_set_with_an_empty_list_clears_and_a_missing_block_is_no_datapoint() {
    let mut e = engine(&[
        r#"{"name":"Ports","metric":"aws:listening-tcp-ports","criteria":{"comparisonOperator":"in-port-set","value":{"ports":[443,80]}}}"#,
    ]);
    let mut evs = Vec::new();
    evs.extend(e.evaluate_report(&ports(Some(&[443]), None), TICK));
    evs.extend(e.evaluate_report(&ports(Some(&[443, 22, 22]), None), 2 * TICK));
    evs.extend(e.evaluate_report(&ports(None, None), 3 * TICK));
    assert_eq!(
        summarise(&evs),
        vec![(T::InAlarm, 2, r#"{"ports":[22,443]}"#.into())]
    );
    evs.extend(e.evaluate_report(&ports(Some(&[]), None), 4 * TICK));
    assert_eq!(
        summarise(&evs)[1],
        (T::AlarmCleared, 4, r#"{"ports":[]}"#.into())
    );
}

#[test]
fn tc10_not_in_port_set() {
    let mut e = engine(&[
        r#"{"name":"U","metric":"aws:listening-udp-ports","criteria":{"comparisonOperator":"not-in-port-set","value":{"ports":[23,2323]}}}"#,
    ]);
    assert!(e
        .evaluate_report(&ports(None, Some(&[53, 67])), TICK)
        .is_empty());
    let evs = e.evaluate_report(&ports(None, Some(&[67, 2323])), 2 * TICK);
    assert_eq!(
        summarise(&evs),
        vec![(T::InAlarm, 2, r#"{"ports":[67,2323]}"#.into())]
    );
}

fn conns(addrs: &[&str]) -> DeviceReport {
    DeviceReport {
        established: Some(Established {
            remote_ips: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            total: None,
        }),
        ..DeviceReport::default()
    }
}

fn dest(cidrs: &str) -> DetectEngine {
    engine(&[&r#"{"name":"D","metric":"aws:destination-ip-addresses","criteria":{"comparisonOperator":"in-cidr-set","value":{"cidrs":CIDRS}}}"#.replace("CIDRS", cidrs)])
}

#[test]
fn tc11_destination_ips_ipv4() {
    let mut e = dest(r#"["10.0.0.0/8","192.168.1.0/24"]"#);
    let mut evs = e.evaluate_report(&conns(&["10.1.2.3"]), TICK);
    evs.extend(e.evaluate_report(&conns(&["10.1.2.3", "8.8.8.8"]), 2 * TICK));
    evs.extend(e.evaluate_report(&conns(&["192.168.1.77"]), 3 * TICK));
    assert_eq!(
        summarise(&evs),
        vec![
            (T::InAlarm, 2, r#"{"cidrs":["10.1.2.3","8.8.8.8"]}"#.into()),
            (T::AlarmCleared, 3, r#"{"cidrs":["192.168.1.77"]}"#.into())
        ]
    );
}

#[test]
fn tc13_tc14_tc15_ipv6_mapped_and_host_cidrs() {
    for (cidrs, ip, violating) in [
        (r#"["2001:db8::/32"]"#, "2001:db8:0:1::5", false),
        (r#"["2001:db8::/32"]"#, "2001:db9::1", true),
        (r#"["2001:db8::/32"]"#, "1.2.3.4", true),
        (r#"["10.0.0.0/8"]"#, "::ffff:10.0.0.1", false),
        (r#"["10.0.0.1"]"#, "10.0.0.1", false),
        (r#"["10.0.0.1"]"#, "10.0.0.2", true),
        (r#"["10.1.2.3/8"]"#, "10.200.0.1", false),
    ] {
        let mut e = dest(cidrs);
        assert_eq!(
            !e.evaluate_report(&conns(&[ip]), TICK).is_empty(),
            violating,
            "{cidrs} {ip}"
        );
    }
}

#[test]
fn tc12_source_ip_deny_list_one_datapoint_per_connection() {
    let b = r#"{"name":"Src","metric":"aws:source-ip-address","criteria":{"comparisonOperator":"not-in-cidr-set","value":{"cidrs":["12.8.0.0/16","15.102.16.0/24"]}}}"#;
    let off = DetectEngine::new(EngineSettings::new("t1"), &[profile("P", &[b])], &ctx());
    assert_eq!(off.diagnostics()[0].kind, DiagnosticKind::NotEvaluable);
    let mut s = EngineSettings::new("t1");
    s.source_ip_from_connection = true;
    let mut e = engine_with(&[b], s);
    let mut evs = e.on_connection(Some("12.8.200.1".parse().unwrap()), TICK + 17);
    evs.extend(e.on_connection(Some("15.102.17.1".parse().unwrap()), 2 * TICK + 5));
    assert_eq!(
        evs.iter()
            .map(|x| x.event.violation_event_type)
            .collect::<Vec<_>>(),
        vec![T::InAlarm, T::AlarmCleared]
    );
}

#[test]
fn tc18_dimension_in_and_not_in() {
    for (op, alarms) in [("IN", true), ("NOT_IN", false)] {
        let b = r#"{"name":"S","metric":"aws:num-messages-sent","metricDimension":{"dimensionName":"AuthTopics","operator":"OP"},"criteria":{"comparisonOperator":"less-than-equals","value":{"count":2},"durationSeconds":300}}"#.replace("OP", op);
        let mut e = engine(&[&b]);
        let mut log = TrafficLog::new("c");
        for (i, t) in [
            "device/a/auth",
            "device/b/auth",
            "device/c/auth",
            "telemetry/x",
        ]
        .iter()
        .enumerate()
        {
            log.record(
                10_000 * (i as i64 + 1),
                TrafficRecord::Publish {
                    topic: (*t).into(),
                    bytes: 1,
                },
            );
        }
        let evs = e.evaluate_cloud(&log, TICK);
        assert_eq!(!evs.is_empty(), alarms, "{op}");
        if alarms {
            assert_eq!(summarise(&evs), vec![(T::InAlarm, 1, c(3))]);
        }
    }
}

#[test]
fn tc21_message_size_uses_the_worst_single_message_and_no_message_is_no_datapoint() {
    let mut log = TrafficLog::new("c");
    for (i, b) in [100u64, 2000, 50].iter().enumerate() {
        log.record(
            1000 * (i as i64 + 1),
            TrafficRecord::Publish {
                topic: "x".into(),
                bytes: *b,
            },
        );
    }
    for (op, limit, want) in [
        ("less-than-equals", 1024, 2000),
        ("greater-than-equals", 100, 50),
    ] {
        let b = r#"{"name":"M","metric":"aws:message-byte-size","criteria":{"comparisonOperator":"OP","value":{"count":LIM}}}"#
            .replace("OP", op)
            .replace("LIM", &limit.to_string());
        let mut e = engine(&[&b]);
        let evs = e.evaluate_cloud(&log, TICK);
        assert_eq!(summarise(&evs), vec![(T::InAlarm, 1, c(want))], "{op}");
        // (300, 600] holds no message: no datapoint, so the alarm neither clears nor changes.
        assert!(e.evaluate_cloud(&log, 2 * TICK).is_empty());
        assert_eq!(e.active_violations()[0].last_violation_time, 300.0);
    }
}

fn battery(x: f64) -> DeviceReport {
    DeviceReport {
        custom: vec![("batteryPercentage".into(), CustomValue::Number(x))],
        ..DeviceReport::default()
    }
}

#[test]
fn tc23_statistical_local_history_and_fleet_supplied() {
    let b = r#"{"name":"S","metric":"batteryPercentage","criteria":{"comparisonOperator":"less-than-equals","statisticalThreshold":{"statistic":"p90"},"durationSeconds":300}}"#;
    let off = DetectEngine::new(EngineSettings::new("t1"), &[profile("P", &[b])], &ctx());
    assert_eq!(off.diagnostics()[0].kind, DiagnosticKind::NotEvaluable);
    let run = |history: usize, current: f64| {
        let mut s = EngineSettings::new("t1");
        s.statistical = StatMode::LocalHistory;
        let mut e = engine_with(&[b], s);
        // Descending, so every earlier datapoint is normal (<= p90 of what came before).
        for i in 1..=history {
            e.evaluate_report(&battery((history + 1 - i) as f64), i as i64 * TICK);
        }
        let active_before = !e.active_violations().is_empty();
        let evs = e.evaluate_report(&battery(current), (history as i64 + 1) * TICK);
        (active_before, evs)
    };
    let (before, evs) = run(100, 95.0);
    assert!(!before);
    assert_eq!(evs.len(), 1, "95 > p90 = 90 is a violation");
    let (_, evs) = run(100, 90.0);
    assert!(evs.is_empty());
    let (_, evs) = run(29, 1000.0);
    assert!(evs.is_empty(), "|H| = 29 < 30: no datapoint");
    let mut s = EngineSettings::new("t1");
    s.statistical = StatMode::FleetSupplied;
    let mut e = engine_with(
        &[&b.replace("batteryPercentage", "aws:num-established-tcp-connections")],
        s,
    );
    let est = |n| DeviceReport {
        established: Some(Established {
            remote_ips: vec![],
            total: Some(n),
        }),
        ..DeviceReport::default()
    };
    assert!(
        e.evaluate_report(&est(51), TICK).is_empty(),
        "no threshold yet: no datapoint"
    );
    e.set_fleet_threshold("P", "S", 50.0);
    assert_eq!(
        summarise(&e.evaluate_report(&est(51), 2 * TICK)),
        vec![(T::InAlarm, 2, c(51))]
    );
}

#[test]
fn tc25_negative_history_disables_statistical_evaluation() {
    let b = r#"{"name":"S","metric":"batteryPercentage","criteria":{"comparisonOperator":"less-than-equals","statisticalThreshold":{"statistic":"p50"},"durationSeconds":300}}"#;
    let mut s = EngineSettings::new("t1");
    s.statistical = StatMode::LocalHistory;
    let mut e = engine_with(&[b], s);
    e.evaluate_report(&battery(-1.0), TICK);
    let mut evs = Vec::new();
    for i in 2..100 {
        evs.extend(e.evaluate_report(&battery(if i % 2 == 0 { 1.0 } else { 1000.0 }), i * TICK));
    }
    assert!(evs.is_empty());
    assert_eq!(e.state().behaviors["P"]["S"].last_datapoint, None);
}

#[test]
fn tc26_custom_number_with_cda_5() {
    let mut e = engine(&[
        r#"{"name":"great-than-75","metric":"batteryPercentage","criteria":{"comparisonOperator":"greater-than","value":{"number":75},"consecutiveDatapointsToAlarm":5,"consecutiveDatapointsToClear":1}}"#,
    ]);
    let mut evs = e.evaluate_report(&battery(80.0), TICK);
    for i in 2..=6 {
        evs.extend(e.evaluate_report(&battery(70.0), i * TICK));
    }
    assert_eq!(
        summarise(&evs),
        vec![(T::InAlarm, 6, r#"{"number":70.0}"#.into())]
    );
}

#[test]
fn tc27_tc28_custom_lists() {
    let strings = |xs: &[&str]| DeviceReport {
        custom: vec![(
            "tags".into(),
            CustomValue::StringList(xs.iter().map(|s| s.to_string()).collect()),
        )],
        ..DeviceReport::default()
    };
    for (op, set, obs, violating) in [
        ("in-set", r#"["a","b"]"#, vec!["a"], false),
        ("in-set", r#"["a","b"]"#, vec!["a", "c"], true),
        ("in-set", r#"["a","b"]"#, vec!["A"], true),
        ("in-set", r#"["a","b"]"#, vec![], false),
        ("not-in-set", r#"["x"]"#, vec!["y", "x"], true),
    ] {
        let b = r#"{"name":"L","metric":"tags","criteria":{"comparisonOperator":"OP","value":{"strings":SET}}}"#.replace("OP", op).replace("SET", set);
        let mut e = engine(&[&b]);
        assert_eq!(
            !e.evaluate_report(&strings(&obs), TICK).is_empty(),
            violating,
            "{op} {obs:?}"
        );
    }
    let numbers = |xs: &[f64]| DeviceReport {
        custom: vec![("codes".into(), CustomValue::NumberList(xs.to_vec()))],
        ..DeviceReport::default()
    };
    for (obs, violating) in [
        (vec![1.0, 2.0], false),
        (vec![1.0], false),
        (vec![4.0], true),
        (vec![], false),
    ] {
        let mut e = engine(&[
            r#"{"name":"N","metric":"codes","criteria":{"comparisonOperator":"in-set","value":{"numbers":[1,2,3]}}}"#,
        ]);
        assert_eq!(
            !e.evaluate_report(&numbers(&obs), TICK).is_empty(),
            violating,
            "{obs:?}"
        );
    }
}

#[test]
fn tc30_behavior_change_while_in_alarm() {
    let b = sent("less-than-equals", 1, 1);
    let mut e = engine(&[&b]);
    let evs = run_sent(&mut e, &[15]);
    let id = evs[0].event.violation_id.clone();
    // suppressAlerts only: no event, same episode.
    let suppressed = b.replace(r#""name":"B1","#, r#""name":"B1","suppressAlerts":true,"#);
    assert!(e
        .reconfigure(&[profile("P", &[&suppressed])], &ctx(), 1_000_000)
        .is_empty());
    assert_eq!(e.active_violations()[0].violation_id, id);
    assert_eq!(
        e.active_violations()[0].behavior.suppress_alerts,
        Some(true)
    );
    // value 10 → 20: invalidated at update time, no metricValue.
    let changed = suppressed.replace(r#"{"count":10}"#, r#"{"count":20}"#);
    let evs = e.reconfigure(&[profile("P", &[&changed])], &ctx(), 1_000_123);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].event.violation_event_type, T::AlarmInvalidated);
    assert_eq!(evs[0].event.violation_id, id);
    assert_eq!(evs[0].event.metric_value, None);
    assert_eq!(evs[0].event.violation_event_time, 1000.123);
    assert!(e.active_violations().is_empty());
    // Removing a behavior in alarm gives the same.
    let mut e = engine(&[&b]);
    run_sent(&mut e, &[15]);
    let evs = e.reconfigure(&[profile("P", &[])], &ctx(), 2_000_000);
    assert_eq!(
        summarise(&evs),
        vec![(T::AlarmInvalidated, 6, String::new())]
    );
    // Removing the profile too.
    let mut e = engine(&[&b]);
    run_sent(&mut e, &[15]);
    assert_eq!(e.reconfigure(&[], &ctx(), 2_000_000).len(), 1);
}

#[test]
fn tc31_suppressed_alerts_are_recorded_but_do_not_notify() {
    let b1 = sent("less-than-equals", 1, 1)
        .replace(r#""name":"B1","#, r#""name":"B1","suppressAlerts":true,"#);
    let b2 = sent("less-than-equals", 1, 1).replace("B1", "B2");
    let mut e = engine(&[&b1, &b2]);
    let evs = run_sent(&mut e, &[15, 1]);
    assert_eq!(evs.len(), 4);
    for ev in &evs {
        assert_eq!(ev.notify, ev.event.behavior.name == "B2");
    }
}

#[test]
fn silence_for_more_than_two_days_invalidates_an_active_violation() {
    let mut e = engine(&[
        r#"{"name":"great-than-75","metric":"batteryPercentage","criteria":{"comparisonOperator":"greater-than","value":{"number":75}}}"#,
    ]);
    e.evaluate_report(&battery(10.0), TICK);
    assert!(
        e.housekeeping(TICK + 172_800_000).is_empty(),
        "exactly two days is not more"
    );
    let evs = e.housekeeping(TICK + 172_800_001);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].event.violation_event_type, T::AlarmInvalidated);
    assert!(e.active_violations().is_empty());
}

#[test]
fn an_alarm_survives_a_restart_with_the_same_id() {
    let b = sent("less-than-equals", 1, 1);
    let mut e = engine(&[&b]);
    let id = run_sent(&mut e, &[15])[0].event.violation_id.clone();
    let saved = serde_json::to_string(e.state()).unwrap();
    let state: EngineState = serde_json::from_str(&saved).unwrap();
    let (mut e2, evs) = DetectEngine::with_state(
        EngineSettings::new("t1"),
        &[profile("P", &[&b])],
        &ctx(),
        state,
        400_000,
    );
    assert!(evs.is_empty());
    assert_eq!(e2.active_violations()[0].violation_id, id);
    let mut log = TrafficLog::new("c");
    log.record(
        500_000,
        TrafficRecord::Publish {
            topic: "x".into(),
            bytes: 1,
        },
    );
    let evs = e2.evaluate_cloud(&log, 2 * TICK);
    assert_eq!(evs[0].event.violation_event_type, T::AlarmCleared);
    assert_eq!(evs[0].event.violation_id, id);
    // A new episode after the restart does not reuse the id.
    let evs = run_sent(&mut e2, &[]);
    assert!(evs.is_empty());
}

#[test]
fn device_counters_sum_deltas_over_the_window_and_gauges_take_the_worst_case() {
    let net = |n| DeviceReport {
        network: Some(NetworkDeltas {
            bytes_out: n,
            ..NetworkDeltas::default()
        }),
        ..DeviceReport::default()
    };
    let mut e = engine(&[
        r#"{"name":"O","metric":"aws:all-bytes-out","criteria":{"comparisonOperator":"less-than","value":{"count":100},"durationSeconds":600}}"#,
    ]);
    assert!(e.evaluate_report(&net(60), TICK).is_empty());
    assert_eq!(
        summarise(&e.evaluate_report(&net(50), 2 * TICK)),
        vec![(T::InAlarm, 2, c(110))]
    );
    // (300, 900]: 50 + 10 = 60 → clear.
    assert_eq!(
        summarise(&e.evaluate_report(&net(10), 3 * TICK)),
        vec![(T::AlarmCleared, 3, c(60))]
    );
    assert!(
        e.evaluate_report(&DeviceReport::default(), 4 * TICK)
            .is_empty(),
        "no network_stats: no datapoint"
    );
    let est = |n| DeviceReport {
        established: Some(Established {
            remote_ips: vec![],
            total: Some(n),
        }),
        ..DeviceReport::default()
    };
    let mut e = engine(&[
        r#"{"name":"E","metric":"aws:num-established-tcp-connections","criteria":{"comparisonOperator":"less-than","value":{"count":3},"durationSeconds":900}}"#,
    ]);
    assert_eq!(
        summarise(&e.evaluate_report(&est(5), TICK)),
        vec![(T::InAlarm, 1, c(5))]
    );
    assert!(
        e.evaluate_report(&est(1), 2 * TICK).is_empty(),
        "max over (−600, 600] is still 5"
    );
    assert_eq!(
        summarise(&e.evaluate_report(&est(1), 4 * TICK)),
        vec![(T::AlarmCleared, 4, c(1))]
    );
}

#[test]
fn tc35_local_baseline_ml_is_opt_in_and_labelled_by_confidence_level() {
    let b = |level: &str| {
        r#"{"name":"ML_L","metric":"batteryPercentage","criteria":{"mlDetectionConfig":{"confidenceLevel":"L"}}}"#
            .replace("L\"}", &format!("{level}\"}}"))
            .replace("ML_L", &format!("ML_{level}"))
    };
    let behaviors = [b("HIGH"), b("MEDIUM"), b("LOW")];
    let refs: Vec<&str> = behaviors.iter().map(String::as_str).collect();
    let off = DetectEngine::new(EngineSettings::new("t1"), &[profile("P", &refs)], &ctx());
    assert_eq!(off.evaluable_behaviors(), 0);
    assert!(off
        .diagnostics()
        .iter()
        .all(|d| d.kind == DiagnosticKind::NotEvaluable));
    let summaries = off.training_summaries();
    assert_eq!(summaries.len(), 3);
    assert!(summaries
        .iter()
        .all(|t| t.model_status == ModelStatus::PendingBuild
            && t.datapoints_collection_percentage == 0.0));
    for (x, expect) in [
        (180.0, vec!["ML_HIGH", "ML_MEDIUM", "ML_LOW"]),
        (170.0, vec!["ML_MEDIUM", "ML_LOW"]),
        (150.0, vec!["ML_LOW"]),
    ] {
        let mut s = EngineSettings::new("t1");
        s.ml = MlMode::LocalBaseline;
        let mut e = engine_with(&refs, s);
        let cycle = [90.0, 100.0, 110.0];
        let points = 14 * 288;
        for i in 0..points {
            let evs = e.evaluate_report(&battery(cycle[i % 3]), i as i64 * TICK);
            assert!(evs.is_empty());
            if i == 100 {
                assert!(e
                    .training_summaries()
                    .iter()
                    .all(|t| t.model_status == ModelStatus::PendingBuild));
            }
        }
        let evs = e.evaluate_report(&battery(x), points as i64 * TICK);
        assert!(e
            .training_summaries()
            .iter()
            .all(|t| t.model_status == ModelStatus::Active));
        let names: Vec<&str> = evs.iter().map(|e| e.event.behavior.name.as_str()).collect();
        assert_eq!(names, expect, "x = {x}");
        for ev in &evs {
            let level = ev.event.behavior.name.trim_start_matches("ML_");
            assert_eq!(
                ev.event
                    .violation_event_additional_info
                    .as_ref()
                    .unwrap()
                    .confidence_level,
                level
            );
        }
    }
}

#[test]
fn event_json_has_the_api_field_order_and_fractional_times() {
    let mut e = engine(&[&sent("less-than-equals", 1, 1)]);
    let evs = run_sent(&mut e, &[15]);
    let json = serde_json::to_string(&evs[0].event).unwrap();
    let id = &evs[0].event.violation_id;
    assert_eq!(
        json,
        format!(
            r#"{{"violationId":"{id}","thingName":"t1","securityProfileName":"P","behavior":{{"name":"B1","metric":"aws:num-messages-sent","criteria":{{"comparisonOperator":"less-than-equals","value":{{"count":10}},"durationSeconds":300,"consecutiveDatapointsToAlarm":1,"consecutiveDatapointsToClear":1}}}},"metricValue":{{"count":15}},"violationEventType":"in-alarm","violationEventTime":300.0}}"#
        )
    );
}

#[test]
fn a_duplicate_profile_name_is_skipped_with_a_diagnostic() {
    let b = sent("less-than-equals", 1, 1);
    let e = DetectEngine::new(
        EngineSettings::new("t1"),
        &[profile("P", &[&b]), profile("P", &[&b])],
        &ctx(),
    );
    assert_eq!(e.evaluable_behaviors(), 1);
    assert_eq!(e.diagnostics().len(), 1);
    assert_eq!(e.diagnostics()[0].kind, DiagnosticKind::Skipped);
}

#[test]
fn two_profiles_with_the_same_behavior_name_alarm_independently() {
    let b = sent("less-than-equals", 1, 1);
    let mut e = DetectEngine::new(
        EngineSettings::new("t1"),
        &[profile("P", &[&b]), profile("Q", &[&b])],
        &ctx(),
    );
    let evs = run_sent(&mut e, &[15]);
    assert_eq!(evs.len(), 2);
    assert_ne!(evs[0].event.violation_id, evs[1].event.violation_id);
    assert_eq!(e.active_violations().len(), 2);
}

#[test]
fn a_behavior_changed_while_the_agent_was_down_is_invalidated_at_restart() {
    let b = sent("less-than-equals", 1, 1);
    let mut e = engine(&[&b]);
    let id = run_sent(&mut e, &[15])[0].event.violation_id.clone();
    let state: EngineState =
        serde_json::from_str(&serde_json::to_string(e.state()).unwrap()).unwrap();
    let changed = b.replace(r#""durationSeconds":300"#, r#""durationSeconds":600"#);
    let (e2, evs) = DetectEngine::with_state(
        EngineSettings::new("t1"),
        &[profile("P", &[&changed])],
        &ctx(),
        state,
        5_000_500,
    );
    assert_eq!(
        summarise(&evs),
        vec![(T::AlarmInvalidated, 16, String::new())]
    );
    assert_eq!(evs[0].event.violation_id, id);
    assert_eq!(evs[0].event.violation_event_time, 5000.5);
    assert!(e2.active_violations().is_empty());
}

#[test]
fn deleting_the_dimension_of_a_behavior_in_alarm_invalidates_it() {
    let b = r#"{"name":"S","metric":"aws:num-messages-sent","metricDimension":{"dimensionName":"AuthTopics"},"criteria":{"comparisonOperator":"less-than-equals","value":{"count":0},"durationSeconds":300}}"#;
    let mut e = engine(&[b]);
    let mut log = TrafficLog::new("c");
    log.record(
        1000,
        TrafficRecord::Publish {
            topic: "device/a/auth".into(),
            bytes: 1,
        },
    );
    assert_eq!(e.evaluate_cloud(&log, TICK).len(), 1);
    let no_dims = ValidationContext::new(vec![], vec![]);
    let evs = e.reconfigure(&[profile("P", &[b])], &no_dims, 400_000);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].event.violation_event_type, T::AlarmInvalidated);
    assert_eq!(e.diagnostics()[0].kind, DiagnosticKind::Skipped);
}

#[test]
fn the_traffic_counters_give_the_same_windows_as_the_traffic_log() {
    use crate::traffic::{Direction, TrafficCounters, TrafficEvent};
    let e = engine(&[
        r#"{"name":"in","metric":"aws:num-messages-sent","metricDimension":{"dimensionName":"AuthTopics"},
           "criteria":{"comparisonOperator":"less-than","value":{"count":5},"durationSeconds":300}}"#,
        r#"{"name":"out","metric":"aws:num-messages-sent","metricDimension":{"dimensionName":"AuthTopics","operator":"NOT_IN"},
           "criteria":{"comparisonOperator":"less-than","value":{"count":5},"durationSeconds":300}}"#,
        r#"{"name":"size","metric":"aws:message-byte-size",
           "criteria":{"comparisonOperator":"less-than","value":{"count":5},"durationSeconds":600}}"#,
    ]);
    let (scopes, bad) = e.traffic_scopes("c1");
    assert!(bad.is_empty());
    let names: Vec<&str> = scopes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["AuthTopics", "AuthTopics:NOT_IN"]);
    let mut counters = TrafficCounters::new(scopes.clone(), Default::default()).unwrap();
    let mut log = TrafficLog::new("c1");
    let base: Millis = 1_764_000_000_000 / TICK * TICK;
    let sends = [
        (base + 1_000, "device/a/auth", 10),
        (base + TICK, "device/b/auth", 30), // on the tick: belongs to the window ending there
        (base + TICK + 1, "other", 7),
        (base + 2 * TICK - 5, "device/c/auth", 3),
    ];
    for (t, topic, bytes) in sends {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(t as u64);
        counters.record(
            &TrafficEvent::Publish {
                topic: topic.into(),
                bytes,
                direction: Direction::Sent,
            },
            at,
        );
        log.record(
            t,
            TrafficRecord::Publish {
                topic: topic.into(),
                bytes,
            },
        );
    }
    let engine_scopes = [
        None,
        Some(Scope {
            dimension: "AuthTopics".into(),
            filters: vec!["device/+/auth".into()],
            operator: ScopeOperator::In,
        }),
        Some(Scope {
            dimension: "AuthTopics".into(),
            filters: vec!["device/+/auth".into()],
            operator: ScopeOperator::NotIn,
        }),
    ];
    for end in [base + TICK, base + 2 * TICK, base + 3 * TICK] {
        for scope in &engine_scopes {
            for metric in [CloudMetric::MessagesSent, CloudMetric::MessageByteSize] {
                for d in [300, 600] {
                    let a = TrafficWindows::window(&counters, scope.as_ref(), metric, end, d);
                    let b = TrafficWindows::window(&log, scope.as_ref(), metric, end, d);
                    if metric == CloudMetric::MessageByteSize && b.is_some_and(|w| w.count == 0) {
                        // No message: neither gives a datapoint (the engine skips count 0).
                        assert_eq!(a.map(|w| w.count), Some(0));
                    } else {
                        assert_eq!(a, b, "{metric:?} {scope:?} end {end} d {d}");
                    }
                }
            }
        }
    }
}

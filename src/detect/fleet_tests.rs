use std::collections::BTreeSet;

use super::*;
use crate::custom_metric::CustomValue;
use crate::detect::input::{NetworkDeltas, PortList};
use crate::detect::profile::{CustomMetric, SecurityProfile};
use crate::detect::replay::{replay_fleet, ReplayError};
use crate::detect::violation::{ViolationEvent, ViolationEventType as T};

const P90: &str = include_str!("../../tests/fixtures/detect/fleet/p90-profile.json");
const TEMP: &str = include_str!("../../tests/fixtures/detect/fleet/temperature-profile.json");
const TEMP_METRIC: &str =
    include_str!("../../tests/fixtures/detect/fleet/custom-metric-temperature.json");

/// An epoch-sized start, a multiple of 300 s.
const T0: u64 = 1_700_000_100;

fn fleet_of(profile: &str) -> FleetDetect {
    let p: SecurityProfile = serde_json::from_str(profile).unwrap();
    let m: CustomMetric = serde_json::from_str(TEMP_METRIC).unwrap();
    FleetDetect::new(&[p], &ValidationContext::new(vec![], vec![m]))
}

/// One fleet replay line; `rid` is the report's time (a plausible epoch second).
fn line(arrival: u64, thing: &str, rid: u64, metrics: &str) -> String {
    format!(
        r#"{{"time":{arrival},"thing":"{thing}","report":{{"hed":{{"rid":{rid},"v":"1.0"}},{metrics}}}}}"#
    )
}

fn bytes_out(n: u64) -> String {
    format!(
        r#""met":{{"ns":{{"bi":1,"bo":{n},"pi":1,"po":1}},"tp":{{"pts":[{{"pt":22}}],"t":1}}}}"#
    )
}

/// `things` things reporting every 300 s for `rounds` rounds, thing-major (the lines are not in
/// time order); things `outliers` send 50,000 bytes, the others 1000 + i.
fn scenario(things: usize, outliers: &BTreeSet<usize>, rounds: u64) -> String {
    let mut out = String::new();
    for i in 0..things {
        for r in 1..=rounds {
            let t = T0 + 300 * r + 10 + (i as u64 % 50);
            let n = if outliers.contains(&i) {
                50_000 + i as u64
            } else {
                1000 + i as u64
            };
            // Arrival a few seconds after the report's time (its report_id).
            out.push_str(&line(t + 3, &format!("thing-{i:03}"), t, &bytes_out(n)));
            out.push('\n');
        }
    }
    out
}

#[test]
fn exactly_the_twenty_outliers_of_two_hundred_things_cross_the_p90_threshold() {
    let fleet = fleet_of(P90);
    let outliers: BTreeSet<usize> = (0..200).filter(|i| i % 10 == 7).collect();
    assert_eq!(outliers.len(), 20);
    let run = replay_fleet(&scenario(200, &outliers, 6), &fleet, 10, true).unwrap();
    // Round 1 has no threshold yet; the job at T0+600 computes p90 over 200 things:
    // k = ceil(0.9·200) = 180, the largest normal value 1000 + 199 = 1199 (thing 199 is normal).
    let th = &run.thresholds[0];
    assert_eq!(th.status, ThresholdStatus::Evaluable);
    assert_eq!(th.population, 200);
    assert_eq!(th.value, Some(1199.0));
    let alarms: Vec<&ViolationEvent> = run
        .events
        .iter()
        .map(|e| &e.event)
        .filter(|e| e.violation_event_type == T::InAlarm)
        .collect();
    let alarmed: BTreeSet<String> = alarms.iter().map(|e| e.thing_name.clone()).collect();
    let want: BTreeSet<String> = outliers.iter().map(|i| format!("thing-{i:03}")).collect();
    assert_eq!(alarmed, want);
    assert_eq!(alarms.len(), 20, "one episode each");
    assert_eq!(
        run.events.len(),
        20,
        "nothing else: no clear, no port violation"
    );
    for e in &alarms {
        assert_eq!(e.behavior.name, "BytesOutP90");
        assert_eq!(e.security_profile_name, "FleetP90");
        // Evaluated at the report's time (round 2), not the arrival.
        let t = e.violation_event_time as u64;
        assert!((T0 + 610..T0 + 660).contains(&t), "{t}");
        assert_eq!(t % 300 - 10, e.thing_name[6..].parse::<u64>().unwrap() % 50);
    }
    let active = run.document.active_violations.as_ref().unwrap();
    assert_eq!(active.len(), 20);
    assert!(active
        .windows(2)
        .all(|w| w[0].violation_start_time >= w[1].violation_start_time));
    // Deterministic: the same input gives the same document, ids included.
    let again = replay_fleet(&scenario(200, &outliers, 6), &fleet, 10, true).unwrap();
    assert_eq!(
        serde_json::to_string(&again.document).unwrap(),
        serde_json::to_string(&run.document).unwrap()
    );
}

#[test]
fn below_min_population_the_statistical_behavior_is_not_evaluable_and_said_once() {
    let fleet = fleet_of(P90);
    let outliers: BTreeSet<usize> = [3].into();
    // The default min_population 10, and 9 things.
    let run = replay_fleet(
        &scenario(9, &outliers, 6),
        &fleet,
        DEFAULT_MIN_POPULATION,
        true,
    )
    .unwrap();
    assert!(run.events.is_empty(), "{:?}", run.events);
    let th = &run.thresholds[0];
    assert_eq!(th.status, ThresholdStatus::TooFewDevices);
    assert_eq!((th.value, th.population, th.min_population), (None, 9, 10));
    let said: Vec<&String> = run
        .notes
        .iter()
        .filter(|n| n.contains("below min_population 10"))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", run.notes);
    // 20 things, one outlier: not evaluable below 30; evaluable at 20, where p90 is rank
    // ceil(0.9·20) = 18, the 1018 of thing 18: the outlier and thing 19 (1019) are above it.
    let input = scenario(20, &outliers, 6);
    let run = replay_fleet(&input, &fleet, 30, false).unwrap();
    assert!(run.events.is_empty(), "{:?}", run.events);
    let run = replay_fleet(&input, &fleet, 20, false).unwrap();
    assert_eq!(run.thresholds[0].value, Some(1018.0));
    let things: Vec<&str> = run
        .events
        .iter()
        .map(|e| e.event.thing_name.as_str())
        .collect();
    assert_eq!(things, vec!["thing-003", "thing-019"]);
    // Evaluable from the first job on: one remark, at the first job.
    assert_eq!(run.notes.len(), 1, "{:?}", run.notes);
    assert!(
        run.notes[0].contains("threshold 1018 over 20 things"),
        "{:?}",
        run.notes
    );
}

#[test]
fn a_negative_value_in_the_population_excludes_the_metric() {
    let fleet = fleet_of(TEMP);
    let mut input = String::new();
    for i in 0..20u64 {
        let v: f64 = if i == 4 { -1.5 } else { 20.0 + i as f64 };
        let v = if i == 11 { 90.0 } else { v };
        for r in 1..=4 {
            let t = T0 + 300 * r + i;
            input.push_str(&line(
                t,
                &format!("t{i}"),
                t,
                &format!(r#""cmet":{{"temperature":[{{"number":{v}}}]}}"#),
            ));
            input.push('\n');
        }
    }
    let run = replay_fleet(&input, &fleet, 10, true).unwrap();
    assert!(run.events.is_empty(), "{:?}", run.events);
    assert_eq!(run.thresholds[0].status, ThresholdStatus::NegativeValues);
    assert_eq!(run.thresholds[0].population, 20);
    assert!(run.notes.iter().any(|n| n.contains("negative values")));
    // Without the negative thing the p50 is evaluable and the 90° thing violates it.
    let input: String = input
        .lines()
        .filter(|l| !l.contains(r#""thing":"t4""#))
        .map(|l| format!("{l}\n"))
        .collect();
    let run = replay_fleet(&input, &fleet, 10, false).unwrap();
    let things: BTreeSet<&str> = run
        .events
        .iter()
        .map(|e| e.event.thing_name.as_str())
        .collect();
    // p50 of 19 values: k = ceil(9.5) = 10 → the 10th smallest; the things above it violate.
    let th = run.thresholds[0].value.unwrap();
    let mut vals: Vec<f64> = (0..20u64)
        .filter(|i| *i != 4)
        .map(|i| if i == 11 { 90.0 } else { 20.0 + i as f64 })
        .collect();
    vals.sort_by(f64::total_cmp);
    assert_eq!(th, vals[9]);
    let want: BTreeSet<String> = (0..20u64)
        .filter(|i| *i != 4)
        .filter(|i| (if *i == 11 { 90.0 } else { 20.0 + *i as f64 }) > th)
        .map(|i| format!("t{i}"))
        .collect();
    assert_eq!(
        things,
        want.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    assert!(things.contains("t11"));
}

#[test]
fn threshold_of_is_the_nearest_rank_of_the_tc24_table() {
    // spec: detect.md §9 TC24, H = 1..100.
    let h: Vec<f64> = (1..=100).map(f64::from).collect();
    for (p, want) in [
        (0.0, 1.0),
        (0.01, 1.0),
        (0.1, 1.0),
        (1.0, 1.0),
        (10.0, 10.0),
        (50.0, 50.0),
        (90.0, 90.0),
        (99.0, 99.0),
        (99.9, 100.0),
        (99.99, 100.0),
        (100.0, 100.0),
    ] {
        let mut v = h.clone();
        v.reverse();
        assert_eq!(
            threshold_of(&mut v, p, 10),
            ThresholdValue::Value(want),
            "p{p}"
        );
    }
    let mut h7 = vec![3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0];
    assert_eq!(threshold_of(&mut h7, 50.0, 7), ThresholdValue::Value(3.0));
    assert_eq!(
        threshold_of(&mut [3.0, 1.0], 50.0, 3),
        ThresholdValue::TooFewDevices
    );
    assert_eq!(
        threshold_of(&mut [], 50.0, 0),
        ThresholdValue::TooFewDevices
    );
    assert_eq!(
        threshold_of(&mut [3.0, -0.5, 2.0], 50.0, 1),
        ThresholdValue::NegativeValues
    );
    // TC23's fleet-supplied reading: threshold 50, the current 51 violates less-than-equals.
    assert!(!criteria::NumOp::Le.is_normal(51.0, 50.0));
}

#[test]
fn threshold_of_agrees_with_the_sorted_nearest_rank_on_many_populations() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in 1..300usize {
        let values: Vec<f64> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 1000) as f64 / 4.0
            })
            .collect();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for p in [0.0, 0.1, 1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 100.0] {
            let mut v = values.clone();
            assert_eq!(
                threshold_of(&mut v, p, 1),
                ThresholdValue::Value(criteria::nearest_rank(&sorted, p).unwrap()),
                "n={n} p{p}"
            );
        }
    }
}

fn report(bytes_out: u64) -> DeviceReport {
    DeviceReport {
        network: Some(NetworkDeltas {
            bytes_in: 1,
            bytes_out,
            packets_in: 1,
            packets_out: 1,
        }),
        tcp_ports: Some(PortList {
            ports: vec![22, 8080],
            total: None,
        }),
        ..DeviceReport::default()
    }
}

#[test]
fn a_thing_silent_for_two_days_has_its_episode_invalidated_at_the_tick() {
    let fleet = fleet_of(P90);
    let mut st = fleet.new_thing_state();
    let t = 1_700_000_100_000;
    let ev = fleet.evaluate_report(&mut st, "a", &report(5), t);
    assert_eq!(ev.len(), 1, "port 8080 is not in the set");
    assert!(fleet.tick(&mut st, "a", None, t + 172_800_000).is_empty());
    let ev = fleet.tick(&mut st, "a", None, t + 172_800_300);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].event.violation_event_type, T::AlarmInvalidated);
    assert!(fleet.active_violations(&st, "a").is_empty());
}

#[test]
fn a_thing_state_through_its_blob_continues_the_same_episode() {
    let fleet = fleet_of(P90);
    let mut st = fleet.new_thing_state();
    let t = 1_700_000_100_000;
    let first = fleet.evaluate_report(&mut st, "a", &report(5), t);
    let blob = serde_json::to_vec(&st).unwrap();
    let mut back: ThingState = serde_json::from_slice(&blob).unwrap();
    assert_eq!(back, st);
    let mut ok = report(5);
    ok.tcp_ports = Some(PortList {
        ports: vec![22],
        total: None,
    });
    let cleared = fleet.evaluate_report(&mut back, "a", &ok, t + 300_000);
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].event.violation_event_type, T::AlarmCleared);
    assert_eq!(cleared[0].event.violation_id, first[0].event.violation_id);
    // Restored definitions are shared again with the compiled profiles after the first use.
    let c = &fleet.set.compiled;
    assert!(back
        .slots
        .iter()
        .zip(c)
        .all(|(s, c)| Arc::ptr_eq(&s.state.definition, &c.behavior)));
}

#[test]
fn a_reload_that_changes_a_behavior_invalidates_its_episode_on_the_next_report() {
    let mut fleet = fleet_of(P90);
    let mut st = fleet.new_thing_state();
    let t = 1_700_000_100_000;
    let first = fleet.evaluate_report(&mut st, "a", &report(5), t);
    let changed = P90.replace("[22, 443]", "[22, 443, 8443]");
    let p: SecurityProfile = serde_json::from_str(&changed).unwrap();
    fleet.reconfigure(&[p], &ValidationContext::new(vec![], vec![]));
    let ev = fleet.evaluate_report(&mut st, "a", &report(5), t + 300_000);
    let kinds: Vec<T> = ev.iter().map(|e| e.event.violation_event_type).collect();
    assert_eq!(kinds, vec![T::AlarmInvalidated, T::InAlarm]);
    assert_eq!(ev[0].event.violation_id, first[0].event.violation_id);
    assert_ne!(ev[1].event.violation_id, first[0].event.violation_id);
    assert_eq!(
        ev[0].event.violation_event_time,
        (t + 300_000) as f64 / 1000.0
    );
}

#[test]
fn report_time_is_a_plausible_report_id_else_the_arrival() {
    let arrival = 1_700_000_000_500;
    assert_eq!(report_time(Some(1_699_999_000), arrival), 1_699_999_000_000);
    assert_eq!(report_time(Some(1_700_000_300), arrival), 1_700_000_300_000);
    assert_eq!(
        report_time(Some(1_700_000_301), arrival),
        arrival,
        "too far ahead"
    );
    assert_eq!(report_time(Some(42), arrival), arrival, "a counter");
    assert_eq!(report_time(Some(1_700_000_000_000), arrival), arrival, "ms");
    assert_eq!(report_time(None, arrival), arrival);
}

#[test]
fn a_repeated_report_id_of_a_thing_is_a_duplicate() {
    let fleet = fleet_of(P90);
    let bad = r#""met":{"tp":{"pts":[{"pt":8080}],"t":1}}"#;
    let good = r#""met":{"tp":{"pts":[{"pt":22}],"t":1}}"#;
    let t = T0 + 10;
    let input = [
        line(t, "a", t, bad),
        line(t + 300, "a", t + 300, good),
        // The answer was lost: the device sends its first report again.
        line(t + 301, "a", t, bad),
        line(t + 301, "b", t, bad),
    ]
    .join("\n");
    let run = replay_fleet(&input, &fleet, 10, true).unwrap();
    let got: Vec<(&str, T)> = run
        .events
        .iter()
        .map(|e| (e.event.thing_name.as_str(), e.event.violation_event_type))
        .collect();
    assert_eq!(
        got,
        vec![("a", T::InAlarm), ("b", T::InAlarm), ("a", T::AlarmCleared)]
    );
    assert!(run.notes.iter().any(|n| n.contains("duplicate report_id")));
}

#[test]
fn bad_fleet_lines_name_their_line() {
    let fleet = fleet_of(P90);
    let err = |input: &str| replay_fleet(input, &fleet, 10, false).unwrap_err();
    assert!(matches!(
        err("{\"time\":1,"),
        ReplayError::Json { line: 1, .. }
    ));
    let e = err("\n{\"time\":1,\"report\":{\"met\":{}}}");
    assert!(matches!(e, ReplayError::BadLine { line: 2, .. }), "{e}");
    assert!(e.to_string().contains("\"thing\""), "{e}");
    let e = err("{\"time\":1,\"thing\":\"a/b\",\"report\":{\"met\":{}}}");
    assert!(e.to_string().contains("thing \"a/b\""), "{e}");
    let e = err("{\"time\":1,\"thing\":\"a\",\"tick\":{}}");
    assert!(e.to_string().contains("unexpected key \"tick\""), "{e}");
    let e = err("{\"time\":1,\"thing\":\"a\",\"report\":{\"cmet\":{\"x\":{\"number\":1}}}}");
    assert!(matches!(e, ReplayError::Report { line: 1, .. }), "{e}");
    let gap = format!(
        "{}\n{}",
        line(T0, "a", 1, &bytes_out(1)),
        line(T0 + 32 * 86_400, "a", 2, &bytes_out(1))
    );
    assert!(err(&gap).to_string().contains("31 days"));
}

#[test]
fn a_thing_state_with_ten_behaviors_stays_under_eight_kib() {
    // The bench's ten behaviors (benches/detect.rs), 3600 s windows filled by 12 reports.
    let behaviors = [
        r#"{"name":"Out","metric":"aws:all-bytes-out","criteria":{"comparisonOperator":"less-than","value":{"count":100000000},"durationSeconds":3600}}"#,
        r#"{"name":"Est","metric":"aws:num-established-tcp-connections","criteria":{"comparisonOperator":"greater-than-equals","value":{"count":1},"durationSeconds":3600}}"#,
        r#"{"name":"Tcp","metric":"aws:listening-tcp-ports","criteria":{"comparisonOperator":"in-port-set","value":{"ports":[22,80,443]}}}"#,
        r#"{"name":"Udp","metric":"aws:listening-udp-ports","criteria":{"comparisonOperator":"not-in-port-set","value":{"ports":[23,2323]}}}"#,
        r#"{"name":"Dst","metric":"aws:destination-ip-addresses","criteria":{"comparisonOperator":"in-cidr-set","value":{"cidrs":["10.0.0.0/8"]}}}"#,
        r#"{"name":"Bat","metric":"battery","criteria":{"comparisonOperator":"greater-than","value":{"number":20},"durationSeconds":3600}}"#,
        r#"{"name":"Tags","metric":"tags","criteria":{"comparisonOperator":"in-set","value":{"strings":["a","b","c"]}}}"#,
        r#"{"name":"InP90","metric":"aws:all-bytes-in","criteria":{"comparisonOperator":"less-than-equals","statisticalThreshold":{"statistic":"p90"},"durationSeconds":3600}}"#,
        r#"{"name":"PktP99","metric":"aws:all-packets-out","criteria":{"comparisonOperator":"less-than-equals","statisticalThreshold":{"statistic":"p99"},"durationSeconds":3600}}"#,
        r#"{"name":"Sent","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than-equals","value":{"count":1000},"durationSeconds":3600}}"#,
    ]
    .join(",");
    let p: SecurityProfile = serde_json::from_str(&format!(
        r#"{{"securityProfileName":"P","behaviors":[{behaviors}]}}"#
    ))
    .unwrap();
    let m = |n: &str, t: &str| -> CustomMetric {
        serde_json::from_str(&format!(r#"{{"metricName":"{n}","metricType":"{t}"}}"#)).unwrap()
    };
    let ctx = ValidationContext::new(
        vec![],
        vec![m("battery", "number"), m("tags", "string-list")],
    );
    let fleet = FleetDetect::new(&[p], &ctx);
    assert_eq!(fleet.evaluable_behaviors(), 10, "{:?}", fleet.diagnostics());
    let mut st = fleet.new_thing_state();
    for i in 1..=12 {
        let mut r = report(2000);
        r.custom = vec![
            ("battery".into(), CustomValue::Number(50.0)),
            ("tags".into(), CustomValue::StringList(vec!["a".into()])),
        ];
        fleet.evaluate_report(&mut st, "thing-000001", &r, i * 300_000);
    }
    let bytes = st.resident_bytes();
    assert!(bytes <= 8192, "{bytes} bytes");
}

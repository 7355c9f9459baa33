//! Benchmarks for `detect`: one evaluation tick of 100 profiles × 10 behaviors (every operator
//! kind, 3600 s windows at 300 s reports), and a 30-day replay of 5-minute reports against 50
//! behaviors. Also prints the memory held per behavior state.
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use defender_agent::custom_metric::CustomValue;
use defender_agent::detect::engine::BehaviorState;
use defender_agent::detect::{
    replay, CustomMetric, DetectEngine, DeviceReport, EngineSettings, Established, NetworkDeltas,
    PortList, SecurityProfile, TrafficLog, TrafficRecord, ValidationContext,
};

const TICK: i64 = 300_000;

fn behaviors() -> Vec<String> {
    [
        r#"{"name":"Out","metric":"aws:all-bytes-out","criteria":{"comparisonOperator":"less-than","value":{"count":100000000},"durationSeconds":3600}}"#,
        r#"{"name":"Est","metric":"aws:num-established-tcp-connections","criteria":{"comparisonOperator":"greater-than-equals","value":{"count":1},"durationSeconds":3600}}"#,
        r#"{"name":"Tcp","metric":"aws:listening-tcp-ports","criteria":{"comparisonOperator":"in-port-set","value":{"ports":[22,80,443]}}}"#,
        r#"{"name":"Udp","metric":"aws:listening-udp-ports","criteria":{"comparisonOperator":"not-in-port-set","value":{"ports":[23,2323]}}}"#,
        r#"{"name":"Dst","metric":"aws:destination-ip-addresses","criteria":{"comparisonOperator":"in-cidr-set","value":{"cidrs":["10.0.0.0/8","192.168.0.0/16","2001:db8::/32"]}}}"#,
        r#"{"name":"Bat","metric":"battery","criteria":{"comparisonOperator":"greater-than","value":{"number":20},"durationSeconds":3600}}"#,
        r#"{"name":"Tags","metric":"tags","criteria":{"comparisonOperator":"in-set","value":{"strings":["a","b","c"]}}}"#,
        r#"{"name":"Codes","metric":"codes","criteria":{"comparisonOperator":"not-in-set","value":{"numbers":[13,666]}}}"#,
        r#"{"name":"Peers","metric":"peers","criteria":{"comparisonOperator":"not-in-cidr-set","value":{"cidrs":["12.8.0.0/16"]}}}"#,
        r#"{"name":"Sent","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than-equals","value":{"count":1000},"durationSeconds":3600}}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn ctx() -> ValidationContext {
    let m = |n: &str, t: &str| -> CustomMetric {
        serde_json::from_str(&format!(r#"{{"metricName":"{n}","metricType":"{t}"}}"#)).unwrap()
    };
    ValidationContext::new(
        vec![],
        vec![
            m("battery", "number"),
            m("tags", "string-list"),
            m("codes", "number-list"),
            m("peers", "ip-address-list"),
        ],
    )
}

fn profiles(n: usize) -> Vec<SecurityProfile> {
    let b = behaviors().join(",");
    (0..n)
        .map(|i| {
            serde_json::from_str(&format!(
                r#"{{"securityProfileName":"P{i}","behaviors":[{b}]}}"#
            ))
            .unwrap()
        })
        .collect()
}

fn report(i: i64) -> DeviceReport {
    DeviceReport {
        network: Some(NetworkDeltas {
            bytes_in: 1000 + i as u64 % 7,
            bytes_out: 2000,
            packets_in: 10,
            packets_out: 20,
        }),
        tcp_ports: Some(PortList {
            ports: vec![22, 443],
            total: Some(2),
        }),
        udp_ports: Some(PortList {
            ports: vec![53, 67],
            total: None,
        }),
        established: Some(Established {
            remote_ips: vec!["10.1.2.3".parse().unwrap(), "192.168.1.9".parse().unwrap()],
            total: Some(2),
        }),
        custom: vec![
            (
                "battery".into(),
                CustomValue::Number(50.0 + (i % 10) as f64),
            ),
            (
                "tags".into(),
                CustomValue::StringList(vec!["a".into(), "b".into()]),
            ),
            ("codes".into(), CustomValue::NumberList(vec![1.0, 2.0])),
            (
                "peers".into(),
                CustomValue::IpList(vec!["10.0.0.1".parse().unwrap()]),
            ),
        ],
    }
}

fn tick(c: &mut Criterion) {
    let ctx = ctx();
    let mut e = DetectEngine::new(EngineSettings::new("t1"), &profiles(100), &ctx);
    assert_eq!(e.evaluable_behaviors(), 1000);
    let mut log = TrafficLog::new("t1");
    // Fill the 3600 s windows first (12 reports at 300 s).
    let mut now = 0;
    for i in 1..=12 {
        now = i * TICK;
        log.record(
            now - 1000,
            TrafficRecord::Publish {
                topic: "a/b".into(),
                bytes: 100,
            },
        );
        e.evaluate_report(&report(i), now);
        e.evaluate_cloud(&log, now);
    }
    let sizes: Vec<usize> = e
        .state()
        .behaviors
        .values()
        .flat_map(|m| m.values())
        .map(BehaviorState::heap_bytes)
        .collect();
    eprintln!(
        "memory per behavior state: size_of = {} bytes, heap mean = {} bytes, heap max = {} bytes ({} states)",
        std::mem::size_of::<BehaviorState>(),
        sizes.iter().sum::<usize>() / sizes.len().max(1),
        sizes.iter().max().copied().unwrap_or(0),
        sizes.len()
    );
    let mut i = 12;
    c.bench_function("detect/tick_100_profiles_x_10_behaviors", |b| {
        b.iter(|| {
            i += 1;
            now += TICK;
            log.record(
                now - 1000,
                TrafficRecord::Publish {
                    topic: "a/b".into(),
                    bytes: 100,
                },
            );
            let mut n = e.evaluate_report(black_box(&report(i)), now).len();
            n += e.evaluate_cloud(&log, now).len();
            black_box(n)
        })
    });
}

fn replay_30_days(c: &mut Criterion) {
    let ctx = ctx();
    let e = DetectEngine::new(EngineSettings::new("t1"), &profiles(5), &ctx);
    assert_eq!(e.evaluable_behaviors(), 50);
    let mut input = String::new();
    for i in 1..=8640i64 {
        let t = 1_700_000_000 + i * 300;
        let bat = 50 + i % 10;
        input.push_str(&format!(
            r#"{{"time":{t},"report":{{"hed":{{"rid":{t},"v":"1.0"}},"met":{{"tp":{{"pts":[{{"pt":22}},{{"pt":443}}],"t":2}},"up":{{"pts":[{{"pt":53}}]}},"ns":{{"bi":1000,"bo":2000,"pi":10,"po":20}},"tc":{{"ec":{{"cs":[{{"rad":"10.1.2.3:443"}}],"t":1}}}}}},"cmet":{{"battery":[{{"number":{bat}}}],"tags":[{{"string_list":["a"]}}],"codes":[{{"number_list":[1]}}],"peers":[{{"ip_list":["10.0.0.1"]}}]}}}}}}"#
        ));
        input.push('\n');
        input.push_str(&format!(
            r#"{{"time":{},"publish":{{"topic":"a/b","bytes":100}}}}"#,
            t + 1
        ));
        input.push('\n');
    }
    let mut g = c.benchmark_group("detect");
    g.sample_size(10);
    g.bench_function("replay_30_days_8640_reports_50_behaviors", |b| {
        b.iter(|| {
            let run = replay::replay(black_box(&input), e.clone(), "t1").unwrap();
            black_box(run.events.len())
        })
    });
    g.finish();
}

criterion_group!(benches, tick, replay_30_days);
criterion_main!(benches);

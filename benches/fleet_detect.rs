//! Benchmarks for the fleet's Detect (`detect::fleet`): the statistical thresholds job over
//! 100,000 things (10 behaviors per profile, 2 of them statistical), the pure percentile over
//! 100,000 values, one report of one thing, and the memory a thing's state holds (printed:
//! `ThingState::resident_bytes`, and the bytes really allocated, counted by this binary's
//! allocator).
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use defender_agent::custom_metric::CustomValue;
use defender_agent::detect::fleet::{threshold_of, FleetDetect, ThingState};
use defender_agent::detect::{
    CustomMetric, DeviceReport, Established, NetworkDeltas, PortList, SecurityProfile,
    ValidationContext,
};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const TICK: i64 = 300_000;
const THINGS: usize = 100_000;

/// Ten behaviors of every kind, two statistical (p90 bytes in, p99 packets out over 3600 s).
fn fleet() -> FleetDetect {
    let b = [
        r#"{"name":"Out","metric":"aws:all-bytes-out","criteria":{"comparisonOperator":"less-than","value":{"count":100000000},"durationSeconds":3600}}"#,
        r#"{"name":"Est","metric":"aws:num-established-tcp-connections","criteria":{"comparisonOperator":"greater-than-equals","value":{"count":1},"durationSeconds":3600}}"#,
        r#"{"name":"Tcp","metric":"aws:listening-tcp-ports","criteria":{"comparisonOperator":"in-port-set","value":{"ports":[22,80,443]}}}"#,
        r#"{"name":"Udp","metric":"aws:listening-udp-ports","criteria":{"comparisonOperator":"not-in-port-set","value":{"ports":[23,2323]}}}"#,
        r#"{"name":"Dst","metric":"aws:destination-ip-addresses","criteria":{"comparisonOperator":"in-cidr-set","value":{"cidrs":["10.0.0.0/8","192.168.0.0/16","2001:db8::/32"]}}}"#,
        r#"{"name":"Bat","metric":"battery","criteria":{"comparisonOperator":"greater-than","value":{"number":20},"durationSeconds":3600}}"#,
        r#"{"name":"Tags","metric":"tags","criteria":{"comparisonOperator":"in-set","value":{"strings":["a","b","c"]}}}"#,
        r#"{"name":"Codes","metric":"codes","criteria":{"comparisonOperator":"not-in-set","value":{"numbers":[13,666]}}}"#,
        r#"{"name":"InP90","metric":"aws:all-bytes-in","criteria":{"comparisonOperator":"less-than-equals","statisticalThreshold":{"statistic":"p90"},"durationSeconds":3600}}"#,
        r#"{"name":"PktP99","metric":"aws:all-packets-out","criteria":{"comparisonOperator":"less-than-equals","statisticalThreshold":{"statistic":"p99"},"durationSeconds":3600}}"#,
    ]
    .join(",");
    let p: SecurityProfile = serde_json::from_str(&format!(
        r#"{{"securityProfileName":"P","behaviors":[{b}]}}"#
    ))
    .unwrap();
    let m = |n: &str, t: &str| -> CustomMetric {
        serde_json::from_str(&format!(r#"{{"metricName":"{n}","metricType":"{t}"}}"#)).unwrap()
    };
    let ctx = ValidationContext::new(
        vec![],
        vec![
            m("battery", "number"),
            m("tags", "string-list"),
            m("codes", "number-list"),
        ],
    );
    let f = FleetDetect::new(&[p], &ctx);
    assert_eq!(f.evaluable_behaviors(), 10);
    f
}

fn report(thing: usize, i: i64) -> DeviceReport {
    DeviceReport {
        network: Some(NetworkDeltas {
            bytes_in: 1000 + (thing as u64 * 7919 + i as u64) % 5000,
            bytes_out: 2000,
            packets_in: 10,
            packets_out: 20 + thing as u64 % 100,
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
        ],
    }
}

/// A thing after `reports` reports 300 s apart (the 3600 s windows full at 12).
fn thing_state(f: &FleetDetect, thing: usize, reports: i64) -> ThingState {
    let mut st = f.new_thing_state();
    let name = format!("thing-{thing:06}");
    for i in 1..=reports {
        f.evaluate_report(&mut st, &name, &report(thing, i), i * TICK);
    }
    st
}

fn memory() {
    let f = fleet();
    let st = thing_state(&f, 1, 12);
    // Really allocated: 1000 things built while counting, their reports' garbage freed.
    let before = LIVE.load(Ordering::Relaxed);
    let states: Vec<ThingState> = (0..1000).map(|t| thing_state(&f, t, 12)).collect();
    let after = LIVE.load(Ordering::Relaxed);
    // The Vec holds the ThingStates themselves; the rest is what they own.
    let per_thing = (after - before) as usize / states.len();
    eprintln!(
        "fleet memory per thing (10 behaviors, 3600 s windows full): resident_bytes = {} bytes, allocated = {} bytes (incl. the {}-byte ThingState), blob (JSON) = {} bytes",
        st.resident_bytes(),
        per_thing,
        std::mem::size_of::<ThingState>(),
        serde_json::to_vec(&st).unwrap().len()
    );
    black_box(states);
}

fn thresholds(c: &mut Criterion) {
    memory();
    let f = fleet();
    // 100,000 things with two reports each: data in the statistical windows at 600 s.
    let states: Vec<ThingState> = (0..THINGS).map(|t| thing_state(&f, t, 2)).collect();
    let th = f.compute_thresholds(&states, 2 * TICK, 10);
    assert_eq!(th.len(), 2);
    assert!(th
        .iter()
        .all(|t| t.population == THINGS && t.value.is_some()));
    let mut g = c.benchmark_group("fleet");
    g.sample_size(10);
    g.bench_function("compute_thresholds_100000_things_2_statistical", |b| {
        b.iter(|| black_box(f.compute_thresholds(black_box(&states), 2 * TICK, 10)))
    });
    let values: Vec<f64> = (0..THINGS)
        .map(|t| ((t as u64 * 7919) % 100_003) as f64)
        .collect();
    g.bench_function("threshold_of_100000_values_p90", |b| {
        b.iter_batched(
            || values.clone(),
            |mut v| black_box(threshold_of(&mut v, 90.0, 10)),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn evaluate(c: &mut Criterion) {
    let f = fleet();
    let mut st = thing_state(&f, 7, 12);
    let mut i = 12;
    c.bench_function("fleet/evaluate_report_10_behaviors", |b| {
        b.iter(|| {
            i += 1;
            black_box(f.evaluate_report(
                &mut st,
                "thing-000007",
                black_box(&report(7, i)),
                i * TICK,
            ))
        })
    });
}

criterion_group!(benches, thresholds, evaluate);
criterion_main!(benches);

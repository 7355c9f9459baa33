//! Benchmarks for `report`: observe + build + encode one report with 50 listening ports and 50
//! connections (goal: < 10 µs for CBOR short keys), plus encode alone, decode, and decode +
//! validate in one call as the fleet service does it (goal: <= 20 µs, issue 13).
//!
//! Run: `cargo bench --bench report -- --warm-up-time 1 --measurement-time 3`
//!
//! Measured in thread CPU time, not wall time: the build machine is shared by several agents, and
//! wall time there mostly measures the scheduler. On an idle machine the two agree.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion};
use defender_agent::custom_metric::CustomValue;
use defender_agent::report::validate::validate;
use defender_agent::report::{
    decode, decode_validated, encode, Format, KeySet, ReportBuilder, Settings,
};
use defender_agent::sample::{Connection, InterfaceCounters, ListeningPort, Sample};

/// A busy gateway: 50 TCP and 10 UDP listeners, 50 established connections (a third IPv6),
/// two interfaces, four custom metrics.
fn sample(step: u64) -> Sample {
    let tcp_listen = (0..50u16)
        .map(|i| ListeningPort {
            port: 1000 + i * 7,
            interface: (i % 3 != 0).then(|| if i % 2 == 0 { "eth0" } else { "wlan0" }.to_owned()),
        })
        .collect();
    let udp_listen = (0..10u16)
        .map(|i| ListeningPort {
            port: 5000 + i,
            interface: None,
        })
        .collect();
    let connections = (0..50u16)
        .map(|i| {
            let ip = if i % 3 == 0 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + i))
            } else {
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, (i % 250) as u8))
            };
            Connection {
                remote: SocketAddr::new(ip, 443 + i),
                local_port: 40000 + i,
                local_interface: Some("eth0".to_owned()),
            }
        })
        .collect();
    let iface = |name: &str, scale: u64| InterfaceCounters {
        name: name.to_owned(),
        bytes_in: 5_000_000_000 + step * 120_000 * scale,
        bytes_out: 7_000_000_000 + step * 98_000 * scale,
        packets_in: 4_000_000 + step * 900 * scale,
        packets_out: 3_000_000 + step * 800 * scale,
    };
    Sample {
        interfaces: Some(vec![iface("eth0", 2), iface("wlan0", 1)]),
        tcp_listen: Some(tcp_listen),
        udp_listen: Some(udp_listen),
        connections: Some(connections),
        custom: vec![
            ("cpu_usage".to_owned(), CustomValue::Number(12.5)),
            (
                "temperatures".to_owned(),
                CustomValue::NumberList(vec![41.0, 43.5]),
            ),
            (
                "wifi_ssids".to_owned(),
                CustomValue::StringList(vec!["plant-a".to_owned(), "plant-b".to_owned()]),
            ),
            (
                "gateways".to_owned(),
                CustomValue::IpList(vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]),
            ),
        ],
    }
}

/// CPU time consumed by the benchmarking thread (`CLOCK_THREAD_CPUTIME_ID`).
struct ThreadCpu;

static WALL: WallTime = WallTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a Linux constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Same unit (nanoseconds) as wall time, so its formatter prints µs/ms correctly.
        WALL.formatter()
    }
}

fn bench_build_and_encode(c: &mut Criterion<ThreadCpu>) {
    let settings = Settings::default();
    let s0 = sample(0);
    let s1 = sample(1);
    let mut group = c.benchmark_group("report");
    for (name, format, keys) in [
        (
            "observe_build_encode/cbor_short",
            Format::Cbor,
            KeySet::Short,
        ),
        ("observe_build_encode/cbor_long", Format::Cbor, KeySet::Long),
        (
            "observe_build_encode/json_short",
            Format::Json,
            KeySet::Short,
        ),
        ("observe_build_encode/json_long", Format::Json, KeySet::Long),
    ] {
        // Steady state: a baseline exists, one sample per report, network_stats present.
        let mut builder = ReportBuilder::new(&settings);
        builder.observe(&s0);
        let mut id = 1_717_171_717u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                builder.observe(black_box(&s1));
                id += 1;
                let built = builder.build(id);
                encode(&built.report, format, keys)
            })
        });
    }

    let mut builder = ReportBuilder::new(&settings);
    builder.observe(&s0);
    builder.observe(&s1);
    let report = builder.build(1_717_171_717).report;
    for (name, format, keys) in [
        ("encode/cbor_short", Format::Cbor, KeySet::Short),
        ("encode/json_long", Format::Json, KeySet::Long),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| encode(black_box(&report), format, keys))
        });
    }
    let cbor = encode(&report, Format::Cbor, KeySet::Short);
    let json = encode(&report, Format::Json, KeySet::Long);
    group.bench_function("decode/cbor_short", |b| {
        b.iter(|| decode(black_box(&cbor), Format::Cbor))
    });
    group.bench_function("decode/json_long", |b| {
        b.iter(|| decode(black_box(&json), Format::Json))
    });
    for (format, keys) in [
        (Format::Cbor, KeySet::Short),
        (Format::Cbor, KeySet::Long),
        (Format::Json, KeySet::Short),
        (Format::Json, KeySet::Long),
    ] {
        let bytes = encode(&report, format, keys);
        // The fleet service's path: one call, every rule of `validate`, and the report.
        group.bench_function(format!("decode_validate/{format}_{keys}"), |b| {
            b.iter(|| decode_validated(black_box(&bytes), format))
        });
        // What it did before: validate, then decode (two readings).
        group.bench_function(format!("validate_then_decode/{format}_{keys}"), |b| {
            b.iter(|| {
                let problems = validate(black_box(&bytes), Some(format));
                (problems, decode(black_box(&bytes), format))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench_build_and_encode
}
criterion_main!(benches);

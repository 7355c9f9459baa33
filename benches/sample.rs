//! Benchmarks for `collect`: one full sample (network + sockets + 3 built-in custom metrics), idle
//! and with 5,000 listening sockets + 1,000 established loopback connections, over netlink and over
//! procfs; and `parse_net_dev` alone. Goals: ≤ 1 ms idle, ≤ 10 ms loaded.
//!
//! Run: `cargo bench --bench sample -- --warm-up-time 1 --measurement-time 3`
use std::hint::black_box;
use std::net::{TcpListener, TcpStream};

use criterion::{criterion_group, criterion_main, Criterion};
use defender_agent::collect::{
    parse_net_dev, Builtin, Collectors, CustomMetricSettings, CustomSource, HostPaths, Sampler,
    Settings, SocketSource,
};
use defender_agent::custom_metric::CustomMetricType;

const LISTENERS: usize = 5_000;
const CONNECTIONS: usize = 1_000;

fn collectors(source: SocketSource) -> Collectors {
    collectors_with(source, Settings::default(), true)
}

fn collectors_with(source: SocketSource, base: Settings, builtins: bool) -> Collectors {
    let builtin = |name: &str, b| CustomMetricSettings {
        name: name.into(),
        metric_type: CustomMetricType::Number,
        source: CustomSource::Builtin(b),
    };
    Collectors::new(Settings {
        socket_source: source,
        custom: if builtins {
            vec![
                builtin("cpu_usage", Builtin::CpuUsagePercent),
                builtin("memory_used", Builtin::MemoryUsedPercent),
                builtin("load_1m", Builtin::LoadAverage),
            ]
        } else {
            Vec::new()
        },
        ..base
    })
    .expect("valid settings")
}

fn bench_samples(c: &mut Criterion, label: &str) {
    for (name, source) in [
        ("netlink", SocketSource::Netlink),
        ("procfs", SocketSource::Procfs),
    ] {
        let collectors = collectors(source);
        let (_, errors) = collectors.sample();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        c.bench_function(&format!("sample/{label}/{name}"), |b| {
            b.iter(|| black_box(collectors.sample()))
        });
    }
}

/// Raises the soft open-files limit to the hard one (the loaded case needs ~7,000 descriptors).
fn raise_nofile() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn sample_idle(c: &mut Criterion) {
    bench_samples(c, "idle");
    // Where the time goes: sockets alone (kernel table walks), and the user-space work on a
    // fixture tree (no kernel walk) without and with the 3 built-ins.
    for (name, source) in [
        ("netlink", SocketSource::Netlink),
        ("procfs", SocketSource::Procfs),
    ] {
        let sockets_only = collectors_with(source, Settings::default(), false);
        c.bench_function(&format!("sample/idle-no-custom/{name}"), |b| {
            b.iter(|| black_box(sockets_only.sample()))
        });
    }
    let fixture = Settings {
        paths: HostPaths {
            proc_root: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc/gateway").into(),
            ..HostPaths::default()
        },
        ..Settings::default()
    };
    for (name, builtins) in [("fixture", false), ("fixture+3-builtins", true)] {
        let collectors = collectors_with(SocketSource::Procfs, fixture.clone(), builtins);
        c.bench_function(&format!("sample/{name}"), |b| {
            b.iter(|| black_box(collectors.sample()))
        });
    }
}

fn sample_loaded(c: &mut Criterion) {
    raise_nofile();
    let listeners: Vec<TcpListener> = (0..LISTENERS)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind (raise RLIMIT_NOFILE?)"))
        .collect();
    let target = listeners[0].local_addr().expect("local addr");
    let mut connections = Vec::with_capacity(CONNECTIONS * 2);
    for _ in 0..CONNECTIONS {
        let client = TcpStream::connect(target).expect("connect");
        let (server, _) = listeners[0].accept().expect("accept");
        connections.push(client);
        connections.push(server);
    }
    bench_samples(c, "loaded");
    drop(connections);
    drop(listeners);
}

fn net_dev_parse(c: &mut Criterion) {
    let mut text = String::from(
        "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
    );
    for i in 0..8 {
        text.push_str(&format!(
            "  eth{i}: 9000000000 7000000 0 0 0 0 0 12 8000000000 6000000 0 0 0 0 0 0\n"
        ));
    }
    c.bench_function("parse_net_dev/8_interfaces", |b| {
        b.iter(|| black_box(parse_net_dev(black_box(&text))))
    });
}

criterion_group!(benches, net_dev_parse, sample_idle, sample_loaded);
criterion_main!(benches);

//! The fleet's ingest throughput, end to end: one `defender-fleet serve` (this build's binary,
//! bench profile), a mosquitto on the same machine (plain MQTT on 127.0.0.1: TLS is not what
//! is measured), and this generator: N things publishing real reports (the agent's own
//! encoder) with QoS 1, R rounds of one report per thing, report ids 300 s apart (so the
//! default throttle of one report per 300 s passes and every report is evaluated at its own
//! time), and a subscriber counting the answers. Small reports conform to the profile;
//! big ones (50 ports, 50 connections) keep one behavior in alarm. Profiles: 10 behaviors, 2 statistical (the
//! set of `benches/fleet_detect.rs`); thresholds recomputed every 5 s, so after the first
//! round the statistical behaviors are evaluated against a fleet threshold.
//!
//! Run (needs mosquitto in /usr/sbin; PostgreSQL from Debian's `postgresql` for the pg runs):
//!
//! ```text
//! cargo bench -p defender-fleet --bench ingest -- [--engine sqlite|postgres|both]
//!     [--things 10000] [--rounds 6] [--report small|big] [--format json|cbor]
//!     [--window 768] [--publishers 2]
//! ```
//!
//! `DEFENDER_FLEET_BIN=/path/to/defender-fleet` measures another build of the service.
//!
//! A closed loop: at most `--window` reports are unanswered at any time (devices wait for
//! their answer; the window stays under the broker's and the service's queues, so nothing is
//! dropped and every report is answered once). Printed: reports/s overall (first publish to
//! last answer) and steady (between the 10 % and 90 % answers), the CPU seconds of the
//! service, the broker, the database and this generator (they share the machine's cores),
//! the machine's load, and the service's resident memory before and after (per thing).
//! PostgreSQL runs with `fsync` on (a throwaway server as the tests start it, but durable);
//! SQLite is `[store] engine = "sqlite"` in a temporary directory on the same disk.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use defender_agent::custom_metric::CustomValue;
use defender_agent::report::{
    self, ConnectionList, Format, KeySet, Metrics, MetricsReport, NetworkStats, PortList,
};
use defender_agent::sample::{Connection, ListeningPort};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::Notify;

mod support;
use support::{free_port, Pg};

/// The service: this build's, or `$DEFENDER_FLEET_BIN` (to measure another build, e.g. a
/// baseline).
fn fleet_bin() -> String {
    std::env::var("DEFENDER_FLEET_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_defender-fleet").to_owned())
}

/// Ten behaviors, two statistical (the set of `benches/fleet_detect.rs`).
const PROFILE: &str = r#"{"securityProfileName":"Bench","behaviors":[
{"name":"Out","metric":"aws:all-bytes-out","criteria":{"comparisonOperator":"less-than","value":{"count":100000000},"durationSeconds":3600}},
{"name":"Est","metric":"aws:num-established-tcp-connections","criteria":{"comparisonOperator":"greater-than-equals","value":{"count":1},"durationSeconds":3600}},
{"name":"Tcp","metric":"aws:listening-tcp-ports","criteria":{"comparisonOperator":"in-port-set","value":{"ports":[22,80,443]}}},
{"name":"Udp","metric":"aws:listening-udp-ports","criteria":{"comparisonOperator":"not-in-port-set","value":{"ports":[23,2323]}}},
{"name":"Dst","metric":"aws:destination-ip-addresses","criteria":{"comparisonOperator":"in-cidr-set","value":{"cidrs":["10.0.0.0/8","192.168.0.0/16","2001:db8::/32"]}}},
{"name":"Bat","metric":"battery","criteria":{"comparisonOperator":"greater-than","value":{"number":20},"durationSeconds":3600}},
{"name":"Tags","metric":"tags","criteria":{"comparisonOperator":"in-set","value":{"strings":["a","b","c"]}}},
{"name":"Codes","metric":"codes","criteria":{"comparisonOperator":"not-in-set","value":{"numbers":[13,666]}}},
{"name":"InP90","metric":"aws:all-bytes-in","criteria":{"comparisonOperator":"less-than-equals","statisticalThreshold":{"statistic":"p90"},"durationSeconds":3600}},
{"name":"PktP99","metric":"aws:all-packets-out","criteria":{"comparisonOperator":"less-than-equals","statisticalThreshold":{"statistic":"p99"},"durationSeconds":3600}}
]}"#;

#[derive(Debug, Clone)]
struct Args {
    engines: Vec<&'static str>,
    things: usize,
    rounds: usize,
    big: bool,
    format: Format,
    window: u64,
    publishers: usize,
}

fn args() -> Args {
    let mut a = Args {
        engines: vec!["sqlite"],
        things: 10_000,
        rounds: 6,
        big: false,
        format: Format::Json,
        window: 768,
        publishers: 2,
    };
    // `cargo test --all-targets` runs this without `--bench` (tests/run.sh does): then a small
    // run, as criterion's test mode, that proves the set-up works end to end.
    if !std::env::args().any(|a| a == "--bench") {
        a.things = 40;
        a.rounds = 2;
    }
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "--engine" => {
                a.engines = match v().as_str() {
                    "sqlite" => vec!["sqlite"],
                    "postgres" => vec!["postgres"],
                    "both" => vec!["sqlite", "postgres"],
                    o => panic!("--engine {o}: sqlite, postgres or both"),
                }
            }
            "--things" => a.things = v().parse().expect("--things N"),
            "--rounds" => a.rounds = v().parse().expect("--rounds N"),
            "--report" => {
                a.big = match v().as_str() {
                    "small" => false,
                    "big" => true,
                    o => panic!("--report {o}: small or big"),
                }
            }
            "--format" => {
                a.format = match v().as_str() {
                    "json" => Format::Json,
                    "cbor" => Format::Cbor,
                    o => panic!("--format {o}: json or cbor"),
                }
            }
            "--window" => a.window = v().parse().expect("--window N"),
            "--publishers" => a.publishers = v().parse().expect("--publishers N"),
            o => panic!("unknown argument {o}"),
        }
    }
    a.publishers = a.publishers.max(1);
    a.window = a.window.max(1);
    a
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} not listening on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// mosquitto tuned for a service that keeps up: queues large enough for the window (the
/// defaults are 20 in flight and 1000 queued per client).
fn start_broker(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nlog_type error\nlog_type warning\nmax_packet_size 200000\n\
             max_inflight_messages 1000\nmax_queued_messages 100000\nuser root\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
    let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("mosquitto (apt-get install -y mosquitto)");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn mosquitto");
    wait_port(port, "mosquitto");
    (Proc(child), port)
}

/// utime + stime of a process, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A process and its children (PostgreSQL's backends), CPU seconds.
fn tree_cpu_secs(root: u32) -> f64 {
    let mut total = cpu_secs(root);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
        if rest.split_whitespace().nth(1) == Some(&root.to_string()) {
            total += cpu_secs(pid);
        }
    }
    total
}

/// Busy CPU seconds of the whole machine (all processes, ours and others').
fn machine_busy_secs() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One thing's report of one round: the agent's shapes, values varying by thing and round
/// (a population for the percentiles). Small: 2 TCP ports, 2 UDP, 3 connections; big: 50
/// TCP ports, 10 UDP, 50 connections (the agent's busy gateway of `benches/report.rs`).
fn build_report(thing: usize, round: usize, report_id: u64, big: bool) -> MetricsReport {
    // Small: compliant (TCP 22 and 443 are in the profile's set); big: 48 ports outside it,
    // so the Tcp behavior is in alarm and the thing's active violation changes every report.
    let (tcp, udp, conns) = if big { (50, 10, 50) } else { (2, 2, 3) };
    let tcp_ports = (0..tcp)
        .map(|i: u16| ListeningPort {
            port: if i < 2 {
                [22, 443][i as usize]
            } else {
                1000 + i * 7
            },
            interface: (!i.is_multiple_of(3)).then(|| "eth0".to_owned()),
        })
        .collect();
    let udp_ports = (0..udp)
        .map(|i: u16| ListeningPort {
            port: 5000 + i,
            interface: None,
        })
        .collect();
    let connections = (0..conns)
        .map(|i: u16| {
            let ip = if i % 3 == 2 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + i))
            } else {
                IpAddr::V4(Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8))
            };
            Connection {
                remote: SocketAddr::new(ip, 443),
                local_port: 40000 + i,
                local_interface: Some("eth0".to_owned()),
            }
        })
        .collect();
    let t = thing as u64;
    MetricsReport {
        report_id,
        version: report::VERSION.to_owned(),
        metrics: Some(Metrics {
            listening_tcp_ports: Some(PortList {
                ports: tcp_ports,
                total: u64::from(tcp),
            }),
            listening_udp_ports: Some(PortList {
                ports: udp_ports,
                total: u64::from(udp),
            }),
            network_stats: Some(NetworkStats {
                bytes_in: 1000 + (t * 7919 + round as u64) % 5000,
                bytes_out: 2000,
                packets_in: 10,
                packets_out: 20 + t % 100,
            }),
            tcp_connections: Some(ConnectionList {
                connections,
                total: u64::from(conns),
            }),
        }),
        custom_metrics: vec![
            (
                "battery".into(),
                CustomValue::Number(50.0 + (round % 10) as f64),
            ),
            (
                "tags".into(),
                CustomValue::StringList(vec!["a".into(), "b".into()]),
            ),
            ("codes".into(), CustomValue::NumberList(vec![1.0, 2.0])),
        ],
    }
}

fn write_config(dir: &Path, port: u16, engine: &str, url: &str) -> PathBuf {
    let profiles = dir.join("profiles");
    let metrics = dir.join("custom-metrics");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::create_dir_all(&metrics).unwrap();
    std::fs::write(profiles.join("bench.json"), PROFILE).unwrap();
    for (n, t) in [
        ("battery", "number"),
        ("tags", "string-list"),
        ("codes", "number-list"),
    ] {
        std::fs::write(
            metrics.join(format!("{n}.json")),
            format!(r#"{{"metricName":"{n}","metricType":"{t}"}}"#),
        )
        .unwrap();
    }
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let store = if engine == "postgres" {
        format!("engine = \"postgres\"\nurl = {url:?}")
    } else {
        "engine = \"sqlite\"".to_owned()
    };
    let config = dir.join("fleet.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[mqtt]\nendpoint = \"127.0.0.1\"\nport = {port}\ntls = false\n\
             client_id = \"fleet-bench\"\n[store]\n{store}\n[detect]\nprofiles = [{:?}]\n\
             dimensions = []\ncustom_metrics = [{:?}]\nthresholds_interval_secs = 5\n",
            state.display().to_string(),
            profiles.display().to_string(),
            metrics.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(fleet_bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    config
}

fn mqtt(id: &str, port: u16) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(200_000, 200_000);
    o.set_inflight(1000);
    AsyncClient::new(o, 4096)
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    notify: Notify,
}

impl Counters {
    fn answered(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed) + self.rejected.load(Ordering::Relaxed)
    }
}

struct Outcome {
    total: u64,
    accepted: u64,
    rejected: u64,
    first_rejections: Vec<String>,
    elapsed: Duration,
    steady_rate: f64,
}

async fn generate(a: &Args, port: u16) -> Outcome {
    let c = Arc::new(Counters::default());
    let rejections = Arc::new(Mutex::new(Vec::new()));
    // The subscriber: every answer of every thing.
    let (sub, mut sub_loop) = mqtt("bench-answers", port);
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let marks = Arc::new(Mutex::new(Vec::<(u64, Instant)>::new()));
    let total = (a.things * a.rounds) as u64;
    {
        let c = c.clone();
        let rejections = rejections.clone();
        let marks = marks.clone();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            let step = (total / 10).max(1);
            loop {
                match sub_loop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(t) = subscribed_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic.ends_with("/accepted") {
                            c.accepted.fetch_add(1, Ordering::Relaxed);
                        } else {
                            c.rejected.fetch_add(1, Ordering::Relaxed);
                            let mut r = rejections.lock().unwrap();
                            if r.len() < 3 {
                                r.push(String::from_utf8_lossy(&p.payload).into_owned());
                            }
                        }
                        let n = c.answered();
                        if n % step == 0 {
                            marks.lock().unwrap().push((n, Instant::now()));
                        }
                        c.notify.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("answers subscriber: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
    sub.subscribe("$aws/things/+/defender/metrics/+/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    subscribed_rx.await.unwrap();

    // Report ids: one round every 300 s, the last round now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let first_id = now - 300 * a.rounds as u64;
    let suffix = match a.format {
        Format::Json => "json",
        Format::Cbor => "cbor",
    };
    let keys = match a.format {
        Format::Json => KeySet::Long,
        Format::Cbor => KeySet::Short,
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..a.publishers {
        let (client, mut ev) = mqtt(&format!("bench-pub-{p}"), port);
        tokio::spawn(async move {
            loop {
                if let Err(e) = ev.poll().await {
                    eprintln!("publisher: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        let c = c.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..a.rounds {
                let rid = first_id + 300 * round as u64;
                for thing in (p..a.things).step_by(a.publishers) {
                    loop {
                        let notified = c.notify.notified();
                        if c.published.load(Ordering::Relaxed) - c.answered() < a.window {
                            break;
                        }
                        // Woken by an answer; the timeout guards against a lost wake-up.
                        let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                    }
                    let payload =
                        report::encode(&build_report(thing, round, rid, a.big), a.format, keys);
                    c.published.fetch_add(1, Ordering::Relaxed);
                    client
                        .publish(
                            format!("$aws/things/bench-{thing:06}/defender/metrics/{suffix}"),
                            QoS::AtLeastOnce,
                            false,
                            payload,
                        )
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every answer, or 30 s without progress.
    let mut last = (c.answered(), Instant::now());
    while c.answered() < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let n = c.answered();
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            eprintln!("no answer for 30 s: {n} of {total} answered");
            break;
        }
    }
    let elapsed = last.1.duration_since(start);
    let marks = marks.lock().unwrap().clone();
    let at = |frac: u64| marks.iter().find(|(n, _)| *n * 10 >= total * frac).copied();
    let steady_rate = match (at(1), at(9)) {
        (Some((n1, t1)), Some((n9, t9))) if t9 > t1 => (n9 - n1) as f64 / (t9 - t1).as_secs_f64(),
        _ => 0.0,
    };
    Outcome {
        total,
        accepted: c.accepted.load(Ordering::Relaxed),
        rejected: c.rejected.load(Ordering::Relaxed),
        first_rejections: rejections.lock().map(|r| r.clone()).unwrap_or_default(),
        elapsed,
        steady_rate,
    }
}

fn run(a: &Args, engine: &str) {
    let dir = tempfile::Builder::new()
        .prefix("fleet-bench-")
        .tempdir()
        .unwrap();
    let (broker, port) = start_broker(dir.path());
    let pg = (engine == "postgres").then(Pg::start);
    let url = pg.as_ref().map(Pg::url).unwrap_or_default();
    let config = write_config(dir.path(), port, engine, &url);
    let log_path = dir.path().join("fleet.log");
    let fleet = Proc(
        Command::new(fleet_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("Subscribed.")
    {
        assert!(
            Instant::now() < deadline,
            "the service did not subscribe:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let fleet_pid = fleet.0.id();
    let broker_pid = broker.0.id();
    let pg_pid = pg.as_ref().and_then(Pg::postmaster);
    let rss_before = rss_kib(fleet_pid);
    let cpu = || {
        (
            cpu_secs(fleet_pid),
            cpu_secs(broker_pid),
            pg_pid.map_or(0.0, tree_cpu_secs),
            cpu_secs(std::process::id()),
            machine_busy_secs(),
        )
    };
    let before = cpu();
    let load_before = loadavg();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let o = rt.block_on(generate(a, port));
    let after = cpu();
    let rss_after = rss_kib(fleet_pid);
    let secs = o.elapsed.as_secs_f64();
    let answered = o.accepted + o.rejected;
    println!(
        "ingest/{engine}/{}/{}: {} things x {} rounds = {} reports, window {}, {} publishers",
        if a.big { "big" } else { "small" },
        if a.format == Format::Json {
            "json"
        } else {
            "cbor"
        },
        a.things,
        a.rounds,
        o.total,
        a.window,
        a.publishers
    );
    println!(
        "  answered {answered} (accepted {}, rejected {}) in {secs:.2} s: {:.0} reports/s overall, {:.0} reports/s steady (10%..90%)",
        o.accepted,
        o.rejected,
        answered as f64 / secs,
        o.steady_rate
    );
    println!(
        "  CPU s: service {:.2}, mosquitto {:.2}, postgres {:.2}, generator {:.2}; machine busy {:.2} of {:.2} ({} cores); load {load_before} -> {}",
        after.0 - before.0,
        after.1 - before.1,
        after.2 - before.2,
        after.3 - before.3,
        after.4 - before.4,
        secs * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg()
    );
    println!(
        "  service CPU per report: {:.0} µs (all processes of the run: {:.0} µs)",
        (after.0 - before.0) * 1e6 / answered.max(1) as f64,
        ((after.0 - before.0) + (after.1 - before.1) + (after.2 - before.2) + (after.3 - before.3))
            * 1e6
            / answered.max(1) as f64
    );
    println!(
        "  service RSS: {rss_before} KiB before, {rss_after} KiB after {} things: {:.0} bytes per thing",
        a.things,
        (rss_after as f64 - rss_before as f64) * 1024.0 / a.things as f64
    );
    if !o.first_rejections.is_empty() {
        println!("  first rejections: {:?}", o.first_rejections);
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    for l in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(5)
    {
        println!("  service: {l}");
    }
    drop(fleet);
    drop(pg);
    drop(broker);
}

fn main() {
    let a = args();
    for e in a.engines.clone() {
        run(&a, e);
    }
}

//! The tap against a real mosquitto: exact counts per scope and direction for a known mix of
//! QoS 0/1/2, retained (replayed and live), `$` and unwatched topics; resubscription after a
//! broker restart; mutual TLS; and an ignored throughput measurement.
//!
//! Each test waits for the tap's SUBACK in the broker log before publishing, publishes from one
//! sequential client (every publish completes before the next starts, so the broker forwards
//! them in order) and ends with a sentinel message: everything counted before the sentinel is
//! compared exactly.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use defender_agent::tap::{self, Settings};
use defender_agent::topic_filter::TopicFilter;
use defender_agent::traffic::{
    self, Direction, Scope, ScopeOperator, ScopeTotals, TrafficCounters, TrafficEvent,
};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::certs::Pki;
use crate::support::mosquitto::{Mosquitto, MosquittoOptions};

/// Bound on every wait (never a timing assertion: tests go on as soon as the thing happens).
const WAIT: Duration = Duration::from_secs(20);

const TAP_ID: &str = "gw-tap";

fn settings(port: u16, outbound: &[&str], inbound: &[&str]) -> Settings {
    Settings {
        host: "127.0.0.1".into(),
        port,
        tls: false,
        ca_file: Default::default(),
        cert_file: Default::default(),
        key_file: Default::default(),
        client_id: TAP_ID.into(),
        outbound: outbound.iter().map(|s| s.to_string()).collect(),
        inbound: inbound.iter().map(|s| s.to_string()).collect(),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
    }
}

struct RunningTap {
    events: mpsc::Receiver<TrafficEvent>,
    task: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Drop for RunningTap {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start_tap(settings: Settings, capacity: usize) -> RunningTap {
    let shutdown = CancellationToken::new();
    let (tx, events) = mpsc::channel(capacity);
    let task = tap::spawn(settings, tx, shutdown.clone()).expect("spawn tap");
    RunningTap {
        events,
        task,
        shutdown,
    }
}

/// Waits until the broker has sent `count` SUBACKs to the tap (all starts of the broker).
async fn subscribed(broker: &Mosquitto, count: usize) {
    logged(broker, &format!("Sending SUBACK to {TAP_ID}"), count).await;
}

/// Waits (without blocking the runtime) until the broker log holds `needle` `count` times.
async fn logged(broker: &Mosquitto, needle: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    while broker.log().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "broker did not log {needle:?} {count} times within {WAIT:?}; broker log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event up to and including the first publish on `sentinel`.
async fn events_until(
    events: &mut mpsc::Receiver<TrafficEvent>,
    sentinel: &str,
) -> Vec<TrafficEvent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                let last =
                    matches!(&event, TrafficEvent::Publish { topic, .. } if topic == sentinel);
                seen.push(event);
                if last {
                    return seen;
                }
            }
            Ok(None) => panic!("tap event channel closed; seen so far: {seen:?}"),
            Err(_) => panic!("sentinel {sentinel} not seen within {WAIT:?}; seen: {seen:?}"),
        }
    }
}

/// A test client that publishes one message at a time and waits until each is complete
/// (QoS 0: written; QoS 1: PUBACK; QoS 2: PUBCOMP).
struct Publisher {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Publisher {
    async fn connect(port: u16, id: &str) -> Publisher {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        poll_until(&mut eventloop, |e| {
            matches!(e, Event::Incoming(Packet::ConnAck(_)))
        })
        .await;
        Publisher { client, eventloop }
    }

    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("queue publish");
        poll_until(&mut self.eventloop, |e| match qos {
            QoS::AtMostOnce => matches!(e, Event::Outgoing(Outgoing::Publish(_))),
            QoS::AtLeastOnce => matches!(e, Event::Incoming(Packet::PubAck(_))),
            QoS::ExactlyOnce => matches!(e, Event::Incoming(Packet::PubComp(_))),
        })
        .await;
    }
}

async fn poll_until(eventloop: &mut EventLoop, mut want: impl FnMut(&Event) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(event)) if want(&event) => return,
            Ok(Ok(_)) => {}
            Ok(Err(err)) => panic!("test publisher: {err}"),
            Err(_) => panic!("test publisher: nothing within {WAIT:?}"),
        }
    }
}

/// `mosquitto_pub` with `args`; fails the test when it is missing or fails.
async fn mosquitto_pub(args: &[&str]) {
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("mosquitto_pub not runnable ({e}): install it with `apt-get install -y mosquitto-clients`")
        });
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn publish_event(topic: &str, bytes: u64, direction: Direction) -> TrafficEvent {
    TrafficEvent::Publish {
        topic: topic.into(),
        bytes,
        direction,
    }
}

fn scope(name: &str, filters: &[&str], operator: ScopeOperator) -> Scope {
    Scope {
        name: name.into(),
        filters: filters
            .iter()
            .map(|f| TopicFilter::parse(f).expect("test filter"))
            .collect(),
        operator,
    }
}

fn totals(
    messages_sent: u64,
    bytes_sent: u64,
    messages_received: u64,
    bytes_received: u64,
) -> ScopeTotals {
    ScopeTotals {
        messages_sent,
        messages_received,
        bytes_sent,
        bytes_received,
        authorization_failures: 0,
    }
}

#[tokio::test]
async fn the_tap_counts_exactly_what_was_published_per_scope_and_direction() {
    let broker = Mosquitto::start(MosquittoOptions::plain());
    let port = broker.port().to_string();
    // Retained before the tap subscribes: replayed to it with RETAIN = 1, not new traffic.
    for (topic, payload) in [
        ("sensors/temp", "r-old"),
        ("commands/reboot", "old"),
        ("$aws/things/gw/shadow/update/accepted", "{}"),
    ] {
        mosquitto_pub(&[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-r",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .await;
    }

    let mut running = start_tap(
        settings(
            broker.port(),
            &["sensors/#", "$aws/things/gw/shadow/update"],
            &["commands/#", "$aws/things/gw/shadow/update/+"],
        ),
        64,
    );
    subscribed(&broker, 1).await;

    let big = vec![b'f'; 1000];
    let mix: [(&str, QoS, bool, &[u8]); 13] = [
        ("sensors/temp", QoS::AtMostOnce, false, b"21.5"),
        ("sensors/temp", QoS::AtLeastOnce, false, b"21.6"),
        ("sensors/temp", QoS::ExactlyOnce, false, b"21.7"),
        ("sensors/hum/1", QoS::AtLeastOnce, false, b""),
        // Published retained while the tap is subscribed: delivered live (RETAIN = 0), counted.
        ("sensors/temp", QoS::AtLeastOnce, true, b"21.8"),
        ("commands/reboot", QoS::AtMostOnce, false, b"now"),
        ("commands/fw", QoS::ExactlyOnce, false, &big),
        (
            "$aws/things/gw/shadow/update",
            QoS::AtLeastOnce,
            false,
            b"{\"state\":{}}",
        ),
        (
            "$aws/things/gw/shadow/update/accepted",
            QoS::AtMostOnce,
            false,
            b"{}",
        ),
        (
            "$aws/things/gw/shadow/update/rejected",
            QoS::ExactlyOnce,
            false,
            b"{}",
        ),
        // Not watched: never subscribed, never counted.
        ("other/topic", QoS::AtLeastOnce, false, b"zz"),
        ("$aws/things/gw/jobs/notify", QoS::AtLeastOnce, false, b"{}"),
        ("sensors/end", QoS::ExactlyOnce, false, b"."),
    ];
    let mut publisher = Publisher::connect(broker.port(), "device").await;
    for (topic, qos, retain, payload) in mix {
        publisher.publish(topic, qos, retain, payload).await;
    }

    let seen = events_until(&mut running.events, "sensors/end").await;
    use Direction::{Received, Sent};
    assert_eq!(
        seen,
        vec![
            publish_event("sensors/temp", 4, Sent),
            publish_event("sensors/temp", 4, Sent),
            publish_event("sensors/temp", 4, Sent),
            publish_event("sensors/hum/1", 0, Sent),
            publish_event("sensors/temp", 4, Sent),
            publish_event("commands/reboot", 3, Received),
            publish_event("commands/fw", 1000, Received),
            publish_event("$aws/things/gw/shadow/update", 12, Sent),
            publish_event("$aws/things/gw/shadow/update/accepted", 2, Received),
            publish_event("$aws/things/gw/shadow/update/rejected", 2, Received),
            publish_event("sensors/end", 1, Sent),
        ]
    );
    // mosquitto replayed exactly the three old retained messages with RETAIN = 1 (the tap
    // skipped them) and delivered the live retained publish with RETAIN = 0.
    let log = broker.log();
    let sent_to_tap: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("Sending PUBLISH to {TAP_ID} ")))
        .collect();
    let replays = sent_to_tap.iter().filter(|l| l.contains(", r1,")).count();
    assert_eq!(replays, 3, "{sent_to_tap:#?}");
    assert_eq!(sent_to_tap.len(), seen.len() + 3, "{sent_to_tap:#?}");

    // Counting is traffic's job: feed the events into counters scoped by a few dimensions.
    let mut counters = TrafficCounters::new(
        vec![
            scope("temperature", &["sensors/temp"], ScopeOperator::In),
            scope("shadow", &["$aws/things/+/shadow/#"], ScopeOperator::In),
            scope("not-aws", &["$aws/#"], ScopeOperator::NotIn),
            scope("commands", &["commands/#"], ScopeOperator::In),
        ],
        traffic::Settings::default(),
    )
    .expect("counters");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for event in &seen {
        counters.record(event, now);
    }
    let t = counters.totals();
    assert_eq!(t.all.traffic, totals(7, 29, 4, 1007));
    let by_scope: Vec<(&str, ScopeTotals)> =
        t.scopes.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    assert_eq!(
        by_scope,
        vec![
            ("temperature", totals(4, 16, 0, 0)),
            ("shadow", totals(1, 12, 2, 4)),
            ("not-aws", totals(6, 17, 2, 1003)),
            ("commands", totals(0, 0, 2, 1003)),
        ]
    );

    running.shutdown.cancel();
    tokio::time::timeout(WAIT, &mut running.task)
        .await
        .expect("tap stops on shutdown")
        .expect("tap task");
    logged(&broker, &format!("Received DISCONNECT from {TAP_ID}"), 1).await;
    // Read-only: the broker never received a PUBLISH from the tap.
    assert!(!broker
        .log()
        .contains(&format!("Received PUBLISH from {TAP_ID}")));
}

#[tokio::test]
async fn a_hash_filter_leaves_dollar_topics_to_explicit_filters_and_overlaps_count_once() {
    let broker = Mosquitto::start(MosquittoOptions::plain());
    // `a/b` lies inside `#` and `commands/#` inside `#` too: one subscription, one copy each.
    let mut running = start_tap(
        settings(
            broker.port(),
            &["#", "a/b"],
            &["commands/#", "$aws/things/gw/#"],
        ),
        16,
    );
    subscribed(&broker, 1).await;
    let mut publisher = Publisher::connect(broker.port(), "device").await;
    for topic in [
        "a/b",
        "$aws/things/gw/shadow/get",
        "commands/x",
        "$SYS/fake",
        "end",
    ] {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, b"p")
            .await;
    }
    let seen = events_until(&mut running.events, "end").await;
    use Direction::{Received, Sent};
    assert_eq!(
        seen,
        vec![
            publish_event("a/b", 1, Sent),
            publish_event("$aws/things/gw/shadow/get", 1, Received),
            publish_event("commands/x", 1, Sent),
            publish_event("end", 1, Sent),
        ]
    );
}

#[tokio::test]
async fn the_tap_resubscribes_by_itself_after_the_broker_restarts() {
    let mut broker = Mosquitto::start(MosquittoOptions::plain());
    let mut running = start_tap(settings(broker.port(), &["sensors/#"], &[]), 16);
    subscribed(&broker, 1).await;
    let mut publisher = Publisher::connect(broker.port(), "device").await;
    publisher
        .publish("sensors/before", QoS::AtLeastOnce, false, b"1")
        .await;
    let before = events_until(&mut running.events, "sensors/before").await;
    assert_eq!(before.len(), 1);

    broker.restart();
    subscribed(&broker, 2).await;
    let mut publisher = Publisher::connect(broker.port(), "device").await;
    publisher
        .publish("sensors/after", QoS::AtMostOnce, false, b"22")
        .await;
    let after = events_until(&mut running.events, "sensors/after").await;
    assert_eq!(
        after,
        vec![publish_event("sensors/after", 2, Direction::Sent)]
    );
}

#[tokio::test]
async fn a_message_over_the_packet_limit_is_lost_and_the_tap_reconnects() {
    let broker = Mosquitto::start(MosquittoOptions::plain());
    let mut running = start_tap(settings(broker.port(), &["sensors/#"], &[]), 16);
    subscribed(&broker, 1).await;
    let mut publisher = Publisher::connect(broker.port(), "device").await;
    let huge = vec![b'h'; tap::MAX_INCOMING_PACKET_BYTES + 1];
    publisher
        .publish("sensors/huge", QoS::AtLeastOnce, false, &huge)
        .await;
    subscribed(&broker, 2).await;
    publisher
        .publish("sensors/after", QoS::AtLeastOnce, false, b"ok")
        .await;
    let seen = events_until(&mut running.events, "sensors/after").await;
    assert_eq!(
        seen,
        vec![publish_event("sensors/after", 2, Direction::Sent)]
    );
}

#[tokio::test]
async fn the_tap_observes_a_broker_over_mutual_tls() {
    let pki = Pki::new();
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
    let tap_cert = pki.client(TAP_ID);
    let mut s = settings(broker.port(), &["sensors/#"], &["$aws/things/gw/jobs/#"]);
    s.tls = true;
    s.host = "localhost".into();
    s.ca_file = pki.ca_file().to_path_buf();
    s.cert_file = tap_cert.cert;
    s.key_file = tap_cert.key;
    let mut running = start_tap(s, 16);
    subscribed(&broker, 1).await;

    let device = pki.client("device");
    let port = broker.port().to_string();
    let tls_args = |topic: &'static str, msg: &'static str| {
        let ca = path(pki.ca_file());
        let cert = path(&device.cert);
        let key = path(&device.key);
        vec![
            "-h".to_string(),
            "localhost".into(),
            "-p".into(),
            port.clone(),
            "--cafile".into(),
            ca,
            "--cert".into(),
            cert,
            "--key".into(),
            key,
            "-q".into(),
            "1".into(),
            "-t".into(),
            topic.into(),
            "-m".into(),
            msg.into(),
        ]
    };
    for (topic, msg) in [
        ("$aws/things/gw/jobs/notify", "{}"),
        ("sensors/tls", "hello"),
    ] {
        let args = tls_args(topic, msg);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mosquitto_pub(&args).await;
    }
    let seen = events_until(&mut running.events, "sensors/tls").await;
    assert_eq!(
        seen,
        vec![
            publish_event("$aws/things/gw/jobs/notify", 2, Direction::Received),
            publish_event("sensors/tls", 5, Direction::Sent),
        ]
    );
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Throughput measurement, run by hand:
/// `cargo test --release --test integration tap::tap_throughput -- --ignored --nocapture`.
/// A publisher on its own thread sends `TAP_BENCH_N` (default 20 000) messages as fast as it can (QoS 0: written; QoS 1:
/// up to 100 in flight); the tap feeds a consumer that records into `TrafficCounters`. Prints
/// messages seen, losses and the rate from the first publish to the last event seen.
#[tokio::test]
#[ignore = "measurement, not a test: run by hand with --ignored --nocapture"]
async fn tap_throughput() {
    // TAP_BENCH_N overrides the message count per round.
    let n: usize = std::env::var("TAP_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // The tap's own account (drops, "Tap stopped." totals) goes to the test output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::INFO)
        .try_init();
    for (qos, rate) in [
        (QoS::AtMostOnce, None),
        (QoS::AtLeastOnce, None),
        (QoS::AtMostOnce, Some(5_000)),
        (QoS::AtLeastOnce, Some(5_000)),
        (QoS::AtMostOnce, Some(10_000)),
        (QoS::AtLeastOnce, Some(10_000)),
        (QoS::AtMostOnce, Some(20_000)),
    ] {
        let broker = Mosquitto::start(MosquittoOptions::plain());
        let mut running = start_tap(
            settings(broker.port(), &["sensors/#"], &["commands/#"]),
            1024,
        );
        subscribed(&broker, 1).await;
        let port = broker.port();
        let started = Instant::now();
        let publisher = std::thread::spawn(move || publish_burst(port, qos, n, rate));
        let mut counters = TrafficCounters::new(
            vec![scope("temp", &["sensors/+/temp"], ScopeOperator::In)],
            traffic::Settings::default(),
        )
        .expect("counters");
        let mut seen = 0usize;
        let mut last = started;
        // Loss shows as silence: stop after a quiet second once the publisher is done.
        loop {
            match tokio::time::timeout(Duration::from_secs(1), running.events.recv()).await {
                Ok(Some(event)) => {
                    counters.record(&event, SystemTime::now());
                    seen += 1;
                    last = Instant::now();
                    if seen == n {
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) if publisher.is_finished() => break,
                Err(_) => {}
            }
        }
        let published_in = publisher.join().expect("publisher thread");
        let secs = last.duration_since(started).as_secs_f64();
        println!(
            "tap throughput: QoS {} pace {:>6} msg/s: published {n} in {:.3} s, tap saw {seen} ({} lost) in {:.3} s = {:.0} msg/s",
            qos as u8,
            rate.map_or("max".to_string(), |r| r.to_string()),
            published_in.as_secs_f64(),
            n - seen,
            secs,
            seen as f64 / secs,
        );
        assert_eq!(counters.totals().all.traffic.messages_sent as usize, seen);
        running.shutdown.cancel();
        (&mut running.task).await.expect("tap task");
        let broker_drops = broker
            .log()
            .lines()
            .filter(|l| l.contains("dropped") || l.contains("dropping"))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        println!("  broker: {broker_drops:?}");
    }
}

/// Publishes `n` messages of 64 bytes on `sensors/<i % 8>/temp` from a fresh runtime, paced at
/// `rate` messages/s if given; returns the time it took.
fn publish_burst(port: u16, qos: QoS, n: usize, rate: Option<u32>) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("publisher runtime");
    runtime.block_on(async move {
        let mut options = MqttOptions::new("bench-device", "127.0.0.1", port);
        options.set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        poll_until(&mut eventloop, |e| {
            matches!(e, Event::Incoming(Packet::ConnAck(_)))
        })
        .await;
        let started = Instant::now();
        let topics: Vec<String> = (0..8).map(|i| format!("sensors/{i}/temp")).collect();
        let payload = vec![b'x'; 64];
        let sender = tokio::spawn(async move {
            let mut pace = rate.map(|r| tokio::time::interval(Duration::from_secs(1) / r));
            for i in 0..n {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                client
                    .publish(topics[i % 8].clone(), qos, false, payload.clone())
                    .await
                    .expect("queue publish");
            }
            client
        });
        let mut done = 0usize;
        while done < n {
            match eventloop.poll().await.expect("publisher connection") {
                Event::Outgoing(Outgoing::Publish(_)) if qos == QoS::AtMostOnce => done += 1,
                Event::Incoming(Packet::PubAck(_)) => done += 1,
                _ => {}
            }
        }
        let elapsed = started.elapsed();
        let _client = sender.await;
        elapsed
    })
}

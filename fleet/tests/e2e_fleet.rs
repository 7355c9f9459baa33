//! A simulated fleet against `defender-fleet serve` over real MQTT (mosquitto on loopback):
//!
//! - 200 things (realistic reports built with the agent's encoder, JSON long keys and CBOR
//!   short keys) of which 20 outliers cross the p90 threshold of `aws:all-bytes-out`: exactly
//!   those 20 raise STATISTICAL violations, on SQLite and on PostgreSQL.
//! - Two instances on PostgreSQL, one killed with SIGKILL mid-run while the devices keep sending
//!   and re-send unanswered reports: no acknowledged report is lost, none is counted twice (report
//!   counts, events, datapoints), and the violation events and active violations are those of a
//!   single-instance run over the same input. Three ways, all at once: behind a shared
//!   subscription (`[mqtt] shared_group`, on a `topic_root` without `$`: see [`SHARED_ROOT`]),
//!   both subscribed to every report, and the things split by the broker's ACL on `$aws/...`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use defender_agent::mqtt::topics::TopicRoot;
use defender_agent::report::{Format, KeySet};
use defender_fleet::store::{Store, ThingSeen};
use support::mosquitto::Mosquitto;
use support::mqtt::{Link, TestClient};
use support::procs::{fleet_config, start_fleet, Broker, Proc, FLEET};
use support::sim::{now_secs, send_like_devices, Device, Outcome, Shape};
use support::snapshot::Snapshot;
use support::TestEngine;

const P90: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/detect/fleet/p90-profile.json"
);

/// Formats in turn: most devices JSON with long keys, some CBOR with short keys.
fn format_of(i: usize) -> (Format, KeySet) {
    match i % 4 {
        3 => (Format::Cbor, KeySet::Short),
        2 => (Format::Json, KeySet::Short),
        _ => (Format::Json, KeySet::Long),
    }
}

fn thing(i: usize) -> String {
    format!("sim-{i:04}")
}

/// Waits (bounded) until the store holds a threshold for `behavior` over `population` things;
/// returns its value.
async fn wait_threshold(
    store: &Store,
    behavior: &str,
    population: i64,
    log: &dyn Fn() -> String,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = store.thresholds().await.expect("thresholds");
        if let Some(v) = t
            .iter()
            .find(|t| t.behavior == behavior && t.population == population)
            .and_then(|t| t.value)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no {behavior} threshold over {population} things within 20 s: {t:?}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded, without blocking the runtime) until every instance logged the threshold
/// `value` over `population` things: its thresholds job read it and handed it to its committer
/// (which takes it before its next batch).
async fn wait_handed_over(fleets: &[&Proc], value: f64, population: usize) {
    let needle = format!("threshold {value} over {population} things");
    let deadline = Instant::now() + Duration::from_secs(20);
    for f in fleets {
        while !f.log().contains(&needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged within 20 s:\n{}",
                f.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn all_accepted(out: &Outcome, n: usize) {
    assert!(out.rejected.is_empty(), "rejected: {:?}", out.rejected);
    assert_eq!(out.accepted.len(), n);
}

async fn two_hundred_things_twenty_outliers(e: TestEngine) {
    const THINGS: usize = 200;
    let outlier = |i: usize| i % 10 == 3; // 20 of 200
    let bytes = |i: usize| {
        if outlier(i) {
            50_000 + i as u64
        } else {
            1000 + i as u64
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let port = broker.port();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::copy(P90, profiles.join("p90.json")).unwrap();
    // min_population = the fleet: no threshold exists before every thing has data, so no report
    // of the first round is evaluated against a partial population's threshold.
    let config = fleet_config(
        dir.path(),
        &e,
        &Broker::Plain(port),
        &format!("fleet-{}", e.name),
        &profiles,
        [
            "",
            "min_report_interval_secs = 0",
            "thresholds_interval_secs = 1\nmin_population = 200",
        ],
    );
    let client = TestClient::connect(port, "sim", Link::Plain).await;
    let mut fleet = start_fleet(&config);
    fleet.wait_log("not evaluable: 0 things with data", Duration::from_secs(10));
    let now = now_secs();
    // Report times (their ids) 310 s apart, so that each window (durationSeconds 300) holds one
    // report: round 1 at now − 200 (a backlog), round 2 at now + 110 (within the 300 s of clock
    // skew allowed); the threshold's population is round 1's.
    let round = |rid: u64| -> Vec<Device> {
        (0..THINGS)
            .map(|i| {
                let (f, k) = format_of(i);
                Device::new(&thing(i), f, k, &[(rid, Shape::normal(bytes(i)))])
            })
            .collect()
    };
    let retry = Duration::from_secs(10);
    let out = send_like_devices(
        &client,
        &round(now - 200),
        retry,
        Duration::from_secs(60),
        |_| {},
    )
    .await;
    all_accepted(&out, THINGS);
    let store = Store::open(e.settings.clone()).await.unwrap();
    // p90 over 200 things: rank 180, the largest of the 180 normal values (1000 + 199).
    let log = || fleet.log();
    let p90 = wait_threshold(&store, "BytesOutP90", THINGS as i64, &log).await;
    assert_eq!(p90, 1199.0, "{}", fleet.log());
    wait_handed_over(&[&fleet], p90, THINGS).await;
    let out = send_like_devices(
        &client,
        &round(now + 110),
        retry,
        Duration::from_secs(60),
        |_| {},
    )
    .await;
    all_accepted(&out, THINGS);

    let snap = Snapshot::read(&store, &["FleetP90"], &[("FleetP90", "BytesOutP90")]).await;
    let expected: Vec<(String, String)> = (0..THINGS)
        .filter(|&i| outlier(i))
        .map(|i| (thing(i), "BytesOutP90".to_owned()))
        .collect();
    assert_eq!(snap.active_pairs(), expected, "{}", fleet.log());
    // Exactly one event each (a STATISTICAL alarm at round 2's time), no other event at all.
    let mut alarmed: Vec<(String, String)> = snap
        .events
        .iter()
        .map(|ev| {
            assert_eq!(ev.violation_event_time, (now + 110) as f64, "{ev:?}");
            assert_eq!(
                serde_json::to_value(ev.violation_event_type).unwrap(),
                "in-alarm",
                "{ev:?}"
            );
            (ev.thing_name.clone(), ev.behavior.name.clone())
        })
        .collect();
    alarmed.sort();
    assert_eq!(alarmed, expected);
    assert!(
        snap.active.iter().all(|a| a
            .behavior
            .criteria
            .as_ref()
            .is_some_and(|c| c.statistical_threshold.is_some())),
        "{:?}",
        snap.active
    );
    assert_eq!(snap.things.len(), THINGS);
    assert!(
        snap.things.iter().all(|t| t.report_count == 2),
        "{:?}",
        snap.things
    );
    store.close().await;

    let out = Command::new(FLEET)
        .args(["thresholds", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &doc["thresholds"][0];
    assert_eq!(
        (t["behavior"].as_str(), t["value"].as_f64()),
        (Some("BytesOutP90"), Some(1199.0)),
        "{doc}"
    );
    assert_eq!(t["population"], THINGS);
    assert_eq!(fleet.terminate(), Some(0), "{}", fleet.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_things_twenty_outliers_raise_exactly_twenty_statistical_violations_on_sqlite()
{
    two_hundred_things_twenty_outliers(support::sqlite()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_things_twenty_outliers_raise_exactly_twenty_statistical_violations_on_postgres(
) {
    two_hundred_things_twenty_outliers(support::postgres("sim200").await).await
}

// --- Two instances, one killed -------------------------------------------------------------

/// The profile of the kill test: the p90 behavior, a static one with CDA 2 / CDC 2 (state
/// carried from report to report: what a lost or doubled report would change) and a port set.
const KILL_PROFILE: &str = r#"{
  "securityProfileName": "Kill",
  "behaviors": [
    {"name": "BytesOutP90", "metric": "aws:all-bytes-out",
     "criteria": {"comparisonOperator": "less-than-equals", "statisticalThreshold": {"statistic": "p90"},
                  "durationSeconds": 300, "consecutiveDatapointsToAlarm": 1, "consecutiveDatapointsToClear": 1}},
    {"name": "ConnsHigh", "metric": "aws:num-established-tcp-connections",
     "criteria": {"comparisonOperator": "greater-than", "value": {"count": 5},
                  "consecutiveDatapointsToAlarm": 2, "consecutiveDatapointsToClear": 2}},
    {"name": "TcpPorts", "metric": "aws:listening-tcp-ports",
     "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22, 443]}}}
  ]
}"#;

const KILL_THINGS: usize = 100;
const KILL_ROUNDS: u64 = 7;

/// The input: round 0 carries each thing's bytes (10 outliers); rounds 1.. send no bytes (so
/// each window's sum, the p90 population, stays round 0's: the threshold cannot depend on how
/// far each device has got) and vary the connections and ports. Reports 30 s apart from
/// `base`, all within one p90 window and within the allowed clock skew.
fn kill_input(base: u64) -> (Vec<Device>, Vec<Device>) {
    let shape = |i: usize, r: u64| Shape {
        bytes_out: match r {
            0 if i % 10 == 7 => 80_000 + i as u64,
            0 => 2000 + i as u64,
            _ => 0,
        },
        tcp_ports: if (i as u64 + r).is_multiple_of(4) {
            vec![22, 443, 8080]
        } else {
            vec![22, 443]
        },
        connections: if (i as u64 + r) % 5 < 2 { 8 } else { 2 },
    };
    let rid = |r: u64| base + 30 * r;
    let device = |i: usize, rounds: std::ops::Range<u64>| {
        let (f, k) = format_of(i);
        let reports: Vec<(u64, Shape)> = rounds.map(|r| (rid(r), shape(i, r))).collect();
        Device::new(&thing(i), f, k, &reports)
    };
    (
        (0..KILL_THINGS).map(|i| device(i, 0..1)).collect(),
        (0..KILL_THINGS)
            .map(|i| device(i, 1..KILL_ROUNDS))
            .collect(),
    )
}

struct RunResult {
    snap: Snapshot,
    outcome: Outcome,
    logs: Vec<String>,
}

/// How the reports reach the instances.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// One instance.
    Single,
    /// Two instances, each subscribed to every report: they race on each one and the
    /// database decides (duplicate key, versioned state).
    Compete,
    /// Two instances, the things split between them by the broker's ACL (what a shared
    /// subscription does); when the first is killed the ACL gives everything to the second, as
    /// the broker's shared group would, and the devices' re-sends reach it.
    Partitioned,
    /// Two instances behind `[mqtt] shared_group`, on `[mqtt] topic_root` [`SHARED_ROOT`].
    Shared,
}

/// The shared-subscription run's topic root. Not Device Defender's `$aws/things/...`: Debian
/// 12's mosquitto 2.0.11 never delivers a topic beginning with `$` to a `$share/<group>/...`
/// subscription (checked with mosquitto_sub: `$share/g/$aws/#` and `$share/g/#` get nothing of
/// `$aws/things/x/defender/metrics/json`, `$share/g/a/+/b` gets `a/x/b`), so on that broker
/// several instances need a root of their own.
const SHARED_ROOT: &str = "fleet/things/{thing}/defender/metrics";

/// The ACL of a partitioned run: the devices read and write everything, the instances write
/// answers and read the reports of their things (`owner(i)` = the instance of thing i).
fn partition_acl(name: &str, owner: impl Fn(usize) -> usize) -> String {
    let mut acl = format!("user {name}-sim\ntopic readwrite $aws/#\n");
    for k in 0..2 {
        acl.push_str(&format!("user {name}-{k}\ntopic write $aws/#\n"));
        for i in (0..KILL_THINGS).filter(|&i| owner(i) == k) {
            acl.push_str(&format!(
                "topic read $aws/things/{}/defender/metrics/#\n",
                thing(i)
            ));
        }
    }
    acl
}

/// One run over the input from `base` on a database of its own; in the two-instance modes the
/// first instance is SIGKILLed once 40 % of the second phase is answered.
async fn kill_run(name: &str, mode: Mode, base: u64) -> RunResult {
    let e = support::postgres(name).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = support::certs::Pki::new();
    let broker = match mode {
        Mode::Partitioned => {
            Mosquitto::start_mutual_tls_with_acl(&pki, &partition_acl(name, |i| i % 2))
        }
        _ => Mosquitto::start(),
    };
    let port = broker.port();
    let (link, fleet_broker) = match mode {
        Mode::Partitioned => (Link::MutualTls(&pki), Broker::MutualTls(port, &pki)),
        _ => (Link::Plain, Broker::Plain(port)),
    };
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(profiles.join("kill.json"), KILL_PROFILE).unwrap();
    let root = if mode == Mode::Shared {
        TopicRoot::parse(SHARED_ROOT).unwrap()
    } else {
        TopicRoot::default()
    };
    let client = TestClient::connect_root(port, &format!("{name}-sim"), link, root).await;
    let instances = if mode == Mode::Single { 1 } else { 2 };
    let mut fleets: Vec<Proc> = (0..instances)
        .map(|k| {
            let config = fleet_config(
                dir.path(),
                &e,
                &fleet_broker,
                &format!("{name}-{k}"),
                &profiles,
                [
                    &if mode == Mode::Shared {
                        format!(
                            "shared_group = \"fleet\"\nclean_session = true\n\
                             topic_root = \"{SHARED_ROOT}\""
                        )
                    } else {
                        "clean_session = true".to_owned()
                    },
                    "min_report_interval_secs = 0",
                    &format!("thresholds_interval_secs = 1\nmin_population = {KILL_THINGS}"),
                ],
            );
            start_fleet(&config)
        })
        .collect();
    fn logs(fleets: &[Proc]) -> Vec<String> {
        fleets.iter().map(Proc::log).collect()
    }
    let (first, second) = kill_input(base);
    // A device re-sends after 2 s without an answer (the agent's answer timeout, shortened).
    let retry = Duration::from_secs(2);
    let mut outcome =
        send_like_devices(&client, &first, retry, Duration::from_secs(90), |_| {}).await;
    let store = Store::open(e.settings.clone()).await.unwrap();
    let p90 = {
        let log = || logs(&fleets).join("\n----\n");
        wait_threshold(&store, "BytesOutP90", KILL_THINGS as i64, &log).await
    };
    // p90 over 100: rank 90, the largest of the 90 normal values (2000 + 99).
    assert_eq!(p90, 2099.0);
    // Every instance reads the stored thresholds each second.
    wait_handed_over(&fleets.iter().collect::<Vec<_>>(), p90, KILL_THINGS).await;
    let phase2 = second.iter().map(|d| d.reports.len()).sum::<usize>();
    let mut killed = false;
    let o2 = send_like_devices(
        &client,
        &second,
        retry,
        Duration::from_secs(120),
        |answered| {
            if mode != Mode::Single && !killed && answered * 10 >= phase2 * 4 {
                fleets[0].kill9();
                killed = true;
                if mode == Mode::Partitioned {
                    broker.set_acl(&partition_acl(name, |_| 1));
                }
            }
        },
    )
    .await;
    assert_eq!(killed, mode != Mode::Single);
    outcome.accepted.extend(o2.accepted);
    outcome.rejected.extend(o2.rejected);
    outcome.published += o2.published;
    outcome.republished += o2.republished;
    if matches!(mode, Mode::Partitioned | Mode::Shared) {
        // The reports were spread: every instance got some.
        let blog = broker.log();
        for k in 0..instances {
            let needle = format!("Sending PUBLISH to {name}-{k} ");
            let n = blog
                .lines()
                .filter(|l| {
                    l.contains(&needle)
                        && l.contains("/defender/metrics/")
                        && !l.contains("/accepted")
                })
                .count();
            assert!(
                n > 0,
                "instance {k} got no report:\n{}",
                logs(&fleets).join("\n----\n")
            );
        }
    }
    let snap = Snapshot::read(&store, &["Kill"], &[("Kill", "BytesOutP90")]).await;
    // Every acknowledged report is in the store.
    for (t, rid) in &outcome.accepted {
        assert!(
            store.has_report(t, *rid as i64).await.unwrap(),
            "{name}: {t} report {rid} was accepted but is not in the store"
        );
    }
    store.close().await;
    let logs_now = logs(&fleets);
    for (k, f) in fleets.iter_mut().enumerate() {
        if !(killed && k == 0) {
            assert_eq!(f.terminate(), Some(0), "{}", f.log());
        }
    }
    RunResult {
        snap,
        outcome,
        logs: logs_now,
    }
}

/// The checks of a run over the kill input: everything accepted is stored, counted once.
fn check_counts(name: &str, r: &RunResult) {
    let total = KILL_THINGS * KILL_ROUNDS as usize;
    all_accepted(&r.outcome, total);
    assert_eq!(r.snap.things.len(), KILL_THINGS);
    let wrong: Vec<&ThingSeen> = r
        .snap
        .things
        .iter()
        .filter(|t| t.report_count != KILL_ROUNDS as i64)
        .collect();
    assert!(wrong.is_empty(), "{name}: report counts: {wrong:?}");
    assert_eq!(r.snap.counts.reports_total, total as i64, "{name}");
    assert_eq!(r.snap.counts.reports_retained, total as i64, "{name}");
    let lines = r.snap.event_lines();
    let distinct: std::collections::BTreeSet<&String> = lines.iter().collect();
    assert_eq!(
        distinct.len(),
        lines.len(),
        "{name}: an event was recorded twice"
    );
}

/// The single run and the given two-instance runs over the same input (report ids from the same
/// base time), all at once; the checks.
async fn two_instances_one_killed(modes: &[Mode]) {
    let base = now_secs() - 100;
    let runs = modes.iter().map(|&m| {
        let name = format!("kill_{m:?}").to_lowercase();
        async move { (m, kill_run(&name, m, base).await) }
    });
    let (one, runs) = tokio::join!(
        kill_run("kill_single", Mode::Single, base),
        futures_join_all(runs)
    );
    check_counts("single", &one);
    // The single run raised what the input says: the 10 outliers' p90 alarms and some of each
    // static behavior, raised and cleared (so the comparisons below compare something).
    let pairs = one.snap.active_pairs();
    let p90: Vec<&String> = pairs
        .iter()
        .filter(|(_, b)| b == "BytesOutP90")
        .map(|(t, _)| t)
        .collect();
    let expected: Vec<String> = (0..KILL_THINGS)
        .filter(|i| i % 10 == 7)
        .map(thing)
        .collect();
    assert_eq!(p90, expected.iter().collect::<Vec<_>>());
    for b in ["ConnsHigh", "TcpPorts"] {
        assert!(
            pairs.iter().any(|(_, x)| x == b),
            "no active {b}: {pairs:?}"
        );
        assert!(
            one.snap.events.iter().any(|e| e.behavior.name == b
                && serde_json::to_value(e.violation_event_type).unwrap() == "alarm-cleared"),
            "no cleared {b}"
        );
    }
    for (mode, two) in &runs {
        let name = format!("{mode:?}");
        check_counts(&name, two);
        assert_eq!(
            two.snap.active_lines(),
            one.snap.active_lines(),
            "{name}: active violations differ from the single-instance run"
        );
        assert_eq!(
            two.snap.event_lines(),
            one.snap.event_lines(),
            "{name}: violation events differ from the single-instance run"
        );
        let dups = two
            .logs
            .iter()
            .map(|l| l.matches("Duplicate report: accepted again").count())
            .sum::<usize>();
        eprintln!(
            "{name}: {} publishes, {} re-sent after no answer, {dups} answered as duplicates \
             (survivor's and victim's logs); single run: {} events, {} active",
            two.outcome.published,
            two.outcome.republished,
            one.snap.events.len(),
            one.snap.active.len()
        );
    }
}

/// Runs futures concurrently (polled together in this task), results in order.
async fn futures_join_all<F: std::future::Future>(
    fs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> =
        fs.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Two instances on one PostgreSQL database, the first killed with SIGKILL mid-run while the
/// devices keep sending and re-send what is not answered, three ways: behind a shared
/// subscription (`[mqtt] shared_group`, the broker spreading the reports and giving the dead
/// one's to the survivor); subscribed to every report (racing on each one); the things split by
/// the broker's ACL on Device Defender's own `$aws/...` topics (what a shared subscription does,
/// there: see [`SHARED_ROOT`]), the ACL handing the dead one's things to the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_one_killed_lose_nothing_count_nothing_twice_and_agree_with_one()
{
    two_instances_one_killed(&[Mode::Shared, Mode::Compete, Mode::Partitioned]).await
}

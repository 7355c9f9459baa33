//! `defender-fleet serve` end to end, on SQLite and on PostgreSQL: a real mosquitto on
//! loopback, two real `defender-agent` daemons (JSON with long keys, CBOR with short keys)
//! reporting to the service and getting `accepted`; reports published with `mosquitto_pub`:
//! malformed → rejected `InvalidPayload`, a thing name over 128 bytes → rejected
//! `InvalidThingName`, too frequent → rejected `Throttled`, a duplicate → accepted again with
//! no second report counted; SIGTERM → exit 0.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use defender_fleet::store::{Engine, Store};
use support::mosquitto::Mosquitto;
use support::procs::{agent_binary, Proc};
use support::TestEngine;

const FLEET: &str = env!("CARGO_BIN_EXE_defender-fleet");
const P90: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/detect/fleet/p90-profile.json"
);

/// Every answer the broker carries, as (topic, payload) lines of `mosquitto_sub -v`.
struct Answers {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Answers {
    fn start(port: u16) -> Answers {
        Answers::start_on(port, &["$aws/things/+/defender/metrics/json/+"])
    }

    /// Answers on these topic filters.
    fn start_on(port: u16, filters: &[&str]) -> Answers {
        let mut sub = Command::new("mosquitto_sub");
        sub.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v", "-q", "1"]);
        for f in filters {
            sub.args(["-t", f]);
        }
        let mut child = sub
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (apt-get install -y mosquitto-clients)");
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        // Let the subscription settle before anything is published.
        std::thread::sleep(Duration::from_millis(300));
        Answers { child, lines }
    }

    /// Waits for `n` answers on `topic`; returns their payloads as JSON.
    fn wait(&self, topic: &str, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got: Vec<serde_json::Value> = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| l.strip_prefix(topic)?.strip_prefix(' '))
                .map(|p| serde_json::from_str(p).expect("a JSON answer"))
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} answer(s) on {topic} not seen; all: {:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish(port: u16, topic: &str, payload: &str) {
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub");
    assert!(st.success());
}

fn topic(thing: &str) -> String {
    format!("$aws/things/{thing}/defender/metrics/json")
}

fn report(rid: u64) -> String {
    report_out(rid, 2)
}

fn report_out(rid: u64, bytes_out: u64) -> String {
    format!(
        r#"{{"header":{{"report_id":{rid},"version":"1.0"}},"metrics":{{"network_stats":{{"bytes_in":1,"bytes_out":{bytes_out},"packets_in":1,"packets_out":1}}}}}}"#
    )
}

fn status_answer(state: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(state.join("status.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let a = v.get("last_answer")?.clone();
    (!a.is_null()).then_some(a)
}

fn start_agent(dir: &Path, thing: &str, port: u16, format: &str, keys: &str) -> (Proc, PathBuf) {
    let state = dir.join(format!("agent-{thing}"));
    let config = dir.join(format!("agent-{thing}.toml"));
    std::fs::write(
        &config,
        format!(
            "thing_name = \"{thing}\"\nstate_dir = {state:?}\n[collect]\nsample_interval_secs = 1\n\
             [report]\ninterval_secs = 2\nstartup_jitter_secs = 0\nformat = \"{format}\"\nkeys = \"{keys}\"\n\
             [mqtt]\nendpoint = \"127.0.0.1\"\nport = {port}\ntls = false\nreconnect_max_secs = 1\n",
            state = state.display().to_string()
        ),
    )
    .unwrap();
    let p = Proc::start(
        Command::new(agent_binary())
            .args(["run", "--config"])
            .arg(&config)
            .env("DEFENDER_AGENT_LOG", "info,defender_agent=debug"),
        dir.join(format!("agent-{thing}.log")),
    );
    (p, state)
}

/// Writes the service's config for `e` on `port` (the P90 fixture as the only profile) and
/// checks it with `check-config`.
fn fleet_config(
    dir: &Path,
    e: &TestEngine,
    port: u16,
    extra_ingest: &str,
    extra_detect: &str,
) -> PathBuf {
    let profiles = dir.join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::copy(P90, profiles.join("p90.json")).unwrap();
    let (state_dir, store_toml) = match &e.settings.engine {
        Engine::Sqlite { path } => (
            path.parent().unwrap().to_path_buf(),
            "engine = \"sqlite\"".to_owned(),
        ),
        Engine::Postgres { url } => (
            dir.join("state"),
            format!("engine = \"postgres\"\nurl = {url:?}"),
        ),
    };
    let config = dir.join("fleet.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[mqtt]\nendpoint = \"127.0.0.1\"\nport = {port}\ntls = false\n\
             client_id = \"fleet-{}\"\nreconnect_max_secs = 1\n\
             [ingest]\n{extra_ingest}\n[store]\n{store_toml}\n\
             [detect]\nprofiles = [{:?}]\ndimensions = []\ncustom_metrics = []\n{extra_detect}\n",
            state_dir.display().to_string(),
            e.name,
            profiles.display().to_string()
        ),
    )
    .unwrap();
    let st = Command::new(FLEET)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    config
}

async fn serve_end_to_end(e: TestEngine) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let port = broker.port();
    let config = fleet_config(dir.path(), &e, port, "min_report_interval_secs = 1", "");
    let answers = Answers::start(port);
    let mut fleet = Proc::start(
        Command::new(FLEET).args(["serve", "--config"]).arg(&config),
        dir.path().join("fleet.log"),
    );
    fleet.wait_log("Subscribed.", Duration::from_secs(20));
    // Both SUBACKs (json, cbor) come together.
    std::thread::sleep(Duration::from_millis(200));

    // Two real agents: JSON with long keys, CBOR with short keys.
    let (agent_json, state_json) = start_agent(dir.path(), "gw-json", port, "json", "long");
    let (agent_cbor, state_cbor) = start_agent(dir.path(), "gw-cbor", port, "cbor", "short");
    for (agent, state) in [(&agent_json, &state_json), (&agent_cbor, &state_cbor)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(a) = status_answer(state) {
                assert_eq!(a["status"], "accepted", "{a}\n{}", agent.log());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no answer: agent log:\n{}\nfleet log:\n{}",
                agent.log(),
                fleet.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        agent.wait_log("Report accepted.", Duration::from_secs(10));
    }

    // Malformed.
    publish(port, &topic("bad1"), r#"{"header":{"version":"1.0"}}"#);
    let r = answers.wait(&format!("{}/rejected", topic("bad1")), 1);
    assert_eq!(r[0]["status"], "REJECTED");
    assert_eq!(r[0]["thingName"], "bad1");
    assert_eq!(r[0]["statusDetails"]["ErrorCode"], "InvalidPayload");
    assert!(r[0].get("reportId").is_none(), "{}", r[0]);
    // An invalid thing name (over 128 bytes).
    let long = "x".repeat(129);
    publish(port, &topic(&long), &report(1_700_000_000));
    let r = answers.wait(&format!("{}/rejected", topic(&long)), 1);
    assert_eq!(r[0]["statusDetails"]["ErrorCode"], "InvalidThingName");
    // Throttled: report ids 5 and 6 are counters, so their times are their arrivals (< 1 s apart).
    publish(port, &topic("thr1"), &report(5));
    publish(port, &topic("thr1"), &report(6));
    let acc = answers.wait(&format!("{}/accepted", topic("thr1")), 1);
    assert_eq!(acc[0]["reportId"], 5);
    let rej = answers.wait(&format!("{}/rejected", topic("thr1")), 1);
    assert_eq!(rej[0]["reportId"], 6);
    assert_eq!(rej[0]["statusDetails"]["ErrorCode"], "Throttled");
    // A duplicate: accepted again, counted once.
    publish(port, &topic("dup1"), &report(1_700_000_000));
    answers.wait(&format!("{}/accepted", topic("dup1")), 1);
    publish(port, &topic("dup1"), &report(1_700_000_000));
    let acc = answers.wait(&format!("{}/accepted", topic("dup1")), 2);
    assert!(
        acc.iter().all(|a| a["reportId"] == 1_700_000_000_u64),
        "{acc:?}"
    );
    assert!(fleet.log().contains("Duplicate report: accepted again"));

    let store = Store::open(e.settings.clone()).await.unwrap();
    let things = store.things(None, 100).await.unwrap();
    let count = |t: &str| things.iter().find(|s| s.thing == t).map(|s| s.report_count);
    assert_eq!(count("dup1"), Some(1), "{things:?}");
    assert_eq!(count("thr1"), Some(1), "{things:?}");
    assert_eq!(count("bad1"), None, "{things:?}");
    assert!(count("gw-json") >= Some(1), "{things:?}");
    assert!(count("gw-cbor") >= Some(1), "{things:?}");
    store.close().await;

    drop(agent_json);
    drop(agent_cbor);
    assert_eq!(fleet.terminate(), Some(0), "{}", fleet.log());
    assert!(fleet.log().contains("Stopped."), "{}", fleet.log());
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_end_to_end_on_sqlite() {
    serve_end_to_end(support::sqlite()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_end_to_end_on_postgres() {
    serve_end_to_end(support::postgres("serve_end_to_end").await).await
}

// The fleet statistical thresholds end to end (200 things, 20 outliers, SQLite and
// PostgreSQL) are in e2e_fleet.rs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_nothing_is_answered_until_it_is_back() {
    // Its own server: stopping the shared one would break the other tests.
    let server = support::PgServer::start();
    let e = support::postgres_on(&server, "db_down").await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let port = broker.port();
    let config = fleet_config(dir.path(), &e, port, "min_report_interval_secs = 0", "");
    let answers = Answers::start(port);
    let mut fleet = Proc::start(
        Command::new(FLEET).args(["serve", "--config"]).arg(&config),
        dir.path().join("fleet.log"),
    );
    fleet.wait_log("Subscribed.", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    publish(port, &topic("up1"), &report(1_700_000_000));
    answers.wait(&format!("{}/accepted", topic("up1")), 1);

    server.stop();
    publish(port, &topic("down1"), &report(1_700_000_000));
    publish(port, &topic("down2"), &report(1_700_000_000));
    fleet.wait_log("The store is unavailable", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let lines = answers.lines.lock().unwrap().clone();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("down1") || l.contains("down2")),
        "answered while the database was down: {lines:?}"
    );
    assert_eq!(
        fleet.log().matches("The store is unavailable").count(),
        1,
        "logged once per episode:\n{}",
        fleet.log()
    );

    server.restart();
    answers.wait(&format!("{}/accepted", topic("down1")), 1);
    answers.wait(&format!("{}/accepted", topic("down2")), 1);
    fleet.wait_log("The store is available again.", Duration::from_secs(5));
    let store = Store::open(e.settings.clone()).await.unwrap();
    let things = store.things(None, 10).await.unwrap();
    let names: Vec<&str> = things.iter().map(|t| t.thing.as_str()).collect();
    assert_eq!(names, ["down1", "down2", "up1"]);
    store.close().await;
    assert_eq!(fleet.terminate(), Some(0), "{}", fleet.log());
}

/// `[mqtt] topic_root`: an agent and the service on topics of their own (a fleet on AWS IoT
/// Core without Detect); the service ignores Device Defender's topics then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_and_the_service_on_a_topic_root_of_their_own() {
    let e = support::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let port = broker.port();
    let config = fleet_config(dir.path(), &e, port, "min_report_interval_secs = 0", "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen(
            "tls = false\n",
            "tls = false\ntopic_root = \"fleet/{thing}/dd\"\n",
            1,
        ),
    )
    .unwrap();
    let answers = Answers::start_on(
        port,
        &["$aws/things/+/defender/metrics/json/+", "fleet/+/dd/json/+"],
    );
    let mut fleet = Proc::start(
        Command::new(FLEET).args(["serve", "--config"]).arg(&config),
        dir.path().join("fleet.log"),
    );
    fleet.wait_log("Subscribed.", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));

    let state = dir.path().join("agent-root");
    let agent_config = dir.path().join("agent-root.toml");
    std::fs::write(
        &agent_config,
        format!(
            "thing_name = \"gw-root\"\nstate_dir = {state:?}\n[collect]\nsample_interval_secs = 1\n\
             [report]\ninterval_secs = 2\nstartup_jitter_secs = 0\n\
             [mqtt]\nendpoint = \"127.0.0.1\"\nport = {port}\ntls = false\nreconnect_max_secs = 1\n\
             topic_root = \"fleet/{{thing}}/dd\"\n",
            state = state.display().to_string()
        ),
    )
    .unwrap();
    let agent = Proc::start(
        Command::new(agent_binary())
            .args(["run", "--config"])
            .arg(&agent_config)
            .env("DEFENDER_AGENT_LOG", "info,defender_agent=debug"),
        dir.path().join("agent-root.log"),
    );
    agent.wait_log("Report accepted.", Duration::from_secs(30));
    // The status file is rewritten just after the log line: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let a = loop {
        if let Some(a) = status_answer(&state) {
            break a;
        }
        assert!(Instant::now() < deadline, "no answer in the status file");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(a["status"], "accepted", "{a}");

    // Reports on Device Defender's topic are not this service's any more: no answer.
    publish(port, &topic("dd1"), &report(1_700_000_000));
    publish(port, "fleet/t2/dd/json", &report(1_700_000_000));
    let acc = answers.wait("fleet/t2/dd/json/accepted", 1);
    assert_eq!(acc[0]["thingName"], "t2");
    let lines = answers.lines.lock().unwrap().clone();
    assert!(
        !lines.iter().any(|l| l.contains("$aws/things/dd1")),
        "{lines:?}"
    );
    drop(agent);
    assert_eq!(fleet.terminate(), Some(0), "{}", fleet.log());
}

/// Invalidation (detect.md §6.3) for the fleet: a thing that stops reporting with an active
/// violation has it invalidated after two days by the service's sweep (at start and every
/// 300 s), not only when its next report comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_things_violation_is_invalidated_after_two_days_by_the_sweep() {
    use defender_agent::detect::query::{ListActiveViolationsRequest, ListViolationEventsRequest};
    let e = support::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let port = broker.port();
    // Reports up to 10 days old are evaluated (the default is 2 days).
    let config = fleet_config(
        dir.path(),
        &e,
        port,
        "min_report_interval_secs = 0\nmax_late_secs = 864000",
        "",
    );
    let answers = Answers::start(port);
    let mut fleet = Proc::start(
        Command::new(FLEET).args(["serve", "--config"]).arg(&config),
        dir.path().join("fleet.log"),
    );
    fleet.wait_log("Subscribed.", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Three days ago, listening on a port outside TcpPorts' set {22, 443}.
    let rid = now - 3 * 86_400;
    let payload = format!(
        r#"{{"header":{{"report_id":{rid},"version":"1.0"}},"metrics":{{"listening_tcp_ports":{{"ports":[{{"port":8080}}]}}}}}}"#
    );
    publish(port, &topic("quiet1"), &payload);
    answers.wait(&format!("{}/accepted", topic("quiet1")), 1);
    let known: std::collections::BTreeSet<String> = ["FleetP90".to_owned()].into();
    let store = Store::open(e.settings.clone()).await.unwrap();
    let active = store
        .list_active_violations(&known, &ListActiveViolationsRequest::default())
        .await
        .unwrap()
        .active_violations;
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0].thing_name, "quiet1");
    store.close().await;
    assert_eq!(fleet.terminate(), Some(0), "{}", fleet.log());

    // The next start sweeps: silent for three days, more than two.
    let fleet = Proc::start(
        Command::new(FLEET).args(["serve", "--config"]).arg(&config),
        dir.path().join("fleet2.log"),
    );
    fleet.wait_log("Violations invalidated", Duration::from_secs(20));
    let store = Store::open(e.settings.clone()).await.unwrap();
    let active = store
        .list_active_violations(&known, &ListActiveViolationsRequest::default())
        .await
        .unwrap()
        .active_violations;
    assert!(active.is_empty(), "{active:?}");
    let events = store
        .list_violation_events(&ListViolationEventsRequest {
            start_time: 0.0,
            end_time: 4_000_000_000.0,
            ..Default::default()
        })
        .await
        .unwrap()
        .violation_events;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| format!("{:?}", e.violation_event_type))
        .collect();
    assert_eq!(events.len(), 2, "{kinds:?}");
    assert!(
        kinds.iter().any(|k| k.to_lowercase().contains("invalid")),
        "{kinds:?}"
    );
    store.close().await;
    drop(fleet);
}

/// A broker outage: the service reconnects with backoff, subscribes again and answers; each
/// cause of the outage is logged once (the close, then the refused attempts), not per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_outage_the_service_reconnects_subscribes_again_and_answers() {
    let e = support::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start();
    let port = broker.port();
    let config = fleet_config(dir.path(), &e, port, "min_report_interval_secs = 0", "");
    let fleet = Proc::start(
        Command::new(FLEET).args(["serve", "--config"]).arg(&config),
        dir.path().join("fleet.log"),
    );
    fleet.wait_log("Subscribed.", Duration::from_secs(20));
    broker.stop();
    fleet.wait_log("Broker connection failed.", Duration::from_secs(20));
    // A few failed attempts (reconnect_max_secs = 1) before the broker is back.
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet.log().matches("Subscribed.").count() < 4 {
        assert!(
            Instant::now() < deadline,
            "no resubscription:\n{}",
            fleet.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let answers = Answers::start(port);
    publish(port, &topic("back1"), &report(1_700_000_000));
    let a = answers.wait(&format!("{}/accepted", topic("back1")), 1);
    assert_eq!(a[0]["thingName"], "back1");
    let log = fleet.log();
    assert_eq!(
        log.matches("Broker connection failed. cause=connection refused")
            .count(),
        1,
        "refused attempts logged once:\n{log}"
    );
    assert!(
        log.matches("Broker connection failed.").count() <= 2,
        "once per cause:\n{log}"
    );
}

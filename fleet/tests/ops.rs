//! The fleet's operations, with the real binary, a real mosquitto and a real store (SQLite and
//! PostgreSQL): alarms (file output and a webhook served by a real HTTP server in the test, 500
//! then 200), the retention job at start, the counters behind `status`, the `violations` verbs,
//! and SIGHUP reloading the profiles (a bad file keeps the old ones).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use defender_agent::detect::fleet::ThingState as EngineState;
use defender_agent::detect::ViolationEvent;
use defender_fleet::store::{Engine, RecordOutcome, ReportRecord, Store};
use support::mosquitto::Mosquitto;
use support::procs::Proc;
use support::TestEngine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FLEET: &str = env!("CARGO_BIN_EXE_defender-fleet");

/// Alarms when a report's bytes out is over `limit`; a second behavior, the same but
/// suppressed, is stored and never alarmed.
fn profile(limit: u64) -> String {
    format!(
        r#"{{"securityProfileName": "Ops", "behaviors": [
  {{"name": "BytesOutHigh", "metric": "aws:all-bytes-out",
    "criteria": {{"comparisonOperator": "less-than-equals", "value": {{"count": {limit}}},
                  "durationSeconds": 300, "consecutiveDatapointsToAlarm": 1,
                  "consecutiveDatapointsToClear": 1}}}},
  {{"name": "BytesOutQuiet", "metric": "aws:all-bytes-out", "suppressAlerts": true,
    "criteria": {{"comparisonOperator": "less-than-equals", "value": {{"count": {limit}}},
                  "durationSeconds": 300, "consecutiveDatapointsToAlarm": 1,
                  "consecutiveDatapointsToClear": 1}}}}
]}}"#
    )
}

fn publish(port: u16, thing: &str, payload: &str) {
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &format!("$aws/things/{thing}/defender/metrics/json")])
        .args(["-m", payload])
        .status()
        .expect("mosquitto_pub");
    assert!(st.success());
}

fn report(rid: u64, bytes_out: u64) -> String {
    format!(
        r#"{{"header":{{"report_id":{rid},"version":"1.0"}},"metrics":{{"network_stats":{{"bytes_in":1,"bytes_out":{bytes_out},"packets_in":1,"packets_out":1}}}}}}"#
    )
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The service's config for `e` on `port`, with `profiles` and `extra` appended (e.g.
/// `[[alarms]]`); checked with `check-config`.
fn fleet_config(dir: &Path, e: &TestEngine, port: u16, profiles: &Path, extra: &str) -> PathBuf {
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
             client_id = \"fleet-ops-{}\"\nreconnect_max_secs = 1\n\
             [ingest]\nmin_report_interval_secs = 1\n[store]\n{store_toml}\nretention_days = 1\n\
             [detect]\nprofiles = [{:?}]\ndimensions = []\ncustom_metrics = []\n{extra}\n",
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

/// The posts a [`HookServer`] saw: (the status it answered, the body).
type Posts = Arc<Mutex<Vec<(u16, Vec<u8>)>>>;

/// A real HTTP/1.1 server on loopback: answers each POST with the next status of `statuses`
/// (then 200), keeps the bodies.
struct HookServer {
    port: u16,
    seen: Posts,
}

impl HookServer {
    async fn start(statuses: Vec<u16>) -> HookServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Posts = Arc::default();
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let body = loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    assert!(head.starts_with("post /hook?x=1 http/1.1"), "{head}");
                    assert!(head.contains("content-type: application/json"), "{head}");
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .expect("content-length");
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                };
                let Some(body) = body else { continue };
                let status = {
                    let mut seen = s.lock().unwrap();
                    let status = statuses.get(seen.len()).copied().unwrap_or(200);
                    seen.push((status, body));
                    status
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            }
        });
        HookServer { port, seen }
    }

    fn seen(&self) -> Vec<(u16, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn recorded(store: &Store, thing: &str) -> Option<i64> {
    let things = store.things(None, 100).await.unwrap();
    things
        .iter()
        .find(|t| t.thing == thing)
        .map(|t| t.report_count)
}

fn run(args: &[&str], config: &Path) -> (i32, serde_json::Value, String) {
    let out = Command::new(FLEET)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // An API error is the last line of stderr (log lines may come before it).
    let doc = serde_json::from_str(&stdout)
        .or_else(|_| serde_json::from_str(stderr.lines().last().unwrap_or_default()))
        .unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), doc, stdout + &stderr)
}

async fn alarms_retention_status_and_violations(e: TestEngine) {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(profiles.join("ops.json"), profile(100)).unwrap();
    // Old data (2020), older than retention_days = 1: the retention job at start purges it.
    {
        let store = Store::open(e.settings.clone()).await.unwrap();
        let old: ViolationEvent = serde_json::from_value(serde_json::json!({
            "violationId": "old-1", "thingName": "old1", "securityProfileName": "Ops",
            "behavior": {"name": "BytesOutHigh", "metric": "aws:all-bytes-out",
                         "criteria": {"comparisonOperator": "less-than-equals", "value": {"count": 100}}},
            "violationEventType": "in-alarm", "violationEventTime": 1_600_000_000.0,
            "metricValue": {"count": 500}}))
        .unwrap();
        let state = EngineState::default();
        let r = store
            .record_report(&ReportRecord {
                thing: "old1",
                report_id: 1_600_000_000,
                report_time_ms: 1_600_000_000_000,
                received_ms: 1_600_000_000_500,
                payload_bytes: 10,
                expected_version: 0,
                state: &state,
                events: std::slice::from_ref(&old),
                active: None,
                datapoints: &[],
            })
            .await
            .unwrap();
        assert!(matches!(r, RecordOutcome::Recorded { .. }));
        store.close().await;
    }
    let hook = HookServer::start(vec![500]).await;
    let alarms_file = dir.path().join("alarms.jsonl");
    let broker = Mosquitto::start();
    let port = broker.port();
    let config = fleet_config(
        dir.path(),
        &e,
        port,
        &profiles,
        &format!(
            "[[alarms]]\ntype = \"file\"\npath = {:?}\n\
             [[alarms]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook?x=1\"\nattempts = 3\n",
            alarms_file.display().to_string(),
            hook.port
        ),
    );
    let mut fleet = Proc::start(
        Command::new(FLEET).args(["serve", "--config"]).arg(&config),
        dir.path().join("fleet.log"),
    );
    fleet.wait_log("Subscribed.", Duration::from_secs(20));
    fleet.wait_log("Retention: purged", Duration::from_secs(10));
    assert!(fleet.log().contains("reports=1"), "{}", fleet.log());
    std::thread::sleep(Duration::from_millis(200));

    let store = Store::open(e.settings.clone()).await.unwrap();
    let rid = now_secs() - 10;
    publish(port, "hot1", &report(rid, 5000));
    wait_for("hot1 recorded", async || recorded(&store, "hot1").await).await;
    // The same report again: accepted again, not recorded, not alarmed again.
    publish(port, "hot1", &report(rid, 5000));
    publish(port, "bad1", r#"{"header":{"version":"1.0"}}"#);
    publish(port, "thr1", &report(5, 1));
    publish(port, "thr1", &report(6, 1));
    fleet.wait_log("Duplicate report", Duration::from_secs(20));
    fleet.wait_log("throttled", Duration::from_secs(20));

    // The webhook: 500, then the same event again after the pause, 200; nothing else.
    let seen = wait_for("two webhook posts", async || {
        let s = hook.seen();
        (s.len() >= 2).then_some(s)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen_now = hook.seen();
    assert_eq!(
        seen_now.len(),
        2,
        "delivered once after one retry: {seen_now:?}"
    );
    assert_eq!(seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [500, 200]);
    assert_eq!(seen[0].1, seen[1].1);
    let posted: ViolationEvent = serde_json::from_slice(&seen[1].1).unwrap();
    assert_eq!(posted.thing_name, "hot1");
    assert_eq!(posted.behavior.name, "BytesOutHigh");
    // The body is the event as the file output writes it.
    let lines = std::fs::read_to_string(&alarms_file).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert_eq!(lines.trim().as_bytes(), seen[1].1.as_slice());
    store.close().await;

    assert_eq!(fleet.terminate(), Some(0), "{}", fleet.log());

    // status: from the store, after the last counters were written at shutdown.
    let (code, st, text) = run(&["status", "--json"], &config);
    assert_eq!(code, 0, "{text}");
    assert_eq!(st["store"]["engine"], e.name);
    assert!(st["store"]["size_bytes"].as_i64().unwrap() > 0, "{st}");
    assert_eq!(st["things"]["count"], 3, "{st}"); // old1 (its row stays), hot1, thr1
    let names: Vec<&str> = st["things"]["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["thing"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hot1", "old1", "thr1"]);
    let a = &st["answers"];
    assert_eq!(a["received"], 5, "{st}");
    assert_eq!(a["accepted"], 3, "{st}");
    assert_eq!(a["recorded"], 2, "{st}");
    assert_eq!(a["duplicates"], 1, "{st}");
    assert_eq!(a["rejected"]["InvalidPayload"], 1, "{st}");
    assert_eq!(a["rejected"]["Throttled"], 1, "{st}");
    assert_eq!(a["rejected"]["InvalidThingName"], 0, "{st}");
    assert_eq!(st["reports"]["in_window"], 2, "{st}");
    assert_eq!(st["reports"]["total"], 3, "{st}");
    assert_eq!(st["reports"]["retained"], 2, "{st}");
    assert!(st["reports"]["per_sec"].as_f64().unwrap() > 0.0, "{st}");
    assert_eq!(st["violations"]["events"], 2, "{st}"); // hot1's two behaviors
    let (code, _, text) = run(&["status"], &config);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("InvalidPayload 1") && text.contains("Throttled 1"),
        "{text}"
    );
    assert!(
        text.contains("hot1") && text.contains("Things: 3"),
        "{text}"
    );
    let (_, st1, _) = run(&["status", "--json", "--max-things", "1"], &config);
    assert_eq!(st1["things"]["truncated"], true);

    // violations: the agent's verbs over the fleet's store.
    let (code, list, text) = run(
        &[
            "violations",
            "list",
            "--start-time",
            "0",
            "--end-time",
            "2000000000",
        ],
        &config,
    );
    assert_eq!(code, 0, "{text}");
    let events = list["violationEvents"].as_array().unwrap();
    assert_eq!(events.len(), 2, "the 2020 event was purged: {list}");
    assert!(events.iter().all(|e| e["thingName"] == "hot1"));
    let (code, page, _) = run(
        &[
            "violations",
            "list",
            "--start-time",
            "0",
            "--end-time",
            "2000000000",
            "--max-results",
            "1",
        ],
        &config,
    );
    assert_eq!(code, 0);
    let token = page["nextToken"].as_str().expect("a next page").to_owned();
    let (code, page2, text) = run(
        &[
            "violations",
            "list",
            "--start-time",
            "0",
            "--end-time",
            "2000000000",
            "--max-results",
            "1",
            "--next-token",
            &token,
        ],
        &config,
    );
    assert_eq!(code, 0, "{text}");
    assert_ne!(
        page["violationEvents"][0]["violationId"],
        page2["violationEvents"][0]["violationId"]
    );
    let (code, active, text) = run(&["violations", "active", "--thing-name", "hot1"], &config);
    assert_eq!(code, 0, "{text}");
    let active = active["activeViolations"].as_array().unwrap();
    assert_eq!(active.len(), 2, "{active:?}");
    let id = active
        .iter()
        .find(|a| a["behavior"]["name"] == "BytesOutHigh")
        .unwrap()["violationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, err, _) = run(
        &["violations", "active", "--security-profile-name", "Nope"],
        &config,
    );
    assert_eq!(
        (code, err["__type"].as_str()),
        (2, Some("ResourceNotFoundException"))
    );
    let (code, err, _) = run(&["violations", "active", "--max-results", "0"], &config);
    assert_eq!(
        (code, err["__type"].as_str()),
        (2, Some("InvalidRequestException"))
    );
    let (code, err, _) = run(
        &[
            "violations",
            "list",
            "--start-time",
            "yesterday",
            "--end-time",
            "1",
        ],
        &config,
    );
    assert_eq!(code, 2);
    assert_eq!(
        err["message"],
        "startTime \"yesterday\" is not a time: use epoch seconds or RFC 3339"
    );
    let (code, ok, text) = run(
        &[
            "violations",
            "verify",
            &id,
            "--state",
            "TRUE_POSITIVE",
            "--description",
            "seen",
        ],
        &config,
    );
    assert_eq!((code, ok), (0, serde_json::json!({})), "{text}");
    let (_, active, _) = run(
        &[
            "violations",
            "active",
            "--verification-state",
            "TRUE_POSITIVE",
        ],
        &config,
    );
    let active = active["activeViolations"].as_array().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["verificationStateDescription"], "seen");
    let (code, err, _) = run(
        &[
            "violations",
            "verify",
            "no-such-id",
            "--state",
            "TRUE_POSITIVE",
        ],
        &config,
    );
    assert_eq!(
        (code, err["__type"].as_str()),
        (2, Some("InvalidRequestException"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_retention_status_and_violations_on_sqlite() {
    alarms_retention_status_and_violations(support::sqlite()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_retention_status_and_violations_on_postgres() {
    alarms_retention_status_and_violations(support::postgres("ops_e2e").await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_profiles_and_a_bad_file_keeps_the_old_ones() {
    let e = support::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    // Nothing alarms at first: the limit is far above the reports.
    std::fs::write(profiles.join("ops.json"), profile(1_000_000)).unwrap();
    let broker = Mosquitto::start();
    let port = broker.port();
    let config = fleet_config(dir.path(), &e, port, &profiles, "");
    let mut fleet = Proc::start(
        Command::new(FLEET).args(["serve", "--config"]).arg(&config),
        dir.path().join("fleet.log"),
    );
    fleet.wait_log("Subscribed.", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let store = Store::open(e.settings.clone()).await.unwrap();
    let known = ["Ops".to_owned()].into();
    let active = async |thing: &str| {
        let req = defender_agent::detect::query::ListActiveViolationsRequest {
            thing_name: Some(thing.to_owned()),
            ..Default::default()
        };
        store
            .list_active_violations(&known, &req)
            .await
            .unwrap()
            .active_violations
            .len()
    };
    let rid = now_secs() - 10;
    publish(port, "a1", &report(rid, 5000));
    wait_for("a1 recorded", async || recorded(&store, "a1").await).await;
    assert_eq!(active("a1").await, 0);

    // A lower limit, then SIGHUP: in force for the next report.
    std::fs::write(profiles.join("ops.json"), profile(100)).unwrap();
    fleet.signal(libc::SIGHUP);
    fleet.wait_log("Profiles reloaded", Duration::from_secs(10));
    publish(port, "a2", &report(rid, 5000));
    wait_for("a2 recorded", async || recorded(&store, "a2").await).await;
    assert_eq!(active("a2").await, 2, "{}", fleet.log());

    // A broken file: the error is logged once, the profiles in force stay.
    std::fs::write(profiles.join("broken.json"), "{ not json").unwrap();
    fleet.signal(libc::SIGHUP);
    fleet.wait_log("Reload failed", Duration::from_secs(10));
    publish(port, "a3", &report(rid, 5000));
    wait_for("a3 recorded", async || recorded(&store, "a3").await).await;
    assert_eq!(active("a3").await, 2, "{}", fleet.log());
    let log = fleet.log();
    assert_eq!(log.matches("Reload failed").count(), 1, "{log}");
    assert!(
        log.contains("broken.json"),
        "the error names the file: {log}"
    );
    assert_eq!(log.matches("Profiles reloaded").count(), 1, "{log}");
    store.close().await;
    assert_eq!(fleet.terminate(), Some(0), "{}", fleet.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_never_holds_up_the_ingest_and_is_logged_once() {
    let e = support::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(profiles.join("ops.json"), profile(100)).unwrap();
    // A port nobody listens on: every delivery is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let broker = Mosquitto::start();
    let port = broker.port();
    let config = fleet_config(
        dir.path(),
        &e,
        port,
        &profiles,
        &format!(
            "[[alarms]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{dead}/\"\nattempts = 2\n"
        ),
    );
    let mut fleet = Proc::start(
        Command::new(FLEET).args(["serve", "--config"]).arg(&config),
        dir.path().join("fleet.log"),
    );
    fleet.wait_log("Subscribed.", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let store = Store::open(e.settings.clone()).await.unwrap();
    let rid = now_secs() - 10;
    let things: Vec<String> = (0..5).map(|i| format!("w{i}")).collect();
    for t in &things {
        publish(port, t, &report(rid, 5000));
    }
    for t in &things {
        wait_for("recorded", async || recorded(&store, t).await).await;
    }
    // 5 events × 2 tries, 0.5 s apart: the episode is logged once.
    fleet.wait_log("Webhook delivery failed", Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = fleet.log();
    assert_eq!(log.matches("Webhook delivery failed").count(), 1, "{log}");
    assert_eq!(log.matches("Detect alarm.").count(), 5, "{log}");
    store.close().await;
    assert_eq!(fleet.terminate(), Some(0), "{}", fleet.log());
}

/// Counters from two handles (two instances) add up per minute; windows; retention; and the
/// commit hook sees only what was committed.
async fn counters_and_the_commit_hook(e: TestEngine) {
    let seen: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let s = seen.clone();
    let a = Store::open(e.settings.clone())
        .await
        .unwrap()
        .on_commit(move |r| s.lock().unwrap().push((r.thing.to_owned(), r.report_id)));
    let b = Store::open(e.settings.clone()).await.unwrap();
    let t0 = 1_700_000_040_000; // a minute start + 0 s
    a.add_counters(t0 + 5_000, &[("accepted", 2), ("rejected.Throttled", 1)])
        .await
        .unwrap();
    b.add_counters(t0 + 30_000, &[("accepted", 3), ("recorded", 0)])
        .await
        .unwrap();
    b.add_counters(t0 + 60_000, &[("accepted", 1)])
        .await
        .unwrap();
    let all = a.counters_since(0).await.unwrap();
    assert_eq!(
        all,
        [
            ("accepted".to_owned(), 6),
            ("rejected.Throttled".to_owned(), 1)
        ]
    );
    assert_eq!(
        a.counters_since(t0 + 60_000).await.unwrap(),
        [("accepted".to_owned(), 1)]
    );
    assert_eq!(a.counters_start().await.unwrap(), Some(t0));
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ingest_counters")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(rows, 3, "one row per minute and name");
    let p = a.purge_older_than(t0 + 60_000, 1).await.unwrap();
    assert_eq!(p.counters, 2);
    assert_eq!(a.counters_start().await.unwrap(), Some(t0 + 60_000));

    // The hook: recorded reports, after the commit; not a duplicate, not a conflict.
    let state = EngineState::default();
    let rec = |thing: &'static str, id: i64, v: i64| ReportRecord {
        thing,
        report_id: id,
        report_time_ms: id * 1000,
        received_ms: id * 1000,
        payload_bytes: 1,
        expected_version: v,
        state: &state,
        events: &[],
        active: None,
        datapoints: &[],
    };
    assert!(matches!(
        a.record_report(&rec("h1", 1000, 0)).await.unwrap(),
        RecordOutcome::Recorded { .. }
    ));
    assert_eq!(
        a.record_report(&rec("h1", 1000, 1)).await.unwrap(),
        RecordOutcome::Duplicate
    );
    assert_eq!(
        a.record_report(&rec("h1", 1001, 5)).await.unwrap(),
        RecordOutcome::Conflict
    );
    let out = a
        .record_reports(&[rec("h1", 1002, 1), rec("h1", 1000, 2), rec("h2", 7, 0)])
        .await
        .unwrap();
    assert_eq!(out[1], RecordOutcome::Duplicate);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("h1".to_owned(), 1000),
            ("h1".to_owned(), 1002),
            ("h2".to_owned(), 7)
        ]
    );
    // A batch that fails commits nothing and calls nothing.
    b.close().await;
    a.close().await;
    assert!(a.record_reports(&[rec("h3", 1, 0)]).await.is_err());
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_the_commit_hook_on_sqlite() {
    counters_and_the_commit_hook(support::sqlite()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_the_commit_hook_on_postgres() {
    counters_and_the_commit_hook(support::postgres("counters_hook").await).await
}

/// Not a test: the figures for the report. `status` over 100,000 things and 14 days of
/// counters (8 names a minute), on both engines:
/// `cargo test --release -p defender-fleet --test ops measure_status -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_status() {
    for e in [support::sqlite(), support::postgres("measure_status").await] {
        let store = Store::open(e.settings.clone()).await.unwrap();
        let state = EngineState::default();
        let names: Vec<String> = (0..100_000).map(|i| format!("thing-{i:06}")).collect();
        for chunk in names.chunks(1000) {
            let recs: Vec<ReportRecord> = chunk
                .iter()
                .map(|t| ReportRecord {
                    thing: t,
                    report_id: 1_700_000_000,
                    report_time_ms: 1_700_000_000_000,
                    received_ms: 1_700_000_000_000,
                    payload_bytes: 100,
                    expected_version: 0,
                    state: &state,
                    events: &[],
                    active: None,
                    datapoints: &[],
                })
                .collect();
            store.record_reports(&recs).await.unwrap();
        }
        let t0 = 1_700_000_000_000i64 - 14 * 86_400_000;
        let minutes = 14 * 1440;
        for day in 0..14 {
            let mut tx = store.pool().begin().await.unwrap();
            for m in 0..1440 {
                for name in [
                    "received",
                    "accepted",
                    "recorded",
                    "dropped",
                    "rejected.InvalidPayload",
                    "rejected.Throttled",
                    "rejected.InvalidThingName",
                    "rejected.Other",
                ] {
                    sqlx::query(
                        "INSERT INTO ingest_counters (minute_ms, name, count) VALUES ($1, $2, 7)",
                    )
                    .bind(t0 + (day * 1440 + m) * 60_000)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                }
            }
            tx.commit().await.unwrap();
        }
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            let s = defender_fleet::status::read(&store, 1_700_000_000_000, 100)
                .await
                .unwrap();
            best = best.min(start.elapsed());
            assert_eq!(s.things.count, 100_000);
        }
        println!(
            "{}: status over 100000 things and {} counter rows: best of 5 {:?}",
            e.name,
            minutes * 8,
            best
        );
        store.close().await;
    }
}

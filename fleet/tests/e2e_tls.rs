//! End to end over MUTUAL TLS (certificates made by rcgen at test time): mosquitto requiring
//! client certificates; `defender-fleet serve` (SQLite) connecting with its own certificate;
//! two real `defender-agent` daemons (JSON with long keys, CBOR with short keys) and the Python
//! reference agent (PyPI `AWSIoTDeviceDefenderAgentSDK` 2.0, from the test venv) reporting to
//! it and getting `accepted`, each seen from the device's side (the agents' status files and
//! logs, the Python agent's output) and on the answer topics; a malformed report rejected with
//! `InvalidPayload`; the store counting every reporter.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use defender_agent::report::Format;
use defender_fleet::store::Store;
use support::certs::Pki;
use support::mosquitto::Mosquitto;
use support::mqtt::{python_answers, Link, TestClient};
use support::procs::{agent_binary, fleet_config, python_venv, start_fleet, Broker, Proc};

const P90: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/detect/fleet/p90-profile.json"
);

fn start_agent(
    dir: &Path,
    pki: &Pki,
    port: u16,
    thing: &str,
    format: &str,
    keys: &str,
) -> (Proc, PathBuf) {
    let state = dir.join(format!("agent-{thing}"));
    let config = dir.join(format!("agent-{thing}.toml"));
    let c = pki.client(thing);
    std::fs::write(
        &config,
        format!(
            "thing_name = \"{thing}\"\nstate_dir = {:?}\n[collect]\nsample_interval_secs = 1\n\
             [report]\ninterval_secs = 2\nstartup_jitter_secs = 0\nformat = \"{format}\"\nkeys = \"{keys}\"\n\
             [mqtt]\nendpoint = \"localhost\"\nport = {port}\ntls = true\nca_file = {:?}\n\
             cert_file = {:?}\nkey_file = {:?}\nreconnect_max_secs = 1\n",
            state.display().to_string(),
            pki.ca_file().display().to_string(),
            c.cert.display().to_string(),
            c.key.display().to_string(),
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

fn status_answer(state: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(state.join("status.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let a = v.get("last_answer")?.clone();
    (!a.is_null()).then_some(a)
}

/// The Python reference agent, through a three-line wrapper: its command line has no port
/// option (the AWS SDK's `mtls_from_path` defaults to 8883), so the wrapper binds the port.
fn start_python_agent(dir: &Path, pki: &Pki, port: u16, thing: &str) -> Proc {
    let venv = python_venv();
    let wrapper = dir.join("py-agent.py");
    std::fs::write(
        &wrapper,
        format!(
            "import functools\nfrom awsiot import mqtt_connection_builder\n\
             mqtt_connection_builder.mtls_from_path = functools.partial(\
             mqtt_connection_builder.mtls_from_path, port={port})\n\
             from AWSIoTDeviceDefenderAgentSDK import agent\nagent.main()\n"
        ),
    )
    .unwrap();
    let c = pki.client(thing);
    Proc::start_both(
        Command::new(venv.join("bin/python"))
            .arg("-u")
            .arg(&wrapper)
            .args(["-e", "localhost", "-r"])
            .arg(pki.ca_file())
            .arg("-c")
            .arg(&c.cert)
            .arg("-k")
            .arg(&c.key)
            .args(["-id", thing, "-f", "json", "-i", "2", "-cm"]),
        dir.join("py-agent.log"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_two_agents_and_the_python_agent_are_accepted_and_a_malformed_report_is_rejected(
) {
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("{:>6.1} s  {what}", t0.elapsed().as_secs_f64());
    python_venv(); // fail early, before anything starts, if it is missing
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let broker = Mosquitto::start_mutual_tls(&pki);
    let port = broker.port();
    let e = support::sqlite();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::copy(P90, profiles.join("p90.json")).unwrap();
    let config = fleet_config(
        dir.path(),
        &e,
        &Broker::MutualTls(port, &pki),
        "fleet-tls",
        &profiles,
        ["", "min_report_interval_secs = 1", ""],
    );
    // A client without a certificate is refused: the broker really requires mutual TLS.
    let plain = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "x",
            "-m",
            "x",
        ])
        .output()
        .expect("mosquitto_pub (apt-get install -y mosquitto-clients)");
    assert!(!plain.status.success(), "a plain client got in: {plain:?}");

    let watcher = TestClient::connect(port, "watcher", Link::MutualTls(&pki)).await;
    let mut fleet = start_fleet(&config);
    assert!(
        broker.log().contains("New client connected from 127.0.0.1")
            && broker.log().contains("as fleet-tls"),
        "{}",
        broker.log()
    );

    let (agent_json, state_json) = start_agent(dir.path(), &pki, port, "gw-json", "json", "long");
    let (agent_cbor, state_cbor) = start_agent(dir.path(), &pki, port, "gw-cbor", "cbor", "short");
    let py = start_python_agent(dir.path(), &pki, port, "py-agent");
    phase("fleet and agents started");

    // The agents' own view: status file and log.
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
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        agent.wait_log("Report accepted.", Duration::from_secs(10));
    }
    phase("both agents accepted");
    // The answer topics: JSON answers to the JSON agent, CBOR answers to the CBOR agent.
    let a = watcher
        .wait_for("gw-json", 1, Duration::from_secs(10), |a| a.accepted)
        .await;
    assert_eq!(a[0].format, Format::Json);
    assert_eq!(a[0].doc["status"], "ACCEPTED");
    let a = watcher
        .wait_for("gw-cbor", 1, Duration::from_secs(10), |a| a.accepted)
        .await;
    assert_eq!(a[0].format, Format::Cbor);
    assert_eq!(a[0].doc["thingName"], "gw-cbor");

    // The Python agent: it skips its first sample, then publishes every 2 s; it prints the
    // answers it receives on its accepted/rejected subscriptions.
    let py_answers = watcher
        .wait_for("py-agent", 2, Duration::from_secs(40), |_| true)
        .await;
    assert!(
        py_answers.iter().all(|a| a.accepted),
        "{py_answers:#?}\nfleet log:\n{}",
        fleet.log()
    );
    phase("the Python agent accepted");
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = python_answers(&py.log);
        if seen.len() >= 2 {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the Python agent printed no answers:\n{}",
            py.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (topic, payload) in &seen {
        assert_eq!(
            topic,
            "$aws/things/py-agent/defender/metrics/json/accepted",
            "{}",
            py.log()
        );
        assert!(payload.contains("\"status\":\"ACCEPTED\""), "{payload}");
    }

    // Malformed (no report_id), from a client of its own.
    let bad = TestClient::connect(port, "bad1", Link::MutualTls(&pki)).await;
    bad.publish_report(
        "bad1",
        Format::Json,
        br#"{"header":{"version":"1.0"}}"#.to_vec(),
    )
    .await;
    let r = watcher
        .wait_for("bad1", 1, Duration::from_secs(10), |_| true)
        .await;
    assert!(!r[0].accepted);
    assert_eq!(r[0].code.as_deref(), Some("InvalidPayload"), "{:?}", r[0]);
    assert_eq!(r[0].doc["status"], "REJECTED");
    assert!(r[0].doc.get("reportId").is_none(), "{}", r[0].doc);
    // Not JSON at all, on the cbor topic: rejected in CBOR.
    bad.publish_report("bad1", Format::Cbor, b"\xff\x00 not cbor".to_vec())
        .await;
    let r = watcher
        .wait_for("bad1", 1, Duration::from_secs(10), |a| {
            a.format == Format::Cbor
        })
        .await;
    assert_eq!(r[0].code.as_deref(), Some("InvalidPayload"), "{:?}", r[0]);

    phase("malformed reports rejected");
    drop(agent_json);
    drop(agent_cbor);
    drop(py);
    assert_eq!(fleet.terminate(), Some(0), "{}", fleet.log());
    let store = Store::open(e.settings.clone()).await.unwrap();
    let things = store.things(None, 100).await.unwrap();
    let count = |t: &str| {
        things
            .iter()
            .find(|s| s.thing == t)
            .map_or(0, |s| s.report_count)
    };
    for t in ["gw-json", "gw-cbor", "py-agent"] {
        assert!(count(t) >= 1, "{t}: {things:?}");
    }
    assert_eq!(count("bad1"), 0, "{things:?}");
    // Every accepted Python report is in the store.
    for a in &py_answers {
        let rid = a.report_id.expect("an accepted answer names its report");
        assert!(
            store.has_report("py-agent", rid as i64).await.unwrap(),
            "py-agent report {rid}"
        );
    }
    store.close().await;
    phase("done");
}

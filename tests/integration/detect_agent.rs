//! Detect in the daemon and on the command line: the real binary against a real mosquitto over
//! mutual TLS, a listening port raising and clearing an alarm on the MQTT alarm topic, the
//! violationId surviving a restart, the `violations` and `detect` commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use defender_agent::mqtt::tls;
use rumqttc::{
    AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

use crate::support::certs::Pki;
use crate::support::endpoint::{accept_any_report, DefenderEndpoint};
use crate::support::mosquitto::{Mosquitto, MosquittoOptions};
use crate::support::{agent_bin, fixture};

const THING: &str = "gw-detect";
const ALARM_TOPIC: &str = "alarms/gw-detect";

/// A test client: subscribed to the alarm topic (and any others), every message's topic and JSON
/// in order; it can also publish.
pub(crate) struct Subscriber {
    pub(crate) rx: mpsc::Receiver<(String, serde_json::Value)>,
    client: AsyncClient,
}

impl Subscriber {
    async fn start(broker: &Mosquitto, pki: &Pki) -> Subscriber {
        Subscriber::start_on(broker, pki, &[ALARM_TOPIC]).await
    }

    /// Subscribed to `topics` (QoS 1) before it returns.
    pub(crate) async fn start_on(broker: &Mosquitto, pki: &Pki, topics: &[&str]) -> Subscriber {
        Subscriber::connect(broker, Some(pki), topics).await
    }

    /// Over TLS with a client certificate of `pki`, or plain MQTT.
    async fn connect(broker: &Mosquitto, pki: Option<&Pki>, topics: &[&str]) -> Subscriber {
        let mut options = MqttOptions::new("alarm-subscriber", "localhost", broker.port());
        options.set_keep_alive(Duration::from_secs(30));
        if let Some(pki) = pki {
            tls::install_ring_provider();
            let files = pki.client("alarm-subscriber");
            let config = tls::client_config(pki.ca_file(), &files.cert, &files.key, vec![])
                .expect("subscriber TLS config");
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, rx) = mpsc::channel(64);
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let sub = client.clone();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // One SUBSCRIBE: its SUBACK means every topic is subscribed.
                        let _ = sub.try_subscribe_many(
                            topics
                                .iter()
                                .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce)),
                        );
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload)
                            .unwrap_or_else(|e| serde_json::json!({"unparsable": e.to_string()}));
                        if tx.send((p.topic.clone(), v)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
            .await
            .expect("test subscriber subscribed within 10 s");
        Subscriber { rx, client }
    }

    /// Publishes `payload` (QoS 1).
    pub(crate) async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("queue a publish");
    }

    /// The next message's JSON, waiting at most `within`.
    pub(crate) async fn next(
        &mut self,
        within: Duration,
        agent_log: impl Fn() -> String,
    ) -> serde_json::Value {
        self.next_with_topic(within, agent_log).await.1
    }

    /// The next message's topic and JSON, waiting at most `within`.
    pub(crate) async fn next_with_topic(
        &mut self,
        within: Duration,
        agent_log: impl Fn() -> String,
    ) -> (String, serde_json::Value) {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(v)) => v,
            _ => panic!("no message within {within:?}; agent log:\n{}", agent_log()),
        }
    }
}

/// The agent binary; killed on drop.
pub(crate) struct Agent {
    pub(crate) child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    pub(crate) fn start(dir: &Path, config: &Path) -> Agent {
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("agent-{n}.log"));
        let child = Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("DEFENDER_AGENT_LOG", "info,defender_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start defender-agent");
        Agent {
            child: Some(child),
            log,
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "exit {status:?}; log:\n{}", self.log());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The start of an agent config for the daemon tests: `thing`, `state_dir`, 1 s samples and
/// reports without jitter, the `[mqtt]` table `mqtt` (from `Mosquitto::mqtt_toml`) with fast
/// reconnects. Callers append `[detect]` and `[[alarms]]`.
pub(crate) fn agent_toml(thing: &str, state: &Path, mqtt: &str) -> String {
    format!(
        "thing_name = \"{thing}\"\nstate_dir = {state:?}\nshutdown_timeout_secs = 5\n\
         [collect]\nsample_interval_secs = 1\n\
         [report]\ninterval_secs = 1\nstartup_jitter_secs = 0\nmax_list_len = 10000\n\
         {mqtt}reconnect_min_secs = 1\nreconnect_max_secs = 2\n",
        state = state.display().to_string(),
    )
}

pub(crate) fn cli(args: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(args)
        .env("DEFENDER_AGENT_LOG", "warn")
        .output()
        .expect("run defender-agent")
}

pub(crate) fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

pub(crate) fn ports_of(v: &serde_json::Value) -> Vec<u64> {
    v["metricValue"]["ports"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_u64()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_port_raises_an_alarm_that_survives_a_restart_and_clears_when_closed() {
    let pki = Pki::new();
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
    let _endpoint = DefenderEndpoint::start(&broker, &pki, accept_any_report).await;
    let mut alarms = Subscriber::start(&broker, &pki).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    // A port nobody else uses: the behavior forbids exactly it. (An `in-port-set` allowing only
    // port 1 would also see the broker's and parallel tests' ports, so it could never clear.)
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        format!(
            r#"{{"securityProfileName":"NoDebugPort","securityProfileArn":"arn:aws:iot:eu-west-1:123456789012:securityprofile/NoDebugPort",
            "behaviors":[{{"name":"DebugPortClosed","metric":"aws:listening-tcp-ports",
            "criteria":{{"comparisonOperator":"not-in-port-set","value":{{"ports":[{port}]}},
            "consecutiveDatapointsToAlarm":1,"consecutiveDatapointsToClear":1}}}}],
            "version":1,"creationDate":1764000000.0,"lastModifiedDate":1764000000.0}}"#
        ),
    )
    .unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "{base}\
             [detect]\nprofiles = [{profile:?}]\n\
             [[alarms]]\ntype = \"mqtt\"\ntopic = \"{ALARM_TOPIC}\"\nqos = 1\n",
            base = agent_toml(THING, &state, &broker.mqtt_toml(&pki, THING)),
            profile = profile.display().to_string(),
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();

    let mut agent = Agent::start(dir.path(), &config);
    let raised = alarms.next(Duration::from_secs(20), || agent.log()).await;
    assert_eq!(raised["violationEventType"], "in-alarm", "{raised}");
    assert_eq!(raised["thingName"], THING);
    assert_eq!(raised["securityProfileName"], "NoDebugPort");
    assert!(ports_of(&raised).contains(&u64::from(port)), "{raised}");
    let id = raised["violationId"].as_str().unwrap().to_owned();

    // Restart while in alarm: the violation is restored with its id, and not raised again.
    agent.terminate();
    let active = json_of(&cli(&["violations", "active", "--config", config_arg]));
    assert_eq!(active["activeViolations"][0]["violationId"], id.as_str());
    let agent2 = Agent::start(dir.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !agent2.log().contains("Report spooled.") {
        assert!(Instant::now() < deadline, "no report:\n{}", agent2.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent2.log().contains("active=1"), "{}", agent2.log());
    // A SIGHUP reload restarts the loop: state saved, then restored with the violation.
    let pid = agent2.child.as_ref().map_or(0, |c| c.id() as i32);
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent2.log().matches("Detect started.").count() < 2 {
        assert!(Instant::now() < deadline, "no reload:\n{}", agent2.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        agent2.log().matches("active=1").count(),
        2,
        "{}",
        agent2.log()
    );

    drop(listener);
    let cleared = alarms.next(Duration::from_secs(20), || agent2.log()).await;
    assert_eq!(cleared["violationEventType"], "alarm-cleared", "{cleared}");
    assert_eq!(
        cleared["violationId"],
        id.as_str(),
        "same violation after the restart"
    );

    // The store: ListViolationEvents newest first, verification, bad arguments.
    let list = json_of(&cli(&[
        "violations",
        "list",
        "--config",
        config_arg,
        "--start-time",
        "0",
        "--end-time",
        "4102444800",
    ]));
    let events = list["violationEvents"].as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["violationEventType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["alarm-cleared", "in-alarm"], "{list}");
    assert!(events.iter().all(|e| e["violationId"] == id.as_str()));
    let verify = cli(&[
        "violations",
        "verify",
        &id,
        "--state",
        "BENIGN_POSITIVE",
        "--description",
        "lab",
        "--config",
        config_arg,
    ]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let list = json_of(&cli(&[
        "violations",
        "list",
        "--config",
        config_arg,
        "--start-time",
        "2000-01-01T00:00:00Z",
        "--end-time",
        "2100-01-01T00:00:00Z",
        "--verification-state",
        "BENIGN_POSITIVE",
        "--max-results",
        "1",
    ]));
    assert_eq!(
        list["violationEvents"].as_array().unwrap().len(),
        1,
        "{list}"
    );
    assert_eq!(
        list["violationEvents"][0]["verificationStateDescription"],
        "lab"
    );
    assert!(list["nextToken"].is_string(), "{list}");
    let bad = cli(&[
        "violations",
        "list",
        "--config",
        config_arg,
        "--start-time",
        "0",
        "--end-time",
        "1",
        "--max-results",
        "0",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let err: serde_json::Value = serde_json::from_slice(&bad.stderr).expect("API error JSON");
    assert_eq!(err["__type"], "InvalidRequestException");
    let unknown = cli(&[
        "violations",
        "verify",
        "nope",
        "--state",
        "TRUE_POSITIVE",
        "--config",
        config_arg,
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    drop(agent2);
}

/// The issue's own scenario, made exact by a private network namespace: an `in-port-set`
/// allow-list holding only the broker's port; a listener outside it raises an in-alarm on the MQTT
/// alarm topic, the violation id survives a restart, closing the listener clears it. In the same
/// run, `aws:source-ip-address` is evaluated from the configured `[detect] source_ip` at each
/// connection (one datapoint per connection: no second in-alarm after the restart).
#[test]
fn in_port_set_allow_list_and_configured_source_ip_in_a_private_network() {
    crate::support::netns::run_isolated_async(allow_list_scenario);
}

async fn allow_list_scenario() {
    let pki = Pki::new();
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
    let _endpoint = DefenderEndpoint::start(&broker, &pki, accept_any_report).await;
    let mut alarms = Subscriber::start(&broker, &pki).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        format!(
            r#"{{"securityProfileName":"AllowList","behaviors":[
            {{"name":"OnlyBrokerPort","metric":"aws:listening-tcp-ports",
             "criteria":{{"comparisonOperator":"in-port-set","value":{{"ports":[{port}]}},
             "consecutiveDatapointsToAlarm":1,"consecutiveDatapointsToClear":1}}}},
            {{"name":"KnownUplink","metric":"aws:source-ip-address",
             "criteria":{{"comparisonOperator":"in-cidr-set","value":{{"cidrs":["198.51.100.0/24"]}}}}}}],
            "version":1}}"#,
            port = broker.port()
        ),
    )
    .unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "{base}\
             [detect]\nprofiles = [{profile:?}]\nsource_ip = \"203.0.113.10\"\n\
             [[alarms]]\ntype = \"mqtt\"\ntopic = \"{ALARM_TOPIC}\"\nqos = 1\n",
            base = agent_toml(THING, &state, &broker.mqtt_toml(&pki, THING)),
            profile = profile.display().to_string(),
        ),
    )
    .unwrap();

    let mut agent = Agent::start(dir.path(), &config);
    // Only the broker listens in this namespace: the first alarm is the uplink address.
    let uplink = alarms.next(Duration::from_secs(20), || agent.log()).await;
    assert_eq!(uplink["behavior"]["name"], "KnownUplink", "{uplink}");
    assert_eq!(uplink["violationEventType"], "in-alarm");
    assert_eq!(
        uplink["metricValue"]["cidrs"],
        serde_json::json!(["203.0.113.10"]),
        "{uplink}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent.log().matches("Report spooled.").count() < 2 {
        assert!(Instant::now() < deadline, "no reports:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        alarms.rx.try_recv().is_err(),
        "the broker's own port is allowed: no port alarm yet"
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = u64::from(listener.local_addr().unwrap().port());
    let raised = alarms.next(Duration::from_secs(20), || agent.log()).await;
    assert_eq!(raised["behavior"]["name"], "OnlyBrokerPort", "{raised}");
    assert_eq!(raised["violationEventType"], "in-alarm");
    assert!(ports_of(&raised).contains(&port), "{raised}");
    let id = raised["violationId"].as_str().unwrap().to_owned();

    agent.terminate();
    let agent2 = Agent::start(dir.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !agent2.log().contains("Report spooled.") {
        assert!(Instant::now() < deadline, "no report:\n{}", agent2.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(listener);
    let cleared = alarms.next(Duration::from_secs(20), || agent2.log()).await;
    assert_eq!(cleared["behavior"]["name"], "OnlyBrokerPort", "{cleared}");
    assert_eq!(cleared["violationEventType"], "alarm-cleared");
    assert_eq!(
        cleared["violationId"],
        id.as_str(),
        "same id after the restart"
    );
    // The reconnection gave a second uplink datapoint: still in alarm, so no new event.
    assert!(alarms.rx.try_recv().is_err());
    let active = json_of(&cli(&[
        "violations",
        "active",
        "--config",
        config.to_str().unwrap(),
    ]));
    let names: Vec<&str> = active["activeViolations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["behavior"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["KnownUplink"], "{active}");
}

/// `via = "tap"`: alarms published on the local broker of `[tap]` over a connection of their own
/// (the tap never publishes). The agent runs `--dry-run` (no AWS link at all): offline alarms on
/// the gateway's own broker are exactly the case for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_via_the_tap_go_to_the_local_broker_on_a_connection_of_their_own() {
    let broker = Mosquitto::start(MosquittoOptions::plain());
    let mut local = Subscriber::connect(&broker, None, &["gateway/alarms"]).await;
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        format!(
            r#"{{"securityProfileName":"NoDebugPort","behaviors":[{{"name":"DebugPortClosed","metric":"aws:listening-tcp-ports",
            "criteria":{{"comparisonOperator":"not-in-port-set","value":{{"ports":[{port}]}}}}}}]}}"#
        ),
    )
    .unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "thing_name = \"{THING}\"\nstate_dir = {state:?}\n\
             [collect]\nsample_interval_secs = 1\n\
             [report]\ninterval_secs = 1\nstartup_jitter_secs = 0\nmax_list_len = 10000\n\
             [tap]\nhost = \"127.0.0.1\"\nport = {broker_port}\noutbound = [\"sensors/#\"]\n\
             [detect]\nprofiles = [{profile:?}]\n\
             [[alarms]]\ntype = \"mqtt\"\ntopic = \"gateway/alarms\"\nqos = 1\nvia = \"tap\"\n",
            state = dir.path().join("state").display().to_string(),
            profile = profile.display().to_string(),
            broker_port = broker.port(),
        ),
    )
    .unwrap();
    let n = std::fs::read_dir(dir.path())
        .map(|d| d.count())
        .unwrap_or(0);
    let log = dir.path().join(format!("agent-{n}.log"));
    let mut child = Command::new(agent_bin())
        .args(["run", "--dry-run", "--config"])
        .arg(&config)
        .env("DEFENDER_AGENT_LOG", "info,defender_agent=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start defender-agent");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let (topic, raised) = local
        .next_with_topic(Duration::from_secs(20), read_log)
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(topic, "gateway/alarms");
    assert_eq!(raised["violationEventType"], "in-alarm", "{raised}");
    assert_eq!(raised["securityProfileName"], "NoDebugPort");
    assert!(
        broker.log().contains(&format!("{THING}-tap-alarms")),
        "the alarms have a connection of their own:\n{}",
        broker.log()
    );
    drop(listener);
}

fn replay_args(extra: &[&str]) -> Vec<String> {
    let f = |n: &str| fixture(&format!("detect/{n}")).display().to_string();
    let mut v: Vec<String> = vec![
        "detect".into(),
        "replay".into(),
        "--profile".into(),
        f("replay-profile.json"),
        "--dimension".into(),
        f("replay-dimension.json"),
        "--custom-metric".into(),
        f("replay-custom-metric.json"),
        "--thing-name".into(),
        "t1".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn detect_replay_prints_the_golden_events_and_the_active_violations_as_a_second_document() {
    let input = fixture("detect/replay-basic.jsonl").display().to_string();
    let args = replay_args(&["--input", &input, "--active"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(docs.len(), 2, "{text}");
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("detect/replay-basic.expected.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(docs[0]["violationEvents"], golden["violationEvents"]);
    assert_eq!(docs[1]["activeViolations"], golden["activeViolations"]);
    // Deterministic.
    assert_eq!(String::from_utf8(cli(&args).stdout).unwrap(), text);
}

#[test]
fn detect_replay_bad_input_is_a_clear_error_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "order.jsonl",
            "{\"time\":5,\"tick\":{}}\n{\"time\":4,\"tick\":{}}\n",
            "line 2: time 4 is before the previous time 5",
        ),
        (
            "json.jsonl",
            "{\"time\":5,\"tick\":{}}\n{\"time\": 6, oops}\n",
            "line 2:",
        ),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let args = replay_args(&["--input", p.to_str().unwrap()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(want), "{name}: {stderr}");
    }
    // A profile with a wrong value kind, and one that is not JSON: file, line, column, field.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let kind = dir.path().join("kind.json");
    std::fs::write(
        &kind,
        "{\"securityProfileName\":\"x\",\n\"behaviors\":[{\"name\":\"b\",\"metric\":\"aws:num-messages-sent\",\"criteria\":{\"comparisonOperator\":\"less-than\",\"value\":{\"ports\":\"x\"},\"durationSeconds\":300}}]}",
    )
    .unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"securityProfileName\":\"x\",\n oops}").unwrap();
    for (file, want) in [
        (&kind, "kind.json:2:"),
        (&kind, "behaviors[0].criteria.value.ports"),
        (&broken, "broken.json:2:2"),
    ] {
        let out = cli(&[
            "detect",
            "replay",
            "--profile",
            file.to_str().unwrap(),
            "--input",
            empty.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
    // A missing dimension and an unknown metric: the profile is refused, naming both.
    let input = fixture("detect/replay-basic.jsonl").display().to_string();
    let out = cli(&[
        "detect",
        "replay",
        "--profile",
        fixture("detect/replay-profile.json").to_str().unwrap(),
        "--input",
        &input,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("dimension AuthTopics does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("metric batteryPercentage is not a known metric"),
        "{stderr}"
    );
}

#[test]
fn detect_validate_prints_the_api_response_and_exits_2_when_invalid() {
    let ok = cli(&[
        "detect",
        "validate",
        fixture("detect/validate-s12-valid.json").to_str().unwrap(),
    ]);
    assert_eq!(ok.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"valid": true, "validationErrors": []})
    );
    let bad = cli(&[
        "detect",
        "validate",
        fixture("detect/validate-s12-invalid.json")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert!(v["validationErrors"][0]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("consecutiveDatapointsToAlarm 100000"));
    // A wrong value kind is a malformed behavior, not a crash.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kind.json");
    std::fs::write(
        &p,
        r#"{"behaviors":[{"name":"b","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"greater-than","value":{"ports":[1]},"durationSeconds":300}}]}"#,
    )
    .unwrap();
    let out = cli(&["detect", "validate", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_example_profiles_load_in_load_mode_through_the_cli() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("empty.jsonl");
    std::fs::write(&input, "").unwrap();
    let out = cli(&[
        "detect",
        "replay",
        "--mode",
        "load",
        "--profile",
        root.to_str().unwrap(),
        "--dimension",
        root.join("dimensions").to_str().unwrap(),
        "--custom-metric",
        root.join("custom-metrics").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"violationEvents": []}));
}

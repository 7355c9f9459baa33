//! The MQTT link against a real mosquitto over mutual TLS: publishing and answers in both
//! encodings, certificate and hostname failures with backoff, ALPN, broker outages, ACL
//! refusals and shutdown; reconnect loops (an oversize retained answer, two links with one
//! client id) and an expired server certificate logged once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use defender_agent::mqtt::{
    self, tls, AttemptFailure, AuthorizationFailure, LinkCommand, LinkEvent, LinkHandle,
    LinkTraffic, Settings,
};
use defender_agent::report::Format as ReportFormat;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::certs::{CertFiles, Pki, TestCa};
use crate::support::endpoint::{accept_any_report, DefenderEndpoint, Verdict};
use crate::support::logs::Logs;
use crate::support::mosquitto::{Mosquitto, MosquittoOptions};

/// Bound on every wait for an event (never a timing assertion: tests pass as soon as it comes).
const WAIT: Duration = Duration::from_secs(20);

fn settings(port: u16, pki_ca: &std::path::Path, client: &CertFiles, thing: &str) -> Settings {
    Settings {
        endpoint: "localhost".into(),
        port,
        proxy: None,
        tls: true,
        ca_file: pki_ca.to_path_buf(),
        cert_file: client.cert.clone(),
        key_file: client.key.clone(),
        alpn: String::new(),
        client_id: thing.into(),
        thing_name: thing.into(),
        format: ReportFormat::Json,
        topic_root: Default::default(),
        keep_alive: Duration::from_secs(30),
        clean_session: true,
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        answer_timeout: mqtt::DEFAULT_ANSWER_TIMEOUT,
        subscriptions: Vec::new(),
    }
}

struct Running {
    link: LinkHandle,
    task: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(settings: Settings) -> Running {
    let shutdown = CancellationToken::new();
    let (link, task) = mqtt::spawn(settings, shutdown.clone()).expect("spawn link");
    Running {
        link,
        task,
        shutdown,
    }
}

/// The next event satisfying `want` (others are skipped), within [`WAIT`].
async fn next_event(
    events: &mut mpsc::Receiver<LinkEvent>,
    mut want: impl FnMut(&LinkEvent) -> bool,
) -> LinkEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if want(&event) => return event,
            Ok(Some(_)) => {}
            Ok(None) => panic!("link event channel closed"),
            Err(_) => panic!("expected link event did not come within {WAIT:?}"),
        }
    }
}

async fn connected(events: &mut mpsc::Receiver<LinkEvent>) {
    next_event(events, |e| matches!(e, LinkEvent::Connected)).await;
}

/// The failed attempts seen, with their arrival instants, until `count` of them.
async fn failed_attempts(
    events: &mut mpsc::Receiver<LinkEvent>,
    count: usize,
) -> Vec<(Instant, AttemptFailure)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match next_event(events, |e| {
            matches!(
                e,
                LinkEvent::Connected
                    | LinkEvent::Traffic(LinkTraffic::ConnectionAttempt { failure: Some(_) })
            )
        })
        .await
        {
            LinkEvent::Traffic(LinkTraffic::ConnectionAttempt {
                failure: Some(failure),
            }) => seen.push((Instant::now(), failure)),
            other => panic!("connection should have been refused, got {other:?}"),
        }
    }
    seen
}

fn json_report(id: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "header": { "report_id": id, "version": "1.0" },
        "metrics": {}
    }))
    .unwrap()
}

fn cbor_report(id: u64) -> Vec<u8> {
    let doc = serde_json::json!({ "hed": { "rid": id, "v": "1.0" }, "met": {} });
    let mut out = Vec::new();
    ciborium::into_writer(&doc, &mut out).unwrap();
    out
}

fn mutual_tls_broker() -> (Pki, Mosquitto) {
    let pki = Pki::new();
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
    (pki, broker)
}

#[tokio::test]
async fn a_json_report_is_acknowledged_and_answered_accepted_with_its_report_id() {
    let (pki, broker) = mutual_tls_broker();
    let mut endpoint = DefenderEndpoint::start(&broker, &pki, accept_any_report).await;
    let mut run = start(settings(
        broker.port(),
        pki.ca_file(),
        &pki.client("dev1"),
        "dev1",
    ))
    .await;
    connected(&mut run.link.events).await;

    let payload = json_report(1_700_000_001);
    run.link
        .commands
        .send(LinkCommand::PublishReport {
            id: 1_700_000_001,
            payload: payload.clone(),
        })
        .await
        .unwrap();

    let sent = next_event(&mut run.link.events, |e| {
        matches!(e, LinkEvent::Traffic(LinkTraffic::PublishSent { .. }))
    })
    .await;
    assert_eq!(
        sent,
        LinkEvent::Traffic(LinkTraffic::PublishSent {
            topic: "$aws/things/dev1/defender/metrics/json".into(),
            payload_bytes: payload.len(),
        })
    );
    next_event(&mut run.link.events, |e| {
        *e == LinkEvent::ReportSent { id: 1_700_000_001 }
    })
    .await;
    let LinkEvent::Answer { accepted, payload } = next_event(&mut run.link.events, |e| {
        matches!(e, LinkEvent::Answer { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(accepted);
    let answer: Value = serde_json::from_slice(&payload).expect("JSON answer on the JSON topic");
    assert_eq!(answer["reportId"], 1_700_000_001u64);
    assert_eq!(answer["status"], "ACCEPTED");
    assert_eq!(answer["thingName"], "dev1");

    let report = endpoint.next_report().await;
    assert_eq!(report.payload, json_report(1_700_000_001));
    assert_eq!(report.report_id, Some(1_700_000_001));
}

#[tokio::test]
async fn a_cbor_report_is_answered_in_cbor_on_the_cbor_accepted_topic() {
    let (pki, broker) = mutual_tls_broker();
    let mut endpoint = DefenderEndpoint::start(&broker, &pki, accept_any_report).await;
    let mut s = settings(
        broker.port(),
        pki.ca_file(),
        &pki.client("dev-cbor"),
        "dev-cbor",
    );
    s.format = ReportFormat::Cbor;
    let mut run = start(s).await;
    connected(&mut run.link.events).await;

    run.link
        .commands
        .send(LinkCommand::PublishReport {
            id: 7,
            payload: cbor_report(7),
        })
        .await
        .unwrap();
    next_event(&mut run.link.events, |e| {
        *e == LinkEvent::ReportSent { id: 7 }
    })
    .await;
    let LinkEvent::Answer { accepted, payload } = next_event(&mut run.link.events, |e| {
        matches!(e, LinkEvent::Answer { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(accepted);
    assert!(
        serde_json::from_slice::<Value>(&payload).is_err(),
        "a CBOR topic's answer must not be JSON"
    );
    let answer: ciborium::Value = ciborium::from_reader(payload.as_slice()).expect("CBOR answer");
    let map = answer.as_map().expect("CBOR map");
    let get = |k: &str| {
        map.iter()
            .find(|(key, _)| key.as_text() == Some(k))
            .map(|(_, v)| v)
    };
    assert_eq!(get("reportId").and_then(|v| v.as_integer()), Some(7.into()));
    assert_eq!(get("status").and_then(|v| v.as_text()), Some("ACCEPTED"));

    let report = endpoint.next_report().await;
    assert_eq!(report.format, ReportFormat::Cbor);
    assert_eq!(report.report_id, Some(7));
}

#[tokio::test]
async fn a_rejected_answer_is_delivered_as_not_accepted() {
    let (pki, broker) = mutual_tls_broker();
    let endpoint = DefenderEndpoint::start(&broker, &pki, accept_any_report).await;
    endpoint.set_verdict(Verdict::Reject);
    let mut run = start(settings(
        broker.port(),
        pki.ca_file(),
        &pki.client("dev2"),
        "dev2",
    ))
    .await;
    connected(&mut run.link.events).await;

    run.link
        .commands
        .send(LinkCommand::PublishReport {
            id: 99,
            payload: json_report(99),
        })
        .await
        .unwrap();
    let LinkEvent::Answer { accepted, payload } = next_event(&mut run.link.events, |e| {
        matches!(e, LinkEvent::Answer { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(!accepted);
    let answer: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(answer["status"], "REJECTED");
    assert_eq!(answer["reportId"], 99);
    assert_eq!(answer["statusDetails"]["ErrorCode"], "InvalidPayload");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_and_retried_with_growing_backoff() {
    let (pki, broker) = mutual_tls_broker();
    let rogue = TestCa::new(pki.dir(), "rogue");
    let mut s = settings(
        broker.port(),
        pki.ca_file(),
        &rogue.client_cert("dev3"),
        "dev3",
    );
    // Far above the four delays looked at, so none of them is capped (capped delays jitter).
    s.reconnect_max = Duration::from_secs(10);
    let mut run = start(s).await;

    let attempts = failed_attempts(&mut run.link.events, 4).await;
    eprintln!(
        "causes: {:?}",
        attempts.iter().map(|(_, f)| &f.cause).collect::<Vec<_>>()
    );
    for (_, failure) in &attempts {
        assert!(
            failure.cause.starts_with("TLS:") && failure.cause.contains("alert"),
            "cause should name TLS: {}",
            failure.cause
        );
    }
    let delays: Vec<Duration> = attempts.iter().map(|(_, f)| f.retry_in).collect();
    assert!(
        delays.windows(2).all(|w| w[0] <= w[1]),
        "backoff must not shrink: {delays:?}"
    );
    assert!(delays[3] > delays[0], "backoff must grow: {delays:?}");
    for (pair, delay) in attempts.windows(2).zip(&delays) {
        assert!(
            pair[1].0 - pair[0].0 >= *delay,
            "retried before its backoff"
        );
    }
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_is_refused_naming_the_cause() {
    let (pki, broker) = mutual_tls_broker();
    let other = TestCa::new(pki.dir(), "other");
    let mut run = start(settings(
        broker.port(),
        other.ca_file(),
        &pki.client("dev4"),
        "dev4",
    ))
    .await;
    let attempts = failed_attempts(&mut run.link.events, 2).await;
    let cause = &attempts[0].1.cause;
    assert!(
        cause.starts_with("TLS:") && cause.contains("UnknownIssuer"),
        "{cause}"
    );
}

#[tokio::test]
async fn a_server_certificate_for_another_host_name_is_refused() {
    let pki = Pki::new();
    let wrong = pki.ca.server_cert("wrong-name", &["broker.other.example"]);
    let mut options = MosquittoOptions::mutual_tls(&pki);
    let tls_files = options.tls.as_mut().unwrap();
    tls_files.certfile = wrong.cert;
    tls_files.keyfile = wrong.key;
    let broker = Mosquitto::start(options);
    let mut run = start(settings(
        broker.port(),
        pki.ca_file(),
        &pki.client("dev5"),
        "dev5",
    ))
    .await;
    let attempts = failed_attempts(&mut run.link.events, 2).await;
    let cause = &attempts[0].1.cause;
    assert!(
        cause.starts_with("TLS:") && cause.contains("not valid for name"),
        "{cause}"
    );
}

#[tokio::test]
async fn an_ip_literal_endpoint_is_verified_against_the_certificate_ip_address() {
    let (pki, broker) = mutual_tls_broker();
    let mut s = broker.link_settings(&pki, "dev17");
    s.endpoint = "127.0.0.1".into();
    let mut run = start(s).await;
    connected(&mut run.link.events).await;
}

#[tokio::test]
async fn a_persistent_session_connects_and_publishes() {
    let (pki, broker) = mutual_tls_broker();
    let mut s = broker.link_settings(&pki, "dev18");
    s.clean_session = false;
    let mut run = start(s).await;
    connected(&mut run.link.events).await;
    run.link
        .commands
        .send(LinkCommand::PublishReport {
            id: 18,
            payload: json_report(18),
        })
        .await
        .unwrap();
    next_event(&mut run.link.events, |e| {
        *e == LinkEvent::ReportSent { id: 18 }
    })
    .await;
}

#[tokio::test]
async fn a_configured_alpn_still_connects_to_mosquitto() {
    // mosquitto 2.0.11 has no ALPN option and ignores the extension.
    let (pki, broker) = mutual_tls_broker();
    let mut s = settings(broker.port(), pki.ca_file(), &pki.client("dev6"), "dev6");
    s.alpn = tls::AWS_MQTT_ALPN.into();
    let mut run = start(s).await;
    connected(&mut run.link.events).await;
}

#[tokio::test]
async fn the_alpn_protocol_is_offered_in_the_tls_handshake() {
    use rumqttc::tokio_rustls::{rustls::ServerConfig, TlsAcceptor};

    let pki = Pki::new();
    tls::install_ring_provider();
    let chain = CertificateDer::pem_file_iter(&pki.server.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki.server.key).unwrap();
    let mut server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![b"x-amzn-mqtt-ca".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let negotiated = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.expect("handshake");
        tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    });

    let mut s = settings(port, pki.ca_file(), &pki.client("dev7"), "dev7");
    s.alpn = "x-amzn-mqtt-ca".into();
    let _run = start(s).await;
    let alpn = tokio::time::timeout(WAIT, negotiated)
        .await
        .expect("no TLS connection")
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"x-amzn-mqtt-ca"[..]));
}

#[tokio::test]
async fn a_broker_restart_is_a_disconnect_then_a_reconnect_and_publishing_resumes() {
    let (pki, mut broker) = mutual_tls_broker();
    let mut endpoint = DefenderEndpoint::start(&broker, &pki, accept_any_report).await;
    let mut run = start(settings(
        broker.port(),
        pki.ca_file(),
        &pki.client("dev8"),
        "dev8",
    ))
    .await;
    connected(&mut run.link.events).await;

    broker.stop();
    let LinkEvent::Disconnected { cause } = next_event(&mut run.link.events, |e| {
        matches!(e, LinkEvent::Disconnected { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(!cause.is_empty());
    broker.restart();
    connected(&mut run.link.events).await;
    endpoint.wait_subscribed(2).await;

    run.link
        .commands
        .send(LinkCommand::PublishReport {
            id: 2,
            payload: json_report(2),
        })
        .await
        .unwrap();
    next_event(&mut run.link.events, |e| {
        *e == LinkEvent::ReportSent { id: 2 }
    })
    .await;
    let answer = next_event(&mut run.link.events, |e| {
        matches!(e, LinkEvent::Answer { .. })
    })
    .await;
    assert!(matches!(answer, LinkEvent::Answer { accepted: true, .. }));
    assert_eq!(endpoint.next_report().await.report_id, Some(2));
}

#[tokio::test]
async fn a_report_queued_during_an_outage_is_published_after_reconnecting() {
    let (pki, mut broker) = mutual_tls_broker();
    let mut run = start(settings(
        broker.port(),
        pki.ca_file(),
        &pki.client("dev9"),
        "dev9",
    ))
    .await;
    connected(&mut run.link.events).await;
    broker.stop();
    next_event(&mut run.link.events, |e| {
        matches!(e, LinkEvent::Disconnected { .. })
    })
    .await;
    // Waits in the command channel while offline; taken and PUBACKed once connected again.
    run.link
        .commands
        .send(LinkCommand::PublishReport {
            id: 3,
            payload: json_report(3),
        })
        .await
        .unwrap();
    broker.restart();
    let event = next_event(&mut run.link.events, |e| {
        matches!(e, LinkEvent::Connected | LinkEvent::ReportSent { .. })
    })
    .await;
    assert_eq!(event, LinkEvent::Connected, "nothing is sent while offline");
    next_event(&mut run.link.events, |e| {
        *e == LinkEvent::ReportSent { id: 3 }
    })
    .await;
}

/// mosquitto 2.0.11's `acl_file` never refuses a SUBSCRIBE (it only filters delivery), so the
/// refusal comes from the dynamic-security plugin Debian ships with mosquitto.
#[tokio::test]
async fn a_subscription_denied_by_the_broker_is_an_authorization_failure_naming_the_topic() {
    let pki = Pki::new();
    let rejected = "$aws/things/dev10/defender/metrics/json/rejected";
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki).with_subscribe_denied(
        pki.dir(),
        "dev10",
        &[rejected],
    ));
    let mut run = start(settings(
        broker.port(),
        pki.ca_file(),
        &pki.client("dev10"),
        "dev10",
    ))
    .await;
    connected(&mut run.link.events).await;
    let event = next_event(&mut run.link.events, |e| {
        matches!(e, LinkEvent::Traffic(LinkTraffic::AuthorizationFailure(_)))
    })
    .await;
    assert_eq!(
        event,
        LinkEvent::Traffic(LinkTraffic::AuthorizationFailure(
            AuthorizationFailure::Subscribe {
                filter: rejected.into()
            }
        )),
        "{}",
        broker.log()
    );
}

#[tokio::test]
async fn cancelling_sends_disconnect_and_ends_the_task() {
    let (pki, broker) = mutual_tls_broker();
    let mut run = start(broker.link_settings(&pki, "dev11")).await;
    connected(&mut run.link.events).await;
    run.shutdown.cancel();
    tokio::time::timeout(WAIT, &mut run.task)
        .await
        .expect("link task did not end after cancel")
        .expect("link task panicked");
    assert!(
        broker.wait_for_log("Received DISCONNECT from dev11", WAIT),
        "no DISCONNECT at the broker:\n{}",
        broker.log()
    );
}

#[tokio::test]
async fn an_oversized_payload_is_refused_and_the_connection_stays_up() {
    let (pki, broker) = mutual_tls_broker();
    let mut run = start(settings(
        broker.port(),
        pki.ca_file(),
        &pki.client("dev12"),
        "dev12",
    ))
    .await;
    connected(&mut run.link.events).await;
    run.link
        .commands
        .send(LinkCommand::PublishReport {
            id: 5,
            payload: vec![b'x'; mqtt::MAX_PAYLOAD_BYTES + 1],
        })
        .await
        .unwrap();
    let refused = next_event(&mut run.link.events, |e| {
        matches!(e, LinkEvent::CommandRefused { .. })
    })
    .await;
    assert!(matches!(
        refused,
        LinkEvent::CommandRefused {
            report_id: Some(5),
            ..
        }
    ));
    // A report at the limit still goes through on the same connection.
    run.link
        .commands
        .send(LinkCommand::PublishReport {
            id: 6,
            payload: vec![b'x'; mqtt::MAX_PAYLOAD_BYTES],
        })
        .await
        .unwrap();
    let event = next_event(&mut run.link.events, |e| {
        matches!(
            e,
            LinkEvent::ReportSent { .. } | LinkEvent::Disconnected { .. }
        )
    })
    .await;
    assert_eq!(event, LinkEvent::ReportSent { id: 6 });
}

#[tokio::test]
async fn plaintext_is_used_when_tls_is_false_for_a_local_broker() {
    let broker = Mosquitto::start(MosquittoOptions::plain());
    let mut s = settings(
        broker.port(),
        "/nonexistent".as_ref(),
        &CertFiles {
            cert: "/nonexistent".into(),
            key: "/nonexistent".into(),
        },
        "dev13",
    );
    s.tls = false;
    s.endpoint = "127.0.0.1".into();
    let mut run = start(s).await;
    connected(&mut run.link.events).await;
}

#[tokio::test]
async fn a_connack_refusal_is_an_authorization_failure_and_is_retried() {
    // No certificate identity and no anonymous access: CONNACK 5 (not authorized).
    let mut options = MosquittoOptions::plain();
    options.extra = "allow_anonymous false\n".into();
    let broker = Mosquitto::start(options);
    let none = CertFiles {
        cert: "/nonexistent".into(),
        key: "/nonexistent".into(),
    };
    let mut s = settings(broker.port(), "/nonexistent".as_ref(), &none, "dev15");
    s.tls = false;
    s.endpoint = "127.0.0.1".into();
    let mut run = start(s).await;
    let event = next_event(&mut run.link.events, |e| {
        matches!(
            e,
            LinkEvent::Connected | LinkEvent::Traffic(LinkTraffic::AuthorizationFailure(_))
        )
    })
    .await;
    assert_eq!(
        event,
        LinkEvent::Traffic(LinkTraffic::AuthorizationFailure(
            AuthorizationFailure::Connect {
                code: "NotAuthorized".into()
            }
        ))
    );
    let attempts = failed_attempts(&mut run.link.events, 2).await;
    assert!(
        attempts[1].1.cause.contains("NotAuthorized"),
        "{:?}",
        attempts[1].1
    );
}

#[tokio::test]
async fn spawn_fails_at_start_naming_an_unreadable_key_file() {
    let pki = Pki::new();
    let client = pki.client("dev14");
    let mut s = settings(8883, pki.ca_file(), &client, "dev14");
    s.key_file = pki.dir().join("missing.key.pem");
    let err = mqtt::spawn(s, CancellationToken::new()).unwrap_err();
    assert!(err.to_string().contains("missing.key.pem"), "{err}");
}

#[tokio::test]
async fn a_key_readable_by_others_is_only_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let (pki, broker) = mutual_tls_broker();
    let s = broker.link_settings(&pki, "dev19");
    std::fs::set_permissions(&s.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut run = start(s).await;
    connected(&mut run.link.events).await;
}

#[test]
fn the_support_config_snippet_is_valid_toml_naming_the_broker() {
    let pki = Pki::new();
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
    let doc: toml::Value = toml::from_str(&broker.mqtt_toml(&pki, "dev16")).expect("valid TOML");
    let mqtt = &doc["mqtt"];
    assert_eq!(mqtt["port"].as_integer(), Some(i64::from(broker.port())));
    assert_eq!(mqtt["endpoint"].as_str(), Some("localhost"));
    assert!(std::path::Path::new(mqtt["key_file"].as_str().unwrap()).is_file());
}

/// Plain-MQTT link settings for `broker` on 127.0.0.1 (no certificates needed).
fn plain_settings(broker: &Mosquitto, thing: &str) -> Settings {
    let none = CertFiles {
        cert: "/nonexistent".into(),
        key: "/nonexistent".into(),
    };
    let mut s = settings(broker.port(), "/nonexistent".as_ref(), &none, thing);
    s.tls = false;
    s.endpoint = "127.0.0.1".into();
    s
}

/// Publishes a retained QoS 1 message on a plain broker and waits for its PUBACK.
async fn publish_retained(port: u16, topic: &str, payload: Vec<u8>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new("poisoner", "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload)
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("retained publish failed: {other:?}"),
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
}

/// The `LinkEvent::Connected` instants within `window` from now.
async fn connects_within(events: &mut mpsc::Receiver<LinkEvent>, window: Duration) -> Vec<Instant> {
    let deadline = tokio::time::Instant::now() + window;
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if event == LinkEvent::Connected {
            seen.push(Instant::now());
        }
    }
    seen
}

#[tokio::test]
async fn an_oversize_retained_answer_does_not_make_a_reconnect_loop_and_is_logged_once() {
    let logs = Logs::capture();
    let broker = Mosquitto::start(MosquittoOptions::plain());
    let accepted = mqtt::topics::accepted_topic("dev21", ReportFormat::Json);
    publish_retained(broker.port(), &accepted, vec![b'x'; 200 * 1024]).await;
    let mut s = plain_settings(&broker, "dev21");
    s.clean_session = false;
    s.reconnect_min = Duration::from_millis(250);
    s.reconnect_max = Duration::from_secs(10);
    let mut run = start(s).await;
    // Without the stability rule every connection is retried after 250–500 ms: 10 or more in
    // 5 s. With it the delays double: at most 0 + 0.25 + 0.5 + 1 + 2 s fit.
    let connects = connects_within(&mut run.link.events, Duration::from_secs(5)).await;
    assert!(connects.len() >= 2, "the link reconnects: {connects:?}");
    assert!(connects.len() <= 5, "{} connects in 5 s", connects.len());
    assert_eq!(
        logs.lines_with_all(&["packet above the link's limit", "size=204", "limit=135168"]),
        1,
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn two_links_with_one_client_id_say_so_once_each_and_retry_at_the_cap() {
    let logs = Logs::capture();
    let broker = Mosquitto::start(MosquittoOptions::plain());
    let twin = |endpoint: &str| {
        let mut s = plain_settings(&broker, "twin");
        s.endpoint = endpoint.into();
        s.reconnect_min = Duration::from_millis(100);
        s.reconnect_max = Duration::from_secs(2);
        s
    };
    let mut first = start(twin("127.0.0.1")).await;
    connected(&mut first.link.events).await;
    let mut second = start(twin("localhost")).await;
    let clash = "another client may be using client id twin";
    let deadline = Instant::now() + WAIT;
    let both_said = |logs: &Logs| {
        logs.lines_with_all(&[clash, "127.0.0.1"]) >= 1
            && logs.lines_with_all(&[clash, "localhost"]) >= 1
    };
    while !both_said(&logs) {
        assert!(Instant::now() < deadline, "no clash line:\n{}", logs.text());
        // Keep the event channels drained while the links fight.
        let _ = tokio::time::timeout(Duration::from_millis(50), first.link.events.recv()).await;
        let _ = tokio::time::timeout(Duration::from_millis(50), second.link.events.recv()).await;
    }
    // Events of the fight so far are not part of the count.
    while first.link.events.try_recv().is_ok() || second.link.events.try_recv().is_ok() {}
    // Both now wait 1–2 s (reconnect_max 2 s) before each attempt, and each stays connected
    // until the rival's wait ends: connects of one link are at least 2 s apart, so at most 3
    // in 4 s (without the rule it would be one every 100–400 ms).
    let (a, b) = tokio::join!(
        connects_within(&mut first.link.events, Duration::from_secs(4)),
        connects_within(&mut second.link.events, Duration::from_secs(4)),
    );
    assert!(a.len() <= 3 && b.len() <= 3, "{a:?} {b:?}");
    assert!(a.len() + b.len() >= 1, "they still try");
    assert_eq!(
        logs.lines_with_all(&[clash, "127.0.0.1"]),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(
        logs.lines_with_all(&[clash, "localhost"]),
        1,
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_one_warning_for_many_attempts() {
    let logs = Logs::capture();
    let pki = Pki::new();
    let expired = pki
        .ca
        .expired_server_cert("expired", &crate::support::certs::SERVER_NAMES);
    let mut options = MosquittoOptions::mutual_tls(&pki);
    let tls_files = options.tls.as_mut().unwrap();
    tls_files.certfile = expired.cert;
    tls_files.keyfile = expired.key;
    let broker = Mosquitto::start(options);
    let mut run = start(settings(
        broker.port(),
        pki.ca_file(),
        &pki.client("dev22"),
        "dev22",
    ))
    .await;
    // 50 ms doubling to 400 ms: 10 attempts span about 3 s, so the verification time in the
    // error's text changes several times.
    let attempts = failed_attempts(&mut run.link.events, 10).await;
    let texts: std::collections::BTreeSet<&str> =
        attempts.iter().map(|(_, f)| f.cause.as_str()).collect();
    assert!(
        attempts.iter().all(|(_, f)| f.cause.contains("expired")),
        "{texts:?}"
    );
    assert_eq!(
        logs.lines_with_all(&["WARN", "MQTT connection attempt failed"]),
        1,
        "{} distinct texts:\n{}",
        texts.len(),
        logs.text()
    );
}

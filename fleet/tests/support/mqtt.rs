//! A test-side MQTT client on the agent's own [`Session`] (plain, or mutual TLS with a
//! certificate of the test PKI): it subscribes to every answer topic
//! (`$aws/things/+/defender/metrics/{json,cbor}/+`, or those of another `[mqtt] topic_root`),
//! keeps every answer it sees, and publishes reports. Its task runs on the test's tokio runtime
//! and stops on drop.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use defender_agent::mqtt::session::{self, Options, ReconnectPolicy, Session, SessionEvent};
use defender_agent::mqtt::topics::TopicRoot;
use defender_agent::report::outcome::{self, Status};
use defender_agent::report::Format;
use rumqttc::{AsyncClient, Packet, QoS};

use super::certs::Pki;

/// One answer seen on `.../accepted` or `.../rejected`.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The thing (from the topic).
    pub thing: String,
    /// `json` or `cbor`.
    pub format: Format,
    /// `reportId`, when present.
    pub report_id: Option<u64>,
    /// Accepted?
    pub accepted: bool,
    /// `statusDetails.ErrorCode` of a rejection.
    pub code: Option<String>,
    /// The payload as JSON (a CBOR answer converted).
    pub doc: serde_json::Value,
}

#[derive(Default)]
struct Seen {
    all: Vec<Answer>,
    /// (thing, report id) → index of its first answer.
    first: HashMap<(String, u64), usize>,
}

/// A connected client.
pub struct TestClient {
    client: AsyncClient,
    root: TopicRoot,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// How to reach the broker.
pub enum Link<'a> {
    /// Plain MQTT on 127.0.0.1.
    Plain,
    /// Mutual TLS to `localhost` with a fresh client certificate of the PKI (CN = client id).
    MutualTls(&'a Pki),
}

impl TestClient {
    /// Connects as `client_id`, subscribes to the answers, waits for the SUBACK (20 s at most).
    pub async fn connect(port: u16, client_id: &str, link: Link<'_>) -> TestClient {
        TestClient::connect_root(port, client_id, link, TopicRoot::default()).await
    }

    /// [`TestClient::connect`] for the topics of `root`.
    pub async fn connect_root(
        port: u16,
        client_id: &str,
        link: Link<'_>,
        root: TopicRoot,
    ) -> TestClient {
        let tls = match link {
            Link::Plain => None,
            Link::MutualTls(pki) => {
                let c = pki.client(client_id);
                Some(session::Tls {
                    ca_file: pki.ca_file().to_path_buf(),
                    cert_file: c.cert,
                    key_file: c.key,
                    alpn: Vec::new(),
                    key_label: "Private key",
                })
            }
        };
        let host = if tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let mut s = Session::new(Options {
            client_id: client_id.to_owned(),
            host: host.to_owned(),
            port,
            proxy: None,
            tls,
            keep_alive: Duration::from_secs(30),
            clean_session: true,
            packet_limits: Some(session::PacketLimits {
                incoming: 256 * 1024,
                outgoing: 256 * 1024,
            }),
            inflight: Some(100),
            request_channel_capacity: 1024,
            reconnect: ReconnectPolicy {
                min: Duration::from_millis(100),
                max: Duration::from_secs(1),
                stable_after: Duration::from_secs(30),
            },
            describe: session::describe,
        })
        .expect("the test client's TLS files");
        let client = s.client();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let task = {
            let seen = seen.clone();
            let client = client.clone();
            let root = root.clone();
            tokio::spawn(async move {
                let mut subscribed = Some(subscribed_tx);
                let mut subacks = 0;
                loop {
                    match s.next().await {
                        SessionEvent::Connected { .. } => {
                            for f in [Format::Json, Format::Cbor] {
                                let filter = format!("{}/+", root.publish_filter(f));
                                let _ = client.subscribe(filter, QoS::AtLeastOnce).await;
                            }
                        }
                        SessionEvent::Incoming(Packet::SubAck(_)) => {
                            // Two filters, two SUBACKs: the second one opens the gate.
                            subacks += 1;
                            if subacks >= 2 {
                                if let Some(tx) = subscribed.take() {
                                    let _ = tx.send(());
                                }
                            }
                        }
                        SessionEvent::Incoming(Packet::Publish(p)) => {
                            if let Some(a) = parse_answer(&root, &p.topic, &p.payload) {
                                let mut g = lock(&seen);
                                if let Some(rid) = a.report_id {
                                    let n = g.all.len();
                                    g.first.entry((a.thing.clone(), rid)).or_insert(n);
                                }
                                g.all.push(a);
                            }
                        }
                        _ => {}
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(20), subscribed_rx)
            .await
            .expect("the test client did not subscribe within 20 s")
            .expect("the test client's task ended");
        TestClient {
            client,
            root,
            seen,
            task,
        }
    }

    /// Publishes (QoS 1) a report for `thing` on its `format` topic.
    pub async fn publish_report(&self, thing: &str, format: Format, payload: Vec<u8>) {
        self.publish(&self.root.publish_topic(thing, format), payload)
            .await;
    }

    /// Publishes (QoS 1) anything on `topic`.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("queue a PUBLISH");
    }

    /// Every answer seen so far.
    pub fn answers(&self) -> Vec<Answer> {
        lock(&self.seen).all.clone()
    }

    /// The first answer seen for `(thing, report_id)`.
    pub fn answer_for(&self, thing: &str, report_id: u64) -> Option<Answer> {
        let g = lock(&self.seen);
        let i = *g.first.get(&(thing.to_owned(), report_id))?;
        g.all.get(i).cloned()
    }

    /// Waits (bounded) until `n` answers for `thing` match `pred`; returns them.
    pub async fn wait_for(
        &self,
        thing: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Answer) -> bool,
    ) -> Vec<Answer> {
        let deadline = Instant::now() + timeout;
        loop {
            let got: Vec<Answer> = lock(&self.seen)
                .all
                .iter()
                .filter(|a| a.thing == thing && pred(a))
                .cloned()
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} matching answer(s) for {thing} not seen within {timeout:?}; all answers for it: {:#?}",
                lock(&self.seen)
                    .all
                    .iter()
                    .filter(|a| a.thing == thing)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse_answer(root: &TopicRoot, topic: &str, payload: &[u8]) -> Option<Answer> {
    let (report_topic, status) = topic.rsplit_once('/')?;
    if status != "accepted" && status != "rejected" {
        return None;
    }
    let (thing, format) = root.parse_publish_topic(report_topic)?;
    let o = outcome::parse(payload, format).ok()?;
    let doc = match format {
        Format::Json => serde_json::from_slice(payload).ok()?,
        Format::Cbor => ciborium::from_reader::<serde_json::Value, _>(payload).ok()?,
    };
    let (accepted, code) = match &o.status {
        Status::Accepted => (true, None),
        Status::Rejected { code, .. } => (false, Some(code.clone())),
    };
    assert_eq!(
        accepted,
        status == "accepted",
        "an answer's status does not match its topic {topic}: {doc}"
    );
    Some(Answer {
        thing: thing.to_owned(),
        format,
        report_id: o.report_id,
        accepted,
        code,
        doc,
    })
}

/// The answers a device sees for its reports, from the Python agent's stdout (it prints
/// "Received message from topic '<topic>': b'<payload>'" for each).
pub fn python_answers(log: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Received message from topic '")?;
            let (topic, payload) = rest.split_once("': ")?;
            Some((topic.to_owned(), payload.to_owned()))
        })
        .collect()
}

//! A stand-in for AWS Device Defender on a test broker: subscribes to every thing's report
//! topics and answers each report on `.../accepted` (or `.../rejected`) in the report's own
//! encoding, echoing its `reportId`, like the service does (spec: metrics-report.md A.3).
//!
//! ```ignore
//! let mut endpoint = DefenderEndpoint::start(&broker, &pki, accept_any_report).await;
//! // … the agent publishes …
//! let report = endpoint.next_report().await;   // what arrived, and how it was answered
//! endpoint.set_verdict(Verdict::Reject);       // answer the next ones on .../rejected
//! ```
//! HOOK for the lead: pass `report::validate` (adapted to [`Validate`]) instead of
//! [`accept_any_report`] so that every report published in the integration tests is checked
//! against the spec; a report that fails is answered on `.../rejected` with `InvalidPayload` and
//! the reason, and [`ReceivedReport::invalid`] holds it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::Value as Cbor;
use defender_agent::mqtt::tls;
use defender_agent::mqtt::topics;
use defender_agent::report::Format as ReportFormat;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::certs::Pki;
use super::mosquitto::Mosquitto;

/// The filter the endpoint subscribes to: every thing's publish topics, not the answer topics.
pub const REPORTS_FILTER: &str = "$aws/things/+/defender/metrics/+";
/// The endpoint's MQTT client id (and certificate CN, hence its ACL user name).
pub const ENDPOINT_CLIENT_ID: &str = "defender-endpoint";
/// Reports kept for the test to read before the endpoint waits.
const REPORTS_CAPACITY: usize = 64;
/// Bound on every wait in this helper.
const WAIT: Duration = Duration::from_secs(15);

/// Checks a report's bytes; `Err(reason)` answers it as rejected `InvalidPayload`.
pub type Validate = fn(ReportFormat, &[u8]) -> Result<(), String>;

/// A [`Validate`] that accepts every payload (until the lead plugs in `report::validate`).
pub fn accept_any_report(_: ReportFormat, _: &[u8]) -> Result<(), String> {
    Ok(())
}

/// How the endpoint answers valid reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// On `.../accepted` (the default).
    Accept,
    /// On `.../rejected`, as if the service had refused it.
    Reject,
}

/// One report the endpoint received and answered.
#[derive(Debug, Clone)]
pub struct ReceivedReport {
    /// Thing name from the topic.
    pub thing: String,
    /// Encoding from the topic.
    pub format: ReportFormat,
    /// The report bytes.
    pub payload: Vec<u8>,
    /// `header.report_id` / `hed.rid`, if it could be read.
    pub report_id: Option<u64>,
    /// Why validation failed, if it did.
    pub invalid: Option<String>,
    /// True if answered on `.../accepted`.
    pub accepted: bool,
}

/// The running endpoint; stops when dropped.
pub struct DefenderEndpoint {
    reports: mpsc::Receiver<ReceivedReport>,
    reject: Arc<AtomicBool>,
    subscribed: watch::Receiver<u64>,
    cancel: CancellationToken,
}

impl DefenderEndpoint {
    /// Connects to `broker` over mutual TLS as [`ENDPOINT_CLIENT_ID`] (certificate from `pki`),
    /// subscribes, and returns once the broker confirmed the subscription.
    pub async fn start(broker: &Mosquitto, pki: &Pki, validate: Validate) -> DefenderEndpoint {
        tls::install_ring_provider();
        let client_files = pki.client(ENDPOINT_CLIENT_ID);
        let config =
            tls::client_config(pki.ca_file(), &client_files.cert, &client_files.key, vec![])
                .expect("endpoint TLS config");
        let mut options = MqttOptions::new(ENDPOINT_CLIENT_ID, "localhost", broker.port());
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(256 * 1024, 256 * 1024)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (reports_tx, reports) = mpsc::channel(REPORTS_CAPACITY);
        let (subscribed_tx, subscribed) = watch::channel(0u64);
        let reject = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let (task_reject, task_cancel) = (reject.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = task_cancel.cancelled() => return,
                    event = eventloop.poll() => event,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .try_subscribe(REPORTS_FILTER, QoS::AtLeastOnce)
                            .expect("queue endpoint subscribe");
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subscribed_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Some((thing, format)) = topics::parse_publish_topic(&p.topic) else {
                            continue;
                        };
                        let verdict = if task_reject.load(Ordering::SeqCst) {
                            Verdict::Reject
                        } else {
                            Verdict::Accept
                        };
                        let report = judge(thing, format, &p.payload, validate, verdict);
                        let suffix = if report.accepted {
                            "accepted"
                        } else {
                            "rejected"
                        };
                        let answer = answer(&report);
                        client
                            .try_publish(
                                format!("{}/{suffix}", p.topic),
                                QoS::AtLeastOnce,
                                false,
                                answer,
                            )
                            .expect("queue endpoint answer");
                        // The test may not read every report; never block the broker connection.
                        let _ = reports_tx.try_send(report);
                    }
                    Ok(_) => {}
                    // Broker outage: retry soon, the test restarts it.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let mut endpoint = DefenderEndpoint {
            reports,
            reject,
            subscribed,
            cancel,
        };
        endpoint.wait_subscribed(1).await;
        endpoint
    }

    /// Answer the following reports on `.../accepted` or `.../rejected`.
    pub fn set_verdict(&self, verdict: Verdict) {
        self.reject
            .store(verdict == Verdict::Reject, Ordering::SeqCst);
    }

    /// Waits (bounded) until the endpoint has subscribed `count` times in total — after a broker
    /// restart, wait for the next count before publishing.
    pub async fn wait_subscribed(&mut self, count: u64) {
        tokio::time::timeout(WAIT, self.subscribed.wait_for(|n| *n >= count))
            .await
            .unwrap_or_else(|_| {
                panic!("defender endpoint not subscribed {count} time(s) within {WAIT:?}")
            })
            .expect("endpoint task ended");
    }

    /// How many times the endpoint has subscribed so far.
    pub fn subscriptions(&self) -> u64 {
        *self.subscribed.borrow()
    }

    /// The next report received (bounded wait).
    pub async fn next_report(&mut self) -> ReceivedReport {
        tokio::time::timeout(WAIT, self.reports.recv())
            .await
            .unwrap_or_else(|_| panic!("no report reached the defender endpoint within {WAIT:?}"))
            .expect("endpoint task ended")
    }
}

impl Drop for DefenderEndpoint {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn judge(
    thing: &str,
    format: ReportFormat,
    payload: &[u8],
    validate: Validate,
    verdict: Verdict,
) -> ReceivedReport {
    let invalid = validate(format, payload).err();
    ReceivedReport {
        thing: thing.to_string(),
        format,
        payload: payload.to_vec(),
        report_id: report_id(format, payload),
        accepted: invalid.is_none() && verdict == Verdict::Accept,
        invalid,
    }
}

/// `header.report_id` (long keys) or `hed.rid` (short keys), in either encoding.
pub fn report_id(format: ReportFormat, payload: &[u8]) -> Option<u64> {
    match format {
        ReportFormat::Json => {
            let doc: Json = serde_json::from_slice(payload).ok()?;
            doc.get("header")
                .and_then(|h| h.get("report_id"))
                .or_else(|| doc.get("hed").and_then(|h| h.get("rid")))
                .and_then(Json::as_u64)
        }
        ReportFormat::Cbor => {
            let doc: Cbor = ciborium::from_reader(payload).ok()?;
            let header = cbor_get(&doc, "header").or_else(|| cbor_get(&doc, "hed"))?;
            let id = cbor_get(header, "report_id").or_else(|| cbor_get(header, "rid"))?;
            id.as_integer().and_then(|i| u64::try_from(i).ok())
        }
    }
}

fn cbor_get<'a>(map: &'a Cbor, key: &str) -> Option<&'a Cbor> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

/// The service's answer document (spec: metrics-report.md A.3), in the report's encoding.
pub fn answer(report: &ReceivedReport) -> Vec<u8> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut doc = json!({
        "thingName": report.thing,
        "status": if report.accepted { "ACCEPTED" } else { "REJECTED" },
        "timestamp": timestamp,
    });
    if let Some(id) = report.report_id {
        doc["reportId"] = json!(id);
    }
    if !report.accepted {
        doc["statusDetails"] = json!({
            "ErrorCode": "InvalidPayload",
            "ErrorMessage": report.invalid.as_deref().unwrap_or("Malformed metrics report"),
        });
    }
    match report.format {
        ReportFormat::Json => serde_json::to_vec(&doc).expect("serialize JSON answer"),
        ReportFormat::Cbor => {
            let mut out = Vec::new();
            ciborium::into_writer(&doc, &mut out).expect("serialize CBOR answer");
            out
        }
    }
}

//! The MQTT link to Device Defender (rumqttc over rustls): connects with mutual TLS, publishes
//! what the agent tells it, and reports what happened as [`LinkEvent`]s.
//!
//! The link task owns its [`session::Session`] (and so rumqttc's `EventLoop`) and polls it
//! without pause; the agent talks to it only through a [`LinkHandle`] (two bounded channels,
//! two closed enums). It holds no domain state: the spool decides what to publish and when, the
//! link only makes sure that a report it has taken is written until the broker acknowledges it
//! (or the link is cancelled).
//!
//! Delivery contract:
//! - A command is taken from the channel only while connected and while fewer than
//!   [`MAX_INFLIGHT`] publishes are unacknowledged; otherwise it waits in the channel
//!   (back-pressure on the agent, which holds the reports in its spool).
//! - A taken QoS 1/2 publish is retransmitted after a reconnect until the broker acknowledges it:
//!   by rumqttc when the broker resumed the session, by the link when the session is new.
//!   [`LinkEvent::ReportSent`] follows the PUBACK.
//! - Answers on `.../accepted` / `.../rejected` are passed on raw ([`LinkEvent::Answer`]); the
//!   agent parses them (they carry the `reportId`, spec: metrics-report.md D.13) and owns the
//!   answer timeout and the retries (on the same connection, then on the next).
//!
//! The connection itself (TLS, reconnects with exponential backoff and jitter capped at
//! `reconnect_max`, failure causes) is the shared [`session::Session`]; the backoff starts over
//! after a connection that lasted [`STABLE_CONNECTION`]. Each kind of cause is logged at warn
//! once per outage; so is a packet above the link's limit (with its size: rumqttc does not tell
//! its topic) and a suspected client id clash, after which the link retries at `reconnect_max`.
//! With [`Settings::proxy`] the session reaches the broker through an HTTP CONNECT tunnel (TLS
//! inside it, with the broker's name); a proxy's refusal is a cause like any other, naming the
//! proxy.

pub mod session;
pub mod tls;
pub mod topics;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Outgoing, Packet, QoS, StateError,
    SubscribeFilter, SubscribeReasonCode,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub(crate) use session::jitter_unit;
pub use session::{backoff, Proxy, ProxyCredentials};
use session::{Disconnect, Failure, Session, SessionEvent};
pub use tls::TlsError;
pub use topics::ThingNameError;

/// Capacity of the agent → link command channel. Small on purpose: the agent keeps reports in its
/// spool and offers one at a time; a full channel tells it the link is busy or offline.
pub const COMMAND_CHANNEL_CAPACITY: usize = 8;

/// Capacity of the link → agent event channel. Room for a reconnect storm's worth of traffic
/// events between two turns of the agent loop; when full, traffic events are dropped (counted,
/// logged once per episode) and control events wait.
pub const EVENT_CHANNEL_CAPACITY: usize = 64;

/// Most publishes handed to rumqttc and not yet acknowledged. Reports go out one per interval,
/// alarms in small bursts; a small window keeps the resend copies (≤ 128 KB each) bounded.
pub const MAX_INFLIGHT: u16 = 4;

/// Largest payload the link publishes: AWS IoT Core's MQTT payload limit (spec:
/// metrics-report.md A.1). Bigger payloads are refused with [`LinkEvent::CommandRefused`]
/// instead of breaking the connection.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// Packet size limit given to rumqttc, both ways: the payload plus fixed header, topic and packet
/// id, with room to spare.
const MAX_PACKET_BYTES: usize = MAX_PAYLOAD_BYTES + 4 * 1024;

/// How long a connection must last before its loss starts the backoff over. A poison message (a
/// retained or queued answer above [`MAX_PACKET_BYTES`], sent again at every connection) ends a
/// connection within a second of the CONNACK, and a rival with the same client id after its own
/// backoff delay; a healthy AWS IoT connection lasts hours. 30 s is well above the first and far
/// below the last, so a loop keeps backing off and a real outage after a good connection is
/// retried at once.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// rumqttc's request channel: every unacknowledged publish, one SUBSCRIBE, one DISCONNECT, spare.
const REQUEST_CHANNEL_CAPACITY: usize = MAX_INFLIGHT as usize + 4;

/// Suggested keep-alive (AWS IoT accepts 30–1200 s).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(60);
/// Suggested first reconnect delay.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_secs(1);
/// Suggested reconnect delay cap.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(120);
/// Suggested answer timeout.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything the link needs, already validated by `config` (and checked again by [`spawn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Broker host name (or IP literal); also the TLS server name that is verified.
    pub endpoint: String,
    /// Broker port: 8883 for MQTT over TLS, 443 with ALPN.
    pub port: u16,
    /// HTTP CONNECT proxy the connection is tunnelled through (`[mqtt] proxy`); `None` connects
    /// directly. TLS runs inside the tunnel with the broker's name.
    pub proxy: Option<Proxy>,
    /// Use TLS. `false` only for a local broker, and only when the config says so explicitly.
    pub tls: bool,
    /// PEM file with the CA certificate(s) that sign the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM file with the client certificate (chain).
    pub cert_file: PathBuf,
    /// PEM file with the client's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// ALPN protocol to offer; empty = none, or `x-amzn-mqtt-ca` on port 443.
    pub alpn: String,
    /// MQTT client id; the thing name when the config leaves it empty (spec: metrics-report.md D.14).
    pub client_id: String,
    /// Thing name used in the topics.
    pub thing_name: String,
    /// Report encoding (`[report] format`): picks the publish and answer topics.
    pub format: crate::report::Format,
    /// `[mqtt] topic_root`: the topics' root, `{thing}` standing for `thing_name`.
    pub topic_root: topics::TopicRoot,
    /// MQTT keep-alive; zero disables it, otherwise whole seconds ≥ 1.
    pub keep_alive: Duration,
    /// Ask the broker for a clean session (true) or resume a persistent one (false).
    pub clean_session: bool,
    /// First reconnect delay (lower bound of every delay).
    pub reconnect_min: Duration,
    /// Reconnect delay cap.
    pub reconnect_max: Duration,
    /// A published report without an answer after this long is offered again on the next
    /// connection (the agent's publishing rule; the link itself does not wait for answers).
    pub answer_timeout: Duration,
    /// More topics to subscribe to (QoS 1, no wildcards); what arrives on them is a
    /// [`LinkEvent::Message`].
    pub subscriptions: Vec<String>,
}

/// The link cannot start; every variant names what is wrong.
#[derive(Debug, Error)]
pub enum Error {
    /// A TLS file is missing, unreadable or unusable.
    #[error("[mqtt] TLS: {0}")]
    Tls(#[from] TlsError),
    /// The thing name cannot be used in a topic.
    #[error("[mqtt] thing name {name:?}: {source}")]
    ThingName {
        /// The name.
        name: String,
        /// Why.
        source: ThingNameError,
    },
    /// A setting is out of range.
    #[error("[mqtt] {field}: {reason}")]
    Setting {
        /// The setting's name, as in the config file.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// [`spawn`] was called outside a tokio runtime.
    #[error("[mqtt] the link must be spawned from inside a tokio runtime")]
    NoRuntime,
}

/// What the agent asks the link to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkCommand {
    /// Publish an encoded report, QoS 1, on the configured publish topic.
    PublishReport {
        /// The report id; echoed in [`LinkEvent::ReportSent`].
        id: u64,
        /// The encoded report (≤ [`MAX_PAYLOAD_BYTES`]).
        payload: Vec<u8>,
    },
    /// Publish anything else (alarms).
    Publish {
        /// Topic, without wildcards.
        topic: String,
        /// Payload (≤ [`MAX_PAYLOAD_BYTES`]).
        payload: Vec<u8>,
        /// QoS 0, 1 or 2.
        qos: u8,
        /// Retain flag.
        retain: bool,
    },
}

/// What happened on the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// CONNACK accepted; subscriptions are being (re)made.
    Connected,
    /// An established connection was lost.
    Disconnected {
        /// Why, in words (see [`LinkTraffic::ConnectionAttempt`] for the vocabulary).
        cause: String,
    },
    /// The broker acknowledged (PUBACK) the report with this id.
    ReportSent {
        /// The report id from [`LinkCommand::PublishReport`].
        id: u64,
    },
    /// An answer arrived on the accepted or rejected topic of the configured format.
    Answer {
        /// True on `.../accepted`, false on `.../rejected`.
        accepted: bool,
        /// The raw answer, in the topic's encoding (JSON or CBOR).
        payload: Vec<u8>,
    },
    /// A message on one of [`Settings::subscriptions`].
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Vec<u8>,
        /// The broker's retain flag (a retained message replayed at subscription).
        retained: bool,
    },
    /// A command was not carried out and never will be (payload too large, bad topic or QoS).
    CommandRefused {
        /// The report id, for [`LinkCommand::PublishReport`].
        report_id: Option<u64>,
        /// The topic the command named.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Traffic on the agent's own connection, for the traffic counters.
    Traffic(LinkTraffic),
}

/// One thing seen on the agent's own MQTT connection (feeds `traffic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkTraffic {
    /// A connection attempt (TCP, TLS, CONNECT/CONNACK) ended.
    ConnectionAttempt {
        /// `None` when it succeeded.
        failure: Option<AttemptFailure>,
    },
    /// An established connection was lost.
    Disconnect {
        /// Why, in words.
        cause: String,
    },
    /// The broker refused something for lack of permission.
    AuthorizationFailure(AuthorizationFailure),
    /// A PUBLISH was written (first transmission only, never a retransmission).
    PublishSent {
        /// Its topic.
        topic: String,
        /// Its payload size in bytes.
        payload_bytes: usize,
    },
    /// A PUBLISH arrived.
    PublishReceived {
        /// Its topic.
        topic: String,
        /// Its payload size in bytes.
        payload_bytes: usize,
    },
}

/// Why a connection attempt failed and when the next one comes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// The cause, e.g. `TLS: invalid peer certificate: UnknownIssuer`, `connection refused`.
    pub cause: String,
    /// The backoff delay before the next attempt.
    pub retry_in: Duration,
}

/// A permission refusal by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizationFailure {
    /// CONNACK return code 4 (bad user name or password) or 5 (not authorized).
    Connect {
        /// The return code's name (`NotAuthorized`, `BadUserNamePassword`).
        code: String,
    },
    /// SUBACK failure (0x80) for this filter.
    Subscribe {
        /// The refused filter.
        filter: String,
    },
}

/// The agent's ends of the link's channels.
#[derive(Debug)]
pub struct LinkHandle {
    /// Commands to the link (bounded by [`COMMAND_CHANNEL_CAPACITY`]).
    pub commands: mpsc::Sender<LinkCommand>,
    /// Events from the link (bounded by [`EVENT_CHANNEL_CAPACITY`]).
    pub events: mpsc::Receiver<LinkEvent>,
}

/// Checks the settings, loads the TLS files and starts the link task on the current tokio
/// runtime. Fails here, not in the loop, on unusable settings or TLS files.
pub fn spawn(
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(LinkHandle, JoinHandle<()>), Error> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
    let mut settings = settings;
    if settings.client_id.is_empty() {
        settings.client_id = settings.thing_name.clone();
    }
    check_settings(&settings)?;

    if !settings.tls {
        warn!(
            endpoint = %settings.endpoint,
            port = settings.port,
            "MQTT without TLS (tls = false): traffic and identity are unprotected; use only with a local broker."
        );
    }
    if let Some(proxy) = &settings.proxy {
        // Display hides the password.
        info!(%proxy, endpoint = %settings.endpoint, "MQTT tunnelled through an HTTP CONNECT proxy.");
    }
    let session = Session::new(session_options(&settings))?;
    let (command_tx, command_rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
    let (event_tx, event_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let link = Link {
        publish_topic: settings
            .topic_root
            .publish_topic(&settings.thing_name, settings.format),
        accepted_topic: settings
            .topic_root
            .accepted_topic(&settings.thing_name, settings.format),
        rejected_topic: settings
            .topic_root
            .rejected_topic(&settings.thing_name, settings.format),
        endpoint: format!("{}:{}", settings.endpoint, settings.port),
        client_id: settings.client_id.clone(),
        subscriptions: settings.subscriptions.clone(),
        client: session.client(),
        events: event_tx,
        shutdown: shutdown.clone(),
        tracker: Tracker::default(),
        connected: false,
        dropped_traffic: 0,
    };
    let task = runtime.spawn(run(link, session, command_rx, shutdown));
    Ok((
        LinkHandle {
            commands: command_tx,
            events: event_rx,
        },
        task,
    ))
}

/// The session of the link: the settings' broker, TLS files and ALPN, keep-alive, clean session
/// and reconnect delays; [`MAX_PACKET_BYTES`] both ways, [`MAX_INFLIGHT`] publishes in flight;
/// the backoff starts over after a connection that lasted [`STABLE_CONNECTION`].
/// The session options of a link with these settings (the fleet service's connection starts
/// from them too).
pub fn session_options(settings: &Settings) -> session::Options {
    session::Options {
        client_id: settings.client_id.clone(),
        host: settings.endpoint.clone(),
        port: settings.port,
        proxy: settings.proxy.clone(),
        tls: settings.tls.then(|| session::Tls {
            ca_file: settings.ca_file.clone(),
            cert_file: settings.cert_file.clone(),
            key_file: settings.key_file.clone(),
            alpn: tls::alpn_protocols(settings.port, &settings.alpn),
            key_label: "Private key",
        }),
        keep_alive: settings.keep_alive,
        clean_session: settings.clean_session,
        packet_limits: Some(session::PacketLimits {
            incoming: MAX_PACKET_BYTES,
            outgoing: MAX_PACKET_BYTES,
        }),
        inflight: Some(MAX_INFLIGHT),
        request_channel_capacity: REQUEST_CHANNEL_CAPACITY,
        reconnect: session::ReconnectPolicy {
            min: settings.reconnect_min,
            max: settings.reconnect_max,
            stable_after: STABLE_CONNECTION,
        },
        describe,
    }
}

/// The cause of a connection failure: the session's words, plus the link's packet limit.
fn describe(err: &ConnectionError) -> String {
    match oversize(err) {
        Some(len) => format!(
            "an incoming packet of {len} bytes exceeds the link's {MAX_PACKET_BYTES}-byte limit"
        ),
        None => session::describe(err),
    }
}

/// The size rumqttc gives for an incoming packet above the limit (the remaining length of its
/// fixed header; rumqttc refuses it before reading further, so the topic is not known).
fn oversize(err: &ConnectionError) -> Option<usize> {
    match err {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(len),
        )) => Some(*len),
        _ => None,
    }
}

fn check_settings(s: &Settings) -> Result<(), Error> {
    let setting = |field, reason: &str| Error::Setting {
        field,
        reason: reason.to_string(),
    };
    topics::check_thing_name(&s.thing_name).map_err(|source| Error::ThingName {
        name: s.thing_name.clone(),
        source,
    })?;
    if s.endpoint.trim().is_empty() {
        return Err(setting("endpoint", "is empty"));
    }
    if s.tls && rustls::pki_types::ServerName::try_from(s.endpoint.as_str()).is_err() {
        return Err(setting(
            "endpoint",
            "is neither a DNS name nor an IP address, so the server certificate cannot be checked against it",
        ));
    }
    if s.port == 0 {
        return Err(setting("port", "must not be 0"));
    }
    if let Some(p) = &s.proxy {
        if p.host.is_empty() {
            return Err(setting("proxy", "has no host"));
        }
        if p.port == 0 {
            return Err(setting("proxy", "port must not be 0"));
        }
    }
    if s.client_id.chars().any(char::is_control) {
        return Err(setting("client_id", "contains control characters"));
    }
    // rumqttc panics on keep-alives below one second other than zero.
    if !s.keep_alive.is_zero() && s.keep_alive < Duration::from_secs(1) {
        return Err(setting("keep_alive_secs", "must be 0 or at least 1 second"));
    }
    if s.keep_alive > Duration::from_secs(u64::from(u16::MAX)) {
        return Err(setting("keep_alive_secs", "must be at most 65535 seconds"));
    }
    if s.reconnect_min.is_zero() {
        return Err(setting("reconnect_min_secs", "must be greater than 0"));
    }
    if s.reconnect_max < s.reconnect_min {
        return Err(setting(
            "reconnect_max_secs",
            "must not be smaller than reconnect_min_secs",
        ));
    }
    Ok(())
}

/// A publish handed to rumqttc, kept until it is acknowledged so it can be sent again when the
/// broker starts a new session.
#[derive(Debug)]
struct Outbound {
    /// Submission order, to resubmit in the original order.
    seq: u64,
    report_id: Option<u64>,
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
}

/// Publishes between the command and the acknowledgement. Bounded: `len() ≤ MAX_INFLIGHT`
/// because commands are only taken below that.
#[derive(Debug, Default)]
struct Tracker {
    next_seq: u64,
    /// Handed to rumqttc, not yet written (rumqttc writes them in this order).
    awaiting_write: VecDeque<Outbound>,
    /// Written with QoS 1/2, by packet id, waiting for PUBACK/PUBCOMP.
    unacked: HashMap<u16, Outbound>,
}

impl Tracker {
    fn len(&self) -> usize {
        self.awaiting_write.len() + self.unacked.len()
    }

    /// Everything not yet acknowledged, oldest first; the tracker is left empty.
    fn take_all(&mut self) -> Vec<Outbound> {
        let mut all: Vec<Outbound> = self
            .awaiting_write
            .drain(..)
            .chain(self.unacked.drain().map(|(_, o)| o))
            .collect();
        all.sort_by_key(|o| o.seq);
        all
    }
}

struct Link {
    publish_topic: String,
    accepted_topic: String,
    rejected_topic: String,
    endpoint: String,
    /// The MQTT client id (named when a clash is suspected).
    client_id: String,
    subscriptions: Vec<String>,
    /// The session's client handle.
    client: AsyncClient,
    events: mpsc::Sender<LinkEvent>,
    shutdown: CancellationToken,
    tracker: Tracker,
    /// Between a CONNACK and the next failure (commands are taken only then).
    connected: bool,
    /// Traffic events dropped in the current full-channel episode.
    dropped_traffic: u64,
}

async fn run(
    mut link: Link,
    mut session: Session,
    mut commands: mpsc::Receiver<LinkCommand>,
    shutdown: CancellationToken,
) {
    let mut commands_open = true;
    loop {
        // The session's future stays alive while commands are taken: dropping it mid-write could
        // lose a packet, so only cancellation interrupts it. It also waits out the backoff.
        let event = {
            let next = session.next();
            tokio::pin!(next);
            loop {
                let accepting = commands_open
                    && link.connected
                    && link.tracker.len() < usize::from(MAX_INFLIGHT);
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break None,
                    command = commands.recv(), if accepting => match command {
                        Some(command) => link.accept(command).await,
                        None => commands_open = false,
                    },
                    event = &mut next => break Some(event),
                }
            }
        };
        match event {
            None => {
                link.disconnect(&mut session).await;
                return;
            }
            Some(event) => link.on_event(event).await,
        }
    }
}

impl Link {
    async fn emit(&mut self, event: LinkEvent) {
        // A closed channel means the agent is gone; shutdown follows.
        tokio::select! {
            _ = self.events.send(event) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    fn emit_traffic(&mut self, traffic: LinkTraffic) {
        match self.events.try_send(LinkEvent::Traffic(traffic)) {
            Ok(()) => {
                if self.dropped_traffic > 0 {
                    info!(
                        dropped = self.dropped_traffic,
                        "Link event channel has room again."
                    );
                    self.dropped_traffic = 0;
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.dropped_traffic == 0 {
                    warn!("Link event channel is full; dropping traffic events until it drains.");
                }
                self.dropped_traffic += 1;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    async fn refuse(&mut self, report_id: Option<u64>, topic: String, reason: String) {
        warn!(?report_id, %topic, %reason, "Publish refused.");
        self.emit(LinkEvent::CommandRefused {
            report_id,
            topic,
            reason,
        })
        .await;
    }

    async fn accept(&mut self, command: LinkCommand) {
        let (report_id, topic, payload, qos, retain) = match command {
            LinkCommand::PublishReport { id, payload } => (
                Some(id),
                self.publish_topic.clone(),
                payload,
                QoS::AtLeastOnce,
                false,
            ),
            LinkCommand::Publish {
                topic,
                payload,
                qos,
                retain,
            } => match rumqttc::qos(qos) {
                Ok(q) => (None, topic, payload, q, retain),
                Err(_) => {
                    let reason = format!("QoS {qos} is not 0, 1 or 2");
                    return self.refuse(None, topic, reason).await;
                }
            },
        };
        if payload.len() > MAX_PAYLOAD_BYTES {
            let reason = format!(
                "payload of {} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte MQTT limit",
                payload.len()
            );
            return self.refuse(report_id, topic, reason).await;
        }
        if topic.is_empty() || !rumqttc::valid_topic(&topic) {
            let reason = "not a valid topic to publish on (empty or wildcards)".to_string();
            return self.refuse(report_id, topic, reason).await;
        }
        let seq = self.tracker.next_seq;
        self.tracker.next_seq += 1;
        self.submit(Outbound {
            seq,
            report_id,
            topic,
            payload,
            qos,
            retain,
        });
    }

    fn submit(&mut self, out: Outbound) {
        match self
            .client
            .try_publish(out.topic.clone(), out.qos, out.retain, out.payload.clone())
        {
            Ok(()) => self.tracker.awaiting_write.push_back(out),
            // Invariant: the request channel holds MAX_INFLIGHT publishes plus spare and the
            // tracker never exceeds MAX_INFLIGHT, so this only fires if rumqttc's loop is gone.
            Err(err) => error!(topic = %out.topic, %err, "Publish could not be queued."),
        }
    }

    fn subscribed_filters(&self) -> Vec<String> {
        let mut all = vec![self.accepted_topic.clone(), self.rejected_topic.clone()];
        all.extend(self.subscriptions.iter().cloned());
        all
    }

    fn subscribe(&mut self) {
        let filters = self
            .subscribed_filters()
            .into_iter()
            .map(|t| SubscribeFilter::new(t, QoS::AtLeastOnce));
        if let Err(err) = self.client.try_subscribe_many(filters) {
            error!(%err, "Subscribe could not be queued.");
        }
    }

    async fn on_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Connected { session_present } => {
                self.connected = true;
                info!(endpoint = %self.endpoint, session_present, "MQTT connected.");
                self.emit_traffic(LinkTraffic::ConnectionAttempt { failure: None });
                // Subscriptions first, so no answer to a resent report is missed.
                self.subscribe();
                if !session_present {
                    // rumqttc dropped its unacknowledged publishes with the old session.
                    for out in self.tracker.take_all() {
                        debug!(topic = %out.topic, report_id = ?out.report_id, "Resending after a new session.");
                        self.submit(out);
                    }
                }
                self.emit(LinkEvent::Connected).await;
            }
            SessionEvent::Incoming(Packet::Publish(publish)) => {
                self.emit_traffic(LinkTraffic::PublishReceived {
                    topic: publish.topic.clone(),
                    payload_bytes: publish.payload.len(),
                });
                let accepted = if publish.topic == self.accepted_topic {
                    true
                } else if publish.topic == self.rejected_topic {
                    false
                } else if self.subscriptions.contains(&publish.topic) {
                    self.emit(LinkEvent::Message {
                        topic: publish.topic.clone(),
                        payload: publish.payload.to_vec(),
                        retained: publish.retain,
                    })
                    .await;
                    return;
                } else {
                    debug!(topic = %publish.topic, "Ignoring a message on a topic the link did not ask for.");
                    return;
                };
                self.emit(LinkEvent::Answer {
                    accepted,
                    payload: publish.payload.to_vec(),
                })
                .await;
            }
            SessionEvent::Incoming(Packet::PubAck(ack)) => self.acknowledged(ack.pkid).await,
            SessionEvent::Incoming(Packet::PubComp(comp)) => self.acknowledged(comp.pkid).await,
            SessionEvent::Incoming(Packet::SubAck(suback)) => {
                let filters = self.subscribed_filters();
                for (filter, code) in filters.into_iter().zip(suback.return_codes) {
                    if code == SubscribeReasonCode::Failure {
                        warn!(%filter, "Broker refused the subscription (SUBACK 0x80); messages on it will be missed.");
                        self.emit_traffic(LinkTraffic::AuthorizationFailure(
                            AuthorizationFailure::Subscribe { filter },
                        ));
                    }
                }
            }
            SessionEvent::Outgoing(Outgoing::Publish(pkid)) => {
                if pkid != 0 && self.tracker.unacked.contains_key(&pkid) {
                    return; // a retransmission of a publish already counted
                }
                let Some(out) = self.tracker.awaiting_write.pop_front() else {
                    debug!(pkid, "Publish written that the link did not queue.");
                    return;
                };
                self.emit_traffic(LinkTraffic::PublishSent {
                    topic: out.topic.clone(),
                    payload_bytes: out.payload.len(),
                });
                if out.qos != QoS::AtMostOnce {
                    self.tracker.unacked.insert(pkid, out);
                }
            }
            SessionEvent::Failed { failure, error } => self.on_failure(failure, &error).await,
            _ => {}
        }
    }

    async fn acknowledged(&mut self, pkid: u16) {
        if let Some(out) = self.tracker.unacked.remove(&pkid) {
            if let Some(id) = out.report_id {
                self.emit(LinkEvent::ReportSent { id }).await;
            }
        }
    }

    /// Reports a failed attempt or a lost connection (the session waits `retry_in` next).
    async fn on_failure(&mut self, failure: Failure, err: &ConnectionError) {
        let Failure {
            cause,
            retry_in,
            new_cause,
            client_id_clash,
            ..
        } = failure;
        let repeated = !new_cause;
        if client_id_clash {
            warn!(endpoint = %self.endpoint, client_id = %self.client_id, closed = session::CLASH_AFTER, ?retry_in,
                "The broker closed the connection soon after each CONNACK: another client may be using client id {}; retrying at reconnect_max instead of fighting it.",
                self.client_id);
        }
        if self.connected {
            self.connected = false;
            if repeated {
                debug!(%cause, ?retry_in, "MQTT connection lost.");
            } else if let Some(size) = oversize(err) {
                warn!(endpoint = %self.endpoint, size, limit = MAX_PACKET_BYTES, ?retry_in,
                    "The broker sent a packet above the link's limit; the connection was dropped. Its topic is not known (rumqttc refuses a packet on its size before reading it). A retained or queued message (clean_session = false) comes again at every connection: remove it at the broker.");
            } else {
                warn!(endpoint = %self.endpoint, %cause, ?retry_in, "MQTT connection lost.");
            }
            self.emit_traffic(LinkTraffic::Disconnect {
                cause: cause.clone(),
            });
            self.emit(LinkEvent::Disconnected { cause }).await;
        } else {
            if repeated {
                debug!(%cause, ?retry_in, "MQTT connection attempt failed again.");
            } else {
                warn!(endpoint = %self.endpoint, %cause, ?retry_in, "MQTT connection attempt failed; retrying with backoff.");
            }
            if let ConnectionError::ConnectionRefused(
                code @ (ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword),
            ) = err
            {
                self.emit_traffic(LinkTraffic::AuthorizationFailure(
                    AuthorizationFailure::Connect {
                        code: format!("{code:?}"),
                    },
                ));
            }
            self.emit_traffic(LinkTraffic::ConnectionAttempt {
                failure: Some(AttemptFailure { cause, retry_in }),
            });
        }
    }

    /// Sends DISCONNECT (bounded wait) when connected; publishes nothing new.
    async fn disconnect(&mut self, session: &mut Session) {
        match session.disconnect().await {
            Disconnect::NotConnected => {}
            Disconnect::NotQueued(err) => {
                warn!(%err, "DISCONNECT could not be queued; closing the socket.")
            }
            Disconnect::Sent => info!(endpoint = %self.endpoint, "MQTT disconnected."),
            Disconnect::NotSent => {
                warn!(endpoint = %self.endpoint, "DISCONNECT not sent; closing the socket.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{Event, EventLoop};
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    fn settings() -> Settings {
        Settings {
            endpoint: "localhost".into(),
            port: 8883,
            proxy: None,
            tls: true,
            ca_file: "/ca".into(),
            cert_file: "/c".into(),
            key_file: "/k".into(),
            alpn: String::new(),
            client_id: "t".into(),
            thing_name: "t".into(),
            format: crate::report::Format::Json,
            topic_root: topics::TopicRoot::default(),
            keep_alive: DEFAULT_KEEP_ALIVE,
            clean_session: true,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            answer_timeout: DEFAULT_ANSWER_TIMEOUT,
            subscriptions: Vec::new(),
        }
    }

    #[test]
    fn the_proxy_reaches_the_session_and_debug_output_hides_its_password() {
        let mut s = settings();
        s.proxy = Some(Proxy {
            host: "proxy.example".into(),
            port: 3128,
            credentials: Some(ProxyCredentials {
                user: "u".into(),
                password: "hunter2".into(),
            }),
        });
        let options = session_options(&s);
        assert_eq!(options.proxy, s.proxy);
        let shown = format!("{s:?} {options:?}");
        assert!(shown.contains("http://u:***@proxy.example:3128"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        s.proxy.as_mut().unwrap().port = 0;
        assert!(matches!(
            check_settings(&s),
            Err(Error::Setting { field: "proxy", .. })
        ));
    }

    #[test]
    fn settings_that_would_make_rumqttc_panic_are_refused() {
        let mut s = settings();
        s.keep_alive = Duration::from_millis(500);
        assert!(matches!(
            check_settings(&s),
            Err(Error::Setting {
                field: "keep_alive_secs",
                ..
            })
        ));
        let mut s = settings();
        s.keep_alive = Duration::ZERO;
        assert!(check_settings(&s).is_ok());
    }

    #[test]
    fn settings_with_bad_names_or_delays_are_refused_naming_the_key() {
        let mut s = settings();
        s.thing_name = "a/b".into();
        assert!(matches!(check_settings(&s), Err(Error::ThingName { .. })));
        let mut s = settings();
        s.endpoint = "not a host!".into();
        assert!(matches!(
            check_settings(&s),
            Err(Error::Setting {
                field: "endpoint",
                ..
            })
        ));
        let mut s = settings();
        s.reconnect_max = Duration::from_millis(10);
        assert!(matches!(
            check_settings(&s),
            Err(Error::Setting {
                field: "reconnect_max_secs",
                ..
            })
        ));
        let mut s = settings();
        s.reconnect_min = Duration::ZERO;
        assert!(matches!(
            check_settings(&s),
            Err(Error::Setting {
                field: "reconnect_min_secs",
                ..
            })
        ));
    }

    #[test]
    fn an_ip_endpoint_is_accepted_for_tls() {
        let mut s = settings();
        s.endpoint = "127.0.0.1".into();
        assert!(check_settings(&s).is_ok());
    }

    #[test]
    fn the_tracker_hands_back_everything_unacknowledged_in_submission_order() {
        let mut t = Tracker::default();
        let out = |seq| Outbound {
            seq,
            report_id: Some(seq),
            topic: "x".into(),
            payload: vec![],
            qos: QoS::AtLeastOnce,
            retain: false,
        };
        t.unacked.insert(3, out(2));
        t.unacked.insert(1, out(0));
        t.awaiting_write.push_back(out(3));
        t.unacked.insert(2, out(1));
        let seqs: Vec<u64> = t.take_all().iter().map(|o| o.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        assert_eq!(t.len(), 0);
    }

    /// A link and its session, whose event loop is never polled: its request channel shows
    /// what the link queued (`EventLoop::clean` moves it into `pending`). Events and errors go
    /// through the session's bookkeeping, as in the running link.
    struct TestLink {
        link: Link,
        session: Session,
    }

    impl Deref for TestLink {
        type Target = Link;
        fn deref(&self) -> &Link {
            &self.link
        }
    }

    impl DerefMut for TestLink {
        fn deref_mut(&mut self) -> &mut Link {
            &mut self.link
        }
    }

    impl TestLink {
        async fn on_event(&mut self, event: Event) {
            let event = self.session.on_poll(Ok(event), Instant::now());
            self.link.on_event(event).await;
        }

        /// Returns the delay the session asks for.
        async fn on_error(&mut self, err: &ConnectionError) -> Duration {
            let failure = self.session.failed(err, Instant::now());
            let retry_in = failure.retry_in;
            self.link.on_failure(failure, err).await;
            retry_in
        }

        fn event_loop(&mut self) -> &mut EventLoop {
            self.session.event_loop()
        }
    }

    fn test_link() -> (TestLink, mpsc::Receiver<LinkEvent>) {
        let mut s = settings();
        s.tls = false;
        s.reconnect_min = Duration::from_millis(10);
        s.reconnect_max = Duration::from_secs(10);
        let session = Session::new(session_options(&s)).unwrap();
        let (events, event_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let link = Link {
            publish_topic: topics::publish_topic("t", crate::report::Format::Json),
            accepted_topic: topics::accepted_topic("t", crate::report::Format::Json),
            rejected_topic: topics::rejected_topic("t", crate::report::Format::Json),
            endpoint: "localhost:8883".into(),
            client_id: "t".into(),
            subscriptions: vec!["push/here".into()],
            client: session.client(),
            events,
            shutdown: CancellationToken::new(),
            tracker: Tracker::default(),
            connected: false,
            dropped_traffic: 0,
        };
        (TestLink { link, session }, event_rx)
    }

    fn drain(rx: &mut mpsc::Receiver<LinkEvent>) -> Vec<LinkEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn connack(session_present: bool) -> Event {
        Event::Incoming(Packet::ConnAck(rumqttc::ConnAck::new(
            ConnectReturnCode::Success,
            session_present,
        )))
    }

    fn report(id: u64) -> LinkCommand {
        LinkCommand::PublishReport {
            id,
            payload: vec![b'r'; 3],
        }
    }

    /// What the link queued for rumqttc, as (kind, topic-or-empty).
    fn queued(eventloop: &mut EventLoop) -> Vec<String> {
        eventloop.clean();
        eventloop
            .pending
            .drain(..)
            .map(|r| match r {
                rumqttc::Request::Publish(p) => format!("publish {}", p.topic),
                rumqttc::Request::Subscribe(s) => format!(
                    "subscribe {}",
                    s.filters
                        .iter()
                        .map(|f| f.path.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_connack_subscribes_to_accepted_and_rejected_but_never_the_publish_topic() {
        let (mut link, mut rx) = test_link();
        link.on_event(connack(false)).await;
        assert_eq!(
            queued(link.event_loop()),
            vec!["subscribe $aws/things/t/defender/metrics/json/accepted $aws/things/t/defender/metrics/json/rejected push/here"]
        );
        assert_eq!(
            drain(&mut rx),
            vec![
                LinkEvent::Traffic(LinkTraffic::ConnectionAttempt { failure: None }),
                LinkEvent::Connected
            ]
        );
    }

    #[tokio::test]
    async fn a_retransmitted_publish_is_counted_once_and_acknowledged_once() {
        let (mut link, mut rx) = test_link();
        link.on_event(connack(false)).await;
        link.accept(report(1)).await;
        drain(&mut rx);
        link.on_event(Event::Outgoing(Outgoing::Publish(1))).await;
        link.on_event(Event::Outgoing(Outgoing::Publish(1))).await; // retransmission
        link.on_event(Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(1))))
            .await;
        link.on_event(Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(1))))
            .await; // duplicate ack
        assert_eq!(
            drain(&mut rx),
            vec![
                LinkEvent::Traffic(LinkTraffic::PublishSent {
                    topic: "$aws/things/t/defender/metrics/json".into(),
                    payload_bytes: 3
                }),
                LinkEvent::ReportSent { id: 1 },
            ]
        );
        assert_eq!(link.tracker.len(), 0);
    }

    #[tokio::test]
    async fn publishes_lost_with_the_session_are_resent_in_order_after_the_subscription() {
        let (mut link, mut rx) = test_link();
        link.on_event(connack(false)).await;
        link.accept(report(1)).await;
        link.accept(report(2)).await;
        link.on_event(Event::Outgoing(Outgoing::Publish(1))).await;
        // The connection drops; the broker then starts a new session, so rumqttc forgets them.
        let reset = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        link.on_error(&reset).await;
        link.event_loop().clean();
        link.event_loop().pending.clear();
        drain(&mut rx);
        link.on_event(connack(false)).await;
        let publish = "publish $aws/things/t/defender/metrics/json".to_string();
        let q = queued(link.event_loop());
        assert!(q[0].starts_with("subscribe "), "{q:?}");
        assert_eq!(q[1..], [publish.clone(), publish]);
        let seqs: Vec<Option<u64>> = link
            .tracker
            .awaiting_write
            .iter()
            .map(|o| o.report_id)
            .collect();
        assert_eq!(seqs, vec![Some(1), Some(2)]);
    }

    #[tokio::test]
    async fn a_resumed_session_leaves_the_retransmission_to_rumqttc() {
        let (mut link, _rx) = test_link();
        link.on_event(connack(false)).await;
        link.accept(report(1)).await;
        link.on_event(Event::Outgoing(Outgoing::Publish(1))).await;
        queued(link.event_loop());
        link.on_event(connack(true)).await;
        let q = queued(link.event_loop());
        assert_eq!(q.len(), 1, "only the subscription: {q:?}");
        assert!(link.tracker.unacked.contains_key(&1));
    }

    #[tokio::test]
    async fn a_lost_connection_is_reported_once_and_failed_attempts_carry_a_growing_delay() {
        let (mut link, mut rx) = test_link();
        link.on_event(connack(false)).await;
        drain(&mut rx);
        let refused =
            ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        link.on_error(&refused).await;
        let mut delays = Vec::new();
        for _ in 0..4 {
            link.on_error(&refused).await;
        }
        let events = drain(&mut rx);
        assert_eq!(
            events[..2],
            [
                LinkEvent::Traffic(LinkTraffic::Disconnect {
                    cause: "connection refused".into()
                }),
                LinkEvent::Disconnected {
                    cause: "connection refused".into()
                },
            ]
        );
        for event in &events[2..] {
            match event {
                LinkEvent::Traffic(LinkTraffic::ConnectionAttempt {
                    failure: Some(AttemptFailure { cause, retry_in }),
                }) => {
                    assert_eq!(cause, "connection refused");
                    delays.push(*retry_in);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(delays.len(), 4);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(link.session.reconnect().logged_causes.len(), 1);
    }

    #[tokio::test]
    async fn commands_that_cannot_be_published_are_refused_not_queued() {
        let (mut link, mut rx) = test_link();
        link.on_event(connack(false)).await;
        drain(&mut rx);
        link.accept(LinkCommand::PublishReport {
            id: 9,
            payload: vec![0; MAX_PAYLOAD_BYTES + 1],
        })
        .await;
        for (topic, qos) in [("a/+/b", 1), ("", 1), ("alarms", 3)] {
            link.accept(LinkCommand::Publish {
                topic: topic.into(),
                payload: vec![],
                qos,
                retain: false,
            })
            .await;
        }
        let events = drain(&mut rx);
        assert_eq!(events.len(), 4);
        assert!(matches!(
            events[0],
            LinkEvent::CommandRefused {
                report_id: Some(9),
                ..
            }
        ));
        assert!(events
            .iter()
            .all(|e| matches!(e, LinkEvent::CommandRefused { .. })));
        assert_eq!(link.tracker.len(), 0);
    }

    #[tokio::test]
    async fn a_refused_subscription_is_an_authorization_failure_naming_the_filter() {
        let (mut link, mut rx) = test_link();
        let suback = rumqttc::SubAck::new(
            1,
            vec![
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Failure,
            ],
        );
        link.on_event(Event::Incoming(Packet::SubAck(suback))).await;
        assert_eq!(
            drain(&mut rx),
            vec![LinkEvent::Traffic(LinkTraffic::AuthorizationFailure(
                AuthorizationFailure::Subscribe {
                    filter: "$aws/things/t/defender/metrics/json/rejected".into()
                }
            ))]
        );
    }

    #[tokio::test]
    async fn a_message_on_an_extra_subscription_is_handed_over_with_its_retain_flag() {
        let (mut link, mut rx) = test_link();
        let mut publish = rumqttc::Publish::new("push/here", QoS::AtLeastOnce, b"{}".to_vec());
        publish.retain = true;
        link.on_event(Event::Incoming(Packet::Publish(publish)))
            .await;
        let messages: Vec<LinkEvent> = drain(&mut rx)
            .into_iter()
            .filter(|e| !matches!(e, LinkEvent::Traffic(_)))
            .collect();
        assert_eq!(
            messages,
            vec![LinkEvent::Message {
                topic: "push/here".into(),
                payload: b"{}".to_vec(),
                retained: true
            }]
        );
    }

    #[tokio::test]
    async fn answers_are_told_apart_by_topic_and_other_topics_are_only_counted() {
        let (mut link, mut rx) = test_link();
        for topic in [
            "$aws/things/t/defender/metrics/json/accepted",
            "$aws/things/t/defender/metrics/json/rejected",
            "$aws/things/t/defender/metrics/cbor/accepted",
        ] {
            let publish = rumqttc::Publish::new(topic, QoS::AtLeastOnce, b"{}".to_vec());
            link.on_event(Event::Incoming(Packet::Publish(publish)))
                .await;
        }
        let answers: Vec<bool> = drain(&mut rx)
            .into_iter()
            .filter_map(|e| match e {
                LinkEvent::Answer { accepted, .. } => Some(accepted),
                _ => None,
            })
            .collect();
        assert_eq!(answers, vec![true, false]);
    }

    #[tokio::test]
    async fn a_connack_refused_as_not_authorized_is_an_authorization_failure() {
        let (mut link, mut rx) = test_link();
        let err = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        link.on_error(&err).await;
        let events = drain(&mut rx);
        assert_eq!(
            events[0],
            LinkEvent::Traffic(LinkTraffic::AuthorizationFailure(
                AuthorizationFailure::Connect {
                    code: "NotAuthorized".into()
                }
            ))
        );
        assert!(matches!(
            &events[1],
            LinkEvent::Traffic(LinkTraffic::ConnectionAttempt { failure: Some(f) }) if f.cause.contains("NotAuthorized")
        ));
    }

    #[tokio::test]
    async fn a_poison_answer_that_ends_every_connection_keeps_the_backoff_growing_and_is_described_once(
    ) {
        let (mut link, mut rx) = test_link();
        let poison = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(200_000),
        ));
        let mut delays = Vec::new();
        for _ in 0..6 {
            link.on_event(connack(false)).await;
            let failure = link.session.failed(&poison, Instant::now());
            assert!(failure.lasted.unwrap() < STABLE_CONNECTION);
            assert!(!failure.client_id_clash, "not the broker closing it");
            delays.push((failure.retry_in, failure.new_cause));
            link.link.on_failure(failure, &poison).await;
        }
        // reconnect_min 10 ms: the delays double (jittered) instead of staying at the minimum.
        assert!(delays[5].0 >= Duration::from_millis(320), "{delays:?}");
        assert!(delays.windows(2).all(|w| w[0].0 <= w[1].0), "{delays:?}");
        let new: Vec<bool> = delays.iter().map(|d| d.1).collect();
        assert_eq!(new, [true, false, false, false, false, false]);
        let causes: Vec<String> = drain(&mut rx)
            .into_iter()
            .filter_map(|e| match e {
                LinkEvent::Disconnected { cause } => Some(cause),
                _ => None,
            })
            .collect();
        assert_eq!(causes.len(), 6);
        assert_eq!(
            causes[0],
            "an incoming packet of 200000 bytes exceeds the link's 135168-byte limit"
        );
    }

    #[tokio::test]
    async fn the_link_backs_off_to_the_cap_when_the_broker_keeps_closing_fresh_connections() {
        let (mut link, _rx) = test_link();
        let closed = ConnectionError::MqttState(StateError::ConnectionAborted);
        let mut clashes = 0;
        let mut last = Duration::ZERO;
        for _ in 0..session::CLASH_AFTER + 2 {
            link.on_event(connack(true)).await;
            let failure = link.session.failed(&closed, Instant::now());
            clashes += usize::from(failure.client_id_clash);
            last = failure.retry_in;
            link.link.on_failure(failure, &closed).await;
        }
        assert_eq!(clashes, 1);
        assert!(
            last >= Duration::from_secs(5),
            "reconnect_max 10 s: {last:?}"
        );
    }
}

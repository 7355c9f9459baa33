//! The tap: a read-only observer of the device's local MQTT broker that turns the messages the
//! device sends and receives into [`TrafficEvent`]s for the traffic counters.
//!
//! The usual gateway: sensors publish to a local mosquitto that bridges to AWS IoT. The bridge's
//! `topic … out` lines are the device's sent traffic, its `topic … in` lines the received
//! traffic; the tap's `outbound` and `inbound` filters mirror them (spec: detect.md §2.2
//! "Cloud-side metrics", §5 "Counting under a dimension").
//!
//! # Contract
//! - **Read-only.** The tap subscribes and never publishes: no PUBLISH, no last will, no
//!   retained message. Its client id ([`Settings::client_id`], by default
//!   [`default_client_id`]`(thing)` = `<thing>-tap`) must differ from the bridge's and the
//!   device's, or the broker would disconnect one of them.
//! - **The device never depends on the agent.** The tap is one more subscriber with a clean
//!   session: while the agent is down the broker keeps nothing for it, and while it runs its
//!   event loop never waits on the agent (events go out with `try_send`; when the channel is full
//!   they are dropped, counted and logged once per episode; once it is half full the tap yields
//!   to the scheduler after each message so the agent loop gets a turn), so the broker's queue
//!   for the tap stays short. Whatever the tap does, the bridge and the device are untouched.
//! - **Every message once.** Subscriptions use QoS 1 ([`SUBSCRIBE_QOS`]). Messages published
//!   at QoS 1/2 then wait for the tap in the broker's bounded per-client queue (mosquitto:
//!   `max_inflight_messages` 20 + `max_queued_messages` 1000; beyond that it drops messages for
//!   the tap only and logs "Outgoing messages are being dropped for client …"), so a stalled
//!   agent cannot grow the device's broker. QoS 2 would cost two more packets per message and
//!   gain nothing under a clean session: nothing is redelivered across connections, and a DUP
//!   redelivery within one is skipped by packet id. QoS 0 messages stay QoS 0 (MQTT delivers
//!   at the lower of the two QoS). What is not counted:
//!   - messages with RETAIN = 1: under MQTT 3.1.1 (§3.3.1.3) the broker sets it only on a
//!     retained message replayed because of a new subscription (live messages arrive with
//!     RETAIN = 0, even when published retained; checked against mosquitto by
//!     `tests/integration/tap.rs`), and a replay is not new traffic;
//!   - a DUP = 1 redelivery of a packet id already counted on this connection;
//!   - a topic matching neither list (it cannot normally arrive: the tap subscribes only to
//!     the lists).
//! - **Overlapping filters.** A filter covered by another one in the lists (`sensors/temp` by
//!   `sensors/#`) is not subscribed, so a broker that sends one copy per matching subscription
//!   (MQTT 3.1.1 §3.3.5 allows it) cannot double count. Partial overlaps (`a/+/c` and `a/b/+`)
//!   remain; mosquitto sends one copy for them (its `allow_duplicate_messages false` default).
//! - **Classification.** Outbound filters first: a topic matching both lists counts as sent.
//! - **`$` topics.** `$SYS/#` or `$aws/#` in a list work: they are subscribed explicitly; `#`
//!   and `+/…` never deliver `$` topics (MQTT 3.1.1 §4.7.2), which is the broker's job.
//! - **Reconnects** by itself (the shared [`crate::mqtt::session`]) with
//!   [`crate::mqtt::backoff`] between `reconnect_min` and `reconnect_max`, logging each
//!   distinct cause once per outage, and subscribes again after
//!   every CONNACK (clean session: nothing survives a reconnect, messages published meanwhile
//!   are not seen). The backoff starts over only after a connection that lasted 30 s: a tap
//!   sharing its client id with the bridge would otherwise push it off the broker every second.
//! - The tap's own connection is not the device's: it emits only [`TrafficEvent::Publish`],
//!   never connection attempts or disconnects.
//!
//! # Bounds
//! Filters: at most [`MAX_FILTERS_PER_LIST`] per list. Incoming packets: at most
//! [`MAX_INCOMING_PACKET_BYTES`]; a bigger message breaks the connection (rumqttc refuses it),
//! it is lost and the tap reconnects, logging the cause. Per connection one 8 KiB bit set of
//! counted packet ids. Event channel: the caller's, never waited on.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Packet, QoS, StateError, SubscribeFilter, SubscribeReasonCode,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::mqtt::session::{self, Disconnect, Failure, Session, SessionEvent};
use crate::mqtt::TlsError;
use crate::topic_filter::{FilterError, Level, TopicFilter};
use crate::traffic::{Direction, TrafficEvent};

/// Default port of a plain local broker.
pub const DEFAULT_PORT: u16 = 1883;

/// Suggested first reconnect delay (a local broker restarts in well under a second).
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_secs(1);

/// Suggested reconnect delay cap.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Most filters in `outbound`, and in `inbound`. A bridge has a handful of `topic` lines; the
/// bound keeps the SUBSCRIBE packet and the per-message matching small.
pub const MAX_FILTERS_PER_LIST: usize = 100;

/// QoS asked for in the subscriptions (see the module docs for why 1, not 0 or 2).
pub const SUBSCRIBE_QOS: QoS = QoS::AtLeastOnce;

/// Largest incoming packet accepted: messages for AWS IoT are at most 128 KiB (spec:
/// metrics-report.md A.1), so this leaves 8× room while bounding what one message can allocate.
pub const MAX_INCOMING_PACKET_BYTES: usize = 1024 * 1024;

/// Keep-alive with the local broker: a dead broker is noticed within 1.5× this.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// rumqttc's request channel: the tap only queues SUBSCRIBE (once per CONNACK) and DISCONNECT.
const REQUEST_CHANNEL_CAPACITY: usize = 4;

/// A connection that lasted this long was a real one: the backoff starts again from
/// `reconnect_min`. Shorter ones keep growing it, so a client id clash (the broker closing the
/// older of two connections with the same id) cannot make the tap and the bridge push each other
/// off at `reconnect_min` pace.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// Everything the tap needs (from the `[tap]` config section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Local broker host name or IP address (with TLS: also the name the certificate must carry).
    pub host: String,
    /// Local broker port ([`DEFAULT_PORT`] for plain MQTT).
    pub port: u16,
    /// Use mutual TLS with the three files below; `false` for the usual plain loopback broker.
    pub tls: bool,
    /// PEM CA certificate(s) that sign the broker's certificate (TLS only).
    pub ca_file: PathBuf,
    /// PEM client certificate (TLS only).
    pub cert_file: PathBuf,
    /// PEM private key (TLS only).
    pub key_file: PathBuf,
    /// MQTT client id on the local broker; must differ from the bridge's and the device's
    /// clients. [`default_client_id`] gives `<thing>-tap`.
    pub client_id: String,
    /// Filters of the topics the device sends (a bridge's `topic … out`).
    pub outbound: Vec<String>,
    /// Filters of the topics the device receives (a bridge's `topic … in`).
    pub inbound: Vec<String>,
    /// First reconnect delay (lower bound of every delay).
    pub reconnect_min: Duration,
    /// Reconnect delay cap.
    pub reconnect_max: Duration,
}

/// The tap's client id for a thing: `<thing>-tap`.
pub fn default_client_id(thing_name: &str) -> String {
    format!("{thing_name}-tap")
}

/// The tap cannot start; every variant names what is wrong, with config key names.
#[derive(Debug, Error)]
pub enum Error {
    /// A filter in `outbound` or `inbound` is not a valid MQTT topic filter.
    #[error("[tap] {list}[{index}]: {source}")]
    Filter {
        /// `outbound` or `inbound`.
        list: &'static str,
        /// Zero-based position in the list.
        index: usize,
        /// Why the filter is invalid.
        source: FilterError,
    },
    /// A filter uses `${iot:ClientId}`, which only AWS IoT policies and dimensions substitute;
    /// the local broker would take it literally.
    #[error("[tap] {list}[{index}]: {filter:?} uses ${{iot:ClientId}}, which the local broker does not substitute; write the client id out")]
    ClientIdVariable {
        /// `outbound` or `inbound`.
        list: &'static str,
        /// Zero-based position in the list.
        index: usize,
        /// The filter.
        filter: String,
    },
    /// A list holds more than [`MAX_FILTERS_PER_LIST`] filters.
    #[error("[tap] {list}: {count} filters, more than the limit of {max}")]
    TooManyFilters {
        /// `outbound` or `inbound`.
        list: &'static str,
        /// Filters given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A setting is out of range.
    #[error("[tap] {field}: {reason}")]
    Setting {
        /// The key, as in the config file.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// A TLS file is missing, unreadable or unusable.
    #[error("[tap] TLS: {0}")]
    Tls(#[from] TlsError),
    /// [`spawn`] was called outside a tokio runtime.
    #[error("[tap] the tap must be spawned from inside a tokio runtime")]
    NoRuntime,
}

/// Checks the settings, loads the TLS files and starts the tap task on the current tokio
/// runtime. Fails here, not in the loop, on unusable settings, filters or TLS files. The task
/// ends when `shutdown` is cancelled (after a bounded DISCONNECT).
pub fn spawn(
    settings: Settings,
    events: mpsc::Sender<TrafficEvent>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, Error> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
    check_settings(&settings)?;
    let classifier = Classifier::new(&settings.outbound, &settings.inbound)?;
    let subscriptions = classifier.subscriptions();
    for filter in classifier.inbound_shadowed() {
        warn!(%filter, "Tap inbound filter is covered by an outbound filter; its messages count as sent.");
    }

    let mut options = session_options(&settings, &settings.client_id);
    options.packet_limits = Some(session::PacketLimits {
        incoming: MAX_INCOMING_PACKET_BYTES,
        outgoing: subscribe_packet_bound(&subscriptions),
    });
    options.reconnect.stable_after = STABLE_CONNECTION;
    options.describe = describe;
    let session = Session::new(options)?;
    info!(endpoint = %format!("{}:{}", settings.host, settings.port), client_id = %settings.client_id, ?subscriptions, "Tap starting.");
    let tap = Tap::new(&settings, classifier, session.client(), events);
    Ok(runtime.spawn(run(tap, session, shutdown)))
}

/// The session options for a connection to the local broker of `settings` under `client_id`:
/// clean session, keep-alive, TLS when configured (without ALPN), the settings' reconnect delays
/// with the backoff starting over at every CONNACK. Shared by the tap (which adds its packet
/// limits and its 30 s stability rule) and the alarm publisher that `via = "tap"` alarms use — the
/// tap itself never publishes. Warns when the connection is plain and not on loopback.
pub fn session_options(settings: &Settings, client_id: &str) -> session::Options {
    if !settings.tls && !is_loopback(&settings.host) {
        warn!(
            host = %settings.host,
            port = settings.port,
            "Connecting without TLS to a local broker that is not on loopback; traffic is unprotected."
        );
    }
    session::Options {
        client_id: client_id.to_owned(),
        host: settings.host.clone(),
        port: settings.port,
        proxy: None, // [mqtt] proxy is for the AWS link only: the local broker is reached directly.
        tls: settings.tls.then(|| session::Tls {
            ca_file: settings.ca_file.clone(),
            cert_file: settings.cert_file.clone(),
            key_file: settings.key_file.clone(),
            alpn: Vec::new(),
            key_label: "Local broker private key",
        }),
        keep_alive: KEEP_ALIVE,
        clean_session: true,
        packet_limits: None,
        inflight: None,
        request_channel_capacity: REQUEST_CHANNEL_CAPACITY,
        reconnect: session::ReconnectPolicy {
            min: settings.reconnect_min,
            max: settings.reconnect_max,
            stable_after: Duration::ZERO,
        },
        describe: session::describe,
    }
}

fn check_settings(s: &Settings) -> Result<(), Error> {
    let setting = |field, reason: &str| Error::Setting {
        field,
        reason: reason.to_string(),
    };
    if s.host.is_empty() {
        return Err(setting("host", "is empty"));
    }
    if s.tls && rustls::pki_types::ServerName::try_from(s.host.as_str()).is_err() {
        return Err(setting(
            "host",
            "is neither a DNS name nor an IP address, so the broker certificate cannot be checked against it",
        ));
    }
    if s.port == 0 {
        return Err(setting("port", "must not be 0"));
    }
    // rumqttc sends an empty id as is; mosquitto then invents one, which hides which client is
    // the tap in its logs. Leading spaces and control characters are refused by brokers.
    if s.client_id.is_empty() {
        return Err(setting("client_id", "is empty"));
    }
    if s.client_id.starts_with(' ') || s.client_id.chars().any(char::is_control) {
        return Err(setting(
            "client_id",
            "starts with a space or contains control characters",
        ));
    }
    if s.outbound.is_empty() && s.inbound.is_empty() {
        return Err(setting(
            "outbound",
            "outbound and inbound are both empty, so the tap has nothing to watch",
        ));
    }
    if s.reconnect_min.is_zero() {
        return Err(setting("reconnect_min", "must be greater than 0"));
    }
    if s.reconnect_max < s.reconnect_min {
        return Err(setting(
            "reconnect_max",
            "must not be smaller than reconnect_min",
        ));
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Bytes of the SUBSCRIBE packet for `filters`, with room for the fixed header: the only
/// packet the tap writes that can be large.
fn subscribe_packet_bound(filters: &[String]) -> usize {
    let body: usize = filters.iter().map(|f| 2 + f.len() + 1).sum();
    (body + 2 + 5).max(1024)
}

/// The two lists compiled: which way a topic went.
#[derive(Debug, Clone)]
struct Classifier {
    outbound: Vec<TopicFilter>,
    inbound: Vec<TopicFilter>,
}

impl Classifier {
    fn new(outbound: &[String], inbound: &[String]) -> Result<Classifier, Error> {
        Ok(Classifier {
            outbound: parse_list("outbound", outbound)?,
            inbound: parse_list("inbound", inbound)?,
        })
    }

    /// Outbound first: a topic in both lists was sent.
    fn classify(&self, topic: &str) -> Option<Direction> {
        if self.outbound.iter().any(|f| f.matches(topic)) {
            Some(Direction::Sent)
        } else if self.inbound.iter().any(|f| f.matches(topic)) {
            Some(Direction::Received)
        } else {
            None
        }
    }

    /// The filters to subscribe to: both lists, without duplicates and without any filter that
    /// another one covers, in list order.
    fn subscriptions(&self) -> Vec<String> {
        let all: Vec<&TopicFilter> = self.outbound.iter().chain(&self.inbound).collect();
        let mut kept: Vec<String> = Vec::with_capacity(all.len());
        for (i, filter) in all.iter().enumerate() {
            // Of two equal filters the first is kept; a strictly wider one always wins.
            let redundant = all.iter().enumerate().any(|(j, other)| {
                j != i && covers(other, filter) && (j < i || !covers(filter, other))
            });
            if !redundant {
                kept.push(filter.as_str().to_owned());
            }
        }
        kept
    }

    /// Inbound filters that can never count: every topic they match is outbound.
    fn inbound_shadowed(&self) -> impl Iterator<Item = &str> {
        self.inbound
            .iter()
            .filter(|i| self.outbound.iter().any(|o| covers(o, i)))
            .map(TopicFilter::as_str)
    }
}

fn parse_list(list: &'static str, filters: &[String]) -> Result<Vec<TopicFilter>, Error> {
    if filters.len() > MAX_FILTERS_PER_LIST {
        return Err(Error::TooManyFilters {
            list,
            count: filters.len(),
            max: MAX_FILTERS_PER_LIST,
        });
    }
    filters
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let filter = TopicFilter::parse(text).map_err(|source| Error::Filter {
                list,
                index,
                source,
            })?;
            if filter.has_client_id_variable() {
                return Err(Error::ClientIdVariable {
                    list,
                    index,
                    filter: text.clone(),
                });
            }
            Ok(filter)
        })
        .collect()
}

/// Does every topic matching `inner` also match `outer`? (MQTT 3.1.1 §4.7, `$` rule included:
/// a filter starting with a wildcard covers nothing that can match a `$` topic.)
fn covers(outer: &TopicFilter, inner: &TopicFilter) -> bool {
    let (o, i) = (outer.levels(), inner.levels());
    let inner_may_be_dollar = match i.first() {
        Some(Level::Literal(lit)) => lit.starts_with('$'),
        _ => false,
    };
    if inner_may_be_dollar && !matches!(o.first(), Some(Level::Literal(_))) {
        return false;
    }
    for (k, level) in o.iter().enumerate() {
        match (level, i.get(k)) {
            // `a/#` matches `a` too, so it covers whatever is left, including nothing.
            (Level::MultiLevel, _) => return true,
            (_, None) => return false,
            (Level::SingleLevel, Some(Level::Literal(_) | Level::SingleLevel)) => {}
            (Level::SingleLevel, Some(Level::MultiLevel)) => return false,
            (Level::Literal(a), Some(Level::Literal(b))) if a == b => {}
            (Level::Literal(_), Some(_)) => return false,
        }
    }
    o.len() == i.len()
}

/// Packet ids counted on the current connection, to drop DUP redeliveries (one bit per id).
struct CountedIds(Box<[u64; 1024]>);

impl CountedIds {
    fn new() -> CountedIds {
        CountedIds(Box::new([0; 1024]))
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }

    /// Marks `pkid`; true if it was already marked.
    fn mark(&mut self, pkid: u16) -> bool {
        let (word, bit) = (usize::from(pkid / 64), 1u64 << (pkid % 64));
        // Invariant: pkid / 64 ≤ 1023, inside the array.
        let cell = &mut self.0[word];
        let was = *cell & bit != 0;
        *cell |= bit;
        was
    }
}

/// What the tap did with the messages it saw, since start (logged at shutdown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    counted: u64,
    retained_replays: u64,
    duplicates: u64,
    unmatched: u64,
    dropped: u64,
}

struct Tap {
    classifier: Classifier,
    subscriptions: Vec<String>,
    client: AsyncClient,
    events: mpsc::Sender<TrafficEvent>,
    endpoint: String,
    client_id: String,
    counted_ids: CountedIds,
    /// Events dropped in the current full-channel episode.
    dropping: u64,
    seen: Seen,
}

async fn run(mut tap: Tap, mut session: Session, shutdown: CancellationToken) {
    loop {
        // The session waits out its backoff inside `next`.
        let event = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            event = session.next() => event,
        };
        let failed = matches!(event, SessionEvent::Failed { .. });
        tap.on_event(event);
        // rumqttc hands out a whole socket read of buffered messages without yielding;
        // give the agent loop a turn before the channel fills (never a wait on it).
        if !failed && tap.events.capacity() <= tap.events.max_capacity() / 2 {
            tokio::task::yield_now().await;
        }
    }
    if let Disconnect::NotSent = session.disconnect().await {
        debug!(endpoint = %tap.endpoint, "Tap DISCONNECT not sent; closing the socket.");
    }
    let s = tap.seen;
    info!(
        counted = s.counted,
        retained_replays = s.retained_replays,
        duplicates = s.duplicates,
        unmatched = s.unmatched,
        dropped = s.dropped,
        "Tap stopped."
    );
}

impl Tap {
    fn new(
        settings: &Settings,
        classifier: Classifier,
        client: AsyncClient,
        events: mpsc::Sender<TrafficEvent>,
    ) -> Tap {
        Tap {
            subscriptions: classifier.subscriptions(),
            classifier,
            client,
            events,
            endpoint: format!("{}:{}", settings.host, settings.port),
            client_id: settings.client_id.clone(),
            counted_ids: CountedIds::new(),
            dropping: 0,
            seen: Seen::default(),
        }
    }

    fn on_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Connected { .. } => {
                self.counted_ids.clear();
                info!(endpoint = %self.endpoint, "Tap connected to the local broker.");
                let filters = self
                    .subscriptions
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), SUBSCRIBE_QOS));
                // Invariant: one SUBSCRIBE per CONNACK into a channel of REQUEST_CHANNEL_CAPACITY
                // that the event loop drains; failing means rumqttc's loop is gone.
                if let Err(err) = self.client.try_subscribe_many(filters) {
                    error!(%err, "Tap subscription could not be queued.");
                }
            }
            SessionEvent::Incoming(Packet::Publish(publish)) => {
                // spec: MQTT 3.1.1 §3.3.1.3: RETAIN = 1 only on a replay for a new subscription.
                if publish.retain {
                    self.seen.retained_replays += 1;
                    return;
                }
                if publish.qos != QoS::AtMostOnce {
                    let already = self.counted_ids.mark(publish.pkid);
                    if publish.dup && already {
                        self.seen.duplicates += 1;
                        return;
                    }
                }
                let Some(direction) = self.classifier.classify(&publish.topic) else {
                    debug!(topic = %crate::text::untrusted(&publish.topic), "Tap ignores a message outside its lists.");
                    self.seen.unmatched += 1;
                    return;
                };
                self.emit(TrafficEvent::Publish {
                    topic: publish.topic,
                    bytes: publish.payload.len() as u64,
                    direction,
                });
            }
            SessionEvent::Incoming(Packet::SubAck(suback)) => {
                for (filter, code) in self.subscriptions.iter().zip(&suback.return_codes) {
                    if *code == SubscribeReasonCode::Failure {
                        warn!(%filter, "Local broker refused the tap's subscription (SUBACK 0x80); its messages are not counted.");
                    }
                }
            }
            SessionEvent::Failed { failure, .. } => self.on_failure(failure),
            _ => {}
        }
    }

    fn emit(&mut self, event: TrafficEvent) {
        match self.events.try_send(event) {
            Ok(()) => {
                self.seen.counted += 1;
                if self.dropping > 0 {
                    info!(dropped = self.dropping, "Tap event channel has room again.");
                    self.dropping = 0;
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.dropping == 0 {
                    warn!("Tap event channel is full; dropping traffic events until it drains.");
                }
                self.dropping += 1;
                self.seen.dropped += 1;
            }
            // The agent is gone; shutdown follows.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Logs a failed attempt or a lost connection (the session waits `retry_in` next).
    fn on_failure(&mut self, failure: Failure) {
        let Failure {
            cause,
            retry_in,
            new_cause,
            lasted,
            ..
        } = failure;
        // A broker's or a certificate's words may be in the cause: escaped and bounded.
        let cause = crate::text::untrusted(&cause).max_chars(CAUSE_LOGGED_CHARS);
        match (lasted, new_cause) {
            (Some(lasted), true) if lasted < STABLE_CONNECTION => {
                warn!(endpoint = %self.endpoint, %cause, ?lasted, ?retry_in, client_id = %self.client_id,
                    "Tap connection ended soon after it began; backing off. If the broker logs that this client id is already connected, give the tap its own.")
            }
            (Some(_), true) => {
                warn!(endpoint = %self.endpoint, %cause, ?retry_in, "Tap lost the local broker; reconnecting.")
            }
            (None, true) => {
                warn!(endpoint = %self.endpoint, %cause, ?retry_in, "Tap cannot reach the local broker; retrying with backoff.")
            }
            (_, false) => debug!(%cause, ?retry_in, "Tap connection failed again."),
        }
    }
}

/// Most characters of a connection failure's cause in a log line (it may quote the broker).
const CAUSE_LOGGED_CHARS: usize = 4 * crate::text::MAX_LOGGED_CHARS;

/// The cause of a connection failure: the link's wording, plus the tap's own packet limit.
fn describe(err: &ConnectionError) -> String {
    match err {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(len),
        )) => format!(
            "a message of {len} bytes exceeds the tap's {MAX_INCOMING_PACKET_BYTES}-byte packet limit; it was not counted"
        ),
        other => session::describe(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::Event;
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    fn filters(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            tls: false,
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_id: default_client_id("gw"),
            outbound: filters(&["sensors/#"]),
            inbound: filters(&["commands/#"]),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
        }
    }

    /// A tap and its session (never polled); events and errors go through the session's
    /// bookkeeping at `clock`, as in the running tap.
    struct TestTap {
        tap: Tap,
        session: Session,
        clock: Instant,
    }

    impl Deref for TestTap {
        type Target = Tap;
        fn deref(&self) -> &Tap {
            &self.tap
        }
    }

    impl DerefMut for TestTap {
        fn deref_mut(&mut self) -> &mut Tap {
            &mut self.tap
        }
    }

    impl TestTap {
        fn on_event(&mut self, event: Event) {
            let event = self.session.on_poll(Ok(event), self.clock);
            self.tap.on_event(event);
        }

        /// Returns the delay the session asks for.
        fn on_error(&mut self, err: &ConnectionError) -> Duration {
            let failure = self.session.failed(err, self.clock);
            let retry_in = failure.retry_in;
            self.tap.on_failure(failure);
            retry_in
        }

        fn failed_attempts(&self) -> u32 {
            self.session.reconnect().failed_attempts
        }

        fn logged_causes(&self) -> usize {
            self.session.reconnect().logged_causes.len()
        }
    }

    fn test_tap(
        outbound: &[&str],
        inbound: &[&str],
        capacity: usize,
    ) -> (TestTap, mpsc::Receiver<TrafficEvent>) {
        let classifier = Classifier::new(&filters(outbound), &filters(inbound)).unwrap();
        let (tx, rx) = mpsc::channel(capacity);
        let mut s = settings();
        s.reconnect_min = Duration::from_millis(10);
        s.reconnect_max = Duration::from_secs(1);
        let mut options = session_options(&s, "t");
        options.reconnect.stable_after = STABLE_CONNECTION;
        options.describe = describe;
        let session = Session::new(options).unwrap();
        let tap = Tap::new(&s, classifier, session.client(), tx);
        let clock = Instant::now();
        (
            TestTap {
                tap,
                session,
                clock,
            },
            rx,
        )
    }

    fn publish(topic: &str, qos: QoS, pkid: u16, dup: bool, retain: bool, len: usize) -> Event {
        let mut p = rumqttc::Publish::new(topic, qos, vec![b'x'; len]);
        p.pkid = pkid;
        p.dup = dup;
        p.retain = retain;
        Event::Incoming(Packet::Publish(p))
    }

    fn drain(rx: &mut mpsc::Receiver<TrafficEvent>) -> Vec<TrafficEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn sent(topic: &str, bytes: u64) -> TrafficEvent {
        TrafficEvent::Publish {
            topic: topic.into(),
            bytes,
            direction: Direction::Sent,
        }
    }

    #[test]
    fn an_invalid_filter_is_refused_naming_the_list_and_index() {
        let mut s = settings();
        s.inbound = filters(&["commands/#", "a/#/b"]);
        let err = Classifier::new(&s.outbound, &s.inbound).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Filter {
                    list: "inbound",
                    index: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("[tap] inbound[1]: "), "{err}");
        let err = Classifier::new(&filters(&["ok", "x+"]), &[]).unwrap_err();
        assert!(matches!(
            err,
            Error::Filter {
                list: "outbound",
                index: 1,
                ..
            }
        ));
    }

    #[test]
    fn the_client_id_variable_is_refused_because_no_local_broker_substitutes_it() {
        let err = Classifier::new(&filters(&["d/${iot:ClientId}/x"]), &[]).unwrap_err();
        assert!(matches!(
            err,
            Error::ClientIdVariable {
                list: "outbound",
                index: 0,
                ..
            }
        ));
    }

    #[test]
    fn too_many_filters_in_a_list_are_refused() {
        let many: Vec<String> = (0..=MAX_FILTERS_PER_LIST)
            .map(|i| format!("t/{i}"))
            .collect();
        assert!(matches!(
            Classifier::new(&[], &many),
            Err(Error::TooManyFilters {
                list: "inbound",
                ..
            })
        ));
    }

    #[test]
    fn unusable_settings_are_refused_naming_the_key() {
        let field = |s: Settings| match check_settings(&s) {
            Err(Error::Setting { field, .. }) => field,
            other => panic!("expected a setting error, got {other:?}"),
        };
        assert!(check_settings(&settings()).is_ok());
        let mut s = settings();
        s.host = String::new();
        assert_eq!(field(s), "host");
        let mut s = settings();
        s.tls = true;
        s.host = "not a host!".into();
        assert_eq!(field(s), "host");
        let mut s = settings();
        s.port = 0;
        assert_eq!(field(s), "port");
        let mut s = settings();
        s.client_id = String::new();
        assert_eq!(field(s), "client_id");
        let mut s = settings();
        s.client_id = "tap\n".into();
        assert_eq!(field(s), "client_id");
        let mut s = settings();
        s.outbound.clear();
        s.inbound.clear();
        assert_eq!(field(s), "outbound");
        let mut s = settings();
        s.reconnect_min = Duration::ZERO;
        assert_eq!(field(s), "reconnect_min");
        let mut s = settings();
        s.reconnect_max = Duration::from_millis(1);
        assert_eq!(field(s), "reconnect_max");
    }

    #[test]
    fn one_empty_list_is_fine() {
        let mut s = settings();
        s.inbound.clear();
        assert!(check_settings(&s).is_ok());
    }

    #[test]
    fn missing_tls_files_are_an_error_from_spawn_naming_the_file() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut s = settings();
        s.tls = true;
        s.host = "localhost".into();
        s.key_file = "/nonexistent/tap-key.pem".into();
        let (tx, _rx) = mpsc::channel(1);
        let err = spawn(s, tx, CancellationToken::new()).unwrap_err();
        assert!(matches!(err, Error::Tls(_)), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/tap-key.pem"),
            "{err}"
        );
    }

    #[test]
    fn spawning_outside_a_runtime_is_an_error_not_a_panic() {
        let (tx, _rx) = mpsc::channel(1);
        assert!(matches!(
            spawn(settings(), tx, CancellationToken::new()),
            Err(Error::NoRuntime)
        ));
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1", "broker.local", "::2"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn outbound_wins_when_a_topic_matches_both_lists() {
        let c = Classifier::new(&filters(&["a/b"]), &filters(&["a/#", "$aws/#"])).unwrap();
        assert_eq!(c.classify("a/b"), Some(Direction::Sent));
        assert_eq!(c.classify("a/c"), Some(Direction::Received));
        assert_eq!(c.classify("a"), Some(Direction::Received));
        assert_eq!(c.classify("$aws/things/x"), Some(Direction::Received));
        assert_eq!(c.classify("b"), None);
    }

    #[test]
    fn wildcards_at_the_first_level_never_classify_dollar_topics() {
        let c = Classifier::new(&filters(&["#"]), &filters(&["+/x"])).unwrap();
        assert_eq!(c.classify("$SYS/x"), None);
        assert_eq!(c.classify("a/x"), Some(Direction::Sent));
    }

    #[test]
    fn coverage_follows_mqtt_matching() {
        let cases = [
            ("a/#", "a/b", true),
            ("a/#", "a", true),
            ("a/#", "a/#", true),
            ("a/#", "a/+/c", true),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/+", "a", false),
            ("a/+", "a/b/c", false),
            ("a/b", "a/+", false),
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("#", "a/b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$aws/x", false),
            ("#", "+/x", true),
            ("$aws/#", "$aws/things/+/shadow", true),
            ("a/+/c", "a/b/+", false),
            ("a/b/+", "a/+/c", false),
            ("a/b/#", "a/b", true),
            ("a//#", "a/", true),
        ];
        for (outer, inner, want) in cases {
            assert_eq!(covers(&f(outer), &f(inner)), want, "{outer} covers {inner}");
        }
    }

    #[test]
    fn subscriptions_drop_duplicates_and_covered_filters_but_keep_dollar_filters() {
        let c = Classifier::new(
            &filters(&["sensors/temp", "sensors/#", "$aws/things/gw/shadow/update"]),
            &filters(&[
                "commands/#",
                "sensors/#",
                "#",
                "$aws/things/gw/shadow/+/accepted",
                "commands/x",
            ]),
        )
        .unwrap();
        assert_eq!(
            c.subscriptions(),
            vec![
                "$aws/things/gw/shadow/update".to_string(),
                "#".to_string(),
                "$aws/things/gw/shadow/+/accepted".to_string(),
            ]
        );
        let c = Classifier::new(&filters(&["a/#", "a/#"]), &filters(&["b"])).unwrap();
        assert_eq!(c.subscriptions(), vec!["a/#".to_string(), "b".to_string()]);
    }

    #[test]
    fn an_inbound_filter_inside_an_outbound_one_is_reported_as_shadowed() {
        let c = Classifier::new(&filters(&["a/#"]), &filters(&["a/b", "c"])).unwrap();
        assert_eq!(c.inbound_shadowed().collect::<Vec<_>>(), vec!["a/b"]);
    }

    #[tokio::test]
    async fn messages_are_classified_and_sized_and_outsiders_ignored() {
        let (mut tap, mut rx) = test_tap(&["sensors/#"], &["commands/#"], 16);
        tap.on_event(publish("sensors/t", QoS::AtMostOnce, 0, false, false, 3));
        tap.on_event(publish("commands/r", QoS::AtLeastOnce, 1, false, false, 0));
        tap.on_event(publish("other", QoS::AtMostOnce, 0, false, false, 9));
        assert_eq!(
            drain(&mut rx),
            vec![
                sent("sensors/t", 3),
                TrafficEvent::Publish {
                    topic: "commands/r".into(),
                    bytes: 0,
                    direction: Direction::Received
                }
            ]
        );
        assert_eq!(tap.seen.unmatched, 1);
    }

    #[tokio::test]
    async fn a_retained_replay_is_not_traffic() {
        let (mut tap, mut rx) = test_tap(&["s/#"], &[], 16);
        tap.on_event(publish("s/a", QoS::AtLeastOnce, 1, false, true, 4));
        tap.on_event(publish("s/a", QoS::AtMostOnce, 0, false, true, 4));
        assert!(drain(&mut rx).is_empty());
        assert_eq!(tap.seen.retained_replays, 2);
    }

    #[tokio::test]
    async fn a_dup_redelivery_of_a_counted_packet_id_is_counted_once() {
        let (mut tap, mut rx) = test_tap(&["s/#"], &[], 16);
        tap.on_event(publish("s/a", QoS::AtLeastOnce, 7, false, false, 1));
        tap.on_event(publish("s/a", QoS::AtLeastOnce, 7, true, false, 1));
        // The broker may reuse an id for a new message once the old one is acknowledged.
        tap.on_event(publish("s/b", QoS::AtLeastOnce, 7, false, false, 2));
        // A DUP whose first copy was never seen still counts.
        tap.on_event(publish("s/c", QoS::AtLeastOnce, 8, true, false, 3));
        assert_eq!(
            drain(&mut rx),
            vec![sent("s/a", 1), sent("s/b", 2), sent("s/c", 3)]
        );
        assert_eq!(tap.seen.duplicates, 1);
    }

    #[tokio::test]
    async fn packet_ids_are_forgotten_on_a_new_connection() {
        let (mut tap, mut rx) = test_tap(&["s/#"], &[], 16);
        tap.on_event(publish("s/a", QoS::ExactlyOnce, 65535, false, false, 1));
        tap.on_event(connack());
        tap.on_event(publish("s/a", QoS::ExactlyOnce, 65535, true, false, 1));
        assert_eq!(drain(&mut rx).len(), 2);
    }

    #[tokio::test]
    async fn a_full_channel_drops_events_and_counts_them_without_waiting() {
        let (mut tap, mut rx) = test_tap(&["s/#"], &[], 2);
        for _ in 0..5 {
            tap.on_event(publish("s/a", QoS::AtMostOnce, 0, false, false, 1));
        }
        assert_eq!(tap.seen.counted, 2);
        assert_eq!(tap.seen.dropped, 3);
        assert_eq!(tap.dropping, 3);
        assert_eq!(drain(&mut rx).len(), 2);
        tap.on_event(publish("s/a", QoS::AtMostOnce, 0, false, false, 1));
        assert_eq!(tap.dropping, 0, "the episode ends when an event fits again");
        assert_eq!(tap.seen.counted, 3);
    }

    fn connack() -> Event {
        Event::Incoming(Packet::ConnAck(rumqttc::ConnAck::new(
            rumqttc::ConnectReturnCode::Success,
            false,
        )))
    }

    #[tokio::test]
    async fn failures_grow_the_delay_and_only_a_stable_connection_resets_it() {
        let (mut tap, _rx) = test_tap(&["s/#"], &[], 2);
        let refused =
            ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let delays: Vec<Duration> = (0..4).map(|_| tap.on_error(&refused)).collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert_eq!(tap.logged_causes(), 1);
        // A connection that ends at once (a client id clash) keeps the backoff growing.
        tap.on_event(connack());
        let closed = ConnectionError::MqttState(StateError::ConnectionAborted);
        tap.on_error(&closed);
        assert_eq!(tap.failed_attempts(), 5);
        assert_eq!(tap.logged_causes(), 2);
        // One that lasted starts again from reconnect_min.
        tap.on_event(connack());
        tap.clock += STABLE_CONNECTION;
        assert!(tap.on_error(&closed) <= Duration::from_millis(20));
        assert_eq!(tap.failed_attempts(), 1);
        assert_eq!(tap.logged_causes(), 1);
    }

    #[test]
    fn the_subscribe_bound_fits_every_filter() {
        let long = "x".repeat(5000);
        assert!(subscribe_packet_bound(&[long.clone(), long]) > 10_000);
        assert_eq!(subscribe_packet_bound(&["a".into()]), 1024);
    }

    #[test]
    fn connection_causes_read_as_short_stable_words() {
        let refused =
            ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(describe(&refused), "connection refused");
        assert_eq!(
            describe(&ConnectionError::MqttState(StateError::ConnectionAborted)),
            "connection closed by the broker"
        );
        let big = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(2_000_000),
        ));
        assert!(describe(&big).starts_with("a message of 2000000 bytes exceeds"));
    }
}

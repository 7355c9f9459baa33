//! One MQTT session, shared by every MQTT user of the agent (the link to AWS IoT, the tap and
//! the alarm connection on the local broker): builds rumqttc's options (TLS on ring with ALPN,
//! keep-alive, clean session, packet limits), polls the connection, reconnects with jittered
//! backoff, describes failures in a few stable words, and disconnects cleanly on shutdown.
//! Optionally through an HTTP CONNECT proxy ([`Proxy`], rumqttc's `proxy` feature): the TCP
//! connection goes to the proxy, which opens a tunnel to the broker; TLS (SNI, certificate check,
//! ALPN) then runs inside the tunnel with the broker's name, as without a proxy.
//!
//! The session has no protocol of its own. It owns rumqttc's `EventLoop`, hands out the
//! [`AsyncClient`] handle ([`Session::client`]) and yields [`SessionEvent`]s from
//! [`Session::next`]; the user decides what to subscribe to, what to publish and what to log,
//! in its own words (rumqttc's handle/loop split, one level up).
//!
//! The reconnect rule is a pure state machine, [`Reconnect`] (time and jitter are arguments):
//! - failed attempt `n` (counted since the last stable connection, 0 first) waits
//!   [`backoff`]`(n, min, max, jitter)`;
//! - a connection is stable once it lasted [`ReconnectPolicy::stable_after`] (zero: as soon as
//!   the CONNACK came); only the loss of a stable connection starts the count over, so a
//!   connection that a poison message or a rival client ends at once keeps backing off;
//! - when the broker closes [`CLASH_AFTER`] unstable connections in a row, another client is
//!   probably using the same client id (the broker drops the older of two): the failure says so
//!   once ([`Failure::client_id_clash`]) and every delay is the capped one until a connection
//!   outlives [`Reconnect::clash_cleared_after`] (the delays of both rivals, so a clash cannot
//!   pass for stable);
//! - a cause is new the first time its [`CauseKind`] is seen since the last stable connection
//!   ([`Failure::new_cause`]), so users log it at warn once and at debug after; kinds, not
//!   texts, because a text may change at every attempt (an expired certificate names the
//!   verification time). At most [`MAX_LOGGED_CAUSES`] are remembered; the oldest is forgotten
//!   when more appear (it would then be logged again, which is harmless).

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::error::Error as StdError;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet,
    ProxyAuth, ProxyType, StateError, TlsConfiguration, Transport,
};
use tracing::warn;

use super::tls::{self, TlsError};

/// Distinct failure causes remembered per outage, each logged at warn once.
pub const MAX_LOGGED_CAUSES: usize = 8;

/// Unstable connections in a row closed by the broker ([`CauseKind::is_closed_by_the_broker`])
/// after which a client id clash is suspected. Three: one or two can be a broker restart or a
/// network change; a clash repeats at every connection.
pub const CLASH_AFTER: u32 = 3;

/// How long [`Session::disconnect`] waits for the DISCONNECT packet to be written.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How to connect: everything rumqttc needs, plus the reconnect rule. Each user builds it from
/// its own `Settings` (`mqtt::Settings`, `tap::Settings`).
#[derive(Debug, Clone)]
pub struct Options {
    /// MQTT client id.
    pub client_id: String,
    /// Broker host name or IP address (with TLS also the name the certificate must carry).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The HTTP CONNECT proxy to tunnel through, or `None` to connect directly.
    pub proxy: Option<Proxy>,
    /// Mutual TLS, or `None` for plain MQTT.
    pub tls: Option<Tls>,
    /// MQTT keep-alive; zero disables it, otherwise at least 1 s (rumqttc panics below).
    pub keep_alive: Duration,
    /// Ask the broker for a clean session.
    pub clean_session: bool,
    /// Packet size limits; `None` keeps rumqttc's default (10 KiB each way).
    pub packet_limits: Option<PacketLimits>,
    /// Most unacknowledged outgoing publishes; `None` keeps rumqttc's default (100).
    pub inflight: Option<u16>,
    /// Capacity of rumqttc's request channel (client handle → event loop).
    pub request_channel_capacity: usize,
    /// When to retry and when to start the backoff over.
    pub reconnect: ReconnectPolicy,
    /// Turns a connection failure into the cause that is logged and remembered ([`describe`]
    /// unless the user adds words of its own).
    pub describe: fn(&ConnectionError) -> String,
}

/// The TLS files and ALPN of a session.
#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM CA certificate(s) that sign the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate (chain).
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// ALPN protocols to offer (see [`tls::alpn_protocols`]); empty = none.
    pub alpn: Vec<Vec<u8>>,
    /// How the key-permission warning names the key (`Private key`, `Local broker private key`).
    pub key_label: &'static str,
}

/// An HTTP CONNECT proxy (`http://[user:password@]host:port`). Its `Debug` and `Display` never
/// show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Proxy host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// Proxy port.
    pub port: u16,
    /// Basic authentication, or `None`.
    pub credentials: Option<ProxyCredentials>,
}

/// The user and password of a proxy's basic authentication (already percent-decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    /// User name.
    pub user: String,
    /// Password (never logged: see [`Proxy`]'s `Display`).
    pub password: String,
}

impl Proxy {
    /// `host:port`, with brackets around an IPv6 address: how causes and logs name the proxy.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `http://user:***@host:port` (the password replaced), or `http://host:port`.
impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.credentials {
            Some(c) => write!(f, "http://{}:***@{}", c.user, self.address()),
            None => write!(f, "http://{}", self.address()),
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({self})")
    }
}

impl std::fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyCredentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// Largest packets accepted from the broker and written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketLimits {
    /// Incoming packets, bytes; a bigger one breaks the connection.
    pub incoming: usize,
    /// Outgoing packets, bytes.
    pub outgoing: usize,
}

/// The reconnect rule's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// First reconnect delay (lower bound of every delay).
    pub min: Duration,
    /// Reconnect delay cap.
    pub max: Duration,
    /// How long a connection must last before its loss starts the backoff over; zero = any
    /// accepted connection.
    pub stable_after: Duration,
}

/// What happened on the session.
#[derive(Debug)]
pub enum SessionEvent {
    /// The broker accepted the connection (CONNACK 0).
    Connected {
        /// The broker resumed a stored session.
        session_present: bool,
    },
    /// A packet from the broker (never a CONNACK: that is [`SessionEvent::Connected`]).
    Incoming(Packet),
    /// rumqttc wrote a packet.
    Outgoing(Outgoing),
    /// A connection attempt failed, or the connection was lost ([`Failure::lasted`] tells which);
    /// the next [`Session::next`] first waits [`Failure::retry_in`].
    Failed {
        /// The cause and what follows.
        failure: Failure,
        /// rumqttc's error.
        error: ConnectionError,
    },
}

/// One connection failure, as the reconnect rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The cause in a few stable words ([`Options::describe`]).
    pub cause: String,
    /// The cause's kind, which the once-per-cause rule goes by.
    pub kind: CauseKind,
    /// The backoff delay before the next attempt.
    pub retry_in: Duration,
    /// First time this cause is seen since the last stable connection: log it at warn.
    pub new_cause: bool,
    /// How long the connection lasted when an established one was lost; `None` when a
    /// connection attempt failed.
    pub lasted: Option<Duration>,
    /// This failure completed the pattern of a client id clash ([`CLASH_AFTER`] connections in a
    /// row closed soon after the CONNACK): log the likely cause, once; `retry_in` is capped.
    pub client_id_clash: bool,
}

/// How [`Session::disconnect`] went.
#[derive(Debug)]
pub enum Disconnect {
    /// There was no connection to close.
    NotConnected,
    /// rumqttc's request channel refused the DISCONNECT (its loop is gone or the channel full).
    NotQueued(ClientError),
    /// The DISCONNECT packet was written.
    Sent,
    /// It was not written within [`DISCONNECT_TIMEOUT`], or the connection failed first.
    NotSent,
}

/// The reconnect rule's state (pure: time and jitter come in as arguments). See the module docs.
#[derive(Debug, Clone)]
pub struct Reconnect {
    policy: ReconnectPolicy,
    /// Failed attempts and unstable connections since the last stable one (backoff exponent).
    pub(crate) failed_attempts: u32,
    /// Cause kinds seen since the last stable connection (≤ [`MAX_LOGGED_CAUSES`]).
    pub(crate) logged_causes: VecDeque<CauseKind>,
    /// When the current connection was accepted; `None` while disconnected.
    pub(crate) connected_since: Option<Instant>,
    /// Unstable connections in a row that the broker closed.
    pub(crate) broker_closes: u32,
    /// A client id clash is suspected (since [`CLASH_AFTER`] such closes; until a stable
    /// connection).
    pub(crate) clash_suspected: bool,
}

impl Reconnect {
    /// A disconnected session that has not failed yet.
    pub fn new(policy: ReconnectPolicy) -> Reconnect {
        Reconnect {
            policy,
            failed_attempts: 0,
            logged_causes: VecDeque::new(),
            connected_since: None,
            broker_closes: 0,
            clash_suspected: false,
        }
    }

    /// The broker accepted a connection at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_since = Some(now);
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected_since.is_some()
    }

    /// How long a connection must last to clear a suspected clash: the stability period, but at
    /// least two capped delays. In a clash each connection lasts as long as the rival waits
    /// before its next attempt (at most `max` once both back off), so only a connection that
    /// outlived that is not the clash.
    pub fn clash_cleared_after(&self) -> Duration {
        self.policy
            .stable_after
            .max(self.policy.max.saturating_mul(2))
    }

    /// A connection attempt failed, or the connection was lost, at `now`: applies the stability
    /// rule and the clash rule, picks the delay (`jitter_unit` in `[0, 1]`, see [`backoff`]) and
    /// tells whether the cause's `kind` is new (`cause` is its text, for the log).
    pub fn failed(
        &mut self,
        kind: CauseKind,
        cause: String,
        now: Instant,
        jitter_unit: f64,
    ) -> Failure {
        let lasted = self
            .connected_since
            .take()
            .map(|since| now.saturating_duration_since(since));
        let stable_after = if self.clash_suspected {
            self.clash_cleared_after()
        } else {
            self.policy.stable_after
        };
        match lasted {
            Some(d) if d >= stable_after => {
                self.failed_attempts = 0;
                self.logged_causes.clear();
                self.broker_closes = 0;
                self.clash_suspected = false;
            }
            Some(_) if kind.is_closed_by_the_broker() => {
                self.broker_closes = self.broker_closes.saturating_add(1);
            }
            // A failed attempt or another cause breaks the row.
            _ => self.broker_closes = 0,
        }
        let client_id_clash = !self.clash_suspected && self.broker_closes >= CLASH_AFTER;
        self.clash_suspected |= client_id_clash;
        let attempt = if self.clash_suspected {
            u32::MAX // the capped delay
        } else {
            self.failed_attempts
        };
        let retry_in = backoff(attempt, self.policy.min, self.policy.max, jitter_unit);
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        let new_cause = !self.logged_causes.contains(&kind);
        if new_cause {
            if self.logged_causes.len() == MAX_LOGGED_CAUSES {
                self.logged_causes.pop_front();
            }
            self.logged_causes.push_back(kind);
        }
        Failure {
            cause,
            kind,
            retry_in,
            new_cause,
            lasted,
            client_id_clash,
        }
    }
}

/// Where [`Session::next`] stands with the backoff wait.
#[derive(Debug, Clone, Copy)]
enum Wait {
    None,
    /// A failure asked for this delay; the clock starts at the next [`Session::next`].
    For(Duration),
    /// Waiting until then (kept across a dropped `next` future).
    Until(tokio::time::Instant),
}

/// An MQTT connection that reconnects by itself: owns rumqttc's `EventLoop`, which only moves
/// while [`Session::next`] is polled.
pub struct Session {
    eventloop: EventLoop,
    client: AsyncClient,
    reconnect: Reconnect,
    describe: fn(&ConnectionError) -> String,
    /// The proxy's `host:port`, naming it in the causes of proxy failures.
    proxy: Option<String>,
    wait: Wait,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("reconnect", &self.reconnect)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Builds the rumqttc client and event loop; loads the TLS files (warning when the key is
    /// readable by group or others). Connects nothing yet: that happens in [`Session::next`].
    pub fn new(options: Options) -> Result<Session, TlsError> {
        let mut mqtt = MqttOptions::new(options.client_id, options.host, options.port);
        mqtt.set_keep_alive(options.keep_alive)
            .set_clean_session(options.clean_session)
            .set_manual_acks(false)
            .set_request_channel_capacity(options.request_channel_capacity);
        if let Some(limits) = options.packet_limits {
            mqtt.set_max_packet_size(limits.incoming, limits.outgoing);
        }
        if let Some(inflight) = options.inflight {
            mqtt.set_inflight(inflight);
        }
        if let Some(p) = &options.proxy {
            mqtt.set_proxy(rumqttc::Proxy {
                ty: ProxyType::Http,
                auth: p
                    .credentials
                    .as_ref()
                    .map_or(ProxyAuth::None, |c| ProxyAuth::Basic {
                        username: c.user.clone(),
                        password: c.password.clone(),
                    }),
                // rumqttc connects to "{addr}:{port}": an IPv6 address needs its brackets.
                addr: if p.host.contains(':') {
                    format!("[{}]", p.host)
                } else {
                    p.host.clone()
                },
                port: p.port,
            });
        }
        if let Some(t) = &options.tls {
            tls::install_ring_provider();
            if let Some(mode) = tls::check_key_permissions(&t.key_file)? {
                warn!(
                    file = %t.key_file.display(),
                    mode = format!("{mode:03o}"),
                    "{} is accessible by group or others; restrict it with chmod 600.",
                    t.key_label
                );
            }
            let config = tls::client_config(&t.ca_file, &t.cert_file, &t.key_file, t.alpn.clone())?;
            mqtt.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )));
        }
        let (client, eventloop) = AsyncClient::new(mqtt, options.request_channel_capacity);
        Ok(Session {
            eventloop,
            client,
            reconnect: Reconnect::new(options.reconnect),
            describe: options.describe,
            proxy: options.proxy.as_ref().map(Proxy::address),
            wait: Wait::None,
        })
    }

    /// The handle to subscribe and publish with (rumqttc queues the requests; they go out
    /// while [`Session::next`] is polled).
    pub fn client(&self) -> AsyncClient {
        self.client.clone()
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.reconnect.is_connected()
    }

    /// Whether the next [`Session::next`] starts with a backoff wait.
    pub fn backing_off(&self) -> bool {
        !matches!(self.wait, Wait::None)
    }

    /// The reconnect rule's state.
    pub fn reconnect(&self) -> &Reconnect {
        &self.reconnect
    }

    /// The next event: waits out the backoff after a failure, then polls rumqttc (connecting
    /// when needed). Must be called again and again, without long pauses, for the connection to
    /// live. Dropping the future during the backoff wait is harmless (the deadline is kept);
    /// dropping it while rumqttc polls may abort a connection attempt or a write, so keep it
    /// alive (pinned) while doing other work, as the link does.
    pub async fn next(&mut self) -> SessionEvent {
        if let Wait::For(delay) = self.wait {
            self.wait = Wait::Until(tokio::time::Instant::now() + delay);
        }
        if let Wait::Until(deadline) = self.wait {
            tokio::time::sleep_until(deadline).await;
            self.wait = Wait::None;
        }
        let polled = self.eventloop.poll().await;
        self.on_poll(polled, tokio::time::Instant::now().into_std())
    }

    /// What one poll's result means at `now`: the reconnect bookkeeping of [`Session::next`]
    /// without the socket (tests feed it rumqttc events and errors).
    pub fn on_poll(
        &mut self,
        polled: Result<Event, ConnectionError>,
        now: Instant,
    ) -> SessionEvent {
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                self.reconnect.connected(now);
                SessionEvent::Connected {
                    session_present: ack.session_present,
                }
            }
            Ok(Event::Incoming(packet)) => SessionEvent::Incoming(packet),
            Ok(Event::Outgoing(outgoing)) => SessionEvent::Outgoing(outgoing),
            Err(error) => SessionEvent::Failed {
                failure: self.failed(&error, now),
                error,
            },
        }
    }

    /// A failed poll at `now`: describes it, applies the reconnect rule and makes the next
    /// [`Session::next`] wait the delay first.
    pub fn failed(&mut self, error: &ConnectionError, now: Instant) -> Failure {
        let cause = match (error, &self.proxy) {
            (ConnectionError::Proxy(e), Some(proxy)) => describe_proxy(proxy, e),
            _ => (self.describe)(error),
        };
        let failure = self
            .reconnect
            .failed(CauseKind::of(error), cause, now, jitter_unit());
        self.wait = Wait::For(failure.retry_in);
        failure
    }

    /// Sends DISCONNECT when connected and waits at most [`DISCONNECT_TIMEOUT`] for it to be
    /// written; events meanwhile are dropped (the user is shutting down).
    pub async fn disconnect(&mut self) -> Disconnect {
        if !self.is_connected() {
            return Disconnect::NotConnected;
        }
        if let Err(err) = self.client.try_disconnect() {
            return Disconnect::NotQueued(err);
        }
        let eventloop = &mut self.eventloop;
        let sent = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        self.reconnect.connected_since = None;
        if matches!(sent, Ok(true)) {
            Disconnect::Sent
        } else {
            Disconnect::NotSent
        }
    }

    /// rumqttc's event loop, for tests that look at what the client queued.
    #[cfg(test)]
    pub(crate) fn event_loop(&mut self) -> &mut EventLoop {
        &mut self.eventloop
    }
}

/// Reconnect delay before attempt `attempt + 1` (0 = first retry): a value in
/// `[c/2, c]` with `c = min(max, min·2^(attempt+1))`, never below `min`; `jitter_unit` in `[0, 1]`
/// picks the point (out-of-range values are clamped). Successive ranges touch, so delays never
/// shrink before the cap, and capped delays keep their jitter so a fleet does not reconnect in step.
pub fn backoff(attempt: u32, min: Duration, max: Duration, jitter_unit: f64) -> Duration {
    let max = max.max(min);
    let factor = 2u32.saturating_pow(attempt.saturating_add(1));
    let ceiling = min.saturating_mul(factor).min(max);
    let unit = if jitter_unit.is_finite() {
        jitter_unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let half = ceiling / 2;
    // Invariant: unit is in [0, 1], so half·unit ≤ half cannot overflow or go negative.
    (half + half.mul_f64(unit)).max(min)
}

/// A jitter value in `[0, 1)` from std's per-process random hash keys (no RNG crate needed).
pub fn jitter_unit() -> f64 {
    let bits = RandomState::new().hash_one(std::process::id());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The cause of a connection failure in a few stable words: TLS problems start with `TLS:`,
/// socket problems name the socket error, MQTT refusals the CONNACK code.
pub fn describe(err: &ConnectionError) -> String {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    let mut io_kind = None;
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return format!("TLS: {tls}");
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // rustls reports through io::Error; its inner error is not exposed as a source.
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return format!("TLS: {tls}");
            }
            io_kind.get_or_insert((io.kind(), io.to_string()));
        }
        source = e.source();
    }
    match err {
        ConnectionError::ConnectionRefused(code) => {
            format!("MQTT connection refused by the broker: {code:?}")
        }
        ConnectionError::NetworkTimeout => "connection timed out".into(),
        ConnectionError::FlushTimeout => "write timed out".into(),
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "connection closed by the broker".into()
        }
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "no PINGRESP within the keep-alive".into()
        }
        _ => match io_kind {
            Some((std::io::ErrorKind::ConnectionRefused, _)) => "connection refused".into(),
            Some((std::io::ErrorKind::ConnectionReset, _)) => "connection reset by peer".into(),
            Some((std::io::ErrorKind::UnexpectedEof, _)) => "connection closed by peer".into(),
            Some((_, text)) => format!("I/O: {text}"),
            None => err.to_string(),
        },
    }
}

/// What kind of failure a connection error is: the key of the once-per-cause rule (see the
/// module docs), stable across attempts where the error's text is not (an expired certificate's
/// text names the verification time, a socket error may name an address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseKind {
    /// The broker's certificate has expired.
    TlsCertificateExpired,
    /// The broker's certificate is not valid yet (often a wrong clock).
    TlsCertificateNotValidYet,
    /// The broker's certificate is not signed by the configured CA.
    TlsUnknownIssuer,
    /// The broker's certificate is not valid for the endpoint's name.
    TlsNameMismatch,
    /// Another problem with the broker's certificate.
    TlsCertificateInvalid,
    /// The broker sent a TLS alert (it refused our certificate, say), by alert.
    TlsAlert(rustls::AlertDescription),
    /// Another TLS failure.
    Tls,
    /// The HTTP proxy refused the tunnel with this status.
    ProxyStatus(u16),
    /// The HTTP proxy could not be used otherwise (socket error, not an HTTP answer), by the
    /// socket error's kind when there is one.
    Proxy(Option<std::io::ErrorKind>),
    /// The endpoint's name did not resolve.
    Dns,
    /// The TCP connection was refused.
    Refused,
    /// The connection was reset.
    Reset,
    /// The peer closed the socket (end of file).
    ClosedByPeer,
    /// The broker closed the connection (rumqttc read end of stream).
    ClosedByBroker,
    /// No answer to the connection attempt in time.
    Timeout,
    /// A write did not finish in time.
    WriteTimeout,
    /// The broker did not answer a PINGREQ within the keep-alive.
    NoPingResp,
    /// The broker refused the CONNECT (CONNACK return code).
    MqttRefused(rumqttc::ConnectReturnCode),
    /// An incoming packet exceeded the session's incoming packet limit.
    PacketTooLarge,
    /// Another socket error, by its kind.
    Io(std::io::ErrorKind),
    /// Any other MQTT protocol or state error.
    Other,
}

impl CauseKind {
    /// The kind of `err`, found the way [`describe`] finds its words (TLS errors anywhere in the
    /// source chain first, then rumqttc's own variants, then the socket error's kind).
    pub fn of(err: &ConnectionError) -> CauseKind {
        use rustls::CertificateError as C;
        if let ConnectionError::Proxy(e) = err {
            return CauseKind::of_proxy(e);
        }
        let mut source: Option<&(dyn StdError + 'static)> = Some(err);
        let mut io = None;
        while let Some(e) = source {
            let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
                // rustls reports through io::Error; its inner error is not exposed as a source.
                e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(tls) = tls {
                return match tls {
                    rustls::Error::InvalidCertificate(c) => match c {
                        C::Expired | C::ExpiredContext { .. } => CauseKind::TlsCertificateExpired,
                        C::NotValidYet | C::NotValidYetContext { .. } => {
                            CauseKind::TlsCertificateNotValidYet
                        }
                        C::UnknownIssuer => CauseKind::TlsUnknownIssuer,
                        C::NotValidForName | C::NotValidForNameContext { .. } => {
                            CauseKind::TlsNameMismatch
                        }
                        _ => CauseKind::TlsCertificateInvalid,
                    },
                    rustls::Error::AlertReceived(alert) => CauseKind::TlsAlert(*alert),
                    _ => CauseKind::Tls,
                };
            }
            if let Some(e) = e.downcast_ref::<std::io::Error>() {
                io.get_or_insert(e);
            }
            source = e.source();
        }
        match err {
            ConnectionError::ConnectionRefused(code) => CauseKind::MqttRefused(*code),
            ConnectionError::NetworkTimeout => CauseKind::Timeout,
            ConnectionError::FlushTimeout => CauseKind::WriteTimeout,
            ConnectionError::MqttState(StateError::ConnectionAborted) => CauseKind::ClosedByBroker,
            ConnectionError::MqttState(StateError::AwaitPingResp) => CauseKind::NoPingResp,
            ConnectionError::MqttState(StateError::Deserialization(
                rumqttc::Error::PayloadSizeLimitExceeded(_),
            )) => CauseKind::PacketTooLarge,
            _ => match io {
                // std's resolver error has no stable kind; its text is std's own.
                Some(e) if e.to_string().contains("failed to lookup address") => CauseKind::Dns,
                Some(e) => match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => CauseKind::Refused,
                    std::io::ErrorKind::ConnectionReset => CauseKind::Reset,
                    std::io::ErrorKind::UnexpectedEof => CauseKind::ClosedByPeer,
                    std::io::ErrorKind::TimedOut => CauseKind::Timeout,
                    kind => CauseKind::Io(kind),
                },
                None => CauseKind::Other,
            },
        }
    }

    /// The kind of a failed tunnel (see [`describe_proxy`]).
    fn of_proxy(err: &(dyn StdError + 'static)) -> CauseKind {
        use async_http_proxy::HttpError;
        let mut source = Some(err);
        while let Some(e) = source {
            match e.downcast_ref::<HttpError>() {
                Some(HttpError::HttpCode200(code)) => return CauseKind::ProxyStatus(*code),
                Some(HttpError::IoError(io)) => return CauseKind::Proxy(Some(io.kind())),
                Some(_) => return CauseKind::Proxy(None),
                None => {}
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return CauseKind::Proxy(Some(io.kind()));
            }
            source = e.source();
        }
        CauseKind::Proxy(None)
    }

    /// Whether the broker ended an established connection: closed it, reset it, or went away
    /// without a TLS close_notify (what a broker does to the older of two clients with one id).
    pub fn is_closed_by_the_broker(self) -> bool {
        matches!(
            self,
            CauseKind::ClosedByBroker | CauseKind::ClosedByPeer | CauseKind::Reset
        )
    }
}

/// The cause of a failed tunnel through the proxy at `proxy` (`host:port`): the proxy's
/// status line for a refusal, the socket error, or why the answer is not HTTP. Never the
/// credentials (the errors do not carry them). `err` is rumqttc's proxy error (a type rumqttc
/// does not export) or anything whose source chain holds async-http-proxy's or the socket's error.
pub fn describe_proxy(proxy: &str, err: &(dyn StdError + 'static)) -> String {
    use async_http_proxy::HttpError;
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return describe_http(proxy, http);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return describe_io(proxy, io);
        }
        source = e.source();
    }
    format!("proxy {proxy}: {err}")
}

fn describe_io(proxy: &str, io: &std::io::Error) -> String {
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("proxy {proxy}: connection refused"),
        std::io::ErrorKind::ConnectionReset => format!("proxy {proxy}: connection reset by peer"),
        _ => format!("proxy {proxy}: I/O: {io}"),
    }
}

fn describe_http(proxy: &str, err: &async_http_proxy::HttpError) -> String {
    use async_http_proxy::HttpError;
    match err {
        HttpError::HttpCode200(code) => {
            let status = status_line(*code);
            if matches!(code, 401 | 407) {
                format!("proxy {proxy} refused the tunnel: {status} (check the user and password in mqtt.proxy)")
            } else {
                format!("proxy {proxy} refused the tunnel: {status}")
            }
        }
        HttpError::EndOfFile => {
            format!("proxy {proxy} closed the connection before answering CONNECT")
        }
        HttpError::IoError(io) => describe_io(proxy, io),
        // Its text would quote the whole answer.
        HttpError::MaximumResponseHeaderLengthExceeded(_) => format!(
            "proxy {proxy}: not an HTTP proxy answer (header longer than {} bytes)",
            async_http_proxy::MAXIMUM_RESPONSE_HEADER_LENGTH
        ),
        // The other answers that are not HTTP (a parse error, no status code).
        e => format!("proxy {proxy}: not an HTTP proxy answer ({e})"),
    }
}

/// `HTTP <code> <reason>` with the standard reason phrase of the codes proxies answer CONNECT
/// with (the proxy's own phrase is not kept by async-http-proxy).
fn status_line(code: u16) -> String {
    let reason = match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    };
    if reason.is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code} {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::ConnectReturnCode;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_first_retry_waits_between_min_and_twice_min() {
        assert_eq!(backoff(0, S(1), S(60), 0.0), S(1));
        assert_eq!(backoff(0, S(1), S(60), 1.0), S(2));
        assert_eq!(backoff(0, S(1), S(60), 0.5), Duration::from_millis(1500));
    }

    #[test]
    fn backoff_doubles_per_attempt_until_the_cap() {
        assert_eq!(backoff(1, S(1), S(60), 0.0), S(2));
        assert_eq!(backoff(2, S(1), S(60), 0.0), S(4));
        assert_eq!(backoff(3, S(1), S(60), 1.0), S(16));
        assert_eq!(backoff(5, S(1), S(60), 1.0), S(60));
        assert_eq!(backoff(10, S(1), S(60), 0.0), S(30));
    }

    #[test]
    fn capped_delays_keep_their_jitter_and_never_exceed_max() {
        let lo = backoff(20, S(1), S(60), 0.0);
        let hi = backoff(20, S(1), S(60), 1.0);
        assert!(lo < hi);
        assert_eq!(hi, S(60));
        assert_eq!(backoff(u32::MAX, S(1), S(60), 1.0), S(60));
    }

    #[test]
    fn backoff_delays_never_shrink_before_the_cap_whatever_the_jitter() {
        for attempt in 0..6 {
            let worst_now = backoff(attempt, S(1), S(600), 1.0);
            let best_next = backoff(attempt + 1, S(1), S(600), 0.0);
            assert!(worst_now <= best_next, "attempt {attempt}");
        }
    }

    #[test]
    fn backoff_is_never_below_min_even_when_max_is_smaller() {
        assert_eq!(backoff(0, S(5), S(1), 0.0), S(5));
        assert_eq!(backoff(3, S(5), S(1), 1.0), S(5));
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        assert_eq!(backoff(0, S(1), S(60), -3.0), S(1));
        assert_eq!(backoff(0, S(1), S(60), 7.0), S(2));
        assert_eq!(backoff(0, S(1), S(60), f64::NAN), S(1));
    }

    #[test]
    fn jitter_units_stay_in_the_unit_interval() {
        for _ in 0..1000 {
            let j = jitter_unit();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn connection_causes_read_as_short_stable_words() {
        let refused =
            ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(describe(&refused), "connection refused");
        let tls = ConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert_eq!(
            describe(&tls),
            "TLS: invalid peer certificate: UnknownIssuer"
        );
        let na = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert!(describe(&na).contains("NotAuthorized"));
    }

    #[test]
    fn proxy_failures_name_the_proxy_and_its_status_line() {
        use async_http_proxy::HttpError;
        let p = "proxy.example:3128";
        let cases: [(Box<dyn StdError>, &str); 6] = [
            (
                Box::new(HttpError::HttpCode200(407)),
                "proxy proxy.example:3128 refused the tunnel: HTTP 407 Proxy Authentication Required (check the user and password in mqtt.proxy)",
            ),
            (
                Box::new(HttpError::HttpCode200(403)),
                "proxy proxy.example:3128 refused the tunnel: HTTP 403 Forbidden",
            ),
            (
                Box::new(HttpError::HttpCode200(599)),
                "proxy proxy.example:3128 refused the tunnel: HTTP 599",
            ),
            (
                Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
                "proxy proxy.example:3128: connection refused",
            ),
            (
                Box::new(HttpError::EndOfFile),
                "proxy proxy.example:3128 closed the connection before answering CONNECT",
            ),
            (
                Box::new(HttpError::MaximumResponseHeaderLengthExceeded("x".repeat(5000))),
                "proxy proxy.example:3128: not an HTTP proxy answer (header longer than 4096 bytes)",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(describe_proxy(p, err.as_ref()), want);
        }
    }

    /// async-http-proxy's answer to `reply` (an in-memory proxy), described.
    async fn described_reply(reply: &'static [u8]) -> String {
        use tokio::io::AsyncWriteExt;
        let (mut agent, mut proxy) = tokio::io::duplex(1024);
        let answer = tokio::spawn(async move {
            proxy.write_all(reply).await.unwrap();
            proxy // kept open until the handshake is over
        });
        let err = async_http_proxy::http_connect_tokio(&mut agent, "broker.example", 8883)
            .await
            .unwrap_err();
        drop(answer.await);
        describe_proxy("p:3128", &err)
    }

    #[tokio::test]
    async fn a_real_handshake_with_a_refusing_or_garbled_proxy_is_described() {
        assert_eq!(
            described_reply(b"HTTP/1.1 403 Access violation\r\nServer: x\r\n\r\n").await,
            "proxy p:3128 refused the tunnel: HTTP 403 Forbidden"
        );
        assert_eq!(
            described_reply(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await,
            "proxy p:3128: not an HTTP proxy answer (HTTP parse error: invalid HTTP version)"
        );
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn policy(stable_after: Duration) -> ReconnectPolicy {
        ReconnectPolicy {
            min: S(1),
            max: S(60),
            stable_after,
        }
    }

    #[test]
    fn failed_attempts_grow_the_delay_and_an_accepted_connection_starts_it_over_when_stability_is_zero(
    ) {
        let t0 = Instant::now();
        let mut r = Reconnect::new(policy(Duration::ZERO));
        let delays: Vec<Duration> = (0..3)
            .map(|_| fail(&mut r, CauseKind::Refused, t0).retry_in)
            .collect();
        assert_eq!(delays, vec![S(1), S(2), S(4)]);
        r.connected(t0);
        let lost = fail(&mut r, CauseKind::Reset, t0);
        assert_eq!(lost.retry_in, S(1));
        assert_eq!(lost.lasted, Some(Duration::ZERO));
        assert!(lost.new_cause);
        assert_eq!(r.failed_attempts, 1);
        assert_eq!(r.logged_causes.len(), 1);
    }

    #[test]
    fn a_connection_shorter_than_stable_after_keeps_the_backoff_growing() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(policy(S(30)));
        for _ in 0..3 {
            fail(&mut r, CauseKind::Refused, t0);
        }
        r.connected(t0);
        let short = fail(&mut r, CauseKind::ClosedByBroker, t0 + S(29));
        assert_eq!(short.lasted, Some(S(29)));
        assert_eq!(short.retry_in, S(8), "attempt 3, not 0");
        assert_eq!(r.failed_attempts, 4);
        assert_eq!(r.logged_causes.len(), 2);
        r.connected(t0);
        let stable = fail(&mut r, CauseKind::ClosedByBroker, t0 + S(30));
        assert_eq!(stable.retry_in, S(1));
        assert!(
            stable.new_cause,
            "causes are forgotten with the stable connection"
        );
        assert_eq!(r.failed_attempts, 1);
    }

    #[test]
    fn a_cause_is_new_once_per_outage_and_a_failed_attempt_has_no_duration() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(policy(Duration::ZERO));
        let first = fail(&mut r, CauseKind::Refused, t0);
        assert!(first.new_cause);
        assert_eq!(first.lasted, None);
        assert!(!fail(&mut r, CauseKind::Refused, t0).new_cause);
        assert!(fail(&mut r, CauseKind::Tls, t0).new_cause);
        assert!(!fail(&mut r, CauseKind::Refused, t0).new_cause);
        assert!(!r.is_connected());
    }

    #[test]
    fn at_most_max_logged_causes_are_remembered_and_the_oldest_is_forgotten_first() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(policy(Duration::ZERO));
        let kinds = [
            CauseKind::Refused,
            CauseKind::Reset,
            CauseKind::ClosedByPeer,
            CauseKind::ClosedByBroker,
            CauseKind::Timeout,
            CauseKind::WriteTimeout,
            CauseKind::NoPingResp,
            CauseKind::Dns,
            CauseKind::Tls,
        ];
        assert_eq!(kinds.len(), MAX_LOGGED_CAUSES + 1);
        for kind in kinds {
            assert!(fail(&mut r, kind, t0).new_cause);
        }
        assert_eq!(r.logged_causes.len(), MAX_LOGGED_CAUSES);
        assert!(!fail(&mut r, kinds[MAX_LOGGED_CAUSES], t0).new_cause);
        assert!(
            fail(&mut r, kinds[0], t0).new_cause,
            "forgotten, so new again"
        );
    }

    #[test]
    fn a_clock_that_went_backwards_counts_as_a_connection_of_no_duration() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(policy(MS(10)));
        r.connected(t0 + S(5));
        assert_eq!(
            fail(&mut r, CauseKind::Other, t0).lasted,
            Some(Duration::ZERO)
        );
    }

    /// One failure of `kind` at `now`, jitter 0, the kind's name as its text.
    fn fail(r: &mut Reconnect, kind: CauseKind, now: Instant) -> Failure {
        r.failed(kind, format!("{kind:?}"), now, 0.0)
    }

    fn tls_error(e: rustls::CertificateError) -> ConnectionError {
        ConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(e),
        ))
    }

    fn expired_at(now_secs: u64) -> ConnectionError {
        use rustls::pki_types::UnixTime;
        tls_error(rustls::CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(S(now_secs)),
            not_after: UnixTime::since_unix_epoch(S(1_000)),
        })
    }

    #[test]
    fn an_expired_server_certificate_is_one_cause_although_its_text_names_the_verification_time() {
        let (first, second) = (expired_at(2_000_000_000), expired_at(2_000_000_007));
        assert_ne!(describe(&first), describe(&second), "the texts differ");
        assert_eq!(CauseKind::of(&first), CauseKind::TlsCertificateExpired);
        assert_eq!(CauseKind::of(&second), CauseKind::TlsCertificateExpired);
        let mut s = test_session(Duration::ZERO);
        let t0 = Instant::now();
        assert!(s.failed(&first, t0).new_cause);
        for i in 1..20 {
            let later = expired_at(2_000_000_000 + i);
            let failure = s.failed(&later, t0 + S(i));
            assert!(!failure.new_cause, "attempt {i}: {}", failure.cause);
        }
        assert_eq!(s.reconnect().logged_causes.len(), 1);
    }

    #[test]
    fn cause_kinds_tell_tls_dns_socket_and_mqtt_failures_apart() {
        use rustls::CertificateError as C;
        let io = |kind| ConnectionError::Io(std::io::Error::from(kind));
        let dns = ConnectionError::Io(std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        ));
        let cases = [
            (tls_error(C::Expired), CauseKind::TlsCertificateExpired),
            (
                tls_error(C::NotValidYet),
                CauseKind::TlsCertificateNotValidYet,
            ),
            (tls_error(C::UnknownIssuer), CauseKind::TlsUnknownIssuer),
            (tls_error(C::NotValidForName), CauseKind::TlsNameMismatch),
            (tls_error(C::BadSignature), CauseKind::TlsCertificateInvalid),
            (
                ConnectionError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                )),
                CauseKind::TlsAlert(rustls::AlertDescription::UnknownCA),
            ),
            (dns, CauseKind::Dns),
            (
                io(std::io::ErrorKind::ConnectionRefused),
                CauseKind::Refused,
            ),
            (io(std::io::ErrorKind::ConnectionReset), CauseKind::Reset),
            (
                io(std::io::ErrorKind::UnexpectedEof),
                CauseKind::ClosedByPeer,
            ),
            (
                io(std::io::ErrorKind::PermissionDenied),
                CauseKind::Io(std::io::ErrorKind::PermissionDenied),
            ),
            (ConnectionError::NetworkTimeout, CauseKind::Timeout),
            (ConnectionError::FlushTimeout, CauseKind::WriteTimeout),
            (
                ConnectionError::MqttState(StateError::ConnectionAborted),
                CauseKind::ClosedByBroker,
            ),
            (
                ConnectionError::MqttState(StateError::AwaitPingResp),
                CauseKind::NoPingResp,
            ),
            (
                ConnectionError::MqttState(StateError::Deserialization(
                    rumqttc::Error::PayloadSizeLimitExceeded(200_000),
                )),
                CauseKind::PacketTooLarge,
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
                CauseKind::MqttRefused(ConnectReturnCode::NotAuthorized),
            ),
            (
                ConnectionError::MqttState(StateError::WrongPacket),
                CauseKind::Other,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(CauseKind::of(&err), kind, "{err:?}");
        }
    }

    #[test]
    fn a_proxy_refusal_is_kept_apart_by_status_and_other_proxy_failures_by_socket_error() {
        use async_http_proxy::HttpError;
        // rumqttc's ProxyError is not exported; its source chain is what `of_proxy` reads.
        assert_eq!(
            CauseKind::of_proxy(&HttpError::HttpCode200(407)),
            CauseKind::ProxyStatus(407)
        );
        assert_eq!(
            CauseKind::of_proxy(&HttpError::HttpCode200(403)),
            CauseKind::ProxyStatus(403)
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            CauseKind::of_proxy(&refused),
            CauseKind::Proxy(Some(std::io::ErrorKind::ConnectionRefused))
        );
        assert_eq!(
            CauseKind::of_proxy(&HttpError::EndOfFile),
            CauseKind::Proxy(None)
        );
    }

    /// Connects at `at` and is closed by the broker `after` later.
    fn closed_after(r: &mut Reconnect, at: Instant, after: Duration) -> Failure {
        r.connected(at);
        fail(r, CauseKind::ClosedByBroker, at + after)
    }

    #[test]
    fn a_broker_closing_each_connection_soon_after_the_connack_is_a_client_id_clash_said_once_and_retried_at_the_cap(
    ) {
        let t0 = Instant::now();
        let mut r = Reconnect::new(policy(S(30)));
        let first: Vec<Failure> = (0..CLASH_AFTER - 1)
            .map(|_| closed_after(&mut r, t0, S(2)))
            .collect();
        assert!(first.iter().all(|f| !f.client_id_clash));
        assert_eq!(first[1].retry_in, S(2), "still the growing backoff");
        let clash = closed_after(&mut r, t0, S(2));
        assert!(clash.client_id_clash);
        assert_eq!(clash.retry_in, S(30), "the capped range [max/2, max]");
        let again = closed_after(&mut r, t0, S(2));
        assert!(!again.client_id_clash, "said once");
        assert!(!again.new_cause);
        assert_eq!(
            r.failed(CauseKind::ClosedByBroker, "x".into(), t0, 1.0)
                .retry_in,
            S(60)
        );
        // In a clash a connection lasts as long as the rival's delay, up to max: not stable.
        let rival_waited = closed_after(&mut r, t0, S(60));
        assert_eq!(rival_waited.retry_in, S(30), "still capped");
        assert!(r.clash_suspected);
        // One that outlived two capped delays was not the clash: the backoff starts over.
        assert_eq!(r.clash_cleared_after(), S(120));
        let lasted = closed_after(&mut r, t0, S(120));
        assert_eq!(lasted.retry_in, S(1));
        assert!(lasted.new_cause);
        assert!(!r.clash_suspected);
    }

    #[test]
    fn other_failures_break_the_row_of_broker_closes() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(policy(S(30)));
        for _ in 0..3 {
            for _ in 0..CLASH_AFTER - 1 {
                assert!(!closed_after(&mut r, t0, S(1)).client_id_clash);
            }
            fail(&mut r, CauseKind::Refused, t0); // the broker was down in between
        }
        r.connected(t0);
        fail(&mut r, CauseKind::PacketTooLarge, t0 + S(1));
        assert!(!closed_after(&mut r, t0, S(1)).client_id_clash);
        assert_eq!(r.broker_closes, 1);
    }

    #[test]
    fn without_a_stability_period_no_clash_is_suspected() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(policy(Duration::ZERO));
        for _ in 0..10 {
            let f = closed_after(&mut r, t0, Duration::ZERO);
            assert!(!f.client_id_clash);
            assert_eq!(f.retry_in, S(1));
        }
    }

    fn test_session(stable_after: Duration) -> Session {
        Session::new(Options {
            client_id: "s".into(),
            host: "localhost".into(),
            port: 1883,
            proxy: None,
            tls: None,
            keep_alive: S(30),
            clean_session: true,
            packet_limits: None,
            inflight: None,
            request_channel_capacity: 4,
            reconnect: ReconnectPolicy {
                min: MS(10),
                max: S(1),
                stable_after,
            },
            describe,
        })
        .unwrap()
    }

    fn connack() -> Event {
        Event::Incoming(Packet::ConnAck(rumqttc::ConnAck::new(
            ConnectReturnCode::Success,
            true,
        )))
    }

    #[test]
    fn a_connack_is_connected_and_a_poll_error_is_a_described_failure_that_asks_for_a_wait() {
        let t0 = Instant::now();
        let mut s = test_session(Duration::ZERO);
        assert!(!s.backing_off());
        assert!(matches!(
            s.on_poll(Ok(connack()), t0),
            SessionEvent::Connected {
                session_present: true
            }
        ));
        assert!(s.is_connected());
        let refused =
            ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        match s.on_poll(Err(refused), t0 + S(3)) {
            SessionEvent::Failed { failure, .. } => {
                assert_eq!(failure.cause, "connection refused");
                assert_eq!(failure.lasted, Some(S(3)));
                assert!(failure.retry_in >= MS(10) && failure.retry_in <= MS(20));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!s.is_connected());
        assert!(s.backing_off());
    }

    #[tokio::test]
    async fn the_backoff_deadline_survives_a_dropped_next_future() {
        let mut s = test_session(Duration::ZERO);
        let closed = ConnectionError::MqttState(StateError::ConnectionAborted);
        let retry_in = s.failed(&closed, Instant::now()).retry_in;
        let before = tokio::time::Instant::now();
        // Polled once, then dropped during the wait: the deadline stays where it was set.
        assert!(tokio::time::timeout(Duration::ZERO, s.next())
            .await
            .is_err());
        let after = tokio::time::Instant::now();
        assert!(s.backing_off());
        match s.wait {
            Wait::Until(deadline) => {
                assert!(deadline >= before + retry_in && deadline <= after + retry_in);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(tokio::time::timeout(Duration::ZERO, s.next())
            .await
            .is_err());
        assert!(matches!(s.wait, Wait::Until(d) if d <= after + retry_in));
    }

    #[tokio::test]
    async fn disconnecting_a_session_that_never_connected_does_nothing() {
        let mut s = test_session(Duration::ZERO);
        assert!(matches!(s.disconnect().await, Disconnect::NotConnected));
    }
}

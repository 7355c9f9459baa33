//! The wiring: builds the parts from `Config`, runs the agent loop that owns all state, and drives
//! the MQTT link through its handle.
//!
//! One loop owns the report builder, the spool and the publishing state; the link task owns
//! rumqttc's event loop; they talk through two bounded channels. Reports are written to the spool
//! (fsynced) before they are offered to the link, and leave it only on an answer.
//!
//! Publishing rules (spec: metrics-report.md A.3, D.12, D.13):
//! - one report in flight at a time; its answer (matched by `reportId`) acks or rejects it;
//! - `backlog = "latest"`: the newest pending report is published and older pending ones become
//!   superseded history; `"all"`: the oldest pending goes first, one per report interval;
//! - a report without an answer after `answer_timeout_secs` is held until the next connection,
//!   then offered again;
//! - a rejected report is logged once per distinct `ErrorCode`, kept in the spool as history and
//!   never published again.

pub mod detect;
pub mod oneshot;

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::collect::{self, Collectors, Episodes, Sampler};
use crate::config::Config;
use crate::mqtt::{self, LinkCommand, LinkEvent, LinkHandle};
use crate::report::{self, outcome, EncodedReport, ReportBuilder};
use crate::spool::{Backlog, Entry, EntryState, Spool};
use crate::status::{self, LastAnswer, LastReport, LinkState, SpoolStatus, Status};
use crate::store::{self, ReportIdFile};
use crate::traffic::{
    self, AuthFailureKind, Direction, TrafficCounters, TrafficEvent, TrafficMetric,
};

/// Clocks before this (2025-01-01T00:00:00Z) are not plausible: a board without an RTC before NTP
/// sync. No report is built then, because the report id would not be a usable timestamp
/// (spec: metrics-report.md D.1).
pub const PLAUSIBLE_EPOCH_SECS: u64 = 1_735_689_600;

/// In-memory outbox used only while the spool cannot be written (disk full, read-only): the
/// newest few reports, so the agent keeps reporting; oldest dropped first.
const MEMORY_OUTBOX_CAPACITY: usize = 4;

/// Tap → agent event channel: room for a burst of local-broker traffic between two turns of the
/// loop; when full the tap drops (and counts) events rather than stall its broker connection.
const TAP_EVENTS_CAPACITY: usize = 1024;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The collectors could not be set up (e.g. a bad interface glob).
    #[error("collectors: {0}")]
    Collect(#[from] collect::Error),
    /// The MQTT link could not be set up (TLS files, thing name).
    #[error("{0}")]
    Link(#[from] mqtt::Error),
    /// The tap could not be set up (filters, TLS files).
    #[error("{0}")]
    Tap(#[from] crate::tap::Error),
    /// No `[mqtt]` table and not a dry run.
    #[error(
        "the configuration has no [mqtt] table: add one, or use --dry-run to print reports instead"
    )]
    NoMqtt,
    /// Detect profiles could not be loaded.
    #[error("{0}")]
    Detect(#[from] detect::Error),
    /// The runtime failed.
    #[error("runtime: {0}")]
    Runtime(String),
}

/// How the daemon runs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print reports to stdout instead of publishing them (no spool, no link).
    pub dry_run: bool,
    /// The file the config came from, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
}

/// Why one agent loop ended.
enum Ended {
    /// Shutdown requested.
    Stopped,
    /// SIGHUP with a valid new configuration: restart the loop with it.
    Reload(Box<Config>),
}

/// Runs the daemon until `shutdown` is cancelled. SIGHUP reloads the configuration: an invalid new
/// file is logged and ignored, a valid one restarts the loop (clean disconnect, spool kept).
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
    mut reload: tokio::sync::mpsc::Receiver<()>,
) -> Result<(), Error> {
    let mut config = config;
    loop {
        match run_once(config, &opts, &shutdown, &mut reload).await? {
            Ended::Stopped => return Ok(()),
            Ended::Reload(next) => {
                info!("Configuration reloaded; restarting the agent loop.");
                config = *next;
            }
        }
    }
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The report in flight: published, answer not yet received.
struct InFlight {
    id: u64,
    deadline: Instant,
}

struct Agent {
    config: Config,
    dry_run: bool,
    sampler: Arc<Collectors>,
    episodes: Episodes,
    builder: ReportBuilder,
    format: report::Format,
    keys: report::KeySet,
    id_file: ReportIdFile,
    last_id: Option<u64>,
    spool: Option<Spool>,
    /// Reports that could not be spooled (disk full, read-only), newest last.
    memory: VecDeque<Entry>,
    link: Option<LinkHandle>,
    /// Messages the tap saw on the local broker.
    tap_events: Option<tokio::sync::mpsc::Receiver<TrafficEvent>>,
    connected: bool,
    in_flight: Option<InFlight>,
    /// Ids whose answer timed out: not offered again before the next connection.
    held: HashSet<u64>,
    /// `backlog = "all"`: no publish before this instant.
    next_publish_at: Option<Instant>,
    last_sample_at: Option<SystemTime>,
    logged_rejections: HashSet<String>,
    spool_error_logged: Option<String>,
    id_file_error_logged: bool,
    clock_warned: bool,
    dropped: u64,
    /// MQTT traffic of the own link (and the tap), by TOPIC_FILTER scope.
    traffic: TrafficCounters,
    /// `[detect]`: the local Detect engine, its store and alarms.
    detect: Option<detect::DetectPart>,
    status: Status,
}

async fn run_once(
    config: Config,
    opts: &RunOptions,
    shutdown: &CancellationToken,
    reload: &mut tokio::sync::mpsc::Receiver<()>,
) -> Result<Ended, Error> {
    let link_token = CancellationToken::new();
    let mut agent = Agent::new(config, opts.dry_run, &link_token)?;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&agent.status_line()),
    ]);

    let sample_every = agent.config.collect.sample_interval;
    let report_every = agent.config.report.interval;
    let jitter = agent
        .config
        .report
        .startup_jitter
        .mul_f64(mqtt::jitter_unit());
    let start = Instant::now();
    let mut sample_timer = tokio::time::interval_at(start + sample_every, sample_every);
    sample_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut report_timer = tokio::time::interval_at(start + jitter, report_every);
    report_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let watchdog_every = watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
    if jitter > Duration::ZERO {
        info!(
            jitter_secs = jitter.as_secs(),
            "First report after the start-up jitter."
        );
    }
    // Cloud-side Detect ticks are epoch multiples of 300 s: one wake-up per tick, just after it.
    let mut detect_at = agent.detect.as_ref().map(|_| next_detect_tick());
    // The first sample is the baseline for the first report's deltas.
    agent.sample_and_observe().await;

    let ended = loop {
        let in_flight_deadline = agent.in_flight.as_ref().map(|f| f.deadline);
        let pace_at = agent.next_publish_at;
        tokio::select! {
            _ = shutdown.cancelled() => break Ended::Stopped,
            Some(()) = reload.recv() => {
                match opts.config_path.as_deref().map(Config::load) {
                    Some(Ok(next)) => match detect::DetectPart::check(&next) {
                        // Only the Detect files may have changed: reload them in place (the
                        // link, spool and traffic windows carry on).
                        Ok(()) if next == agent.config => {
                            info!("SIGHUP: configuration unchanged; reloading the Detect files in place.");
                            agent.reload_detect();
                        }
                        Ok(()) => break Ended::Reload(Box::new(next)),
                        Err(e) => error!(error = %e, "SIGHUP: the new Detect files are invalid; keeping the running configuration."),
                    },
                    Some(Err(e)) => error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the running one."),
                    None => warn!("SIGHUP: no configuration file to reload (built-in configuration)."),
                }
            }
            _ = sample_timer.tick() => agent.sample_and_observe().await,
            _ = report_timer.tick() => {
                agent.sample_and_observe().await;
                agent.report_tick();
                agent.pump().await;
            }
            Some(event) = recv_event(&mut agent.link) => {
                agent.on_link_event(event).await;
            }
            Some(event) = recv_tap(&mut agent.tap_events) => {
                agent.traffic.record(&event, SystemTime::now());
            }
            _ = sleep_until_opt(in_flight_deadline) => agent.on_answer_timeout().await,
            _ = sleep_until_opt(pace_at) => {
                agent.next_publish_at = None;
                agent.pump().await;
            }
            _ = sleep_until_opt(detect_at) => {
                agent.detect_timer();
                detect_at = Some(next_detect_tick());
            }
            _ = watchdog.tick(), if watchdog_every.is_some() => notify(&[sd_notify::NotifyState::Watchdog]),
        }
    };

    agent.shutdown(link_token).await;
    Ok(ended)
}

/// Applies one push message (or refuses it) and says what happened.
fn push_outcome(
    d: &crate::detect::Settings,
    p: &crate::detect::PushSettings,
    payload: &[u8],
) -> crate::manage::push::Outcome {
    use crate::manage::push::{Outcome, Refused};
    if payload.len() > p.max_bytes {
        return Outcome::refused(&Refused::one(
            None,
            format!(
                "the message has {} bytes, more than detect.push.max_bytes ({}); it was not read",
                payload.len(),
                p.max_bytes
            ),
        ));
    }
    let Ok(body) = std::str::from_utf8(payload) else {
        return Outcome::refused(&Refused::one(None, "the message is not UTF-8 JSON"));
    };
    let managed = match crate::manage::ops::Managed::from_config(d) {
        Ok(m) => m,
        Err(e) => return Outcome::refused(&Refused::one(None, e)),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |t| (t.as_millis() as f64) / 1000.0);
    match managed.apply_push(body, now, &crate::manage::ops::arns_for(d)) {
        Ok(Ok(plan)) => Outcome::applied(&plan),
        Ok(Err(refused)) => Outcome::refused(&refused),
        Err(e) => {
            error!(error = %e, "Cannot apply a push to the profile directories.");
            Outcome::refused(&Refused::one(None, format!("not applied: {e}")))
        }
    }
}

/// One second after the next epoch multiple of 300 s (the traffic bucket has closed by then).
/// A wall-clock jump only delays a tick: the Detect part runs every tick that is due.
fn next_detect_tick() -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into = now.as_millis() % 300_000;
    let wait = Duration::from_millis((300_000 - into) as u64 + 1_000);
    Instant::now() + wait.min(Duration::from_secs(301))
}

async fn recv_event(link: &mut Option<LinkHandle>) -> Option<LinkEvent> {
    match link {
        Some(l) => l.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_tap(
    tap: &mut Option<tokio::sync::mpsc::Receiver<TrafficEvent>>,
) -> Option<TrafficEvent> {
    match tap {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Half the systemd watchdog interval, when systemd asked for one.
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // No NOTIFY_SOCKET (not under systemd) is fine; a failing socket is worth a debug line only.
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed.");
    }
}

impl Agent {
    fn new(config: Config, dry_run: bool, link_token: &CancellationToken) -> Result<Agent, Error> {
        let sampler = Arc::new(Collectors::new(config.collect.clone())?);
        let builder = ReportBuilder::new(&config.report);
        let format = config.report.format;
        let keys = config.report.keys;
        let id_file = ReportIdFile::new(&config.state_dir);
        let mut spool = None;
        let mut last_id = None;
        if !dry_run {
            if let Err(e) = store::ensure_dir(&config.state_dir) {
                error!(error = %e, "Cannot create the state directory; reports are kept in memory only.");
            }
            match Spool::open(config.spool.clone()) {
                Ok((s, recovery)) => {
                    info!(
                        pending = recovery.pending,
                        entries = recovery.entries,
                        cut_bytes = recovery.cut_bytes(),
                        "Spool opened."
                    );
                    last_id = recovery.last_id;
                    spool = Some(s);
                }
                Err(e) => {
                    error!(error = %e, "Cannot open the spool; reports are kept in memory only until it can be written.")
                }
            }
            match id_file.load() {
                Ok(id) => last_id = last_id.max(id),
                Err(e) => {
                    warn!(error = %e, "Cannot read the last report id; report ids continue from the clock.")
                }
            }
        }
        let link = if dry_run {
            None
        } else {
            let settings = config.mqtt.clone().ok_or(Error::NoMqtt)?;
            if !settings.tls {
                warn!(endpoint = %settings.endpoint, "TLS is off (mqtt.tls = false): reports travel in plaintext. Use this only for a local broker.");
            }
            let (handle, _join) = mqtt::spawn(settings, link_token.clone())?;
            Some(handle)
        };
        let tap_events = match config.tap.clone() {
            Some(settings) if !dry_run => {
                let (tx, rx) = tokio::sync::mpsc::channel(TAP_EVENTS_CAPACITY);
                let _join = crate::tap::spawn(settings, tx, link_token.clone())?;
                Some(rx)
            }
            _ => None,
        };
        let detect = detect::DetectPart::start(&config)?;
        let scopes = detect
            .as_ref()
            .map_or_else(Vec::new, detect::DetectPart::traffic_scopes);
        let traffic = TrafficCounters::new(scopes, traffic::Settings::default())
            .map_err(|e| Error::Runtime(format!("traffic counters: {e}")))?;
        let now = epoch_secs(SystemTime::now());
        let status = Status {
            pid: std::process::id(),
            thing_name: config.thing_name.clone(),
            started_at: now,
            updated_at: now,
            connection: if dry_run {
                LinkState::DryRun
            } else {
                LinkState::Connecting
            },
            last_error: None,
            last_report: None,
            last_answer: None,
            spool: SpoolStatus::default(),
            traffic: None,
        };
        let mut agent = Agent {
            config,
            dry_run,
            sampler,
            episodes: Episodes::new(),
            builder,
            format,
            keys,
            id_file,
            last_id,
            spool,
            memory: VecDeque::new(),
            link,
            tap_events,
            connected: false,
            in_flight: None,
            held: HashSet::new(),
            next_publish_at: None,
            last_sample_at: None,
            logged_rejections: HashSet::new(),
            spool_error_logged: None,
            id_file_error_logged: false,
            clock_warned: false,
            dropped: 0,
            traffic,
            detect,
            status,
        };
        agent.write_status();
        Ok(agent)
    }

    fn status_line(&self) -> String {
        let state = match self.status.connection {
            LinkState::DryRun => "dry run: printing reports",
            LinkState::Connected => "connected",
            LinkState::Connecting | LinkState::Starting => "connecting",
            LinkState::Disconnected => "disconnected, reconnecting",
            LinkState::Stopping | LinkState::Stopped => "stopping",
        };
        let pending = self
            .spool
            .as_ref()
            .map_or(self.memory.len(), |s| s.stats().pending);
        match &self.status.last_report {
            Some(r) => format!("{state}; last report {}; {pending} pending", r.id),
            None => format!("{state}; no report yet; {pending} pending"),
        }
    }

    async fn sample_and_observe(&mut self) {
        let sampler = Arc::clone(&self.sampler);
        let (sample, errors) = match tokio::task::spawn_blocking(move || sampler.sample()).await {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "The sampling task failed.");
                return;
            }
        };
        let changes = self.episodes.observe(&errors);
        for e in changes.started {
            warn!(collector = ?e.collector(), error = %e, "Collector failed; its block is left out of reports until it recovers.");
        }
        for c in changes.recovered {
            info!(collector = ?c, "Collector recovered.");
        }
        let now = SystemTime::now();
        if let Some(prev) = self.last_sample_at {
            let gap = now.duration_since(prev).unwrap_or(Duration::ZERO);
            let limit = (self.config.collect.sample_interval * 3)
                .max(self.config.collect.sample_interval + Duration::from_secs(60));
            if gap > limit {
                info!(
                    gap_secs = gap.as_secs(),
                    "Long gap between samples (suspend or stall); counters re-baselined."
                );
                self.builder.rebaseline();
            }
        }
        self.last_sample_at = Some(now);
        let mut sample = sample;
        self.add_traffic_exports(&mut sample, now);
        self.builder.observe(&sample);
        self.write_status();
    }

    /// `[[traffic_exports]]`: counts of the last complete traffic window(s) covering the report
    /// interval, as `number` custom metrics (spec: metrics-report.md D.16).
    fn add_traffic_exports(&self, sample: &mut crate::sample::Sample, now: SystemTime) {
        let bucket = self.traffic.settings().bucket_secs;
        let longest = bucket * self.traffic.settings().history_buckets as u64;
        let end = epoch_secs(now) / bucket * bucket;
        let duration = self
            .config
            .report
            .interval
            .as_secs()
            .div_ceil(bucket)
            .max(1)
            * bucket;
        for e in &self.config.traffic_exports {
            let Some(metric) = TrafficMetric::from_aws_name(&e.metric, traffic::SizeAggregate::Max)
            else {
                continue;
            };
            let scope = match &e.dimension {
                None => None,
                Some(d) => {
                    let name = if e.not_in {
                        format!("{d}:NOT_IN")
                    } else {
                        d.clone()
                    };
                    match self.traffic.scope_index(&name) {
                        Some(i) => Some(i),
                        None => continue,
                    }
                }
            };
            if let Ok(Some(v)) = self
                .traffic
                .export(scope, metric, end, duration.min(longest))
            {
                sample.custom.push((e.name.clone(), v));
            }
        }
    }

    /// Builds, spools (or prints) one report.
    fn report_tick(&mut self) {
        let now = epoch_secs(SystemTime::now());
        if now < PLAUSIBLE_EPOCH_SECS {
            if !self.clock_warned {
                warn!(epoch = now, "The system clock is not set (no RTC, NTP not synced yet); no report until it is.");
                self.clock_warned = true;
            }
            return;
        }
        self.clock_warned = false;
        let id = report::next_report_id(now, self.last_id);
        let built = self.builder.build(id);
        for (name, why) in &built.dropped {
            warn!(metric = %name, error = %why, "Custom metric value breaks the AWS rules; left out of the report.");
        }
        if let Some(d) = self.detect.as_mut() {
            let alarms = d.on_report(&built.report);
            self.publish_alarms(alarms);
        }
        let encoded = EncodedReport::new(&built.report, self.format, self.keys);
        self.last_id = Some(id);
        if let Err(e) = self.id_file.save(id) {
            if !self.id_file_error_logged {
                error!(error = %e, "Cannot persist the last report id.");
                self.id_file_error_logged = true;
            }
        } else {
            self.id_file_error_logged = false;
        }
        self.status.last_report = Some(LastReport { id, time: now });
        if self.dry_run {
            print_report(&encoded);
            self.write_status();
            return;
        }
        let entry = Entry {
            id,
            format: encoded.format,
            payload: encoded.bytes,
        };
        match self.spool.as_mut().map(|s| s.append(entry.clone())) {
            Some(Ok(appended)) => {
                info!(id, bytes = entry.payload.len(), "Report spooled.");
                if appended.dropped_oldest > 0 {
                    self.dropped += appended.dropped_oldest as u64;
                    warn!(
                        dropped = appended.dropped_oldest,
                        pending_dropped = appended.dropped_pending,
                        "Spool full; oldest reports dropped."
                    );
                }
                if self.spool_error_logged.take().is_some() {
                    info!("The spool is writable again.");
                }
                // Anything kept in memory while the disk failed goes to disk now.
                self.flush_memory();
            }
            Some(Err(e)) => {
                let cause = e.to_string();
                if self.spool_error_logged.as_deref() != Some(cause.as_str()) {
                    error!(error = %cause, "Cannot write the report to the spool; keeping it in memory and reporting on.");
                    self.spool_error_logged = Some(cause);
                }
                self.keep_in_memory(entry);
            }
            None => self.keep_in_memory(entry),
        }
        self.write_status();
    }

    fn keep_in_memory(&mut self, entry: Entry) {
        if self.memory.len() >= MEMORY_OUTBOX_CAPACITY {
            self.memory.pop_front();
            self.dropped += 1;
        }
        self.memory.push_back(entry);
    }

    fn flush_memory(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        while let Some(e) = self.memory.front() {
            if self.in_flight.as_ref().is_some_and(|f| f.id == e.id) {
                break;
            }
            match spool.append(e.clone()) {
                Ok(_) => {
                    self.memory.pop_front();
                }
                Err(_) => break,
            }
        }
    }

    /// The next report to offer, by backlog policy, skipping held ids.
    fn next_candidate(&mut self) -> Option<Entry> {
        let latest = self.config.spool.backlog == Backlog::Latest;
        let mut pending: Vec<&Entry> = self
            .spool
            .iter()
            .flat_map(|s| s.entries())
            .filter(|(_, st)| matches!(st, EntryState::Pending))
            .map(|(e, _)| e)
            .chain(self.memory.iter())
            .filter(|e| !self.held.contains(&e.id))
            .collect();
        pending.sort_by_key(|e| e.id);
        let chosen = if latest {
            pending.last()
        } else {
            pending.first()
        };
        chosen.map(|e| (*e).clone())
    }

    /// Offers the next report to the link when connected and nothing is in flight.
    async fn pump(&mut self) {
        if self.dry_run || !self.connected || self.in_flight.is_some() {
            return;
        }
        if let Some(at) = self.next_publish_at {
            if Instant::now() < at {
                return;
            }
        }
        let Some(entry) = self.next_candidate() else {
            return;
        };
        if self.config.spool.backlog == Backlog::Latest {
            let mut superseded = 0;
            if let Some(spool) = self.spool.as_mut() {
                match spool.supersede_older_than(entry.id) {
                    Ok(n) => superseded = n,
                    Err(e) => warn!(error = %e, "Cannot mark older reports superseded."),
                }
            }
            let before = self.memory.len();
            self.memory.retain(|e| e.id >= entry.id);
            superseded += before - self.memory.len();
            if superseded > 0 {
                info!(superseded, newest = entry.id, "Publishing the newest report; older pending reports kept as superseded history.");
            }
        }
        let Some(link) = self.link.as_ref() else {
            return;
        };
        let cmd = LinkCommand::PublishReport {
            id: entry.id,
            payload: entry.payload,
        };
        match link.commands.try_send(cmd) {
            Ok(()) => {
                debug!(id = entry.id, "Report offered to the link.");
                self.in_flight = Some(InFlight {
                    id: entry.id,
                    deadline: Instant::now()
                        + self
                            .config
                            .mqtt
                            .as_ref()
                            .map_or(Duration::from_secs(60), |m| m.answer_timeout),
                });
            }
            Err(e) => debug!(error = %e, "Link busy; the report stays pending."),
        }
    }

    async fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected => {
                info!("Connected.");
                self.connected = true;
                self.held.clear();
                self.status.connection = LinkState::Connected;
                self.status.last_error = None;
                self.write_status();
                if let Some(d) = self.detect.as_mut() {
                    let mut alarms = d.take_pending();
                    alarms.extend(d.on_connected());
                    self.publish_alarms(alarms);
                }
                self.pump().await;
            }
            LinkEvent::Disconnected { cause } => {
                self.connected = false;
                self.in_flight = None;
                self.status.connection = LinkState::Disconnected;
                self.status.last_error = Some(cause);
                self.write_status();
            }
            LinkEvent::ReportSent { id } => {
                debug!(id, "Report acknowledged by the broker (PUBACK).")
            }
            LinkEvent::Answer { accepted, payload } => self.on_answer(accepted, &payload).await,
            LinkEvent::Message {
                topic,
                payload,
                retained,
            } => self.on_push(&topic, &payload, retained),
            LinkEvent::CommandRefused {
                report_id,
                topic,
                reason,
            } => {
                error!(?report_id, %topic, %reason, "The link refused to publish.");
                if let (Some(id), Some(spool)) = (report_id, self.spool.as_mut()) {
                    let _ = spool.reject(id, "LocalRefused", &reason);
                }
                if self.in_flight.as_ref().map(|f| f.id) == report_id {
                    self.in_flight = None;
                }
            }
            LinkEvent::Traffic(t) => {
                if let mqtt::LinkTraffic::ConnectionAttempt { failure: Some(f) } = &t {
                    self.status.last_error = Some(f.cause.clone());
                    self.write_status();
                }
                self.traffic
                    .record(&link_traffic_event(t), SystemTime::now());
            }
        }
    }

    async fn on_answer(&mut self, accepted_topic: bool, payload: &[u8]) {
        let parsed = match outcome::parse(payload, self.format) {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "Unreadable answer from Device Defender; ignored.");
                return;
            }
        };
        // A rejection without reportId (malformed report) is for the report in flight.
        let id = parsed.report_id.or_else(|| {
            if accepted_topic {
                None
            } else {
                self.in_flight.as_ref().map(|f| f.id)
            }
        });
        let Some(id) = id else {
            warn!("Accepted answer without reportId; ignored.");
            return;
        };
        let now = epoch_secs(SystemTime::now());
        match parsed.status {
            outcome::Status::Accepted => {
                debug!(id, "Report accepted.");
                if let Some(s) = self.spool.as_mut() {
                    if let Err(e) = s.ack(id) {
                        warn!(error = %e, id, "Cannot remove the accepted report from the spool.");
                    }
                }
                self.memory.retain(|e| e.id != id);
                self.status.last_answer = Some(LastAnswer {
                    id: Some(id),
                    status: "accepted".into(),
                    code: None,
                    message: None,
                    time: now,
                });
            }
            outcome::Status::Rejected { code, message } => {
                if self.logged_rejections.insert(code.clone()) {
                    error!(id, code = %code, message = %message, "Report rejected; kept in the spool for inspection, not retried.");
                } else {
                    debug!(id, code = %code, "Report rejected again.");
                }
                if let Some(s) = self.spool.as_mut() {
                    if let Err(e) = s.reject(id, &code, &message) {
                        warn!(error = %e, id, "Cannot mark the rejected report in the spool.");
                    }
                }
                self.memory.retain(|e| e.id != id);
                self.status.last_answer = Some(LastAnswer {
                    id: Some(id),
                    status: "rejected".into(),
                    code: Some(code),
                    message: Some(message),
                    time: now,
                });
            }
        }
        if self.in_flight.as_ref().is_some_and(|f| f.id == id) {
            self.in_flight = None;
            if self.config.spool.backlog == Backlog::All {
                self.next_publish_at = Some(Instant::now() + self.config.report.interval);
            }
        }
        self.write_status();
        self.pump().await;
    }

    async fn on_answer_timeout(&mut self) {
        if let Some(f) = self.in_flight.take() {
            warn!(id = f.id, "No answer from Device Defender in time; the report is retried on the next connection.");
            self.held.insert(f.id);
        }
        self.pump().await;
    }

    fn write_status(&mut self) {
        if self.dry_run {
            return;
        }
        let now = epoch_secs(SystemTime::now());
        self.status.updated_at = now;
        if let Some(s) = &self.spool {
            let st = s.stats();
            self.status.spool = SpoolStatus {
                pending: st.pending as u64,
                superseded: st.superseded as u64,
                rejected: st.rejected as u64,
                dropped: self.dropped,
                bytes: st.file_bytes,
            };
        } else {
            self.status.spool = SpoolStatus {
                pending: self.memory.len() as u64,
                dropped: self.dropped,
                ..SpoolStatus::default()
            };
        }
        self.status.traffic = serde_json::to_value(self.traffic.totals()).ok();
        // Status is best effort: the spool error (same disk) is already logged once.
        let _ = status::write(&self.config.state_dir, &self.status);
        notify(&[sd_notify::NotifyState::Status(&self.status_line())]);
    }

    /// `[detect.push]`: applies a pushed set of profiles and dimensions (or refuses it whole),
    /// reloads Detect in place when anything changed, and publishes the outcome.
    fn on_push(&mut self, topic: &str, payload: &[u8], retained: bool) {
        let Some((d, p)) = self
            .config
            .detect
            .as_ref()
            .and_then(|d| Some((d.clone(), d.push.clone()?)))
        else {
            return;
        };
        if topic != p.topic {
            return;
        }
        if payload.is_empty() {
            // An empty retained message is how a retained push is cleared.
            debug!(%topic, "Empty push message (a cleared retained message); nothing to do.");
            return;
        }
        let outcome = push_outcome(&d, &p, payload);
        let changed = outcome
            .dimensions
            .iter()
            .chain(&outcome.security_profiles)
            .filter(|e| e.change != crate::manage::push::Change::Unchanged)
            .count();
        if outcome.status == "applied" {
            info!(%topic, retained, push_version = ?outcome.push_version, changed, "Push applied.");
        } else {
            warn!(
                %topic,
                retained,
                push_version = ?outcome.push_version,
                errors = ?outcome.validation_errors.iter().map(|e| &e.error_message).collect::<Vec<_>>(),
                "Push refused; the running profiles are kept."
            );
        }
        // A refusal lists no resources, so `changed` is 0 then.
        if changed > 0 {
            self.reload_detect();
        }
        let body = serde_json::to_vec(&outcome).unwrap_or_default();
        let sent = match (&self.link, self.connected, self.dry_run) {
            (Some(link), true, false) => link
                .commands
                .try_send(LinkCommand::Publish {
                    topic: p.response_topic.clone(),
                    payload: body,
                    qos: 1,
                    retain: false,
                })
                .is_ok(),
            _ => false,
        };
        if !sent {
            warn!(topic = %p.response_topic, "The push outcome could not be published (link busy or down).");
        }
    }

    /// Reloads Detect from its files in place (after a push): the engine state is saved and
    /// restored, so unchanged behaviors keep their violations and ids; the traffic scopes follow
    /// the dimensions, keeping the history of every scope that did not change.
    fn reload_detect(&mut self) {
        let mut pending = Vec::new();
        if let Some(old) = self.detect.as_mut() {
            old.save();
            pending = old.take_pending();
        }
        match detect::DetectPart::start(&self.config) {
            Ok(Some(mut new)) => {
                if let Err(e) = self.traffic.replace_scopes(new.traffic_scopes()) {
                    warn!(error = %e, "Traffic scopes unchanged after the reload.");
                }
                pending.extend(new.take_pending());
                self.detect = Some(new);
                self.publish_alarms(pending);
            }
            Ok(None) => {}
            Err(e) => {
                error!(error = %e, "Detect reload failed; the previous profiles keep running.");
                if let Some(old) = self.detect.as_mut() {
                    for a in pending {
                        old.keep(a);
                    }
                }
            }
        }
    }

    /// Detect's cloud-side ticks and housekeeping.
    fn detect_timer(&mut self) {
        if let Some(d) = self.detect.as_mut() {
            let alarms = d.on_timer(&self.traffic);
            self.publish_alarms(alarms);
        }
    }

    /// MQTT alarms go on the link when connected; otherwise they wait for the next connection.
    fn publish_alarms(&mut self, alarms: Vec<crate::alarm::MqttAlarm>) {
        let (Some(d), false) = (self.detect.as_mut(), self.dry_run) else {
            return;
        };
        for a in alarms {
            let sent = match (&self.link, self.connected) {
                (Some(link), true) => link
                    .commands
                    .try_send(LinkCommand::Publish {
                        topic: a.topic.clone(),
                        payload: a.payload.clone(),
                        qos: a.qos,
                        retain: false,
                    })
                    .is_ok(),
                _ => false,
            };
            if !sent {
                d.keep(a);
            }
        }
    }

    async fn shutdown(mut self, link_token: CancellationToken) {
        notify(&[sd_notify::NotifyState::Stopping]);
        if let Some(d) = self.detect.as_mut() {
            d.save();
        }
        self.status.connection = LinkState::Stopping;
        self.write_status();
        // Producers stopped (the loop ended); now the link: DISCONNECT, then wait for it.
        link_token.cancel();
        if let Some(mut link) = self.link.take() {
            let deadline = Instant::now() + self.config.shutdown_timeout;
            loop {
                match tokio::time::timeout_at(deadline, link.events.recv()).await {
                    Ok(Some(LinkEvent::Answer { accepted, payload })) => {
                        self.on_answer(accepted, &payload).await
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        warn!("The link did not stop within shutdown_timeout_secs.");
                        break;
                    }
                }
            }
        }
        self.status.connection = LinkState::Stopped;
        self.write_status();
        info!("Stopped.");
    }
}

/// The own link's traffic as a traffic-counter event.
fn link_traffic_event(t: mqtt::LinkTraffic) -> TrafficEvent {
    use mqtt::{AuthorizationFailure, LinkTraffic};
    match t {
        LinkTraffic::ConnectionAttempt { failure } => TrafficEvent::ConnectAttempt {
            ok: failure.is_none(),
        },
        LinkTraffic::Disconnect { .. } => TrafficEvent::Disconnect,
        LinkTraffic::AuthorizationFailure(AuthorizationFailure::Connect { .. }) => {
            TrafficEvent::AuthFailure {
                kind: AuthFailureKind::Connect,
                topic: None,
            }
        }
        LinkTraffic::AuthorizationFailure(AuthorizationFailure::Subscribe { filter }) => {
            TrafficEvent::AuthFailure {
                kind: AuthFailureKind::Subscribe,
                topic: Some(filter),
            }
        }
        LinkTraffic::PublishSent {
            topic,
            payload_bytes,
        } => TrafficEvent::Publish {
            topic,
            bytes: payload_bytes as u64,
            direction: Direction::Sent,
        },
        LinkTraffic::PublishReceived {
            topic,
            payload_bytes,
        } => TrafficEvent::Publish {
            topic,
            bytes: payload_bytes as u64,
            direction: Direction::Received,
        },
    }
}

fn print_report(r: &EncodedReport) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = match r.format {
        report::Format::Json => out.write_all(&r.bytes).and_then(|_| out.write_all(b"\n")),
        report::Format::Cbor => writeln!(out, "{}", hex(&r.bytes)),
    };
    let _ = out.flush();
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The state directory used by commands run without `--config`: a per-user temporary directory.
pub fn scratch_state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("defender-agent-{}", unsafe_uid()))
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

//! The wiring: builds the parts from `Config`, runs the agent loop that owns all state, and drives
//! the MQTT link through its handle.
//!
//! One loop owns the report builder, the spool and the publishing state; the link task owns
//! rumqttc's event loop; they talk through two bounded channels. Reports are written to the spool
//! (fsynced) before they are offered to the link, and leave it only on an answer.
//!
//! The publishing rules live in [`publisher`], a state machine without channels or clocks; this
//! loop feeds it link events and time, and hands the report it returns to the link. The agent is
//! assembled from `Parts` (`Parts::from_config` in the daemon), so tests build it with a
//! scripted sampler and play the link by holding the other ends of its channels.

pub mod detect;
pub mod oneshot;
pub mod publisher;
#[cfg(test)]
mod tests;

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
use crate::spool::{Entry, Spool};
use crate::status::{self, LastAnswer, LastReport, LinkState, SpoolStatus, Status};
use crate::store::{self, ReportIdFile};
use crate::traffic::{
    self, AuthFailureKind, Direction, TrafficCounters, TrafficEvent, TrafficMetric,
};
use publisher::{Publisher, SampleGap};

/// Clocks before this (2025-01-01T00:00:00Z) are not plausible: a board without an RTC before NTP
/// sync. No report is built then, because the report id would not be a usable timestamp
/// (spec: metrics-report.md D.1).
pub const PLAUSIBLE_EPOCH_SECS: u64 = 1_735_689_600;

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
    /// Another process (a second agent) holds the spool of this state directory.
    #[error(
        "{0}: another defender-agent is running with this state_dir; not starting a second one"
    )]
    SpoolLocked(#[source] crate::spool::Error),
    /// The spool's log path is not a regular file (a directory, a FIFO, a link to a device).
    #[error("cannot use the spool: {0}")]
    SpoolNotAFile(#[source] crate::spool::Error),
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

/// Runs the daemon until `shutdown` is cancelled. SIGHUP reloads the configuration: a new file
/// that fails the checks of `check-config` (its text or its deployment: [`Config::load_checked`])
/// is logged and ignored, a valid one restarts the loop (clean disconnect, spool kept); if the new
/// one still cannot start, the one that ran before runs again.
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
    mut reload: tokio::sync::mpsc::Receiver<()>,
) -> Result<(), Error> {
    let mut config = config;
    // The configuration that ran before a reload: if the new one cannot start, it runs again.
    let mut previous: Option<Config> = None;
    loop {
        let current = config.clone();
        match run_once(config, &opts, &shutdown, &mut reload).await {
            Ok(Ended::Stopped) => return Ok(()),
            Ok(Ended::Reload(next)) => {
                info!("Configuration reloaded; restarting the agent loop.");
                previous = Some(current);
                config = *next;
            }
            Err(e) => match previous.take() {
                Some(before) => {
                    error!(error = %e, "SIGHUP: the new configuration cannot start; going back to the running one.");
                    config = before;
                }
                None => return Err(e),
            },
        }
    }
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What an agent is assembled from: every part built, every setting translated.
/// [`Parts::from_config`] builds them for the daemon; tests build them with a scripted sampler,
/// a link played by the test (the other ends of [`LinkHandle`]'s channels) and a spool in a
/// temporary directory.
pub(crate) struct Parts {
    /// The configuration (timers, Detect, exports, reload comparison).
    pub config: Config,
    /// Print reports instead of publishing them.
    pub dry_run: bool,
    /// Takes the samples (in `spawn_blocking`).
    pub sampler: Arc<dyn Sampler>,
    /// Builds reports from samples.
    pub builder: ReportBuilder,
    /// The report format.
    pub format: report::Format,
    /// The report key set.
    pub keys: report::KeySet,
    /// Where the last report id is persisted.
    pub id_file: ReportIdFile,
    /// The last report id used (spool and id file).
    pub last_id: Option<u64>,
    /// The publisher's settings.
    pub publisher: publisher::Settings,
    /// The spool; `None` when it could not be opened (or in a dry run).
    pub spool: Option<Spool>,
    /// The link; `None` in a dry run.
    pub link: Option<LinkHandle>,
    /// Messages the tap saw on the local broker.
    pub tap_events: Option<tokio::sync::mpsc::Receiver<TrafficEvent>>,
    /// `[detect]`: the local Detect engine, its store and alarms.
    pub detect: Option<detect::DetectPart>,
    /// MQTT traffic counters, scoped by Detect's dimensions.
    pub traffic: TrafficCounters,
}

/// Starts the link task (production: [`mqtt::spawn`]).
pub(crate) type SpawnLink<'a> =
    &'a mut dyn FnMut(mqtt::Settings) -> Result<LinkHandle, mqtt::Error>;

struct Agent {
    config: Config,
    dry_run: bool,
    sampler: Arc<dyn Sampler>,
    episodes: Episodes,
    builder: ReportBuilder,
    format: report::Format,
    keys: report::KeySet,
    id_file: ReportIdFile,
    last_id: Option<u64>,
    /// The outbox and the publishing state: which report goes next, what answers do.
    publisher: Publisher,
    link: Option<LinkHandle>,
    /// Messages the tap saw on the local broker.
    tap_events: Option<tokio::sync::mpsc::Receiver<TrafficEvent>>,
    /// Re-baselines the counters after a long gap between samples.
    gap: SampleGap,
    id_file_error_logged: bool,
    clock_warned: bool,
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
    let token = link_token.clone();
    let parts = Parts::from_config(config, opts.dry_run, &link_token, &mut |settings| {
        mqtt::spawn(settings, token.clone()).map(|(handle, _join)| handle)
    })
    // A link or tap already started stops with the token.
    .inspect_err(|_| link_token.cancel())?;
    Ok(run_agent(Agent::new(parts), opts, shutdown, reload, link_token).await)
}

/// Runs one agent loop until shutdown or a reload, then shuts the agent down (the link is told to
/// stop through `link_token`).
async fn run_agent(
    mut agent: Agent,
    opts: &RunOptions,
    shutdown: &CancellationToken,
    reload: &mut tokio::sync::mpsc::Receiver<()>,
    link_token: CancellationToken,
) -> Ended {
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
    // When the last sample of a tick started. A sample tick and a report tick due at the same
    // instant (commensurate intervals: the 5 s / 10 s built-in configuration, 60 s / 300 s without
    // jitter) share one sample: whichever runs second finds a sample started at or after its
    // scheduled instant, as fresh as the one it would take. The baseline is not a tick's sample:
    // the first report still samples, so its deltas span its own interval as before.
    let mut tick_sampled: Option<Instant> = None;

    let ended = loop {
        let in_flight_deadline = agent.publisher.answer_deadline();
        let drain_at = agent.publisher.drain_deadline();
        tokio::select! {
            _ = shutdown.cancelled() => break Ended::Stopped,
            Some(()) = reload.recv() => {
                // The same checks as `check-config` and `run` (a dry run: the text only): a file
                // or deployment that could not start is refused and the running one carries on.
                let load = if opts.dry_run { Config::load } else { Config::load_checked };
                match opts.config_path.as_deref().map(load) {
                    Some(Ok(next)) => match detect::DetectPart::check(&next) {
                        // Only the Detect files may have changed: reload them in place (the
                        // link, spool and traffic windows carry on).
                        Ok(()) if next.same_settings(&agent.config) => {
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
            due = sample_timer.tick() => {
                if !sampled_since(tick_sampled, due) {
                    tick_sampled = Some(Instant::now());
                    agent.sample_and_observe().await;
                }
            }
            due = report_timer.tick() => {
                if !sampled_since(tick_sampled, due) {
                    tick_sampled = Some(Instant::now());
                    agent.sample_and_observe().await;
                }
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
            _ = sleep_until_opt(drain_at) => {
                agent.publisher.drain_elapsed();
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
    ended
}

/// Applies one push message (or refuses it) and says what happened.
fn push_outcome(
    d: &crate::detect::Settings,
    p: &crate::detect::PushSettings,
    payload: &[u8],
) -> (
    crate::manage::push::Outcome,
    Option<crate::store::definitions::Validated>,
) {
    use crate::manage::push::{Outcome, Refused};
    if payload.len() > p.max_bytes {
        let refused = Outcome::refused(&Refused::one(
            None,
            format!(
                "the message has {} bytes, more than detect.push.max_bytes ({}); it was not read",
                payload.len(),
                p.max_bytes
            ),
        ));
        return (refused, None);
    }
    let Ok(body) = std::str::from_utf8(payload) else {
        let refused = Outcome::refused(&Refused::one(None, "the message is not UTF-8 JSON"));
        return (refused, None);
    };
    let managed = match crate::manage::ops::Managed::from_config(d) {
        Ok(m) => m,
        Err(e) => return (Outcome::refused(&Refused::one(None, e)), None),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |t| (t.as_millis() as f64) / 1000.0);
    match managed.apply(body, now, &crate::manage::ops::arns_for(d)) {
        Ok(Ok(applied)) => (Outcome::applied(&applied.plan), applied.validated),
        Ok(Err(refused)) => (Outcome::refused(&refused), None),
        Err(e) => {
            error!(error = %e, "Cannot apply a push to the profile directories.");
            let refused = Outcome::refused(&Refused::one(None, format!("not applied: {e}")));
            (refused, None)
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

/// Whether a tick's sample started at or after `due`, the instant another tick was scheduled for.
fn sampled_since(sampled: Option<Instant>, due: Instant) -> bool {
    sampled.is_some_and(|at| at >= due)
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

impl Parts {
    /// Builds every part from `config`: the one place that translates the configuration into
    /// the parts' settings. Opens the spool and the id file (failures are logged: the agent
    /// keeps reports in memory), starts the link with `spawn_link` and the tap (stopped by
    /// `link_token`), and loads Detect.
    pub(crate) fn from_config(
        config: Config,
        dry_run: bool,
        link_token: &CancellationToken,
        spawn_link: SpawnLink<'_>,
    ) -> Result<Parts, Error> {
        let sampler: Arc<dyn Sampler> = Arc::new(Collectors::new(config.collect.clone())?);
        let builder = ReportBuilder::new(&config.report);
        let format = config.report.format;
        let keys = config.report.keys;
        let id_file = ReportIdFile::new(&config.state_dir);
        let spool_settings = config.spool.clone();
        let publisher = publisher::Settings {
            backlog: spool_settings.backlog,
            drain_interval: spool_settings.drain_interval,
            answer_timeout: config
                .mqtt
                .as_ref()
                .map_or(Duration::from_secs(60), |m| m.answer_timeout),
            format,
        };
        let mut spool = None;
        let mut last_id = None;
        // A dry run keeps its report id there too (the built-in configuration's state directory
        // under $TMPDIR does not exist on a fresh machine).
        if let Err(e) = store::ensure_state_dir(&config.state_dir) {
            error!(error = %e, "Cannot create the state directory; reports are kept in memory only.");
        }
        if !dry_run {
            match Spool::open(spool_settings) {
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
                // A second agent on this state directory, or a log that is not a file: refuse
                // to start rather than run memory-only (issue 16).
                Err(e @ crate::spool::Error::Locked { .. }) => return Err(Error::SpoolLocked(e)),
                Err(e @ crate::spool::Error::NotAFile { .. }) => {
                    return Err(Error::SpoolNotAFile(e))
                }
                Err(e) => {
                    error!(error = %e, "Cannot open the spool; reports are kept in memory only until it can be written.")
                }
            }
            // An implausible stored id is not trusted (ids continue from the clock); a clock that
            // is not set yet cannot judge one.
            let now = epoch_secs(SystemTime::now());
            let stored = if now >= PLAUSIBLE_EPOCH_SECS {
                id_file.load_plausible(now)
            } else {
                id_file.load()
            };
            match stored {
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
            Some(spawn_link(settings)?)
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
        Ok(Parts {
            config,
            dry_run,
            sampler,
            builder,
            format,
            keys,
            id_file,
            last_id,
            publisher,
            spool,
            link,
            tap_events,
            detect,
            traffic,
        })
    }
}

impl Agent {
    /// Assembles the agent from its parts and writes the first status file.
    fn new(parts: Parts) -> Agent {
        let Parts {
            config,
            dry_run,
            sampler,
            builder,
            format,
            keys,
            id_file,
            last_id,
            publisher,
            spool,
            link,
            tap_events,
            detect,
            traffic,
        } = parts;
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
            gap: SampleGap::new(config.collect.sample_interval),
            config,
            dry_run,
            sampler,
            episodes: Episodes::new(),
            builder,
            format,
            keys,
            id_file,
            last_id,
            publisher: Publisher::new(publisher, spool),
            link,
            tap_events,
            id_file_error_logged: false,
            clock_warned: false,
            traffic,
            detect,
            status,
        };
        agent.write_status();
        agent
    }

    fn status_line(&self) -> String {
        let state = match self.status.connection {
            LinkState::DryRun => "dry run: printing reports",
            LinkState::Connected => "connected",
            LinkState::Connecting | LinkState::Starting => "connecting",
            LinkState::Disconnected => "disconnected, reconnecting",
            LinkState::Stopping | LinkState::Stopped => "stopping",
        };
        let pending = self.publisher.pending();
        match &self.status.last_report {
            Some(r) => format!("{state}; last report {}; {pending} pending", r.id),
            None => format!("{state}; no report yet; {pending} pending"),
        }
    }

    async fn sample_and_observe(&mut self) {
        let (sample, errors) = if self.sampler.is_immediate() {
            self.sampler.sample()
        } else {
            let sampler = Arc::clone(&self.sampler);
            match tokio::task::spawn_blocking(move || sampler.sample()).await {
                Ok(r) => r,
                Err(e) => {
                    error!(error = %e, "The sampling task failed.");
                    return;
                }
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
        if let Some(gap) = self.gap.on_sample(now) {
            info!(
                gap_secs = gap.as_secs(),
                "Long gap between samples (suspend or stall); counters re-baselined."
            );
            self.builder.rebaseline();
        }
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
        self.publisher.on_report(entry);
        self.write_status();
    }

    /// Offers the next report to the link when connected and nothing is in flight.
    async fn pump(&mut self) {
        if self.dry_run {
            return;
        }
        let now = Instant::now();
        let Some(entry) = self.publisher.next(now) else {
            return;
        };
        let Some(link) = self.link.as_ref() else {
            return;
        };
        let id = entry.id;
        let cmd = LinkCommand::PublishReport {
            id,
            payload: entry.payload,
        };
        match link.commands.try_send(cmd) {
            Ok(()) => self.publisher.offered(id, now),
            Err(e) => debug!(error = %e, "Link busy; the report stays pending."),
        }
    }

    async fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected => {
                info!("Connected.");
                self.publisher.on_connected();
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
                self.publisher.on_disconnected();
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
                self.publisher.on_refused(report_id, &reason);
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
        let Some(answered) = self
            .publisher
            .on_answer(accepted_topic, payload, Instant::now())
        else {
            return;
        };
        let now = epoch_secs(SystemTime::now());
        let id = Some(answered.id);
        self.status.last_answer = Some(match answered.status {
            outcome::Status::Accepted => LastAnswer {
                id,
                status: "accepted".into(),
                code: None,
                message: None,
                time: now,
            },
            outcome::Status::Rejected { code, message } => LastAnswer {
                id,
                status: "rejected".into(),
                code: Some(code),
                message: Some(message),
                time: now,
            },
        });
        self.write_status();
        self.pump().await;
    }

    async fn on_answer_timeout(&mut self) {
        self.publisher.on_answer_timeout();
        self.pump().await;
    }

    fn write_status(&mut self) {
        if self.dry_run {
            return;
        }
        let now = epoch_secs(SystemTime::now());
        self.status.updated_at = now;
        self.status.spool = self.publisher.spool_status();
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
        let (outcome, validated) = push_outcome(&d, &p, payload);
        let changed = outcome
            .dimensions
            .iter()
            .chain(&outcome.security_profiles)
            .filter(|e| e.change != crate::manage::push::Change::Unchanged)
            .count();
        // The push version and the errors quote the pushed message: escaped and bounded.
        let push_version = format!("{:?}", outcome.push_version);
        let push_version = crate::text::untrusted(&push_version);
        if outcome.status == "applied" {
            info!(%topic, retained, %push_version, changed, "Push applied.");
        } else {
            let errors = format!(
                "{:?}",
                outcome
                    .validation_errors
                    .iter()
                    .map(|e| &e.error_message)
                    .collect::<Vec<_>>()
            );
            warn!(
                %topic,
                retained,
                %push_version,
                errors = %crate::text::untrusted(&errors).max_chars(crate::text::MAX_LOGGED_CHARS * 8),
                "Push refused; the running profiles are kept."
            );
        }
        // A refusal lists no resources, so `changed` is 0 then.
        if changed > 0 {
            self.reload_detect_with(validated.as_ref());
        }
        let body = serde_json::to_vec(&outcome).unwrap_or_default();
        let sent = match (&self.link, self.publisher.is_connected(), self.dry_run) {
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
        self.reload_detect_with(None);
    }

    /// As [`Agent::reload_detect`], with the managed directories as an applied push validated
    /// them (not read back from disk).
    fn reload_detect_with(&mut self, pushed: Option<&crate::store::definitions::Validated>) {
        let mut pending = Vec::new();
        if let Some(old) = self.detect.as_mut() {
            old.save();
            pending = old.take_pending();
        }
        match detect::DetectPart::start_with(&self.config, pushed) {
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
            let sent = match (&self.link, self.publisher.is_connected()) {
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
    crate::hex::encode(bytes)
}

/// The state directory used by commands run without `--config`: a per-user temporary directory.
pub fn scratch_state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("defender-agent-{}", unsafe_uid()))
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

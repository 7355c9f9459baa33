//! `defender-fleet serve`: the Device Defender endpoint over MQTT.
//!
//! Two tasks and a bounded queue between them:
//! - the MQTT task polls the agent's [`Session`], subscribes (QoS 1) to the json and cbor report
//!   topics of every thing (through `$share/<group>/` when set) on every connection, and puts
//!   each report in the queue with its arrival time. It never waits on the queue (the session
//!   must be polled to live): when the queue is full the report is dropped unanswered — the
//!   device retries after its answer timeout — and that is logged once per episode.
//! - the committer takes up to `batch_max_reports` reports at a time and, for each: the thing
//!   from the topic (invalid → rejected `InvalidThingName`), the size bound and the agent's
//!   validation and decoding (→ rejected `InvalidPayload`), a `(thing, report_id)` already
//!   recorded (→ accepted again, nothing written: a device whose answer was lost stops
//!   retrying), the throttle by report time (→ rejected `Throttled`), the evaluation by
//!   [`FleetDetect`] on the thing's stored state; then ONE commit for the batch
//!   ([`Store::record_reports`]) and only then the answers. With the database unavailable
//!   nothing is answered (the device spools and retries); the batch is retried and the outage
//!   logged once. Per batch, not per report: the things' states are read in one query, and a
//!   duplicate is found by the commit itself (the unique key; asked beforehand only for a
//!   report that would otherwise be throttled).
//!
//! Late reports: a report is evaluated at its report time (its `report_id` when a plausible
//! epoch second). One older than the thing's latest recorded report, or older than
//! `max_late_secs` before its arrival, is recorded and accepted but not evaluated (the engine
//! takes each thing's reports in time order).
//!
//! Thresholds: a third task runs at every epoch multiple of `[detect] thresholds_interval_secs`
//! (300) and at the start; the instance that gets the store's lease computes every statistical
//! behavior's threshold over the stored latest datapoints and stores it, and every instance
//! hands the stored thresholds to its committer's [`FleetDetect`] (before its next batch).
//!
//! SIGTERM/SIGINT: the MQTT task stops queueing, the committer drains the queue and answers,
//! the session disconnects, exit 0.
//!
//! Around them (hooks that never hold up a batch):
//! - alarms ([`crate::alarm`]): the store's commit hook hands the events of every report it
//!   recorded to the alarm outputs (agent's outputs and webhooks), after the commit, never for
//!   a duplicate;
//! - counters ([`crate::counters`]): answers by status and code, recorded and dropped reports,
//!   added to the store every 10 s and at shutdown;
//! - SIGHUP: profiles, dimensions and custom metrics are read again (LOAD mode); when they load,
//!   the committer compiles them before its next batch and the thresholds job takes the new
//!   statistical behaviors; when they do not, the ones in force stay and the error is logged
//!   (once per SIGHUP);
//! - retention: at the start and every hour, the instance holding the `retention` lease purges
//!   what is older than `[store] retention_days` ([`Store::purge_expired`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use defender_agent::agent::detect::device_report;
use defender_agent::detect::fleet::{
    report_time, threshold_for, FleetDetect, FleetThreshold, StatisticalBehavior,
    ThingState as FleetState, ThresholdStatus,
};
use defender_agent::detect::{Mode, ViolationEvent};
use defender_agent::mqtt::session::{Session, SessionEvent};
use defender_agent::mqtt::topics::TopicRoot;
use defender_agent::report::{self, Format};
use defender_agent::store::definitions;
use rumqttc::{Packet, QoS};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{Config, Detect, Ingest};
use crate::counters::{self, Counters};
use crate::store::{Datapoint, RecordOutcome, ReportRecord, Store, StoreError};

/// One report as received.
#[derive(Debug)]
pub struct Received {
    /// The topic it came on.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Arrival, epoch ms.
    pub arrival_ms: i64,
}

/// An answer: `{thingName, reportId, status, statusDetails, timestamp}` (spec: A.3).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Answer {
    /// The thing.
    #[serde(rename = "thingName")]
    pub thing_name: String,
    /// The report's id, when its header could be read.
    #[serde(rename = "reportId", skip_serializing_if = "Option::is_none")]
    pub report_id: Option<u64>,
    /// `ACCEPTED` or `REJECTED`.
    pub status: &'static str,
    /// On rejection: `ErrorCode`, `ErrorMessage`.
    #[serde(rename = "statusDetails", skip_serializing_if = "Option::is_none")]
    pub status_details: Option<StatusDetails>,
    /// Epoch ms.
    pub timestamp: i64,
}

/// `statusDetails`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusDetails {
    /// `InvalidPayload`, `Throttled`, `InvalidThingName`.
    #[serde(rename = "ErrorCode")]
    pub error_code: &'static str,
    /// Human words.
    #[serde(rename = "ErrorMessage")]
    pub error_message: String,
}

/// The answer's encoding: JSON on the json topic, CBOR on the cbor topic.
pub fn encode_answer(a: &Answer, format: Format) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(a).unwrap_or_default(),
        Format::Cbor => {
            let mut out = Vec::new();
            // Invariant: writing to a Vec cannot fail and the shape is plain.
            let _ = ciborium::into_writer(a, &mut out);
            out
        }
    }
}

/// Epoch ms now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs the service until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Before anything else: SIGHUP's default action would end the process.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
    let loaded = definitions::load_all(
        &config.detect.profiles,
        &config.detect.dimensions,
        &config.detect.custom_metrics,
        Mode::Load,
    )?;
    let profiles: Vec<_> = loaded.profiles.iter().map(|p| p.profile.clone()).collect();
    let fleet = FleetDetect::new(&profiles, &loaded.context());
    for d in loaded
        .profiles
        .iter()
        .flat_map(|p| &p.diagnostics)
        .chain(fleet.diagnostics())
    {
        warn!("{d}");
    }
    if matches!(config.store.engine, crate::store::Engine::Sqlite { .. }) {
        std::fs::create_dir_all(&config.state_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create state_dir {}: {e}",
                config.state_dir.display()
            )
        })?;
    }
    let session = Session::new(config.mqtt.session_options())?;
    let counters = Arc::new(Counters::default());
    let alarms =
        crate::alarm::Dispatcher::start(&config.alarms, &config.webhooks, session.client())
            .map_err(|e| anyhow::anyhow!("alarms: {e}"))?;
    let hook_counters = counters.clone();
    let sweep_alarms = alarms.clone();
    let store = Store::open(config.store.clone())
        .await?
        .on_commit(move |r| {
            hook_counters.recorded();
            alarms.queue(r.events);
        });
    info!(
        engine = store.engine_name(),
        profiles = profiles.len(),
        behaviors = fleet.evaluable_behaviors(),
        "Fleet store open."
    );
    let client = session.client();
    let (tx, rx) = mpsc::channel::<Received>(config.ingest.queue_capacity);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let filters = config.mqtt.filters();
    let mqtt = tokio::spawn(mqtt_task(
        session,
        filters,
        tx,
        stop_rx,
        done_rx,
        counters.clone(),
    ));
    let (thresholds_tx, thresholds_rx) = watch::channel(Vec::new());
    let (behaviors_tx, behaviors_rx) = watch::channel(fleet.statistical_behaviors());
    let (reload_tx, reload_rx) = watch::channel(None);
    let reloader = tokio::spawn(reload_task(
        hup,
        config.detect.clone(),
        reload_tx,
        behaviors_tx,
        stop_tx.subscribe(),
    ));
    let retention = tokio::spawn(retention_job(
        store.clone(),
        config.mqtt.client_id().to_owned(),
        stop_tx.subscribe(),
    ));
    let flusher = tokio::spawn(counters::flush_job(
        store.clone(),
        counters.clone(),
        stop_tx.subscribe(),
    ));
    let job = tokio::spawn(thresholds_job(
        store.clone(),
        behaviors_rx,
        config.detect.clone(),
        config.mqtt.client_id().to_owned(),
        thresholds_tx,
        stop_tx.subscribe(),
    ));
    let committer = Committer {
        topic_root: config.mqtt.topic_root().clone(),
        store: store.clone(),
        fleet,
        ingest: config.ingest.clone(),
        client,
        unavailable: false,
        thresholds: thresholds_rx,
        counters: counters.clone(),
        reload: reload_rx,
        holder: config.mqtt.client_id().to_owned(),
        alarms: sweep_alarms,
        sweep_failing: false,
    };
    let commit = tokio::spawn(committer.run(rx, stop_tx.subscribe()));
    wait_for_signal().await;
    info!("Shutting down: draining the reports in flight.");
    let _ = stop_tx.send(true);
    let _ = commit.await;
    let _ = job.await;
    let _ = reloader.await;
    let _ = retention.await;
    let _ = flusher.await;
    if let Err(e) = counters::flush(&store, &counters, now_ms()).await {
        warn!(error = %e, "Counters: the last counts could not be written.");
    }
    let _ = done_tx.send(true);
    let _ = mqtt.await;
    store.close().await;
    info!("Stopped.");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}

async fn mqtt_task(
    mut session: Session,
    filters: [String; 2],
    tx: mpsc::Sender<Received>,
    mut stop: watch::Receiver<bool>,
    mut done: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let client = session.client();
    let mut tx = Some(tx);
    let mut full = false;
    loop {
        let event = tokio::select! {
            e = session.next() => e,
            _ = stop.changed(), if tx.is_some() => {
                // Stop queueing; keep polling so the committer's answers go out.
                tx = None;
                continue;
            }
            _ = done.changed() => break,
        };
        match event {
            SessionEvent::Connected { session_present } => {
                info!(session_present, "Connected to the broker.");
                for f in &filters {
                    if let Err(e) = client.subscribe(f.as_str(), QoS::AtLeastOnce).await {
                        warn!(filter = %f, error = %e, "Cannot subscribe.");
                    }
                }
            }
            SessionEvent::Incoming(Packet::Publish(p)) => {
                let Some(tx) = &tx else { continue };
                let r = Received {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    arrival_ms: now_ms(),
                };
                match tx.try_send(r) {
                    Ok(()) => full = false,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        counters.dropped();
                        if !full {
                            warn!("The ingest queue is full: reports are left unanswered (devices retry) until it drains.");
                        }
                        full = true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            SessionEvent::Incoming(Packet::SubAck(ack)) => {
                info!(codes = ?ack.return_codes, "Subscribed.");
            }
            SessionEvent::Incoming(_) | SessionEvent::Outgoing(_) => {}
            SessionEvent::Failed { failure, .. } => {
                if failure.new_cause {
                    warn!(cause = %failure.cause, retry_in = ?failure.retry_in, "Broker connection failed.");
                }
            }
        }
    }
    let _ = session.disconnect().await;
}

/// The answer to one report, before or after the commit.
struct Pending {
    topic: String,
    format: Format,
    answer: Answer,
}

struct Committer {
    /// `[mqtt] topic_root`: the thing and format of a report's topic.
    topic_root: TopicRoot,
    store: Store,
    fleet: FleetDetect,
    ingest: Ingest,
    client: rumqttc::AsyncClient,
    unavailable: bool,
    /// The thresholds job's latest thresholds.
    thresholds: watch::Receiver<Vec<FleetThreshold>>,
    /// Answers counted.
    counters: Arc<Counters>,
    /// Profiles reloaded on SIGHUP.
    reload: watch::Receiver<Option<Arc<Reloaded>>>,
    /// This instance's name for the leases (its client id).
    holder: String,
    /// The alarm outputs, for what the invalidation sweep emits.
    alarms: crate::alarm::Dispatcher,
    /// The last sweep failed (logged once per episode).
    sweep_failing: bool,
}

/// What the committer knows of a thing in a batch: its state, the stored version that goes
/// with it (the optimistic check of the write) and its latest report time.
#[derive(Debug, Clone)]
struct Known {
    /// `None` while the state is in the batch's latest `Evaluated` of this thing.
    state: Option<FleetState>,
    version: i64,
    last_report_ms: Option<i64>,
}

/// A report ready to record.
struct Evaluated {
    thing: String,
    report_id: u64,
    time_ms: i64,
    received_ms: i64,
    bytes: usize,
    version: i64,
    state: FleetState,
    events: Vec<ViolationEvent>,
    active: Vec<defender_agent::detect::ActiveViolation>,
    datapoints: Vec<Datapoint>,
    format: Format,
    topic: String,
}

impl Evaluated {
    fn record(&self) -> ReportRecord<'_> {
        ReportRecord {
            thing: &self.thing,
            report_id: i64::try_from(self.report_id).unwrap_or(i64::MAX),
            report_time_ms: self.time_ms,
            received_ms: self.received_ms,
            payload_bytes: i64::try_from(self.bytes).unwrap_or(i64::MAX),
            expected_version: self.version,
            state: &self.state,
            events: &self.events,
            active: Some(&self.active),
            datapoints: &self.datapoints,
        }
    }
}

/// What the first pass decided for a report.
enum Step {
    Answer(Pending),
    Record(Box<Evaluated>),
}

impl Committer {
    async fn run(mut self, mut rx: mpsc::Receiver<Received>, mut stop: watch::Receiver<bool>) {
        let mut stopping = false;
        // At the start (after a downtime), then at epoch multiples; a deadline kept across
        // batches: a busy ingest delays the sweep, never skips it.
        let mut sweep_at = tokio::time::Instant::now();
        loop {
            if self.reload.has_changed().unwrap_or(false) {
                self.apply_reload();
            }
            let first = if stopping {
                match rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    r = rx.recv() => match r { Some(r) => r, None => break },
                    _ = stop.changed() => { stopping = true; continue; }
                    Ok(()) = self.reload.changed() => { self.apply_reload(); continue; }
                    _ = tokio::time::sleep_until(sweep_at) => {
                        self.sweep().await;
                        sweep_at = tokio::time::Instant::now() + until_next(SWEEP_EVERY);
                        continue;
                    }
                }
            };
            let mut batch = vec![first];
            while batch.len() < self.ingest.batch_max_reports {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if self.thresholds.has_changed().unwrap_or(false) {
                let t = self.thresholds.borrow_and_update().clone();
                self.fleet.set_thresholds(&t);
            }
            self.batch(batch, &mut stop).await;
        }
    }

    /// The invalidation sweep, at the start and every [`SWEEP_EVERY`] at epoch multiples, by the instance that
    /// gets the `invalidation` lease: the things with active violations that have not reported
    /// for the engine's `invalidate_after_s` (two days) get the engine's tick without traffic,
    /// which invalidates their silent episodes (spec: detect.md §6.3), written with the stored
    /// version as the check; the `alarm-invalidated` events go to the alarm outputs. At most
    /// [`SWEEP_MAX_THINGS`] a round (the rest the next round). A report arriving does the
    /// same for its thing when it is evaluated.
    async fn sweep(&mut self) {
        let now = now_ms();
        let period = SWEEP_EVERY.as_millis() as i64;
        let round = async {
            if !self
                .store
                .try_lease(SWEEP_JOB, &self.holder, now, period - period / 10)
                .await?
            {
                return Ok(0);
            }
            let silent_ms = (self.fleet.settings().invalidate_after_s as i64).saturating_mul(1000);
            let things = self
                .store
                .silent_things(now - silent_ms, SWEEP_MAX_THINGS)
                .await?;
            let mut invalidated = 0;
            for thing in things {
                let Some(t) = self.store.load_thing(&thing).await? else {
                    continue;
                };
                let mut state = t.state;
                let events: Vec<ViolationEvent> = self
                    .fleet
                    .tick(&mut state, &thing, None, now)
                    .into_iter()
                    .map(|e| e.event)
                    .collect();
                if events.is_empty() {
                    continue;
                }
                let active = self.fleet.active_violations(&state, &thing);
                if let RecordOutcome::Recorded { .. } = self
                    .store
                    .record_tick(&thing, t.version, &state, &events, &active)
                    .await?
                {
                    info!(thing = %thing, events = events.len(), "Violations invalidated: no report for two days.");
                    self.alarms.queue(&events);
                    invalidated += 1;
                }
            }
            Ok::<usize, StoreError>(invalidated)
        };
        match round.await {
            Ok(_) => {
                if self.sweep_failing {
                    info!("Invalidation sweep: the store is available again.");
                    self.sweep_failing = false;
                }
            }
            Err(e) => {
                if !self.sweep_failing {
                    warn!(error = %e, "Invalidation sweep failed; retried next round.");
                    self.sweep_failing = true;
                }
            }
        }
    }

    /// Compiles the profiles a SIGHUP loaded (the thresholds of statistical behaviors still
    /// there are kept until the next job).
    fn apply_reload(&mut self) {
        let r = self.reload.borrow_and_update().clone();
        if let Some(r) = r {
            self.fleet.reconfigure(&r.profiles, &r.context);
            for d in self.fleet.diagnostics() {
                warn!("{d}");
            }
            info!(
                profiles = r.profiles.len(),
                behaviors = self.fleet.evaluable_behaviors(),
                "Profiles reloaded: in force from the next report."
            );
        }
    }

    /// One batch: decided, committed (retried while the database is unavailable, until
    /// shutdown), answered.
    async fn batch(&mut self, batch: Vec<Received>, stop: &mut watch::Receiver<bool>) {
        self.counters.received(batch.len());
        loop {
            match self.try_batch(&batch).await {
                Ok(answers) => {
                    if self.unavailable {
                        info!("The store is available again.");
                        self.unavailable = false;
                    }
                    for a in &answers {
                        self.counters.answered(
                            a.answer.status,
                            a.answer.status_details.as_ref().map(|d| d.error_code),
                        );
                    }
                    for a in answers {
                        self.publish(a).await;
                    }
                    return;
                }
                Err(e) if e.is_unavailable() => {
                    if !self.unavailable {
                        error!(error = %e, "The store is unavailable: reports are not answered (devices retry) until it is back.");
                        self.unavailable = true;
                    }
                    if *stop.borrow() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
                Err(e) => {
                    error!(error = %e, reports = batch.len(), "Cannot record reports: they are not answered.");
                    return;
                }
            }
        }
    }

    /// One batch: the states of its things in ONE query, each report decided in order (a
    /// thing's second report of the batch on the first's state), ONE commit, then the
    /// answers. A conflict (another writer, or an earlier report of the thing in the batch that
    /// was not recorded): that report again, alone, on a fresh read.
    async fn try_batch(&self, batch: &[Received]) -> Result<Vec<Pending>, StoreError> {
        let mut things = self.preload(batch).await?;
        let mut steps: Vec<Step> = Vec::with_capacity(batch.len());
        for r in batch {
            // A thing's state is in its latest Evaluated of the batch: a copy for this one.
            if let Some((thing, _)) = self.topic_root.parse_publish_topic(&r.topic) {
                if let Some(k) = things.get_mut(thing).filter(|k| k.state.is_none()) {
                    k.state = steps.iter().rev().find_map(|s| match s {
                        Step::Record(e) if e.thing == thing => Some(e.state.clone()),
                        _ => None,
                    });
                }
            }
            steps.push(self.decide(r, &mut things).await?);
        }
        let (order, records): (Vec<usize>, Vec<ReportRecord>) = steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Step::Record(e) => Some((i, e.record())),
                Step::Answer(_) => None,
            })
            .unzip();
        let outcomes = if records.is_empty() {
            Vec::new()
        } else {
            self.store.record_reports(&records).await?
        };
        drop(records);
        let mut by_index: HashMap<usize, RecordOutcome> = order.into_iter().zip(outcomes).collect();
        let mut retry = Vec::new();
        let mut answers = Vec::with_capacity(steps.len());
        for (i, s) in steps.into_iter().enumerate() {
            match s {
                Step::Answer(p) => answers.push(p),
                Step::Record(e) => match by_index.remove(&i) {
                    Some(RecordOutcome::Recorded { .. }) => answers.push(accepted(&e)),
                    Some(RecordOutcome::Duplicate) => {
                        info!(thing = %e.thing, report_id = e.report_id, "Duplicate report: accepted again, not counted.");
                        answers.push(accepted(&e));
                    }
                    Some(RecordOutcome::Conflict) | None => retry.push(i),
                },
            }
        }
        for i in retry {
            let r = &batch[i];
            for _ in 0..5 {
                // Read fresh: nothing preloaded, so decide reads the thing.
                let mut fresh = HashMap::new();
                match self.decide(r, &mut fresh).await? {
                    Step::Answer(p) => {
                        answers.push(p);
                        break;
                    }
                    Step::Record(e) => match self.store.record_report(&e.record()).await? {
                        RecordOutcome::Conflict => continue,
                        RecordOutcome::Recorded { .. } => {
                            answers.push(accepted(&e));
                            break;
                        }
                        RecordOutcome::Duplicate => {
                            info!(thing = %e.thing, report_id = e.report_id, "Duplicate report: accepted again, not counted.");
                            answers.push(accepted(&e));
                            break;
                        }
                    },
                }
            }
        }
        Ok(answers)
    }

    /// The stored state of every thing of the batch, in ONE query (a thing not in the store
    /// gets a fresh state, version 0).
    async fn preload(&self, batch: &[Received]) -> Result<HashMap<String, Known>, StoreError> {
        let mut names: Vec<&str> = batch
            .iter()
            .filter_map(|r| {
                self.topic_root
                    .parse_publish_topic(&r.topic)
                    .map(|(thing, _)| thing)
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut things: HashMap<String, Known> = HashMap::with_capacity(names.len());
        if names.is_empty() {
            return Ok(things);
        }
        for (thing, t) in self.store.load_things(&names).await? {
            things.insert(
                thing,
                Known {
                    state: Some(t.state),
                    version: t.version,
                    last_report_ms: t.last_report_ms,
                },
            );
        }
        for thing in names {
            if !things.contains_key(thing) {
                things.insert(
                    thing.to_owned(),
                    Known {
                        state: Some(self.fleet.new_thing_state()),
                        version: 0,
                        last_report_ms: None,
                    },
                );
            }
        }
        Ok(things)
    }

    /// The checks, and the evaluation of a report that passes them, on what `things` knows of
    /// its thing (read from the store when it knows nothing).
    async fn decide(
        &self,
        r: &Received,
        things: &mut HashMap<String, Known>,
    ) -> Result<Step, StoreError> {
        let reject = |thing: &str, format, rid, code, msg: String| {
            Step::Answer(Pending {
                topic: format!("{}/rejected", r.topic),
                format,
                answer: Answer {
                    thing_name: thing.to_owned(),
                    report_id: rid,
                    status: "REJECTED",
                    status_details: Some(StatusDetails {
                        error_code: code,
                        error_message: msg,
                    }),
                    timestamp: now_ms(),
                },
            })
        };
        let Some((thing, format)) = self.topic_root.parse_publish_topic(&r.topic) else {
            let format = if r.topic.ends_with("/cbor") {
                Format::Cbor
            } else {
                Format::Json
            };
            let thing = self.topic_root.thing_of(&r.topic).unwrap_or_default();
            warn!(topic = %r.topic, "Report rejected: invalid thing name.");
            return Ok(reject(
                thing,
                format,
                None,
                "InvalidThingName",
                "Invalid thing name".to_owned(),
            ));
        };
        if r.payload.len() > self.ingest.max_payload_bytes {
            return Ok(reject(
                thing,
                format,
                None,
                "InvalidPayload",
                format!(
                    "Malformed metrics report: payload is {} bytes, over the {}-byte limit",
                    r.payload.len(),
                    self.ingest.max_payload_bytes
                ),
            ));
        }
        let report = match report::decode_validated(&r.payload, format) {
            Ok((rep, _warnings)) => rep,
            Err(p) => {
                info!(thing, problem = %p, "Report rejected: malformed.");
                return Ok(reject(
                    thing,
                    format,
                    None,
                    "InvalidPayload",
                    format!("Malformed metrics report: {p}"),
                ));
            }
        };
        let rid = report.report_id;
        let id = i64::try_from(rid).unwrap_or(i64::MAX);
        if things.get(thing).is_none_or(|k| k.state.is_none()) {
            let known = match self.store.load_thing(thing).await? {
                Some(t) => Known {
                    state: Some(t.state),
                    version: t.version,
                    last_report_ms: t.last_report_ms,
                },
                None => Known {
                    state: Some(self.fleet.new_thing_state()),
                    version: 0,
                    last_report_ms: None,
                },
            };
            things.insert(thing.to_owned(), known);
        }
        let Some(known) = things.get_mut(thing) else {
            return Err(StoreError::Database(format!(
                "the state of thing {thing:?} was read but not kept"
            )));
        };
        let time_ms = report_time(Some(rid), r.arrival_ms);
        let interval = self.ingest.min_report_interval.as_millis() as i64;
        if let Some(last) = known.last_report_ms {
            if interval > 0 && (time_ms - last).abs() < interval {
                // A redelivery (its answer was lost) is accepted again, not throttled. Asked
                // only here: any other duplicate is found by the commit (the unique key).
                if self.store.has_report(thing, id).await? {
                    info!(
                        thing,
                        report_id = rid,
                        "Duplicate report: accepted again, not counted."
                    );
                    return Ok(Step::Answer(Pending {
                        topic: format!("{}/accepted", r.topic),
                        format,
                        answer: Answer {
                            thing_name: thing.to_owned(),
                            report_id: Some(rid),
                            status: "ACCEPTED",
                            status_details: None,
                            timestamp: now_ms(),
                        },
                    }));
                }
                info!(thing, report_id = rid, "Report rejected: throttled.");
                return Ok(reject(
                    thing,
                    format,
                    Some(rid),
                    "Throttled",
                    format!(
                        "Report rate exceeded: at most one report per {} s per thing",
                        self.ingest.min_report_interval.as_secs()
                    ),
                ));
            }
        }
        let last = known.last_report_ms;
        let Some(mut state) = known.state.take() else {
            return Err(StoreError::Database(format!(
                "the state of thing {thing:?} was read but not kept"
            )));
        };
        let too_late = last.is_some_and(|l| time_ms < l)
            || r.arrival_ms - time_ms > self.ingest.max_late.as_millis() as i64;
        let mut events = Vec::new();
        if too_late {
            info!(
                thing,
                report_id = rid,
                "Late report: recorded, not evaluated."
            );
        } else {
            let dr = device_report(&report);
            events = self
                .fleet
                .evaluate_report(&mut state, thing, &dr, time_ms)
                .into_iter()
                .map(|e| e.event)
                .collect();
        }
        let datapoints = self
            .fleet
            .statistical_behaviors()
            .into_iter()
            .zip(self.fleet.population_values(&state, time_ms))
            .filter_map(|(b, v)| {
                Some(Datapoint {
                    profile: b.security_profile_name,
                    behavior: b.behavior_name,
                    value: v?,
                })
            })
            .collect();
        let active = self.fleet.active_violations(&state, thing);
        let newest_ms = last.map_or(time_ms, |l| l.max(time_ms));
        // The next report of this thing in the batch builds on this one (its state is taken
        // from this Evaluated by the caller).
        let version = known.version;
        known.version += 1;
        known.last_report_ms = Some(newest_ms);
        Ok(Step::Record(Box::new(Evaluated {
            thing: thing.to_owned(),
            report_id: rid,
            time_ms,
            received_ms: r.arrival_ms,
            bytes: r.payload.len(),
            version,
            state,
            events,
            active,
            datapoints,
            format,
            topic: r.topic.clone(),
        })))
    }

    async fn publish(&self, p: Pending) {
        let bytes = encode_answer(&p.answer, p.format);
        if let Err(e) = self
            .client
            .publish(p.topic.as_str(), QoS::AtLeastOnce, false, bytes)
            .await
        {
            warn!(topic = %p.topic, error = %e, "Cannot publish an answer.");
        }
    }
}

/// The lease's name in the store.
pub const THRESHOLDS_JOB: &str = "thresholds";

/// The thresholds job: at every epoch multiple of `thresholds_interval` (and at the start), the
/// instance holding the lease computes each statistical behavior's nearest-rank percentile over
/// the latest datapoint of every thing in the behavior's `durationSeconds` and stores it; every
/// instance then hands the stored thresholds to its [`FleetDetect`]. A status change (e.g. "not
/// evaluable: 4 things with data, below min_population 10") is logged once.
async fn thresholds_job(
    store: Store,
    mut behaviors_rx: watch::Receiver<Vec<StatisticalBehavior>>,
    detect: Detect,
    holder: String,
    tx: watch::Sender<Vec<FleetThreshold>>,
    mut stop: watch::Receiver<bool>,
) {
    let period = detect.thresholds_interval.as_millis() as i64;
    let mut logged: HashMap<(String, String), ThresholdStatus> = HashMap::new();
    let mut unavailable = false;
    loop {
        let now = now_ms();
        // The statistical behaviors in force (SIGHUP may change them); none: nothing to do.
        let behaviors = behaviors_rx.borrow_and_update().clone();
        let round = if behaviors.is_empty() {
            Ok(Vec::new())
        } else {
            thresholds_round(&store, &behaviors, &detect, &holder, now, period).await
        };
        match round {
            Ok(list) => {
                if unavailable {
                    info!("Thresholds job: the store is available again.");
                    unavailable = false;
                }
                for t in &list {
                    let key = (t.security_profile_name.clone(), t.behavior_name.clone());
                    if logged.get(&key) != Some(&t.status) {
                        info!("{}", t.message());
                        logged.insert(key, t.status);
                    }
                }
                let _ = tx.send(list);
            }
            Err(e) => {
                if !unavailable {
                    warn!(error = %e, "Thresholds job: cannot compute or read the thresholds.");
                    unavailable = true;
                }
            }
        }
        let next = (now / period + 1) * period;
        let wait = Duration::from_millis((next - now_ms()).max(1) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // New behaviors: a round for them now.
            Ok(()) = behaviors_rx.changed() => {}
            _ = stop.changed() => {
                let _ = store.release_lease(THRESHOLDS_JOB, &holder).await;
                return;
            }
        }
    }
}

/// Definitions that loaded on SIGHUP, for the committer.
#[derive(Debug)]
pub struct Reloaded {
    /// The profiles.
    pub profiles: Vec<defender_agent::detect::SecurityProfile>,
    /// Their dimensions and custom metrics.
    pub context: defender_agent::detect::ValidationContext,
}

/// On each SIGHUP: `[detect]`'s profiles, dimensions and custom metrics read again (LOAD mode,
/// as at start). Loaded: handed to the committer and, their statistical behaviors, to the
/// thresholds job. Not loaded: what is in force stays, and the error is logged once (per
/// SIGHUP).
async fn reload_task(
    mut hup: tokio::signal::unix::Signal,
    detect: Detect,
    tx: watch::Sender<Option<Arc<Reloaded>>>,
    behaviors: watch::Sender<Vec<StatisticalBehavior>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = hup.recv() => if r.is_none() { return },
            _ = stop.changed() => return,
        }
        info!("SIGHUP: reloading the profiles, dimensions and custom metrics.");
        let d = detect.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            definitions::load_all(&d.profiles, &d.dimensions, &d.custom_metrics, Mode::Load)
        })
        .await;
        let loaded = match loaded {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                error!(error = %e, "Reload failed: the profiles in force are kept.");
                continue;
            }
            Err(e) => {
                error!(error = %e, "Reload failed: the profiles in force are kept.");
                continue;
            }
        };
        for d in loaded.profiles.iter().flat_map(|p| &p.diagnostics) {
            warn!("{d}");
        }
        let profiles: Vec<_> = loaded.profiles.iter().map(|p| p.profile.clone()).collect();
        let context = loaded.context();
        let _ = behaviors.send(FleetDetect::new(&profiles, &context).statistical_behaviors());
        let _ = tx.send(Some(Arc::new(Reloaded { profiles, context })));
    }
}

/// The lease's name in the store.
pub const RETENTION_JOB: &str = "retention";

/// The invalidation sweep's lease.
pub const SWEEP_JOB: &str = "invalidation";

/// How often the invalidation sweep runs (the cloud side's 300 s tick).
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Things the sweep takes in one round at most.
pub const SWEEP_MAX_THINGS: i64 = 1000;

/// The time until the next epoch multiple of `period`.
fn until_next(period: Duration) -> Duration {
    let p = period.as_millis().max(1) as i64;
    let now = now_ms();
    Duration::from_millis(((now / p + 1) * p - now).max(1) as u64)
}

/// How often the retention job runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// At the start and every [`RETENTION_EVERY`]: the instance that gets the `retention` lease
/// purges what is older than `[store] retention_days`. Failures are logged once per episode.
async fn retention_job(store: Store, holder: String, mut stop: watch::Receiver<bool>) {
    let period = RETENTION_EVERY.as_millis() as i64;
    let mut failing = false;
    loop {
        let now = now_ms();
        let round = async {
            if !store
                .try_lease(RETENTION_JOB, &holder, now, period - period / 10)
                .await?
            {
                return Ok(None);
            }
            store.purge_expired(now).await.map(Some)
        };
        // A long purge (the first after a while) gives way to SIGTERM: each batch of deletes
        // is its own statement, so stopping between two loses nothing.
        let round = tokio::select! {
            r = round => r,
            _ = stop.changed() => return,
        };
        match round {
            Ok(p) => {
                if failing {
                    info!("Retention: the store is available again.");
                    failing = false;
                }
                if let Some(p) = p {
                    info!(
                        events = p.events,
                        reports = p.reports,
                        datapoints = p.datapoints,
                        verifications = p.verifications,
                        counters = p.counters,
                        retention_days = store.retention().as_secs() / 86_400,
                        "Retention: purged what is older than the retention."
                    );
                }
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "Retention: cannot purge the store; trying again next period.");
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One period: computed and stored under the lease, then read back (every instance).
async fn thresholds_round(
    store: &Store,
    behaviors: &[StatisticalBehavior],
    detect: &Detect,
    holder: &str,
    now: i64,
    period: i64,
) -> Result<Vec<FleetThreshold>, StoreError> {
    // A lease a little shorter than the period: whoever holds it runs this period; if it dies,
    // another takes the next one.
    if store
        .try_lease(THRESHOLDS_JOB, holder, now, period - period / 10)
        .await?
    {
        for b in behaviors {
            let since = now - (b.duration_seconds as i64) * 1000 + 1;
            let mut values: Vec<f64> = store
                .population(&b.security_profile_name, &b.behavior_name, since)
                .await?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            let t = threshold_for(b, &mut values, detect.min_population, now);
            store
                .upsert_threshold(&crate::store::FleetThreshold {
                    profile: t.security_profile_name.clone(),
                    behavior: t.behavior_name.clone(),
                    value: t.value,
                    population: t.population as i64,
                    computed_at_ms: now,
                })
                .await?;
        }
    }
    let stored = store.thresholds().await?;
    Ok(behaviors
        .iter()
        .filter_map(|b| {
            let s = stored
                .iter()
                .find(|s| s.profile == b.security_profile_name && s.behavior == b.behavior_name)?;
            Some(FleetThreshold {
                security_profile_name: b.security_profile_name.clone(),
                behavior_name: b.behavior_name.clone(),
                statistic: b.statistic.clone(),
                // The stored row has no status: without a value, a population of at least
                // min_population can only have been refused for a negative value.
                status: match s.value {
                    Some(_) => ThresholdStatus::Evaluable,
                    None if s.population > 0 && s.population as usize >= detect.min_population => {
                        ThresholdStatus::NegativeValues
                    }
                    None => ThresholdStatus::TooFewDevices,
                },
                value: s.value,
                population: usize::try_from(s.population).unwrap_or(0),
                min_population: detect.min_population,
                computed_at: s.computed_at_ms as f64 / 1000.0,
            })
        })
        .collect())
}

fn accepted(e: &Evaluated) -> Pending {
    Pending {
        topic: format!("{}/accepted", e.topic),
        format: e.format,
        answer: Answer {
            thing_name: e.thing.clone(),
            report_id: Some(e.report_id),
            status: "ACCEPTED",
            status_details: None,
            timestamp: now_ms(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_have_the_documented_shapes_and_the_agent_reads_them() {
        let a = Answer {
            thing_name: "dev1".into(),
            report_id: Some(1_700_000_000),
            status: "ACCEPTED",
            status_details: None,
            timestamp: 1_700_000_000_123,
        };
        assert_eq!(
            String::from_utf8(encode_answer(&a, Format::Json)).unwrap(),
            r#"{"thingName":"dev1","reportId":1700000000,"status":"ACCEPTED","timestamp":1700000000123}"#
        );
        for f in [Format::Json, Format::Cbor] {
            let o = report::outcome::parse(&encode_answer(&a, f), f).unwrap();
            assert_eq!(o.report_id, Some(1_700_000_000));
            assert_eq!(o.status, report::outcome::Status::Accepted);
        }
        let r = Answer {
            status: "REJECTED",
            report_id: None,
            status_details: Some(StatusDetails {
                error_code: "InvalidPayload",
                error_message: "Malformed metrics report".into(),
            }),
            ..a
        };
        let o = report::outcome::parse(&encode_answer(&r, Format::Cbor), Format::Cbor).unwrap();
        assert!(o.is_malformed());
        assert_eq!(
            o.status,
            report::outcome::Status::Rejected {
                code: "InvalidPayload".into(),
                message: "Malformed metrics report".into()
            }
        );
    }
}

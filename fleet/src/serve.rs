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
//!   logged once.
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

use std::collections::HashMap;
use std::time::Duration;

use defender_agent::agent::detect::device_report;
use defender_agent::detect::fleet::{
    report_time, threshold_for, FleetDetect, FleetThreshold, StatisticalBehavior,
    ThingState as FleetState, ThresholdStatus,
};
use defender_agent::detect::{Mode, ViolationEvent};
use defender_agent::mqtt::session::{Session, SessionEvent};
use defender_agent::mqtt::topics::parse_publish_topic;
use defender_agent::report::{self, Format};
use defender_agent::store::definitions;
use rumqttc::{Packet, QoS};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{Config, Detect, Ingest};
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
    let store = Store::open(config.store.clone()).await?;
    info!(
        engine = store.engine_name(),
        profiles = profiles.len(),
        behaviors = fleet.evaluable_behaviors(),
        "Fleet store open."
    );
    let session = Session::new(config.mqtt.session_options())?;
    let client = session.client();
    let (tx, rx) = mpsc::channel::<Received>(config.ingest.queue_capacity);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let filters = config.mqtt.filters();
    let mqtt = tokio::spawn(mqtt_task(session, filters, tx, stop_rx, done_rx));
    let (thresholds_tx, thresholds_rx) = watch::channel(Vec::new());
    let job = tokio::spawn(thresholds_job(
        store.clone(),
        fleet.statistical_behaviors(),
        config.detect.clone(),
        config.mqtt.client_id.clone(),
        thresholds_tx,
        stop_tx.subscribe(),
    ));
    let committer = Committer {
        store: store.clone(),
        fleet,
        ingest: config.ingest.clone(),
        client,
        unavailable: false,
        thresholds: thresholds_rx,
    };
    let commit = tokio::spawn(committer.run(rx, stop_tx.subscribe()));
    wait_for_signal().await;
    info!("Shutting down: draining the reports in flight.");
    let _ = stop_tx.send(true);
    let _ = commit.await;
    let _ = job.await;
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
    store: Store,
    fleet: FleetDetect,
    ingest: Ingest,
    client: rumqttc::AsyncClient,
    unavailable: bool,
    /// The thresholds job's latest thresholds.
    thresholds: watch::Receiver<Vec<FleetThreshold>>,
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

/// What the first pass decided for a report.
enum Step {
    Answer(Pending),
    Record(Box<Evaluated>),
}

impl Committer {
    async fn run(mut self, mut rx: mpsc::Receiver<Received>, mut stop: watch::Receiver<bool>) {
        let mut stopping = false;
        loop {
            let first = if stopping {
                match rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    r = rx.recv() => match r { Some(r) => r, None => break },
                    _ = stop.changed() => { stopping = true; continue; }
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

    /// One batch: decided, committed (retried while the database is unavailable, until
    /// shutdown), answered.
    async fn batch(&mut self, batch: Vec<Received>, stop: &mut watch::Receiver<bool>) {
        loop {
            match self.try_batch(&batch).await {
                Ok(answers) => {
                    if self.unavailable {
                        info!("The store is available again.");
                        self.unavailable = false;
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

    async fn try_batch(&self, batch: &[Received]) -> Result<Vec<Pending>, StoreError> {
        // States of things already seen in this batch: (state, version, last report time).
        let mut things: HashMap<String, (FleetState, i64, Option<i64>)> = HashMap::new();
        let mut steps = Vec::with_capacity(batch.len());
        for r in batch {
            steps.push(self.decide(r, &mut things).await?);
        }
        let mut order = Vec::new();
        let mut records = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            if let Step::Record(e) = s {
                order.push(i);
                records.push(ReportRecord {
                    thing: &e.thing,
                    report_id: e.report_id as i64,
                    report_time_ms: e.time_ms,
                    received_ms: e.received_ms,
                    payload_bytes: e.bytes as i64,
                    expected_version: e.version,
                    state: &e.state,
                    events: &e.events,
                    active: Some(&e.active),
                    datapoints: &e.datapoints,
                });
            }
        }
        let outcomes = if records.is_empty() {
            Vec::new()
        } else {
            self.store.record_reports(&records).await?
        };
        let mut retry = Vec::new();
        let mut by_index: HashMap<usize, RecordOutcome> =
            order.iter().copied().zip(outcomes).collect();
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
        // A conflict (another writer, or an earlier report of the batch that was a duplicate):
        // each such report again, alone, on a fresh read.
        for i in retry {
            let r = &batch[i];
            for _ in 0..5 {
                let mut fresh = HashMap::new();
                match self.decide(r, &mut fresh).await? {
                    Step::Answer(p) => {
                        answers.push(p);
                        break;
                    }
                    Step::Record(e) => {
                        let rec = ReportRecord {
                            thing: &e.thing,
                            report_id: e.report_id as i64,
                            report_time_ms: e.time_ms,
                            received_ms: e.received_ms,
                            payload_bytes: e.bytes as i64,
                            expected_version: e.version,
                            state: &e.state,
                            events: &e.events,
                            active: Some(&e.active),
                            datapoints: &e.datapoints,
                        };
                        match self.store.record_report(&rec).await? {
                            RecordOutcome::Conflict => continue,
                            _ => {
                                answers.push(accepted(&e));
                                break;
                            }
                        }
                    }
                }
            }
        }
        Ok(answers)
    }

    /// The checks, and the evaluation of a report that passes them.
    async fn decide(
        &self,
        r: &Received,
        things: &mut HashMap<String, (FleetState, i64, Option<i64>)>,
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
        let Some((thing, format)) = parse_publish_topic(&r.topic) else {
            let format = if r.topic.ends_with("/cbor") {
                Format::Cbor
            } else {
                Format::Json
            };
            let thing = r.topic.split('/').nth(2).unwrap_or_default();
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
        let (state, version, last) = match things.get(thing) {
            Some(s) => s.clone(),
            None => match self.store.load_thing(thing).await? {
                Some(t) => (t.state, t.version, t.last_report_ms),
                None => (self.fleet.new_thing_state(), 0, None),
            },
        };
        let time_ms = report_time(Some(rid), r.arrival_ms);
        let interval = self.ingest.min_report_interval.as_millis() as i64;
        if let Some(last) = last {
            if interval > 0 && (time_ms - last).abs() < interval {
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
        let mut state = state;
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
        let newest = Some(last.map_or(time_ms, |l| l.max(time_ms)));
        things.insert(thing.to_owned(), (state.clone(), version + 1, newest));
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
    behaviors: Vec<StatisticalBehavior>,
    detect: Detect,
    holder: String,
    tx: watch::Sender<Vec<FleetThreshold>>,
    mut stop: watch::Receiver<bool>,
) {
    if behaviors.is_empty() {
        return;
    }
    let period = detect.thresholds_interval.as_millis() as i64;
    let mut logged: HashMap<(String, String), ThresholdStatus> = HashMap::new();
    let mut unavailable = false;
    loop {
        let now = now_ms();
        match thresholds_round(&store, &behaviors, &detect, &holder, now, period).await {
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
            _ = stop.changed() => {
                let _ = store.release_lease(THRESHOLDS_JOB, &holder).await;
                return;
            }
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

//! The publisher: which report goes to the link next, what an answer, an outage, a connection or
//! an answer timeout does to the reports in the outbox, and where a report goes when the spool
//! cannot be written (the memory outbox). A state machine without channels, clocks or status
//! files: time arrives as `now`, the report to publish is returned to the caller (the agent loop),
//! which hands it to the link and says so with [`Publisher::offered`].
//!
//! The durable outbox is behind the [`Outbox`] trait: [`Spool`] in the daemon, a fake in the unit
//! tests below. The backlog policy is [`Backlog::choose`], the one implementation shared with
//! [`Spool::next_to_publish`].
//!
//! Publishing rules (spec: metrics-report.md A.3, D.12, D.13):
//! - one report in flight at a time; its answer (matched by `reportId`) acks or rejects it;
//! - `backlog = "latest"`: the newest pending report is published and older pending ones become
//!   superseded history; `"all"`: the oldest pending goes first, one per report interval;
//! - a report without an answer after `answer_timeout_secs` is held until the next connection,
//!   then offered again;
//! - a rejected report is logged once per distinct `ErrorCode`, kept in the spool as history and
//!   never published again.
//!
//! Besides the publisher, [`SampleGap`] decides when counters are re-baselined after an outage of
//! the agent itself (suspend, stall): a long gap between two samples.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::report::{self, outcome};
use crate::spool::{self, Appended, Backlog, Entry, EntryState, Spool, Stats};
use crate::status::SpoolStatus;

/// The publisher logs as the agent loop did before it had its own module, so log lines keep
/// their target (`defender_agent::agent`).
const LOG_TARGET: &str = "defender_agent::agent";

/// In-memory outbox used only while the spool cannot be written (disk full, read-only): the
/// newest few reports, so the agent keeps reporting; oldest dropped first.
pub const MEMORY_OUTBOX_CAPACITY: usize = 4;

/// What the publisher needs of the durable outbox. [`Spool`] is the real one; every method has
/// the meaning of the `Spool` method of the same name.
pub trait Outbox {
    /// Adds a pending entry durably.
    fn append(&mut self, entry: Entry) -> Result<Appended, spool::Error>;
    /// Removes an accepted entry.
    fn ack(&mut self, id: u64) -> Result<bool, spool::Error>;
    /// Keeps a rejected entry as history.
    fn reject(&mut self, id: u64, code: &str, message: &str) -> Result<bool, spool::Error>;
    /// Marks pending entries older than `id` superseded.
    fn supersede_older_than(&mut self, id: u64) -> Result<usize, spool::Error>;
    /// Every entry held, oldest first, with its state.
    fn entries(&self) -> Box<dyn Iterator<Item = (&Entry, &EntryState)> + '_>;
    /// Counters for status output.
    fn stats(&self) -> Stats;
}

impl Outbox for Spool {
    fn append(&mut self, entry: Entry) -> Result<Appended, spool::Error> {
        Spool::append(self, entry)
    }
    fn ack(&mut self, id: u64) -> Result<bool, spool::Error> {
        Spool::ack(self, id)
    }
    fn reject(&mut self, id: u64, code: &str, message: &str) -> Result<bool, spool::Error> {
        Spool::reject(self, id, code, message)
    }
    fn supersede_older_than(&mut self, id: u64) -> Result<usize, spool::Error> {
        Spool::supersede_older_than(self, id)
    }
    fn entries(&self) -> Box<dyn Iterator<Item = (&Entry, &EntryState)> + '_> {
        Box::new(Spool::entries(self))
    }
    fn stats(&self) -> Stats {
        Spool::stats(self)
    }
}

/// How the publisher behaves (from `[spool]`, `[report]` and `[mqtt]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Which pending report goes first after an outage.
    pub backlog: Backlog,
    /// `backlog = "all"`: at most one publish per this interval (the report interval).
    pub pace: Duration,
    /// How long an answer may take before the report is held until the next connection.
    pub answer_timeout: Duration,
    /// The format answers arrive in (the report format).
    pub format: report::Format,
}

/// The report in flight: published, answer not yet received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    id: u64,
    deadline: Instant,
}

/// What an answer did, for the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The report it was for.
    pub id: u64,
    /// Accepted, or rejected with the broker's code and message.
    pub status: outcome::Status,
}

/// The publishing state: the outbox (spool and memory), the link's state as the publisher sees
/// it, the report in flight and the held ones.
pub struct Publisher<O = Spool> {
    settings: Settings,
    /// The durable outbox; `None` when it could not be opened (memory only).
    spool: Option<O>,
    /// Reports that could not be spooled (disk full, read-only), newest last.
    memory: VecDeque<Entry>,
    connected: bool,
    in_flight: Option<InFlight>,
    /// Ids whose answer timed out: not offered again before the next connection.
    held: HashSet<u64>,
    /// `backlog = "all"`: no publish before this instant.
    next_publish_at: Option<Instant>,
    /// `ErrorCode`s already logged as an error (later ones are debug lines).
    logged_rejections: HashSet<String>,
    /// The spool write error last logged, so one cause is logged once.
    spool_error_logged: Option<String>,
    /// Reports dropped by the bounds (spool and memory outbox).
    dropped: u64,
}

impl<O: Outbox> Publisher<O> {
    /// A publisher over `spool` (`None`: the spool could not be opened), not connected.
    pub fn new(settings: Settings, spool: Option<O>) -> Publisher<O> {
        Publisher {
            settings,
            spool,
            memory: VecDeque::new(),
            connected: false,
            in_flight: None,
            held: HashSet::new(),
            next_publish_at: None,
            logged_rejections: HashSet::new(),
            spool_error_logged: None,
            dropped: 0,
        }
    }

    /// The durable outbox, when open.
    pub fn spool(&self) -> Option<&O> {
        self.spool.as_ref()
    }

    /// Whether the link is up, as last told.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The id of the report in flight.
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight.map(|f| f.id)
    }

    /// When the report in flight times out.
    pub fn answer_deadline(&self) -> Option<Instant> {
        self.in_flight.map(|f| f.deadline)
    }

    /// `backlog = "all"`: when the next publish may go (call [`Publisher::pace_elapsed`] then).
    pub fn pace_deadline(&self) -> Option<Instant> {
        self.next_publish_at
    }

    /// Reports waiting: the spool's pending ones, or the memory outbox without a spool.
    pub fn pending(&self) -> usize {
        self.spool
            .as_ref()
            .map_or(self.memory.len(), |s| s.stats().pending)
    }

    /// The outbox counters for the status file.
    pub fn spool_status(&self) -> SpoolStatus {
        match &self.spool {
            Some(s) => {
                let st = s.stats();
                SpoolStatus {
                    pending: st.pending as u64,
                    superseded: st.superseded as u64,
                    rejected: st.rejected as u64,
                    dropped: self.dropped,
                    bytes: st.file_bytes,
                }
            }
            None => SpoolStatus {
                pending: self.memory.len() as u64,
                dropped: self.dropped,
                ..SpoolStatus::default()
            },
        }
    }

    /// A new report: into the spool, or into the memory outbox when the spool cannot be written.
    /// A successful append first moves what the memory outbox holds to the spool.
    pub fn on_report(&mut self, entry: Entry) {
        let id = entry.id;
        match self.spool.as_mut().map(|s| s.append(entry.clone())) {
            Some(Ok(appended)) => {
                info!(target: LOG_TARGET, id, bytes = entry.payload.len(), "Report spooled.");
                if appended.dropped_oldest > 0 {
                    self.dropped += appended.dropped_oldest as u64;
                    warn!(target: LOG_TARGET,
                        dropped = appended.dropped_oldest,
                        pending_dropped = appended.dropped_pending,
                        "Spool full; oldest reports dropped."
                    );
                }
                if self.spool_error_logged.take().is_some() {
                    info!(target: LOG_TARGET, "The spool is writable again.");
                }
                // Anything kept in memory while the disk failed goes to disk now.
                self.flush_memory();
            }
            Some(Err(e)) => {
                let cause = e.to_string();
                if self.spool_error_logged.as_deref() != Some(cause.as_str()) {
                    error!(target: LOG_TARGET, error = %cause, "Cannot write the report to the spool; keeping it in memory and reporting on.");
                    self.spool_error_logged = Some(cause);
                }
                self.keep_in_memory(entry);
            }
            None => self.keep_in_memory(entry),
        }
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
            if self.in_flight.is_some_and(|f| f.id == e.id) {
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

    /// The link is up: held reports may go again.
    pub fn on_connected(&mut self) {
        self.connected = true;
        self.held.clear();
    }

    /// The link is down: the report in flight is forgotten (it stays pending and goes again).
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.in_flight = None;
    }

    /// `backlog = "all"`: the pace deadline has passed.
    pub fn pace_elapsed(&mut self) {
        self.next_publish_at = None;
    }

    /// The report to hand to the link now, if any: connected, nothing in flight, not paced, and
    /// a pending report not held, chosen by the backlog policy. Under `latest`, older pending
    /// reports become superseded history here. Call [`Publisher::offered`] when the link took it.
    pub fn next(&mut self, now: Instant) -> Option<Entry> {
        if !self.connected || self.in_flight.is_some() {
            return None;
        }
        if self.next_publish_at.is_some_and(|at| now < at) {
            return None;
        }
        let entry = self.next_candidate()?;
        if self.settings.backlog == Backlog::Latest {
            let mut superseded = 0;
            if let Some(spool) = self.spool.as_mut() {
                match spool.supersede_older_than(entry.id) {
                    Ok(n) => superseded = n,
                    Err(e) => {
                        warn!(target: LOG_TARGET, error = %e, "Cannot mark older reports superseded.")
                    }
                }
            }
            let before = self.memory.len();
            self.memory.retain(|e| e.id >= entry.id);
            superseded += before - self.memory.len();
            if superseded > 0 {
                info!(target: LOG_TARGET, superseded, newest = entry.id, "Publishing the newest report; older pending reports kept as superseded history.");
            }
        }
        Some(entry)
    }

    /// The next report to offer, by backlog policy, over the spool's pending reports and the
    /// memory outbox, skipping held ids.
    fn next_candidate(&self) -> Option<Entry> {
        let spooled = self
            .spool
            .iter()
            .flat_map(|s| s.entries())
            .filter(|(_, st)| matches!(st, EntryState::Pending))
            .map(|(e, _)| e);
        let candidates = spooled
            .chain(self.memory.iter())
            .filter(|e| !self.held.contains(&e.id));
        self.settings.backlog.choose(candidates).cloned()
    }

    /// The link took report `id` at `now`: it is in flight until its answer or the timeout.
    pub fn offered(&mut self, id: u64, now: Instant) {
        debug!(target: LOG_TARGET, id, "Report offered to the link.");
        self.in_flight = Some(InFlight {
            id,
            deadline: now + self.settings.answer_timeout,
        });
    }

    /// An answer on the accepted (`accepted_topic`) or rejected topic: acks or rejects the report
    /// it names (a rejection without `reportId` is for the report in flight). `None` when the
    /// answer is unreadable or names no report: nothing changed.
    pub fn on_answer(
        &mut self,
        accepted_topic: bool,
        payload: &[u8],
        now: Instant,
    ) -> Option<Answered> {
        let parsed = match outcome::parse(payload, self.settings.format) {
            Ok(o) => o,
            Err(e) => {
                warn!(target: LOG_TARGET, error = %e, "Unreadable answer from Device Defender; ignored.");
                return None;
            }
        };
        // A rejection without reportId (malformed report) is for the report in flight.
        let id = parsed.report_id.or_else(|| {
            if accepted_topic {
                None
            } else {
                self.in_flight()
            }
        });
        let Some(id) = id else {
            warn!(target: LOG_TARGET, "Accepted answer without reportId; ignored.");
            return None;
        };
        match &parsed.status {
            outcome::Status::Accepted => {
                debug!(target: LOG_TARGET, id, "Report accepted.");
                if let Some(s) = self.spool.as_mut() {
                    if let Err(e) = s.ack(id) {
                        warn!(target: LOG_TARGET, error = %e, id, "Cannot remove the accepted report from the spool.");
                    }
                }
                self.memory.retain(|e| e.id != id);
            }
            outcome::Status::Rejected { code, message } => {
                if self.logged_rejections.insert(code.clone()) {
                    error!(target: LOG_TARGET, id, code = %code, message = %message, "Report rejected; kept in the spool for inspection, not retried.");
                } else {
                    debug!(target: LOG_TARGET, id, code = %code, "Report rejected again.");
                }
                if let Some(s) = self.spool.as_mut() {
                    if let Err(e) = s.reject(id, code, message) {
                        warn!(target: LOG_TARGET, error = %e, id, "Cannot mark the rejected report in the spool.");
                    }
                }
                self.memory.retain(|e| e.id != id);
            }
        }
        if self.in_flight.is_some_and(|f| f.id == id) {
            self.in_flight = None;
            if self.settings.backlog == Backlog::All {
                self.next_publish_at = Some(now + self.settings.pace);
            }
        }
        Some(Answered {
            id,
            status: parsed.status,
        })
    }

    /// The answer deadline passed: the report in flight is held until the next connection.
    pub fn on_answer_timeout(&mut self) {
        if let Some(f) = self.in_flight.take() {
            warn!(target: LOG_TARGET, id = f.id, "No answer from Device Defender in time; the report is retried on the next connection.");
            self.held.insert(f.id);
        }
    }

    /// The link refused to publish a command: a refused report is marked rejected
    /// (`LocalRefused`) and no longer in flight.
    pub fn on_refused(&mut self, report_id: Option<u64>, reason: &str) {
        if let (Some(id), Some(spool)) = (report_id, self.spool.as_mut()) {
            let _ = spool.reject(id, "LocalRefused", reason);
        }
        if self.in_flight() == report_id {
            self.in_flight = None;
        }
    }
}

/// Re-baselines counters after a long gap between samples (suspend or stall), so that deltas
/// spanning it are never sent as one huge spike.
#[derive(Debug, Clone)]
pub struct SampleGap {
    sample_interval: Duration,
    last_sample_at: Option<SystemTime>,
}

impl SampleGap {
    /// A watch for samples taken every `sample_interval`.
    pub fn new(sample_interval: Duration) -> SampleGap {
        SampleGap {
            sample_interval,
            last_sample_at: None,
        }
    }

    /// A sample was taken at `now` (wall clock): `Some(gap)` when the gap since the previous one
    /// exceeds three sample intervals and the interval plus a minute, i.e. re-baseline now.
    pub fn on_sample(&mut self, now: SystemTime) -> Option<Duration> {
        let rebaseline = self.last_sample_at.and_then(|prev| {
            let gap = now.duration_since(prev).unwrap_or(Duration::ZERO);
            let limit =
                (self.sample_interval * 3).max(self.sample_interval + Duration::from_secs(60));
            (gap > limit).then_some(gap)
        });
        self.last_sample_at = Some(now);
        rebaseline
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// An in-memory outbox with the spool's rules (ids increase, ack removes, reject keeps);
    /// `fail_writes` makes every write fail as a full disk does.
    #[derive(Default)]
    struct FakeSpool {
        entries: BTreeMap<u64, (Entry, EntryState)>,
        last_id: Option<u64>,
        fail_writes: bool,
    }

    fn disk_full() -> spool::Error {
        spool::Error::Io {
            op: "append to",
            path: "/state/spool/spool.log".into(),
            cause: spool::IoCause::DiskFull,
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        }
    }

    impl Outbox for FakeSpool {
        fn append(&mut self, entry: Entry) -> Result<Appended, spool::Error> {
            if self.fail_writes {
                return Err(disk_full());
            }
            if let Some(last) = self.last_id.filter(|&l| entry.id <= l) {
                return Err(spool::Error::IdNotIncreasing { id: entry.id, last });
            }
            self.last_id = Some(entry.id);
            self.entries.insert(entry.id, (entry, EntryState::Pending));
            Ok(Appended {
                dropped_oldest: 0,
                dropped_pending: 0,
            })
        }
        fn ack(&mut self, id: u64) -> Result<bool, spool::Error> {
            if self.fail_writes {
                return Err(disk_full());
            }
            Ok(self.entries.remove(&id).is_some())
        }
        fn reject(&mut self, id: u64, code: &str, message: &str) -> Result<bool, spool::Error> {
            if self.fail_writes {
                return Err(disk_full());
            }
            match self.entries.get_mut(&id) {
                Some((_, st)) if !matches!(st, EntryState::Rejected { .. }) => {
                    *st = EntryState::Rejected {
                        code: code.into(),
                        message: message.into(),
                    };
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        fn supersede_older_than(&mut self, id: u64) -> Result<usize, spool::Error> {
            if self.fail_writes {
                return Err(disk_full());
            }
            let mut n = 0;
            for (_, st) in self.entries.range_mut(..id).map(|(_, v)| v) {
                if *st == EntryState::Pending {
                    *st = EntryState::Superseded;
                    n += 1;
                }
            }
            Ok(n)
        }
        fn entries(&self) -> Box<dyn Iterator<Item = (&Entry, &EntryState)> + '_> {
            Box::new(self.entries.values().map(|(e, s)| (e, s)))
        }
        fn stats(&self) -> Stats {
            let count =
                |f: fn(&EntryState) -> bool| self.entries.values().filter(|(_, s)| f(s)).count();
            Stats {
                pending: count(|s| *s == EntryState::Pending),
                superseded: count(|s| *s == EntryState::Superseded),
                rejected: count(|s| matches!(s, EntryState::Rejected { .. })),
                bytes: 0,
                file_bytes: 0,
                dropped_total: 0,
                last_id: self.last_id,
            }
        }
    }

    impl FakeSpool {
        fn state(&self, id: u64) -> Option<&EntryState> {
            self.entries.get(&id).map(|(_, s)| s)
        }
    }

    const PACE: Duration = Duration::from_secs(300);
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn publisher(backlog: Backlog) -> Publisher<FakeSpool> {
        Publisher::new(
            Settings {
                backlog,
                pace: PACE,
                answer_timeout: TIMEOUT,
                format: report::Format::Json,
            },
            Some(FakeSpool::default()),
        )
    }

    fn entry(id: u64) -> Entry {
        Entry {
            id,
            format: report::Format::Json,
            payload: format!("report {id}").into_bytes(),
        }
    }

    fn accepted(id: u64) -> Vec<u8> {
        format!(r#"{{"thingName":"t","reportId":{id},"status":"ACCEPTED","timestamp":1}}"#)
            .into_bytes()
    }

    fn rejected(id: Option<u64>, code: &str) -> Vec<u8> {
        let id = id.map_or(String::new(), |id| format!(r#""reportId":{id},"#));
        format!(
            r#"{{"thingName":"t",{id}"status":"REJECTED","timestamp":1,"statusDetails":{{"ErrorCode":"{code}","ErrorMessage":"bad"}}}}"#
        )
        .into_bytes()
    }

    /// Publishes whatever the publisher offers and returns its id.
    fn publish(p: &mut Publisher<FakeSpool>, now: Instant) -> Option<u64> {
        let e = p.next(now)?;
        p.offered(e.id, now);
        Some(e.id)
    }

    fn state(p: &Publisher<FakeSpool>, id: u64) -> Option<EntryState> {
        p.spool().and_then(|s| s.state(id)).cloned()
    }

    #[test]
    fn nothing_is_offered_while_disconnected_or_while_a_report_is_in_flight() {
        let now = Instant::now();
        let mut p = publisher(Backlog::Latest);
        p.on_report(entry(1));
        assert_eq!(p.next(now), None);
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        p.on_report(entry(2));
        assert_eq!(p.next(now), None, "one report in flight at a time");
        assert_eq!(p.answer_deadline(), Some(now + TIMEOUT));
    }

    #[test]
    fn after_an_outage_backlog_latest_publishes_the_newest_and_supersedes_the_rest() {
        let now = Instant::now();
        let mut p = publisher(Backlog::Latest);
        p.on_connected();
        p.on_report(entry(1));
        assert_eq!(publish(&mut p, now), Some(1));
        assert!(p.on_answer(true, &accepted(1), now).is_some());
        p.on_disconnected();
        for id in 2..=5 {
            p.on_report(entry(id));
            assert_eq!(p.next(now), None);
        }
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(5));
        for id in 2..=4 {
            assert_eq!(state(&p, id), Some(EntryState::Superseded));
        }
        assert_eq!(p.spool_status().superseded, 3);
        p.on_answer(true, &accepted(5), now);
        assert_eq!(
            p.next(now),
            None,
            "the superseded history is never published"
        );
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn after_an_outage_backlog_all_publishes_every_report_oldest_first_paced_by_the_interval() {
        let start = Instant::now();
        let mut p = publisher(Backlog::All);
        for id in 1..=4 {
            p.on_report(entry(id));
        }
        p.on_connected();
        let mut now = start;
        let mut sent = Vec::new();
        while let Some(id) = publish(&mut p, now) {
            sent.push(id);
            p.on_answer(true, &accepted(id), now);
            assert_eq!(p.next(now), None, "paced: no publish before the interval");
            assert_eq!(p.pace_deadline(), Some(now + PACE));
            now += PACE;
            p.pace_elapsed();
        }
        assert_eq!(sent, vec![1, 2, 3, 4]);
        assert_eq!(p.spool_status().superseded, 0);
    }

    #[test]
    fn the_report_in_flight_during_an_outage_is_offered_again_after_reconnecting() {
        let now = Instant::now();
        let mut p = publisher(Backlog::All);
        p.on_report(entry(1));
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        p.on_disconnected();
        assert_eq!(p.in_flight(), None);
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
    }

    #[test]
    fn an_answer_for_another_report_id_acks_that_report_and_leaves_the_one_in_flight() {
        let now = Instant::now();
        let mut p = publisher(Backlog::All);
        p.on_report(entry(1));
        p.on_report(entry(2));
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        let answered = p.on_answer(true, &accepted(2), now).unwrap();
        assert_eq!(answered.id, 2);
        assert_eq!(state(&p, 2), None, "report 2 left the spool");
        assert_eq!(
            p.in_flight(),
            Some(1),
            "still waiting for report 1's answer"
        );
        assert_eq!(p.pace_deadline(), None);
        assert_eq!(p.next(now), None);
    }

    #[test]
    fn an_answer_for_an_unknown_report_id_changes_nothing_in_the_spool() {
        let now = Instant::now();
        let mut p = publisher(Backlog::Latest);
        p.on_report(entry(1));
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        assert!(p.on_answer(true, &accepted(99), now).is_some());
        assert_eq!(p.in_flight(), Some(1));
        assert_eq!(state(&p, 1), Some(EntryState::Pending));
    }

    #[test]
    fn an_accepted_answer_without_report_id_or_unreadable_is_ignored() {
        let now = Instant::now();
        let mut p = publisher(Backlog::Latest);
        p.on_report(entry(1));
        p.on_connected();
        publish(&mut p, now);
        let no_id = br#"{"thingName":"t","status":"ACCEPTED","timestamp":1}"#;
        assert_eq!(p.on_answer(true, no_id, now), None);
        assert_eq!(p.on_answer(true, b"not json", now), None);
        assert_eq!(p.in_flight(), Some(1));
    }

    #[test]
    fn a_rejected_report_is_kept_as_history_with_its_code_and_never_offered_again() {
        let now = Instant::now();
        let mut p = publisher(Backlog::All);
        p.on_report(entry(1));
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        let a = p
            .on_answer(false, &rejected(Some(1), "InvalidPayload"), now)
            .unwrap();
        assert_eq!(
            a.status,
            outcome::Status::Rejected {
                code: "InvalidPayload".into(),
                message: "bad".into()
            }
        );
        assert!(
            matches!(state(&p, 1), Some(EntryState::Rejected { code, .. }) if code == "InvalidPayload")
        );
        assert_eq!(p.in_flight(), None);
        p.pace_elapsed();
        assert_eq!(p.next(now), None, "a rejected report is not retried");
        p.on_report(entry(2));
        assert_eq!(publish(&mut p, now), Some(2));
    }

    #[test]
    fn a_rejection_without_report_id_is_for_the_report_in_flight() {
        let now = Instant::now();
        let mut p = publisher(Backlog::Latest);
        p.on_report(entry(7));
        p.on_connected();
        publish(&mut p, now);
        let a = p
            .on_answer(false, &rejected(None, "InvalidJson"), now)
            .unwrap();
        assert_eq!(a.id, 7);
        assert!(matches!(state(&p, 7), Some(EntryState::Rejected { .. })));
        assert_eq!(p.in_flight(), None);
    }

    #[test]
    fn a_duplicate_answer_is_harmless_and_does_not_touch_the_next_report_in_flight() {
        let now = Instant::now();
        let mut p = publisher(Backlog::Latest);
        p.on_report(entry(1));
        p.on_connected();
        publish(&mut p, now);
        p.on_answer(true, &accepted(1), now);
        p.on_report(entry(2));
        assert_eq!(publish(&mut p, now), Some(2));
        // The same answer again (QoS 1 redelivery): report 1 is already gone.
        let again = p.on_answer(true, &accepted(1), now).unwrap();
        assert_eq!(again.id, 1);
        assert_eq!(p.in_flight(), Some(2));
        assert_eq!(state(&p, 2), Some(EntryState::Pending));
        // A duplicate rejection keeps the first code and is not an error twice.
        p.on_answer(false, &rejected(Some(2), "Throttled"), now);
        p.on_answer(false, &rejected(Some(2), "Other"), now);
        assert!(
            matches!(state(&p, 2), Some(EntryState::Rejected { code, .. }) if code == "Throttled")
        );
    }

    #[test]
    fn an_answer_timeout_holds_the_report_until_the_next_connection() {
        let now = Instant::now();
        let mut p = publisher(Backlog::Latest);
        p.on_report(entry(1));
        p.on_connected();
        publish(&mut p, now);
        p.on_answer_timeout();
        assert_eq!(p.in_flight(), None);
        assert_eq!(
            p.next(now + TIMEOUT),
            None,
            "held until the next connection"
        );
        p.on_disconnected();
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
    }

    #[test]
    fn a_report_the_link_refuses_is_marked_locally_refused_and_not_in_flight() {
        let now = Instant::now();
        let mut p = publisher(Backlog::Latest);
        p.on_report(entry(1));
        p.on_connected();
        publish(&mut p, now);
        p.on_refused(Some(1), "too large");
        assert_eq!(p.in_flight(), None);
        assert!(
            matches!(state(&p, 1), Some(EntryState::Rejected { code, .. }) if code == "LocalRefused")
        );
        assert_eq!(p.next(now), None);
    }

    #[test]
    fn the_memory_outbox_keeps_the_newest_reports_when_the_spool_cannot_write() {
        let now = Instant::now();
        let mut p = publisher(Backlog::All);
        p.spool.as_mut().unwrap().fail_writes = true;
        for id in 1..=6 {
            p.on_report(entry(id));
        }
        assert_eq!(
            p.memory.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        assert_eq!(p.spool_status().dropped, 2);
        // Reports still go out from memory and leave it on their answer.
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(3));
        p.on_answer(true, &accepted(3), now);
        assert_eq!(p.memory.len(), 3);
        // Once the disk takes writes again, a new report is spooled; the memory outbox is
        // flushed only while ids keep increasing (today's rule: older ids stay in memory).
        p.spool.as_mut().unwrap().fail_writes = false;
        p.on_report(entry(7));
        assert_eq!(state(&p, 7), Some(EntryState::Pending));
        assert_eq!(
            p.memory.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        p.pace_elapsed();
        assert_eq!(
            publish(&mut p, now),
            Some(4),
            "memory and spool together, oldest first"
        );
    }

    #[test]
    fn without_a_spool_reports_are_kept_in_memory_and_published_latest_first() {
        let now = Instant::now();
        let mut p: Publisher<FakeSpool> = Publisher::new(
            Settings {
                backlog: Backlog::Latest,
                pace: PACE,
                answer_timeout: TIMEOUT,
                format: report::Format::Json,
            },
            None,
        );
        for id in 1..=3 {
            p.on_report(entry(id));
        }
        assert_eq!(p.pending(), 3);
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(3));
        assert_eq!(p.pending(), 1, "older memory reports superseded (dropped)");
        p.on_answer(true, &accepted(3), now);
        assert_eq!(p.spool_status().pending, 0);
    }

    #[test]
    fn reports_kept_in_memory_stay_there_once_the_spool_writes_again_as_their_ids_are_older() {
        let mut p = publisher(Backlog::Latest);
        p.spool.as_mut().unwrap().fail_writes = true;
        p.on_report(entry(1));
        p.on_report(entry(2));
        p.spool.as_mut().unwrap().fail_writes = false;
        // 3 is spooled first, then the flush of 1 and 2 is refused (ids must increase), so they
        // stay in memory: today's behaviour, kept (the flush can only ever move newer ids).
        p.on_report(entry(3));
        assert_eq!(p.memory.len(), 2);
        assert_eq!(p.spool_error_logged, None);
    }

    #[test]
    fn counters_are_re_baselined_after_a_long_gap_between_samples() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut gap = SampleGap::new(Duration::from_secs(10));
        assert_eq!(gap.on_sample(t0), None, "the first sample is the baseline");
        assert_eq!(gap.on_sample(t0 + Duration::from_secs(10)), None);
        // Limit: max(3 × 10 s, 10 s + 60 s) = 70 s.
        assert_eq!(gap.on_sample(t0 + Duration::from_secs(80)), None);
        assert_eq!(
            gap.on_sample(t0 + Duration::from_secs(151)),
            Some(Duration::from_secs(71))
        );
        // A clock stepped back is no gap.
        assert_eq!(gap.on_sample(t0), None);
        let mut slow = SampleGap::new(Duration::from_secs(300));
        slow.on_sample(t0);
        assert_eq!(slow.on_sample(t0 + Duration::from_secs(900)), None);
        assert!(slow.on_sample(t0 + Duration::from_secs(1801)).is_some());
    }
}

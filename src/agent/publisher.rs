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
//! - one report in flight at a time; its answer (matched by `reportId`) acks or rejects it. Only
//!   the report in flight, or one already offered on this connection, can be settled: an answer
//!   naming any other report (another pending one, an unknown id) is ignored and counted;
//! - `backlog = "latest"`: the newest pending report is published and older pending ones become
//!   superseded history; `"all"`: the backlog goes oldest first, one per `drain_interval`
//!   (`[spool] drain_interval_secs`), and a report made while connected goes out when it is made,
//!   ahead of the backlog;
//! - a report without an answer after `answer_timeout_secs` is published again on the same
//!   connection, at most [`MAX_ANSWER_RETRIES`] times; then it is held until the next connection;
//! - a rejected report is logged once per distinct `ErrorCode` (at most
//!   [`MAX_LOGGED_REJECTION_CODES`] codes; further new codes are counted), kept in the spool as
//!   history and never published again;
//! - reports the spool could not take wait in the memory outbox; once the spool writes again,
//!   they go to it first, in order, then the new report;
//! - every string from an answer is escaped and bounded ([`crate::text`]) before it is logged.
//!
//! Besides the publisher, [`SampleGap`] decides when counters are re-baselined after an outage of
//! the agent itself (suspend, stall): a long gap between two samples.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::report::{self, outcome};
use crate::spool::{self, record, Appended, Backlog, Entry, EntryState, Spool, Stats};
use crate::status::SpoolStatus;
use crate::text::untrusted;

/// The publisher logs as the agent loop did before it had its own module, so log lines keep
/// their target (`defender_agent::agent`).
const LOG_TARGET: &str = "defender_agent::agent";

/// In-memory outbox used only while the spool cannot be written (disk full, read-only): the
/// newest few reports, so the agent keeps reporting; oldest dropped first.
pub const MEMORY_OUTBOX_CAPACITY: usize = 4;

/// Distinct rejection `ErrorCode`s remembered, each logged once as an error; a further new code
/// is counted and logged once as "another code". Bounds what a stream of hostile answers with
/// ever new codes can take in memory and in the log.
pub const MAX_LOGGED_REJECTION_CODES: usize = 16;

/// Ids offered on the current connection that an answer may settle, the newest kept: a late
/// answer for a report published a few reports ago (after a timeout) still counts.
pub const OFFERED_REMEMBERED: usize = 16;

/// How often a report whose answer did not come in time is published again on the same
/// connection before it is held until the next one (4 publishes in all).
pub const MAX_ANSWER_RETRIES: u32 = 3;

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

/// How the publisher behaves (from `[spool]` and `[mqtt]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Which pending report goes first after an outage.
    pub backlog: Backlog,
    /// `backlog = "all"`: the pause between two reports of the backlog (a new report made while
    /// connected does not wait for it).
    pub drain_interval: Duration,
    /// How long an answer may take before the report is published again.
    pub answer_timeout: Duration,
    /// The format answers arrive in (the report format).
    pub format: report::Format,
}

/// The report in flight: published, answer not yet received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    id: u64,
    deadline: Instant,
    /// Made while connected and published at once (not a backlog report): its answer does not
    /// start the backlog's drain pause.
    fresh: bool,
}

/// What an answer did, for the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The report it was for.
    pub id: u64,
    /// Accepted, or rejected with the broker's code and message (cut to the spool's bounds,
    /// [`record::MAX_CODE_BYTES`] and [`record::MAX_MESSAGE_BYTES`]).
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
    /// Ids offered on this connection, newest last (at most [`OFFERED_REMEMBERED`]): with the
    /// report in flight, the only reports an answer may settle.
    offered: VecDeque<u64>,
    /// The newest report, made while connected and not yet offered: it goes out on time, ahead
    /// of a backlog and past its drain pause (`backlog = "all"`).
    fresh: Option<u64>,
    /// The report whose answer timed out last on this connection, and how often in a row.
    timeouts: Option<(u64, u32)>,
    /// Ids whose answer timed out more than [`MAX_ANSWER_RETRIES`] times: not offered again
    /// before the next connection.
    held: HashSet<u64>,
    /// `backlog = "all"`: no backlog report before this instant.
    next_drain_at: Option<Instant>,
    /// `ErrorCode`s already logged as an error, escaped and bounded (later ones are debug lines);
    /// at most [`MAX_LOGGED_REJECTION_CODES`].
    logged_rejections: HashSet<String>,
    /// Rejections with a new code once `logged_rejections` was full.
    other_rejection_codes: u64,
    /// Answers for reports that were neither in flight nor offered on this connection.
    ignored_answers: u64,
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
            offered: VecDeque::new(),
            fresh: None,
            timeouts: None,
            held: HashSet::new(),
            next_drain_at: None,
            logged_rejections: HashSet::new(),
            other_rejection_codes: 0,
            ignored_answers: 0,
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

    /// `backlog = "all"`: when the next backlog report may go (call
    /// [`Publisher::drain_elapsed`] then).
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.next_drain_at
    }

    /// Answers ignored so far because they named a report neither in flight nor offered on
    /// their connection.
    pub fn ignored_answers(&self) -> u64 {
        self.ignored_answers
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
    /// What the memory outbox holds goes to the spool first, in order (the spool takes only
    /// increasing ids), then the new report.
    pub fn on_report(&mut self, entry: Entry) {
        // Made while connected: it goes out on time, ahead of a backlog being drained.
        self.fresh = self.connected.then_some(entry.id);
        let Some(spool) = self.spool.as_mut() else {
            self.keep_in_memory(entry);
            return;
        };
        let mut flushed = Vec::new();
        let appended = flush_memory(spool, &mut self.memory, &mut flushed)
            .and_then(|()| spool.append(entry.clone()));
        for (id, bytes) in flushed {
            info!(target: LOG_TARGET, id, bytes, "Report spooled.");
        }
        match appended {
            Ok(appended) => {
                info!(target: LOG_TARGET, id = entry.id, bytes = entry.payload.len(), "Report spooled.");
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
            }
            Err(e) => {
                let cause = e.to_string();
                if self.spool_error_logged.as_deref() != Some(cause.as_str()) {
                    error!(target: LOG_TARGET, error = %cause, "Cannot write the report to the spool; keeping it in memory and reporting on.");
                    self.spool_error_logged = Some(cause);
                }
                self.keep_in_memory(entry);
            }
        }
    }

    fn keep_in_memory(&mut self, entry: Entry) {
        if self.memory.len() >= MEMORY_OUTBOX_CAPACITY {
            self.memory.pop_front();
            self.dropped += 1;
        }
        self.memory.push_back(entry);
    }

    /// The link is up: held reports may go again, and only reports offered on this connection
    /// can be settled by an answer.
    pub fn on_connected(&mut self) {
        self.connected = true;
        self.held.clear();
        self.offered.clear();
        self.timeouts = None;
        self.next_drain_at = None;
    }

    /// The link is down: the report in flight is forgotten (it stays pending and goes again).
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.in_flight = None;
        self.fresh = None;
    }

    /// `backlog = "all"`: the drain deadline has passed.
    pub fn drain_elapsed(&mut self) {
        self.next_drain_at = None;
    }

    /// The report to hand to the link now, if any: connected, nothing in flight, and a pending
    /// report not held, chosen by the backlog policy — under `all`, a report made while connected
    /// first, else the oldest once the drain pause is over. Under `latest`, older pending reports
    /// become superseded history here. Call [`Publisher::offered`] when the link took it.
    pub fn next(&mut self, now: Instant) -> Option<Entry> {
        if !self.connected || self.in_flight.is_some() {
            return None;
        }
        let fresh = match self.settings.backlog {
            Backlog::All => self.fresh_entry(),
            Backlog::Latest => None,
        };
        let entry = match fresh {
            Some(e) => e,
            None if self.next_drain_at.is_some_and(|at| now < at) => return None,
            None => self.next_candidate()?,
        };
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

    /// The reports that may be offered: the spool's pending ones and the memory outbox, without
    /// the held ids.
    fn candidates(&self) -> impl Iterator<Item = &Entry> + '_ {
        let spooled = self
            .spool
            .iter()
            .flat_map(|s| s.entries())
            .filter(|(_, st)| matches!(st, EntryState::Pending))
            .map(|(e, _)| e);
        spooled
            .chain(self.memory.iter())
            .filter(|e| !self.held.contains(&e.id))
    }

    /// The next report to offer, by backlog policy.
    fn next_candidate(&self) -> Option<Entry> {
        self.settings.backlog.choose(self.candidates()).cloned()
    }

    /// The report made while connected, when it is still to be offered.
    fn fresh_entry(&self) -> Option<Entry> {
        let id = self.fresh?;
        self.candidates().find(|e| e.id == id).cloned()
    }

    /// The link took report `id` at `now`: it is in flight until its answer or the timeout.
    pub fn offered(&mut self, id: u64, now: Instant) {
        debug!(target: LOG_TARGET, id, "Report offered to the link.");
        let fresh = self.fresh == Some(id);
        if fresh {
            self.fresh = None;
        }
        self.in_flight = Some(InFlight {
            id,
            deadline: now + self.settings.answer_timeout,
            fresh,
        });
        if !self.offered.contains(&id) {
            if self.offered.len() >= OFFERED_REMEMBERED {
                self.offered.pop_front();
            }
            self.offered.push_back(id);
        }
    }

    /// Whether an answer for `id` may settle it: the report in flight, or one offered on this
    /// connection.
    fn may_settle(&self, id: u64) -> bool {
        self.in_flight() == Some(id) || self.offered.contains(&id)
    }

    /// An answer on the accepted (`accepted_topic`) or rejected topic: acks or rejects the report
    /// it names (a rejection without `reportId` is for the report in flight) when that report is
    /// in flight or was offered on this connection. `None` when the answer is unreadable, names
    /// no report or another report: nothing changed.
    pub fn on_answer(
        &mut self,
        accepted_topic: bool,
        payload: &[u8],
        now: Instant,
    ) -> Option<Answered> {
        let parsed = match outcome::parse(payload, self.settings.format) {
            Ok(o) => o,
            Err(e) => {
                warn!(target: LOG_TARGET, error = %untrusted(&e.to_string()), "Unreadable answer from Device Defender; ignored.");
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
        if !self.may_settle(id) {
            self.ignored_answers += 1;
            if self.ignored_answers == 1 {
                warn!(target: LOG_TARGET, id, "Answer for a report that is not in flight on this connection; ignored. Further ones are counted, not logged.");
            } else {
                debug!(target: LOG_TARGET, id, ignored = self.ignored_answers, "Answer for a report not in flight; ignored.");
            }
            return None;
        }
        let status = match parsed.status {
            outcome::Status::Accepted => {
                debug!(target: LOG_TARGET, id, "Report accepted.");
                if let Some(s) = self.spool.as_mut() {
                    if let Err(e) = s.ack(id) {
                        warn!(target: LOG_TARGET, error = %e, id, "Cannot remove the accepted report from the spool.");
                    }
                }
                self.memory.retain(|e| e.id != id);
                outcome::Status::Accepted
            }
            outcome::Status::Rejected { code, message } => {
                self.log_rejection(id, &code, &message);
                if let Some(s) = self.spool.as_mut() {
                    if let Err(e) = s.reject(id, &code, &message) {
                        warn!(target: LOG_TARGET, error = %e, id, "Cannot mark the rejected report in the spool.");
                    }
                }
                self.memory.retain(|e| e.id != id);
                outcome::Status::Rejected {
                    code: record::truncate_utf8(&code, record::MAX_CODE_BYTES).to_owned(),
                    message: record::truncate_utf8(&message, record::MAX_MESSAGE_BYTES).to_owned(),
                }
            }
        };
        if let Some(f) = self.in_flight.filter(|f| f.id == id) {
            self.in_flight = None;
            if self.timeouts.is_some_and(|(t, _)| t == id) {
                self.timeouts = None;
            }
            if self.settings.backlog == Backlog::All && !f.fresh {
                self.next_drain_at = Some(now + self.settings.drain_interval);
            }
        }
        Some(Answered { id, status })
    }

    /// Logs a rejection: an error once per distinct code (at most
    /// [`MAX_LOGGED_REJECTION_CODES`] of them, then once for any other), debug lines after.
    fn log_rejection(&mut self, id: u64, code: &str, message: &str) {
        let code = untrusted(code).to_string();
        if self.logged_rejections.contains(&code) {
            debug!(target: LOG_TARGET, id, code = %code, "Report rejected again.");
        } else if self.logged_rejections.len() < MAX_LOGGED_REJECTION_CODES {
            error!(target: LOG_TARGET, id, code = %code, message = %untrusted(message), "Report rejected; kept in the spool for inspection, not retried.");
            self.logged_rejections.insert(code);
        } else {
            self.other_rejection_codes += 1;
            if self.other_rejection_codes == 1 {
                error!(target: LOG_TARGET, id, code = %code, message = %untrusted(message), codes = MAX_LOGGED_REJECTION_CODES,
                    "Report rejected with yet another code; kept in the spool, not retried. Further new codes are counted, not logged.");
            } else {
                debug!(target: LOG_TARGET, id, code = %code, other_codes = self.other_rejection_codes, "Report rejected with another code.");
            }
        }
    }

    /// The answer deadline passed: the report in flight is published again (at most
    /// [`MAX_ANSWER_RETRIES`] times in a row on this connection), then held until the next
    /// connection.
    pub fn on_answer_timeout(&mut self) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        let timeouts = match self.timeouts {
            Some((id, n)) if id == f.id => n + 1,
            _ => 1,
        };
        if timeouts <= MAX_ANSWER_RETRIES {
            warn!(target: LOG_TARGET, id = f.id, retry = timeouts, of = MAX_ANSWER_RETRIES, "No answer from Device Defender in time; publishing the report again.");
            self.timeouts = Some((f.id, timeouts));
            // A report made while connected stays on time; a backlog one goes on as the oldest.
            if f.fresh && self.fresh.is_none() {
                self.fresh = Some(f.id);
            }
        } else {
            warn!(target: LOG_TARGET, id = f.id, "No answer from Device Defender in time; the report is retried on the next connection.");
            self.timeouts = None;
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

/// Moves what the memory outbox holds to `spool`, oldest first; stops at the first failure (the
/// rest stays in memory, in order). `moved` gets the ids and sizes moved.
fn flush_memory<O: Outbox>(
    spool: &mut O,
    memory: &mut VecDeque<Entry>,
    moved: &mut Vec<(u64, usize)>,
) -> Result<(), spool::Error> {
    while let Some(e) = memory.front() {
        spool.append(e.clone())?;
        moved.push((e.id, e.payload.len()));
        memory.pop_front();
    }
    Ok(())
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
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// An in-memory outbox with the spool's rules (ids increase, ack removes, reject keeps);
    /// `fail_writes` makes every write fail as a full disk does.
    #[derive(Default)]
    struct FakeSpool {
        entries: BTreeMap<u64, (Entry, EntryState)>,
        last_id: Option<u64>,
        fail_writes: bool,
        /// Appends that still succeed before every append fails (a disk filling up again).
        fail_after: Option<usize>,
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
            if self.fail_writes || self.fail_after == Some(0) {
                return Err(disk_full());
            }
            if let Some(n) = self.fail_after.as_mut() {
                *n -= 1;
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

    const DRAIN: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn publisher(backlog: Backlog) -> Publisher<FakeSpool> {
        Publisher::new(
            Settings {
                backlog,
                drain_interval: DRAIN,
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
    fn after_an_outage_backlog_all_publishes_every_report_oldest_first_paced_by_the_drain_interval()
    {
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
            assert_eq!(
                p.next(now),
                None,
                "paced: no publish before the drain interval"
            );
            assert_eq!(p.drain_deadline(), Some(now + DRAIN));
            now += DRAIN;
            p.drain_elapsed();
        }
        assert_eq!(sent, vec![1, 2, 3, 4]);
        assert_eq!(p.spool_status().superseded, 0);
    }

    #[test]
    fn backlog_all_drains_at_the_drain_interval_not_at_the_report_interval() {
        // The next backlog report waits the drain interval after an answer, not a whole report
        // interval (issue 16, defect 3; the in-process regression test is in agent::tests).
        let start = Instant::now();
        let mut p = publisher(Backlog::All);
        for id in 1..=40 {
            p.on_report(entry(id));
        }
        p.on_connected();
        let mut now = start;
        let mut sent = 0;
        while let Some(id) = publish(&mut p, now) {
            p.on_answer(true, &accepted(id), now + Duration::from_millis(200));
            sent += 1;
            now = p.drain_deadline().unwrap();
            p.drain_elapsed();
        }
        assert_eq!(sent, 40);
        assert_eq!(p.pending(), 0);
        assert!(
            now - start <= Duration::from_secs(48),
            "drained in {:?}",
            now - start
        );
    }

    #[test]
    fn backlog_all_publishes_a_new_report_on_time_ahead_of_the_backlog_and_its_pause() {
        let start = Instant::now();
        let mut p = publisher(Backlog::All);
        for id in 1..=3 {
            p.on_report(entry(id));
        }
        p.on_connected();
        assert_eq!(publish(&mut p, start), Some(1));
        // A new report while the backlog's first report is in flight: next after its answer,
        // without the drain pause, ahead of the older ones.
        p.on_report(entry(10));
        p.on_answer(true, &accepted(1), start);
        assert_eq!(p.drain_deadline(), Some(start + DRAIN));
        assert_eq!(
            publish(&mut p, start),
            Some(10),
            "the new report goes out on time"
        );
        // Its answer does not delay the backlog further; the backlog goes on oldest first.
        p.on_answer(true, &accepted(10), start);
        assert_eq!(p.drain_deadline(), Some(start + DRAIN));
        assert_eq!(p.next(start), None);
        p.drain_elapsed();
        assert_eq!(publish(&mut p, start + DRAIN), Some(2));
        p.on_answer(true, &accepted(2), start + DRAIN);
        // A report made while the link is down joins the backlog in order.
        p.on_disconnected();
        p.on_report(entry(11));
        p.on_connected();
        assert_eq!(publish(&mut p, start + DRAIN), Some(3));
        p.on_answer(true, &accepted(3), start + DRAIN);
        p.drain_elapsed();
        assert_eq!(publish(&mut p, start + DRAIN * 2), Some(11));
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
    fn an_answer_for_another_pending_report_does_not_settle_it() {
        // Regression (issue 16, defect 1): an answer naming another pending report acked it
        // although it had never been published.
        let now = Instant::now();
        let mut p = publisher(Backlog::All);
        for id in 1..=4 {
            p.on_report(entry(id));
        }
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        assert_eq!(p.on_answer(true, &accepted(2), now), None);
        assert_eq!(p.on_answer(false, &rejected(Some(3), "Forged"), now), None);
        assert_eq!(
            state(&p, 2),
            Some(EntryState::Pending),
            "report 2 is still pending"
        );
        assert_eq!(
            state(&p, 3),
            Some(EntryState::Pending),
            "report 3 is still pending"
        );
        assert_eq!(p.ignored_answers(), 2);
        assert_eq!(
            p.in_flight(),
            Some(1),
            "still waiting for report 1's answer"
        );
        assert_eq!(p.drain_deadline(), None);
        assert_eq!(p.next(now), None);
        // The report in flight is settled by its own answer; then the next one goes.
        assert!(p.on_answer(true, &accepted(1), now).is_some());
        p.drain_elapsed();
        assert_eq!(publish(&mut p, now), Some(2));
    }

    #[test]
    fn an_answer_for_a_report_offered_on_a_previous_connection_does_not_settle_it() {
        let now = Instant::now();
        let mut p = publisher(Backlog::All);
        p.on_report(entry(1));
        p.on_report(entry(2));
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        p.on_disconnected();
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        p.on_answer(true, &accepted(1), now);
        p.drain_elapsed();
        assert_eq!(publish(&mut p, now), Some(2));
        p.on_disconnected();
        p.on_connected();
        // 2 was offered on the previous connection only: a late answer is not trusted, 2 goes
        // again and its answer on this connection settles it.
        assert_eq!(p.on_answer(true, &accepted(2), now), None);
        assert_eq!(state(&p, 2), Some(EntryState::Pending));
        assert_eq!(publish(&mut p, now), Some(2));
        assert!(p.on_answer(true, &accepted(2), now).is_some());
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn an_answer_for_an_unknown_report_id_changes_nothing_and_is_counted() {
        let now = Instant::now();
        let mut p = publisher(Backlog::Latest);
        p.on_report(entry(1));
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        assert_eq!(p.on_answer(true, &accepted(99), now), None);
        assert_eq!(p.ignored_answers(), 1);
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
        p.drain_elapsed();
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
    fn an_answer_timeout_publishes_the_report_again_on_the_same_connection() {
        // Regression (issue 16, defect 9): a report whose answer never came waited for the next
        // connection.
        let now = Instant::now();
        let mut p = publisher(Backlog::All);
        p.on_report(entry(1));
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        p.on_answer_timeout();
        assert_eq!(p.in_flight(), None);
        assert_eq!(
            publish(&mut p, now + TIMEOUT),
            Some(1),
            "published again on the same connection"
        );
        // Its late first answer (or the new one) settles it.
        assert!(p.on_answer(true, &accepted(1), now + TIMEOUT).is_some());
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn a_report_whose_answers_keep_timing_out_is_held_until_the_next_connection() {
        let now = Instant::now();
        let mut p = publisher(Backlog::Latest);
        p.on_report(entry(1));
        p.on_connected();
        publish(&mut p, now);
        for _ in 0..MAX_ANSWER_RETRIES {
            p.on_answer_timeout();
            assert_eq!(publish(&mut p, now), Some(1));
        }
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
    fn a_new_report_whose_answer_timed_out_goes_again_past_the_backlog_pause() {
        let now = Instant::now();
        let mut p = publisher(Backlog::All);
        p.on_report(entry(1));
        p.on_report(entry(2));
        p.on_connected();
        assert_eq!(publish(&mut p, now), Some(1));
        p.on_report(entry(5));
        p.on_answer(true, &accepted(1), now);
        assert_eq!(publish(&mut p, now), Some(5));
        p.on_answer_timeout();
        assert_eq!(publish(&mut p, now + TIMEOUT / 2), Some(5));
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
        // Once the disk takes writes again, the memory outbox goes to the spool first, in
        // order, then the new report.
        p.spool.as_mut().unwrap().fail_writes = false;
        p.on_report(entry(7));
        for id in 4..=7 {
            assert_eq!(state(&p, id), Some(EntryState::Pending), "report {id}");
        }
        assert!(p.memory.is_empty());
        assert_eq!(publish(&mut p, now), Some(7), "the new report on time");
        p.on_answer(true, &accepted(7), now);
        p.drain_elapsed();
        assert_eq!(
            publish(&mut p, now),
            Some(4),
            "then the backlog, oldest first"
        );
    }

    #[test]
    fn without_a_spool_reports_are_kept_in_memory_and_published_latest_first() {
        let now = Instant::now();
        let mut p: Publisher<FakeSpool> = Publisher::new(
            Settings {
                backlog: Backlog::Latest,
                drain_interval: DRAIN,
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
    fn reports_kept_in_memory_are_spooled_first_in_order_once_the_spool_writes_again() {
        // Regression (issue 16, defect 6): the new report was spooled first, and the older ones
        // in memory were then refused as not increasing and lost.
        let mut p = publisher(Backlog::Latest);
        p.spool.as_mut().unwrap().fail_writes = true;
        p.on_report(entry(1));
        p.on_report(entry(2));
        p.spool.as_mut().unwrap().fail_writes = false;
        p.on_report(entry(3));
        assert!(p.memory.is_empty());
        let spooled: Vec<u64> = p.spool().unwrap().entries.keys().copied().collect();
        assert_eq!(spooled, vec![1, 2, 3]);
        assert_eq!(p.spool_error_logged, None);
        assert_eq!(p.spool_status().dropped, 0);
    }

    #[test]
    fn a_flush_that_fails_again_keeps_the_memory_outbox_in_order_with_the_new_report_last() {
        let mut p = publisher(Backlog::All);
        p.spool.as_mut().unwrap().fail_writes = true;
        p.on_report(entry(1));
        p.on_report(entry(2));
        p.on_report(entry(3));
        assert_eq!(
            p.memory.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        p.spool.as_mut().unwrap().fail_after = Some(1);
        p.spool.as_mut().unwrap().fail_writes = false;
        p.on_report(entry(4));
        assert_eq!(state(&p, 1), Some(EntryState::Pending));
        assert_eq!(
            p.memory.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        p.spool.as_mut().unwrap().fail_after = None;
        p.on_report(entry(5));
        let spooled: Vec<u64> = p.spool().unwrap().entries.keys().copied().collect();
        assert_eq!(spooled, vec![1, 2, 3, 4, 5]);
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

    #[test]
    fn rejection_codes_are_remembered_up_to_a_bound_and_the_rest_only_counted() {
        // Regression (issue 16, defect 5): every distinct ErrorCode was kept, whole.
        let now = Instant::now();
        let mut p = publisher(Backlog::All);
        p.on_connected();
        let n = MAX_LOGGED_REJECTION_CODES as u64 + 10;
        for id in 1..=n {
            p.on_report(entry(id));
            assert_eq!(publish(&mut p, now), Some(id));
            let code = format!("Code{id}{}", "x".repeat(10_000));
            let a = p.on_answer(false, &rejected(Some(id), &code), now).unwrap();
            let outcome::Status::Rejected { code, .. } = a.status else {
                panic!("{a:?}")
            };
            assert!(code.len() <= record::MAX_CODE_BYTES);
        }
        assert_eq!(p.logged_rejections.len(), MAX_LOGGED_REJECTION_CODES);
        assert!(p
            .logged_rejections
            .iter()
            .all(|c| c.len() < crate::text::MAX_LOGGED_CHARS + 32));
        assert_eq!(p.other_rejection_codes, 10);
        assert_eq!(p.spool_status().rejected, n);
    }

    /// One step of a hostile run: the link and Device Defender's stand-in misbehaving.
    #[derive(Debug, Clone)]
    enum Step {
        Report,
        Connect,
        Disconnect,
        Publish,
        Timeout,
        /// An answer on the accepted or rejected topic naming `target`.
        Answer {
            accepted_topic: bool,
            accepted: bool,
            target: Target,
            code: String,
        },
        /// Bytes that are no JSON answer: CBOR on the JSON topic, garbage.
        Raw(Vec<u8>),
    }

    #[derive(Debug, Clone)]
    enum Target {
        InFlight,
        /// The n-th pending report (modulo their number).
        Pending(usize),
        Unknown(u64),
        Missing,
    }

    fn hostile_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z]{1,12}",
            any::<String>(),
            Just("Bad\nINFO Report accepted. id=424242 FORGED\r\u{1b}[2J\u{202e}".to_string()),
            (any::<String>(), 1usize..3000).prop_map(|(s, n)| s
                .repeat(n)
                .chars()
                .take(20_000)
                .collect()),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        let target = prop_oneof![
            Just(Target::InFlight),
            (0usize..8).prop_map(Target::Pending),
            any::<u64>().prop_map(Target::Unknown),
            Just(Target::Missing),
        ];
        // {"reportId": 5, "status": "ACCEPTED"} as CBOR.
        let cbor = vec![
            0xa2, 0x68, b'r', b'e', b'p', b'o', b'r', b't', b'I', b'd', 0x05, 0x66, b's', b't',
            b'a', b't', b'u', b's', 0x68, b'A', b'C', b'C', b'E', b'P', b'T', b'E', b'D',
        ];
        prop_oneof![
            3 => Just(Step::Report),
            1 => Just(Step::Connect),
            1 => Just(Step::Disconnect),
            3 => Just(Step::Publish),
            1 => Just(Step::Timeout),
            4 => (any::<bool>(), any::<bool>(), target, hostile_text()).prop_map(
                |(accepted_topic, accepted, target, code)| Step::Answer { accepted_topic, accepted, target, code }
            ),
            1 => prop_oneof![Just(cbor), proptest::collection::vec(any::<u8>(), 0..64)].prop_map(Step::Raw),
        ]
    }

    fn pending_ids(p: &Publisher<FakeSpool>) -> BTreeSet<u64> {
        p.candidates()
            .map(|e| e.id)
            .chain(p.held.iter().copied())
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn hostile_answers_settle_only_reports_offered_on_their_connection(
            steps in proptest::collection::vec(step(), 1..60),
            all in any::<bool>(),
        ) {
            let now = Instant::now();
            let mut p = publisher(if all { Backlog::All } else { Backlog::Latest });
            let mut next_id = 1;
            // Every id offered on the current connection (the publisher remembers a bounded part).
            let mut offered = BTreeSet::new();
            for step in steps {
                let before = pending_ids(&p);
                let in_flight = p.in_flight();
                let mut answered = false;
                match step {
                    Step::Report => {
                        p.on_report(entry(next_id));
                        next_id += 1;
                    }
                    Step::Connect => {
                        p.on_connected();
                        offered.clear();
                    }
                    Step::Disconnect => p.on_disconnected(),
                    Step::Publish => {
                        p.drain_elapsed();
                        if let Some(id) = publish(&mut p, now) {
                            offered.insert(id);
                        }
                    }
                    Step::Timeout => p.on_answer_timeout(),
                    Step::Answer { accepted_topic, accepted, target, code } => {
                        answered = true;
                        let id = match target {
                            Target::InFlight => in_flight,
                            Target::Pending(n) => before.iter().nth(n % before.len().max(1)).copied(),
                            Target::Unknown(id) => Some(id),
                            Target::Missing => None,
                        };
                        let id = id.map_or(String::new(), |id| format!(r#""reportId":{id},"#));
                        let body = if accepted {
                            format!(r#"{{{id}"status":"ACCEPTED"}}"#)
                        } else {
                            let details = serde_json::json!({"ErrorCode": code, "ErrorMessage": code});
                            format!(r#"{{{id}"status":"REJECTED","statusDetails":{details}}}"#)
                        };
                        if let Some(a) = p.on_answer(accepted_topic, body.as_bytes(), now) {
                            if let outcome::Status::Rejected { code, message } = &a.status {
                                prop_assert!(code.len() <= record::MAX_CODE_BYTES);
                                prop_assert!(message.len() <= record::MAX_MESSAGE_BYTES);
                            }
                        }
                    }
                    Step::Raw(bytes) => {
                        answered = true;
                        prop_assert_eq!(p.on_answer(false, &bytes, now), None);
                    }
                }
                if answered {
                    let after = pending_ids(&p);
                    for id in before.difference(&after) {
                        prop_assert!(
                            offered.contains(id) || in_flight == Some(*id),
                            "report {} settled without being offered on this connection", id
                        );
                    }
                }
                prop_assert!(p.logged_rejections.len() <= MAX_LOGGED_REJECTION_CODES);
                prop_assert!(p.memory.len() <= MEMORY_OUTBOX_CAPACITY);
                prop_assert!(p.offered.len() <= OFFERED_REMEMBERED);
            }
        }
    }
}

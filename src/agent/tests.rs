//! The agent in-process: assembled from parts with a scripted sampler, a link played by the test
//! (the other ends of the [`LinkHandle`] channels) and a real spool in a temporary directory, on
//! tokio's paused clock, so an outage of seconds or minutes takes no time and no sleep polls a log.
//! The end-to-end tests against a real broker and the real binary are in `tests/integration`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::sample::Sample;
use crate::spool::{self, EntryState, Inspection};

/// Samples nothing (an empty `Sample`) and counts how often it was asked.
#[derive(Default)]
struct Scripted {
    samples: Mutex<u64>,
}

impl Sampler for Scripted {
    fn sample(&self) -> (Sample, Vec<collect::Error>) {
        if let Ok(mut n) = self.samples.lock() {
            *n += 1;
        }
        (Sample::default(), Vec::new())
    }
    fn is_immediate(&self) -> bool {
        true
    }
}

/// Everything the agent logged, as the daemon's log lines would read.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The ids logged as spooled ("Report spooled." id=N).
    fn spooled_ids(&self) -> Vec<u64> {
        self.text()
            .lines()
            .filter(|l| l.contains("Report spooled."))
            .filter_map(|l| {
                l.split("id=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }
}

thread_local! {
    /// The log of the harness running on this thread (the test's current-thread runtime).
    static CAPTURED: std::cell::RefCell<Option<Log>> = const { std::cell::RefCell::new(None) };
}

/// Routes this thread's events into a [`Log`] until dropped. One global subscriber for every
/// test, writing to the thread's own log: a thread-local subscriber per test (`set_default`)
/// lost events now and then when tests ran in parallel, as tracing's callsite interest is
/// shared by every dispatcher and rebuilt whenever one comes or goes.
struct Capture;

impl Capture {
    fn start(log: &Log) -> Capture {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(|| ThreadLog)
                .finish();
            // Invariant: nothing else in the library's tests installs a global subscriber.
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        CAPTURED.with(|c| *c.borrow_mut() = Some(log.clone()));
        Capture
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        CAPTURED.with(|c| *c.borrow_mut() = None);
    }
}

/// The writer of the global test subscriber: the current thread's captured log, if any.
struct ThreadLog;

impl std::io::Write for ThreadLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.with(|c| {
            if let Some(log) = c.borrow_mut().as_mut() {
                let _ = log.write(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The agent loop running in a task, the test holding the link's ends.
struct Harness {
    /// What the agent asks the link to do.
    commands: mpsc::Receiver<LinkCommand>,
    /// What the "link" tells the agent.
    events: Option<mpsc::Sender<LinkEvent>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    state: PathBuf,
    log: Log,
    _log_guard: Capture,
    _dir: tempfile::TempDir,
}

/// Reports every second, answers due within 3 s: the daemon tests' configuration.
fn config_text(state: &std::path::Path, backlog: &str) -> String {
    config_with(state, 1, backlog)
}

/// [`config_text`] with reports (and samples) every `report_secs`; more `[spool]` keys may be
/// appended (it is the last table).
fn config_with(state: &std::path::Path, report_secs: u64, backlog: &str) -> String {
    format!(
        "thing_name = \"gw-inproc\"\nstate_dir = {state:?}\nshutdown_timeout_secs = 5\n\
         [collect]\nsample_interval_secs = {report_secs}\n\
         [report]\ninterval_secs = {report_secs}\nstartup_jitter_secs = 0\n\
         [mqtt]\nendpoint = \"localhost\"\ntls = false\nanswer_timeout_secs = 3\n\
         [spool]\nbacklog = \"{backlog}\"\n",
        state = state.display().to_string(),
    )
}

impl Harness {
    /// Builds the parts from a config with `backlog`, replaces the sampler and the link, and
    /// starts the agent loop. Logs of this test's thread (the whole current-thread runtime) are
    /// captured.
    fn start(backlog: &str) -> Harness {
        Harness::start_with(backlog, |_| {})
    }

    /// [`Harness::start`], with a last change to the parts before the agent is assembled.
    fn start_with(backlog: &str, adjust: impl FnOnce(&mut Parts)) -> Harness {
        Harness::launch(|state| config_text(state, backlog), |_| {}, adjust)
    }

    /// The agent with the config `config(state_dir)`; `prepare(state_dir)` runs before the
    /// parts are built (state files as a previous run left them), `adjust` after.
    fn launch(
        config: impl FnOnce(&std::path::Path) -> String,
        prepare: impl FnOnce(&std::path::Path),
        adjust: impl FnOnce(&mut Parts),
    ) -> Harness {
        let log = Log::default();
        let log_guard = Capture::start(&log);

        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = Config::parse(&config(&state), "test").unwrap();
        prepare(&state);
        let (command_tx, commands) = mpsc::channel(mqtt::COMMAND_CHANNEL_CAPACITY);
        let (events, event_rx) = mpsc::channel(mqtt::EVENT_CHANNEL_CAPACITY);
        let mut link = Some(LinkHandle {
            commands: command_tx,
            events: event_rx,
        });
        let link_token = CancellationToken::new();
        let mut parts = Parts::from_config(config, false, &link_token, &mut |_| {
            Ok(link.take().unwrap())
        })
        .unwrap();
        parts.sampler = Arc::new(Scripted::default());
        adjust(&mut parts);

        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let (_reload_tx, mut reload) = mpsc::channel(1);
            let opts = RunOptions::default();
            let ended = run_agent(Agent::new(parts), &opts, &stop, &mut reload, link_token).await;
            assert!(matches!(ended, Ended::Stopped));
        });
        Harness {
            commands,
            events: Some(events),
            shutdown,
            task,
            state,
            log,
            _log_guard: log_guard,
            _dir: dir,
        }
    }

    async fn event(&self, e: LinkEvent) {
        self.events.as_ref().unwrap().send(e).await.unwrap();
    }

    async fn connect(&self) {
        self.event(LinkEvent::Connected).await;
    }

    async fn disconnect(&self) {
        self.event(LinkEvent::Disconnected {
            cause: "broker gone".into(),
        })
        .await;
    }

    /// The id of the next report the agent publishes within `within` (paused time: the clock
    /// jumps to the agent's next timer whenever everything waits).
    async fn next_report(&mut self, within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.commands.recv()).await {
                Ok(Some(LinkCommand::PublishReport { id, payload })) => {
                    assert!(!payload.is_empty());
                    return Some(id);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// An answer with this payload on the accepted or the rejected topic.
    async fn answer_with(&self, accepted: bool, payload: String) {
        self.event(LinkEvent::Answer {
            accepted,
            payload: payload.into_bytes(),
        })
        .await;
    }

    /// Device Defender's answer for report `id`.
    async fn answer(&self, id: u64, accepted: bool) {
        let payload = if accepted {
            format!(
                r#"{{"thingName":"gw-inproc","reportId":{id},"status":"ACCEPTED","timestamp":1}}"#
            )
        } else {
            format!(
                r#"{{"thingName":"gw-inproc","reportId":{id},"status":"REJECTED","timestamp":1,"statusDetails":{{"ErrorCode":"InvalidPayload","ErrorMessage":"Malformed metrics report"}}}}"#
            )
        };
        self.event(LinkEvent::Answer {
            accepted,
            payload: payload.into_bytes(),
        })
        .await;
    }

    fn status(&self) -> Status {
        status::read(&self.state).unwrap()
    }

    fn spool(&self) -> Inspection {
        Spool::inspect(&spool::Settings::new(&self.state)).unwrap()
    }

    fn pending(&self) -> BTreeSet<u64> {
        self.spool()
            .entries
            .iter()
            .filter(|(_, s)| matches!(s, EntryState::Pending))
            .map(|(e, _)| e.id)
            .collect()
    }

    /// Stops the agent as SIGTERM does and waits for it.
    async fn stop(mut self) -> (Inspection, Log) {
        self.shutdown.cancel();
        self.events = None;
        (&mut self.task).await.unwrap();
        (self.spool(), self.log.clone())
    }
}

/// What [`outage`] saw.
struct Outage {
    /// Every id logged as spooled, to the end of the drain.
    spooled: Vec<u64>,
    /// Of those, the ones spooled before the link came back: the backlog.
    backlog: Vec<u64>,
    /// The ids published, in order (the first report, then everything after reconnecting).
    received: Vec<u64>,
    h: Harness,
}

/// Connects, has the first report accepted, cuts the link until four more are spooled, then
/// reconnects and answers everything published during `drain` (virtual time).
async fn outage(backlog: &str, drain: Duration) -> Outage {
    let mut h = Harness::start(backlog);
    h.connect().await;
    let first = h.next_report(Duration::from_secs(5)).await.unwrap();
    h.answer(first, true).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.log.text().contains("Report accepted."));
    h.disconnect().await;
    let before = h.log.spooled_ids().len();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(h.log.spooled_ids().len() >= before + 4, "{}", h.log.text());
    assert!(
        h.next_report(Duration::ZERO).await.is_none(),
        "nothing published while down"
    );
    let backlog_ids: Vec<u64> = h
        .log
        .spooled_ids()
        .into_iter()
        .filter(|id| *id > first)
        .collect();
    h.connect().await;
    let mut received = vec![first];
    let until = Instant::now() + drain;
    while let Some(id) = h.next_report(until - Instant::now()).await {
        received.push(id);
        h.answer(id, true).await;
    }
    let spooled = h.log.spooled_ids();
    Outage {
        spooled,
        backlog: backlog_ids,
        received,
        h,
    }
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_backlog_all_delivers_every_report_exactly_once_the_backlog_in_order() {
    let Outage {
        spooled,
        backlog,
        received,
        h,
    } = outage("all", Duration::from_secs(12)).await;
    let unique: BTreeSet<u64> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "duplicated: {received:?}");
    // The outage backlog goes out oldest first (reports made since go out on time, between).
    let backlog_order: Vec<u64> = received
        .iter()
        .copied()
        .filter(|id| backlog.contains(id))
        .collect();
    for w in backlog_order.windows(2) {
        assert!(w[0] < w[1], "backlog out of order: {received:?}");
    }
    // None lost: every spooled report was received or is still pending in the spool.
    let pending = h.pending();
    for id in &spooled {
        assert!(
            unique.contains(id) || pending.contains(id),
            "report {id} lost: received {received:?}, pending {pending:?}"
        );
    }
    // The outage backlog (at least 4 reports) was published, not just the newest.
    assert!(
        backlog.iter().all(|id| unique.contains(id)),
        "backlog {backlog:?}, received {received:?}"
    );
    assert!(received.len() >= 5, "received {received:?}");
    assert_eq!(h.status().spool.superseded, 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_backlog_latest_publishes_the_newest_and_counts_the_rest_superseded() {
    let Outage {
        spooled,
        received,
        h,
        ..
    } = outage("latest", Duration::from_secs(4)).await;
    for w in received.windows(2) {
        assert!(w[0] < w[1], "ids out of order or duplicated: {received:?}");
    }
    let status = h.status();
    assert!(
        status.spool.superseded >= 3,
        "superseded = {}; status {status:?}",
        status.spool.superseded
    );
    // The first report after the outage is newer than every report spooled during it.
    let first_after = received[1];
    let during: Vec<u64> = spooled
        .iter()
        .copied()
        .filter(|id| *id > received[0] && *id < first_after)
        .collect();
    assert!(
        during.len() >= 3,
        "spooled {spooled:?}, received {received:?}"
    );
    let (spool, log) = h.stop().await;
    assert!(log.text().contains(
        "Publishing the newest report; older pending reports kept as superseded history."
    ));
    assert!(spool.stats.superseded >= 3);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_report_is_logged_with_its_code_kept_and_not_retried() {
    let mut h = Harness::start("all");
    h.connect().await;
    // Two rejections with the same code: one error line.
    let mut rejected = Vec::new();
    for _ in 0..2 {
        let id = h.next_report(Duration::from_secs(5)).await.unwrap();
        h.answer(id, false).await;
        rejected.push(id);
    }
    // The next reports still flow, and the rejected ones are never published again.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let id = h.next_report(Duration::from_secs(5)).await.unwrap();
        assert!(!rejected.contains(&id), "rejected report was retried");
        h.answer(id, true).await;
        seen.push(id);
    }
    assert!(seen.iter().all(|id| rejected.iter().all(|r| id > r)));
    let log = h.log.text();
    assert!(log.contains("code=InvalidPayload"), "{log}");
    assert_eq!(
        log.matches("Report rejected; kept in the spool").count(),
        1,
        "logged once per cause"
    );
    let status = h.status();
    assert!(status.spool.rejected >= 2, "{status:?}");
    assert_eq!(
        status.last_answer.map(|a| a.status),
        Some("accepted".to_string())
    );
    let (spool, _) = h.stop().await;
    for id in rejected {
        let state = spool
            .entries
            .iter()
            .find(|(e, _)| e.id == id)
            .map(|(_, s)| s);
        assert!(
            matches!(state, Some(EntryState::Rejected { code, .. }) if code == "InvalidPayload"),
            "{state:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_report_without_an_answer_in_time_gives_way_to_a_newer_one_under_latest() {
    let mut h = Harness::start("latest");
    h.connect().await;
    let id = h.next_report(Duration::from_secs(5)).await.unwrap();
    // answer_timeout_secs = 3: then the report is published again, and under "latest" a newer
    // one goes in its place.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(h
        .log
        .text()
        .contains("No answer from Device Defender in time; publishing the report again."));
    let newer = h.next_report(Duration::from_secs(2)).await.unwrap();
    assert!(newer > id);
    h.answer(newer, true).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(h.pending().contains(&id) || h.spool().entries.iter().any(|(e, _)| e.id == id));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_report_without_an_answer_in_time_is_published_again_on_the_same_connection() {
    // Regression (issue 16, defect 9): it waited for a reconnection.
    let mut h = Harness::launch(|state| config_with(state, 60, "all"), |_| {}, |_| {});
    h.connect().await;
    let id = h.next_report(Duration::from_secs(5)).await.unwrap();
    // No answer within answer_timeout_secs (3 s): the same report again, before the next one
    // is made (60 s), without a reconnection.
    assert_eq!(h.next_report(Duration::from_secs(4)).await, Some(id));
    h.answer(id, true).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(h.pending().is_empty(), "{:?}", h.pending());
    assert_eq!(h.next_report(Duration::from_secs(10)).await, None);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_answer_for_another_pending_report_does_not_settle_it() {
    // Regression (issue 16, defect 1): answers naming pending reports that were never published
    // removed them from the spool.
    let mut h = Harness::start("all");
    h.connect().await;
    let id = h.next_report(Duration::from_secs(5)).await.unwrap();
    // Two more reports are made while the first waits for its answer.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pending = h.pending();
    assert!(
        pending.contains(&(id + 1)) && pending.contains(&(id + 2)),
        "{pending:?}"
    );
    h.answer(id + 2, true).await;
    h.answer(id + 1, false).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let after = h.pending();
    assert!(
        after.contains(&(id + 1)) && after.contains(&(id + 2)),
        "never published, yet settled: {after:?}"
    );
    assert_eq!(h.status().spool.rejected, 0);
    let log = h.log.text();
    assert_eq!(
        log.matches("Answer for a report that is not in flight on this connection; ignored.")
            .count(),
        1,
        "{log}"
    );
    // They still go out and are settled by their own answers.
    h.answer(id, true).await;
    let mut seen = Vec::new();
    while let Some(next) = h.next_report(Duration::from_secs(3)).await {
        h.answer(next, true).await;
        seen.push(next);
        if seen.contains(&(id + 1)) && seen.contains(&(id + 2)) {
            break;
        }
    }
    assert!(
        seen.contains(&(id + 1)) && seen.contains(&(id + 2)),
        "{seen:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn backlog_all_drains_at_the_drain_interval_while_new_reports_go_out_on_time() {
    // Regression (issue 16, defect 3): after each answer the next backlog report waited a whole
    // report interval, so a backlog never drained. Reports every 30 s, a backlog of 40.
    let mut h = Harness::launch(
        |state| config_with(state, 30, "all") + "drain_interval_secs = 1\n",
        |_| {},
        |_| {},
    );
    h.connect().await;
    let first = h.next_report(Duration::from_secs(5)).await.unwrap();
    h.answer(first, true).await;
    h.disconnect().await;
    tokio::time::sleep(Duration::from_secs(40 * 30)).await;
    let backlog: Vec<u64> = h
        .log
        .spooled_ids()
        .into_iter()
        .filter(|id| *id > first)
        .collect();
    assert!(backlog.len() >= 39, "{backlog:?}");
    h.connect().await;
    let start = Instant::now();
    let mut received = Vec::new();
    while received.len() < backlog.len() + 1 {
        let Some(id) = h.next_report(Duration::from_secs(60)).await else {
            break;
        };
        received.push((id, Instant::now() - start));
        h.answer(id, true).await;
    }
    let drained = received
        .iter()
        .filter(|(id, _)| backlog.contains(id))
        .map(|(_, at)| *at)
        .max()
        .unwrap();
    assert!(
        drained <= Duration::from_secs(45),
        "the backlog took {drained:?}: {received:?}"
    );
    // The report made during the drain went out when it was made, ahead of the rest of the
    // backlog: at the first report tick after reconnecting (within 30 s), not after the drain.
    let (fresh, at) = received
        .iter()
        .find(|(id, _)| !backlog.contains(id))
        .copied()
        .expect("a report made during the drain");
    assert!(fresh > *backlog.last().unwrap());
    assert!(
        at < drained && at <= Duration::from_secs(31),
        "{received:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_implausible_stored_report_id_is_replaced_by_the_clock_rule() {
    // Regression (issue 16, defect 7): a stored u64::MAX pinned every report id to itself; a
    // stored 2^63-1 was continued from.
    for stored in [u64::MAX, i64::MAX as u64] {
        let mut h = Harness::launch(
            |state| config_text(state, "latest"),
            |state| {
                std::fs::create_dir_all(state).unwrap();
                std::fs::write(state.join(ReportIdFile::FILE_NAME), format!("{stored}\n")).unwrap();
            },
            |_| {},
        );
        h.connect().await;
        let clock = epoch_secs(SystemTime::now());
        let first = h.next_report(Duration::from_secs(5)).await.unwrap();
        h.answer(first, true).await;
        let second = h.next_report(Duration::from_secs(5)).await.unwrap();
        assert!(
            first >= clock && first <= clock + 5,
            "stored {stored}: first id {first}, clock {clock}"
        );
        assert!(second > first && second <= clock + 10, "{second}");
        let log = h.log.text();
        assert!(
            log.contains("Cannot read the last report id; report ids continue from the clock.")
                && log.contains("more than a day ahead of the clock"),
            "{log}"
        );
        let saved = ReportIdFile::new(&h.state).load().unwrap().unwrap();
        assert!(saved <= clock + 10, "the file now holds {saved}");
        h.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn hostile_rejections_cannot_forge_log_lines_fill_the_log_or_grow_the_status() {
    // Regression (issue 16, defect 5): every distinct ErrorCode was kept and logged whole, and a
    // newline in it forged log lines.
    let mut h = Harness::start("all");
    h.connect().await;
    let forged = "INFO Report accepted. id=424242 FORGED";
    for n in 0..(crate::agent::publisher::MAX_LOGGED_REJECTION_CODES + 8) {
        let id = h.next_report(Duration::from_secs(5)).await.unwrap();
        let code = format!("Code{n}\\n{forged}\\r\\u202e{}", "x".repeat(100_000));
        let payload = format!(
            r#"{{"thingName":"gw-inproc","reportId":{id},"status":"REJECTED","timestamp":1,"statusDetails":{{"ErrorCode":"{code}","ErrorMessage":"m\n{forged}"}}}}"#
        );
        h.answer_with(false, payload).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let log = h.log.text();
    assert!(
        !log.lines().any(|l| l.trim_start().starts_with(forged)),
        "a forged line"
    );
    assert!(!log.contains('\u{202e}'));
    assert!(log.len() < 200_000, "the log grew by {} bytes", log.len());
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("Report rejected"))
        .count();
    assert_eq!(
        errors,
        crate::agent::publisher::MAX_LOGGED_REJECTION_CODES + 1,
        "once per code up to the bound, then once for the others"
    );
    let answer = h.status().last_answer.unwrap();
    assert!(answer.code.unwrap().len() <= crate::spool::record::MAX_CODE_BYTES);
    assert!(answer.message.unwrap().len() <= crate::spool::record::MAX_MESSAGE_BYTES);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_answer_for_another_report_id_leaves_the_report_in_flight_waiting() {
    let mut h = Harness::start("all");
    h.connect().await;
    let id = h.next_report(Duration::from_secs(5)).await.unwrap();
    // An answer naming another (older, unknown) report: ignored by the spool, nothing published.
    h.answer(id - 1_000, true).await;
    assert_eq!(h.next_report(Duration::from_millis(2500)).await, None);
    assert!(h.pending().contains(&id));
    h.answer(id, true).await;
    let next = h.next_report(Duration::from_secs(3)).await.unwrap();
    assert!(next > id);
    assert!(!h.pending().contains(&id));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_spool_the_agent_keeps_reporting_from_the_memory_outbox() {
    // The spool could not be opened (Parts::from_config logged it): reports live in memory.
    let mut h = Harness::start_with("latest", |parts| parts.spool = None);
    h.connect().await;
    let mut accepted = Vec::new();
    while accepted.len() < 6 {
        let id = h.next_report(Duration::from_secs(5)).await.unwrap();
        h.answer(id, true).await;
        accepted.push(id);
    }
    for w in accepted.windows(2) {
        assert!(w[0] < w[1], "{accepted:?}");
    }
    // An outage: the memory outbox keeps the newest four, the newest goes first after it.
    h.disconnect().await;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let status = h.status();
    assert_eq!(status.spool.pending, 4, "{status:?}");
    assert!(status.spool.dropped >= 2, "{status:?}");
    let newest = status.last_report.map(|r| r.id).unwrap();
    h.connect().await;
    assert_eq!(
        h.next_report(Duration::from_millis(100)).await,
        Some(newest)
    );
    let (spool, log) = h.stop().await;
    assert!(spool.entries.is_empty(), "nothing was written to disk");
    assert!(!log.text().contains("Report spooled."));
}

/// Issue 15 item 6: with commensurate intervals (the built-in 5 s samples, 10 s reports) the
/// sample tick and the report tick are due at the same instant, and each took its own sample:
/// 1.5 samples' work per sample interval. One sample serves both now; the first report still
/// takes its own after the baseline.
#[tokio::test(start_paused = true)]
async fn a_sample_tick_and_a_report_tick_due_together_share_one_sample() {
    let sampler = Arc::new(Scripted::default());
    let scripted = Arc::clone(&sampler);
    let h = Harness::launch(
        |state| {
            config_with(state, 10, "all")
                .replace("sample_interval_secs = 10", "sample_interval_secs = 5")
        },
        |_| {},
        move |parts| parts.sampler = scripted,
    );
    tokio::time::sleep(Duration::from_millis(60_500)).await;
    let (spool, _log) = h.stop().await;
    // Seven reports (at 0, 10, ..., 60 s) ...
    assert_eq!(spool.entries.len(), 7, "{:?}", spool.entries);
    // ... from the baseline, the first report's sample and one sample every 5 s (12).
    assert_eq!(*sampler.samples.lock().unwrap(), 14);
}

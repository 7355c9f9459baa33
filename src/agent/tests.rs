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
    _log_guard: tracing::subscriber::DefaultGuard,
    _dir: tempfile::TempDir,
}

/// Reports every second, answers due within 3 s: the daemon tests' configuration.
fn config_text(state: &std::path::Path, backlog: &str) -> String {
    format!(
        "thing_name = \"gw-inproc\"\nstate_dir = {state:?}\nshutdown_timeout_secs = 5\n\
         [collect]\nsample_interval_secs = 1\n\
         [report]\ninterval_secs = 1\nstartup_jitter_secs = 0\n\
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
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let log_guard = tracing::subscriber::set_default(subscriber);

        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = Config::parse(&config_text(&state, backlog), "test").unwrap();
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

/// Connects, has the first report accepted, cuts the link until four more are spooled, then
/// reconnects and answers everything published during `drain` (virtual time).
async fn outage(backlog: &str, drain: Duration) -> (Vec<u64>, Vec<u64>, Harness) {
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
    h.connect().await;
    let mut received = vec![first];
    let until = Instant::now() + drain;
    while let Some(id) = h.next_report(until - Instant::now()).await {
        received.push(id);
        h.answer(id, true).await;
    }
    let spooled = h.log.spooled_ids();
    (spooled, received, h)
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_backlog_all_delivers_every_report_in_order_exactly_once() {
    let (spooled, received, h) = outage("all", Duration::from_secs(12)).await;
    for w in received.windows(2) {
        assert!(w[0] < w[1], "ids out of order or duplicated: {received:?}");
    }
    // None lost: every spooled report was received or is still pending in the spool.
    let pending = h.pending();
    let got: BTreeSet<u64> = received.iter().copied().collect();
    for id in &spooled {
        assert!(
            got.contains(id) || pending.contains(id),
            "report {id} lost: received {received:?}, pending {pending:?}"
        );
    }
    // The outage backlog (at least 4 reports) was published, not just the newest.
    assert!(received.len() >= 5, "received {received:?}");
    assert_eq!(h.status().spool.superseded, 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_backlog_latest_publishes_the_newest_and_counts_the_rest_superseded() {
    let (spooled, received, h) = outage("latest", Duration::from_secs(4)).await;
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
async fn a_report_without_an_answer_in_time_is_held_and_a_newer_one_goes_in_its_place() {
    let mut h = Harness::start("latest");
    h.connect().await;
    let id = h.next_report(Duration::from_secs(5)).await.unwrap();
    // answer_timeout_secs = 3: then the report is held, and newer ones go in its place.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(h.log.text().contains(
        "No answer from Device Defender in time; the report is retried on the next connection."
    ));
    let newer = h.next_report(Duration::from_secs(2)).await.unwrap();
    assert!(newer > id);
    h.answer(newer, true).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(h.pending().contains(&id) || h.spool().entries.iter().any(|(e, _)| e.id == id));
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

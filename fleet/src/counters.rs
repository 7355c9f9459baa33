//! What the ingest answered, counted in memory (a fixed set of atomics: bounded whatever the
//! input) and added to the store's per-minute `ingest_counters` every [`FLUSH_EVERY`] and at
//! shutdown, so `defender-fleet status` reads the same figures from any instance.
//!
//! Names: `received` (reports taken from the queue), `accepted` (answered accepted, duplicates
//! included), `recorded` (committed: new reports), `dropped` (left unanswered: the ingest queue
//! was full), `rejected.<ErrorCode>` (`InvalidPayload`, `Throttled`, `InvalidThingName`; any
//! other code is `rejected.Other`). A flush that fails keeps its counts for the next one; a
//! crash loses at most the last [`FLUSH_EVERY`] of counts (never a report).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::store::Store;

/// How often the counts go to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The reject codes counted by name.
pub const REJECT_CODES: [&str; 3] = ["InvalidPayload", "Throttled", "InvalidThingName"];

const NAMES: [&str; 8] = [
    "received",
    "accepted",
    "recorded",
    "dropped",
    "rejected.InvalidPayload",
    "rejected.Throttled",
    "rejected.InvalidThingName",
    "rejected.Other",
];

/// The in-memory counts since the last flush.
#[derive(Debug, Default)]
pub struct Counters {
    n: [AtomicU64; NAMES.len()],
}

impl Counters {
    fn add(&self, i: usize, by: u64) {
        if let Some(c) = self.n.get(i) {
            c.fetch_add(by, Ordering::Relaxed);
        }
    }

    /// `n` reports taken from the queue.
    pub fn received(&self, n: usize) {
        self.add(0, n as u64);
    }

    /// One answer sent: `ACCEPTED`, or `REJECTED` with its code.
    pub fn answered(&self, status: &str, code: Option<&str>) {
        if status == "ACCEPTED" {
            self.add(1, 1);
            return;
        }
        let i = code
            .and_then(|c| REJECT_CODES.iter().position(|k| *k == c))
            .map_or(7, |k| 4 + k);
        self.add(i, 1);
    }

    /// One report committed.
    pub fn recorded(&self) {
        self.add(2, 1);
    }

    /// One report dropped unanswered (queue full).
    pub fn dropped(&self) {
        self.add(3, 1);
    }

    /// The counts so far, reset to zero.
    pub fn take(&self) -> Vec<(&'static str, i64)> {
        NAMES
            .iter()
            .zip(&self.n)
            .map(|(name, c)| {
                (
                    *name,
                    i64::try_from(c.swap(0, Ordering::Relaxed)).unwrap_or(i64::MAX),
                )
            })
            .collect()
    }

    /// Puts counts back (a flush that failed).
    pub fn put_back(&self, counts: &[(&'static str, i64)]) {
        for (name, v) in counts {
            if let Some(i) = NAMES.iter().position(|n| n == name) {
                self.add(i, u64::try_from(*v).unwrap_or(0));
            }
        }
    }
}

/// One flush; `Err` keeps the counts for the next.
pub async fn flush(store: &Store, counters: &Counters, now_ms: i64) -> Result<(), String> {
    let counts = counters.take();
    if counts.iter().all(|(_, n)| *n == 0) {
        return Ok(());
    }
    match store.add_counters(now_ms, &counts).await {
        Ok(()) => Ok(()),
        Err(e) => {
            counters.put_back(&counts);
            Err(e.to_string())
        }
    }
}

/// Flushes every [`FLUSH_EVERY`] until `stop` (the caller flushes once more after the drain).
/// A failing store is logged once per episode.
pub async fn flush_job(store: Store, counters: Arc<Counters>, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_EVERY) => {}
            _ = stop.changed() => return,
        }
        match flush(&store, &counters, crate::serve::now_ms()).await {
            Ok(()) if failing => {
                info!("Counters: the store is available again.");
                failing = false;
            }
            Err(e) if !failing => {
                warn!(error = %e, "Counters: cannot write to the store; kept for the next try.");
                failing = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_code_and_taken_once() {
        let c = Counters::default();
        c.received(3);
        c.answered("ACCEPTED", None);
        c.answered("REJECTED", Some("Throttled"));
        c.answered("REJECTED", Some("SomethingNew"));
        c.recorded();
        let t: std::collections::BTreeMap<_, _> = c.take().into_iter().collect();
        assert_eq!(t["received"], 3);
        assert_eq!(t["accepted"], 1);
        assert_eq!(t["recorded"], 1);
        assert_eq!(t["rejected.Throttled"], 1);
        assert_eq!(t["rejected.Other"], 1);
        assert_eq!(t["rejected.InvalidPayload"], 0);
        assert!(c.take().iter().all(|(_, n)| *n == 0));
        c.put_back(&[("accepted", 2)]);
        assert!(c.take().contains(&("accepted", 2)));
    }
}

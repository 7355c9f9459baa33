//! "Log once per episode" bookkeeping for collector errors: which errors are new, which collectors
//! recovered. Pure; the agent loop feeds it each sample's errors and logs what it returns.

use std::collections::BTreeSet;

use super::{CollectorId, Error};

/// The open error episodes, keyed by (collector, kind of cause).
///
/// An episode starts the first sample a collector fails with a given kind of cause and lasts
/// while that (collector, kind) keeps failing; a different kind of cause starts a new episode.
/// A collector recovers when it produces no error at all. Bounded by the number of collectors
/// times the number of error kinds (both fixed by configuration).
#[derive(Debug, Default, Clone)]
pub struct Episodes {
    open: BTreeSet<(CollectorId, &'static str)>,
}

/// What one sample changed.
#[derive(Debug, Default)]
pub struct EpisodeChanges<'e> {
    /// Errors that start an episode: log these now (each (collector, kind) once).
    pub started: Vec<&'e Error>,
    /// Collectors that failed in the previous sample and not in this one: log recovery once.
    pub recovered: Vec<CollectorId>,
}

impl Episodes {
    /// No open episodes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample's errors and says what to log.
    pub fn observe<'e>(&mut self, errors: &'e [Error]) -> EpisodeChanges<'e> {
        let mut now = BTreeSet::new();
        let mut started = Vec::new();
        for e in errors {
            let key = (e.collector(), e.kind());
            if !self.open.contains(&key) && !now.contains(&key) {
                started.push(e);
            }
            now.insert(key);
        }
        let failing: BTreeSet<&CollectorId> = now.iter().map(|(c, _)| c).collect();
        let mut recovered: Vec<CollectorId> = self
            .open
            .iter()
            .map(|(c, _)| c)
            .filter(|c| !failing.contains(c))
            .cloned()
            .collect();
        recovered.dedup();
        self.open = now;
        EpisodeChanges { started, recovered }
    }

    /// Whether any collector is currently failing.
    pub fn any_open(&self) -> bool {
        !self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::custom::CustomError;
    use std::io;
    use std::path::PathBuf;

    fn network_error() -> Error {
        Error::NetworkRead {
            path: PathBuf::from("/proc/net/dev"),
            source: io::Error::from(io::ErrorKind::NotFound),
        }
    }

    fn custom_error(metric: &str, cause: CustomError) -> Error {
        Error::Custom {
            metric: metric.into(),
            cause,
        }
    }

    #[test]
    fn a_failure_is_logged_once_then_its_recovery_once() {
        let mut episodes = Episodes::new();
        let first = [network_error()];
        assert_eq!(episodes.observe(&first).started.len(), 1);
        let again = [network_error()];
        let changes = episodes.observe(&again);
        assert!(changes.started.is_empty() && changes.recovered.is_empty());
        let changes = episodes.observe(&[]);
        assert_eq!(changes.recovered, [CollectorId::Network]);
        assert!(!episodes.any_open());
        assert!(episodes.observe(&[]).recovered.is_empty());
    }

    #[test]
    fn a_new_kind_of_cause_starts_a_new_episode_without_a_recovery() {
        let mut episodes = Episodes::new();
        episodes.observe(&[custom_error("temp", CustomError::OutputTooLarge)]);
        let timeout = [custom_error(
            "temp",
            CustomError::Timeout {
                program: "/bin/x".into(),
                timeout: std::time::Duration::from_secs(1),
            },
        )];
        let changes = episodes.observe(&timeout);
        assert_eq!(changes.started.len(), 1);
        assert!(changes.recovered.is_empty());
    }

    #[test]
    fn collectors_are_tracked_independently() {
        let mut episodes = Episodes::new();
        let both = [
            custom_error("a", CustomError::OutputTooLarge),
            custom_error("b", CustomError::OutputTooLarge),
            custom_error("b", CustomError::OutputTooLarge),
        ];
        assert_eq!(episodes.observe(&both).started.len(), 2);
        let only_b = [custom_error("b", CustomError::OutputTooLarge)];
        let changes = episodes.observe(&only_b);
        assert!(changes.started.is_empty());
        assert_eq!(changes.recovered, [CollectorId::Custom("a".into())]);
    }
}

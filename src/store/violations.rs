//! The violation store: Detect's events, engine state (so an active alarm keeps its violationId
//! across restarts) and a snapshot of the active violations, in the state directory.
//!
//! Files (spec: detect.md §6):
//! - `violations.json`, written only by the daemon, replaced atomically
//!   ([`super::write_atomic`]): a crash leaves the previous or the new content, never half.
//! - `violations-verification.json`, written only by `violations verify` (read-modify-replace), so
//!   the daemon and the CLI never overwrite each other's data.
//!
//! Bounds and full policy: events older than the retention (default 14 days) are dropped when
//! events are recorded; beyond `max_events` the oldest events are dropped first.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::detect::engine::{Emitted, EngineState, Millis};
use crate::detect::query::{
    self, ListActiveViolationsRequest, ListActiveViolationsResponse, ListViolationEventsRequest,
    ListViolationEventsResponse, VerificationMap, ViolationHistory,
};
use crate::detect::{ActiveViolation, ApiError};

/// The daemon's file.
pub const FILE_NAME: &str = "violations.json";

/// The verification states written by `violations verify`.
pub const VERIFICATION_FILE_NAME: &str = "violations-verification.json";

/// Version of the file layout.
const VERSION: u32 = 1;

/// Retention the command line opens the store with when the configuration has no `[detect]`
/// section (a store left by an earlier configuration): 14 days, as the default of `[detect]
/// retention_days`.
pub const FALLBACK_RETENTION: Duration = Duration::from_secs(14 * 86_400);

/// The event bound in the same case. The command line never records events and opening keeps
/// every stored event, so the bound drops nothing there.
pub const FALLBACK_MAX_EVENTS: usize = 100_000;

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, writing or renaming failed.
    #[error(transparent)]
    Io(#[from] super::Error),
    /// The file is not a store this version understands.
    #[error("{}: not a violation store: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// serde_json's message (with line and column).
        message: String,
    },
}

/// What `violations.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Layout version.
    pub version: u32,
    /// When it was written (epoch ms).
    pub saved_at: Millis,
    /// Recorded events (record order) — its verification map is unused here.
    pub history: ViolationHistory,
    /// The engine state to restore.
    pub engine: EngineState,
    /// Active violations when saved (for `violations active`).
    pub active: Vec<ActiveViolation>,
    /// Configured profile names when saved (ResourceNotFound for others).
    pub profiles: BTreeSet<String>,
}

/// The store of one state directory.
#[derive(Debug, Clone)]
pub struct ViolationStore {
    dir: PathBuf,
    retention: Duration,
    max_events: usize,
    data: Stored,
}

fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, Error> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(Error::Io(super::Error {
            op: "read",
            path: path.to_owned(),
            source,
        })),
    }
}

impl ViolationStore {
    /// Opens the store of `state_dir` (missing file = empty store).
    pub fn open(
        state_dir: &Path,
        retention: Duration,
        max_events: usize,
    ) -> Result<ViolationStore, Error> {
        let data: Stored = read_json(&state_dir.join(FILE_NAME))?;
        Ok(ViolationStore {
            dir: state_dir.to_owned(),
            retention,
            max_events: max_events.max(1),
            data,
        })
    }

    /// An empty store for `state_dir` (used when the file is corrupt: the daemon keeps going).
    pub fn empty(state_dir: &Path, retention: Duration, max_events: usize) -> ViolationStore {
        ViolationStore {
            dir: state_dir.to_owned(),
            retention,
            max_events: max_events.max(1),
            data: Stored::default(),
        }
    }

    /// The file path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The stored content.
    pub fn stored(&self) -> &Stored {
        &self.data
    }

    /// The engine state to restore at start.
    pub fn engine_state(&self) -> EngineState {
        self.data.engine.clone()
    }

    /// Records emitted events and the engine's state and active violations, then applies
    /// retention and `max_events` (drop oldest). Does not write: call [`Self::save`].
    pub fn record(
        &mut self,
        emitted: &[Emitted],
        state: &EngineState,
        active: Vec<ActiveViolation>,
        profiles: &BTreeSet<String>,
        now: Millis,
    ) {
        self.data.history.record(emitted);
        let over = self
            .data
            .history
            .events
            .len()
            .saturating_sub(self.max_events);
        if over > 0 {
            // Invariant: over = len - max_events <= len.
            self.data.history.events.drain(..over);
        }
        let now_s = now as f64 / 1000.0;
        self.data
            .history
            .expire(now_s, self.retention.as_secs_f64(), &active);
        self.data.engine = state.clone();
        self.data.active = active;
        self.data.profiles = profiles.clone();
    }

    /// Writes the file atomically.
    pub fn save(&mut self, now: Millis) -> Result<(), Error> {
        self.data.version = VERSION;
        self.data.saved_at = now;
        let bytes = serde_json::to_vec(&self.data).map_err(|e| Error::Corrupt {
            path: self.path(),
            message: e.to_string(),
        })?;
        super::write_atomic(&self.path(), &bytes)?;
        Ok(())
    }

    /// The verification states written by `violations verify`.
    pub fn verification(&self) -> Result<VerificationMap, Error> {
        read_json(&self.dir.join(VERIFICATION_FILE_NAME))
    }

    /// ListViolationEvents over the stored events.
    pub fn list_violation_events(
        &self,
        req: &ListViolationEventsRequest,
    ) -> Result<Result<ListViolationEventsResponse, ApiError>, Error> {
        let v = self.verification()?;
        Ok(query::list_violation_events(
            &self.data.history.events,
            &v,
            req,
        ))
    }

    /// ListActiveViolations over the active violations saved by the daemon.
    pub fn list_active_violations(
        &self,
        req: &ListActiveViolationsRequest,
    ) -> Result<Result<ListActiveViolationsResponse, ApiError>, Error> {
        let v = self.verification()?;
        Ok(query::list_active_violations(
            &self.data.active,
            &self.data.profiles,
            &v,
            req,
        ))
    }

    /// PutVerificationStateOnViolation: checks the id against stored events and active
    /// violations, then replaces the verification file atomically.
    pub fn put_verification_state(
        &self,
        violation_id: &str,
        state: &str,
        description: Option<&str>,
    ) -> Result<Result<(), ApiError>, Error> {
        let mut v = self.verification()?;
        let known: BTreeSet<String> = self
            .data
            .history
            .events
            .iter()
            .map(|r| r.event.violation_id.clone())
            .chain(self.data.active.iter().map(|a| a.violation_id.clone()))
            .collect();
        if let Err(e) =
            query::put_verification_state(&mut v, &known, violation_id, state, description)
        {
            return Ok(Err(e));
        }
        // Verification states of ids no longer known are dropped (bounded by the events).
        v.retain(|id, _| known.contains(id));
        let bytes = serde_json::to_vec(&v).map_err(|e| Error::Corrupt {
            path: self.dir.join(VERIFICATION_FILE_NAME),
            message: e.to_string(),
        })?;
        super::write_atomic(&self.dir.join(VERIFICATION_FILE_NAME), &bytes)?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::engine::{DetectEngine, DeviceReport, EngineSettings, PortList};
    use crate::detect::{SecurityProfile, ValidationContext};

    fn engine() -> DetectEngine {
        let p: SecurityProfile = serde_json::from_str(
            r#"{"securityProfileName":"P","behaviors":[{"name":"ports","metric":"aws:listening-tcp-ports",
            "criteria":{"comparisonOperator":"in-port-set","value":{"ports":[1]}}}]}"#,
        )
        .unwrap();
        DetectEngine::new(
            EngineSettings::new("t"),
            &[p],
            &ValidationContext::default(),
        )
    }

    fn report(port: u16) -> DeviceReport {
        DeviceReport {
            tcp_ports: Some(PortList {
                ports: vec![port],
                total: Some(1),
            }),
            ..DeviceReport::default()
        }
    }

    const T0: Millis = 1_764_000_000_000;

    #[test]
    fn an_active_violation_survives_a_reopen_with_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine();
        let emitted = e.evaluate_report(&report(8080), T0);
        assert_eq!(emitted.len(), 1);
        let id = emitted[0].event.violation_id.clone();
        let mut s = ViolationStore::open(dir.path(), Duration::from_secs(86_400), 10).unwrap();
        s.record(
            &emitted,
            e.state(),
            e.active_violations(),
            e.profile_names(),
            T0,
        );
        s.save(T0).unwrap();

        let s2 = ViolationStore::open(dir.path(), Duration::from_secs(86_400), 10).unwrap();
        let p: SecurityProfile = serde_json::from_str(
            r#"{"securityProfileName":"P","behaviors":[{"name":"ports","metric":"aws:listening-tcp-ports",
            "criteria":{"comparisonOperator":"in-port-set","value":{"ports":[1]}}}]}"#,
        )
        .unwrap();
        let (mut e2, _) = DetectEngine::with_state(
            EngineSettings::new("t"),
            &[p],
            &ValidationContext::default(),
            s2.engine_state(),
            T0 + 1000,
        );
        assert_eq!(e2.active_violations()[0].violation_id, id);
        let cleared = e2.evaluate_report(&report(1), T0 + 2000);
        assert_eq!(cleared[0].event.violation_id, id);
    }

    #[test]
    fn max_events_drops_the_oldest_and_retention_drops_old_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine();
        let mut s = ViolationStore::open(dir.path(), Duration::from_secs(3600), 2).unwrap();
        for i in 0..3 {
            let t = T0 + i * 10_000;
            let em = e.evaluate_report(&report(if i % 2 == 0 { 8080 } else { 1 }), t);
            s.record(&em, e.state(), e.active_violations(), e.profile_names(), t);
        }
        assert_eq!(s.stored().history.events.len(), 2);
        let late = T0 + 7_200_000;
        s.record(
            &[],
            e.state(),
            e.active_violations(),
            e.profile_names(),
            late,
        );
        assert!(s.stored().history.events.is_empty());
    }

    #[test]
    fn verification_is_stored_apart_and_unknown_ids_are_invalid_requests() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine();
        let em = e.evaluate_report(&report(8080), T0);
        let id = em[0].event.violation_id.clone();
        let mut s = ViolationStore::open(dir.path(), Duration::from_secs(86_400), 10).unwrap();
        s.record(&em, e.state(), e.active_violations(), e.profile_names(), T0);
        s.save(T0).unwrap();
        s.put_verification_state(&id, "BENIGN_POSITIVE", Some("lab"))
            .unwrap()
            .unwrap();
        let err = s
            .put_verification_state("nope", "BENIGN_POSITIVE", None)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), "InvalidRequestException");
        let r = s
            .list_active_violations(&ListActiveViolationsRequest::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            r.active_violations[0]
                .verification_state_description
                .as_deref(),
            Some("lab")
        );
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let e = ViolationStore::open(dir.path(), Duration::from_secs(1), 1).unwrap_err();
        assert!(e.to_string().contains(FILE_NAME), "{e}");
    }
}

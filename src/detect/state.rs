//! What the engine remembers: per (profile, behavior) alarm mode, streaks, the active episode,
//! windows, history and the ML baseline; serde-serialisable so an alarm survives a restart with
//! the same violationId (spec: detect.md §3.4, §6.3, §7.2).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::engine::{EngineSettings, Millis};
use super::profile::{Behavior, MetricValue};
use super::violation::ViolationEvent;
use super::window::TimeWindow;

/// Alarm mode of one (profile, behavior).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmMode {
    /// No active violation.
    Normal,
    /// An active violation.
    Alarm,
}

/// The active episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveState {
    /// violationId.
    pub id: String,
    /// Time of the in-alarm event.
    pub start: Millis,
    /// Time of the last violating datapoint.
    pub last_time: Millis,
    /// Its value.
    pub last_value: MetricValue,
}

/// ML training status (GetBehaviorModelTrainingSummaries emulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ModelStatus {
    /// Not enough data yet.
    PendingBuild,
    /// Baseline in use.
    Active,
    /// Rebuild failed 30 daily attempts in a row.
    Expired,
}

/// The local robust-z baseline of one ML behavior.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Median of the history.
    pub median: f64,
    /// Median absolute deviation.
    pub mad: f64,
    /// When it was built.
    pub built_at: Millis,
}

/// Everything the engine remembers about one (profile, behavior); serialisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviorState {
    /// The definition this state belongs to (a change of metric/dimension/criteria resets it);
    /// shared with the compiled behavior (serialised as the plain Behavior).
    #[serde(with = "shared_behavior")]
    pub definition: Arc<Behavior>,
    /// Alarm mode.
    pub mode: AlarmMode,
    /// Violating streak.
    pub v: u32,
    /// Compliant streak.
    pub c: u32,
    /// The active episode.
    pub active: Option<ActiveState>,
    /// Time of the last datapoint (for the two-day invalidation).
    pub last_datapoint: Option<Millis>,
    /// Sliding-window points (per-report values of windowed device metrics).
    pub window: TimeWindow,
    /// Trailing history of datapoint values (statistical local-history, ML baseline).
    pub history: TimeWindow,
    /// ML baseline.
    pub baseline: Option<Baseline>,
    /// ML status.
    pub model_status: ModelStatus,
    /// When the first ML datapoint was collected.
    pub training_start: Option<Millis>,
    /// Last daily rebuild attempt.
    pub last_attempt: Option<Millis>,
    /// Consecutive failed rebuilds after having been ACTIVE.
    pub failed_attempts: u32,
}

impl BehaviorState {
    pub(super) fn new(definition: Arc<Behavior>, s: &EngineSettings) -> BehaviorState {
        BehaviorState {
            definition,
            mode: AlarmMode::Normal,
            v: 0,
            c: 0,
            active: None,
            last_datapoint: None,
            window: TimeWindow::new(s.window_cap),
            history: TimeWindow::new(s.history_cap),
            baseline: None,
            model_status: ModelStatus::PendingBuild,
            training_start: None,
            last_attempt: None,
            failed_attempts: 0,
        }
    }

    /// Approximate heap bytes held by this state.
    pub fn heap_bytes(&self) -> usize {
        self.window.heap_bytes()
            + self.history.heap_bytes()
            + self.active.as_ref().map_or(0, |a| a.id.capacity())
            + serde_json::to_vec(self.definition.as_ref()).map_or(0, |v| v.len())
    }
}

/// The whole engine state (persist it with serde; restore with
/// [`DetectEngine::with_state`](super::engine::DetectEngine::with_state)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// Violation-id sequence.
    pub seq: u64,
    /// profile → behavior → state.
    pub behaviors: BTreeMap<String, BTreeMap<String, BehaviorState>>,
    /// profile → behavior → fleet-supplied threshold.
    pub fleet_thresholds: BTreeMap<String, BTreeMap<String, f64>>,
}

/// An emitted event and whether the notification sink should be called (false when suppressed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emitted {
    /// The AWS-shaped event.
    pub event: ViolationEvent,
    /// Call the sink (the SNS equivalent) only when true (spec: §6.4).
    pub notify: bool,
}

/// A GetBehaviorModelTrainingSummaries entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainingSummary {
    /// Profile.
    pub security_profile_name: String,
    /// Behavior.
    pub behavior_name: String,
    /// First datapoint collected (epoch s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_data_collection_start_date: Option<f64>,
    /// Status.
    pub model_status: ModelStatus,
    /// collected / required · 100, capped at 100.
    pub datapoints_collection_percentage: f64,
    /// Last build (epoch s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_model_refresh_date: Option<f64>,
}

/// `Arc<Behavior>` as the plain `Behavior` (the same JSON as before the definition was shared).
mod shared_behavior {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Behavior;

    pub(super) fn serialize<S: Serializer>(b: &Arc<Behavior>, s: S) -> Result<S::Ok, S::Error> {
        b.as_ref().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Behavior>, D::Error> {
        Behavior::deserialize(d).map(Arc::new)
    }
}

//! Detect for a whole fleet: one compiled profile set shared by every thing, a small
//! serialisable [`ThingState`] per thing, and the fleet statistical thresholds. The evaluation is
//! the device engine's, step for step (`slot.rs`): every operator, windows, CDA/CDC,
//! suppressAlerts, invalidation after two days without datapoints, deterministic violation ids
//! (per thing: its name and its own sequence). Pure: no I/O, no clock (`now` is an argument).
//!
//! - [`FleetDetect::evaluate_report`] evaluates one report of one thing (its report time, see
//!   [`report_time`]); [`FleetDetect::tick`] is the 300 s tick of one thing (cloud-side
//!   behaviors when the caller has traffic windows for it, and the invalidation housekeeping).
//! - [`FleetDetect::compute_thresholds`] is the thresholds job (every epoch multiple of 300 s):
//!   for each STATISTICAL behavior, the population is the value the engine computed for each
//!   thing at its last datapoint, if that datapoint is in (now − durationSeconds, now]; the
//!   threshold is the nearest-rank percentile over it ([`threshold_of`], spec: detect.md §3.5),
//!   used by every thing (fleet-supplied mode) through [`FleetDetect::set_thresholds`]. Below
//!   `min_population` things, or with a negative value in the population, the behavior is not
//!   evaluable until the next job says otherwise (no datapoints; [`ThresholdStatus`] says why).
//!   Until the first job the statistical behaviors give no datapoints, but their values are
//!   recorded for the population.
//! - Cloud-side metrics (messages, authorization failures, connections, source IP) are seen by
//!   the broker, not reported: without traffic windows for a thing, [`FleetDetect::tick`] gives
//!   them no datapoints (never a count of 0).
//!
//! spec: detect.md §3 (evaluation), §3.5 (statistical thresholds), §6.3 (invalidation).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::compile::Compiled;
use super::criteria;
use super::engine::{EngineSettings, Millis, StatMode};
use super::input::{DeviceReport, TrafficWindows};
use super::profile::SecurityProfile;
use super::slot::{self, CompiledSet, StateMap};
use super::state::{BehaviorState, Emitted};
use super::validate::ValidationContext;
use super::violation::{ms_to_secs, ActiveViolation};
use super::Diagnostic;

/// The thresholds job's period and the cloud tick (epoch multiples of 300 s).
pub const TICK_MS: Millis = 300_000;

/// Default smallest population a statistical threshold is computed over.
pub const DEFAULT_MIN_POPULATION: usize = 10;

/// Earliest plausible report time from a `report_id`: 2001-09-09T01:46:40Z (1e9 s). Below it
/// the id is a counter, not a time.
pub const MIN_PLAUSIBLE_REPORT_SECS: u64 = 1_000_000_000;

/// How far a `report_id` may be ahead of its arrival (device clock skew) and still be its time.
pub const MAX_REPORT_SKEW_SECS: u64 = 300;

/// The time a report is evaluated at: its `report_id` (epoch seconds, "monotonically
/// increasing, epoch recommended", spec: detect.md §2.2) when that is plausible — at least
/// [`MIN_PLAUSIBLE_REPORT_SECS`] and at most [`MAX_REPORT_SKEW_SECS`] after the arrival —,
/// else its arrival time. A late report (a device's backlog after an outage) thus keeps its own
/// time; how late is too late is the caller's choice (the ingest), not this function's.
pub fn report_time(report_id: Option<u64>, arrival: Millis) -> Millis {
    let arrival_secs = u64::try_from(arrival.max(0) / 1000).unwrap_or(0);
    match report_id {
        Some(rid)
            if rid >= MIN_PLAUSIBLE_REPORT_SECS
                && rid <= arrival_secs.saturating_add(MAX_REPORT_SKEW_SECS) =>
        {
            // Invariant: rid <= arrival_secs + 300 and arrival fits an i64 in ms.
            (rid as Millis).saturating_mul(1000)
        }
        _ => arrival,
    }
}

/// What one thing's Detect remembers: its violation-id sequence and, per evaluable behavior of
/// the fleet's profiles (in compiled order), the device engine's [`BehaviorState`]. The
/// behavior definitions are shared with the compiled profiles in memory and written out in
/// full by serde (the fleet stores the state as a blob). A state from an older profile set is
/// reconciled on its next use, as the device engine does on a reload (spec: §6.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThingState {
    /// Violation-id sequence of this thing.
    pub seq: u64,
    /// One per evaluable behavior.
    pub slots: Vec<Slot>,
}

/// The state of one (profile, behavior) of a thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// Profile name.
    pub profile: String,
    /// Behavior name.
    pub behavior: String,
    /// The device engine's state of it.
    pub state: BehaviorState,
}

impl ThingState {
    /// Bytes this state holds in memory: itself, its slots and what they own, not counting the
    /// behavior definitions shared with the compiled profiles.
    pub fn resident_bytes(&self) -> usize {
        std::mem::size_of::<ThingState>()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self
                .slots
                .iter()
                .map(|s| {
                    s.profile.capacity()
                        + s.behavior.capacity()
                        + s.state.window.heap_bytes()
                        + s.state.history.heap_bytes()
                        + s.state
                            .active
                            .as_ref()
                            .map_or(0, |a| a.id.capacity() + metric_value_heap(&a.last_value))
                })
                .sum::<usize>()
    }
}

fn metric_value_heap(v: &super::profile::MetricValue) -> usize {
    v.ports.as_ref().map_or(0, |p| p.capacity() * 8)
        + v.numbers.as_ref().map_or(0, |p| p.capacity() * 8)
        + v.cidrs
            .as_ref()
            .map_or(0, |p| p.iter().map(|s| 24 + s.capacity()).sum())
        + v.strings
            .as_ref()
            .map_or(0, |p| p.iter().map(|s| 24 + s.capacity()).sum())
}

/// Whether a statistical threshold could be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdStatus {
    /// Computed: `value` is the threshold.
    Evaluable,
    /// Fewer things with data in the window than `min_population`: not evaluable.
    TooFewDevices,
    /// A value in the population is negative: percentiles are not available (spec: §3.5).
    NegativeValues,
}

/// The outcome of [`threshold_of`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdValue {
    /// The nearest-rank percentile.
    Value(f64),
    /// Fewer values than the minimum population.
    TooFewDevices,
    /// Some value is negative.
    NegativeValues,
}

/// The nearest-rank percentile `percentile` (0..=100) of a population of values, or why there
/// is none: fewer than `min_population` values, or a negative value (spec: detect.md §3.5:
/// "Percentile statistics are not available for metrics when any of the metric values are
/// negative numbers"). Reorders `values` (selection, O(n)); the result is the value
/// [`criteria::nearest_rank`] gives on the sorted population.
pub fn threshold_of(values: &mut [f64], percentile: f64, min_population: usize) -> ThresholdValue {
    if values.is_empty() || values.len() < min_population {
        return ThresholdValue::TooFewDevices;
    }
    if values.iter().any(|v| *v < 0.0) {
        return ThresholdValue::NegativeValues;
    }
    let k = criteria::nearest_rank_k(values.len(), percentile);
    let (_, v, _) = values.select_nth_unstable_by(k - 1, f64::total_cmp);
    ThresholdValue::Value(*v)
}

/// A STATISTICAL behavior of the fleet's profiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatisticalBehavior {
    /// Profile name.
    pub security_profile_name: String,
    /// Behavior name.
    pub behavior_name: String,
    /// `statisticalThreshold.statistic`, e.g. `p90`.
    pub statistic: String,
    /// The percentile it names (0..=100).
    pub percentile: f64,
    /// The behavior's `durationSeconds` (300 when absent): the population is the things with
    /// a datapoint in the last `duration_seconds`.
    pub duration_seconds: u64,
}

/// One computed fleet threshold, as the fleet stores it and `defender-fleet thresholds` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetThreshold {
    /// Profile name.
    pub security_profile_name: String,
    /// Behavior name.
    pub behavior_name: String,
    /// `statisticalThreshold.statistic`, e.g. `p90`.
    pub statistic: String,
    /// Whether `value` exists.
    pub status: ThresholdStatus,
    /// The threshold every thing is compared with (absent when not evaluable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Things with a datapoint in the window.
    pub population: usize,
    /// The minimum population it was computed with.
    pub min_population: usize,
    /// When it was computed (epoch seconds, spec §1.5).
    pub computed_at: f64,
}

impl FleetThreshold {
    /// A line for the log when the status changes, e.g. `profile P behavior B: not evaluable:
    /// 4 things with data, below min_population 10`.
    pub fn message(&self) -> String {
        let what = format!(
            "profile {} behavior {} ({})",
            self.security_profile_name, self.behavior_name, self.statistic
        );
        match (self.status, self.value) {
            (ThresholdStatus::Evaluable, Some(v)) => {
                format!("{what}: threshold {v} over {} things", self.population)
            }
            (ThresholdStatus::NegativeValues, _) => format!(
                "{what}: not evaluable: negative values in the population of {} things (percentiles need values >= 0)",
                self.population
            ),
            _ => format!(
                "{what}: not evaluable: {} things with data, below min_population {}",
                self.population, self.min_population
            ),
        }
    }
}

/// The fleet's Detect: the compiled profiles (shared by every thing) and the current
/// statistical thresholds. Evaluation takes `&self`, so one instance serves every thing.
#[derive(Debug, Clone)]
pub struct FleetDetect {
    settings: EngineSettings,
    set: CompiledSet,
    /// Compiled indices of the fleet-supplied statistical behaviors.
    statistical: Vec<usize>,
    /// Per compiled index: the threshold in force.
    in_force: Vec<Option<f64>>,
    thresholds: Vec<FleetThreshold>,
}

impl FleetDetect {
    /// The engine settings of the fleet: statistics fleet-supplied, ML off, the device defaults
    /// otherwise (two-day invalidation). The thing name is per call, not here.
    pub fn default_settings() -> EngineSettings {
        let mut s = EngineSettings::new("");
        s.statistical = StatMode::FleetSupplied;
        s
    }

    /// Compiles `profiles` (LOAD mode, diagnostics kept) with [`FleetDetect::default_settings`].
    pub fn new(profiles: &[SecurityProfile], ctx: &ValidationContext) -> FleetDetect {
        FleetDetect::with_settings(FleetDetect::default_settings(), profiles, ctx)
    }

    /// Compiles `profiles` with `settings` (its `thing_name` is not used).
    pub fn with_settings(
        settings: EngineSettings,
        profiles: &[SecurityProfile],
        ctx: &ValidationContext,
    ) -> FleetDetect {
        let mut f = FleetDetect {
            settings,
            set: CompiledSet::default(),
            statistical: Vec::new(),
            in_force: Vec::new(),
            thresholds: Vec::new(),
        };
        f.reconfigure(profiles, ctx);
        f
    }

    /// Replaces the profiles (a reload). Each [`ThingState`] is reconciled on its next use, its
    /// changed or removed behaviors' episodes invalidated then (spec: §6.3). Thresholds of
    /// statistical behaviors that are still there with the same statistic are kept until the
    /// next job.
    pub fn reconfigure(&mut self, profiles: &[SecurityProfile], ctx: &ValidationContext) {
        self.set = CompiledSet::build(profiles, ctx, &self.settings);
        self.statistical = (0..self.set.compiled.len())
            .filter(|i| slot::fleet_percentile(&self.set.compiled[*i]).is_some())
            .collect();
        let keep: Vec<FleetThreshold> = std::mem::take(&mut self.thresholds)
            .into_iter()
            .filter(|t| {
                self.statistical_behaviors().iter().any(|s| {
                    s.security_profile_name == t.security_profile_name
                        && s.behavior_name == t.behavior_name
                        && s.statistic == t.statistic
                })
            })
            .collect();
        self.in_force = vec![None; self.set.compiled.len()];
        self.set_thresholds(&keep);
    }

    /// Load and compile remarks (skipped and not-evaluable behaviors, warnings).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.set.diagnostics
    }

    /// The settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Number of evaluable behaviors (the slots of a [`ThingState`]).
    pub fn evaluable_behaviors(&self) -> usize {
        self.set.compiled.len()
    }

    /// The thresholds in force, as last set.
    pub fn thresholds(&self) -> &[FleetThreshold] {
        &self.thresholds
    }

    /// Puts thresholds in force (from [`FleetDetect::compute_thresholds`], or from the store
    /// after a restart). A behavior without an evaluable threshold gives no datapoints.
    pub fn set_thresholds(&mut self, thresholds: &[FleetThreshold]) {
        for v in self.in_force.iter_mut() {
            *v = None;
        }
        for t in thresholds {
            let found = self.statistical.iter().copied().find(|i| {
                let c = &self.set.compiled[*i];
                c.profile == t.security_profile_name && c.behavior.name == t.behavior_name
            });
            if let (Some(i), ThresholdStatus::Evaluable) = (found, t.status) {
                self.in_force[i] = t.value;
            }
        }
        self.thresholds = thresholds.to_vec();
    }

    /// The STATISTICAL behaviors, in compiled order (the order of the thresholds).
    pub fn statistical_behaviors(&self) -> Vec<StatisticalBehavior> {
        self.statistical
            .iter()
            .map(|i| {
                let c = &self.set.compiled[*i];
                StatisticalBehavior {
                    security_profile_name: c.profile.clone(),
                    behavior_name: c.behavior.name.clone(),
                    statistic: c
                        .behavior
                        .criteria
                        .as_ref()
                        .and_then(|c| c.statistical_threshold.as_ref())
                        .and_then(|s| s.statistic.clone())
                        .unwrap_or_default(),
                    percentile: slot::fleet_percentile(c).unwrap_or(0.0),
                    duration_seconds: (stat_window(c) / 1000) as u64,
                }
            })
            .collect()
    }

    /// A fresh state for a thing never seen.
    pub fn new_thing_state(&self) -> ThingState {
        let mut st = ThingState::default();
        let mut ignored = Vec::new();
        self.align(&mut st, "", 0, &mut ignored);
        st
    }

    /// Evaluates every device-side and custom behavior of `thing` on one report at `now` (its
    /// [`report_time`]). Reports of one thing must come in time order.
    pub fn evaluate_report(
        &self,
        st: &mut ThingState,
        thing: &str,
        report: &DeviceReport,
        now: Millis,
    ) -> Vec<Emitted> {
        let mut out = Vec::new();
        self.align(st, thing, now, &mut out);
        for (i, raw) in slot::report_values(&self.set.compiled, report) {
            self.datapoint(st, thing, i, raw, now, true, &mut out);
        }
        out
    }

    /// The 300 s tick of one thing at `now`: its cloud-side behaviors when `traffic` has its
    /// windows, then the invalidation of episodes silent for more than two days (spec: §6.3).
    pub fn tick(
        &self,
        st: &mut ThingState,
        thing: &str,
        traffic: Option<&dyn TrafficWindows>,
        now: Millis,
    ) -> Vec<Emitted> {
        let mut out = Vec::new();
        self.align(st, thing, now, &mut out);
        if let Some(traffic) = traffic {
            for i in 0..self.set.compiled.len() {
                // Invariant: the loop bound is compiled.len().
                if let Some(value) = slot::cloud_value(&self.set.compiled[i], traffic, now) {
                    self.datapoint(st, thing, i, value, now, false, &mut out);
                }
            }
        }
        let limit = (self.settings.invalidate_after_s as Millis) * 1000;
        for s in st.slots.iter_mut() {
            slot::housekeep(thing, &s.profile, &mut s.state, now, limit, &mut out);
        }
        out
    }

    /// The ActiveViolations of `thing`, newest start first (spec: §6.7).
    pub fn active_violations(&self, st: &ThingState, thing: &str) -> Vec<ActiveViolation> {
        let mut out: Vec<ActiveViolation> = Vec::new();
        for (i, c) in self.set.compiled.iter().enumerate() {
            if let Some(s) = self.slot_of(st, i, c) {
                out.extend(slot::active_violation(thing, c, &s.state));
            }
        }
        out.sort_by(|a, b| b.violation_start_time.total_cmp(&a.violation_start_time));
        out
    }

    /// The value `st`'s thing contributes to each statistical behavior's population at `now`
    /// (in [`FleetDetect::statistical_behaviors`] order): the value of its last datapoint, if in
    /// (now − durationSeconds, now].
    pub fn population_values(&self, st: &ThingState, now: Millis) -> Vec<Option<f64>> {
        self.statistical
            .iter()
            .map(|i| {
                let c = &self.set.compiled[*i];
                let s = self.slot_of(st, *i, c)?;
                let (t, x) = s.state.history.last()?;
                (t > now - stat_window(c) && t <= now).then_some(x)
            })
            .collect()
    }

    /// The thresholds job at `now` over the things' states: for each statistical behavior, the
    /// percentile over the population of [`FleetDetect::population_values`] ([`threshold_of`]).
    /// Put them in force with [`FleetDetect::set_thresholds`].
    pub fn compute_thresholds<'a>(
        &self,
        states: impl IntoIterator<Item = &'a ThingState>,
        now: Millis,
        min_population: usize,
    ) -> Vec<FleetThreshold> {
        let mut populations: Vec<Vec<f64>> = vec![Vec::new(); self.statistical.len()];
        for st in states {
            for (k, v) in self.population_values(st, now).into_iter().enumerate() {
                if let (Some(v), Some(p)) = (v, populations.get_mut(k)) {
                    p.push(v);
                }
            }
        }
        self.statistical_behaviors()
            .into_iter()
            .zip(populations)
            .map(|(b, mut values)| threshold_for(&b, &mut values, min_population, now))
            .collect()
    }

    /// The slot of compiled behavior `i` in `st`, if it is there with this definition.
    fn slot_of<'s>(&self, st: &'s ThingState, i: usize, c: &Compiled) -> Option<&'s Slot> {
        let same = |s: &&Slot| {
            s.profile == c.profile
                && s.behavior == c.behavior.name
                && (Arc::ptr_eq(&s.state.definition, &c.behavior)
                    || !slot::definition_changed(&s.state.definition, &c.behavior))
        };
        st.slots
            .get(i)
            .filter(same)
            .or_else(|| st.slots.iter().find(same))
    }

    /// Brings `st` to the compiled set: a no-op when it already matches (the common case),
    /// else the device engine's reconcile (spec: §6.3).
    fn align(&self, st: &mut ThingState, thing: &str, now: Millis, out: &mut Vec<Emitted>) {
        let compiled = &self.set.compiled;
        let aligned = st.slots.len() == compiled.len()
            && st.slots.iter_mut().zip(compiled).all(|(s, c)| {
                if s.profile != c.profile || s.behavior != c.behavior.name {
                    return false;
                }
                if Arc::ptr_eq(&s.state.definition, &c.behavior) {
                    return true;
                }
                if slot::definition_changed(&s.state.definition, &c.behavior) {
                    return false;
                }
                // Restored from the store: share the compiled definition from now on.
                s.state.definition = Arc::clone(&c.behavior);
                true
            });
        if aligned {
            return;
        }
        let mut old = StateMap::new();
        for s in std::mem::take(&mut st.slots) {
            old.entry(s.profile)
                .or_default()
                .insert(s.behavior, s.state);
        }
        let mut new = slot::reconcile(compiled, old, thing, &self.settings, now, out);
        st.slots = compiled
            .iter()
            .filter_map(|c| {
                let state = new.get_mut(&c.profile)?.remove(&c.behavior.name)?;
                Some(Slot {
                    profile: c.profile.clone(),
                    behavior: c.behavior.name.clone(),
                    state,
                })
            })
            .collect();
        st.slots.shrink_to_fit();
    }

    /// One datapoint of behavior `i` (aligned `st`): window aggregation (device values), the
    /// value kept for the population (statistical), the decision and the state machine.
    #[allow(clippy::too_many_arguments)]
    fn datapoint(
        &self,
        st: &mut ThingState,
        thing: &str,
        i: usize,
        raw: super::evaluate::Observed,
        now: Millis,
        device: bool,
        out: &mut Vec<Emitted>,
    ) {
        let ThingState { seq, slots } = st;
        // Invariant: align made slots match compiled index by index; callers pass i < len.
        let (Some(c), Some(s)) = (self.set.compiled.get(i), slots.get_mut(i)) else {
            return;
        };
        let value = if device {
            slot::windowed(c, &mut s.state, raw, now)
        } else {
            raw
        };
        if slot::fleet_percentile(c).is_some() {
            if let Some(x) = value.scalar() {
                // The population value of this thing: its last datapoint only.
                s.state.history.prune_through(Millis::MAX);
                s.state.history.push(now, x);
            }
        }
        let step = slot::Step {
            thing,
            lookback: (self.settings.stat_lookback_s as Millis) * 1000,
            min_points: self.settings.stat_min_points,
            fleet: self.in_force.get(i).copied().flatten(),
        };
        slot::datapoint_final(c, &mut s.state, seq, value, now, &step, out);
    }
}

/// The window a statistical behavior's population is taken from (ms).
fn stat_window(c: &Compiled) -> Millis {
    c.window_ms.unwrap_or(TICK_MS)
}

/// One behavior's threshold over its population's values at `now`.
pub fn threshold_for(
    b: &StatisticalBehavior,
    values: &mut [f64],
    min_population: usize,
    now: Millis,
) -> FleetThreshold {
    let (status, value) = match threshold_of(values, b.percentile, min_population) {
        ThresholdValue::Value(v) => (ThresholdStatus::Evaluable, Some(v)),
        ThresholdValue::TooFewDevices => (ThresholdStatus::TooFewDevices, None),
        ThresholdValue::NegativeValues => (ThresholdStatus::NegativeValues, None),
    };
    FleetThreshold {
        security_profile_name: b.security_profile_name.clone(),
        behavior_name: b.behavior_name.clone(),
        statistic: b.statistic.clone(),
        status,
        value,
        population: values.len(),
        min_population,
        computed_at: ms_to_secs(now),
    }
}

/// Thing states by name, for [`replay_fleet`](super::replay::replay_fleet) and tests.
pub type Fleet = BTreeMap<String, ThingState>;

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;

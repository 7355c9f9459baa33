//! The evaluation engine: turns reports, traffic windows and connections into datapoints, runs the
//! CDA/CDC alarm state machine per (profile, behavior), and emits ViolationEvents. Its state is
//! serde-serialisable so an alarm survives a restart with the same violationId.
//!
//! spec: detect.md §2.2 (values), §3 (evaluation), §6.3 (invalidation), §6.4 (suppressAlerts),
//! §7.2 (local baseline).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::criteria::normalise;
use super::profile::SecurityProfile;
use super::slot::{self, CompiledSet};
use super::validate::ValidationContext;
use super::violation::{ms_to_secs, ActiveViolation};
use super::Diagnostic;
#[cfg(test)]
use super::DiagnosticKind;

/// Epoch milliseconds.
pub type Millis = i64;

use super::compile::{Check, Compiled, Source};
use super::evaluate::Observed;
// The inputs and the state types keep their `detect::engine::…` paths.
pub use super::input::*;
pub use super::state::*;

// ---------------------------------------------------------------------------------------------
// Settings

/// How statistical thresholds are resolved (spec: detect.md §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatMode {
    /// Not evaluated; reported as not evaluable.
    Off,
    /// A threshold pushed per (profile, behavior) via [`DetectEngine::set_fleet_threshold`].
    FleetSupplied,
    /// Nearest-rank percentile of this device's own history (labelled: NOT AWS semantics).
    LocalHistory,
}

/// How ML behaviors are evaluated (spec: detect.md §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MlMode {
    /// No datapoints (default).
    Off,
    /// Local robust-z baseline, `local-baseline-robust-z/v1` (labelled: NOT AWS ML Detect).
    LocalBaseline,
}

/// Engine configuration (plain data).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    /// The thing name put in events.
    pub thing_name: String,
    /// Default statistical mode.
    pub statistical: StatMode,
    /// Per (profile, behavior) statistical overrides.
    pub statistical_overrides: BTreeMap<(String, String), StatMode>,
    /// Default ML mode.
    pub ml: MlMode,
    /// Per (profile, behavior) ML overrides.
    pub ml_overrides: BTreeMap<(String, String), MlMode>,
    /// Local-history lookback (default 14 days).
    pub stat_lookback_s: u64,
    /// Local-history minimum points (default 30).
    pub stat_min_points: usize,
    /// Operator-supplied source IP for aws:source-ip-address.
    pub source_ip: Option<IpAddr>,
    /// Whether connection events carry a usable source IP (the local socket address).
    pub source_ip_from_connection: bool,
    /// Silence after which an active violation is invalidated (default 172800 s, strictly more).
    pub invalidate_after_s: u64,
    /// Max points per sliding window (full policy: drop oldest).
    pub window_cap: usize,
    /// Max points per history / baseline (full policy: drop oldest).
    pub history_cap: usize,
    /// Evaluate `aws:disconnect-duration` with the unverified reconstruction of §2.3 (feature
    /// flag, default off: such behaviors are reported as not evaluable).
    pub disconnect_duration: bool,
}

impl EngineSettings {
    /// Defaults for a thing: statistics and ML off, 14-day lookback, 2-day invalidation.
    pub fn new(thing_name: &str) -> EngineSettings {
        EngineSettings {
            thing_name: thing_name.to_owned(),
            statistical: StatMode::Off,
            statistical_overrides: BTreeMap::new(),
            ml: MlMode::Off,
            ml_overrides: BTreeMap::new(),
            stat_lookback_s: 14 * 86_400,
            stat_min_points: 30,
            source_ip: None,
            source_ip_from_connection: false,
            invalidate_after_s: 172_800,
            window_cap: 4096,
            history_cap: 8192,
            disconnect_duration: false,
        }
    }

    pub(super) fn stat_mode(&self, profile: &str, behavior: &str) -> StatMode {
        self.statistical_overrides
            .get(&(profile.to_owned(), behavior.to_owned()))
            .copied()
            .unwrap_or(self.statistical)
    }

    pub(super) fn ml_mode(&self, profile: &str, behavior: &str) -> MlMode {
        self.ml_overrides
            .get(&(profile.to_owned(), behavior.to_owned()))
            .copied()
            .unwrap_or(self.ml)
    }
}

// ---------------------------------------------------------------------------------------------
// Engine

/// The local Detect engine for one thing.
#[derive(Debug, Clone)]
pub struct DetectEngine {
    settings: EngineSettings,
    set: CompiledSet,
    state: EngineState,
}

impl DetectEngine {
    /// An engine with fresh state over `profiles` (checked in LOAD mode; diagnostics kept).
    pub fn new(
        settings: EngineSettings,
        profiles: &[SecurityProfile],
        ctx: &ValidationContext,
    ) -> DetectEngine {
        let set = CompiledSet::build(profiles, ctx, &settings);
        let mut state = EngineState::default();
        for c in &set.compiled {
            state
                .behaviors
                .entry(c.profile.clone())
                .or_default()
                .entry(c.behavior.name.clone())
                .or_insert_with(|| BehaviorState::new(Arc::clone(&c.behavior), &settings));
        }
        DetectEngine {
            settings,
            set,
            state,
        }
    }

    /// An engine restored from persisted state. Episodes of behaviors that changed or vanished
    /// while the agent was down are invalidated at `now`.
    pub fn with_state(
        settings: EngineSettings,
        profiles: &[SecurityProfile],
        ctx: &ValidationContext,
        state: EngineState,
        now: Millis,
    ) -> (DetectEngine, Vec<Emitted>) {
        let mut e = DetectEngine {
            settings,
            set: CompiledSet::default(),
            state,
        };
        let events = e.reconfigure(profiles, ctx, now);
        (e, events)
    }

    /// Replaces the profiles, dimensions and custom metrics. Active violations of behaviors that
    /// were removed, changed (metric, dimension, criteria) or became unevaluable are invalidated
    /// at `now` (spec: §6.3); a change of suppressAlerts/exportMetric only keeps the episode.
    pub fn reconfigure(
        &mut self,
        profiles: &[SecurityProfile],
        ctx: &ValidationContext,
        now: Millis,
    ) -> Vec<Emitted> {
        self.set = CompiledSet::build(profiles, ctx, &self.settings);
        let mut out = Vec::new();
        let old = std::mem::take(&mut self.state.behaviors);
        self.state.behaviors = slot::reconcile(
            &self.set.compiled,
            old,
            &self.settings.thing_name,
            &self.settings,
            now,
            &mut out,
        );
        let names = &self.set.profile_names;
        self.state.fleet_thresholds.retain(|p, _| names.contains(p));
        out
    }

    /// Load and compile remarks (skipped and not-evaluable behaviors, warnings).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.set.diagnostics
    }

    /// The settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The serialisable state.
    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// Names of the configured profiles.
    pub fn profile_names(&self) -> &BTreeSet<String> {
        &self.set.profile_names
    }

    /// Number of evaluable behaviors.
    pub fn evaluable_behaviors(&self) -> usize {
        self.set.compiled.len()
    }

    /// Sets the fleet-supplied statistical threshold of a behavior (spec: §3.5 fleet-supplied).
    pub fn set_fleet_threshold(&mut self, profile: &str, behavior: &str, threshold: f64) {
        self.state
            .fleet_thresholds
            .entry(profile.to_owned())
            .or_default()
            .insert(behavior.to_owned(), threshold);
    }

    /// Evaluates every device-side and custom behavior on one accepted report received at `now`.
    pub fn evaluate_report(&mut self, report: &DeviceReport, now: Millis) -> Vec<Emitted> {
        let mut out = Vec::new();
        for (i, raw) in slot::report_values(&self.set.compiled, report) {
            self.datapoint(i, raw, now, true, &mut out);
        }
        out
    }

    /// One cloud-side tick at `now` (the caller ticks at every epoch multiple of 300 s).
    pub fn evaluate_cloud(&mut self, traffic: &dyn TrafficWindows, now: Millis) -> Vec<Emitted> {
        let mut out = Vec::new();
        for i in 0..self.set.compiled.len() {
            // Invariant: the loop bound is compiled.len().
            if let Some(value) = slot::cloud_value(&self.set.compiled[i], traffic, now) {
                self.datapoint(i, value, now, false, &mut out);
            }
        }
        out
    }

    /// A successful connection: one aws:source-ip-address datapoint (spec: §2.2). The IP is the
    /// configured one if set, else `observed` when connection IPs are enabled.
    pub fn on_connection(&mut self, observed: Option<IpAddr>, now: Millis) -> Vec<Emitted> {
        let ip = self
            .settings
            .source_ip
            .or(if self.settings.source_ip_from_connection {
                observed
            } else {
                None
            });
        let Some(ip) = ip else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for i in 0..self.set.compiled.len() {
            // Invariant: the loop bound is compiled.len().
            if self.set.compiled[i].source == Source::ClientIp {
                let value = Observed::Ips(vec![normalise(ip)]);
                self.datapoint(i, value, now, false, &mut out);
            }
        }
        out
    }

    /// Housekeeping (call at least every 300 s): invalidates active violations whose behavior has
    /// had no datapoint for more than `invalidate_after_s` (spec: §6.3).
    pub fn housekeeping(&mut self, now: Millis) -> Vec<Emitted> {
        let limit = (self.settings.invalidate_after_s as Millis) * 1000;
        let thing = self.settings.thing_name.as_str();
        let mut out = Vec::new();
        for (profile, m) in self.state.behaviors.iter_mut() {
            for st in m.values_mut() {
                slot::housekeep(thing, profile, st, now, limit, &mut out);
            }
        }
        out
    }

    /// The ActiveViolations, newest start first (spec: §6.7).
    pub fn active_violations(&self) -> Vec<ActiveViolation> {
        let mut out: Vec<ActiveViolation> = Vec::new();
        for c in &self.set.compiled {
            let Some(st) = self.state_of(c) else { continue };
            out.extend(slot::active_violation(&self.settings.thing_name, c, st));
        }
        out.sort_by(|a, b| b.violation_start_time.total_cmp(&a.violation_start_time));
        out
    }

    /// The TOPIC_FILTER scopes the evaluable cloud-side behaviors count under, deduplicated, as
    /// `crate::traffic` scopes named by [`traffic_scope_name`] with `${iot:ClientId}` replaced by
    /// `client_id`. A filter that does not parse after substitution is left out (returned apart).
    pub fn traffic_scopes(
        &self,
        client_id: &str,
    ) -> (Vec<crate::traffic::Scope>, Vec<(String, String)>) {
        let mut out: Vec<crate::traffic::Scope> = Vec::new();
        let mut bad = Vec::new();
        for c in &self.set.compiled {
            let Source::Cloud(_, Some(scope)) = &c.source else {
                continue;
            };
            let name = traffic_scope_name(scope);
            if out.iter().any(|s| s.name == name) {
                continue;
            }
            let mut filters = Vec::new();
            for f in &scope.filters {
                match crate::topic_filter::TopicFilter::parse_with_client_id(f, client_id) {
                    Ok(tf) => filters.push(tf),
                    Err(e) => bad.push((scope.dimension.clone(), format!("{f:?}: {e}"))),
                }
            }
            out.push(crate::traffic::Scope {
                name,
                filters,
                operator: match scope.operator {
                    ScopeOperator::In => crate::traffic::ScopeOperator::In,
                    ScopeOperator::NotIn => crate::traffic::ScopeOperator::NotIn,
                },
            });
        }
        (out, bad)
    }

    /// GetBehaviorModelTrainingSummaries emulation for the ML behaviors (evaluable or off).
    pub fn training_summaries(&self) -> Vec<TrainingSummary> {
        let mut out = Vec::new();
        for c in &self.set.compiled {
            let Check::Ml { .. } = c.check else { continue };
            let Some(st) = self.state_of(c) else { continue };
            out.push(TrainingSummary {
                security_profile_name: c.profile.clone(),
                behavior_name: c.behavior.name.clone(),
                training_data_collection_start_date: st.training_start.map(ms_to_secs),
                model_status: st.model_status,
                datapoints_collection_percentage: (st.history.len() as f64 / 2016.0 * 100.0)
                    .min(100.0),
                last_model_refresh_date: st.baseline.as_ref().map(|b| ms_to_secs(b.built_at)),
            });
        }
        // spec: §7.2 option 1 — ML off: PENDING_BUILD, nothing collected (0 / 25,000).
        for (profile, behavior) in &self.set.ml_off {
            out.push(TrainingSummary {
                security_profile_name: profile.clone(),
                behavior_name: behavior.clone(),
                training_data_collection_start_date: None,
                model_status: ModelStatus::PendingBuild,
                datapoints_collection_percentage: 0.0,
                last_model_refresh_date: None,
            });
        }
        out
    }

    fn state_of(&self, c: &Compiled) -> Option<&BehaviorState> {
        self.state.behaviors.get(&c.profile)?.get(&c.behavior.name)
    }

    /// One datapoint of behavior `i`: window aggregation (device values), then the decision
    /// and the state machine.
    fn datapoint(
        &mut self,
        i: usize,
        raw: Observed,
        now: Millis,
        device: bool,
        out: &mut Vec<Emitted>,
    ) {
        let step = slot::Step {
            thing: self.settings.thing_name.as_str(),
            lookback: (self.settings.stat_lookback_s as Millis) * 1000,
            min_points: self.settings.stat_min_points,
            fleet: None,
        };
        // Invariant: every caller passes a loop index below compiled.len().
        let c = &self.set.compiled[i];
        let fleet = self
            .state
            .fleet_thresholds
            .get(&c.profile)
            .and_then(|m| m.get(&c.behavior.name))
            .copied();
        let step = slot::Step { fleet, ..step };
        let Some(st) = self
            .state
            .behaviors
            .get_mut(&c.profile)
            .and_then(|m| m.get_mut(&c.behavior.name))
        else {
            return;
        };
        let value = if device {
            slot::windowed(c, st, raw, now)
        } else {
            raw
        };
        slot::datapoint_final(c, st, &mut self.state.seq, value, now, &step, out);
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

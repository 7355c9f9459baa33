//! The evaluation engine: turns reports, traffic windows and connections into datapoints, runs the
//! CDA/CDC alarm state machine per (profile, behavior), and emits ViolationEvents. Its state is
//! serde-serialisable so an alarm survives a restart with the same violationId.
//!
//! spec: detect.md §2.2 (values), §3 (evaluation), §6.3 (invalidation), §6.4 (suppressAlerts),
//! §7.2 (local baseline).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::catalog::Aggregation;
use super::criteria::{normalise, NumOp};
use super::profile::{Behavior, SecurityProfile};
use super::validate::{self, criteria_type, CriteriaType, ValidationContext};
use super::violation::{ms_to_secs, violation_id, ActiveViolation, ViolationEventType};
use super::{Diagnostic, DiagnosticKind};

/// Epoch milliseconds.
pub type Millis = i64;

use super::compile::{compile, Check, Compiled, Source};
use super::evaluate::{
    additional_info, custom_value, device_value, evaluate, event, invalidated, Observed,
};
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
    compiled: Vec<Compiled>,
    state: EngineState,
    diagnostics: Vec<Diagnostic>,
    profile_names: BTreeSet<String>,
    /// ML behaviors not evaluated because ML is off (reported as PENDING_BUILD).
    ml_off: Vec<(String, String)>,
}

/// What happens to a behavior's stored state when the configuration changes.
fn definition_changed(old: &Behavior, new: &Behavior) -> bool {
    // spec: §6.3 — suppressAlerts / exportMetric alone do NOT invalidate.
    old.metric != new.metric
        || old.metric_dimension != new.metric_dimension
        || old.criteria != new.criteria
}

impl DetectEngine {
    /// An engine with fresh state over `profiles` (checked in LOAD mode; diagnostics kept).
    pub fn new(
        settings: EngineSettings,
        profiles: &[SecurityProfile],
        ctx: &ValidationContext,
    ) -> DetectEngine {
        let mut e = DetectEngine {
            settings,
            compiled: Vec::new(),
            state: EngineState::default(),
            diagnostics: Vec::new(),
            profile_names: BTreeSet::new(),
            ml_off: Vec::new(),
        };
        e.compile_all(profiles, ctx);
        let settings = e.settings.clone();
        for c in &e.compiled {
            e.state
                .behaviors
                .entry(c.profile.clone())
                .or_default()
                .entry(c.behavior.name.clone())
                .or_insert_with(|| BehaviorState::new(c.behavior.clone(), &settings));
        }
        e
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
            compiled: Vec::new(),
            state,
            diagnostics: Vec::new(),
            profile_names: BTreeSet::new(),
            ml_off: Vec::new(),
        };
        let events = e.reconfigure(profiles, ctx, now);
        (e, events)
    }

    fn compile_all(&mut self, profiles: &[SecurityProfile], ctx: &ValidationContext) {
        self.compiled.clear();
        self.diagnostics.clear();
        self.ml_off.clear();
        self.profile_names = profiles
            .iter()
            .map(|p| p.security_profile_name.clone())
            .collect();
        let mut seen_profiles = BTreeSet::new();
        for p in profiles {
            let pname = &p.security_profile_name;
            if !seen_profiles.insert(pname.as_str()) {
                self.diagnostics.push(Diagnostic {
                    source_name: String::new(),
                    profile: pname.clone(),
                    behavior: None,
                    kind: DiagnosticKind::Skipped,
                    message: "duplicate security profile name; only the first is evaluated"
                        .to_owned(),
                });
                continue;
            }
            for w in validate::behavior_warnings(&p.behaviors) {
                self.diagnostics.push(Diagnostic {
                    source_name: String::new(),
                    profile: pname.clone(),
                    behavior: None,
                    kind: DiagnosticKind::Warning,
                    message: w,
                });
            }
            let mut seen = BTreeSet::new();
            for b in &p.behaviors {
                if !seen.insert(b.name.clone()) {
                    self.diagnostics.push(Diagnostic {
                        source_name: String::new(),
                        profile: pname.clone(),
                        behavior: Some(b.name.clone()),
                        kind: DiagnosticKind::Skipped,
                        message: "duplicate behavior name; only the first is evaluated".to_owned(),
                    });
                    continue;
                }
                match compile(pname, b, ctx, &self.settings) {
                    Ok(c) => self.compiled.push(c),
                    Err((kind, message)) => {
                        if kind == DiagnosticKind::NotEvaluable
                            && criteria_type(b) == Some(CriteriaType::MachineLearning)
                        {
                            self.ml_off.push((pname.clone(), b.name.clone()));
                        }
                        self.diagnostics.push(Diagnostic {
                            source_name: String::new(),
                            profile: pname.clone(),
                            behavior: Some(b.name.clone()),
                            kind,
                            message,
                        })
                    }
                }
            }
        }
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
        self.compile_all(profiles, ctx);
        let mut out = Vec::new();
        let mut old = std::mem::take(&mut self.state.behaviors);
        let thing = self.settings.thing_name.clone();
        for c in &self.compiled {
            let prev = old
                .get_mut(&c.profile)
                .and_then(|m| m.remove(&c.behavior.name));
            let st = match prev {
                Some(mut st) if !definition_changed(&st.definition, &c.behavior) => {
                    st.definition = c.behavior.clone();
                    st
                }
                Some(st) => {
                    if let Some(ev) = invalidated(&thing, &c.profile, &st, now) {
                        out.push(ev);
                    }
                    BehaviorState::new(c.behavior.clone(), &self.settings)
                }
                None => BehaviorState::new(c.behavior.clone(), &self.settings),
            };
            self.state
                .behaviors
                .entry(c.profile.clone())
                .or_default()
                .insert(c.behavior.name.clone(), st);
        }
        // Whatever is left has no evaluable behavior any more.
        for (profile, m) in old {
            for (_, st) in m {
                if let Some(ev) = invalidated(&thing, &profile, &st, now) {
                    out.push(ev);
                }
            }
        }
        self.state
            .fleet_thresholds
            .retain(|p, _| self.profile_names.contains(p));
        out
    }

    /// Load and compile remarks (skipped and not-evaluable behaviors, warnings).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
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
        &self.profile_names
    }

    /// Number of evaluable behaviors.
    pub fn evaluable_behaviors(&self) -> usize {
        self.compiled.len()
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
        // Each distinct source is extracted once per report, however many behaviors use it.
        let mut cache: Vec<(Source, Option<Observed>)> = Vec::new();
        for i in 0..self.compiled.len() {
            // Invariant: the loop bound is compiled.len().
            let source = &self.compiled[i].source;
            if !matches!(source, Source::Device(_) | Source::Custom(..)) {
                continue;
            }
            let raw = match cache.iter().find(|(s, _)| s == source) {
                Some((_, v)) => v.clone(),
                None => {
                    let v = match source {
                        Source::Device(bi) => device_value(*bi, report),
                        Source::Custom(name, t) => custom_value(name, *t, report),
                        _ => None,
                    };
                    cache.push((source.clone(), v.clone()));
                    v
                }
            };
            if let Some(raw) = raw {
                self.datapoint(i, raw, now, &mut out);
            }
        }
        out
    }

    /// One cloud-side tick at `now` (the caller ticks at every epoch multiple of 300 s).
    pub fn evaluate_cloud(&mut self, traffic: &dyn TrafficWindows, now: Millis) -> Vec<Emitted> {
        let mut out = Vec::new();
        for i in 0..self.compiled.len() {
            // Invariant: the loop bound is compiled.len().
            let c = &self.compiled[i];
            if c.source == Source::DisconnectDuration {
                // spec: §2.3 — minutes since the loss while disconnected, 0 while connected.
                if let Some(m) = traffic.disconnected_minutes(now) {
                    self.datapoint_final(i, Observed::Count(m), now, &mut out);
                }
                continue;
            }
            let Source::Cloud(metric, scope) = &c.source else {
                continue;
            };
            let d = c.window_ms.unwrap_or(300_000);
            let Some(w) = traffic.window(scope.as_ref(), *metric, now, (d / 1000) as u64) else {
                continue;
            };
            let value = if *metric == CloudMetric::MessageByteSize {
                // spec: §3.3 — static: worst single message; statistical: sum; none: no datapoint.
                if w.count == 0 {
                    continue;
                }
                match (c.ctype, c.op()) {
                    (CriteriaType::Statistical, _) => w.bytes_sum,
                    (_, Some(op)) if !op.worst_is_max() => w.bytes_min.unwrap_or(0),
                    _ => w.bytes_max.unwrap_or(0),
                }
            } else {
                w.count
            };
            self.datapoint_final(i, Observed::Count(value), now, &mut out);
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
        for i in 0..self.compiled.len() {
            // Invariant: the loop bound is compiled.len().
            if self.compiled[i].source == Source::ClientIp {
                self.datapoint_final(i, Observed::Ips(vec![normalise(ip)]), now, &mut out);
            }
        }
        out
    }

    /// Housekeeping (call at least every 300 s): invalidates active violations whose behavior has
    /// had no datapoint for more than `invalidate_after_s` (spec: §6.3).
    pub fn housekeeping(&mut self, now: Millis) -> Vec<Emitted> {
        let limit = (self.settings.invalidate_after_s as Millis) * 1000;
        let thing = self.settings.thing_name.clone();
        let mut out = Vec::new();
        for (profile, m) in self.state.behaviors.iter_mut() {
            for st in m.values_mut() {
                let silent = st.last_datapoint.is_none_or(|t| now - t > limit);
                if st.mode == AlarmMode::Alarm && silent {
                    if let Some(ev) = invalidated(&thing, profile, st, now) {
                        out.push(ev);
                    }
                    st.mode = AlarmMode::Normal;
                    st.v = 0;
                    st.c = 0;
                    st.active = None;
                }
            }
        }
        out
    }

    /// The ActiveViolations, newest start first (spec: §6.7).
    pub fn active_violations(&self) -> Vec<ActiveViolation> {
        let mut out: Vec<ActiveViolation> = Vec::new();
        for c in &self.compiled {
            let Some(st) = self.state_of(c) else { continue };
            let Some(a) = &st.active else { continue };
            out.push(ActiveViolation {
                violation_id: a.id.clone(),
                thing_name: self.settings.thing_name.clone(),
                security_profile_name: c.profile.clone(),
                behavior: c.behavior.clone(),
                last_violation_value: Some(a.last_value.clone()),
                violation_event_additional_info: additional_info(&c.behavior),
                verification_state: None,
                verification_state_description: None,
                last_violation_time: ms_to_secs(a.last_time),
                violation_start_time: ms_to_secs(a.start),
            });
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
        for c in &self.compiled {
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
        for c in &self.compiled {
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
        for (profile, behavior) in &self.ml_off {
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

    /// Window aggregation for device metrics, then the final datapoint.
    fn datapoint(&mut self, i: usize, raw: Observed, now: Millis, out: &mut Vec<Emitted>) {
        // Invariant: every caller passes a loop index below compiled.len().
        let c = &self.compiled[i];
        let value = match (c.window_ms, c.info.aggregation, raw.scalar()) {
            (Some(d), Aggregation::Counter | Aggregation::Gauge, Some(x)) => {
                let worst_max = c.op().is_none_or(NumOp::worst_is_max);
                let counter = c.info.aggregation == Aggregation::Counter;
                let is_count = matches!(raw, Observed::Count(_));
                let Some(st) = self.state_mut(i) else { return };
                st.window.prune_through(now - d);
                st.window.push(now, x);
                let agg = if counter {
                    st.window.sum()
                } else if worst_max {
                    st.window.max().unwrap_or(x)
                } else {
                    st.window.min().unwrap_or(x)
                };
                if is_count {
                    Observed::Count(agg.max(0.0) as u64)
                } else {
                    Observed::Number(agg)
                }
            }
            _ => raw,
        };
        self.datapoint_final(i, value, now, out);
    }

    fn state_mut(&mut self, i: usize) -> Option<&mut BehaviorState> {
        // Invariant: called from datapoint with its in-bounds index.
        let c = &self.compiled[i];
        self.state
            .behaviors
            .get_mut(&c.profile)?
            .get_mut(&c.behavior.name)
    }

    /// Decides violating/normal for a windowed value and runs the state machine.
    fn datapoint_final(&mut self, i: usize, value: Observed, now: Millis, out: &mut Vec<Emitted>) {
        let lookback = (self.settings.stat_lookback_s as Millis) * 1000;
        let min_points = self.settings.stat_min_points;
        // Disjoint field borrows: no clone of the compiled behavior on the hot path.
        // Invariant: every caller passes a loop index below compiled.len().
        let c = &self.compiled[i];
        let thing = self.settings.thing_name.as_str();
        let seq = self.state.seq + 1;
        let fleet = self
            .state
            .fleet_thresholds
            .get(&c.profile)
            .and_then(|m| m.get(&c.behavior.name))
            .copied();
        let Some(st) = self
            .state
            .behaviors
            .get_mut(&c.profile)
            .and_then(|m| m.get_mut(&c.behavior.name))
        else {
            return;
        };
        let Some(violating) = evaluate(&c.check, &value, st, now, lookback, min_points, fleet)
        else {
            return;
        };
        st.last_datapoint = Some(now);
        let mut new_seq = false;
        // spec: §3.4 state machine.
        match st.mode {
            AlarmMode::Normal => {
                if violating {
                    st.v += 1;
                    if st.v >= c.cda {
                        let id = violation_id(thing, &c.profile, &c.behavior.name, now, seq);
                        new_seq = true;
                        st.mode = AlarmMode::Alarm;
                        st.v = 0;
                        st.c = 0;
                        st.active = Some(ActiveState {
                            id: id.clone(),
                            start: now,
                            last_time: now,
                            last_value: value.to_metric_value(),
                        });
                        out.push(event(
                            thing,
                            c,
                            id,
                            Some(value.to_metric_value()),
                            ViolationEventType::InAlarm,
                            now,
                        ));
                    }
                } else {
                    st.v = 0;
                }
            }
            AlarmMode::Alarm => {
                if violating {
                    st.c = 0;
                    if let Some(a) = st.active.as_mut() {
                        a.last_time = now;
                        a.last_value = value.to_metric_value();
                    }
                } else {
                    st.c += 1;
                    if st.c >= c.cdc {
                        st.mode = AlarmMode::Normal;
                        st.c = 0;
                        st.v = 0;
                        if let Some(a) = st.active.take() {
                            out.push(event(
                                thing,
                                c,
                                a.id,
                                Some(value.to_metric_value()),
                                ViolationEventType::AlarmCleared,
                                now,
                            ));
                        }
                    }
                }
            }
        }
        if new_seq {
            self.state.seq = seq;
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

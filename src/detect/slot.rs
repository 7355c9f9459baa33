//! One evaluation, shared by the device engine ([`DetectEngine`](super::engine::DetectEngine))
//! and the fleet ([`FleetDetect`](super::fleet::FleetDetect)): compiling a profile set, the
//! datapoints of a report or a cloud tick, window aggregation, the CDA/CDC state machine,
//! invalidation and reconfiguration, each over one compiled behavior and its state. The
//! containers only find the state of a behavior; every rule lives here, once.
//!
//! spec: detect.md §2.2 (values), §3 (evaluation), §3.4 (state machine), §6.3 (invalidation).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::catalog::Aggregation;
use super::compile::{compile, Check, Compiled, Source};
use super::criteria::NumOp;
use super::engine::{EngineSettings, Millis};
use super::evaluate::{
    additional_info, custom_value, device_value, evaluate, event, invalidated, Observed,
};
use super::input::{CloudMetric, DeviceReport, TrafficWindows};
use super::profile::{Behavior, SecurityProfile};
use super::state::{ActiveState, AlarmMode, BehaviorState, Emitted};
use super::validate::{self, criteria_type, CriteriaType, ValidationContext};
use super::violation::{ms_to_secs, violation_id, ActiveViolation, ViolationEventType};
use super::{Diagnostic, DiagnosticKind};

/// profile → behavior → state (the device engine's layout, also the reconcile currency).
pub(super) type StateMap = BTreeMap<String, BTreeMap<String, BehaviorState>>;

/// A compiled profile set with its remarks (built once; the fleet shares it by all things).
#[derive(Debug, Clone, Default)]
pub(super) struct CompiledSet {
    pub(super) compiled: Vec<Compiled>,
    pub(super) diagnostics: Vec<Diagnostic>,
    pub(super) profile_names: BTreeSet<String>,
    /// ML behaviors not evaluated because ML is off (reported as PENDING_BUILD).
    pub(super) ml_off: Vec<(String, String)>,
}

impl CompiledSet {
    pub(super) fn build(
        profiles: &[SecurityProfile],
        ctx: &ValidationContext,
        settings: &EngineSettings,
    ) -> CompiledSet {
        let mut set = CompiledSet {
            profile_names: profiles
                .iter()
                .map(|p| p.security_profile_name.clone())
                .collect(),
            ..CompiledSet::default()
        };
        let mut seen_profiles = BTreeSet::new();
        for p in profiles {
            let pname = &p.security_profile_name;
            if !seen_profiles.insert(pname.as_str()) {
                set.diagnostics.push(Diagnostic {
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
                set.diagnostics.push(Diagnostic {
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
                    set.diagnostics.push(Diagnostic {
                        source_name: String::new(),
                        profile: pname.clone(),
                        behavior: Some(b.name.clone()),
                        kind: DiagnosticKind::Skipped,
                        message: "duplicate behavior name; only the first is evaluated".to_owned(),
                    });
                    continue;
                }
                match compile(pname, b, ctx, settings) {
                    Ok(c) => set.compiled.push(c),
                    Err((kind, message)) => {
                        if kind == DiagnosticKind::NotEvaluable
                            && criteria_type(b) == Some(CriteriaType::MachineLearning)
                        {
                            set.ml_off.push((pname.clone(), b.name.clone()));
                        }
                        set.diagnostics.push(Diagnostic {
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
        set
    }
}

/// What happens to a behavior's stored state when the configuration changes.
pub(super) fn definition_changed(old: &Behavior, new: &Behavior) -> bool {
    // spec: §6.3 — suppressAlerts / exportMetric alone do NOT invalidate.
    old.metric != new.metric
        || old.metric_dimension != new.metric_dimension
        || old.criteria != new.criteria
}

/// The states for `compiled` taken from `old`: kept when the definition is unchanged, fresh
/// otherwise; episodes of changed, removed or unevaluable behaviors are invalidated at `now`
/// (spec: §6.3).
pub(super) fn reconcile(
    compiled: &[Compiled],
    mut old: StateMap,
    thing: &str,
    settings: &EngineSettings,
    now: Millis,
    out: &mut Vec<Emitted>,
) -> StateMap {
    let mut new = StateMap::new();
    for c in compiled {
        let prev = old
            .get_mut(&c.profile)
            .and_then(|m| m.remove(&c.behavior.name));
        let st = match prev {
            Some(mut st) if !definition_changed(&st.definition, &c.behavior) => {
                st.definition = Arc::clone(&c.behavior);
                st
            }
            Some(st) => {
                if let Some(ev) = invalidated(thing, &c.profile, &st, now) {
                    out.push(ev);
                }
                BehaviorState::new(Arc::clone(&c.behavior), settings)
            }
            None => BehaviorState::new(Arc::clone(&c.behavior), settings),
        };
        new.entry(c.profile.clone())
            .or_default()
            .insert(c.behavior.name.clone(), st);
    }
    // Whatever is left has no evaluable behavior any more.
    for (profile, m) in old {
        for (_, st) in m {
            if let Some(ev) = invalidated(thing, &profile, &st, now) {
                out.push(ev);
            }
        }
    }
    new
}

/// The raw per-report values of the device-side and custom behaviors, as (compiled index,
/// value). Each distinct source is extracted once per report, however many behaviors use it.
pub(super) fn report_values(
    compiled: &[Compiled],
    report: &DeviceReport,
) -> Vec<(usize, Observed)> {
    let mut out = Vec::new();
    let mut cache: Vec<(&Source, Option<Observed>)> = Vec::new();
    for (i, c) in compiled.iter().enumerate() {
        let source = &c.source;
        if !matches!(source, Source::Device(_) | Source::Custom(..)) {
            continue;
        }
        let raw = match cache.iter().find(|(s, _)| *s == source) {
            Some((_, v)) => v.clone(),
            None => {
                let v = match source {
                    Source::Device(bi) => device_value(*bi, report),
                    Source::Custom(name, t) => custom_value(name, *t, report),
                    _ => None,
                };
                cache.push((source, v.clone()));
                v
            }
        };
        if let Some(raw) = raw {
            out.push((i, raw));
        }
    }
    out
}

/// The datapoint value of a cloud-side behavior at the tick `now`, if any.
pub(super) fn cloud_value(
    c: &Compiled,
    traffic: &dyn TrafficWindows,
    now: Millis,
) -> Option<Observed> {
    if c.source == Source::DisconnectDuration {
        // spec: §2.3 — minutes since the loss while disconnected, 0 while connected.
        return traffic.disconnected_minutes(now).map(Observed::Count);
    }
    let Source::Cloud(metric, scope) = &c.source else {
        return None;
    };
    let d = c.window_ms.unwrap_or(300_000);
    let w = traffic.window(scope.as_ref(), *metric, now, (d / 1000) as u64)?;
    let value = if *metric == CloudMetric::MessageByteSize {
        // spec: §3.3 — static: worst single message; statistical: sum; none: no datapoint.
        if w.count == 0 {
            return None;
        }
        match (c.ctype, c.op()) {
            (CriteriaType::Statistical, _) => w.bytes_sum,
            (_, Some(op)) if !op.worst_is_max() => w.bytes_min.unwrap_or(0),
            _ => w.bytes_max.unwrap_or(0),
        }
    } else {
        w.count
    };
    Some(Observed::Count(value))
}

/// Window aggregation of a device-side value into the datapoint value (spec: §3.3).
pub(super) fn windowed(
    c: &Compiled,
    st: &mut BehaviorState,
    raw: Observed,
    now: Millis,
) -> Observed {
    match (c.window_ms, c.info.aggregation, raw.scalar()) {
        (Some(d), Aggregation::Counter | Aggregation::Gauge, Some(x)) => {
            let worst_max = c.op().is_none_or(NumOp::worst_is_max);
            let counter = c.info.aggregation == Aggregation::Counter;
            st.window.prune_through(now - d);
            st.window.push(now, x);
            let agg = if counter {
                st.window.sum()
            } else if worst_max {
                st.window.max().unwrap_or(x)
            } else {
                st.window.min().unwrap_or(x)
            };
            if matches!(raw, Observed::Count(_)) {
                Observed::Count(agg.max(0.0) as u64)
            } else {
                Observed::Number(agg)
            }
        }
        _ => raw,
    }
}

/// What a datapoint is evaluated with besides its behavior and state.
pub(super) struct Step<'a> {
    pub(super) thing: &'a str,
    /// Local-history lookback (ms).
    pub(super) lookback: Millis,
    /// Local-history minimum points.
    pub(super) min_points: usize,
    /// The fleet-supplied threshold of this behavior, if any.
    pub(super) fleet: Option<f64>,
}

/// Decides violating/normal for a datapoint value and runs the state machine (spec: §3.4).
/// `seq` is the thing's violation-id sequence.
pub(super) fn datapoint_final(
    c: &Compiled,
    st: &mut BehaviorState,
    seq: &mut u64,
    value: Observed,
    now: Millis,
    step: &Step<'_>,
    out: &mut Vec<Emitted>,
) {
    let thing = step.thing;
    let Some(violating) = evaluate(
        &c.check,
        &value,
        st,
        now,
        step.lookback,
        step.min_points,
        step.fleet,
    ) else {
        return;
    };
    st.last_datapoint = Some(now);
    match st.mode {
        AlarmMode::Normal => {
            if violating {
                st.v += 1;
                if st.v >= c.cda {
                    let next = *seq + 1;
                    let id = violation_id(thing, &c.profile, &c.behavior.name, now, next);
                    *seq = next;
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
}

/// Invalidates an active violation whose behavior has had no datapoint for more than
/// `limit_ms` (spec: §6.3).
pub(super) fn housekeep(
    thing: &str,
    profile: &str,
    st: &mut BehaviorState,
    now: Millis,
    limit_ms: Millis,
    out: &mut Vec<Emitted>,
) {
    let silent = st.last_datapoint.is_none_or(|t| now - t > limit_ms);
    if st.mode == AlarmMode::Alarm && silent {
        if let Some(ev) = invalidated(thing, profile, st, now) {
            out.push(ev);
        }
        st.mode = AlarmMode::Normal;
        st.v = 0;
        st.c = 0;
        st.active = None;
    }
}

/// The ActiveViolation of a behavior in alarm.
pub(super) fn active_violation(
    thing: &str,
    c: &Compiled,
    st: &BehaviorState,
) -> Option<ActiveViolation> {
    let a = st.active.as_ref()?;
    Some(ActiveViolation {
        violation_id: a.id.clone(),
        thing_name: thing.to_owned(),
        security_profile_name: c.profile.clone(),
        behavior: (*c.behavior).clone(),
        last_violation_value: Some(a.last_value.clone()),
        violation_event_additional_info: additional_info(&c.behavior),
        verification_state: None,
        verification_state_description: None,
        last_violation_time: ms_to_secs(a.last_time),
        violation_start_time: ms_to_secs(a.start),
    })
}

/// The percentile of a statistical behavior with a fleet-supplied threshold.
pub(super) fn fleet_percentile(c: &Compiled) -> Option<f64> {
    match c.check {
        Check::Statistical(_, p, super::engine::StatMode::FleetSupplied) => Some(p),
        _ => None,
    }
}

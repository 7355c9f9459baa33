//! Evaluate: one datapoint against one compiled check (operators, statistical history, the ML
//! baseline), the raw per-report values of device-side and custom metrics, and the
//! ViolationEvents they give (spec: detect.md §2.2, §3.2, §6.3, §7.2).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::catalog::BuiltIn;
use super::compile::{Check, Compiled};
use super::criteria::{self, is_normal_u64, normalise};
use super::engine::{Millis, StatMode};
use super::input::{DeviceReport, PortList};
use super::profile::{Behavior, MetricValue};
use super::state::{Baseline, BehaviorState, Emitted, ModelStatus};
use super::violation::{ms_to_secs, AdditionalInfo, ViolationEvent, ViolationEventType};
use crate::custom_metric::{CustomMetricType, CustomValue};

const DAY_MS: Millis = 86_400_000;

/// Observed datapoint value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Observed {
    Count(u64),
    Number(f64),
    Ports(Vec<u16>),
    Ips(Vec<IpAddr>),
    Strings(Vec<String>),
    Numbers(Vec<f64>),
}

impl Observed {
    pub(super) fn scalar(&self) -> Option<f64> {
        match self {
            Observed::Count(n) => Some(*n as f64),
            Observed::Number(x) => Some(*x),
            _ => None,
        }
    }

    /// The `metricValue` form: lists sorted and deduplicated, IPs bare (spec: §3.2).
    pub(super) fn to_metric_value(&self) -> MetricValue {
        let mut v = MetricValue::default();
        match self {
            Observed::Count(n) => v.count = Some(*n),
            Observed::Number(x) => v.number = Some(*x),
            Observed::Ports(p) => v.ports = Some(p.iter().map(|x| i64::from(*x)).collect()),
            Observed::Ips(ips) => {
                // spec: TC11 lists "10.1.2.3" before "8.8.8.8": sorted as text.
                let text: BTreeSet<String> = ips.iter().map(IpAddr::to_string).collect();
                v.cidrs = Some(text.into_iter().collect());
            }
            Observed::Strings(s) => v.strings = Some(s.clone()),
            Observed::Numbers(n) => v.numbers = Some(n.clone()),
        }
        v
    }
}

pub(super) fn sorted_dedup<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let s: BTreeSet<T> = v.iter().cloned().collect();
    s.into_iter().collect()
}

pub(super) fn sorted_dedup_f64(v: &[f64]) -> Vec<f64> {
    let mut out = v.to_vec();
    out.sort_by(f64::total_cmp);
    out.dedup();
    out
}
/// Violating (Some(true)), normal (Some(false)) or no datapoint (None). Maintains the
/// statistical history and the ML baseline.
pub(super) fn evaluate(
    check: &Check,
    value: &Observed,
    st: &mut BehaviorState,
    now: Millis,
    lookback: Millis,
    min_points: usize,
    fleet: Option<f64>,
) -> Option<bool> {
    let normal = match (check, value) {
        (Check::Count(op, v), Observed::Count(x)) => is_normal_u64(*op, *x, *v),
        (Check::Count(op, v), _) => op.is_normal(value.scalar()?, *v as f64),
        (Check::Number(op, v), _) => op.is_normal(value.scalar()?, *v),
        (Check::Statistical(op, p, mode), _) => {
            let x = value.scalar()?;
            let threshold = match mode {
                StatMode::Off => None,
                StatMode::FleetSupplied => fleet,
                StatMode::LocalHistory => {
                    st.history.prune_before(now - lookback);
                    let mut h: Vec<f64> = st.history.values().collect();
                    st.history.push(now, x);
                    // spec: §3.5 — |H| >= Nmin and no negative value.
                    if h.len() < min_points || h.iter().any(|v| *v < 0.0) {
                        None
                    } else {
                        h.sort_by(f64::total_cmp);
                        criteria::nearest_rank(&h, *p)
                    }
                }
            };
            op.is_normal(x, threshold?)
        }
        (Check::Ml { k, floor, .. }, _) => {
            let x = value.scalar()?;
            ml_step(st, x, now);
            let b = st.baseline.as_ref()?;
            criteria::robust_z(x, b.median, b.mad, *floor) <= *k
        }
        (Check::Ports(op, set), Observed::Ports(xs)) => op.is_normal(xs, |p| set.contains(p)),
        (Check::Cidrs(op, set), Observed::Ips(xs)) => {
            op.is_normal(xs, |ip| set.iter().any(|c| c.contains(*ip)))
        }
        (Check::Strings(op, set), Observed::Strings(xs)) => op.is_normal(xs, |s| set.contains(s)),
        (Check::Numbers(op, set), Observed::Numbers(xs)) => {
            op.is_normal(xs, |x| set.iter().any(|s| s == x))
        }
        _ => return None,
    };
    Some(!normal)
}

/// Feeds one value to the local baseline and rebuilds it daily (spec: §7.2).
pub(super) fn ml_step(st: &mut BehaviorState, x: f64, now: Millis) {
    const LOOKBACK: Millis = 14 * DAY_MS;
    const MIN_POINTS: usize = 2016;
    st.training_start.get_or_insert(now);
    st.history.prune_before(now - LOOKBACK);
    st.history.push(now, x);
    let due = st.last_attempt.is_none_or(|t| now - t >= DAY_MS);
    let pending = st.baseline.is_none() && st.model_status != ModelStatus::Expired;
    if !(due || pending) {
        return;
    }
    let enough =
        st.history.len() >= MIN_POINTS && st.history.oldest().is_some_and(|o| now - o >= LOOKBACK);
    if enough {
        let values: Vec<f64> = st.history.values().collect();
        if let Some((median, mad)) = criteria::median_mad(&values) {
            st.baseline = Some(Baseline {
                median,
                mad,
                built_at: now,
            });
            st.model_status = ModelStatus::Active;
            st.failed_attempts = 0;
            st.last_attempt = Some(now);
        }
    } else if due {
        st.last_attempt = Some(now);
        if st.model_status == ModelStatus::Active {
            st.failed_attempts += 1;
            if st.failed_attempts >= 30 {
                st.model_status = ModelStatus::Expired;
                st.baseline = None;
            }
        }
    }
}

pub(super) fn additional_info(b: &Behavior) -> Option<AdditionalInfo> {
    b.criteria
        .as_ref()?
        .ml_detection_config
        .as_ref()
        .map(|m| AdditionalInfo {
            confidence_level: m.confidence_level.clone(),
        })
}

pub(super) fn event(
    thing: &str,
    c: &Compiled,
    id: String,
    metric_value: Option<MetricValue>,
    kind: ViolationEventType,
    now: Millis,
) -> Emitted {
    make_event(thing, &c.profile, &c.behavior, id, metric_value, kind, now)
}

pub(super) fn make_event(
    thing: &str,
    profile: &str,
    behavior: &Behavior,
    id: String,
    metric_value: Option<MetricValue>,
    kind: ViolationEventType,
    now: Millis,
) -> Emitted {
    Emitted {
        notify: behavior.suppress_alerts != Some(true),
        event: ViolationEvent {
            violation_id: id,
            thing_name: thing.to_owned(),
            security_profile_name: profile.to_owned(),
            behavior: behavior.clone(),
            metric_value,
            violation_event_additional_info: additional_info(behavior),
            violation_event_type: kind,
            verification_state: None,
            verification_state_description: None,
            violation_event_time: ms_to_secs(now),
        },
    }
}

/// alarm-invalidated for a state in Alarm (no metricValue, unaligned time).
pub(super) fn invalidated(
    thing: &str,
    profile: &str,
    st: &BehaviorState,
    now: Millis,
) -> Option<Emitted> {
    let a = st.active.as_ref()?;
    Some(make_event(
        thing,
        profile,
        &st.definition,
        a.id.clone(),
        None,
        ViolationEventType::AlarmInvalidated,
        now,
    ))
}

/// The raw per-report value of a device-side metric (spec: §2.2).
pub(super) fn device_value(bi: BuiltIn, r: &DeviceReport) -> Option<Observed> {
    let distinct = |p: &PortList| sorted_dedup(&p.ports);
    Some(match bi {
        BuiltIn::BytesIn => Observed::Count(r.network?.bytes_in),
        BuiltIn::BytesOut => Observed::Count(r.network?.bytes_out),
        BuiltIn::PacketsIn => Observed::Count(r.network?.packets_in),
        BuiltIn::PacketsOut => Observed::Count(r.network?.packets_out),
        BuiltIn::NumListeningTcp => {
            let p = r.tcp_ports.as_ref()?;
            Observed::Count(p.total.unwrap_or(distinct(p).len() as u64))
        }
        BuiltIn::NumListeningUdp => {
            let p = r.udp_ports.as_ref()?;
            Observed::Count(p.total.unwrap_or(distinct(p).len() as u64))
        }
        BuiltIn::NumEstablished => {
            let e = r.established.as_ref()?;
            Observed::Count(e.total.unwrap_or(e.remote_ips.len() as u64))
        }
        BuiltIn::DestinationIps => {
            let e = r.established.as_ref()?;
            let ips: Vec<IpAddr> = e.remote_ips.iter().map(|ip| normalise(*ip)).collect();
            Observed::Ips(sorted_dedup(&ips))
        }
        BuiltIn::ListeningTcp => Observed::Ports(distinct(r.tcp_ports.as_ref()?)),
        BuiltIn::ListeningUdp => Observed::Ports(distinct(r.udp_ports.as_ref()?)),
        _ => return None,
    })
}

/// The value of a custom metric in the report, if present with the right type.
pub(super) fn custom_value(name: &str, t: CustomMetricType, r: &DeviceReport) -> Option<Observed> {
    let (_, v) = r.custom.iter().find(|(n, _)| n == name)?;
    if v.metric_type() != t {
        return None;
    }
    Some(match v {
        CustomValue::Number(x) => Observed::Number(*x),
        CustomValue::NumberList(xs) => Observed::Numbers(sorted_dedup_f64(xs)),
        CustomValue::StringList(xs) => Observed::Strings(sorted_dedup(xs)),
        CustomValue::IpList(xs) => {
            let ips: Vec<IpAddr> = xs.iter().map(|ip| normalise(*ip)).collect();
            Observed::Ips(sorted_dedup(&ips))
        }
    })
}

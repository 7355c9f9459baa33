//! The list APIs as pure functions over recorded events and active violations:
//! ListViolationEvents, ListActiveViolations and PutVerificationStateOnViolation, with their
//! filters, ordering, opaque pagination tokens and API errors.
//!
//! spec: detect.md §6.5, §6.6, §6.7, TC31, TC32, TC34.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::engine::Emitted;
use super::validate::{criteria_type, CriteriaType};
use super::violation::{ActiveViolation, VerificationState, ViolationEvent};
use crate::hex;

/// An API error, serialised as `{"__type":"InvalidRequestException","message":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Bad parameters, unknown violation id, reused token.
    #[error("InvalidRequestException: {0}")]
    InvalidRequest(String),
    /// Unknown security profile.
    #[error("ResourceNotFoundException: {0}")]
    ResourceNotFound(String),
}

impl ApiError {
    /// The exception name (`InvalidRequestException`, `ResourceNotFoundException`).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "InvalidRequestException",
            ApiError::ResourceNotFound(_) => "ResourceNotFoundException",
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            ApiError::InvalidRequest(m) | ApiError::ResourceNotFound(m) => m,
        }
    }
}

impl Serialize for ApiError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ApiError", 2)?;
        st.serialize_field("__type", self.code())?;
        st.serialize_field("message", self.message())?;
        st.end()
    }
}

/// An event as stored: the record sequence number gives the tie-break order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Record order (increasing).
    pub seq: u64,
    /// The event as emitted (verification state overlaid at query time).
    pub event: ViolationEvent,
}

/// Stored verification state per violationId.
pub type VerificationMap = BTreeMap<String, (VerificationState, Option<String>)>;

/// ListViolationEvents parameters (camelCase as the API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListViolationEventsRequest {
    /// Inclusive start (epoch s). Required.
    pub start_time: f64,
    /// Inclusive end (epoch s). Required.
    pub end_time: f64,
    /// Filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_name: Option<String>,
    /// Filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_profile_name: Option<String>,
    /// STATIC | STATISTICAL | MACHINE_LEARNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior_criteria_type: Option<String>,
    /// Tri-state: absent = all, true = only suppressed, false = only unsuppressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_suppressed_alerts: Option<bool>,
    /// Filter (absent state = UNKNOWN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_state: Option<String>,
    /// Token from a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1..250, default 250.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<i64>,
}

/// ListViolationEvents response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListViolationEventsResponse {
    /// Newest first.
    pub violation_events: Vec<ViolationEvent>,
    /// Present when more results exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// ListActiveViolations parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListActiveViolationsRequest {
    /// Filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_name: Option<String>,
    /// Filter (unknown → ResourceNotFoundException).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_profile_name: Option<String>,
    /// STATIC | STATISTICAL | MACHINE_LEARNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior_criteria_type: Option<String>,
    /// Tri-state as for events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_suppressed_alerts: Option<bool>,
    /// Filter (absent state = UNKNOWN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_state: Option<String>,
    /// Token from a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1..250, default 250.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<i64>,
}

/// ListActiveViolations response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListActiveViolationsResponse {
    /// Newest start first.
    pub active_violations: Vec<ActiveViolation>,
    /// Present when more results exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(m.into())
}

/// The name filters as the model's `DeviceDefenderThingName` (1-128 characters) and
/// `SecurityProfileName` (1-128 of `[a-zA-Z0-9:_-]`): a malformed one is an invalid request.
fn check_names(thing_name: Option<&str>, profile_name: Option<&str>) -> Result<(), ApiError> {
    if let Some(t) = thing_name {
        if !super::shapes::THING_NAME.admits(t.chars().count() as i64) {
            return Err(invalid(format!("thingName {t:?} must be 1-128 characters")));
        }
    }
    if let Some(p) = profile_name {
        if !super::validate::is_valid_name(p) {
            return Err(invalid(format!(
                "securityProfileName {p:?} must be 1-128 characters matching [a-zA-Z0-9:_-]+"
            )));
        }
    }
    Ok(())
}

fn max_results(m: Option<i64>) -> Result<usize, ApiError> {
    match m {
        None => Ok(250),
        Some(n) if (1..=250).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(format!("maxResults {n} should be in range[1,250]"))),
    }
}

fn parse_ctype(s: Option<&str>) -> Result<Option<CriteriaType>, ApiError> {
    Ok(match s {
        None => None,
        Some("STATIC") => Some(CriteriaType::Static),
        Some("STATISTICAL") => Some(CriteriaType::Statistical),
        Some("MACHINE_LEARNING") => Some(CriteriaType::MachineLearning),
        Some(o) => {
            return Err(invalid(format!(
                "behaviorCriteriaType {o} should be one of [STATIC, STATISTICAL, MACHINE_LEARNING]"
            )))
        }
    })
}

fn parse_vstate(s: Option<&str>) -> Result<Option<VerificationState>, ApiError> {
    match s {
        None => Ok(None),
        Some(t) => VerificationState::parse(t).map(Some).ok_or_else(|| {
            invalid(format!(
                "verificationState {t} should be one of [FALSE_POSITIVE, BENIGN_POSITIVE, TRUE_POSITIVE, UNKNOWN]"
            ))
        }),
    }
}

/// First 8 bytes of SHA-256 over the canonical filter text.
fn filter_hash(canonical: &str) -> String {
    // Invariant: a SHA-256 digest is 32 bytes.
    hex::encode(&Sha256::digest(canonical.as_bytes())[..8])
}

/// Token = hex("v1|<time bits>|<key>|<filter hash>"): opaque, encodes position and filters.
fn make_token(time: f64, key: &str, hash: &str) -> String {
    hex::encode(format!("v1|{}|{key}|{hash}", time.to_bits()).as_bytes())
}

fn read_token(token: &str, hash: &str) -> Result<(f64, String), ApiError> {
    let (time, key, h) = decode_token(token)?;
    if h != hash {
        return Err(invalid(
            "nextToken was issued for a request with different filters",
        ));
    }
    Ok((time, key))
}

/// The position a page token holds: the time and key of the last item of the page before it.
/// For a store that pages in its own queries after the request was checked by
/// [`list_violation_events`] / [`list_active_violations`] (which also check the token's filters).
pub fn token_position(token: &str) -> Result<(f64, String), ApiError> {
    decode_token(token).map(|(time, key, _)| (time, key))
}

fn decode_token(token: &str) -> Result<(f64, String, String), ApiError> {
    let bad = || invalid("nextToken is invalid");
    let bytes = hex::decode(token).ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<&str> = text.splitn(4, '|').collect();
    let [v, bits, key, h] = parts.as_slice() else {
        return Err(bad());
    };
    if *v != "v1" {
        return Err(bad());
    }
    let bits: u64 = bits.parse().map_err(|_| bad())?;
    Ok((f64::from_bits(bits), (*key).to_owned(), (*h).to_owned()))
}

fn suppressed(b: &super::profile::Behavior) -> bool {
    b.suppress_alerts == Some(true)
}

fn overlay(mut e: ViolationEvent, v: &VerificationMap) -> ViolationEvent {
    if let Some((state, desc)) = v.get(&e.violation_id) {
        e.verification_state = Some(*state);
        e.verification_state_description = desc.clone();
    }
    e
}

/// ListViolationEvents over `events` (any order; `seq` breaks time ties, later first).
pub fn list_violation_events(
    events: &[RecordedEvent],
    verification: &VerificationMap,
    req: &ListViolationEventsRequest,
) -> Result<ListViolationEventsResponse, ApiError> {
    if !(req.start_time.is_finite() && req.end_time.is_finite()) {
        return Err(invalid("startTime and endTime are required"));
    }
    if req.start_time > req.end_time {
        return Err(invalid("startTime must not be after endTime"));
    }
    check_names(
        req.thing_name.as_deref(),
        req.security_profile_name.as_deref(),
    )?;
    let limit = max_results(req.max_results)?;
    let ctype = parse_ctype(req.behavior_criteria_type.as_deref())?;
    let vstate = parse_vstate(req.verification_state.as_deref())?;
    let mut canonical = req.clone();
    canonical.next_token = None;
    canonical.max_results = None;
    let hash = filter_hash(&serde_json::to_string(&canonical).unwrap_or_default());
    let after = match &req.next_token {
        Some(t) => {
            let (time, key) = read_token(t, &hash)?;
            Some((
                time,
                key.parse::<u64>()
                    .map_err(|_| invalid("nextToken is invalid"))?,
            ))
        }
        None => None,
    };
    let mut hits: Vec<&RecordedEvent> = events
        .iter()
        .filter(|r| {
            let e = &r.event;
            let t = e.violation_event_time;
            let state = verification.get(&e.violation_id).map(|s| s.0);
            req.start_time <= t
                && t <= req.end_time
                && req.thing_name.as_ref().is_none_or(|n| *n == e.thing_name)
                && req
                    .security_profile_name
                    .as_ref()
                    .is_none_or(|n| *n == e.security_profile_name)
                && ctype.is_none_or(|c| criteria_type(&e.behavior) == Some(c))
                && req
                    .list_suppressed_alerts
                    .is_none_or(|want| suppressed(&e.behavior) == want)
                && vstate.is_none_or(|v| state.unwrap_or(VerificationState::Unknown) == v)
        })
        .collect();
    hits.sort_by(|a, b| {
        b.event
            .violation_event_time
            .total_cmp(&a.event.violation_event_time)
            .then(b.seq.cmp(&a.seq))
    });
    let start = match after {
        None => 0,
        Some((time, seq)) => hits
            .iter()
            .position(|r| {
                let t = r.event.violation_event_time;
                t < time || (t == time && r.seq < seq)
            })
            .unwrap_or(hits.len()),
    };
    let page: Vec<&RecordedEvent> = hits.iter().skip(start).take(limit).copied().collect();
    let next_token = match page.last() {
        Some(last) if start + page.len() < hits.len() => Some(make_token(
            last.event.violation_event_time,
            &last.seq.to_string(),
            &hash,
        )),
        _ => None,
    };
    Ok(ListViolationEventsResponse {
        violation_events: page
            .into_iter()
            .map(|r| overlay(r.event.clone(), verification))
            .collect(),
        next_token,
    })
}

/// ListActiveViolations over the engine's active violations. `known_profiles` are the configured
/// profile names (an unknown `securityProfileName` → ResourceNotFoundException).
pub fn list_active_violations(
    active: &[ActiveViolation],
    known_profiles: &BTreeSet<String>,
    verification: &VerificationMap,
    req: &ListActiveViolationsRequest,
) -> Result<ListActiveViolationsResponse, ApiError> {
    check_names(
        req.thing_name.as_deref(),
        req.security_profile_name.as_deref(),
    )?;
    if let Some(p) = &req.security_profile_name {
        if !known_profiles.contains(p) {
            return Err(ApiError::ResourceNotFound(format!(
                "security profile {p} does not exist"
            )));
        }
    }
    let limit = max_results(req.max_results)?;
    let ctype = parse_ctype(req.behavior_criteria_type.as_deref())?;
    let vstate = parse_vstate(req.verification_state.as_deref())?;
    let mut canonical = req.clone();
    canonical.next_token = None;
    canonical.max_results = None;
    let hash = filter_hash(&serde_json::to_string(&canonical).unwrap_or_default());
    let after = match &req.next_token {
        Some(t) => Some(read_token(t, &hash)?),
        None => None,
    };
    let mut hits: Vec<&ActiveViolation> = active
        .iter()
        .filter(|a| {
            let state = verification.get(&a.violation_id).map(|s| s.0);
            req.thing_name.as_ref().is_none_or(|n| *n == a.thing_name)
                && req
                    .security_profile_name
                    .as_ref()
                    .is_none_or(|n| *n == a.security_profile_name)
                && ctype.is_none_or(|c| criteria_type(&a.behavior) == Some(c))
                && req
                    .list_suppressed_alerts
                    .is_none_or(|want| suppressed(&a.behavior) == want)
                && vstate.is_none_or(|v| state.unwrap_or(VerificationState::Unknown) == v)
        })
        .collect();
    // Newest start first; id breaks ties so pages are stable.
    hits.sort_by(|a, b| {
        b.violation_start_time
            .total_cmp(&a.violation_start_time)
            .then(b.violation_id.cmp(&a.violation_id))
    });
    let start = match &after {
        None => 0,
        Some((time, id)) => hits
            .iter()
            .position(|a| {
                a.violation_start_time < *time
                    || (a.violation_start_time == *time && a.violation_id < *id)
            })
            .unwrap_or(hits.len()),
    };
    let page: Vec<&ActiveViolation> = hits.iter().skip(start).take(limit).copied().collect();
    let next_token = match page.last() {
        Some(last) if start + page.len() < hits.len() => Some(make_token(
            last.violation_start_time,
            &last.violation_id,
            &hash,
        )),
        _ => None,
    };
    Ok(ListActiveViolationsResponse {
        active_violations: page
            .into_iter()
            .map(|a| {
                let mut a = a.clone();
                if let Some((s, d)) = verification.get(&a.violation_id) {
                    a.verification_state = Some(*s);
                    a.verification_state_description = d.clone();
                }
                a
            })
            .collect(),
        next_token,
    })
}

/// PutVerificationStateOnViolation: checks and stores the state (spec: §6.5). `known_ids` are
/// the ids of recorded events and active violations.
pub fn put_verification_state(
    verification: &mut VerificationMap,
    known_ids: &BTreeSet<String>,
    violation_id: &str,
    state: &str,
    description: Option<&str>,
) -> Result<(), ApiError> {
    let s = VerificationState::parse(state).ok_or_else(|| {
        invalid(format!(
            "verificationState {state} should be one of [FALSE_POSITIVE, BENIGN_POSITIVE, TRUE_POSITIVE, UNKNOWN]"
        ))
    })?;
    if let Some(d) = description {
        if d.chars().count() > 1000 {
            return Err(invalid(
                "verificationStateDescription must be at most 1000 characters",
            ));
        }
        if d.chars().any(char::is_control) {
            return Err(invalid(
                "verificationStateDescription must not contain control characters",
            ));
        }
    }
    if !known_ids.contains(violation_id) {
        return Err(invalid(format!("violation {violation_id} does not exist")));
    }
    // An omitted description removes the stored one.
    verification.insert(violation_id.to_owned(), (s, description.map(str::to_owned)));
    Ok(())
}

/// An in-memory history: the store's model, for tests, replay and small deployments. Full
/// policy: events older than the retention (default 14 days) are dropped by [`Self::expire`],
/// and beyond [`ViolationHistory::MAX_EVENTS`] the oldest event is dropped on record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViolationHistory {
    /// Recorded events in record order.
    pub events: Vec<RecordedEvent>,
    /// Stored verification states.
    pub verification: VerificationMap,
    next_seq: u64,
}

impl ViolationHistory {
    /// Most events kept.
    pub const MAX_EVENTS: usize = 100_000;

    /// Records emitted events.
    pub fn record(&mut self, emitted: &[Emitted]) {
        for e in emitted {
            if self.events.len() >= Self::MAX_EVENTS {
                // Invariant: len >= MAX_EVENTS > 0, so index 0 exists.
                self.events.remove(0);
            }
            self.next_seq += 1;
            self.events.push(RecordedEvent {
                seq: self.next_seq,
                event: e.event.clone(),
            });
        }
    }

    /// Drops events older than `now_secs − retention_secs`; their verification states go when no
    /// event or active violation refers to them.
    pub fn expire(&mut self, now_secs: f64, retention_secs: f64, active: &[ActiveViolation]) {
        let cutoff = now_secs - retention_secs;
        self.events
            .retain(|r| r.event.violation_event_time >= cutoff);
        let live: BTreeSet<&str> = self
            .events
            .iter()
            .map(|r| r.event.violation_id.as_str())
            .chain(active.iter().map(|a| a.violation_id.as_str()))
            .collect();
        self.verification.retain(|id, _| live.contains(id.as_str()));
    }

    /// ListViolationEvents.
    pub fn list_violation_events(
        &self,
        req: &ListViolationEventsRequest,
    ) -> Result<ListViolationEventsResponse, ApiError> {
        list_violation_events(&self.events, &self.verification, req)
    }

    /// PutVerificationStateOnViolation (ids known from history and `active`).
    pub fn put_verification_state(
        &mut self,
        active: &[ActiveViolation],
        violation_id: &str,
        state: &str,
        description: Option<&str>,
    ) -> Result<(), ApiError> {
        let known: BTreeSet<String> = self
            .events
            .iter()
            .map(|r| r.event.violation_id.clone())
            .chain(active.iter().map(|a| a.violation_id.clone()))
            .collect();
        put_verification_state(
            &mut self.verification,
            &known,
            violation_id,
            state,
            description,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::engine::{DetectEngine, EngineSettings};
    use crate::detect::profile::SecurityProfile;
    use crate::detect::validate::ValidationContext;
    use crate::detect::violation::ViolationEventType as T;
    use crate::detect::{TrafficLog, TrafficRecord};

    fn engine(behaviors: &[&str]) -> DetectEngine {
        let p: SecurityProfile = serde_json::from_str(&format!(
            r#"{{"securityProfileName":"P","behaviors":[{}]}}"#,
            behaviors.join(",")
        ))
        .unwrap();
        let mut s = EngineSettings::new("t1");
        s.statistical = crate::detect::StatMode::FleetSupplied;
        s.ml = crate::detect::MlMode::LocalBaseline;
        DetectEngine::new(s, &[p], &ValidationContext::default())
    }

    /// Drives message counts per 300 s tick and records everything.
    fn drive(e: &mut DetectEngine, h: &mut ViolationHistory, counts: &[u64]) {
        let mut log = TrafficLog::new("c");
        for (i, n) in counts.iter().enumerate() {
            let t = (i as i64 + 1) * 300_000;
            for _ in 0..*n {
                log.record(
                    t - 1,
                    TrafficRecord::Publish {
                        topic: "x".into(),
                        bytes: 1,
                    },
                );
            }
            h.record(&e.evaluate_cloud(&log, t));
        }
    }

    const B1: &str = r#"{"name":"B1","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than-equals","value":{"count":10},"durationSeconds":300}}"#;

    fn all(start: f64, end: f64) -> ListViolationEventsRequest {
        ListViolationEventsRequest {
            start_time: start,
            end_time: end,
            ..ListViolationEventsRequest::default()
        }
    }

    #[test]
    fn tc31_list_suppressed_alerts_is_a_tri_state() {
        let b1 = B1.replace(r#""name":"B1","#, r#""name":"B1","suppressAlerts":true,"#);
        let b2 = B1.replace("B1", "B2");
        let mut e = engine(&[&b1, &b2]);
        let mut h = ViolationHistory::default();
        drive(&mut e, &mut h, &[15]);
        let names = |r: ListViolationEventsRequest| -> Vec<String> {
            h.list_violation_events(&r)
                .unwrap()
                .violation_events
                .iter()
                .map(|e| e.behavior.name.clone())
                .collect()
        };
        assert_eq!(names(all(0.0, 1e12)).len(), 2);
        assert_eq!(
            names(ListViolationEventsRequest {
                list_suppressed_alerts: Some(false),
                ..all(0.0, 1e12)
            }),
            vec!["B2"]
        );
        assert_eq!(
            names(ListViolationEventsRequest {
                list_suppressed_alerts: Some(true),
                ..all(0.0, 1e12)
            }),
            vec!["B1"]
        );
    }

    #[test]
    fn tc32_verification_state_rules() {
        let mut e = engine(&[B1]);
        let mut h = ViolationHistory::default();
        drive(&mut e, &mut h, &[15]);
        let id = h.events[0].event.violation_id.clone();
        h.put_verification_state(&e.active_violations(), &id, "TRUE_POSITIVE", Some("ok"))
            .unwrap();
        let act = list_active_violations(
            &e.active_violations(),
            e.profile_names(),
            &h.verification,
            &ListActiveViolationsRequest::default(),
        )
        .unwrap();
        assert_eq!(
            act.active_violations[0].verification_state,
            Some(VerificationState::TruePositive)
        );
        assert_eq!(
            act.active_violations[0]
                .verification_state_description
                .as_deref(),
            Some("ok")
        );
        let mut log = TrafficLog::new("c");
        log.record(
            599_000,
            TrafficRecord::Publish {
                topic: "x".into(),
                bytes: 1,
            },
        );
        h.record(&e.evaluate_cloud(&log, 600_000));
        let tp = h
            .list_violation_events(&ListViolationEventsRequest {
                verification_state: Some("TRUE_POSITIVE".into()),
                ..all(0.0, 1e12)
            })
            .unwrap();
        let kinds: Vec<T> = tp
            .violation_events
            .iter()
            .map(|e| e.violation_event_type)
            .collect();
        assert_eq!(kinds, vec![T::AlarmCleared, T::InAlarm]);
        assert!(tp
            .violation_events
            .iter()
            .all(|e| e.verification_state == Some(VerificationState::TruePositive)));
        // A second episode has no state: UNKNOWN finds it, TRUE_POSITIVE does not.
        let mut log2 = TrafficLog::new("c");
        for _ in 0..20 {
            log2.record(
                899_000,
                TrafficRecord::Publish {
                    topic: "x".into(),
                    bytes: 1,
                },
            );
        }
        h.record(&e.evaluate_cloud(&log2, 900_000));
        let unknown = h
            .list_violation_events(&ListViolationEventsRequest {
                verification_state: Some("UNKNOWN".into()),
                ..all(0.0, 1e12)
            })
            .unwrap();
        assert_eq!(unknown.violation_events.len(), 1);
        assert_ne!(unknown.violation_events[0].violation_id, id);
        let act = e.active_violations();
        assert_eq!(
            h.put_verification_state(&act, "nope", "TRUE_POSITIVE", None)
                .unwrap_err()
                .code(),
            "InvalidRequestException"
        );
        assert_eq!(
            h.put_verification_state(&act, &id, "MAYBE", None)
                .unwrap_err()
                .code(),
            "InvalidRequestException"
        );
        let long = "x".repeat(1001);
        assert_eq!(
            h.put_verification_state(&act, &id, "TRUE_POSITIVE", Some(&long))
                .unwrap_err()
                .code(),
            "InvalidRequestException"
        );
        // Omitting the description removes it.
        h.put_verification_state(&act, &id, "FALSE_POSITIVE", None)
            .unwrap();
        assert_eq!(
            h.verification[&id],
            (VerificationState::FalsePositive, None)
        );
        let json = serde_json::to_string(&ApiError::InvalidRequest("m".into())).unwrap();
        assert_eq!(
            json,
            r#"{"__type":"InvalidRequestException","message":"m"}"#
        );
    }

    #[test]
    fn tc34_behavior_criteria_type_filters() {
        let s = B1.replace("B1", "S");
        let t = r#"{"name":"T","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than-equals","statisticalThreshold":{"statistic":"p90"},"durationSeconds":300}}"#;
        let m = r#"{"name":"M","metric":"aws:num-messages-sent","criteria":{"mlDetectionConfig":{"confidenceLevel":"HIGH"}}}"#;
        let mut e = engine(&[&s, t, m]);
        e.set_fleet_threshold("P", "T", 10.0);
        let mut h = ViolationHistory::default();
        drive(&mut e, &mut h, &[15]);
        // M has no baseline yet: add a synthetic in-alarm event for it.
        let mut ev = h.events[0].event.clone();
        ev.behavior = serde_json::from_str(m).unwrap();
        ev.violation_id = "m".into();
        h.events.push(RecordedEvent { seq: 99, event: ev });
        let names = |ct: Option<&str>| -> Vec<String> {
            let mut v: Vec<String> = h
                .list_violation_events(&ListViolationEventsRequest {
                    behavior_criteria_type: ct.map(str::to_owned),
                    ..all(0.0, 1e12)
                })
                .unwrap()
                .violation_events
                .iter()
                .map(|e| e.behavior.name.clone())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(Some("STATIC")), vec!["S"]);
        assert_eq!(names(Some("STATISTICAL")), vec!["T"]);
        assert_eq!(names(Some("MACHINE_LEARNING")), vec!["M"]);
        assert_eq!(names(None), vec!["M", "S", "T"]);
        assert!(h
            .list_violation_events(&ListViolationEventsRequest {
                behavior_criteria_type: Some("X".into()),
                ..all(0.0, 1e12)
            })
            .is_err());
    }

    #[test]
    fn time_window_is_inclusive_newest_first_and_pages_with_a_filter_bound_token() {
        let mut e = engine(&[B1]);
        let mut h = ViolationHistory::default();
        drive(&mut e, &mut h, &[15, 1, 15, 1, 15, 1]);
        assert_eq!(h.events.len(), 6);
        let r = h.list_violation_events(&all(600.0, 1500.0)).unwrap();
        let times: Vec<f64> = r
            .violation_events
            .iter()
            .map(|e| e.violation_event_time)
            .collect();
        assert_eq!(times, vec![1500.0, 1200.0, 900.0, 600.0]);
        assert!(r.next_token.is_none());
        let p1 = h
            .list_violation_events(&ListViolationEventsRequest {
                max_results: Some(4),
                ..all(0.0, 1e12)
            })
            .unwrap();
        assert_eq!(p1.violation_events.len(), 4);
        let tok = p1.next_token.clone().unwrap();
        let p2 = h
            .list_violation_events(&ListViolationEventsRequest {
                max_results: Some(4),
                next_token: Some(tok.clone()),
                ..all(0.0, 1e12)
            })
            .unwrap();
        let times: Vec<f64> = p2
            .violation_events
            .iter()
            .map(|e| e.violation_event_time)
            .collect();
        assert_eq!(times, vec![600.0, 300.0]);
        assert!(p2.next_token.is_none());
        let reuse = h.list_violation_events(&ListViolationEventsRequest {
            next_token: Some(tok),
            thing_name: Some("t1".into()),
            ..all(0.0, 1e12)
        });
        assert_eq!(reuse.unwrap_err().code(), "InvalidRequestException");
        assert!(h.list_violation_events(&all(10.0, 5.0)).is_err());
        assert!(h
            .list_violation_events(&ListViolationEventsRequest {
                max_results: Some(251),
                ..all(0.0, 1.0)
            })
            .is_err());
        assert!(h
            .list_violation_events(&ListViolationEventsRequest {
                max_results: Some(0),
                ..all(0.0, 1.0)
            })
            .is_err());
        assert!(h
            .list_violation_events(&ListViolationEventsRequest {
                next_token: Some("zz".into()),
                ..all(0.0, 1.0)
            })
            .is_err());
    }

    #[test]
    fn same_time_events_list_later_recorded_first() {
        let b2 = B1.replace("B1", "B2");
        let mut e = engine(&[B1, &b2]);
        let mut h = ViolationHistory::default();
        drive(&mut e, &mut h, &[15]);
        let r = h.list_violation_events(&all(0.0, 1e12)).unwrap();
        assert_eq!(r.violation_events[0].behavior.name, "B2");
    }

    #[test]
    fn unknown_profile_is_resource_not_found_and_unknown_thing_is_empty() {
        let e = engine(&[B1]);
        let v = VerificationMap::new();
        let err = list_active_violations(
            &[],
            e.profile_names(),
            &v,
            &ListActiveViolationsRequest {
                security_profile_name: Some("Nope".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), "ResourceNotFoundException");
        let ok = list_active_violations(
            &[],
            e.profile_names(),
            &v,
            &ListActiveViolationsRequest {
                thing_name: Some("other".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(ok.active_violations.is_empty());
    }

    #[test]
    fn malformed_name_filters_are_invalid_requests_in_both_lists() {
        // issue 15: `list` returned an empty page and `active` ResourceNotFoundException.
        let e = engine(&[B1]);
        let v = VerificationMap::new();
        let long = "t".repeat(129);
        for (thing, profile) in [
            (Some(""), None),
            (Some(long.as_str()), None),
            (None, Some("")),
            (None, Some("no spaces")),
            (None, Some(long.as_str())),
        ] {
            let active = list_active_violations(
                &[],
                e.profile_names(),
                &v,
                &ListActiveViolationsRequest {
                    thing_name: thing.map(str::to_owned),
                    security_profile_name: profile.map(str::to_owned),
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert_eq!(
                active.code(),
                "InvalidRequestException",
                "{thing:?} {profile:?}"
            );
            let mut req = all(0.0, 1.0);
            req.thing_name = thing.map(str::to_owned);
            req.security_profile_name = profile.map(str::to_owned);
            let events = list_violation_events(&[], &v, &req).unwrap_err();
            assert_eq!(
                events.code(),
                "InvalidRequestException",
                "{thing:?} {profile:?}"
            );
        }
        // The model puts no pattern on a thing name.
        let mut req = all(0.0, 1.0);
        req.thing_name = Some("a thing/with spaces".into());
        assert!(list_violation_events(&[], &v, &req).is_ok());
    }
}

//! Violation shapes as the AWS API returns them (ViolationEvent, ActiveViolation), verification
//! states, and deterministic violation ids.
//!
//! spec: detect.md §6.1 (event types), §6.2 (shapes, field order, ids), §6.5 (verification).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::profile::{Behavior, MetricValue};

/// `violationEventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ViolationEventType {
    /// The CDA streak completed.
    #[serde(rename = "in-alarm")]
    InAlarm,
    /// The CDC streak completed.
    #[serde(rename = "alarm-cleared")]
    AlarmCleared,
    /// The violation ended without clearing (silence, behavior changed or removed).
    #[serde(rename = "alarm-invalidated")]
    AlarmInvalidated,
}

/// `verificationState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerificationState {
    /// Not a real problem.
    FalsePositive,
    /// Real but expected.
    BenignPositive,
    /// A real problem.
    TruePositive,
    /// Not assessed (the default; omitted in JSON until set).
    Unknown,
}

impl VerificationState {
    /// Parses the API text.
    pub fn parse(s: &str) -> Option<VerificationState> {
        Some(match s {
            "FALSE_POSITIVE" => VerificationState::FalsePositive,
            "BENIGN_POSITIVE" => VerificationState::BenignPositive,
            "TRUE_POSITIVE" => VerificationState::TruePositive,
            "UNKNOWN" => VerificationState::Unknown,
            _ => return None,
        })
    }
}

/// `violationEventAdditionalInfo` (ML behaviors only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalInfo {
    /// The behavior's configured confidence level.
    pub confidence_level: String,
}

/// A ViolationEvent, field order as the API and the published examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViolationEvent {
    /// Episode id shared by in-alarm / cleared / invalidated.
    pub violation_id: String,
    /// The thing.
    pub thing_name: String,
    /// The profile.
    pub security_profile_name: String,
    /// Snapshot of the behavior at event time.
    pub behavior: Behavior,
    /// The datapoint's value; absent for alarm-invalidated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_value: Option<MetricValue>,
    /// ML confidence level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation_event_additional_info: Option<AdditionalInfo>,
    /// Event type.
    pub violation_event_type: ViolationEventType,
    /// Verification state, omitted until set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_state: Option<VerificationState>,
    /// Verification description, omitted until set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_state_description: Option<String>,
    /// Epoch seconds with a fraction (e.g. `1560279000.0`).
    pub violation_event_time: f64,
}

/// An ActiveViolation, field order as the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveViolation {
    /// Episode id.
    pub violation_id: String,
    /// The thing.
    pub thing_name: String,
    /// The profile.
    pub security_profile_name: String,
    /// The behavior as currently defined.
    pub behavior: Behavior,
    /// Value of the last violating datapoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_violation_value: Option<MetricValue>,
    /// ML confidence level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation_event_additional_info: Option<AdditionalInfo>,
    /// Verification state, omitted until set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_state: Option<VerificationState>,
    /// Verification description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_state_description: Option<String>,
    /// Epoch seconds of the last violating datapoint.
    pub last_violation_time: f64,
    /// Epoch seconds of the in-alarm event.
    pub violation_start_time: f64,
}

/// Epoch milliseconds to the API's fractional seconds.
pub fn ms_to_secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// The first 16 bytes of SHA-256(`thing|profile|behavior|startMillis|seq`) as 32 lowercase hex
/// characters (spec: detect.md §6.2).
pub fn violation_id(thing: &str, profile: &str, behavior: &str, start_ms: i64, seq: u64) -> String {
    let digest =
        Sha256::digest(format!("{thing}|{profile}|{behavior}|{start_ms}|{seq}").as_bytes());
    // Invariant: a SHA-256 digest is 32 bytes.
    crate::hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_and_deterministic() {
        let a = violation_id("t1", "P", "B1", 900_000, 1);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(a, violation_id("t1", "P", "B1", 900_000, 1));
        assert_ne!(a, violation_id("t1", "P", "B1", 900_000, 2));
    }

    #[test]
    fn times_serialise_with_a_fraction() {
        assert_eq!(
            serde_json::to_string(&ms_to_secs(1_560_279_000_000)).unwrap(),
            "1560279000.0"
        );
        assert_eq!(
            serde_json::to_string(&ms_to_secs(1_600_780_245_290)).unwrap(),
            "1600780245.29"
        );
    }
}

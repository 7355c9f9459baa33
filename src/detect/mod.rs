//! The local Detect engine: security profiles, behaviors, validation, evaluation, violations,
//! the list APIs and the replay driver. Pure: no I/O, no clock; the caller reads files and passes
//! `now` (epoch milliseconds).
//!
//! spec: detect.md (all sections). Layout:
//! - [`profile`]: AWS JSON shapes and JSON/TOML parsing with line/column/path errors
//! - [`catalog`]: what each metric allows and how it aggregates
//! - [`validate`]: V1–V18, LOAD vs STRICT, the ValidateSecurityProfileBehaviors emulation
//! - [`criteria`]: operators, CIDRs, percentiles, robust z
//! - [`window`]: bounded time-series windows
//! - [`engine`]: `DetectEngine`, its settings, the CDA/CDC state machine and invalidation;
//!   `input.rs` what it reads (reports, cloud metrics, scopes, the `TrafficWindows` seam),
//!   `compile.rs` behaviors into checks, `state.rs` its serialisable state, `evaluate.rs` one
//!   datapoint against one check and the events it gives
//!   (`slot.rs` holds the evaluation itself, per compiled behavior and its state, shared by
//!   `DetectEngine` and the fleet)
//! - [`fleet`]: Detect for a fleet: `FleetDetect` (compiled profiles shared by every thing, the
//!   statistical thresholds job), `ThingState` (per thing, serialisable), `report_time`
//! - [`violation`]: ViolationEvent / ActiveViolation shapes and ids
//! - [`query`]: ListViolationEvents, ListActiveViolations, PutVerificationStateOnViolation
//! - [`replay`]: JSON-lines replay driver (one device: `replay`; a fleet: `replay_fleet`)
//! - [`settings`]: the `[detect]` settings the daemon builds its engine from
//! - [`shapes`]: the API model's shapes and the STRICT unknown-member check
//! - [`timestamp`]: epoch seconds or ISO 8601, as the AWS CLI writes them
//!
//! Topic filters are `crate::topic_filter`; the agent's cloud-side input is
//! `crate::traffic::TrafficCounters` (see [`engine::TrafficWindows`]); the tests and benches use
//! the millisecond-exact [`traffic_log::TrafficLog`].
//!
//! Readings chosen where the spec is silent (beyond its own CHOICE tags):
//! - statistical thresholds and ML default to off (not evaluable, with a diagnostic);
//!   local-history and local-baseline are opt-in per engine or per (profile, behavior);
//! - wire rules (fail even a LOAD): V1 name, V3 count, V9 element ranges, value shapes (serde),
//!   dimension operator, profile name/description/alert-target key; all else skips in LOAD;
//! - ML with a window: datapoints are the per-report value (device) or the 300 s window (cloud);
//!   message-byte-size under ML uses the largest message of the window;
//! - list `metricValue` sorts ports numerically and IPs as text (TC11 lists "10.1.2.3" first);
//! - aws:source-ip-address with a dimension is not evaluated; aws:disconnect-duration only with
//!   `EngineSettings::disconnect_duration` (the unverified reconstruction of §2.3).

pub mod catalog;
mod compile;
pub mod criteria;
pub mod engine;
mod evaluate;
pub mod fleet;
mod input;
pub mod profile;
pub mod query;
pub mod replay;
pub mod settings;
pub mod shapes;
mod slot;
mod state;
pub mod timestamp;
pub mod validate;
pub mod violation;
pub mod window;

#[cfg(test)]
mod cases_tests;
pub mod traffic_log;

pub use engine::{
    traffic_scope_name, CloudMetric, DetectEngine, DeviceReport, Emitted, EngineSettings,
    EngineState, Established, Millis, MlMode, NetworkDeltas, PortList, Scope, ScopeOperator,
    StatMode, TrafficWindows, WindowValue,
};
pub use profile::{
    Behavior, BehaviorCriteria, CustomMetric, Dimension, Format, MetricDimension, MetricValue,
    ParseError, SecurityProfile,
};
pub use query::ApiError;
pub use settings::{PushSettings, Settings};
pub use traffic_log::{TrafficLog, TrafficRecord};
pub use validate::{
    validate_behaviors, validate_behaviors_json, validate_behaviors_text, Mode, ValidationContext,
    ValidationResult,
};
pub use violation::{ActiveViolation, ViolationEvent};

/// How serious a load-time remark is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiagnosticKind {
    /// The behavior breaks a non-wire rule and is not evaluated (LOAD mode).
    Skipped,
    /// The behavior is valid but this device cannot evaluate it (e.g. ML off, no source IP).
    NotEvaluable,
    /// Worth knowing, nothing skipped.
    Warning,
}

/// A remark produced while loading or compiling profiles; never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Where the profile came from (file name), or empty.
    pub source_name: String,
    /// Profile name.
    pub profile: String,
    /// Behavior name, when the remark is about one.
    pub behavior: Option<String>,
    /// Severity.
    pub kind: DiagnosticKind,
    /// Human text.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            DiagnosticKind::Skipped => "skipped",
            DiagnosticKind::NotEvaluable => "not evaluable",
            DiagnosticKind::Warning => "warning",
        };
        write!(f, "{}: profile {}", self.source_name, self.profile)?;
        if let Some(b) = &self.behavior {
            write!(f, " behavior {b}")?;
        }
        write!(f, ": {kind}: {}", self.message)
    }
}

/// Why a document could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// Syntax or shape error (line, column, field path).
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The document breaks rules that hold in this mode.
    #[error("{source_name}: {}", errors.join("; "))]
    Invalid {
        /// Caller-supplied name.
        source_name: String,
        /// Every message.
        errors: Vec<String>,
    },
}

/// A profile loaded with its load-time diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedProfile {
    /// The profile as written (skipped behaviors included; the engine skips them again).
    pub profile: SecurityProfile,
    /// Skipped behaviors and warnings.
    pub diagnostics: Vec<Diagnostic>,
}

/// Members of a profile or dimension file that are ours, not the API's: what the manage verbs
/// keep next to the Describe shape (`manage::LocalMetadata`).
pub const LOCAL_MEMBERS: &[&str] = &["localMetadata"];

/// Loads a DescribeSecurityProfile document (JSON or TOML). LOAD: wire rules fail, other problems
/// skip the behavior with a diagnostic. STRICT: every rule fails (spec: detect.md §4), and a
/// member the API model does not have, at any depth, fails the load.
pub fn load_profile(
    text: &str,
    source_name: &str,
    format: Format,
    ctx: &ValidationContext,
    mode: Mode,
) -> Result<LoadedProfile, LoadError> {
    let strict = (mode == Mode::Strict).then_some((
        &shapes::DESCRIBE_SECURITY_PROFILE,
        shapes::Root::Members(LOCAL_MEMBERS),
    ));
    let profile: SecurityProfile = profile::parse_doc_checked(text, source_name, format, strict)?;
    check_profile(profile, source_name, ctx, mode)
}

/// Checks a profile already parsed (from a document named `source_name`) as
/// [`load_profile`] does after parsing.
pub fn check_profile(
    profile: SecurityProfile,
    source_name: &str,
    ctx: &ValidationContext,
    mode: Mode,
) -> Result<LoadedProfile, LoadError> {
    let check = validate::check_profile(&profile, ctx, mode);
    if !check.errors.is_empty() {
        return Err(LoadError::Invalid {
            source_name: source_name.to_owned(),
            errors: check.errors,
        });
    }
    let mut diagnostics = Vec::new();
    for (index, messages) in check.skipped {
        for message in messages {
            diagnostics.push(Diagnostic {
                source_name: source_name.to_owned(),
                profile: profile.security_profile_name.clone(),
                behavior: profile.behaviors.get(index).map(|b| b.name.clone()),
                kind: DiagnosticKind::Skipped,
                message,
            });
        }
    }
    for message in check.warnings {
        diagnostics.push(Diagnostic {
            source_name: source_name.to_owned(),
            profile: profile.security_profile_name.clone(),
            behavior: None,
            kind: DiagnosticKind::Warning,
            message,
        });
    }
    Ok(LoadedProfile {
        profile,
        diagnostics,
    })
}

/// Loads a DescribeDimension document (JSON or TOML) and checks it in `mode`.
pub fn load_dimension(
    text: &str,
    source_name: &str,
    format: Format,
    mode: Mode,
) -> Result<Dimension, LoadError> {
    let strict = (mode == Mode::Strict).then_some((
        &shapes::DESCRIBE_DIMENSION,
        shapes::Root::Members(LOCAL_MEMBERS),
    ));
    let d: Dimension = profile::parse_doc_checked(text, source_name, format, strict)?;
    check_dimension(d, source_name, mode)
}

/// Checks a dimension already parsed as [`load_dimension`] does after parsing.
pub fn check_dimension(
    d: Dimension,
    source_name: &str,
    mode: Mode,
) -> Result<Dimension, LoadError> {
    let errors = validate::check_dimension(&d, mode);
    if errors.is_empty() {
        Ok(d)
    } else {
        Err(LoadError::Invalid {
            source_name: source_name.to_owned(),
            errors,
        })
    }
}

/// Loads a DescribeCustomMetric document (JSON or TOML).
pub fn load_custom_metric(
    text: &str,
    source_name: &str,
    format: Format,
) -> Result<CustomMetric, LoadError> {
    let m: CustomMetric = profile::parse_doc(text, source_name, format)?;
    let errors = validate::check_custom_metric(&m);
    if errors.is_empty() {
        Ok(m)
    } else {
        Err(LoadError::Invalid {
            source_name: source_name.to_owned(),
            errors,
        })
    }
}

//! Security profiles and dimensions pushed to the device in one MQTT message: the message is
//! validated whole (STRICT, against the dimensions it brings plus those on disk) and turned into
//! the records to write, or refused whole with every error found. Pure: the caller reads the
//! directories, writes the records and publishes the outcome.
//!
//! The message (our format; the entries are the API's Describe shapes):
//! `{"pushVersion": <any JSON value, echoed>, "dimensions": [DescribeDimension…],
//!   "securityProfiles": [DescribeSecurityProfile…]}`.
//! Readings chosen where the issue is silent:
//! - a push creates or updates the resources it names and leaves the others alone (it never
//!   deletes); an entry equal to what is on disk is `unchanged` and nothing is written, so the
//!   retained message delivered again at every connection is a no-op;
//! - an update replaces the profile's content (description, behaviors, alert targets, retained
//!   metrics, export config) and increments the local `version`; the pushed `version`, ARN and
//!   dates are ignored (the device keeps its own history, as the API's Update does);
//! - a dimension's type cannot change (as UpdateDimension).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    check_dimension_name, check_profile_name, check_profile_strict, Arns, ManageError,
    StoredDimension, StoredProfile,
};
use crate::detect::profile::parse_json;
use crate::detect::shapes::{self, Root, Shape};
use crate::detect::validate::{self, Mode, ValidationContext};
use crate::detect::{CustomMetric, Dimension, SecurityProfile};

/// At most this many profiles and this many dimensions in one message (a bound on the work one
/// message can cause; AWS allows far fewer profiles per device).
pub const MAX_ENTRIES: usize = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PushDoc {
    #[serde(default)]
    push_version: Option<Value>,
    #[serde(default)]
    dimensions: Vec<Value>,
    #[serde(default)]
    security_profiles: Vec<Value>,
}

/// What a push does to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// New on this device.
    Created,
    /// Its content changed.
    Updated,
    /// Equal to what is on disk: nothing written.
    Unchanged,
}

/// One resource of an accepted push: the record to write (when not unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned<T> {
    /// The resource name.
    pub name: String,
    /// What happens to it.
    pub change: Change,
    /// The record as it will be on disk.
    pub record: T,
}

/// An accepted push.
#[derive(Debug, Clone, PartialEq)]
pub struct PushPlan {
    /// The message's `pushVersion`, echoed in the outcome.
    pub push_version: Option<Value>,
    /// Dimensions, in message order.
    pub dimensions: Vec<Planned<StoredDimension>>,
    /// Profiles, in message order.
    pub profiles: Vec<Planned<StoredProfile>>,
}

impl PushPlan {
    /// Whether anything is written.
    pub fn changes_anything(&self) -> bool {
        self.dimensions
            .iter()
            .any(|d| d.change != Change::Unchanged)
            || self.profiles.iter().any(|p| p.change != Change::Unchanged)
    }
}

/// A refused push: every error found (nothing is written).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The message's `pushVersion` when it could be read.
    pub push_version: Option<Value>,
    /// One message per problem, naming the entry and field.
    pub errors: Vec<String>,
}

impl Refused {
    /// A refusal with one error.
    pub fn one(push_version: Option<Value>, error: impl Into<String>) -> Refused {
        Refused {
            push_version,
            errors: vec![error.into()],
        }
    }
}

/// The outcome published on the response topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// `applied` or `refused`.
    pub status: &'static str,
    /// The message's `pushVersion`, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_version: Option<Value>,
    /// Applied: each dimension and what happened to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<OutcomeEntry>,
    /// Applied: each profile, its local version and what happened to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_profiles: Vec<OutcomeEntry>,
    /// Refused: the errors, in ValidateSecurityProfileBehaviors' shape.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<ErrorMessage>,
}

/// One resource in an [`Outcome`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeEntry {
    /// The resource name.
    pub name: String,
    /// Its local version (profiles only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// What the push did.
    pub change: Change,
}

/// `{"errorMessage": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMessage {
    /// The message.
    pub error_message: String,
}

impl Outcome {
    /// The outcome of an applied push.
    pub fn applied(plan: &PushPlan) -> Outcome {
        Outcome {
            status: "applied",
            push_version: plan.push_version.clone(),
            dimensions: plan
                .dimensions
                .iter()
                .map(|d| OutcomeEntry {
                    name: d.name.clone(),
                    version: None,
                    change: d.change,
                })
                .collect(),
            security_profiles: plan
                .profiles
                .iter()
                .map(|p| OutcomeEntry {
                    name: p.name.clone(),
                    version: p.record.profile.version,
                    change: p.change,
                })
                .collect(),
            validation_errors: Vec::new(),
        }
    }

    /// The outcome of a refused push.
    pub fn refused(r: &Refused) -> Outcome {
        Outcome {
            status: "refused",
            push_version: r.push_version.clone(),
            dimensions: Vec::new(),
            security_profiles: Vec::new(),
            validation_errors: r
                .errors
                .iter()
                .map(|e| ErrorMessage {
                    error_message: e.clone(),
                })
                .collect(),
        }
    }
}

/// Members the model's `shape` does not have, at any depth, and `long`s written as strings
/// (STRICT); the entry is not read further when there is one.
fn unknown_members(v: &Value, shape: &Shape, at: &str, errors: &mut Vec<String>) -> bool {
    let found = shapes::check(v, shape, Root::Members(&[]));
    for p in &found {
        if p.path.is_empty() {
            errors.push(format!("{at}: {}", p.message));
        } else {
            errors.push(format!("{at}.{}: {}", p.path_text(), p.message));
        }
    }
    !found.is_empty()
}

fn entry<T: serde::de::DeserializeOwned>(v: Value, at: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("{at}: {inner}")
        } else {
            format!("{at}.{path}: {inner}")
        }
    })
}

fn message(e: ManageError) -> String {
    e.message().to_owned()
}

/// Same content, whatever the version, ARN and dates.
fn same_content(a: &SecurityProfile, b: &SecurityProfile) -> bool {
    a.security_profile_description == b.security_profile_description
        && a.behaviors == b.behaviors
        && a.alert_targets == b.alert_targets
        && a.additional_metrics_to_retain == b.additional_metrics_to_retain
        && a.additional_metrics_to_retain_v2 == b.additional_metrics_to_retain_v2
        && a.metrics_export_config == b.metrics_export_config
}

/// Validates a pushed message against what is on disk and decides what to write.
pub fn plan(
    body: &str,
    existing_dimensions: &[StoredDimension],
    existing_profiles: &[StoredProfile],
    custom_metrics: Vec<CustomMetric>,
    now: f64,
    arns: &Arns,
) -> Result<PushPlan, Refused> {
    let doc: PushDoc =
        parse_json(body, "the pushed message").map_err(|e| Refused::one(None, e.to_string()))?;
    let pv = doc.push_version;
    if doc.dimensions.is_empty() && doc.security_profiles.is_empty() {
        return Err(Refused::one(
            pv,
            "the message holds no dimensions and no securityProfiles",
        ));
    }
    if doc.dimensions.len() > MAX_ENTRIES || doc.security_profiles.len() > MAX_ENTRIES {
        return Err(Refused::one(
            pv,
            format!(
                "at most {MAX_ENTRIES} dimensions and {MAX_ENTRIES} securityProfiles per message"
            ),
        ));
    }
    let mut errors = Vec::new();

    // Dimensions first: the profiles are validated against them.
    let mut dims: BTreeMap<String, Dimension> = existing_dimensions
        .iter()
        .map(|d| (d.dimension.name.clone(), d.dimension.clone()))
        .collect();
    let mut planned_dims: Vec<Planned<StoredDimension>> = Vec::new();
    for (i, v) in doc.dimensions.into_iter().enumerate() {
        let at = format!("dimensions[{i}]");
        if unknown_members(&v, &shapes::DESCRIBE_DIMENSION, &at, &mut errors) {
            continue;
        }
        let d: Dimension = match entry(v, &at) {
            Ok(d) => d,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let at = format!("{at} ({})", d.name);
        if let Err(e) = check_dimension_name(&d.name) {
            errors.push(format!("{at}: {}", message(e)));
            continue;
        }
        if planned_dims.iter().any(|p| p.name == d.name) {
            errors.push(format!("{at}: the message names this dimension twice"));
            continue;
        }
        let old = existing_dimensions
            .iter()
            .find(|e| e.dimension.name == d.name);
        let record = match old {
            Some(old) if old.dimension.dimension_type != d.dimension_type => {
                errors.push(format!(
                    "{at}: the type of a dimension cannot change (is {}, pushed {})",
                    old.dimension.dimension_type, d.dimension_type
                ));
                continue;
            }
            Some(old) if old.dimension.string_values == d.string_values => Planned {
                name: d.name.clone(),
                change: Change::Unchanged,
                record: old.clone(),
            },
            Some(old) => {
                let mut new = old.clone();
                new.dimension.string_values = d.string_values.clone();
                new.dimension.last_modified_date = Some(now);
                if new.dimension.arn.is_none() {
                    new.dimension.arn = Some(arns.dimension(&d.name));
                }
                Planned {
                    name: d.name.clone(),
                    change: Change::Updated,
                    record: new,
                }
            }
            None => Planned {
                name: d.name.clone(),
                change: Change::Created,
                record: StoredDimension {
                    dimension: Dimension {
                        arn: Some(arns.dimension(&d.name)),
                        creation_date: Some(now),
                        last_modified_date: Some(now),
                        ..d.clone()
                    },
                    meta: None,
                },
            },
        };
        for e in validate::check_dimension(&record.record.dimension, Mode::Strict) {
            errors.push(format!("{at}: {e}"));
        }
        dims.insert(d.name.clone(), record.record.dimension.clone());
        planned_dims.push(record);
    }

    let ctx = ValidationContext::new(dims.into_values().collect(), custom_metrics);
    let mut planned_profiles: Vec<Planned<StoredProfile>> = Vec::new();
    for (i, v) in doc.security_profiles.into_iter().enumerate() {
        let at = format!("securityProfiles[{i}]");
        if unknown_members(&v, &shapes::DESCRIBE_SECURITY_PROFILE, &at, &mut errors) {
            continue;
        }
        let p: SecurityProfile = match entry(v, &at) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let name = p.security_profile_name.clone();
        let at = format!("{at} ({name})");
        if let Err(e) = check_profile_name(&name) {
            errors.push(format!("{at}: {}", message(e)));
            continue;
        }
        if planned_profiles.iter().any(|q| q.name == name) {
            errors.push(format!("{at}: the message names this profile twice"));
            continue;
        }
        if let Err(e) = check_profile_strict(&p, &ctx) {
            errors.push(format!("{at}: {}", message(e)));
            continue;
        }
        let old = existing_profiles
            .iter()
            .find(|e| e.profile.security_profile_name == name);
        let planned = match old {
            Some(old) if same_content(&old.profile, &p) => Planned {
                name,
                change: Change::Unchanged,
                record: old.clone(),
            },
            Some(old) => {
                let mut new = old.clone();
                let q = &mut new.profile;
                q.security_profile_description = p.security_profile_description;
                q.behaviors = p.behaviors;
                q.alert_targets = p.alert_targets;
                q.additional_metrics_to_retain = p.additional_metrics_to_retain;
                q.additional_metrics_to_retain_v2 = p.additional_metrics_to_retain_v2;
                q.metrics_export_config = p.metrics_export_config;
                // The stored version comes from a file (hand-editable): saturate, never overflow.
                q.version = Some(old.profile.version.unwrap_or(1).saturating_add(1));
                q.last_modified_date = Some(now);
                if q.security_profile_arn.is_none() {
                    q.security_profile_arn = Some(arns.profile(&name));
                }
                Planned {
                    name,
                    change: Change::Updated,
                    record: new,
                }
            }
            None => Planned {
                change: Change::Created,
                record: StoredProfile {
                    profile: SecurityProfile {
                        security_profile_arn: Some(arns.profile(&name)),
                        version: Some(1),
                        creation_date: Some(now),
                        last_modified_date: Some(now),
                        ..p
                    },
                    meta: None,
                },
                name,
            },
        };
        planned_profiles.push(planned);
    }
    if !errors.is_empty() {
        return Err(Refused {
            push_version: pv,
            errors,
        });
    }
    Ok(PushPlan {
        push_version: pv,
        dimensions: planned_dims,
        profiles: planned_profiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000.0;

    fn arns() -> Arns {
        Arns::default()
    }

    fn msg(dims: &str, profiles: &str) -> String {
        format!(r#"{{"pushVersion":"v1","dimensions":[{dims}],"securityProfiles":[{profiles}]}}"#)
    }

    const DIM: &str = r#"{"name":"Sensors","type":"TOPIC_FILTER","stringValues":["sensors/#"],"arn":"arn:aws:iot:eu-west-1:1:dimension/Sensors","creationDate":1.0}"#;
    const PROFILE: &str = r#"{"securityProfileName":"P","behaviors":[{"name":"Few","metric":"aws:num-messages-sent","metricDimension":{"dimensionName":"Sensors"},"criteria":{"comparisonOperator":"less-than","value":{"count":10},"durationSeconds":300}}],"version":9}"#;

    #[test]
    fn a_new_push_creates_then_the_same_push_changes_nothing() {
        let p = plan(&msg(DIM, PROFILE), &[], &[], vec![], NOW, &arns()).unwrap();
        assert_eq!(p.push_version, Some(Value::from("v1")));
        assert_eq!(p.dimensions[0].change, Change::Created);
        assert_eq!(p.profiles[0].change, Change::Created);
        // Local versioning and ARNs: the pushed version, ARN and dates are not taken over.
        assert_eq!(p.profiles[0].record.profile.version, Some(1));
        assert_eq!(
            p.dimensions[0].record.dimension.arn.as_deref(),
            Some("arn:aws:iot:local:000000000000:dimension/Sensors")
        );
        assert!(p.changes_anything());
        let dims = vec![p.dimensions[0].record.clone()];
        let profiles = vec![p.profiles[0].record.clone()];
        let again = plan(
            &msg(DIM, PROFILE),
            &dims,
            &profiles,
            vec![],
            NOW + 1.0,
            &arns(),
        )
        .unwrap();
        assert!(!again.changes_anything());
        assert_eq!(again.profiles[0].record, profiles[0]);
    }

    #[test]
    fn a_changed_profile_is_updated_with_the_next_local_version() {
        let p = plan(&msg(DIM, PROFILE), &[], &[], vec![], NOW, &arns()).unwrap();
        let dims = vec![p.dimensions[0].record.clone()];
        let profiles = vec![p.profiles[0].record.clone()];
        let changed = PROFILE.replace("\"count\":10", "\"count\":20");
        let u = plan(
            &msg("", &changed),
            &dims,
            &profiles,
            vec![],
            NOW + 5.0,
            &arns(),
        )
        .unwrap();
        assert_eq!(u.profiles[0].change, Change::Updated);
        assert_eq!(u.profiles[0].record.profile.version, Some(2));
        assert_eq!(u.profiles[0].record.profile.creation_date, Some(NOW));
        assert_eq!(
            u.profiles[0].record.profile.last_modified_date,
            Some(NOW + 5.0)
        );
        let out = serde_json::to_value(Outcome::applied(&u)).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"status":"applied","pushVersion":"v1",
                "securityProfiles":[{"name":"P","version":2,"change":"updated"}]})
        );
    }

    #[test]
    fn an_update_of_a_stored_profile_at_the_largest_version_does_not_overflow() {
        let p = plan(&msg(DIM, PROFILE), &[], &[], vec![], NOW, &arns()).unwrap();
        let dims = vec![p.dimensions[0].record.clone()];
        let mut stored = p.profiles[0].record.clone();
        stored.profile.version = Some(i64::MAX);
        let changed = PROFILE.replace("\"count\":10", "\"count\":20");
        let u = plan(&msg("", &changed), &dims, &[stored], vec![], NOW, &arns()).unwrap();
        assert_eq!(u.profiles[0].change, Change::Updated);
        assert_eq!(u.profiles[0].record.profile.version, Some(i64::MAX));
    }

    #[test]
    fn every_error_is_reported_and_the_push_is_refused_whole() {
        let bad_behavior = PROFILE.replace("less-than", "in-port-set");
        let unknown = r#"{"securityProfileName":"Q","behaviors":[],"colour":"red"}"#;
        let missing_dim = PROFILE.replace("\"P\"", "\"R\"");
        let r = plan(
            &msg("", &format!("{bad_behavior},{unknown},{missing_dim}")),
            &[],
            &[],
            vec![],
            NOW,
            &arns(),
        )
        .unwrap_err();
        assert_eq!(r.push_version, Some(Value::from("v1")));
        assert_eq!(r.errors.len(), 3, "{:?}", r.errors);
        assert!(r.errors[0].starts_with("securityProfiles[0] (P): Behavior Few is malformed"));
        assert_eq!(r.errors[1], "securityProfiles[1]: unknown field `colour`");
        assert!(r.errors[2].contains("Sensors"), "{:?}", r.errors);
        let out = serde_json::to_value(Outcome::refused(&r)).unwrap();
        assert_eq!(out["status"], "refused");
        assert_eq!(out["validationErrors"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn a_nested_unknown_member_or_a_string_count_refuses_the_push_naming_its_path() {
        // issue 15: members inside behaviors, criteria, values, … were dropped silently.
        let nested = PROFILE.replace(r#""count":10"#, r#""count":"10","colour":1"#);
        let dim = DIM.replace(r#""stringValues""#, r#""colour":1,"stringValues""#);
        let r = plan(&msg(&dim, &nested), &[], &[], vec![], NOW, &arns()).unwrap_err();
        assert_eq!(
            r.errors,
            vec![
                "dimensions[0]: unknown field `colour`".to_owned(),
                "securityProfiles[0].behaviors[0].criteria.value: unknown field `colour`"
                    .to_owned(),
                "securityProfiles[0].behaviors[0].criteria.value.count: invalid type: string \"10\", expected a long"
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn a_push_takes_aws_cli_v2_timestamps_and_writes_its_own_epoch_seconds() {
        let iso = DIM.replace(
            r#""creationDate":1.0"#,
            r#""creationDate":"2026-10-01T10:00:00.123000+00:00""#,
        );
        let profile = PROFILE.replace(
            r#""version":9"#,
            r#""version":9,"creationDate":"2026-10-01T10:00:00.123000+00:00","lastModifiedDate":1790848800.5"#,
        );
        let p = plan(&msg(&iso, &profile), &[], &[], vec![], NOW, &arns()).unwrap();
        assert_eq!(p.dimensions[0].record.dimension.creation_date, Some(NOW));
        let written = serde_json::to_value(&p.profiles[0].record).unwrap();
        assert_eq!(written["creationDate"], serde_json::json!(NOW));
    }

    #[test]
    fn malformed_json_names_line_and_column_and_a_type_change_is_refused() {
        let r = plan("{\n \"dimensions\": [,]}", &[], &[], vec![], NOW, &arns()).unwrap_err();
        assert!(
            r.errors[0].starts_with("the pushed message:2:17:"),
            "{:?}",
            r.errors
        );
        let r = plan(r#"{"colour":1}"#, &[], &[], vec![], NOW, &arns()).unwrap_err();
        assert!(r.errors[0].contains("colour"), "{:?}", r.errors);
        let r = plan(&msg("", ""), &[], &[], vec![], NOW, &arns()).unwrap_err();
        assert!(r.errors[0].contains("no dimensions"), "{:?}", r.errors);

        let p = plan(&msg(DIM, ""), &[], &[], vec![], NOW, &arns()).unwrap();
        let dims = vec![p.dimensions[0].record.clone()];
        let retyped = DIM.replace("TOPIC_FILTER", "SOURCE_IP");
        let r = plan(&msg(&retyped, ""), &dims, &[], vec![], NOW, &arns()).unwrap_err();
        assert!(r.errors[0].contains("cannot change"), "{:?}", r.errors);
        let twice = plan(
            &msg(&format!("{DIM},{DIM}"), ""),
            &[],
            &[],
            vec![],
            NOW,
            &arns(),
        )
        .unwrap_err();
        assert!(twice.errors[0].contains("twice"), "{:?}", twice.errors);
        let bad_name = DIM.replace("\"Sensors\"", "\"no spaces\"");
        let r = plan(&msg(&bad_name, ""), &[], &[], vec![], NOW, &arns()).unwrap_err();
        assert!(
            r.errors[0].starts_with("dimensions[0] (no spaces)"),
            "{:?}",
            r.errors
        );
    }
}

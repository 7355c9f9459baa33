//! Local management of security profiles and dimensions with the AWS API's own verbs
//! (Create/Describe/Update/List/Delete): request and response shapes, the rules, versioning,
//! idempotency tokens and pagination. Pure: no I/O, no clock (`now` is an argument); the
//! directory store is [`files`], the operations over it [`ops`] (also the JSON-only entry point
//! for a remote channel); the command line is [`crate::cli::manage`].
//!
//! spec: detect.md §4 (STRICT validation), §5 (dimensions), §6.3 (deletes invalidate).
//! Readings chosen where the API is silent:
//! - ARNs use region `local` and account `000000000000` unless `DEFENDER_AGENT_REGION` /
//!   `DEFENDER_AGENT_ACCOUNT` are set (read by [`ops::arns_for`], passed in here as [`Arns`]);
//! - CreateSecurityProfile has no clientRequestToken in the API: repeating an identical request
//!   is idempotent, any other request under an existing name is ResourceAlreadyExistsException;
//! - CreateDimension: the same clientRequestToken with the same request is idempotent; a token
//!   another dimension was created with is ResourceAlreadyExistsException (the model: "each
//!   dimension must have a unique client request token"; the exception a taken name gives); a
//!   dimension still used by a profile cannot be deleted (InvalidRequestException);
//! - requests are checked against the API model's shapes ([`Request`]): a member it does not
//!   have, at any depth, is InvalidRequestException naming its path.
//! - a hand-written file without `version` counts as version 1.

pub mod files;
pub mod ops;
pub mod push;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::detect::profile::{AlertTarget, MetricToRetain, MetricsExportConfig};
use crate::detect::shapes::{self, Shape};
use crate::detect::validate::{self, is_valid_name, Mode, ValidationContext};
use crate::detect::{Behavior, Dimension, SecurityProfile};

/// Largest `maxResults` (ListDimensions, ListSecurityProfiles: 1..250).
pub const MAX_RESULTS: u32 = 250;

/// An API error, printed as `{"__type": <exception name>, "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManageError {
    /// Bad parameters, malformed JSON, a behavior that fails validation.
    #[error("InvalidRequestException: {0}")]
    InvalidRequest(String),
    /// No such profile or dimension.
    #[error("ResourceNotFoundException: {0}")]
    ResourceNotFound(String),
    /// A different resource already has this name.
    #[error("ResourceAlreadyExistsException: {0}")]
    ResourceAlreadyExists(String),
    /// `expectedVersion` is not the current version.
    #[error("VersionConflictException: {0}")]
    VersionConflict(String),
}

impl ManageError {
    /// The AWS exception name.
    pub fn code(&self) -> &'static str {
        match self {
            ManageError::InvalidRequest(_) => "InvalidRequestException",
            ManageError::ResourceNotFound(_) => "ResourceNotFoundException",
            ManageError::ResourceAlreadyExists(_) => "ResourceAlreadyExistsException",
            ManageError::VersionConflict(_) => "VersionConflictException",
        }
    }

    /// The message text.
    pub fn message(&self) -> &str {
        match self {
            ManageError::InvalidRequest(m)
            | ManageError::ResourceNotFound(m)
            | ManageError::ResourceAlreadyExists(m)
            | ManageError::VersionConflict(m) => m,
        }
    }
}

impl Serialize for ManageError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ManageError", 2)?;
        st.serialize_field("__type", self.code())?;
        st.serialize_field("message", self.message())?;
        st.end()
    }
}

/// A request of the API: its shape in the model, against which its JSON is checked before it is
/// typed (a member the model does not have, at any depth, is refused with its path).
pub trait Request: serde::de::DeserializeOwned {
    /// The request's shape.
    const SHAPE: &'static Shape;
}

macro_rules! request_shape {
    ($($t:ty => $s:ident),* $(,)?) => {
        $(impl Request for $t {
            const SHAPE: &'static Shape = &shapes::$s;
        })*
    };
}

request_shape! {
    CreateDimensionRequest => CREATE_DIMENSION_REQUEST,
    UpdateDimensionRequest => UPDATE_DIMENSION_REQUEST,
    DimensionNameRequest => DIMENSION_NAME_REQUEST,
    ListDimensionsRequest => LIST_DIMENSIONS_REQUEST,
    CreateSecurityProfileRequest => CREATE_SECURITY_PROFILE_REQUEST,
    UpdateSecurityProfileRequest => UPDATE_SECURITY_PROFILE_REQUEST,
    ProfileNameRequest => DESCRIBE_SECURITY_PROFILE_REQUEST,
    DeleteSecurityProfileRequest => DELETE_SECURITY_PROFILE_REQUEST,
    ListSecurityProfilesRequest => LIST_SECURITY_PROFILES_REQUEST,
}

/// Parses a request body (JSON named `source_name`): errors carry line, column and field path.
/// The root's unknown members are refused by the typed parser (its message lists the members).
pub fn parse_request<T: Request>(text: &str, source_name: &str) -> Result<T, ManageError> {
    crate::detect::profile::parse_doc_checked(
        text,
        source_name,
        crate::detect::Format::Json,
        Some((T::SHAPE, shapes::Root::Inside)),
    )
    .map_err(|e| invalid(e.to_string()))
}

/// A request from a JSON value (`--cli-input-json` merged with flags), checked as
/// [`parse_request`]; errors are `request: at <path>: <message>`.
pub fn request_from_value<T: Request>(v: Value) -> Result<T, ManageError> {
    let fail = |path: String, message: String| invalid(format!("request: at {path}: {message}"));
    if let Some(p) = shapes::check(&v, T::SHAPE, shapes::Root::Inside)
        .into_iter()
        .next()
    {
        return Err(fail(p.path_text(), p.message));
    }
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let path = e.path().to_string();
        fail(path, e.into_inner().to_string())
    })
}

fn invalid(m: impl Into<String>) -> ManageError {
    ManageError::InvalidRequest(m.into())
}

/// Region and account used in ARNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arns {
    /// e.g. `local` or `eu-west-1`.
    pub region: String,
    /// 12 digits, e.g. `000000000000`.
    pub account: String,
}

impl Default for Arns {
    fn default() -> Self {
        Arns {
            region: "local".to_owned(),
            account: "000000000000".to_owned(),
        }
    }
}

impl Arns {
    /// `arn:aws:iot:<region>:<account>:dimension/<name>`.
    pub fn dimension(&self, name: &str) -> String {
        format!(
            "arn:aws:iot:{}:{}:dimension/{name}",
            self.region, self.account
        )
    }
    /// `arn:aws:iot:<region>:<account>:securityprofile/<name>`.
    pub fn profile(&self, name: &str) -> String {
        format!(
            "arn:aws:iot:{}:{}:securityprofile/{name}",
            self.region, self.account
        )
    }
}

/// A resource tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Tag {
    /// Tag key.
    pub key: String,
    /// Tag value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What the API does not return from Describe but we must remember, embedded in the file under
/// `localMetadata` (the detect loaders skip it, [`crate::detect::LOCAL_MEMBERS`]) so one atomic
/// rename covers all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalMetadata {
    /// CreateDimension's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_token: Option<String>,
    /// Tags given at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    /// The create request as received, for idempotency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_request: Option<Value>,
}

/// A dimension file: the DescribeDimension shape plus metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDimension {
    /// DescribeDimension.
    #[serde(flatten)]
    pub dimension: Dimension,
    /// Token, tags, create request.
    #[serde(
        default,
        rename = "localMetadata",
        skip_serializing_if = "Option::is_none"
    )]
    pub meta: Option<LocalMetadata>,
}

/// A profile file: the DescribeSecurityProfile shape plus metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredProfile {
    /// DescribeSecurityProfile.
    #[serde(flatten)]
    pub profile: SecurityProfile,
    /// Tags, create request.
    #[serde(
        default,
        rename = "localMetadata",
        skip_serializing_if = "Option::is_none"
    )]
    pub meta: Option<LocalMetadata>,
}

// ---------------------------------------------------------------- dimensions

/// CreateDimension request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDimensionRequest {
    /// Name, `[a-zA-Z0-9:_-]+`, 1..128.
    pub name: String,
    /// `TOPIC_FILTER`.
    #[serde(rename = "type")]
    pub dimension_type: String,
    /// Topic filters.
    pub string_values: Vec<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    /// Idempotency token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_token: Option<String>,
}

/// CreateDimension response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateDimensionResponse {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
}

/// DescribeDimension / DeleteDimension request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DimensionNameRequest {
    /// Name.
    pub name: String,
}

/// UpdateDimension request (the type of a dimension cannot change: the model has no `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateDimensionRequest {
    /// Name.
    pub name: String,
    /// New topic filters.
    pub string_values: Vec<String>,
}

/// ListDimensions request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListDimensionsRequest {
    /// From a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1..250 (default 250).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<i64>,
}

/// ListDimensions response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDimensionsResponse {
    /// Names, sorted.
    pub dimension_names: Vec<String>,
    /// Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

fn check_name(what: &str, name: &str) -> Result<(), ManageError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {name:?} must be 1-128 characters matching [a-zA-Z0-9:_-]+"
        )))
    }
}

/// Checks a name before it is used to find a file (names never contain `/` or `.`).
pub fn check_dimension_name(name: &str) -> Result<(), ManageError> {
    check_name("name", name)
}

/// Checks a profile name before it is used to find a file.
pub fn check_profile_name(name: &str) -> Result<(), ManageError> {
    check_name("securityProfileName", name)
}

fn check_tags(tags: Option<&Vec<Tag>>) -> Result<(), ManageError> {
    for t in tags.into_iter().flatten() {
        if !shapes::TAG_KEY.admits(t.key.chars().count() as i64) {
            return Err(invalid(format!(
                "tag key {:?} must be 1-128 characters",
                t.key
            )));
        }
        if !shapes::is_tag_key(&t.key) {
            return Err(invalid(format!(
                "tag key {:?} must be letters, numbers, spaces and _.:/=+-@",
                t.key
            )));
        }
        if t.value
            .as_ref()
            .is_some_and(|v| !shapes::TAG_VALUE.admits(v.chars().count() as i64))
        {
            return Err(invalid(format!(
                "tag {} value must be at most 256 characters",
                t.key
            )));
        }
    }
    Ok(())
}

fn to_value<T: Serialize>(t: &T) -> Value {
    // Invariant: the request types are plain data whose serialisation cannot fail.
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// A `clientRequestToken` as the model's `ClientRequestToken`: 1-64 of `[a-zA-Z0-9-_]`.
pub fn check_client_request_token(t: &str) -> Result<(), ManageError> {
    if shapes::CLIENT_REQUEST_TOKEN.admits(t.len() as i64) && shapes::is_client_request_token(t) {
        Ok(())
    } else {
        Err(invalid(
            "clientRequestToken must be 1-64 characters of [a-zA-Z0-9-_]",
        ))
    }
}

/// CreateDimension's token must not be another dimension's (the model: "each dimension must have
/// a unique client request token"; the exception is the one a name already taken gives).
pub fn check_token_unused(
    req: &CreateDimensionRequest,
    dimensions: &[StoredDimension],
) -> Result<(), ManageError> {
    let Some(token) = &req.client_request_token else {
        return Ok(());
    };
    let owner = dimensions.iter().find(|d| {
        d.dimension.name != req.name
            && d.meta
                .as_ref()
                .is_some_and(|m| m.client_request_token.as_ref() == Some(token))
    });
    match owner {
        Some(d) => Err(ManageError::ResourceAlreadyExists(format!(
            "clientRequestToken {token} was used to create dimension {}",
            d.dimension.name
        ))),
        None => Ok(()),
    }
}

/// What a create decided: write this record (None when the create was an idempotent repeat).
#[derive(Debug, Clone, PartialEq)]
pub struct Created<T, R> {
    /// The record to write, or None when nothing changes.
    pub write: Option<T>,
    /// The API response.
    pub response: R,
}

/// CreateDimension: STRICT validation, token idempotency (spec: detect.md §5).
pub fn create_dimension(
    existing: Option<&StoredDimension>,
    req: CreateDimensionRequest,
    now: f64,
    arns: &Arns,
) -> Result<Created<StoredDimension, CreateDimensionResponse>, ManageError> {
    check_dimension_name(&req.name)?;
    check_tags(req.tags.as_ref())?;
    if let Some(t) = &req.client_request_token {
        check_client_request_token(t)?;
    }
    let request_value = to_value(&req);
    let response = CreateDimensionResponse {
        name: req.name.clone(),
        arn: arns.dimension(&req.name),
    };
    if let Some(old) = existing {
        let meta = old.meta.clone().unwrap_or_default();
        let same_token = req.client_request_token.is_some()
            && meta.client_request_token == req.client_request_token;
        if same_token && meta.create_request.as_ref() == Some(&request_value) {
            let arn = old.dimension.arn.clone().unwrap_or(response.arn);
            return Ok(Created {
                write: None,
                response: CreateDimensionResponse {
                    name: req.name,
                    arn,
                },
            });
        }
        return Err(ManageError::ResourceAlreadyExists(format!(
            "dimension {} already exists{}",
            req.name,
            if same_token {
                " with different parameters for this clientRequestToken"
            } else {
                ""
            }
        )));
    }
    let dimension = Dimension {
        name: req.name.clone(),
        arn: Some(response.arn.clone()),
        dimension_type: req.dimension_type.clone(),
        string_values: req.string_values.clone(),
        creation_date: Some(now),
        last_modified_date: Some(now),
    };
    let errors = validate::check_dimension(&dimension, Mode::Strict);
    if !errors.is_empty() {
        return Err(invalid(errors.join("; ")));
    }
    Ok(Created {
        write: Some(StoredDimension {
            dimension,
            meta: Some(LocalMetadata {
                client_request_token: req.client_request_token,
                tags: req.tags,
                create_request: Some(request_value),
            }),
        }),
        response,
    })
}

/// UpdateDimension: new string values, same type; returns the new record (also the response).
pub fn update_dimension(
    existing: Option<&StoredDimension>,
    req: UpdateDimensionRequest,
    now: f64,
    arns: &Arns,
) -> Result<StoredDimension, ManageError> {
    check_dimension_name(&req.name)?;
    let old = existing.ok_or_else(|| dimension_not_found(&req.name))?;
    let mut new = old.clone();
    new.dimension.string_values = req.string_values;
    new.dimension.last_modified_date = Some(now);
    if new.dimension.arn.is_none() {
        new.dimension.arn = Some(arns.dimension(&req.name));
    }
    let errors = validate::check_dimension(&new.dimension, Mode::Strict);
    if !errors.is_empty() {
        return Err(invalid(errors.join("; ")));
    }
    Ok(new)
}

fn dimension_not_found(name: &str) -> ManageError {
    ManageError::ResourceNotFound(format!("dimension {name} does not exist"))
}

/// DescribeDimension: the stored shape without metadata.
pub fn describe_dimension(
    name: &str,
    existing: Option<&StoredDimension>,
) -> Result<Dimension, ManageError> {
    check_dimension_name(name)?;
    existing
        .map(|d| d.dimension.clone())
        .ok_or_else(|| dimension_not_found(name))
}

/// The profiles (by name) whose behaviors or retained metrics use `dimension`.
pub fn profiles_using(dimension: &str, profiles: &[SecurityProfile]) -> Vec<String> {
    profiles
        .iter()
        .filter(|p| profile_uses_dimension(p, dimension))
        .map(|p| p.security_profile_name.clone())
        .collect()
}

/// Whether a profile refers to the dimension (behaviors or additionalMetricsToRetainV2).
pub fn profile_uses_dimension(p: &SecurityProfile, dimension: &str) -> bool {
    let in_behaviors = p.behaviors.iter().any(|b| {
        b.metric_dimension
            .as_ref()
            .is_some_and(|d| d.dimension_name == dimension)
    });
    let in_retained = p.additional_metrics_to_retain_v2.iter().flatten().any(|m| {
        m.metric_dimension
            .as_ref()
            .is_some_and(|d| d.dimension_name == dimension)
    });
    in_behaviors || in_retained
}

/// DeleteDimension: refused while a profile uses it (spec: detect.md §5 Lifecycle).
pub fn check_delete_dimension(
    name: &str,
    existing: Option<&StoredDimension>,
    profiles: &[SecurityProfile],
) -> Result<(), ManageError> {
    check_dimension_name(name)?;
    existing.ok_or_else(|| dimension_not_found(name))?;
    let users = profiles_using(name, profiles);
    if users.is_empty() {
        Ok(())
    } else {
        Err(invalid(format!(
            "dimension {name} is used by security profile(s) {}; detach it first",
            users.join(", ")
        )))
    }
}

// ---------------------------------------------------------------- pagination

/// One page of sorted `names` after the token's position. The token is opaque (hex of the
/// filter and the last name returned); a token reused with other filters is an error.
pub fn paginate(
    mut names: Vec<String>,
    filter: &str,
    next_token: Option<&str>,
    max_results: Option<i64>,
) -> Result<(Vec<String>, Option<String>), ManageError> {
    let max = match max_results {
        None => MAX_RESULTS as usize,
        Some(m) if (1..=i64::from(MAX_RESULTS)).contains(&m) => m as usize,
        Some(m) => {
            return Err(invalid(format!(
                "maxResults {m} should be in range[1,{MAX_RESULTS}]"
            )))
        }
    };
    names.sort();
    names.dedup();
    let start = match next_token {
        None => 0,
        Some(t) => {
            let text = crate::hex::decode(t)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| invalid("nextToken is not a token this command issued"))?;
            let (f, last) = text
                .split_once('\n')
                .ok_or_else(|| invalid("nextToken is not a token this command issued"))?;
            if f != filter {
                return Err(invalid("nextToken was issued for different filters"));
            }
            names.partition_point(|n| n.as_str() <= last)
        }
    };
    let page: Vec<String> = names.iter().skip(start).take(max).cloned().collect();
    let more = start + page.len() < names.len();
    let token = match (more, page.last()) {
        (true, Some(last)) => Some(crate::hex::encode(format!("{filter}\n{last}").as_bytes())),
        _ => None,
    };
    Ok((page, token))
}

/// ListDimensions over the given names.
pub fn list_dimensions(
    names: Vec<String>,
    req: &ListDimensionsRequest,
) -> Result<ListDimensionsResponse, ManageError> {
    let (dimension_names, next_token) = paginate(
        names,
        "dimensions",
        req.next_token.as_deref(),
        req.max_results,
    )?;
    Ok(ListDimensionsResponse {
        dimension_names,
        next_token,
    })
}

// ---------------------------------------------------------------- security profiles

/// CreateSecurityProfile request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSecurityProfileRequest {
    /// Name.
    pub security_profile_name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_profile_description: Option<String>,
    /// Behaviors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviors: Option<Vec<Behavior>>,
    /// Alert targets (key `SNS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_targets: Option<BTreeMap<String, AlertTarget>>,
    /// Deprecated retained metric names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metrics_to_retain: Option<Vec<String>>,
    /// Retained metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metrics_to_retain_v2: Option<Vec<MetricToRetain>>,
    /// Export configuration (kept verbatim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_export_config: Option<MetricsExportConfig>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

/// CreateSecurityProfile response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSecurityProfileResponse {
    /// Name.
    pub security_profile_name: String,
    /// ARN.
    pub security_profile_arn: String,
}

/// DescribeSecurityProfile request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileNameRequest {
    /// Name.
    pub security_profile_name: String,
}

/// DeleteSecurityProfile request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteSecurityProfileRequest {
    /// Name.
    pub security_profile_name: String,
    /// Refuse unless this is the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<i64>,
}

/// UpdateSecurityProfile request: absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateSecurityProfileRequest {
    /// Name.
    pub security_profile_name: String,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_profile_description: Option<String>,
    /// New behaviors (replace all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviors: Option<Vec<Behavior>>,
    /// New alert targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_targets: Option<BTreeMap<String, AlertTarget>>,
    /// Deprecated retained metric names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metrics_to_retain: Option<Vec<String>>,
    /// Retained metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metrics_to_retain_v2: Option<Vec<MetricToRetain>>,
    /// Remove all behaviors (not with `behaviors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_behaviors: Option<bool>,
    /// Remove the alert targets (not with `alertTargets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_alert_targets: Option<bool>,
    /// Remove the retained metrics (not with either `additionalMetricsToRetain` field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_additional_metrics_to_retain: Option<bool>,
    /// Refuse unless this is the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<i64>,
    /// New export configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_export_config: Option<MetricsExportConfig>,
    /// Remove the export configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_metrics_export_config: Option<bool>,
}

/// ListSecurityProfiles request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListSecurityProfilesRequest {
    /// From a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1..250 (default 250).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<i64>,
    /// Only profiles that use this dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension_name: Option<String>,
    /// Only profiles that use this metric (not with `dimensionName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_name: Option<String>,
}

/// One entry of ListSecurityProfiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityProfileIdentifier {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
}

/// ListSecurityProfiles response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListSecurityProfilesResponse {
    /// Profiles, sorted by name.
    pub security_profile_identifiers: Vec<SecurityProfileIdentifier>,
    /// Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

fn profile_not_found(name: &str) -> ManageError {
    ManageError::ResourceNotFound(format!("security profile {name} does not exist"))
}

/// STRICT checks of a whole profile (spec: detect.md §4), plus that retained metrics' dimensions
/// exist.
fn check_profile_strict(p: &SecurityProfile, ctx: &ValidationContext) -> Result<(), ManageError> {
    let mut errors = validate::check_profile(p, ctx, Mode::Strict).errors;
    for m in p.additional_metrics_to_retain_v2.iter().flatten() {
        if let Some(d) = &m.metric_dimension {
            if !ctx.dimensions.contains_key(&d.dimension_name) {
                errors.push(format!(
                    "additionalMetricsToRetainV2 metric {}: dimension {} does not exist",
                    m.metric, d.dimension_name
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(errors.join("; ")))
    }
}

/// CreateSecurityProfile: STRICT validation; an identical repeat is idempotent.
pub fn create_profile(
    existing: Option<&StoredProfile>,
    req: CreateSecurityProfileRequest,
    ctx: &ValidationContext,
    now: f64,
    arns: &Arns,
) -> Result<Created<StoredProfile, CreateSecurityProfileResponse>, ManageError> {
    check_profile_name(&req.security_profile_name)?;
    check_tags(req.tags.as_ref())?;
    let request_value = to_value(&req);
    let name = req.security_profile_name.clone();
    if let Some(old) = existing {
        let same = old
            .meta
            .as_ref()
            .and_then(|m| m.create_request.as_ref())
            .is_some_and(|r| *r == request_value);
        if same {
            return Ok(Created {
                write: None,
                response: CreateSecurityProfileResponse {
                    security_profile_arn: old
                        .profile
                        .security_profile_arn
                        .clone()
                        .unwrap_or_else(|| arns.profile(&name)),
                    security_profile_name: name,
                },
            });
        }
        return Err(ManageError::ResourceAlreadyExists(format!(
            "security profile {name} already exists"
        )));
    }
    let arn = arns.profile(&name);
    let profile = SecurityProfile {
        security_profile_name: name.clone(),
        security_profile_arn: Some(arn.clone()),
        security_profile_description: req.security_profile_description,
        behaviors: req.behaviors.unwrap_or_default(),
        alert_targets: req.alert_targets,
        additional_metrics_to_retain: req.additional_metrics_to_retain,
        additional_metrics_to_retain_v2: req.additional_metrics_to_retain_v2,
        metrics_export_config: req.metrics_export_config,
        version: Some(1),
        creation_date: Some(now),
        last_modified_date: Some(now),
    };
    check_profile_strict(&profile, ctx)?;
    Ok(Created {
        write: Some(StoredProfile {
            profile,
            meta: Some(LocalMetadata {
                client_request_token: None,
                tags: req.tags,
                create_request: Some(request_value),
            }),
        }),
        response: CreateSecurityProfileResponse {
            security_profile_name: name,
            security_profile_arn: arn,
        },
    })
}

fn current_version(p: &SecurityProfile) -> i64 {
    p.version.unwrap_or(1)
}

fn check_version(p: &SecurityProfile, expected: Option<i64>) -> Result<(), ManageError> {
    match expected {
        Some(e) if e != current_version(p) => Err(ManageError::VersionConflict(format!(
            "security profile {} is at version {}, expected {e}",
            p.security_profile_name,
            current_version(p)
        ))),
        _ => Ok(()),
    }
}

/// UpdateSecurityProfile: applies the request, bumps `version`, validates STRICT.
pub fn update_profile(
    existing: Option<&StoredProfile>,
    req: UpdateSecurityProfileRequest,
    ctx: &ValidationContext,
    now: f64,
    arns: &Arns,
) -> Result<StoredProfile, ManageError> {
    check_profile_name(&req.security_profile_name)?;
    let old = existing.ok_or_else(|| profile_not_found(&req.security_profile_name))?;
    // spec: detect.md §4 profile-level: delete flag together with the field is an error.
    let yes = |b: Option<bool>| b == Some(true);
    if yes(req.delete_behaviors) && req.behaviors.is_some() {
        return Err(invalid(
            "deleteBehaviors cannot be true together with behaviors",
        ));
    }
    if yes(req.delete_alert_targets) && req.alert_targets.is_some() {
        return Err(invalid(
            "deleteAlertTargets cannot be true together with alertTargets",
        ));
    }
    if yes(req.delete_additional_metrics_to_retain)
        && (req.additional_metrics_to_retain.is_some()
            || req.additional_metrics_to_retain_v2.is_some())
    {
        return Err(invalid(
            "deleteAdditionalMetricsToRetain cannot be true together with additionalMetricsToRetain or additionalMetricsToRetainV2",
        ));
    }
    if yes(req.delete_metrics_export_config) && req.metrics_export_config.is_some() {
        return Err(invalid(
            "deleteMetricsExportConfig cannot be true together with metricsExportConfig",
        ));
    }
    check_version(&old.profile, req.expected_version)?;
    let mut new = old.clone();
    let p = &mut new.profile;
    if let Some(d) = req.security_profile_description {
        p.security_profile_description = Some(d);
    }
    if yes(req.delete_behaviors) {
        p.behaviors.clear();
    } else if let Some(b) = req.behaviors {
        p.behaviors = b;
    }
    if yes(req.delete_alert_targets) {
        p.alert_targets = None;
    } else if let Some(t) = req.alert_targets {
        p.alert_targets = Some(t);
    }
    if yes(req.delete_additional_metrics_to_retain) {
        p.additional_metrics_to_retain = None;
        p.additional_metrics_to_retain_v2 = None;
    } else {
        if let Some(m) = req.additional_metrics_to_retain {
            p.additional_metrics_to_retain = Some(m);
        }
        if let Some(m) = req.additional_metrics_to_retain_v2 {
            p.additional_metrics_to_retain_v2 = Some(m);
        }
    }
    if yes(req.delete_metrics_export_config) {
        p.metrics_export_config = None;
    } else if let Some(c) = req.metrics_export_config {
        p.metrics_export_config = Some(c);
    }
    // The stored version comes from a file (hand-editable): saturate, never overflow.
    p.version = Some(current_version(&old.profile).saturating_add(1));
    p.last_modified_date = Some(now);
    if p.security_profile_arn.is_none() {
        p.security_profile_arn = Some(arns.profile(&p.security_profile_name));
    }
    check_profile_strict(p, ctx)?;
    Ok(new)
}

/// DescribeSecurityProfile: the stored shape without metadata.
pub fn describe_profile(
    name: &str,
    existing: Option<&StoredProfile>,
) -> Result<SecurityProfile, ManageError> {
    check_profile_name(name)?;
    existing
        .map(|p| p.profile.clone())
        .ok_or_else(|| profile_not_found(name))
}

/// DeleteSecurityProfile: exists and `expectedVersion` matches.
pub fn check_delete_profile(
    req: &DeleteSecurityProfileRequest,
    existing: Option<&StoredProfile>,
) -> Result<(), ManageError> {
    check_profile_name(&req.security_profile_name)?;
    let old = existing.ok_or_else(|| profile_not_found(&req.security_profile_name))?;
    check_version(&old.profile, req.expected_version)
}

/// ListSecurityProfiles over the given profiles, with the dimension/metric filters.
pub fn list_profiles(
    profiles: &[SecurityProfile],
    req: &ListSecurityProfilesRequest,
    arns: &Arns,
) -> Result<ListSecurityProfilesResponse, ManageError> {
    if req.dimension_name.is_some() && req.metric_name.is_some() {
        return Err(invalid(
            "dimensionName and metricName cannot be used together",
        ));
    }
    if let Some(d) = &req.dimension_name {
        check_name("dimensionName", d)?;
    }
    if let Some(m) = &req.metric_name {
        check_name("metricName", m)?;
    }
    let keep = |p: &SecurityProfile| match (&req.dimension_name, &req.metric_name) {
        (Some(d), _) => profile_uses_dimension(p, d),
        (_, Some(m)) => {
            p.behaviors.iter().any(|b| b.metric.as_deref() == Some(m))
                || p.additional_metrics_to_retain_v2
                    .iter()
                    .flatten()
                    .any(|r| r.metric == *m)
        }
        _ => true,
    };
    let arn_of: BTreeMap<&str, String> = profiles
        .iter()
        .filter(|p| keep(p))
        .map(|p| {
            let arn = p
                .security_profile_arn
                .clone()
                .unwrap_or_else(|| arns.profile(&p.security_profile_name));
            (p.security_profile_name.as_str(), arn)
        })
        .collect();
    let filter = format!(
        "profiles|{}|{}",
        req.dimension_name.as_deref().unwrap_or(""),
        req.metric_name.as_deref().unwrap_or("")
    );
    let names = arn_of.keys().map(|n| n.to_string()).collect();
    let (page, next_token) = paginate(names, &filter, req.next_token.as_deref(), req.max_results)?;
    Ok(ListSecurityProfilesResponse {
        security_profile_identifiers: page
            .into_iter()
            .map(|name| SecurityProfileIdentifier {
                arn: arn_of.get(name.as_str()).cloned().unwrap_or_default(),
                name,
            })
            .collect(),
        next_token,
    })
}

#[cfg(test)]
mod tests;

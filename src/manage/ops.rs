//! The operations themselves over the managed directories, typed requests in, the API's
//! response JSON out; shared by the command line ([`crate::cli::manage`]) and by [`execute`], the
//! JSON-only entry point for a remote channel (MQTT: see [`topic_verb`]).
//!
//! Each operation holds [`DirLock`] for its whole read-modify-write.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::files::{self, Dir, DirLock, FilesError};
use super::*;
use crate::store::definitions::Validated;

/// Why an operation failed: the API's error (exit 2 / `rejected`) or the OS (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// InvalidRequest, ResourceNotFound, ResourceAlreadyExists, VersionConflict.
    #[error(transparent)]
    Api(#[from] ManageError),
    /// Reading, writing or locking the directories.
    #[error(transparent)]
    Files(#[from] FilesError),
}

/// A successful operation: the response JSON (pretty, API field order) and remarks about files
/// that could not be read (skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response body.
    pub json: String,
    /// Unreadable files skipped while listing or validating.
    pub warnings: Vec<String>,
}

/// An applied push: the plan (for the outcome) and what the managed directories now hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// What was created, updated or left.
    pub plan: super::push::PushPlan,
    /// The managed directories' records after the push, as validated (hand them to
    /// `DetectPart::start_with`); `None` when the push skipped an unreadable file there, so
    /// Detect must read the directories itself (and refuse them as it would at start).
    pub validated: Option<Validated>,
}

/// The directories one agent manages: the first `detect.profiles` and `detect.dimensions`
/// entries, plus the custom metric definitions used for STRICT validation.
#[derive(Debug, Clone)]
pub struct Managed {
    /// Profiles directory.
    pub profiles: Dir,
    /// Dimensions directory.
    pub dimensions: Dir,
    /// Custom metric files or directories (read only).
    pub custom_metrics: Vec<PathBuf>,
}

/// The resources and verbs (`dimensions`/`security-profiles` × create … delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Dimensions.
    Dimensions,
    /// Security profiles.
    SecurityProfiles,
}

/// A verb of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Create….
    Create,
    /// Describe….
    Describe,
    /// Update….
    Update,
    /// List….
    List,
    /// Delete….
    Delete,
}

impl Verb {
    /// Whether the verb changes files (so the daemon should reload).
    pub fn changes(self) -> bool {
        matches!(self, Verb::Create | Verb::Update | Verb::Delete)
    }

    fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "create" => Verb::Create,
            "describe" => Verb::Describe,
            "update" => Verb::Update,
            "list" => Verb::List,
            "delete" => Verb::Delete,
            _ => return None,
        })
    }
}

/// Maps the last two levels of a request topic, `…/<dimensions|security-profiles>/<verb>`, to
/// what [`execute`] runs. Suggested layout for an MQTT channel (the wiring is not done here):
/// requests on `defender-agent/<thing>/manage/<resource>/<verb>`, the response on the same
/// topic plus `/accepted` or `/rejected` (the body of `rejected` is `{"__type","message"}`).
pub fn topic_verb(topic: &str) -> Option<(Resource, Verb)> {
    let mut levels = topic.rsplit('/');
    let verb = Verb::parse(levels.next()?)?;
    let resource = match levels.next()? {
        "dimensions" => Resource::Dimensions,
        "security-profiles" => Resource::SecurityProfiles,
        _ => return None,
    };
    Some((resource, verb))
}

fn reply<T: Serialize>(t: &T, warnings: Vec<String>) -> Reply {
    Reply {
        json: serde_json::to_string_pretty(t).unwrap_or_else(|_| "{}".to_owned()),
        warnings,
    }
}

/// Runs one verb on a JSON request body (the API's request shape). Errors carry line, column
/// and field path of the body (`source_name` names it).
pub fn execute(
    m: &Managed,
    resource: Resource,
    verb: Verb,
    body: &str,
    source_name: &str,
    now: f64,
    arns: &Arns,
) -> Result<Reply, OpError> {
    fn req<T: Request>(body: &str, name: &str) -> Result<T, ManageError> {
        // An empty body is an empty request (List takes no required field).
        let body = if body.trim().is_empty() { "{}" } else { body };
        parse_request(body, name)
    }
    let b = body;
    let n = source_name;
    match (resource, verb) {
        (Resource::Dimensions, Verb::Create) => m.create_dimension(req(b, n)?, now, arns),
        (Resource::Dimensions, Verb::Describe) => m.describe_dimension(req(b, n)?),
        (Resource::Dimensions, Verb::Update) => m.update_dimension(req(b, n)?, now, arns),
        (Resource::Dimensions, Verb::List) => m.list_dimensions(req(b, n)?),
        (Resource::Dimensions, Verb::Delete) => m.delete_dimension(req(b, n)?),
        (Resource::SecurityProfiles, Verb::Create) => m.create_profile(req(b, n)?, now, arns),
        (Resource::SecurityProfiles, Verb::Describe) => m.describe_profile(req(b, n)?),
        (Resource::SecurityProfiles, Verb::Update) => m.update_profile(req(b, n)?, now, arns),
        (Resource::SecurityProfiles, Verb::List) => m.list_profiles(req(b, n)?, arns),
        (Resource::SecurityProfiles, Verb::Delete) => m.delete_profile(req(b, n)?),
    }
}

impl Managed {
    /// Applies a pushed message (see [`super::push`]): validated whole against the directories,
    /// then every changed record written (each file atomically, dimensions first), all under the
    /// directory lock. `Ok(Err(_))` is a refusal: nothing was written. A crash between two files
    /// leaves each file whole; the retained message, delivered again at the next connection,
    /// completes the set.
    pub fn apply_push(
        &self,
        body: &str,
        now: f64,
        arns: &Arns,
    ) -> Result<Result<super::push::PushPlan, super::push::Refused>, FilesError> {
        Ok(self.apply(body, now, arns)?.map(|a| a.plan))
    }

    /// As [`Managed::apply_push`], also returning what the managed directories hold after the
    /// push, as validated, for Detect to load without reading it back.
    pub fn apply(
        &self,
        body: &str,
        now: f64,
        arns: &Arns,
    ) -> Result<Result<Applied, super::push::Refused>, FilesError> {
        let _lock = self.lock()?;
        let (dims, dim_skipped) = self.dimensions.read_all::<StoredDimension>()?;
        let (profiles, profile_skipped) = self.profiles.read_all::<StoredProfile>()?;
        // A skipped file is one Detect would refuse: then it reads the directories itself.
        let complete = dim_skipped.is_empty() && profile_skipped.is_empty();
        let (metrics, _) = files::custom_metrics(&self.custom_metrics);
        let dim_records: Vec<StoredDimension> = dims.iter().map(|e| e.record.clone()).collect();
        let profile_records: Vec<StoredProfile> =
            profiles.iter().map(|e| e.record.clone()).collect();
        let plan = match super::push::plan(body, &dim_records, &profile_records, metrics, now, arns)
        {
            Ok(p) => p,
            Err(r) => return Ok(Err(r)),
        };
        // Every write is checked before the first one, so a refusal leaves the files untouched.
        let mut writes_dims = Vec::new();
        let mut writes_profiles = Vec::new();
        let mut errors = Vec::new();
        for d in plan
            .dimensions
            .iter()
            .filter(|d| d.change != super::push::Change::Unchanged)
        {
            let existing = dims
                .iter()
                .find(|e| e.record.dimension.name == d.name)
                .map(|e| e.path.clone());
            if let Some(e) = check_writable(&self.dimensions, &d.name, existing.as_deref()) {
                errors.push(format!("dimension {}: {e}", d.name));
            }
            writes_dims.push((d, existing));
        }
        for p in plan
            .profiles
            .iter()
            .filter(|p| p.change != super::push::Change::Unchanged)
        {
            let existing = profiles
                .iter()
                .find(|e| e.record.profile.security_profile_name == p.name)
                .map(|e| e.path.clone());
            if let Some(e) = check_writable(&self.profiles, &p.name, existing.as_deref()) {
                errors.push(format!("security profile {}: {e}", p.name));
            }
            writes_profiles.push((p, existing));
        }
        if !errors.is_empty() {
            return Ok(Err(super::push::Refused {
                push_version: plan.push_version.clone(),
                errors,
            }));
        }
        let mut held_dims: BTreeMap<PathBuf, Dimension> = dims
            .iter()
            .map(|e| (e.path.clone(), e.record.dimension.clone()))
            .collect();
        let mut held_profiles: BTreeMap<PathBuf, SecurityProfile> = profiles
            .iter()
            .map(|e| (e.path.clone(), e.record.profile.clone()))
            .collect();
        for (d, existing) in writes_dims {
            let path = existing
                .clone()
                .unwrap_or_else(|| self.dimensions.path_for(&d.name));
            held_dims.insert(path, d.record.dimension.clone());
            if let Err(e) = self.dimensions.write(&d.record, existing.as_deref())? {
                // Invariant: check_writable above refused every case write() refuses.
                return Ok(Err(super::push::Refused::one(
                    plan.push_version.clone(),
                    e.message(),
                )));
            }
        }
        for (p, existing) in writes_profiles {
            let path = existing
                .clone()
                .unwrap_or_else(|| self.profiles.path_for(&p.name));
            held_profiles.insert(path, p.record.profile.clone());
            if let Err(e) = self.profiles.write(&p.record, existing.as_deref())? {
                // Invariant: as above.
                return Ok(Err(super::push::Refused::one(
                    plan.push_version.clone(),
                    e.message(),
                )));
            }
        }
        let validated = complete.then(|| Validated {
            profiles_dir: self.profiles.path.clone(),
            profiles: held_profiles.into_iter().collect(),
            dimensions_dir: self.dimensions.path.clone(),
            dimensions: held_dims.into_iter().collect(),
        });
        Ok(Ok(Applied { plan, validated }))
    }

    /// The directories of a `[detect]` section, or why they cannot be managed.
    pub fn from_config(d: &crate::detect::Settings) -> Result<Managed, String> {
        let first = |v: &[PathBuf], key: &str| {
            v.first()
                .cloned()
                .ok_or_else(|| format!("detect.{key} is empty; name the directory to manage"))
        };
        Ok(Managed {
            profiles: Dir::new(first(&d.profiles, "profiles")?),
            dimensions: Dir::new(first(&d.dimensions, "dimensions")?),
            custom_metrics: d.custom_metrics.clone(),
        })
    }

    fn lock(&self) -> Result<DirLock, FilesError> {
        DirLock::acquire(&[&self.profiles.path, &self.dimensions.path])
    }

    fn context(&self, warnings: &mut Vec<String>) -> Result<ValidationContext, FilesError> {
        let (dims, w) = self.dimensions.read_all::<StoredDimension>()?;
        warnings.extend(w);
        let (metrics, w) = files::custom_metrics(&self.custom_metrics);
        warnings.extend(w);
        Ok(ValidationContext::new(
            dims.into_iter().map(|e| e.record.dimension).collect(),
            metrics,
        ))
    }

    /// CreateDimension.
    pub fn create_dimension(
        &self,
        req: CreateDimensionRequest,
        now: f64,
        arns: &Arns,
    ) -> Result<Reply, OpError> {
        check_dimension_name(&req.name)?;
        let _lock = self.lock()?;
        let existing = self.dimensions.find::<StoredDimension>(&req.name)?;
        if req.client_request_token.is_some() {
            let (all, _) = self.dimensions.read_all::<StoredDimension>()?;
            let all: Vec<StoredDimension> = all.into_iter().map(|e| e.record).collect();
            check_token_unused(&req, &all)?;
        }
        let created = create_dimension(existing.as_ref().map(|e| &e.record), req, now, arns)?;
        if let Some(rec) = &created.write {
            self.dimensions.write(rec, None)??;
        }
        Ok(reply(&created.response, Vec::new()))
    }

    /// DescribeDimension.
    pub fn describe_dimension(&self, req: DimensionNameRequest) -> Result<Reply, OpError> {
        check_dimension_name(&req.name)?;
        let _lock = self.lock()?;
        let existing = self.dimensions.find::<StoredDimension>(&req.name)?;
        let out = describe_dimension(&req.name, existing.as_ref().map(|e| &e.record))?;
        Ok(reply(&out, Vec::new()))
    }

    /// UpdateDimension.
    pub fn update_dimension(
        &self,
        req: UpdateDimensionRequest,
        now: f64,
        arns: &Arns,
    ) -> Result<Reply, OpError> {
        check_dimension_name(&req.name)?;
        let _lock = self.lock()?;
        let existing = self.dimensions.find::<StoredDimension>(&req.name)?;
        let new = update_dimension(existing.as_ref().map(|e| &e.record), req, now, arns)?;
        self.dimensions
            .write(&new, existing.as_ref().map(|e| e.path.as_path()))??;
        Ok(reply(&new.dimension, Vec::new()))
    }

    /// ListDimensions.
    pub fn list_dimensions(&self, req: ListDimensionsRequest) -> Result<Reply, OpError> {
        let _lock = self.lock()?;
        let (all, warnings) = self.dimensions.read_all::<StoredDimension>()?;
        let names = all.into_iter().map(|e| e.record.dimension.name).collect();
        Ok(reply(&list_dimensions(names, &req)?, warnings))
    }

    /// DeleteDimension (refused while a profile uses it).
    pub fn delete_dimension(&self, req: DimensionNameRequest) -> Result<Reply, OpError> {
        check_dimension_name(&req.name)?;
        let _lock = self.lock()?;
        let existing = self.dimensions.find::<StoredDimension>(&req.name)?;
        let profiles = files::profiles(&self.profiles)?;
        check_delete_dimension(&req.name, existing.as_ref().map(|e| &e.record), &profiles)?;
        if let Some(e) = existing {
            self.dimensions.remove(&e.path)?;
        }
        Ok(reply(&serde_json::json!({}), Vec::new()))
    }

    /// CreateSecurityProfile.
    pub fn create_profile(
        &self,
        req: CreateSecurityProfileRequest,
        now: f64,
        arns: &Arns,
    ) -> Result<Reply, OpError> {
        check_profile_name(&req.security_profile_name)?;
        let _lock = self.lock()?;
        let mut warnings = Vec::new();
        let existing = self
            .profiles
            .find::<StoredProfile>(&req.security_profile_name)?;
        let ctx = self.context(&mut warnings)?;
        let created = create_profile(existing.as_ref().map(|e| &e.record), req, &ctx, now, arns)?;
        if let Some(rec) = &created.write {
            self.profiles.write(rec, None)??;
        }
        Ok(reply(&created.response, warnings))
    }

    /// DescribeSecurityProfile.
    pub fn describe_profile(&self, req: ProfileNameRequest) -> Result<Reply, OpError> {
        check_profile_name(&req.security_profile_name)?;
        let _lock = self.lock()?;
        let existing = self
            .profiles
            .find::<StoredProfile>(&req.security_profile_name)?;
        let out = describe_profile(
            &req.security_profile_name,
            existing.as_ref().map(|e| &e.record),
        )?;
        Ok(reply(&out, Vec::new()))
    }

    /// UpdateSecurityProfile.
    pub fn update_profile(
        &self,
        req: UpdateSecurityProfileRequest,
        now: f64,
        arns: &Arns,
    ) -> Result<Reply, OpError> {
        check_profile_name(&req.security_profile_name)?;
        let _lock = self.lock()?;
        let mut warnings = Vec::new();
        let existing = self
            .profiles
            .find::<StoredProfile>(&req.security_profile_name)?;
        let ctx = self.context(&mut warnings)?;
        let new = update_profile(existing.as_ref().map(|e| &e.record), req, &ctx, now, arns)?;
        self.profiles
            .write(&new, existing.as_ref().map(|e| e.path.as_path()))??;
        Ok(reply(&new.profile, warnings))
    }

    /// ListSecurityProfiles.
    pub fn list_profiles(
        &self,
        req: ListSecurityProfilesRequest,
        arns: &Arns,
    ) -> Result<Reply, OpError> {
        let _lock = self.lock()?;
        let (all, warnings) = self.profiles.read_all::<StoredProfile>()?;
        let profiles: Vec<SecurityProfile> = all.into_iter().map(|e| e.record.profile).collect();
        Ok(reply(&list_profiles(&profiles, &req, arns)?, warnings))
    }

    /// DeleteSecurityProfile. The engine invalidates the profile's active violations when it
    /// next loads the directory (spec: detect.md §6.3).
    pub fn delete_profile(&self, req: DeleteSecurityProfileRequest) -> Result<Reply, OpError> {
        check_profile_name(&req.security_profile_name)?;
        let _lock = self.lock()?;
        let existing = self
            .profiles
            .find::<StoredProfile>(&req.security_profile_name)?;
        check_delete_profile(&req, existing.as_ref().map(|e| &e.record))?;
        if let Some(e) = existing {
            self.profiles.remove(&e.path)?;
        }
        Ok(reply(&serde_json::json!({}), Vec::new()))
    }
}

/// Why [`Dir::write`] would refuse this record, if it would.
fn check_writable(dir: &Dir, name: &str, existing: Option<&std::path::Path>) -> Option<String> {
    match existing {
        Some(p) if p.extension().and_then(|e| e.to_str()) == Some("toml") => Some(format!(
            "defined in the hand-written TOML file {}; a push does not rewrite it",
            p.display()
        )),
        Some(_) => None,
        None => {
            let path = dir.path_for(name);
            path.exists().then(|| {
                format!(
                    "{} exists and holds something else; it is never overwritten",
                    path.display()
                )
            })
        }
    }
}

/// Region and account for ARNs: `[detect] region` / `account_id`, else the environment's
/// `DEFENDER_AGENT_REGION` / `DEFENDER_AGENT_ACCOUNT`, else `local` / `000000000000`.
pub fn arns_for(d: &crate::detect::Settings) -> Arns {
    let mut a = arns_from_env();
    if let Some(r) = &d.region {
        a.region = r.clone();
    }
    if let Some(acct) = &d.account_id {
        a.account = acct.clone();
    }
    a
}

/// Region and account for ARNs from the environment: `DEFENDER_AGENT_REGION` /
/// `DEFENDER_AGENT_ACCOUNT`, else `local` / `000000000000`.
pub fn arns_from_env() -> Arns {
    let mut a = Arns::default();
    if let Ok(r) = std::env::var("DEFENDER_AGENT_REGION") {
        if !r.is_empty() {
            a.region = r;
        }
    }
    if let Ok(acct) = std::env::var("DEFENDER_AGENT_ACCOUNT") {
        if !acct.is_empty() {
            a.account = acct;
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Mode;
    use crate::store::definitions;

    const PUSH: &str = r#"{"pushVersion":"v1",
        "dimensions":[{"name":"Sensors","type":"TOPIC_FILTER","stringValues":["sensors/#"]}],
        "securityProfiles":[{"securityProfileName":"P","behaviors":[{"name":"Few",
            "metric":"aws:num-messages-sent","metricDimension":{"dimensionName":"Sensors"},
            "criteria":{"comparisonOperator":"less-than","value":{"count":10},
            "durationSeconds":300}}]}]}"#;

    fn managed(root: &std::path::Path) -> Managed {
        Managed {
            profiles: Dir::new(root.join("profiles")),
            dimensions: Dir::new(root.join("dimensions")),
            custom_metrics: Vec::new(),
        }
    }

    fn load(m: &Managed, held: Option<&Validated>) -> definitions::Loaded {
        definitions::load_all_with(
            std::slice::from_ref(&m.profiles.path),
            std::slice::from_ref(&m.dimensions.path),
            &[],
            Mode::Load,
            held,
        )
        .unwrap()
    }

    #[test]
    fn an_applied_push_hands_over_what_detect_would_read_back_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let m = managed(dir.path());
        // A profile already there, which the push leaves alone.
        let other = r#"{"securityProfileName":"A","behaviors":[]}"#;
        crate::store::ensure_dir(&m.profiles.path).unwrap();
        std::fs::write(m.profiles.path.join("A.json"), other).unwrap();
        let applied = m.apply(PUSH, 1.0, &Arns::default()).unwrap().unwrap();
        let held = applied.validated.expect("nothing was skipped");
        let profiles = |l: &definitions::Loaded| {
            l.profiles
                .iter()
                .map(|p| p.profile.clone())
                .collect::<Vec<_>>()
        };
        let from_disk = load(&m, None);
        let handed = load(&m, Some(&held));
        assert_eq!(profiles(&handed), profiles(&from_disk));
        assert_eq!(handed.dimensions, from_disk.dimensions);
        assert_eq!(handed.profiles.len(), 2);
    }

    #[test]
    fn a_push_that_skipped_an_unreadable_file_hands_over_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let m = managed(dir.path());
        crate::store::ensure_dir(&m.profiles.path).unwrap();
        std::fs::write(m.profiles.path.join("broken.json"), "{").unwrap();
        let applied = m.apply(PUSH, 1.0, &Arns::default()).unwrap().unwrap();
        assert!(applied.validated.is_none());
    }
}

//! The `dimensions …` and `security-profiles …` subcommands: AWS CLI-style flags or
//! `--cli-input-json`, the API's response JSON on stdout, the API's error JSON
//! (`{"__type","message"}`) on stderr with exit code 2.
//!
//! The files are read by the daemon's detect loader at start and on SIGHUP: after a change run
//! `systemctl reload defender-agent` (or pass `--reload` to signal the pid in the status file).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use super::{EXIT_BAD_INPUT, EXIT_FAILURE};
use crate::config::Config;
use crate::detect::profile::parse_json;
use crate::manage::files::FilesError;
use crate::manage::ops::arns_for;
use crate::manage::ops::{Managed, OpError, Reply};
use crate::manage::{parse_request, request_from_value, Arns, ManageError, Request};

/// Options every verb takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The configuration file: the first entry of `detect.dimensions` / `detect.profiles` is the
    /// directory managed (created if missing).
    #[arg(long)]
    pub config: PathBuf,
    /// The request as JSON (the API's shape); `file://` prefix accepted. Flags override its
    /// fields, as in the AWS CLI.
    #[arg(long, value_name = "FILE")]
    pub cli_input_json: Option<String>,
    /// After a successful change, send SIGHUP to the daemon (pid from its status file) so it
    /// reloads the profiles now.
    #[arg(long)]
    pub reload: bool,
}

/// `defender-agent dimensions …`
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Changes take effect in a running daemon after `systemctl reload defender-agent` (SIGHUP), or with --reload."
)]
pub struct DimensionsArgs {
    /// The verb.
    #[command(subcommand)]
    pub verb: DimensionVerb,
}

/// The dimension verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum DimensionVerb {
    /// CreateDimension: `--name N --type TOPIC_FILTER --string-values F...`.
    Create {
        /// Common options.
        #[command(flatten)]
        common: Common,
        /// The dimension's name.
        #[arg(long)]
        name: Option<String>,
        /// The type (only `TOPIC_FILTER`).
        #[arg(long = "type")]
        dimension_type: Option<String>,
        /// Topic filters.
        #[arg(long, num_args = 1..)]
        string_values: Option<Vec<String>>,
        /// Tags as JSON (`[{"Key":"k","Value":"v"}]`).
        #[arg(long)]
        tags: Option<String>,
        /// Idempotency token.
        #[arg(long)]
        client_request_token: Option<String>,
    },
    /// DescribeDimension.
    Describe {
        /// Common options.
        #[command(flatten)]
        common: Common,
        /// The dimension's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// UpdateDimension: new `--string-values`; the type cannot change.
    Update {
        /// Common options.
        #[command(flatten)]
        common: Common,
        /// The dimension's name.
        #[arg(long)]
        name: Option<String>,
        /// Topic filters.
        #[arg(long, num_args = 1..)]
        string_values: Option<Vec<String>>,
    },
    /// ListDimensions.
    List {
        /// Common options.
        #[command(flatten)]
        common: Common,
        /// From a previous page.
        #[arg(long)]
        next_token: Option<String>,
        /// Page size, 1..250.
        #[arg(long)]
        max_results: Option<i64>,
    },
    /// DeleteDimension (refused while a profile uses it).
    Delete {
        /// Common options.
        #[command(flatten)]
        common: Common,
        /// The dimension's name.
        #[arg(long)]
        name: Option<String>,
    },
}

/// `defender-agent security-profiles …`
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Changes take effect in a running daemon after `systemctl reload defender-agent` (SIGHUP), or with --reload. Deleting a profile or a behavior ends its active violations as alarm-invalidated; their history stays listable."
)]
pub struct SecurityProfilesArgs {
    /// The verb.
    #[command(subcommand)]
    pub verb: ProfileVerb,
}

/// Flags shared by create and update.
#[derive(Debug, Clone, Args)]
pub struct ProfileFields {
    /// The profile's name.
    #[arg(long)]
    pub security_profile_name: Option<String>,
    /// Description.
    #[arg(long)]
    pub security_profile_description: Option<String>,
    /// Behaviors as JSON (or `file://…`).
    #[arg(long)]
    pub behaviors: Option<String>,
    /// Alert targets as JSON (or `file://…`).
    #[arg(long)]
    pub alert_targets: Option<String>,
    /// Retained metrics as JSON (or `file://…`).
    #[arg(long)]
    pub additional_metrics_to_retain_v2: Option<String>,
}

/// The security profile verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum ProfileVerb {
    /// CreateSecurityProfile.
    Create {
        /// Common options.
        #[command(flatten)]
        common: Common,
        /// Profile fields.
        #[command(flatten)]
        fields: ProfileFields,
        /// Tags as JSON.
        #[arg(long)]
        tags: Option<String>,
    },
    /// DescribeSecurityProfile.
    Describe {
        /// Common options.
        #[command(flatten)]
        common: Common,
        /// The profile's name.
        #[arg(long)]
        security_profile_name: Option<String>,
    },
    /// UpdateSecurityProfile (bumps `version`).
    Update {
        /// Common options.
        #[command(flatten)]
        common: Common,
        /// Profile fields.
        #[command(flatten)]
        fields: ProfileFields,
        /// Remove every behavior.
        #[arg(long)]
        delete_behaviors: bool,
        /// Remove the alert targets.
        #[arg(long)]
        delete_alert_targets: bool,
        /// Remove the retained metrics.
        #[arg(long)]
        delete_additional_metrics_to_retain: bool,
        /// Refuse unless the profile is at this version.
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// ListSecurityProfiles.
    List {
        /// Common options.
        #[command(flatten)]
        common: Common,
        /// From a previous page.
        #[arg(long)]
        next_token: Option<String>,
        /// Page size, 1..250.
        #[arg(long)]
        max_results: Option<i64>,
        /// Only profiles that use this dimension.
        #[arg(long)]
        dimension_name: Option<String>,
        /// Only profiles that use this metric.
        #[arg(long)]
        metric_name: Option<String>,
    },
    /// DeleteSecurityProfile.
    Delete {
        /// Common options.
        #[command(flatten)]
        common: Common,
        /// The profile's name.
        #[arg(long)]
        security_profile_name: Option<String>,
        /// Refuse unless the profile is at this version.
        #[arg(long)]
        expected_version: Option<i64>,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Api(#[from] ManageError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error("{0}")]
    Setup(String),
}

fn now_secs() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Millisecond precision, as the AWS CLI prints dates.
    (d.as_millis() as f64) / 1000.0
}

struct Dirs {
    managed: Managed,
    config: Config,
    arns: Arns,
}

fn dirs(config_path: &Path) -> Result<Dirs, Failure> {
    let config = Config::load(config_path)?;
    let Some(d) = config.detect.clone() else {
        return Err(Failure::Setup(format!(
            "{}: [detect] is missing or disabled; the commands manage its profiles and dimensions directories",
            config_path.display()
        )));
    };
    let managed = Managed::from_config(&d)
        .map_err(|e| Failure::Setup(format!("{}: {e}", config_path.display())))?;
    Ok(Dirs {
        managed,
        arns: arns_for(&d),
        config,
    })
}

fn read_arg_file(arg: &str) -> Result<(String, String), ManageError> {
    let path = arg.strip_prefix("file://").unwrap_or(arg);
    std::fs::read_to_string(path)
        .map(|t| (t, path.to_owned()))
        .map_err(|e| ManageError::InvalidRequest(format!("cannot read {path}: {e}")))
}

/// A JSON-valued flag: inline JSON or `file://path`.
fn json_flag(flag: &str, v: &str) -> Result<Value, ManageError> {
    let (text, name) = if v.starts_with("file://") {
        read_arg_file(v)?
    } else {
        (v.to_owned(), format!("--{flag}"))
    };
    parse_json::<Value>(&text, &name).map_err(|e| ManageError::InvalidRequest(e.to_string()))
}

/// Builds the typed request from `--cli-input-json` and the flags (flags win).
fn request<T: Request>(input: Option<&str>, flags: Map<String, Value>) -> Result<T, ManageError> {
    let invalid = |e: crate::detect::ParseError| ManageError::InvalidRequest(e.to_string());
    let mut base = Map::new();
    if let Some(arg) = input {
        let (text, name) = read_arg_file(arg)?;
        if flags.is_empty() {
            // Straight from the text: errors carry line, column and field path.
            return parse_request::<T>(&text, &name);
        }
        match parse_json::<Value>(&text, &name).map_err(invalid)? {
            Value::Object(m) => base = m,
            _ => {
                return Err(ManageError::InvalidRequest(format!(
                    "{name}: the request must be a JSON object"
                )))
            }
        }
    }
    base.extend(flags);
    request_from_value(Value::Object(base))
}

#[derive(Default)]
struct Flags(Map<String, Value>);

impl Flags {
    fn s(mut self, k: &str, v: Option<String>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.to_owned(), Value::String(v));
        }
        self
    }
    fn i(mut self, k: &str, v: Option<i64>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.to_owned(), Value::from(v));
        }
        self
    }
    fn b(mut self, k: &str, v: bool) -> Self {
        if v {
            self.0.insert(k.to_owned(), Value::Bool(true));
        }
        self
    }
    fn list(mut self, k: &str, v: Option<Vec<String>>) -> Self {
        if let Some(v) = v {
            self.0.insert(
                k.to_owned(),
                Value::Array(v.into_iter().map(Value::String).collect()),
            );
        }
        self
    }
    fn json(mut self, k: &str, flag: &str, v: Option<String>) -> Result<Self, ManageError> {
        if let Some(v) = v {
            self.0.insert(k.to_owned(), json_flag(flag, &v)?);
        }
        Ok(self)
    }
    fn profile(self, f: ProfileFields) -> Result<Self, ManageError> {
        self.s("securityProfileName", f.security_profile_name)
            .s("securityProfileDescription", f.security_profile_description)
            .json("behaviors", "behaviors", f.behaviors)?
            .json("alertTargets", "alert-targets", f.alert_targets)?
            .json(
                "additionalMetricsToRetainV2",
                "additional-metrics-to-retain-v2",
                f.additional_metrics_to_retain_v2,
            )
    }
}

fn print_out(text: &str) {
    use std::io::Write;
    // A closed pipe (`| head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

fn finish(
    result: Result<Option<String>, Failure>,
    reload: bool,
    config: Option<&Config>,
) -> ExitCode {
    match result {
        Ok(response) => {
            if let Some(r) = response {
                print_out(&r);
                if reload {
                    if let Some(c) = config {
                        if let Err(e) = signal_daemon(c) {
                            eprintln!("defender-agent: --reload: {e}");
                            return ExitCode::from(EXIT_FAILURE);
                        }
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Api(e)) => {
            match serde_json::to_string_pretty(&e) {
                Ok(s) => eprintln!("{s}"),
                Err(_) => eprintln!("{e}"),
            }
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(Failure::Config(e)) => {
            eprintln!("defender-agent: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(Failure::Setup(e)) => {
            eprintln!("defender-agent: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(e @ Failure::Files(_)) => {
            eprintln!("defender-agent: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Sends SIGHUP to the daemon whose pid is in the status file of `config`'s state directory.
fn signal_daemon(config: &Config) -> Result<(), String> {
    let status = crate::status::read(&config.state_dir).map_err(|e| e.to_string())?;
    if !crate::status::process_alive(status.pid) {
        return Err(format!("the daemon (pid {}) is not running", status.pid));
    }
    let pid = i32::try_from(status.pid).map_err(|_| format!("bad pid {}", status.pid))?;
    // SAFETY: kill(2) with a plain pid and a valid signal number has no memory effects.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "kill -HUP {pid}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn done(r: Reply) -> Option<String> {
    warn(&r.warnings);
    Some(r.json)
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Failure {
        match e {
            OpError::Api(e) => Failure::Api(e),
            OpError::Files(e) => Failure::Files(e),
        }
    }
}

fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("defender-agent: warning: {w}");
    }
}

/// Runs a `dimensions` verb; the returned code is the process exit code.
pub fn run_dimensions(args: DimensionsArgs) -> ExitCode {
    let common = match &args.verb {
        DimensionVerb::Create { common, .. }
        | DimensionVerb::Describe { common, .. }
        | DimensionVerb::Update { common, .. }
        | DimensionVerb::List { common, .. }
        | DimensionVerb::Delete { common, .. } => common.clone(),
    };
    let d = match dirs(&common.config) {
        Ok(d) => d,
        Err(e) => return finish(Err(e), false, None),
    };
    // Describe and List change nothing: no reason to wake the daemon.
    let changes = !matches!(
        args.verb,
        DimensionVerb::Describe { .. } | DimensionVerb::List { .. }
    );
    let result = dimensions(&d.managed, args.verb, &d.arns);
    finish(result, common.reload && changes, Some(&d.config))
}

fn dimensions(m: &Managed, verb: DimensionVerb, arns: &Arns) -> Result<Option<String>, Failure> {
    let input = |c: &Common| c.cli_input_json.clone();
    let reply = match verb {
        DimensionVerb::Create {
            common,
            name,
            dimension_type,
            string_values,
            tags,
            client_request_token,
        } => {
            let flags = Flags::default()
                .s("name", name)
                .s("type", dimension_type)
                .list("stringValues", string_values)
                .json("tags", "tags", tags)?
                .s("clientRequestToken", client_request_token);
            m.create_dimension(
                request(input(&common).as_deref(), flags.0)?,
                now_secs(),
                arns,
            )?
        }
        DimensionVerb::Describe { common, name } => {
            let flags = Flags::default().s("name", name);
            m.describe_dimension(request(input(&common).as_deref(), flags.0)?)?
        }
        DimensionVerb::Update {
            common,
            name,
            string_values,
        } => {
            let flags = Flags::default()
                .s("name", name)
                .list("stringValues", string_values);
            m.update_dimension(
                request(input(&common).as_deref(), flags.0)?,
                now_secs(),
                arns,
            )?
        }
        DimensionVerb::List {
            common,
            next_token,
            max_results,
        } => {
            let flags = Flags::default()
                .s("nextToken", next_token)
                .i("maxResults", max_results);
            m.list_dimensions(request(input(&common).as_deref(), flags.0)?)?
        }
        DimensionVerb::Delete { common, name } => {
            let flags = Flags::default().s("name", name);
            m.delete_dimension(request(input(&common).as_deref(), flags.0)?)?
        }
    };
    Ok(done(reply))
}

/// Runs a `security-profiles` verb; the returned code is the process exit code.
pub fn run_security_profiles(args: SecurityProfilesArgs) -> ExitCode {
    let common = match &args.verb {
        ProfileVerb::Create { common, .. }
        | ProfileVerb::Describe { common, .. }
        | ProfileVerb::Update { common, .. }
        | ProfileVerb::List { common, .. }
        | ProfileVerb::Delete { common, .. } => common.clone(),
    };
    let d = match dirs(&common.config) {
        Ok(d) => d,
        Err(e) => return finish(Err(e), false, None),
    };
    let changes = !matches!(
        args.verb,
        ProfileVerb::Describe { .. } | ProfileVerb::List { .. }
    );
    let result = security_profiles(&d.managed, args.verb, &d.arns);
    finish(result, common.reload && changes, Some(&d.config))
}

fn security_profiles(
    m: &Managed,
    verb: ProfileVerb,
    arns: &Arns,
) -> Result<Option<String>, Failure> {
    let input = |c: &Common| c.cli_input_json.clone();
    let reply = match verb {
        ProfileVerb::Create {
            common,
            fields,
            tags,
        } => {
            let flags = Flags::default()
                .profile(fields)?
                .json("tags", "tags", tags)?;
            m.create_profile(
                request(input(&common).as_deref(), flags.0)?,
                now_secs(),
                arns,
            )?
        }
        ProfileVerb::Describe {
            common,
            security_profile_name,
        } => {
            let flags = Flags::default().s("securityProfileName", security_profile_name);
            m.describe_profile(request(input(&common).as_deref(), flags.0)?)?
        }
        ProfileVerb::Update {
            common,
            fields,
            delete_behaviors,
            delete_alert_targets,
            delete_additional_metrics_to_retain,
            expected_version,
        } => {
            let flags = Flags::default()
                .profile(fields)?
                .b("deleteBehaviors", delete_behaviors)
                .b("deleteAlertTargets", delete_alert_targets)
                .b(
                    "deleteAdditionalMetricsToRetain",
                    delete_additional_metrics_to_retain,
                )
                .i("expectedVersion", expected_version);
            m.update_profile(
                request(input(&common).as_deref(), flags.0)?,
                now_secs(),
                arns,
            )?
        }
        ProfileVerb::List {
            common,
            next_token,
            max_results,
            dimension_name,
            metric_name,
        } => {
            let flags = Flags::default()
                .s("nextToken", next_token)
                .i("maxResults", max_results)
                .s("dimensionName", dimension_name)
                .s("metricName", metric_name);
            m.list_profiles(request(input(&common).as_deref(), flags.0)?, arns)?
        }
        ProfileVerb::Delete {
            common,
            security_profile_name,
            expected_version,
        } => {
            let flags = Flags::default()
                .s("securityProfileName", security_profile_name)
                .i("expectedVersion", expected_version);
            m.delete_profile(request(input(&common).as_deref(), flags.0)?)?
        }
    };
    Ok(done(reply))
}

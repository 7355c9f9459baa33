//! `violations list`, `active` and `verify`: ListViolationEvents, ListActiveViolations and
//! PutVerificationStateOnViolation over the daemon's violation store. API errors exit 2 with the
//! API's JSON body (`{"__type":"InvalidRequestException",…}`) on stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::EXIT_BAD_INPUT;
use crate::config::Config;
use crate::detect::query::{ListActiveViolationsRequest, ListViolationEventsRequest};
use crate::detect::ApiError;
use crate::store::violations::{ViolationStore, FALLBACK_MAX_EVENTS, FALLBACK_RETENTION};

/// The filters both list verbs take (the API's request fields), and the store to read.
#[derive(clap::Args)]
pub struct ViolationFilters {
    /// The configuration file (where the violations are stored).
    #[arg(long)]
    config: PathBuf,
    /// Filter by thing name.
    #[arg(long)]
    thing_name: Option<String>,
    /// Filter by security profile.
    #[arg(long)]
    security_profile_name: Option<String>,
    /// STATIC, STATISTICAL or MACHINE_LEARNING.
    #[arg(long)]
    behavior_criteria_type: Option<String>,
    /// true: only suppressed; false: only unsuppressed; absent: all.
    #[arg(long)]
    list_suppressed_alerts: Option<String>,
    /// FALSE_POSITIVE, BENIGN_POSITIVE, TRUE_POSITIVE or UNKNOWN.
    #[arg(long)]
    verification_state: Option<String>,
    /// 1..250 (default 250).
    #[arg(long, allow_negative_numbers = true)]
    max_results: Option<i64>,
    /// The token of the previous page.
    #[arg(long)]
    next_token: Option<String>,
}

/// The `violations` verbs.
#[derive(Subcommand)]
pub enum ViolationsCommand {
    /// ListViolationEvents: events in [start, end], newest first.
    List {
        /// Inclusive start: epoch seconds or RFC 3339.
        #[arg(long, allow_negative_numbers = true)]
        start_time: String,
        /// Inclusive end: epoch seconds or RFC 3339.
        #[arg(long, allow_negative_numbers = true)]
        end_time: String,
        /// Filters.
        #[command(flatten)]
        filters: ViolationFilters,
    },
    /// ListActiveViolations (as saved by the daemon).
    Active {
        /// Filters.
        #[command(flatten)]
        filters: ViolationFilters,
    },
    /// PutVerificationStateOnViolation.
    Verify {
        /// The violation id.
        violation_id: String,
        /// FALSE_POSITIVE, BENIGN_POSITIVE, TRUE_POSITIVE or UNKNOWN.
        #[arg(long)]
        state: String,
        /// A description (≤ 1000 characters).
        #[arg(long)]
        description: Option<String>,
        /// The configuration file (where the violations are stored).
        #[arg(long)]
        config: PathBuf,
    },
}

impl ViolationFilters {
    /// The `--config` file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The filters as the API's request fields: the one place the flags become filters. The
    /// ListViolationEvents request takes them from here ([`events_request`]). Also the fleet's
    /// (`defender-fleet violations`).
    pub fn request(&self) -> Result<ListActiveViolationsRequest, ApiError> {
        Ok(ListActiveViolationsRequest {
            thing_name: self.thing_name.clone(),
            security_profile_name: self.security_profile_name.clone(),
            behavior_criteria_type: self.behavior_criteria_type.clone(),
            list_suppressed_alerts: parse_bool(self.list_suppressed_alerts.as_deref())?,
            verification_state: self.verification_state.clone(),
            next_token: self.next_token.clone(),
            max_results: self.max_results,
        })
    }
}

/// ListViolationEvents' request: the time range and the same filters as ListActiveViolations
/// (an exhaustive destructuring: a filter added to one request and not the other does not build).
pub fn events_request(
    start_time: f64,
    end_time: f64,
    filters: ListActiveViolationsRequest,
) -> ListViolationEventsRequest {
    let ListActiveViolationsRequest {
        thing_name,
        security_profile_name,
        behavior_criteria_type,
        list_suppressed_alerts,
        verification_state,
        next_token,
        max_results,
    } = filters;
    ListViolationEventsRequest {
        start_time,
        end_time,
        thing_name,
        security_profile_name,
        behavior_criteria_type,
        list_suppressed_alerts,
        verification_state,
        next_token,
        max_results,
    }
}

/// Runs a `violations` verb.
pub fn run(cmd: ViolationsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ViolationsCommand::List {
            start_time,
            end_time,
            filters: f,
        } => {
            let store = open_store(&f.config)?;
            let req = (|| {
                let start = parse_time("startTime", &start_time)?;
                let end = parse_time("endTime", &end_time)?;
                Ok(events_request(start, end, f.request()?))
            })();
            let req = match req {
                Ok(r) => r,
                Err(e) => return Ok(api_error(&e)),
            };
            respond(store.list_violation_events(&req)?)
        }
        ViolationsCommand::Active { filters: f } => {
            let store = open_store(&f.config)?;
            let req = match f.request() {
                Ok(r) => r,
                Err(e) => return Ok(api_error(&e)),
            };
            respond(store.list_active_violations(&req)?)
        }
        ViolationsCommand::Verify {
            violation_id,
            state,
            description,
            config,
        } => {
            let store = open_store(&config)?;
            match store.put_verification_state(&violation_id, &state, description.as_deref())? {
                Ok(()) => {
                    // The API's response is an empty object.
                    println!("{{}}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(api_error(&e)),
            }
        }
    }
}

/// The response as pretty JSON on stdout, or the API error on stderr (exit 2).
fn respond<T: serde::Serialize>(r: Result<T, ApiError>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(resp) => {
            println!("{}", serde_json::to_string_pretty(&resp)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(api_error(&e)),
    }
}

/// The store of the configuration's state directory, with `[detect]`'s retention and bound.
fn open_store(path: &Path) -> anyhow::Result<ViolationStore> {
    let config = Config::load(path)?;
    let (retention, max_events) = match &config.detect {
        Some(d) => (d.retention, d.max_events),
        None => (FALLBACK_RETENTION, FALLBACK_MAX_EVENTS),
    };
    Ok(ViolationStore::open(
        &config.state_dir,
        retention,
        max_events,
    )?)
}

/// An API error: its JSON body on stderr, exit 2.
pub fn api_error(e: &ApiError) -> ExitCode {
    eprintln!("{}", serde_json::to_string(e).unwrap_or_default());
    ExitCode::from(EXIT_BAD_INPUT)
}

fn invalid(m: String) -> ApiError {
    ApiError::InvalidRequest(m)
}

fn parse_bool(v: Option<&str>) -> Result<Option<bool>, ApiError> {
    match v {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(o) => Err(invalid(format!(
            "listSuppressedAlerts {o} should be true or false"
        ))),
    }
}

/// Epoch seconds (integer or decimal) or RFC 3339 (`2025-11-25T16:00:00Z`, a fraction and an
/// offset allowed: `2026-10-01T10:00:00.123000+00:00`).
pub fn parse_time(name: &str, s: &str) -> Result<f64, ApiError> {
    let bad = || {
        invalid(format!(
            "{name} {s:?} is not a time: use epoch seconds or RFC 3339"
        ))
    };
    if let Ok(v) = s.parse::<f64>() {
        return if v.is_finite() { Ok(v) } else { Err(bad()) };
    }
    crate::detect::timestamp::parse_rfc3339(s).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        filters: ViolationFilters,
    }

    #[test]
    fn both_list_verbs_take_the_same_seven_filters() {
        let a = Args::try_parse_from([
            "x",
            "--config",
            "c.toml",
            "--thing-name",
            "t",
            "--security-profile-name",
            "p",
            "--behavior-criteria-type",
            "STATIC",
            "--list-suppressed-alerts",
            "false",
            "--verification-state",
            "UNKNOWN",
            "--max-results",
            "7",
            "--next-token",
            "n",
        ])
        .unwrap();
        let active = a.filters.request().unwrap();
        assert_eq!(
            active,
            ListActiveViolationsRequest {
                thing_name: Some("t".into()),
                security_profile_name: Some("p".into()),
                behavior_criteria_type: Some("STATIC".into()),
                list_suppressed_alerts: Some(false),
                verification_state: Some("UNKNOWN".into()),
                next_token: Some("n".into()),
                max_results: Some(7),
            }
        );
        assert_eq!(
            events_request(1.0, 2.0, active),
            ListViolationEventsRequest {
                start_time: 1.0,
                end_time: 2.0,
                thing_name: Some("t".into()),
                security_profile_name: Some("p".into()),
                behavior_criteria_type: Some("STATIC".into()),
                list_suppressed_alerts: Some(false),
                verification_state: Some("UNKNOWN".into()),
                next_token: Some("n".into()),
                max_results: Some(7),
            }
        );
        let bad = Args::try_parse_from(["x", "--config", "c", "--list-suppressed-alerts", "yes"])
            .unwrap();
        assert_eq!(
            bad.filters.request().unwrap_err(),
            ApiError::InvalidRequest("listSuppressedAlerts yes should be true or false".into())
        );
    }

    #[test]
    fn times_are_epoch_seconds_or_rfc3339() {
        assert_eq!(parse_time("t", "1764086400").unwrap(), 1_764_086_400.0);
        assert_eq!(
            parse_time("t", "2025-11-25T16:00:00Z").unwrap(),
            1_764_086_400.0
        );
        assert_eq!(
            parse_time("t", "2025-11-25T18:00:00.5+02:00").unwrap(),
            1_764_086_400.5
        );
        assert_eq!(parse_time("t", "1970-01-01T00:00:00Z").unwrap(), 0.0);
        assert!(parse_time("t", "yesterday").is_err());
        assert!(parse_time("t", "2025-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn rfc3339_times_take_a_fraction_an_offset_and_the_three_separators() {
        assert_eq!(
            parse_time("t", "2026-10-01T10:00:00.123000+00:00").unwrap(),
            1_790_848_800.0 + 0.123
        );
        assert_eq!(
            parse_time("t", "2025-11-25t16:00:00z").unwrap(),
            1_764_086_400.0
        );
        assert_eq!(
            parse_time("t", "2025-11-25 11:30:00-04:30").unwrap(),
            1_764_086_400.0
        );
        assert_eq!(parse_time("t", "-1.5").unwrap(), -1.5);
        assert_eq!(parse_time("t", "1764086400.25").unwrap(), 1_764_086_400.25);
        // A leap second is the last instant of its minute (the crate's 59.999999999 s).
        assert_eq!(
            parse_time("t", "2016-12-31T23:59:60Z").unwrap(),
            1_483_228_800.0
        );
    }

    #[test]
    fn malformed_times_are_invalid_requests() {
        for s in [
            "2025-11-25X16:00:00Z",
            "2025-11-25T16:00:00",
            "2025-11-25T16:00Z",
            "2025-11-25T24:00:00Z",
            "2025-11-25T16:00:00+2:00",
            "25-11-25T16:00:00Z",
            "inf",
            "NaN",
            "",
            // Accepted by the hand-written parser before the `time` crate, not RFC 3339: a day
            // past the month's end, a dot without digits, second 60 that is not a leap second,
            // an offset beyond ±23:59.
            "2025-02-31T00:00:00Z",
            "2025-11-25T16:00:00.Z",
            "2025-11-25T16:00:60Z",
            "2025-11-25T16:00:00+24:00",
            "2025-11-25T16:00:00+01:60",
        ] {
            let e = parse_time("startTime", s).unwrap_err();
            assert_eq!(
                e,
                ApiError::InvalidRequest(format!(
                    "startTime {s:?} is not a time: use epoch seconds or RFC 3339"
                ))
            );
        }
    }
}

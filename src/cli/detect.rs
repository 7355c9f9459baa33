//! `detect validate` (ValidateSecurityProfileBehaviors) and `detect replay` (recorded input
//! through profiles). Bad input exits 2: a document that is not a request or profile as the
//! API's error JSON (`{"__type":"InvalidRequestException",…}`), file and replay errors as a
//! message on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::EXIT_BAD_INPUT;
use crate::detect::replay::ReplayDocument;
use crate::detect::{self, replay, validate_behaviors_text, DetectEngine, Mode, ValidationContext};
use crate::store::definitions;

/// The `detect` verbs.
#[derive(Subcommand)]
pub enum DetectCommand {
    /// ValidateSecurityProfileBehaviors: prints `{"valid":…,"validationErrors":[…]}` per file;
    /// exit 0 when all are valid, 2 when not.
    Validate {
        /// Files holding `{"behaviors":[…]}`, a profile document, or a list of behaviors
        /// (JSON, or TOML by the `.toml` extension).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Dimension documents (files or directories) the behaviors may name.
        #[arg(long)]
        dimension: Vec<PathBuf>,
        /// Custom metric documents (files or directories) the behaviors may name.
        #[arg(long)]
        custom_metric: Vec<PathBuf>,
    },
    /// Runs JSON-lines input through profiles; prints the ListViolationEvents response (newest
    /// first) and, with --active, the ListActiveViolations response as a second document.
    Replay {
        /// Profile documents (files or directories).
        #[arg(long, required = true)]
        profile: Vec<PathBuf>,
        /// Dimension documents.
        #[arg(long)]
        dimension: Vec<PathBuf>,
        /// Custom metric documents.
        #[arg(long)]
        custom_metric: Vec<PathBuf>,
        /// The thing name put in events (also the client id for `${iot:ClientId}`).
        #[arg(long, default_value = "thing")]
        thing_name: String,
        /// The JSON-lines input.
        #[arg(long)]
        input: PathBuf,
        /// Also print the active violations at the end.
        #[arg(long)]
        active: bool,
        /// How profiles are checked: strict (default: every rule) or load.
        #[arg(long, value_parser = ["strict", "load"], default_value = "strict")]
        mode: String,
        /// Evaluate aws:disconnect-duration with the unverified reconstruction (spec §2.3).
        #[arg(long)]
        disconnect_duration: bool,
        /// Statistical thresholds, as `[detect] statistical`: off (not evaluated) or
        /// local-history (nearest-rank percentile of this device's own history, spec §3.5).
        #[arg(long, value_parser = ["off", "local-history"], default_value = "off")]
        statistical: String,
        /// ML behaviors, as `[detect] ml`: off (not evaluated) or local-baseline (robust z
        /// against this device's 14-day baseline, not AWS ML Detect; spec §7.2).
        #[arg(long, value_parser = ["off", "local-baseline"], default_value = "off")]
        ml: String,
    },
}

/// Runs a `detect` verb.
pub fn run(cmd: DetectCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DetectCommand::Validate {
            files,
            dimension,
            custom_metric,
        } => {
            let ctx = ValidationContext::new(
                definitions::load_dimensions(&dimension, Mode::Strict)?,
                definitions::load_custom_metrics(&custom_metric)?,
            );
            let mut all_valid = true;
            for f in &files {
                let doc = definitions::read_doc(f)?;
                let r = match validate_behaviors_text(&doc.text, &doc.name(), doc.format, &ctx) {
                    Ok(r) => r,
                    Err(e) => {
                        // Not a request or profile at all: the API's error form, as the
                        // other verbs refuse a malformed request.
                        let e = detect::ApiError::InvalidRequest(e.to_string());
                        eprintln!("{}", serde_json::to_string(&e)?);
                        return Ok(ExitCode::from(EXIT_BAD_INPUT));
                    }
                };
                all_valid &= r.valid;
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            Ok(if all_valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_BAD_INPUT)
            })
        }
        DetectCommand::Replay {
            profile,
            dimension,
            custom_metric,
            thing_name,
            input,
            active,
            mode,
            disconnect_duration,
            statistical,
            ml,
        } => {
            let mode = if mode == "load" {
                Mode::Load
            } else {
                Mode::Strict
            };
            let loaded = definitions::load_all(&profile, &dimension, &custom_metric, mode)?;
            let engine =
                replay_engine(&loaded, &thing_name, disconnect_duration, &statistical, &ml);
            for d in loaded
                .profiles
                .iter()
                .flat_map(|p| &p.diagnostics)
                .chain(engine.diagnostics())
            {
                tracing::warn!("{d}");
            }
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let run = replay::replay(&text, engine, &thing_name)
                .with_context(|| input.display().to_string())?;
            for n in &run.notes {
                tracing::warn!("{}: {n}", input.display());
            }
            let events = ReplayDocument {
                violation_events: run.events_newest_first(),
                active_violations: None,
            };
            println!("{}", serde_json::to_string_pretty(&events)?);
            if active {
                let a = detect::query::ListActiveViolationsResponse {
                    active_violations: run.engine.active_violations(),
                    next_token: None,
                };
                println!("{}", serde_json::to_string_pretty(&a)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The engine `detect replay` runs: the loaded profiles for `thing_name`, with the statistical
/// and ML modes of the flags (as `[detect] statistical` / `ml`). The one place the CLI sets up a
/// Detect engine.
pub fn replay_engine(
    loaded: &definitions::Loaded,
    thing_name: &str,
    disconnect_duration: bool,
    statistical: &str,
    ml: &str,
) -> DetectEngine {
    // The same path as the daemon: a `[detect]` section's settings, then its engine settings.
    let mut section = detect::Settings::new(Vec::new(), Vec::new());
    section.disconnect_duration = disconnect_duration;
    if statistical == "local-history" {
        section.statistical = detect::StatMode::LocalHistory;
    }
    if ml == "local-baseline" {
        section.ml = detect::MlMode::LocalBaseline;
    }
    let mut settings = section.engine_settings(thing_name);
    // Replay lines carry the connection's source IP explicitly.
    settings.source_ip_from_connection = true;
    let profiles: Vec<_> = loaded.profiles.iter().map(|p| p.profile.clone()).collect();
    DetectEngine::new(settings, &profiles, &loaded.context())
}

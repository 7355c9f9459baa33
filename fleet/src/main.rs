//! `defender-fleet`: the fleet service's command line. Exit codes as the agent's: 0 success,
//! 1 failure, 2 bad input (configuration, profiles, replay input).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use defender_agent::cli::violations::{api_error, events_request, parse_time, ViolationsCommand};
use defender_agent::config::{Error as ConfigError, Severity};
use defender_agent::detect::fleet::{FleetDetect, DEFAULT_MIN_POPULATION};
use defender_agent::detect::replay::{replay_fleet, ReplayDocument};
use defender_agent::detect::{query, Mode};
use defender_agent::store::definitions;
use defender_fleet::config::{Config, EXAMPLE};
use defender_fleet::store::{Store, StoreError};

const EXIT_FAILURE: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

/// The fleet service for Device Defender agents.
#[derive(Parser)]
#[command(name = "defender-fleet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the service: ingests reports from the broker, answers them, runs Detect.
    Serve {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Checks a configuration file: every problem with key, line and column; exit 2 on errors.
    CheckConfig {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Check the text only, not the deployment it describes (TLS files, Detect files): for
        /// templates such as the example.
        #[arg(long)]
        no_deployment: bool,
    },
    /// Prints the example configuration (every key with its default).
    PrintExampleConfig,
    /// Shows things, reports/s, rejects by code, store size and thresholds.
    Status {
        /// The configuration file (its [store]).
        #[arg(long)]
        config: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Things listed by name at most (the count is always whole).
        #[arg(long, default_value_t = 100)]
        max_things: usize,
    },
    /// Lists and verifies the fleet's violations (the agent's `violations` verbs).
    Violations {
        #[command(subcommand)]
        command: ViolationsCommand,
    },
    /// Prints the stored fleet thresholds (JSON): value, population, computation time.
    Thresholds {
        /// The configuration file (its [store]).
        #[arg(long)]
        config: PathBuf,
    },
    /// Runs the fleet evaluation over recorded JSON lines `{"time","thing","report"}`; prints
    /// the ListViolationEvents response and, with --active, ListActiveViolations.
    Replay {
        /// Profile documents (files or directories).
        #[arg(long, required = true, num_args = 1..)]
        profile: Vec<PathBuf>,
        /// Dimension documents.
        #[arg(long, num_args = 1..)]
        dimension: Vec<PathBuf>,
        /// Custom metric documents.
        #[arg(long, num_args = 1..)]
        custom_metric: Vec<PathBuf>,
        /// The JSON-lines input.
        #[arg(long)]
        input: PathBuf,
        /// Also print the active violations at the end.
        #[arg(long)]
        active: bool,
        /// Smallest population a statistical threshold is computed over.
        #[arg(long, default_value_t = DEFAULT_MIN_POPULATION)]
        min_population: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::CheckConfig {
            config,
            no_deployment,
        } => return check_config(&config, !no_deployment),
        Command::PrintExampleConfig => {
            print!("{EXAMPLE}");
            return ExitCode::SUCCESS;
        }
        Command::Replay {
            profile,
            dimension,
            custom_metric,
            input,
            active,
            min_population,
        } => replay(
            &profile,
            &dimension,
            &custom_metric,
            &input,
            active,
            min_population,
        ),
        Command::Serve { config } => serve(&config),
        Command::Thresholds { config } => thresholds(&config),
        Command::Status {
            config,
            json,
            max_things,
        } => status(&config, json, max_things),
        Command::Violations { command } => violations(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("defender-fleet: {e:#}");
            let bad_input = e.chain().any(|c| {
                c.is::<ConfigError>()
                    || c.is::<definitions::Error>()
                    || c.is::<defender_agent::detect::replay::ReplayError>()
            });
            ExitCode::from(if bad_input {
                EXIT_BAD_INPUT
            } else {
                EXIT_FAILURE
            })
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("DEFENDER_FLEET_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
}

/// `check-config`: warnings and errors on stderr, `FILE: OK` on stdout; exit 2 on any error.
fn check_config(path: &Path, deployment: bool) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            let mut problems = c.warnings.clone();
            if deployment {
                let src = std::fs::read_to_string(path).unwrap_or_default();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                problems.extend(c.deployment_problems(&src, now));
            }
            for p in &problems {
                eprintln!("{}: {p}", path.display());
            }
            let errors = problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .count();
            if errors > 0 {
                eprintln!("{}: {errors} error(s)", path.display());
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { origin, problems }) => {
            for p in &problems {
                eprintln!("{origin}: {p}");
            }
            let n = problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .count();
            eprintln!("{origin}: {n} error(s)");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(e) => {
            eprintln!("defender-fleet: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// `replay`: the definitions loaded as `defender-agent detect replay` loads them (strict), the
/// fleet evaluation of [`replay_fleet`], the documents printed as `detect replay` prints them.
fn replay(
    profiles: &[PathBuf],
    dimensions: &[PathBuf],
    custom_metrics: &[PathBuf],
    input: &Path,
    active: bool,
    min_population: usize,
) -> anyhow::Result<ExitCode> {
    let loaded = definitions::load_all(profiles, dimensions, custom_metrics, Mode::Strict)?;
    let list: Vec<_> = loaded.profiles.iter().map(|p| p.profile.clone()).collect();
    let fleet = FleetDetect::new(&list, &loaded.context());
    for d in loaded
        .profiles
        .iter()
        .flat_map(|p| &p.diagnostics)
        .chain(fleet.diagnostics())
    {
        tracing::warn!("{d}");
    }
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let run = replay_fleet(&text, &fleet, min_population, active)
        .with_context(|| input.display().to_string())?;
    for n in &run.notes {
        tracing::warn!("{}: {n}", input.display());
    }
    let events = ReplayDocument {
        violation_events: run.document.violation_events.clone(),
        active_violations: None,
    };
    println!("{}", serde_json::to_string_pretty(&events)?);
    if let Some(a) = run.document.active_violations {
        let a = query::ListActiveViolationsResponse {
            active_violations: a,
            next_token: None,
        };
        println!("{}", serde_json::to_string_pretty(&a)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `thresholds`: `{"thresholds":[{profile, behavior, value, population, computed_at_ms}]}`.
fn thresholds(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let list = rt.block_on(async {
        let store = defender_fleet::store::Store::open(config.store.clone()).await?;
        let list = store.thresholds().await;
        store.close().await;
        list
    })?;
    let doc = serde_json::json!({ "thresholds": list });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}

/// `serve`: the ingest until SIGTERM/SIGINT (exit 0 after draining).
fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    for w in &config.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(defender_fleet::serve::run(config))?;
    Ok(ExitCode::SUCCESS)
}

/// A current-thread runtime for a one-shot verb.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// `status`: text, or with `--json` the [`defender_fleet::status::Status`] document.
fn status(path: &Path, json: bool, max_things: usize) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let status = runtime()?.block_on(async {
        let store = Store::open(config.store.clone()).await?;
        let s =
            defender_fleet::status::read(&store, defender_fleet::serve::now_ms(), max_things).await;
        store.close().await;
        s
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", defender_fleet::status::text(&status));
    }
    Ok(ExitCode::SUCCESS)
}

/// A store answer: pretty JSON on stdout, an API error as the agent prints it (exit 2).
fn respond<T: serde::Serialize>(r: Result<T, StoreError>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::Api(e)) => Ok(api_error(&e)),
        Err(e) => Err(e.into()),
    }
}

/// `violations list|active|verify`: the agent's verbs (same flags, requests, errors, pages)
/// over the fleet's store.
fn violations(cmd: ViolationsCommand) -> anyhow::Result<ExitCode> {
    let config_path = match &cmd {
        ViolationsCommand::List { filters, .. } | ViolationsCommand::Active { filters } => {
            filters.config().to_owned()
        }
        ViolationsCommand::Verify { config, .. } => config.clone(),
    };
    let config = Config::load(&config_path)?;
    let rt = runtime()?;
    let store = rt.block_on(Store::open(config.store.clone()))?;
    let out = match cmd {
        ViolationsCommand::List {
            start_time,
            end_time,
            filters,
        } => {
            let req = (|| {
                let start = parse_time("startTime", &start_time)?;
                let end = parse_time("endTime", &end_time)?;
                Ok(events_request(start, end, filters.request()?))
            })();
            match req {
                Ok(req) => respond(rt.block_on(store.list_violation_events(&req))),
                Err(e) => Ok(api_error(&e)),
            }
        }
        ViolationsCommand::Active { filters } => match filters.request() {
            Ok(req) => {
                // An unknown securityProfileName is ResourceNotFoundException, as on the
                // agent: the names are the configured profiles'.
                let d = &config.detect;
                let loaded = definitions::load_all(
                    &d.profiles,
                    &d.dimensions,
                    &d.custom_metrics,
                    Mode::Load,
                )?;
                let known = loaded
                    .profiles
                    .iter()
                    .map(|p| p.profile.security_profile_name.clone())
                    .collect();
                respond(rt.block_on(store.list_active_violations(&known, &req)))
            }
            Err(e) => Ok(api_error(&e)),
        },
        ViolationsCommand::Verify {
            violation_id,
            state,
            description,
            ..
        } => match rt.block_on(store.put_verification_state(
            &violation_id,
            &state,
            description.as_deref(),
        )) {
            Ok(()) => {
                // The API's response is an empty object.
                println!("{{}}");
                Ok(ExitCode::SUCCESS)
            }
            Err(StoreError::Api(e)) => Ok(api_error(&e)),
            Err(e) => Err(e.into()),
        },
    };
    rt.block_on(store.close());
    out
}

//! The worked-case fixtures of detect.md (tests/fixtures/detect/cases) through
//! [`replay::replay`](super::replay::replay) directly, set up as `detect replay` sets up its
//! engine. Test code: the fixture reader (shared with the integration test) does the file I/O.

#[path = "../../tests/integration/detect_cases/fixture.rs"]
mod fixture;

use fixture::{Case, Outcome};

use super::replay::{replay, ReplayDocument};
use super::Mode;

/// The thing name `detect replay` uses by default.
const THING: &str = "thing";

fn run_library(case: &Case) -> Outcome {
    let failed = |message: String| Outcome::Failed {
        exit_code: None,
        message,
    };
    let mode = match case.arg("--mode") {
        Some("load") => Mode::Load,
        _ => Mode::Strict,
    };
    let loaded = match crate::store::definitions::load_all(
        &case.profiles,
        &case.dimensions,
        &case.custom_metrics,
        mode,
    ) {
        Ok(l) => l,
        Err(e) => return failed(e.to_string()),
    };
    let thing = case.arg("--thing-name").unwrap_or(THING);
    // The engine `detect replay` builds, from the same flags.
    let engine = crate::cli::detect::replay_engine(
        &loaded,
        thing,
        case.arg("--disconnect-duration").is_some(),
        case.arg("--statistical").unwrap_or("off"),
        case.arg("--ml").unwrap_or("off"),
    );
    match replay(&case.input_text(), engine, thing) {
        Ok(run) => {
            let doc: ReplayDocument = run.document(case.arg("--active").is_some());
            Outcome::Document(serde_json::to_value(doc).unwrap())
        }
        Err(e) => failed(e.to_string()),
    }
}

#[test]
fn every_worked_case_gives_the_spec_events_through_the_replay_driver() {
    fixture::check_all(run_library);
}

/// Whether a case's input is reports only (what a fleet replay takes) and its engine is one the
/// fleet can be (not local-history statistics, whose semantics are per device).
fn fleet_replayable(case: &Case) -> bool {
    case.arg("--statistical").is_none()
        && case.input_text().lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l.contains("\"report\"")
        })
}

#[test]
fn a_single_thing_fleet_replay_gives_the_device_replay_document_for_every_report_only_case() {
    let mut compared = Vec::new();
    for case in fixture::all_cases() {
        if !fleet_replayable(&case) {
            continue;
        }
        let loaded = crate::store::definitions::load_all(
            &case.profiles,
            &case.dimensions,
            &case.custom_metrics,
            Mode::Strict,
        )
        .unwrap_or_else(|e| panic!("case {}: {e}", case.name));
        let engine = crate::cli::detect::replay_engine(
            &loaded,
            THING,
            case.arg("--disconnect-duration").is_some(),
            "off",
            case.arg("--ml").unwrap_or("off"),
        );
        let profiles: Vec<_> = loaded.profiles.iter().map(|p| p.profile.clone()).collect();
        let fleet = super::fleet::FleetDetect::with_settings(
            engine.settings().clone(),
            &profiles,
            &loaded.context(),
        );
        let active = case.arg("--active").is_some();
        // The same lines with the thing's name (an object key more, same report).
        let input: String = case
            .input_text()
            .lines()
            .map(|l| match l.trim().strip_prefix('{') {
                Some(rest) if !l.trim().starts_with('#') => {
                    format!("{{\"thing\":\"{THING}\",{rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let device = replay(&case.input_text(), engine, THING).map(|r| r.document(active));
        let fleet = super::replay::replay_fleet(&input, &fleet, 10, active).map(|r| r.document);
        match (device, fleet) {
            (Ok(d), Ok(f)) => assert_eq!(
                serde_json::to_value(&f).unwrap(),
                serde_json::to_value(&d).unwrap(),
                "case {}",
                case.name
            ),
            (Err(d), Err(f)) => assert_eq!(f.to_string(), d.to_string(), "case {}", case.name),
            (d, f) => panic!("case {}: device {d:?}, fleet {f:?}", case.name),
        }
        compared.push(case.name.clone());
    }
    assert!(compared.len() >= 12, "{compared:?}");
}

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

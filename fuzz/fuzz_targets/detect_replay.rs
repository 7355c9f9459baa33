//! `detect replay` (`detect::replay::replay`) on arbitrary JSON-lines input against the replay
//! fixture profile: never panics, never hangs, and replaying the same input twice gives the same
//! events (the engine is deterministic: ids and order come from the input only).
#![no_main]

use defender_agent::detect::replay::replay;
use defender_agent::detect::{load_profile, DetectEngine, EngineSettings, Format, Mode};
use libfuzzer_sys::fuzz_target;

#[path = "detect_common.rs"]
mod detect_common;

fn engine() -> DetectEngine {
    let ctx = detect_common::context();
    let profile = load_profile(
        include_str!("../../tests/fixtures/detect/replay-profile.json"),
        "replay-profile.json",
        Format::Json,
        &ctx,
        Mode::Load,
    )
    .expect("fuzz harness: the replay fixture profile loads");
    DetectEngine::new(EngineSettings::new("fuzz-thing"), &[profile.profile], &ctx)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = replay(text, engine(), "fuzz-client");
    let second = replay(text, engine(), "fuzz-client");
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.events_newest_first(), b.events_newest_first());
            let _ = serde_json::to_string(&a.document(true));
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
        }
        (a, b) => panic!("replay is not deterministic: {:?} vs {:?}", a.is_ok(), b.is_ok()),
    }
});

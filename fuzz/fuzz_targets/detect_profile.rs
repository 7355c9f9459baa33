//! `detect::load_profile` on arbitrary JSON/TOML (first byte: format, mode): never panics, and a
//! profile that loads survives serialise → load unchanged.
#![no_main]

use defender_agent::detect::{load_profile, Format};
use libfuzzer_sys::fuzz_target;

#[path = "detect_common.rs"]
mod detect_common;

fuzz_target!(|data: &[u8]| {
    let Some((format, mode, text)) = detect_common::split(data) else {
        return;
    };
    let ctx = detect_common::context();
    match load_profile(text, "fuzz", format, &ctx, mode) {
        Ok(loaded) => {
            for d in &loaded.diagnostics {
                let _ = d.to_string();
            }
            let json = serde_json::to_string(&loaded.profile).expect("a profile serialises");
            let again = load_profile(&json, "fuzz", Format::Json, &ctx, mode)
                .unwrap_or_else(|e| panic!("a loaded profile does not load again: {e}\n{json}"));
            assert_eq!(again.profile, loaded.profile, "serialise → load changed the profile");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

//! `detect validate` (`validate_behaviors_text`, the ValidateSecurityProfileBehaviors emulation) on
//! arbitrary JSON/TOML (first byte: format): never panics, and is deterministic.
#![no_main]

use defender_agent::detect::validate_behaviors_text;
use libfuzzer_sys::fuzz_target;

#[path = "detect_common.rs"]
mod detect_common;

fuzz_target!(|data: &[u8]| {
    let Some((format, _mode, text)) = detect_common::split(data) else {
        return;
    };
    let ctx = detect_common::context();
    let first = validate_behaviors_text(text, "fuzz", format, &ctx);
    let second = validate_behaviors_text(text, "fuzz", format, &ctx);
    assert_eq!(first, second, "validate is not deterministic");
    if let Err(e) = first {
        let _ = e.to_string();
    }
});

//! `Config::parse` on arbitrary text: the TOML loader and validator must never panic, and a
//! configuration that parses once parses the same way again (no hidden state).
#![no_main]

use defender_agent::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Config::parse(text, "fuzz.toml");
    let second = Config::parse(text, "fuzz.toml");
    assert_eq!(
        first.is_ok(),
        second.is_ok(),
        "Config::parse is not deterministic"
    );
    if let Err(e) = first {
        // Error messages are rendered for the operator: rendering must not panic either.
        let _ = e.to_string();
    }
});

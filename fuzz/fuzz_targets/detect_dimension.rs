//! `detect::load_dimension` and `load_custom_metric` on arbitrary JSON/TOML (first byte: format,
//! mode; bit 2 picks the custom metric): never panic; what loads survives serialise → load.
#![no_main]

use defender_agent::detect::{load_custom_metric, load_dimension, Format};
use libfuzzer_sys::fuzz_target;

#[path = "detect_common.rs"]
mod detect_common;

fuzz_target!(|data: &[u8]| {
    let Some((format, mode, text)) = detect_common::split(data) else {
        return;
    };
    if data[0] & 4 == 0 {
        match load_dimension(text, "fuzz", format, mode) {
            Ok(d) => {
                let json = serde_json::to_string(&d).expect("a dimension serialises");
                let again = load_dimension(&json, "fuzz", Format::Json, mode)
                    .unwrap_or_else(|e| panic!("a loaded dimension does not load again: {e}"));
                assert_eq!(again, d);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    } else {
        match load_custom_metric(text, "fuzz", format) {
            Ok(m) => {
                let json = serde_json::to_string(&m).expect("a custom metric serialises");
                let again = load_custom_metric(&json, "fuzz", Format::Json)
                    .unwrap_or_else(|e| panic!("a loaded custom metric does not load again: {e}"));
                assert_eq!(again, m);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});

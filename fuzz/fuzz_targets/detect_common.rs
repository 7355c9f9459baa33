// Shared by the detect_* targets (included with `#[path]`): the validation context built from the
// repository's replay fixtures, and the input split (first byte: format and mode).
#![allow(dead_code)] // each target uses part of it

use defender_agent::detect::{load_custom_metric, load_dimension, Format, Mode, ValidationContext};

/// Dimensions and custom metrics the fuzzed profiles may refer to.
pub fn context() -> ValidationContext {
    let dimension = load_dimension(
        include_str!("../../tests/fixtures/detect/replay-dimension.json"),
        "replay-dimension.json",
        Format::Json,
        Mode::Strict,
    );
    let metric = load_custom_metric(
        include_str!("../../tests/fixtures/detect/replay-custom-metric.json"),
        "replay-custom-metric.json",
        Format::Json,
    );
    ValidationContext::new(dimension.into_iter().collect(), metric.into_iter().collect())
}

/// Splits a fuzz input into (format, mode, text): bit 0 of the first byte picks TOML over JSON,
/// bit 1 STRICT over LOAD. `None` when the rest is not UTF-8.
pub fn split(data: &[u8]) -> Option<(Format, Mode, &str)> {
    let (&selector, rest) = data.split_first()?;
    let text = std::str::from_utf8(rest).ok()?;
    let format = if selector & 1 == 0 { Format::Json } else { Format::Toml };
    let mode = if selector & 2 == 0 { Mode::Load } else { Mode::Strict };
    Some((format, mode, text))
}

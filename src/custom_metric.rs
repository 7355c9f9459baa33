//! Custom metrics as Device Defender defines them: the four types, their values, and the rules
//! a name and a value must follow (shared by the collectors, the report reader and Detect).
//!
//! spec: metrics-report.md A.2 (custom metrics), detect.md §2.1 (metric catalogue).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The four custom metric types of `CreateCustomMetric` (`metricType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CustomMetricType {
    /// `number`: one numeric value.
    #[serde(rename = "number")]
    Number,
    /// `number-list`: a list of numbers.
    #[serde(rename = "number-list")]
    NumberList,
    /// `string-list`: a list of strings.
    #[serde(rename = "string-list")]
    StringList,
    /// `ip-address-list`: a list of IPv4/IPv6 addresses.
    #[serde(rename = "ip-address-list")]
    IpAddressList,
}

impl CustomMetricType {
    /// The API's name for the type (`number`, `number-list`, `string-list`, `ip-address-list`).
    pub fn as_str(self) -> &'static str {
        match self {
            CustomMetricType::Number => "number",
            CustomMetricType::NumberList => "number-list",
            CustomMetricType::StringList => "string-list",
            CustomMetricType::IpAddressList => "ip-address-list",
        }
    }

    /// The key used inside the report's one-element array (`number`, `number_list`, `string_list`,
    /// `ip_list`). These keys have no short form.
    pub fn report_key(self) -> &'static str {
        match self {
            CustomMetricType::Number => "number",
            CustomMetricType::NumberList => "number_list",
            CustomMetricType::StringList => "string_list",
            CustomMetricType::IpAddressList => "ip_list",
        }
    }
}

impl fmt::Display for CustomMetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One custom metric value, of one of the four types.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomValue {
    /// `number`
    Number(f64),
    /// `number-list`
    NumberList(Vec<f64>),
    /// `string-list`
    StringList(Vec<String>),
    /// `ip-address-list`
    IpList(Vec<IpAddr>),
}

impl CustomValue {
    /// The metric type this value belongs to.
    pub fn metric_type(&self) -> CustomMetricType {
        match self {
            CustomValue::Number(_) => CustomMetricType::Number,
            CustomValue::NumberList(_) => CustomMetricType::NumberList,
            CustomValue::StringList(_) => CustomMetricType::StringList,
            CustomValue::IpList(_) => CustomMetricType::IpAddressList,
        }
    }
}

/// Maximum significant decimal digits a `number` keeps (spec: metrics-report.md A.2, "precision up
/// to 15 digits").
pub const MAX_NUMBER_DIGITS: usize = 15;

/// Why a custom metric name or value breaks the AWS rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CustomRuleError {
    /// Name empty, too long, bad characters or `aws:` prefix.
    #[error("custom metric name {0:?} must be 1-128 characters of [a-zA-Z0-9:_-] and must not start with \"aws:\"")]
    Name(String),
    /// A number that is NaN or infinite.
    #[error("value {0} is not a finite number")]
    NotFinite(f64),
    /// A number with more than 15 significant digits.
    #[error("value {0} has more than 15 significant digits")]
    Precision(f64),
    /// A string with characters outside `A-Za-z0-9:_-/.`.
    #[error("string {0:?} has characters outside [A-Za-z0-9:_-/.]")]
    StringCharset(String),
}

/// Checks a custom metric name: 1..128 chars of `[a-zA-Z0-9:_-]`, not starting with `aws:`.
pub fn check_custom_metric_name(name: &str) -> Result<(), CustomRuleError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with("aws:")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CustomRuleError::Name(name.to_owned()))
    }
}

/// Checks a `number` / `number-list` element: finite, at most 15 significant digits.
pub fn check_number(v: f64) -> Result<(), CustomRuleError> {
    if !v.is_finite() {
        return Err(CustomRuleError::NotFinite(v));
    }
    if significant_digits(v) > MAX_NUMBER_DIGITS {
        return Err(CustomRuleError::Precision(v));
    }
    Ok(())
}

/// Checks a `string-list` element. AWS documents letters and `: _ - / .`; its own examples use
/// digits too, so digits are allowed (spec: metrics-report.md A.2, "treat as approximate").
pub fn check_string(s: &str) -> Result<(), CustomRuleError> {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-' | b'/' | b'.'))
    {
        Ok(())
    } else {
        Err(CustomRuleError::StringCharset(s.to_owned()))
    }
}

/// Checks every element of a value against the AWS rules.
pub fn check_value(value: &CustomValue) -> Result<(), CustomRuleError> {
    match value {
        CustomValue::Number(v) => check_number(*v),
        CustomValue::NumberList(vs) => vs.iter().try_for_each(|v| check_number(*v)),
        CustomValue::StringList(ss) => ss.iter().try_for_each(|s| check_string(s)),
        CustomValue::IpList(_) => Ok(()), // typed: always valid addresses
    }
}

/// Significant decimal digits of a finite f64 in its shortest round-trip form.
fn significant_digits(v: f64) -> usize {
    use std::io::Write;
    // Shortest representation that round-trips in scientific form, e.g. "1.25e1"; written to a
    // stack buffer (this runs for every number of every report: no allocation). A finite f64
    // needs at most 24 bytes ("-2.2250738585072014e-308").
    let mut buf = [0u8; 32];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    if write!(cursor, "{:e}", v.abs()).is_err() {
        return usize::MAX; // Invariant: unreachable for finite values; treated as too precise.
    }
    let len = cursor.position() as usize;
    let text = buf.get(..len).unwrap_or(&[]);
    let mantissa = text.split(|b| *b == b'e').next().unwrap_or(&[]);
    mantissa
        .iter()
        .filter(|b| b.is_ascii_digit())
        .count()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_api_pattern() {
        assert!(check_custom_metric_name("cpu_usage").is_ok());
        assert!(check_custom_metric_name("a:b-c_d9").is_ok());
        assert!(check_custom_metric_name("").is_err());
        assert!(check_custom_metric_name("aws:cpu").is_err());
        assert!(check_custom_metric_name("has space").is_err());
        assert!(check_custom_metric_name(&"x".repeat(129)).is_err());
        assert!(check_custom_metric_name(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn numbers_keep_at_most_fifteen_digits() {
        assert!(check_number(12.5).is_ok());
        assert!(check_number(-3.0).is_ok());
        assert!(check_number(123456789012345.0).is_ok());
        assert!(check_number(1234567890123456.0).is_err());
        assert!(check_number(0.1 + 0.2).is_err()); // 0.30000000000000004
        assert!(check_number(f64::NAN).is_err());
        assert!(check_number(f64::INFINITY).is_err());
    }

    #[test]
    fn strings_use_the_documented_charset() {
        assert!(check_string("plant-a").is_ok());
        assert!(check_string("value_1/x.y:z").is_ok());
        assert!(check_string("has space").is_err());
        assert!(check_string("ümlaut").is_err());
    }
}

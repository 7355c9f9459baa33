//! Timestamps as AWS writes them: epoch seconds (a JSON number, the API's wire form and AWS CLI
//! v1) or an ISO 8601 / RFC 3339 date-time string with a fraction and an offset (AWS CLI v2,
//! `"2026-10-01T10:00:00.123000+00:00"`). Read in either form, always written back as epoch
//! seconds. The one date-time parser of the crate (the command line's times use it too).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An RFC 3339 date-time as epoch seconds (`2025-11-25T16:00:00Z`, a fraction and an offset
/// allowed). RFC 3339 §5.6 separates date and time by `T` (`t`, or a space by its note); the
/// `time` crate takes any character there, we keep to those three. Never inlined: one copy
/// serves every deserializer's visitor (binary size on the ARM targets).
#[inline(never)]
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some(t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9)
}

/// The key under which the `toml` crate hands a TOML date-time to a deserializer.
const TOML_DATETIME: &str = "$__toml_private_datetime";

/// Replaces every TOML date-time in a document converted to JSON (an object holding only the
/// `toml` crate's private key) by its RFC 3339 text, so the one string form serves both.
pub fn unwrap_toml_datetimes(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(o) => {
            if o.len() == 1 {
                if let Some(Value::String(s)) = o.get(TOML_DATETIME) {
                    *v = Value::String(s.clone());
                    return;
                }
            }
            o.values_mut().for_each(unwrap_toml_datetimes);
        }
        Value::Array(a) => a.iter_mut().for_each(unwrap_toml_datetimes),
        _ => {}
    }
}

/// Deserializes an optional timestamp: a number (epoch seconds), an RFC 3339 string, or
/// null/absent (a TOML date-time arrives as its text, see [`unwrap_toml_datetimes`]).
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct TimestampVisitor;
    impl<'de> Visitor<'de> for TimestampVisitor {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("epoch seconds or an ISO 8601 date-time")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_rfc3339(v).map(Some).ok_or_else(|| {
                E::custom(format!(
                    "{v:?} is not a time: use epoch seconds or ISO 8601 (RFC 3339)"
                ))
            })
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(TimestampVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aws_cli_v2_form_and_epoch_seconds_are_the_same_instant() {
        assert_eq!(
            parse_rfc3339("2026-10-01T10:00:00.123000+00:00"),
            Some(1_790_848_800.0 + 0.123)
        );
        assert_eq!(
            parse_rfc3339("2026-10-01T12:00:00+02:00"),
            Some(1_790_848_800.0)
        );
        assert_eq!(parse_rfc3339("2026-10-01X10:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

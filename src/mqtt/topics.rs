//! Device Defender topic names (pure): publish, accepted and rejected topics, thing-name rules.
//!
//! Grammar (spec: metrics-report.md A.1):
//! `$aws/things/<thing>/defender/metrics/<json|cbor>[/accepted|/rejected]`.
//! The publish topic is publish-only and the answer topics subscribe-only: the link never
//! subscribes to the publish topic (spec: metrics-report.md D.14).

use thiserror::Error;

use crate::report::Format;

/// Longest thing name AWS accepts, in bytes of UTF-8 (spec: metrics-report.md A.1,
/// `DEFENDER_THINGNAME_MAX_LENGTH`).
pub const MAX_THING_NAME_BYTES: usize = 128;

const PREFIX: &str = "$aws/things/";
const METRICS: &str = "/defender/metrics/";

/// Why a thing name cannot be used in a Device Defender topic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ThingNameError {
    /// The name is empty.
    #[error("thing name is empty")]
    Empty,
    /// The name is longer than [`MAX_THING_NAME_BYTES`].
    #[error("thing name is {len} bytes long, the limit is {MAX_THING_NAME_BYTES}")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// The name contains a control character or a character that changes the topic's structure.
    #[error("thing name contains {ch:?} at byte {offset}: control characters, '+', '#' and '/' are not allowed")]
    ForbiddenChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the name.
        offset: usize,
    },
}

/// Checks a thing name: 1..=128 bytes of UTF-8, no control characters (spec: metrics-report.md
/// A.1), and none of `+`, `#`, `/` — wildcards would make the subscribe filters match other
/// things, and a `/` would shift the topic levels (our decision; AWS thing names cannot hold them
/// either).
pub fn check_thing_name(name: &str) -> Result<(), ThingNameError> {
    if name.is_empty() {
        return Err(ThingNameError::Empty);
    }
    if name.len() > MAX_THING_NAME_BYTES {
        return Err(ThingNameError::TooLong { len: name.len() });
    }
    match name
        .char_indices()
        .find(|(_, c)| c.is_control() || matches!(c, '+' | '#' | '/'))
    {
        Some((offset, ch)) => Err(ThingNameError::ForbiddenChar { ch, offset }),
        None => Ok(()),
    }
}

/// The topic reports are published on: `$aws/things/<thing>/defender/metrics/<fmt>`.
pub fn publish_topic(thing: &str, fmt: Format) -> String {
    format!("{PREFIX}{thing}{METRICS}{}", fmt.as_str())
}

/// The topic accepted answers arrive on: `<publish topic>/accepted`.
pub fn accepted_topic(thing: &str, fmt: Format) -> String {
    format!("{}/accepted", publish_topic(thing, fmt))
}

/// The topic rejected answers arrive on: `<publish topic>/rejected`.
pub fn rejected_topic(thing: &str, fmt: Format) -> String {
    format!("{}/rejected", publish_topic(thing, fmt))
}

/// Splits a publish topic into its thing name and format; `None` for any other topic (answer
/// topics included). The inverse of [`publish_topic`], like DDLIB's `Defender_MatchTopic`.
pub fn parse_publish_topic(topic: &str) -> Option<(&str, Format)> {
    let rest = topic.strip_prefix(PREFIX)?;
    let (thing, fmt) = rest.rsplit_once(METRICS)?;
    let fmt = match fmt {
        "json" => Format::Json,
        "cbor" => Format::Cbor,
        _ => return None,
    };
    check_thing_name(thing).ok()?;
    Some((thing, fmt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_documented_grammar() {
        assert_eq!(
            publish_topic("dev1", Format::Json),
            "$aws/things/dev1/defender/metrics/json"
        );
        assert_eq!(
            accepted_topic("dev1", Format::Cbor),
            "$aws/things/dev1/defender/metrics/cbor/accepted"
        );
        assert_eq!(
            rejected_topic("dev1", Format::Json),
            "$aws/things/dev1/defender/metrics/json/rejected"
        );
    }

    #[test]
    fn answer_topics_are_never_the_publish_topic() {
        for fmt in [Format::Json, Format::Cbor] {
            let p = publish_topic("t", fmt);
            assert_ne!(accepted_topic("t", fmt), p);
            assert_ne!(rejected_topic("t", fmt), p);
        }
    }

    #[test]
    fn a_thing_name_of_128_bytes_is_accepted_and_129_is_not() {
        assert_eq!(check_thing_name(&"a".repeat(128)), Ok(()));
        assert_eq!(
            check_thing_name(&"a".repeat(129)),
            Err(ThingNameError::TooLong { len: 129 })
        );
    }

    #[test]
    fn the_thing_name_limit_counts_bytes_not_characters() {
        // 43 × 'é' (2 bytes each) = 86 bytes: fine; 65 × 'é' = 130 bytes: too long.
        assert_eq!(check_thing_name(&"é".repeat(43)), Ok(()));
        assert_eq!(
            check_thing_name(&"é".repeat(65)),
            Err(ThingNameError::TooLong { len: 130 })
        );
    }

    #[test]
    fn control_characters_and_topic_syntax_are_refused_in_thing_names() {
        assert_eq!(check_thing_name(""), Err(ThingNameError::Empty));
        for (name, ch, offset) in [
            ("a\nb", '\n', 1),
            ("a\u{0}", '\u{0}', 1),
            ("x+", '+', 1),
            ("#", '#', 0),
            ("a/b", '/', 1),
            ("ab\u{7f}", '\u{7f}', 2),
        ] {
            assert_eq!(
                check_thing_name(name),
                Err(ThingNameError::ForbiddenChar { ch, offset }),
                "{name:?}"
            );
        }
        assert_eq!(check_thing_name("Gateway_01-a.b:c"), Ok(()));
    }

    #[test]
    fn a_publish_topic_parses_back_into_thing_and_format() {
        assert_eq!(
            parse_publish_topic("$aws/things/dev-1/defender/metrics/cbor"),
            Some(("dev-1", Format::Cbor))
        );
        assert_eq!(
            parse_publish_topic(&publish_topic("t", Format::Json)),
            Some(("t", Format::Json))
        );
    }

    #[test]
    fn answer_topics_and_foreign_topics_do_not_parse_as_publish_topics() {
        for topic in [
            "$aws/things/t/defender/metrics/json/accepted",
            "$aws/things/t/defender/metrics/xml",
            "$aws/things//defender/metrics/json",
            "$aws/things/a/b/defender/metrics/json",
            "things/t/defender/metrics/json",
            "",
        ] {
            assert_eq!(parse_publish_topic(topic), None, "{topic}");
        }
    }
}

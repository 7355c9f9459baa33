//! Device Defender topic names (pure): publish, accepted and rejected topics, thing-name rules.
//!
//! Grammar (spec: metrics-report.md A.1):
//! `$aws/things/<thing>/defender/metrics/<json|cbor>[/accepted|/rejected]`; with `[mqtt]
//! topic_root` ([`TopicRoot`]) the part before `/<json|cbor>` is the root with the thing in
//! place of `{thing}`.
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

/// `[mqtt] topic_root`'s default: Device Defender's own topics.
pub const DEFAULT_TOPIC_ROOT: &str = "$aws/things/{thing}/defender/metrics";

/// The placeholder a topic root holds once, as a whole topic level.
pub const THING_PLACEHOLDER: &str = "{thing}";

/// Longest topic root, in bytes (AWS IoT refuses topics over 256 bytes).
pub const MAX_TOPIC_ROOT_BYTES: usize = 256;

/// `[mqtt] topic_root`: where a thing's reports go, `<root>/<json|cbor>`, and its answers,
/// `<root>/<json|cbor>/<accepted|rejected>`, with the thing's name in place of `{thing}` (a fleet
/// on AWS IoT Core without Detect uses its own topics; the fleet service takes the same key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoot {
    /// Before `{thing}`.
    prefix: String,
    /// After `{thing}`.
    suffix: String,
}

/// Why a topic root cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicRootError {
    /// No `{thing}`, or more than one.
    #[error("must hold {THING_PLACEHOLDER} exactly once, as a whole topic level (e.g. \"fleet/{THING_PLACEHOLDER}/metrics\")")]
    Placeholder,
    /// `{thing}` shares a level with other text.
    #[error("{THING_PLACEHOLDER} must be a whole topic level, between slashes")]
    PartLevel,
    /// A wildcard or a control character.
    #[error("must not contain {ch:?} (MQTT wildcards and control characters are not allowed in a topic)")]
    ForbiddenChar {
        /// The character.
        ch: char,
    },
    /// An empty level (`a//b`, a leading or trailing `/`).
    #[error("must not have an empty topic level (a leading, trailing or doubled '/')")]
    EmptyLevel,
    /// Too long.
    #[error("is {len} bytes long, at most {MAX_TOPIC_ROOT_BYTES}")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
}

impl Default for TopicRoot {
    fn default() -> TopicRoot {
        TopicRoot {
            prefix: PREFIX.to_owned(),
            suffix: METRICS.trim_end_matches('/').to_owned(),
        }
    }
}

impl TopicRoot {
    /// Checks and splits a root: `{thing}` once, as a whole level; no wildcard, control
    /// character or empty level; at most [`MAX_TOPIC_ROOT_BYTES`].
    pub fn parse(root: &str) -> Result<TopicRoot, TopicRootError> {
        if root.len() > MAX_TOPIC_ROOT_BYTES {
            return Err(TopicRootError::TooLong { len: root.len() });
        }
        if let Some(ch) = root
            .chars()
            .find(|c| c.is_control() || matches!(c, '+' | '#'))
        {
            return Err(TopicRootError::ForbiddenChar { ch });
        }
        if root.split('/').any(str::is_empty) {
            return Err(TopicRootError::EmptyLevel);
        }
        let mut found = root.match_indices(THING_PLACEHOLDER);
        let (Some((at, _)), None) = (found.next(), found.next()) else {
            return Err(TopicRootError::Placeholder);
        };
        let (prefix, rest) = root.split_at(at);
        let suffix = &rest[THING_PLACEHOLDER.len()..];
        if !(prefix.is_empty() || prefix.ends_with('/'))
            || !(suffix.is_empty() || suffix.starts_with('/'))
        {
            return Err(TopicRootError::PartLevel);
        }
        Ok(TopicRoot {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// `<root>/<fmt>` for `thing`.
    pub fn publish_topic(&self, thing: &str, fmt: Format) -> String {
        format!("{}{thing}{}/{}", self.prefix, self.suffix, fmt.as_str())
    }

    /// `<root>/<fmt>/accepted`.
    pub fn accepted_topic(&self, thing: &str, fmt: Format) -> String {
        format!("{}/accepted", self.publish_topic(thing, fmt))
    }

    /// `<root>/<fmt>/rejected`.
    pub fn rejected_topic(&self, thing: &str, fmt: Format) -> String {
        format!("{}/rejected", self.publish_topic(thing, fmt))
    }

    /// The subscription filter for every thing's reports in `fmt`: `+` in place of `{thing}`.
    pub fn publish_filter(&self, fmt: Format) -> String {
        self.publish_topic("+", fmt)
    }

    /// Splits a publish topic of this root into its thing name and format; `None` for any other
    /// topic (answer topics included) and for an invalid thing name.
    pub fn parse_publish_topic<'a>(&self, topic: &'a str) -> Option<(&'a str, Format)> {
        let rest = topic.strip_prefix(self.prefix.as_str())?;
        let (rest, fmt) = rest.rsplit_once('/')?;
        let fmt = match fmt {
            "json" => Format::Json,
            "cbor" => Format::Cbor,
            _ => return None,
        };
        let thing = rest.strip_suffix(self.suffix.as_str())?;
        check_thing_name(thing).ok()?;
        Some((thing, fmt))
    }

    /// Whether a subscription to this root's publish filters receives `topic` (any one level in
    /// place of `{thing}`, valid thing name or not).
    pub fn matches_publish_filter(&self, topic: &str) -> bool {
        topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.rsplit_once('/'))
            .filter(|(_, fmt)| matches!(*fmt, "json" | "cbor"))
            .and_then(|(rest, _)| rest.strip_suffix(self.suffix.as_str()))
            .is_some_and(|thing| !thing.is_empty() && !thing.contains('/'))
    }

    /// The thing level of a topic of this root that is not a valid publish topic (for a
    /// rejection's `thingName`): the text where `{thing}` stands, if the prefix matches.
    pub fn thing_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(self.prefix.as_str())?;
        Some(rest.split('/').next().unwrap_or(rest))
    }
}

impl std::fmt::Display for TopicRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{THING_PLACEHOLDER}{}", self.prefix, self.suffix)
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
    fn the_default_topic_root_gives_device_defenders_topics() {
        let root = TopicRoot::parse(DEFAULT_TOPIC_ROOT).unwrap();
        assert_eq!(root, TopicRoot::default());
        assert_eq!(root.to_string(), DEFAULT_TOPIC_ROOT);
        for fmt in [Format::Json, Format::Cbor] {
            assert_eq!(root.publish_topic("dev1", fmt), publish_topic("dev1", fmt));
            assert_eq!(
                root.accepted_topic("dev1", fmt),
                accepted_topic("dev1", fmt)
            );
            assert_eq!(
                root.rejected_topic("dev1", fmt),
                rejected_topic("dev1", fmt)
            );
        }
        assert_eq!(
            root.publish_filter(Format::Cbor),
            "$aws/things/+/defender/metrics/cbor"
        );
    }

    #[test]
    fn a_topic_root_of_its_own_names_topics_and_parses_them_back() {
        let root = TopicRoot::parse("fleet/{thing}/dd").unwrap();
        assert_eq!(
            root.accepted_topic("gw-1", Format::Json),
            "fleet/gw-1/dd/json/accepted"
        );
        assert_eq!(root.publish_filter(Format::Json), "fleet/+/dd/json");
        assert_eq!(
            root.parse_publish_topic("fleet/gw-1/dd/cbor"),
            Some(("gw-1", Format::Cbor))
        );
        for other in [
            "fleet/gw-1/dd/json/accepted",
            "fleet/gw-1/xx/json",
            "fleet/a/b/dd/json",
            "$aws/things/gw-1/defender/metrics/json",
        ] {
            assert_eq!(root.parse_publish_topic(other), None, "{other}");
        }
        assert_eq!(root.thing_of("fleet/a+b/dd/json"), Some("a+b"));
        assert!(root.matches_publish_filter("fleet/a+b/dd/json"));
        assert!(root.matches_publish_filter("fleet/gw-1/dd/cbor"));
        assert!(!root.matches_publish_filter("fleet/gw-1/dd/cbor/accepted"));
        assert!(!root.matches_publish_filter("fleet/a/b/dd/json"));
        assert!(!root.matches_publish_filter("fleet//dd/json"));
        // {thing} first or last.
        let first = TopicRoot::parse("{thing}/metrics").unwrap();
        assert_eq!(first.publish_topic("t", Format::Json), "t/metrics/json");
        assert_eq!(
            first.parse_publish_topic("t/metrics/json"),
            Some(("t", Format::Json))
        );
        let last = TopicRoot::parse("dd/{thing}").unwrap();
        assert_eq!(
            last.parse_publish_topic("dd/t/cbor"),
            Some(("t", Format::Cbor))
        );
        assert_eq!(last.parse_publish_topic("dd/t/json/accepted"), None);
    }

    #[test]
    fn a_bad_topic_root_says_what_is_wrong() {
        use TopicRootError as E;
        for (root, err) in [
            ("fleet/metrics", E::Placeholder),
            ("{thing}/{thing}", E::Placeholder),
            ("fleet/x{thing}/m", E::PartLevel),
            ("fleet/{thing}x", E::PartLevel),
            ("fleet/+/{thing}", E::ForbiddenChar { ch: '+' }),
            ("fleet/{thing}/#", E::ForbiddenChar { ch: '#' }),
            ("fleet/{thing}\n", E::ForbiddenChar { ch: '\n' }),
            ("fleet//{thing}", E::EmptyLevel),
            ("/fleet/{thing}", E::EmptyLevel),
            ("fleet/{thing}/", E::EmptyLevel),
            ("", E::EmptyLevel),
        ] {
            assert_eq!(TopicRoot::parse(root), Err(err), "{root:?}");
        }
        let long = format!("{}/{{thing}}", "a".repeat(250));
        assert_eq!(TopicRoot::parse(&long), Err(E::TooLong { len: long.len() }));
        assert!(E::Placeholder.to_string().contains("{thing}"));
    }

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

//! MQTT topic filters: parse, validate and match, including `$` topics and `${iot:ClientId}`.
//!
//! This is the vocabulary of TOPIC_FILTER dimensions (spec: detect.md §5) and of the agent's own
//! subscriptions. Matching follows MQTT 3.1.1 §4.7 exactly:
//!
//! - filter and topic are split on `/`; empty levels are levels (`a//b` has three);
//! - `+` matches exactly one level, which may be empty (`a/+` matches `a/`);
//! - `#` must be last and alone in its level; it matches zero or more remaining levels, so `a/#`
//!   matches `a`;
//! - a filter whose first level is `+` or `#` never matches a topic starting with `$`
//!   (`#` does not match `$aws/things/x/shadow`, `$aws/#` does);
//! - comparison is byte-exact, hence case-sensitive.
//!
//! We do not use the MQTT client crate's `matches` function: it rejects every `$` topic, even
//! against an identical filter, and slices `topic[..1]`, which panics on a multi-byte first
//! character (see design/architecture.md). [`TopicFilter::matches`] never panics on any `&str`.
//!
//! Limits: a filter is an MQTT UTF-8 string, so at most [`MAX_FILTER_BYTES`] bytes and no U+0000.
//! A dimension value (`stringValues` element) is also at most [`MAX_DIMENSION_VALUE_CHARS`]
//! characters ([`TopicFilter::parse_dimension_value`]). MQTT sets no limit on the number of levels;
//! AWS IoT limits *topic names* to 7 slashes, which is not enforced here because filters of other
//! brokers (the local broker observed by the tap) have no such limit.
//!
//! `${iot:ClientId}` (spec: detect.md §5 "Syntax") is kept as literal text by the parser and
//! replaced by [`TopicFilter::substitute`]. The substituted text is split on `/` like any topic,
//! so a client id `a/b` yields two levels, exactly as the device's own topics would. Characters
//! `+` and `#` coming from a client id are literal characters, never wildcards: a level holding
//! them matches no valid topic name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest filter or topic in bytes: an MQTT UTF-8 string has a 16-bit length prefix
/// (MQTT 3.1.1 §1.5.3).
pub const MAX_FILTER_BYTES: usize = 65_535;

/// Longest dimension value in characters (API CreateDimension: `stringValues` items are
/// 1..256 characters; spec: detect.md §5 "Limits").
pub const MAX_DIMENSION_VALUE_CHARS: usize = 256;

/// The substitution variable AWS allows in TOPIC_FILTER dimension values.
pub const CLIENT_ID_VARIABLE: &str = "${iot:ClientId}";

/// How much of an offending filter an error message shows.
const SHOWN_CHARS: usize = 80;

/// Why a string is not a valid topic filter or topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The empty string is neither a filter nor a topic (MQTT 3.1.1 §4.7.3).
    #[error("topic filter is empty")]
    Empty,
    /// Longer than an MQTT string can be.
    #[error("topic filter or topic is {len} bytes long, more than the MQTT limit of {max}")]
    TooManyBytes {
        /// Length in bytes.
        len: usize,
        /// The limit, [`MAX_FILTER_BYTES`].
        max: usize,
    },
    /// A dimension value longer than the API allows.
    #[error("dimension value {} is {len} characters long, more than the API limit of {max}", shown(.filter))]
    TooManyChars {
        /// The offending value.
        filter: String,
        /// Length in characters.
        len: usize,
        /// The limit, [`MAX_DIMENSION_VALUE_CHARS`].
        max: usize,
    },
    /// U+0000 is forbidden in MQTT strings (MQTT 3.1.1 §1.5.3).
    #[error("topic filter or topic {} contains a NUL character at byte {offset}", shown(.filter))]
    Nul {
        /// The offending string.
        filter: String,
        /// Byte offset of the first NUL.
        offset: usize,
    },
    /// `#` followed by more levels, as in `a/#/b`.
    #[error("topic filter {}: '#' must be the last level, found at level {level}", shown(.filter))]
    MultiLevelNotLast {
        /// The offending filter.
        filter: String,
        /// Zero-based level index of the `#`.
        level: usize,
    },
    /// `#` sharing its level with other characters, as in `a/b#`.
    #[error("topic filter {}: '#' must be alone in its level, level {level} is {}", shown(.filter), shown(.text))]
    MultiLevelNotAlone {
        /// The offending filter.
        filter: String,
        /// Zero-based level index.
        level: usize,
        /// The level's text.
        text: String,
    },
    /// `+` sharing its level with other characters, as in `a+/b`.
    #[error("topic filter {}: '+' must be alone in its level, level {level} is {}", shown(.filter), shown(.text))]
    SingleLevelNotAlone {
        /// The offending filter.
        filter: String,
        /// Zero-based level index.
        level: usize,
        /// The level's text.
        text: String,
    },
    /// A topic name (not a filter) containing `+` or `#`.
    #[error("topic name {} contains the wildcard '{wildcard}' at byte {offset}", shown(.topic))]
    WildcardInTopic {
        /// The offending topic.
        topic: String,
        /// `+` or `#`.
        wildcard: char,
        /// Byte offset of the wildcard.
        offset: usize,
    },
}

/// Quotes at most [`SHOWN_CHARS`] characters of a possibly huge string for an error message.
fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        // Invariant: `cut` comes from char_indices, a char boundary inside `s`.
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// One level of a parsed filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Level {
    /// Text that must equal the topic level byte for byte (may be empty).
    Literal(Box<str>),
    /// `+`: exactly one level, possibly empty.
    SingleLevel,
    /// `#`: zero or more remaining levels; always the last level.
    MultiLevel,
}

/// A validated MQTT topic filter.
///
/// `Display` prints the filter as written, so `parse(f.to_string()) == f` for every parsed filter.
///
/// ```
/// use defender_agent::topic_filter::TopicFilter;
///
/// let own = TopicFilter::parse("$aws/things/+/defender/#").unwrap();
/// assert!(own.matches("$aws/things/t1/defender/metrics/json"));
/// assert!(!TopicFilter::parse("#").unwrap().matches("$aws/things/t1/shadow"));
/// assert!(TopicFilter::parse("a/#/b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    /// The filter text (after substitution, if any).
    text: Box<str>,
    /// `text` split on `/`; never empty.
    levels: Box<[Level]>,
}

impl TopicFilter {
    /// Parses and validates a filter under MQTT rules (non-empty, ≤ 65535 bytes, no NUL, `#`
    /// last and alone, `+` alone). `${iot:ClientId}` stays literal; see [`Self::substitute`].
    pub fn parse(filter: &str) -> Result<TopicFilter, FilterError> {
        check_string(filter)?;
        let last = filter.split('/').count() - 1;
        let mut levels = Vec::with_capacity(last + 1);
        for (i, text) in filter.split('/').enumerate() {
            let level = match text {
                "#" if i == last => Level::MultiLevel,
                "#" => {
                    return Err(FilterError::MultiLevelNotLast {
                        filter: filter.to_owned(),
                        level: i,
                    })
                }
                "+" => Level::SingleLevel,
                _ if text.contains('#') => {
                    return Err(FilterError::MultiLevelNotAlone {
                        filter: filter.to_owned(),
                        level: i,
                        text: text.to_owned(),
                    })
                }
                _ if text.contains('+') => {
                    return Err(FilterError::SingleLevelNotAlone {
                        filter: filter.to_owned(),
                        level: i,
                        text: text.to_owned(),
                    })
                }
                _ => Level::Literal(text.into()),
            };
            levels.push(level);
        }
        Ok(TopicFilter {
            text: filter.into(),
            levels: levels.into_boxed_slice(),
        })
    }

    /// Parses a TOPIC_FILTER dimension value: [`Self::parse`] plus the API's limit of
    /// [`MAX_DIMENSION_VALUE_CHARS`] characters (counted before substitution).
    pub fn parse_dimension_value(value: &str) -> Result<TopicFilter, FilterError> {
        let len = value.chars().count();
        if len > MAX_DIMENSION_VALUE_CHARS {
            return Err(FilterError::TooManyChars {
                filter: value.to_owned(),
                len,
                max: MAX_DIMENSION_VALUE_CHARS,
            });
        }
        TopicFilter::parse(value)
    }

    /// Parses `filter`, then replaces `${iot:ClientId}` with `client_id`.
    pub fn parse_with_client_id(filter: &str, client_id: &str) -> Result<TopicFilter, FilterError> {
        TopicFilter::parse(filter)?.substitute(client_id)
    }

    /// Replaces every `${iot:ClientId}` with `client_id` (spec: detect.md §5 "Matching").
    ///
    /// Substituted text is split on `/` into literal levels; `+` and `#` in it are literal
    /// characters, never wildcards (so they match no valid topic name). Fails only if the result
    /// breaks the MQTT string rules (too long, NUL).
    pub fn substitute(&self, client_id: &str) -> Result<TopicFilter, FilterError> {
        if !self.has_client_id_variable() {
            return Ok(self.clone());
        }
        let text = self.text.replace(CLIENT_ID_VARIABLE, client_id);
        check_string(&text)?;
        let mut levels = Vec::with_capacity(self.levels.len());
        for level in self.levels.iter() {
            match level {
                Level::Literal(lit) if lit.contains(CLIENT_ID_VARIABLE) => {
                    let replaced = lit.replace(CLIENT_ID_VARIABLE, client_id);
                    levels.extend(replaced.split('/').map(|l| Level::Literal(l.into())));
                }
                other => levels.push(other.clone()),
            }
        }
        Ok(TopicFilter {
            text: text.into_boxed_str(),
            levels: levels.into_boxed_slice(),
        })
    }

    /// True when the filter still holds `${iot:ClientId}` (it then matches that literal text).
    pub fn has_client_id_variable(&self) -> bool {
        self.text.contains(CLIENT_ID_VARIABLE)
    }

    /// The filter text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed levels; never empty, a [`Level::MultiLevel`] only in last place.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// True when the filter has a `+` or `#` level.
    pub fn has_wildcards(&self) -> bool {
        self.levels.iter().any(|l| !matches!(l, Level::Literal(_)))
    }

    /// Does `topic` match this filter (MQTT 3.1.1 §4.7)?
    ///
    /// `topic` is not validated: a subscribe request's filter string can be matched "literally"
    /// (its `+` is just a level of text), as spec: detect.md §5 asks for authorization failures.
    /// The empty string is not a topic and matches nothing. Never panics.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.is_empty() {
            return false;
        }
        // spec: detect.md §5, MQTT 3.1.1 §4.7.2: wildcards at level 0 never match `$` topics.
        if topic.as_bytes().first() == Some(&b'$')
            && !matches!(self.levels.first(), Some(Level::Literal(_)))
        {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in self.levels.iter() {
            match level {
                Level::MultiLevel => return true,
                Level::SingleLevel => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                Level::Literal(lit) => match topic_levels.next() {
                    Some(t) if t == &**lit => {}
                    _ => return false,
                },
            }
        }
        topic_levels.next().is_none()
    }
}

/// Checks a topic name (what PUBLISH carries): non-empty, ≤ 65535 bytes, no NUL, no wildcard.
pub fn validate_topic(topic: &str) -> Result<(), FilterError> {
    check_string(topic)?;
    if let Some(offset) = topic.find(['+', '#']) {
        let wildcard = if topic.as_bytes().get(offset) == Some(&b'+') {
            '+'
        } else {
            '#'
        };
        return Err(FilterError::WildcardInTopic {
            topic: topic.to_owned(),
            wildcard,
            offset,
        });
    }
    Ok(())
}

/// The rules shared by filters and topics: non-empty, bounded, no NUL.
fn check_string(s: &str) -> Result<(), FilterError> {
    if s.is_empty() {
        return Err(FilterError::Empty);
    }
    if s.len() > MAX_FILTER_BYTES {
        return Err(FilterError::TooManyBytes {
            len: s.len(),
            max: MAX_FILTER_BYTES,
        });
    }
    if let Some(offset) = s.find('\0') {
        return Err(FilterError::Nul {
            filter: s.to_owned(),
            offset,
        });
    }
    Ok(())
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for TopicFilter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicFilter::parse(s)
    }
}

impl Serialize for TopicFilter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TopicFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TopicFilter::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The matching table of detect.md §9 TC20 (filter, topic, matches): every matcher in the crate
/// is tested against it.
#[cfg(test)]
pub(crate) const TC20: &[(&str, &str, bool)] = &[
    ("a/#", "a", true),
    ("a/#", "a/b/c", true),
    ("a/+", "a/b", true),
    ("a/+", "a/b/c", false),
    ("a/+", "a/", true),
    ("+/+", "/x", true),
    ("#", "$aws/things/x/shadow", false),
    ("+/things/x", "$aws/things/x", false),
    ("$aws/#", "$aws/things", true),
    ("A/b", "a/b", false),
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    /// A naive matcher written straight from the spec text, with allocations and indexes, as an
    /// oracle for the real one.
    pub(crate) fn reference_matches(filter: &str, topic: &str) -> bool {
        if topic.is_empty() {
            return false;
        }
        let fl: Vec<&str> = filter.split('/').collect();
        let tl: Vec<&str> = topic.split('/').collect();
        if topic.starts_with('$') && (fl[0] == "+" || fl[0] == "#") {
            return false;
        }
        for (i, level) in fl.iter().enumerate() {
            if *level == "#" {
                return true;
            }
            if i >= tl.len() {
                return false;
            }
            if *level != "+" && *level != tl[i] {
                return false;
            }
        }
        fl.len() == tl.len()
    }

    #[test]
    fn tc20_matching_table_holds() {
        for &(filter, topic, expected) in TC20 {
            assert_eq!(f(filter).matches(topic), expected, "{filter} vs {topic}");
            assert_eq!(
                reference_matches(filter, topic),
                expected,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn literal_dollar_filters_match_dollar_topics() {
        let own = "$aws/things/t/defender/metrics/json";
        assert!(f(own).matches(own));
        assert!(f("$aws/things/+/defender/#").matches(own));
        assert!(!f("+/things/t/defender/metrics/json").matches(own));
        assert!(!f("#").matches("$SYS/broker/uptime"));
        // `$` only matters as the topic's first character.
        assert!(f("a/+").matches("a/$b"));
        assert!(f("#").matches("a/$b"));
    }

    #[test]
    fn multi_level_wildcard_matches_zero_or_more_levels() {
        assert!(f("#").matches("a"));
        assert!(f("#").matches("/"));
        assert!(f("a/#").matches("a/"));
        assert!(f("a/b/#").matches("a/b"));
        assert!(!f("a/b/#").matches("a"));
        assert!(!f("a/#").matches("ab"));
    }

    #[test]
    fn empty_levels_are_levels() {
        assert!(f("/").matches("/"));
        assert!(!f("/").matches("a/"));
        assert!(f("+").matches("x"));
        assert!(!f("+").matches("/"));
        assert!(f("a//b").matches("a//b"));
        assert!(!f("a//b").matches("a/b"));
        assert!(f("a/+/b").matches("a//b"));
    }

    #[test]
    fn the_empty_string_is_not_a_topic() {
        assert!(!f("#").matches(""));
        assert!(!f("+").matches(""));
    }

    #[test]
    fn multibyte_first_characters_do_not_panic() {
        assert!(f("#").matches("é/x"));
        assert!(f("é/+").matches("é/x"));
        assert!(!f("e/+").matches("é/x"));
        assert!(f("+/🚀").matches("日本/🚀"));
        assert!(!f("$aws/#").matches("€aws/x"));
    }

    #[test]
    fn a_subscribe_filter_is_matched_literally_as_a_topic() {
        // spec: detect.md §5: for subscribe failures, the requested filter string is the "topic".
        assert!(f("device/+/auth").matches("device/+/auth"));
        assert!(!f("device/a/auth").matches("device/+/auth"));
        assert!(f("device/#").matches("device/#"));
    }

    #[test]
    fn every_invalid_filter_is_rejected_with_its_reason() {
        assert_eq!(TopicFilter::parse(""), Err(FilterError::Empty));
        assert!(matches!(
            TopicFilter::parse("a/#/b"),
            Err(FilterError::MultiLevelNotLast { level: 1, .. })
        ));
        assert!(matches!(
            TopicFilter::parse("#/#"),
            Err(FilterError::MultiLevelNotLast { level: 0, .. })
        ));
        assert!(matches!(
            TopicFilter::parse("a/b#"),
            Err(FilterError::MultiLevelNotAlone { level: 1, .. })
        ));
        assert!(matches!(
            TopicFilter::parse("##"),
            Err(FilterError::MultiLevelNotAlone { level: 0, .. })
        ));
        assert!(matches!(
            TopicFilter::parse("a+/b"),
            Err(FilterError::SingleLevelNotAlone { level: 0, .. })
        ));
        assert!(matches!(
            TopicFilter::parse("a/++"),
            Err(FilterError::SingleLevelNotAlone { level: 1, .. })
        ));
        assert!(matches!(
            TopicFilter::parse("a/+#"),
            Err(FilterError::MultiLevelNotAlone { level: 1, .. })
        ));
        assert!(matches!(
            TopicFilter::parse("a/\0/b"),
            Err(FilterError::Nul { offset: 2, .. })
        ));
        let huge = "a".repeat(MAX_FILTER_BYTES + 1);
        assert!(matches!(
            TopicFilter::parse(&huge),
            Err(FilterError::TooManyBytes { len: 65_536, .. })
        ));
        assert!(TopicFilter::parse(&huge[1..]).is_ok());
    }

    #[test]
    fn dimension_values_are_at_most_256_characters() {
        let ok = "é".repeat(MAX_DIMENSION_VALUE_CHARS);
        assert!(TopicFilter::parse_dimension_value(&ok).is_ok());
        let long = "é".repeat(MAX_DIMENSION_VALUE_CHARS + 1);
        assert!(matches!(
            TopicFilter::parse_dimension_value(&long),
            Err(FilterError::TooManyChars { len: 257, .. })
        ));
        // Still checked for wildcard placement.
        assert!(TopicFilter::parse_dimension_value("a/#/b").is_err());
    }

    #[test]
    fn error_messages_name_the_filter_and_stay_short() {
        let err = TopicFilter::parse("a/#/b").unwrap_err().to_string();
        assert!(
            err.contains("\"a/#/b\"") && err.contains("level 1"),
            "{err}"
        );
        let long = format!("{}+x", "a".repeat(1000));
        let err = TopicFilter::parse(&long).unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn topic_names_have_no_wildcards() {
        assert!(validate_topic("$aws/things/t/defender/metrics/json").is_ok());
        assert!(validate_topic("/").is_ok());
        assert_eq!(validate_topic(""), Err(FilterError::Empty));
        assert!(matches!(
            validate_topic("a/+/b"),
            Err(FilterError::WildcardInTopic {
                wildcard: '+',
                offset: 2,
                ..
            })
        ));
        assert!(matches!(
            validate_topic("é/#"),
            Err(FilterError::WildcardInTopic {
                wildcard: '#',
                offset: 3,
                ..
            })
        ));
        assert!(matches!(
            validate_topic("a\0"),
            Err(FilterError::Nul { .. })
        ));
    }

    #[test]
    fn client_id_substitution_builds_literal_levels() {
        let t = TopicFilter::parse_dimension_value("device/${iot:ClientId}/auth").unwrap();
        assert!(t.has_client_id_variable());
        assert!(t.matches("device/${iot:ClientId}/auth"));
        let s = t.substitute("dev1").unwrap();
        assert_eq!(s.to_string(), "device/dev1/auth");
        assert!(!s.has_client_id_variable());
        assert!(s.matches("device/dev1/auth"));
        assert!(!s.matches("device/dev2/auth"));
        // Inside a level, and more than once.
        let s =
            TopicFilter::parse_with_client_id("x-${iot:ClientId}/${iot:ClientId}/#", "c").unwrap();
        assert!(s.matches("x-c/c/anything/else"));
    }

    #[test]
    fn a_client_id_cannot_inject_wildcards() {
        let t = f("device/${iot:ClientId}/auth");
        let plus = t.substitute("+").unwrap();
        assert!(!plus.matches("device/x/auth"));
        assert_eq!(plus.levels()[1], Level::Literal("+".into()));
        let hash = t.substitute("#").unwrap();
        assert!(!hash.matches("device/x/auth"));
        // A slash in the client id makes levels, as in the device's real topic.
        let slash = t.substitute("a/b").unwrap();
        assert_eq!(slash.levels().len(), 4);
        assert!(slash.matches("device/a/b/auth"));
        assert!(!slash.matches("device/a/auth"));
        // The result must still be an MQTT string.
        assert!(matches!(t.substitute("a\0"), Err(FilterError::Nul { .. })));
        let huge = "c".repeat(MAX_FILTER_BYTES);
        assert!(matches!(
            t.substitute(&huge),
            Err(FilterError::TooManyBytes { .. })
        ));
    }

    #[test]
    fn filters_round_trip_through_display_and_serde() {
        for s in [
            "a/#",
            "+/+",
            "$aws/things/+/shadow/#",
            "/",
            "a//b",
            "é/+/日本",
        ] {
            let filter = f(s);
            assert_eq!(filter.to_string(), s);
            assert_eq!(f(&filter.to_string()), filter);
            let json = serde_json::to_string(&filter).unwrap();
            assert_eq!(serde_json::from_str::<TopicFilter>(&json).unwrap(), filter);
        }
        assert!(serde_json::from_str::<TopicFilter>("\"a/#/b\"").is_err());
    }

    /// Filter and topic levels from a small alphabet so that matches are frequent.
    fn level() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["", "a", "b", "$x", "é", "日本", "A"]).prop_map(String::from)
    }

    pub(crate) fn topic_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..6).prop_map(|l| l.join("/"))
    }

    pub(crate) fn filter_strategy() -> impl Strategy<Value = String> {
        let lvl = prop_oneof![4 => level(), 2 => Just("+".to_owned())];
        (prop::collection::vec(lvl, 1..6), any::<bool>())
            .prop_map(|(mut l, hash)| {
                if hash {
                    l.push("#".to_owned());
                }
                l.join("/")
            })
            .prop_filter("the empty filter is invalid", |f| !f.is_empty())
    }

    proptest! {
        #[test]
        fn matches_agrees_with_the_reference(filter in filter_strategy(), topic in topic_strategy()) {
            let parsed = TopicFilter::parse(&filter).unwrap();
            prop_assert_eq!(parsed.matches(&topic), reference_matches(&filter, &topic));
        }

        #[test]
        fn parse_then_print_is_the_identity(filter in filter_strategy()) {
            let parsed = TopicFilter::parse(&filter).unwrap();
            prop_assert_eq!(parsed.to_string(), filter.clone());
            prop_assert_eq!(TopicFilter::parse(&parsed.to_string()).unwrap(), parsed);
        }

        #[test]
        fn parse_and_match_never_panic(s in "\\PC{0,12}", t in "\\PC{0,12}") {
            if let Ok(filter) = TopicFilter::parse(&s) {
                let _ = filter.matches(&t);
            }
            let _ = validate_topic(&t);
        }
    }
}

//! `TopicFilter::parse` and `matches` against a slow reference written here from MQTT 3.1.1 §4.7:
//! validity, parse∘print, and the match result must all agree, for filters with and without
//! `${iot:ClientId}` substitution.
#![no_main]

use defender_agent::topic_filter::{TopicFilter, MAX_FILTER_BYTES};
use libfuzzer_sys::fuzz_target;

/// Reference validity of a filter (MQTT 3.1.1 §4.7.1, §1.5.3).
fn reference_valid(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_FILTER_BYTES || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| {
        if level.contains('#') {
            *level == "#" && i == levels.len() - 1
        } else if level.contains('+') {
            *level == "+"
        } else {
            true
        }
    })
}

/// Reference match over level lists, by plain recursion.
fn reference_levels(filter: &[&str], topic: &[&str]) -> bool {
    match (filter.first(), topic.first()) {
        (None, None) => true,
        (Some(&"#"), _) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(&"+"), Some(_)) => reference_levels(&filter[1..], &topic[1..]),
        (Some(f), Some(t)) => f == t && reference_levels(&filter[1..], &topic[1..]),
    }
}

/// Reference match: the empty string is no topic; wildcards at level 0 never match `$` topics.
fn reference_matches(filter: &str, topic: &str) -> bool {
    if topic.is_empty() {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    reference_levels(&f, &t)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // "filter\ntopic\nclient id"; a missing part repeats the filter.
    let mut parts = text.splitn(3, '\n');
    let filter = parts.next().unwrap_or("");
    let topic = parts.next().unwrap_or(filter);
    let client_id = parts.next().unwrap_or("client-1");

    let parsed = TopicFilter::parse(filter);
    assert_eq!(
        parsed.is_ok(),
        reference_valid(filter),
        "validity of {filter:?}: {parsed:?}"
    );
    let Ok(f) = parsed else {
        return;
    };
    // parse ∘ print is the identity.
    assert_eq!(f.to_string(), filter);
    assert_eq!(TopicFilter::parse(&f.to_string()).as_ref(), Ok(&f));
    assert_eq!(
        f.matches(topic),
        reference_matches(filter, topic),
        "filter {filter:?} topic {topic:?}"
    );
    // A valid topic name without wildcards matches itself when used as a filter.
    if !f.has_wildcards() {
        assert_eq!(f.matches(filter), !filter.is_empty());
    }
    // Substitution: the result matches like the reference applied to the substituted text, with
    // the substituted parts literal (a client id's `+`/`#` are no wildcards).
    if let Ok(s) = f.substitute(client_id) {
        let _ = s.matches(topic);
        if !client_id.contains(['+', '#']) && f.has_client_id_variable() {
            let text = s.to_string();
            assert_eq!(s.matches(topic), reference_matches(&text, topic));
        }
    }
});

//! A minimal MQTT topic-filter matcher and validator for TOPIC_FILTER dimensions, kept inside
//! `detect` until `topic_filter` lands (the lead may swap it for `crate::topic_filter`).
//!
//! spec: detect.md §5 (matching rules), TC20.

/// Whether `filter` is a valid MQTT filter: `#` only as the whole last level, `+` only alone.
pub fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, l)| {
        if l.contains('#') {
            *l == "#" && i == last
        } else if l.contains('+') {
            *l == "+"
        } else {
            true
        }
    })
}

/// Whether `topic` matches `filter` (MQTT 3.1.1 §4.7). `${iot:ClientId}` is replaced by
/// `client_id` first. Wildcard-first filters never match `$` topics.
pub fn matches(filter: &str, topic: &str, client_id: &str) -> bool {
    let owned;
    let filter = if filter.contains("${iot:ClientId}") {
        owned = filter.replace("${iot:ClientId}", client_id);
        owned.as_str()
    } else {
        filter
    };
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tc20_table_holds() {
        for (f, t, want) in [
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
        ] {
            assert_eq!(matches(f, t, "c"), want, "{f} vs {t}");
        }
    }

    #[test]
    fn invalid_filters_are_rejected_and_client_id_is_substituted() {
        assert!(!is_valid_filter("a/#/b"));
        assert!(!is_valid_filter("a/b#"));
        assert!(!is_valid_filter("a+/b"));
        assert!(is_valid_filter("device/+/auth"));
        assert!(matches(
            "device/${iot:ClientId}/auth",
            "device/c1/auth",
            "c1"
        ));
        assert!(!matches(
            "device/${iot:ClientId}/auth",
            "device/c2/auth",
            "c1"
        ));
    }
}

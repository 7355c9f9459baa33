//! `report::outcome::parse` on arbitrary JSON bytes (what arrives on the accepted/rejected
//! topics): never panics; an answer that parses has a consistent `is_malformed`; its strings, as
//! the agent logs them (`text::untrusted`), are one bounded line without control or
//! bidirectional-override characters.
#![no_main]

use defender_agent::report::outcome::{parse, Status};
use defender_agent::report::Format;
use defender_agent::text::{untrusted, CUT_MARKER, MAX_LOGGED_CHARS};
use libfuzzer_sys::fuzz_target;

fn check_logged(s: &str) {
    let logged = untrusted(s).to_string();
    assert!(!logged.chars().any(|c| c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')));
    let body = logged.split(CUT_MARKER).next().unwrap_or_default();
    assert!(body.chars().count() <= MAX_LOGGED_CHARS);
}

fuzz_target!(|data: &[u8]| {
    match parse(data, Format::Json) {
        Ok(outcome) => {
            let rejected = matches!(outcome.status, Status::Rejected { .. });
            assert_eq!(
                outcome.is_malformed(),
                rejected && outcome.report_id.is_none()
            );
            if let Status::Rejected { code, message } = &outcome.status {
                check_logged(code);
                check_logged(message);
            }
        }
        Err(e) => check_logged(&e.to_string()),
    }
});

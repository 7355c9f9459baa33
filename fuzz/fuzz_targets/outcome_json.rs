//! `report::outcome::parse` on arbitrary JSON bytes (what arrives on the accepted/rejected
//! topics): never panics; an answer that parses has a consistent `is_malformed`.
#![no_main]

use defender_agent::report::outcome::{parse, Status};
use defender_agent::report::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data, Format::Json) {
        Ok(outcome) => {
            let rejected = matches!(outcome.status, Status::Rejected { .. });
            assert_eq!(
                outcome.is_malformed(),
                rejected && outcome.report_id.is_none()
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

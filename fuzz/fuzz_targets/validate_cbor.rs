//! `report::validate::validate`, `report::decode` and `report::decode_validated` on arbitrary
//! CBOR bytes: never panic, agree with each other, the agent's CBOR reader refuses exactly what
//! ciborium refuses with ciborium's message, and a report that decodes survives encode → decode
//! unchanged in every format and key set.
#![no_main]

use defender_agent::report::Format;
use libfuzzer_sys::fuzz_target;

#[path = "report_roundtrip.rs"]
mod report_roundtrip;

fuzz_target!(|data: &[u8]| {
    report_roundtrip::check(data, Format::Cbor);
    report_roundtrip::check_cbor_syntax(data);
});

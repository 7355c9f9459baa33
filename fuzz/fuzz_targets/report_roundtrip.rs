// Shared by validate_json and validate_cbor (included with `#[path]`): the report properties.

use defender_agent::report::{self, validate::validate, Format, KeySet, MAX_PAYLOAD_BYTES};

/// Validates `data`, and when it decodes, checks encode → decode is the identity in every format
/// and key set, and that what the agent encodes validates without errors.
pub fn check(data: &[u8], format: Format) {
    let problems = validate(data, Some(format));
    for p in &problems {
        let _ = p.to_string();
    }
    let valid = !problems.iter().any(|p| p.is_error());
    let decoded = report::decode(data, format);
    if data.len() <= MAX_PAYLOAD_BYTES {
        // decode accepts exactly what validate finds no error in (the size cap aside).
        assert_eq!(
            valid,
            decoded.is_ok(),
            "validate and decode disagree: {problems:?} vs {decoded:?}"
        );
    }
    let Ok(original) = decoded else { return };
    // A report whose only block is an empty `custom_metrics` object validates, but the model has no
    // "present and empty" block: it decodes to a report without data, which the agent never
    // encodes or publishes (`has_data`), and which encodes to neither block.
    if !original.has_data() {
        return;
    }
    for out_format in [Format::Json, Format::Cbor] {
        for keys in [KeySet::Long, KeySet::Short] {
            let bytes = report::encode(&original, out_format, keys);
            let errors: Vec<_> = validate(&bytes, Some(out_format))
                .into_iter()
                .filter(|p| p.is_error())
                .collect();
            assert!(
                errors.is_empty(),
                "re-encoded report ({out_format}, {keys}) is invalid: {errors:?}"
            );
            match report::decode(&bytes, out_format) {
                Ok(again) => assert_eq!(
                    again, original,
                    "decode(encode(r)) != r for {out_format}, {keys}"
                ),
                Err(e) => panic!("re-encoded report ({out_format}, {keys}) does not decode: {e}"),
            }
        }
    }
}

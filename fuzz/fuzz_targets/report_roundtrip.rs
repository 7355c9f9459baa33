// Shared by validate_json and validate_cbor (included with `#[path]`): the report properties.

use serde::Deserialize as _;

use defender_agent::report::{self, validate::validate, Format, KeySet, MAX_PAYLOAD_BYTES};

/// Validates `data`, checks that `decode_validated` is exactly validate-then-decode, and when it
/// decodes, checks encode → decode is the identity in every format and key set, and that what the
/// agent encodes validates without errors.
pub fn check(data: &[u8], format: Format) {
    let problems = validate(data, Some(format));
    for p in &problems {
        let _ = p.to_string();
    }
    let valid = !problems.iter().any(|p| p.is_error());
    let decoded = report::decode(data, format);
    // The fleet's one call: the first error validate finds, or decode's report and the warnings.
    let combined = report::decode_validated(data, format);
    match problems.iter().find(|p| p.is_error()) {
        Some(first) => assert_eq!(combined.as_ref().err(), Some(first), "decode_validated error"),
        None => match (&combined, &decoded) {
            (Ok((r, warnings)), Ok(d)) => {
                assert_eq!(r, d, "decode_validated report");
                assert_eq!(warnings, &problems, "decode_validated warnings");
            }
            _ => panic!("validate is clean but {combined:?} / {decoded:?}"),
        },
    }
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

/// CBOR only: the agent's own CBOR reader refuses exactly what ciborium (the reader it replaced)
/// refuses, with ciborium's message, and reports trailing bytes at the same offset. `Skip` takes
/// what the old tree visitor took: everything but tags other than bignums.
pub fn check_cbor_syntax(data: &[u8]) {
    let mut rest = data;
    let expected = match ciborium::de::from_reader::<Skip, _>(&mut rest) {
        Err(e) => Some(format!("not valid CBOR: {}", cbor_message(&e))),
        Ok(Skip) if !rest.is_empty() => Some(format!(
            "{} trailing bytes after the CBOR item (at offset {})",
            rest.len(),
            data.len() - rest.len()
        )),
        Ok(Skip) => None,
    };
    let syntax: Vec<String> = validate(data, Some(Format::Cbor))
        .into_iter()
        .filter(|p| p.path.is_empty() && !p.message.contains("MQTT limit"))
        .filter(|p| p.message.starts_with("not valid CBOR") || p.message.contains("trailing bytes"))
        .map(|p| p.message)
        .collect();
    assert_eq!(syntax, expected.into_iter().collect::<Vec<_>>(), "CBOR verdict differs from ciborium");
}

fn cbor_message(e: &ciborium::de::Error<std::io::Error>) -> String {
    match e {
        ciborium::de::Error::Io(io) => format!("truncated or unreadable ({io})"),
        ciborium::de::Error::Syntax(offset) => format!("syntax error at offset {offset}"),
        ciborium::de::Error::Semantic(Some(offset), msg) => format!("{msg} at offset {offset}"),
        ciborium::de::Error::Semantic(None, msg) => msg.clone(),
        ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".to_owned(),
    }
}

struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> serde::de::Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a CBOR value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
        Skip::deserialize(d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> Result<Skip, A::Error> {
        Err(serde::de::Error::custom("CBOR tags are not allowed in a metrics report"))
    }
}

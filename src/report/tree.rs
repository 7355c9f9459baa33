//! An order-preserving document tree, read from JSON (serde_json) or CBOR (`cbor_read.rs`).
//!
//! Why not `serde_json::Value` / `ciborium::Value`: the JSON map sorts keys and drops duplicates
//! (custom metrics keep configuration order, and duplicates are a violation), and neither records
//! whether a CBOR container had an indefinite length. Text borrows from the payload where it can
//! (JSON strings without escapes, CBOR text read whole), so reading a report allocates for
//! containers only. Nesting depth is bounded by the parsers (serde_json 128, CBOR 256, as
//! ciborium had it).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Format;

use super::cbor_read;

/// Most elements pre-allocated from a container's declared length: CBOR lengths come from the
/// payload and must not size an allocation.
pub(crate) const MAX_PREALLOC: usize = 256;

/// One value of a document, borrowing text from the payload where it can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer, `-1 - n` (CBOR major 1 reaches -2^64). Kept to 8 bytes, like the
    /// boxed bignums below, so a node is 32 bytes: trees are built and moved a lot.
    NegInt(u64),
    /// A negative integer below -2^64 (CBOR bignum).
    BigNegInt(Box<i128>),
    /// An integer too large for u64 (CBOR bignum).
    BigUInt(Box<u128>),
    Float(f64),
    Text(Cow<'a, str>),
    Bytes(Vec<u8>),
    /// `definite` is false for an indefinite-length CBOR array. Meaningful in CBOR only: a JSON
    /// parser gives no length up front, so JSON arrays read as not definite, and the reader looks
    /// at the flag for CBOR only.
    Array {
        items: Vec<Node<'a>>,
        definite: bool,
    },
    /// Entries in document order, duplicates kept; keys may be non-text in CBOR. `definite` as
    /// for arrays.
    Map {
        entries: Vec<(Node<'a>, Node<'a>)>,
        definite: bool,
    },
}

impl<'a> Node<'a> {
    /// A short name of the value's type, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::UInt(_) | Node::NegInt(_) | Node::BigNegInt(_) | Node::BigUInt(_) => "an integer",
            Node::Float(_) => "a non-integer number",
            Node::Text(_) => "a string",
            Node::Bytes(_) => "a byte string",
            Node::Array { .. } => "an array",
            Node::Map { .. } => "an object",
        }
    }

    /// A negative integer from its value (`v < 0`).
    pub(crate) fn negative(v: i128) -> Node<'a> {
        match u64::try_from(-1 - v) {
            Ok(n) => Node::NegInt(n),
            Err(_) => Node::BigNegInt(Box::new(v)),
        }
    }

    /// The value of a negative integer.
    pub(crate) fn negative_value(&self) -> Option<i128> {
        match self {
            Node::NegInt(n) => Some(-1 - i128::from(*n)),
            Node::BigNegInt(v) => Some(**v),
            _ => None,
        }
    }

    /// The text, when this is a string.
    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            Node::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The same tree owning all its text.
    #[cfg(test)]
    fn into_owned(self) -> Node<'static> {
        match self {
            Node::Null => Node::Null,
            Node::Bool(b) => Node::Bool(b),
            Node::UInt(v) => Node::UInt(v),
            Node::NegInt(v) => Node::NegInt(v),
            Node::BigNegInt(v) => Node::BigNegInt(v),
            Node::BigUInt(v) => Node::BigUInt(v),
            Node::Float(v) => Node::Float(v),
            Node::Text(t) => Node::Text(Cow::Owned(t.into_owned())),
            Node::Bytes(b) => Node::Bytes(b),
            Node::Array { items, definite } => Node::Array {
                items: items.into_iter().map(Node::into_owned).collect(),
                definite,
            },
            Node::Map { entries, definite } => Node::Map {
                entries: entries
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
                definite,
            },
        }
    }
}

/// Why a payload is not a single well-formed JSON or CBOR value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SyntaxError {
    /// serde_json's message (includes line and column).
    #[error("not valid JSON: {0}")]
    Json(String),
    /// ciborium's message.
    #[error("not valid CBOR: {0}")]
    Cbor(String),
    /// Bytes after the first complete CBOR item.
    #[error("{trailing} trailing bytes after the CBOR item (at offset {offset})")]
    CborTrailing { offset: usize, trailing: usize },
}

/// Parses a whole payload into a tree.
pub(crate) fn parse(bytes: &[u8], format: Format) -> Result<Node<'_>, SyntaxError> {
    match format {
        Format::Json => {
            // Checking the UTF-8 of the whole payload at once is much cheaper than serde_json
            // checking every string; bytes that are not UTF-8 go through `from_slice`, whose
            // message names the line and column. On UTF-8 input the two read alike.
            let parsed = match std::str::from_utf8(bytes) {
                Ok(text) => serde_json::from_str(text),
                Err(_) => serde_json::from_slice(bytes),
            };
            parsed.map_err(|e| SyntaxError::Json(e.to_string()))
        }
        Format::Cbor => cbor_read::parse(bytes),
    }
}

/// The CBOR reading this crate had before `cbor_read.rs` (ciborium 0.2 through the `Deserialize`
/// impl below): the reference `cbor_read.rs` is tested against, tree and messages.
#[cfg(test)]
pub(crate) fn parse_cbor_ciborium(bytes: &[u8]) -> Result<Node<'static>, SyntaxError> {
    let mut rest = bytes;
    let Owned(node) =
        ciborium::de::from_reader(&mut rest).map_err(|e| SyntaxError::Cbor(cbor_message(&e)))?;
    if rest.is_empty() {
        Ok(node)
    } else {
        Err(SyntaxError::CborTrailing {
            offset: bytes.len() - rest.len(),
            trailing: rest.len(),
        })
    }
}

/// Tree equality where NaN equals NaN (any payload: no message shows it).
#[cfg(test)]
pub(crate) fn same(a: &Node<'_>, b: &Node<'_>) -> bool {
    match (a, b) {
        (Node::Float(x), Node::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
        (
            Node::Array {
                items: x,
                definite: dx,
            },
            Node::Array {
                items: y,
                definite: dy,
            },
        ) => dx == dy && x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (
            Node::Map {
                entries: x,
                definite: dx,
            },
            Node::Map {
                entries: y,
                definite: dy,
            },
        ) => {
            dx == dy
                && x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| same(kx, ky) && same(vx, vy))
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
fn cbor_message(e: &ciborium::de::Error<std::io::Error>) -> String {
    match e {
        ciborium::de::Error::Io(io) => format!("truncated or unreadable ({io})"),
        ciborium::de::Error::Syntax(offset) => format!("syntax error at offset {offset}"),
        ciborium::de::Error::Semantic(Some(offset), msg) => format!("{msg} at offset {offset}"),
        ciborium::de::Error::Semantic(None, msg) => msg.clone(),
        ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".to_owned(),
    }
}

/// A tree that owns its text, for ciborium (which wants `DeserializeOwned`).
#[cfg(test)]
struct Owned(Node<'static>);

#[cfg(test)]
impl<'de> Deserialize<'de> for Owned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Node::deserialize(d).map(|n| Owned(n.into_owned()))
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or CBOR value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 {
            Node::UInt(v as u64)
        } else {
            Node::negative(i128::from(v))
        })
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Ok(match u64::try_from(v) {
            Ok(u) => Node::UInt(u),
            Err(_) if v < 0 => Node::negative(v),
            Err(_) => Node::BigUInt(Box::new(v as u128)),
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Node::UInt(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Ok(match u64::try_from(v) {
            Ok(u) => Node::UInt(u),
            Err(_) => Node::BigUInt(Box::new(v)),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Node::Float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Node::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Node::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Node::Text(Cow::Owned(v)))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(Node::Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(Node::Bytes(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let hint = seq.size_hint();
        // A JSON array gives no hint: start with room for a few entries rather than growing
        // from one.
        let mut items = Vec::with_capacity(hint.unwrap_or(4).min(MAX_PREALLOC));
        while let Some(item) = seq.next_element::<Node<'de>>()? {
            items.push(item);
        }
        Ok(Node::Array {
            items,
            definite: hint.is_some(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let hint = map.size_hint();
        let mut entries = Vec::with_capacity(hint.unwrap_or(4).min(MAX_PREALLOC));
        while let Some(entry) = map.next_entry::<Node<'de>, Node<'de>>()? {
            entries.push(entry);
        }
        Ok(Node::Map {
            entries,
            definite: hint.is_some(),
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Self::Value, A::Error> {
        // ciborium (the tests' reference reader) presents a CBOR tag other than a bignum as an
        // enum; serde_json never calls this.
        Err(de::Error::custom(
            "CBOR tags are not allowed in a metrics report",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        crate::hex::decode(s).expect("hex")
    }

    #[test]
    fn a_node_stays_small() {
        // Trees are built and moved a lot; a 16-byte-aligned variant would make every node 48.
        assert!(std::mem::size_of::<Node<'_>>() <= 32);
    }

    #[test]
    fn json_maps_keep_document_order_and_duplicates() {
        let node = parse(br#"{"b":1,"a":2,"b":3}"#, Format::Json);
        let Ok(Node::Map { entries, .. }) = node else {
            panic!("not a map: {node:?}");
        };
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            vec![
                Node::Text("b".into()),
                Node::Text("a".into()),
                Node::Text("b".into())
            ]
        );
    }

    #[test]
    fn cbor_indefinite_maps_are_recorded() {
        // {_ "a": 1} and {"a": 1}
        let (indefinite, definite) = (hex("bf616101ff"), hex("a1616101"));
        let indefinite = parse(&indefinite, Format::Cbor);
        assert!(matches!(
            indefinite,
            Ok(Node::Map {
                definite: false,
                ..
            })
        ));
        let definite = parse(&definite, Format::Cbor);
        assert!(matches!(definite, Ok(Node::Map { definite: true, .. })));
    }

    #[test]
    fn cbor_trailing_bytes_are_an_error() {
        assert_eq!(
            parse(&hex("a161610100"), Format::Cbor),
            Err(SyntaxError::CborTrailing {
                offset: 4,
                trailing: 1
            })
        );
    }

    #[test]
    fn cbor_numbers_keep_their_kind() {
        assert_eq!(parse(&hex("1829"), Format::Cbor), Ok(Node::UInt(41)));
        assert_eq!(parse(&hex("20"), Format::Cbor), Ok(Node::NegInt(0)));
        assert_eq!(parse(&hex("f94a40"), Format::Cbor), Ok(Node::Float(12.5)));
        assert_eq!(
            parse(&hex("3bffffffffffffffff"), Format::Cbor),
            Ok(Node::NegInt(u64::MAX))
        );
    }

    #[test]
    fn cbor_tags_are_refused() {
        // 1(1717171717): an epoch-time tag
        assert!(matches!(
            parse(&hex("c11a6659f605"), Format::Cbor),
            Err(SyntaxError::Cbor(_))
        ));
    }

    #[test]
    fn truncated_cbor_is_an_error() {
        assert!(matches!(
            parse(&hex("a26161"), Format::Cbor),
            Err(SyntaxError::Cbor(_))
        ));
    }
}

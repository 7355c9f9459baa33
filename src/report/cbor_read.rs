//! A one-pass CBOR reader for the shapes a report is made of, borrowing text from the payload.
//!
//! Why: ciborium reads through `std::io::Read` one header at a time and copies every string; on a
//! report of 50 ports and 50 connections that was most of the decoding time. This reader takes
//! what reports use: integers (major 0 and 1), definite-length text and byte strings of at most
//! 4096 bytes, arrays and maps of definite or indefinite length nested at most 128 deep, `false`,
//! `true`, `null`, `undefined` and 16/32/64-bit floats. For anything else (tags, including bignums;
//! indefinite-length or longer strings; other simple values; malformed or truncated input; bytes
//! after the item) it answers `None` and the caller asks ciborium, whose tree and messages stay
//! the reference (RFC 8949 §3; the limits mirror ciborium's 4096-byte scratch buffer and stay
//! below its recursion limit of 256).
//!
//! Where this reader gives a tree, it is the tree ciborium gives: unit tests and proptests compare
//! the two, and so does the validate_cbor fuzz target.

use std::borrow::Cow;

use super::tree::{Node, MAX_PREALLOC};

/// Deepest nesting of arrays and maps taken here.
const MAX_DEPTH: usize = 128;

/// Longest text or byte string taken here (ciborium reads longer ones piecewise).
const MAX_STRING: u64 = 4096;

/// The break byte that ends an indefinite-length container.
const BREAK: u8 = 0xff;

/// Reads `bytes` as exactly one CBOR item, or `None` when ciborium should read it.
pub(crate) fn parse(bytes: &[u8]) -> Option<Node<'_>> {
    let mut r = Reader { bytes, pos: 0 };
    let node = r.item(MAX_DEPTH)?;
    (r.pos == bytes.len()).then_some(node)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// A big-endian unsigned integer of `n` (at most 8) bytes.
    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0, |acc, &b| (acc << 8) | u64::from(b)),
        )
    }

    /// Whether the next byte is a break, consuming it if so.
    fn at_break(&mut self) -> bool {
        let brk = self.bytes.get(self.pos) == Some(&BREAK);
        if brk {
            self.pos += 1;
        }
        brk
    }

    /// Room to reserve for `declared` items: never more than the bytes left could hold.
    fn capacity(&self, declared: Option<u64>) -> usize {
        let left = self.bytes.len() - self.pos;
        declared
            .map_or(4, |n| usize::try_from(n).unwrap_or(usize::MAX))
            .min(left)
            .min(MAX_PREALLOC)
    }

    fn item(&mut self, depth: usize) -> Option<Node<'a>> {
        let head = *self.bytes.get(self.pos)?;
        self.pos += 1;
        let (major, info) = (head >> 5, head & 0x1f);
        if major == 7 {
            return match info {
                20 => Some(Node::Bool(false)),
                21 => Some(Node::Bool(true)),
                22 | 23 => Some(Node::Null),
                25 => Some(Node::Float(f16_to_f64(self.be(2)? as u16))),
                26 => Some(Node::Float(f64::from(f32::from_bits(self.be(4)? as u32)))),
                27 => Some(Node::Float(f64::from_bits(self.be(8)?))),
                _ => None,
            };
        }
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24 => Some(self.be(1)?),
            25 => Some(self.be(2)?),
            26 => Some(self.be(4)?),
            27 => Some(self.be(8)?),
            31 => None,
            _ => return None,
        };
        match (major, arg) {
            (0, Some(v)) => Some(Node::UInt(v)),
            (1, Some(v)) => Some(Node::NegInt(-1 - i128::from(v))),
            (2, Some(n)) if n <= MAX_STRING => Some(Node::Bytes(self.take(n as usize)?.to_vec())),
            (3, Some(n)) if n <= MAX_STRING => std::str::from_utf8(self.take(n as usize)?)
                .ok()
                .map(|s| Node::Text(Cow::Borrowed(s))),
            (4, len) => {
                let depth = depth.checked_sub(1)?;
                let mut items = Vec::with_capacity(self.capacity(len));
                match len {
                    // Each item takes at least one byte, so a false length runs out of input.
                    Some(n) => {
                        for _ in 0..n {
                            items.push(self.item(depth)?);
                        }
                    }
                    None => {
                        while !self.at_break() {
                            items.push(self.item(depth)?);
                        }
                    }
                }
                Some(Node::Array {
                    items,
                    definite: len.is_some(),
                })
            }
            (5, len) => {
                let depth = depth.checked_sub(1)?;
                let mut entries = Vec::with_capacity(self.capacity(len));
                match len {
                    Some(n) => {
                        for _ in 0..n {
                            entries.push((self.item(depth)?, self.item(depth)?));
                        }
                    }
                    None => {
                        while !self.at_break() {
                            entries.push((self.item(depth)?, self.item(depth)?));
                        }
                    }
                }
                Some(Node::Map {
                    entries,
                    definite: len.is_some(),
                })
            }
            _ => None,
        }
    }
}

/// IEEE 754 half precision to double, exactly (RFC 8949 Appendix D).
fn f16_to_f64(h: u16) -> f64 {
    let exp = i32::from((h >> 10) & 0x1f);
    let mant = f64::from(h & 0x3ff);
    let magnitude = match exp {
        0 => mant * pow2(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1024.0 + mant) * pow2(exp - 25),
    };
    if h & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// 2^e for the small exponents of half precision, built exactly.
fn pow2(e: i32) -> f64 {
    f64::from_bits(((1023 + e) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::tree::{parse_cbor_slow, same};
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        crate::hex::decode(s).expect("hex")
    }

    /// Where this reader answers, ciborium answers the same tree.
    #[track_caller]
    fn agrees(bytes: &[u8]) -> bool {
        match parse(bytes) {
            Some(fast) => {
                let slow = parse_cbor_slow(bytes);
                assert!(
                    matches!(&slow, Ok(slow) if same(&fast, slow)),
                    "trees differ for {bytes:02x?}: {fast:?} vs {slow:?}"
                );
                true
            }
            None => false,
        }
    }

    #[test]
    fn report_shapes_are_read_here() {
        for h in [
            "00",
            "17",
            "1818",
            "190100",
            "1a6659f605",
            "1bffffffffffffffff",
            "20",
            "3bffffffffffffffff",
            "f4",
            "f5",
            "f6",
            "f7",
            "f93c00",
            "f97c00",
            "f9fc00",
            "f90001",
            "f98000",
            "fa47c35000",
            "fb4029000000000000",
            "4201ff",
            "6568656c6c6f",
            "60",
            "80",
            "9f01ff",
            "9fff",
            "a0",
            "bf616101ff",
            "a26161016162820203",
            "a1f6a0",
            "1800",
        ] {
            assert!(agrees(&hex(h)), "{h} is left to ciborium");
        }
    }

    #[test]
    fn half_precision_floats_are_exact() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0x4a40), 12.5);
        assert_eq!(f16_to_f64(0x7bff), 65504.0);
        assert_eq!(f16_to_f64(0x0001), 5.960464477539063e-8);
        assert_eq!(f16_to_f64(0x0400), 6.103515625e-5);
        assert!(f16_to_f64(0x8000).is_sign_negative());
        assert!(f16_to_f64(0x7e00).is_nan());
        assert_eq!(f16_to_f64(0xfc00), f64::NEG_INFINITY);
    }

    #[test]
    fn everything_else_is_left_to_ciborium() {
        for h in [
            "",
            "1c",
            "1f",
            "3f",
            "c11a6659f605",
            "c249010000000000000000",
            "7f616161ff",
            "5f4101ff",
            "f800",
            "f814",
            "f0",
            "ff",
            "a26161",
            "9f01",
            "bf6161ff",
            "6261",
            "62c328",
            "a161610100",
            "9b0000000100000000",
        ] {
            assert_eq!(parse(&hex(h)), None, "{h}");
        }
        let deep = [vec![0x81u8; MAX_DEPTH + 1], vec![0x00]].concat();
        assert_eq!(parse(&deep), None);
        let ok = [vec![0x81u8; MAX_DEPTH], vec![0x00]].concat();
        assert!(agrees(&ok));
        let long = [vec![0x79u8, 0x10, 0x01], vec![b'a'; 4097]].concat();
        assert_eq!(parse(&long), None);
        let longest = [vec![0x79u8, 0x10, 0x00], vec![b'a'; 4096]].concat();
        assert!(agrees(&longest));
    }

    /// A CBOR item in any of the encodings this reader takes, non-shortest heads included.
    fn item() -> impl Strategy<Value = Vec<u8>> {
        let head = |major: u8, v: u64, width: u8| -> Vec<u8> {
            let m = major << 5;
            match width {
                0 if v < 24 => vec![m | v as u8],
                0 | 1 if v <= 0xff => vec![m | 24, v as u8],
                0..=2 if v <= 0xffff => [vec![m | 25], (v as u16).to_be_bytes().to_vec()].concat(),
                0..=3 if v <= 0xffff_ffff => {
                    [vec![m | 26], (v as u32).to_be_bytes().to_vec()].concat()
                }
                _ => [vec![m | 27], v.to_be_bytes().to_vec()].concat(),
            }
        };
        let leaf = prop_oneof![
            (any::<u64>(), 0u8..5).prop_map(move |(v, w)| head(0, v, w)),
            (0u64..300, 0u8..5).prop_map(move |(v, w)| head(0, v, w)),
            (any::<u64>(), 0u8..5).prop_map(move |(v, w)| head(1, v, w)),
            "[a-z0-9\u{e9}\u{1F600}]{0,12}".prop_map(move |s| [
                head(3, s.len() as u64, 0),
                s.into_bytes()
            ]
            .concat()),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(move |b| [
                head(2, b.len() as u64, 0),
                b
            ]
            .concat()),
            any::<u16>().prop_map(|h| [vec![0xf9], h.to_be_bytes().to_vec()].concat()),
            any::<u32>().prop_map(|h| [vec![0xfa], h.to_be_bytes().to_vec()].concat()),
            any::<u64>().prop_map(|h| [vec![0xfb], h.to_be_bytes().to_vec()].concat()),
            prop_oneof![Just(0xf4u8), Just(0xf5), Just(0xf6), Just(0xf7)].prop_map(|b| vec![b]),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                (prop::collection::vec(inner.clone(), 0..6), any::<bool>()).prop_map(
                    move |(items, definite)| {
                        let mut out = if definite {
                            head(4, items.len() as u64, 0)
                        } else {
                            vec![0x9f]
                        };
                        out.extend(items.concat());
                        if !definite {
                            out.push(BREAK);
                        }
                        out
                    }
                ),
                (
                    prop::collection::vec((inner.clone(), inner), 0..5),
                    any::<bool>()
                )
                    .prop_map(move |(entries, definite)| {
                        let mut out = if definite {
                            head(5, entries.len() as u64, 0)
                        } else {
                            vec![0xbf]
                        };
                        for (k, v) in entries {
                            out.extend(k);
                            out.extend(v);
                        }
                        if !definite {
                            out.push(BREAK);
                        }
                        out
                    }),
            ]
        })
    }

    proptest! {
        #[test]
        fn generated_items_read_as_ciborium_reads_them(bytes in item()) {
            prop_assert!(agrees(&bytes));
        }

        #[test]
        fn damaged_items_are_read_as_ciborium_reads_them_or_left_to_it(
            bytes in item(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let mut bytes = bytes;
            let i = at.index(bytes.len());
            if cut {
                bytes.truncate(i);
            } else {
                bytes[i] = byte;
            }
            agrees(&bytes);
        }
    }
}

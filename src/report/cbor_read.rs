//! Our CBOR reader: one pass over the payload into the document tree, borrowing text from it, and
//! ciborium's verdict on everything else.
//!
//! Why not ciborium itself: it reads through `std::io::Read` one header at a time and copies every
//! string; on a report of 50 ports and 50 connections that was most of the decoding time. Why
//! ciborium's verdict: `defender-agent validate` has always answered with ciborium's tree and
//! ciborium's messages (`not valid CBOR: syntax error at offset 17`), and that output is kept. So
//! this reader takes exactly what ciborium 0.2.2 (our `Deserialize` over its `deserialize_any`)
//! takes and refuses exactly what it refuses, with the same message and offset:
//!
//! - integers as major 0/1, bignums (tags 2 and 3 on a definite byte string of at most 16 bytes)
//!   as integers; any other tag is refused (`CBOR tags are not allowed in a metrics report`);
//! - text and byte strings of any length, definite or chunked (nested chunking too, as ciborium
//!   accepts it); text is checked piecewise as ciborium checks it (4096-byte pieces, a cut
//!   character carried over, at most 3 bytes);
//! - arrays and maps of definite or indefinite length, at most 256 levels deep (`nested too
//!   deeply`); `false`, `true`, `null` and `undefined` (also in the two-byte simple form);
//!   16/32/64-bit floats; other simple values and a misplaced break are refused with serde's
//!   `invalid type` message;
//! - offsets are ciborium's: the start of the head, except for bad UTF-8 in a text string, where
//!   ciborium counts from where it re-read a head that it had put back in its shortest form.
//!
//! Tests compare this reader with ciborium on generated, cut and damaged items (ciborium is a
//! dev-dependency for that), and the validate_cbor fuzz target does the same.

use std::borrow::Cow;

use super::tree::{Node, SyntaxError, MAX_PREALLOC};

/// ciborium's recursion limit: arrays, maps and tags nested deeper are refused.
const RECURSION_LIMIT: usize = 256;

/// ciborium's scratch buffer: strings up to this length are read whole, longer ones piecewise.
const SCRATCH: u64 = 4096;

/// Bytes of a cut UTF-8 character ciborium carries from one piece of text to the next.
const CARRY: usize = 3;

const NON_BREAK: &str = "invalid type: break, expected non-break";
const UNKNOWN_SIMPLE: &str = "invalid type: simple, expected known simple value";
const TAGGED: &str = "CBOR tags are not allowed in a metrics report";
const TOO_LARGE: &str = "integer too large";

/// Reads `bytes` as exactly one CBOR item.
pub(crate) fn parse(bytes: &[u8]) -> Result<Node<'_>, SyntaxError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        fail: Fail::Eof,
    };
    match r.item(RECURSION_LIMIT) {
        Some(node) if r.pos == bytes.len() => Ok(node),
        Some(_) => Err(SyntaxError::CborTrailing {
            offset: r.pos,
            trailing: bytes.len() - r.pos,
        }),
        None => Err(SyntaxError::Cbor(r.fail.message())),
    }
}

/// Why ciborium refuses a payload, in its terms.
#[derive(Debug)]
enum Fail {
    /// `Error::Io`: the input ended inside an item.
    Eof,
    /// `Error::Syntax(offset)`.
    Syntax(usize),
    /// `Error::Semantic(None, message)`.
    Semantic(&'static str),
    /// `Error::RecursionLimitExceeded`.
    TooDeep,
}

impl Fail {
    /// The text `tree.rs` always made of ciborium's error.
    fn message(&self) -> String {
        match self {
            // std's message for `read_exact` past the end of a slice.
            Fail::Eof => "truncated or unreadable (failed to fill whole buffer)".to_owned(),
            Fail::Syntax(offset) => format!("syntax error at offset {offset}"),
            Fail::Semantic(message) => (*message).to_owned(),
            Fail::TooDeep => "nested too deeply".to_owned(),
        }
    }
}

const MAJOR_UINT: u8 = 0;
const MAJOR_NEGINT: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const MAJOR_OTHER: u8 = 7;
/// Additional information 31: an indefinite length, or (major 7) a break.
const INDEFINITE: u8 = 31;

/// A data item head: major type, additional information and its argument (0 when indefinite).
/// Plain integers, so passing heads around costs nothing.
#[derive(Clone, Copy)]
struct Head {
    major: u8,
    info: u8,
    arg: u64,
}

impl Head {
    /// A string's or container's length; `None` when indefinite.
    fn len(self) -> Option<u64> {
        (self.info != INDEFINITE).then_some(self.arg)
    }

    fn is_break(self) -> bool {
        self.major == MAJOR_OTHER && self.info == INDEFINITE
    }
}

/// Length of the shortest head for argument `arg` (how ciborium puts a head back).
fn shortest_head_len(arg: u64) -> usize {
    match arg {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Why the last `None` was returned.
    fail: Fail,
}

impl<'a> Reader<'a> {
    fn fail<T>(&mut self, fail: Fail) -> Option<T> {
        self.fail = fail;
        None
    }

    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let left = self.bytes.len() - self.pos;
        match usize::try_from(n) {
            Ok(n) if n <= left => {
                let s = self.bytes.get(self.pos..self.pos + n);
                self.pos += n;
                s
            }
            _ => self.fail(Fail::Eof),
        }
    }

    /// Room to reserve for `declared` items: never more than the bytes left could hold.
    fn capacity(&self, declared: Option<u64>) -> usize {
        let left = (self.bytes.len() - self.pos) as u64;
        declared.map_or(4, |n| n.min(left).min(MAX_PREALLOC as u64) as usize)
    }

    /// The next head (ciborium's `Decoder::pull`): refuses reserved additional information
    /// and an indefinite integer or tag.
    fn head(&mut self) -> Option<Head> {
        let start = self.pos;
        let Some(&first) = self.bytes.get(start) else {
            return self.fail(Fail::Eof);
        };
        self.pos += 1;
        let (major, info) = (first >> 5, first & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let width = 1u64 << (info - 24);
                self.take(width)?
                    .iter()
                    .fold(0, |acc, &b| (acc << 8) | u64::from(b))
            }
            INDEFINITE if matches!(major, MAJOR_UINT | MAJOR_NEGINT | MAJOR_TAG) => {
                return self.fail(Fail::Syntax(start))
            }
            INDEFINITE => 0,
            _ => return self.fail(Fail::Syntax(start)),
        };
        Some(Head { major, info, arg })
    }

    fn item(&mut self, depth: usize) -> Option<Node<'a>> {
        let start = self.pos;
        let head = self.head()?;
        self.value(head, start, depth)
    }

    /// The item that starts with `head` (read from `start`); `depth` is ciborium's remaining
    /// recursion budget.
    fn value(&mut self, head: Head, start: usize, depth: usize) -> Option<Node<'a>> {
        let Head { major, info, arg } = head;
        match major {
            MAJOR_UINT => Some(Node::UInt(arg)),
            MAJOR_NEGINT => Some(Node::NegInt(arg)),
            MAJOR_BYTES => match head.len() {
                Some(n) if n <= SCRATCH => Some(Node::Bytes(self.take(n)?.to_vec())),
                len => self.pieces(len, start, false).map(Node::Bytes),
            },
            MAJOR_TEXT => {
                // ciborium reports bad UTF-8 where it re-read the head in its shortest form.
                let at = self.pos - head.len().map_or(1, shortest_head_len);
                match head.len() {
                    Some(n) if n <= SCRATCH => match std::str::from_utf8(self.take(n)?) {
                        Ok(s) => Some(Node::Text(Cow::Borrowed(s))),
                        Err(_) => self.fail(Fail::Syntax(at)),
                    },
                    len => {
                        let bytes = self.pieces(len, at, true)?;
                        match String::from_utf8(bytes) {
                            Ok(s) => Some(Node::Text(Cow::Owned(s))),
                            Err(_) => self.fail(Fail::Syntax(at)),
                        }
                    }
                }
            }
            MAJOR_ARRAY => {
                let Some(depth) = depth.checked_sub(1) else {
                    return self.fail(Fail::TooDeep);
                };
                let len = head.len();
                let mut items = Vec::with_capacity(self.capacity(len));
                match len {
                    // Each item takes at least one byte, so a false length runs out of input.
                    Some(n) => {
                        for _ in 0..n {
                            items.push(self.item(depth)?);
                        }
                    }
                    None => loop {
                        let at = self.pos;
                        let head = self.head()?;
                        if head.is_break() {
                            break;
                        }
                        items.push(self.value(head, at, depth)?);
                    },
                }
                Some(Node::Array {
                    items,
                    definite: len.is_some(),
                })
            }
            MAJOR_MAP => {
                let Some(depth) = depth.checked_sub(1) else {
                    return self.fail(Fail::TooDeep);
                };
                let len = head.len();
                let mut entries = Vec::with_capacity(self.capacity(len));
                match len {
                    Some(n) => {
                        for _ in 0..n {
                            let key = self.item(depth)?;
                            let value = self.item(depth)?;
                            entries.push((key, value));
                        }
                    }
                    None => loop {
                        let at = self.pos;
                        let head = self.head()?;
                        if head.is_break() {
                            break;
                        }
                        let key = self.value(head, at, depth)?;
                        let value = self.item(depth)?;
                        entries.push((key, value));
                    },
                }
                Some(Node::Map {
                    entries,
                    definite: len.is_some(),
                })
            }
            MAJOR_TAG => {
                // ciborium looks at the next head first: only a bignum is read.
                let next = self.head()?;
                match next.len() {
                    Some(n) if next.major == MAJOR_BYTES && (arg == 2 || arg == 3) && n <= 16 => {
                        let raw = self
                            .take(n)?
                            .iter()
                            .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
                        if arg == 2 {
                            Some(match u64::try_from(raw) {
                                Ok(v) => Node::UInt(v),
                                Err(_) => Node::BigUInt(Box::new(raw)),
                            })
                        } else {
                            match i128::try_from(raw) {
                                Ok(v) => Some(Node::negative(-1 - v)),
                                Err(_) => self.fail(Fail::Semantic(TOO_LARGE)),
                            }
                        }
                    }
                    _ if depth == 0 => self.fail(Fail::TooDeep),
                    _ => self.fail(Fail::Semantic(TAGGED)),
                }
            }
            _ => match info {
                20 => Some(Node::Bool(false)),
                21 => Some(Node::Bool(true)),
                22 | 23 => Some(Node::Null),
                24 => match arg {
                    20 => Some(Node::Bool(false)),
                    21 => Some(Node::Bool(true)),
                    22 | 23 => Some(Node::Null),
                    _ => self.fail(Fail::Semantic(UNKNOWN_SIMPLE)),
                },
                25 => Some(Node::Float(f16_to_f64(arg as u16))),
                26 => Some(Node::Float(f64::from(f32::from_bits(arg as u32)))),
                27 => Some(Node::Float(f64::from_bits(arg))),
                INDEFINITE => self.fail(Fail::Semantic(NON_BREAK)),
                _ => self.fail(Fail::Semantic(UNKNOWN_SIMPLE)),
            },
        }
    }

    /// A string read as ciborium reads one that is chunked or longer than its scratch buffer
    /// (`Segments`): `first` is the length in the item's own head, `at` where ciborium places
    /// that head. Chunks may nest; each must be of the same kind.
    fn pieces(&mut self, first: Option<u64>, at: usize, text: bool) -> Option<Vec<u8>> {
        let kind = if text { MAJOR_TEXT } else { MAJOR_BYTES };
        let mut out = Vec::new();
        let mut nested = 0usize;
        let mut next = Some((first, at));
        loop {
            let (len, offset) = match next.take() {
                Some(head) => head,
                None => {
                    let offset = self.pos;
                    let head = self.head()?;
                    if head.is_break() && nested == 1 {
                        return Some(out);
                    } else if head.is_break() && nested > 1 {
                        nested -= 1;
                        continue;
                    } else if head.major == kind {
                        (head.len(), offset)
                    } else {
                        return self.fail(Fail::Syntax(offset));
                    }
                }
            };
            match len {
                None => nested += 1,
                Some(n) => {
                    self.piece(n, offset, text, &mut out)?;
                    if nested == 0 {
                        return Some(out);
                    }
                }
            }
        }
    }

    /// One chunk of `n` bytes, read in scratch-sized pieces; text is checked piece by piece
    /// (`Segment::pull` with ciborium's `Text` parser), a cut character carried over.
    fn piece(&mut self, n: u64, offset: usize, text: bool, out: &mut Vec<u8>) -> Option<()> {
        let mut unread = n;
        let mut carried = 0usize;
        loop {
            if unread == 0 {
                return if carried == 0 {
                    Some(())
                } else {
                    self.fail(Fail::Syntax(offset))
                };
            }
            let size = SCRATCH.min(carried as u64 + unread);
            let fresh = size - carried as u64;
            let chunk = self.take(fresh)?;
            unread -= fresh;
            if !text {
                out.extend_from_slice(chunk);
                continue;
            }
            // The carried bytes are already at the end of `out`.
            let begin = out.len() - carried;
            out.extend_from_slice(chunk);
            let valid = match std::str::from_utf8(out.get(begin..).unwrap_or(&[])) {
                Ok(_) => out.len() - begin,
                Err(e) => e.valid_up_to(),
            };
            carried = out.len() - begin - valid;
            if carried > CARRY {
                return self.fail(Fail::Syntax(offset));
            }
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

    use super::super::tree::{parse_cbor_ciborium, same};
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        crate::hex::decode(s).expect("hex")
    }

    /// This reader and ciborium read `bytes` alike: the same tree, or the same message.
    #[track_caller]
    fn agrees(bytes: &[u8]) -> Result<Node<'_>, SyntaxError> {
        let ours = parse(bytes);
        let theirs = parse_cbor_ciborium(bytes);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert!(same(a, b), "trees differ for {bytes:02x?}: {a:?} vs {b:?}"),
            _ => assert_eq!(
                ours.as_ref().err(),
                theirs.as_ref().err(),
                "for {bytes:02x?}: {ours:?} vs {theirs:?}"
            ),
        }
        ours
    }

    #[test]
    fn report_shapes_read_as_ciborium_reads_them() {
        for h in [
            "00",
            "17",
            "1818",
            "1800",
            "190100",
            "1a6659f605",
            "1bffffffffffffffff",
            "20",
            "3bffffffffffffffff",
            "f4",
            "f5",
            "f6",
            "f7",
            "f814",
            "f817",
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
            "c249010000000000000000",
            "c240",
            "c3420100",
            "c250ffffffffffffffffffffffffffffffff",
            "c3507fffffffffffffffffffffffffffffff",
            "7f6161ff",
            "7f7f6161ff6162ff",
            "5f4101ff",
            "5f5f4101ff4102ff",
            "7800",
            "790003616263",
        ] {
            assert!(agrees(&hex(h)).is_ok(), "{h}");
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
    fn malformed_items_fail_with_ciborium_messages() {
        for (h, message) in [
            (
                "",
                "not valid CBOR: truncated or unreadable (failed to fill whole buffer)",
            ),
            ("1c", "not valid CBOR: syntax error at offset 0"),
            ("811f", "not valid CBOR: syntax error at offset 1"),
            (
                "c11a6659f605",
                "not valid CBOR: CBOR tags are not allowed in a metrics report",
            ),
            (
                "c350ffffffffffffffffffffffffffffffff",
                "not valid CBOR: integer too large",
            ),
            (
                "f0",
                "not valid CBOR: invalid type: simple, expected known simple value",
            ),
            (
                "ff",
                "not valid CBOR: invalid type: break, expected non-break",
            ),
            (
                "bf6161ff",
                "not valid CBOR: invalid type: break, expected non-break",
            ),
            (
                "a26161",
                "not valid CBOR: truncated or unreadable (failed to fill whole buffer)",
            ),
            ("62c328", "not valid CBOR: syntax error at offset 0"),
            ("8178 02c328", "not valid CBOR: syntax error at offset 2"),
            ("7f6161 01ff", "not valid CBOR: syntax error at offset 3"),
            ("7f61c3 61a9ff", "not valid CBOR: syntax error at offset 1"),
            (
                "a161610100",
                "1 trailing bytes after the CBOR item (at offset 4)",
            ),
        ] {
            let bytes = hex(&h.replace(' ', ""));
            let err = agrees(&bytes).expect_err(h);
            assert_eq!(err.to_string(), message, "{h}");
        }
        let deep = [vec![0x81u8; RECURSION_LIMIT + 1], vec![0x00]].concat();
        assert_eq!(
            agrees(&deep).map_err(|e| e.to_string()),
            Err("not valid CBOR: nested too deeply".to_owned())
        );
        let ok = [vec![0x81u8; RECURSION_LIMIT], vec![0x00]].concat();
        assert!(agrees(&ok).is_ok());
        let tag_deep = [vec![0x81u8; RECURSION_LIMIT], vec![0xc1, 0x00]].concat();
        agrees(&tag_deep).expect_err("too deep");
    }

    #[test]
    fn long_text_is_checked_piecewise_as_ciborium_checks_it() {
        // 4096-byte pieces with a character cut at every position near the seams.
        for pad in 4090..4100usize {
            for ch in ["é", "€", "😀"] {
                let mut text = "a".repeat(pad);
                text.push_str(ch);
                text.push_str(&"b".repeat(4100));
                let n = text.len();
                let head = [0x79u8, (n >> 8) as u8, n as u8];
                let bytes = [&head[..], text.as_bytes()].concat();
                assert!(agrees(&bytes).is_ok());
                for cut in [pad, pad + 1, n - 1] {
                    let _ = agrees(&bytes[..3 + cut]);
                }
                for flip in [pad, pad + 1, pad + ch.len() - 1, 4095, 4096, 4097] {
                    let mut b = bytes.clone();
                    b[3 + flip] = 0xff;
                    let _ = agrees(&b);
                    b[3 + flip] = 0x80;
                    let _ = agrees(&b);
                }
            }
        }
        // A long byte string and a long text string with a non-shortest head.
        let bytes = [vec![0x5au8, 0, 0, 0x10, 0x01], vec![7u8; 4097]].concat();
        assert!(agrees(&bytes).is_ok());
        let text = [
            vec![0x7bu8, 0, 0, 0, 0, 0, 0, 0x10, 0x02],
            vec![b'x'; 4097],
            vec![0xc3],
        ]
        .concat();
        agrees(&text).expect_err("cut character");
    }

    fn head(major: u8, v: u64, width: u8) -> Vec<u8> {
        let m = major << 5;
        match width {
            0 if v < 24 => vec![m | v as u8],
            0 | 1 if v <= 0xff => vec![m | 24, v as u8],
            0..=2 if v <= 0xffff => [vec![m | 25], (v as u16).to_be_bytes().to_vec()].concat(),
            0..=3 if v <= 0xffff_ffff => [vec![m | 26], (v as u32).to_be_bytes().to_vec()].concat(),
            _ => [vec![m | 27], v.to_be_bytes().to_vec()].concat(),
        }
    }

    /// A CBOR item in any encoding, odd ones included: non-shortest heads, chunked strings,
    /// bignums and other tags, every simple value, breaks.
    fn item() -> impl Strategy<Value = Vec<u8>> {
        let text = "[a-z0-9\u{e9}\u{20ac}\u{1F600}]{0,12}";
        let leaf = prop_oneof![
            (any::<u64>(), 0u8..5).prop_map(|(v, w)| head(0, v, w)),
            (0u64..300, 0u8..5).prop_map(|(v, w)| head(0, v, w)),
            (any::<u64>(), 0u8..5).prop_map(|(v, w)| head(1, v, w)),
            (text, 0u8..5).prop_map(|(s, w)| [head(3, s.len() as u64, w), s.into_bytes()].concat()),
            prop::collection::vec(text, 0..3).prop_map(|chunks| {
                let mut out = vec![0x7f];
                for c in chunks {
                    out.extend(head(3, c.len() as u64, 0));
                    out.extend(c.into_bytes());
                }
                out.push(0xff);
                out
            }),
            prop::collection::vec(any::<u8>(), 0..8)
                .prop_map(|b| [head(2, b.len() as u64, 0), b].concat()),
            (2u64..4, prop::collection::vec(any::<u8>(), 0..18)).prop_map(|(t, b)| [
                head(6, t, 0),
                head(2, b.len() as u64, 0),
                b
            ]
            .concat()),
            (any::<u64>(), any::<u8>()).prop_map(|(t, v)| [head(6, t, 0), vec![v]].concat()),
            any::<u16>().prop_map(|h| [vec![0xf9], h.to_be_bytes().to_vec()].concat()),
            any::<u32>().prop_map(|h| [vec![0xfa], h.to_be_bytes().to_vec()].concat()),
            any::<u64>().prop_map(|h| [vec![0xfb], h.to_be_bytes().to_vec()].concat()),
            (0xe0u8..=0xf8).prop_map(|b| vec![b]),
            any::<u8>().prop_map(|v| vec![0xf8, v]),
            Just(vec![0xff]),
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
                            out.push(0xff);
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
                            out.push(0xff);
                        }
                        out
                    }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn generated_items_read_as_ciborium_reads_them(bytes in item()) {
            let _ = agrees(&bytes);
        }

        #[test]
        fn damaged_items_read_as_ciborium_reads_them(
            bytes in item(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            how in 0u8..3,
        ) {
            let mut bytes = bytes;
            let i = at.index(bytes.len());
            match how {
                0 => bytes.truncate(i),
                1 => bytes[i] = byte,
                _ => bytes.insert(i, byte),
            }
            let _ = agrees(&bytes);
        }

        #[test]
        fn arbitrary_bytes_read_as_ciborium_reads_them(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let _ = agrees(&bytes);
        }
    }
}

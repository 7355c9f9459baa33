//! The spool log's on-disk framing, pure: records to bytes and back, never panicking on any input.
//!
//! ```text
//! file   := header frame*
//! header := "DDSPOOL" version:u8                    (8 bytes; version 1)
//! frame  := len:u32le crc:u32le body[len]            crc = CRC-32 (IEEE) of len's 4 bytes then body
//! body   := kind:u8 fields                           little-endian integers
//!   1 Meta       flags:u8 last_id:u64 dropped_total:u64   (flags bit 0: last_id present)
//!   2 Append     id:u64 format:u8 payload[..]             (format 0 JSON, 1 CBOR)
//!   3 Ack        id:u64
//!   4 Drop       id:u64                                     (removed by the size bound)
//!   5 Supersede  id:u64
//!   6 Reject     id:u64 code_len:u16 code[code_len] message[..]   (both UTF-8)
//! ```
//!
//! The checksum covers the length field too, so a length that was corrupted into another plausible
//! value is caught. A length is checked against [`MAX_BODY_BYTES`] and against the bytes actually
//! present before anything is sliced, so a lying length never allocates.
//!
//! A frame that is torn or fails its checks is damage, not the end: decoding resynchronises on the
//! next offset where a whole frame passes every check (length in range and present, CRC-32 over
//! length and body, a body that parses; [`resync`]), so one damaged byte costs the records it hits,
//! not every later one. The frame checks are the sync marker: a false match needs a 32-bit CRC
//! collision on a body that also parses. A state record after a hole (an ack, a rejection) whose
//! entry was in the hole refers to nothing and is ignored; an entry whose ack was in the hole is
//! pending again and published once more (the service discards a report id it has seen, spec D.1).

use super::Entry;
use crate::report::Format;

/// The one-byte tag of an `Append`'s format.
const FORMAT_JSON: u8 = 0;
const FORMAT_CBOR: u8 = 1;

/// The on-disk tag of a report format.
fn format_tag(f: Format) -> u8 {
    match f {
        Format::Json => FORMAT_JSON,
        Format::Cbor => FORMAT_CBOR,
    }
}

/// First seven bytes of every spool file.
pub const MAGIC: [u8; 7] = *b"DDSPOOL";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Length of the file header (magic and version).
pub const FILE_HEADER_LEN: usize = 8;
/// Length of a frame header (length and checksum).
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload an entry may carry: 1 MiB. AWS caps an MQTT payload at 128 KB (spec A.1); the
/// headroom is for other brokers, and the cap keeps a lying length field from allocating much.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Longest stored rejection `ErrorCode`, in bytes (longer ones are cut at a character boundary).
pub const MAX_CODE_BYTES: usize = 256;
/// Longest stored rejection `ErrorMessage`, in bytes (longer ones are cut at a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Largest body of any record (an `Append` with a payload of [`MAX_PAYLOAD_BYTES`]).
pub const MAX_BODY_BYTES: usize = 1 + 8 + 1 + MAX_PAYLOAD_BYTES;

const KIND_META: u8 = 1;
const KIND_APPEND: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_DROP: u8 = 4;
const KIND_SUPERSEDE: u8 = 5;
const KIND_REJECT: u8 = 6;

/// One record of the spool log. The spool's state is the replay of its records in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Carried across compaction: the last id ever appended and the drop counter.
    Meta {
        /// Highest report id ever appended (kept when every entry has left the spool).
        last_id: Option<u64>,
        /// Entries dropped by the size bound since the spool was created.
        dropped_total: u64,
    },
    /// A new pending entry.
    Append(Entry),
    /// The entry was accepted and leaves the spool.
    Ack {
        /// Report id.
        id: u64,
    },
    /// The entry was dropped to respect the count or byte bound.
    Drop {
        /// Report id.
        id: u64,
    },
    /// A pending entry became history: a newer report was published in its place.
    Supersede {
        /// Report id.
        id: u64,
    },
    /// The broker rejected the entry; it is kept for inspection and never published again.
    Reject {
        /// Report id.
        id: u64,
        /// The broker's `ErrorCode`.
        code: String,
        /// The broker's `ErrorMessage`.
        message: String,
    },
}

/// Why decoding stopped before the end of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The data end inside the file header or a frame: the last write was torn.
    #[error("torn write (data end inside a record)")]
    Torn,
    /// The file does not start with [`MAGIC`].
    #[error("not a spool file (bad magic)")]
    BadMagic,
    /// The file is a spool file of a version this code does not read.
    #[error("unsupported spool format version {0}")]
    UnsupportedVersion(u8),
    /// A frame's length field is zero or larger than [`MAX_BODY_BYTES`].
    #[error("record length {0} out of range")]
    LengthOutOfRange(u32),
    /// A frame's checksum does not match its contents.
    #[error("checksum mismatch")]
    ChecksumMismatch,
    /// The checksum matched but the body does not parse (unknown kind, short field, bad UTF-8).
    #[error("malformed record body ({0})")]
    BadBody(&'static str),
}

/// Where decoding stopped and why: the bytes from `offset` on are not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptTail {
    /// Byte offset of the first untrusted byte (equals the valid prefix length).
    pub offset: u64,
    /// Number of untrusted bytes from `offset` to the end of the data.
    pub len: u64,
    /// What was wrong with the first untrusted frame.
    pub reason: Corruption,
}

/// The result of decoding a whole spool file image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The records of every whole, checked frame, in file order (also those found after damage).
    pub records: Vec<Record>,
    /// Length of the valid prefix (file header and whole, checked frames before any damage).
    pub valid_len: usize,
    /// The first damage (torn or corrupt bytes) after the valid prefix, if any; `len` runs to the
    /// end of the data.
    pub tail: Option<CorruptTail>,
    /// Bytes that belong to no checked frame (0 when `tail` is `None`).
    pub skipped: u64,
    /// Of `records`, those found after the first damage by resynchronising.
    pub resynced: usize,
}

/// The 8-byte file header of this format version.
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut header = [0u8; FILE_HEADER_LEN];
    // Invariant: constant indexes, MAGIC.len() (7) < FILE_HEADER_LEN (8).
    header[..MAGIC.len()].copy_from_slice(&MAGIC);
    header[MAGIC.len()] = VERSION;
    header
}

/// Checks the start of a file. `bytes` may be shorter than the header (a torn creation).
pub fn check_file_header(bytes: &[u8]) -> Result<(), Corruption> {
    let expected = file_header();
    let n = bytes.len().min(FILE_HEADER_LEN);
    let magic_n = n.min(MAGIC.len());
    // Invariant: magic_n <= bytes.len() and <= MAGIC.len().
    if bytes[..magic_n] != MAGIC[..magic_n] {
        return Err(Corruption::BadMagic);
    }
    if n < FILE_HEADER_LEN {
        return Err(Corruption::Torn);
    }
    // Invariant: bytes.len() >= FILE_HEADER_LEN here.
    match bytes[MAGIC.len()] {
        v if v == expected[MAGIC.len()] => Ok(()),
        v => Err(Corruption::UnsupportedVersion(v)),
    }
}

/// Appends the frame of `record` to `out`.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Meta {
            last_id,
            dropped_total,
        } => frame(out, |b| {
            b.push(KIND_META);
            b.push(u8::from(last_id.is_some()));
            b.extend_from_slice(&last_id.unwrap_or(0).to_le_bytes());
            b.extend_from_slice(&dropped_total.to_le_bytes());
        }),
        Record::Append(entry) => encode_append(entry, out),
        Record::Ack { id } => encode_id(KIND_ACK, *id, out),
        Record::Drop { id } => encode_id(KIND_DROP, *id, out),
        Record::Supersede { id } => encode_id(KIND_SUPERSEDE, *id, out),
        Record::Reject { id, code, message } => encode_reject(*id, code, message, out),
    }
}

/// Appends the frame of an `Append` record for `entry` without cloning its payload. The caller
/// keeps the payload within [`MAX_PAYLOAD_BYTES`]; a longer one would be written but never read back.
pub fn encode_append(entry: &Entry, out: &mut Vec<u8>) {
    frame(out, |b| {
        b.push(KIND_APPEND);
        b.extend_from_slice(&entry.id.to_le_bytes());
        b.push(format_tag(entry.format));
        b.extend_from_slice(&entry.payload);
    });
}

/// Appends the frame of a `Reject` record, cutting `code` and `message` to their caps.
pub fn encode_reject(id: u64, code: &str, message: &str, out: &mut Vec<u8>) {
    let code = truncate_utf8(code, MAX_CODE_BYTES);
    let message = truncate_utf8(message, MAX_MESSAGE_BYTES);
    frame(out, |b| {
        b.push(KIND_REJECT);
        b.extend_from_slice(&id.to_le_bytes());
        // Invariant: code.len() <= MAX_CODE_BYTES (256) fits in a u16.
        b.extend_from_slice(&(code.len() as u16).to_le_bytes());
        b.extend_from_slice(code.as_bytes());
        b.extend_from_slice(message.as_bytes());
    });
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    // Invariant: end = max < s.len() and 0 is a char boundary, so the loop stops in bounds.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Exact length of the frame `encode` produces for `record` (for compaction planning).
pub fn encoded_len(record: &Record) -> usize {
    FRAME_HEADER_LEN
        + match record {
            Record::Meta { .. } => 1 + 1 + 8 + 8,
            Record::Append(entry) => 1 + 8 + 1 + entry.payload.len(),
            Record::Ack { .. } | Record::Drop { .. } | Record::Supersede { .. } => 1 + 8,
            Record::Reject { code, message, .. } => {
                1 + 8
                    + 2
                    + truncate_utf8(code, MAX_CODE_BYTES).len()
                    + truncate_utf8(message, MAX_MESSAGE_BYTES).len()
            }
        }
}

fn encode_id(kind: u8, id: u64, out: &mut Vec<u8>) {
    frame(out, |b| {
        b.push(kind);
        b.extend_from_slice(&id.to_le_bytes());
    });
}

/// Writes a frame header placeholder, lets `body` append the body, then fills in length and CRC.
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    body(out);
    let body_len = out.len() - start - FRAME_HEADER_LEN;
    // Invariant: bodies are bounded by MAX_BODY_BYTES (~1 MiB) plus at most a caller's oversize
    // payload, which `Spool::append` refuses before encoding; saturate rather than wrap regardless.
    let len = u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    // Invariant: `out` grew by FRAME_HEADER_LEN bytes at `start` above.
    crc.update(&out[start + FRAME_HEADER_LEN..]);
    // Invariant: `out` grew by FRAME_HEADER_LEN (8) bytes at `start` above.
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// Reads the body length from a frame header and checks its range (not yet against the data).
pub fn body_len(header: &[u8; FRAME_HEADER_LEN]) -> Result<usize, Corruption> {
    // Invariant: `header` is a fixed array of FRAME_HEADER_LEN (8).
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    match usize::try_from(len) {
        Ok(n) if (1..=MAX_BODY_BYTES).contains(&n) => Ok(n),
        _ => Err(Corruption::LengthOutOfRange(len)),
    }
}

/// Decodes the frame at the start of `bytes`: the record and the frame's total length.
pub fn decode_frame(bytes: &[u8]) -> Result<(Record, usize), Corruption> {
    let Some(header) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(Corruption::Torn);
    };
    let len = body_len(header)?;
    let Some(body) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Err(Corruption::Torn);
    };
    // Invariant: `header` is a fixed array of FRAME_HEADER_LEN (8).
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[..4]);
    crc.update(body);
    if crc.finalize() != stored {
        return Err(Corruption::ChecksumMismatch);
    }
    Ok((decode_body(body)?, FRAME_HEADER_LEN + len))
}

/// The first offset at or after `from` where a whole frame decodes (length in range and present,
/// checksum, body): where decoding resumes after damage. `None` when no frame follows.
pub fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    let last = bytes.len().checked_sub(FRAME_HEADER_LEN)?;
    // Invariant: p <= last, so p + FRAME_HEADER_LEN <= bytes.len().
    (from..=last).find(|&p| decode_frame(&bytes[p..]).is_ok())
}

/// Decodes a whole file image: every checked frame's record (resynchronising past damage, see
/// [`resync`]), the valid prefix and the first damage. An empty image is a valid empty file (the
/// spool writes the header when it creates the file). A damaged magic is resynchronised past too
/// (a flipped byte in the header must not cost the file); a newer version stops decoding.
pub fn decode_all(bytes: &[u8]) -> Decoded {
    let mut decoded = Decoded {
        records: Vec::new(),
        valid_len: 0,
        tail: None,
        skipped: 0,
        resynced: 0,
    };
    if bytes.is_empty() {
        return decoded;
    }
    let mut pos = FILE_HEADER_LEN;
    if let Err(reason) = check_file_header(bytes) {
        decoded.tail = Some(CorruptTail {
            offset: 0,
            len: bytes.len() as u64,
            reason,
        });
        if reason != Corruption::BadMagic || bytes.len() < FILE_HEADER_LEN {
            decoded.skipped = bytes.len() as u64;
            return decoded;
        }
        match resync(bytes, FILE_HEADER_LEN) {
            Some(next) => pos = next,
            None => {
                decoded.skipped = bytes.len() as u64;
                return decoded;
            }
        }
        decoded.skipped = pos as u64;
    }
    while pos < bytes.len() {
        // Invariant: pos < bytes.len().
        match decode_frame(&bytes[pos..]) {
            Ok((record, n)) => {
                decoded.records.push(record);
                decoded.resynced += usize::from(decoded.tail.is_some());
                pos += n;
            }
            Err(reason) => {
                if decoded.tail.is_none() {
                    decoded.valid_len = pos;
                    decoded.tail = Some(CorruptTail {
                        offset: pos as u64,
                        // Invariant: pos < bytes.len().
                        len: (bytes.len() - pos) as u64,
                        reason,
                    });
                }
                let next = resync(bytes, pos + 1).unwrap_or(bytes.len());
                decoded.skipped += (next - pos) as u64;
                pos = next;
            }
        }
    }
    if decoded.tail.is_none() {
        decoded.valid_len = pos;
    }
    decoded
}

/// A bounds-checked reader over a record body.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Corruption> {
        if self.rest.len() < n {
            return Err(Corruption::BadBody(what));
        }
        // Invariant: n <= rest.len(), checked above.
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Corruption> {
        // Invariant: take(1) returns exactly 1 byte.
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Corruption> {
        let b = self.take(2, what)?;
        // Invariant: take(2) returns exactly 2 bytes.
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, Corruption> {
        let mut a = [0u8; 8];
        // Invariant: take(8) returns exactly 8 bytes.
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }

    fn end(&self) -> Result<(), Corruption> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Corruption::BadBody("trailing bytes"))
        }
    }
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, Corruption> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Corruption::BadBody(what))
}

fn decode_body(body: &[u8]) -> Result<Record, Corruption> {
    let mut f = Fields { rest: body };
    let record = match f.u8("kind")? {
        KIND_META => {
            let flags = f.u8("meta flags")?;
            let last_id = f.u64("meta last id")?;
            let dropped_total = f.u64("meta dropped total")?;
            if flags > 1 {
                return Err(Corruption::BadBody("meta flags"));
            }
            Record::Meta {
                last_id: (flags == 1).then_some(last_id),
                dropped_total,
            }
        }
        KIND_APPEND => {
            let id = f.u64("append id")?;
            let format = match f.u8("append format")? {
                FORMAT_JSON => Format::Json,
                FORMAT_CBOR => Format::Cbor,
                _ => return Err(Corruption::BadBody("append format")),
            };
            let payload = f.rest.to_vec();
            f.rest = &[];
            Record::Append(Entry {
                id,
                format,
                payload,
            })
        }
        KIND_ACK => Record::Ack {
            id: f.u64("ack id")?,
        },
        KIND_DROP => Record::Drop {
            id: f.u64("drop id")?,
        },
        KIND_SUPERSEDE => Record::Supersede {
            id: f.u64("supersede id")?,
        },
        KIND_REJECT => {
            let id = f.u64("reject id")?;
            let code_len = usize::from(f.u16("reject code length")?);
            if code_len > MAX_CODE_BYTES {
                return Err(Corruption::BadBody("reject code length"));
            }
            let code = utf8(f.take(code_len, "reject code")?, "reject code")?;
            if f.rest.len() > MAX_MESSAGE_BYTES {
                return Err(Corruption::BadBody("reject message length"));
            }
            let message = utf8(f.rest, "reject message")?;
            f.rest = &[];
            Record::Reject { id, code, message }
        }
        _ => return Err(Corruption::BadBody("unknown kind")),
    };
    f.end()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, len: usize) -> Entry {
        Entry {
            id,
            format: if id % 2 == 0 {
                Format::Json
            } else {
                Format::Cbor
            },
            payload: (0..len).map(|i| (i as u8).wrapping_mul(31)).collect(),
        }
    }

    fn sample_records() -> Vec<Record> {
        vec![
            Record::Meta {
                last_id: Some(41),
                dropped_total: 3,
            },
            Record::Append(entry(42, 500)),
            Record::Append(entry(43, 0)),
            Record::Supersede { id: 42 },
            Record::Reject {
                id: 43,
                code: "InvalidPayload".into(),
                message: "Malformed metrics report".into(),
            },
            Record::Ack { id: 42 },
            Record::Drop { id: 43 },
            Record::Meta {
                last_id: None,
                dropped_total: 0,
            },
        ]
    }

    fn image(records: &[Record]) -> Vec<u8> {
        let mut out = file_header().to_vec();
        for r in records {
            encode(r, &mut out);
        }
        out
    }

    #[test]
    fn every_record_kind_round_trips() {
        let records = sample_records();
        let bytes = image(&records);
        let decoded = decode_all(&bytes);
        assert_eq!(decoded.records, records);
        assert_eq!(decoded.valid_len, bytes.len());
        assert_eq!(decoded.tail, None);
    }

    #[test]
    fn the_format_is_stored_as_its_one_byte_tag_and_an_unknown_tag_is_a_bad_body() {
        for (format, tag) in [(Format::Json, 0u8), (Format::Cbor, 1)] {
            let mut out = Vec::new();
            encode_append(
                &Entry {
                    id: 7,
                    format,
                    payload: b"x".to_vec(),
                },
                &mut out,
            );
            // frame header (8), kind (1), id (8), then the tag.
            assert_eq!(out[FRAME_HEADER_LEN + 1 + 8], tag);
        }
        let mut out = Vec::new();
        frame(&mut out, |b| {
            b.push(KIND_APPEND);
            b.extend_from_slice(&7u64.to_le_bytes());
            b.push(2);
        });
        assert_eq!(
            decode_frame(&out).map(|(r, _)| r),
            Err(Corruption::BadBody("append format"))
        );
    }

    #[test]
    fn encoded_len_matches_the_encoding() {
        for r in sample_records() {
            let mut out = Vec::new();
            encode(&r, &mut out);
            assert_eq!(out.len(), encoded_len(&r), "{r:?}");
        }
    }

    #[test]
    fn an_empty_image_is_a_valid_empty_file() {
        let decoded = decode_all(&[]);
        assert!(decoded.records.is_empty());
        assert_eq!((decoded.valid_len, decoded.tail), (0, None));
    }

    #[test]
    fn a_torn_tail_at_every_offset_of_the_last_record_is_cut_and_the_rest_survives() {
        let records = sample_records();
        let whole = image(&records);
        let before_last = image(&records[..records.len() - 1]);
        // Also the last Append, a bigger frame, in a second image.
        let appends = vec![Record::Append(entry(1, 100)), Record::Append(entry(2, 300))];
        let whole2 = image(&appends);
        let before2 = image(&appends[..1]);
        for (whole, before, n) in [(&whole, &before_last, 7), (&whole2, &before2, 1)] {
            for cut in before.len()..whole.len() {
                let decoded = decode_all(&whole[..cut]);
                assert_eq!(decoded.records, records_prefix(whole, n), "cut at {cut}");
                assert_eq!(decoded.valid_len, before.len(), "cut at {cut}");
                let expected_tail = (cut > before.len()).then_some(CorruptTail {
                    offset: before.len() as u64,
                    len: (cut - before.len()) as u64,
                    reason: Corruption::Torn,
                });
                assert_eq!(decoded.tail, expected_tail, "cut at {cut}");
            }
        }
    }

    fn records_prefix(bytes: &[u8], n: usize) -> Vec<Record> {
        decode_all(bytes).records[..n].to_vec()
    }

    #[test]
    fn a_torn_file_header_is_a_torn_tail_at_offset_zero() {
        let header = file_header();
        for cut in 1..FILE_HEADER_LEN {
            let decoded = decode_all(&header[..cut]);
            assert_eq!(decoded.valid_len, 0);
            assert_eq!(decoded.tail.map(|t| t.reason), Some(Corruption::Torn));
        }
    }

    #[test]
    fn a_foreign_file_has_bad_magic_and_a_newer_version_is_named() {
        assert_eq!(
            decode_all(b"{\"json\": true}").tail.map(|t| t.reason),
            Some(Corruption::BadMagic)
        );
        let mut newer = image(&sample_records());
        newer[7] = 2;
        let decoded = decode_all(&newer);
        assert_eq!(
            decoded.tail.map(|t| (t.offset, t.reason)),
            Some((0, Corruption::UnsupportedVersion(2)))
        );
        assert!(decoded.records.is_empty());
    }

    #[test]
    fn a_flipped_bit_anywhere_costs_only_the_record_it_hits() {
        // Regression, issue 16 defect 8: one damaged byte used to cut every later record.
        let records = sample_records();
        let bytes = image(&records);
        let mut starts = vec![FILE_HEADER_LEN];
        for r in &records {
            let last = *starts.last().unwrap_or(&0);
            starts.push(last + encoded_len(r));
        }
        for pos in 0..bytes.len() {
            if pos == MAGIC.len() {
                continue; // the version byte: a newer version is refused, see below
            }
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[pos] ^= 1 << bit;
                let decoded = decode_all(&damaged);
                let mut expected = records.clone();
                let hit = starts.iter().rposition(|&s| s <= pos);
                if pos >= FILE_HEADER_LEN {
                    expected.remove(hit.unwrap_or(0));
                }
                assert_eq!(decoded.records, expected, "byte {pos} bit {bit}");
                let offset = if pos < FILE_HEADER_LEN {
                    0
                } else {
                    starts[hit.unwrap_or(0)]
                };
                assert_eq!(decoded.valid_len, offset, "byte {pos} bit {bit}");
                assert_eq!(decoded.tail.map(|t| t.offset), Some(offset as u64));
                let after = match hit {
                    Some(k) if pos >= FILE_HEADER_LEN => records.len() - k - 1,
                    _ => records.len(),
                };
                assert_eq!(decoded.resynced, after, "byte {pos} bit {bit}");
            }
        }
    }

    #[test]
    fn garbage_between_records_is_skipped_and_counted() {
        let records = sample_records();
        let clean = image(&records);
        let cut = FILE_HEADER_LEN + encoded_len(&records[0]);
        let mut bytes = clean[..cut].to_vec();
        bytes.extend_from_slice(&[0xA5; 37]);
        bytes.extend_from_slice(&clean[cut..]);
        let decoded = decode_all(&bytes);
        assert_eq!(decoded.records, records);
        assert_eq!((decoded.valid_len, decoded.skipped), (cut, 37));
        assert_eq!(decoded.resynced, records.len() - 1);
        // A truncated file keeps everything before the cut; nothing follows it.
        let decoded = decode_all(&clean[..clean.len() - 3]);
        assert_eq!(decoded.records, records[..records.len() - 1]);
        assert_eq!(
            (decoded.resynced, decoded.skipped),
            (0, decoded.tail.unwrap().len)
        );
    }

    #[test]
    fn an_absurd_length_field_is_refused_without_allocating() {
        let mut bytes = file_header().to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 4]);
        bytes.extend_from_slice(&[1u8; 16]);
        let decoded = decode_all(&bytes);
        assert_eq!(
            decoded.tail.map(|t| t.reason),
            Some(Corruption::LengthOutOfRange(u32::MAX))
        );
        // A length within range but beyond the data is a torn write, not an allocation.
        let mut bytes = file_header().to_vec();
        bytes.extend_from_slice(&(MAX_BODY_BYTES as u32).to_le_bytes());
        bytes.extend_from_slice(&[0u8; 4]);
        assert_eq!(
            decode_all(&bytes).tail.map(|t| t.reason),
            Some(Corruption::Torn)
        );
    }

    #[test]
    fn zero_filled_space_after_a_crash_is_a_corrupt_tail() {
        // Some filesystems extend a file with zeros when a crash beats the data to disk.
        let mut bytes = image(&sample_records());
        let valid = bytes.len();
        bytes.extend_from_slice(&[0u8; 4096]);
        let decoded = decode_all(&bytes);
        assert_eq!(decoded.valid_len, valid);
        assert_eq!(
            decoded.tail.map(|t| t.reason),
            Some(Corruption::LengthOutOfRange(0))
        );
    }

    #[test]
    fn a_well_checksummed_body_that_does_not_parse_is_corrupt() {
        let mut out = file_header().to_vec();
        frame(&mut out, |b| b.push(99));
        frame(&mut out, |b| {
            b.push(KIND_ACK);
            b.extend_from_slice(&[1, 2, 3]);
        });
        assert_eq!(
            decode_all(&out).tail.map(|t| t.reason),
            Some(Corruption::BadBody("unknown kind"))
        );
        let mut out = file_header().to_vec();
        frame(&mut out, |b| {
            b.push(KIND_ACK);
            b.extend_from_slice(&[1u8; 9]);
        });
        assert_eq!(
            decode_all(&out).tail.map(|t| t.reason),
            Some(Corruption::BadBody("trailing bytes"))
        );
    }

    #[test]
    fn rejection_texts_are_cut_at_a_character_boundary() {
        let long = "é".repeat(2000);
        let mut out = file_header().to_vec();
        encode_reject(7, &long, &long, &mut out);
        let decoded = decode_all(&out);
        let Some(Record::Reject { code, message, .. }) = decoded.records.first() else {
            panic!("expected a reject record, got {decoded:?}");
        };
        assert_eq!(code.len(), MAX_CODE_BYTES);
        assert_eq!(message.len(), MAX_MESSAGE_BYTES);
        assert!(code.chars().all(|c| c == 'é'));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_the_valid_prefix_is_consistent(
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            with_header in proptest::bool::ANY,
        ) {
            let mut bytes = if with_header { image(&sample_records()[..2]) } else { Vec::new() };
            bytes.extend_from_slice(&tail);
            let decoded = decode_all(&bytes);
            proptest::prop_assert!(decoded.valid_len <= bytes.len());
            let again = decode_all(&bytes[..decoded.valid_len]);
            let prefix = &decoded.records[..decoded.records.len() - decoded.resynced];
            proptest::prop_assert_eq!(&again.records[..], prefix);
            proptest::prop_assert_eq!(again.tail, None);
        }

        #[test]
        fn a_flip_or_a_cut_anywhere_in_real_records_costs_only_what_it_touches(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 1..12),
            at in proptest::num::usize::ANY,
            bit in 0u8..8,
            cut in proptest::num::usize::ANY,
        ) {
            // Regression, issue 16 defect 8 (flip, truncate): the records not touched survive.
            let records: Vec<Record> = payloads
                .into_iter()
                .enumerate()
                .map(|(i, p)| Record::Append(Entry { id: i as u64 + 1, format: Format::Json, payload: p }))
                .collect();
            let bytes = image(&records);
            let mut starts = vec![FILE_HEADER_LEN];
            for r in &records {
                let last = *starts.last().unwrap_or(&0);
                starts.push(last + encoded_len(r));
            }
            let at = FILE_HEADER_LEN + at % (bytes.len() - FILE_HEADER_LEN);
            let mut flipped = bytes.clone();
            flipped[at] ^= 1 << bit;
            let hit = starts.iter().rposition(|&s| s <= at).unwrap_or(0);
            let mut expected = records.clone();
            expected.remove(hit);
            proptest::prop_assert_eq!(decode_all(&flipped).records, expected);
            let cut = cut % (bytes.len() + 1);
            let whole = starts.iter().filter(|&&s| s <= cut).count().saturating_sub(1);
            let decoded = decode_all(&bytes[..cut]);
            if cut >= FILE_HEADER_LEN {
                proptest::prop_assert_eq!(&decoded.records[..], &records[..whole]);
            } else {
                proptest::prop_assert!(decoded.records.is_empty());
            }
        }
    }
}

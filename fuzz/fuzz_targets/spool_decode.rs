//! `spool::record::decode_all` and `check_file_header` on arbitrary file images (torn, corrupt,
//! hostile): never panic; the valid prefix is exactly the re-encoding of its records; every byte
//! is in the header, a decoded record or the skipped count; and the same image with one byte
//! flipped (chosen by the data) loses at most the records that byte touched.
#![no_main]

use defender_agent::spool::record::{
    check_file_header, decode_all, encode, encoded_len, file_header, FILE_HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header_ok = check_file_header(data).is_ok();
    let decoded = decode_all(data);
    assert!(decoded.valid_len <= data.len());
    match decoded.tail {
        Some(tail) => {
            assert_eq!(tail.offset, decoded.valid_len as u64);
            assert_eq!(tail.offset + tail.len, data.len() as u64);
        }
        None => {
            assert_eq!(decoded.valid_len, data.len());
            assert_eq!((decoded.skipped, decoded.resynced), (0, 0));
        }
    }
    // Every byte is accounted for: header, a record's frame, or skipped.
    let framed: usize = decoded.records.iter().map(encoded_len).sum();
    let header = if header_ok { FILE_HEADER_LEN } else { 0 };
    assert_eq!(
        (header + framed) as u64 + decoded.skipped,
        data.len() as u64,
        "bytes unaccounted for"
    );
    let prefix = &decoded.records[..decoded.records.len() - decoded.resynced];
    if decoded.valid_len == 0 {
        assert!(prefix.is_empty());
        return;
    }
    // encode ∘ decode reproduces the valid prefix byte for byte, and decodes to the same records.
    let mut image = file_header().to_vec();
    for r in prefix {
        encode(r, &mut image);
    }
    assert_eq!(
        &image[..],
        &data[..decoded.valid_len],
        "re-encoding differs"
    );
    let again = decode_all(&image);
    assert_eq!(again.records, prefix);
    assert_eq!(again.tail, None);
    // Re-encode every record and flip one byte: only the record it hits is lost.
    let mut whole = file_header().to_vec();
    let mut starts = Vec::new();
    for r in &decoded.records {
        starts.push(whole.len());
        encode(r, &mut whole);
    }
    if whole.len() > FILE_HEADER_LEN && data.len() >= 3 {
        let selector = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let at = FILE_HEADER_LEN + selector % (whole.len() - FILE_HEADER_LEN);
        let bit = data[2] % 8;
        whole[at] ^= 1 << bit;
        let hit = starts.iter().rposition(|&s| s <= at).unwrap_or(0);
        let damaged = decode_all(&whole);
        let mut expected = decoded.records.clone();
        expected.remove(hit);
        assert_eq!(damaged.records, expected, "a flip cost more than its record");
    }
});

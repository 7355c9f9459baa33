//! `spool::record::decode_all` and `check_file_header` on arbitrary file images (torn, corrupt,
//! hostile): never panic; the valid prefix is exactly the re-encoding of the decoded records; the
//! tail accounts for every other byte.
#![no_main]

use defender_agent::spool::record::{check_file_header, decode_all, encode, file_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = check_file_header(data);
    let decoded = decode_all(data);
    assert!(decoded.valid_len <= data.len());
    match decoded.tail {
        Some(tail) => {
            assert_eq!(tail.offset, decoded.valid_len as u64);
            assert_eq!(tail.offset + tail.len, data.len() as u64);
        }
        None => assert_eq!(decoded.valid_len, data.len()),
    }
    if decoded.valid_len == 0 {
        assert!(decoded.records.is_empty());
        return;
    }
    // encode ∘ decode reproduces the valid prefix byte for byte, and decodes to the same records.
    let mut image = file_header().to_vec();
    for r in &decoded.records {
        encode(r, &mut image);
    }
    assert_eq!(
        &image[..],
        &data[..decoded.valid_len],
        "re-encoding differs"
    );
    let again = decode_all(&image);
    assert_eq!(again.records, decoded.records);
    assert_eq!(again.tail, None);
});

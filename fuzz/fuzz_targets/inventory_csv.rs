//! An inventory's gzip CSV data file as `--inventory` reads it: the input as the
//! compressed file itself, and as the text of one (wrapped here in a gzip member of
//! stored blocks, so that mutations reach the CSV reader). Nothing may panic, and no
//! row may carry a key longer than the reader's record limit.
#![no_main]

use barge::inventory::{MAX_CSV_RECORD, parse_csv};
use libfuzzer_sys::fuzz_target;

/// The schema AWS writes for a versioned CSV inventory.
const SCHEMA: &str =
    "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag";

fuzz_target!(|data: &[u8]| {
    let mut check = |row: barge::inventory::Row| {
        assert!(row.key.len() <= MAX_CSV_RECORD);
        true
    };
    let _ = parse_csv(data, SCHEMA, "b", &mut check);
    let _ = parse_csv(&stored_gzip(data), SCHEMA, "b", &mut check);
});

/// `text` as one gzip member of stored (uncompressed) deflate blocks.
fn stored_gzip(text: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut blocks = text.chunks(0xffff).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(b) = blocks.next() {
        let last = u8::from(blocks.peek().is_none());
        let n = b.len() as u16;
        out.push(last);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(b);
    }
    out.extend_from_slice(&crc32(text).to_le_bytes());
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE), bit by bit: inputs are small.
fn crc32(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

//! Catalog values as RocksDB hands them back: versioned postcard records, the fixed
//! chunk record, merge operands. A corrupt value must be an error naming it, never a
//! panic; the merge operator must accept any operand bytes.
#![no_main]

use barge::catalog::records::{decode, merge_chunk};
use barge::catalog::{
    ChunkRecord, Landed, ObjectRecord, PassRecord, RunRecord, SampleRecord, SegmentRecord,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let what = "fuzz input";
    let _ = decode::<ObjectRecord>(&what, data);
    let _ = decode::<SegmentRecord>(&what, data);
    let _ = decode::<RunRecord>(&what, data);
    let _ = decode::<SampleRecord>(&what, data);
    let _ = decode::<PassRecord>(&what, data);
    let _ = decode::<Landed>(&what, data);
    if let Ok(c) = ChunkRecord::decode(data) {
        assert_eq!(ChunkRecord::decode(&c.encode()).ok(), Some(c));
    }
    // The first byte splits the rest into an existing value and operands.
    if let Some((&cut, rest)) = data.split_first() {
        let cut = (cut as usize).min(rest.len());
        let (existing, ops) = rest.split_at(cut);
        let ops: Vec<&[u8]> = ops.chunks(25).collect();
        let merged = merge_chunk(Some(existing), ops.iter().copied());
        assert!(ChunkRecord::decode(&merged).is_ok());
    }
});

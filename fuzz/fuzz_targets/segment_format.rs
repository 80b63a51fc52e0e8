//! Segment file structures read back from staging drives (possibly rotten, possibly a
//! shipped drive from elsewhere): header, record header, index, trailer. Decoding must
//! never panic, and whatever decodes must encode back to the same bytes.
#![no_main]

use barge::staging::format::{IndexEntry, RecordHeader, SegmentHeader, Trailer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = SegmentHeader::decode(data) {
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
    }
    if let Ok(r) = RecordHeader::decode(data) {
        assert_eq!(RecordHeader::decode(&r.encode()), Ok(r));
        let _ = r.record_len();
    }
    if let Ok(entries) = IndexEntry::decode_all(data) {
        let mut out = vec![];
        for e in &entries {
            e.encode(&mut out);
        }
        assert_eq!(IndexEntry::decode_all(&out), Ok(entries));
    }
    if let Ok(t) = Trailer::decode(data) {
        assert_eq!(Trailer::decode(&t.encode()), Ok(t));
    }
});

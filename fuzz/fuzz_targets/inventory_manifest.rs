//! An S3 Inventory's `manifest.json` as `--inventory` reads it (from a bucket anyone
//! who can write to it controls): nothing may panic, and a manifest that parses names
//! a format barge reads.
#![no_main]

use barge::inventory::parse_manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_manifest(data, "fuzz") {
        let f = m.file_format.to_ascii_lowercase();
        assert!(f == "csv" || f == "parquet", "{f}");
    }
});

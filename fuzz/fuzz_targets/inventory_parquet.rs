//! An inventory's Parquet data file as `--inventory` reads it, with sizes in its footer
//! and page headers that may lie: nothing may panic or allocate far beyond the input
//! (libFuzzer's RSS and malloc limits catch that).
#![no_main]

use barge::inventory::parse_parquet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_parquet(data.to_vec(), &mut |_| true);
});

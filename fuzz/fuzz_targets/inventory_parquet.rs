//! An inventory's Parquet data file as `--inventory` reads it, with sizes in its footer
//! and page headers that may lie: nothing may panic or allocate far beyond the input
//! (libFuzzer's RSS and malloc limits catch that).
#![no_main]

use barge::inventory::parse_parquet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys's panic hook aborts on every panic, even one barge catches: the
    // parquet crate asserts on some malformed pages and `parse_parquet` turns that into
    // an error. A panic nobody catches still reaches libfuzzer-sys's guard and aborts.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let _ = parse_parquet(data.to_vec(), &mut |_| true);
});

//! Strings that come from the operator or from a server: S3 and Swift URLs, the
//! container-sharding option, ETags (single-part, multipart, garbage). Never a panic.
#![no_main]

use barge::backend::check::ContentCheck;
use barge::backend::swift::ContainerMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = barge::backend::s3::parse_url(s);
    let _ = barge::backend::swift::parse_url(s);
    let _ = ContainerMap::parse("c", Some(s));
    let mid = (0..=s.len() / 2)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    let (a, b) = s.split_at(mid);
    if let Ok(m) = ContainerMap::parse(a, Some(b)) {
        let _ = m.container_of(b);
    }
    let _ = ContentCheck::from_etag(s, None);
    let _ = ContentCheck::from_etag(s, Some(5 << 20));
});

//! What `barge import` reads from a drive that arrived from elsewhere (damaged, tampered
//! or not a barge drive at all): superblock copies, the encrypted manifest's header and
//! body, and the unlock code an operator types. Nothing may panic; a superblock that
//! decodes must encode back to the same fields.
#![no_main]

use barge::ship::UnlockCode;
use barge::ship::manifest;
use barge::staging::device::Superblock;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = Superblock::decode(data) {
        assert_eq!(Superblock::decode(&sb.encode()), Ok(sb.clone()));
        let _ = sb.manifest_slots();
        let _ = sb.slot_of(data.len() as u64);
        if let Ok((off, len)) = sb.manifest_region(data.len() as u64) {
            assert!(
                off.checked_add(len as u64)
                    .is_some_and(|e| e <= sb.device_size)
            );
            assert!(len as u64 <= barge::staging::device::MAX_MANIFEST_LEN);
        }
    }
    let _ = manifest::open(data, &[7; 32], &[1; 16], &[2; 16], 0);
    let _ = manifest::decode_plain(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = UnlockCode::parse(text);
    }
});

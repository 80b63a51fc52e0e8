//! The aws-lc-rs hot path and the aes-gcm reference are interchangeable: each opens what
//! the other sealed, for every record size class, and both refuse tampering.

use barge::crypto::seal::{aad, nonce};
use barge::crypto::{ChunkId, SealBackend, SegmentCipher};
use barge::sample::Filler;

#[test]
fn each_backend_opens_what_the_other_sealed() {
    let mut f = Filler::new(77);
    let key: [u8; 32] = f.bytes(32).try_into().unwrap();
    let ref_c = SegmentCipher::new(SealBackend::RustCrypto, &key);
    let lc_c = SegmentCipher::new(SealBackend::AwsLc, &key);
    for (i, len) in [0usize, 1, 15, 16, 17, 4096, 65_537, 2 << 20]
        .into_iter()
        .enumerate()
    {
        let plain = f.bytes(len);
        let id = ChunkId(f.bytes(32).try_into().unwrap());
        let off = 4096 + i as u64 * 1_000_003;
        let a = aad(&id, 42, off);
        for (sealer, opener) in [(&ref_c, &lc_c), (&lc_c, &ref_c)] {
            let mut buf = plain.clone();
            sealer.seal(nonce(off), &a, &mut buf).unwrap();
            assert_eq!(buf.len(), len + 16);
            if len > 0 {
                assert_ne!(
                    &buf[..len.min(64)],
                    &plain[..len.min(64)],
                    "ciphertext differs from plaintext"
                );
            }
            let mut opened = buf.clone();
            let n = opener.open(nonce(off), &a, &mut opened).unwrap();
            assert_eq!(&opened[..n], &plain[..]);
            // Wrong segment in the AAD, or a flipped bit: refused by both.
            let mut wrong = buf.clone();
            assert!(
                opener
                    .open(nonce(off), &aad(&id, 43, off), &mut wrong)
                    .is_err()
            );
            let mut flipped = buf.clone();
            let k = flipped.len() / 2;
            flipped[k] ^= 1;
            assert!(opener.open(nonce(off), &a, &mut flipped).is_err());
        }
        // Both produce the same ciphertext for the same inputs (same algorithm, same nonce).
        let (mut x, mut y) = (plain.clone(), plain.clone());
        ref_c.seal(nonce(off), &a, &mut x).unwrap();
        lc_c.seal(nonce(off), &a, &mut y).unwrap();
        assert_eq!(x, y);
    }
}

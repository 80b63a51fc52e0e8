//! AES-256-GCM sealing of staged chunks, with two interchangeable backends.
//!
//! * [`SealBackend::RustCrypto`]: the `aes-gcm` crate, the reference implementation.
//! * [`SealBackend::AwsLc`]: aws-lc-rs (AWS-LC's assembly, VAES/AVX-512 where the CPU has
//!   it). Used on the hot path; `tests/crypto_interop.rs` proves each backend opens what
//!   the other sealed.
//!
//! Nonce: the record's byte offset inside its segment (u64 LE) followed by four zero
//! bytes. Records never overlap and a segment key is used for one segment only, so a
//! (key, nonce) pair never repeats. AAD binds the record to its place: see [`aad`].

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aws_lc_rs::aead as lc;

use crate::crypto::ChunkId;

/// GCM tag length appended to every sealed chunk.
pub const TAG_LEN: usize = 16;
/// Prefix of the AAD; bump with the segment format version.
pub const AAD_DOMAIN: &[u8; 8] = b"BARGEv1\0";
/// Length of [`aad`]'s output.
pub const AAD_LEN: usize = 8 + 32 + 8 + 8;

/// Which AES-256-GCM implementation seals and opens.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum SealBackend {
    /// aes-gcm crate (RustCrypto), the reference.
    RustCrypto,
    /// aws-lc-rs, the fastest on x86-64 with VAES.
    #[default]
    AwsLc,
}

/// Additional authenticated data: domain ‖ chunk id ‖ segment id ‖ record offset.
pub fn aad(chunk: &ChunkId, segment_id: u64, offset: u64) -> [u8; AAD_LEN] {
    let mut a = [0u8; AAD_LEN];
    a[..8].copy_from_slice(AAD_DOMAIN);
    a[8..40].copy_from_slice(&chunk.0);
    a[40..48].copy_from_slice(&segment_id.to_le_bytes());
    a[48..56].copy_from_slice(&offset.to_le_bytes());
    a
}

/// The nonce for the record at `offset` of a segment.
pub fn nonce(offset: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&offset.to_le_bytes());
    n
}

/// A segment's cipher, keyed once per segment.
pub enum SegmentCipher {
    RustCrypto(Box<aes_gcm::Aes256Gcm>),
    AwsLc(lc::LessSafeKey),
}

/// Sealing or opening failed (for open: the tag did not verify).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealError;

impl SegmentCipher {
    pub fn new(backend: SealBackend, key: &[u8; 32]) -> Self {
        match backend {
            SealBackend::RustCrypto => {
                SegmentCipher::RustCrypto(Box::new(aes_gcm::Aes256Gcm::new(key.into())))
            }
            SealBackend::AwsLc => {
                // A 32-byte key is always valid for AES-256-GCM.
                let unbound = lc::UnboundKey::new(&lc::AES_256_GCM, key)
                    .expect("32-byte key is valid for AES-256-GCM");
                SegmentCipher::AwsLc(lc::LessSafeKey::new(unbound))
            }
        }
    }

    /// Encrypts `buf` in place and appends the tag.
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> Result<(), SealError> {
        let tag = self.seal_detached(nonce, aad, buf)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Encrypts `buf` in place and returns the tag, which belongs right after the
    /// ciphertext (the staging writer appends both to the segment, so a chunk needs no
    /// spare room for its tag).
    pub fn seal_detached(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SealError> {
        match self {
            SegmentCipher::RustCrypto(c) => c
                .encrypt_in_place_detached((&nonce).into(), aad, buf)
                .map(|t| t.into())
                .map_err(|_| SealError),
            SegmentCipher::AwsLc(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        lc::Nonce::assume_unique_for_key(nonce),
                        lc::Aad::from(aad),
                        buf,
                    )
                    .map_err(|_| SealError)?;
                tag.as_ref().try_into().map_err(|_| SealError)
            }
        }
    }

    /// Verifies the tag and decrypts `buf` (ciphertext ‖ tag) in place; returns the
    /// plaintext length (the plaintext is `buf[..len]`).
    pub fn open(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<usize, SealError> {
        let Some(ct_len) = buf.len().checked_sub(TAG_LEN) else {
            return Err(SealError);
        };
        match self {
            SegmentCipher::RustCrypto(c) => {
                let (ct, tag) = buf.split_at_mut(ct_len);
                let tag = aes_gcm::Tag::clone_from_slice(tag);
                c.decrypt_in_place_detached((&nonce).into(), aad, ct, &tag)
                    .map_err(|_| SealError)?;
                Ok(ct_len)
            }
            SegmentCipher::AwsLc(k) => Ok(k
                .open_in_place(
                    lc::Nonce::assume_unique_for_key(nonce),
                    lc::Aad::from(aad),
                    buf,
                )
                .map_err(|_| SealError)?
                .len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tamper_is_detected_by_both_backends() {
        let key = [7u8; 32];
        let id = ChunkId([1; 32]);
        for b in [SealBackend::RustCrypto, SealBackend::AwsLc] {
            let c = SegmentCipher::new(b, &key);
            let mut buf = b"hello staging".to_vec();
            c.seal(nonce(4096), &aad(&id, 9, 4096), &mut buf).unwrap();
            assert_eq!(buf.len(), 13 + TAG_LEN);
            let mut ok = buf.clone();
            assert_eq!(c.open(nonce(4096), &aad(&id, 9, 4096), &mut ok), Ok(13));
            assert_eq!(&ok[..13], b"hello staging");
            let mut moved = buf.clone();
            // Same bytes opened as if they lived at another offset: refused.
            assert!(c.open(nonce(4096), &aad(&id, 9, 8192), &mut moved).is_err());
            buf[3] ^= 1;
            assert!(c.open(nonce(4096), &aad(&id, 9, 4096), &mut buf).is_err());
        }
    }
}

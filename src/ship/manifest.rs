//! The manifest a sealed drive carries: the catalog slice its segments serve, its
//! segment list with checksums, and the set's membership. Stored encrypted and
//! authenticated (AES-256-GCM under the set's manifest key) in free slots of the drive.
//!
//! ```text
//! "BARGEMAN" | version u16 LE | nonce [12] | sealed length u64 LE | sealed postcard(Manifest)
//! ```
//! The associated data is the 30-byte header plus the set id, drive id and drive index,
//! so a manifest moved to another drive (or set) does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use serde::{Deserialize, Serialize};

use crate::catalog::{ObjectRecord, SegmentRecord};
use crate::chunker::ChunkParams;
use crate::crypto::{ChunkId, random_bytes};
use crate::staging::StagingSettings;
use crate::staging::set::Member;

/// Magic of an encrypted manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"BARGEMAN";
/// Manifest format version (header and the postcard layout of [`Manifest`]).
pub const MANIFEST_FORMAT_VERSION: u16 = 1;
/// Header bytes before the sealed body.
pub const MANIFEST_HEADER_LEN: usize = 8 + 2 + 12 + 8;

/// What one drive of a sealed set knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub set_id: [u8; 16],
    pub appliance_id: [u8; 16],
    pub drive_id: [u8; 16],
    pub index: u32,
    pub sealed_at: u64,
    /// Every drive of the set.
    pub members: Vec<Member>,
    /// Settings the destination must reuse (chunk ids and cut points depend on them).
    pub chunk_params: ChunkParams,
    pub staging: StagingSettings,
    /// Segments on this drive (id, record as at the source; `base` is the slot).
    pub segments: Vec<(u64, SegmentRecord)>,
    /// Chunks in those segments (id, encoded `ChunkRecord`).
    pub chunks: Vec<(ChunkId, Vec<u8>)>,
    /// Objects with at least one chunk on this drive (empty objects go with drive 0).
    pub objects: Vec<(Vec<u8>, ObjectRecord)>,
    /// Every object of the set: key, size, source version. Lets any drive tell what is
    /// missing when another drive is.
    pub index_of_set: Vec<(Vec<u8>, u64, String)>,
}

fn aad(header: &[u8], set_id: &[u8; 16], drive_id: &[u8; 16], index: u32) -> Vec<u8> {
    [header, set_id, drive_id, &index.to_le_bytes()].concat()
}

/// Encrypts a manifest into its on-disk form.
pub fn seal(m: &Manifest, key: &[u8; 32]) -> Result<Vec<u8>, String> {
    let body = postcard::to_allocvec(m).map_err(|e| format!("encoding manifest: {e}"))?;
    let nonce: [u8; 12] = random_bytes();
    let sealed_len = (body.len() + 16) as u64;
    let mut out = Vec::with_capacity(MANIFEST_HEADER_LEN + body.len() + 16);
    out.extend_from_slice(&MANIFEST_MAGIC);
    out.extend_from_slice(&MANIFEST_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed_len.to_le_bytes());
    let cipher = aes_gcm::Aes256Gcm::new(key.into());
    let ct = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: &body,
                aad: &aad(&out, &m.set_id, &m.drive_id, m.index),
            },
        )
        .map_err(|_| "sealing manifest failed".to_string())?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Checks and decrypts a manifest read from drive `drive_id` (position `index`) of set
/// `set_id`. Every failure says what is wrong, for the operator.
pub fn open(
    bytes: &[u8],
    key: &[u8; 32],
    set_id: &[u8; 16],
    drive_id: &[u8; 16],
    index: u32,
) -> Result<Manifest, ManifestError> {
    if bytes.len() < MANIFEST_HEADER_LEN || bytes[..8] != MANIFEST_MAGIC {
        return Err(ManifestError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != MANIFEST_FORMAT_VERSION {
        return Err(ManifestError::Version(version));
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&bytes[10..22]);
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[22..30]);
    let len = u64::from_le_bytes(len8);
    let body = &bytes[MANIFEST_HEADER_LEN..];
    if len != body.len() as u64 {
        return Err(ManifestError::Length {
            said: len,
            read: body.len(),
        });
    }
    let cipher = aes_gcm::Aes256Gcm::new(key.into());
    let pt = cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: body,
                aad: &aad(&bytes[..MANIFEST_HEADER_LEN], set_id, drive_id, index),
            },
        )
        .map_err(|_| ManifestError::Authentication)?;
    let m = decode_plain(&pt)?;
    if m.set_id != *set_id || m.drive_id != *drive_id || m.index != index {
        return Err(ManifestError::OtherDrive);
    }
    Ok(m)
}

/// Decodes an opened (decrypted, authenticated) manifest body.
pub fn decode_plain(b: &[u8]) -> Result<Manifest, ManifestError> {
    postcard::from_bytes(b).map_err(|e| ManifestError::Decode(e.to_string()))
}

/// Why a drive's manifest cannot be used; each says what is wrong, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest header is damaged (bad magic)")]
    BadMagic,
    #[error(
        "manifest format version {0}, this barge reads {MANIFEST_FORMAT_VERSION} (or the header is damaged)"
    )]
    Version(u16),
    #[error("manifest length field says {said} bytes, {read} were read (damaged header)")]
    Length { said: u64, read: usize },
    #[error("manifest fails authentication: it was altered or damaged after sealing")]
    Authentication,
    /// The body authenticated but is not a manifest of this version (postcard's reason).
    #[error("manifest does not decode: {0}")]
    Decode(String),
    #[error("manifest belongs to another drive")]
    OtherDrive,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            set_id: [1; 16],
            appliance_id: [2; 16],
            drive_id: [3; 16],
            index: 1,
            sealed_at: 5,
            members: vec![],
            chunk_params: ChunkParams::default(),
            staging: StagingSettings::default(),
            segments: vec![],
            chunks: vec![(ChunkId([7; 32]), vec![1, 2, 3])],
            objects: vec![],
            index_of_set: vec![(MARKER.to_vec(), 9, "v".into())],
        }
    }

    /// An object key long enough that finding it in ciphertext means a leak.
    const MARKER: &[u8] = b"plaintext-object-key-marker-0042";

    #[test]
    fn manifest_opens_only_intact_on_its_drive() {
        let m = sample();
        let key = [9u8; 32];
        let b = seal(&m, &key).unwrap();
        assert_eq!(open(&b, &key, &[1; 16], &[3; 16], 1).unwrap(), m);
        for i in [0, 9, 12, 25, 40, b.len() - 1] {
            let mut bad = b.clone();
            bad[i] ^= 0x10;
            assert!(open(&bad, &key, &[1; 16], &[3; 16], 1).is_err(), "flip {i}");
        }
        assert!(open(&b, &key, &[1; 16], &[4; 16], 1).is_err());
        assert!(open(&b, &key, &[1; 16], &[3; 16], 2).is_err());
        assert!(open(&b, &[8; 32], &[1; 16], &[3; 16], 1).is_err());
        // No plaintext of the manifest in its sealed form: a 32-byte key
        // cannot appear in ciphertext by chance (a short one could).
        assert!(!b.windows(MARKER.len()).any(|w| w == MARKER));
    }
}

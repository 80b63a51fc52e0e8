//! Key material and the two cryptographic primitives of staging: keyed chunk ids
//! (BLAKE3) and AES-256-GCM sealing (see [`seal`]).
//!
//! Key hierarchy (all derivations are BLAKE3 `derive_key` with a fixed context string):
//!
//! ```text
//! master key (32 B: random from `barge init`, or argon2id(passphrase, salt))
//!  ├─ chunk-id key   = derive_key(CTX_CHUNK_ID, master)
//!  ├─ key check      = derive_key(CTX_KEY_CHECK, master)       (stored, proves the key)
//!  └─ segment key(s) = derive_key(CTX_SEGMENT, master ‖ segment id ‖ segment salt)
//! ```
//! The master key never leaves the state directory and is never logged ([`MasterKey`]'s
//! `Debug` prints a fingerprint only).

pub mod keys;
pub mod seal;

pub use keys::{KeyOrigin, MasterKey};
pub use seal::{SealBackend, SegmentCipher, TAG_LEN};

/// Context for the chunk-id key. Changing it changes every chunk id: bump the catalog
/// format version if you do.
pub const CTX_CHUNK_ID: &str = "barge 2026-11 chunk-id key v1";
/// Context for the value stored in `keys/key.json` that proves a key is the right one.
pub const CTX_KEY_CHECK: &str = "barge 2026-11 key check v1";
/// Context for per-segment sealing keys.
pub const CTX_SEGMENT: &str = "barge 2026-11 segment key v1";

/// Content address of a chunk: keyed BLAKE3 of its plaintext. Without the key an id says
/// nothing about the content, so ids may appear on shipped drives.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex()[..16])
    }
}

/// Computes chunk ids under the appliance's chunk-id key.
#[derive(Clone)]
pub struct ChunkHasher {
    key: [u8; 32],
}

impl ChunkHasher {
    pub fn new(master: &MasterKey) -> Self {
        ChunkHasher {
            key: blake3::derive_key(CTX_CHUNK_ID, master.expose()),
        }
    }

    /// The id of a chunk with this plaintext.
    pub fn id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.key, plaintext).as_bytes())
    }
}

/// The sealing key of one segment. The random per-segment salt makes keys distinct even
/// if a segment id were ever reused, so a (key, nonce) pair can never repeat.
pub fn segment_key(master: &MasterKey, segment_id: u64, salt: &[u8; 16]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CTX_SEGMENT);
    h.update(master.expose());
    h.update(&segment_id.to_le_bytes());
    h.update(salt);
    *h.finalize().as_bytes()
}

/// Fills a buffer from the OS random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // getrandom only fails when the OS has no entropy source at all; there is no safe
    // way to continue without one.
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    b
}

//! The plaintext of the small chunks staged last, for a drain running in the same
//! process (`barge migrate`). The drain follows the ingest closely: most objects are
//! written out milliseconds after they were staged, and reading each of their chunks
//! back from the drive (a hand-off to the read thread, an O_DIRECT read, a catalog
//! lookup and a GCM open) cost more than everything else the drain does for a small
//! object. A chunk found here is the plaintext that was sealed, by the same process;
//! the drain still checks the rebuilt object against its BLAKE3 before it is kept.
//!
//! Bounded by bytes, oldest first out; a chunk not found here is read from the drive as
//! before.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use crate::crypto::ChunkId;

/// Plaintext bytes kept at most. A migrate's drain trails its ingest by a few hundred
/// objects (its queue and workers), a few MiB of small objects.
pub const RECENT_BYTES: usize = 16 << 20;
/// Chunks larger than this are not kept: their cost is their bytes, which a drive read
/// delivers as fast, and a few of them would push the small ones out.
pub const RECENT_CHUNK_MAX: usize = 256 << 10;

/// Recently staged chunks by id (see the module doc). Shared by the stager, which adds
/// each new chunk before sealing it, and the drain's chunk reader.
#[derive(Debug, Default)]
pub struct RecentChunks {
    inner: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    map: HashMap<ChunkId, Bytes>,
    /// Ids in the order they were added (the oldest is dropped first).
    order: VecDeque<ChunkId>,
    bytes: usize,
}

impl RecentChunks {
    /// Keeps a copy of `data` (the plaintext of chunk `id`) if it is small; drops the
    /// oldest chunks beyond [`RECENT_BYTES`].
    pub fn add(&self, id: ChunkId, data: &[u8]) {
        if data.len() > RECENT_CHUNK_MAX {
            return;
        }
        let copy = Bytes::copy_from_slice(data);
        let Ok(mut r) = self.inner.lock() else { return };
        if r.map.contains_key(&id) {
            return;
        }
        r.bytes += copy.len();
        r.map.insert(id, copy);
        r.order.push_back(id);
        while r.bytes > RECENT_BYTES {
            let Some(old) = r.order.pop_front() else {
                break;
            };
            if let Some(b) = r.map.remove(&old) {
                r.bytes -= b.len();
            }
        }
    }

    /// The plaintext of chunk `id`, if it is still kept.
    pub fn get(&self, id: &ChunkId) -> Option<Bytes> {
        self.inner.lock().ok()?.map.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ChunkId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        ChunkId(b)
    }

    #[test]
    fn keeps_the_newest_bytes_up_to_the_bound_and_skips_large_chunks() {
        let r = RecentChunks::default();
        let chunk = vec![7u8; RECENT_CHUNK_MAX];
        let fit = RECENT_BYTES / RECENT_CHUNK_MAX;
        for n in 0..(fit as u32 + 3) {
            r.add(id(n), &chunk);
        }
        // The three oldest went; the rest are there, byte for byte.
        for n in 0..3 {
            assert!(
                r.get(&id(n)).is_none(),
                "chunk {n} should have been dropped"
            );
        }
        for n in 3..(fit as u32 + 3) {
            assert_eq!(r.get(&id(n)).as_deref(), Some(&chunk[..]));
        }
        assert!(r.inner.lock().unwrap().bytes <= RECENT_BYTES);
        // A chunk over the limit is not kept (and pushes nothing out).
        r.add(id(1000), &vec![1u8; RECENT_CHUNK_MAX + 1]);
        assert!(r.get(&id(1000)).is_none());
        assert!(r.get(&id(3)).is_some());
    }

    #[test]
    fn a_chunk_added_twice_is_kept_once() {
        let r = RecentChunks::default();
        r.add(id(1), b"first");
        r.add(id(1), b"again");
        assert_eq!(r.get(&id(1)).as_deref(), Some(&b"first"[..]));
        let inner = r.inner.lock().unwrap();
        assert_eq!((inner.order.len(), inner.bytes), (1, 5));
    }
}

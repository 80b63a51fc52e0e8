//! Reading chunks back from staging: io_uring reads, record-header check, GCM open, and a
//! chunk-id check of the plaintext.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::format::{RECORD_HEADER_LEN, RecordHeader};
use super::io::{EngineKind, ReadBuf, ReadService};
use super::recent::RecentChunks;
use crate::catalog::{Catalog, ChunkRecord};
use crate::crypto::seal::{aad, nonce};
use crate::crypto::{ChunkHasher, ChunkId, MasterKey, SealBackend, SegmentCipher, segment_key};
use crate::error::{Error, Result};
use crate::monitor::ChunkReads;

/// Records up to this many bytes are opened on the task that read them: AES-GCM and
/// BLAKE3 over a few KiB take microseconds, less than a hand-off to the blocking pool.
const INLINE_OPEN_MAX: usize = 64 << 10;

/// Reads chunks for drain and verify. Cheap to clone.
#[derive(Clone)]
pub struct ChunkReader {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Arc<Catalog>,
    master: Arc<MasterKey>,
    hasher: ChunkHasher,
    backend: SealBackend,
    svc: ReadService,
    segs: Mutex<HashMap<u64, Arc<SegHandle>>>,
    /// Chunks an ingest in the same process staged last, taken from memory.
    recent: Option<Arc<RecentChunks>>,
    /// Chunks served, by where from.
    reads: Arc<ChunkReads>,
}

struct SegHandle {
    file: Arc<File>,
    path: String,
    /// Segment start in `file` (its slot on a raw drive).
    base: u64,
    cipher: SegmentCipher,
}

impl ChunkReader {
    /// A reader with up to `depth` reads in flight; with `recent`, chunks still kept there
    /// (staged moments ago by this process, see [`RecentChunks`]) come from memory. Each
    /// chunk served is counted in `reads`.
    pub fn new(
        catalog: Arc<Catalog>,
        master: Arc<MasterKey>,
        backend: SealBackend,
        depth: usize,
        recent: Option<Arc<RecentChunks>>,
        reads: Arc<ChunkReads>,
    ) -> Self {
        ChunkReader {
            inner: Arc::new(Inner {
                hasher: ChunkHasher::new(&master),
                catalog,
                master,
                backend,
                svc: ReadService::start(depth),
                segs: Mutex::new(HashMap::new()),
                recent,
                reads,
            }),
        }
    }

    pub fn engine(&self) -> &EngineKind {
        self.inner.svc.kind()
    }

    fn segment(&self, id: u64) -> Result<Arc<SegHandle>> {
        let mut m = self
            .inner
            .segs
            .lock()
            .map_err(|_| Error::task("chunk reader", "lock poisoned"))?;
        if let Some(h) = m.get(&id) {
            return Ok(h.clone());
        }
        let rec = self
            .inner
            .catalog
            .get_segment(id)?
            .ok_or_else(|| Error::Segment {
                segment: id,
                drive: Default::default(),
                message: "not in the catalog".into(),
            })?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&rec.path)
            .or_else(|_| File::open(&rec.path))
            .map_err(|e| Error::Segment {
                segment: id,
                drive: rec.drive.clone().into(),
                message: format!("cannot open {}: {e}", rec.path),
            })?;
        let key = segment_key(&self.inner.master, id, &rec.salt);
        let h = Arc::new(SegHandle {
            file: Arc::new(file),
            path: rec.path.clone(),
            base: rec.base,
            cipher: SegmentCipher::new(self.inner.backend, &key),
        });
        m.insert(id, h.clone());
        Ok(h)
    }

    /// Reads, authenticates and decrypts one chunk; checks the plaintext hashes to `id`.
    /// A chunk this process staged moments ago may come from memory instead (`recent`).
    pub async fn read_chunk(&self, id: &ChunkId) -> Result<bytes::Bytes> {
        if let Some(data) = self.inner.recent.as_ref().and_then(|r| r.get(id)) {
            self.inner.reads.memory.fetch_add(1, Ordering::Relaxed);
            return Ok(data);
        }
        self.inner.reads.staging.fetch_add(1, Ordering::Relaxed);
        let rec = self
            .inner
            .catalog
            .get_chunk(id)?
            .ok_or_else(|| Error::ChunkMissing {
                chunk: id.to_string(),
            })?;
        let seg = self.segment(rec.segment)?;
        let len = RECORD_HEADER_LEN + rec.sealed_len as usize;
        let bytes = self
            .inner
            .svc
            .read(seg.file.clone(), seg.base + rec.offset, len)
            .await
            .map_err(|e| Error::Segment {
                segment: rec.segment,
                drive: seg.path.clone().into(),
                message: format!("reading chunk {id} at offset {}: {e}", rec.offset),
            })?;
        let id = *id;
        let checked = if len <= INLINE_OPEN_MAX {
            open_record(&self.inner, &seg, &rec, id, bytes)
        } else {
            let (inner, seg2) = (self.inner.clone(), seg.clone());
            tokio::task::spawn_blocking(move || open_record(&inner, &seg2, &rec, id, bytes))
                .await
                .map_err(|e| Error::task(format!("decrypting chunk {id}"), e))?
        };
        if let Err(e) = &checked {
            // The bytes were read but are not the chunk: rot in staging. Forget the
            // location so the chunk counts as not staged; the objects using it are
            // fetched again from the source (and the chunk rewritten) by the next ingest.
            tracing::error!("{e}: the staged copy is dropped; it will be fetched again");
            self.inner.catalog.forget_chunk_location(&id)?;
        }
        checked
    }
}

/// Checks a record's header against the catalog, authenticates and decrypts it in place
/// and checks the plaintext hashes to `id`.
fn open_record(
    inner: &Inner,
    seg: &SegHandle,
    rec: &ChunkRecord,
    id: ChunkId,
    mut bytes: ReadBuf,
) -> Result<bytes::Bytes> {
    let seg_err = |message: String| Error::Segment {
        segment: rec.segment,
        drive: seg.path.clone().into(),
        message,
    };
    let hdr = RecordHeader::decode(bytes.as_slice()).map_err(|e| {
        seg_err(format!(
            "record header of chunk {id} at offset {}: {e}",
            rec.offset
        ))
    })?;
    if hdr.chunk != id || hdr.sealed_len != rec.sealed_len {
        return Err(seg_err(format!(
            "record at offset {} holds chunk {} ({} B), catalog expects {id} ({} B)",
            rec.offset, hdr.chunk, hdr.sealed_len, rec.sealed_len
        )));
    }
    bytes.advance(RECORD_HEADER_LEN);
    let plain_len = seg
        .cipher
        .open(
            nonce(rec.offset),
            &aad(&id, rec.segment, rec.offset),
            bytes.as_mut_slice(),
        )
        .map_err(|_| Error::ChunkAuth {
            chunk: id.to_string(),
            segment: rec.segment,
            offset: rec.offset,
        })?;
    bytes.truncate(plain_len);
    if inner.hasher.id(bytes.as_slice()) != id {
        return Err(seg_err(format!(
            "chunk {id} decrypted to content with another id"
        )));
    }
    Ok(bytes.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk kept in `recent` is served from there: the catalog has no location for
    /// it, so a read from the drive would fail with `ChunkMissing`.
    #[tokio::test]
    async fn a_recent_chunk_is_read_from_memory_and_others_from_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open(dir.path(), true).unwrap());
        let master = Arc::new(MasterKey::generate());
        let recent = Arc::new(RecentChunks::default());
        let (kept, other) = (ChunkId([1; 32]), ChunkId([2; 32]));
        recent.add(kept, b"staged a moment ago");
        let reads = Arc::new(ChunkReads::default());
        let reader = ChunkReader::new(
            catalog,
            master,
            SealBackend::RustCrypto,
            4,
            Some(recent),
            reads.clone(),
        );
        assert_eq!(
            reader.read_chunk(&kept).await.unwrap().as_ref(),
            b"staged a moment ago"
        );
        assert!(matches!(
            reader.read_chunk(&other).await,
            Err(Error::ChunkMissing { .. })
        ));
        assert_eq!(
            reads.counts(),
            (1, 1),
            "one from memory, one tried on staging"
        );
    }
}

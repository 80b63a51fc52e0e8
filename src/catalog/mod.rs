//! The RocksDB catalog: what was listed, what is staged where, what reached the
//! destination. Column families and key/value encodings are documented in
//! ARCHITECTURE.md ("Catalog format"); [`CATALOG_FORMAT_VERSION`] guards them.

pub mod gateway;
pub mod records;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

pub use records::{
    ChunkOp, ChunkRecord, ChunkRef, Landed, ObjectRecord, ObjectState, PassRecord, RunRecord,
    SampleRecord, SegmentRecord, SegmentState,
};

use crate::crypto::ChunkId;
use crate::error::{Error, Result};
use crate::object::ObjectKey;

/// Version of the catalog layout (column families, keys, value encodings).
/// 2 added [`CF_SAMPLES`]; a version-1 catalog is upgraded in place when opened (the
/// column family is created empty, nothing else changes).
/// 3 added `base` to segment records; 4 added [`CF_SEEN`], [`CF_PASSES`] and
/// [`ObjectState::Deleting`] (a version-3 catalog is upgraded in place: the two column
/// families are created empty). 5 added [`CF_PLACED`] and `kept_foreign` to pass records
/// (a version-4 catalog is upgraded in place: the column family is created empty, the
/// pass records are rewritten). 6 added [`CF_GATEWAY`] (a version-5 catalog is upgraded
/// in place: the column family is created empty).
pub const CATALOG_FORMAT_VERSION: u32 = 6;

/// Column family: small named settings and counters.
pub const CF_META: &str = "meta";
/// Column family: source key -> [`ObjectRecord`].
pub const CF_OBJECTS: &str = "objects";
/// Column family: chunk id -> [`ChunkRecord`] (merge operator).
pub const CF_CHUNKS: &str = "chunks";
/// Column family: segment id (u64 BE) -> [`SegmentRecord`].
pub const CF_SEGMENTS: &str = "segments";
/// Column family: run id (u64 BE) -> [`RunRecord`].
pub const CF_RUNS: &str = "runs";

/// Column family: throughput samples, key = process start (unix ms, u64 BE) ‖ sample
/// time (unix ms, u64 BE) -> [`SampleRecord`]. Feeds the report's throughput chart.
pub const CF_SAMPLES: &str = "samples";

/// Column family: source key -> the number of the sync pass whose listing last saw it
/// (u64 big-endian). Only sync passes write it; cleared when a new pass starts.
pub const CF_SEEN: &str = "seen";
/// Column family: pass number (u64 big-endian) -> [`PassRecord`].
pub const CF_PASSES: &str = "passes";
/// Column family: source key -> [`Landed`], what barge's last write of the object left at
/// the destination (what a sync's delete expects to find there).
pub const CF_PLACED: &str = "placed";
/// Column family: object key -> [`gateway::GatewayRecord`], what `barge gateway` wrote or
/// deleted at that key (the move no longer touches it).
pub const CF_GATEWAY: &str = "gateway";
const ALL_CFS: [&str; 10] = [
    CF_META,
    CF_OBJECTS,
    CF_CHUNKS,
    CF_SEGMENTS,
    CF_RUNS,
    CF_SAMPLES,
    CF_SEEN,
    CF_PASSES,
    CF_PLACED,
    CF_GATEWAY,
];

/// meta key: catalog format version (u32 LE).
pub const META_FORMAT: &[u8] = b"format";
/// meta key: appliance id (16 bytes).
pub const META_APPLIANCE_ID: &[u8] = b"appliance_id";
/// meta key: chunk parameters (postcard).
pub const META_CHUNK_PARAMS: &[u8] = b"chunk_params";
/// meta key: staging settings (postcard).
pub const META_STAGING: &[u8] = b"staging";
/// meta key: next segment id to hand out (u64 LE); written with sync before use.
pub const META_NEXT_SEGMENT: &[u8] = b"next_segment_id";
/// meta key: next run id (u64 LE).
pub const META_NEXT_RUN: &[u8] = b"next_run_id";
/// meta key: destination layout of the last drain (JSON: URL, container map, containers).
pub const META_DEST_LAYOUT: &[u8] = b"dest_layout";
/// meta key: objects were recorded `Listed` while an ingest was paused and are still to
/// be fetched (JSON bool).
pub const META_DEFERRED: &[u8] = b"deferred";
/// meta key: multipart uploads a drain started and has not ended (JSON: destination URL
/// → key → upload ids); the next drain to that destination aborts them.
pub const META_OPEN_UPLOADS: &[u8] = b"open_uploads";
/// meta key: the filter of the last ingest ([`crate::filter::FilterSpec`], JSON).
pub const META_FILTER: &[u8] = b"filter";
/// meta key: which I/O engine the last staging run used, and why (UTF-8).
pub const META_IO_ENGINE: &[u8] = b"io_engine";
/// meta key: what the last ingest's listing covered ([`ListingMark`], JSON).
pub const META_LISTING: &[u8] = b"listing";
/// meta key: the checkpoints of the listing under way (`backend::ListFrom`, JSON).
pub const META_LISTING_RANGES: &[u8] = b"listing_ranges";
/// meta key: the raw drive set (`staging::set::DriveSet`, postcard); absent with directories.
pub const META_DRIVE_SET: &[u8] = b"drive_set";

/// Memory all column families' memtables may hold together: a flush starts beyond it
/// (RocksDB's default is 64 MiB per memtable, two per column family, which a catalog of a
/// million objects fills and one of a hundred thousand does not).
const MEMTABLE_BYTES: usize = 16 << 20;

/// The catalog's block cache, shared by every column family, index and filter blocks
/// included.
const BLOCK_CACHE_BYTES: usize = 8 << 20;

/// The size of one partition of a table's index or bloom filter: what one lookup loads.
const METADATA_BLOCK_BYTES: usize = 4096;

/// Stripes of the object lock: a read-modify-write of one object record holds the
/// stripe its key hashes to, so two of them on one key never interleave (a power of two
/// well above the number of workers, so unrelated keys rarely wait on each other).
const OBJECT_LOCK_STRIPES: usize = 256;

/// `rec` in `state`, updated now; a drained mark counts one more upload.
fn with_state(mut rec: ObjectRecord, state: ObjectState) -> ObjectRecord {
    if matches!(state, ObjectState::Drained) {
        rec.uploads = rec.uploads.saturating_add(1);
    }
    rec.state = state;
    rec.updated = now();
    rec
}

/// What an ingest's listing covered. Written incomplete when the ingest starts (a run
/// killed while listing leaves it so) and rewritten when the ingest ends. "Done" needs
/// the last one complete: objects never listed are not in the catalog to count as left.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListingMark {
    /// The ingest run.
    pub run: u64,
    /// The source it listed.
    pub source: String,
    /// Every object of the source was listed (and routed) by that run.
    pub complete: bool,
    /// The last key the listing delivered, when it did not complete.
    pub last_key: Option<String>,
    /// Why it did not complete.
    pub reason: Option<String>,
    /// The sync pass the listing belongs to (its keys are marked seen by that pass):
    /// only the same pass resumes it, so no pass decides deletions on keys another
    /// listing saw.
    #[serde(default)]
    pub pass: Option<u64>,
    /// Entries the listing left out of the move: not objects (a directory's symbolic
    /// links, sockets, devices, FIFOs) or refused (keys under `.barge/`). Absent in older
    /// documents: none known.
    #[serde(default)]
    pub left_out: u64,
    /// The first of them (at most `ingest::MAX_FAILURES_SHOWN`), by name.
    #[serde(default)]
    pub left_out_shown: Vec<LeftOut>,
}

/// One entry a listing left out of the move, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeftOut {
    pub key: String,
    pub why: String,
}

impl ListingMark {
    /// Why "done" cannot be claimed on this listing, or None when it is complete.
    pub fn incomplete(&self) -> Option<String> {
        if self.complete {
            return None;
        }
        let at = match &self.last_key {
            Some(k) => format!(", after key {k}"),
            None => String::new(),
        };
        Some(format!(
            "the listing of {} did not complete (run {}{at}: {}): run ingest again",
            self.source,
            self.run,
            self.reason.as_deref().unwrap_or("unknown reason")
        ))
    }
}

/// Handle to the catalog. Cheap to share behind an `Arc`; RocksDB is thread-safe.
pub struct Catalog {
    db: DB,
    path: PathBuf,
    counter_lock: Mutex<()>,
    /// See [`OBJECT_LOCK_STRIPES`].
    object_locks: Vec<Mutex<()>>,
    /// See [`gateway::FENCE_STRIPES`].
    fences: Vec<tokio::sync::Mutex<()>>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Catalog {
    /// Opens (creating if asked) the catalog at `path`.
    pub fn open(path: &Path, create: bool) -> Result<Self> {
        if !create && !path.join("CURRENT").exists() {
            return Err(Error::Catalog {
                path: path.to_path_buf(),
                message: "no catalog here: run `barge init`".into(),
            });
        }
        let mut opts = Options::default();
        opts.create_if_missing(create);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_db_write_buffer_size(MEMTABLE_BYTES);
        let cache =
            rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES).map_err(|e| Error::Catalog {
                path: path.to_path_buf(),
                message: format!("cannot make the block cache: {e}"),
            })?;
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // Index and filter blocks grow with the number of records: in the bounded cache,
        // not beside it, so memory stays flat in the object count.
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_bloom_filter(10.0, false);
        // Partitioned: a table's index and bloom filter are cut into METADATA_BLOCK_BYTES
        // pieces under a small top level, so a lookup loads one piece into the cache, not
        // the table's whole filter. Whole filters (1.2 MB per million keys) did not stay
        // in the cache: at a million objects, re-reading and checksumming them took 11% of
        // a migrate's CPU. Each table records its own layout: older tables read as before.
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(METADATA_BLOCK_BYTES);
        table.set_pin_top_level_index_and_filter(true);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            o.set_write_buffer_size(MEMTABLE_BYTES / 2);
            // One record per object and per chunk, billions of them: LZ4 while they are
            // young, ZSTD once they settle in the bottom level (Debian's librocksdb has
            // both). Readers need no change: every SST names its own compression.
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
            if *name == CF_CHUNKS {
                // Full merge folds operands into a ChunkRecord. Partial merge declines
                // (returns None): operands and records have different encodings, so
                // RocksDB must keep operands as they are until a full merge.
                o.set_merge_operator(
                    "barge-chunk-v1",
                    |_k, existing, ops| Some(records::merge_chunk(existing, ops.iter())),
                    |_k, _existing, _ops| None,
                );
            }
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| Error::Catalog {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let cat = Catalog {
            db,
            path: path.to_path_buf(),
            counter_lock: Mutex::new(()),
            object_locks: (0..OBJECT_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            fences: (0..gateway::FENCE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        };
        match cat.meta_get(META_FORMAT)? {
            None if create => {
                cat.meta_put_sync(META_FORMAT, &CATALOG_FORMAT_VERSION.to_le_bytes())?;
            }
            None => {
                return Err(cat.err("catalog has no format version: not a barge catalog"));
            }
            Some(v) => {
                let found = u32::from_le_bytes(v.as_slice().try_into().unwrap_or([0xff; 4]));
                if (1..CATALOG_FORMAT_VERSION).contains(&found) {
                    // v1 -> v2: CF_SAMPLES was created above by create_missing_column_families.
                    // v2 -> v3: segment records gain `base`.
                    // v3 -> v4: CF_SEEN and CF_PASSES, created above, empty.
                    // v4 -> v5: CF_PLACED, created above, empty; pass records gain
                    // `kept_foreign`.
                    // v5 -> v6: CF_GATEWAY, created above, empty.
                    if found < 3 {
                        cat.upgrade_segments_v3()?;
                    }
                    if found == 4 {
                        cat.upgrade_passes_v5()?;
                    }
                    cat.meta_put_sync(META_FORMAT, &CATALOG_FORMAT_VERSION.to_le_bytes())?;
                    tracing::info!(
                        "catalog upgraded from format {found} to {CATALOG_FORMAT_VERSION}"
                    );
                } else if found != CATALOG_FORMAT_VERSION {
                    return Err(cat.err(format!(
                        "catalog format version {found}, this barge reads version {CATALOG_FORMAT_VERSION}"
                    )));
                }
            }
        }
        Ok(cat)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rewrites every segment record in the format-3 encoding (one synced batch).
    fn upgrade_segments_v3(&self) -> Result<()> {
        let cf = self.cf(CF_SEGMENTS)?;
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let old: records::SegmentRecordV2 = records::decode(&"segment (format 2)", &v)?;
            batch.put_cf(cf, k, records::encode(&SegmentRecord::from(old)));
        }
        self.write_sync(batch)
    }

    /// Rewrites every pass record in the format-5 encoding (one synced batch; a move
    /// has one record per pass).
    fn upgrade_passes_v5(&self) -> Result<()> {
        let cf = self.cf(CF_PASSES)?;
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let old: records::PassRecordV4 = records::decode(&"pass (format 4)", &v)?;
            batch.put_cf(cf, k, records::encode(&PassRecord::from(old)));
        }
        self.write_sync(batch)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Catalog {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| self.err(format!("column family {name} is missing")))
    }

    fn db_err(&self, e: rocksdb::Error) -> Error {
        self.err(e.to_string())
    }

    // ---- meta ----

    pub fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(CF_META)?, key)
            .map_err(|e| self.db_err(e))
    }

    /// Writes a meta value and syncs the WAL.
    pub fn meta_put_sync(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(self.cf(CF_META)?, key, value, &wo)
            .map_err(|e| self.db_err(e))
    }

    /// A meta value kept as JSON (`what` names it in errors); None when absent.
    pub fn meta_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>> {
        match self.meta_get(key)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.err(format!("bad {what}: {e}"))),
        }
    }

    /// Writes a meta value as JSON and syncs the WAL.
    pub fn put_meta_json<T: serde::Serialize>(&self, key: &[u8], what: &str, v: &T) -> Result<()> {
        let bytes = serde_json::to_vec(v).map_err(|e| Error::encode(what, e))?;
        self.meta_put_sync(key, &bytes)
    }

    /// What the last ingest's listing covered; None before any ingest (and in a catalog
    /// made by `import`, whose objects come from the drives' manifests).
    pub fn listing_mark(&self) -> Result<Option<ListingMark>> {
        self.meta_json(META_LISTING, "listing record")
    }

    /// Records what an ingest's listing covered (synced).
    pub fn set_listing_mark(&self, m: &ListingMark) -> Result<()> {
        self.put_meta_json(META_LISTING, "the listing record", m)
    }

    /// Hands out the next value of a u64 counter kept in meta; the new counter value is
    /// synced to disk before the id is returned, so an id is never handed out twice, even
    /// across a crash.
    // Invariant 5: ids come from here, under a mutex, synced before they are handed out.
    pub fn next_id(&self, key: &[u8]) -> Result<u64> {
        let _g = self
            .counter_lock
            .lock()
            .map_err(|_| self.err("counter lock poisoned"))?;
        let cur = match self.meta_get(key)? {
            Some(v) => u64::from_le_bytes(v.as_slice().try_into().map_err(|_| {
                self.err(format!("meta {} is corrupt", String::from_utf8_lossy(key)))
            })?),
            None => 1,
        };
        self.meta_put_sync(key, &(cur + 1).to_le_bytes())?;
        Ok(cur)
    }

    // ---- objects ----

    pub fn get_object(&self, key: &ObjectKey) -> Result<Option<ObjectRecord>> {
        match self
            .db
            .get_cf(self.cf(CF_OBJECTS)?, key.as_bytes())
            .map_err(|e| self.db_err(e))?
        {
            Some(v) => Ok(Some(records::decode(key, &v)?)),
            None => Ok(None),
        }
    }

    /// The lock stripe of `key`, held for a read-modify-write of its record.
    fn object_lock(&self, key: &ObjectKey) -> Result<MutexGuard<'_, ()>> {
        let stripe = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize % OBJECT_LOCK_STRIPES;
        self.object_locks[stripe]
            .lock()
            .map_err(|_| self.err("object lock poisoned"))
    }

    /// Writes an object record; the caller holds its lock stripe.
    fn put_object_locked(&self, key: &ObjectKey, rec: &ObjectRecord, sync: bool) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_OBJECTS)?, key.as_bytes(), records::encode(rec));
        if sync {
            self.write_sync(b)
        } else {
            self.write(b)
        }
    }

    /// Removes an object's record if it is only listed (never staged): an object an
    /// inventory listed that is gone at the source was never part of the move. Returns
    /// whether it was removed.
    pub fn forget_listed(&self, key: &ObjectKey) -> Result<bool> {
        let _g = self.object_lock(key)?;
        let listed = self
            .get_object(key)?
            .is_some_and(|r| matches!(r.state, ObjectState::Listed));
        if listed {
            let mut b = WriteBatch::default();
            b.delete_cf(self.cf(CF_OBJECTS)?, key.as_bytes());
            self.write(b)?;
        }
        Ok(listed)
    }

    /// Reads an object's record, lets `f` change it (None: no record yet; returning None
    /// writes nothing) and writes the result, all under the key's lock stripe, so no other
    /// update of the same object falls in between. `sync` fsyncs the WAL before returning.
    // Invariant 17: every read-modify-write of an object record goes through here.
    pub fn update_object(
        &self,
        key: &ObjectKey,
        sync: bool,
        f: impl FnOnce(Option<ObjectRecord>) -> Option<ObjectRecord>,
    ) -> Result<()> {
        let _g = self.object_lock(key)?;
        match f(self.get_object(key)?) {
            Some(rec) => self.put_object_locked(key, &rec, sync),
            None => Ok(()),
        }
    }

    /// Sets an object's state (and timestamp); a no-op if the object is unknown. The
    /// drained mark is synced (WAL fsync, group-committed by RocksDB) so that not even a
    /// power loss makes a finished upload look unfinished.
    pub fn set_object_state(&self, key: &ObjectKey, state: ObjectState) -> Result<()> {
        let drained = matches!(state, ObjectState::Drained);
        self.update_object(key, drained, |rec| rec.map(|r| with_state(r, state)))
    }

    /// Marks an object drained, but only if it still holds the content that was uploaded:
    /// an ingest that re-staged a newer version meanwhile keeps it `Staged`. Not synced on
    /// its own: the drain syncs the WAL for every mark of the last
    /// [`crate::drain::MARK_SYNC_INTERVAL`] at once (a mark lost to a power cut only makes
    /// the next drain write the object again).
    pub fn mark_drained(&self, key: &ObjectKey, uploaded: Option<[u8; 32]>) -> Result<()> {
        self.update_object(key, false, |rec| {
            rec.filter(|r| r.blake3 == uploaded)
                .map(|r| with_state(r, ObjectState::Drained))
        })
    }

    /// Records an object as staged and takes one reference on each chunk it lists, in
    /// one atomic batch. `drop_refs` are chunks of a previous version to release.
    pub fn commit_staged(
        &self,
        key: &ObjectKey,
        rec: &ObjectRecord,
        drop_refs: &[ChunkRef],
    ) -> Result<()> {
        let mut b = WriteBatch::default();
        let chunks = self.cf(CF_CHUNKS)?;
        for c in &rec.chunks {
            b.merge_cf(chunks, c.id.0, ChunkOp::AddRefs(1).encode());
        }
        for c in drop_refs {
            b.merge_cf(chunks, c.id.0, ChunkOp::AddRefs(-1).encode());
        }
        b.put_cf(self.cf(CF_OBJECTS)?, key.as_bytes(), records::encode(rec));
        let _g = self.object_lock(key)?;
        self.write(b)
    }

    /// Iterates all objects in key order. Decoding errors are yielded, not hidden.
    pub fn objects(&self) -> Result<impl Iterator<Item = Result<(ObjectKey, ObjectRecord)>> + '_> {
        let it = self
            .db
            .iterator_cf(self.cf(CF_OBJECTS)?, IteratorMode::Start);
        Ok(it.map(move |kv| {
            let (k, v) = kv.map_err(|e| self.db_err(e))?;
            let key = ObjectKey::from_bytes(k.to_vec());
            let rec = records::decode(&key, &v)?;
            Ok((key, rec))
        }))
    }

    // ---- chunks ----

    /// A chunk's record, if it is durable in staging.
    pub fn get_chunk(&self, id: &ChunkId) -> Result<Option<ChunkRecord>> {
        match self
            .db
            .get_cf(self.cf(CF_CHUNKS)?, id.0)
            .map_err(|e| self.db_err(e))?
        {
            Some(v) => {
                let r = ChunkRecord::decode(&v)?;
                // A record holding only references (no location yet) is not durable.
                Ok((r.sealed_len > 0).then_some(r))
            }
            None => Ok(None),
        }
    }

    /// Records the locations of chunks whose segment data has been fdatasync'ed, together
    /// with the segment's progress, in one batch.
    pub fn commit_chunk_locations(
        &self,
        seg_id: u64,
        seg: &SegmentRecord,
        chunks: &[(ChunkId, ChunkOp)],
    ) -> Result<()> {
        let mut b = WriteBatch::default();
        let cf = self.cf(CF_CHUNKS)?;
        for (id, op) in chunks {
            b.merge_cf(cf, id.0, op.encode());
        }
        b.put_cf(
            self.cf(CF_SEGMENTS)?,
            seg_id.to_be_bytes(),
            records::encode(seg),
        );
        self.write(b)
    }

    pub fn chunks(&self) -> Result<impl Iterator<Item = Result<(ChunkId, ChunkRecord)>> + '_> {
        let it = self
            .db
            .iterator_cf(self.cf(CF_CHUNKS)?, IteratorMode::Start);
        Ok(it.map(move |kv| {
            let (k, v) = kv.map_err(|e| self.db_err(e))?;
            let id: [u8; 32] = k.as_ref().try_into().map_err(|_| Error::CorruptRecord {
                what: "chunk key".into(),
                message: format!("{} bytes", k.len()),
            })?;
            Ok((ChunkId(id), ChunkRecord::decode(&v)?))
        }))
    }

    // ---- segments ----

    pub fn put_segment(&self, id: u64, rec: &SegmentRecord) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(
            self.cf(CF_SEGMENTS)?,
            id.to_be_bytes(),
            records::encode(rec),
        );
        self.write_sync(b)
    }

    /// Forgets where a chunk is stored (its staged copy is corrupt) but keeps its
    /// references: the chunk is no longer durable, so staging writes it again when an
    /// object that uses it is fetched again. Synced.
    pub fn forget_chunk_location(&self, id: &ChunkId) -> Result<()> {
        let mut b = WriteBatch::default();
        self.unlocate(&mut b, std::slice::from_ref(id))?;
        self.write_sync(b)
    }

    /// Forgets a reclaimed segment and where its chunks were, in one synced batch
    /// (references are kept: a chunk needed again is staged again).
    pub fn forget_segment(&self, id: u64, chunks: &[ChunkId]) -> Result<()> {
        let mut b = WriteBatch::default();
        self.unlocate(&mut b, chunks)?;
        b.delete_cf(self.cf(CF_SEGMENTS)?, id.to_be_bytes());
        self.write_sync(b)
    }

    /// Adds to `b` a `Locate` with `sealed_len = 0` for each chunk: "not durable",
    /// references kept.
    fn unlocate(&self, b: &mut WriteBatch, chunks: &[ChunkId]) -> Result<()> {
        let cf = self.cf(CF_CHUNKS)?;
        let op = ChunkOp::Locate {
            segment: 0,
            offset: 0,
            sealed_len: 0,
            plain_len: 0,
        }
        .encode();
        for c in chunks {
            b.merge_cf(cf, c.0, &op);
        }
        Ok(())
    }

    /// Writes records brought in from shipped drives (`barge import`) in one synced
    /// batch: segments, chunk records (encoded [`ChunkRecord`]s) and objects.
    pub fn import_batch(
        &self,
        segments: &[(u64, SegmentRecord)],
        chunks: &[(ChunkId, Vec<u8>)],
        objects: &[(ObjectKey, ObjectRecord)],
    ) -> Result<()> {
        let mut b = WriteBatch::default();
        for (id, rec) in segments {
            b.put_cf(
                self.cf(CF_SEGMENTS)?,
                id.to_be_bytes(),
                records::encode(rec),
            );
        }
        for (id, rec) in chunks {
            b.put_cf(self.cf(CF_CHUNKS)?, id.0, rec);
        }
        for (k, rec) in objects {
            b.put_cf(self.cf(CF_OBJECTS)?, k.as_bytes(), records::encode(rec));
        }
        self.write_sync(b)
    }

    /// Raises a meta counter (see [`Catalog::next_id`]) so it hands out ids >= `floor`.
    pub fn raise_counter(&self, key: &[u8], floor: u64) -> Result<()> {
        let _g = self
            .counter_lock
            .lock()
            .map_err(|_| self.err("counter lock poisoned"))?;
        let cur = match self.meta_get(key)? {
            Some(v) => u64::from_le_bytes(v.as_slice().try_into().unwrap_or([0; 8])),
            None => 1,
        };
        if floor > cur {
            self.meta_put_sync(key, &floor.to_le_bytes())?;
        }
        Ok(())
    }

    /// Forgets a segment (one that never held a committed record). Synced.
    pub fn delete_segment(&self, id: u64) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(CF_SEGMENTS)?, id.to_be_bytes());
        self.write_sync(b)
    }

    pub fn get_segment(&self, id: u64) -> Result<Option<SegmentRecord>> {
        match self
            .db
            .get_cf(self.cf(CF_SEGMENTS)?, id.to_be_bytes())
            .map_err(|e| self.db_err(e))?
        {
            Some(v) => Ok(Some(records::decode(&format_args!("segment {id}"), &v)?)),
            None => Ok(None),
        }
    }

    pub fn segments(&self) -> Result<impl Iterator<Item = Result<(u64, SegmentRecord)>> + '_> {
        let it = self
            .db
            .iterator_cf(self.cf(CF_SEGMENTS)?, IteratorMode::Start);
        Ok(it.map(move |kv| {
            let (k, v) = kv.map_err(|e| self.db_err(e))?;
            let id =
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| Error::CorruptRecord {
                    what: "segment key".into(),
                    message: format!("{} bytes", k.len()),
                })?);
            Ok((id, records::decode(&format_args!("segment {id}"), &v)?))
        }))
    }

    // ---- throughput samples ----

    /// Stores one throughput sample of the process that started at `session_ms`.
    /// Not synced: a lost sample costs a point of the chart, never data.
    pub fn put_sample(&self, session_ms: u64, at_ms: u64, rec: &SampleRecord) -> Result<()> {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&session_ms.to_be_bytes());
        key[8..].copy_from_slice(&at_ms.to_be_bytes());
        self.db
            .put_cf(self.cf(CF_SAMPLES)?, key, records::encode(rec))
            .map_err(|e| self.err(e.to_string()))
    }

    /// The samples of the latest session (the process that wrote last) as (session
    /// start ms, sample time ms, record), in time order: what the report's chart plots,
    /// however many sessions a long move kept.
    pub fn samples(&self) -> Result<Vec<(u64, u64, SampleRecord)>> {
        let cf = self.cf(CF_SAMPLES)?;
        let be = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
        let latest = match self.db.iterator_cf(cf, IteratorMode::End).next() {
            None => return Ok(vec![]),
            Some(kv) => {
                let (k, _) = kv.map_err(|e| self.err(e.to_string()))?;
                be(k.get(..8).unwrap_or_default())
            }
        };
        let from = latest.to_be_bytes();
        let mut out = vec![];
        let it = self
            .db
            .iterator_cf(cf, IteratorMode::From(&from, rocksdb::Direction::Forward));
        for kv in it {
            let (k, v) = kv.map_err(|e| self.err(e.to_string()))?;
            if k.len() != 16 {
                continue;
            }
            let (s, t) = (be(&k[..8]), be(&k[8..]));
            out.push((
                s,
                t,
                records::decode_sample(&format_args!("sample {s}/{t}"), &v)?,
            ));
        }
        Ok(out)
    }

    // ---- runs ----

    pub fn start_run(&self, rec: &RunRecord) -> Result<u64> {
        let id = self.next_id(META_NEXT_RUN)?;
        self.put_run(id, rec)?;
        Ok(id)
    }

    pub fn put_run(&self, id: u64, rec: &RunRecord) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_RUNS)?, id.to_be_bytes(), records::encode(rec));
        self.write_sync(b)
    }

    /// Records the end of a run: its counters and outcome.
    pub fn finish_run(&self, id: u64, counters: Vec<(String, u64)>, outcome: String) -> Result<()> {
        let key = id.to_be_bytes();
        let mut rec: RunRecord = match self
            .db
            .get_cf(self.cf(CF_RUNS)?, key)
            .map_err(|e| self.db_err(e))?
        {
            Some(v) => records::decode(&format_args!("run {id}"), &v)?,
            None => RunRecord::default(),
        };
        rec.finished = Some(now());
        rec.counters = counters;
        rec.outcome = Some(outcome);
        self.put_run(id, &rec)
    }

    pub fn runs(&self) -> Result<Vec<(u64, RunRecord)>> {
        let mut out = vec![];
        for kv in self.db.iterator_cf(self.cf(CF_RUNS)?, IteratorMode::Start) {
            let (k, v) = kv.map_err(|e| self.db_err(e))?;
            let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            out.push((id, records::decode(&format_args!("run {id}"), &v)?));
        }
        Ok(out)
    }

    // ---- sync passes ----

    /// Records that the listing of sync pass `pass` saw `key` (not synced: the listing's
    /// checkpoint, synced, covers it before the listing may resume past the key).
    pub fn mark_seen(&self, key: &ObjectKey, pass: u64) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_SEEN)?, key.as_bytes(), pass.to_be_bytes());
        self.write(b)
    }

    /// Forgets that a pass saw `key` (it was gone when fetched).
    pub fn unsee(&self, key: &ObjectKey) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(CF_SEEN)?, key.as_bytes());
        self.write(b)
    }

    /// Whether the listing of sync pass `pass` saw `key`.
    pub fn seen_in(&self, key: &ObjectKey, pass: u64) -> Result<bool> {
        let v = self
            .db
            .get_cf(self.cf(CF_SEEN)?, key.as_bytes())
            .map_err(|e| self.db_err(e))?;
        Ok(v.is_some_and(|v| v.as_slice() == pass.to_be_bytes()))
    }

    /// Forgets every key an earlier pass saw (a new pass starts): one range deletion
    /// from the first key to just past the last.
    pub fn clear_seen(&self) -> Result<()> {
        let cf = self.cf(CF_SEEN)?;
        let last = match self.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(kv) => kv.map_err(|e| self.db_err(e))?.0,
            None => return Ok(()),
        };
        let mut end = last.to_vec();
        end.push(0);
        let mut b = WriteBatch::default();
        b.delete_range_cf(cf, &b""[..], &end[..]);
        self.write_sync(b)
    }

    pub fn put_pass(&self, n: u64, rec: &PassRecord) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_PASSES)?, n.to_be_bytes(), records::encode(rec));
        self.write_sync(b)
    }

    /// Every pass, oldest first.
    pub fn passes(&self) -> Result<Vec<(u64, PassRecord)>> {
        let mut out = vec![];
        for kv in self
            .db
            .iterator_cf(self.cf(CF_PASSES)?, IteratorMode::Start)
        {
            let (k, v) = kv.map_err(|e| self.db_err(e))?;
            let n = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            out.push((n, records::decode(&format_args!("pass {n}"), &v)?));
        }
        Ok(out)
    }

    /// The newest pass.
    pub fn last_pass(&self) -> Result<Option<(u64, PassRecord)>> {
        let cf = self.cf(CF_PASSES)?;
        match self.db.iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv.map_err(|e| self.db_err(e))?;
                let n = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
                Ok(Some((n, records::decode(&format_args!("pass {n}"), &v)?)))
            }
        }
    }

    /// Records what a drain's write of `key` left at the destination (not synced: the
    /// drained mark's WAL sync covers it; a loss only makes a later delete keep the
    /// object as not barge's).
    pub fn set_placed(&self, key: &ObjectKey, landed: &Landed) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_PLACED)?, key.as_bytes(), records::encode(landed));
        self.write(b)
    }

    /// What barge's last write of `key` left at the destination; None if it never wrote
    /// it, or wrote it before catalog format 5 recorded this.
    pub fn placed(&self, key: &ObjectKey) -> Result<Option<Landed>> {
        match self
            .db
            .get_cf(self.cf(CF_PLACED)?, key.as_bytes())
            .map_err(|e| self.db_err(e))?
        {
            Some(v) => Ok(Some(records::decode(key, &v)?)),
            None => Ok(None),
        }
    }

    /// Marks an object `Deleting` (synced), unless it changed since `seen` was read.
    /// Returns whether it did.
    pub fn mark_deleting(&self, key: &ObjectKey, seen: &ObjectRecord) -> Result<bool> {
        let _g = self.object_lock(key)?;
        match self.get_object(key)? {
            Some(rec) if rec == *seen => {
                self.put_object_locked(key, &with_state(rec, ObjectState::Deleting), true)?;
                Ok(true)
            }
            Some(rec) if rec.state == ObjectState::Deleting => Ok(true),
            _ => Ok(false),
        }
    }

    /// Removes a deleted object: its record (if still `Deleting`), its seen mark, what it
    /// left at the destination and its chunk references, in one batch. Also for an object
    /// whose key at the destination turned out to hold someone else's object: barge
    /// forgets it, so nothing of barge's ever touches that key again.
    pub fn forget_deleted(&self, key: &ObjectKey) -> Result<()> {
        let _g = self.object_lock(key)?;
        let Some(rec) = self.get_object(key)? else {
            return Ok(());
        };
        if rec.state != ObjectState::Deleting {
            return Ok(());
        }
        let mut b = WriteBatch::default();
        let chunks = self.cf(CF_CHUNKS)?;
        for c in &rec.chunks {
            b.merge_cf(chunks, c.id.0, ChunkOp::AddRefs(-1).encode());
        }
        b.delete_cf(self.cf(CF_OBJECTS)?, key.as_bytes());
        b.delete_cf(self.cf(CF_SEEN)?, key.as_bytes());
        b.delete_cf(self.cf(CF_PLACED)?, key.as_bytes());
        self.write(b)
    }

    // ---- writes ----

    fn write(&self, b: WriteBatch) -> Result<()> {
        self.db.write(b).map_err(|e| self.db_err(e))
    }

    fn write_sync(&self, b: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(b, &wo).map_err(|e| self.db_err(e))
    }

    /// Compacts every column family into its bottom level (ZSTD): what the catalog costs
    /// once it has settled, and the space of deleted and overwritten records given back.
    pub fn compact(&self) -> Result<()> {
        // Force: a lone table would otherwise only be moved down, keeping its LZ4 blocks
        // and its unmerged chunk operands.
        let mut o = rocksdb::CompactOptions::default();
        o.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for name in ALL_CFS {
            self.db
                .compact_range_cf_opt(self.cf(name)?, None::<&[u8]>, None::<&[u8]>, &o);
        }
        Ok(())
    }

    /// Bytes the catalog takes on disk (tables, write-ahead log, manifest).
    pub fn disk_bytes(&self) -> Result<u64> {
        let entries = std::fs::read_dir(&self.path)
            .map_err(|e| Error::io("listing the catalog", &self.path, e))?;
        let mut total = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let counted =
                name.ends_with(".sst") || name.ends_with(".log") || name.starts_with("MANIFEST-");
            if counted && let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
        Ok(total)
    }

    /// Makes every write so far durable (WAL fsync).
    pub fn sync(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(|e| self.db_err(e))
    }
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_come_from_the_latest_session_and_old_samples_still_decode() {
        #[derive(serde::Serialize)]
        struct FirstRelease {
            command: String,
            listed_objects: u64,
            staged_bytes: u64,
            drained_bytes: u64,
            sealed_bytes: u64,
        }
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path(), true).unwrap();
        let old = FirstRelease {
            command: "ingest".into(),
            listed_objects: 1,
            staged_bytes: 2,
            drained_bytes: 3,
            sealed_bytes: 4,
        };
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&7u64.to_be_bytes());
        key[8..].copy_from_slice(&8u64.to_be_bytes());
        let cf = cat.cf(CF_SAMPLES).unwrap();
        cat.db.put_cf(cf, key, records::encode(&old)).unwrap();
        let got = cat.samples().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].2.staged_bytes, got[0].2.staged_objects), (2, 0));
        let new = SampleRecord {
            command: "migrate".into(),
            staged_objects: 5,
            ..Default::default()
        };
        cat.put_sample(100, 100, &new).unwrap();
        cat.put_sample(100, 1100, &new).unwrap();
        let got = cat.samples().unwrap();
        assert_eq!(got.len(), 2, "only the latest session: {got:?}");
        assert!(got.iter().all(|s| s.0 == 100 && s.2 == new));
    }

    #[test]
    fn format_2_catalog_is_upgraded_with_segment_bases() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cat = Catalog::open(dir.path(), true).unwrap();
            let old = records::SegmentRecordV2 {
                drive: "/d".into(),
                path: "/d/seg-0000000000000007.barge".into(),
                salt: [4; 16],
                state: SegmentState::Sealed,
                data_len: 8192,
                records: 2,
                checksum: Some([5; 16]),
            };
            let cf = cat.cf(CF_SEGMENTS).unwrap();
            cat.db
                .put_cf(cf, 7u64.to_be_bytes(), records::encode(&old))
                .unwrap();
            cat.meta_put_sync(META_FORMAT, &2u32.to_le_bytes()).unwrap();
        }
        let cat = Catalog::open(dir.path(), false).unwrap();
        let rec = cat.get_segment(7).unwrap().unwrap();
        assert_eq!(rec.base, 0);
        assert_eq!(rec.records, 2);
        assert_eq!(rec.checksum, Some([5; 16]));
        assert_eq!(
            cat.meta_get(META_FORMAT).unwrap().unwrap(),
            CATALOG_FORMAT_VERSION.to_le_bytes()
        );
    }

    #[test]
    fn format_4_catalog_gains_placed_records_and_keeps_its_passes() {
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKey::from("k");
        {
            // A version-4 catalog as the previous release left it: eight column families.
            let mut o = Options::default();
            o.create_if_missing(true);
            o.create_missing_column_families(true);
            let old = ALL_CFS.iter().filter(|c| **c != CF_PLACED);
            let db = DB::open_cf(&o, dir.path(), old).unwrap();
            let pass = records::PassRecordV4 {
                kind: "sync".into(),
                source: "s".into(),
                destination: "d".into(),
                started: 1,
                listed: Some(2),
                finished: Some(3),
                runs: 1,
                listing_secs: 0.5,
                listing_complete: true,
                listing_errors: 0,
                new: 4,
                bytes_new: 5,
                changed: 0,
                bytes_changed: 0,
                unchanged: 0,
                bytes_unchanged: 0,
                deleted: 6,
                bytes_deleted: 7,
                deletes_pending: 0,
                failed: 0,
                vanished: 0,
                deletions: "applied".into(),
                outcome: Some("ok".into()),
                lag_objects: 0,
                lag_bytes: 0,
            };
            let passes = db.cf_handle(CF_PASSES).unwrap();
            db.put_cf(passes, 1u64.to_be_bytes(), records::encode(&pass))
                .unwrap();
            let meta = db.cf_handle("meta").unwrap();
            db.put_cf(meta, META_FORMAT, 4u32.to_le_bytes()).unwrap();
        }
        let cat = Catalog::open(dir.path(), false).unwrap();
        let passes = cat.passes().unwrap();
        assert_eq!(passes.len(), 1);
        let p = &passes[0].1;
        assert_eq!((p.deleted, p.kept_foreign, p.new), (6, 0, 4));
        assert_eq!(p.outcome.as_deref(), Some("ok"));
        assert_eq!(cat.placed(&key).unwrap(), None);
        let l = Landed {
            size: 3,
            etag: "abc-2".into(),
        };
        cat.set_placed(&key, &l).unwrap();
        assert_eq!(cat.placed(&key).unwrap(), Some(l));
    }

    #[test]
    fn format_3_catalog_gains_the_sync_column_families_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKey::from("a/b");
        {
            // A version-3 catalog as the previous release left it: six column families.
            let mut o = Options::default();
            o.create_if_missing(true);
            o.create_missing_column_families(true);
            let old = ["meta", "objects", "chunks", "segments", "runs", "samples"];
            let db = DB::open_cf(&o, dir.path(), old).unwrap();
            let rec = ObjectRecord {
                size: 3,
                version: "v".into(),
                content_type: None,
                user_meta: vec![],
                blake3: Some([1; 32]),
                chunks: vec![],
                state: ObjectState::Drained,
                checked: "md5".into(),
                uploads: 1,
                updated: 0,
            };
            let objects = db.cf_handle("objects").unwrap();
            db.put_cf(objects, key.as_bytes(), records::encode(&rec))
                .unwrap();
            let meta = db.cf_handle("meta").unwrap();
            db.put_cf(meta, META_FORMAT, 3u32.to_le_bytes()).unwrap();
        }
        let cat = Catalog::open(dir.path(), false).unwrap();
        assert_eq!(
            cat.meta_get(META_FORMAT).unwrap().unwrap(),
            CATALOG_FORMAT_VERSION.to_le_bytes()
        );
        assert_eq!(
            cat.get_object(&key).unwrap().unwrap().state,
            ObjectState::Drained
        );
        assert!(cat.passes().unwrap().is_empty());
        cat.mark_seen(&key, 1).unwrap();
        assert!(cat.seen_in(&key, 1).unwrap());
        assert!(!cat.seen_in(&key, 2).unwrap());
        cat.clear_seen().unwrap();
        assert!(!cat.seen_in(&key, 1).unwrap());
        cat.meta_put_sync(META_FORMAT, &(CATALOG_FORMAT_VERSION + 1).to_le_bytes())
            .unwrap();
        drop(cat);
        let e = Catalog::open(dir.path(), false).err().unwrap().to_string();
        assert!(
            e.contains(&format!(
                "catalog format version {}, this barge reads version {CATALOG_FORMAT_VERSION}",
                CATALOG_FORMAT_VERSION + 1
            )),
            "{e}"
        );
    }
}

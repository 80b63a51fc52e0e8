//! Staging: sealed chunks appended to segment files on the staging drives.
//!
//! * [`format`]: the on-disk segment format (pure encode/decode).
//! * [`device`]: raw drives (block devices): superblock and segment slots.
//! * [`io`]: io_uring (registered buffers, O_DIRECT) and the pwrite fallback.
//! * [`writer`]: one thread per drive that seals, appends, fdatasyncs, then commits
//!   chunk locations to the catalog.
//! * [`reader`]: reads a chunk back, checks its record header and GCM tag, decrypts.
//! * [`recent`]: the plaintext of the small chunks staged last, for a drain in the same
//!   process.
//! * [`set`]: the drive set of a node with raw drives (`meta/drive_set`).
//! * [`Stager`]: the front door used by ingest: dedups against the catalog and against
//!   chunks already in flight, and stripes new chunks over drives.

pub mod device;
pub mod format;
#[allow(unsafe_code)] // io_uring and O_DIRECT: each block has its SAFETY comment
pub(crate) mod io;
pub(crate) mod reader;
pub mod recent;
pub mod reclaim;
pub mod recover;
pub(crate) mod set;
pub(crate) mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::crypto::{ChunkId, MasterKey, SealBackend};
use crate::error::{Error, Result};

pub use io::EngineKind;
pub use reader::ChunkReader;
pub use recent::RecentChunks;

/// Default segment file size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 1 << 30;
/// Default I/O block size (one registered buffer, one write).
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;
/// Default io_uring queue depth (writes in flight per drive).
pub const DEFAULT_QUEUE_DEPTH: usize = 8;
/// Default bytes appended between two fdatasync+catalog commits.
pub const DEFAULT_COMMIT_BYTES: u64 = 128 << 20;
/// Chunks queued per drive writer before senders block (back-pressure).
pub const DRIVE_QUEUE: usize = 16;

/// Staging settings, fixed at `barge init` (drives may be added later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingSettings {
    pub segment_size: u64,
    pub block_size: usize,
    pub queue_depth: usize,
    pub commit_bytes: u64,
    pub seal_backend: SealBackend,
}

impl Default for StagingSettings {
    fn default() -> Self {
        StagingSettings {
            segment_size: DEFAULT_SEGMENT_SIZE,
            block_size: DEFAULT_BLOCK_SIZE,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            commit_bytes: DEFAULT_COMMIT_BYTES,
            seal_backend: SealBackend::default(),
        }
    }
}

impl StagingSettings {
    /// Checks the settings against each other and the largest chunk.
    pub fn validate(&self, max_chunk: u32) -> Result<()> {
        let b = format::BLOCK;
        if self.block_size < b || !self.block_size.is_multiple_of(b) || self.block_size > 64 << 20 {
            return Err(Error::option(
                "--block-size",
                format!(
                    "{} must be a multiple of {b} between {b} and 64 MiB",
                    self.block_size
                ),
            ));
        }
        let min_seg = 2 * max_chunk as u64 + (1 << 20);
        if self.segment_size < min_seg || !self.segment_size.is_multiple_of(b as u64) {
            return Err(Error::option(
                "--segment-size",
                format!(
                    "{} must be a multiple of {b} and at least {min_seg} (twice the largest chunk plus 1 MiB)",
                    self.segment_size
                ),
            ));
        }
        if !(1..=1024).contains(&self.queue_depth) {
            return Err(Error::option("--queue-depth", "must be between 1 and 1024"));
        }
        Ok(())
    }
}

/// One staging drive: a directory of segment files, or a raw drive (see [`device`]).
pub struct Drive {
    pub index: usize,
    pub path: PathBuf,
    pub full: AtomicBool,
    pub bytes_written: AtomicU64,
    /// Superblock and slot map of a raw drive; `None` for a directory.
    pub raw: Option<Mutex<device::RawDrive>>,
}

impl Drive {
    /// (capacity, used) bytes of a raw drive's slots; `None` for a directory.
    pub fn raw_usage(&self) -> Option<(u64, u64)> {
        let r = self.raw.as_ref()?.lock().ok()?;
        Some((
            r.sb.slot_count * r.sb.slot_size,
            r.used.len() as u64 * r.sb.slot_size,
        ))
    }
}

/// Opens a raw drive for staging: its superblock must belong to this appliance, have
/// slots of `segment_size`, and not be sealed for shipping. Slots of segments the
/// catalog knows on `path`, and the manifest's slots, are marked used.
pub fn open_raw_drive(
    catalog: &Catalog,
    appliance_id: &[u8; 16],
    segment_size: u64,
    path: &std::path::Path,
) -> Result<device::RawDrive> {
    let f = device::open(path, false)?;
    let sb = device::read_superblock(&f, path)?;
    let err = |message: String| Error::Drive {
        drive: path.to_path_buf(),
        message,
    };
    if sb.appliance_id != *appliance_id {
        return Err(err(format!(
            "belongs to appliance {}, not this one ({}); prepare it with `barge drives prepare`",
            hex::encode(sb.appliance_id),
            hex::encode(appliance_id)
        )));
    }
    if sb.slot_size != segment_size {
        return Err(err(format!(
            "its slots are {} bytes, this node's segments {segment_size}",
            sb.slot_size
        )));
    }
    if sb.is_sealed() && !sb.is_imported() {
        return Err(err(
            "is sealed for shipping: import it at the destination (`barge import`) before staging on it"
                .into(),
        ));
    }
    let mut used: std::collections::BTreeSet<u64> = sb.manifest_slots().collect();
    let want = path.display().to_string();
    for item in catalog.segments()? {
        let (_, rec) = item?;
        if rec.path == want
            && let Some(n) = sb.slot_of(rec.base)
        {
            used.insert(n);
        }
    }
    Ok(device::RawDrive {
        path: path.to_path_buf(),
        sb,
        used,
    })
}

/// Why a chunk could not be staged.
#[derive(Debug, Clone)]
pub struct StageFailure {
    /// Every drive is full: ingest should stop, not fail object after object.
    pub no_space: bool,
    pub message: String,
}

impl StageFailure {
    pub fn new(message: impl Into<String>) -> Self {
        StageFailure {
            no_space: false,
            message: message.into(),
        }
    }
}

/// The answer to "stage this chunk".
pub enum Ticket {
    /// Already durable in staging: nothing written.
    Dedup,
    /// Being written; resolves once durable (or failed, with the reason).
    Pending(tokio::sync::oneshot::Receiver<std::result::Result<(), StageFailure>>),
}

/// Counters of one staging session.
#[derive(Debug, Default)]
pub struct StageStats {
    pub chunks_new: AtomicU64,
    pub bytes_new: AtomicU64,
    pub bytes_sealed: AtomicU64,
    pub chunks_dedup: AtomicU64,
    pub bytes_dedup: AtomicU64,
}

type Waiters = Vec<tokio::sync::oneshot::Sender<std::result::Result<(), StageFailure>>>;

/// State shared by the stager and its drive writers.
pub(crate) struct Shared {
    pub catalog: Arc<Catalog>,
    pub master: Arc<MasterKey>,
    pub appliance_id: [u8; 16],
    pub settings: StagingSettings,
    pub drives: Vec<Arc<Drive>>,
    senders: Vec<crossbeam_channel::Sender<writer::Msg>>,
    inflight: Mutex<HashMap<ChunkId, Waiters>>,
    next_drive: AtomicUsize,
    pub stats: Arc<StageStats>,
    pub engine: Mutex<Option<EngineKind>>,
    /// Where new chunks' plaintext is kept for a drain in the same process, if any.
    recent: std::sync::OnceLock<Arc<RecentChunks>>,
}

impl Shared {
    /// Sends a chunk to the next drive with room (round-robin striping). Fails the chunk
    /// when every drive is full.
    pub(crate) fn route(&self, req: writer::WriteReq) {
        let n = self.drives.len();
        for _ in 0..n {
            let i = self.next_drive.fetch_add(1, Ordering::Relaxed) % n;
            if self.drives[i].full.load(Ordering::Relaxed) {
                continue;
            }
            match self.senders[i].send(writer::Msg::Chunk(req)) {
                Ok(()) => return,
                Err(crossbeam_channel::SendError(writer::Msg::Chunk(r))) => {
                    return self.complete(
                        &r.id,
                        Err(StageFailure::new(format!(
                            "staging drive {} has stopped",
                            self.drives[i].path.display()
                        ))),
                    );
                }
                Err(_) => return,
            }
        }
        let names: Vec<String> = self
            .drives
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        self.complete(
            &req.id,
            Err(StageFailure {
                no_space: true,
                message: Error::AllDrivesFull {
                    drives: names.join(", "),
                }
                .to_string(),
            }),
        );
    }

    /// Fails every chunk in flight (after a writer crashed).
    pub(crate) fn fail_all(&self, msg: &str) {
        let all: Vec<(ChunkId, Waiters)> = match self.inflight.lock() {
            Ok(mut m) => m.drain().collect(),
            Err(p) => p.into_inner().drain().collect(),
        };
        for (_, ws) in all {
            for w in ws {
                let _ = w.send(Err(StageFailure::new(msg)));
            }
        }
    }

    /// Resolves every waiter of a chunk. Called after the chunk's location is committed.
    pub(crate) fn complete(&self, id: &ChunkId, res: std::result::Result<(), StageFailure>) {
        let waiters = match self.inflight.lock() {
            Ok(mut m) => m.remove(id).unwrap_or_default(),
            Err(p) => p.into_inner().remove(id).unwrap_or_default(),
        };
        for w in waiters {
            let _ = w.send(res.clone());
        }
    }
}

/// Read-only view of a stager's drives, counters and I/O engine, for the status API; or
/// of the node's drives alone while no stager runs ([`StagingHandle::idle`]).
#[derive(Clone)]
pub struct StagingHandle {
    shared: Option<Arc<Shared>>,
    drives: Vec<Arc<Drive>>,
    stats: Arc<StageStats>,
    backend: SealBackend,
}

impl StagingHandle {
    /// The node's staging drives with nothing running (the daemon between jobs): their
    /// fill and health, no counters. A raw drive that cannot be opened is left out.
    pub fn idle(
        catalog: &Catalog,
        appliance_id: &[u8; 16],
        settings: &StagingSettings,
        paths: &[PathBuf],
    ) -> Self {
        let drives = paths
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                let raw = if device::is_raw(p) {
                    match open_raw_drive(catalog, appliance_id, settings.segment_size, p) {
                        Ok(r) => Some(Mutex::new(r)),
                        Err(e) => {
                            tracing::warn!("{e}");
                            return None;
                        }
                    }
                } else {
                    None
                };
                Some(Arc::new(Drive {
                    index,
                    path: p.clone(),
                    full: AtomicBool::new(false),
                    bytes_written: AtomicU64::new(0),
                    raw,
                }))
            })
            .collect();
        StagingHandle {
            shared: None,
            drives,
            stats: Arc::default(),
            backend: settings.seal_backend,
        }
    }

    pub fn stats(&self) -> &StageStats {
        &self.stats
    }

    pub fn drives(&self) -> &[Arc<Drive>] {
        &self.drives
    }

    pub fn engine(&self) -> Option<EngineKind> {
        self.shared
            .as_ref()?
            .engine
            .lock()
            .ok()
            .and_then(|g| g.clone())
    }

    /// The AES-256-GCM implementation sealing this run's chunks.
    pub fn seal_backend_name(&self) -> &'static str {
        match self.backend {
            crate::crypto::SealBackend::AwsLc => "aws-lc-rs",
            crate::crypto::SealBackend::RustCrypto => "aes-gcm crate",
        }
    }
}

/// The staging front door. Create with [`Stager::start`], feed with
/// [`Stager::stage_blocking`], end with [`Stager::finish`].
pub struct Stager {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Stager {
    /// Starts one writer thread per drive. Drive directories are created if missing.
    pub fn start(
        catalog: Arc<Catalog>,
        master: Arc<MasterKey>,
        appliance_id: [u8; 16],
        settings: StagingSettings,
        drive_paths: &[PathBuf],
    ) -> Result<Self> {
        if drive_paths.is_empty() {
            return Err(Error::option(
                "--staging",
                "at least one staging drive is needed",
            ));
        }
        let mut drives = vec![];
        let mut senders = vec![];
        let mut receivers = vec![];
        for (index, p) in drive_paths.iter().enumerate() {
            let raw = if device::is_raw(p) {
                Some(Mutex::new(open_raw_drive(
                    &catalog,
                    &appliance_id,
                    settings.segment_size,
                    p,
                )?))
            } else {
                std::fs::create_dir_all(p).map_err(|e| Error::Drive {
                    drive: p.clone(),
                    message: format!("cannot create staging directory: {e}"),
                })?;
                None
            };
            drives.push(Arc::new(Drive {
                index,
                path: p.clone(),
                full: AtomicBool::new(false),
                bytes_written: AtomicU64::new(0),
                raw,
            }));
            let (tx, rx) = crossbeam_channel::bounded(DRIVE_QUEUE);
            senders.push(tx);
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            catalog,
            master,
            appliance_id,
            settings,
            drives,
            senders,
            inflight: Mutex::new(HashMap::new()),
            next_drive: AtomicUsize::new(0),
            stats: Arc::default(),
            engine: Mutex::new(None),
            recent: Default::default(),
        });
        let mut threads = vec![];
        for (i, rx) in receivers.into_iter().enumerate() {
            let sh = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("barge-stage-{i}"))
                .spawn(move || writer::run(sh, i, rx))
                .map_err(|e| Error::task(format!("starting staging writer {i}"), e))?;
            threads.push(t);
        }
        Ok(Stager { shared, threads })
    }

    /// Stages one chunk: dedups it, or queues it for a drive. Blocks when the drive
    /// queues are full, so call it from a blocking thread.
    pub fn stage_blocking(&self, id: ChunkId, data: bytes::BytesMut) -> Result<Ticket> {
        let len = data.len() as u64;
        let rx = {
            let mut m = self
                .shared
                .inflight
                .lock()
                .map_err(|_| Error::task("stager", "lock poisoned"))?;
            if let Some(w) = m.get_mut(&id) {
                let (tx, rx) = tokio::sync::oneshot::channel();
                w.push(tx);
                self.count_dedup(len);
                return Ok(Ticket::Pending(rx));
            }
            if self.shared.catalog.get_chunk(&id)?.is_some() {
                self.count_dedup(len);
                return Ok(Ticket::Dedup);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            m.insert(id, vec![tx]);
            rx
        };
        if let Some(r) = self.shared.recent.get() {
            r.add(id, &data);
        }
        self.shared.route(writer::WriteReq { id, data });
        Ok(Ticket::Pending(rx))
    }

    /// Keeps the plaintext of each new small chunk in `recent` from now on (before it is
    /// sealed in place), for a drain running in the same process.
    pub fn keep_recent(&self, recent: Arc<RecentChunks>) {
        let _ = self.shared.recent.set(recent);
    }

    fn count_dedup(&self, len: u64) {
        self.shared
            .stats
            .chunks_dedup
            .fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .bytes_dedup
            .fetch_add(len, Ordering::Relaxed);
    }

    pub fn stats(&self) -> &StageStats {
        &self.shared.stats
    }

    /// The counters, shared (for the status API while the stager runs).
    pub fn stats_handle(&self) -> Arc<StageStats> {
        self.shared.stats.clone()
    }

    pub fn drives(&self) -> &[Arc<Drive>] {
        &self.shared.drives
    }

    /// The I/O engine the writers use (known once a writer has started).
    pub fn engine(&self) -> Option<EngineKind> {
        self.shared.engine.lock().ok().and_then(|g| g.clone())
    }

    /// A view of the drives and counters that outlives the stager (status API).
    pub fn handle(&self) -> StagingHandle {
        StagingHandle {
            shared: Some(self.shared.clone()),
            drives: self.shared.drives.clone(),
            stats: self.shared.stats.clone(),
            backend: self.shared.settings.seal_backend,
        }
    }

    /// Commits and seals every open segment, then stops the writers.
    pub fn finish(self) -> Result<()> {
        for tx in &self.shared.senders {
            let _ = tx.send(writer::Msg::Shutdown);
        }
        for t in self.threads {
            t.join()
                .map_err(|_| Error::task("a staging writer thread", "panicked"))?;
        }
        Ok(())
    }
}

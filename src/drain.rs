//! Stage 3: rebuild staged objects from their chunks and write them to the destination.
//!
//! Per object: chunks are read ahead (io_uring), authenticated and decrypted, hashed into
//! the object's BLAKE3 and streamed to [`Destination::put`]. If the hash differs from the
//! catalog's, the body stream ends in an error and the destination discards the upload.
//! Only after `put` returns is the object marked drained.
//!
//! An object whose content (BLAKE3) the run has already written is made a server-side
//! copy of that object ([`Destination::copy`], checked against its ETag) instead of
//! being sent again: duplicates cost the destination one request, not their bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use crate::budget::ByteBudget;

use crate::backend::throttle::Throttle;
use crate::backend::{Body, Destination, Placed, UploadJournal};
use crate::catalog::{
    Catalog, Landed, META_OPEN_UPLOADS, ObjectRecord, ObjectState, RunRecord, unix_now,
};
use crate::error::{Error, Result};
use crate::monitor::{Monitor, QueueGauge};
use crate::node::Node;
use crate::object::{ObjectKey, ObjectMeta};
use crate::staging::{ChunkReader, RecentChunks};

/// Chunks read ahead per object being drained.
pub const READ_AHEAD: usize = 4;
/// Objects queued for the drain workers.
pub const DRAIN_QUEUE: usize = 256;
/// Drain workers without `--concurrency`: as many as an endpoint's window may grow to
/// (`--max-concurrency`' default), so the window, not a fixed worker count, decides how
/// many requests are in flight; small objects into a directory are written that many
/// at a time.
pub const DEFAULT_DRAIN_WORKERS: usize = 64;
/// Bytes the objects being drained may hold at once (bodies gathered for a PUT, chunks
/// read ahead): memory is bounded by bytes in flight, not by the number of workers.
pub const DRAIN_BYTE_BUDGET: u64 = 512 << 20;
/// What one object costs against [`DRAIN_BYTE_BUDGET`] at least.
const DRAIN_MIN_COST: u64 = 16 << 10;
/// What one object costs at most: a PUT body below the largest SLO/multipart threshold
/// (128 MiB) plus the chunks read ahead; larger objects are sent a segment at a time.
const DRAIN_MAX_COST: u64 = 160 << 20;

/// How often a drain syncs the catalog's write-ahead log, making every drained mark
/// written since durable in one fsync (group commit) instead of one fsync per object.
pub const MARK_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// At most one sync of a destination that is not durable on put (a directory) per this
/// interval. A sync covers every object written before it began, so the wait gathers a
/// batch: one `syncfs` (a journal commit and a cache flush) for hundreds of small files
/// instead of one per handful. The first sync of a run is not delayed.
pub const SYNC_MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Objects written and waiting for their sync, at most; a worker that finds the queue
/// full waits (the records are small, the byte budget already counts the bodies).
const UNSYNCED_MAX: usize = 4096;

/// Objects at least this large whose content the run has already written are copied
/// server-side ([`Destination::copy`]) instead of being sent again; below it a copy
/// request saves less than it costs.
pub const COPY_MIN_SIZE: u64 = 256 << 10;
/// Most contents remembered for server-side copies (a BLAKE3 and a location, about
/// 150 bytes each). Past it the index is emptied and starts again: duplicates of
/// forgotten content are sent in full, never lost.
pub const COPY_INDEX_MAX: usize = 1 << 20;

/// The key and size of an object queued for the drain workers: the size is what the
/// byte budget needs before the worker re-reads the record.
pub type Queued = (ObjectKey, u64);

/// What a drain takes from an ingest running beside it in the same process
/// (`barge migrate`): each object the ingest staged, and the plaintext of the chunks it
/// staged last.
pub struct Follow {
    pub staged: mpsc::Receiver<Queued>,
    pub recent: Arc<RecentChunks>,
}

/// The ingest's side of a [`Follow`].
#[derive(Debug, Clone)]
pub struct Feed {
    pub staged: mpsc::Sender<Queued>,
    pub recent: Arc<RecentChunks>,
}

/// A connected [`Feed`] and [`Follow`].
pub fn follow() -> (Feed, Follow) {
    let (tx, rx) = mpsc::channel(DRAIN_QUEUE);
    let recent = Arc::new(RecentChunks::default());
    let feed = Feed {
        staged: tx,
        recent: recent.clone(),
    };
    (feed, Follow { staged: rx, recent })
}

/// Options of `barge drain`.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Objects written at once, at most (`--concurrency`); the byte budget and the
    /// destination's window decide how many run.
    pub concurrency: usize,
    /// Live counters, queues and controls (status API, progress, `barge tui`).
    pub monitor: Arc<Monitor>,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            concurrency: DEFAULT_DRAIN_WORKERS,
            monitor: Arc::default(),
        }
    }
}

/// What a drain run did.
#[derive(Debug, Default, Serialize)]
pub struct DrainSummary {
    pub drained: u64,
    pub bytes: u64,
    pub failed: u64,
    pub failures: Vec<(String, String)>,
    /// Failed objects whose staged copy was corrupt (they need a fetch from the source).
    pub rot: u64,
    /// Of the drained: objects (and bytes) written as server-side copies of content the
    /// run had already sent, instead of sending it again.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Chunks read to rebuild objects: from memory (a migrate's drain takes chunks its
    /// ingest staged moments ago there) and back from the staging drives.
    pub chunks_from_memory: u64,
    pub chunks_from_staging: u64,
    /// Why the drain stopped taking objects (its destination went down); they stay
    /// staged for the next run.
    pub stopped_early: Option<String>,
    /// The destination endpoint's requests, retries, throttles and final window.
    pub endpoint: Option<crate::backend::throttle::ThrottleStats>,
}

impl DrainSummary {
    /// Nothing failed and the run did not stop early: everything staged is drained.
    pub fn complete(&self) -> bool {
        self.failed == 0 && self.stopped_early.is_none()
    }
}

/// What the run has written, by content, for server-side copies of duplicates.
#[derive(Default)]
struct Written {
    map: std::sync::Mutex<HashMap<[u8; 32], Slot>>,
}

enum Slot {
    /// A worker is sending this content; the others wait for it rather than send the
    /// same bytes alongside.
    Sending(watch::Receiver<Option<Placed>>),
    Sent(Placed),
}

/// What a worker does with an object whose content may be at the destination already.
enum Claim {
    Copy(Placed),
    Wait(watch::Receiver<Option<Placed>>),
    /// Send it; report where it landed through the sender.
    Send(watch::Sender<Option<Placed>>),
}

impl Written {
    fn claim(&self, h: &[u8; 32]) -> Claim {
        let Ok(mut m) = self.map.lock() else {
            return Claim::Send(watch::channel(None).0);
        };
        match m.get(h) {
            Some(Slot::Sent(p)) => Claim::Copy(p.clone()),
            Some(Slot::Sending(rx)) => Claim::Wait(rx.clone()),
            None => {
                if m.len() >= COPY_INDEX_MAX {
                    m.retain(|_, s| matches!(s, Slot::Sending(_)));
                }
                let (tx, rx) = watch::channel(None);
                m.insert(*h, Slot::Sending(rx));
                Claim::Send(tx)
            }
        }
    }

    /// The sender's outcome: where the content landed, or None (failed, or the store
    /// cannot copy it), after which a waiter sends it itself.
    fn sent(&self, h: &[u8; 32], tx: watch::Sender<Option<Placed>>, placed: Option<Placed>) {
        if let Ok(mut m) = self.map.lock() {
            match &placed {
                Some(p) => m.insert(*h, Slot::Sent(p.clone())),
                None => m.remove(h),
            };
        }
        if placed.is_some() {
            tx.send_replace(placed);
        }
    }

    /// A copy from this content failed: the next duplicate sends its bytes again.
    fn forget(&self, h: &[u8; 32], from: &Placed) {
        if let Ok(mut m) = self.map.lock()
            && matches!(m.get(h), Some(Slot::Sent(p)) if p == from)
        {
            m.remove(h);
        }
    }
}

/// How an object reached the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Sent,
    Copied,
}

/// Writes one object: as a server-side copy when the run has already written the same
/// content (waiting for a worker that is writing it now), else by sending its body.
/// Returns how, and what the store answered for it (None: a store that tells nothing).
async fn deliver(
    dest: &dyn Destination,
    reader: &ChunkReader,
    written: &Written,
    key: &ObjectKey,
    rec: &ObjectRecord,
    meta: &ObjectMeta,
) -> Result<(Delivery, Option<Landed>)> {
    let landed = |p: &Placed| Landed {
        size: meta.size,
        etag: p.etag.clone(),
    };
    let content = rec
        .blake3
        .filter(|_| rec.size >= COPY_MIN_SIZE && dest.can_copy());
    if let Some(h) = content {
        loop {
            match written.claim(&h) {
                Claim::Copy(from) => match dest.copy(&from, meta).await {
                    // The copy was checked to carry its source's ETag.
                    Ok(()) => return Ok((Delivery::Copied, Some(landed(&from)))),
                    Err(e) => {
                        tracing::warn!("server-side copy failed, sending the body instead: {e}");
                        written.forget(&h, &from);
                        break;
                    }
                },
                // Woken when the sender is done (or gone): claim again.
                Claim::Wait(mut rx) => {
                    let _ = rx.wait_for(Option::is_some).await;
                }
                Claim::Send(tx) => {
                    let r = dest.put(meta, object_body(reader, key, rec)).await;
                    let placed = r.as_ref().ok().cloned().flatten();
                    written.sent(&h, tx, placed.clone().filter(|p| p.copyable));
                    return r.map(|_| (Delivery::Sent, placed.as_ref().map(landed)));
                }
            }
        }
    }
    let placed = dest.put(meta, object_body(reader, key, rec)).await?;
    Ok((Delivery::Sent, placed.as_ref().map(landed)))
}

/// This drain's own counts (the monitor's may span both drains of one migrate), bumped
/// together with the monitor's.
#[derive(Default)]
struct Tally {
    drained: AtomicU64,
    bytes: AtomicU64,
    copied: AtomicU64,
    copied_bytes: AtomicU64,
    failed: AtomicU64,
    rot: AtomicU64,
    /// The first [`crate::ingest::MAX_FAILURES_SHOWN`] failures: key and reason.
    failures: std::sync::Mutex<Vec<(String, String)>>,
}

impl Tally {
    fn delivered(&self, m: &Monitor, size: u64, how: Delivery) {
        self.drained.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        m.drain.drained.fetch_add(1, Ordering::Relaxed);
        m.drain.bytes_drained.fetch_add(size, Ordering::Relaxed);
        if how == Delivery::Copied {
            self.copied.fetch_add(1, Ordering::Relaxed);
            self.copied_bytes.fetch_add(size, Ordering::Relaxed);
            m.drain.copied.fetch_add(1, Ordering::Relaxed);
            m.drain.bytes_copied.fetch_add(size, Ordering::Relaxed);
        }
    }

    fn failed(&self, m: &Monitor, key: &ObjectKey, e: &Error) {
        tracing::warn!("drain {key}: {e}");
        self.failed.fetch_add(1, Ordering::Relaxed);
        m.drain.failed.fetch_add(1, Ordering::Relaxed);
        m.error("drain", &key.to_string(), &e.to_string());
        if let Ok(mut f) = self.failures.lock()
            && f.len() < crate::ingest::MAX_FAILURES_SHOWN
        {
            f.push((key.to_string(), e.to_string()));
        }
    }
}

/// The object as the destination is told of it, from its record.
fn record_meta(key: &ObjectKey, rec: &ObjectRecord) -> ObjectMeta {
    ObjectMeta {
        key: key.clone(),
        size: rec.size,
        version: rec.version.clone(),
        content_type: rec.content_type.clone(),
        user_meta: rec.user_meta.clone(),
        modified: None,
    }
}

/// Whether drain should (re)try this object.
fn wants_drain(rec: &ObjectRecord) -> bool {
    match &rec.state {
        ObjectState::Staged => true,
        ObjectState::Failed { stage, .. } => stage == "drain" && rec.blake3.is_some(),
        _ => false,
    }
}

/// Builds the verified plaintext body of a staged object.
pub fn object_body(reader: &ChunkReader, key: &ObjectKey, rec: &ObjectRecord) -> Body {
    let expect = rec.blake3;
    let key = key.clone();
    let reader = reader.clone();
    let reads = futures::stream::iter(rec.chunks.clone())
        .map(move |c| {
            let reader = reader.clone();
            async move { reader.read_chunk(&c.id).await }
        })
        .buffered(READ_AHEAD);
    let state = (Box::pin(reads), blake3::Hasher::new(), false);
    Box::pin(futures::stream::unfold(
        state,
        move |(mut reads, mut h, done)| {
            let key = key.clone();
            async move {
                if done {
                    return None;
                }
                match reads.next().await {
                    Some(Ok(data)) => {
                        h.update(&data);
                        Some((Ok(data), (reads, h, false)))
                    }
                    Some(Err(e)) => Some((Err(Error::object(&key, e)), (reads, h, true))),
                    None => {
                        let got = *h.finalize().as_bytes();
                        if Some(got) == expect {
                            None
                        } else {
                            let err = Error::object(
                                &key,
                                format!(
                                    "rebuilt content has BLAKE3 {}, catalog says {}: not written",
                                    hex::encode(got),
                                    expect.map(hex::encode).unwrap_or_else(|| "nothing".into())
                                ),
                            );
                            Some((Err(err), (reads, h, true)))
                        }
                    }
                }
            }
        },
    ))
}

/// Drains every staged object of the node into `dest`.
pub async fn run(
    node: &Node,
    dest: Arc<dyn Destination>,
    opts: &DrainOptions,
) -> Result<DrainSummary> {
    run_following(node, dest, opts, None).await
}

/// Drains every staged object, then, with `follow`, each object an ingest running in
/// the same process reports as staged, until that ingest ends (`barge migrate`: fetch,
/// stage and drain at the same time). An object delivered twice (scan and follow) is
/// written once: a worker re-reads its record and skips it unless it still wants a
/// drain, and keys in flight are not taken by a second worker; a delivery that finds
/// its key taken is drained again by whoever releases the key, so a newer version
/// staged meanwhile is written in this run.
pub async fn run_following(
    node: &Node,
    dest: Arc<dyn Destination>,
    opts: &DrainOptions,
    follow: Option<Follow>,
) -> Result<DrainSummary> {
    let monitor = opts.monitor.clone();
    let (follow, recent) = follow.map(|f| (f.staged, f.recent)).unzip();
    let reads_before = monitor.drain.chunk_reads.counts();
    let (reader, run_id) = start(node, &*dest, &monitor, recent).await?;
    let (tx, rx) = mpsc::channel::<Queued>(DRAIN_QUEUE);
    let drain_q = monitor.queue("drain", DRAIN_QUEUE);
    let scanner = spawn_scanner(
        node.catalog.clone(),
        tx.clone(),
        monitor.clone(),
        drain_q.clone(),
    );
    // The follower takes the last sender (or drops it when there is nothing to follow):
    // the workers end when the scanner and the follower have both dropped theirs.
    let follower = spawn_follower(follow, drain_q.clone(), tx);
    let shared = Arc::new(Shared {
        rx: Mutex::new(rx),
        dest: dest.clone(),
        reader,
        catalog: node.catalog.clone(),
        busy: Default::default(),
        monitor,
        drain_q,
        budget: ByteBudget::new(DRAIN_BYTE_BUDGET),
        tally: Tally::default(),
        written: Written::default(),
    });
    let (unsynced, unsynced_rx) = mpsc::channel(UNSYNCED_MAX);
    let committer = tokio::spawn(shared.clone().commit_loop(unsynced_rx));
    let workers: Vec<_> = (0..opts.concurrency.max(1))
        .map(|_| tokio::spawn(shared.clone().work(dest.throttle(), unsynced.clone())))
        .collect();
    drop(unsynced);
    let marks = spawn_mark_sync(node.catalog.clone());
    let joined = join(&shared, workers, committer, follower, scanner).await;
    marks.abort();
    joined?;
    save_layout(node, &*dest)?;
    node.catalog.sync()?;
    let (memory, staging) = shared.monitor.drain.chunk_reads.counts();
    let reads = (memory - reads_before.0, staging - reads_before.1);
    summarise(node, &*dest, run_id, &shared.tally, reads)
}

/// Syncs the catalog's WAL every [`MARK_SYNC_INTERVAL`] until aborted: the drained marks
/// of that window become durable together. A failed sync is logged; the one at the end of
/// the run reports it.
fn spawn_mark_sync(catalog: Arc<Catalog>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MARK_SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let c = catalog.clone();
            let synced = tokio::task::spawn_blocking(move || c.sync())
                .await
                .map_err(|e| Error::task("syncing drained marks", e))
                .and_then(|r| r);
            if let Err(e) = synced {
                tracing::warn!("syncing drained marks: {e}");
            }
        }
    })
}

/// Setup: the chunk reader, the run's catalog record, the monitor's destination and the
/// removal of uploads a crash interrupted. Returns the reader and the run's id.
async fn start(
    node: &Node,
    dest: &dyn Destination,
    monitor: &Monitor,
    recent: Option<Arc<RecentChunks>>,
) -> Result<(ChunkReader, u64)> {
    let reader = ChunkReader::new(
        node.catalog.clone(),
        node.master.clone(),
        node.staging.settings.seal_backend,
        node.staging.settings.queue_depth.max(4) * 2,
        recent,
        monitor.drain.chunk_reads.clone(),
    );
    refuse_another_destination(node, &dest.url())?;
    let run_id = node.catalog.start_run(&RunRecord {
        command: "drain".into(),
        destination: Some(dest.url()),
        started: unix_now(),
        ..Default::default()
    })?;
    monitor.set_destination(&dest.url(), dest.throttle());
    dest.set_journal(Arc::new(CatalogJournal {
        catalog: node.catalog.clone(),
        lock: Default::default(),
    }));
    let leftovers = dest.cleanup().await?;
    if leftovers > 0 {
        tracing::warn!(
            "removed {leftovers} interrupted uploads from {}",
            dest.url()
        );
    }
    Ok((reader, run_id))
}

/// The upload journal in the catalog (meta `open_uploads`: destination URL → key →
/// upload ids), one synced write per change; a lock keeps each read-modify-write whole.
struct CatalogJournal {
    catalog: Arc<Catalog>,
    lock: std::sync::Mutex<()>,
}

type OpenUploads =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>>;

impl CatalogJournal {
    fn read(&self) -> Result<OpenUploads> {
        let all: Option<OpenUploads> = self.catalog.meta_json(META_OPEN_UPLOADS, "open uploads")?;
        Ok(all.unwrap_or_default())
    }

    fn change(&self, f: impl FnOnce(&mut OpenUploads)) -> Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = self.read()?;
        f(&mut all);
        all.retain(|_, keys| {
            keys.retain(|_, ids| !ids.is_empty());
            !keys.is_empty()
        });
        self.catalog
            .put_meta_json(META_OPEN_UPLOADS, "open uploads", &all)
    }
}

impl UploadJournal for CatalogJournal {
    fn started(&self, dest: &str, key: &str, upload_id: &str) -> Result<()> {
        self.change(|all| {
            let ids = all
                .entry(dest.into())
                .or_default()
                .entry(key.into())
                .or_default();
            ids.push(upload_id.into());
        })
    }

    fn ended(&self, dest: &str, key: &str, upload_id: &str) -> Result<()> {
        self.change(|all| {
            if let Some(ids) = all.get_mut(dest).and_then(|k| k.get_mut(key)) {
                ids.retain(|i| i != upload_id);
            }
        })
    }

    fn open(&self, dest: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .read()?
            .remove(dest)
            .into_iter()
            .flatten()
            .flat_map(|(k, ids)| ids.into_iter().map(move |i| (k.clone(), i)))
            .collect())
    }
}

/// A state directory's drained state belongs to the destination it was drained to:
/// drained objects are never written again, so a drain to another destination would
/// leave them out and still end "done". Refused, naming the recorded destination, when
/// an earlier drain to another URL drained objects.
fn refuse_another_destination(node: &Node, url: &str) -> Result<()> {
    let runs = node.catalog.runs()?;
    let earlier = runs.iter().rev().find_map(|(_, r)| {
        let drained = r.counters.iter().any(|(k, n)| k == "drained" && *n > 0);
        let d = r.destination.as_deref()?;
        (r.command == "drain" && drained && d != url).then(|| d.to_string())
    });
    match earlier {
        None => Ok(()),
        Some(d) => Err(Error::option(
            "--dest",
            format!(
                "this state directory drained its objects to {d}; they are not written again, so a drain to {url} would leave them out. Drain to {d}, or move to {url} with a new state directory (barge init)"
            ),
        )),
    }
}

/// Queues every object of the catalog that wants a drain, on the blocking pool.
fn spawn_scanner(
    catalog: Arc<Catalog>,
    scan_tx: mpsc::Sender<Queued>,
    scan_mon: Arc<Monitor>,
    scan_q: Arc<QueueGauge>,
) -> JoinHandle<Result<()>> {
    tokio::task::spawn_blocking(move || -> Result<()> {
        for item in catalog.objects()? {
            let (k, rec) = item?;
            if wants_drain(&rec) {
                if scan_tx.blocking_send((k, rec.size)).is_err() {
                    break;
                }
                scan_q.push();
                scan_mon.drain.scanned.fetch_add(1, Ordering::Relaxed);
                scan_mon
                    .drain
                    .bytes_scanned
                    .fetch_add(rec.size, Ordering::Relaxed);
            }
        }
        Ok(())
    })
}

/// Queues each object a running ingest reports as staged, until that ingest ends; with
/// nothing to follow, drops `tx` at once. Nothing is read here: the worker that takes
/// the object reads its record and skips it if it no longer wants a drain.
fn spawn_follower(
    follow: Option<mpsc::Receiver<Queued>>,
    q: Arc<QueueGauge>,
    tx: mpsc::Sender<Queued>,
) -> Option<JoinHandle<()>> {
    let mut f = follow?;
    Some(tokio::spawn(async move {
        while let Some(item) = f.recv().await {
            if tx.send(item).await.is_err() {
                break;
            }
            q.push();
        }
    }))
}

/// An object written to a destination that is not durable on put, waiting for the
/// group sync after which it is marked drained (its key stays taken until then).
struct Unsynced {
    key: ObjectKey,
    rec: ObjectRecord,
    how: Delivery,
}

/// What the drain workers share: the queue, the destination and the run's tallies.
struct Shared {
    rx: Mutex<mpsc::Receiver<Queued>>,
    dest: Arc<dyn Destination>,
    reader: ChunkReader,
    catalog: Arc<Catalog>,
    /// Keys taken by a worker (or waiting for the committer), each with whether another
    /// delivery of it came meanwhile: the one that releases the key then drains it again
    /// from its record as it is by then (a newer version an ingest staged meanwhile).
    busy: std::sync::Mutex<HashMap<ObjectKey, bool>>,
    monitor: Arc<Monitor>,
    drain_q: Arc<QueueGauge>,
    /// [`DRAIN_BYTE_BUDGET`].
    budget: ByteBudget,
    tally: Tally,
    written: Written,
}

impl Shared {
    /// One worker: takes queued objects until the queue ends or the destination is down.
    /// Objects written to a destination that is not durable on put go to `unsynced`.
    async fn work(
        self: Arc<Self>,
        throttle: Option<Arc<Throttle>>,
        unsynced: mpsc::Sender<Unsynced>,
    ) {
        loop {
            let next = self.rx.lock().await.recv().await;
            let Some((key, size)) = next else { break };
            self.drain_q.pop();
            self.monitor.gate().await;
            if throttle.as_ref().is_some_and(|t| t.down().is_some()) {
                // The objects not taken stay Staged for the next run.
                break;
            }
            let _held = self
                .budget
                .hold(size.clamp(DRAIN_MIN_COST, DRAIN_MAX_COST))
                .await;
            self.drain_one(key, &unsynced).await;
        }
    }

    /// Takes the key (or leaves it to the one that has it), then drains the object from
    /// its record as it is now, if it still wants a drain, and again for each delivery
    /// that came meanwhile. The key is released here unless the object waits for its
    /// group sync (the committer releases it then).
    async fn drain_one(&self, key: ObjectKey, unsynced: &mpsc::Sender<Unsynced>) {
        if !self.take(&key) {
            return;
        }
        loop {
            if let Some(waiting) = self.write_current(&key).await {
                match unsynced.send(waiting).await {
                    Ok(()) => return,
                    Err(e) => {
                        let err = Error::task("the drain's group sync", "it has stopped");
                        self.record_failure(&e.0.key, &e.0.rec, &err);
                    }
                }
            }
            if !self.release(&key) {
                return;
            }
        }
    }

    /// Takes `key`; false if it was taken already (its holder is told to drain it again).
    fn take(&self, key: &ObjectKey) -> bool {
        let Ok(mut b) = self.busy.lock() else {
            return false;
        };
        match b.get_mut(key) {
            Some(again) => {
                *again = true;
                false
            }
            None => {
                b.insert(key.clone(), false);
                true
            }
        }
    }

    /// Releases `key`, unless it was delivered again while taken: then it stays taken and
    /// the caller drains it again (true).
    fn release(&self, key: &ObjectKey) -> bool {
        let Ok(mut b) = self.busy.lock() else {
            return false;
        };
        match b.get_mut(key) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                b.remove(key);
                false
            }
        }
    }

    /// Writes the object as its record is now, if it still wants a drain, and only then
    /// marks it drained: at once where a put is durable; else it is returned, to be
    /// marked after the group sync that covers it. A failure is tallied and recorded.
    async fn write_current(&self, key: &ObjectKey) -> Option<Unsynced> {
        // Under the key's fence, re-read: a key the gateway wrote or deleted is the
        // application's from then on, and a gateway write waits for this one to end.
        let _fence = self.catalog.fence(key).await;
        match self.catalog.gateway_record(key) {
            Ok(None) => {}
            Ok(Some(_)) => {
                if let Err(e) = self.catalog.forget_for_gateway(key) {
                    tracing::warn!("object {key}: {e}");
                }
                return None;
            }
            Err(e) => {
                tracing::warn!("object {key}: {e}");
                return None;
            }
        }
        let rec = match self.catalog.get_object(key) {
            Ok(Some(rec)) if wants_drain(&rec) => rec,
            _ => return None,
        };
        let meta = record_meta(key, &rec);
        crate::failpoint::point("drain.before_put");
        match deliver(&*self.dest, &self.reader, &self.written, key, &rec, &meta).await {
            Ok((how, landed)) => {
                crate::failpoint::point("drain.after_put");
                // What the destination now holds, whatever the record says by now: what
                // a sync's delete of the key expects to find there.
                if let Some(Err(e)) = landed.map(|l| self.catalog.set_placed(key, &l)) {
                    self.record_failure(key, &rec, &e);
                    return None;
                }
                if !self.dest.durable_on_put() {
                    let key = key.clone();
                    return Some(Unsynced { key, rec, how });
                }
                self.mark(key, &rec, how);
            }
            Err(e) => self.record_failure(key, &rec, &e),
        }
        None
    }

    /// Invariant 7: an object is marked drained only once it is durable at the
    /// destination (its put returned on a durable store, or a group sync covered it).
    fn mark(&self, key: &ObjectKey, rec: &ObjectRecord, how: Delivery) {
        match self.catalog.mark_drained(key, rec.blake3) {
            Ok(()) => {
                crate::failpoint::point("drain.after_mark");
                self.tally.delivered(&self.monitor, rec.size, how);
            }
            Err(e) => self.record_failure(key, rec, &e),
        }
    }

    /// The group sync of a destination that is not durable on put: takes the objects
    /// the workers wrote, syncs the destination at most once per [`SYNC_MIN_INTERVAL`]
    /// for everything written before the sync began, then marks those drained (or failed,
    /// when the sync failed). Ends once every worker has ended and all is settled.
    /// A key delivered again while it waited is written again here, from its record as
    /// it is then, and joins the next sync.
    async fn commit_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Unsynced>) {
        let mut last: Option<tokio::time::Instant> = None;
        let mut carried: Vec<Unsynced> = vec![];
        loop {
            let mut batch = std::mem::take(&mut carried);
            if batch.is_empty() {
                let Some(first) = rx.recv().await else { break };
                batch.push(first);
            }
            if let Some(t) = last {
                tokio::time::sleep_until(t + SYNC_MIN_INTERVAL).await;
            }
            while let Ok(u) = rx.try_recv() {
                batch.push(u);
            }
            last = Some(tokio::time::Instant::now());
            crate::failpoint::point("drain.before_sync");
            let synced = self.dest.sync().await;
            let me = self.clone();
            let again = match tokio::task::spawn_blocking(move || me.settle(batch, synced)).await {
                Ok(again) => again,
                Err(e) => {
                    tracing::error!("settling a group sync: {e}");
                    vec![]
                }
            };
            for key in again {
                carried.extend(self.redrain(key).await);
            }
        }
    }

    /// Marks a synced batch drained, or each of its objects failed with the sync's
    /// error; releases their keys. Returns the keys delivered again meanwhile (still
    /// taken).
    fn settle(&self, batch: Vec<Unsynced>, synced: Result<()>) -> Vec<ObjectKey> {
        let mut again = vec![];
        for u in batch {
            match &synced {
                Ok(()) => self.mark(&u.key, &u.rec, u.how),
                Err(e) => self.record_failure(&u.key, &u.rec, e),
            }
            if self.release(&u.key) {
                again.push(u.key);
            }
        }
        again
    }

    /// The committer's drain of a key delivered again while it waited (a newer version
    /// an ingest staged meanwhile): written now, to wait for the next sync; the key is
    /// released if there is nothing (more) to write.
    async fn redrain(&self, key: ObjectKey) -> Option<Unsynced> {
        loop {
            if let Some(waiting) = self.write_current(&key).await {
                return Some(waiting);
            }
            if !self.release(&key) {
                return None;
            }
        }
    }

    /// Tallies a failed drain and records it on the object: a drain failure, or, when
    /// the staged copy turned out corrupt, a staging one (fetch it from the source again).
    /// A failure while the destination is taken for down is not the object's fault: it
    /// stays staged for the run after the endpoint is back (this one ends NOT DONE naming
    /// the endpoint), unless its staged copy turned out corrupt.
    fn record_failure(&self, key: &ObjectKey, rec: &ObjectRecord, e: &Error) {
        // A chunk whose staged copy was found corrupt has lost its location: the object
        // must come from the source again.
        let lost = rec
            .chunks
            .iter()
            .any(|c| matches!(self.catalog.get_chunk(&c.id), Ok(None)));
        if !lost && self.dest.throttle().is_some_and(|t| t.down().is_some()) {
            tracing::debug!("object {key}: {e} (destination down: left staged)");
            return;
        }
        self.tally.failed(&self.monitor, key, e);
        let state = if lost {
            self.tally.rot.fetch_add(1, Ordering::Relaxed);
            ObjectState::Failed {
                stage: "staging".into(),
                reason: format!(
                    "{e}; the staged copy is corrupt: it is fetched again from the source if the source still has it"
                ),
            }
        } else {
            ObjectState::Failed {
                stage: "drain".into(),
                reason: e.to_string(),
            }
        };
        let _ = self.catalog.set_object_state(key, state);
    }
}

/// Waits for the workers, then the follower and the scanner; fails if the scan did.
async fn join(
    shared: &Shared,
    workers: Vec<JoinHandle<()>>,
    committer: JoinHandle<()>,
    follower: Option<JoinHandle<()>>,
    scanner: JoinHandle<Result<()>>,
) -> Result<()> {
    // The workers end when the scanner and the follower have both dropped their senders,
    // or early, when the destination is down. Then nobody takes from the queue any more:
    // closing it ends a scanner or follower blocked on a full queue (they used to wait
    // forever once more than DRAIN_QUEUE objects were left). The committer ends with the
    // workers' senders, after the last group sync.
    for w in workers {
        let _ = w.await;
    }
    let _ = committer.await;
    {
        let mut rx = shared.rx.lock().await;
        rx.close();
        // What is left in the queue is never taken: the gauge forgets it.
        while rx.try_recv().is_ok() {
            shared.drain_q.pop();
        }
    }
    if let Some(f) = follower {
        let _ = f.await;
    }
    scanner
        .await
        .map_err(|e| Error::task("drain catalog scan", e))?
}

/// Saves the destination's container mapping (if it has one), in the catalog and as a
/// lookup file beside it.
fn save_layout(node: &Node, dest: &dyn Destination) -> Result<()> {
    if let Some(layout) = dest.layout() {
        let bytes = serde_json::to_vec_pretty(&layout)
            .map_err(|e| Error::encode("the destination layout", e))?;
        node.catalog
            .meta_put_sync(crate::catalog::META_DEST_LAYOUT, &bytes)?;
        let p = node.state_dir.join("container-map.json");
        std::fs::write(&p, &bytes)
            .map_err(|e| Error::io("writing the container lookup file", &p, e))?;
    }
    Ok(())
}

/// Summarise: the run's figures, recorded in its catalog run record.
fn summarise(
    node: &Node,
    dest: &dyn Destination,
    run_id: u64,
    tally: &Tally,
    (chunks_from_memory, chunks_from_staging): (u64, u64),
) -> Result<DrainSummary> {
    let summary = DrainSummary {
        drained: tally.drained.load(Ordering::Relaxed),
        bytes: tally.bytes.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        failures: tally.failures.lock().map(|f| f.clone()).unwrap_or_default(),
        rot: tally.rot.load(Ordering::Relaxed),
        copied: tally.copied.load(Ordering::Relaxed),
        copied_bytes: tally.copied_bytes.load(Ordering::Relaxed),
        chunks_from_memory,
        chunks_from_staging,
        // A destination taken for down stopped the workers; what they did not take
        // stays staged.
        stopped_early: dest
            .throttle()
            .and_then(|t| t.down_error())
            .map(|e| format!("destination {e}")),
        endpoint: dest.stats(),
    };
    node.catalog.finish_run(
        run_id,
        vec![
            ("drained".into(), summary.drained),
            ("bytes".into(), summary.bytes),
            ("failed".into(), summary.failed),
        ],
        match (&summary.stopped_early, summary.failed) {
            (Some(why), _) => format!("stopped: {why}"),
            (None, 0) => "ok".into(),
            (None, n) => format!("{n} objects failed"),
        },
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(n: u8) -> Placed {
        Placed {
            location: format!("obj{n}"),
            etag: format!("etag{n}"),
            copyable: true,
        }
    }

    /// A drain of a directory whose reader serves the chunks kept in `recent`.
    fn shared_for(dir: &std::path::Path, recent: Arc<RecentChunks>) -> Arc<Shared> {
        use crate::crypto::{MasterKey, SealBackend};
        let catalog = Arc::new(Catalog::open(&dir.join("catalog"), true).unwrap());
        let reader = ChunkReader::new(
            catalog.clone(),
            Arc::new(MasterKey::generate()),
            SealBackend::RustCrypto,
            4,
            Some(recent),
            Default::default(),
        );
        let monitor = Arc::new(Monitor::new("drain"));
        let (_, rx) = mpsc::channel(1);
        Arc::new(Shared {
            rx: Mutex::new(rx),
            dest: Arc::new(crate::backend::local::LocalDest::new(dir.join("out")).unwrap()),
            reader,
            catalog,
            busy: Default::default(),
            drain_q: monitor.queue("drain", DRAIN_QUEUE),
            monitor,
            budget: ByteBudget::new(DRAIN_BYTE_BUDGET),
            tally: Tally::default(),
            written: Written::default(),
        })
    }

    /// A staged record of one chunk holding `body`, the chunk kept in `recent`.
    fn staged(recent: &RecentChunks, n: u8, body: &[u8]) -> ObjectRecord {
        let id = crate::crypto::ChunkId([n; 32]);
        recent.add(id, body);
        ObjectRecord {
            size: body.len() as u64,
            version: format!("v{n}"),
            content_type: None,
            user_meta: vec![],
            blake3: Some(*blake3::hash(body).as_bytes()),
            chunks: vec![crate::catalog::ChunkRef {
                id,
                len: body.len() as u32,
            }],
            state: ObjectState::Staged,
            checked: "md5".into(),
            uploads: 0,
            updated: 0,
        }
    }

    /// A newer version staged while the older one waits for its group sync, and
    /// delivered then, is written after that sync and marked drained in the same run.
    #[tokio::test]
    async fn a_version_delivered_while_the_last_one_waits_for_its_sync_is_written_too() {
        let dir = tempfile::tempdir().unwrap();
        let recent = Arc::new(RecentChunks::default());
        let shared = shared_for(dir.path(), recent.clone());
        let key = ObjectKey::from("k");
        let (tx, rx) = mpsc::channel(UNSYNCED_MAX);
        let first = staged(&recent, 1, b"version one");
        shared.catalog.commit_staged(&key, &first, &[]).unwrap();
        shared.drain_one(key.clone(), &tx).await;
        assert_eq!(rx.len(), 1, "version one waits for its sync");
        let second = staged(&recent, 2, b"version two, staged meanwhile");
        shared.catalog.commit_staged(&key, &second, &[]).unwrap();
        shared.drain_one(key.clone(), &tx).await;
        assert_eq!(
            rx.len(),
            1,
            "the key is still taken: nothing written twice at once"
        );
        drop(tx);
        shared.clone().commit_loop(rx).await;
        let rec = shared.catalog.get_object(&key).unwrap().unwrap();
        assert_eq!(rec.state, ObjectState::Drained, "{rec:?}");
        assert_eq!(rec.blake3, second.blake3);
        let out = std::fs::read(dir.path().join("out/k")).unwrap();
        assert_eq!(out, b"version two, staged meanwhile");
        assert!(
            shared.busy.lock().unwrap().is_empty(),
            "the key is released"
        );
    }

    #[tokio::test]
    async fn duplicates_wait_for_the_sender_then_copy_and_fall_back_after_a_failure() {
        let w = Written::default();
        let h = [7u8; 32];
        let Claim::Send(tx) = w.claim(&h) else {
            panic!("the first claim sends")
        };
        let Claim::Wait(mut rx) = w.claim(&h) else {
            panic!("a duplicate waits while the first is being sent")
        };
        let waiter = tokio::spawn(async move { rx.wait_for(Option::is_some).await.is_ok() });
        w.sent(&h, tx, Some(placed(1)));
        assert!(waiter.await.unwrap(), "the waiter is woken");
        assert!(matches!(w.claim(&h), Claim::Copy(p) if p == placed(1)));
        // A failed copy forgets the content: the next duplicate is sent in full.
        w.forget(&h, &placed(1));
        let Claim::Send(tx) = w.claim(&h) else {
            panic!("sent again after a failed copy")
        };
        // A sender that failed (or whose store cannot copy) lets waiters send.
        let Claim::Wait(mut rx) = w.claim(&h) else {
            panic!("waits")
        };
        w.sent(&h, tx, None);
        assert!(rx.wait_for(Option::is_some).await.is_err());
        assert!(matches!(w.claim(&h), Claim::Send(_)));
    }
}

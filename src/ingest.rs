//! Stage 1+2: list the source into the catalog and stage every new or changed object.
//!
//! ```text
//! Source::list ──(Listed, bounded)──> dispatcher ──(ObjectMeta, bounded)──> N fetchers
//!   fetcher: Source::open → [blocking pool] FastCDC → chunk id → Stager::stage_blocking
//!   Stager → per-drive writer threads (seal, append, fdatasync, commit) → tickets resolve
//!   fetcher: all tickets durable → Catalog::commit_staged (object + chunk refs, one batch)
//! ```
//! Fetching starts with the first listed object, not after the listing ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio::sync::{Mutex, SemaphorePermit, mpsc};
use tokio::task::JoinHandle;
use tokio_util::io::SyncIoBridge;

use crate::budget::ByteBudget;

use crate::backend::ListFrom;
use crate::backend::check::Verifier;
use crate::backend::{Listed, Payload, Source};
use crate::catalog::{
    ChunkRef, ListingMark, META_DEFERRED, ObjectRecord, ObjectState, RunRecord, unix_now,
};
use crate::checkpoint::{self, Checkpoints};
use crate::chunker::{ChunkError, chunk_stream};
use crate::crypto::ChunkHasher;
use crate::error::{Error, Result};
use crate::monitor::{IngestTotals, Monitor, QueueGauge};
use crate::node::Node;
use crate::object::{ObjectKey, ObjectMeta};
use crate::staging::{Stager, Ticket};

/// Listing entries buffered between the lister and the dispatcher.
pub const LIST_QUEUE: usize = 4096;
/// Objects buffered between the dispatcher and the fetchers.
pub const FETCH_QUEUE: usize = 256;
/// Fetchers at most without `--concurrency`: enough that small objects are fetched
/// hundreds at a time while each waits for its chunks' group commit (one fdatasync for
/// all of them). How many actually run is decided by the byte budget and, for a network
/// source, by the endpoint's adaptive window.
pub const DEFAULT_MAX_FETCHERS: usize = 256;
/// Bytes the objects being fetched may hold at once: memory is bounded by bytes in
/// flight, not by the number of objects.
pub const FETCH_BYTE_BUDGET: u64 = 256 << 20;
/// What one object costs against [`FETCH_BYTE_BUDGET`] at least (buffers, records).
const FETCH_MIN_COST: u64 = 16 << 10;
/// Failures kept in memory for the end-of-run summary (all are in the catalog).
pub const MAX_FAILURES_SHOWN: usize = 50;

/// Options of `barge ingest`.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Objects fetched and chunked at once, at most (`--concurrency`); the byte budget
    /// and the source's window decide how many run.
    pub concurrency: usize,
    /// Staging drives to use (all configured drives when empty).
    pub drives: Vec<std::path::PathBuf>,
    /// Told the key and size of every object once it is staged, and given the plaintext
    /// of new small chunks (a drain running alongside, `barge migrate`).
    pub notify: Option<crate::drain::Feed>,
    /// Live counters, queues and controls (status API, progress, `barge tui`).
    pub monitor: Arc<Monitor>,
    /// Which listed objects are part of the move (recorded in the catalog).
    pub filter: crate::filter::FilterSpec,
    /// The sync pass this ingest belongs to: every listed key is marked seen by it
    /// (what the pass's deletions are decided from), and an object gone by the time it
    /// is fetched is counted vanished, not failed.
    pub pass: Option<u64>,
    /// List from the first key even when the last listing of this source did not
    /// complete (a cutover's listing starts whole).
    pub fresh_listing: bool,
    /// This node's share of a plan: only keys in its range are listed and moved.
    pub shard: Option<crate::plan::Shard>,
    /// The listing is the catalog's objects still to fetch, not the source
    /// (`--resume-listing-only`): what the last listing left out is still left out.
    pub keeps_left_out: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            notify: None,
            monitor: Arc::default(),
            concurrency: DEFAULT_MAX_FETCHERS,
            drives: vec![],
            filter: Default::default(),
            pass: None,
            fresh_listing: false,
            shard: None,
            keeps_left_out: false,
        }
    }
}

/// What an ingest run did.
#[derive(Debug, Default, Serialize)]
pub struct IngestSummary {
    pub listed: u64,
    pub unchanged: u64,
    pub staged: u64,
    pub failed: u64,
    pub bytes_listed: u64,
    pub bytes_staged: u64,
    pub chunks_new: u64,
    pub chunks_dedup: u64,
    pub bytes_new: u64,
    pub bytes_dedup: u64,
    pub bytes_sealed: u64,
    pub io_engine: String,
    pub stopped_early: Option<String>,
    pub failures: Vec<(String, String)>,
    /// Objects an inventory listed that were gone from the source at fetch time (deleted
    /// since the inventory was taken): not part of the move, not failures.
    pub vanished: u64,
    /// Listed objects the filter (`--include`, `--exclude`, sizes, ages) left out.
    pub excluded: u64,
    /// Entries of a directory source that are not regular files (symbolic links without
    /// `--follow-symlinks`, sockets, devices, FIFOs): not moved.
    pub skipped: u64,
    /// The first of them (at most [`MAX_FAILURES_SHOWN`]): (path, what it is).
    pub skipped_shown: Vec<(String, String)>,
    /// Objects staged per source checksum kind ("md5", "md5-multipart", "unchecked").
    pub checks: std::collections::BTreeMap<String, u64>,
    /// What the listing found against the catalog: objects the catalog did not have (or
    /// never staged), and objects with another size or version (with their bytes).
    pub changes: Changes,
    /// Entries the listing could not read (each failed by name).
    pub listing_errors: u64,
    /// Listed objects outside this node's shard (a source that cannot list key ranges
    /// lists everything; the range's ends may be passed by a page).
    pub outside_shard: u64,
    /// Seconds the listing took (its objects were routed meanwhile).
    pub listing_secs: f64,
    /// Every object of the source was listed (see [`ListingMark`]).
    pub listing_complete: bool,
}

/// New and changed objects a listing found, and their bytes.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Changes {
    pub new: u64,
    pub bytes_new: u64,
    pub changed: u64,
    pub bytes_changed: u64,
}

impl IngestSummary {
    /// Nothing failed and the run did not stop early: everything listed is staged.
    pub fn complete(&self) -> bool {
        self.failed == 0 && self.stopped_early.is_none()
    }
}

struct Ctx {
    source: Arc<dyn Source>,
    stager: Stager,
    node_catalog: Arc<crate::catalog::Catalog>,
    hasher: ChunkHasher,
    params: crate::chunker::ChunkParams,
    /// Read buffers of large objects, reused from one object to the next.
    buffers: crate::chunker::BufferPool,
    monitor: Arc<Monitor>,
    failures: std::sync::Mutex<Vec<(String, String)>>,
    /// Objects gone at fetch time from a source that allows it ([`Source::vanishes`]).
    vanished: std::sync::atomic::AtomicU64,
    /// Entries of the source that are not objects, and the first of them.
    skipped: std::sync::Mutex<(u64, Vec<(String, String)>)>,
    /// Which listed objects are part of the move (None: all).
    filter: Option<crate::filter::Filter>,
    /// Listed objects the filter left out.
    excluded: std::sync::atomic::AtomicU64,
    /// New objects listed while the run was paused and the fetch queue full: recorded
    /// `Listed` in the catalog instead of waiting, fetched after the listing.
    deferred: std::sync::atomic::AtomicU64,
    checks: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    stop: AtomicBool,
    stop_reason: std::sync::Mutex<Option<String>>,
    notify: Option<mpsc::Sender<crate::drain::Queued>>,
    /// Where the listing resumes, and how far it may resume from next time.
    checkpoints: Checkpoints,
    /// See [`IngestOptions::pass`].
    pass: Option<u64>,
    changes: std::sync::Mutex<Changes>,
    listing_errors: std::sync::atomic::AtomicU64,
    /// See [`IngestOptions::shard`].
    shard: Option<crate::plan::Shard>,
    outside_shard: std::sync::atomic::AtomicU64,
}

impl Ctx {
    /// Records an object's ingest failure; false if even that could not be written.
    /// An entry of the source that is not an object: counted, and named if among the
    /// first.
    /// One named before (by the listing this run resumes) is not counted again.
    fn skip(&self, key: ObjectKey, kind: &str) {
        let key = key.to_string();
        if let Ok(mut s) = self.skipped.lock()
            && !s.1.iter().any(|(k, _)| *k == key)
        {
            s.0 += 1;
            if s.1.len() < MAX_FAILURES_SHOWN {
                s.1.push((key, kind.to_string()));
            }
        }
    }

    /// An object the listing named that is gone from the source (see
    /// [`Source::vanishes`]): a record of it that was only listed is removed; a version
    /// staged before stays as it is. Counted, not failed.
    /// In a sync pass the key's seen mark goes too: the pass's deletions then remove
    /// a copy an earlier pass wrote.
    fn vanish(&self, key: &ObjectKey) -> bool {
        tracing::info!("object {key}: gone from the source since it was listed");
        self.vanished.fetch_add(1, Ordering::Relaxed);
        let unseen = match self.pass {
            Some(_) => self.node_catalog.unsee(key),
            None => Ok(()),
        };
        match unseen.and_then(|()| self.node_catalog.forget_listed(key)) {
            Ok(_) => true,
            Err(e) => self.fail(key, None, e.to_string()),
        }
    }

    fn fail(&self, key: &ObjectKey, meta: Option<&ObjectMeta>, reason: String) -> bool {
        tracing::warn!("object {key}: {reason}");
        self.monitor.error("ingest", &key.to_string(), &reason);
        self.monitor.ingest.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failures.lock()
            && f.len() < MAX_FAILURES_SHOWN
        {
            f.push((key.to_string(), reason.clone()));
        }
        let state = ObjectState::Failed {
            stage: "ingest".into(),
            reason,
        };
        // Invariant 17: the failure is recorded on whatever record is there now.
        let res = self.node_catalog.update_object(key, false, |rec| {
            Some(match rec {
                Some(mut rec) => {
                    rec.state = state;
                    rec.updated = unix_now();
                    rec
                }
                None => ObjectRecord {
                    size: meta.map_or(0, |m| m.size),
                    version: meta.map(|m| m.version.clone()).unwrap_or_default(),
                    content_type: None,
                    user_meta: vec![],
                    blake3: None,
                    chunks: vec![],
                    state,
                    checked: String::new(),
                    uploads: 0,
                    updated: unix_now(),
                },
            })
        });
        if let Err(e) = &res {
            tracing::error!("cannot record the failure of {key}: {e}");
        }
        res.is_ok()
    }

    /// Whether `key` is this node's to move (always, without a plan); counts those
    /// that are not.
    fn in_shard(&self, key: &ObjectKey) -> bool {
        let inside = self.shard.as_ref().is_none_or(|s| s.contains(key));
        if !inside {
            self.outside_shard.fetch_add(1, Ordering::Relaxed);
        }
        inside
    }

    /// Marks `key` seen by this run's sync pass (nothing outside a pass).
    fn see(&self, key: &ObjectKey) -> Result<()> {
        match self.pass {
            Some(n) => self.node_catalog.mark_seen(key, n),
            None => Ok(()),
        }
    }

    /// Counts a listed object that needs staging as new (the catalog has no staged
    /// version of it) or changed.
    fn count_change(&self, old: Option<&ObjectRecord>, size: u64) {
        let known = old.is_some_and(|o| o.uploads > 0 || o.state.is_staged_or_later());
        if let Ok(mut c) = self.changes.lock() {
            if known {
                c.changed += 1;
                c.bytes_changed += size;
            } else {
                c.new += 1;
                c.bytes_new += size;
            }
        }
    }

    fn stop(&self, why: String) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            tracing::error!("stopping ingest: {why}");
            if let Ok(mut r) = self.stop_reason.lock() {
                *r = Some(why);
            }
        }
    }
}

/// Runs an ingest of `source` into the node's staging.
pub async fn run(
    node: &Node,
    source: Arc<dyn Source>,
    opts: &IngestOptions,
) -> Result<IngestSummary> {
    let (ctx, run_id, start_totals) = prepare(node, &source, opts)?;
    let dispatched = dispatch(node, &ctx, &source, opts).await?;
    let ctx = Arc::into_inner(ctx).ok_or_else(|| Error::task("ingest", "workers still running"))?;
    let mut summary = summarise(&ctx, start_totals);
    let stager = ctx.stager;
    tokio::task::spawn_blocking(move || stager.finish())
        .await
        .map_err(|e| Error::task("staging shutdown", e))??;
    let mut mark = dispatched.mark(run_id, source.url(), summary.stopped_early.as_ref());
    mark.pass = opts.pass;
    mark.left_out = summary.skipped;
    mark.left_out_shown = summary
        .skipped_shown
        .iter()
        .map(|(key, why)| crate::catalog::LeftOut {
            key: key.clone(),
            why: why.clone(),
        })
        .collect();
    record_run(node, run_id, &dispatched, &summary, &mark)?;
    summary.listing_secs = dispatched.listing_secs;
    summary.listing_complete = mark.complete;
    if let Some(e) = dispatched.err {
        return Err(e);
    }
    if let Err(e) = dispatched.listing {
        summary
            .stopped_early
            .get_or_insert(format!("listing failed: {e}"));
    }
    Ok(summary)
}

/// Prepare: recovers and, when nearly full, reclaims staging, starts the stager and
/// the run's catalog record. Returns the workers' context, the run's id and the
/// monitor's totals this run's figures start from.
fn prepare(
    node: &Node,
    source: &Arc<dyn Source>,
    opts: &IngestOptions,
) -> Result<(Arc<Ctx>, u64, IngestTotals)> {
    let drives = node.drive_paths(&opts.drives);
    recover_staging(node, &drives)?;
    let stager = Stager::start(
        node.catalog.clone(),
        node.master.clone(),
        node.appliance_id,
        node.staging.settings.clone(),
        &drives,
    )?;
    if let Some(feed) = &opts.notify {
        stager.keep_recent(feed.recent.clone());
    }
    opts.monitor.set_staging(stager.handle());
    // This run's figures start here, and its listing has not finished yet.
    let start_totals = opts.monitor.ingest.totals();
    opts.monitor
        .ingest
        .listing_done
        .store(false, Ordering::Relaxed);
    opts.monitor.set_source(&source.url(), source.throttle());
    let left_out = carried_left_out(node, source, opts)?;
    let list_from = resume_point(node, source, opts)?;
    // The filter is compiled (a bad pattern refused) and recorded before anything runs.
    let filter = crate::filter::Filter::new(&opts.filter)?;
    node.catalog
        .put_meta_json(crate::catalog::META_FILTER, "the filter", &opts.filter)?;
    let filter = (!opts.filter.is_empty()).then_some(filter);
    let run_id = node.catalog.start_run(&RunRecord {
        command: "ingest".into(),
        source: Some(source.url()),
        started: unix_now(),
        ..Default::default()
    })?;
    // Until this run says otherwise, its listing did not complete (it may be killed).
    node.catalog.set_listing_mark(&ListingMark {
        run: run_id,
        source: source.url(),
        complete: false,
        last_key: None,
        reason: Some("the run ended before its listing did (killed, or still running)".into()),
        pass: opts.pass,
        left_out: left_out.0,
        left_out_shown: left_out
            .1
            .iter()
            .map(|(key, why)| crate::catalog::LeftOut {
                key: key.clone(),
                why: why.clone(),
            })
            .collect(),
    })?;
    let ctx = Arc::new(Ctx {
        source: source.clone(),
        stager,
        node_catalog: node.catalog.clone(),
        hasher: ChunkHasher::new(&node.master),
        params: node.chunks,
        buffers: Default::default(),
        monitor: opts.monitor.clone(),
        failures: Default::default(),
        vanished: Default::default(),
        skipped: std::sync::Mutex::new(left_out),
        deferred: Default::default(),
        filter,
        excluded: Default::default(),
        checks: Default::default(),
        stop: AtomicBool::new(false),
        stop_reason: Default::default(),
        notify: opts.notify.as_ref().map(|f| f.staged.clone()),
        checkpoints: Checkpoints::new(node.catalog.clone(), list_from, opts.monitor.clone()),
        pass: opts.pass,
        changes: Default::default(),
        listing_errors: Default::default(),
        shard: opts.shard.clone(),
        outside_shard: Default::default(),
    });
    Ok((ctx, run_id, start_totals))
}

/// What the last listing left out, carried into this run's count when this run does
/// not list the whole source again: it resumes that listing (whose first part it does
/// not see again), or takes the catalog's objects instead of a listing.
fn carried_left_out(
    node: &Node,
    source: &Arc<dyn Source>,
    opts: &IngestOptions,
) -> Result<(u64, Vec<(String, String)>)> {
    let Some(last) = node.catalog.listing_mark()? else {
        return Ok(Default::default());
    };
    let resumes = !last.complete && !opts.fresh_listing && last.pass == opts.pass;
    if last.source != source.url() || !(resumes || opts.keeps_left_out) {
        return Ok(Default::default());
    }
    let shown = last.left_out_shown.into_iter().map(|l| (l.key, l.why));
    Ok((last.left_out, shown.collect()))
}

/// Where this run's listing starts: after the saved checkpoints when the last listing
/// of the same source (and the same sync pass) did not complete and a fresh listing is
/// not asked for, else from the first key (old checkpoints are dropped). Read before
/// this run marks its own listing incomplete.
fn resume_point(node: &Node, source: &Arc<dyn Source>, opts: &IngestOptions) -> Result<ListFrom> {
    let last = node.catalog.listing_mark()?;
    let resumable =
        |m: &ListingMark| !m.complete && m.source == source.url() && m.pass == opts.pass;
    if !opts.fresh_listing && last.as_ref().is_some_and(resumable) {
        let from = checkpoint::saved(&node.catalog)?;
        if !from.is_empty() {
            tracing::info!(
                "resuming the listing of {} from {} checkpointed ranges",
                source.url(),
                from.len()
            );
        }
        return Ok(from);
    }
    checkpoint::save(&node.catalog, &ListFrom::new())?;
    // A shard lists its own key range only.
    Ok(opts
        .shard
        .as_ref()
        .map(|s| s.list_from(source.as_ref()))
        .unwrap_or_default())
}

/// Seals segments a crashed run left open (before new ones are written) and, when the
/// drives are nearly full, reclaims the segments of drained objects.
fn recover_staging(node: &Node, drives: &[std::path::PathBuf]) -> Result<()> {
    let rec = node.recover_staging(drives)?;
    if rec.segments_resealed > 0 || !rec.orphan_files_removed.is_empty() {
        tracing::warn!(
            "recovered staging after an interrupted run: {} segments resealed, {} orphan files removed",
            rec.segments_resealed,
            rec.orphan_files_removed.len()
        );
    }
    if crate::staging::reclaim::nearly_full(
        &node.catalog,
        &node.appliance_id,
        drives,
        node.staging.settings.segment_size,
    ) {
        let r = crate::staging::reclaim::reclaim(&node.catalog)?;
        tracing::warn!(
            "staging nearly full: reclaimed {} segments ({} bytes) of drained objects",
            r.segments_removed,
            r.bytes_freed
        );
    }
    Ok(())
}

/// An object the dispatcher hands to the fetchers, with its catalog record if it has one
/// and its checkpoint sequence number.
type Work = (ObjectMeta, Option<ObjectRecord>, u64);

/// How the dispatch ended.
struct Dispatched {
    /// The dispatcher's own failure (a catalog read): the run fails with it.
    err: Option<Error>,
    /// The listing's outcome: a failed listing stops the run early.
    listing: Result<()>,
    /// The dispatcher saw the listing's end (it did not stop before).
    ended: bool,
    /// The last key the listing delivered.
    last_key: Option<ObjectKey>,
    /// Seconds from the start of the dispatch to the listing's end (or the dispatcher's).
    listing_secs: f64,
}

impl Dispatched {
    /// The listing record this run leaves.
    fn mark(&self, run: u64, source: String, stopped: Option<&String>) -> ListingMark {
        let reason = match (&self.err, &self.listing, self.ended) {
            (Some(e), _, _) => Some(format!("the dispatcher failed: {e}")),
            (None, Err(e), _) => Some(format!("listing failed: {e}")),
            (None, Ok(()), false) => Some(match stopped {
                Some(why) => format!("stopped before the listing ended: {why}"),
                None => "stopped before the listing ended".into(),
            }),
            (None, Ok(()), true) => None,
        };
        ListingMark {
            run,
            source,
            complete: reason.is_none(),
            last_key: reason
                .is_some()
                .then(|| self.last_key.as_ref().map(|k| k.to_string()))
                .flatten(),
            reason,
            pass: None,
            left_out: 0,
            left_out_shown: vec![],
        }
    }
}

/// Dispatch: lists the source and hands each new or changed object to the fetchers;
/// returns once the listing and every fetcher have ended.
async fn dispatch(
    node: &Node,
    ctx: &Arc<Ctx>,
    source: &Arc<dyn Source>,
    opts: &IngestOptions,
) -> Result<Dispatched> {
    let started = std::time::Instant::now();
    let (list_tx, mut list_rx) = mpsc::channel::<Listed>(LIST_QUEUE);
    opts.monitor.add_mpsc("list", &list_tx);
    let lister = {
        let source = source.clone();
        let from = ctx.checkpoints.ranges();
        tokio::spawn(async move { source.list_resumable(list_tx, &from).await })
    };
    let (work_tx, work_rx) = mpsc::channel::<Work>(FETCH_QUEUE);
    let fetch_q = opts.monitor.queue("fetch", FETCH_QUEUE);
    let workers = spawn_fetchers(ctx, work_rx, &fetch_q, opts.concurrency);
    let mut routed = route(node, ctx, &mut list_rx, &work_tx, &fetch_q).await;
    let listing_secs = started.elapsed().as_secs_f64();
    ctx.monitor
        .ingest
        .listing_done
        .store(true, Ordering::Relaxed);
    drop(list_rx);
    if routed.err.is_none()
        && let Err(e) = fetch_deferred(node, ctx, &work_tx, &fetch_q).await
    {
        routed.err = Some(e);
    }
    drop(work_tx);
    for w in workers {
        let _ = w.await;
    }
    let listing = lister.await.map_err(|e| Error::task("listing task", e))?;
    let saved = ctx.checkpoints.save_if_due(true);
    Ok(Dispatched {
        err: routed.err.or(saved.err()),
        listing,
        ended: routed.ended,
        last_key: routed.last_key,
        listing_secs,
    })
}

/// Starts `concurrency` fetchers taking objects off `work_rx` until it ends.
fn spawn_fetchers(
    ctx: &Arc<Ctx>,
    work_rx: mpsc::Receiver<Work>,
    fetch_q: &Arc<QueueGauge>,
    concurrency: usize,
) -> Vec<JoinHandle<()>> {
    let work_rx = Arc::new(Mutex::new(work_rx));
    let budget = Arc::new(ByteBudget::new(FETCH_BYTE_BUDGET));
    let mut workers = vec![];
    for _ in 0..concurrency.max(1) {
        let ctx = ctx.clone();
        let rx = work_rx.clone();
        let fetch_q = fetch_q.clone();
        let budget = budget.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some((meta, old, seq)) = next else { break };
                fetch_q.pop();
                if ctx.stop.load(Ordering::Relaxed) {
                    // Not finished: the listing's checkpoint stays before it.
                    continue;
                }
                ctx.monitor.gate().await;
                let held = budget.hold(fetch_cost(meta.size, ctx.params.max)).await;
                if fetch_one(&ctx, meta, old, held).await {
                    ctx.checkpoints.finish(seq);
                }
            }
        }));
    }
    workers
}

/// What fetching an object of `size` holds at most: its read buffer (up to two of the
/// largest chunks) and the chunk being cut, whatever the object's size.
fn fetch_cost(size: u64, max_chunk: u32) -> u64 {
    size.min(3 * u64::from(max_chunk)).max(FETCH_MIN_COST)
}

/// How the dispatcher ended.
#[derive(Default)]
struct Routed {
    /// The catalog read that failed, if one did.
    err: Option<Error>,
    /// The listing ended and every object of it was routed.
    ended: bool,
    /// The last key routed.
    last_key: Option<ObjectKey>,
}

/// The dispatcher: decides per listed object whether it needs staging and queues those
/// that do, until the listing ends, the run stops or the fetchers are gone.
async fn route(
    node: &Node,
    ctx: &Ctx,
    list_rx: &mut mpsc::Receiver<Listed>,
    work_tx: &mpsc::Sender<Work>,
    fetch_q: &QueueGauge,
) -> Routed {
    let mut r = Routed::default();
    while let Some(item) = list_rx.recv().await {
        if ctx.stop.load(Ordering::Relaxed) {
            return r;
        }
        match item.refuse_reserved() {
            Listed::Error { key, .. } | Listed::Skipped { key, .. } if !ctx.in_shard(&key) => {}
            Listed::Error { key, reason } => {
                ctx.monitor.ingest.listed.fetch_add(1, Ordering::Relaxed);
                ctx.listing_errors.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = ctx.see(&key) {
                    r.err = Some(e);
                    return r;
                }
                let _ = ctx.fail(&key, None, reason);
                r.last_key = Some(key);
            }
            Listed::Range { range, mark } => ctx.checkpoints.announce(range, mark),
            Listed::Skipped { key, kind } => ctx.skip(key, kind),
            Listed::Mark { range, mark } => {
                ctx.checkpoints.mark(range, mark);
                if let Err(e) = ctx.checkpoints.save_if_due(false) {
                    r.err = Some(e);
                    return r;
                }
            }
            Listed::Object(meta) if !ctx.in_shard(&meta.key) => {}
            Listed::Object(meta) => {
                r.last_key = Some(meta.key.clone());
                // Seen before the filter: an object left out is still at the source, and
                // a sync pass must not take it for deleted.
                if let Err(e) = ctx.see(&meta.key) {
                    r.err = Some(e);
                    return r;
                }
                if let Some(f) = &ctx.filter
                    && !f.admits(
                        &String::from_utf8_lossy(meta.key.as_bytes()),
                        meta.size,
                        meta.modified,
                    )
                {
                    ctx.excluded.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                crate::failpoint::point("ingest.listed");
                ctx.monitor.ingest.listed.fetch_add(1, Ordering::Relaxed);
                ctx.monitor
                    .ingest
                    .bytes_listed
                    .fetch_add(meta.size, Ordering::Relaxed);
                let old = match node.catalog.get_object(&meta.key) {
                    Ok(o) => o,
                    Err(e) => {
                        r.err = Some(e);
                        return r;
                    }
                };
                match node.catalog.gateway_record(&meta.key) {
                    Ok(None) => {}
                    Ok(Some(g)) => {
                        yield_to_gateway(ctx, &meta, old.as_ref(), &g);
                        continue;
                    }
                    Err(e) => {
                        r.err = Some(e);
                        return r;
                    }
                }
                if let Some(o) = &old
                    && o.size == meta.size
                    && o.version == meta.version
                    && o.state.is_staged_or_later()
                {
                    ctx.monitor.ingest.unchanged.fetch_add(1, Ordering::Relaxed);
                    ctx.monitor
                        .ingest
                        .bytes_unchanged
                        .fetch_add(meta.size, Ordering::Relaxed);
                    continue;
                }
                ctx.count_change(old.as_ref(), meta.size);
                fetch_q.push();
                let seq = ctx.checkpoints.route();
                let work = (meta, old, seq);
                // Paused with a full queue: a new object is recorded and fetched after
                // the listing, so that listing goes on (issue 18: an operator sees the
                // counts of a large bucket before resuming).
                let work = match ctx.monitor.is_paused() && work.1.is_none() {
                    false => work,
                    true => match work_tx.try_send(work) {
                        Ok(()) => continue,
                        Err(mpsc::error::TrySendError::Closed(_)) => return r,
                        Err(mpsc::error::TrySendError::Full(w)) => {
                            fetch_q.pop();
                            if let Err(e) = defer(node, ctx, &w.0, w.2) {
                                r.err = Some(e);
                                return r;
                            }
                            continue;
                        }
                    },
                };
                if work_tx.send(work).await.is_err() {
                    return r;
                }
            }
        }
    }
    r.ended = true;
    r
}

/// Records a new object listed while paused as `Listed` (fetched by [`fetch_deferred`]
/// after the listing) and finishes its checkpoint sequence number: the catalog now holds
/// it, so the listing's mark may pass it. Meta `deferred` (synced on first use) makes a
/// run after a crash fetch them too.
fn defer(node: &Node, ctx: &Ctx, meta: &ObjectMeta, seq: u64) -> Result<()> {
    if ctx.deferred.fetch_add(1, Ordering::Relaxed) == 0 {
        node.catalog
            .put_meta_json(META_DEFERRED, "the deferred flag", &true)?;
    }
    node.catalog.update_object(&meta.key, false, |old| {
        old.is_none().then(|| ObjectRecord {
            size: meta.size,
            version: meta.version.clone(),
            content_type: meta.content_type.clone(),
            user_meta: meta.user_meta.clone(),
            blake3: None,
            chunks: vec![],
            state: ObjectState::Listed,
            checked: String::new(),
            uploads: 0,
            updated: unix_now(),
        })
    })?;
    ctx.checkpoints.finish(seq);
    Ok(())
}

/// After the listing: hands the fetchers every object recorded `Listed` while the run
/// was paused (in this run, or in one that was killed), when meta `deferred` says there
/// are some; clears the flag once every one was handed over.
async fn fetch_deferred(
    node: &Node,
    ctx: &Arc<Ctx>,
    work_tx: &mpsc::Sender<Work>,
    fetch_q: &QueueGauge,
) -> Result<()> {
    let flagged: Option<bool> = node.catalog.meta_json(META_DEFERRED, "the deferred flag")?;
    if flagged != Some(true) {
        return Ok(());
    }
    let (tx, mut rx) = mpsc::channel(LIST_QUEUE);
    let walk = tokio::spawn(crate::pending::walk(node.catalog.clone(), false, tx));
    while let Some(item) = rx.recv().await {
        let Listed::Object(meta) = item else { continue };
        if ctx.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let old = node.catalog.get_object(&meta.key)?;
        fetch_q.push();
        let seq = ctx.checkpoints.route();
        if work_tx.send((meta, old, seq)).await.is_err() {
            return Ok(());
        }
    }
    walk.await.map_err(|e| Error::task("catalog walk", e))??;
    node.catalog
        .put_meta_json(META_DEFERRED, "the deferred flag", &false)
}

/// A listed key the gateway wrote or deleted is the application's: never fetched. The
/// source changing it after the gateway took it is a conflict, counted and named (the
/// destination's stays): a version other than the catalog's record of it, or, with no
/// record, a source modification time after the gateway's write or delete.
fn yield_to_gateway(
    ctx: &Ctx,
    meta: &ObjectMeta,
    old: Option<&ObjectRecord>,
    g: &crate::catalog::gateway::GatewayRecord,
) {
    use crate::catalog::gateway::GatewayRecord;
    ctx.monitor.gateway.yielded.fetch_add(1, Ordering::Relaxed);
    let taken = match g {
        GatewayRecord::Written(w) => w.modified,
        GatewayRecord::Deleted { at, .. } => *at,
    };
    let changed = match old {
        Some(o) => o.size != meta.size || o.version != meta.version,
        None => meta.modified.is_some_and(|m| m > taken),
    };
    if changed {
        ctx.monitor
            .gateway
            .conflicts
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "conflict: {} changed at the source after it was written or deleted through the gateway; the destination's stays",
            meta.key
        );
    }
}

/// Summarise: this run's figures, from the monitor's totals since `start_totals` and the
/// stager's counters.
fn summarise(ctx: &Ctx, start_totals: IngestTotals) -> IngestSummary {
    let engine = ctx.stager.engine();
    let st = ctx.stager.stats();
    let run = ctx.monitor.ingest.totals().since(start_totals);
    IngestSummary {
        listed: run.listed,
        unchanged: run.unchanged,
        staged: run.staged,
        failed: run.failed,
        bytes_listed: run.bytes_listed,
        bytes_staged: run.bytes_staged,
        chunks_new: st.chunks_new.load(Ordering::Relaxed),
        chunks_dedup: st.chunks_dedup.load(Ordering::Relaxed),
        bytes_new: st.bytes_new.load(Ordering::Relaxed),
        bytes_dedup: st.bytes_dedup.load(Ordering::Relaxed),
        bytes_sealed: st.bytes_sealed.load(Ordering::Relaxed),
        io_engine: engine
            .map(|e| e.to_string())
            .unwrap_or_else(|| "none (nothing written)".into()),
        stopped_early: ctx.stop_reason.lock().ok().and_then(|r| r.clone()),
        failures: ctx.failures.lock().map(|f| f.clone()).unwrap_or_default(),
        vanished: ctx.vanished.load(Ordering::Relaxed),
        excluded: ctx.excluded.load(Ordering::Relaxed),
        skipped: ctx.skipped.lock().map(|s| s.0).unwrap_or_default(),
        skipped_shown: ctx.skipped.lock().map(|s| s.1.clone()).unwrap_or_default(),
        checks: ctx.checks.lock().map(|c| c.clone()).unwrap_or_default(),
        changes: ctx.changes.lock().map(|c| *c).unwrap_or_default(),
        listing_errors: ctx.listing_errors.load(Ordering::Relaxed),
        outside_shard: ctx.outside_shard.load(Ordering::Relaxed),
        listing_secs: 0.0,
        listing_complete: false,
    }
}

/// Records the run's end in the catalog (with the io engine, once something was
/// written, and what its listing covered), after syncing it.
fn record_run(
    node: &Node,
    run_id: u64,
    dispatched: &Dispatched,
    summary: &IngestSummary,
    mark: &ListingMark,
) -> Result<()> {
    if summary.chunks_new > 0 {
        node.catalog
            .meta_put_sync(crate::catalog::META_IO_ENGINE, summary.io_engine.as_bytes())?;
    }
    node.catalog.sync()?;
    node.catalog.set_listing_mark(mark)?;
    if mark.complete {
        // The next run lists from the first key again, to find what changed.
        checkpoint::save(&node.catalog, &ListFrom::new())?;
    }
    let outcome = match (&dispatched.err, &dispatched.listing, &summary.stopped_early) {
        (Some(e), _, _) => format!("error: {e}"),
        (_, Err(e), _) => format!("listing failed: {e}"),
        (_, _, Some(why)) => format!("stopped: {why}"),
        _ if summary.failed > 0 => format!("{} objects failed", summary.failed),
        _ => "ok".into(),
    };
    node.catalog.finish_run(
        run_id,
        vec![
            ("listed".into(), summary.listed),
            ("staged".into(), summary.staged),
            ("unchanged".into(), summary.unchanged),
            ("failed".into(), summary.failed),
            ("vanished".into(), summary.vanished),
            ("excluded".into(), summary.excluded),
            ("skipped".into(), summary.skipped),
            ("bytes_staged".into(), summary.bytes_staged),
            ("chunks_new".into(), summary.chunks_new),
            ("chunks_dedup".into(), summary.chunks_dedup),
        ],
        outcome,
    )
}

/// Fetches, chunks and stages one object; records the outcome in the catalog and
/// returns whether it did (false: the object stays to be fetched by the next run, and
/// the listing's checkpoint stays before it). `held` (its share of the byte budget) is
/// given back once the object is committed, before a drain alongside is told of it.
async fn fetch_one(
    ctx: &Arc<Ctx>,
    meta: ObjectMeta,
    old: Option<ObjectRecord>,
    held: SemaphorePermit<'_>,
) -> bool {
    let key = meta.key.clone();
    match stage_object(ctx, &meta).await {
        Ok(staged) => {
            // The previous version's references are released in the same batch.
            let drop_refs: Vec<ChunkRef> = old.map(|o| o.chunks).unwrap_or_default();
            let checked = match &staged.unchecked {
                None => staged.check_kind.to_string(),
                Some(why) => format!("unchecked: {why}"),
            };
            if let Ok(mut c) = ctx.checks.lock() {
                *c.entry(staged.check_kind.clone()).or_default() += 1;
            }
            let rec = ObjectRecord {
                size: meta.size,
                version: meta.version.clone(),
                content_type: staged.content_type.or_else(|| meta.content_type.clone()),
                user_meta: if staged.user_meta.is_empty() {
                    meta.user_meta.clone()
                } else {
                    staged.user_meta
                },
                blake3: Some(staged.blake3),
                chunks: staged.chunks,
                state: ObjectState::Staged,
                checked,
                uploads: 0,
                updated: unix_now(),
            };
            crate::failpoint::point("ingest.before_commit");
            let committed = ctx.node_catalog.commit_staged(&key, &rec, &drop_refs);
            drop(held);
            match committed {
                Ok(()) => {
                    crate::failpoint::point("ingest.after_object");
                    ctx.monitor.ingest.staged.fetch_add(1, Ordering::Relaxed);
                    ctx.monitor
                        .ingest
                        .bytes_staged
                        .fetch_add(meta.size, Ordering::Relaxed);
                    if let Some(n) = &ctx.notify {
                        let _ = n.send((key.clone(), meta.size)).await;
                    }
                    true
                }
                Err(e) => {
                    ctx.stop(format!("catalog write failed: {e}"));
                    false
                }
            }
        }
        Err(e) => {
            if let Some(down) = ctx.source.throttle().and_then(|t| t.down_error()) {
                // Not the object's fault: it stays listed for the next run.
                ctx.stop(format!("source {down}"));
                return false;
            }
            if e.is_gone() && (ctx.source.vanishes() || ctx.pass.is_some()) {
                return gone_at_fetch(ctx, &meta, &e).await;
            }
            if e.is_no_space() || matches!(e, Error::AllDrivesFull { .. }) {
                ctx.stop(format!(
                    "{e}; drain (the next run reclaims what is drained), add a drive with --staging, or free space, and run again"
                ));
            }
            ctx.fail(&key, Some(&meta), e.to_string())
        }
    }
}

/// An object the fetch found missing (404) counts as vanished only once a second
/// request (a HEAD) confirms it: in a sync pass a vanished object loses its seen mark, and
/// the pass's deletions then delete the destination's copy. Otherwise it fails, keeps the
/// mark, and is fetched again by the next run.
async fn gone_at_fetch(ctx: &Arc<Ctx>, meta: &ObjectMeta, e: &Error) -> bool {
    let key = &meta.key;
    match ctx.source.confirm_gone(meta).await {
        Ok(true) => ctx.vanish(key),
        Ok(false) => ctx.fail(
            key,
            Some(meta),
            format!("{e}; but a HEAD finds it at the source, so it is not taken for deleted"),
        ),
        Err(h) => ctx.fail(
            key,
            Some(meta),
            format!(
                "{e}; the HEAD to confirm it is gone failed ({h}), so it is not taken for deleted"
            ),
        ),
    }
}

/// An object whose chunks are all durable.
struct Staged {
    chunks: Vec<ChunkRef>,
    blake3: [u8; 32],
    check_kind: String,
    unchecked: Option<String>,
    content_type: Option<String>,
    user_meta: Vec<(String, String)>,
}

/// Opens, chunks and stages one object; returns once its chunks are all durable and it
/// has passed the size, unchanged-at-source and checksum checks.
async fn stage_object(ctx: &Arc<Ctx>, meta: &ObjectMeta) -> Result<Staged> {
    let opened = ctx.source.open(meta).await?;
    let (content_type, user_meta) = (opened.content_type, opened.user_meta);
    let verifier = Verifier::new(opened.check).with_sum(opened.sum);
    let input = match opened.reader {
        Payload::File(f) => Input::File(f),
        // No source may send more than it listed, or take forever sending it.
        Payload::Stream(r) => {
            let r: crate::backend::Reader =
                Box::new(crate::backend::Bounded::new(r, meta.size, ctx.source.url()));
            Input::Stream(SyncIoBridge::new(r))
        }
    };
    let Chunked {
        refs,
        tickets,
        blake3,
        total,
        verdict,
    } = chunk_body(ctx, meta, input, verifier).await?;
    if total != meta.size {
        return Err(Error::object(
            &meta.key,
            format!(
                "changed while read: listed at {} bytes, read {total}; will be fetched again on the next run",
                meta.size
            ),
        ));
    }
    ctx.source.check_unchanged(meta).await?;
    let (check_kind, unchecked) = verdict.map_err(|why| {
        Error::object(
            &meta.key,
            format!("source checksum mismatch: {why}; not staged"),
        )
    })?;
    wait_durable(tickets, &meta.key).await?;
    Ok(Staged {
        chunks: refs,
        blake3,
        check_kind,
        unchecked,
        content_type,
        user_meta,
    })
}

/// What chunking one object's body produced.
struct Chunked {
    refs: Vec<ChunkRef>,
    /// One per chunk, resolved once it is durable.
    tickets: Vec<Ticket>,
    /// BLAKE3 of the whole body.
    blake3: [u8; 32],
    /// Bytes read.
    total: u64,
    /// The source checksum's verdict: its kind and why it was not checked, or a mismatch.
    verdict: std::result::Result<(String, Option<String>), String>,
}

/// A body as the chunking thread reads it.
enum Input {
    /// A local file, opened and checked on the chunking thread.
    File(crate::backend::local::LocalFile),
    /// A stream, read through a bridge to the runtime.
    Stream(SyncIoBridge<crate::backend::Reader>),
}

/// Chunks the body on the blocking pool, hashing it whole, feeding the source checksum
/// and handing every chunk to the stager; stops early when the ingest is stopping. A
/// local file is opened, read and checked unchanged in that one blocking task.
async fn chunk_body(
    ctx: &Arc<Ctx>,
    meta: &ObjectMeta,
    input: Input,
    verifier: Verifier,
) -> Result<Chunked> {
    let c2 = ctx.clone();
    let meta = meta.clone();
    tokio::task::spawn_blocking(move || match input {
        Input::File(lf) => {
            let f = lf.open(&meta.key)?;
            let out = chunk_reader(&c2, &meta, &f, verifier)?;
            if out.total == meta.size {
                // Before the file is closed: what was read is the listed version.
                lf.check_unchanged(&meta, &f)?;
            }
            Ok(out)
        }
        Input::Stream(r) => chunk_reader(&c2, &meta, r, verifier),
    })
    .await
    .map_err(|e| Error::task("chunking task", e))?
}

/// The chunking loop of [`chunk_body`], on the blocking thread.
fn chunk_reader(
    ctx: &Ctx,
    meta: &ObjectMeta,
    reader: impl std::io::Read,
    mut verifier: Verifier,
) -> Result<Chunked> {
    let mut whole = blake3::Hasher::new();
    let mut refs = vec![];
    let mut tickets = vec![];
    let mut total = 0u64;
    let res = chunk_stream(reader, ctx.params, Some(meta.size), &ctx.buffers, |c| {
        if ctx.stop.load(Ordering::Relaxed) {
            return Err(Error::task("ingest", "stopping"));
        }
        whole.update(&c.data);
        verifier.update(&c.data);
        total += c.data.len() as u64;
        let id = ctx.hasher.id(&c.data);
        refs.push(ChunkRef {
            id,
            len: c.data.len() as u32,
        });
        tickets.push(ctx.stager.stage_blocking(id, c.data)?);
        Ok(())
    });
    match res {
        Ok(()) => Ok(Chunked {
            refs,
            tickets,
            blake3: *whole.finalize().as_bytes(),
            total,
            verdict: verifier.finish(),
        }),
        Err(ChunkError::Read(e)) => Err(Error::object(&meta.key, format!("read failed: {e}"))),
        Err(ChunkError::Sink(e)) => Err(e),
    }
}

/// Waits until the stager has made every chunk durable (or failed to).
async fn wait_durable(tickets: Vec<Ticket>, key: &ObjectKey) -> Result<()> {
    for t in tickets {
        if let Ticket::Pending(rx) = t {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(f)) if f.no_space => {
                    return Err(Error::AllDrivesFull { drives: f.message });
                }
                Ok(Err(f)) => {
                    return Err(Error::object(key, format!("staging failed: {}", f.message)));
                }
                Err(_) => return Err(Error::object(key, "staging writer stopped")),
            }
        }
    }
    Ok(())
}

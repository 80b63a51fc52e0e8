//! Live state of a running command, for operators: counters the stages bump, gauges read
//! at snapshot time (queues, drives, endpoints), the last errors, a short rate history,
//! and the pause/caps controls. [`Monitor::status`] builds the status document
//! (`barge_tui::model::Status`) that [`server`] serves as JSON and as Prometheus metrics,
//! that `barge tui` draws and that the CLI progress line prints.
//!
//! Stages never wait on the monitor: counters are atomics, and the few locks are held
//! for a push or a copy.

pub(crate) mod metrics;
pub mod progress;
pub mod server;
pub mod token;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use barge_tui::model::{
    Action, DriveStatus, Endpoint, ErrorLine, Progress, Queue, Rates, STATUS_VERSION, Sample,
    Staging, Status, Totals,
};

use crate::backend::throttle::Throttle;
use crate::catalog::{Catalog, SampleRecord, unix_now};
use crate::staging::StagingHandle;

/// Errors kept for the status document (all failures are in the catalog as well).
pub const RECENT_ERRORS: usize = 50;
/// Rate samples kept in memory: one per [`SAMPLE_EVERY`], five minutes of them.
pub const HISTORY_LEN: usize = 300;
/// Interval of the rate samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Every this many samples one is also written to the catalog (for the report chart).
pub const PERSIST_EVERY: u64 = 2;
/// Window over which the rates in the status document are averaged.
pub const RATE_WINDOW: usize = 10;

/// What the command does, for the progress and ETA definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ingest,
    Drain,
    Migrate,
}

/// Counters of `barge gateway` (and of the passes' yielding to it).
#[derive(Debug, Default)]
pub struct GatewayCounters {
    /// Reads answered from the destination (moved, or written through the gateway).
    pub reads_dest: AtomicU64,
    /// Reads streamed from the source (not moved yet).
    pub reads_source: AtomicU64,
    /// Bytes streamed from the source to clients.
    pub bytes_read_through: AtomicU64,
    pub writes: AtomicU64,
    pub deletes: AtomicU64,
    pub lists: AtomicU64,
    /// Requests answered with an error of barge's or a store's (5xx).
    pub errors: AtomicU64,
    /// Listed keys a pass left alone because the gateway wrote or deleted them.
    pub yielded: AtomicU64,
    /// Of those, keys the source changed after the gateway took them.
    pub conflicts: AtomicU64,
}

/// Counters of the ingest stage.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub listed: AtomicU64,
    pub bytes_listed: AtomicU64,
    pub unchanged: AtomicU64,
    pub bytes_unchanged: AtomicU64,
    pub staged: AtomicU64,
    pub bytes_staged: AtomicU64,
    pub failed: AtomicU64,
    pub listing_done: AtomicBool,
}

/// The ingest counters at one instant; a run's own figures are the difference between
/// its end and its start (a monitor outlives runs: `migrate` may make two passes).
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestTotals {
    pub listed: u64,
    pub bytes_listed: u64,
    pub unchanged: u64,
    pub staged: u64,
    pub bytes_staged: u64,
    pub failed: u64,
}

impl IngestCounters {
    pub fn totals(&self) -> IngestTotals {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IngestTotals {
            listed: ld(&self.listed),
            bytes_listed: ld(&self.bytes_listed),
            unchanged: ld(&self.unchanged),
            staged: ld(&self.staged),
            bytes_staged: ld(&self.bytes_staged),
            failed: ld(&self.failed),
        }
    }
}

impl IngestTotals {
    /// What was counted since `start`.
    pub fn since(self, start: IngestTotals) -> IngestTotals {
        IngestTotals {
            listed: self.listed - start.listed,
            bytes_listed: self.bytes_listed - start.bytes_listed,
            unchanged: self.unchanged - start.unchanged,
            staged: self.staged - start.staged,
            bytes_staged: self.bytes_staged - start.bytes_staged,
            failed: self.failed - start.failed,
        }
    }
}

/// Counters of the drain stage.
#[derive(Debug, Default)]
pub struct DrainCounters {
    /// Objects (and bytes) handed to the drain workers by the catalog scan.
    pub scanned: AtomicU64,
    pub bytes_scanned: AtomicU64,
    pub drained: AtomicU64,
    pub bytes_drained: AtomicU64,
    /// Of the drained: server-side copies of content the run had already sent.
    pub copied: AtomicU64,
    pub bytes_copied: AtomicU64,
    pub failed: AtomicU64,
    /// Chunks the drain's reader served, by where from.
    pub chunk_reads: Arc<ChunkReads>,
}

/// Chunks a chunk reader served: from memory (staged moments ago by this process, a
/// migrate's drain) or read back from a staging drive.
#[derive(Debug, Default)]
pub struct ChunkReads {
    pub memory: AtomicU64,
    pub staging: AtomicU64,
}

impl ChunkReads {
    /// (from memory, from staging) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.memory.load(Ordering::Relaxed),
            self.staging.load(Ordering::Relaxed),
        )
    }
}

/// Depth of one queue between stages, kept by its producers and consumers.
#[derive(Debug, Default)]
pub struct QueueGauge {
    /// Pushes minus pops. A consumer may pop before the producer's push of the same item
    /// lands, so it can be -1 for a moment; a pop is never lost (a lost pop made the
    /// gauge drift above the queue's capacity).
    depth: AtomicI64,
}

impl QueueGauge {
    pub fn push(&self) {
        self.depth.fetch_add(1, Ordering::Relaxed);
    }

    pub fn pop(&self) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
    }

    /// The depth as shown: within 0 ..= `capacity`.
    fn shown(&self, capacity: u64) -> u64 {
        self.depth.load(Ordering::Relaxed).clamp(0, capacity as i64) as u64
    }
}

type QueueProbe = Box<dyn Fn() -> Option<(u64, u64)> + Send + Sync>;

/// The live state of one command. Create one per command with [`Monitor::new`] and hand
/// it to the stages through their options.
pub struct Monitor {
    started: Instant,
    mode: Mutex<Mode>,
    command: Mutex<String>,
    state_dir: Mutex<String>,
    source: Mutex<Option<String>>,
    destination: Mutex<Option<String>>,
    pub ingest: IngestCounters,
    pub drain: DrainCounters,
    pub gateway: GatewayCounters,
    staging: Mutex<Option<StagingHandle>>,
    key_fingerprint: Mutex<String>,
    endpoints: Mutex<Vec<(String, Arc<Throttle>)>>,
    queues: Mutex<Vec<(String, QueueProbe)>>,
    errors: Mutex<VecDeque<ErrorLine>>,
    history: Mutex<VecDeque<Sample>>,
    /// Last drive byte counters, for per-drive write rates.
    drive_marks: Mutex<Vec<(Instant, u64)>>,
    paused: tokio::sync::watch::Sender<bool>,
    finished: AtomicBool,
    /// Unix ms when the command started: the session key of its catalog samples.
    session_ms: u64,
    ticks: AtomicU64,
    catalog: Mutex<Option<Arc<Catalog>>>,
    /// The listing's key ranges as last checkpointed.
    listing: Mutex<Vec<barge_tui::model::ListingRange>>,
    /// A sync's pass, lag and estimate (set by the pass driver at each phase).
    sync: Mutex<Option<barge_tui::model::SyncStatus>>,
    /// Metric families served at `/metrics` beside the status document's (the fleet's
    /// verdict on a node that watches it), in the exposition format, without `# EOF`.
    extra_metrics: Mutex<String>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("command", &Self::get(&self.command))
            .finish_non_exhaustive()
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor::new("idle")
    }
}

impl Monitor {
    pub fn new(command: &str) -> Self {
        let (paused, _) = tokio::sync::watch::channel(false);
        Monitor {
            started: Instant::now(),
            mode: Mutex::new(Mode::Migrate),
            command: Mutex::new(command.to_string()),
            state_dir: Mutex::new(String::new()),
            source: Mutex::new(None),
            destination: Mutex::new(None),
            ingest: IngestCounters::default(),
            gateway: GatewayCounters::default(),
            drain: DrainCounters::default(),
            staging: Mutex::new(None),
            key_fingerprint: Mutex::new(String::new()),
            endpoints: Mutex::new(vec![]),
            queues: Mutex::new(vec![]),
            errors: Mutex::new(VecDeque::new()),
            history: Mutex::new(VecDeque::new()),
            listing: Mutex::new(vec![]),
            sync: Mutex::new(None),
            extra_metrics: Mutex::new(String::new()),
            drive_marks: Mutex::new(vec![]),
            paused,
            finished: AtomicBool::new(false),
            session_ms: unix_ms(),
            ticks: AtomicU64::new(0),
            catalog: Mutex::new(None),
        }
    }

    fn set<T>(m: &Mutex<T>, v: T) {
        if let Ok(mut g) = m.lock() {
            *g = v;
        }
    }

    fn get<T: Clone + Default>(m: &Mutex<T>) -> T {
        m.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Names the command, its mode and its state directory.
    pub fn describe(&self, command: &str, mode: Mode, state_dir: &str, key_fingerprint: &str) {
        Self::set(&self.command, command.to_string());
        Self::set(&self.mode, mode);
        Self::set(&self.state_dir, state_dir.to_string());
        Self::set(&self.key_fingerprint, key_fingerprint.to_string());
    }

    pub fn set_source(&self, url: &str, throttle: Option<Arc<Throttle>>) {
        Self::set(&self.source, Some(url.to_string()));
        if let Some(t) = throttle {
            self.add_endpoint("source", t);
        }
    }

    pub fn set_destination(&self, url: &str, throttle: Option<Arc<Throttle>>) {
        Self::set(&self.destination, Some(url.to_string()));
        if let Some(t) = throttle {
            self.add_endpoint("destination", t);
        }
    }

    /// Shows the listing's key ranges (from the latest checkpoint).
    pub fn set_listing(&self, ranges: &crate::backend::ListFrom) {
        Self::set(&self.listing, crate::checkpoint::as_status(ranges));
    }

    /// Serves `text` (metric families, no `# EOF`) at `/metrics` after the status
    /// document's own, replacing what was set before.
    pub fn set_extra_metrics(&self, text: String) {
        Self::set(&self.extra_metrics, text);
    }

    /// What [`Monitor::set_extra_metrics`] set.
    pub fn extra_metrics(&self) -> String {
        Self::get(&self.extra_metrics)
    }

    /// Shows where a sync stands (see [`barge_tui::model::SyncStatus`]).
    pub fn set_sync(&self, sync: barge_tui::model::SyncStatus) {
        Self::set(&self.sync, Some(sync));
    }

    fn add_endpoint(&self, role: &str, t: Arc<Throttle>) {
        if let Ok(mut e) = self.endpoints.lock()
            && !e.iter().any(|(r, x)| r == role && Arc::ptr_eq(x, &t))
        {
            e.push((role.to_string(), t));
        }
    }

    /// Shows the staging drives and dedup counters of a running stager.
    pub fn set_staging(&self, h: StagingHandle) {
        Self::set(&self.staging, Some(h));
    }

    /// Registers a queue; `probe` returns (depth, capacity) while the queue exists.
    pub fn add_queue(
        &self,
        name: &str,
        probe: impl Fn() -> Option<(u64, u64)> + Send + Sync + 'static,
    ) {
        if let Ok(mut q) = self.queues.lock() {
            q.retain(|(n, _)| n != name);
            q.push((name.to_string(), Box::new(probe)));
        }
    }

    /// Registers a tokio mpsc queue by a weak handle (the monitor never keeps it open);
    /// shown while a sender exists.
    pub fn add_mpsc<T: Send + 'static>(&self, name: &str, tx: &tokio::sync::mpsc::Sender<T>) {
        let weak = tx.downgrade();
        self.add_queue(name, move || {
            weak.upgrade().map(|t| {
                (
                    (t.max_capacity() - t.capacity()) as u64,
                    t.max_capacity() as u64,
                )
            })
        });
    }

    /// Registers a queue of `capacity` whose producers call [`QueueGauge::push`] after a
    /// send and whose consumers call [`QueueGauge::pop`] after a receive.
    pub fn queue(&self, name: &str, capacity: usize) -> Arc<QueueGauge> {
        let g = Arc::new(QueueGauge::default());
        let g2 = g.clone();
        self.add_queue(name, move || {
            Some((g2.shown(capacity as u64), capacity as u64))
        });
        g
    }

    /// Records a failure of `object` in `stage` for the status document.
    pub fn error(&self, stage: &str, object: &str, message: &str) {
        if let Ok(mut e) = self.errors.lock() {
            if e.len() == RECENT_ERRORS {
                e.pop_front();
            }
            e.push_back(ErrorLine {
                unix: unix_now(),
                stage: stage.to_string(),
                object: object.to_string(),
                // The object is its own field; drop the "object <key>: " prefix errors carry.
                message: message
                    .strip_prefix(&format!("object {object}: "))
                    .unwrap_or(message)
                    .to_string(),
            });
        }
    }

    /// Keeps a throughput sample in `catalog` every [`PERSIST_EVERY`] seconds, and one
    /// at [`Monitor::finish`].
    pub fn persist_to(&self, catalog: Arc<Catalog>) {
        Self::set(&self.catalog, Some(catalog));
    }

    fn persist(&self, s: &Sample) {
        let Some(cat) = self.catalog.lock().ok().and_then(|c| c.clone()) else {
            return;
        };
        let rec = SampleRecord {
            command: Self::get(&self.command),
            listed_objects: s.listed_objects,
            staged_bytes: s.staged_bytes,
            drained_bytes: s.drained_bytes,
            sealed_bytes: s.sealed_bytes,
            staged_objects: s.staged_objects,
            drained_objects: s.drained_objects,
        };
        let at = self.session_ms + (s.t * 1000.0) as u64;
        if let Err(e) = cat.put_sample(self.session_ms, at, &rec) {
            tracing::debug!("throughput sample not kept: {e}");
        }
    }

    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
        let s = self.tick();
        self.persist(&s);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Waits while the operator has paused the run. Stages call this between objects, so
    /// a pause lets requests in flight finish and starts nothing new.
    pub async fn gate(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|p| !*p).await;
    }

    /// Applies an operator action; returns what changed, for the reply and the log.
    pub fn control(&self, a: Action) -> String {
        match a {
            Action::Pause => {
                self.paused.send_replace(true);
                "paused: no new object is started".into()
            }
            Action::Resume => {
                self.paused.send_replace(false);
                "resumed".into()
            }
            Action::Faster | Action::Slower | Action::RateUp | Action::RateDown => {
                let eps = Self::get_endpoints(self);
                if eps.is_empty() {
                    return "no remote endpoint in this run: nothing to change".into();
                }
                let mut out = vec![];
                for (role, t) in eps {
                    let (cap, rps) = t.caps();
                    let quarter = (cap / 4).max(1);
                    let (cap, rps) = match a {
                        Action::Faster => (cap + quarter, rps),
                        Action::Slower => (cap.saturating_sub(quarter).max(1), rps),
                        Action::RateUp => (cap, rps.map(|r| r * 1.25)),
                        _ => {
                            let now = rps.unwrap_or_else(|| {
                                t.stats().requests.max(1) as f64
                                    / self.started.elapsed().as_secs_f64().max(1.0)
                            });
                            (cap, Some((now * 0.75).max(0.1)))
                        }
                    };
                    // Within the configured caps: a request above them gets them.
                    t.set_caps(cap, rps);
                    let ((cap, rps), (top, top_rps)) = (t.caps(), t.ceiling());
                    let mut line = format!(
                        "{role}: max concurrency {cap}, max requests/s {}",
                        rps.map_or("none".into(), |r| format!("{r:.1}"))
                    );
                    if cap == top {
                        line += " (--max-concurrency is the configured maximum)";
                    }
                    if rps.is_some() && rps == top_rps {
                        line += " (--max-requests-per-second is the configured maximum)";
                    }
                    out.push(line);
                }
                out.join("; ")
            }
        }
    }

    fn get_endpoints(&self) -> Vec<(String, Arc<Throttle>)> {
        self.endpoints.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn sample_now(&self) -> Sample {
        let sealed = self
            .staging
            .lock()
            .ok()
            .and_then(|s| {
                s.as_ref()
                    .map(|h| h.stats().bytes_sealed.load(Ordering::Relaxed))
            })
            .unwrap_or(0);
        Sample {
            t: self.started.elapsed().as_secs_f64(),
            listed_objects: self.ingest.listed.load(Ordering::Relaxed),
            staged_bytes: self.ingest.bytes_staged.load(Ordering::Relaxed),
            drained_bytes: self.drain.bytes_drained.load(Ordering::Relaxed),
            sealed_bytes: sealed,
            staged_objects: self.ingest.staged.load(Ordering::Relaxed),
            drained_objects: self.drain.drained.load(Ordering::Relaxed),
        }
    }

    /// Appends a rate sample; the sampler task calls this every [`SAMPLE_EVERY`].
    pub fn tick(&self) -> Sample {
        let s = self.sample_now();
        if self
            .ticks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PERSIST_EVERY)
        {
            self.persist(&s);
        }
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY_LEN {
                h.pop_front();
            }
            h.push_back(s);
        }
        s
    }

    /// Starts the sampler: one sample per second until the monitor is dropped.
    pub fn start_sampler(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(SAMPLE_EVERY);
            loop {
                iv.tick().await;
                match weak.upgrade() {
                    Some(m) => {
                        m.tick();
                    }
                    None => return,
                }
            }
        });
    }

    /// The status document at this instant.
    pub fn status(&self) -> Status {
        let ing = &self.ingest;
        let dr = &self.drain;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let totals = self.totals();
        let mut history: Vec<Sample> = self
            .history
            .lock()
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        // The document's own instant closes the history, so rates are never stale.
        history.push(self.sample_now());
        let rates = rates_over(&history, RATE_WINDOW);
        let mode = *self.mode.lock().unwrap_or_else(|p| p.into_inner());
        let listing_done = ing.listing_done.load(Ordering::Relaxed);
        let progress = progress(
            mode,
            &totals,
            ld(&ing.bytes_unchanged),
            ld(&dr.bytes_scanned),
            listing_done,
            // The ETA uses the whole history (up to five minutes): objects finish in
            // steps, and a ten-second window during one large upload reads as a stall.
            &rates_over(&history, HISTORY_LEN),
        );
        let (staging, drives) = self.staging_status();
        let endpoints = self.endpoint_status();
        let queues = self.queue_status();
        Status {
            version: STATUS_VERSION,
            barge: env!("CARGO_PKG_VERSION").to_string(),
            command: Self::get(&self.command),
            pid: std::process::id(),
            state_dir: Self::get(&self.state_dir),
            source: Self::get(&self.source),
            destination: Self::get(&self.destination),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            unix: unix_now(),
            paused: self.is_paused(),
            finished: self.finished.load(Ordering::Relaxed),
            totals,
            rates,
            progress,
            queues,
            staging,
            drives,
            endpoints,
            errors: self
                .errors
                .lock()
                .map(|e| e.iter().cloned().collect())
                .unwrap_or_default(),
            history,
            listing: Self::get(&self.listing),
            sync: Self::get(&self.sync),
            gateway: self.gateway_status(),
        }
    }

    /// The gateway's counters, when this is a gateway or the passes yielded to one.
    fn gateway_status(&self) -> Option<barge_tui::model::GatewayStatus> {
        let g = &self.gateway;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let st = barge_tui::model::GatewayStatus {
            reads_dest: n(&g.reads_dest),
            reads_source: n(&g.reads_source),
            bytes_read_through: n(&g.bytes_read_through),
            writes: n(&g.writes),
            deletes: n(&g.deletes),
            lists: n(&g.lists),
            errors: n(&g.errors),
            yielded: n(&g.yielded),
            conflicts: n(&g.conflicts),
        };
        let is_gateway = self.command.lock().is_ok_and(|c| c.as_str() == "gateway");
        (is_gateway || st != barge_tui::model::GatewayStatus::default()).then_some(st)
    }

    /// The run's counters so far.
    fn totals(&self) -> Totals {
        let i = self.ingest.totals();
        let dr = &self.drain;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            listed_objects: i.listed,
            listed_bytes: i.bytes_listed,
            unchanged_objects: i.unchanged,
            staged_objects: i.staged,
            staged_bytes: i.bytes_staged,
            drained_objects: ld(&dr.drained),
            drained_bytes: ld(&dr.bytes_drained),
            copied_objects: ld(&dr.copied),
            copied_bytes: ld(&dr.bytes_copied),
            chunks_from_memory: ld(&dr.chunk_reads.memory),
            chunks_from_staging: ld(&dr.chunk_reads.staging),
            failed_objects: i.failed + ld(&dr.failed),
        }
    }

    /// Each remote endpoint's limits and request counters.
    fn endpoint_status(&self) -> Vec<Endpoint> {
        self.get_endpoints()
            .into_iter()
            .map(|(role, t)| {
                let s = t.stats();
                Endpoint {
                    role,
                    url: s.name.clone(),
                    concurrency: s.limit,
                    max_concurrency: s.max_concurrency as u64,
                    max_requests_per_sec: s.max_rps,
                    in_flight: s.in_flight as u64,
                    requests: s.requests,
                    retries: s.retries,
                    throttled: s.throttled,
                    errors: s.errors,
                    latency_ms: s.latency_small.map(|l| l * 1000.0),
                    down: s.down.clone(),
                }
            })
            .collect()
    }

    /// Depth and capacity of each registered queue whose probe still answers.
    fn queue_status(&self) -> Vec<Queue> {
        self.queues
            .lock()
            .map(|q| {
                q.iter()
                    .filter_map(|(name, probe)| {
                        probe().map(|(depth, capacity)| Queue {
                            name: name.clone(),
                            depth,
                            capacity,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn staging_status(&self) -> (Staging, Vec<DriveStatus>) {
        let g = self.staging.lock();
        let Some(h) = g.as_ref().ok().and_then(|g| g.as_ref()) else {
            return (
                Staging {
                    dedup_ratio: 1.0,
                    key_fingerprint: Self::get(&self.key_fingerprint),
                    ..Default::default()
                },
                vec![],
            );
        };
        let st = h.stats();
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (new, dedup) = (ld(&st.bytes_new), ld(&st.bytes_dedup));
        let staging = Staging {
            chunks_new: ld(&st.chunks_new),
            chunks_dedup: ld(&st.chunks_dedup),
            bytes_new: new,
            bytes_dedup: dedup,
            bytes_sealed: ld(&st.bytes_sealed),
            dedup_ratio: if new > 0 {
                (new + dedup) as f64 / new as f64
            } else {
                1.0
            },
            io_engine: h
                .engine()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "none yet".into()),
            cipher: format!("AES-256-GCM ({})", h.seal_backend_name()),
            key_fingerprint: Self::get(&self.key_fingerprint),
        };
        let now = Instant::now();
        let mut marks = self.drive_marks.lock().unwrap_or_else(|p| p.into_inner());
        let drives = h
            .drives()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let written = ld(&d.bytes_written);
                let fs = match d.raw_usage() {
                    Some((size, used)) => Ok((size, used)),
                    None => nix::sys::statvfs::statvfs(&d.path).map(|v| {
                        let bs = v.fragment_size();
                        (v.blocks() * bs, (v.blocks() - v.blocks_free()) * bs)
                    }),
                };
                let (size, used, mut health) = match fs {
                    Ok((size, used)) => (size, used, "ok".to_string()),
                    Err(e) => (0, 0, format!("cannot stat: {e}")),
                };
                if d.raw.is_some()
                    && let Some(h) = crate::drives::health_of_path(&d.path)
                {
                    health = h;
                }
                if marks.len() <= i {
                    marks.push((self.started, 0));
                }
                let (t0, w0) = marks[i];
                let dt = now.duration_since(t0).as_secs_f64();
                let rate = if dt > 0.0 {
                    written.saturating_sub(w0) as f64 / dt
                } else {
                    0.0
                };
                if dt >= 1.0 {
                    marks[i] = (now, written);
                }
                let full = d.full.load(Ordering::Relaxed);
                DriveStatus {
                    path: d.path.display().to_string(),
                    size_bytes: size,
                    used_bytes: used,
                    written_bytes: written,
                    write_bytes_per_sec: rate,
                    full,
                    health: if full { "full".into() } else { health },
                }
            })
            .collect();
        (staging, drives)
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Average rates over the last `window` intervals of `history`.
fn rates_over(history: &[Sample], window: usize) -> Rates {
    let n = history.len();
    if n < 2 {
        return Rates::default();
    }
    let a = history[n.saturating_sub(window + 1)];
    let b = history[n - 1];
    let dt = b.t - a.t;
    if dt <= 0.0 {
        return Rates::default();
    }
    let per = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
    Rates {
        listed_objects_per_sec: per(a.listed_objects, b.listed_objects),
        staged_bytes_per_sec: per(a.staged_bytes, b.staged_bytes),
        drained_bytes_per_sec: per(a.drained_bytes, b.drained_bytes),
        sealed_bytes_per_sec: per(a.sealed_bytes, b.sealed_bytes),
        staged_objects_per_sec: per(a.staged_objects, b.staged_objects),
        drained_objects_per_sec: per(a.drained_objects, b.drained_objects),
    }
}

/// Progress and ETA. What must move: for ingest, the listed bytes that were not already
/// staged; for a drain, what the catalog scan handed out; for migrate, both (objects
/// staged by earlier runs reach the drain through the scan, new ones through listing).
fn progress(
    mode: Mode,
    t: &Totals,
    bytes_unchanged: u64,
    bytes_scanned: u64,
    listing_done: bool,
    r: &Rates,
) -> Progress {
    let listed_new = t.listed_bytes.saturating_sub(bytes_unchanged);
    let (to_move, done, rate, known) = match mode {
        Mode::Ingest => (
            listed_new,
            t.staged_bytes,
            r.staged_bytes_per_sec,
            listing_done,
        ),
        Mode::Drain => (
            bytes_scanned,
            t.drained_bytes,
            r.drained_bytes_per_sec,
            listing_done,
        ),
        Mode::Migrate => (
            listed_new + bytes_scanned,
            t.drained_bytes,
            r.drained_bytes_per_sec,
            listing_done,
        ),
    };
    let to_move = to_move.max(done);
    let fraction = if to_move > 0 {
        done as f64 / to_move as f64
    } else if known {
        1.0
    } else {
        0.0
    };
    let eta_secs = (known && rate > 0.0).then(|| (to_move - done) as f64 / rate);
    Progress {
        listing_done: known,
        bytes_to_move: to_move,
        bytes_done: done,
        fraction,
        eta_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_eta_follow_the_counters() {
        let m = Monitor::new("migrate");
        m.describe("migrate", Mode::Migrate, "/s", "fp");
        m.ingest.listed.store(10, Ordering::Relaxed);
        m.ingest.bytes_listed.store(1000, Ordering::Relaxed);
        m.tick();
        m.drain.bytes_drained.store(400, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        let s = m.status();
        assert_eq!(s.totals.listed_objects, 10);
        assert!(s.rates.drained_bytes_per_sec > 0.0);
        assert!((s.progress.fraction - 0.4).abs() < 1e-9);
        assert_eq!(s.progress.eta_secs, None, "no ETA before listing ends");
        m.ingest.listing_done.store(true, Ordering::Relaxed);
        let s = m.status();
        assert!(s.progress.eta_secs.is_some_and(|e| e > 0.0));
    }

    #[test]
    fn errors_are_bounded_and_keep_the_newest() {
        let m = Monitor::new("ingest");
        for i in 0..(RECENT_ERRORS + 5) {
            m.error("ingest", &format!("obj-{i}"), "boom");
        }
        let s = m.status();
        assert_eq!(s.errors.len(), RECENT_ERRORS);
        assert_eq!(s.errors.last().map(|e| e.object.as_str()), Some("obj-54"));
    }

    #[tokio::test]
    async fn pause_holds_the_gate_and_caps_change_live() {
        let m = Arc::new(Monitor::new("drain"));
        let t = Arc::new(Throttle::new(
            "swift://x",
            crate::backend::throttle::ThrottleConfig {
                max_concurrency: 8,
                initial_concurrency: 8,
                max_rps: None,
                ..Default::default()
            },
        ));
        m.set_destination("swift://x", Some(t.clone()));
        m.control(Action::Pause);
        let m2 = m.clone();
        let waiter = tokio::spawn(async move { m2.gate().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "paused gate must hold");
        m.control(Action::Resume);
        waiter.await.unwrap();
        m.control(Action::Slower);
        assert_eq!(t.caps().0, 6);
        m.control(Action::Faster);
        assert_eq!(t.caps().0, 7);
        m.control(Action::RateDown);
        assert!(t.caps().1.is_some());
        let s = m.status();
        assert_eq!(s.endpoints[0].max_concurrency, 7);
        // Issue 27: never above the configured --max-concurrency, however often asked.
        for _ in 0..5 {
            m.control(Action::Faster);
        }
        assert_eq!(t.caps().0, 8);
    }

    #[test]
    fn rate_up_stops_at_the_configured_request_rate() {
        let m = Monitor::new("drain");
        let t = Arc::new(Throttle::new(
            "swift://x",
            crate::backend::throttle::ThrottleConfig {
                max_concurrency: 4,
                max_rps: Some(10.0),
                ..Default::default()
            },
        ));
        m.set_destination("swift://x", Some(t.clone()));
        m.control(Action::RateDown);
        assert_eq!(t.caps().1, Some(7.5));
        for _ in 0..5 {
            m.control(Action::RateUp);
        }
        assert_eq!(t.caps().1, Some(10.0));
        let said = m.control(Action::Faster);
        assert_eq!(t.caps().0, 4);
        assert!(said.contains("configured maximum"), "{said}");
    }
}

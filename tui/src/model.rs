//! The status document a running node serves at `/status` (JSON), and that the dashboard
//! renders. It lives here, not in the engine, so the dashboard does not depend on the
//! engine; the engine depends on this crate to produce it. Field names are the wire
//! format: add fields freely (readers default what they do not know), never rename.

use serde::{Deserialize, Serialize};

/// Version of the status document. Bumped only on an incompatible change.
pub const STATUS_VERSION: u32 = 1;

/// Everything the node reports about itself, at one instant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub version: u32,
    /// `barge --version` of the node.
    pub barge: String,
    /// What the node is doing: "migrate", "ingest", "drain", "daemon".
    pub command: String,
    pub pid: u32,
    pub state_dir: String,
    pub source: Option<String>,
    pub destination: Option<String>,
    /// Seconds since the command started.
    pub uptime_secs: f64,
    /// Unix time of this snapshot.
    pub unix: u64,
    pub paused: bool,
    /// The run has ended (the node keeps serving until it exits).
    pub finished: bool,
    pub totals: Totals,
    /// Bytes per second over the last few seconds.
    pub rates: Rates,
    pub progress: Progress,
    pub queues: Vec<Queue>,
    pub staging: Staging,
    pub drives: Vec<DriveStatus>,
    pub endpoints: Vec<Endpoint>,
    /// Most recent errors, newest last.
    pub errors: Vec<ErrorLine>,
    /// Rate samples, one per second, oldest first (at most a few minutes).
    pub history: Vec<Sample>,
    /// The key ranges of the listing and how far each got (as last checkpointed).
    pub listing: Vec<ListingRange>,
    /// A `barge sync` or `barge cutover`: its passes, lag and cutover estimate.
    pub sync: Option<SyncStatus>,
    /// A `barge gateway`: what it answered, from which side.
    #[serde(default)]
    pub gateway: Option<GatewayStatus>,
}

/// What `barge gateway` has answered since it started (counters), and what the passes
/// behind it left to the application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayStatus {
    /// Reads answered from the destination (moved, or written through the gateway).
    pub reads_dest: u64,
    /// Reads streamed from the source (not moved yet).
    pub reads_source: u64,
    pub bytes_read_through: u64,
    pub writes: u64,
    pub deletes: u64,
    pub lists: u64,
    /// Requests that failed on barge's or a store's side (answered 503).
    pub errors: u64,
    /// Listed keys the passes left alone because the gateway wrote or deleted them.
    pub yielded: u64,
    /// Of those, keys the source changed after the gateway took them.
    pub conflicts: u64,
}

/// Where a continuous sync stands: the pass, what is known to differ, how fast the
/// source changes and how long a final (cutover) pass would take.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncStatus {
    /// The pass running, or the last one.
    pub pass: u64,
    /// "sync" or "cutover".
    pub kind: String,
    /// "moving" (listing, staging, draining), "deleting", "verifying", "waiting",
    /// "finished".
    pub phase: String,
    pub passes_finished: u64,
    /// Objects (and their bytes) known to differ between source and destination now:
    /// new or changed and not yet at the destination, failed, or gone from the source
    /// and not yet deleted.
    pub lag_objects: u64,
    pub lag_bytes: u64,
    /// How fast the source changed between the last two passes (new, changed and
    /// deleted objects; new and changed bytes).
    pub change_objects_per_hour: f64,
    pub change_bytes_per_hour: f64,
    /// The last finished pass: how long it took, and its listing.
    pub last_pass_secs: f64,
    pub last_listing_secs: f64,
    /// What the last finished pass found and did.
    pub last_new: u64,
    pub last_changed: u64,
    pub last_deleted: u64,
    pub last_unchanged: u64,
    pub last_failed: u64,
    pub last_deletions: String,
    /// A rough length of a final pass started now (see ARCHITECTURE.md, "Sync").
    pub estimated_final_pass_secs: f64,
    /// When the next pass starts (Unix seconds), while waiting.
    pub next_pass_unix: Option<u64>,
}

/// One key range of a listing: the keys after `after` up to `until` (none: to the end).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListingRange {
    pub range: String,
    pub after: Option<String>,
    pub until: Option<String>,
    pub done: bool,
}

/// Cumulative counters of this run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub listed_objects: u64,
    pub listed_bytes: u64,
    /// Listed objects that were already staged and unchanged.
    pub unchanged_objects: u64,
    pub staged_objects: u64,
    pub staged_bytes: u64,
    pub drained_objects: u64,
    pub drained_bytes: u64,
    /// Of the drained: written as server-side copies of content already sent.
    pub copied_objects: u64,
    pub copied_bytes: u64,
    /// Chunks the drain read: from memory (staged moments ago in the same process) and
    /// back from the staging drives.
    pub chunks_from_memory: u64,
    pub chunks_from_staging: u64,
    pub failed_objects: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Rates {
    pub listed_objects_per_sec: f64,
    pub staged_bytes_per_sec: f64,
    pub drained_bytes_per_sec: f64,
    pub sealed_bytes_per_sec: f64,
    /// Objects per second: with small objects, bytes per second say little.
    pub staged_objects_per_sec: f64,
    pub drained_objects_per_sec: f64,
}

/// How far the run is, and when it should end.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// Listing has finished, so the totals below are final.
    pub listing_done: bool,
    /// Bytes that must reach the destination in this run (listed, minus unchanged).
    pub bytes_to_move: u64,
    /// Bytes at the destination so far (or staged, for an ingest-only run).
    pub bytes_done: u64,
    pub fraction: f64,
    /// Estimated seconds left; none until listing has finished and bytes are moving.
    pub eta_secs: Option<f64>,
}

/// A bounded queue between two stages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Queue {
    pub name: String,
    pub depth: u64,
    pub capacity: u64,
}

/// Dedup and sealing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Staging {
    pub chunks_new: u64,
    pub chunks_dedup: u64,
    pub bytes_new: u64,
    pub bytes_dedup: u64,
    pub bytes_sealed: u64,
    /// (new + dedup) / new bytes of this run; 1.0 before anything is staged.
    pub dedup_ratio: f64,
    /// "io_uring" or "pwrite (why)".
    pub io_engine: String,
    /// Cipher and implementation, e.g. "AES-256-GCM (aws-lc-rs)".
    pub cipher: String,
    /// Fingerprint of the master key (never the key).
    pub key_fingerprint: String,
}

/// One staging drive.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DriveStatus {
    pub path: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub written_bytes: u64,
    pub write_bytes_per_sec: f64,
    /// The writer found the drive full and stopped using it.
    pub full: bool,
    /// "ok", or why not.
    pub health: String,
}

/// One remote endpoint (source or destination) and its back-pressure controller.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    /// "source" or "destination".
    pub role: String,
    pub url: String,
    /// The adaptive window (requests allowed in flight).
    pub concurrency: f64,
    pub max_concurrency: u64,
    pub max_requests_per_sec: Option<f64>,
    pub in_flight: u64,
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub errors: u64,
    /// Smoothed latency of small requests, milliseconds.
    pub latency_ms: Option<f64>,
    /// Why the endpoint was taken for down (every request failing for `--down-after`).
    pub down: Option<String>,
}

/// One failure, with the object it concerns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorLine {
    pub unix: u64,
    pub stage: String,
    pub object: String,
    pub message: String,
}

/// Cumulative counters at one instant (the rates are differences of two samples).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Sample {
    /// Seconds since the command started.
    pub t: f64,
    pub listed_objects: u64,
    pub staged_bytes: u64,
    pub drained_bytes: u64,
    pub sealed_bytes: u64,
    pub staged_objects: u64,
    pub drained_objects: u64,
}

/// Rates between consecutive samples: (t, staged B/s, drained B/s).
pub fn rates_of(history: &[Sample]) -> Vec<(f64, f64, f64)> {
    history
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].t - w[0].t;
            (dt > 0.0).then(|| {
                (
                    w[1].t,
                    w[1].staged_bytes.saturating_sub(w[0].staged_bytes) as f64 / dt,
                    w[1].drained_bytes.saturating_sub(w[0].drained_bytes) as f64 / dt,
                )
            })
        })
        .collect()
}

/// A control request to the node (`POST /control?action=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    /// Raise every endpoint's concurrency cap by a quarter (at least 1).
    Faster,
    /// Lower every endpoint's concurrency cap by a quarter (not below 1).
    Slower,
    /// Raise the request-rate cap by a quarter (no cap: unchanged).
    RateUp,
    /// Lower the request-rate cap by a quarter (no cap: cap at the current rate).
    RateDown,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Faster => "faster",
            Action::Slower => "slower",
            Action::RateUp => "rate-up",
            Action::RateDown => "rate-down",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        [
            Action::Pause,
            Action::Resume,
            Action::Faster,
            Action::Slower,
            Action::RateUp,
            Action::RateDown,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

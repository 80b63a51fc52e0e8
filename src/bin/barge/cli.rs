//! The command line: options and subcommands (clap), and how they become the library's
//! [`Settings`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use barge::backend::EndpointOptions;
use barge::backend::throttle::ThrottleConfig;
use barge::chunker::ChunkParams;
use barge::commands::Settings;
use barge::crypto::SealBackend;
use barge::crypto::keys::KeyRequest;
use barge::node::{InitOptions, Node};
use barge::staging::StagingSettings;

use crate::{bench, ship};

#[derive(Parser)]
#[command(
    name = "barge",
    version,
    about = "Bulk-transfer appliance: move object stores through sealed, deduplicated NVMe staging"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Clone)]
pub(crate) struct Global {
    /// State directory: catalog and key material.
    #[arg(
        long,
        global = true,
        default_value = "./barge-state",
        env = "BARGE_STATE"
    )]
    pub state: PathBuf,
    /// A staging drive (directory); repeat for several. Default: <state>/staging.
    #[arg(long = "staging", global = true)]
    pub staging: Vec<PathBuf>,
    /// Use this 32-byte key file instead of <state>/keys/master.key.
    #[arg(long, global = true)]
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the passphrase (init: derive the key from it).
    #[arg(long, global = true)]
    pub passphrase_env: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Only errors on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print results as JSON on stdout (one document per stage) and progress as JSON
    /// lines on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// Also serve the status API (GET /status, GET /metrics, POST /control) on this TCP
    /// address, e.g. 127.0.0.1:9898. The Unix socket <state>/barge.sock is always served.
    /// Requests must name this address, localhost or an --http-allow-host name as Host
    /// and carry no Origin; POST /control needs `Authorization: Bearer` with the token
    /// in <state>/control.token (made at first use, mode 0600).
    #[arg(long, global = true, env = "BARGE_HTTP")]
    pub http: Option<std::net::SocketAddr>,
    /// Serve GET /metrics alone (no status, no control) on this TCP address, e.g.
    /// 0.0.0.0:9899 for a Prometheus elsewhere while --http stays on loopback.
    #[arg(long, global = true, env = "BARGE_METRICS_HTTP")]
    pub metrics_http: Option<std::net::SocketAddr>,
    /// A host name (or address) the TCP status API answers to besides its own address
    /// and localhost, as clients name it in Host (repeatable, or comma-separated).
    #[arg(
        long,
        global = true,
        env = "BARGE_HTTP_ALLOW_HOST",
        value_delimiter = ','
    )]
    pub http_allow_host: Vec<String>,
    /// Start paused: list and show the plan, move nothing until resumed (`p` in
    /// `barge tui`, or POST /control?action=resume).
    #[arg(long, global = true)]
    pub start_paused: bool,
    #[command(flatten)]
    pub ends: Ends,
    #[command(flatten)]
    pub filters: Filters,
    /// A shard plan (`barge plan --out`): this node moves, verifies and reports only its
    /// shard's key range, into a state directory of its own.
    #[arg(long, global = true, env = "BARGE_PLAN")]
    pub plan: Option<PathBuf>,
    /// This node's shard of --plan (default: $JOB_COMPLETION_INDEX, as a Kubernetes
    /// Indexed Job sets it).
    #[arg(long, global = true, env = "BARGE_SHARD")]
    pub shard: Option<u32>,
    /// The fleet key of a move over several nodes (64 hex digits, mode 0600; `barge plan
    /// --new-fleet-key` makes one): shard reports and cutover certificates carry a MAC
    /// under it, and `report --fleet` checks them with it. Default: $BARGE_FLEET_KEY
    /// (the hex itself).
    #[arg(long, global = true, env = "BARGE_FLEET_KEY_FILE")]
    pub fleet_key_file: Option<PathBuf>,
}

/// Which objects of the source are part of the move (rclone's filter meaning; see
/// README "Filters"). Recorded by ingest; verify applies the recorded filter.
#[derive(Args, Clone, Default)]
pub(crate) struct Filters {
    /// Move only keys matching this glob (repeatable): `*` within a path segment, `**`
    /// across, `?`, `[…]`, `{a,b}`; a leading `/` anchors at the root.
    #[arg(long, global = true)]
    pub include: Vec<String>,
    /// Leave out keys matching this glob (repeatable).
    #[arg(long, global = true)]
    pub exclude: Vec<String>,
    /// Include patterns from a file, one per line (`#` comments).
    #[arg(long, global = true)]
    pub include_from: Vec<PathBuf>,
    /// Exclude patterns from a file, one per line (`#` comments).
    #[arg(long, global = true)]
    pub exclude_from: Vec<PathBuf>,
    /// Leave out objects smaller than this (e.g. 1KiB).
    #[arg(long, global = true, value_parser = parse_size)]
    pub min_size: Option<u64>,
    /// Leave out objects larger than this (e.g. 5GiB).
    #[arg(long, global = true, value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Move only objects last modified at least this long ago (90s, 15m, 12h, 7d, 2w, 1y).
    #[arg(long, global = true, value_parser = barge::filter::parse_age)]
    pub min_age: Option<u64>,
    /// Move only objects last modified within this long.
    #[arg(long, global = true, value_parser = barge::filter::parse_age)]
    pub max_age: Option<u64>,
}

impl Filters {
    /// The filter, with the patterns of the `-from` files read (a missing file is named).
    pub fn spec(&self) -> barge::error::Result<barge::filter::FilterSpec> {
        use barge::filter::FilterSpec;
        let mut include = self.include.clone();
        for f in &self.include_from {
            include.extend(FilterSpec::read_patterns(f, "--include-from")?);
        }
        let mut exclude = self.exclude.clone();
        for f in &self.exclude_from {
            exclude.extend(FilterSpec::read_patterns(f, "--exclude-from")?);
        }
        Ok(FilterSpec {
            include,
            exclude,
            min_size: self.min_size,
            max_size: self.max_size,
            min_age: self.min_age,
            max_age: self.max_age,
        })
    }
}

/// Endpoint options: each side of a move has its own endpoint and profile.
#[derive(Args, Clone)]
pub(crate) struct Ends {
    /// S3 endpoint of the source (else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / profile).
    #[arg(long, global = true)]
    pub source_endpoint: Option<String>,
    /// AWS profile of the source.
    #[arg(long, global = true)]
    pub source_profile: Option<String>,
    /// S3 endpoint of the destination.
    #[arg(long, global = true)]
    pub dest_endpoint: Option<String>,
    /// AWS profile of the destination.
    #[arg(long, global = true)]
    pub dest_profile: Option<String>,
    /// A directory source follows symbolic links (by default they are skipped, counted
    /// and named, like sockets and devices).
    #[arg(long, global = true)]
    pub follow_symlinks: bool,
    /// Allow plain http:// endpoints on other hosts (by default only loopback may be
    /// reached without TLS: credentials and data would cross the network readable).
    #[arg(long, global = true)]
    pub allow_insecure_http: bool,
    /// Swift destination container sharding: hash:N or prefix:K.
    #[arg(long, global = true)]
    pub containers: Option<String>,
    /// Most requests in flight per endpoint (the adaptive window never exceeds it).
    #[arg(long, global = true, default_value_t = 64)]
    pub max_concurrency: usize,
    /// Cap on request starts per second per endpoint.
    #[arg(long, global = true)]
    pub max_requests_per_second: Option<f64>,
    /// Size above which uploads become Swift SLOs / S3 multipart (default 128MiB / 64MiB).
    #[arg(long, global = true, value_parser = parse_size)]
    pub large_threshold: Option<u64>,
    /// S3 part size for ranged GETs and multipart uploads (default 16MiB, at least 5MiB).
    /// An object too large for --max-parts parts of it gets larger parts.
    #[arg(long, global = true, value_parser = parse_size)]
    pub part_size: Option<u64>,
    /// S3: the most parts of one multipart upload (default 10000, S3's limit; lower for a
    /// store that allows fewer, e.g. Ceph's rgw_multipart_part_upload_limit).
    #[arg(long, global = true)]
    pub max_parts: Option<u64>,
    /// Swift: the largest SLO segment (default: the cluster's max_file_size from /info).
    /// An object needing more than max_manifest_segments segments of it is written as a
    /// nested SLO (a manifest of sub-manifests).
    #[arg(long, global = true, value_parser = parse_size)]
    pub slo_max_segment_size: Option<u64>,
    /// Swift SLO segment size (default 64MiB, at least 1MiB).
    #[arg(long, global = true, value_parser = parse_size)]
    pub slo_segment_size: Option<u64>,
    /// Seconds without a byte from an endpoint before the attempt is abandoned and retried.
    #[arg(long, global = true, default_value_t = 60.0)]
    pub stall_timeout: f64,
    /// Seconds an endpoint may fail every request (no answer, resets, 5xx) before it is
    /// taken for down: the run then stops taking objects and ends NOT DONE.
    #[arg(long, global = true, default_value_t = 300.0)]
    pub down_after: f64,
    /// Key ranges of a listing listed at once (split at keys found by probing the
    /// source; 1: one sequential listing). Each request still goes through the
    /// endpoint's throttle, which backs off on 503/SlowDown.
    #[arg(long, global = true, default_value_t = 8)]
    pub list_parallel: usize,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Create the state directory: master key, catalog, staging settings.
    Init {
        #[command(flatten)]
        args: InitArgs,
        /// Raw --staging drives holding another barge set, partitions or a filesystem
        /// or volume signature are overwritten (never one in use).
        #[arg(long)]
        force: bool,
    },
    /// ingest + drain + verify in one go.
    Migrate {
        #[arg(long)]
        source: String,
        #[arg(long)]
        dest: String,
        /// List the source from this S3 Inventory (manifest.json: a path, s3:// or
        /// swift://) instead of List requests.
        #[arg(long)]
        inventory: Option<String>,
        /// When the last listing of this source completed, do not list it again: fetch
        /// what the catalog still has to fetch (an interrupted listing is resumed as
        /// always).
        #[arg(long)]
        resume_listing_only: bool,
        #[command(flatten)]
        tune: Tune,
    },
    /// Follow a changing source: passes of list, stage, drain and delete (what the
    /// source deleted, only objects barge wrote) until stopped; each pass is recorded.
    Sync {
        #[arg(long)]
        source: String,
        #[arg(long)]
        dest: String,
        /// Time from the start of one pass to the start of the next ("30m", "1h").
        /// Default: the next pass starts when the last ends.
        #[arg(long, value_parser = barge::filter::parse_age)]
        interval: Option<u64>,
        /// Stop after this many passes. Default: run until stopped (SIGINT, SIGTERM).
        #[arg(long)]
        passes: Option<u64>,
        #[command(flatten)]
        deletes: Deletes,
        /// Do not delete at the destination what the source deleted; only report it.
        #[arg(long)]
        keep_deleted: bool,
        #[command(flatten)]
        tune: Tune,
    },
    /// An S3 endpoint over both sides while the move runs: reads of the source's bucket
    /// are answered by catalog record (moved: from the destination; not yet: from the
    /// source; deleted through the gateway: not found), writes and deletes land at the
    /// destination only and no later pass undoes them. Runs the sync passes meanwhile.
    Gateway {
        /// The source bucket, as s3://BUCKET (a whole bucket). Left out once `cutover`
        /// has proven the move whole: the gateway then serves from the destination alone.
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        dest: String,
        /// Address to serve S3 on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
        /// `ACCESS_KEY_ID SECRET` per line; must be mode 0600. No anonymous access.
        #[arg(long)]
        credentials: std::path::PathBuf,
        /// The bucket name clients use (default: the source bucket's).
        #[arg(long)]
        bucket: Option<String>,
        /// Also answer virtual-host style requests, BUCKET.DOMAIN (path style always).
        #[arg(long)]
        domain: Option<String>,
        /// Serve plain HTTP on an address other than loopback.
        #[arg(long)]
        insecure_http: bool,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Time from the start of one pass to the start of the next ("30m", "1h").
        #[arg(long, value_parser = barge::filter::parse_age)]
        interval: Option<u64>,
        /// Stop the passes after this many (the gateway serves on).
        #[arg(long)]
        passes: Option<u64>,
        #[command(flatten)]
        deletes: Deletes,
        #[command(flatten)]
        tune: Tune,
    },
    /// The final pass, once the source is frozen: a full listing, the last changes and
    /// deletions, a verify of source and destination, DONE only if they are identical,
    /// and a cutover certificate (JSON) in the state directory.
    Cutover {
        #[arg(long)]
        source: String,
        #[arg(long)]
        dest: String,
        /// Verify by downloading every object and comparing its BLAKE3.
        #[arg(long)]
        full: bool,
        /// Also write the certificate at the destination, as .barge/cutover-certificate.json.
        #[arg(long)]
        publish: bool,
        #[command(flatten)]
        deletes: Deletes,
        #[command(flatten)]
        tune: Tune,
    },
    /// List the source as ingest would (key ranges in parallel) and print how many
    /// objects and bytes it holds; nothing is stored, no state directory is needed.
    List {
        #[arg(long)]
        source: String,
        /// Also print every key, one per line, on standard output.
        #[arg(long)]
        keys: bool,
    },
    /// List the source into the catalog and stage new or changed objects.
    Ingest {
        #[arg(long)]
        source: String,
        /// List the source from this S3 Inventory (manifest.json: a path, s3:// or
        /// swift://) instead of List requests.
        #[arg(long)]
        inventory: Option<String>,
        /// When the last listing of this source completed, do not list it again: fetch
        /// what the catalog still has to fetch (an interrupted listing is resumed as
        /// always).
        #[arg(long)]
        resume_listing_only: bool,
        #[command(flatten)]
        tune: Tune,
    },
    /// Write staged objects to the destination.
    Drain {
        #[arg(long)]
        dest: String,
        #[command(flatten)]
        tune: Tune,
    },
    /// Compare the destination with the catalog.
    Verify {
        #[arg(long)]
        dest: String,
        /// Also list the source: objects it has that the catalog does not, or that
        /// changed since they were staged, are not done.
        #[arg(long)]
        source: Option<String>,
        /// Download everything and compare BLAKE3 of the content.
        #[arg(long)]
        full: bool,
    },
    /// Split a move over several nodes: list the source once and write a plan of N key
    /// ranges of about equal object count (JSON) for `--plan FILE --shard I`.
    Plan {
        #[arg(long)]
        source: String,
        #[arg(long)]
        shards: u32,
        /// Write the plan here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write it at this destination (or directory) as .barge/<plan id>/plan.json.
        #[arg(long)]
        publish: Option<String>,
        /// Take the keys from this S3 Inventory (manifest.json) instead of listing.
        #[arg(long)]
        inventory: Option<String>,
        /// Also make a new fleet key (32 random bytes, hex) in this file (mode 0600,
        /// never overwritten), for the nodes' --fleet-key-file or BARGE_FLEET_KEY.
        #[arg(long)]
        new_fleet_key: Option<PathBuf>,
    },
    /// The definition of done: totals, dedup, failures, verdict.
    Report {
        /// The fleet's verdict instead: read every shard's report of --plan at this
        /// place (the destination the shards published to, or a directory).
        #[arg(long)]
        fleet: Option<String>,
        /// With --fleet: also write the verdict as Prometheus text here (for a
        /// textfile collector).
        #[arg(long)]
        metrics: Option<PathBuf>,
        /// With --fleet: gather the verdict again every this long ("30s", "5m") until
        /// stopped, serving it at /metrics of this state directory's status API (and
        /// --http) as barge_fleet_*.
        #[arg(long, value_parser = barge::filter::parse_age)]
        watch: Option<u64>,
        /// Also write per-object failures as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Where to write the throughput chart (SVG). Default: <state>/report.svg.
        #[arg(long)]
        chart: Option<PathBuf>,
    },
    /// Catalog counts, staging drives and the I/O engine in use; and the live state of
    /// a command running on this state directory.
    Status,
    /// Terminal dashboard of a running node (this state directory, or --connect).
    Tui {
        /// host:port of a node's --http status API instead of <state>/barge.sock. The
        /// node must answer to the host as named here (its address, localhost, or one
        /// of its --http-allow-host names).
        #[arg(long)]
        connect: Option<String>,
        /// With --connect: the node's control token (its <state>/control.token), for
        /// the keys that steer the run. Default: $BARGE_CONTROL_TOKEN, else this state
        /// directory's control.token if there is one.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Seal segments left open by a crash, remove staging files the catalog does not
    /// know, and reclaim segments no pending object needs.
    Fsck,
    /// Delete staging segments whose chunks no object still to be drained needs.
    Reclaim,
    /// Block devices of this node (from sysfs) and their role: the OS, staging, mounted
    /// elsewhere, or free. Drives are named by serial; kernel names change across boots.
    Drives {
        #[command(subcommand)]
        action: Option<ship::DrivesCmd>,
    },
    /// Run as the node's service: hold the status socket (and --http), run jobs from
    /// <state>/jobs/*.json one at a time, report readiness to systemd.
    Daemon {
        /// At start, migrate a generated sample tree through staging into
        /// <state>/self-test/destination and verify it.
        #[arg(long)]
        self_test: bool,
    },
    /// Seal the raw staging drives for shipping: finish open segments, write each
    /// drive's encrypted manifest, wrap the key under a new unlock code (printed, and
    /// written with the bill of materials into --out, which must not travel with them).
    Seal {
        /// Where the unlock code, bill of materials and seal report go (default <state>/ship).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// At the destination: check shipped drives and build this fresh state directory
    /// from them; then `drain` as usual and `ingest` for the top-up.
    Import {
        /// The shipped drives (block devices or drive images).
        #[arg(required = true)]
        drives: Vec<PathBuf>,
        /// The unlock code printed by `barge seal`, from the environment only (a value
        /// given as `--unlock-code` on the command line is refused: `ps` shows it).
        #[arg(long, env = "BARGE_UNLOCK_CODE", hide = true, hide_env_values = true)]
        unlock_code: Option<String>,
        /// A file holding the unlock code (as written by `barge seal`).
        #[arg(long, conflicts_with = "unlock_code")]
        unlock_code_file: Option<PathBuf>,
    },
    /// After a verified drain: crypto-erase and overwrite drives of this node's set (any
    /// other drive only with --confirm SERIAL; never a regular file), one erase
    /// certificate (JSON) per drive.
    Erase {
        #[arg(required = true)]
        drives: Vec<PathBuf>,
        /// Erase even though no verify has passed since the last drain.
        #[arg(long)]
        force: bool,
        /// Erase a drive that is not a member of this node's set: its serial (as `barge
        /// drives` shows it), typed out; repeat for several drives.
        #[arg(long, value_name = "SERIAL")]
        confirm: Vec<String>,
        /// Where certificates go (default <state>/ship).
        #[arg(long)]
        certificate_dir: Option<PathBuf>,
    },
    /// Generate a sample tree with duplicates and shifted copies.
    Sample {
        #[arg(long)]
        out: PathBuf,
        /// Approximate total size (e.g. 512MiB).
        #[arg(long, default_value = "256MiB", value_parser = parse_size)]
        size: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Local demo: init, generate a sample tree, migrate it, verify, report.
    Demo {
        /// Working directory for the demo (sample, state, output).
        #[arg(long, default_value = "./barge-demo")]
        dir: PathBuf,
        #[arg(long, default_value = "256MiB", value_parser = parse_size)]
        size: u64,
    },
    /// Micro-benchmarks used by benches/compare.sh (JSON on stdout).
    #[command(hide = true)]
    Bench(bench::BenchArgs),
}

#[derive(Args, Clone)]
pub(crate) struct InitArgs {
    /// Segment file size.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub segment_size: u64,
    /// I/O block size (one registered buffer).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub block_size: u64,
    /// Writes in flight per staging drive.
    #[arg(long, default_value_t = barge::staging::DEFAULT_QUEUE_DEPTH)]
    pub queue_depth: usize,
    /// Bytes appended between two fdatasync+catalog commits.
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    pub commit_bytes: u64,
    #[arg(long, default_value = "512KiB", value_parser = parse_size)]
    pub chunk_min: u64,
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub chunk_avg: u64,
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub chunk_max: u64,
    /// AES-256-GCM implementation for sealing.
    #[arg(long, value_enum, default_value_t = SealBackend::AwsLc)]
    pub seal_backend: SealBackend,
}

#[derive(Args, Clone)]
pub(crate) struct Deletes {
    /// Most objects one pass may delete at the destination: a count ("500") or a
    /// percentage of the objects in the catalog ("1%"). A pass that would delete more
    /// deletes nothing and says so.
    #[arg(long, default_value = "1%", value_parser = |s: &str| s.parse::<barge::reconcile::MaxDelete>().map_err(|e| e.to_string()))]
    pub max_delete: barge::reconcile::MaxDelete,
    /// Most objects the move's passes may delete together: a count, or a percentage of
    /// the objects the move has held (in the catalog, and deleted by its passes). A pass
    /// that would pass it deletes nothing and says so. Default: no such limit.
    #[arg(long, value_parser = |s: &str| barge::reconcile::MaxDelete::parse_as(s, "--max-delete-total").map_err(|e| e.to_string()))]
    pub max_delete_total: Option<barge::reconcile::MaxDelete>,
}

#[derive(Args, Clone)]
pub(crate) struct Tune {
    /// Most objects fetched (ingest) or written (drain) at once. Default: ingest 256,
    /// drain 64, as many as a budget of bytes in flight and the endpoint's window allow.
    #[arg(long)]
    pub concurrency: Option<usize>,
}

pub(crate) use barge::filter::parse_size;

impl Global {
    /// The options of one side of the move.
    fn side(&self, source: bool) -> EndpointOptions {
        let e = &self.ends;
        EndpointOptions {
            endpoint: if source {
                e.source_endpoint.clone()
            } else {
                e.dest_endpoint.clone()
            },
            profile: if source {
                e.source_profile.clone()
            } else {
                e.dest_profile.clone()
            },
            region: None,
            throttle: ThrottleConfig {
                max_concurrency: e.max_concurrency.max(1),
                initial_concurrency: e.max_concurrency.clamp(1, 8),
                max_rps: e.max_requests_per_second,
                stall_timeout: std::time::Duration::from_secs_f64(
                    e.stall_timeout.clamp(0.1, 3600.0),
                ),
                down_after: std::time::Duration::from_secs_f64(e.down_after.clamp(1.0, 86400.0)),
            },
            part_size: e.part_size,
            max_parts: e.max_parts,
            max_segment: e.slo_max_segment_size,
            large_threshold: e.large_threshold,
            segment_size: e.slo_segment_size,
            containers: if source { None } else { e.containers.clone() },
            follow_symlinks: source && e.follow_symlinks,
            list_parallel: e.list_parallel,
            env_prefix: if source {
                "BARGE_SOURCE_".into()
            } else {
                "BARGE_DEST_".into()
            },
            allow_insecure_http: e.allow_insecure_http,
        }
    }

    /// What the library's commands take: the state, the key, both sides' options and
    /// the tuning.
    pub fn settings(&self, tune: Option<&Tune>) -> Settings {
        Settings {
            state: self.state.clone(),
            staging: self.staging.clone(),
            key: self.key(),
            source: self.side(true),
            dest: self.side(false),
            concurrency: tune.and_then(|t| t.concurrency),
            inventory: None,
            resume_listing_only: false,
            filter: Default::default(),
            sync_pass: None,
            fresh_listing: false,
            shard: None,
            fleet_key: None,
        }
    }

    /// The fleet key from --fleet-key-file or $BARGE_FLEET_KEY, if either is given.
    pub fn fleet_key(&self) -> Result<Option<barge::fleet_key::FleetKey>> {
        Ok(barge::fleet_key::FleetKey::from_file_or_env(
            self.fleet_key_file.as_deref(),
        )?)
    }

    /// The settings of a command that may run as one shard of a plan: `source` is
    /// checked against the plan's (None: a command without one).
    pub fn sharded(&self, tune: Option<&Tune>, source: Option<&str>) -> Result<Settings> {
        let mut s = self.settings(tune);
        s.filter = self.filters.spec()?;
        s.fleet_key = self.fleet_key()?;
        if let Some(path) = &self.plan {
            let plan = barge::plan::Plan::load(path)?;
            s.shard = Some(plan.shard(self.shard, source)?);
        } else if self.shard.is_some() {
            anyhow::bail!("--shard needs --plan");
        }
        Ok(s)
    }

    /// The status API's TCP listeners.
    pub fn http_options(&self) -> barge::monitor::server::HttpOptions {
        barge::monitor::server::HttpOptions {
            addr: self.http,
            metrics: self.metrics_http,
            allow_hosts: self.http_allow_host.clone(),
        }
    }

    pub fn key(&self) -> KeyRequest {
        KeyRequest {
            key_file: self.key_file.clone(),
            passphrase_env: self.passphrase_env.clone(),
        }
    }

    pub fn open(&self) -> Result<Node> {
        Ok(Node::open(&self.state, &self.key(), &self.staging)?)
    }
}

/// The init settings; `force`: raw drives' old contents may be overwritten.
pub(crate) fn init_opts(g: &Global, a: &InitArgs, force: bool) -> Result<InitOptions> {
    let to_u32 =
        |v: u64, name: &str| u32::try_from(v).with_context(|| format!("{name} is too large"));
    Ok(InitOptions {
        key: g.key(),
        chunks: ChunkParams {
            min: to_u32(a.chunk_min, "--chunk-min")?,
            avg: to_u32(a.chunk_avg, "--chunk-avg")?,
            max: to_u32(a.chunk_max, "--chunk-max")?,
        },
        staging: StagingSettings {
            segment_size: a.segment_size,
            block_size: usize::try_from(a.block_size).context("--block-size is too large")?,
            queue_depth: a.queue_depth,
            commit_bytes: a.commit_bytes,
            seal_backend: a.seal_backend,
        },
        drives: g.staging.clone(),
        force_drives: force,
    })
}

//! The `barge` command line. Parses options, opens the state directory, runs a stage and
//! turns outcomes into exit codes: 0 done/ok, 1 error, 2 usage error (clap), 3 finished
//! with failed objects or NOT DONE.

mod bench;
mod cli_ship;
mod daemon;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use barge::backend::throttle::ThrottleConfig;
use barge::backend::{EndpointOptions, open_destination, open_source};
use barge::chunker::ChunkParams;
use barge::crypto::SealBackend;
use barge::crypto::keys::KeyRequest;
use barge::drain::{self, DrainOptions};
use barge::ingest::{self, IngestOptions, IngestSummary};
use barge::monitor::server::StatusServer;
use barge::monitor::{self, Mode, Monitor};
use barge::node::{InitOptions, Node};
use barge::staging::StagingSettings;
use barge::{report, sample, verify};
use std::sync::Arc;

/// Exit code of a run that finished with failed objects, or a report that is NOT DONE
/// (2 is clap's usage error).
const NOT_DONE: u8 = 3;

/// Passes `migrate` makes at most: the second only when the first found corrupt staged
/// chunks, to fetch those objects again from the source.
const MIGRATE_REPAIR_PASSES: u32 = 2;

#[derive(Parser)]
#[command(
    name = "barge",
    version,
    about = "Bulk-transfer appliance: move object stores through sealed, deduplicated NVMe staging"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Global {
    /// State directory: catalog and key material.
    #[arg(
        long,
        global = true,
        default_value = "./barge-state",
        env = "BARGE_STATE"
    )]
    state: PathBuf,
    /// A staging drive (directory); repeat for several. Default: <state>/staging.
    #[arg(long = "staging", global = true)]
    staging: Vec<PathBuf>,
    /// Use this 32-byte key file instead of <state>/keys/master.key.
    #[arg(long, global = true)]
    key_file: Option<PathBuf>,
    /// Environment variable holding the passphrase (init: derive the key from it).
    #[arg(long, global = true)]
    passphrase_env: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Only errors on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Print results as JSON on stdout (one document per stage) and progress as JSON
    /// lines on stderr.
    #[arg(long, global = true)]
    json: bool,
    /// Also serve the status API (GET /status, GET /metrics, POST /control) on this TCP
    /// address, e.g. 127.0.0.1:9898. The Unix socket <state>/barge.sock is always served.
    #[arg(long, global = true, env = "BARGE_HTTP")]
    http: Option<std::net::SocketAddr>,
    /// Start paused: list and show the plan, move nothing until resumed (`p` in
    /// `barge tui`, or POST /control?action=resume).
    #[arg(long, global = true)]
    start_paused: bool,
    #[command(flatten)]
    ends: Ends,
}

/// Endpoint options: each side of a move has its own endpoint and profile.
#[derive(Args, Clone)]
struct Ends {
    /// S3 endpoint of the source (else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / profile).
    #[arg(long, global = true)]
    source_endpoint: Option<String>,
    /// AWS profile of the source.
    #[arg(long, global = true)]
    source_profile: Option<String>,
    /// S3 endpoint of the destination.
    #[arg(long, global = true)]
    dest_endpoint: Option<String>,
    /// AWS profile of the destination.
    #[arg(long, global = true)]
    dest_profile: Option<String>,
    /// Swift destination container sharding: hash:N or prefix:K.
    #[arg(long, global = true)]
    containers: Option<String>,
    /// Most requests in flight per endpoint (the adaptive window never exceeds it).
    #[arg(long, global = true, default_value_t = 64)]
    max_concurrency: usize,
    /// Cap on request starts per second per endpoint.
    #[arg(long, global = true)]
    max_requests_per_second: Option<f64>,
    /// Size above which uploads become Swift SLOs / S3 multipart (default 128MiB / 64MiB).
    #[arg(long, global = true, value_parser = parse_size)]
    large_threshold: Option<u64>,
    /// S3 part size for ranged GETs and multipart uploads (default 16MiB, at least 5MiB).
    #[arg(long, global = true, value_parser = parse_size)]
    part_size: Option<u64>,
    /// Swift SLO segment size (default 64MiB, at least 1MiB).
    #[arg(long, global = true, value_parser = parse_size)]
    slo_segment_size: Option<u64>,
    /// Seconds without a byte from an endpoint before the attempt is abandoned and retried.
    #[arg(long, global = true, default_value_t = 60.0)]
    stall_timeout: f64,
    /// Seconds an endpoint may fail every request (no answer, resets, 5xx) before it is
    /// taken for down: the run then stops taking objects and ends NOT DONE.
    #[arg(long, global = true, default_value_t = 300.0)]
    down_after: f64,
    /// Listings run in parallel (S3: first-level prefixes).
    #[arg(long, global = true, default_value_t = 4)]
    list_parallel: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the state directory: master key, catalog, staging settings.
    Init(InitArgs),
    /// ingest + drain + verify in one go.
    Migrate {
        #[arg(long)]
        source: String,
        #[arg(long)]
        dest: String,
        #[command(flatten)]
        tune: Tune,
    },
    /// List the source into the catalog and stage new or changed objects.
    Ingest {
        #[arg(long)]
        source: String,
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
    /// The definition of done: totals, dedup, failures, verdict.
    Report {
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
        /// host:port of a node's --http status API instead of <state>/barge.sock.
        #[arg(long)]
        connect: Option<String>,
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
        action: Option<cli_ship::DrivesCmd>,
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
        /// The unlock code printed by `barge seal`.
        #[arg(long, env = "BARGE_UNLOCK_CODE", hide_env_values = true)]
        unlock_code: Option<String>,
        /// A file holding the unlock code (as written by `barge seal`).
        #[arg(long, conflicts_with = "unlock_code")]
        unlock_code_file: Option<PathBuf>,
    },
    /// After a verified drain: crypto-erase and overwrite drives, one erase certificate
    /// (JSON) per drive.
    Erase {
        #[arg(required = true)]
        drives: Vec<PathBuf>,
        /// Erase even though no verify has passed since the last drain.
        #[arg(long)]
        force: bool,
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
struct InitArgs {
    /// Segment file size.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    segment_size: u64,
    /// I/O block size (one registered buffer).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    block_size: u64,
    /// Writes in flight per staging drive.
    #[arg(long, default_value_t = barge::staging::DEFAULT_QUEUE_DEPTH)]
    queue_depth: usize,
    /// Bytes appended between two fdatasync+catalog commits.
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    commit_bytes: u64,
    #[arg(long, default_value = "512KiB", value_parser = parse_size)]
    chunk_min: u64,
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    chunk_avg: u64,
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    chunk_max: u64,
    /// AES-256-GCM implementation for sealing.
    #[arg(long, value_enum, default_value_t = SealBackend::AwsLc)]
    seal_backend: SealBackend,
    /// Raw --staging drives holding another barge set are overwritten.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Clone)]
struct Tune {
    /// Objects fetched (ingest) or written (drain) at once.
    #[arg(long)]
    concurrency: Option<usize>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 512MiB, 1GiB, 4096)"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl Global {
    /// Destination options; without --containers, the mapping recorded by the last drain
    /// to the same URL is used, so verify finds every object.
    fn dest_side(&self, node: &Node, url: &str) -> EndpointOptions {
        let mut o = self.side(false);
        if o.containers.is_none() {
            let recorded = node
                .catalog
                .meta_get(barge::catalog::META_DEST_LAYOUT)
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                .filter(|v| v["url"] == url);
            if let Some(v) = recorded {
                o.containers = match v["map"]["scheme"].as_str() {
                    Some("hash") => v["map"]["n"].as_u64().map(|n| format!("hash:{n}")),
                    Some("prefix") => v["map"]["k"].as_u64().map(|k| format!("prefix:{k}")),
                    _ => None,
                };
            }
        }
        o
    }

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
            large_threshold: e.large_threshold,
            segment_size: e.slo_segment_size,
            containers: if source { None } else { e.containers.clone() },
            list_parallel: e.list_parallel,
            env_prefix: if source {
                "BARGE_SOURCE_".into()
            } else {
                "BARGE_DEST_".into()
            },
        }
    }

    fn key(&self) -> KeyRequest {
        KeyRequest {
            key_file: self.key_file.clone(),
            passphrase_env: self.passphrase_env.clone(),
        }
    }

    fn open(&self) -> Result<Node> {
        Ok(Node::open(&self.state, &self.key(), &self.staging)?)
    }
}

fn init_logging(g: &Global) {
    use tracing_subscriber::EnvFilter;
    let default = if g.quiet { "error" } else { "info" };
    let filter = EnvFilter::try_from_env("BARGE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal: the journal and the serial console get plain text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match g.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.with_target(false).init(),
    }
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

fn print_ingest(g: &Global, s: &IngestSummary, secs: f64) {
    if g.json {
        println!("{}", serde_json::json!({"ingest": s, "secs": secs}));
        return;
    }
    let ratio = if s.bytes_new > 0 {
        (s.bytes_new + s.bytes_dedup) as f64 / s.bytes_new as f64
    } else {
        1.0
    };
    println!(
        "ingest: {} listed, {} staged, {} unchanged, {} failed; {:.3} GiB read in {:.1}s ({:.0} MiB/s)",
        s.listed,
        s.staged,
        s.unchanged,
        s.failed,
        gib(s.bytes_staged),
        secs,
        s.bytes_staged as f64 / (1 << 20) as f64 / secs.max(1e-9)
    );
    println!(
        "staging: {} new chunks ({:.3} GiB, {:.3} GiB sealed), {} deduplicated ({:.3} GiB); run dedup ratio {:.2}; io: {}",
        s.chunks_new,
        gib(s.bytes_new),
        gib(s.bytes_sealed),
        s.chunks_dedup,
        gib(s.bytes_dedup),
        ratio,
        s.io_engine
    );
    for (k, r) in &s.failures {
        println!("failed: {k}: {r}");
    }
    if let Some(why) = &s.stopped_early {
        println!("stopped early: {why}");
    }
}

/// The live side of a long command: the monitor, its status API and the progress display.
/// Dropping it stops all three (and removes the status socket).
struct Live {
    monitor: Arc<Monitor>,
    _server: StatusServer,
    _progress: monitor::progress::Progress,
}

async fn live(g: &Global, node: &Node, command: &str, mode: Mode) -> Result<Live> {
    let m = Arc::new(Monitor::new(command));
    m.describe(
        command,
        mode,
        &g.state.display().to_string(),
        &node.master.fingerprint(),
    );
    m.persist_to(node.catalog.clone());
    m.start_sampler();
    if g.start_paused {
        m.control(barge_tui::model::Action::Pause);
        tracing::info!(
            "started paused: resume with `barge tui` (p) or POST /control?action=resume"
        );
    }
    let server = monitor::server::start(m.clone(), &g.state, g.http).await?;
    if let Some(a) = server.http {
        tracing::info!("status API on http://{a}/status and /metrics");
    }
    let progress =
        monitor::progress::start(m.clone(), monitor::progress::Style::choose(g.quiet, g.json));
    Ok(Live {
        monitor: m,
        _server: server,
        _progress: progress,
    })
}

/// How a migrate ends: a cheap verify of the destination and the report; true when both
/// say DONE. The run's own listing was the source check; a second listing of a huge
/// bucket is left to an explicit `barge verify --source`.
async fn migrate_check(g: &Global, node: &Node, dest: &str, json: bool) -> Result<bool> {
    let v = do_verify(g, node, dest, None, false, json).await?;
    let done = do_report(node, json, None, None)?;
    Ok(v && done)
}

/// migrate's ingest and drain, run together (a second pass when staging rot was found).
/// True when nothing failed and nothing stopped early.
async fn do_move(
    g: &Global,
    node: &Node,
    source: &str,
    dest: &str,
    tune: &Tune,
    monitor: Arc<Monitor>,
) -> Result<bool> {
    let m = &monitor;
    let mut pass = 1;
    let (s, d) = loop {
        let (tx, rx) = tokio::sync::mpsc::channel(barge::drain::DRAIN_QUEUE);
        let (s, d) = tokio::join!(
            do_ingest(g, node, source, tune, Some(tx), m.clone()),
            do_drain(g, node, dest, tune, Some(rx), m.clone())
        );
        let (s, d) = (s?, d?);
        if d.rot == 0 || pass == MIGRATE_REPAIR_PASSES {
            break (s, d);
        }
        // Rot in staging: the chunk locations are forgotten and the objects
        // marked for a new fetch; one more pass fetches and drains them.
        tracing::warn!(
            "{} objects had a corrupt staged copy: fetching them again from the source",
            d.rot
        );
        pass += 1;
    };
    Ok(s.complete() && d.complete())
}

async fn do_ingest(
    g: &Global,
    node: &Node,
    source: &str,
    tune: &Tune,
    notify: Option<tokio::sync::mpsc::Sender<barge::object::ObjectKey>>,
    monitor: Arc<Monitor>,
) -> Result<IngestSummary> {
    let src = open_source(source, &g.side(true)).await?;
    let mut opts = IngestOptions {
        drives: g.staging.clone(),
        notify,
        monitor,
        ..Default::default()
    };
    if let Some(c) = tune.concurrency {
        opts.concurrency = c;
    }
    let t = std::time::Instant::now();
    let s = ingest::run(node, src, &opts).await?;
    print_ingest(g, &s, t.elapsed().as_secs_f64());
    Ok(s)
}

async fn do_drain(
    g: &Global,
    node: &Node,
    dest: &str,
    tune: &Tune,
    follow: Option<tokio::sync::mpsc::Receiver<barge::object::ObjectKey>>,
    monitor: Arc<Monitor>,
) -> Result<drain::DrainSummary> {
    let d = open_destination(dest, &g.dest_side(node, dest)).await?;
    let mut opts = DrainOptions {
        monitor,
        ..Default::default()
    };
    if let Some(c) = tune.concurrency {
        opts.concurrency = c;
    }
    let t = std::time::Instant::now();
    let s = drain::run_following(node, d, &opts, follow).await?;
    let secs = t.elapsed().as_secs_f64();
    if g.json {
        println!("{}", serde_json::json!({"drain": s, "secs": secs}));
        return Ok(s);
    }
    println!(
        "drain: {} objects ({:.3} GiB) written in {:.1}s ({:.0} MiB/s), {} failed; {} of them ({:.3} GiB) copied server-side from identical content",
        s.drained,
        gib(s.bytes),
        secs,
        s.bytes as f64 / (1 << 20) as f64 / secs.max(1e-9),
        s.failed,
        s.copied,
        gib(s.copied_bytes)
    );
    for (k, r) in &s.failures {
        println!("failed: {k}: {r}");
    }
    if let Some(why) = &s.stopped_early {
        println!("stopped early: {why}");
    }
    Ok(s)
}

async fn do_verify(
    g: &Global,
    node: &Node,
    dest: &str,
    source: Option<&str>,
    full: bool,
    json: bool,
) -> Result<bool> {
    let d = open_destination(dest, &g.dest_side(node, dest)).await?;
    let s = match source {
        Some(u) => Some(open_source(u, &g.side(true)).await?),
        None => None,
    };
    let r = verify::run(node, d, s, full).await?;
    if json {
        println!("{}", serde_json::json!({ "verify": r }));
    } else {
        println!(
            "verify ({}): {} expected, {} present, {} match; {} missing, {} extra, {} differing",
            if full {
                "full: content BLAKE3"
            } else {
                "cheap: presence and size"
            },
            r.expected,
            r.present,
            r.matched,
            r.missing.len(),
            r.extra.len(),
            r.differing.len()
        );
        for k in r.missing.iter().take(20) {
            println!("missing: {k}");
        }
        for k in r.extra.iter().take(20) {
            println!("extra: {k}");
        }
        for (k, why) in r.differing.iter().take(20) {
            println!("differs: {k}: {why}");
        }
        if source.is_some() {
            println!(
                "source: {} listed, {} not in the catalog, {} changed since staged",
                r.source_listed,
                r.source_only.len(),
                r.changed_at_source.len()
            );
            for k in r.source_only.iter().take(20) {
                println!("only at the source: {k}");
            }
            for k in r.changed_at_source.iter().take(20) {
                println!("changed at the source: {k}");
            }
        }
        println!("verdict: {}", if r.ok() { "DONE" } else { "NOT DONE" });
    }
    Ok(r.ok())
}

fn do_report(
    node: &Node,
    json: bool,
    csv: Option<&PathBuf>,
    chart: Option<&PathBuf>,
) -> Result<bool> {
    let r = report::build(node)?;
    if let Some(p) = csv {
        std::fs::write(p, r.failures_csv()).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(svg) = report::chart_svg(&node.catalog.samples()?) {
        let p = chart
            .cloned()
            .unwrap_or_else(|| node.state_dir.join("report.svg"));
        std::fs::write(&p, svg).with_context(|| format!("writing {}", p.display()))?;
        if !json {
            println!("chart       {}", p.display());
        }
    }
    if json {
        println!("{}", serde_json::json!({ "report": r }));
    } else {
        print!("{}", r.to_text());
    }
    Ok(r.done)
}

fn init_opts(g: &Global, a: &InitArgs) -> Result<InitOptions> {
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
        force_drives: a.force,
    })
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    let code = |ok: bool| {
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(NOT_DONE)
        }
    };
    match &cli.cmd {
        Cmd::Init(a) => {
            let node = Node::init(&g.state, &init_opts(g, a)?)?;
            println!(
                "initialised {}: appliance {}, key fingerprint {}, staging on {}",
                g.state.display(),
                hex::encode(node.appliance_id),
                node.master.fingerprint(),
                node.staging.drives.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ingest { source, tune } => {
            let node = g.open()?;
            let live = live(g, &node, "ingest", Mode::Ingest).await?;
            let s = do_ingest(g, &node, source, tune, None, live.monitor.clone()).await?;
            live.monitor.finish();
            drop(live);
            Ok(code(s.complete()))
        }
        Cmd::Drain { dest, tune } => {
            let node = g.open()?;
            let live = live(g, &node, "drain", Mode::Drain).await?;
            let s = do_drain(g, &node, dest, tune, None, live.monitor.clone()).await?;
            live.monitor.finish();
            drop(live);
            Ok(code(s.complete()))
        }
        Cmd::Migrate { source, dest, tune } => {
            let node = g.open()?;
            // Fetch, stage and drain at once: the drain follows what ingest stages.
            let live = live(g, &node, "migrate", Mode::Migrate).await?;
            let moved = do_move(g, &node, source, dest, tune, live.monitor.clone()).await?;
            live.monitor.finish();
            drop(live);
            let checked = migrate_check(g, &node, dest, g.json).await?;
            Ok(code(moved && checked))
        }
        Cmd::Verify { dest, source, full } => {
            let node = g.open()?;
            Ok(code(
                do_verify(g, &node, dest, source.as_deref(), *full, g.json).await?,
            ))
        }
        Cmd::Report { csv, chart } => {
            let node = g.open()?;
            Ok(code(do_report(
                &node,
                g.json,
                csv.as_ref(),
                chart.as_ref(),
            )?))
        }
        Cmd::Fsck => {
            let node = g.open()?;
            let drives = node.drive_paths(&[]);
            let r = node.recover_staging(&drives)?;
            let rc = barge::staging::reclaim::reclaim(&node.catalog)?;
            if g.json {
                println!("{}", serde_json::json!({ "fsck": r, "reclaim": rc }));
            } else {
                println!(
                    "fsck: {} open segments resealed ({} records kept, {} bytes released), {} orphan files removed",
                    r.segments_resealed,
                    r.records_kept,
                    r.bytes_discarded,
                    r.orphan_files_removed.len()
                );
                println!(
                    "reclaim: {} segments removed ({} bytes freed), {} kept for objects still to drain",
                    rc.segments_removed, rc.bytes_freed, rc.segments_kept
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Daemon { self_test } => {
            daemon::run(g, *self_test).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Seal { out } => cli_ship::seal(g, out.as_deref()),
        Cmd::Import {
            drives,
            unlock_code,
            unlock_code_file,
        } => cli_ship::import(
            g,
            drives,
            unlock_code.as_deref(),
            unlock_code_file.as_deref(),
        ),
        Cmd::Erase {
            drives,
            force,
            certificate_dir,
        } => cli_ship::erase(g, drives, *force, certificate_dir.as_deref()),
        Cmd::Drives { action: Some(a) } => cli_ship::drives(g, a),
        Cmd::Drives { action: None } => {
            let rows = drives_table(g)?;
            if g.json {
                println!("{}", serde_json::json!({ "drives": rows }));
            } else {
                println!(
                    "{:<10} {:<22} {:<24} {:>10} {:<5} {:<8} role",
                    "device", "serial", "model", "size", "kind", "health"
                );
                for r in &rows {
                    println!(
                        "{:<10} {:<22} {:<24} {:>10} {:<5} {:<8} {}",
                        r.device.name,
                        r.device.serial.as_deref().unwrap_or("-"),
                        r.device.model.as_deref().unwrap_or("-"),
                        format!("{:.1} GiB", gib(r.device.size_bytes)),
                        if r.device.is_nvme {
                            "nvme"
                        } else if r.device.rotational {
                            "hdd"
                        } else {
                            "ssd"
                        },
                        r.health,
                        r.role
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reclaim => {
            let node = g.open()?;
            let rc = barge::staging::reclaim::reclaim(&node.catalog)?;
            if g.json {
                println!("{}", serde_json::json!({ "reclaim": rc }));
            } else {
                println!(
                    "reclaim: {} segments removed ({} bytes freed, {} chunk locations forgotten), {} kept for objects still to drain",
                    rc.segments_removed, rc.bytes_freed, rc.chunks_forgotten, rc.segments_kept
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Tui { connect } => {
            let target = match connect {
                Some(a) => barge_tui::client::Target::Tcp(a.clone()),
                None => barge_tui::client::Target::Unix(g.state.join(monitor::server::SOCKET_NAME)),
            };
            // The dashboard is synchronous; it runs on a plain thread of its own.
            tokio::task::spawn_blocking(move || barge_tui::app::run(target))
                .await
                .context("dashboard thread")??;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status => {
            let sock = g.state.join(monitor::server::SOCKET_NAME);
            if sock.exists()
                && let Ok(live) = tokio::task::spawn_blocking(move || {
                    barge_tui::client::status(&barge_tui::client::Target::Unix(sock))
                })
                .await
                .context("status thread")?
            {
                // A command is running: its catalog is locked, so show what it reports.
                if g.json {
                    println!("{}", serde_json::json!({ "live": live }));
                } else {
                    println!(
                        "running     barge {} (pid {}), up {:.0}s",
                        live.command, live.pid, live.uptime_secs
                    );
                    println!("progress    {}", monitor::progress::line(&live));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let node = g.open()?;
            let r = report::build(&node)?;
            if g.json {
                println!("{}", serde_json::json!({ "status": r }));
            } else {
                println!("state       {}", g.state.display());
                print!("{}", r.to_text());
                for run in r.runs.iter().rev().take(5) {
                    println!(
                        "run {:>4}    {} {}",
                        run.id,
                        run.command,
                        run.outcome.as_deref().unwrap_or("(running or interrupted)")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sample { out, size, seed } => {
            let st = sample::generate(out, *size, *seed)?;
            println!(
                "sample: {} files, {:.3} GiB, {:.3} GiB unique content, in {}",
                st.files,
                gib(st.bytes),
                gib(st.unique_bytes),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo { dir, size } => demo(g, dir, *size).await,
        Cmd::Bench(_) => unreachable!("handled before the runtime starts"),
    }
}

fn drives_table(g: &Global) -> Result<Vec<barge::drives::DriveRow>> {
    // Staging drives of this node (configured, or given with --staging).
    let staging: Vec<PathBuf> = if g.staging.is_empty() {
        Node::open(&g.state, &g.key(), &[])
            .map(|n| n.staging.drives.iter().map(PathBuf::from).collect())
            .unwrap_or_default()
    } else {
        g.staging.clone()
    };
    Ok(barge::drives::table(&staging)?)
}

async fn demo(g: &Global, dir: &std::path::Path, size: u64) -> Result<ExitCode> {
    let src = dir.join("sample");
    let state = dir.join("state");
    let out = dir.join("out");
    if !src.exists() {
        let st = sample::generate(&src, size, 1)?;
        println!(
            "demo: generated {} files ({:.3} GiB) in {}",
            st.files,
            gib(st.bytes),
            src.display()
        );
    }
    let node = if state.join("keys/key.json").exists() {
        Node::open(&state, &KeyRequest::default(), &[])?
    } else {
        Node::init(&state, &InitOptions::default())?
    };
    let tune = Tune { concurrency: None };
    let m = Arc::new(Monitor::new("demo"));
    let s = do_ingest(g, &node, &src.display().to_string(), &tune, None, m.clone()).await?;
    let d = do_drain(g, &node, &out.display().to_string(), &tune, None, m).await?;
    let v = do_verify(
        g,
        &node,
        &out.display().to_string(),
        Some(&src.display().to_string()),
        true,
        false,
    )
    .await?;
    let r = report::build(&node)?;
    print!("{}", r.to_text());
    println!(
        "demo: {} -> {} through sealed staging in {}; dedup ratio {:.2}",
        src.display(),
        out.display(),
        state.join("staging").display(),
        r.dedup_ratio
    );
    let ok = s.complete() && d.complete() && v && r.done;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_DONE)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    if let Cmd::Bench(a) = &cli.cmd {
        // Benches drive their own threads; they must not run inside the async runtime.
        return bench::run(a).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        });
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `barge daemon`: the node's long-running service. It owns the state directory's status
//! socket for its whole life (the console dashboard and Prometheus always have someone
//! to ask), runs jobs one at a time from a spool directory, and can run a self-test
//! migration at start. Readiness is reported to systemd (`Type=notify`) and logged.
//!
//! A job is a JSON file `<state>/jobs/<name>.json`:
//! `{"command": "migrate" | "ingest" | "drain" | "verify" | "sync" | "cutover" |
//! "gateway", "source": "...", "dest": "..."}` (a sync job needs "passes": the spool runs
//! one job at a time; a gateway job serves until the daemon stops, its passes as asked).
//! Jobs run in name order; each ends renamed to `<name>.done` or `<name>.failed`, with
//! its outcome in `<name>.result.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::live::monitor_for;
use super::{Settings, migrate, stages, text};
use crate::error::{Error, Result};
use crate::monitor::server::{self, HttpOptions, MonitorSlot};
use crate::monitor::{Mode, Monitor};
use crate::node::{InitOptions, Node};

/// Seconds between two looks at the spool directory.
const SPOOL_POLL: Duration = Duration::from_secs(2);
/// Size of the self-test's sample tree.
const SELF_TEST_BYTES: u64 = 24 << 20;
/// Segment size of the self-test's staging (small: it shares the state partition).
const SELF_TEST_SEGMENT: u64 = 32 << 20;

/// What the daemon takes besides the [`Settings`] its jobs run with.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Also serve the status API (and read-only metrics) on these TCP addresses.
    pub http: HttpOptions,
    /// At start, migrate a generated sample tree and verify it.
    pub self_test: bool,
}

/// A job file's content: the command, its ends, and the options the command takes on
/// the command line. An unknown field is refused (a misspelt option must not be
/// silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Job {
    command: String,
    source: Option<String>,
    dest: Option<String>,
    /// `--concurrency`.
    concurrency: Option<usize>,
    /// `--containers` (a swift:// destination only).
    containers: Option<String>,
    /// `--full` (verify).
    #[serde(default)]
    full: bool,
    /// `--inventory`.
    inventory: Option<String>,
    /// `--resume-listing-only`.
    #[serde(default)]
    resume_listing_only: bool,
    /// `--include`, `--exclude`, `--min-size`, ... (sizes in bytes, ages in seconds).
    #[serde(default)]
    filter: crate::filter::FilterSpec,
    /// sync: `--passes` (required: a job must end) and `--interval` (seconds).
    passes: Option<u64>,
    interval: Option<u64>,
    /// sync and cutover: `--max-delete` ("500" or "1%").
    max_delete: Option<String>,
    /// sync and cutover: `--max-delete-total` ("5000" or "10%").
    max_delete_total: Option<String>,
    /// sync: `--keep-deleted`.
    #[serde(default)]
    keep_deleted: bool,
    /// cutover: `--publish`.
    #[serde(default)]
    publish: bool,
    /// gateway: `--listen`, `--credentials`, `--bucket`, `--domain`, `--tls-cert`,
    /// `--tls-key`, `--insecure-http`.
    listen: Option<String>,
    credentials: Option<PathBuf>,
    bucket: Option<String>,
    domain: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    insecure_http: bool,
}

impl Job {
    /// Parses a job file and checks its options, so that a bad one fails before anything
    /// runs, with the file named.
    fn parse(text: &str, file: &Path) -> Result<Job> {
        let bad = |message: String| Error::Job {
            file: file.to_path_buf(),
            message,
        };
        let job: Job = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if let Some(c) = &job.containers {
            let dest = job.dest.as_deref().unwrap_or("");
            if !dest.starts_with("swift://") {
                return Err(bad(format!(
                    "\"containers\": {c:?} shards a swift:// destination; {dest:?} is not one"
                )));
            }
            crate::backend::swift::ContainerMap::parse("c", Some(c))
                .map_err(|e| bad(e.to_string()))?;
        }
        if job.concurrency == Some(0) {
            return Err(bad("\"concurrency\" must be at least 1".into()));
        }
        if job.command == "gateway" && (job.credentials.is_none() || job.dest.is_none()) {
            return Err(bad(
                "a gateway job needs \"dest\" and \"credentials\" (and \"source\" until a cutover)"
                    .into(),
            ));
        }
        if job.command == "sync" && job.passes.is_none_or(|n| n == 0) {
            return Err(bad(
                "a sync job needs \"passes\" (at least 1): the spool runs one job at a time".into(),
            ));
        }
        if let Some(m) = &job.max_delete {
            m.parse::<crate::reconcile::MaxDelete>()
                .map_err(|e| bad(e.to_string()))?;
        }
        if let Some(m) = &job.max_delete_total {
            crate::reconcile::MaxDelete::parse_as(m, "max_delete_total")
                .map_err(|e| bad(e.to_string()))?;
        }
        if job.full && !matches!(job.command.as_str(), "verify" | "cutover") {
            return Err(bad(format!(
                "\"full\" is an option of verify and cutover, not {}",
                job.command
            )));
        }
        crate::filter::Filter::new(&job.filter).map_err(|e| bad(e.to_string()))?;
        Ok(job)
    }

    /// The daemon's settings with this job's options.
    fn settings(&self, s: &Settings) -> Settings {
        let mut s = s.clone();
        if self.concurrency.is_some() {
            s.concurrency = self.concurrency;
        }
        if self.containers.is_some() {
            s.dest.containers = self.containers.clone();
        }
        s.inventory = self.inventory.clone();
        s.resume_listing_only = self.resume_listing_only;
        s.filter = self.filter.clone();
        s
    }
}

/// A job's outcome, written beside it as `<name>.result.json`.
#[derive(Debug, Serialize)]
struct JobResult {
    command: String,
    ok: bool,
    message: String,
    finished: u64,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(s: &Settings, o: &DaemonOptions) -> Result<()> {
    init_state(s)?;
    let slot = MonitorSlot::new(idle(s));
    let server = server::start_slot(slot.clone(), &s.state, &o.http).await?;
    let spool = s.state.join("jobs");
    std::fs::create_dir_all(&spool).map_err(|e| Error::io("creating the job spool", &spool, e))?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(
        "barge daemon ready: status on {}{}, jobs from {}",
        s.state.join(server::SOCKET_NAME).display(),
        server
            .http
            .map(|a| format!(" and http://{a}"))
            .unwrap_or_default(),
        spool.display()
    );
    if o.self_test {
        let ok = self_test_run(s, &slot).await;
        slot.set(idle(s));
        match &ok {
            Ok(true) => tracing::info!("self-test: verify DONE"),
            Ok(false) => tracing::error!("self-test: NOT DONE"),
            Err(e) => tracing::error!("self-test failed: {e}"),
        }
    }
    serve_spool(s, &slot, &spool).await?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("barge daemon stopping");
    Ok(())
}

/// Creates the state directory of a node nobody prepared drives for: it stages in
/// `<state>/staging`.
fn init_state(s: &Settings) -> Result<()> {
    std::fs::create_dir_all(&s.state)
        .map_err(|e| Error::io("creating the state directory", &s.state, e))?;
    if !s.state.join("keys/key.json").exists() {
        Node::init(&s.state, &InitOptions::default())?;
        tracing::info!(
            "initialised {} with directory staging (no raw drives were prepared)",
            s.state.display()
        );
    }
    Ok(())
}

/// Runs the spooled jobs one by one, then waits for more, until SIGTERM or SIGINT.
async fn serve_spool(s: &Settings, slot: &MonitorSlot, spool: &Path) -> Result<()> {
    let signal_err = |e| Error::io("installing the SIGTERM handler", "SIGTERM", e);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(signal_err)?;
    loop {
        if let Some(job) = next_job(spool)? {
            run_job(s, slot, &job).await;
            slot.set(idle(s));
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(SPOOL_POLL) => {}
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// What the status API shows between jobs: the node's drives (fill, health) and
/// nothing running. A finished job's monitor is replaced by this one because it holds
/// the catalog open (through its stager), and the next job opens the catalog again.
fn idle(s: &Settings) -> Arc<Monitor> {
    let m = Arc::new(Monitor::new("idle"));
    match s.open() {
        Ok(node) => {
            m.describe(
                "idle",
                Mode::Migrate,
                &s.state.display().to_string(),
                &node.master.fingerprint(),
            );
            m.set_staging(crate::staging::StagingHandle::idle(
                &node.catalog,
                &node.appliance_id,
                &node.staging.settings,
                &node.drive_paths(&[]),
            ));
        }
        Err(e) => tracing::warn!("status between jobs shows no drives: {e}"),
    }
    m.finish();
    m
}

/// The first job file in name order, if any.
fn next_job(spool: &Path) -> Result<Option<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(spool)
        .map_err(|e| Error::io("reading the job spool", spool, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.to_string_lossy().ends_with(".result.json")
        })
        .collect();
    v.sort();
    Ok(v.into_iter().next())
}

/// Runs one job file and leaves its outcome beside it: `<name>.result.json`, and the
/// file renamed to `<name>.done` or `<name>.failed`.
async fn run_job(s: &Settings, slot: &MonitorSlot, path: &Path) {
    let (ok, message) = match read_and_execute(s, slot, path).await {
        Ok(true) => (true, "done".to_string()),
        Ok(false) => (false, "finished NOT DONE (see `barge report`)".to_string()),
        Err(e) => (false, e.to_string()),
    };
    let stem = path.with_extension("");
    let result = JobResult {
        command: path.display().to_string(),
        ok,
        message: message.clone(),
        finished: crate::catalog::unix_now(),
    };
    let out = PathBuf::from(format!("{}.result.json", stem.display()));
    let written = serde_json::to_vec_pretty(&result)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&out, b));
    if let Err(e) = written {
        tracing::error!("{}: {e}", out.display());
    }
    let end = stem.with_extension(if ok { "done" } else { "failed" });
    if let Err(e) = std::fs::rename(path, &end) {
        tracing::error!(
            "{}: {e}; removing it so it does not run again",
            path.display()
        );
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("job {}: {message}", path.display());
}

/// Reads a job file and runs the job.
async fn read_and_execute(s: &Settings, slot: &MonitorSlot, path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading a job", path, e))?;
    let job = Job::parse(&text, path)?;
    tracing::info!("job {}: {}", path.display(), job.command);
    execute(&job.settings(s), slot, &job, path).await
}

/// Runs a job's command with a monitor the status server shows; true when it is done.
async fn execute(s: &Settings, slot: &MonitorSlot, job: &Job, file: &Path) -> Result<bool> {
    let node = s.open()?;
    let need = |v: &Option<String>, what: &str| {
        v.clone().ok_or_else(|| Error::Job {
            file: file.to_path_buf(),
            message: format!("a {} job needs \"{what}\"", job.command),
        })
    };
    let mode = match job.command.as_str() {
        "ingest" => Mode::Ingest,
        "drain" => Mode::Drain,
        "migrate" => Mode::Migrate,
        "verify" => {
            let dest = need(&job.dest, "dest")?;
            let r = stages::verify(s, &node, &dest, job.source.as_deref(), job.full).await?;
            return Ok(r.ok());
        }
        "sync" | "cutover" => {
            let (source, dest) = (need(&job.source, "source")?, need(&job.dest, "dest")?);
            return run_sync(s, slot, &node, job, &source, &dest).await;
        }
        "gateway" => return run_gateway(s, slot, &node, job, file).await,
        other => {
            return Err(Error::Job {
                file: file.to_path_buf(),
                message: format!(
                    "unknown job command {other:?} (migrate, ingest, drain, verify, sync, cutover, gateway)"
                ),
            });
        }
    };
    let m = monitor_for(&node, &job.command, mode);
    slot.set(m.clone());
    let ok = match mode {
        Mode::Ingest => {
            let source = need(&job.source, "source")?;
            let t = stages::ingest(s, &node, &source, None, m.clone()).await?;
            log_lines(&text::ingest(&t));
            t.summary.complete()
        }
        Mode::Drain => {
            let t = stages::drain(s, &node, &need(&job.dest, "dest")?, None, m.clone()).await?;
            log_lines(&text::drain(&t));
            t.summary.complete()
        }
        Mode::Migrate => {
            let dest = need(&job.dest, "dest")?;
            let source = need(&job.source, "source")?;
            let moved = migrate::move_through(s, &node, &source, &dest, m.clone()).await?;
            m.finish();
            for p in &moved.passes {
                log_lines(&text::ingest(&p.ingest));
                log_lines(&text::drain(&p.drain));
            }
            let check = migrate::check(s, &node, &dest).await?;
            log_lines(&text::verify(&check.verify, false, false));
            log_lines(&check.report.report.to_text());
            moved.complete() && check.done()
        }
    };
    m.finish();
    Ok(ok)
}

/// A sync or cutover job: its passes logged as they end; true when the last pass (and
/// the cutover's verdict) is complete.
async fn run_sync(
    s: &Settings,
    slot: &MonitorSlot,
    node: &crate::node::Node,
    job: &Job,
    source: &str,
    dest: &str,
) -> Result<bool> {
    use super::sync;
    let max_delete = match &job.max_delete {
        Some(m) => m.parse()?,
        None => Default::default(),
    };
    let max_delete_total = match &job.max_delete_total {
        Some(m) => Some(crate::reconcile::MaxDelete::parse_as(
            m,
            "max_delete_total",
        )?),
        None => None,
    };
    let m = monitor_for(node, &job.command, Mode::Migrate);
    slot.set(m.clone());
    let ok = if job.command == "cutover" {
        let o = sync::CutoverOptions {
            max_delete,
            max_delete_total,
            full: job.full,
            publish: job.publish,
        };
        let out = sync::cutover(s, node, source, dest, &o, m.clone()).await?;
        log_lines(&text::pass(&out.pass));
        log_lines(&text::certificate(&out.certificate, &out.written));
        out.done()
    } else {
        let o = sync::SyncOptions {
            max_delete,
            max_delete_total,
            keep_deleted: job.keep_deleted,
            passes: job.passes,
            interval: job.interval.map(std::time::Duration::from_secs),
        };
        let mut last = true;
        let mut each = |p: &sync::PassOutcome| {
            last = p.complete();
            log_lines(&text::pass(p));
        };
        sync::sync(s, node, source, dest, &o, m.clone(), &mut each).await?;
        last
    };
    m.finish();
    Ok(ok)
}

/// A gateway job: `barge gateway` with the job's options, its passes logged as they
/// end; it serves until the daemon is stopped (SIGTERM), and is then complete.
async fn run_gateway(
    s: &Settings,
    slot: &MonitorSlot,
    node: &crate::node::Node,
    job: &Job,
    file: &Path,
) -> Result<bool> {
    use super::sync;
    use crate::gateway::GatewayOptions;
    let bad = |message: String| Error::Job {
        file: file.to_path_buf(),
        message,
    };
    let dest = job
        .dest
        .clone()
        .ok_or_else(|| bad("a gateway job needs \"dest\"".into()))?;
    let bucket = match (&job.bucket, &job.source) {
        (Some(b), _) => b.clone(),
        (None, Some(src)) => crate::gateway::bucket_of(src)?,
        (None, None) => return Err(bad("a gateway job needs \"source\" or \"bucket\"".into())),
    };
    let o = GatewayOptions {
        listen: job
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:9000".into()),
        credentials: job
            .credentials
            .clone()
            .ok_or_else(|| bad("a gateway job needs \"credentials\"".into()))?,
        insecure_http: job.insecure_http,
        tls: job.tls_cert.clone().zip(job.tls_key.clone()),
        bucket,
        domain: job.domain.clone(),
    };
    let passes = sync::SyncOptions {
        max_delete: match &job.max_delete {
            Some(m) => m.parse()?,
            None => Default::default(),
        },
        max_delete_total: match &job.max_delete_total {
            Some(m) => Some(crate::reconcile::MaxDelete::parse_as(
                m,
                "max_delete_total",
            )?),
            None => None,
        },
        keep_deleted: false,
        passes: job.passes,
        interval: job.interval.map(std::time::Duration::from_secs),
    };
    let m = monitor_for(node, "gateway", Mode::Migrate);
    slot.set(m.clone());
    let mut each = |p: &sync::PassOutcome| log_lines(&text::pass(p));
    let sides = (job.source.as_deref(), dest.as_str());
    let r = super::gateway::gateway(s, node, sides, &o, &passes, m.clone(), &mut each).await;
    m.finish();
    r.map(|()| true)
}

/// A job's outcome in the log, a line at a time.
fn log_lines(text: &str) {
    for line in text.lines() {
        tracing::info!("{line}");
    }
}

/// Generates a sample tree and migrates it through a state directory of its own
/// (`<state>/self-test/state`, staging in `<state>/self-test/staging`: a catalog serves
/// one migration, and the node's stays the operator's) into a local directory; true when
/// verify and the report say DONE. The whole pipeline runs: chunking, dedup, sealing,
/// io_uring staging, drain, verify.
async fn self_test_run(s: &Settings, slot: &MonitorSlot) -> Result<bool> {
    let dir = s.state.join("self-test");
    let src = dir.join("source");
    let out = dir.join("destination");
    let state = dir.join("state");
    if !state.join("keys/key.json").exists() {
        let mut opts = InitOptions {
            drives: vec![dir.join("staging")],
            ..Default::default()
        };
        opts.staging.segment_size = SELF_TEST_SEGMENT;
        Node::init(&state, &opts)?;
    }
    let s = &Settings {
        state,
        staging: vec![],
        key: Default::default(),
        ..s.clone()
    };
    if !src.exists() {
        let st = crate::sample::generate(&src, SELF_TEST_BYTES, 7)?;
        tracing::info!(
            "self-test: sample tree of {} files ({} bytes) in {}",
            st.files,
            st.bytes,
            src.display()
        );
    }
    let job = Job {
        command: "migrate".into(),
        source: Some(src.display().to_string()),
        dest: Some(out.display().to_string()),
        ..Default::default()
    };
    execute(s, slot, &job, &dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_options_are_taken_and_checked_when_the_file_is_read() {
        let f = Path::new("/spool/j.json");
        let j = Job::parse(
            r#"{"command": "migrate", "source": "s3://b", "dest": "swift://c",
                "concurrency": 32, "containers": "hash:16",
                "filter": {"exclude": ["/customer-x/**"], "max_size": 1000}}"#,
            f,
        )
        .unwrap();
        let s = j.settings(&Settings::default());
        assert_eq!(s.concurrency, Some(32));
        assert_eq!(s.dest.containers.as_deref(), Some("hash:16"));
        assert_eq!(s.filter.exclude, ["/customer-x/**"]);
        let err = |text: &str| Job::parse(text, f).unwrap_err().to_string();
        let e = err(r#"{"command": "migrate", "concurency": 3}"#);
        assert!(e.contains("j.json") && e.contains("concurency"), "{e}");
        let e = err(r#"{"command": "drain", "dest": "/data/out", "containers": "hash:4"}"#);
        assert!(e.contains("containers") && e.contains("swift://"), "{e}");
        let e = err(r#"{"command": "migrate", "dest": "swift://c", "containers": "mod:3"}"#);
        assert!(e.contains("mod:3"), "{e}");
        let e = err(r#"{"command": "ingest", "filter": {"include": ["["]}}"#);
        assert!(e.contains("--include"), "{e}");
        let e = err(r#"{"command": "drain", "full": true}"#);
        assert!(e.contains("full"), "{e}");
        let e = err(r#"{"command": "sync", "source": "/a", "dest": "/b"}"#);
        assert!(e.contains("passes"), "{e}");
        let e = err(r#"{"command": "sync", "passes": 2, "max_delete": "lots"}"#);
        assert!(e.contains("--max-delete") && e.contains("lots"), "{e}");
        let e = err(r#"{"command": "sync", "passes": 2, "max_delete_total": "200%"}"#);
        assert!(e.contains("max_delete_total") && e.contains("200%"), "{e}");
        let j = Job::parse(
            r#"{"command": "cutover", "source": "/a", "dest": "/b", "full": true,
                "max_delete": "2%", "publish": true}"#,
            f,
        )
        .unwrap();
        assert!(j.full && j.publish);
        let e = err(r#"{"command": "gateway", "source": "s3://b", "dest": "s3://c"}"#);
        assert!(e.contains("credentials"), "{e}");
        let j = Job::parse(
            r#"{"command": "gateway", "source": "s3://b", "dest": "s3://c",
                "listen": "0.0.0.0:443", "credentials": "/etc/barge/keys",
                "tls_cert": "/etc/barge/tls.pem", "tls_key": "/etc/barge/tls.key",
                "domain": "s3.example.internal", "interval": 600}"#,
            f,
        )
        .unwrap();
        assert_eq!(j.listen.as_deref(), Some("0.0.0.0:443"));
        assert_eq!(j.domain.as_deref(), Some("s3.example.internal"));
    }
}

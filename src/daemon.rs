//! `barge daemon`: the node's long-running service. It owns the state directory's status
//! socket for its whole life (the console dashboard and Prometheus always have someone
//! to ask), runs jobs one at a time from a spool directory, and can run a self-test
//! migration at start. Readiness is reported to systemd (`Type=notify`) and logged.
//!
//! A job is a JSON file `<state>/jobs/<name>.json`:
//! `{"command": "migrate" | "ingest" | "drain" | "verify", "source": "...", "dest": "..."}`.
//! Jobs run in name order; each ends renamed to `<name>.done` or `<name>.failed`, with
//! its outcome in `<name>.result.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use barge::monitor::server::MonitorSlot;
use barge::monitor::{Mode, Monitor};
use barge::node::Node;

use super::{Global, Tune, do_drain, do_ingest, do_move, do_verify, migrate_check};

/// Seconds between two looks at the spool directory.
const SPOOL_POLL: Duration = Duration::from_secs(2);
/// Size of the self-test's sample tree.
const SELF_TEST_BYTES: u64 = 24 << 20;
/// Segment size of the self-test's staging (small: it shares the state partition).
const SELF_TEST_SEGMENT: u64 = 32 << 20;

#[derive(Debug, Deserialize)]
struct Job {
    command: String,
    source: Option<String>,
    dest: Option<String>,
}

#[derive(Debug, Serialize)]
struct JobResult {
    command: String,
    ok: bool,
    message: String,
    finished: u64,
}

/// What the status API shows between jobs: the node's drives (fill, health) and
/// nothing running. A finished job's monitor is replaced by this one because it holds
/// the catalog open (through its stager), and the next job opens the catalog again.
fn idle(g: &Global) -> Arc<Monitor> {
    let m = Arc::new(Monitor::new("idle"));
    match g.open() {
        Ok(node) => {
            m.describe(
                "idle",
                Mode::Migrate,
                &g.state.display().to_string(),
                &node.master.fingerprint(),
            );
            m.set_staging(barge::staging::StagingHandle::idle(
                &node.catalog,
                &node.appliance_id,
                &node.staging.settings,
                &node.drive_paths(&[]),
            ));
        }
        Err(e) => tracing::warn!("status between jobs shows no drives: {e:#}"),
    }
    m.finish();
    m
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(g: &Global, self_test: bool) -> Result<()> {
    std::fs::create_dir_all(&g.state).with_context(|| format!("creating {}", g.state.display()))?;
    if !g.state.join("keys/key.json").exists() {
        // A node nobody prepared drives for stages in <state>/staging.
        let n = Node::init(&g.state, &barge::node::InitOptions::default())?;
        tracing::info!(
            "initialised {} with directory staging (no raw drives were prepared)",
            g.state.display()
        );
        drop(n);
    }
    let slot = MonitorSlot::new(idle(g));
    let server = barge::monitor::server::start_slot(slot.clone(), &g.state, g.http).await?;
    let spool = g.state.join("jobs");
    std::fs::create_dir_all(&spool)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(
        "barge daemon ready: status on {}{}, jobs from {}",
        g.state.join(barge::monitor::server::SOCKET_NAME).display(),
        server
            .http
            .map(|a| format!(" and http://{a}"))
            .unwrap_or_default(),
        spool.display()
    );
    if self_test {
        let ok = self_test_run(g, &slot).await;
        slot.set(idle(g));
        match &ok {
            Ok(true) => tracing::info!("self-test: verify DONE"),
            Ok(false) => tracing::error!("self-test: NOT DONE"),
            Err(e) => tracing::error!("self-test failed: {e:#}"),
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        if let Some(job) = next_job(&spool)? {
            run_job(g, &slot, &job).await;
            slot.set(idle(g));
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(SPOOL_POLL) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("barge daemon stopping");
    Ok(())
}

fn next_job(spool: &Path) -> Result<Option<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(spool)?
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

async fn run_job(g: &Global, slot: &MonitorSlot, path: &Path) {
    let stem = path.with_extension("");
    let res: Result<bool> = async {
        let text = std::fs::read_to_string(path)?;
        let job: Job =
            serde_json::from_str(&text).with_context(|| format!("job file {}", path.display()))?;
        tracing::info!("job {}: {}", path.display(), job.command);
        execute(g, slot, &job).await
    }
    .await;
    let (ok, message) = match res {
        Ok(true) => (true, "done".to_string()),
        Ok(false) => (false, "finished NOT DONE (see `barge report`)".to_string()),
        Err(e) => (false, format!("{e:#}")),
    };
    let result = JobResult {
        command: path.display().to_string(),
        ok,
        message: message.clone(),
        finished: barge::catalog::unix_now(),
    };
    let out = PathBuf::from(format!("{}.result.json", stem.display()));
    if let Err(e) = serde_json::to_vec_pretty(&result)
        .map_err(anyhow::Error::from)
        .and_then(|b| std::fs::write(&out, b).map_err(Into::into))
    {
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

async fn execute(g: &Global, slot: &MonitorSlot, job: &Job) -> Result<bool> {
    let node = g.open()?;
    let tune = Tune { concurrency: None };
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .with_context(|| format!("a {} job needs \"{what}\"", job.command))
    };
    let mode = match job.command.as_str() {
        "ingest" => Mode::Ingest,
        "drain" => Mode::Drain,
        "migrate" => Mode::Migrate,
        "verify" => {
            let dest = need(&job.dest, "dest")?;
            return do_verify(g, &node, &dest, job.source.as_deref(), false, false).await;
        }
        other => bail!("unknown job command {other:?} (migrate, ingest, drain, verify)"),
    };
    let m = Arc::new(Monitor::new(&job.command));
    m.describe(
        &job.command,
        mode,
        &g.state.display().to_string(),
        &node.master.fingerprint(),
    );
    m.persist_to(node.catalog.clone());
    m.start_sampler();
    slot.set(m.clone());
    let ok = match mode {
        Mode::Ingest => {
            let s = do_ingest(
                g,
                &node,
                &need(&job.source, "source")?,
                &tune,
                None,
                m.clone(),
            )
            .await?;
            s.complete()
        }
        Mode::Drain => {
            let s = do_drain(g, &node, &need(&job.dest, "dest")?, &tune, None, m.clone()).await?;
            s.complete()
        }
        Mode::Migrate => {
            let dest = need(&job.dest, "dest")?;
            let moved = do_move(
                g,
                &node,
                &need(&job.source, "source")?,
                &dest,
                &tune,
                m.clone(),
            )
            .await?;
            m.finish();
            let checked = migrate_check(g, &node, &dest, false).await?;
            moved && checked
        }
    };
    m.finish();
    Ok(ok)
}

/// Generates a sample tree and migrates it through a state directory of its own
/// (`<state>/self-test/state`, staging in `<state>/self-test/staging`: a catalog serves
/// one migration, and the node's stays the operator's) into a local directory; true when
/// verify and the report say DONE. The whole pipeline runs: chunking, dedup, sealing,
/// io_uring staging, drain, verify.
async fn self_test_run(g: &Global, slot: &MonitorSlot) -> Result<bool> {
    let dir = g.state.join("self-test");
    let src = dir.join("source");
    let out = dir.join("destination");
    let state = dir.join("state");
    if !state.join("keys/key.json").exists() {
        let mut opts = barge::node::InitOptions {
            drives: vec![dir.join("staging")],
            ..Default::default()
        };
        opts.staging.segment_size = SELF_TEST_SEGMENT;
        Node::init(&state, &opts)?;
    }
    let g = &Global {
        state,
        staging: vec![],
        key_file: None,
        passphrase_env: None,
        ..g.clone()
    };
    if !src.exists() {
        let st = barge::sample::generate(&src, SELF_TEST_BYTES, 7)?;
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
    };
    execute(g, slot, &job).await
}

//! One function per command: call the library, print what it returns (text, or JSON
//! with `--json`), and turn the outcome into an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use barge::commands::live::{Live, LiveOptions};
use barge::commands::stages::{self, ReportOutcome};
use barge::commands::text::{self, gib};
use barge::commands::{Timed, demo, migrate, sync};
use barge::drain::DrainSummary;
use barge::ingest::IngestSummary;
use barge::monitor::{self, Mode, progress::Style};
use barge::node::Node;
use barge::verify::VerifyReport;
use barge::{report, sample};

use crate::NOT_DONE;
use crate::cli::{Global, InitArgs, Tune, init_opts};

/// 0 when done, else [`NOT_DONE`].
pub fn code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_DONE)
    }
}

/// The monitor, status API and progress display of a long command.
async fn live(g: &Global, node: &Node, command: &str, mode: Mode) -> Result<Live> {
    let o = LiveOptions {
        http: g.http_options(),
        start_paused: g.start_paused,
        progress: Style::choose(g.quiet, g.json),
    };
    Ok(Live::start(node, command, mode, &o).await?)
}

/// One stage's outcome: its JSON document with `--json`, else its text (each line's
/// control characters escaped: names from a store are shown, never obeyed).
fn print_doc(json: bool, doc: impl FnOnce() -> serde_json::Value, text: impl FnOnce() -> String) {
    if json {
        println!("{}", doc());
    } else {
        print!("{}", escaped_lines(&text()));
    }
}

/// `text` with the control characters of each line escaped, its line breaks kept.
fn escaped_lines(text: &str) -> String {
    let lines: Vec<_> = text.split('\n').map(barge::object::escaped).collect();
    lines.join("\n")
}

fn print_ingest(g: &Global, t: &Timed<IngestSummary>) {
    let doc = || serde_json::json!({"ingest": t.summary, "secs": t.secs});
    print_doc(g.json, doc, || text::ingest(t));
}

fn print_drain(g: &Global, t: &Timed<DrainSummary>) {
    let doc = || serde_json::json!({"drain": t.summary, "secs": t.secs});
    print_doc(g.json, doc, || text::drain(t));
}

fn print_verify(json: bool, r: &VerifyReport, full: bool, with_source: bool) {
    let doc = || serde_json::json!({ "verify": r });
    print_doc(json, doc, || text::verify(r, full, with_source));
}

fn print_report(json: bool, r: &ReportOutcome) {
    if let Some(p) = r.chart.as_ref().filter(|_| !json) {
        println!("chart       {}", p.display());
    }
    let doc = || serde_json::json!({ "report": r.report });
    print_doc(json, doc, || r.report.to_text());
}

pub fn init(g: &Global, a: &InitArgs, force: bool) -> Result<ExitCode> {
    let node = Node::init(&g.state, &init_opts(g, a, force)?)?;
    println!(
        "initialised {}: appliance {}, key fingerprint {}, staging on {}",
        g.state.display(),
        hex::encode(node.appliance_id),
        node.master.fingerprint(),
        node.staging.drives.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn list(g: &Global, source: &str, keys: bool) -> Result<ExitCode> {
    let s = g.settings(None);
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let sink: Option<&mut (dyn std::io::Write + Send)> = if keys { Some(&mut out) } else { None };
    let t = stages::list(&s, source, sink).await?;
    std::io::Write::flush(&mut out).context("writing keys to stdout")?;
    let l = &t.summary;
    if g.json {
        let doc = serde_json::json!({ "list": l, "secs": t.secs });
        eprintln!("{doc}");
    } else {
        eprintln!(
            "listed {} objects ({}) in {:.1}s, {:.0} keys/s, over {} key ranges{}",
            l.objects,
            gib(l.bytes),
            t.secs,
            l.objects as f64 / t.secs.max(1e-9),
            l.ranges,
            match l.errors {
                0 => String::new(),
                n => format!("; {n} entries could not be listed"),
            }
        );
    }
    Ok(code(l.errors == 0))
}

/// How an ingest lists its source (`--inventory`, `--resume-listing-only`).
pub struct Listing {
    inventory: Option<String>,
    resume_only: bool,
}

impl Listing {
    pub fn new(inventory: &Option<String>, resume_only: bool) -> Self {
        Listing {
            inventory: inventory.clone(),
            resume_only,
        }
    }

    fn apply(&self, g: &Global, s: &mut barge::commands::Settings) -> Result<()> {
        s.inventory = self.inventory.clone();
        s.resume_listing_only = self.resume_only;
        s.filter = g.filters.spec()?;
        Ok(())
    }
}

pub async fn ingest(g: &Global, source: &str, l: &Listing, tune: &Tune) -> Result<ExitCode> {
    let node = g.open()?;
    let live = live(g, &node, "ingest", Mode::Ingest).await?;
    let mut s = g.sharded(Some(tune), Some(source))?;
    l.apply(g, &mut s)?;
    let t = stages::ingest(&s, &node, source, None, live.monitor.clone()).await?;
    live.finish();
    print_ingest(g, &t);
    Ok(code(t.summary.complete()))
}

pub async fn drain(g: &Global, dest: &str, tune: &Tune) -> Result<ExitCode> {
    let node = g.open()?;
    let live = live(g, &node, "drain", Mode::Drain).await?;
    let s = g.sharded(Some(tune), None)?;
    let t = stages::drain(&s, &node, dest, None, live.monitor.clone()).await?;
    live.finish();
    print_drain(g, &t);
    Ok(code(t.summary.complete()))
}

pub async fn migrate(
    g: &Global,
    source: &str,
    dest: &str,
    l: &Listing,
    tune: &Tune,
) -> Result<ExitCode> {
    let node = g.open()?;
    let mut s = g.sharded(Some(tune), Some(source))?;
    l.apply(g, &mut s)?;
    // Fetch, stage and drain at once: the drain follows what ingest stages.
    let live = live(g, &node, "migrate", Mode::Migrate).await?;
    let moved = migrate::move_through(&s, &node, source, dest, live.monitor.clone()).await;
    live.finish();
    let moved = moved?;
    for p in &moved.passes {
        print_ingest(g, &p.ingest);
        print_drain(g, &p.drain);
    }
    if barge::backend::synthetic::keeps_nothing(dest) {
        // A burn-in: each object was checked against its BLAKE3 as the drain rebuilt it.
        print_doc(
            g.json,
            || serde_json::json!({ "verify": null, "reason": barge::backend::synthetic::NOTHING_TO_VERIFY }),
            || {
                format!(
                    "verify: skipped: {}\n",
                    barge::backend::synthetic::NOTHING_TO_VERIFY
                )
            },
        );
        return Ok(code(moved.complete()));
    }
    let check = migrate::check(&s, &node, dest).await?;
    print_verify(g.json, &check.verify, false, false);
    print_report(g.json, &check.report);
    Ok(code(moved.complete() && check.done()))
}

pub async fn sync(
    g: &Global,
    source: &str,
    dest: &str,
    o: &sync::SyncOptions,
    tune: &Tune,
) -> Result<ExitCode> {
    let node = g.open()?;
    let s = g.sharded(Some(tune), Some(source))?;
    let live = live(g, &node, "sync", Mode::Migrate).await?;
    let mut last_ok = true;
    let json = g.json;
    let mut each = |p: &sync::PassOutcome| {
        last_ok = p.complete();
        print_doc(
            json,
            || serde_json::json!({ "pass": p.number, "record": p.record, "deletions": p.deletions }),
            || text::pass(p),
        );
    };
    let ran = sync::sync(&s, &node, source, dest, o, live.monitor.clone(), &mut each).await;
    live.finish();
    ran?;
    Ok(code(last_ok))
}

pub async fn gateway(
    g: &Global,
    (source, dest): (Option<&str>, &str),
    o: &barge::gateway::GatewayOptions,
    p: &sync::SyncOptions,
    tune: &Tune,
) -> Result<ExitCode> {
    let node = g.open()?;
    let s = g.sharded(Some(tune), source)?;
    let live = live(g, &node, "gateway", Mode::Migrate).await?;
    let json = g.json;
    let mut each = |p: &sync::PassOutcome| {
        print_doc(
            json,
            || serde_json::json!({ "pass": p.number, "record": p.record, "deletions": p.deletions }),
            || text::pass(p),
        );
    };
    let r = barge::commands::gateway::gateway(
        &s,
        &node,
        (source, dest),
        o,
        p,
        live.monitor.clone(),
        &mut each,
    )
    .await;
    live.finish();
    r?;
    Ok(ExitCode::SUCCESS)
}

pub async fn cutover(
    g: &Global,
    source: &str,
    dest: &str,
    o: &sync::CutoverOptions,
    tune: &Tune,
) -> Result<ExitCode> {
    let node = g.open()?;
    let s = g.sharded(Some(tune), Some(source))?;
    let live = live(g, &node, "cutover", Mode::Migrate).await?;
    let out = sync::cutover(&s, &node, source, dest, o, live.monitor.clone()).await;
    live.finish();
    let out = out?;
    print_doc(
        g.json,
        || serde_json::json!({ "pass": out.pass.number, "record": out.pass.record, "deletions": out.pass.deletions }),
        || text::pass(&out.pass),
    );
    print_verify(g.json, &out.verify, o.full, true);
    print_doc(
        g.json,
        || serde_json::json!({ "certificate": out.certificate, "written": out.written }),
        || text::certificate(&out.certificate, &out.written),
    );
    Ok(code(out.done()))
}

pub async fn plan(
    g: &Global,
    source: &str,
    shards: u32,
    out: Option<&Path>,
    publish: Option<&str>,
    inventory: Option<&str>,
    new_fleet_key: Option<&Path>,
) -> Result<ExitCode> {
    let mut s = g.settings(None);
    s.inventory = inventory.map(str::to_string);
    if let Some(p) = new_fleet_key {
        let k = barge::fleet_key::FleetKey::write_new(p)?;
        eprintln!(
            "fleet key {} written to {}: give it to every node of the move (--fleet-key-file, or its content as BARGE_FLEET_KEY) and to report --fleet",
            k.id(),
            p.display()
        );
    }
    let t = std::time::Instant::now();
    let plan = barge::commands::fleet::plan(&s, source, shards, publish).await?;
    let secs = t.elapsed().as_secs_f64();
    let json = serde_json::to_string_pretty(&plan).context("encoding the plan")?;
    match out {
        Some(p) => std::fs::write(p, format!("{json}\n"))
            .with_context(|| format!("writing the plan to {}", p.display()))?,
        None => println!("{json}"),
    }
    let (lo, hi) = plan.spread();
    eprintln!(
        "plan {}: {} objects ({:.3} GiB) of {source} in {} shards, listed and cut in {secs:.1}s; shard sizes {:.0}%..{:.0}% of the mean",
        plan.id,
        plan.objects,
        gib(plan.bytes),
        plan.shards.len(),
        lo * 100.0,
        hi * 100.0
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn fleet(
    g: &Global,
    place: &str,
    metrics: Option<&Path>,
    watch: Option<u64>,
) -> Result<ExitCode> {
    let Some(path) = &g.plan else {
        anyhow::bail!("report --fleet needs --plan (the plan the shards ran)");
    };
    let plan = barge::plan::Plan::load(path)?;
    let mut s = g.settings(None);
    s.fleet_key = g.fleet_key()?;
    if let Some(secs) = watch {
        let every = std::time::Duration::from_secs(secs.max(1));
        let mut last = String::new();
        let json = g.json;
        let mut each = |f: &barge::fleet::Fleet| {
            if f.verdict != last {
                last = f.verdict.clone();
                print_doc(
                    json,
                    || serde_json::json!({ "fleet": f }),
                    || text::fleet(f),
                );
            }
        };
        barge::commands::fleet::watch(&s, place, &plan, every, &g.http_options(), &mut each)
            .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let f = barge::commands::fleet::gather(&s, place, &plan).await?;
    if let Some(p) = metrics {
        std::fs::write(p, barge::fleet::metrics(&f))
            .with_context(|| format!("writing the fleet metrics to {}", p.display()))?;
    }
    print_doc(
        g.json,
        || serde_json::json!({ "fleet": f }),
        || text::fleet(&f),
    );
    Ok(code(f.done))
}

pub async fn verify(g: &Global, dest: &str, source: Option<&str>, full: bool) -> Result<ExitCode> {
    let node = g.open()?;
    let s = g.sharded(None, source)?;
    let r = stages::verify(&s, &node, dest, source, full).await?;
    print_verify(g.json, &r, full, source.is_some());
    Ok(code(r.ok()))
}

pub fn report(g: &Global, csv: Option<&Path>, chart: Option<&Path>) -> Result<ExitCode> {
    let node = g.open()?;
    let r = stages::report(&node, csv, chart)?;
    print_report(g.json, &r);
    Ok(code(r.report.done))
}

pub fn fsck(g: &Global) -> Result<ExitCode> {
    let o = stages::fsck(&g.open()?)?;
    if g.json {
        println!("{}", serde_json::json!(o));
        return Ok(ExitCode::SUCCESS);
    }
    let (r, rc) = (&o.fsck, &o.reclaim);
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
    let (before, after) = o.catalog_bytes;
    println!("catalog: compacted, {before} -> {after} bytes");
    Ok(ExitCode::SUCCESS)
}

pub fn reclaim(g: &Global) -> Result<ExitCode> {
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

pub fn drives(g: &Global) -> Result<ExitCode> {
    // Staging drives of this node (configured, or given with --staging).
    let staging: Vec<PathBuf> = if g.staging.is_empty() {
        Node::open(&g.state, &g.key(), &[])
            .map(|n| n.staging.drives.iter().map(PathBuf::from).collect())
            .unwrap_or_default()
    } else {
        g.staging.clone()
    };
    let rows = barge::drives::table(&staging)?;
    if g.json {
        println!("{}", serde_json::json!({ "drives": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10} {:<22} {:<24} {:>10} {:<5} {:<8} role",
        "device", "serial", "model", "size", "kind", "health"
    );
    for r in &rows {
        let d = &r.device;
        let kind = match (d.is_nvme, d.rotational) {
            (true, _) => "nvme",
            (false, true) => "hdd",
            (false, false) => "ssd",
        };
        println!(
            "{:<10} {:<22} {:<24} {:>10} {:<5} {:<8} {}",
            d.name,
            d.serial.as_deref().unwrap_or("-"),
            d.model.as_deref().unwrap_or("-"),
            format!("{:.1} GiB", gib(d.size_bytes)),
            kind,
            r.health,
            r.role
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Environment variable holding a node's control token for `barge tui --connect`.
const CONTROL_TOKEN_ENV: &str = "BARGE_CONTROL_TOKEN";

/// The control token `barge tui --connect` sends: `--token-file`, else
/// [`CONTROL_TOKEN_ENV`], else this state directory's token if it has one.
fn control_token(g: &Global, file: Option<&Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        return Ok(Some(monitor::token::read(f)?));
    }
    if let Ok(t) = std::env::var(CONTROL_TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_string()));
    }
    let own = monitor::token::path(&g.state);
    Ok(match own.exists() {
        true => Some(monitor::token::read(&own)?),
        false => None,
    })
}

pub async fn tui(g: &Global, connect: Option<&str>, token_file: Option<&Path>) -> Result<ExitCode> {
    let target = match connect {
        Some(a) => barge_tui::client::Target::Tcp {
            addr: a.to_string(),
            token: control_token(g, token_file)?,
        },
        None => barge_tui::client::Target::Unix(g.state.join(monitor::server::SOCKET_NAME)),
    };
    // The dashboard is synchronous; it runs on a plain thread of its own.
    tokio::task::spawn_blocking(move || barge_tui::app::run(target))
        .await
        .context("dashboard thread")??;
    Ok(ExitCode::SUCCESS)
}

pub async fn status(g: &Global) -> Result<ExitCode> {
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
            print!("{}", text::listing_ranges(&live.listing));
            if let Some(st) = &live.sync {
                print!("{}", barge::passes::describe(st));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let node = g.open()?;
    let r = report::build(&node)?;
    if g.json {
        println!("{}", serde_json::json!({ "status": r }));
        return Ok(ExitCode::SUCCESS);
    }
    println!("state       {}", g.state.display());
    print!("{}", escaped_lines(&r.to_text()));
    if !r.listing_left.is_empty() {
        println!("the last listing stopped; the next ingest resumes its key ranges:");
        print!("{}", text::listing_ranges(&r.listing_left));
    }
    for run in r.runs.iter().rev().take(5) {
        let outcome = run.outcome.as_deref();
        let outcome = outcome.unwrap_or("(running or interrupted)");
        println!("run {:>4}    {} {}", run.id, run.command, outcome);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn sample(out: &Path, size: u64, seed: u64) -> Result<ExitCode> {
    let st = sample::generate(out, size, seed)?;
    println!(
        "sample: {} files, {:.3} GiB, {:.3} GiB unique content, in {}",
        st.files,
        gib(st.bytes),
        gib(st.unique_bytes),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn demo(g: &Global, dir: &Path, size: u64) -> Result<ExitCode> {
    let o = demo::run(&g.settings(None), dir, size).await?;
    let d = &o.dirs;
    if let Some(st) = &o.generated {
        println!(
            "demo: generated {} files ({:.3} GiB) in {}",
            st.files,
            gib(st.bytes),
            d.source.display()
        );
    }
    print_ingest(g, &o.ingest);
    print_drain(g, &o.drain);
    print_verify(false, &o.verify, true, true);
    print!("{}", escaped_lines(&o.report.report.to_text()));
    println!(
        "demo: {} -> {} through sealed staging in {}; dedup ratio {:.2}",
        d.source.display(),
        d.out.display(),
        d.state.join("staging").display(),
        o.report.report.dedup_ratio
    );
    Ok(code(o.done()))
}

//! `sync` and `cutover`: a move that follows a changing source. Each pass lists the
//! source (marking every key seen by the pass), stages and drains what is new or
//! changed, then deletes at the destination what the listing no longer has
//! ([`crate::reconcile`]). Passes are recorded in the catalog (CF `passes`); a pass a
//! crash interrupted is finished by the next run under the same number.
//!
//! `cutover` is the last pass, run while the source is frozen: a listing from the first
//! key, the last changes and deletions, then a verify of source and destination against
//! the catalog in mirror mode, and a certificate with a digest over every object.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::Settings;
use super::migrate::{self, MoveOutcome};
use crate::backend::{open_destination, open_source};
use crate::catalog::{PassRecord, unix_now};
use crate::error::{Error, Result};
use crate::monitor::Monitor;
use crate::node::Node;
use crate::reconcile::{self, DeleteOptions, Deletions, MaxDelete};
use crate::verify::{self, VerifyReport};

/// Version of the cutover certificate's JSON layout.
pub const CERTIFICATE_VERSION: u32 = 1;
/// The certificate's file name in the state directory.
pub const CERTIFICATE_FILE: &str = "cutover-certificate.json";
/// Its key at the destination with `--publish` (under [`verify::RESERVED_PREFIX`], which
/// verify does not count as extra).
pub const CERTIFICATE_KEY: &str = ".barge/cutover-certificate.json";

/// Options of `barge sync`.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// How many objects one pass may delete.
    pub max_delete: MaxDelete,
    /// How many the move's passes may delete together (None: no such limit).
    pub max_delete_total: Option<MaxDelete>,
    /// Report objects gone from the source, delete none.
    pub keep_deleted: bool,
    /// Passes to run (None: until stopped).
    pub passes: Option<u64>,
    /// Time from the start of one pass to the start of the next (None: start the next
    /// when the last ends).
    pub interval: Option<Duration>,
}

/// Options of `barge cutover`.
#[derive(Debug, Clone, Default)]
pub struct CutoverOptions {
    pub max_delete: MaxDelete,
    pub max_delete_total: Option<MaxDelete>,
    /// Verify by downloading every object and comparing content hashes.
    pub full: bool,
    /// Also write the certificate at the destination ([`CERTIFICATE_KEY`]).
    pub publish: bool,
}

/// One pass: its number, record, the move and the deletions.
#[derive(Debug)]
pub struct PassOutcome {
    pub number: u64,
    pub record: PassRecord,
    pub moved: MoveOutcome,
    /// None when deletions were skipped (the listing was incomplete).
    pub deletions: Option<Deletions>,
}

impl PassOutcome {
    /// The destination holds every listed object and nothing the source deleted.
    pub fn complete(&self) -> bool {
        self.record.outcome.as_deref() == Some("ok")
    }
}

/// What kind of pass to run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Sync,
    Cutover,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sync => "sync",
            Kind::Cutover => "cutover",
        }
    }
}

/// Runs passes until `o.passes` have run or the process is told to stop (SIGINT or
/// SIGTERM while it waits between passes); `each` sees every pass as it ends.
pub async fn sync(
    s: &Settings,
    node: &Node,
    source: &str,
    dest: &str,
    o: &SyncOptions,
    monitor: Arc<Monitor>,
    each: &mut (dyn FnMut(&PassOutcome) + Send),
) -> Result<u64> {
    let del = |pass| DeleteOptions {
        pass,
        max_delete: o.max_delete,
        max_total: o.max_delete_total,
        keep: o.keep_deleted,
    };
    let mut ran = 0;
    loop {
        let started = std::time::Instant::now();
        let p = run_pass(s, node, source, dest, Kind::Sync, &del, &monitor).await?;
        each(&p);
        ran += 1;
        if o.passes.is_some_and(|n| ran >= n) {
            return Ok(ran);
        }
        let wait = o
            .interval
            .map_or(Duration::ZERO, |i| i.saturating_sub(started.elapsed()));
        if !wait.is_zero() && !wait_or_stop(node, &monitor, wait).await? {
            return Ok(ran);
        }
    }
}

/// Waits `wait` between passes, showing when the next starts; false when told to stop.
async fn wait_or_stop(node: &Node, monitor: &Monitor, wait: Duration) -> Result<bool> {
    let mut st = figures(node)?.unwrap_or_default();
    st.phase = "waiting".into();
    st.next_pass_unix = Some(unix_now() + wait.as_secs());
    monitor.set_sync(st);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::task("waiting between passes", e))?;
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(true),
        _ = tokio::signal::ctrl_c() => Ok(false),
        _ = term.recv() => Ok(false),
    }
}

/// The sync figures from the pass records, with the lag the last finished pass recorded
/// (no walk of the catalog: a pass's phases change often, the catalog may hold billions
/// of objects).
fn figures(node: &Node) -> Result<Option<barge_tui::model::SyncStatus>> {
    let passes = node.catalog.passes()?;
    let lag = passes.iter().rev().find(|p| p.1.finished.is_some()).map_or(
        Default::default(),
        |(_, p)| crate::passes::Lag {
            objects: p.lag_objects,
            bytes: p.lag_bytes,
        },
    );
    Ok(crate::passes::status(&passes, lag, unix_now()))
}

/// Shows the pass and its phase.
fn show(node: &Node, monitor: &Monitor, phase: &str) -> Result<()> {
    if let Some(mut st) = figures(node)? {
        st.phase = phase.into();
        monitor.set_sync(st);
    }
    Ok(())
}

/// One pass: begin (or resume), move, delete, finish.
async fn run_pass(
    s: &Settings,
    node: &Node,
    source: &str,
    dest: &str,
    kind: Kind,
    del: &dyn Fn(u64) -> DeleteOptions,
    monitor: &Arc<Monitor>,
) -> Result<PassOutcome> {
    super::migrate::refuse_crossed(source, dest)?;
    let (number, mut rec) = begin(node, kind, source, dest)?;
    show(node, monitor, "moving")?;
    let moved = move_phase(s, node, source, dest, number, &mut rec, monitor).await?;
    show(node, monitor, "deleting")?;
    let deletions = delete_phase(s, node, dest, &mut rec, &del(number)).await?;
    finish(node, number, &mut rec, &moved)?;
    show(node, monitor, "finished")?;
    Ok(PassOutcome {
        number,
        record: rec,
        moved,
        deletions,
    })
}

/// Begin: resumes the newest pass if a crash left it unfinished (same kind, source and
/// destination), else starts the next one: the seen marks of earlier passes are cleared
/// and its listing starts from the first key.
fn begin(node: &Node, kind: Kind, source: &str, dest: &str) -> Result<(u64, PassRecord)> {
    let last = node.catalog.last_pass()?;
    if let Some((n, mut rec)) = last.clone()
        && rec.finished.is_none()
        && rec.kind == kind.name()
        && rec.source == source
        && rec.destination == dest
    {
        tracing::info!(
            "resuming {} pass {n}, interrupted before it ended",
            rec.kind
        );
        rec.runs += 1;
        node.catalog.put_pass(n, &rec)?;
        return Ok((n, rec));
    }
    if let Some((n, mut rec)) = last.filter(|(_, r)| r.finished.is_none()) {
        rec.finished = Some(unix_now());
        rec.outcome = Some(format!("abandoned for a {} pass", kind.name()));
        node.catalog.put_pass(n, &rec)?;
    }
    node.catalog.clear_seen()?;
    let n = node.catalog.last_pass()?.map_or(1, |(n, _)| n + 1);
    let rec = PassRecord {
        kind: kind.name().into(),
        source: source.into(),
        destination: dest.into(),
        started: unix_now(),
        runs: 1,
        ..Default::default()
    };
    node.catalog.put_pass(n, &rec)?;
    Ok((n, rec))
}

/// Move: ingest (marking every listed key seen by the pass) and drain together; the
/// counts go into the pass record.
async fn move_phase(
    s: &Settings,
    node: &Node,
    source: &str,
    dest: &str,
    number: u64,
    rec: &mut PassRecord,
    monitor: &Arc<Monitor>,
) -> Result<MoveOutcome> {
    let mut s = s.clone();
    s.sync_pass = Some(number);
    // A new pass lists from the first key; a resumed one resumes its own listing.
    s.fresh_listing = rec.runs == 1;
    let moved = migrate::move_through(&s, node, source, dest, monitor.clone()).await?;
    for (i, p) in moved.passes.iter().enumerate() {
        let (ing, dr) = (&p.ingest.summary, &p.drain.summary);
        if i == 0 {
            // Unchanged: this run's listing, less what earlier runs of the pass moved.
            let moved = rec.new + rec.changed;
            let moved_bytes = rec.bytes_new + rec.bytes_changed;
            rec.unchanged = ing.unchanged.saturating_sub(moved);
            rec.bytes_unchanged = ing
                .bytes_listed
                .saturating_sub(ing.changes.bytes_new + ing.changes.bytes_changed)
                .saturating_sub(moved_bytes);
            rec.new += ing.changes.new;
            rec.bytes_new += ing.changes.bytes_new;
            rec.changed += ing.changes.changed;
            rec.bytes_changed += ing.changes.bytes_changed;
            rec.listing_errors += ing.listing_errors;
            rec.vanished += ing.vanished;
            rec.listing_complete = ing.listing_complete;
            if ing.listing_complete {
                rec.listing_secs = ing.listing_secs;
                rec.listed = Some(unix_now());
            }
        }
        rec.failed += ing.failed.saturating_sub(ing.listing_errors) + dr.failed;
    }
    node.catalog.put_pass(number, rec)?;
    Ok(moved)
}

/// Delete: only after a complete listing without errors (and for a resumed pass, its
/// errors in earlier runs count too).
async fn delete_phase(
    s: &Settings,
    node: &Node,
    dest: &str,
    rec: &mut PassRecord,
    opts: &DeleteOptions,
) -> Result<Option<Deletions>> {
    if !rec.listing_complete || rec.listing_errors > 0 {
        rec.deletions = match rec.listing_errors {
            0 => "skipped: the listing did not complete, so nothing is known to be gone".into(),
            n => format!("skipped: the listing had {n} errors, so nothing is known to be gone"),
        };
        return Ok(None);
    }
    let d = open_destination(dest, &s.dest_options(node, dest)?).await?;
    let (number, base) = (opts.pass, rec.clone());
    let counted = |d: &Deletions| {
        let mut r = base.clone();
        r.deleted += d.deleted + d.forgotten;
        r.bytes_deleted += d.bytes_deleted;
        r.kept_foreign += d.kept_foreign;
        node.catalog.put_pass(number, &r)
    };
    let out = reconcile::run(node, d, opts, &counted).await?;
    rec.deleted += out.deleted + out.forgotten;
    rec.bytes_deleted += out.bytes_deleted;
    rec.kept_foreign += out.kept_foreign;
    rec.failed += out.failed.len() as u64;
    rec.deletes_pending = out.pending() - out.failed.len() as u64;
    rec.deletions = out.outcome.clone();
    Ok(Some(out))
}

/// Finish: the pass's outcome, end and length, recorded.
fn finish(node: &Node, number: u64, rec: &mut PassRecord, moved: &MoveOutcome) -> Result<()> {
    let now = unix_now();
    rec.finished = Some(now);
    rec.outcome = Some(if !rec.listing_complete {
        "the listing did not complete: run the pass again".into()
    } else if rec.listing_errors > 0 {
        format!("the listing had {} errors", rec.listing_errors)
    } else if !moved.complete() || rec.failed > 0 {
        format!("{} objects failed", rec.failed)
    } else if rec.deletes_pending > 0 {
        format!(
            "{} objects gone from the source are still at the destination: deletions {}",
            rec.deletes_pending, rec.deletions
        )
    } else {
        "ok".into()
    });
    // One walk of the catalog per pass, for the lag shown until the next pass ends.
    let report = crate::report::build(node)?;
    let lag = crate::passes::Lag::of(&report, Some(rec));
    (rec.lag_objects, rec.lag_bytes) = (lag.objects, lag.bytes);
    node.catalog.put_pass(number, rec)
}

/// What a cutover proved.
#[derive(Debug)]
pub struct CutoverOutcome {
    pub pass: PassOutcome,
    pub verify: VerifyReport,
    pub report: crate::report::Report,
    pub certificate: Certificate,
    /// Where the certificate was written.
    pub written: Vec<String>,
}

impl CutoverOutcome {
    pub fn done(&self) -> bool {
        self.certificate.done
    }
}

/// The cutover certificate (JSON, [`CERTIFICATE_VERSION`]). With a fleet key it also
/// carries `mac` ([`crate::fleet_key`], [`crate::fleet_key::CTX_CERTIFICATE`]).
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    pub certificate_version: u32,
    /// Source and destination were identical when the certificate was written.
    pub done: bool,
    pub verdict: String,
    /// RFC 3339, UTC, and Unix seconds.
    pub time: String,
    pub unix: u64,
    pub appliance_id: String,
    pub source: String,
    pub destination: String,
    /// The pass that was the cutover.
    pub pass: u64,
    pub objects: u64,
    pub bytes: u64,
    pub digest: Digest,
    /// Content compared by download (`--full`), or presence and size.
    pub verified_full: bool,
    /// Every pass of the move, oldest first.
    pub passes: Vec<(u64, PassRecord)>,
}

/// A digest over the sorted list of objects.
#[derive(Debug, Clone, Serialize)]
pub struct Digest {
    pub algorithm: String,
    /// What the digest is taken over, for anyone who computes it independently.
    pub over: String,
    pub value: String,
}

/// How the digest's lines are built.
pub const DIGEST_LINES: &str = "one line per object in ascending order of the key's bytes: lowercase hex of the key's bytes, a space, the size in bytes in decimal, a space, the lowercase hex BLAKE3 (unkeyed) of the content, a newline";

/// `barge cutover`: the final pass, a verify of both sides in mirror mode, the verdict
/// and the certificate.
pub async fn cutover(
    s: &Settings,
    node: &Node,
    source: &str,
    dest: &str,
    o: &CutoverOptions,
    monitor: Arc<Monitor>,
) -> Result<CutoverOutcome> {
    let del = |pass| DeleteOptions {
        pass,
        max_delete: o.max_delete,
        max_total: o.max_delete_total,
        keep: false,
    };
    let pass = run_pass(s, node, source, dest, Kind::Cutover, &del, &monitor).await?;
    show(node, &monitor, "verifying")?;
    let d = open_destination(dest, &s.dest_options(node, dest)?).await?;
    let src = open_source(source, &s.source).await?;
    let vo = verify::VerifyOptions {
        full: o.full,
        mirror: true,
        shard: s.shard.clone(),
    };
    let verify = verify::run(node, d.clone(), Some(src), &vo).await?;
    let report = crate::report::build(node)?;
    let certificate = certify(node, source, dest, &pass, &verify, &report)?;
    let key = match &s.shard {
        Some(sh) => format!(
            ".barge/{}/cutover-certificate-shard-{}.json",
            sh.plan_id, sh.index
        ),
        None => CERTIFICATE_KEY.to_string(),
    };
    let fleet_key = s.fleet_key.as_ref();
    let to = o.publish.then_some((&d, key));
    let written = write_certificate(node, &certificate, fleet_key, to).await?;
    if let Some(shard) = &s.shard {
        crate::fleet::publish(node, shard, &d, fleet_key).await?;
    }
    show(node, &monitor, "finished")?;
    Ok(CutoverOutcome {
        pass,
        verify,
        report,
        certificate,
        written,
    })
}

/// The verdict and the digest over every object in the catalog.
fn certify(
    node: &Node,
    source: &str,
    dest: &str,
    pass: &PassOutcome,
    verify: &VerifyReport,
    report: &crate::report::Report,
) -> Result<Certificate> {
    let crate::report::CatalogDigest {
        objects,
        bytes,
        unhashed,
        value,
    } = crate::report::digest(&node.catalog)?;
    let why_not = if !pass.complete() {
        Some(format!(
            "the cutover pass did not finish cleanly: {}",
            pass.record.outcome.as_deref().unwrap_or("interrupted")
        ))
    } else if !verify.ok() {
        Some(format!(
            "source and destination differ: {} missing, {} extra, {} differing, {} only at the source, {} changed at the source, {} gone from the source",
            verify.missing.len(),
            verify.extra.len(),
            verify.differing.len(),
            verify.source_only.len(),
            verify.changed_at_source.len(),
            verify.gone_at_source.len()
        ))
    } else if !report.done {
        Some(report.verdict.clone())
    } else if unhashed > 0 {
        Some(format!("{unhashed} objects have no content hash"))
    } else {
        None
    };
    let unix = unix_now();
    Ok(Certificate {
        certificate_version: CERTIFICATE_VERSION,
        done: why_not.is_none(),
        verdict: match &why_not {
            None => format!(
                "DONE: source and destination are identical, {objects} objects, {bytes} bytes"
            ),
            Some(why) => format!("NOT DONE: {why}"),
        },
        time: aws_smithy_types::DateTime::from_secs(unix as i64)
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default(),
        unix,
        appliance_id: hex::encode(node.appliance_id),
        source: source.into(),
        destination: dest.into(),
        pass: pass.number,
        objects,
        bytes,
        digest: Digest {
            algorithm: "BLAKE3".into(),
            over: DIGEST_LINES.into(),
            value,
        },
        verified_full: verify.full,
        passes: node.catalog.passes()?,
    })
}

/// Writes the certificate, with a MAC under the fleet key when there is one, into the
/// state directory (file and directory fsynced) and, when asked, at the destination.
async fn write_certificate(
    node: &Node,
    c: &Certificate,
    fleet_key: Option<&crate::fleet_key::FleetKey>,
    dest: Option<(&Arc<dyn crate::backend::Destination>, String)>,
) -> Result<Vec<String>> {
    let ctx = crate::fleet_key::CTX_CERTIFICATE;
    let json = crate::fleet_key::FleetKey::sign(fleet_key, ctx, "the cutover certificate", c)?;
    let path: PathBuf = node.state_dir.join(CERTIFICATE_FILE);
    crate::ship::seal::write_synced(&path, &json, 0o644)?;
    let mut written = vec![path.display().to_string()];
    if let Some((d, key)) = dest {
        crate::backend::put_document(d.as_ref(), &key, json, c.unix).await?;
        written.push(format!("{}/{key}", d.url()));
    }
    Ok(written)
}

//! One stage each: ingest, drain, verify, report, fsck and reclaim, as the commands of
//! the same names run them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::{Settings, Timed};
use crate::backend::{open_destination, open_source};
use crate::drain::{self, DrainOptions, DrainSummary};
use crate::error::{Error, Result};
use crate::ingest::{self, IngestOptions, IngestSummary};
use crate::inventory::InventorySource;
use crate::monitor::Monitor;
use crate::node::Node;
use crate::pending::PendingSource;
use crate::report::{self, Report};
use crate::staging::reclaim::{self, ReclaimReport};
use crate::staging::recover::RecoveryReport;
use crate::verify::{self, VerifyReport};

/// What `barge list` found: the source as ingest would list it, nothing stored.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ListSummary {
    pub objects: u64,
    pub bytes: u64,
    /// Key ranges the listing was split into.
    pub ranges: usize,
    /// Entries that could not be listed.
    pub errors: u64,
    /// Entries that are not objects (a directory's symlinks, sockets, devices).
    pub skipped: u64,
}

/// Lists `source` the way ingest does (key ranges, `--list-parallel` at once), counting
/// objects and bytes; each key goes to `keys` if given. Needs no state directory.
pub async fn list(
    s: &Settings,
    source: &str,
    mut keys: Option<&mut (dyn std::io::Write + Send)>,
) -> Result<Timed<ListSummary>> {
    let src = open_source(source, &s.source).await?;
    Timed::of(async move {
        let (tx, mut rx) = mpsc::channel(crate::backend::ranges::LISTED_IN_FLIGHT);
        let lister = async move { src.list_resumable(tx, &Default::default()).await };
        let counter = async {
            let mut sum = ListSummary::default();
            let mut ranges = std::collections::BTreeSet::new();
            while let Some(item) = rx.recv().await {
                match item.refuse_reserved() {
                    crate::backend::Listed::Object(m) => {
                        sum.objects += 1;
                        sum.bytes += m.size;
                        if let Some(w) = keys.as_deref_mut() {
                            let mut line = m.key.as_bytes().to_vec();
                            line.push(b'\n');
                            w.write_all(&line)
                                .map_err(|e| Error::io("writing keys to", "stdout", e))?;
                        }
                    }
                    crate::backend::Listed::Error { .. } => sum.errors += 1,
                    crate::backend::Listed::Skipped { .. } => sum.skipped += 1,
                    crate::backend::Listed::Mark { range, .. }
                    | crate::backend::Listed::Range { range, .. } => {
                        ranges.insert(range);
                    }
                }
            }
            sum.ranges = ranges.len().max(1);
            Ok::<_, Error>(sum)
        };
        let (listed, sum) = tokio::join!(lister, counter);
        listed?;
        sum
    })
    .await
}

/// Lists `source` into the catalog and stages what is new or changed. With `notify`,
/// each staged object is handed there (a drain following the ingest).
pub async fn ingest(
    s: &Settings,
    node: &Node,
    source: &str,
    notify: Option<crate::drain::Feed>,
    monitor: Arc<Monitor>,
) -> Result<Timed<IngestSummary>> {
    s.bind_shard(node)?;
    s.refuse_overlaps(node, "source", source)?;
    let mut src = open_source(source, &s.source).await?;
    if let Some(manifest) = &s.inventory {
        let scratch = node.state_dir.join("scratch").join("inventory");
        let inv = InventorySource::new(src, source, manifest, &s.source, scratch).await?;
        src = Arc::new(inv);
    }
    let mut keeps_left_out = false;
    if s.resume_listing_only {
        let last = node.catalog.listing_mark()?;
        if last.is_some_and(|m| m.complete && m.source == src.url()) {
            tracing::info!(
                "the last listing of {} was complete: fetching what the catalog still lists as to fetch, without listing again (--resume-listing-only)",
                src.url()
            );
            src = Arc::new(PendingSource::new(src, node.catalog.clone()));
            keeps_left_out = true;
        }
    }
    let mut opts = IngestOptions {
        drives: s.staging.clone(),
        notify,
        monitor,
        filter: s.filter.clone(),
        pass: s.sync_pass,
        fresh_listing: s.fresh_listing,
        shard: s.shard.clone(),
        keeps_left_out,
        ..Default::default()
    };
    if let Some(c) = s.concurrency {
        opts.concurrency = c;
    }
    Timed::of(ingest::run(node, src, &opts)).await
}

/// Writes staged objects to `dest`. With `follow`, also the objects an ingest running
/// beside it announces, until it closes the channel.
pub async fn drain(
    s: &Settings,
    node: &Node,
    dest: &str,
    follow: Option<crate::drain::Follow>,
    monitor: Arc<Monitor>,
) -> Result<Timed<DrainSummary>> {
    s.bind_shard(node)?;
    s.refuse_overlaps(node, "destination", dest)?;
    let d = open_destination(dest, &s.dest_options(node, dest)?).await?;
    let mut opts = DrainOptions {
        monitor,
        ..Default::default()
    };
    if let Some(c) = s.concurrency {
        opts.concurrency = c;
    }
    Timed::of(drain::run_following(node, d, &opts, follow)).await
}

/// Compares `dest` with the catalog (and with a listing of `source`, when given);
/// `full` downloads everything and compares content hashes.
pub async fn verify(
    s: &Settings,
    node: &Node,
    dest: &str,
    source: Option<&str>,
    full: bool,
) -> Result<VerifyReport> {
    s.bind_shard(node)?;
    let d = open_destination(dest, &s.dest_options(node, dest)?).await?;
    let src = match source {
        Some(u) => Some(open_source(u, &s.source).await?),
        None => None,
    };
    let o = verify::VerifyOptions {
        full,
        mirror: false,
        shard: s.shard.clone(),
    };
    let r = verify::run(node, d.clone(), src, &o).await?;
    if let Some(shard) = &s.shard {
        crate::fleet::publish(node, shard, &d, s.fleet_key.as_ref()).await?;
    }
    Ok(r)
}

/// A report and the files written beside it.
#[derive(Debug)]
pub struct ReportOutcome {
    /// Totals, failures and the verdict.
    pub report: Report,
    /// Where the throughput chart was written (None: no samples yet).
    pub chart: Option<PathBuf>,
}

/// Builds the report; writes per-object failures as CSV to `csv` when given, and the
/// throughput chart to `chart` (default `<state>/report.svg`) when there are samples.
pub fn report(node: &Node, csv: Option<&Path>, chart: Option<&Path>) -> Result<ReportOutcome> {
    let r = report::build(node)?;
    if let Some(p) = csv {
        std::fs::write(p, r.failures_csv())
            .map_err(|e| Error::io("writing the failures CSV", p, e))?;
    }
    let mut written = None;
    if let Some(svg) = report::chart_svg(&node.catalog.samples()?) {
        let p = chart.map_or_else(|| node.state_dir.join("report.svg"), Path::to_path_buf);
        std::fs::write(&p, svg).map_err(|e| Error::io("writing the report chart", &p, e))?;
        written = Some(p);
    }
    Ok(ReportOutcome {
        report: r,
        chart: written,
    })
}

/// What `fsck` did.
#[derive(Debug, Serialize)]
pub struct FsckOutcome {
    /// Open segments resealed, orphans removed.
    pub fsck: RecoveryReport,
    /// Segments no pending object needs, removed.
    pub reclaim: ReclaimReport,
    /// The catalog's size on disk before and after its compaction.
    pub catalog_bytes: (u64, u64),
}

/// Seals segments a crash left open, removes staging files the catalog does not know,
/// reclaims segments no object still to drain needs, then compacts the catalog.
pub fn fsck(node: &Node) -> Result<FsckOutcome> {
    let drives = node.drive_paths(&[]);
    let fsck = node.recover_staging(&drives)?;
    let reclaim = reclaim::reclaim(&node.catalog)?;
    let before = node.catalog.disk_bytes()?;
    node.catalog.compact()?;
    let catalog_bytes = (before, node.catalog.disk_bytes()?);
    Ok(FsckOutcome {
        fsck,
        reclaim,
        catalog_bytes,
    })
}

//! Stage 4a: an independent pass over the destination against the catalog and, when
//! the source is given, over the source against the catalog: an object the source has
//! and the catalog does not, or one that changed at the source since it was staged, is
//! not "done" however well the destination matches the catalog.
//!
//! Cheap mode compares presence and size. Full mode downloads every object and compares
//! the BLAKE3 of its content with the catalog's, marking matches as verified.

use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backend::{Destination, Listed, Source};
use crate::catalog::{Catalog, ObjectState, RunRecord, unix_now};
use crate::error::{Error, Result};
use crate::listing::{self, SortedListing};
use crate::node::Node;
use crate::object::{ObjectKey, ObjectMeta};
use crate::plan::Shard;

/// Concurrent downloads in full mode.
pub const VERIFY_CONCURRENCY: usize = 8;

/// The outcome of `barge verify`.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub full: bool,
    pub expected: u64,
    pub present: u64,
    pub matched: u64,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    pub differing: Vec<(String, String)>,
    /// Objects the source listing returned (0 when no source was given).
    pub source_listed: u64,
    /// At the source, unknown to the catalog (never ingested).
    pub source_only: Vec<String>,
    /// At the source with another size or version than the catalog's (changed since it
    /// was staged): the destination holds an old copy.
    pub changed_at_source: Vec<String>,
    /// In the catalog and absent from the source listing (deleted at the source since).
    pub gone_at_source: Vec<String>,
    /// Written through the gateway and at the destination with their size (counted in
    /// `expected`, `present` and `matched` too; the gateway's MD5 is not re-read).
    pub gateway_written: u64,
    /// Keys the gateway wrote or deleted that the source still lists: the application's,
    /// not differences.
    pub gateway_owned_at_source: u64,
    /// The destination must mirror the source (a cutover): an object gone from the
    /// source is a difference too. Otherwise a move copies and does not mirror deletions.
    pub mirror: bool,
}

impl VerifyReport {
    /// Adds the counts and differences of another part of the same run.
    fn absorb(&mut self, o: VerifyReport) {
        self.expected += o.expected;
        self.present += o.present;
        self.matched += o.matched;
        self.missing.extend(o.missing);
        self.extra.extend(o.extra);
        self.differing.extend(o.differing);
        self.source_only.extend(o.source_only);
        self.changed_at_source.extend(o.changed_at_source);
        self.gone_at_source.extend(o.gone_at_source);
        self.gateway_written += o.gateway_written;
        self.gateway_owned_at_source += o.gateway_owned_at_source;
    }

    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.differing.is_empty()
            && self.source_only.is_empty()
            && self.changed_at_source.is_empty()
            && (!self.mirror || self.gone_at_source.is_empty())
    }
}

/// Reads an object back and hashes it, at most `size` bytes (what both listings say it
/// holds) within [`crate::backend::get_deadline`] of it: a destination that sends more,
/// or never ends a body, fails this object instead of holding verify.
async fn hash_of(dest: &dyn Destination, key: &ObjectKey, size: u64) -> Result<(u64, [u8; 32])> {
    let what = format!("object {key}: reading back from the destination");
    let mut r = crate::backend::Bounded::new(dest.get(key).await?, size, what);
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r
            .read(&mut buf)
            .await
            .map_err(|e| Error::object(key, format!("reading back from the destination: {e}")))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((n, *h.finalize().as_bytes()))
}

/// Listed objects queued between a store's lister and its table.
const LIST_QUEUE: usize = 4096;

/// Objects queued for full mode's downloads while the merge goes on.
const HASH_QUEUE: usize = 1024;

/// Lists a store into a sorted table on disk. A listing error on one object goes to
/// `errors` (prefixed); an error of the listing itself ends the run.
#[allow(clippy::too_many_arguments)]
async fn spill(
    node: &Node,
    name: &str,
    what: &str,
    list: impl FnOnce(mpsc::Sender<Listed>) -> JoinHandle<Result<()>>,
    shard: Option<&Shard>,
    errors: &mut Vec<(String, String)>,
    prefix: &str,
) -> Result<SortedListing> {
    let mut table = SortedListing::create(&node.state_dir, name)?;
    let (tx, rx) = mpsc::channel(LIST_QUEUE);
    let lister = list(tx);
    // The last ingest's filter: what it left out is neither missing nor extra; nor is
    // what lies outside this node's shard.
    let filter = match crate::filter::recorded(&node.catalog)? {
        Some(spec) => Some(crate::filter::Filter::new(&spec)?),
        None => None,
    };
    let keep = |m: &ObjectMeta| {
        shard.is_none_or(|s| s.contains(&m.key))
            && filter.as_ref().is_none_or(|f| {
                f.admits(
                    &String::from_utf8_lossy(m.key.as_bytes()),
                    m.size,
                    m.modified,
                )
            })
    };
    table
        .fill(rx, &keep, |k, r| {
            if shard.is_none_or(|s| s.contains(&k)) {
                errors.push((k.to_string(), format!("{prefix}{r}")))
            }
        })
        .await?;
    lister
        .await
        .map_err(|e| Error::task(format!("verify: {what} listing"), e))??;
    Ok(table)
}

/// Lists the destination (and the source, if given) and checks them against every
/// object in the catalog. The listings go to sorted tables on disk and are walked beside
/// the catalog's own key order (a merge), and full mode's downloads are fed as the merge
/// finds them: memory does not grow with the number of objects.
/// How a verify compares.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Download everything and compare content hashes.
    pub full: bool,
    /// See [`VerifyReport::mirror`].
    pub mirror: bool,
    /// Compare only this shard's key range (of a plan over several nodes).
    pub shard: Option<Shard>,
}

pub async fn run(
    node: &Node,
    dest: Arc<dyn Destination>,
    source: Option<Arc<dyn Source>>,
    o: &VerifyOptions,
) -> Result<VerifyReport> {
    let (full, mirror, shard) = (o.full, o.mirror, o.shard.as_ref());
    let id = node.catalog.start_run(&RunRecord {
        command: if full { "verify --full" } else { "verify" }.into(),
        destination: Some(dest.url()),
        started: unix_now(),
        ..Default::default()
    })?;
    let mut report = VerifyReport {
        full,
        mirror,
        ..Default::default()
    };
    // List: each store into a sorted table.
    let d2 = dest.clone();
    let at_dest = spill(
        node,
        "verify-destination",
        "destination",
        |tx| tokio::spawn(async move { d2.list(tx).await }),
        shard,
        &mut report.differing,
        "",
    )
    .await?;
    let at_source = match source {
        Some(s) => {
            // A shard lists only its range, where the source can list ranges.
            let from = shard.map(|sh| sh.list_from(s.as_ref()));
            let list = |tx| {
                tokio::spawn(async move {
                    match from {
                        Some(from) => s.list_resumable(tx, &from).await,
                        None => s.list(tx).await,
                    }
                })
            };
            Some(
                spill(
                    node,
                    "verify-source",
                    "source",
                    list,
                    shard,
                    &mut report.differing,
                    "at the source: ",
                )
                .await?,
            )
        }
        None => None,
    };
    report.source_listed = at_source.as_ref().map_or(0, |t| t.len());
    // Merge with the catalog on the blocking pool; full mode downloads meanwhile.
    let (tx, rx) = mpsc::channel(HASH_QUEUE);
    let catalog = node.catalog.clone();
    let merge = tokio::task::spawn_blocking(move || {
        let send = |item: ToHash| tx.blocking_send(item).is_ok();
        compare_catalog(&catalog, &at_dest, at_source.as_ref(), full, send)
    });
    compare_contents(node, &dest, rx, &mut report).await?;
    let merged = merge
        .await
        .map_err(|e| Error::task("verify: comparing with the catalog", e))??;
    report.absorb(merged);
    report.missing.sort();
    report.differing.sort();
    report.extra.sort();
    report.source_only.sort();
    report.changed_at_source.sort();
    report.gone_at_source.sort();
    record_run(node, id, &report)?;
    Ok(report)
}

/// An object whose content full mode downloads: its key, the catalog's BLAKE3, whether
/// the catalog has it at the destination (drained or verified), and its size.
type ToHash = (ObjectKey, Option<[u8; 32]>, bool, u64);

/// Walks the catalog in key order beside the destination's and the source's sorted
/// listings: a listed key below the catalog's next one is unknown to the catalog
/// (extra at the destination, or only at the source). In full mode every object present
/// with the right size goes to `hash` (which returns false once nobody downloads any
/// more). Returns the counts and the differences found.
fn compare_catalog(
    catalog: &Catalog,
    at_dest: &SortedListing,
    at_source: Option<&SortedListing>,
    full: bool,
    mut hash: impl FnMut(ToHash) -> bool,
) -> Result<VerifyReport> {
    let mut r = VerifyReport::default();
    let mut failed: Option<Error> = None;
    let mut dest_it = at_dest.iter()?.peekable();
    let mut src_it = match at_source {
        Some(t) => Some(t.iter()?.peekable()),
        None => None,
    };
    for item in catalog.objects()? {
        let (key, rec) = item?;
        if let Some(it) = src_it.as_mut() {
            let found = listing::seek(it, &key, |k, _| {
                keep_err(&mut failed, source_only(catalog, &mut r, &k));
            })?;
            match found {
                // Absent: deleted at the source since (a difference only in mirror mode).
                None => r.gone_at_source.push(key.to_string()),
                Some(e) if e.size != rec.size || e.version != rec.version => {
                    r.changed_at_source.push(key.to_string());
                }
                Some(_) => {}
            }
        }
        r.expected += 1;
        match listing::seek(&mut dest_it, &key, |k, e| {
            keep_err(&mut failed, dest_only(catalog, &mut r, &k, e.size));
        })? {
            None => r.missing.push(key.to_string()),
            Some(e) if e.size != rec.size => {
                r.present += 1;
                r.differing.push((
                    key.to_string(),
                    format!("size {} at destination, {} at source", e.size, rec.size),
                ));
            }
            Some(_) => {
                r.present += 1;
                if !full {
                    r.matched += 1;
                } else if !hash((key, rec.blake3, rec.state.is_at_destination(), rec.size)) {
                    return Err(Error::task("verify", "the downloads stopped"));
                }
            }
        }
    }
    for item in dest_it {
        let (k, e) = item?;
        dest_only(catalog, &mut r, &k, e.size)?;
    }
    for item in src_it.into_iter().flatten() {
        source_only(catalog, &mut r, &item?.0)?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    missing_gateway_writes(catalog, at_dest, &mut r)?;
    Ok(r)
}

/// Keeps the first error of a step that cannot return one.
fn keep_err(first: &mut Option<Error>, r: Result<()>) {
    if let Err(e) = r {
        first.get_or_insert(e);
    }
}

/// A source key the catalog does not hold: only at the source, unless the gateway owns it.
fn source_only(catalog: &Catalog, r: &mut VerifyReport, key: &ObjectKey) -> Result<()> {
    match catalog.gateway_record(key)? {
        Some(_) => r.gateway_owned_at_source += 1,
        None => r.source_only.push(key.to_string()),
    }
    Ok(())
}

/// A destination object the catalog does not hold: expected when the gateway wrote it
/// (with that size), else extra.
fn dest_only(catalog: &Catalog, r: &mut VerifyReport, key: &ObjectKey, size: u64) -> Result<()> {
    use crate::catalog::gateway::GatewayRecord;
    match catalog.gateway_record(key)? {
        Some(GatewayRecord::Written(w)) if w.size == size => {
            r.expected += 1;
            r.present += 1;
            r.matched += 1;
            r.gateway_written += 1;
        }
        Some(GatewayRecord::Written(w)) => {
            r.expected += 1;
            r.present += 1;
            r.differing.push((
                key.to_string(),
                format!(
                    "size {size} at destination, {} written through the gateway",
                    w.size
                ),
            ));
        }
        _ => extra(r, key),
    }
    Ok(())
}

/// Objects written through the gateway that the destination's listing lacks: missing.
fn missing_gateway_writes(
    catalog: &Catalog,
    at_dest: &SortedListing,
    r: &mut VerifyReport,
) -> Result<()> {
    use crate::catalog::gateway::GatewayRecord;
    let mut dest_it = at_dest.iter()?.peekable();
    for item in catalog.gateway_records_from(b"")? {
        let (key, rec) = item?;
        if let GatewayRecord::Written(_) = rec
            && listing::seek(&mut dest_it, &key, |_, _| {})?.is_none()
        {
            r.expected += 1;
            r.missing.push(key.to_string());
        }
    }
    Ok(())
}

/// Where barge keeps its own files at a destination: objects there are never part of a
/// move (every listing refuses them), so neither extra nor missing.
pub use crate::backend::RESERVED_PREFIX;

/// A destination object the catalog does not know: extra, unless barge's own (under
/// [`RESERVED_PREFIX`], or named like a directory destination's temporary file: a
/// catalog object of such a name is matched before it gets here).
fn extra(r: &mut VerifyReport, key: &ObjectKey) {
    let name = key
        .as_bytes()
        .rsplit(|&b| b == b'/')
        .next()
        .unwrap_or_default();
    if !key.as_bytes().starts_with(RESERVED_PREFIX.as_bytes())
        && !crate::backend::local::is_tmp_name(name)
    {
        r.extra.push(key.to_string());
    }
}

/// Full mode: downloads the objects as the merge sends them, compares the BLAKE3 of
/// their content with the catalog's and marks drained objects that match as verified.
async fn compare_contents(
    node: &Node,
    dest: &Arc<dyn Destination>,
    rx: mpsc::Receiver<ToHash>,
    report: &mut VerifyReport,
) -> Result<()> {
    use futures::StreamExt;
    let queued = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut results = std::pin::pin!(
        queued
            .map(|(key, want, drained, size)| {
                let dest = dest.clone();
                async move {
                    let got = hash_of(dest.as_ref(), &key, size).await;
                    (key, want, drained, got)
                }
            })
            .buffer_unordered(VERIFY_CONCURRENCY)
    );
    while let Some((key, want, drained, got)) = results.next().await {
        match got {
            Ok((_, h)) if Some(h) == want => {
                report.matched += 1;
                // Only a drained object becomes verified: a failed or re-staged one
                // keeps its state even if an older copy at the destination matches.
                if drained {
                    node.catalog.set_object_state(&key, ObjectState::Verified)?;
                }
            }
            Ok((_, h)) => report.differing.push((
                key.to_string(),
                format!(
                    "content BLAKE3 {} differs from the source's {}",
                    hex::encode(h),
                    want.map(hex::encode)
                        .unwrap_or_else(|| "(never staged)".into())
                ),
            )),
            Err(e) => report.differing.push((key.to_string(), e.to_string())),
        }
    }
    Ok(())
}

/// Records the run's counts and verdict in the catalog.
fn record_run(node: &Node, id: u64, report: &VerifyReport) -> Result<()> {
    node.catalog.finish_run(
        id,
        vec![
            ("expected".into(), report.expected),
            ("matched".into(), report.matched),
            ("missing".into(), report.missing.len() as u64),
            ("extra".into(), report.extra.len() as u64),
            ("differing".into(), report.differing.len() as u64),
            ("source_only".into(), report.source_only.len() as u64),
            (
                "changed_at_source".into(),
                report.changed_at_source.len() as u64,
            ),
            ("gone_at_source".into(), report.gone_at_source.len() as u64),
        ],
        if report.ok() {
            "ok".into()
        } else {
            "differences found".into()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Body, Deleted, Expect, Placed, Reader};

    /// A destination whose every object reads back as an endless run of bytes.
    struct Endless;

    #[async_trait::async_trait]
    impl Destination for Endless {
        fn url(&self) -> String {
            "endless://".into()
        }
        async fn put(&self, _: &ObjectMeta, _: Body) -> Result<Option<Placed>> {
            Ok(None)
        }
        async fn delete(&self, _: &ObjectKey, _: &Expect) -> Result<Deleted> {
            Ok(Deleted::Deleted)
        }
        async fn list(&self, _: mpsc::Sender<Listed>) -> Result<()> {
            Ok(())
        }
        async fn get(&self, _: &ObjectKey) -> Result<Reader> {
            Ok(Box::new(tokio::io::repeat(b'x')))
        }
        async fn cleanup(&self) -> Result<u64> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_read_back_longer_than_listed_fails_naming_the_object() {
        let e = hash_of(&Endless, &ObjectKey::from("k/never-ends"), 3 << 20)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("k/never-ends") && e.contains("more than the 3145728 bytes"),
            "{e}"
        );
    }
}

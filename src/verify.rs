//! Stage 4a: an independent pass over the destination against the catalog and, when
//! the source is given, over the source against the catalog: an object the source has
//! and the catalog does not, or one that changed at the source since it was staged, is
//! not "done" however well the destination matches the catalog.
//!
//! Cheap mode compares presence and size. Full mode downloads every object and compares
//! the BLAKE3 of its content with the catalog's, marking matches as verified.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::backend::{Destination, Listed, Source};
use crate::catalog::{ObjectState, RunRecord, unix_now};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::object::ObjectKey;

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
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.differing.is_empty()
            && self.source_only.is_empty()
            && self.changed_at_source.is_empty()
    }
}

async fn hash_of(dest: &dyn Destination, key: &ObjectKey) -> Result<(u64, [u8; 32])> {
    let mut r = dest.get(key).await?;
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

/// Lists the source into a map of key -> (size, version).
async fn list_source(
    source: Arc<dyn Source>,
    report: &mut VerifyReport,
) -> Result<HashMap<ObjectKey, (u64, String)>> {
    let (tx, mut rx) = mpsc::channel(4096);
    let s2 = source.clone();
    let lister = tokio::spawn(async move { s2.list(tx).await });
    let mut out = HashMap::new();
    while let Some(item) = rx.recv().await {
        match item {
            Listed::Object(m) => {
                out.insert(m.key, (m.size, m.version));
            }
            Listed::Error { key, reason } => report
                .differing
                .push((key.to_string(), format!("at the source: {reason}"))),
        }
    }
    lister
        .await
        .map_err(|e| Error::task("verify: source listing", e))??;
    report.source_listed = out.len() as u64;
    Ok(out)
}

/// Lists the destination (and the source, if given) and checks them against every
/// object in the catalog.
pub async fn run(
    node: &Node,
    dest: Arc<dyn Destination>,
    source: Option<Arc<dyn Source>>,
    full: bool,
) -> Result<VerifyReport> {
    let id = node.catalog.start_run(&RunRecord {
        command: if full { "verify --full" } else { "verify" }.into(),
        destination: Some(dest.url()),
        started: unix_now(),
        ..Default::default()
    })?;
    let mut report = VerifyReport {
        full,
        ..Default::default()
    };
    let mut at_dest = list_destination(dest.clone(), &mut report).await?;
    let mut at_source = match source {
        Some(s) => Some(list_source(s, &mut report).await?),
        None => None,
    };
    let to_hash = compare_catalog(node, &mut report, &mut at_dest, at_source.as_mut(), full)?;
    report.extra = at_dest.into_keys().map(|k| k.to_string()).collect();
    report.extra.sort();
    if let Some(src) = at_source {
        report.source_only = src.into_keys().map(|k| k.to_string()).collect();
        report.source_only.sort();
    }
    report.changed_at_source.sort();
    if full {
        compare_contents(node, &dest, to_hash, &mut report).await?;
    }
    report.missing.sort();
    report.differing.sort();
    record_run(node, id, &report)?;
    Ok(report)
}

/// Lists the destination into a map of key -> size.
async fn list_destination(
    dest: Arc<dyn Destination>,
    report: &mut VerifyReport,
) -> Result<HashMap<ObjectKey, u64>> {
    let (tx, mut rx) = mpsc::channel(4096);
    let d2 = dest.clone();
    let lister = tokio::spawn(async move { d2.list(tx).await });
    let mut at_dest: HashMap<ObjectKey, u64> = HashMap::new();
    while let Some(item) = rx.recv().await {
        match item {
            Listed::Object(m) => {
                at_dest.insert(m.key, m.size);
            }
            Listed::Error { key, reason } => report.differing.push((key.to_string(), reason)),
        }
    }
    lister
        .await
        .map_err(|e| Error::task("verify: destination listing", e))??;
    Ok(at_dest)
}

/// An object whose content full mode downloads: its key, the catalog's BLAKE3 and
/// whether the catalog has it at the destination (drained or verified).
type ToHash = (ObjectKey, Option<[u8; 32]>, bool);

/// Checks every catalog object against the listings, taking each one it finds out of
/// them (what is left is extra at the destination, or only at the source). Returns
/// the objects full mode must download.
fn compare_catalog(
    node: &Node,
    report: &mut VerifyReport,
    at_dest: &mut HashMap<ObjectKey, u64>,
    mut at_source: Option<&mut HashMap<ObjectKey, (u64, String)>>,
    full: bool,
) -> Result<Vec<ToHash>> {
    let mut to_hash = vec![];
    for item in node.catalog.objects()? {
        let (key, rec) = item?;
        if let Some(src) = at_source.as_mut() {
            match src.remove(&key) {
                // Deleted at the source since: the catalog still expects it (a move
                // copies, it does not mirror deletions).
                None => {}
                Some((size, version)) if size != rec.size || version != rec.version => {
                    report.changed_at_source.push(key.to_string())
                }
                Some(_) => {}
            }
        }
        report.expected += 1;
        match at_dest.remove(&key) {
            None => report.missing.push(key.to_string()),
            Some(size) if size != rec.size => {
                report.present += 1;
                report.differing.push((
                    key.to_string(),
                    format!("size {size} at destination, {} at source", rec.size),
                ));
            }
            Some(_) => {
                report.present += 1;
                if full {
                    to_hash.push((key, rec.blake3, rec.state.is_at_destination()));
                } else {
                    report.matched += 1;
                }
            }
        }
    }
    Ok(to_hash)
}

/// Full mode: downloads the objects, compares the BLAKE3 of their content with the
/// catalog's and marks drained objects that match as verified.
async fn compare_contents(
    node: &Node,
    dest: &Arc<dyn Destination>,
    to_hash: Vec<ToHash>,
    report: &mut VerifyReport,
) -> Result<()> {
    let results = futures::stream::iter(to_hash.into_iter().map(|(key, want, drained)| {
        let dest = dest.clone();
        async move {
            let got = hash_of(dest.as_ref(), &key).await;
            (key, want, drained, got)
        }
    }))
    .buffer_unordered(VERIFY_CONCURRENCY);
    use futures::StreamExt;
    let results: Vec<_> = results.collect().await;
    for (key, want, drained, got) in results {
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
        ],
        if report.ok() {
            "ok".into()
        } else {
            "differences found".into()
        },
    )
}

//! Stage 4a: an independent pass over the destination against the catalog.
//!
//! Cheap mode compares presence and size. Full mode downloads every object and compares
//! the BLAKE3 of its content with the catalog's, marking matches as verified.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::backend::{Destination, Listed};
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
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.differing.is_empty()
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

/// Lists the destination and checks it against every object in the catalog.
pub async fn run(node: &Node, dest: Arc<dyn Destination>, full: bool) -> Result<VerifyReport> {
    let id = node.catalog.start_run(&RunRecord {
        command: if full { "verify --full" } else { "verify" }.into(),
        destination: Some(dest.url()),
        started: unix_now(),
        ..Default::default()
    })?;
    let (tx, mut rx) = mpsc::channel(4096);
    let d2 = dest.clone();
    let lister = tokio::spawn(async move { d2.list(tx).await });
    let mut at_dest: HashMap<ObjectKey, u64> = HashMap::new();
    let mut report = VerifyReport {
        full,
        ..Default::default()
    };
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
        .map_err(|e| Error::Pipeline(format!("destination listing: {e}")))??;

    let mut to_hash = vec![];
    for item in node.catalog.objects()? {
        let (key, rec) = item?;
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
    report.extra = at_dest.into_keys().map(|k| k.to_string()).collect();
    report.extra.sort();

    if full {
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
    }
    report.missing.sort();
    report.differing.sort();
    node.catalog.finish_run(
        id,
        vec![
            ("expected".into(), report.expected),
            ("matched".into(), report.matched),
            ("missing".into(), report.missing.len() as u64),
            ("extra".into(), report.extra.len() as u64),
            ("differing".into(), report.differing.len() as u64),
        ],
        if report.ok() {
            "ok".into()
        } else {
            "differences found".into()
        },
    )?;
    Ok(report)
}

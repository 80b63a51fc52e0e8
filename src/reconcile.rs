//! Stage 5 of a sync pass: deletions. The pass's listing marked every key it returned
//! as seen by the pass (CF `seen`); once that listing is complete and without errors,
//! every catalog object it did not see is gone from the source. barge deletes the copy
//! it wrote at the destination and forgets the object.
//!
//! Only objects in the catalog are ever deleted (what barge wrote), never after an
//! incomplete listing (the caller decides), and never more than the limit: a pass that
//! would delete more deletes nothing and says so.
//!
//! ```text
//! catalog walk (objects not seen) ──(bounded)──> batch: mark Deleting, WAL fsync
//!   → DELETE at the destination, DELETE_CONCURRENCY at once → destination sync
//!   → forget the records (and their chunk references)
//! ```

use std::str::FromStr;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::backend::Destination;
use crate::catalog::{Catalog, ObjectRecord, ObjectState, RunRecord, unix_now};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::object::ObjectKey;

/// Objects marked `Deleting` with one WAL fsync before their deletes are sent.
pub const DELETE_BATCH: usize = 256;
/// Deletes in flight at the destination at once (each still under the endpoint's
/// adaptive window).
pub const DELETE_CONCURRENCY: usize = 16;
/// Keys of the objects to delete named in the outcome (all are in the catalog).
pub const KEYS_SHOWN: usize = 20;

/// `--max-delete`: how many objects one pass may delete, as a count or as a percentage
/// of the objects in the catalog (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum MaxDelete {
    Count(u64),
    Percent(f64),
}

impl Default for MaxDelete {
    /// 1%: a wrong prefix or a changed bucket policy must not wipe the destination.
    fn default() -> Self {
        MaxDelete::Percent(1.0)
    }
}

impl FromStr for MaxDelete {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Option {
            option: "--max-delete".into(),
            message: format!(
                "{s:?} is neither a count (\"500\") nor a percentage of the objects (\"1%\")"
            ),
        };
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(MaxDelete::Percent(p)),
                _ => Err(bad()),
            },
            None => s.trim().parse().map(MaxDelete::Count).map_err(|_| bad()),
        }
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl MaxDelete {
    /// The most objects a pass may delete when the catalog holds `objects`.
    pub fn limit(&self, objects: u64) -> u64 {
        match *self {
            MaxDelete::Count(n) => n,
            MaxDelete::Percent(p) => (objects as f64 * p / 100.0).ceil() as u64,
        }
    }
}

/// How a pass reconciles deletions.
#[derive(Debug, Clone)]
pub struct DeleteOptions {
    /// The pass whose listing decides what is gone.
    pub pass: u64,
    pub max_delete: MaxDelete,
    /// `--keep-deleted`: report what is gone, delete nothing.
    pub keep: bool,
}

/// What the deletion stage found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Deletions {
    /// Catalog objects the pass's listing did not see (gone from the source).
    pub gone: u64,
    pub bytes_gone: u64,
    /// The objects the catalog held when the limit was computed, and the limit.
    pub objects: u64,
    pub limit: u64,
    /// Deleted at the destination and forgotten.
    pub deleted: u64,
    pub bytes_deleted: u64,
    /// Forgotten without a delete: barge never wrote them (listed or failed only).
    pub forgotten: u64,
    /// Deletes that failed: (key, reason). They stay `Deleting` for the next pass.
    pub failed: Vec<(String, String)>,
    /// The first keys gone from the source.
    pub keys: Vec<String>,
    /// "none", "applied", "kept (--keep-deleted)" or "refused: ...".
    pub outcome: String,
}

impl Deletions {
    /// Objects gone from the source still at the destination after this stage.
    pub fn pending(&self) -> u64 {
        self.gone - self.deleted - self.forgotten
    }

    /// The stage deleted everything it found (or there was nothing).
    pub fn complete(&self) -> bool {
        self.pending() == 0
    }
}

/// Whether barge wrote a copy of this object at the destination at some point.
fn written(rec: &ObjectRecord) -> bool {
    rec.uploads > 0 || rec.state.is_at_destination() || rec.state == ObjectState::Deleting
}

/// Walks the catalog for the objects pass `pass` did not see, in key order; `each`
/// returns false to stop.
fn walk_gone(
    catalog: &Catalog,
    pass: u64,
    mut each: impl FnMut(ObjectKey, ObjectRecord) -> bool,
) -> Result<u64> {
    let mut objects = 0;
    for item in catalog.objects()? {
        let (key, rec) = item?;
        objects += 1;
        if !catalog.seen_in(&key, pass)? && !each(key, rec) {
            break;
        }
    }
    Ok(objects)
}

/// Counts what is gone (and how many objects the catalog holds), naming the first.
async fn count(catalog: Arc<Catalog>, pass: u64) -> Result<Deletions> {
    tokio::task::spawn_blocking(move || {
        let mut d = Deletions::default();
        d.objects = walk_gone(&catalog, pass, |key, rec| {
            d.gone += 1;
            d.bytes_gone += rec.size;
            if d.keys.len() < KEYS_SHOWN {
                d.keys.push(key.to_string());
            }
            true
        })?;
        Ok(d)
    })
    .await
    .map_err(|e| Error::task("counting deletions", e))?
}

/// Deletes at `dest` what pass `opts.pass` found gone from the source, within the limit.
/// `progress` sees the counts after every batch (the pass records them, so a crash
/// loses no count of what was done).
pub async fn run(
    node: &Node,
    dest: Arc<dyn Destination>,
    opts: &DeleteOptions,
    progress: &(dyn Fn(&Deletions) -> Result<()> + Sync),
) -> Result<Deletions> {
    let mut d = count(node.catalog.clone(), opts.pass).await?;
    d.limit = opts.max_delete.limit(d.objects);
    if d.gone == 0 {
        d.outcome = "none".into();
        return Ok(d);
    }
    if opts.keep {
        d.outcome = "kept (--keep-deleted)".into();
        return Ok(d);
    }
    if d.gone > d.limit {
        d.outcome = format!(
            "refused: {} objects are gone from the source, more than --max-delete {} allows ({} of {} objects); nothing was deleted. Check the source (a wrong prefix, a changed bucket policy), then raise --max-delete to let this pass delete them",
            d.gone, opts.max_delete, d.limit, d.objects
        );
        return Ok(d);
    }
    let run = node.catalog.start_run(&RunRecord {
        command: "delete".into(),
        destination: Some(dest.url()),
        started: unix_now(),
        ..Default::default()
    })?;
    apply(node, &dest, opts.pass, &mut d, progress).await?;
    d.outcome = match d.failed.len() {
        0 => "applied".into(),
        n => format!("{n} deletes failed; the next pass tries them again"),
    };
    node.catalog.finish_run(
        run,
        vec![
            ("deleted".into(), d.deleted),
            ("forgotten".into(), d.forgotten),
            ("failed".into(), d.failed.len() as u64),
        ],
        if d.failed.is_empty() {
            "ok".into()
        } else {
            d.outcome.clone()
        },
    )?;
    Ok(d)
}

/// Apply: walks the gone objects again (nothing was held in memory) and deletes them in
/// batches.
async fn apply(
    node: &Node,
    dest: &Arc<dyn Destination>,
    pass: u64,
    d: &mut Deletions,
    progress: &(dyn Fn(&Deletions) -> Result<()> + Sync),
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<(ObjectKey, ObjectRecord)>(DELETE_BATCH);
    let catalog = node.catalog.clone();
    let walker = tokio::task::spawn_blocking(move || {
        walk_gone(&catalog, pass, |k, r| tx.blocking_send((k, r)).is_ok())
    });
    let mut batch = Vec::with_capacity(DELETE_BATCH);
    loop {
        let more = rx.recv_many(&mut batch, DELETE_BATCH).await > 0;
        if !more {
            break;
        }
        delete_batch(node, dest, std::mem::take(&mut batch), d).await?;
        progress(d)?;
    }
    walker
        .await
        .map_err(|e| Error::task("walking deletions", e))??;
    Ok(())
}

/// One batch: marked `Deleting` (one WAL fsync), deleted at the destination, made
/// durable there, then forgotten. A crash anywhere leaves each object either untouched
/// or `Deleting`, and the next pass deletes it again (a delete of what is gone is Ok).
async fn delete_batch(
    node: &Node,
    dest: &Arc<dyn Destination>,
    batch: Vec<(ObjectKey, ObjectRecord)>,
    d: &mut Deletions,
) -> Result<()> {
    let mut to_delete = vec![];
    for (key, rec) in batch {
        if !written(&rec) {
            // Listed or failed only: nothing of it at the destination.
            if node.catalog.mark_deleting(&key, &rec)? {
                node.catalog.forget_deleted(&key)?;
                d.forgotten += 1;
            }
            continue;
        }
        if node.catalog.mark_deleting(&key, &rec)? {
            to_delete.push((key, rec.size));
        }
    }
    node.catalog.sync()?;
    let results: Vec<_> = futures::stream::iter(to_delete)
        .map(|(key, size)| async move {
            let res = dest.delete(&key).await;
            if res.is_ok() {
                crate::failpoint::point("sync.deleted");
            }
            (key, size, res)
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect()
        .await;
    if !dest.durable_on_put() {
        dest.sync().await?;
    }
    for (key, size, res) in results {
        match res {
            Ok(()) => {
                node.catalog.forget_deleted(&key)?;
                d.deleted += 1;
                d.bytes_deleted += size;
            }
            Err(e) => {
                tracing::warn!("object {key}: delete at the destination failed: {e}");
                d.failed.push((key.to_string(), e.to_string()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_delete_is_a_count_or_a_percentage_rounded_up() {
        assert_eq!("500".parse::<MaxDelete>().unwrap(), MaxDelete::Count(500));
        assert_eq!("1%".parse::<MaxDelete>().unwrap(), MaxDelete::Percent(1.0));
        assert_eq!(MaxDelete::Percent(1.0).limit(50), 1);
        assert_eq!(MaxDelete::Percent(1.0).limit(1000), 10);
        assert_eq!(MaxDelete::Percent(0.0).limit(1000), 0);
        assert_eq!(MaxDelete::Count(3).limit(1), 3);
        for bad in ["", "x", "-1", "150%", "1.5"] {
            let e = bad.parse::<MaxDelete>().unwrap_err().to_string();
            assert!(e.contains("--max-delete"), "{bad}: {e}");
        }
    }
}

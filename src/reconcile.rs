//! Stage 5 of a sync pass: deletions. The pass's listing marked every key it returned
//! as seen by the pass (CF `seen`); once that listing is complete and without errors,
//! every catalog object it did not see is gone from the source. barge deletes the copy
//! it wrote at the destination and forgets the object.
//!
//! Only objects in the catalog are ever deleted (what barge wrote), never after an
//! incomplete listing (the caller decides), and never more than the limits (one pass's,
//! and the move's total): a pass that would delete more deletes nothing and says so.
//! Deletes go by key, and a third party may have written its own object at a key since
//! barge did: the destination deletes only the object barge wrote (CF `placed` records
//! what the store answered for each write), and anything else at the key is kept,
//! counted and named, and forgotten by the catalog (it is no longer barge's).
//!
//! ```text
//! catalog walk (objects not seen) ──(bounded)──> batch: mark Deleting, WAL fsync
//!   → check + DELETE at the destination, DELETE_CONCURRENCY at once → destination sync
//!   → forget the records (and their chunk references)
//! ```

use std::str::FromStr;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::backend::{Deleted, Destination, Expect};
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
        Self::parse_as(s, "--max-delete")
    }
}

impl MaxDelete {
    /// Parses the value of `option` (`--max-delete`, `--max-delete-total`).
    pub fn parse_as(s: &str, option: &str) -> Result<Self> {
        let bad = || Error::Option {
            option: option.into(),
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
    /// `--max-delete-total`: how many objects the move's passes may delete together
    /// (a percentage: of the objects the move has held, those in the catalog and those
    /// deleted so far). None: no limit beyond each pass's.
    pub max_total: Option<MaxDelete>,
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
    /// Kept at the destination and forgotten: the key holds an object barge did not
    /// write (a third party's, written after barge's).
    pub kept_foreign: u64,
    /// The first of them: (key, why it is not barge's).
    pub kept_foreign_keys: Vec<(String, String)>,
    /// Objects the move's earlier deletions took (every pass's deleted and kept), and
    /// the move's limit (`--max-delete-total`; None: none).
    pub deleted_before: u64,
    pub total_limit: Option<u64>,
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
        self.gone - self.deleted - self.forgotten - self.kept_foreign
    }

    /// The stage deleted everything it found (or there was nothing).
    pub fn complete(&self) -> bool {
        self.pending() == 0
    }
}

/// Whether barge wrote a copy of this object at the destination at some point.
fn written(rec: &ObjectRecord, placed: bool) -> bool {
    placed || rec.uploads > 0 || rec.state.is_at_destination() || rec.state == ObjectState::Deleting
}

/// What the delete of `key` expects at the destination: what the store answered when
/// barge wrote it, or for an object written before that was recorded, its record's size
/// and, when the source's ETag was checked as the MD5 of this content, that MD5.
fn expectation(catalog: &Catalog, key: &ObjectKey, rec: &ObjectRecord) -> Result<Expect> {
    if let Some(l) = catalog.placed(key)? {
        return Ok(Expect::Written(l));
    }
    let tag = rec.version.trim_matches('"');
    let md5 = rec.checked.split('+').next() == Some("md5")
        && tag.len() == 32
        && tag.bytes().all(|b| b.is_ascii_hexdigit());
    Ok(Expect::Legacy {
        size: rec.size,
        md5: md5.then(|| tag.to_ascii_lowercase()),
    })
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
    if let Some(refused) = over_total(node, opts, &mut d)? {
        d.outcome = refused;
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
            ("kept_foreign".into(), d.kept_foreign),
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

/// `--max-delete-total`: what earlier deletions of the move took (the pass records,
/// this pass's own earlier runs included) and the move's limit, into `d`; the refusal
/// when this pass's deletions would pass it.
fn over_total(node: &Node, opts: &DeleteOptions, d: &mut Deletions) -> Result<Option<String>> {
    d.deleted_before = node
        .catalog
        .passes()?
        .iter()
        .map(|(_, p)| p.deleted + p.kept_foreign)
        .sum();
    let Some(total) = opts.max_total else {
        return Ok(None);
    };
    let limit = total.limit(d.objects + d.deleted_before);
    d.total_limit = Some(limit);
    if d.deleted_before + d.gone <= limit {
        return Ok(None);
    }
    Ok(Some(format!(
        "refused: {} objects are gone from the source and the move's passes have deleted {} already, more than --max-delete-total {total} allows ({limit} of the {} objects the move has held); nothing was deleted. Check the source, then raise --max-delete-total to let the move delete them",
        d.gone,
        d.deleted_before,
        d.objects + d.deleted_before
    )))
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
        let placed = node.catalog.placed(&key)?.is_some();
        if !written(&rec, placed) {
            // Listed or failed only: nothing of it at the destination.
            if node.catalog.mark_deleting(&key, &rec)? {
                node.catalog.forget_deleted(&key)?;
                d.forgotten += 1;
            }
            continue;
        }
        if node.catalog.mark_deleting(&key, &rec)? {
            let expect = expectation(&node.catalog, &key, &rec)?;
            to_delete.push((key, rec.size, expect));
        }
    }
    node.catalog.sync()?;
    let results: Vec<_> = futures::stream::iter(to_delete)
        .map(|(key, size, expect)| async move {
            // Under the key's fence: a key the gateway wrote or deleted meanwhile is the
            // application's, never deleted by a pass.
            let _fence = node.catalog.fence(&key).await;
            let res = match node.catalog.gateway_record(&key) {
                Ok(Some(_)) => Ok(Deleted::Kept(
                    "written or deleted through the gateway".into(),
                )),
                Ok(None) => dest.delete(&key, &expect).await,
                Err(e) => Err(e),
            };
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
            Ok(Deleted::Deleted) => {
                node.catalog.forget_deleted(&key)?;
                d.deleted += 1;
                d.bytes_deleted += size;
            }
            Ok(Deleted::Kept(why)) => {
                tracing::warn!(
                    "object {key}: kept at the destination, not the object barge wrote ({why}); forgotten"
                );
                node.catalog.forget_deleted(&key)?;
                d.kept_foreign += 1;
                if d.kept_foreign_keys.len() < KEYS_SHOWN {
                    d.kept_foreign_keys.push((key.to_string(), why));
                }
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
    fn an_object_written_before_format_5_is_expected_by_size_and_source_md5() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path(), true).unwrap();
        let key = ObjectKey::from("k");
        let md5 = "0123456789ABCDEF0123456789abcdef";
        let mut rec = ObjectRecord {
            size: 7,
            version: format!("\"{md5}\""),
            content_type: None,
            user_meta: vec![],
            blake3: None,
            chunks: vec![],
            state: ObjectState::Drained,
            checked: "md5+sha256".into(),
            uploads: 1,
            updated: 0,
        };
        let legacy = |md5: Option<&str>| Expect::Legacy {
            size: 7,
            md5: md5.map(str::to_string),
        };
        let lower = md5.to_ascii_lowercase();
        assert_eq!(expectation(&cat, &key, &rec).unwrap(), legacy(Some(&lower)));
        // A multipart source ETag, or one not checked as the content's MD5: size only.
        rec.checked = "md5-multipart".into();
        assert_eq!(expectation(&cat, &key, &rec).unwrap(), legacy(None));
        rec.checked = "unchecked: Swift large object".into();
        assert_eq!(expectation(&cat, &key, &rec).unwrap(), legacy(None));
        let l = crate::catalog::Landed {
            size: 7,
            etag: "e".into(),
        };
        cat.set_placed(&key, &l).unwrap();
        assert_eq!(expectation(&cat, &key, &rec).unwrap(), Expect::Written(l));
    }

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

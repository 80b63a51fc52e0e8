//! A listing spilled to disk in key order, so a pass over billions of listed objects
//! holds none of them in memory: `verify` lists the destination (and the source) into
//! one of these, then walks it beside the catalog's own sorted iteration (a merge).
//!
//! Each listing is a scratch RocksDB under `<state>/scratch/`, written without a WAL and
//! removed when dropped (and, after a crash, when the next listing of that name is made).
//! Stores list in their own order (a directory tree is walked per directory); the table
//! sorts by key bytes, the catalog's order.

use std::cmp::Ordering;
use std::iter::Peekable;
use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, Options, WriteBatch, WriteOptions};
use tokio::sync::mpsc;

use crate::backend::Listed;
use crate::error::{Error, Result};
use crate::object::ObjectKey;

/// Listed objects written to the table in one batch.
const SPILL_BATCH: usize = 4096;

/// Memtable bytes of one scratch table before it flushes to a sorted file. Small: a
/// memtable fills with the object count (a listing of 500,000 objects is ~30 MB) and
/// was a visible part of peak RSS at the end of a large migrate; more, smaller sorted
/// files cost the merge little.
const SCRATCH_MEMTABLE_BYTES: usize = 4 << 20;
/// Block cache of one scratch table (its blocks are read once, in order, by the merge).
const SCRATCH_CACHE_BYTES: usize = 2 << 20;

/// What a listing says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub size: u64,
    pub version: String,
}

/// A listing on disk in key order; removed when dropped.
pub struct SortedListing {
    db: Option<DB>,
    dir: PathBuf,
    len: u64,
}

impl SortedListing {
    /// An empty table at `<state>/scratch/<name>` (what a crashed run left there is
    /// removed first).
    pub fn create(state_dir: &Path, name: &str) -> Result<Self> {
        let dir = state_dir.join("scratch").join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing an old scratch listing", &dir, e)),
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("creating a scratch listing", &dir, e))?;
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_write_buffer_size(SCRATCH_MEMTABLE_BYTES);
        o.set_max_write_buffer_number(2);
        o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cache =
            rocksdb::Cache::new_lru_cache(SCRATCH_CACHE_BYTES).map_err(|e| scratch_err(&dir, e))?;
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        o.set_block_based_table_factory(&table);
        let db = DB::open(&o, &dir).map_err(|e| scratch_err(&dir, e))?;
        Ok(SortedListing {
            db: Some(db),
            dir,
            len: 0,
        })
    }

    /// Objects in the table.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was listed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn db(&self) -> Result<&DB> {
        self.db
            .as_ref()
            .ok_or_else(|| scratch_err(&self.dir, "already closed"))
    }

    /// Writes a batch of listed objects (a key listed twice keeps its last entry).
    fn put(&mut self, batch: &[(ObjectKey, Entry)]) -> Result<()> {
        let mut b = WriteBatch::default();
        for (k, e) in batch {
            b.put(k.as_bytes(), encode(e));
        }
        let mut wo = WriteOptions::default();
        // Scratch: a crash throws the table away, so nothing is logged.
        wo.disable_wal(true);
        self.db()?
            .write_opt(b, &wo)
            .map_err(|e| scratch_err(&self.dir, e))?;
        self.len += batch.len() as u64;
        Ok(())
    }

    /// Fills the table from a store's listing channel; listing errors go to `on_error`
    /// (key, reason) and are not stored.
    /// Only objects `keep` admits are stored (a filter, a shard's key range).
    pub async fn fill(
        &mut self,
        mut rx: mpsc::Receiver<Listed>,
        keep: &(dyn Fn(&crate::object::ObjectMeta) -> bool + Sync),
        mut on_error: impl FnMut(ObjectKey, String),
    ) -> Result<()> {
        let mut batch = Vec::with_capacity(SPILL_BATCH);
        while let Some(item) = rx.recv().await {
            match item.refuse_reserved() {
                Listed::Object(m) if !keep(&m) => {}
                Listed::Object(m) => {
                    let e = Entry {
                        size: m.size,
                        version: m.version,
                    };
                    batch.push((m.key, e));
                    if batch.len() == SPILL_BATCH {
                        self.put(&batch)?;
                        batch.clear();
                    }
                }
                Listed::Error { key, reason } => on_error(key, reason),
                Listed::Mark { .. } | Listed::Range { .. } | Listed::Skipped { .. } => {}
            }
        }
        self.put(&batch)
    }

    /// Every entry in key order. Decoding errors are yielded, not hidden.
    pub fn iter(&self) -> Result<impl Iterator<Item = Result<(ObjectKey, Entry)>> + '_> {
        let dir = &self.dir;
        Ok(self.db()?.iterator(IteratorMode::Start).map(move |kv| {
            let (k, v) = kv.map_err(|e| scratch_err(dir, e))?;
            let key = ObjectKey::from_bytes(k.to_vec());
            let e = decode(&v).ok_or_else(|| scratch_err(dir, format!("bad entry for {key}")))?;
            Ok((key, e))
        }))
    }
}

impl Drop for SortedListing {
    fn drop(&mut self) {
        drop(self.db.take());
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("cannot remove scratch listing {}: {e}", self.dir.display());
        }
    }
}

fn scratch_err(dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::Catalog {
        path: dir.to_path_buf(),
        message: format!("scratch listing: {e}"),
    }
}

/// size (u64 LE) then the version's bytes.
fn encode(e: &Entry) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + e.version.len());
    v.extend_from_slice(&e.size.to_le_bytes());
    v.extend_from_slice(e.version.as_bytes());
    v
}

fn decode(v: &[u8]) -> Option<Entry> {
    let (size, version) = v.split_first_chunk::<8>()?;
    Some(Entry {
        size: u64::from_le_bytes(*size),
        version: String::from_utf8(version.to_vec()).ok()?,
    })
}

/// Advances `it` past every key below `key` (handing each to `skipped`) and returns the
/// entry at `key`, if any: one step of a merge of sorted iterations.
pub fn seek<I, V>(
    it: &mut Peekable<I>,
    key: &ObjectKey,
    mut skipped: impl FnMut(ObjectKey, V),
) -> Result<Option<V>>
where
    I: Iterator<Item = Result<(ObjectKey, V)>>,
{
    loop {
        let order = match it.peek() {
            None => return Ok(None),
            Some(Err(_)) => Ordering::Less,
            Some(Ok((k, _))) => k.as_bytes().cmp(key.as_bytes()),
        };
        match order {
            Ordering::Greater => return Ok(None),
            Ordering::Less => {
                if let Some(item) = it.next() {
                    let (k, v) = item?;
                    skipped(k, v);
                }
            }
            Ordering::Equal => return it.next().transpose().map(|o| o.map(|(_, v)| v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectMeta;

    fn listed(key: &str, size: u64) -> Listed {
        Listed::Object(ObjectMeta {
            key: key.into(),
            size,
            version: format!("v{size}"),
            content_type: None,
            user_meta: vec![],
            modified: None,
        })
    }

    #[tokio::test]
    async fn a_listing_comes_back_in_key_byte_order_and_is_removed_when_dropped() {
        let state = tempfile::tempdir().unwrap();
        let mut l = SortedListing::create(state.path(), "t").unwrap();
        let (tx, rx) = mpsc::channel(16);
        // A tree walk's order: "a/b" before "a.b", though '.' < '/'.
        let keys = ["z", "a/b", "a.b", "m"];
        let feed = tokio::spawn(async move {
            for (i, k) in keys.iter().enumerate() {
                tx.send(listed(k, i as u64)).await.unwrap();
            }
            tx.send(Listed::Error {
                key: "bad".into(),
                reason: "unreadable".into(),
            })
            .await
            .unwrap();
        });
        let mut errors = vec![];
        l.fill(rx, &|_| true, |k, r| errors.push((k.to_string(), r)))
            .await
            .unwrap();
        feed.await.unwrap();
        let got: Vec<(String, u64)> = l
            .iter()
            .unwrap()
            .map(|r| r.map(|(k, e)| (k.to_string(), e.size)).unwrap())
            .collect();
        let want = [("a.b", 2), ("a/b", 1), ("m", 3), ("z", 0)];
        let want: Vec<(String, u64)> = want.iter().map(|(k, s)| (k.to_string(), *s)).collect();
        assert_eq!(got, want);
        assert_eq!(errors, vec![("bad".to_string(), "unreadable".to_string())]);
        assert_eq!(l.len(), 4);
        let dir = state.path().join("scratch/t");
        assert!(dir.exists());
        drop(l);
        assert!(!dir.exists());
    }

    #[test]
    fn seek_hands_over_what_it_skips_and_stops_at_the_key() {
        let items: Vec<Result<(ObjectKey, u32)>> = vec![
            Ok(("a".into(), 1)),
            Ok(("c".into(), 3)),
            Ok(("e".into(), 5)),
        ];
        let mut it = items.into_iter().peekable();
        let mut skipped = vec![];
        let at = |k: &str| ObjectKey::from(k);
        assert_eq!(
            seek(&mut it, &at("b"), |k, _| skipped.push(k)).unwrap(),
            None
        );
        assert_eq!(
            seek(&mut it, &at("c"), |k, _| skipped.push(k)).unwrap(),
            Some(3)
        );
        assert_eq!(
            seek(&mut it, &at("f"), |k, _| skipped.push(k)).unwrap(),
            None
        );
        assert_eq!(skipped, vec![at("a"), at("e")]);
    }
}

//! Shard plans: one move split over several nodes that an existing scheduler runs
//! (a Kubernetes Indexed Job, systemd units on racked nodes). A plan is a small
//! versioned JSON document: the source and N contiguous key ranges `(after, until]` of
//! about equal object count. Each node is given the plan and its index, lists only its
//! range, keeps its own state directory (bound to the plan and index, meta `shard`),
//! and publishes its report where the others can read it ([`crate::fleet`]). Nodes
//! never talk to each other.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::backend::{ListFrom, Source};
use crate::catalog::{Catalog, unix_now};
use crate::error::{Error, Result};
use crate::listing::SortedListing;
use crate::object::ObjectKey;

/// Version of the plan document.
pub const PLAN_VERSION: u32 = 1;
/// The variable a Kubernetes Indexed Job gives each pod: its shard index when
/// `--shard` is not given.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Meta key of the shard a state directory belongs to.
pub const META_SHARD: &[u8] = b"shard";
/// The most shards one plan may have.
pub const MAX_SHARDS: u32 = 100_000;

/// One node's key range in a plan, with what the planning listing found in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRange {
    pub index: u32,
    /// Keys after this one (None: from the first key).
    pub after: Option<String>,
    /// Up to and including this one (None: to the last key).
    pub until: Option<String>,
    pub objects: u64,
    pub bytes: u64,
}

/// A plan: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub plan_version: u32,
    /// 16 hex digits: BLAKE3 of the source, the creation time and the bounds.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The source URL as given to `barge plan`; nodes must give the same.
    pub source: String,
    pub objects: u64,
    pub bytes: u64,
    pub shards: Vec<ShardRange>,
}

/// The share of one node: its plan, index and key range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub plan_id: String,
    pub index: u32,
    pub shards: u32,
    pub source: String,
    pub after: Option<String>,
    pub until: Option<String>,
    /// Objects the plan found in the range (sizes the listing's pages).
    #[serde(default)]
    pub objects: u64,
}

impl Shard {
    /// Whether `key` is in this shard's range.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        let k = key.as_bytes();
        self.after.as_ref().is_none_or(|a| k > a.as_bytes())
            && self.until.as_ref().is_none_or(|u| k <= u.as_bytes())
    }

    /// "shard 2 of 3 of plan 0123…".
    pub fn describe(&self) -> String {
        format!(
            "shard {} of {} of plan {}",
            self.index, self.shards, self.plan_id
        )
    }

    /// Where this shard's listing starts: its one key range, in the store's terms when
    /// the source lists key ranges (else empty: the source lists everything and ingest
    /// keeps the range).
    pub fn list_from(&self, source: &dyn Source) -> ListFrom {
        source
            .range_from(
                self.after.as_deref(),
                self.until.as_deref(),
                Some(self.objects).filter(|n| *n > 0),
            )
            .unwrap_or_default()
    }

    /// Binds the state directory to this shard on first use, and refuses a state
    /// directory of another plan or shard, or of a shard when none is given.
    pub fn bind(catalog: &Catalog, shard: Option<&Shard>) -> Result<()> {
        let bound: Option<Shard> = catalog.meta_json(META_SHARD, "the shard record")?;
        let refuse = |message: String| {
            Err(Error::State {
                path: catalog.path().to_path_buf(),
                message,
            })
        };
        match (bound, shard) {
            (None, None) => Ok(()),
            (None, Some(s)) => catalog.put_meta_json(META_SHARD, "the shard record", s),
            (Some(b), Some(s)) if b.plan_id == s.plan_id && b.index == s.index => Ok(()),
            (Some(b), Some(s)) => refuse(format!(
                "belongs to {}, not {}: give each shard its own state directory",
                b.describe(),
                s.describe()
            )),
            (Some(b), None) => refuse(format!(
                "belongs to {}: give --plan and --shard (or JOB_COMPLETION_INDEX)",
                b.describe()
            )),
        }
    }
}

impl Plan {
    /// Reads and checks a plan file.
    pub fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read(path).map_err(|e| Error::io("reading the plan", path, e))?;
        let plan: Plan = serde_json::from_slice(&text).map_err(|e| Error::Decode {
            what: format!("the plan {}", path.display()),
            message: e.to_string(),
        })?;
        if plan.plan_version != PLAN_VERSION {
            return Err(Error::Decode {
                what: format!("the plan {}", path.display()),
                message: format!(
                    "plan version {}, this barge reads version {PLAN_VERSION}",
                    plan.plan_version
                ),
            });
        }
        let indexed = plan
            .shards
            .iter()
            .enumerate()
            .all(|(i, s)| s.index as usize == i);
        if plan.shards.is_empty() || !indexed {
            return Err(Error::Decode {
                what: format!("the plan {}", path.display()),
                message: "its shards are not numbered 0..N in order".into(),
            });
        }
        plan.check_ranges().map_err(|message| Error::Decode {
            what: format!("the plan {}", path.display()),
            message,
        })?;
        Ok(plan)
    }

    /// The ranges must cover the key space once: the first from the first key, each
    /// starting where the one before ends, none ending before it starts, the last to the
    /// last key. A gap would leave objects no shard moves while every shard says DONE;
    /// an overlap would move objects twice. The error names the shards and keys.
    fn check_ranges(&self) -> std::result::Result<(), String> {
        let show = |k: &Option<String>| match k {
            Some(k) => format!("{k:?}"),
            None => "the end of the key space".into(),
        };
        let (first, last) = (&self.shards[0], &self.shards[self.shards.len() - 1]);
        if let Some(a) = &first.after {
            return Err(format!(
                "shard 0 starts after {a:?}, not at the first key: the keys up to it are in no shard"
            ));
        }
        if let Some(u) = &last.until {
            return Err(format!(
                "shard {} ends at {u:?}, not at the last key: the keys after it are in no shard",
                last.index
            ));
        }
        for s in &self.shards {
            if let (Some(a), Some(u)) = (&s.after, &s.until)
                && u < a
            {
                return Err(format!(
                    "shard {} ends at {u:?}, before it starts (after {a:?}): the ranges overlap",
                    s.index
                ));
            }
        }
        for w in self.shards.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            if a.until.is_none() || a.until != b.after {
                let how = match (&a.until, &b.after) {
                    (Some(u), Some(n)) if n > u => "a gap: the keys between are in no shard",
                    _ => "an overlap: both hold the keys between",
                };
                return Err(format!(
                    "shard {} ends at {} but shard {} starts after {}: {how}",
                    a.index,
                    show(&a.until),
                    b.index,
                    show(&b.after)
                ));
            }
        }
        Ok(())
    }

    /// Shard `index` of the plan (given, or from [`INDEX_ENV`]), for `source`.
    pub fn shard(&self, index: Option<u32>, source: Option<&str>) -> Result<Shard> {
        let index = match index {
            Some(i) => i,
            None => index_from_env()?,
        };
        let n = self.shards.len();
        let Some(r) = self.shards.get(index as usize) else {
            return Err(Error::Option {
                option: "--shard".into(),
                message: format!("{index}: plan {} has shards 0 to {}", self.id, n - 1),
            });
        };
        if let Some(s) = source.filter(|s| *s != self.source) {
            return Err(Error::Option {
                option: "--source".into(),
                message: format!("{s}: plan {} is for {}", self.id, self.source),
            });
        }
        Ok(Shard {
            plan_id: self.id.clone(),
            index,
            shards: n as u32,
            source: self.source.clone(),
            after: r.after.clone(),
            until: r.until.clone(),
            objects: r.objects,
        })
    }

    /// The spread of the shards' object counts: (smallest, largest) relative to the mean.
    pub fn spread(&self) -> (f64, f64) {
        let mean = self.objects as f64 / self.shards.len().max(1) as f64;
        let rel = |n: u64| if mean > 0.0 { n as f64 / mean } else { 1.0 };
        let min = self.shards.iter().map(|s| s.objects).min().unwrap_or(0);
        let max = self.shards.iter().map(|s| s.objects).max().unwrap_or(0);
        (rel(min), rel(max))
    }
}

/// The shard index from [`INDEX_ENV`].
fn index_from_env() -> Result<u32> {
    let v = std::env::var(INDEX_ENV).map_err(|_| Error::Option {
        option: "--shard".into(),
        message: format!("not given, and {INDEX_ENV} is not set"),
    })?;
    v.trim().parse().map_err(|_| Error::Option {
        option: INDEX_ENV.into(),
        message: format!("{v:?} is not a shard index"),
    })
}

/// Makes a plan of `shards` ranges over `source`: lists its keys once (key ranges in
/// parallel, or an inventory's data files) into a sorted scratch table under
/// `scratch` (memory stays flat), then cuts the sorted keys at equal object counts.
pub async fn make(source: Arc<dyn Source>, url: &str, shards: u32, scratch: &Path) -> Result<Plan> {
    if shards == 0 || shards > MAX_SHARDS {
        return Err(Error::Option {
            option: "--shards".into(),
            message: format!("{shards}: between 1 and {MAX_SHARDS}"),
        });
    }
    let mut table = SortedListing::create(scratch, "plan")?;
    let (tx, rx) = mpsc::channel(crate::backend::ranges::LISTED_IN_FLIGHT);
    let src = source.clone();
    let lister = tokio::spawn(async move { src.list_resumable(tx, &ListFrom::new()).await });
    let mut errors = 0u64;
    table
        .fill(rx, &|_| true, |k, why| {
            errors += 1;
            tracing::warn!("object {k}: {why} (planned by its key all the same)");
        })
        .await?;
    lister
        .await
        .map_err(|e| Error::task("listing the source for the plan", e))??;
    if table.is_empty() {
        return Err(Error::Source {
            url: url.into(),
            message: "lists no objects: there is nothing to plan".into(),
        });
    }
    let ranges = cut(&table, shards)?;
    let created = unix_now();
    let mut h = blake3::Hasher::new();
    h.update(url.as_bytes());
    h.update(&created.to_le_bytes());
    for r in &ranges {
        h.update(format!("{:?}{:?}", r.after, r.until).as_bytes());
    }
    Ok(Plan {
        plan_version: PLAN_VERSION,
        id: h.finalize().to_hex()[..16].to_string(),
        created,
        source: url.into(),
        objects: ranges.iter().map(|r| r.objects).sum(),
        bytes: ranges.iter().map(|r| r.bytes).sum(),
        shards: ranges,
    })
}

/// Cuts the sorted keys into `n` ranges: range j ends at the key of rank
/// ceil((j+1) × total / n), so counts differ by at most one.
fn cut(table: &SortedListing, n: u32) -> Result<Vec<ShardRange>> {
    let total = table.len();
    let n64 = u64::from(n);
    let end_rank = |j: u64| (j * total).div_ceil(n64);
    let mut out = Vec::with_capacity(n as usize);
    let (mut after, mut count, mut bytes, mut next) = (None::<String>, 0u64, 0u64, 1u64);
    let (mut start_count, mut start_bytes) = (0u64, 0u64);
    for item in table.iter()? {
        let (key, e) = item?;
        count += 1;
        bytes += e.size;
        while next < n64 && end_rank(next) == count {
            let until = key_string(&key)?;
            out.push(ShardRange {
                index: out.len() as u32,
                after: after.clone(),
                until: Some(until.clone()),
                objects: count - start_count,
                bytes: bytes - start_bytes,
            });
            (start_count, start_bytes) = (count, bytes);
            after = Some(until);
            next += 1;
        }
    }
    out.push(ShardRange {
        index: out.len() as u32,
        after,
        until: None,
        objects: count - start_count,
        bytes: bytes - start_bytes,
    });
    Ok(out)
}

/// A key as a plan bound: plans are JSON, so bounds must be UTF-8 (S3 and Swift keys
/// always are; a directory's file name may not be).
fn key_string(key: &ObjectKey) -> Result<String> {
    String::from_utf8(key.as_bytes().to_vec())
        .map_err(|_| Error::object(key, "is not UTF-8: a plan's bounds are UTF-8 keys"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(after: Option<&str>, until: Option<&str>) -> Shard {
        Shard {
            plan_id: "p".into(),
            index: 0,
            shards: 2,
            source: "s3://b".into(),
            after: after.map(Into::into),
            until: until.map(Into::into),
            objects: 0,
        }
    }

    #[test]
    fn ranges_hold_keys_after_their_start_up_to_their_end() {
        let s = shard(Some("b"), Some("d"));
        assert!(!s.contains(&"b".into()));
        assert!(s.contains(&"b0".into()));
        assert!(s.contains(&"d".into()));
        assert!(!s.contains(&"d0".into()));
        assert!(shard(None, Some("a")).contains(&"a".into()));
        assert!(shard(Some("z"), None).contains(&"zz".into()));
    }

    /// The (after, until) bounds of a plan's shards.
    type Bounds<'a> = [(Option<&'a str>, Option<&'a str>)];

    /// A plan file of these bounds.
    fn plan_file(dir: &Path, bounds: &Bounds) -> std::path::PathBuf {
        let plan = Plan {
            plan_version: PLAN_VERSION,
            id: "0123456789abcdef".into(),
            created: 1,
            source: "s3://b".into(),
            objects: 0,
            bytes: 0,
            shards: bounds
                .iter()
                .enumerate()
                .map(|(i, (a, u))| ShardRange {
                    index: i as u32,
                    after: a.map(Into::into),
                    until: u.map(Into::into),
                    objects: 0,
                    bytes: 0,
                })
                .collect(),
        };
        let p = dir.join("plan.json");
        std::fs::write(&p, serde_json::to_vec(&plan).unwrap()).unwrap();
        p
    }

    #[test]
    fn plans_with_gaps_or_overlaps_are_refused_by_shard_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let load = |b: &Bounds| Plan::load(&plan_file(dir.path(), b)).map_err(|e| e.to_string());
        // Whole, with an empty range (a cut of fewer keys than shards), loads.
        load(&[(None, Some("b")), (Some("b"), Some("b")), (Some("b"), None)]).unwrap();
        let cases: [(&Bounds, &str); 6] = [
            (
                &[(None, Some("b")), (Some("d"), None)],
                "shard 0 ends at \"b\" but shard 1 starts after \"d\": a gap",
            ),
            (
                &[(None, Some("d")), (Some("b"), None)],
                "shard 0 ends at \"d\" but shard 1 starts after \"b\": an overlap",
            ),
            (
                &[(None, None), (Some("b"), None)],
                "shard 0 ends at the end of the key space but shard 1 starts after \"b\": an overlap",
            ),
            (
                &[(Some("a"), Some("b")), (Some("b"), None)],
                "shard 0 starts after \"a\", not at the first key",
            ),
            (
                &[(None, Some("b")), (Some("b"), Some("x"))],
                "shard 1 ends at \"x\", not at the last key",
            ),
            (
                &[(None, Some("c")), (Some("c"), Some("a")), (Some("a"), None)],
                "shard 1 ends at \"a\", before it starts (after \"c\")",
            ),
        ];
        for (bounds, want) in cases {
            let e = load(bounds).unwrap_err();
            assert!(e.contains(want), "{bounds:?}: {e}");
        }
    }

    #[tokio::test]
    async fn cuts_are_at_equal_counts_and_cover_every_key() {
        let dir = tempfile::tempdir().unwrap();
        for (keys, n) in [(10u64, 3u32), (2, 4), (1000, 16)] {
            let mut t = SortedListing::create(dir.path(), "t").unwrap();
            let (tx, rx) = mpsc::channel(16);
            let feed = tokio::spawn(async move {
                for i in 0..keys {
                    let meta = crate::object::ObjectMeta {
                        key: ObjectKey::from(format!("k{i:05}").as_str()),
                        size: 1,
                        version: String::new(),
                        content_type: None,
                        user_meta: vec![],
                        modified: None,
                    };
                    tx.send(crate::backend::Listed::Object(meta)).await.unwrap();
                }
            });
            t.fill(rx, &|_| true, |_, _| {}).await.unwrap();
            feed.await.unwrap();
            let r = cut(&t, n).unwrap();
            assert_eq!(r.len(), n as usize);
            assert_eq!(r.iter().map(|s| s.objects).sum::<u64>(), keys);
            assert_eq!(r[0].after, None);
            assert_eq!(r[n as usize - 1].until, None);
            for w in r.windows(2) {
                assert_eq!(w[0].until, w[1].after, "contiguous");
            }
            let (lo, hi) = (
                r.iter().map(|s| s.objects).min().unwrap(),
                r.iter().map(|s| s.objects).max().unwrap(),
            );
            assert!(hi - lo <= 1, "{keys} keys in {n}: {lo}..{hi}");
        }
    }
}

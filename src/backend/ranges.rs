//! Listing a key space as several contiguous key ranges at once, each with its own
//! checkpoint, for any store that can list "the next objects after key K" (S3's
//! `StartAfter`, Swift's `marker`).
//!
//! A range is the keys in `(after, until]` (`until` absent: to the end of the key space).
//! A fresh listing starts as one range, the *tail*. Once the tail has listed
//! `SPLIT_AFTER_KEYS` keys, if more follow and more than one listing may run at once,
//! the rest of the key space is split at real keys found by *probes* (a listing of one
//! key after a chosen string): the probes walk the key space as a trie, find each
//! node's longest common prefix by binary search, and enumerate a node's children by
//! skip-scan (after the first key of a child `P+c`, probe after `P+c+U+10FFFF` to find
//! the next child). This finds common
//! prefixes at any depth whether or not keys contain `/`, so a flat bucket of numbered
//! keys splits as well as a tree. Then up to `parallel` ranges are listed at once (each
//! request through the endpoint's throttle, which shrinks the effective parallelism on
//! 503/SlowDown).
//!
//! A resumed listing lists each unfinished range of the saved checkpoint after its
//! mark; only a tail range is split again.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::{ListFrom, Listed, RangeMark};
use crate::error::{Error, Result};
use crate::object::ObjectMeta;

/// Listed entries a consumer of a listing buffers (pages in flight beyond it wait).
pub const LISTED_IN_FLIGHT: usize = 4096;
/// Ranges planned per listing allowed at once: spare ranges let a listing that finishes
/// early take another instead of idling behind one slow range.
const RANGES_PER_LISTER: usize = 2;
/// Objects sent between two marks of a range within a page.
const MARK_EVERY: usize = 100;
/// Objects asked for by the first page of a range with an end (see [`next_limit`]).
const FIRST_PAGE: usize = 100;
/// Keys the tail lists on its own before the rest of the key space is split. Planning
/// the split costs a few hundred one-key probes (about as much server work as 40 pages
/// of 1,000 keys), worth paying only once the listing has shown it is long: a small
/// bucket, or a sync pass over one, is listed in a few pages without a probe.
const SPLIT_AFTER_KEYS: usize = 10_000;
/// The most ranges one listing is split into.
const MAX_RANGES: usize = 256;
/// The most children enumerated under one trie node.
const MAX_FANOUT: usize = 64;
/// The largest character: a probe after `P+c+TOP` skips every key that starts with `P+c`.
const TOP: char = '\u{10FFFF}';

/// The keys in `(after, until]` (object keys, without the store's `prefix`) as one range
/// of a [`RangeListing`] whose ranges are named under `scope`: what
/// `Source::range_from` returns for a store that lists by key.
pub fn one_range(
    scope: &str,
    prefix: &str,
    after: Option<&str>,
    until: Option<&str>,
    expect: Option<u64>,
) -> ListFrom {
    let after = after.map(|a| format!("{prefix}{a}"));
    let mark = RangeMark {
        after: after.clone(),
        until: until.map(|u| format!("{prefix}{u}")),
        done: false,
        expect,
    };
    ListFrom::from([(format!("{scope}{}", after.unwrap_or_default()), mark)])
}

/// An object of a page, with its key as the store names it (prefix included).
pub struct Entry {
    pub key: String,
    pub meta: ObjectMeta,
    /// Why the object is listed but not taken (a name the store cannot address safely):
    /// sent as a [`Listed::Error`] naming it instead of an object.
    pub refused: Option<String>,
}

/// A page of a listing in key order; `more` when keys may follow its last.
pub struct Page {
    pub entries: Vec<Entry>,
    pub more: bool,
}

/// A store's listing in key order.
#[async_trait]
pub trait KeyPages: Send + Sync {
    /// Up to `limit` objects after `after` (from the first key if `None`), in key order.
    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Page>;
}

/// A listing over key ranges.
pub struct RangeListing<'a> {
    pub pages: &'a dyn KeyPages,
    /// The store's key prefix every key of the listing starts with.
    pub prefix: String,
    /// Prepended to every range name (ranges of several listings share one checkpoint).
    pub scope: String,
    /// Ranges listed at once.
    pub parallel: usize,
    /// Objects asked for per page.
    pub page: usize,
}

impl RangeListing<'_> {
    /// Lists every range of `from` not done (everything if `from` is empty), sending
    /// objects, new ranges ([`Listed::Range`]) and a [`Listed::Mark`] after each page.
    pub async fn run(&self, from: &ListFrom, tx: &mpsc::Sender<Listed>) -> Result<()> {
        self.run_counted(from, tx).await.map(|_| ())
    }

    /// [`RangeListing::run`], returning how many objects (refused ones included) it sent.
    pub async fn run_counted(&self, from: &ListFrom, tx: &mpsc::Sender<Listed>) -> Result<u64> {
        let sent = AtomicU64::new(0);
        self.run_ranges(from, tx, &sent).await?;
        Ok(sent.into_inner())
    }

    async fn run_ranges(
        &self,
        from: &ListFrom,
        tx: &mpsc::Sender<Listed>,
        sent: &AtomicU64,
    ) -> Result<()> {
        let mut ranges: VecDeque<(String, RangeMark)> = from
            .iter()
            .filter(|(n, m)| n.starts_with(&self.scope) && !m.done)
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect();
        let resumed = from.keys().any(|n| n.starts_with(&self.scope));
        if !resumed {
            ranges.push_back((self.scope.clone(), RangeMark::default()));
        }
        if let Some(i) = ranges.iter().position(|(_, m)| m.until.is_none()) {
            let tail = ranges.remove(i).unwrap_or_default();
            if !self.split_tail(tail, &mut ranges, tx, sent).await? {
                return Ok(());
            }
        }
        let queue = Mutex::new(ranges);
        let next = || queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        futures::stream::iter(0..self.parallel.max(1))
            .map(|_| async {
                while let Some((name, mark)) = next() {
                    if !self.list_range(&name, mark, tx, sent).await? {
                        break;
                    }
                }
                Ok::<_, crate::error::Error>(())
            })
            .buffer_unordered(self.parallel.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Lists the tail's first [`SPLIT_AFTER_KEYS`] keys and, if more follow and several
    /// listings may run, splits the rest of it into ranges queued in `ranges`; else
    /// queues what is left of the tail. False once the receiver is gone.
    async fn split_tail(
        &self,
        (name, mut mark): (String, RangeMark),
        ranges: &mut VecDeque<(String, RangeMark)>,
        tx: &mpsc::Sender<Listed>,
        sent: &AtomicU64,
    ) -> Result<bool> {
        if self.parallel <= 1 {
            ranges.push_back((name, mark));
            return Ok(true);
        }
        let mut listed = 0;
        while !mark.done && listed < SPLIT_AFTER_KEYS {
            let page = self.pages.page(mark.after.as_deref(), self.page).await?;
            listed += page.entries.len().max(1);
            if send(&name, page, &mut mark, tx, sent).await.is_none() {
                return Ok(false);
            }
        }
        if !mark.done {
            let after = mark.after.clone().unwrap_or_default();
            let target = (self.parallel * RANGES_PER_LISTER).min(MAX_RANGES);
            let bounds = Planner::new(self.pages, &self.prefix, &after)
                .plan(target)
                .await?;
            let mut lower = None;
            for b in bounds.iter().rev() {
                let range = RangeMark {
                    after: Some(b.clone()),
                    until: lower.take(),
                    done: false,
                    ..Default::default()
                };
                lower = Some(b.clone());
                ranges.push_front((format!("{}{b}", self.scope), range));
            }
            mark.until = lower;
            for (range, m) in ranges.iter() {
                let item = Listed::Range {
                    range: range.clone(),
                    mark: m.clone(),
                };
                if tx.send(item).await.is_err() {
                    return Ok(false);
                }
            }
            let item = Listed::Mark {
                range: name.clone(),
                mark: mark.clone(),
            };
            if tx.send(item).await.is_err() {
                return Ok(false);
            }
            ranges.push_front((name, mark));
        }
        Ok(true)
    }

    /// Lists one range to its end, a mark after every page. False once the receiver is
    /// gone.
    async fn list_range(
        &self,
        name: &str,
        mut mark: RangeMark,
        tx: &mpsc::Sender<Listed>,
        sent: &AtomicU64,
    ) -> Result<bool> {
        // A range with an end starts with a short page: its density sizes the next pages
        // to reach the end without listing far beyond it. A range whose key count is
        // known (a shard) asks for about that many.
        let mut limit = match mark.until {
            Some(_) => self.page.min(FIRST_PAGE),
            None => self.page,
        };
        while !mark.done {
            let limit_now = expected_limit(&mark, limit, self.page);
            let page = self.pages.page(mark.after.as_deref(), limit_now).await?;
            if let Some(until) = &mark.until {
                limit = next_limit(&page, until, self.page);
            }
            if send(name, page, &mut mark, tx, sent).await.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The page size for a range with a known key count: the keys still expected (a little
/// over, at most `max`), else `limit`. Once the expected keys are listed and the range
/// goes on (the store changed since the plan), the estimate takes over again.
fn expected_limit(mark: &RangeMark, limit: usize, max: usize) -> usize {
    match mark.expect {
        Some(left) if left > 0 => {
            ((left as f64 * ESTIMATE_SLACK).ceil() as usize + 16).min(max.max(1))
        }
        _ => limit,
    }
}

/// How many positions after the common prefix [`next_limit`] weighs.
const ESTIMATE_DEPTH: usize = 8;
/// How far [`next_limit`] asks beyond its estimate of the keys left: an underestimate
/// costs one more small request, an overestimate keys beyond the range's end.
const ESTIMATE_SLACK: f64 = 1.05;

/// The page size that should just reach `until` after `page`, so that the last page of a
/// range does not list (up to a whole page of) keys beyond it. Keys are read as numbers
/// in a mixed radix whose digits at each position are the characters seen there (in the
/// page and `until`), so "k01999" is 223 keys before "k02222" whether the keys are
/// decimal, hex or words; the page's own span gives keys per unit. An underestimate costs
/// one more small request, never a key.
fn next_limit(page: &Page, until: &str, max: usize) -> usize {
    let keys: Vec<&str> = page
        .entries
        .iter()
        .map(|e| e.key.as_str())
        .take_while(|k| *k <= until)
        .collect();
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return max;
    };
    if keys.len() < page.entries.len() || *last == until {
        return max; // the range ends in this page
    }
    let skip = first
        .chars()
        .zip(until.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let digits = |k: &str| -> Vec<Option<char>> {
        let mut it = k.chars().skip(skip);
        (0..ESTIMATE_DEPTH).map(|_| it.next()).collect()
    };
    let mut alphabets = vec![std::collections::BTreeSet::new(); ESTIMATE_DEPTH];
    for k in keys.iter().copied().chain([until]) {
        for (i, d) in digits(k).into_iter().enumerate() {
            alphabets[i].insert(d);
        }
    }
    for a in &mut alphabets {
        widen(a);
    }
    let value = |k: &str| -> f64 {
        digits(k).iter().zip(&alphabets).fold(0.0, |v, (d, a)| {
            let rank = a.range(..d).count();
            v * a.len() as f64 + rank as f64
        })
    };
    let (f, l, u) = (value(first), value(last), value(until));
    if l <= f || u <= l {
        return max;
    }
    let left = keys.len() as f64 * (u - l) / (l - f);
    let want = (left * ESTIMATE_SLACK).ceil() as usize + 16;
    want.clamp(16, max)
}

/// Completes the characters seen at one key position to the class they look drawn from
/// (decimal digits, hex digits, letters and digits), so that a page that shows "0" and
/// "1" at a position still counts ten digits there.
fn widen(seen: &mut std::collections::BTreeSet<Option<char>>) {
    let chars: Vec<char> = seen.iter().flatten().copied().collect();
    let all = |f: fn(&char) -> bool| !chars.is_empty() && chars.iter().all(f);
    let class: Vec<char> = if all(char::is_ascii_digit) {
        ('0'..='9').collect()
    } else if all(|c| c.is_ascii_digit() || ('a'..='f').contains(c)) {
        ('0'..='9').chain('a'..='f').collect()
    } else if all(|c| c.is_ascii_digit() || ('A'..='F').contains(c)) {
        ('0'..='9').chain('A'..='F').collect()
    } else if all(char::is_ascii_alphanumeric) {
        ('0'..='9').chain('A'..='Z').chain('a'..='z').collect()
    } else {
        vec![]
    };
    seen.extend(class.into_iter().map(Some));
}

/// Sends the page's objects within `mark`'s range, moves the mark past them (done when
/// the page ends the range) and sends it, also every [`MARK_EVERY`] objects so that a
/// checkpoint does not wait for a whole page; counts the objects in `sent`. `None` once
/// the receiver is gone.
async fn send(
    name: &str,
    page: Page,
    mark: &mut RangeMark,
    tx: &mpsc::Sender<Listed>,
    sent: &AtomicU64,
) -> Option<()> {
    let mut done = !page.more || page.entries.is_empty();
    for (i, e) in page.entries.into_iter().enumerate() {
        if mark.until.as_ref().is_some_and(|u| e.key > *u) {
            done = true;
            break;
        }
        let at_end = mark.until.as_ref() == Some(&e.key);
        mark.after = Some(e.key);
        if let Some(left) = mark.expect.as_mut() {
            *left = left.saturating_sub(1);
        }
        let item = match e.refused {
            None => Listed::Object(e.meta),
            Some(reason) => Listed::Error {
                key: e.meta.key,
                reason,
            },
        };
        tx.send(item).await.ok()?;
        sent.fetch_add(1, Ordering::Relaxed);
        if at_end {
            done = true;
            break;
        }
        if (i + 1) % MARK_EVERY == 0 {
            let item = Listed::Mark {
                range: name.to_string(),
                mark: mark.clone(),
            };
            tx.send(item).await.ok()?;
        }
    }
    mark.done = done;
    let item = Listed::Mark {
        range: name.to_string(),
        mark: mark.clone(),
    };
    tx.send(item).await.ok()
}

/// A node of the key trie: the keys (after the planner's start) that begin with
/// `prefix`, the smallest of which is `first`.
#[derive(Clone)]
struct Node {
    prefix: String,
    first: String,
    /// False once the node is known to hold one key, or may not be split further.
    splittable: bool,
}

/// Finds split points of the keys after `after` by probing.
struct Planner<'a> {
    pages: &'a dyn KeyPages,
    prefix: String,
    after: String,
}

impl<'a> Planner<'a> {
    fn new(pages: &'a dyn KeyPages, prefix: &str, after: &str) -> Self {
        Planner {
            pages,
            prefix: prefix.to_string(),
            after: after.to_string(),
        }
    }

    /// The first key after `after`, if it starts with the listing's prefix.
    async fn probe(&self, after: &str) -> Result<Option<String>> {
        let after = after.max(self.after.as_str());
        let page = self.pages.page(Some(after), 1).await?;
        Ok(page
            .entries
            .into_iter()
            .next()
            .map(|e| e.key)
            .filter(|k| k.starts_with(&self.prefix)))
    }

    /// At least `target` ranges' worth of split keys where the key space has them
    /// (at most [`MAX_RANGES`]), sorted, each a real key after `after` (empty if nothing
    /// follows `after`). The trie is expanded a whole level at a time, so that ranges of
    /// one level hold like shares of a regular key space.
    async fn plan(&self, target: usize) -> Result<Vec<String>> {
        let Some(first) = self.probe(&self.after).await? else {
            return Ok(vec![]);
        };
        let mut level = vec![Node {
            prefix: self.prefix.clone(),
            first,
            splittable: true,
        }];
        while level.len() < target && level.iter().any(|n| n.splittable) {
            let mut next = Vec::with_capacity(level.len() * 2);
            for n in level {
                match n.splittable {
                    true => next.extend(self.children(n).await?),
                    false => next.push(n),
                }
            }
            level = next;
        }
        // Each node but the first starts a range (the first continues the tail).
        let step = level.len().div_ceil(MAX_RANGES).max(1);
        Ok(level
            .into_iter()
            .skip(1)
            .step_by(step)
            .map(|n| n.first)
            .collect())
    }

    /// The children of `node` below its longest common prefix (the node alone, not
    /// splittable, if it holds one key).
    async fn children(&self, node: Node) -> Result<Vec<Node>> {
        let common = self.common_prefix(&node).await?;
        let depth = common.chars().count();
        let chars: Vec<char> = node.first.chars().collect();
        if depth >= chars.len() && self.probe(&node.first).await?.is_none() {
            return Ok(vec![Node {
                splittable: false,
                ..node
            }]);
        }
        let mut out = vec![];
        let mut cursor = match chars.get(depth) {
            Some(c) => {
                out.push(Node {
                    prefix: format!("{common}{c}"),
                    first: node.first.clone(),
                    splittable: true,
                });
                format!("{common}{c}{TOP}")
            }
            // The first key is the common prefix itself, a node of its own.
            None => {
                out.push(Node {
                    prefix: common.clone(),
                    first: node.first.clone(),
                    splittable: false,
                });
                node.first.clone()
            }
        };
        while out.len() < MAX_FANOUT {
            let Some(k) = self.probe(&cursor).await? else {
                break;
            };
            let Some(c) = k.strip_prefix(&common).and_then(|r| r.chars().next()) else {
                break;
            };
            let child = format!("{common}{c}");
            cursor = format!("{child}{TOP}");
            if out.last().is_some_and(|n: &Node| n.prefix == child) {
                // A key of the last child after its skip probe (one with U+10FFFF in
                // it): keep going from there.
                cursor = k.clone();
                continue;
            }
            out.push(Node {
                prefix: child,
                first: k,
                splittable: true,
            });
        }
        if out.len() == 1 {
            out[0].splittable = false;
        }
        Ok(out)
    }

    /// The longest prefix of `node.first` that every key of the node starts with, by
    /// binary search over its length: every key starts with `first[..m]` exactly when
    /// no key of the node comes after `first[..m]+TOP`.
    async fn common_prefix(&self, node: &Node) -> Result<String> {
        let chars: Vec<char> = node.first.chars().collect();
        let mut lo = node.prefix.chars().count();
        let mut hi = chars.len();
        while lo < hi {
            let m = (lo + hi).div_ceil(2);
            let head: String = chars[..m].iter().collect();
            let beyond = self.probe(&format!("{head}{TOP}")).await?;
            if beyond.is_some_and(|k| k.starts_with(&node.prefix)) {
                hi = m - 1;
            } else {
                lo = m;
            }
        }
        Ok(chars[..lo].iter().collect())
    }
}

// A listing that does not advance. Kept apart from the range planning above: a store's
// `KeyPages::page` calls it on every page it returns.

/// Fails unless `page`, answered to a request for the keys after `after` (S3's
/// `StartAfter`, Swift's `marker`), moves the listing on: each key after `after` and
/// after the key before it. A server that ignores the marker would hand the same page
/// back forever; `store` names the listing (`s3://bucket`), `param` the ignored marker.
pub fn check_advances(store: &str, param: &str, after: Option<&str>, page: &Page) -> Result<()> {
    let mut prev = after;
    for e in &page.entries {
        if let Some(p) = prev
            && e.key.as_str() <= p
        {
            let message = format!(
                "a page after {:?}: key {:?} does not come after {p:?} (the server ignores {param}, or sends keys out of order); stopped instead of listing the same keys again",
                after.unwrap_or(""),
                e.key
            );
            return Err(Error::Request {
                endpoint: store.to_string(),
                message,
            });
        }
        prev = Some(&e.key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectKey;
    use std::sync::atomic::AtomicUsize;

    /// An in-memory sorted key space, counting the requests it answers.
    struct Keys {
        keys: Vec<String>,
        requests: AtomicUsize,
        /// Keys returned in all.
        served: AtomicUsize,
    }

    #[async_trait]
    impl KeyPages for Keys {
        async fn page(&self, after: Option<&str>, limit: usize) -> Result<Page> {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let start = match after {
                Some(a) => self.keys.partition_point(|k| k.as_str() <= a),
                None => 0,
            };
            let end = (start + limit).min(self.keys.len());
            self.served.fetch_add(end - start, Ordering::Relaxed);
            let entries = self.keys[start..end]
                .iter()
                .map(|k| Entry {
                    refused: None,
                    key: k.clone(),
                    meta: ObjectMeta {
                        key: ObjectKey::from(k.as_str()),
                        size: 1,
                        version: String::new(),
                        content_type: None,
                        user_meta: vec![],
                        modified: None,
                    },
                })
                .collect();
            Ok(Page {
                entries,
                more: end < self.keys.len(),
            })
        }
    }

    fn keys(mut v: Vec<String>) -> Keys {
        v.sort();
        Keys {
            keys: v,
            requests: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
        }
    }

    async fn run(k: &Keys, parallel: usize, from: &ListFrom) -> (Vec<String>, ListFrom) {
        let (tx, mut rx) = mpsc::channel(100_000);
        let l = RangeListing {
            pages: k,
            prefix: String::new(),
            scope: String::new(),
            parallel,
            page: 1000,
        };
        l.run(from, &tx).await.unwrap();
        drop(tx);
        let mut got = vec![];
        let mut marks = from.clone();
        while let Some(item) = rx.recv().await {
            match item {
                Listed::Object(m) => {
                    got.push(String::from_utf8(m.key.as_bytes().to_vec()).unwrap())
                }
                Listed::Mark { range, mark } => {
                    marks.insert(range, mark);
                }
                Listed::Range { range, mark } => {
                    marks.entry(range).or_insert(mark);
                }
                Listed::Error { .. } | Listed::Skipped { .. } => {}
            }
        }
        (got, marks)
    }

    #[tokio::test]
    async fn a_flat_numbered_key_space_splits_into_even_ranges_listed_once() {
        let k = keys((0..20_000).map(|i| format!("k{i:05}")).collect());
        let (mut got, marks) = run(&k, 4, &ListFrom::new()).await;
        assert!(marks.len() >= 8, "{} ranges", marks.len());
        assert!(marks.values().all(|m| m.done));
        got.sort();
        assert_eq!(got, k.keys, "every key exactly once");
        // Each range holds a fair share: none more than a quarter of the keys.
        let mut bounds: Vec<&str> = marks.keys().map(String::as_str).collect();
        bounds.sort();
        for w in bounds.windows(2).skip(1) {
            let n = k
                .keys
                .iter()
                .filter(|x| x.as_str() > w[0] && x.as_str() <= w[1])
                .count();
            assert!(n <= 5_000, "range {w:?} holds {n} keys");
        }
        let (requests, served) = (
            k.requests.load(Ordering::Relaxed),
            k.served.load(Ordering::Relaxed),
        );
        eprintln!(
            "{} ranges, {requests} requests, {served} keys served",
            marks.len()
        );
        assert!(requests < 200);
        // The last pages of ranges list little beyond their ends.
        assert!(served < 20_000 * 5 / 4, "{served} keys served for 20,000");
    }

    #[tokio::test]
    async fn a_small_key_space_is_listed_in_pages_without_probes() {
        let k = keys(
            (0..SPLIT_AFTER_KEYS / 2)
                .map(|i| format!("k{i:05}"))
                .collect(),
        );
        let (mut got, marks) = run(&k, 8, &ListFrom::new()).await;
        got.sort();
        assert_eq!(got, k.keys);
        assert_eq!(marks.len(), 1, "one range");
        assert!(marks.values().all(|m| m.done));
        // Pages of 1,000 keys and nothing else.
        assert_eq!(
            k.requests.load(Ordering::Relaxed),
            SPLIT_AFTER_KEYS / 2 / 1000
        );
    }

    #[tokio::test]
    async fn a_tree_and_odd_keys_are_listed_once_in_any_split() {
        let mut v: Vec<String> = (0..3_000)
            .map(|i| format!("logs/2024/{:02}/{i:06}.gz", i % 12))
            .collect();
        v.extend((0..2_000).map(|i| format!("{:08x}", i * 2_654_435_761u64 % (1 << 32))));
        v.extend(["", "a", "a\u{10FFFF}", "a\u{10FFFF}b", "zz\u{e9}"].map(String::from));
        let k = keys(v);
        for parallel in [1, 2, 8] {
            let (mut got, _) = run(&k, parallel, &ListFrom::new()).await;
            got.sort();
            assert_eq!(got, k.keys, "parallel {parallel}");
        }
    }

    #[tokio::test]
    async fn a_resumed_listing_lists_only_what_its_ranges_had_left() {
        let k = keys((0..10_000).map(|i| format!("f{i:04}")).collect());
        let mut from = ListFrom::new();
        let mark = |after: &str, until: Option<&str>, done| RangeMark {
            after: Some(after.into()),
            until: until.map(String::from),
            done,
            ..Default::default()
        };
        from.insert(String::new(), mark("f2000", Some("f5000"), false));
        from.insert("f5000".into(), mark("f5000", Some("f8000"), true));
        from.insert("f8000".into(), mark("f9500", None, false));
        let (mut got, marks) = run(&k, 4, &from).await;
        got.sort();
        let want: Vec<String> = (2001..=5000)
            .chain(9501..10_000)
            .map(|i| format!("f{i:04}"))
            .collect();
        assert_eq!(got, want);
        assert!(marks.values().all(|m| m.done));
    }

    /// A page of `keys` (a listing's answer).
    fn page_of(keys: &[&str]) -> Page {
        Page {
            entries: keys
                .iter()
                .map(|k| Entry {
                    key: k.to_string(),
                    meta: ObjectMeta {
                        key: ObjectKey::from(*k),
                        size: 0,
                        version: String::new(),
                        content_type: None,
                        user_meta: vec![],
                        modified: None,
                    },
                    refused: None,
                })
                .collect(),
            more: true,
        }
    }

    #[test]
    fn a_page_that_does_not_advance_is_refused_naming_the_store() {
        let p = page_of(&["a", "b", "c"]);
        assert!(check_advances("s3://b", "StartAfter", None, &p).is_ok());
        assert!(check_advances("s3://b", "StartAfter", Some("0"), &p).is_ok());
        // The marker ignored: the first page again after its last key.
        let e = check_advances("s3://bkt", "StartAfter", Some("c"), &p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s3://bkt") && e.contains("StartAfter") && e.contains("\"a\""),
            "{e}"
        );
        // A key equal to the marker, or keys out of order within a page.
        assert!(check_advances("s3://b", "StartAfter", Some("a"), &p).is_err());
        let p = page_of(&["a", "c", "b"]);
        assert!(check_advances("s3://b", "StartAfter", None, &p).is_err());
        assert!(check_advances("s3://b", "StartAfter", None, &page_of(&[])).is_ok());
    }

    #[test]
    fn the_last_page_of_a_range_is_sized_to_reach_its_end() {
        let page = |keys: Vec<String>| Page {
            entries: keys
                .into_iter()
                .map(|k| Entry {
                    refused: None,
                    meta: ObjectMeta {
                        key: ObjectKey::from(k.as_str()),
                        size: 0,
                        version: String::new(),
                        content_type: None,
                        user_meta: vec![],
                        modified: None,
                    },
                    key: k,
                })
                .collect(),
            more: true,
        };
        let p = page((1000..2000).map(|i| format!("k{i:05}")).collect());
        let n = next_limit(&p, "k02222", 1000);
        assert!((223..=320).contains(&n), "{n}");
        let hex = page((0..1000u64).map(|i| format!("{:06x}", i * 16)).collect());
        // 500 keys left.
        let n = next_limit(&hex, &format!("{:06x}", 1500 * 16), 1000);
        assert!((500..=700).contains(&n), "{n}");
        // Far from the end: a whole page.
        assert_eq!(next_limit(&p, "k19999", 1000), 1000);
        // A range with a known count asks for about that many, then the estimate again.
        let m = |expect| RangeMark {
            expect,
            ..Default::default()
        };
        assert_eq!(expected_limit(&m(Some(500)), 100, 1000), 541);
        assert_eq!(expected_limit(&m(Some(5000)), 100, 1000), 1000);
        assert_eq!(expected_limit(&m(Some(0)), 300, 1000), 300);
        assert_eq!(expected_limit(&m(None), 300, 1000), 300);
    }
}

//! Listing checkpoints: how far each key range of a source's listing may resume from
//! after a run that did not finish listing.
//!
//! A range's mark may only move past a key once every object listed up to it is
//! finished (committed staged, found unchanged, or recorded failed): otherwise a resumed
//! run would skip an object that was listed but never fetched. So each object the
//! dispatcher routes gets a sequence number and stays in flight until its fetcher
//! finishes it; a mark from the lister waits behind every object routed before it, and
//! is applied once none of those is in flight. Memory is the objects in flight and the
//! marks waiting behind them, whatever the bucket's size.
//!
//! The applied marks are saved (meta `listing_ranges`, synced, at most every
//! [`SAVE_INTERVAL`] and at the end). The sync also makes every staged object before
//! it durable: the commits precede it in the write-ahead log.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::{ListFrom, RangeMark};
use crate::catalog::{Catalog, META_LISTING_RANGES};
use crate::error::Result;
use crate::monitor::Monitor;

/// How often applied marks are saved while listing.
pub const SAVE_INTERVAL: Duration = Duration::from_millis(250);

/// The ranges an incomplete listing left in `catalog` (empty if none).
pub fn saved(catalog: &Catalog) -> Result<ListFrom> {
    let ranges = catalog.meta_json(META_LISTING_RANGES, "listing checkpoint")?;
    Ok(ranges.unwrap_or_default())
}

/// The ranges as the status document shows them.
pub fn as_status(ranges: &ListFrom) -> Vec<barge_tui::model::ListingRange> {
    ranges
        .iter()
        .map(|(range, m)| barge_tui::model::ListingRange {
            range: range.clone(),
            after: m.after.clone(),
            until: m.until.clone(),
            done: m.done,
        })
        .collect()
}

/// Replaces the saved ranges (synced).
pub fn save(catalog: &Catalog, ranges: &ListFrom) -> Result<()> {
    catalog.put_meta_json(META_LISTING_RANGES, "the listing checkpoint", ranges)
}

/// The checkpoints of one ingest's listing.
pub struct Checkpoints {
    catalog: Arc<Catalog>,
    /// Shows each saved checkpoint (`barge status`, the dashboard).
    monitor: Arc<Monitor>,
    state: Mutex<State>,
}

struct State {
    /// The sequence number the next routed object gets.
    next: u64,
    /// Routed objects not finished yet.
    in_flight: BTreeSet<u64>,
    /// Marks waiting for the objects routed before them: (next at the mark, range, mark,
    /// whether it only announces a new range).
    waiting: VecDeque<(u64, String, RangeMark, bool)>,
    /// The marks applied so far.
    ranges: ListFrom,
    /// Applied marks not saved yet.
    dirty: bool,
    saved_at: Instant,
}

impl Checkpoints {
    /// Starts from `from` (the ranges a resumed listing starts at; empty otherwise).
    pub fn new(catalog: Arc<Catalog>, from: ListFrom, monitor: Arc<Monitor>) -> Self {
        monitor.set_listing(&from);
        Checkpoints {
            catalog,
            monitor,
            state: Mutex::new(State {
                next: 0,
                in_flight: BTreeSet::new(),
                waiting: VecDeque::new(),
                ranges: from,
                dirty: false,
                saved_at: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A routed object: in flight until [`Checkpoints::finish`] with the returned number.
    pub fn route(&self) -> u64 {
        let mut s = self.lock();
        let n = s.next;
        s.next += 1;
        s.in_flight.insert(n);
        n
    }

    /// The object `n` is finished (its outcome is in the catalog).
    pub fn finish(&self, n: u64) {
        self.lock().in_flight.remove(&n);
    }

    /// The ranges as applied so far (at the start: where the listing resumes).
    pub fn ranges(&self) -> ListFrom {
        self.lock().ranges.clone()
    }

    /// A mark from the lister: it applies once every object routed so far is finished.
    pub fn mark(&self, range: String, mark: RangeMark) {
        let mut s = self.lock();
        let at = s.next;
        s.waiting.push_back((at, range, mark, false));
    }

    /// A range the lister planned: added (behind every object routed so far) unless the
    /// checkpoint already holds it.
    pub fn announce(&self, range: String, mark: RangeMark) {
        let mut s = self.lock();
        let at = s.next;
        s.waiting.push_back((at, range, mark, true));
    }

    /// Applies the marks whose objects are all finished and saves them if
    /// [`SAVE_INTERVAL`] has passed (or `now`).
    pub fn save_if_due(&self, now: bool) -> Result<()> {
        let ranges = {
            let mut s = self.lock();
            s.apply();
            if !s.dirty || (!now && s.saved_at.elapsed() < SAVE_INTERVAL) {
                return Ok(());
            }
            s.dirty = false;
            s.saved_at = Instant::now();
            s.ranges.clone()
        };
        self.monitor.set_listing(&ranges);
        save(&self.catalog, &ranges)
    }
}

impl State {
    fn apply(&mut self) {
        let low = self.in_flight.first().copied().unwrap_or(self.next);
        while self.waiting.front().is_some_and(|w| w.0 <= low) {
            let Some((_, range, mark, announce)) = self.waiting.pop_front() else {
                break;
            };
            if announce {
                // A range already under way keeps its mark.
                self.ranges.entry(range).or_insert(mark);
            } else {
                self.ranges.insert(range, mark);
            }
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(after: &str, done: bool) -> RangeMark {
        RangeMark {
            after: Some(after.into()),
            until: None,
            done,
            ..Default::default()
        }
    }

    #[test]
    fn a_mark_waits_for_every_object_routed_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Arc::new(Catalog::open(dir.path(), true).unwrap());
        let c = Checkpoints::new(cat.clone(), ListFrom::new(), Arc::default());
        let a = c.route();
        let b = c.route();
        c.mark("".into(), mark("b", false));
        let later = c.route();
        c.mark("".into(), mark("c", false));
        c.finish(b);
        c.finish(later);
        c.save_if_due(true).unwrap();
        // `a` is still in flight: nothing may be saved past it.
        assert_eq!(saved(&cat).unwrap(), ListFrom::new());
        c.finish(a);
        c.save_if_due(true).unwrap();
        assert_eq!(saved(&cat).unwrap()[""], mark("c", false));
    }

    #[test]
    fn an_announcement_does_not_reset_a_range_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Arc::new(Catalog::open(dir.path(), true).unwrap());
        let mut from = ListFrom::new();
        from.insert("p/".into(), mark("p/7", false));
        let c = Checkpoints::new(cat.clone(), from, Arc::default());
        c.announce("p/".into(), RangeMark::default());
        c.announce("q/".into(), RangeMark::default());
        c.save_if_due(true).unwrap();
        let got = saved(&cat).unwrap();
        assert_eq!(got["p/"], mark("p/7", false));
        assert_eq!(got["q/"], RangeMark::default());
    }
}

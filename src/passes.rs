//! Sync passes as figures for operators: what is known to differ now (lag), how fast the
//! source changes, and a rough length of a final (cutover) pass, so that the write
//! freeze can be planned. Read from the pass records (CF `passes`) and the report's
//! counts; shown by `status`, `/metrics` (`barge_sync_*`) and the dashboard.

use barge_tui::model::SyncStatus;

use crate::catalog::PassRecord;

/// Seconds per hour.
const HOUR: f64 = 3600.0;

/// Objects and bytes known to differ between source and destination.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lag {
    pub objects: u64,
    pub bytes: u64,
}

impl Lag {
    /// From the catalog's counts: objects not at the destination in their latest version
    /// (listed, staged, failed, being deleted) and their bytes, plus the objects the last
    /// finished pass found gone from the source and left at the destination.
    pub fn of(r: &crate::report::Report, last: Option<&PassRecord>) -> Lag {
        Lag {
            objects: r.listed
                + r.staged
                + r.failed
                + r.deleting
                + last.map_or(0, |p| p.deletes_pending),
            bytes: r.logical_bytes.saturating_sub(r.drained_bytes),
        }
    }
}

/// Objects one pass found to change: new, changed and gone.
fn changes(p: &PassRecord) -> u64 {
    p.new + p.changed + p.deleted + p.deletes_pending
}

/// The sync figures after `passes` (oldest first), with `lag` known now, at Unix time
/// `now`. None before the first pass. `phase` is "finished" or, for a pass that did not
/// end, "interrupted"; a running pass driver sets its own.
pub fn status(passes: &[(u64, PassRecord)], lag: Lag, now: u64) -> Option<SyncStatus> {
    let (n, current) = passes.last()?;
    let finished: Vec<&PassRecord> = passes
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.finished.is_some())
        .collect();
    let mut st = SyncStatus {
        pass: *n,
        kind: current.kind.clone(),
        phase: match current.finished {
            Some(_) => "finished".into(),
            None => "interrupted (run it again to finish the pass)".into(),
        },
        passes_finished: finished.len() as u64,
        lag_objects: lag.objects,
        lag_bytes: lag.bytes,
        ..Default::default()
    };
    let Some(last) = finished.last() else {
        return Some(st);
    };
    st.last_pass_secs = last.secs();
    st.last_listing_secs = last.listing_secs;
    st.last_new = last.new;
    st.last_changed = last.changed;
    st.last_deleted = last.deleted;
    st.last_unchanged = last.unchanged;
    st.last_failed = last.failed;
    st.last_deletions = last.deletions.clone();
    if let Some(prev) = finished.iter().rev().nth(1) {
        let hours = (last.started.saturating_sub(prev.started)).max(1) as f64 / HOUR;
        st.change_objects_per_hour = changes(last) as f64 / hours;
        st.change_bytes_per_hour = (last.bytes_new + last.bytes_changed) as f64 / hours;
    }
    st.estimated_final_pass_secs = final_pass_secs(last, st.change_objects_per_hour, lag, now);
    Some(st)
}

/// A final pass started at `now`: it lists the source to find the changes, moves them,
/// then lists the source and the destination side by side to verify (so about two of
/// the last pass's listings), and moves what is known to differ plus what changed since
/// the last listing at the measured rate, each change costing what one cost in the last
/// pass beyond its listing.
fn final_pass_secs(last: &PassRecord, per_hour: f64, lag: Lag, now: u64) -> f64 {
    let listed_at = last.listed.unwrap_or(last.started);
    let since = now.saturating_sub(listed_at) as f64 / HOUR;
    let expected = lag.objects as f64 + per_hour * since;
    let per_change = (last.secs() - last.listing_secs).max(0.0) / changes(last).max(1) as f64;
    2.0 * last.listing_secs + expected * per_change
}

/// The figures as the lines `barge status` and `barge report` print.
pub fn describe(st: &SyncStatus) -> String {
    let mib = |b: f64| b / (1u64 << 20) as f64;
    let next = match st.next_pass_unix {
        Some(t) => format!(
            ", the next starts in {} s",
            t.saturating_sub(crate::catalog::unix_now())
        ),
        None => String::new(),
    };
    let mut s = format!(
        "sync        pass {} ({}), {}; {} passes finished{next}\n",
        st.pass, st.kind, st.phase, st.passes_finished
    );
    s.push_str(&format!(
        "  lag       {} objects ({:.1} MiB) known to differ between source and destination\n",
        st.lag_objects,
        mib(st.lag_bytes as f64)
    ));
    if st.passes_finished == 0 {
        return s;
    }
    s.push_str(&format!(
        "  changes   {:.0} objects/h, {:.1} MiB/h at the source (between the last two passes)\n",
        st.change_objects_per_hour,
        mib(st.change_bytes_per_hour)
    ));
    s.push_str(&format!(
        "  last pass {:.0} s (listing {:.0} s): {} new, {} changed, {} deleted, {} unchanged, {} failed; deletions {}\n",
        st.last_pass_secs,
        st.last_listing_secs,
        st.last_new,
        st.last_changed,
        st.last_deleted,
        st.last_unchanged,
        st.last_failed,
        st.last_deletions
    ));
    s.push_str(&format!(
        "  cutover   a final pass started now would take about {:.0} s\n",
        st.estimated_final_pass_secs
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(started: u64, new: u64, changed: u64, deleted: u64) -> PassRecord {
        PassRecord {
            kind: "sync".into(),
            started,
            listed: Some(started + 60),
            finished: Some(started + 100),
            listing_secs: 60.0,
            new,
            changed,
            deleted,
            bytes_new: new * 1000,
            ..Default::default()
        }
    }

    #[test]
    fn change_rate_and_final_pass_come_from_the_last_two_passes() {
        assert!(status(&[], Lag::default(), 0).is_none());
        let first = vec![(1, pass(0, 1000, 0, 0))];
        let st = status(&first, Lag::default(), 100).unwrap();
        assert_eq!(st.change_objects_per_hour, 0.0, "one pass gives no rate");
        let two = vec![(1, pass(0, 1000, 0, 0)), (2, pass(7200, 30, 8, 2))];
        let st = status(
            &two,
            Lag {
                objects: 5,
                bytes: 0,
            },
            7260,
        )
        .unwrap();
        assert_eq!((st.pass, st.passes_finished), (2, 2));
        assert_eq!(st.change_objects_per_hour, 20.0, "40 changes in 2 hours");
        assert_eq!(st.change_bytes_per_hour, 15_000.0);
        // 2 listings of 60 s, plus 5 known changes at (100 - 60) / 40 s each.
        assert_eq!(st.estimated_final_pass_secs, 125.0);
        let mut running = two.clone();
        running.push((3, PassRecord::default()));
        let st = status(&running, Lag::default(), 7260).unwrap();
        assert_eq!(st.pass, 3);
        assert!(st.phase.starts_with("interrupted"));
        assert_eq!(st.last_changed, 8, "figures of the last finished pass");
    }
}

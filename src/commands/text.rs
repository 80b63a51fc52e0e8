//! The plain-text form of each stage's outcome, as the CLI prints it and the daemon
//! logs it.

use std::fmt::Write;

use super::Timed;
use crate::drain::DrainSummary;
use crate::ingest::IngestSummary;
use crate::verify::VerifyReport;

/// Objects listed per kind at most (missing, extra, ...); the report and `--json` have all.
const LISTED_PER_KIND: usize = 20;

/// Bytes as GiB.
pub fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Bytes per second as MiB/s.
fn mib_per_sec(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
}

/// The ingest's totals, then each failure and why it stopped early.
pub fn ingest(t: &Timed<IngestSummary>) -> String {
    let s = &t.summary;
    let ratio = if s.bytes_new > 0 {
        (s.bytes_new + s.bytes_dedup) as f64 / s.bytes_new as f64
    } else {
        1.0
    };
    let mut out = format!(
        "ingest: {} listed, {} staged, {} unchanged, {} failed; {:.3} GiB read in {:.1}s ({:.0} MiB/s)\n",
        s.listed,
        s.staged,
        s.unchanged,
        s.failed,
        gib(s.bytes_staged),
        t.secs,
        mib_per_sec(s.bytes_staged, t.secs)
    );
    let _ = writeln!(
        out,
        "staging: {} new chunks ({:.3} GiB, {:.3} GiB sealed), {} deduplicated ({:.3} GiB); run dedup ratio {:.2}; io: {}",
        s.chunks_new,
        gib(s.bytes_new),
        gib(s.bytes_sealed),
        s.chunks_dedup,
        gib(s.bytes_dedup),
        ratio,
        s.io_engine
    );
    if s.vanished > 0 {
        let _ = writeln!(
            out,
            "inventory: {} listed objects had vanished from the source since the inventory was taken (not part of the move)",
            s.vanished
        );
    }
    if s.excluded > 0 {
        let _ = writeln!(
            out,
            "filter: {} listed objects left out by the filter",
            s.excluded
        );
    }
    if s.skipped > 0 {
        let _ = writeln!(
            out,
            "skipped: {} entries of the source were left out of the move (not regular files, or refused){}",
            s.skipped,
            if s.skipped_shown.iter().any(|(_, k)| k == "symbolic link") {
                " (--follow-symlinks follows links)"
            } else {
                ""
            }
        );
        for (k, kind) in &s.skipped_shown {
            let _ = writeln!(out, "skipped: {k} ({kind})");
        }
    }
    failures(&mut out, &s.failures, s.stopped_early.as_deref());
    out
}

/// The drain's totals, then each failure and why it stopped early.
pub fn drain(t: &Timed<DrainSummary>) -> String {
    let s = &t.summary;
    let mut out = format!(
        "drain: {} objects ({:.3} GiB) written in {:.1}s ({:.0} MiB/s), {} failed; {} of them ({:.3} GiB) copied server-side from identical content\n",
        s.drained,
        gib(s.bytes),
        t.secs,
        mib_per_sec(s.bytes, t.secs),
        s.failed,
        s.copied,
        gib(s.copied_bytes)
    );
    if s.chunks_from_memory > 0 {
        let _ = writeln!(
            out,
            "drain: {} chunks read from memory (staged moments ago by this run), {} from staging",
            s.chunks_from_memory, s.chunks_from_staging
        );
    }
    failures(&mut out, &s.failures, s.stopped_early.as_deref());
    out
}

/// One line per failed object, and why the run stopped early.
fn failures(out: &mut String, failed: &[(String, String)], stopped_early: Option<&str>) {
    for (k, r) in failed {
        let _ = writeln!(out, "failed: {k}: {r}");
    }
    if let Some(why) = stopped_early {
        let _ = writeln!(out, "stopped early: {why}");
    }
}

/// The verify's counts, the first objects of each kind of difference, the source
/// comparison when a source was listed, and the verdict.
pub fn verify(r: &VerifyReport, full: bool, with_source: bool) -> String {
    let how = if full {
        "full: content BLAKE3"
    } else {
        "cheap: presence and size"
    };
    let mut out = format!(
        "verify ({how}): {} expected, {} present, {} match; {} missing, {} extra, {} differing\n",
        r.expected,
        r.present,
        r.matched,
        r.missing.len(),
        r.extra.len(),
        r.differing.len()
    );
    list(&mut out, "missing", r.missing.iter());
    list(&mut out, "extra", r.extra.iter());
    for (k, why) in r.differing.iter().take(LISTED_PER_KIND) {
        let _ = writeln!(out, "differs: {k}: {why}");
    }
    if with_source {
        let _ = writeln!(
            out,
            "source: {} listed, {} not in the catalog, {} changed since staged, {} gone from it{}",
            r.source_listed,
            r.source_only.len(),
            r.changed_at_source.len(),
            r.gone_at_source.len(),
            if r.mirror {
                ""
            } else {
                " (a move copies: not counted)"
            }
        );
        list(&mut out, "only at the source", r.source_only.iter());
        list(
            &mut out,
            "changed at the source",
            r.changed_at_source.iter(),
        );
        if r.mirror {
            list(&mut out, "gone from the source", r.gone_at_source.iter());
        }
    }
    let _ = writeln!(out, "verdict: {}", if r.ok() { "DONE" } else { "NOT DONE" });
    out
}

/// `label: key` for the first keys.
fn list<'a>(out: &mut String, label: &str, keys: impl Iterator<Item = &'a String>) {
    for k in keys.take(LISTED_PER_KIND) {
        let _ = writeln!(out, "{label}: {k}");
    }
}

/// Most unfinished key ranges `barge status` names one by one.
const RANGES_SHOWN: usize = 8;

/// The listing's key ranges for `barge status`: how many are done, then each unfinished
/// one with where it resumes (empty when there are none).
pub fn listing_ranges(ranges: &[barge_tui::model::ListingRange]) -> String {
    if ranges.is_empty() {
        return String::new();
    }
    let done = ranges.iter().filter(|r| r.done).count();
    let mut out = format!("listing     {done} of {} key ranges done\n", ranges.len());
    let open: Vec<_> = ranges.iter().filter(|r| !r.done).collect();
    for r in open.iter().take(RANGES_SHOWN) {
        let name = if r.range.is_empty() {
            "(first)"
        } else {
            &r.range
        };
        out.push_str(&format!(
            "  range {name}: listed up to {}, ends at {}\n",
            r.after.as_deref().unwrap_or("(nothing yet)"),
            r.until.as_deref().unwrap_or("the last key"),
        ));
    }
    if open.len() > RANGES_SHOWN {
        out.push_str(&format!("  ... and {} more\n", open.len() - RANGES_SHOWN));
    }
    out
}

/// One sync or cutover pass: what its listing found and what it did.
pub fn pass(p: &super::sync::PassOutcome) -> String {
    let r = &p.record;
    let mut out = format!(
        "pass {} ({}, run {} of it): {} new ({:.3} GiB), {} changed ({:.3} GiB), {} unchanged, {} deleted ({:.3} GiB), {} vanished, {} failed; listing {} in {:.1}s\n",
        p.number,
        r.kind,
        r.runs,
        r.new,
        gib(r.bytes_new),
        r.changed,
        gib(r.bytes_changed),
        r.unchanged,
        r.deleted,
        gib(r.bytes_deleted),
        r.vanished,
        r.failed,
        if r.listing_complete {
            "complete"
        } else {
            "incomplete"
        },
        r.listing_secs
    );
    let _ = writeln!(out, "deletions: {}", r.deletions);
    if let Some(d) = &p.deletions {
        list(&mut out, "gone from the source", d.keys.iter());
        for (k, why) in d.failed.iter().take(LISTED_PER_KIND) {
            let _ = writeln!(out, "delete failed: {k}: {why}");
        }
        if d.kept_foreign > 0 {
            let _ = writeln!(
                out,
                "kept at the destination: {} objects gone from the source whose key holds an object barge did not write (forgotten; verify counts them as extra)",
                d.kept_foreign
            );
        }
        for (k, why) in d.kept_foreign_keys.iter().take(LISTED_PER_KIND) {
            let _ = writeln!(out, "kept (not barge's): {k}: {why}");
        }
    }
    let _ = writeln!(
        out,
        "pass {}: {}",
        p.number,
        r.outcome.as_deref().unwrap_or("interrupted")
    );
    out
}

/// Where the cutover certificate went, and its verdict.
pub fn certificate(c: &super::sync::Certificate, written: &[String]) -> String {
    let mut out = String::new();
    for w in written {
        let _ = writeln!(out, "certificate: {w}");
    }
    let _ = writeln!(
        out,
        "digest: {} {} over {} objects ({:.3} GiB)",
        c.digest.algorithm,
        c.digest.value,
        c.objects,
        gib(c.bytes)
    );
    let _ = writeln!(out, "cutover: {}", c.verdict);
    out
}

/// The fleet's verdict, a line per shard.
pub fn fleet(f: &crate::fleet::Fleet) -> String {
    let mut out = format!(
        "fleet: plan {} of {} at {}: {} shards, {} objects ({:.3} GiB) reported\n",
        f.plan_id,
        f.source,
        f.place,
        f.shards.len(),
        f.objects,
        gib(f.bytes)
    );
    for s in &f.shards {
        let _ = writeln!(out, "shard {:>4}  {:<10} {}", s.shard, s.state, s.verdict);
    }
    let _ = writeln!(out, "verdict     {}", f.verdict);
    for s in f.shards.iter().filter(|s| s.state != "invalid") {
        let Some(r) = &s.report else { continue };
        for e in &r.left_out_entries {
            let _ = writeln!(out, "left out    shard {}: {}: {}", s.shard, e.key, e.why);
        }
        let more = r.left_out.saturating_sub(r.left_out_entries.len() as u64);
        if more > 0 {
            let _ = writeln!(out, "left out    shard {}: ... and {more} more", s.shard);
        }
    }
    out
}

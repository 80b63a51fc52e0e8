//! Stage 4b: the "definition of done" from the catalog: totals, dedup, failures, verdict.

use serde::Serialize;

use crate::catalog::{ObjectRecord, ObjectState, RunRecord, SegmentState};
use crate::error::Result;
use crate::node::Node;
use crate::object::ObjectKey;

/// Everything `barge report` and `barge status` print.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub objects: u64,
    pub listed: u64,
    pub staged: u64,
    pub drained: u64,
    pub verified: u64,
    pub failed: u64,
    /// Objects gone from the source that a sync pass is deleting at the destination.
    pub deleting: u64,
    /// Sum of object sizes.
    pub logical_bytes: u64,
    /// Sum of sizes of objects whose content is staged (or beyond).
    pub staged_logical_bytes: u64,
    /// Plaintext bytes of distinct chunks referenced by objects.
    pub unique_bytes: u64,
    pub chunks: u64,
    /// Bytes in segment files (headers, records, tags).
    pub sealed_bytes: u64,
    pub segments: u64,
    pub segments_open: u64,
    /// staged_logical_bytes / unique_bytes.
    pub dedup_ratio: f64,
    pub drained_bytes: u64,
    /// Objects written to the destination more than once after being recorded drained
    /// (must stay 0: a re-run never re-uploads finished work).
    pub uploaded_twice: u64,
    /// The first of those, by name (at most [`crate::ingest::MAX_FAILURES_SHOWN`]).
    pub uploaded_twice_keys: Vec<String>,
    /// Staged objects per source checksum verified: "md5", "md5-multipart", "unchecked".
    pub checks: std::collections::BTreeMap<String, u64>,
    /// Of the staged objects whose source checksum could not be verified: how many per
    /// reason (quoted values such as ETags elided, so that objects group).
    pub unchecked_reasons: std::collections::BTreeMap<String, u64>,
    pub io_engine: Option<String>,
    pub drives: Vec<String>,
    pub failures: Vec<Failure>,
    pub runs: Vec<RunLine>,
    /// What the last ingest's listing covered (None before any ingest, or after an
    /// import, whose objects come from the drives' manifests).
    pub listing: Option<crate::catalog::ListingMark>,
    /// The filter of the last ingest (None: every object of the source).
    pub filter: Option<crate::filter::FilterSpec>,
    /// The key ranges an incomplete listing left, where the next ingest resumes them.
    pub listing_left: Vec<barge_tui::model::ListingRange>,
    /// Entries the last listing left out of the move (symbolic links, sockets, devices
    /// and FIFOs of a directory source, keys under `.barge/`): a DONE says how many.
    pub left_out: u64,
    /// The first of them, by name, with why.
    pub left_out_entries: Vec<crate::catalog::LeftOut>,
    pub done: bool,
    pub verdict: String,
    /// Seconds from the first run's start to the last run's end (wall time of the move).
    pub elapsed_secs: u64,
    /// Sum of the runs' own durations (runs killed before they ended count as 0).
    pub busy_secs: u64,
    /// Bytes the catalog takes on disk now (tables, log, manifest; `fsck` compacts it).
    pub catalog_bytes: u64,
    /// `catalog_bytes` per object.
    pub catalog_bytes_per_object: f64,
    /// The sync passes' figures (None before the first pass).
    pub sync: Option<barge_tui::model::SyncStatus>,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub key: String,
    pub stage: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct RunLine {
    pub id: u64,
    pub command: String,
    pub started: u64,
    pub finished: Option<u64>,
    pub outcome: Option<String>,
    pub counters: Vec<(String, u64)>,
}

/// A digest over every object of the catalog (see `commands::sync::DIGEST_LINES`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct CatalogDigest {
    /// Objects in the digest (those with a content hash), and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Objects without a content hash (never staged): not in the digest.
    pub unhashed: u64,
    /// BLAKE3, hex.
    pub value: String,
}

/// BLAKE3 over one line per object in ascending key order: `hex(key) size
/// hex(BLAKE3 of the content)`; a walk of the catalog, nothing held in memory.
pub fn digest(catalog: &crate::catalog::Catalog) -> Result<CatalogDigest> {
    let mut h = blake3::Hasher::new();
    let mut d = CatalogDigest::default();
    for item in catalog.objects()? {
        let (key, rec) = item?;
        let Some(sum) = rec.blake3 else {
            d.unhashed += 1;
            continue;
        };
        d.objects += 1;
        d.bytes += rec.size;
        let line = format!(
            "{} {} {}\n",
            hex::encode(key.as_bytes()),
            rec.size,
            hex::encode(sum)
        );
        h.update(line.as_bytes());
    }
    d.value = h.finalize().to_hex().to_string();
    Ok(d)
}

/// Builds the report by scanning the catalog.
pub fn build(node: &Node) -> Result<Report> {
    let mut r = Report::default();
    for item in node.catalog.objects()? {
        let (key, rec) = item?;
        r.count_object(&key, &rec);
    }
    for item in node.catalog.chunks()? {
        let (_, c) = item?;
        if c.refs > 0 && c.sealed_len > 0 {
            r.chunks += 1;
            r.unique_bytes += c.plain_len as u64;
        }
    }
    for item in node.catalog.segments()? {
        let (_, s) = item?;
        r.segments += 1;
        r.sealed_bytes += s.data_len;
        if s.state == SegmentState::Open {
            r.segments_open += 1;
        }
    }
    r.catalog_bytes = node.catalog.disk_bytes()?;
    r.catalog_bytes_per_object = r.catalog_bytes as f64 / r.objects.max(1) as f64;
    r.dedup_ratio = if r.unique_bytes > 0 {
        r.staged_logical_bytes as f64 / r.unique_bytes as f64
    } else {
        1.0
    };
    r.io_engine = node
        .catalog
        .meta_get(crate::catalog::META_IO_ENGINE)?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    r.drives = node.staging.drives.clone();
    r.add_runs(node.catalog.runs()?);
    r.listing = node.catalog.listing_mark()?;
    if let Some(m) = &r.listing {
        r.left_out = m.left_out;
        r.left_out_entries = m.left_out_shown.clone();
    }
    r.listing_left = crate::checkpoint::as_status(&crate::checkpoint::saved(&node.catalog)?);
    r.filter = crate::filter::recorded(&node.catalog)?;
    let passes = node.catalog.passes()?;
    let last = passes.iter().rev().find(|p| p.1.finished.is_some());
    let lag = crate::passes::Lag::of(&r, last.map(|p| &p.1));
    r.sync = crate::passes::status(&passes, lag, crate::catalog::unix_now());
    r.set_verdict();
    Ok(r)
}

impl Report {
    /// Counts one catalog object: its size, state, source check and uploads.
    fn count_object(&mut self, key: &ObjectKey, rec: &ObjectRecord) {
        self.objects += 1;
        self.logical_bytes += rec.size;
        if rec.state.is_staged_or_later() {
            self.staged_logical_bytes += rec.size;
        }
        if rec.state.is_staged_or_later() {
            let kind = rec.checked.split(':').next().unwrap_or("").trim();
            let kind = if kind.is_empty() { "unchecked" } else { kind };
            *self.checks.entry(kind.to_string()).or_default() += 1;
            if kind == "unchecked" {
                let why = rec.checked.split_once(':').map_or("", |w| w.1);
                let mut why = elide_quoted(why.trim());
                if why.is_empty() {
                    why = "no reason recorded (an older catalog)".into();
                }
                if self.unchecked_reasons.len() >= MAX_REASONS
                    && !self.unchecked_reasons.contains_key(&why)
                {
                    why = "other reasons".into();
                }
                *self.unchecked_reasons.entry(why).or_default() += 1;
            }
        }
        if rec.uploads > 1 {
            self.uploaded_twice += 1;
            if self.uploaded_twice_keys.len() < crate::ingest::MAX_FAILURES_SHOWN {
                self.uploaded_twice_keys
                    .push(format!("{key} ({} uploads)", rec.uploads));
            }
        }
        match &rec.state {
            ObjectState::Listed => self.listed += 1,
            ObjectState::Staged => self.staged += 1,
            ObjectState::Drained => {
                self.drained += 1;
                self.drained_bytes += rec.size;
            }
            ObjectState::Verified => {
                self.verified += 1;
                self.drained_bytes += rec.size;
            }
            ObjectState::Deleting => self.deleting += 1,
            ObjectState::Failed { stage, reason } => {
                self.failed += 1;
                self.failures.push(Failure {
                    key: key.to_string(),
                    stage: stage.clone(),
                    reason: reason.clone(),
                });
            }
        }
    }

    /// Adds the runs, and the wall and busy time they span.
    fn add_runs(&mut self, runs: Vec<(u64, RunRecord)>) {
        for (id, run) in runs {
            self.runs.push(RunLine {
                id,
                command: run.command,
                started: run.started,
                finished: run.finished,
                outcome: run.outcome,
                counters: run.counters,
            });
        }
        let first = self.runs.iter().map(|x| x.started).min();
        let last = self
            .runs
            .iter()
            .filter_map(|x| x.finished)
            .chain(self.runs.iter().map(|x| x.started))
            .max();
        self.elapsed_secs = match (first, last) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        self.busy_secs = self
            .runs
            .iter()
            .filter_map(|x| x.finished.map(|f| f.saturating_sub(x.started)))
            .sum();
    }

    /// The definition of done: the last ingest listed the whole source, every object is
    /// at the destination, and a verify passed after the last run that changed either
    /// side (ingest, drain, migrate).
    fn set_verdict(&mut self) {
        let left = self.listed + self.staged + self.failed + self.deleting;
        let unlisted = self.listing.as_ref().and_then(|m| m.incomplete());
        let unverified = self.unverified();
        // A whole listing may leave no record at all: every key of it was taken over by
        // the gateway (written or deleted by the application), or the source is empty.
        let listed = self.objects > 0 || self.listing.is_some();
        self.done = listed && left == 0 && unlisted.is_none() && unverified.is_none();
        self.verdict = if let Some(why) = unlisted {
            if left > 0 {
                format!(
                    "NOT DONE: {why}; {left} of {} objects listed so far are left",
                    self.objects
                )
            } else {
                format!("NOT DONE: {why}")
            }
        } else if !listed {
            "NOT DONE: nothing has been listed yet".into()
        } else if left > 0 {
            let deleting = match self.deleting {
                0 => String::new(),
                n => format!(", {n} gone from the source and not yet deleted at the destination"),
            };
            format!(
                "NOT DONE: {left} of {} objects left ({} not staged, {} staged but not drained, {} failed{deleting})",
                self.objects, self.listed, self.staged, self.failed
            )
        } else if let Some(why) = unverified {
            format!(
                "NOT DONE: all {} objects are drained, but {why}",
                self.objects
            )
        } else if self.left_out > 0 {
            format!(
                "DONE, with {} entries left out (listed below): all {} objects are at the destination, verified",
                self.left_out, self.objects
            )
        } else {
            format!(
                "DONE: all {} objects are at the destination, verified",
                self.objects
            )
        };
    }

    /// Why the destination is not known to match: no verify passed after the last run
    /// that changed either side (None when one did).
    pub fn unverified(&self) -> Option<String> {
        let change = self
            .runs
            .iter()
            .filter(|r| {
                matches!(
                    r.command.as_str(),
                    "drain" | "ingest" | "migrate" | "delete"
                )
            })
            .max_by_key(|r| r.id)?;
        let verifies = self
            .runs
            .iter()
            .filter(|r| r.id > change.id && r.command.starts_with("verify"));
        match verifies.max_by_key(|r| r.id) {
            Some(v) if v.outcome.as_deref() == Some("ok") => None,
            Some(v) => Some(format!(
                "the last verify (run {}) ended {}: see its output, then drain and verify again",
                v.id,
                v.outcome
                    .as_deref()
                    .unwrap_or("without an outcome (interrupted)")
            )),
            None => Some(format!(
                "no verify has passed since the last {} (run {}): run `barge verify`",
                change.command, change.id
            )),
        }
    }
}

/// Most distinct reasons for an unverified source checksum the report counts apart.
const MAX_REASONS: usize = 20;

/// `s` with every double-quoted part (an ETag, a key) replaced by `"…"`.
fn elide_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        out.push_str("\"…\"");
        while let Some(q) = chars.next() {
            match q {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
    }
    out
}

/// One CSV field (RFC 4180 quoting). A field a spreadsheet would take for a formula (it
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return: an object name or a
/// server's message can start so) is prefixed with `'`, which spreadsheets show as text;
/// the CSV then says the name with that one quote in front.
pub(crate) fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

impl Report {
    /// Failures as CSV: `key,stage,reason`.
    pub fn failures_csv(&self) -> String {
        let mut out = String::from("key,stage,reason\n");
        for f in &self.failures {
            out.push_str(&format!(
                "{},{},{}\n",
                csv_field(&f.key),
                csv_field(&f.stage),
                csv_field(&f.reason)
            ));
        }
        out
    }

    /// Human-readable text.
    pub fn to_text(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let mut s = String::new();
        s.push_str(&format!(
            "objects     {} ({:.3} GiB): {} listed, {} staged, {} drained, {} verified, {} failed\n",
            self.objects,
            gib(self.logical_bytes),
            self.listed,
            self.staged,
            self.drained,
            self.verified,
            self.failed
        ));
        s.push_str(&format!(
            "staging     {} unique chunks, {:.3} GiB unique of {:.3} GiB logical, {:.3} GiB sealed in {} segments ({} open)\n",
            self.chunks,
            gib(self.unique_bytes),
            gib(self.staged_logical_bytes),
            gib(self.sealed_bytes),
            self.segments,
            self.segments_open
        ));
        s.push_str(&format!("dedup ratio {:.2}\n", self.dedup_ratio));
        s.push_str(&format!(
            "catalog     {:.1} MiB, {:.0} bytes per object (`barge fsck` compacts it)\n",
            self.catalog_bytes as f64 / (1u64 << 20) as f64,
            self.catalog_bytes_per_object
        ));
        let checks: Vec<String> = self
            .checks
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        s.push_str(&format!(
            "checksums   {}\n",
            if checks.is_empty() {
                "-".into()
            } else {
                checks.join(", ")
            }
        ));
        if let Some(f) = &self.filter {
            s.push_str(&format!("filter      {}\n", f.describe()));
        }
        for (why, n) in &self.unchecked_reasons {
            s.push_str(&format!("  unchecked {n}: {why}\n"));
        }
        s.push_str(&format!(
            "moved       {:.3} GiB to the destination\n",
            gib(self.drained_bytes)
        ));
        s.push_str(&format!(
            "io engine   {}\n",
            self.io_engine
                .as_deref()
                .unwrap_or("(no staging writes yet)")
        ));
        s.push_str(&format!("drives      {}\n", self.drives.join(", ")));
        s.push_str(&format!(
            "time        {} s from the first run to the last ({} s in {} runs)\n",
            self.elapsed_secs,
            self.busy_secs,
            self.runs.len()
        ));
        for f in self.failures.iter().take(20) {
            s.push_str(&format!(
                "failed      {} [{}]: {}\n",
                f.key, f.stage, f.reason
            ));
        }
        if self.failures.len() > 20 {
            s.push_str(&format!(
                "failed      ... and {} more (see --csv)\n",
                self.failures.len() - 20
            ));
        }
        if let Some(st) = &self.sync {
            s.push_str(&crate::passes::describe(st));
        }
        s.push_str(&format!("verdict     {}\n", self.verdict));
        s.push_str(&self.left_out_text());
        s
    }

    /// What the last listing left out, one line each (after the verdict, which counts
    /// them).
    pub fn left_out_text(&self) -> String {
        let mut s = String::new();
        for e in &self.left_out_entries {
            s.push_str(&format!("left out    {}: {}\n", e.key, e.why));
        }
        let more = self
            .left_out
            .saturating_sub(self.left_out_entries.len() as u64);
        if more > 0 {
            s.push_str(&format!(
                "left out    ... and {more} more (named in the log of the ingest that listed them)\n"
            ));
        }
        s
    }
}

/// Width and height of one panel of the report chart, in SVG user units (pixels).
pub const CHART_W: f64 = 720.0;
pub const CHART_H: f64 = 300.0;

/// Margins of a panel: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (60.0, 20.0, 40.0, 40.0);

/// One line of a panel: its name, colour and (seconds, rate) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// An SVG chart of the most recent command that kept samples (`catalog samples`), or
/// None when there are fewer than two: staged and drained MB/s in one panel, objects/s
/// below it (in a small-object move MB/s says little). Hand-written: polylines, axes and
/// labels do not justify a plotting crate and its font stack.
pub fn chart_svg(samples: &[(u64, u64, crate::catalog::SampleRecord)]) -> Option<String> {
    let session = samples.iter().map(|s| s.0).max()?;
    let pts: Vec<&(u64, u64, crate::catalog::SampleRecord)> =
        samples.iter().filter(|s| s.0 == session).collect();
    if pts.len() < 2 {
        return None;
    }
    let t0 = pts[0].1;
    let rate = |f: fn(&crate::catalog::SampleRecord) -> u64, scale: f64| {
        let mut out = vec![];
        for w in pts.windows(2) {
            let dt = (w[1].1.saturating_sub(w[0].1)) as f64 / 1000.0;
            if dt > 0.0 {
                let x = (w[1].1 - t0) as f64 / 1000.0;
                out.push((x, f(&w[1].2).saturating_sub(f(&w[0].2)) as f64 / dt / scale));
            }
        }
        out
    };
    let bytes = [
        ("staged", "#0a84c1", rate(|r| r.staged_bytes, 1e6)),
        ("drained", "#c1308a", rate(|r| r.drained_bytes, 1e6)),
    ];
    let objects = [
        ("staged", "#0a84c1", rate(|r| r.staged_objects, 1.0)),
        ("drained", "#c1308a", rate(|r| r.drained_objects, 1.0)),
    ];
    let xmax = bytes[0].2.last().map_or(1.0, |p| p.0).max(1.0);
    let total_s = (pts[pts.len() - 1].1 - t0) as f64 / 1000.0;
    let last = &pts[pts.len() - 1].2;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{h}" viewBox="0 0 {CHART_W} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{l}" y="20" font-size="14" font-weight="bold">barge {cmd}: throughput over {total_s:.0} s ({moved:.0} MB, {n} objects drained)</text>
"#,
        h = 2.0 * CHART_H,
        l = MARGIN.0,
        cmd = last.command,
        moved = last.drained_bytes as f64 / 1e6,
        n = last.drained_objects,
    );
    panel(&mut svg, 0.0, "MB/s", xmax, &bytes);
    panel(&mut svg, CHART_H, "objects/s", xmax, &objects);
    svg.push_str("</svg>\n");
    Some(svg)
}

/// Draws one panel (axes, labels, a polyline per series) at vertical offset `top`.
fn panel(svg: &mut String, top: f64, unit: &str, xmax: f64, series: &[Series]) {
    let (l, r, t, b) = MARGIN;
    let t = top + t;
    let (pw, ph) = (CHART_W - l - r, CHART_H - MARGIN.2 - b);
    let ymax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let (y0, x1, mid) = (t + ph, l + pw, t + ph / 2.0);
    svg.push_str(&format!(
        r#"<line x1="{l}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>
<line x1="{l}" y1="{t}" x2="{l}" y2="{y0}" stroke="black"/>
<text x="{l}" y="{yl}" text-anchor="middle">0</text>
<text x="{x1}" y="{yl}" text-anchor="end">{xmax:.0} s</text>
<text x="{lx}" y="{ty}" text-anchor="end">{ymax:.0}</text>
<text x="{lx}" y="{y0}" text-anchor="end">0</text>
<text x="14" y="{mid}" transform="rotate(-90 14 {mid})" text-anchor="middle">{unit}</text>
"#,
        yl = y0 + 16.0,
        lx = l - 6.0,
        ty = t + 4.0,
    ));
    for (i, (name, color, data)) in series.iter().enumerate() {
        let points = data
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", l + x / xmax * pw, y0 - y / ymax * ph))
            .collect::<Vec<_>>()
            .join(" ");
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{points}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>\n",
            x1 - 70.0,
            t + 14.0 + 16.0 * i as f64
        ));
    }
}

#[cfg(test)]
mod chart_tests {
    use super::*;
    use crate::catalog::SampleRecord;

    #[test]
    fn chart_plots_the_latest_session_as_rates() {
        let rec = |staged: u64, drained: u64| SampleRecord {
            command: "migrate".into(),
            staged_bytes: staged,
            drained_bytes: drained,
            staged_objects: staged / 100_000,
            drained_objects: drained / 200_000,
            ..Default::default()
        };
        let mut s = vec![(1, 1_000, rec(0, 0)), (1, 2_000, rec(9_000_000, 0))];
        s.push((5, 10_000, rec(0, 0)));
        s.push((5, 11_000, rec(4_000_000, 2_000_000)));
        s.push((5, 12_000, rec(8_000_000, 6_000_000)));
        let svg = chart_svg(&s).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("barge migrate: throughput over 2 s (6 MB, 30 objects drained)"),
            "{svg}"
        );
        // MB/s and objects/s, staged and drained each.
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains(">objects/s</text>"), "{svg}");
        assert!(chart_svg(&s[..1]).is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_never_start_a_formula() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("plain/key"), "plain/key");
    }

    #[test]
    fn unchecked_reasons_group_without_their_etags() {
        assert_eq!(
            elide_quoted(r#"ETag "abc\"d-3" is not an MD5"#),
            r#"ETag "…" is not an MD5"#
        );
        assert_eq!(elide_quoted("Swift large object"), "Swift large object");
    }
}

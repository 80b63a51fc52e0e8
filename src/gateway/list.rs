//! A listing of the move's bucket as clients see it: the source's own listing, read
//! page by page, merged in key order with the gateway's records (a tombstone hides the
//! key, a write shows it as written), cut into S3 pages. A source that cannot list
//! fails the request: a partial page is never presented as whole.

use super::route::{View, view_of, view_of_meta};
use crate::backend::Source;
use crate::catalog::Catalog;
use crate::catalog::gateway::{GatewayRecord, GatewayWrite};
use crate::error::Result;
use crate::object::ObjectKey;

/// Keys asked of the source per request while filling one page.
const SOURCE_BATCH: usize = 1000;

/// The highest character: `prefix` followed by it sorts after every key under `prefix`,
/// so a listing jumps past a common prefix it has shown.
const PAST: char = '\u{10FFFF}';

/// One page of a listing.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    pub objects: Vec<(String, View)>,
    /// Common prefixes (with a delimiter), in key order among the objects.
    pub prefixes: Vec<String>,
    /// Where the next page starts after (the last key or prefix of this one), if any
    /// entry is left.
    pub next: Option<String>,
}

/// What one page asks for.
#[derive(Debug, Clone, Default)]
pub struct Ask<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Only keys (and prefixes) after this one.
    pub after: &'a str,
    /// At most this many objects and prefixes together (0..=1000).
    pub max: usize,
}

/// A page of the merged listing. Without a source (after a proven cutover) the catalog's
/// object records stand for the source's listing.
pub async fn page(src: Option<&dyn Source>, cat: &Catalog, ask: &Ask<'_>) -> Result<Page> {
    let mut m = Merge::new(ask);
    let mut cursor = m.start();
    loop {
        let (source, upto) = match src {
            Some(src) => source_batch(src, ask.prefix, cursor.as_deref()).await?,
            None => catalog_batch(cat, ask.prefix, cursor.as_deref())?,
        };
        let records = records_between(cat, ask.prefix, cursor.as_deref(), upto.as_deref())?;
        if m.feed(merge(source, records)) {
            return Ok(m.page);
        }
        match upto {
            Some(u) => cursor = Some(m.resume_after(u)),
            None => return Ok(m.page),
        }
    }
}

/// Entries of one batch of the source's listing, and the last key it listed if more
/// follow.
type Batch = (Vec<(String, View)>, Option<String>);

/// One batch of the source's listing under `prefix` after `after`, and the last key it
/// listed if more follow (shown or not: a refused name is listed but not shown).
async fn source_batch(src: &dyn Source, prefix: &str, after: Option<&str>) -> Result<Batch> {
    let batch = src.list_page(prefix, after, SOURCE_BATCH).await?;
    let upto = match batch.more {
        true => batch.entries.last().map(|e| e.meta.key.to_string()),
        false => None,
    };
    let out: Vec<(String, View)> = batch
        .entries
        .iter()
        .filter(|e| e.refused.is_none())
        .filter_map(|e| {
            let k = String::from_utf8(e.meta.key.as_bytes().to_vec()).ok()?;
            Some((k, view_of_meta(&e.meta)))
        })
        .collect();
    Ok((out, upto))
}

/// The catalog's object records as the source's listing (one batch, as
/// [`source_batch`]).
fn catalog_batch(cat: &Catalog, prefix: &str, after: Option<&str>) -> Result<Batch> {
    let under = Under {
        prefix,
        after,
        upto: None,
    };
    let out = under.scan(cat.objects_from(under.start())?, SOURCE_BATCH)?;
    let upto = match out.len() == SOURCE_BATCH {
        true => out.last().map(|(k, _)| k.clone()),
        false => None,
    };
    let out = out.into_iter().map(|(k, rec)| (k, view_of(&rec))).collect();
    Ok((out, upto))
}

/// The gateway's records under `prefix`, after `after`, up to `upto` (inclusive; None:
/// to the end).
fn records_between(
    cat: &Catalog,
    prefix: &str,
    after: Option<&str>,
    upto: Option<&str>,
) -> Result<Vec<(String, GatewayRecord)>> {
    let under = Under {
        prefix,
        after,
        upto,
    };
    under.scan(cat.gateway_records_from(under.start())?, usize::MAX)
}

/// The keys of a key-ordered catalog scan a listing takes: under `prefix`, after
/// `after`, up to `upto` (inclusive). A key that is not UTF-8 is not an S3 key and is
/// left out.
struct Under<'a> {
    prefix: &'a str,
    after: Option<&'a str>,
    upto: Option<&'a str>,
}

impl Under<'_> {
    /// Where the scan starts.
    fn start(&self) -> &[u8] {
        self.after.unwrap_or("").max(self.prefix).as_bytes()
    }

    /// At most `limit` entries of `scan` (started at [`Under::start`]) within bounds.
    fn scan<T>(
        &self,
        scan: impl Iterator<Item = Result<(ObjectKey, T)>>,
        limit: usize,
    ) -> Result<Vec<(String, T)>> {
        let mut out = vec![];
        for r in scan {
            let (k, v) = r?;
            let Ok(k) = String::from_utf8(k.as_bytes().to_vec()) else {
                continue;
            };
            if self.after.is_some_and(|a| k.as_str() <= a) {
                continue;
            }
            if !k.starts_with(self.prefix) || self.upto.is_some_and(|u| k.as_str() > u) {
                break;
            }
            out.push((k, v));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}

/// The source's entries and the gateway's records merged in key order: a record wins
/// over the source's entry of its key; tombstones are left out.
fn merge(
    source: Vec<(String, View)>,
    records: Vec<(String, GatewayRecord)>,
) -> Vec<(String, View)> {
    let mut out = Vec::with_capacity(source.len() + records.len());
    let mut s = source.into_iter().peekable();
    let mut r = records.into_iter().peekable();
    loop {
        let take_record = match (s.peek(), r.peek()) {
            (None, None) => return out,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((sk, _)), Some((rk, _))) => rk <= sk,
        };
        if !take_record {
            out.extend(s.next());
            continue;
        }
        let Some((k, rec)) = r.next() else { continue };
        if s.peek().is_some_and(|(sk, _)| *sk == k) {
            s.next();
        }
        if let GatewayRecord::Written(w) = rec {
            out.push((k, written_view(w)));
        }
    }
}

/// Cuts merged entries into one page: the delimiter's common prefixes, `after`, `max`.
struct Merge<'a> {
    ask: &'a Ask<'a>,
    page: Page,
    count: usize,
    last_prefix: Option<String>,
}

impl<'a> Merge<'a> {
    fn new(ask: &'a Ask<'a>) -> Self {
        Merge {
            ask,
            page: Page::default(),
            count: 0,
            last_prefix: None,
        }
    }

    fn delimiter(&self) -> Option<&'a str> {
        self.ask.delimiter.filter(|d| !d.is_empty())
    }

    /// Where the source listing starts after: `after`, past its keys when it is a
    /// common prefix a previous page ended with.
    fn start(&self) -> Option<String> {
        let a = self.ask.after;
        if a.is_empty() {
            return None;
        }
        match self.delimiter() {
            Some(d) if a.len() > self.ask.prefix.len() && a.ends_with(d) => {
                Some(format!("{a}{PAST}"))
            }
            _ => Some(a.to_string()),
        }
    }

    /// Where the next batch starts after `upto`: past the last common prefix shown if
    /// `upto` is under it.
    fn resume_after(&self, upto: String) -> String {
        match &self.last_prefix {
            Some(cp) if upto.starts_with(cp.as_str()) => format!("{cp}{PAST}"),
            _ => upto,
        }
    }

    /// Takes entries in key order; true once the page is full and another entry showed
    /// that a next page exists.
    fn feed(&mut self, entries: Vec<(String, View)>) -> bool {
        let ask = self.ask;
        for (key, view) in entries {
            if !key.starts_with(ask.prefix) || key.as_str() <= ask.after {
                continue;
            }
            let cp = self.delimiter().and_then(|d| {
                key[ask.prefix.len()..]
                    .find(d)
                    .map(|i| key[..ask.prefix.len() + i + d.len()].to_string())
            });
            if let Some(cp) = &cp
                && (self.last_prefix.as_ref() == Some(cp) || ask.after.starts_with(cp.as_str()))
            {
                continue;
            }
            if self.count == ask.max {
                self.page.next = self.last_entry();
                return true;
            }
            self.count += 1;
            match cp {
                Some(cp) => {
                    self.page.prefixes.push(cp.clone());
                    self.last_prefix = Some(cp);
                }
                None => self.page.objects.push((key, view)),
            }
        }
        false
    }

    /// The last key or prefix of the page.
    fn last_entry(&self) -> Option<String> {
        let key = self.page.objects.last().map(|(k, _)| k.clone());
        match (key, &self.last_prefix) {
            (Some(k), Some(p)) => Some(k.max(p.clone())),
            (k, p) => k.or_else(|| p.clone()),
        }
    }
}

/// What a client sees of an object written through the gateway.
pub fn written_view(w: GatewayWrite) -> View {
    View {
        size: w.size,
        etag: w.etag,
        modified: Some(w.modified),
        content_type: w.content_type,
        user_meta: w.user_meta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(etag: &str) -> View {
        View {
            size: 1,
            etag: etag.into(),
            modified: None,
            content_type: None,
            user_meta: vec![],
        }
    }

    fn written() -> GatewayRecord {
        GatewayRecord::Written(GatewayWrite {
            size: 2,
            etag: "w".into(),
            modified: 1,
            content_type: None,
            user_meta: vec![],
            landed: None,
        })
    }

    /// The merged entries of a source and a gateway, as `page` feeds them (one batch).
    fn entries() -> Vec<(String, View)> {
        let source = ["a/1", "a/2", "b", "c/x/1", "d/1", "e"]
            .iter()
            .map(|k| (k.to_string(), view("s")))
            .collect();
        let mut records: Vec<(String, GatewayRecord)> = ["a/3", "b", "f"]
            .iter()
            .map(|k| (k.to_string(), written()))
            .collect();
        records.extend(
            ["d/1", "e"]
                .iter()
                .map(|k| (k.to_string(), GatewayRecord::Deleted { at: 1, left: None })),
        );
        records.sort_by(|a, b| a.0.cmp(&b.0));
        merge(source, records)
    }

    /// Every page of `prefix`/`delimiter` with `max`, concatenated.
    fn all(prefix: &str, delimiter: Option<&str>, max: usize) -> Vec<String> {
        let mut out = vec![];
        let mut after = String::new();
        loop {
            let ask = Ask {
                prefix,
                delimiter,
                after: &after,
                max,
            };
            let mut m = Merge::new(&ask);
            let start = m.start();
            let batch = entries()
                .into_iter()
                .filter(|(k, _)| start.as_deref().is_none_or(|s| k.as_str() > s))
                .collect();
            m.feed(batch);
            let p = m.page;
            assert!(p.objects.len() + p.prefixes.len() <= max);
            let mut got: Vec<String> = p.objects.iter().map(|(k, _)| k.clone()).collect();
            got.extend(p.prefixes.iter().cloned());
            got.sort();
            out.extend(got);
            match p.next {
                Some(n) => after = n,
                None => return out,
            }
        }
    }

    #[test]
    fn the_merge_hides_tombstones_shows_writes_and_pages_without_gaps() {
        let e = entries();
        let b = e.iter().find(|(k, _)| k == "b").unwrap();
        assert_eq!(b.1.etag, "w", "the write wins over the source's entry");
        let want = ["a/1", "a/2", "a/3", "b", "c/x/1", "f"];
        for max in 1..=7 {
            assert_eq!(all("", None, max), want, "max {max}");
        }
        // A prefix whose keys are all deleted (d/) is not shown.
        for max in 1..=5 {
            assert_eq!(all("", Some("/"), max), ["a/", "b", "c/", "f"], "max {max}");
        }
        assert_eq!(all("a/", Some("/"), 1), ["a/1", "a/2", "a/3"]);
        assert_eq!(all("c/", Some("/"), 2), ["c/x/"]);
        assert!(all("zz", None, 3).is_empty());
    }
}

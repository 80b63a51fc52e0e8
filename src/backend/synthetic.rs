//! Synthetic ends for burn-in and scale runs, with no store and no test tree:
//!
//! * `gen://?objects=N&size=1KiB-16KiB&dup=0.1&seed=S` lists `N` objects in key order
//!   (`gen/000000000000`, ...) and serves each one's bytes made up from its content
//!   number and the seed (a keyed BLAKE3 output stream), so a key always has the same
//!   bytes; a share `dup` of the objects repeat an earlier object's bytes (dedup finds
//!   them). Sizes are drawn from the range per content.
//! * `null://` takes every object, reads it to its end (the drain checks the rebuilt
//!   bytes against the object's BLAKE3 as they stream) and keeps nothing; it has
//!   nothing to list, so `verify` against it is refused.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::{
    Body, ContentCheck, Deleted, Destination, Expect, Listed, Opened, Payload, Placed, Reader,
    Source,
};
use crate::error::{Error, Result};
use crate::object::{ObjectKey, ObjectMeta};

/// Key prefix of the generated objects.
const KEY_PREFIX: &str = "gen/";
/// Digits of a generated key's number (keys sort as numbers).
const KEY_DIGITS: usize = 12;
/// Default size range of `gen://` objects.
const DEFAULT_SIZES: (u64, u64) = (1 << 10, 16 << 10);
/// Bytes generated per read.
const READ_PIECE: usize = 256 << 10;

/// `gen://`: see the module doc.
#[derive(Debug, Clone)]
pub struct GenSource {
    url: String,
    objects: u64,
    sizes: (u64, u64),
    /// Share of objects that repeat an earlier one, 0..=1.
    dup: f64,
    seed: u64,
}

impl GenSource {
    /// Parses `gen://?objects=N[&size=A[-B]][&dup=F][&seed=S]`; anything else is refused,
    /// named.
    pub fn new(url: &str) -> Result<Self> {
        let bad = |m: String| Error::option("--source", format!("{url}: {m}"));
        let query = url
            .strip_prefix("gen://")
            .map(|r| r.trim_start_matches('/').trim_start_matches('?'))
            .ok_or_else(|| bad("not a gen:// URL".into()))?;
        let mut g = GenSource {
            url: url.to_string(),
            objects: 0,
            sizes: DEFAULT_SIZES,
            dup: 0.0,
            seed: 0,
        };
        let mut objects = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "objects" => {
                    objects = Some(
                        v.parse()
                            .map_err(|_| bad(format!("objects={v}: not a count")))?,
                    )
                }
                "size" => g.sizes = sizes(v).map_err(bad)?,
                "dup" => {
                    g.dup = v
                        .parse::<f64>()
                        .ok()
                        .filter(|d| (0.0..=1.0).contains(d))
                        .ok_or_else(|| bad(format!("dup={v}: a share from 0 to 1")))?
                }
                "seed" => {
                    g.seed = v
                        .parse()
                        .map_err(|_| bad(format!("seed={v}: not a number")))?
                }
                other => {
                    return Err(bad(format!(
                        "unknown parameter {other:?} (objects, size, dup, seed)"
                    )));
                }
            }
        }
        g.objects = objects.ok_or_else(|| bad("objects=N is required".into()))?;
        Ok(g)
    }

    /// A 64-bit hash of (seed, n, tag): every choice the generator makes.
    fn hash(&self, n: u64, tag: &[u8]) -> u64 {
        let mut b = Vec::with_capacity(16 + tag.len());
        b.extend_from_slice(&self.seed.to_le_bytes());
        b.extend_from_slice(&n.to_le_bytes());
        b.extend_from_slice(tag);
        xxhash_rust::xxh3::xxh3_64(&b)
    }

    /// The content number of object `i`: its own, or an earlier object's it repeats.
    fn content_of(&self, mut i: u64) -> u64 {
        while i > 0 && (self.hash(i, b"dup") as f64 / u64::MAX as f64) < self.dup {
            i = self.hash(i, b"which") % i;
        }
        i
    }

    fn size_of(&self, content: u64) -> u64 {
        let (lo, hi) = self.sizes;
        lo + self.hash(content, b"size") % (hi - lo + 1)
    }

    /// The listing's entry of object `i`.
    pub fn meta(&self, i: u64) -> ObjectMeta {
        let c = self.content_of(i);
        ObjectMeta {
            key: ObjectKey::from(format!("{KEY_PREFIX}{i:0KEY_DIGITS$}").as_str()),
            size: self.size_of(c),
            version: format!("gen-{}-{c}", self.seed),
            content_type: None,
            user_meta: vec![],
            modified: None,
        }
    }

    /// The object number of a generated key.
    fn index(&self, key: &ObjectKey) -> Option<u64> {
        let s = std::str::from_utf8(key.as_bytes()).ok()?;
        let n: u64 = s.strip_prefix(KEY_PREFIX)?.parse().ok()?;
        (n < self.objects).then_some(n)
    }

    /// The bytes of content `c`, as a reader.
    pub fn reader(&self, c: u64) -> GenReader {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..16].copy_from_slice(&c.to_le_bytes());
        GenReader {
            xof: blake3::Hasher::new_keyed(&key).finalize_xof(),
            left: self.size_of(c),
        }
    }
}

/// `A` or `A-B` in bytes with units (`1KiB-16KiB`).
fn sizes(v: &str) -> std::result::Result<(u64, u64), String> {
    let (a, b) = v.split_once('-').unwrap_or((v, v));
    let (a, b) = (
        crate::filter::parse_size(a).map_err(|e| format!("size={v}: {e}"))?,
        crate::filter::parse_size(b).map_err(|e| format!("size={v}: {e}"))?,
    );
    match a <= b {
        true => Ok((a, b)),
        false => Err(format!("size={v}: the range runs backwards")),
    }
}

/// The generated bytes of one object.
pub struct GenReader {
    xof: blake3::OutputReader,
    left: u64,
}

impl AsyncRead for GenReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64)
            .min(self.left)
            .min(READ_PIECE as u64) as usize;
        let dst = buf.initialize_unfilled_to(n);
        self.xof.fill(dst);
        buf.advance(n);
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Source for GenSource {
    fn url(&self) -> String {
        self.url.clone()
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        for i in 0..self.objects {
            if tx.send(Listed::Object(self.meta(i))).await.is_err() {
                return Err(Error::task(
                    "gen:// listing",
                    "the listing's reader went away",
                ));
            }
        }
        Ok(())
    }

    async fn open(&self, meta: &ObjectMeta) -> Result<Opened> {
        let i = self.index(&meta.key).ok_or_else(|| Error::Gone {
            what: format!("{}: not an object of {}", meta.key, self.url),
        })?;
        let now = self.meta(i);
        if now.version != meta.version {
            return Err(Error::object(
                &meta.key,
                "changed since it was listed (another seed)",
            ));
        }
        let reader: Reader = Box::new(self.reader(self.content_of(i)));
        Ok(Opened {
            reader: Payload::Stream(reader),
            content_type: None,
            user_meta: vec![],
            check: ContentCheck::Unchecked("gen://: made up from its key".into()),
            sum: None,
        })
    }

    async fn check_unchanged(&self, _meta: &ObjectMeta) -> Result<()> {
        Ok(())
    }
}

/// Why a run into `null://` has no verify.
pub const NOTHING_TO_VERIFY: &str = "null:// keeps nothing; each object's bytes were checked against its BLAKE3 as the drain rebuilt them";

/// Whether `dest` is `null://` (a run into it ends with the drain: nothing to verify).
pub fn keeps_nothing(dest: &str) -> bool {
    super::scheme(dest) == Some("null")
}

/// `null://`: see the module doc.
#[derive(Debug, Default)]
pub struct NullDest;

#[async_trait]
impl Destination for NullDest {
    fn url(&self) -> String {
        "null://".into()
    }

    async fn put(&self, meta: &ObjectMeta, mut body: Body) -> Result<Option<Placed>> {
        let (mut h, mut n) = (blake3::Hasher::new(), 0u64);
        while let Some(piece) = body.next().await {
            let piece = piece?;
            h.update(&piece);
            n += piece.len() as u64;
        }
        if n != meta.size {
            return Err(Error::object(
                &meta.key,
                format!("null://: {n} bytes came of the {} listed", meta.size),
            ));
        }
        Ok(Some(Placed {
            location: format!("null://{}", meta.key),
            etag: h.finalize().to_hex().to_string(),
            copyable: false,
        }))
    }

    async fn delete(&self, _key: &ObjectKey, _expect: &Expect) -> Result<Deleted> {
        Ok(Deleted::Deleted)
    }

    async fn list(&self, _tx: mpsc::Sender<Listed>) -> Result<()> {
        Err(Error::option("--dest", NOTHING_TO_VERIFY))
    }

    async fn get(&self, key: &ObjectKey) -> Result<Reader> {
        Err(Error::Gone {
            what: format!("{key}: null:// keeps nothing"),
        })
    }

    async fn cleanup(&self) -> Result<u64> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_key_always_has_the_same_bytes_and_duplicates_repeat_earlier_ones() {
        let g = GenSource::new("gen://?objects=1000&size=100-5000&dup=0.3&seed=7").unwrap();
        let again = GenSource::new("gen://?objects=1000&size=100-5000&dup=0.3&seed=7").unwrap();
        let other = GenSource::new("gen://?objects=1000&size=100-5000&dup=0.3&seed=8").unwrap();
        let mut dups = 0;
        for i in [0u64, 1, 17, 999] {
            assert_eq!(g.meta(i), again.meta(i));
        }
        for i in 0..1000 {
            let m = g.meta(i);
            assert!((100..=5000).contains(&m.size), "{m:?}");
            dups += u64::from(g.content_of(i) != i);
        }
        assert!(
            (200..400).contains(&dups),
            "{dups} duplicates of 1000 at dup=0.3"
        );
        let read = |g: &GenSource, c| {
            let mut r = g.reader(c);
            async move {
                let mut v = vec![];
                r.read_to_end(&mut v).await.unwrap();
                v
            }
        };
        let a = read(&g, 5).await;
        assert_eq!(a.len() as u64, g.size_of(5));
        assert_eq!(a, read(&again, 5).await);
        assert_ne!(a, read(&other, 5).await);
        let keys: Vec<ObjectKey> = (0..3).map(|i| g.meta(i).key).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys in order");
        assert_eq!(g.index(&keys[2]), Some(2));
    }

    #[test]
    fn bad_urls_are_refused_by_name() {
        for (url, word) in [
            ("gen://?size=1KiB", "objects=N"),
            ("gen://?objects=x", "objects=x"),
            ("gen://?objects=5&dup=2", "dup=2"),
            ("gen://?objects=5&size=9KiB-1KiB", "backwards"),
            ("gen://?objects=5&colour=red", "colour"),
        ] {
            let e = GenSource::new(url).unwrap_err().to_string();
            assert!(e.contains(word), "{url}: {e}");
        }
    }
}

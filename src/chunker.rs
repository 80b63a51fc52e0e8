//! Content-defined chunking (FastCDC 2020) of an object's byte stream.
//!
//! Default sizes: min 512 KiB, average 1 MiB, max 8 MiB, the same as restic (kopia uses
//! 2/4/8 MiB). Measured on the 4 GiB sample tree of `benches/compare.sh` (unique files
//! plus exact, shifted and edited copies): an average of 2 MiB staged 5% more bytes than
//! restic's repository, because an edit costs one whole chunk; at 1 MiB barge stores no
//! more than restic. A smaller average is not free: each chunk costs one catalog entry
//! (~80 B in RocksDB) and 64 B of record header and tag, so 12 PB of unique data is about
//! 12·10⁹ chunk entries (~1 TB of catalog, on the node's NVMe). Going lower than 1 MiB
//! would double that for little gain. FastCDC skips the first `min` bytes of every chunk
//! without hashing them, so min/avg = 1/2 also halves the chunker's CPU per byte.
//! 8 MiB bounds the memory one chunk in flight takes. Objects below the minimum are a
//! single chunk.

use std::io::Read;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default minimum chunk size.
pub const DEFAULT_MIN: u32 = 512 * 1024;
/// Default average (normal) chunk size.
pub const DEFAULT_AVG: u32 = 1024 * 1024;
/// Default maximum chunk size. Also bounds one record's size in a segment.
pub const DEFAULT_MAX: u32 = 8 * 1024 * 1024;

/// Chunk size parameters. Fixed at `barge init` and kept in the catalog: changing them
/// would change every cut point and defeat dedup against what is already staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams {
            min: DEFAULT_MIN,
            avg: DEFAULT_AVG,
            max: DEFAULT_MAX,
        }
    }
}

impl ChunkParams {
    /// Checks the sizes against FastCDC 2020's limits.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020 as f;
        let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&self.min)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&self.avg)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&self.max)
            && self.min < self.avg
            && self.avg < self.max;
        if ok {
            Ok(())
        } else {
            Err(Error::option(
                "--chunk-min/--chunk-avg/--chunk-max",
                format!(
                    "{}/{}/{} must satisfy min<avg<max with min in {}..={}, avg in {}..={}, max in {}..={}",
                    self.min,
                    self.avg,
                    self.max,
                    f::MINIMUM_MIN,
                    f::MINIMUM_MAX,
                    f::AVERAGE_MIN,
                    f::AVERAGE_MAX,
                    f::MAXIMUM_MIN,
                    f::MAXIMUM_MAX
                ),
            ))
        }
    }
}

/// One chunk cut from a stream: its offset in the object and its plaintext.
///
/// The plaintext is a slice of the buffer the stream was read into, owned by this chunk
/// alone (`BytesMut::split_to`): cutting copies nothing, and the staging writer seals it
/// in place.
pub struct Chunk {
    pub offset: u64,
    pub data: BytesMut,
}

/// Cuts `reader` into chunks and hands each to `sink` in order. An empty stream yields no
/// chunk. Read errors are returned as they come, wrapped by the caller with the object.
///
/// Cut points are exactly FastCDC 2020's (normalisation level 1) on a window of at most
/// `max` bytes, as `fastcdc::v2020::StreamCDC` cuts them; the loop is our own because
/// StreamCDC shifts its whole `max`-sized buffer and re-zeroes it after every chunk
/// (~8 bytes moved per byte chunked) and copies every chunk out. Here the source is read
/// straight into a buffer of `2 × max` bytes (smaller when `size_hint` says the object is
/// smaller), the chunks are split off that buffer without a copy, and the unconsumed tail
/// (a part of one chunk, see [`final_cut`]) is copied to the front of the next buffer.
pub fn chunk_stream<R: Read>(
    mut reader: R,
    params: ChunkParams,
    size_hint: Option<u64>,
    pool: &BufferPool,
    mut sink: impl FnMut(Chunk) -> Result<()>,
) -> std::result::Result<(), ChunkError> {
    let max = params.max as usize;
    let gear = Gear::new(params);
    let mut tail = BytesMut::new();
    let mut read = 0u64;
    let mut offset = 0u64;
    // Objects of at least one minimum chunk read into pooled buffers of `2 × max`.
    let pooled = size_hint.is_none_or(|n| n >= params.min as u64);
    loop {
        // The next buffer: the tail, then as much of the stream as fits.
        let want = 2 * max - tail.len();
        let mut next = if pooled {
            pool.take(2 * max)
        } else {
            // One byte beyond the expected size lets the read see the end of a small
            // object without a second read.
            let left = size_hint.unwrap_or(0).saturating_sub(read) as usize;
            Vec::with_capacity(tail.len() + want.min(left + 1))
        };
        next.extend_from_slice(&tail);
        if pooled && read > 0 {
            // Its buffer is reused once the chunks cut from it are gone.
            pool.give(std::mem::take(&mut tail));
        }
        // read_to_end on a Take fills spare capacity without zeroing it first and stops
        // at `want` bytes or at the end of the stream (then it read fewer).
        let n = (&mut reader)
            .take(want as u64)
            .read_to_end(&mut next)
            .map_err(ChunkError::Read)?;
        read += n as u64;
        let eof = n < want;
        // Zero-copy: a Vec becomes Bytes, and a unique Bytes becomes BytesMut.
        let mut buf = BytesMut::from(bytes::Bytes::from(next));
        for len in cuts(&buf, &gear, eof) {
            let data = buf.split_to(len);
            sink(Chunk { offset, data }).map_err(ChunkError::Sink)?;
            offset += len as u64;
        }
        if eof {
            if pooled {
                pool.give(buf);
            }
            return Ok(());
        }
        tail = buf;
    }
}

/// How many read buffers a [`BufferPool`] keeps.
pub const POOLED_BUFFERS: usize = 8;

/// Read buffers handed from one object's read to the next.
///
/// A fresh buffer costs a page fault, a zeroed page and a memory-cgroup charge per 4 KiB
/// (about a sixth of ingest's CPU on large files, measured with perf). A buffer comes
/// back here once its chunks are cut, and is taken again only when every chunk cut from
/// it has been written or dropped (`BytesMut::try_reclaim`), so reuse never copies.
/// At most [`POOLED_BUFFERS`] are kept (with the default chunk sizes, 128 MiB).
#[derive(Default)]
pub struct BufferPool {
    free: std::sync::Mutex<Vec<BytesMut>>,
}

impl BufferPool {
    /// An empty buffer with room for `need` bytes: a pooled one whose chunks are all
    /// gone, or a new one.
    fn take(&self, need: usize) -> Vec<u8> {
        if let Ok(mut free) = self.free.lock()
            && let Some(i) = free.iter_mut().position(|b| b.try_reclaim(need))
        {
            let mut v = Vec::from(free.swap_remove(i));
            v.clear();
            return v;
        }
        Vec::with_capacity(need)
    }

    /// Keeps `buf` (what is left of a buffer after its chunks were cut) for a later read.
    fn give(&self, mut buf: BytesMut) {
        // Its bytes were carried over already; reclaiming needs an empty handle.
        buf.clear();
        if let Ok(mut free) = self.free.lock()
            && free.len() < POOLED_BUFFERS
        {
            free.push(buf);
        }
    }
}

/// The lengths of the chunks to cut from the front of `buf`, in order: all of it at the
/// end of the stream, otherwise up to the last cut that more bytes could not move.
fn cuts(buf: &[u8], gear: &Gear, eof: bool) -> Vec<usize> {
    let mut out = vec![];
    let mut start = 0usize;
    while start < buf.len() {
        let window = (buf.len() - start).min(gear.max);
        let len = gear.cut(&buf[start..start + window]);
        if !final_cut(len, window, gear.max, eof) {
            break;
        }
        out.push(len);
        start += len;
    }
    out
}

/// FastCDC 2020's cut search (normalisation level 1), with the `fastcdc` crate's gear
/// tables and masks.
///
/// Our own loop because the crate's `cut_gear` rolls one hash chain, which is bound by
/// its latency (three dependent operations per two bytes): [`Gear::scan`] rolls two
/// independent chains over neighbouring blocks, and `barge bench chunk` went from ~1.6
/// to ~2.4 GB/s on the 2-core build machine (the crate over the same buffer in place:
/// ~2.3 GB/s). The cut points are the crate's (tests compare both on every kind of
/// window).
pub(crate) struct Gear {
    gear: &'static [u64; 256],
    gear_ls: &'static [u64; 256],
    /// The stricter mask, before the average size.
    mask_s: u64,
    /// The looser mask, from the average size on.
    mask_l: u64,
    min: usize,
    avg: usize,
    max: usize,
}

impl Gear {
    pub(crate) fn new(p: ChunkParams) -> Self {
        use fastcdc::v2020 as f;
        let bits = f::logarithm2(p.avg);
        let level = f::Normalization::Level1.bits();
        let (gear, gear_ls) = gear_tables();
        Gear {
            gear,
            gear_ls,
            mask_s: f::MASKS[(bits + level) as usize],
            mask_l: f::MASKS[(bits - level) as usize],
            min: p.min as usize,
            avg: p.avg as usize,
            max: p.max as usize,
        }
    }

    /// The length of the first chunk of `src`: what `fastcdc::v2020::cut` returns for it
    /// (the whole of `src`, up to `max`, when no position matches).
    pub(crate) fn cut(&self, src: &[u8]) -> usize {
        let mut remaining = src.len();
        if remaining <= self.min {
            return remaining;
        }
        let mut center = self.avg;
        if remaining > self.max {
            remaining = self.max;
        } else if remaining < center {
            center = remaining;
        }
        // The crate steps two bytes at a time from min/2·2: the strict mask up to
        // center/2·2, the loose one up to remaining/2·2.
        let from = self.min / 2 * 2;
        let mid = (center / 2 * 2).max(from);
        let to = (remaining / 2 * 2).max(mid);
        let mut hash = 0u64;
        if let Some(at) = self.scan(src, from, from..mid, &mut hash, self.mask_s) {
            return at;
        }
        if let Some(at) = self.scan(src, from, mid..to, &mut hash, self.mask_l) {
            return at;
        }
        remaining
    }

    /// Rolls the gear hash over `src[range]` (an even number of bytes, hashing having
    /// started at `origin` with 0); the first position whose hash matches `mask`, if any.
    ///
    /// The hash at a position depends only on the [`HASH_SPAN`] bytes before it, so two
    /// lanes run at once: one over a block of [`LANE_BLOCK`] bytes, one over the next
    /// block with its hash rolled from the span before it. The lanes' hash chains are
    /// independent, so the CPU overlaps them; alone, one chain is bound by its latency.
    fn scan(
        &self,
        src: &[u8],
        origin: usize,
        range: std::ops::Range<usize>,
        hash: &mut u64,
        mask: u64,
    ) -> Option<usize> {
        let mut pos = range.start;
        while range.end - pos >= 2 * LANE_BLOCK {
            let next = pos + LANE_BLOCK;
            let warm = next.saturating_sub(HASH_SPAN).max(origin);
            let mut second = self.roll(&src[warm..next], 0);
            let one = src[pos..next].chunks_exact(2);
            let two = src[next..next + LANE_BLOCK].chunks_exact(2);
            for (i, (p, q)) in one.zip(two).enumerate() {
                if let Some(at) = self.step(p, hash, mask) {
                    return Some(pos + 2 * i + at);
                }
                if let Some(at) = self.step(q, &mut second, mask) {
                    // The first lane's rest of its block comes first.
                    let rest = pos + 2 * i + 2..next;
                    return self
                        .scan_one(src, rest, hash, mask)
                        .or(Some(next + 2 * i + at));
                }
            }
            *hash = second;
            pos = next + LANE_BLOCK;
        }
        self.scan_one(src, pos..range.end, hash, mask)
    }

    /// [`Gear::scan`] with one lane.
    fn scan_one(
        &self,
        src: &[u8],
        range: std::ops::Range<usize>,
        hash: &mut u64,
        mask: u64,
    ) -> Option<usize> {
        let start = range.start;
        for (i, p) in src[range].chunks_exact(2).enumerate() {
            if let Some(at) = self.step(p, hash, mask) {
                return Some(start + 2 * i + at);
            }
        }
        None
    }

    /// One two-byte step of FastCDC 2020's rolling: which of the pair's bytes matched.
    #[inline(always)]
    fn step(&self, pair: &[u8], hash: &mut u64, mask: u64) -> Option<usize> {
        *hash = (*hash << 2).wrapping_add(self.gear_ls[pair[0] as usize]);
        if *hash & (mask << 1) == 0 {
            return Some(0);
        }
        *hash = hash.wrapping_add(self.gear[pair[1] as usize]);
        if *hash & mask == 0 {
            return Some(1);
        }
        None
    }

    /// The hash after rolling over `pairs` from `hash`, without looking for a cut.
    fn roll(&self, pairs: &[u8], mut hash: u64) -> u64 {
        for p in pairs.chunks_exact(2) {
            hash = (hash << 2)
                .wrapping_add(self.gear_ls[p[0] as usize])
                .wrapping_add(self.gear[p[1] as usize]);
        }
        hash
    }
}

/// The `fastcdc` crate's gear tables (seed 0), copied out of it once per process: a
/// [`Gear`] is made per object, and most objects of a large move are small.
fn gear_tables() -> (&'static [u64; 256], &'static [u64; 256]) {
    type Table = Box<[u64; 256]>;
    static TABLES: std::sync::OnceLock<(Table, Table)> = std::sync::OnceLock::new();
    let (gear, gear_ls) = TABLES.get_or_init(|| fastcdc::v2020::get_gear_with_seed(0));
    (gear, gear_ls)
}

/// Bytes before a position that decide its gear hash: each two-byte step shifts the
/// 64-bit hash by two bits, so a byte further back has been shifted out.
const HASH_SPAN: usize = 64;

/// Bytes each lane of [`Gear::scan`] covers at a time: large against the [`HASH_SPAN`]
/// the second lane re-reads (64 bytes per 8 KiB scanned), small against a chunk, since
/// the second lane's work is wasted when the first lane cuts (at most one block per
/// chunk).
const LANE_BLOCK: usize = 4096;

/// Whether a cut `len` bytes into a `window` is where the whole stream would be cut.
///
/// FastCDC scans a window from its start and stops at the first position whose gear hash
/// matches the mask, or returns the whole window. A cut before the window's end is
/// therefore content-defined: more bytes after the window could not move it, so a short
/// window (the tail of the buffer) still gives the stream's cut. A cut at the window's end
/// is final only for a full window or at the end of the stream; otherwise more bytes are
/// read first. Accepting the content-defined cuts of the tail keeps the bytes carried over
/// to the next read to a part of one chunk instead of up to `max` bytes.
fn final_cut(len: usize, window: usize, max: usize, eof: bool) -> bool {
    len < window || window == max || eof
}

/// Why chunking a stream stopped.
#[derive(Debug)]
pub enum ChunkError {
    /// Reading the source failed.
    Read(std::io::Error),
    /// The consumer of the chunks failed (e.g. staging).
    Sink(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(data: &[u8], p: ChunkParams) -> Vec<(u64, usize)> {
        let mut out = vec![];
        chunk_stream(data, p, None, &BufferPool::default(), |c| {
            out.push((c.offset, c.data.len()));
            Ok(())
        })
        .unwrap();
        out
    }

    /// Hands out at most `step` bytes per read, like a network stream.
    struct Dribble<'a>(&'a [u8], usize);

    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn cut_points_match_fastcdc_streamcdc_for_any_read_sizes_and_hints() {
        let p = ChunkParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        };
        let mut rng = crate::sample::Filler::new(5);
        // Random data with a long run of zeros (forces max-size cuts) in the middle.
        let mut data = rng.bytes(700_000);
        data[200_000..400_000].fill(0);
        for len in [0usize, 1, 4095, 65_536, 65_537, 300_001, 700_000] {
            let d = &data[..len];
            let want: Vec<(u64, usize)> = fastcdc::v2020::StreamCDC::new(d, p.min, p.avg, p.max)
                .map(|c| c.unwrap())
                .map(|c| (c.offset, c.length))
                .collect();
            for (step, hint) in [
                (usize::MAX, None),
                (1000, Some(len as u64)),
                (70_001, Some(3)),
            ] {
                let mut got = vec![];
                chunk_stream(Dribble(d, step), p, hint, &BufferPool::default(), |c| {
                    assert_eq!(&d[c.offset as usize..][..c.data.len()], &c.data[..]);
                    got.push((c.offset, c.data.len()));
                    Ok(())
                })
                .unwrap();
                assert_eq!(got, want, "len {len} step {step} hint {hint:?}");
            }
        }
    }

    #[test]
    fn gear_cut_matches_the_fastcdc_crate_on_every_kind_of_window() {
        let mut rng = crate::sample::Filler::new(12);
        let mut data = rng.bytes(600_000);
        data[300_000..360_000].fill(7);
        for p in [
            ChunkParams {
                min: 4096,
                avg: 16384,
                max: 65536,
            },
            ChunkParams {
                min: 4097,
                avg: 12345,
                max: 40001,
            },
            ChunkParams {
                min: 64,
                avg: 256,
                max: 1024,
            },
            ChunkParams {
                min: 8191,
                avg: 8192,
                max: 9000,
            },
        ] {
            let gear = Gear::new(p);
            let mut lens: Vec<usize> = vec![0, 1, 63, 64, 65, 255, 256, 257, 1023, 1024, 1025];
            for v in [p.min, p.avg, p.max] {
                let v = v as usize;
                lens.extend([v - 1, v, v + 1, v + 2]);
            }
            lens.extend(rng.bytes(64).iter().map(|b| *b as usize * 311));
            let starts = (0..40).map(|i| i * 14_999 + i % 3);
            for start in [0usize, 1, 1000, 299_000, 330_000, 559_000]
                .into_iter()
                .chain(starts)
            {
                let cdc = fastcdc::v2020::FastCDC::new(&data, p.min, p.avg, p.max);
                for &len in &lens {
                    let len = len.min(data.len() - start);
                    let (_, end) = cdc.cut(start, len);
                    let got = gear.cut(&data[start..start + len]);
                    assert_eq!(got, end - start, "{p:?} start {start} len {len}");
                }
            }
        }
    }

    #[test]
    fn a_hash_depends_only_on_the_span_before_it() {
        // The second lane of a scan starts from the hash rolled over HASH_SPAN bytes.
        let gear = Gear::new(ChunkParams::default());
        let data = crate::sample::Filler::new(3).bytes(4096);
        for origin in [0usize, 2, 64, 1000] {
            for p in (origin..4096).step_by(2 * 37) {
                let whole = gear.roll(&data[origin..p], 0);
                let warm = p.saturating_sub(HASH_SPAN).max(origin);
                assert_eq!(
                    gear.roll(&data[warm..p], 0),
                    whole,
                    "origin {origin} at {p}"
                );
                if p >= origin + HASH_SPAN {
                    // Half the span is not enough: the bytes before it still count.
                    let short = gear.roll(&data[p - HASH_SPAN / 2..p], 0);
                    assert_ne!(short, whole, "origin {origin} at {p}");
                }
            }
        }
    }

    #[test]
    fn chunks_of_one_read_are_cut_from_its_buffer_without_a_copy() {
        let p = ChunkParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        };
        let data = crate::sample::Filler::new(9).bytes(100_000);
        let mut ends = vec![];
        chunk_stream(
            &data[..],
            p,
            Some(data.len() as u64),
            &BufferPool::default(),
            |c| {
                ends.push((c.data.as_ptr() as usize, c.data.len()));
                Ok(())
            },
        )
        .unwrap();
        assert!(ends.len() > 2, "{} chunks", ends.len());
        // The first read took the whole object: every chunk starts where the one before
        // it ended, in the same allocation.
        for w in ends.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0);
        }
    }

    #[test]
    fn a_read_buffer_is_reused_only_after_all_its_chunks_are_gone() {
        let p = ChunkParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        };
        let data = crate::sample::Filler::new(4).bytes(100_000);
        let pool = BufferPool::default();
        let first_chunk = |kept: &mut Vec<Chunk>| {
            let mut first = None;
            chunk_stream(&data[..], p, Some(data.len() as u64), &pool, |c| {
                first.get_or_insert(c.data.as_ptr() as usize);
                kept.push(c);
                Ok(())
            })
            .unwrap();
            first.unwrap()
        };
        let mut kept = vec![];
        let a = first_chunk(&mut kept);
        // The chunks of the first read are still held (queued for staging, say).
        let b = first_chunk(&mut vec![]);
        assert_ne!(a, b, "a buffer was reused while its chunks were alive");
        drop(kept);
        // Both buffers are free now and kept by the pool (not handed back to malloc,
        // which could also give the same address again); the next read reuses one.
        let pooled = |pool: &BufferPool| pool.free.lock().map(|f| f.len()).unwrap_or(0);
        assert_eq!(pooled(&pool), 2);
        let mut held = vec![];
        let c = first_chunk(&mut held);
        assert!(c == a || c == b, "no pooled buffer was reused");
        // With c's chunks held, the next read takes the other pooled buffer.
        let d = first_chunk(&mut vec![]);
        assert!(
            (d == a || d == b) && d != c,
            "the other pooled buffer was not reused"
        );
        assert_eq!(pooled(&pool), 2);
    }

    #[test]
    fn small_object_is_one_chunk_and_empty_is_none() {
        let p = ChunkParams::default();
        assert_eq!(cut(b"", p), vec![]);
        assert_eq!(cut(&[1u8; 1000], p), vec![(0, 1000)]);
    }

    #[test]
    fn shifted_copy_shares_most_chunks() {
        let p = ChunkParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        };
        let mut x: u64 = 1;
        let data: Vec<u8> = (0..2_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut shifted = b"inserted prefix".to_vec();
        shifted.extend_from_slice(&data);
        let a: std::collections::HashSet<&[u8]> = cut(&data, p)
            .iter()
            .map(|&(o, l)| &data[o as usize..o as usize + l])
            .collect();
        let b = cut(&shifted, p);
        let shared = b
            .iter()
            .filter(|&&(o, l)| a.contains(&shifted[o as usize..o as usize + l]))
            .count();
        assert!(
            shared + 2 >= b.len(),
            "{shared} of {} chunks shared",
            b.len()
        );
        for w in b.windows(2) {
            assert!(w[1].1 <= 65536);
        }
    }

    #[test]
    fn params_are_validated() {
        assert!(ChunkParams::default().validate().is_ok());
        assert!(
            ChunkParams {
                min: 10,
                avg: 5,
                max: 1
            }
            .validate()
            .is_err()
        );
    }
}

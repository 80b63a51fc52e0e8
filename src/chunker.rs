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

use fastcdc::v2020::FastCDC;
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
pub struct Chunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Spare capacity reserved in every chunk's buffer so that sealing can append the
/// AES-GCM tag in place without reallocating (and copying) the chunk.
const SEAL_SLACK: usize = crate::crypto::TAG_LEN;

/// Cuts `reader` into chunks and hands each to `sink` in order. An empty stream yields no
/// chunk. Read errors are returned as they come, wrapped by the caller with the object.
///
/// Cut points are exactly FastCDC 2020's (normalisation level 1) on a window of at most
/// `max` bytes, as `fastcdc::v2020::StreamCDC` cuts them; the loop is our own because
/// StreamCDC shifts its whole `max`-sized buffer and re-zeroes it after every chunk
/// (~8 bytes moved per byte chunked). Here the source is read straight into one buffer
/// of `2 × max` bytes (smaller when `size_hint` says the object is smaller), the
/// unconsumed tail is moved to the front once per refill, and each chunk is copied once,
/// into a buffer it then owns.
pub fn chunk_stream<R: Read>(
    mut reader: R,
    params: ChunkParams,
    size_hint: Option<u64>,
    mut sink: impl FnMut(Chunk) -> Result<()>,
) -> std::result::Result<(), ChunkError> {
    let max = params.max as usize;
    let cap = match size_hint {
        // One byte beyond the expected size lets the first read see the end of a small
        // object without a second read.
        Some(n) => (2 * max).min(n as usize + 1).max(1),
        None => 2 * max,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(cap);
    let mut eof = false;
    let mut offset = 0u64;
    loop {
        if !eof {
            let want = (2 * max).max(cap) - buf.len();
            // read_to_end on a Take fills spare capacity without zeroing it first and
            // stops at `want` bytes or at the end of the stream (then it read fewer).
            let n = (&mut reader)
                .take(want as u64)
                .read_to_end(&mut buf)
                .map_err(ChunkError::Read)?;
            eof = n < want;
        }
        if buf.is_empty() {
            return Ok(());
        }
        let cdc = FastCDC::new(&buf, params.min, params.avg, params.max);
        let mut start = 0usize;
        // Cut while a full window is available (or the stream has ended).
        while start < buf.len() && (eof || buf.len() - start >= max) {
            let window = (buf.len() - start).min(max);
            let (_, end) = cdc.cut(start, window);
            let mut data = Vec::with_capacity(end - start + SEAL_SLACK);
            data.extend_from_slice(&buf[start..end]);
            sink(Chunk { offset, data }).map_err(ChunkError::Sink)?;
            offset += (end - start) as u64;
            start = end;
        }
        drop(cdc);
        buf.drain(..start);
        if eof && buf.is_empty() {
            return Ok(());
        }
    }
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
        chunk_stream(data, p, None, |c| {
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
                chunk_stream(Dribble(d, step), p, hint, |c| {
                    assert_eq!(&d[c.offset as usize..][..c.data.len()], &c.data[..]);
                    assert!(c.data.capacity() >= c.data.len() + SEAL_SLACK);
                    got.push((c.offset, c.data.len()));
                    Ok(())
                })
                .unwrap();
                assert_eq!(got, want, "len {len} step {step} hint {hint:?}");
            }
        }
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

//! The segment file format, version 1. Pure encode/decode functions, no I/O, so they can
//! be fuzzed (`fuzz/`) and read on another machine.
//!
//! ```text
//! offset 0      header block, BLOCK bytes: SegmentHeader, zero padded
//! BLOCK         record, record, ...       each: RecordHeader (48 B) ‖ ciphertext ‖ tag
//! index_offset  index: record_count × IndexEntry (48 B)
//!               zero padding
//! len - 64      Trailer (64 B); len is a multiple of BLOCK
//! ```
//! Records are contiguous (not block-aligned); a reader finds the end of an unsealed
//! (crashed) segment at the first record whose magic, header CRC or GCM tag does not
//! verify (`staging::recover`). The trailer's checksum covers header, records and index.

use crate::crypto::ChunkId;

/// Alignment and size of the header block; all O_DIRECT I/O is in multiples of it.
pub const BLOCK: usize = 4096;
/// Segment header magic.
pub const SEGMENT_MAGIC: [u8; 8] = *b"BARGESEG";
/// Trailer magic.
pub const TRAILER_MAGIC: [u8; 8] = *b"BARGEEND";
/// Record header magic.
pub const RECORD_MAGIC: [u8; 4] = *b"BRC1";
/// Segment format version written by this code.
pub const SEGMENT_FORMAT_VERSION: u16 = 1;
/// Encoded size of a [`SegmentHeader`] (inside the BLOCK-sized header block).
pub const HEADER_LEN: usize = 8 + 2 + 2 + 16 + 8 + 16 + 8 + 8 + 4;
/// Encoded size of a [`RecordHeader`].
pub const RECORD_HEADER_LEN: usize = 48;
/// Encoded size of an [`IndexEntry`].
pub const INDEX_ENTRY_LEN: usize = 48;
/// Encoded size of the [`Trailer`].
pub const TRAILER_LEN: usize = 64;

/// Length of the segment checksum (XXH3-128).
pub const CHECKSUM_LEN: usize = 16;

/// The whole-segment checksum: XXH3-128 over header, records and index. It guards the
/// sealed bytes at rest and in transit and can be checked without the key; each record
/// is also authenticated by its GCM tag. XXH3 rather than BLAKE3 because it runs at
/// memory speed on the writer thread (BLAKE3 here capped staging at ~2 GB/s).
pub struct SegmentHasher(xxhash_rust::xxh3::Xxh3);

impl SegmentHasher {
    pub fn new() -> Self {
        SegmentHasher(xxhash_rust::xxh3::Xxh3::new())
    }

    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }

    pub fn finish(&self) -> [u8; CHECKSUM_LEN] {
        self.0.digest128().to_le_bytes()
    }
}

impl Default for SegmentHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Rounds `n` up to a multiple of [`BLOCK`].
pub fn round_up(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// Why a structure did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("too short ({0} bytes)")]
    Short(usize),
    #[error("bad magic")]
    Magic,
    #[error("unsupported format version {0}")]
    Version(u16),
    #[error("checksum mismatch")]
    Checksum,
    #[error("inconsistent field: {0}")]
    Field(&'static str),
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}
fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Start of every segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub appliance_id: [u8; 16],
    pub segment_id: u64,
    /// Random; mixed into the segment key (see `crypto::segment_key`).
    pub salt: [u8; 16],
    /// Unix seconds.
    pub created: u64,
    /// Planned maximum size of the segment file.
    pub capacity: u64,
}

impl SegmentHeader {
    /// `magic ‖ version u16 ‖ flags u16 ‖ appliance id ‖ segment id u64 ‖ salt ‖ created
    /// u64 ‖ capacity u64 ‖ crc32c u32` (of everything before it), little-endian.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        // 10..12 flags: none defined in v1.
        b[12..28].copy_from_slice(&self.appliance_id);
        b[28..36].copy_from_slice(&self.segment_id.to_le_bytes());
        b[36..52].copy_from_slice(&self.salt);
        b[52..60].copy_from_slice(&self.created.to_le_bytes());
        b[60..68].copy_from_slice(&self.capacity.to_le_bytes());
        let crc = crc32c::crc32c(&b[..68]);
        b[68..72].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < HEADER_LEN {
            return Err(FormatError::Short(b.len()));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(FormatError::Magic);
        }
        if crc32c::crc32c(&b[..68]) != u32_at(b, 68) {
            return Err(FormatError::Checksum);
        }
        let version = u16_at(b, 8);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(FormatError::Version(version));
        }
        let mut appliance_id = [0u8; 16];
        appliance_id.copy_from_slice(&b[12..28]);
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&b[36..52]);
        Ok(SegmentHeader {
            version,
            appliance_id,
            segment_id: u64_at(b, 28),
            salt,
            created: u64_at(b, 52),
            capacity: u64_at(b, 60),
        })
    }
}

/// In front of every sealed chunk. Plaintext, but holds nothing about content: the chunk
/// id is a keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub chunk: ChunkId,
    pub plain_len: u32,
    /// Ciphertext plus tag.
    pub sealed_len: u32,
}

impl RecordHeader {
    /// `magic ‖ chunk id ‖ plain_len u32 ‖ sealed_len u32 ‖ crc32c u32`.
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(&RECORD_MAGIC);
        b[4..36].copy_from_slice(&self.chunk.0);
        b[36..40].copy_from_slice(&self.plain_len.to_le_bytes());
        b[40..44].copy_from_slice(&self.sealed_len.to_le_bytes());
        let crc = crc32c::crc32c(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < RECORD_HEADER_LEN {
            return Err(FormatError::Short(b.len()));
        }
        if b[0..4] != RECORD_MAGIC {
            return Err(FormatError::Magic);
        }
        if crc32c::crc32c(&b[..44]) != u32_at(b, 44) {
            return Err(FormatError::Checksum);
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[4..36]);
        let h = RecordHeader {
            chunk: ChunkId(id),
            plain_len: u32_at(b, 36),
            sealed_len: u32_at(b, 40),
        };
        if h.sealed_len as u64 != h.plain_len as u64 + crate::crypto::TAG_LEN as u64 {
            return Err(FormatError::Field("sealed_len != plain_len + tag"));
        }
        Ok(h)
    }

    /// Bytes the record takes in the segment.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.sealed_len as u64
    }
}

/// One entry of the footer index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub chunk: ChunkId,
    pub offset: u64,
    pub plain_len: u32,
    pub sealed_len: u32,
}

impl IndexEntry {
    /// `chunk id ‖ offset u64 ‖ plain_len u32 ‖ sealed_len u32`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.chunk.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.plain_len.to_le_bytes());
        out.extend_from_slice(&self.sealed_len.to_le_bytes());
    }

    /// Decodes a whole index; its length must be a multiple of the entry size.
    pub fn decode_all(b: &[u8]) -> Result<Vec<Self>, FormatError> {
        if !b.len().is_multiple_of(INDEX_ENTRY_LEN) {
            return Err(FormatError::Field("index length"));
        }
        Ok(b.chunks_exact(INDEX_ENTRY_LEN)
            .map(|e| {
                let mut id = [0u8; 32];
                id.copy_from_slice(&e[..32]);
                IndexEntry {
                    chunk: ChunkId(id),
                    offset: u64_at(e, 32),
                    plain_len: u32_at(e, 40),
                    sealed_len: u32_at(e, 44),
                }
            })
            .collect())
    }
}

/// Last 64 bytes of a sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    pub record_count: u32,
    /// End of the records, start of the index.
    pub index_offset: u64,
    pub index_len: u64,
    /// [`SegmentHasher`] of bytes [0, index_offset + index_len): header block, records
    /// and index, as stored.
    pub data_checksum: [u8; CHECKSUM_LEN],
}

impl Trailer {
    /// `magic ‖ version u16 ‖ pad u16 ‖ record_count u32 ‖ index_offset u64 ‖ index_len
    /// u32 ‖ data_checksum[16] ‖ reserved[16] ‖ crc32c u32`. (index_len is stored as u32.)
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..8].copy_from_slice(&TRAILER_MAGIC);
        b[8..10].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.record_count.to_le_bytes());
        b[16..24].copy_from_slice(&self.index_offset.to_le_bytes());
        b[24..28].copy_from_slice(&(self.index_len as u32).to_le_bytes());
        b[28..44].copy_from_slice(&self.data_checksum);
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < TRAILER_LEN {
            return Err(FormatError::Short(b.len()));
        }
        if b[0..8] != TRAILER_MAGIC {
            return Err(FormatError::Magic);
        }
        if crc32c::crc32c(&b[..60]) != u32_at(b, 60) {
            return Err(FormatError::Checksum);
        }
        let version = u16_at(b, 8);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(FormatError::Version(version));
        }
        let record_count = u32_at(b, 12);
        let index_len = u32_at(b, 24) as u64;
        if index_len != record_count as u64 * INDEX_ENTRY_LEN as u64 {
            return Err(FormatError::Field("index_len != record_count × entry"));
        }
        let index_offset = u64_at(b, 16);
        if index_offset < BLOCK as u64 {
            return Err(FormatError::Field("index_offset inside the header block"));
        }
        let mut data_checksum = [0u8; CHECKSUM_LEN];
        data_checksum.copy_from_slice(&b[28..44]);
        Ok(Trailer {
            record_count,
            index_offset,
            index_len,
            data_checksum,
        })
    }

    /// Total file length of a sealed segment whose index ends at `index_end`.
    pub fn file_len(index_end: u64) -> u64 {
        round_up(index_end + TRAILER_LEN as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_round_trip_and_detect_flips() {
        let h = SegmentHeader {
            version: 1,
            appliance_id: [3; 16],
            segment_id: 42,
            salt: [9; 16],
            created: 1,
            capacity: 1 << 30,
        };
        let mut e = h.encode();
        assert_eq!(SegmentHeader::decode(&e).unwrap(), h);
        e[30] ^= 1;
        assert_eq!(SegmentHeader::decode(&e), Err(FormatError::Checksum));

        let r = RecordHeader {
            chunk: ChunkId([5; 32]),
            plain_len: 10,
            sealed_len: 26,
        };
        assert_eq!(RecordHeader::decode(&r.encode()).unwrap(), r);
        assert_eq!(RecordHeader::decode(&[0u8; 48]), Err(FormatError::Magic));

        let t = Trailer {
            record_count: 2,
            index_offset: 8192,
            index_len: 96,
            data_checksum: [1; CHECKSUM_LEN],
        };
        let mut e = t.encode();
        assert_eq!(Trailer::decode(&e).unwrap(), t);
        e[20] ^= 0x80;
        assert!(Trailer::decode(&e).is_err());
        assert_eq!(Trailer::file_len(8192 + 96), 12288);
    }
}

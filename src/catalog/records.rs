//! Catalog records and their byte encodings. Every value starts with a one-byte record
//! version; the rest is `postcard` (a documented, stable varint format) unless noted.
//! Chunk records are fixed-width little-endian because the merge operator rewrites them.

use serde::{Deserialize, Serialize};

use crate::crypto::ChunkId;
use crate::error::{Error, Result};

/// Version byte of object, segment and run values.
pub const RECORD_VERSION: u8 = 1;
/// Version byte of chunk values (fixed layout, see [`ChunkRecord::encode`]).
pub const CHUNK_RECORD_VERSION: u8 = 1;
/// Encoded length of a chunk value.
pub const CHUNK_RECORD_LEN: usize = 1 + 8 + 8 + 4 + 4 + 8;

/// Where an object is in the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectState {
    /// Seen in the source listing; not yet staged.
    Listed,
    /// Every chunk is durable in staging.
    Staged,
    /// Written to the destination and its checksum verified on the way.
    Drained,
    /// Confirmed at the destination by `barge verify --full`.
    Verified,
    /// Failed at `stage` ("ingest" or "drain") for `reason`; retried on the next run.
    Failed { stage: String, reason: String },
    /// Gone from a complete listing of the source: being deleted at the destination by a
    /// sync pass (catalog format 4). Written, synced, before the delete is sent, so that a
    /// crash in between leaves the object to delete again, and an object that reappears
    /// at the source is fetched again rather than taken as already there.
    Deleting,
}

impl ObjectState {
    pub fn name(&self) -> &'static str {
        match self {
            ObjectState::Listed => "listed",
            ObjectState::Staged => "staged",
            ObjectState::Drained => "drained",
            ObjectState::Verified => "verified",
            ObjectState::Failed { .. } => "failed",
            ObjectState::Deleting => "deleting",
        }
    }

    /// True once the object's content is safely in staging (or beyond).
    pub fn is_staged_or_later(&self) -> bool {
        matches!(
            self,
            ObjectState::Staged | ObjectState::Drained | ObjectState::Verified
        )
    }

    pub fn is_at_destination(&self) -> bool {
        matches!(self, ObjectState::Drained | ObjectState::Verified)
    }
}

/// One chunk of an object, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// Value of the `objects` column family. Key: the object's source key, raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub size: u64,
    /// Source version tag: mtime in ns and inode for local files, the ETag for S3.
    pub version: String,
    pub content_type: Option<String>,
    pub user_meta: Vec<(String, String)>,
    /// BLAKE3 (unkeyed) of the whole plaintext, once staged.
    pub blake3: Option<[u8; 32]>,
    pub chunks: Vec<ChunkRef>,
    pub state: ObjectState,
    /// Which source checksum the staged bytes were checked against ("md5",
    /// "md5-multipart"), or "unchecked: <why>".
    pub checked: String,
    /// Number of times this object was committed as drained (a re-upload would show here).
    pub uploads: u32,
    /// Unix seconds of the last state change.
    pub updated: u64,
}

/// What barge left at the destination for one object (CF `placed`, catalog format 5):
/// written when a drain's put or copy returns, whatever became of the object's record
/// since, because it describes the destination, not the source's version. A sync pass
/// deletes the object at the destination only while the store still shows this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Landed {
    pub size: u64,
    /// The entity tag the store answered for the write, without quotes: the MD5 of a
    /// single-part body, S3's multipart `<md5>-<parts>` from the completion, a Swift
    /// SLO manifest's MD5 of its segments' ETags; for a file, its size.
    pub etag: String,
}

/// State of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentState {
    /// Being appended to; the footer is not written yet.
    Open,
    /// Footer and checksum written; immutable.
    Sealed,
}

/// Value of the `segments` column family. Key: segment id, u64 big-endian.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub drive: String,
    pub path: String,
    pub salt: [u8; 16],
    pub state: SegmentState,
    /// Bytes of header and records (the footer excluded).
    pub data_len: u64,
    pub records: u64,
    /// XXH3-128 of bytes [0, data_len) once sealed (see `staging::format::SegmentHasher`).
    pub checksum: Option<[u8; 16]>,
    /// Byte offset of the segment inside `path`: 0 for a segment file, the slot start on
    /// a raw drive (catalog format 3).
    pub base: u64,
}

/// A segment record as catalog formats 1 and 2 stored it (no `base`); read only by the
/// upgrade to format 3.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SegmentRecordV2 {
    pub drive: String,
    pub path: String,
    pub salt: [u8; 16],
    pub state: SegmentState,
    pub data_len: u64,
    pub records: u64,
    pub checksum: Option<[u8; 16]>,
}

impl SegmentRecord {
    /// In a slot of a raw drive (slots start at 1 MiB, so `base > 0`), not a file of
    /// its own: never deleted or truncated, only forgotten and re-used.
    pub fn is_raw(&self) -> bool {
        self.base > 0
    }
}

impl From<SegmentRecordV2> for SegmentRecord {
    fn from(o: SegmentRecordV2) -> Self {
        SegmentRecord {
            drive: o.drive,
            path: o.path,
            salt: o.salt,
            state: o.state,
            data_len: o.data_len,
            records: o.records,
            checksum: o.checksum,
            base: 0,
        }
    }
}

/// Value of the `runs` column family. Key: run id, u64 big-endian.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunRecord {
    pub command: String,
    pub source: Option<String>,
    pub destination: Option<String>,
    pub started: u64,
    pub finished: Option<u64>,
    pub counters: Vec<(String, u64)>,
    pub outcome: Option<String>,
}

/// Value of the `passes` column family (catalog format 4). Key: pass number, u64
/// big-endian. One pass of `barge sync` or `barge cutover`: what its listing found and
/// what it did about it. Counters add up over the runs a pass took (a pass killed
/// midway is finished by the next run, under the same number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PassRecord {
    /// "sync" or "cutover".
    pub kind: String,
    pub source: String,
    pub destination: String,
    /// Unix seconds.
    pub started: u64,
    /// When its listing completed (Unix seconds).
    pub listed: Option<u64>,
    /// When the pass ended (Unix seconds); None while it runs or after it was killed.
    pub finished: Option<u64>,
    /// Runs of barge that worked on this pass (more than 1 after a kill).
    pub runs: u32,
    /// Seconds its listing took (the first run's start to the listing's end).
    pub listing_secs: f64,
    /// Every object of the source was listed, without errors.
    pub listing_complete: bool,
    /// Entries the listing could not read.
    pub listing_errors: u64,
    /// Objects the catalog did not have (or never staged).
    pub new: u64,
    pub bytes_new: u64,
    /// Objects with another size or version than the catalog's.
    pub changed: u64,
    pub bytes_changed: u64,
    pub unchanged: u64,
    pub bytes_unchanged: u64,
    /// Objects absent from the listing that the pass deleted at the destination (or
    /// forgot, when barge had never written them).
    pub deleted: u64,
    pub bytes_deleted: u64,
    /// Objects absent from the listing still at the destination after the pass (kept,
    /// refused by the limit, skipped after an incomplete listing, or failed).
    pub deletes_pending: u64,
    /// Objects that failed to fetch, stage, write or delete.
    pub failed: u64,
    /// Objects listed and gone by the time they were fetched.
    pub vanished: u64,
    /// What happened to deletions: "applied", "kept (--keep-deleted)", "refused: ...",
    /// "skipped: ...".
    pub deletions: String,
    /// "ok", or what stopped the pass.
    pub outcome: Option<String>,
    /// What was known to differ when the pass ended (see `passes::Lag`): objects and
    /// bytes. Shown until the next pass ends, without another catalog walk.
    pub lag_objects: u64,
    pub lag_bytes: u64,
    /// Objects gone from the source whose key at the destination holds an object barge
    /// did not write (a third party's): kept there, and forgotten (catalog format 5).
    pub kept_foreign: u64,
}

/// A pass record as catalog format 4 stored it (no `kept_foreign`); read only by the
/// upgrade to format 5.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PassRecordV4 {
    pub kind: String,
    pub source: String,
    pub destination: String,
    pub started: u64,
    pub listed: Option<u64>,
    pub finished: Option<u64>,
    pub runs: u32,
    pub listing_secs: f64,
    pub listing_complete: bool,
    pub listing_errors: u64,
    pub new: u64,
    pub bytes_new: u64,
    pub changed: u64,
    pub bytes_changed: u64,
    pub unchanged: u64,
    pub bytes_unchanged: u64,
    pub deleted: u64,
    pub bytes_deleted: u64,
    pub deletes_pending: u64,
    pub failed: u64,
    pub vanished: u64,
    pub deletions: String,
    pub outcome: Option<String>,
    pub lag_objects: u64,
    pub lag_bytes: u64,
}

impl From<PassRecordV4> for PassRecord {
    fn from(o: PassRecordV4) -> Self {
        PassRecord {
            kind: o.kind,
            source: o.source,
            destination: o.destination,
            started: o.started,
            listed: o.listed,
            finished: o.finished,
            runs: o.runs,
            listing_secs: o.listing_secs,
            listing_complete: o.listing_complete,
            listing_errors: o.listing_errors,
            new: o.new,
            bytes_new: o.bytes_new,
            changed: o.changed,
            bytes_changed: o.bytes_changed,
            unchanged: o.unchanged,
            bytes_unchanged: o.bytes_unchanged,
            deleted: o.deleted,
            bytes_deleted: o.bytes_deleted,
            deletes_pending: o.deletes_pending,
            failed: o.failed,
            vanished: o.vanished,
            deletions: o.deletions,
            outcome: o.outcome,
            lag_objects: o.lag_objects,
            lag_bytes: o.lag_bytes,
            kept_foreign: 0,
        }
    }
}

impl PassRecord {
    /// Seconds from the start of the pass to its end (0 while it runs).
    pub fn secs(&self) -> f64 {
        self.finished
            .map_or(0.0, |f| f.saturating_sub(self.started) as f64)
    }
}

/// Cumulative counters of one process at one instant (CF samples); the report's chart
/// plots the differences between consecutive samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// The command ("migrate", "ingest", "drain").
    pub command: String,
    pub listed_objects: u64,
    pub staged_bytes: u64,
    pub drained_bytes: u64,
    pub sealed_bytes: u64,
    /// Added after the first release of the format; older samples decode with 0.
    pub staged_objects: u64,
    pub drained_objects: u64,
}

/// A sample as the first release wrote it (no object counts).
#[derive(Deserialize)]
struct SampleRecordV1 {
    command: String,
    listed_objects: u64,
    staged_bytes: u64,
    drained_bytes: u64,
    sealed_bytes: u64,
}

/// Decodes a sample, also in the first release's shorter layout.
pub fn decode_sample(what: &dyn std::fmt::Display, b: &[u8]) -> Result<SampleRecord> {
    decode::<SampleRecord>(what, b).or_else(|e| match decode::<SampleRecordV1>(what, b) {
        Ok(v1) => Ok(SampleRecord {
            command: v1.command,
            listed_objects: v1.listed_objects,
            staged_bytes: v1.staged_bytes,
            drained_bytes: v1.drained_bytes,
            sealed_bytes: v1.sealed_bytes,
            staged_objects: 0,
            drained_objects: 0,
        }),
        Err(_) => Err(e),
    })
}

/// Where a chunk lives, and how many object references it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRecord {
    pub segment: u64,
    /// Byte offset of the record header inside the segment.
    pub offset: u64,
    /// Ciphertext plus tag length.
    pub sealed_len: u32,
    pub plain_len: u32,
    pub refs: u64,
}

impl ChunkRecord {
    /// `[ver u8][segment u64][offset u64][sealed_len u32][plain_len u32][refs u64]`, LE.
    pub fn encode(&self) -> [u8; CHUNK_RECORD_LEN] {
        let mut b = [0u8; CHUNK_RECORD_LEN];
        b[0] = CHUNK_RECORD_VERSION;
        b[1..9].copy_from_slice(&self.segment.to_le_bytes());
        b[9..17].copy_from_slice(&self.offset.to_le_bytes());
        b[17..21].copy_from_slice(&self.sealed_len.to_le_bytes());
        b[21..25].copy_from_slice(&self.plain_len.to_le_bytes());
        b[25..33].copy_from_slice(&self.refs.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != CHUNK_RECORD_LEN || b[0] != CHUNK_RECORD_VERSION {
            return Err(Error::CorruptRecord {
                what: "chunk".into(),
                message: format!("length {} / version {:?}", b.len(), b.first()),
            });
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        Ok(ChunkRecord {
            segment: u64_at(1),
            offset: u64_at(9),
            sealed_len: u32_at(17),
            plain_len: u32_at(21),
            refs: u64_at(25),
        })
    }
}

/// Merge operands on the `chunks` column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOp {
    /// Set the location (written when the chunk becomes durable). Keeps the refcount.
    Locate {
        segment: u64,
        offset: u64,
        sealed_len: u32,
        plain_len: u32,
    },
    /// Add to the reference count (negative to drop references).
    AddRefs(i64),
}

/// Operand tag for [`ChunkOp::Locate`].
const OP_LOCATE: u8 = 1;
/// Operand tag for [`ChunkOp::AddRefs`].
const OP_ADDREFS: u8 = 2;

impl ChunkOp {
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            ChunkOp::Locate {
                segment,
                offset,
                sealed_len,
                plain_len,
            } => {
                let mut v = Vec::with_capacity(25);
                v.push(OP_LOCATE);
                v.extend_from_slice(&segment.to_le_bytes());
                v.extend_from_slice(&offset.to_le_bytes());
                v.extend_from_slice(&sealed_len.to_le_bytes());
                v.extend_from_slice(&plain_len.to_le_bytes());
                v
            }
            ChunkOp::AddRefs(d) => {
                let mut v = vec![OP_ADDREFS];
                v.extend_from_slice(&d.to_le_bytes());
                v
            }
        }
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        match (b.first(), b.len()) {
            (Some(&OP_LOCATE), 25) => Some(ChunkOp::Locate {
                segment: u64::from_le_bytes(b[1..9].try_into().ok()?),
                offset: u64::from_le_bytes(b[9..17].try_into().ok()?),
                sealed_len: u32::from_le_bytes(b[17..21].try_into().ok()?),
                plain_len: u32::from_le_bytes(b[21..25].try_into().ok()?),
            }),
            (Some(&OP_ADDREFS), 9) => Some(ChunkOp::AddRefs(i64::from_le_bytes(
                b[1..9].try_into().ok()?,
            ))),
            _ => None,
        }
    }
}

/// Applies merge operands to an existing chunk value. Operands that do not decode are
/// skipped (they cannot be produced by this code); a refcount never goes below zero.
pub fn merge_chunk<'a>(
    existing: Option<&[u8]>,
    operands: impl Iterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut rec = existing
        .and_then(|b| ChunkRecord::decode(b).ok())
        .unwrap_or(ChunkRecord {
            segment: 0,
            offset: 0,
            sealed_len: 0,
            plain_len: 0,
            refs: 0,
        });
    for op in operands.filter_map(ChunkOp::decode) {
        match op {
            ChunkOp::Locate {
                segment,
                offset,
                sealed_len,
                plain_len,
            } => {
                rec.segment = segment;
                rec.offset = offset;
                rec.sealed_len = sealed_len;
                rec.plain_len = plain_len;
            }
            ChunkOp::AddRefs(d) => {
                rec.refs = if d >= 0 {
                    rec.refs.saturating_add(d as u64)
                } else {
                    rec.refs.saturating_sub(d.unsigned_abs())
                };
            }
        }
    }
    rec.encode().to_vec()
}

/// Encodes a versioned postcard value.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Serialising these plain structs into a Vec cannot fail.
    out.extend(postcard::to_allocvec(v).unwrap_or_default());
    out
}

/// Decodes a versioned postcard value, naming `what` on failure.
pub fn decode<T: for<'de> Deserialize<'de>>(what: &dyn std::fmt::Display, b: &[u8]) -> Result<T> {
    match b.split_first() {
        Some((&RECORD_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| Error::CorruptRecord {
                what: what.to_string(),
                message: e.to_string(),
            })
        }
        Some((v, _)) => Err(Error::CorruptRecord {
            what: what.to_string(),
            message: format!("record version {v}, this barge reads {RECORD_VERSION}"),
        }),
        None => Err(Error::CorruptRecord {
            what: what.to_string(),
            message: "empty value".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_merge_locates_and_counts() {
        let ops = [
            ChunkOp::AddRefs(2).encode(),
            ChunkOp::Locate {
                segment: 3,
                offset: 4096,
                sealed_len: 100,
                plain_len: 84,
            }
            .encode(),
            ChunkOp::AddRefs(-1).encode(),
        ];
        let v = merge_chunk(None, ops.iter().map(|v| v.as_slice()));
        let r = ChunkRecord::decode(&v).unwrap();
        assert_eq!(
            (r.segment, r.offset, r.sealed_len, r.plain_len, r.refs),
            (3, 4096, 100, 84, 1)
        );
        let v2 = merge_chunk(
            Some(&v),
            std::iter::once(ChunkOp::AddRefs(-5).encode())
                .collect::<Vec<_>>()
                .iter()
                .map(|v| v.as_slice()),
        );
        assert_eq!(ChunkRecord::decode(&v2).unwrap().refs, 0);
    }

    #[test]
    fn versioned_values_round_trip_and_reject_garbage() {
        let r = RunRecord {
            command: "ingest".into(),
            ..Default::default()
        };
        let b = encode(&r);
        assert_eq!(decode::<RunRecord>(&"run 1", &b).unwrap(), r);
        assert!(decode::<RunRecord>(&"run 1", &[9, 1, 2]).is_err());
        assert!(decode::<ObjectRecord>(&"obj", &[1, 255, 255, 255]).is_err());
    }
}

//! Reclaiming staging space. A sealed segment whose chunks are no longer needed by any
//! object that still has to reach its destination is deleted: chunks of drained or
//! verified objects, chunks whose last reference went away (an object re-staged as a
//! newer version), and the orphaned bytes a crash left in resealed segments.
//!
//! Order: the chunks' locations are forgotten and the segment entry removed in one
//! synced catalog batch, then the file is deleted. A crash in between leaves a file the
//! catalog does not know, which recovery deletes. A chunk forgotten here that a future
//! object needs again is simply staged again (it is not durable any more).
//!
//! Cost: one pass over the objects (the set of needed chunk ids is held in memory, 32 B
//! per chunk) and one over the chunks. `barge reclaim`, `barge fsck`, and the start of an
//! ingest whose drives are nearly full ([`MIN_FREE_SEGMENTS`]) run it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::catalog::{Catalog, SegmentState};
use crate::crypto::ChunkId;
use crate::error::{Error, Result};

/// An ingest reclaims first when a drive has room for fewer than this many more
/// segments. (Not a percentage: on a shared filesystem "90% used" says nothing about
/// staging, and reclaiming early throws away dedup against drained content.)
pub const MIN_FREE_SEGMENTS: u64 = 2;

/// What a reclaim pass did.
#[derive(Debug, Default, Serialize)]
pub struct ReclaimReport {
    pub segments_removed: u64,
    pub bytes_freed: u64,
    pub chunks_forgotten: u64,
    /// Sealed segments kept because an object still to be drained uses them.
    pub segments_kept: u64,
}

/// Deletes every sealed segment no pending object needs.
pub fn reclaim(catalog: &Catalog) -> Result<ReclaimReport> {
    let mut needed: HashSet<ChunkId> = HashSet::new();
    for item in catalog.objects()? {
        let (_, rec) = item?;
        if !rec.state.is_at_destination() {
            needed.extend(rec.chunks.iter().map(|c| c.id));
        }
    }
    let mut in_segment: HashMap<u64, Vec<ChunkId>> = HashMap::new();
    let mut live: HashSet<u64> = HashSet::new();
    for item in catalog.chunks()? {
        let (id, c) = item?;
        if c.sealed_len == 0 {
            continue;
        }
        in_segment.entry(c.segment).or_default().push(id);
        if needed.contains(&id) {
            live.insert(c.segment);
        }
    }
    let mut rep = ReclaimReport::default();
    let mut dead = vec![];
    for item in catalog.segments()? {
        let (sid, rec) = item?;
        if rec.state != SegmentState::Sealed {
            continue;
        }
        if live.contains(&sid) {
            rep.segments_kept += 1;
        } else {
            dead.push((sid, rec));
        }
    }
    for (sid, rec) in dead {
        let chunks = in_segment.remove(&sid).unwrap_or_default();
        catalog.forget_segment(sid, &chunks)?;
        let p = Path::new(&rec.path);
        // Invariant 13: a slot of a raw drive is free (and TRIMmed) only once the catalog
        // has forgotten its segment.
        let len = if rec.is_raw() {
            // Tell the drive the slot's bytes are free (TRIM); best effort: files and
            // devices without discard simply keep them.
            let extent = super::format::Trailer::file_len(
                rec.data_len + rec.records * super::format::INDEX_ENTRY_LEN as u64,
            );
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(p)
                && let Err(e) = barge_firmware::discard(&f, p, rec.base, extent)
            {
                tracing::debug!("{e}");
            }
            rec.data_len
        } else {
            let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing a reclaimed segment", p, e)),
            }
            len
        };
        rep.segments_removed += 1;
        rep.bytes_freed += len;
        rep.chunks_forgotten += chunks.len() as u64;
    }
    if rep.segments_removed > 0 {
        tracing::info!(
            "reclaimed {} segments ({} bytes) no pending object needs",
            rep.segments_removed,
            rep.bytes_freed
        );
    }
    Ok(rep)
}

/// Whether any of `drives` has room for fewer than [`MIN_FREE_SEGMENTS`] more segments
/// of `segment_size` (free slots on a raw drive, free space on a directory's filesystem).
pub fn nearly_full(
    catalog: &Catalog,
    appliance_id: &[u8; 16],
    drives: &[std::path::PathBuf],
    segment_size: u64,
) -> bool {
    drives.iter().any(|d| {
        if super::device::is_raw(d) {
            return super::open_raw_drive(catalog, appliance_id, segment_size, d)
                .is_ok_and(|r| r.free_slots() < MIN_FREE_SEGMENTS);
        }
        nix::sys::statvfs::statvfs(d.as_path()).is_ok_and(|v| {
            v.blocks_available() * v.fragment_size() < MIN_FREE_SEGMENTS * segment_size
        })
    })
}

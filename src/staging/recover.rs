//! Crash recovery for staging (`barge fsck`, and the start of every ingest).
//!
//! * A segment still `Open` in the catalog belongs to a run that died. Its committed
//!   chunks are durable (they were fdatasync'ed before their catalog commit), so it is
//!   kept: the records are scanned from the header on, each checked by header CRC and
//!   GCM tag; the first record that fails marks the end. Index and trailer are written
//!   there and the segment becomes `Sealed`.
//! * A `seg-*.barge` file the catalog does not know (a crash between creating the file
//!   and recording it) holds no committed chunk and is deleted.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::format::{
    BLOCK, CHECKSUM_LEN, IndexEntry, RECORD_HEADER_LEN, RecordHeader, SegmentHasher, SegmentHeader,
    TRAILER_LEN, Trailer,
};
use crate::catalog::{Catalog, SegmentRecord, SegmentState};
use crate::crypto::seal::{aad, nonce};
use crate::crypto::{MasterKey, SealBackend, SegmentCipher, segment_key};
use crate::error::{Error, Result};

/// What recovery did.
#[derive(Debug, Default, Serialize)]
pub struct RecoveryReport {
    pub segments_resealed: u64,
    pub records_kept: u64,
    pub bytes_discarded: u64,
    pub orphan_files_removed: Vec<String>,
    /// Open segments that held no committed record (killed right after creation).
    pub empty_segments_removed: u64,
    /// Open segments whose committed records do not all verify (rot inside durable data).
    pub unrecoverable: Vec<String>,
}

/// Parses a segment file name `seg-<16 hex>.barge`.
pub fn segment_id_of(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".barge")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
}

/// Seals crashed segments and removes files the catalog does not know.
pub fn recover(
    catalog: &Catalog,
    master: &MasterKey,
    appliance_id: &[u8; 16],
    backend: SealBackend,
    segment_size: u64,
    drives: &[PathBuf],
) -> Result<RecoveryReport> {
    let mut rep = RecoveryReport::default();
    let mut open = vec![];
    for item in catalog.segments()? {
        let (id, rec) = item?;
        if rec.state == SegmentState::Open {
            open.push((id, rec));
        }
    }
    for (id, rec) in open {
        // A segment that cannot be recovered is reported and left Open; its chunks fail
        // authentication when read, by name, instead of stopping every other segment.
        if let Err(e) = reseal(catalog, master, backend, segment_size, id, rec, &mut rep) {
            tracing::error!("{e}");
            rep.unrecoverable.push(e.to_string());
        }
    }
    for d in drives {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = segment_id_of(&name)
                && catalog.get_segment(id)?.is_none()
            {
                let p = e.path();
                // Only our own files: a drive may be shared with another appliance.
                let mut head = vec![0u8; BLOCK];
                let ours = std::fs::File::open(&p)
                    .and_then(|f| f.read_exact_at(&mut head, 0))
                    .ok()
                    .map(|_| {
                        SegmentHeader::decode(&head).is_ok_and(|h| h.appliance_id == *appliance_id)
                    })
                    // A header that never reached the disk: ours by name and place.
                    .unwrap_or(true)
                    || head.iter().all(|&b| b == 0);
                if !ours {
                    tracing::warn!("{}: belongs to another appliance; left alone", p.display());
                    continue;
                }
                std::fs::remove_file(&p)
                    .map_err(|err| Error::io("removing orphan segment", &p, err))?;
                tracing::warn!(
                    "removed {}: segment unknown to the catalog (crash before it was recorded)",
                    p.display()
                );
                rep.orphan_files_removed.push(p.display().to_string());
            }
        }
    }
    Ok(rep)
}

/// A segment's bytes: a whole file, or a slot of a raw drive.
struct Region {
    f: std::fs::File,
    base: u64,
    len: u64,
}

impl Region {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.f.read_exact_at(buf, self.base + off)
    }
}

/// Seals one crashed `Open` segment after its last record that verifies, or removes it
/// when it never got a committed record.
fn reseal(
    catalog: &Catalog,
    master: &MasterKey,
    backend: SealBackend,
    segment_size: u64,
    id: u64,
    mut rec: SegmentRecord,
    rep: &mut RecoveryReport,
) -> Result<()> {
    let path = PathBuf::from(&rec.path);
    let raw = rec.is_raw();
    if rec.records == 0 {
        return remove_empty(catalog, segment_size, id, &path, raw, rep);
    }
    let seg_err = |message: String| Error::Segment {
        segment: id,
        drive: Path::new(&rec.drive).to_path_buf(),
        message,
    };
    let f = open_region(&path, raw, rec.base, segment_size, &seg_err)?;
    let mut head = vec![0u8; BLOCK];
    f.read_exact_at(&mut head, 0)
        .map_err(|e| seg_err(format!("cannot read header: {e}")))?;
    let header = SegmentHeader::decode(&head).map_err(|e| seg_err(format!("header: {e}")))?;
    if header.segment_id != id {
        return Err(seg_err(format!("file holds segment {}", header.segment_id)));
    }
    let cipher = SegmentCipher::new(backend, &segment_key(master, id, &header.salt));
    let mut hasher = SegmentHasher::new();
    hasher.update(&head);
    let (pos, index) = scan_records(&f, &cipher, id, &mut hasher);
    if pos < rec.data_len {
        return Err(seg_err(format!(
            "record at offset {pos} does not verify, but the catalog has records committed up to {}: \
             staged data is corrupt; segment left open, its objects will fail by name",
            rec.data_len
        )));
    }
    let (tail, new_len, checksum) = footer(&index, hasher, pos);
    write_footer(&f, &path, raw, pos, &tail, new_len, &seg_err)?;
    rep.segments_resealed += 1;
    rep.records_kept += index.len() as u64;
    rep.bytes_discarded += f.len.saturating_sub(new_len);
    tracing::warn!(
        "recovered segment {id} ({}): {} records kept, sealed at {pos} bytes",
        path.display(),
        index.len()
    );
    rec.state = SegmentState::Sealed;
    rec.data_len = pos;
    rec.records = index.len() as u64;
    rec.checksum = Some(checksum);
    catalog.put_segment(id, &rec)
}

/// Removes a segment recorded `Open` that never got a committed record: its file (not a
/// raw slot) and its catalog entry.
fn remove_empty(
    catalog: &Catalog,
    segment_size: u64,
    id: u64,
    path: &Path,
    raw: bool,
    rep: &mut RecoveryReport,
) -> Result<()> {
    // Recorded Open, then killed before its first commit: no chunk points into it
    // (locations are committed only after data is synced), and its header may never
    // have reached the disk. Nothing to keep: the file (or slot) and the entry go.
    let len = if raw {
        segment_size
    } else {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing an empty crashed segment", path, e)),
        }
        len
    };
    catalog.delete_segment(id)?;
    rep.bytes_discarded += len;
    rep.empty_segments_removed += 1;
    tracing::warn!(
        "segment {id}: crashed before its first commit; {} removed",
        path.display()
    );
    Ok(())
}

/// Opens a crashed segment's bytes for reading and writing: its slot of a raw drive or
/// its whole file.
fn open_region(
    path: &Path,
    raw: bool,
    base: u64,
    segment_size: u64,
    seg_err: &impl Fn(String) -> Error,
) -> Result<Region> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| seg_err(format!("cannot open {} to recover it: {e}", path.display())))?;
    let len = if raw {
        segment_size
    } else {
        file.metadata()
            .map_err(|e| Error::io("stat segment", path, e))?
            .len()
    };
    Ok(Region { f: file, base, len })
}

/// Reads records from just after the header while each one decodes, fits and opens;
/// hashes the good ones. Returns where the first bad record starts and the index.
fn scan_records(
    f: &Region,
    cipher: &SegmentCipher,
    id: u64,
    hasher: &mut SegmentHasher,
) -> (u64, Vec<IndexEntry>) {
    let file_len = f.len;
    let mut pos = BLOCK as u64;
    let mut index = vec![];
    let mut hdr_buf = [0u8; RECORD_HEADER_LEN];
    loop {
        if pos + RECORD_HEADER_LEN as u64 > file_len || f.read_exact_at(&mut hdr_buf, pos).is_err()
        {
            break;
        }
        let Ok(h) = RecordHeader::decode(&hdr_buf) else {
            break;
        };
        if pos + h.record_len() > file_len {
            break;
        }
        let mut sealed = vec![0u8; h.sealed_len as usize];
        if f.read_exact_at(&mut sealed, pos + RECORD_HEADER_LEN as u64)
            .is_err()
        {
            break;
        }
        let stored = sealed.clone();
        if cipher
            .open(nonce(pos), &aad(&h.chunk, id, pos), &mut sealed)
            .is_err()
        {
            break;
        }
        hasher.update(&hdr_buf);
        hasher.update(&stored);
        index.push(IndexEntry {
            chunk: h.chunk,
            offset: pos,
            plain_len: h.plain_len,
            sealed_len: h.sealed_len,
        });
        pos += h.record_len();
    }
    (pos, index)
}

/// The bytes after the last record (index, padding, trailer), the new segment length
/// and the data checksum.
fn footer(
    index: &[IndexEntry],
    mut hasher: SegmentHasher,
    pos: u64,
) -> (Vec<u8>, u64, [u8; CHECKSUM_LEN]) {
    let mut tail = vec![];
    for e in index {
        e.encode(&mut tail);
    }
    hasher.update(&tail);
    let index_len = tail.len() as u64;
    let new_len = Trailer::file_len(pos + index_len);
    tail.resize((new_len - TRAILER_LEN as u64 - pos) as usize, 0);
    let checksum = hasher.finish();
    tail.extend_from_slice(
        &Trailer {
            record_count: index.len() as u32,
            index_offset: pos,
            index_len,
            data_checksum: checksum,
        }
        .encode(),
    );
    (tail, new_len, checksum)
}

/// Writes the footer at `pos` and makes it durable (O_DIRECT on a raw drive; write,
/// truncate and fsync for a file).
fn write_footer(
    f: &Region,
    path: &Path,
    raw: bool,
    pos: u64,
    tail: &[u8],
    new_len: u64,
    seg_err: &impl Fn(String) -> Error,
) -> Result<()> {
    if raw {
        // Raw drives are written only with O_DIRECT through the io_uring engine: the
        // footer goes out with the start of its block read back in front of it.
        let block = pos / BLOCK as u64 * BLOCK as u64;
        let direct = super::device::open(path, true)?;
        let mut buf =
            super::device::read_at(&direct, path, f.base + block, (pos - block) as usize)?;
        buf.extend_from_slice(tail);
        super::device::write_at(&direct, path, f.base + block, &buf)?;
    } else {
        f.f.write_all_at(tail, f.base + pos)
            .and_then(|_| f.f.set_len(new_len))
            .and_then(|_| f.f.sync_all())
            .map_err(|e| seg_err(format!("cannot write recovered footer: {e}")))?;
    }
    Ok(())
}

//! The per-drive writer thread: seal, append, fdatasync, commit, acknowledge.
//!
//! Ordering (the durability invariant): a chunk's location is written to the catalog only
//! after the segment bytes holding it were written and fdatasync'ed; waiters are told
//! "durable" only after that catalog commit.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::format::{
    BLOCK, CHECKSUM_LEN, INDEX_ENTRY_LEN, IndexEntry, RECORD_HEADER_LEN, RecordHeader,
    SEGMENT_FORMAT_VERSION, SegmentHasher, SegmentHeader, TRAILER_LEN, Trailer, round_up,
};
use super::io::WriteEngine;
use super::{Shared, StageFailure};
use crate::catalog::{ChunkOp, META_NEXT_SEGMENT, SegmentRecord, SegmentState, unix_now};
use crate::crypto::seal::{aad, nonce};
use crate::crypto::{ChunkId, SegmentCipher, TAG_LEN, random_bytes, segment_key};
use crate::error::{Error, Result};

/// How long the writer waits for more chunks before committing what it has.
pub const COMMIT_IDLE: Duration = Duration::from_millis(3);

/// A chunk to seal and append.
pub(crate) struct WriteReq {
    pub id: ChunkId,
    pub data: bytes::BytesMut,
}

pub(crate) enum Msg {
    Chunk(WriteReq),
    Shutdown,
}

struct OpenSeg {
    id: u64,
    file: File,
    path: PathBuf,
    /// Where the segment starts in `file`: 0 for a segment file, its slot on a raw drive
    /// (never 0: slots start at 1 MiB).
    base: u64,
    salt: [u8; 16],
    cipher: SegmentCipher,
    /// Logical end: where the next record goes.
    pos: u64,
    /// Registered buffer holding the block that starts at `cur_start`.
    cur: usize,
    cur_start: u64,
    cur_fill: usize,
    index: Vec<IndexEntry>,
    hasher: SegmentHasher,
    capacity: u64,
}

struct Writer {
    sh: Arc<Shared>,
    drive: usize,
    eng: WriteEngine,
    seg: Option<OpenSeg>,
    pending: Vec<(ChunkId, ChunkOp)>,
    pending_bytes: u64,
}

/// Thread body. A panic (a bug) must not leave ingest waiting forever: every chunk in
/// flight is failed, the drive leaves the stripe, and later requests are refused.
pub(crate) fn run(sh: Arc<Shared>, drive: usize, rx: Receiver<Msg>) {
    let sh2 = sh.clone();
    let rx2 = rx.clone();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        run_inner(sh2, drive, rx2)
    }));
    if res.is_err() {
        let msg = format!(
            "staging writer for {} crashed (bug); its chunks are failed",
            sh.drives[drive].path.display()
        );
        tracing::error!("{msg}");
        sh.drives[drive].full.store(true, Ordering::Relaxed);
        sh.fail_all(&msg);
        for m in rx {
            match m {
                Msg::Chunk(r) => sh.complete(&r.id, Err(StageFailure::new(msg.clone()))),
                Msg::Shutdown => return,
            }
        }
    }
}

fn run_inner(sh: Arc<Shared>, drive: usize, rx: Receiver<Msg>) {
    let eng = WriteEngine::new(sh.settings.queue_depth, sh.settings.block_size);
    if let Ok(mut g) = sh.engine.lock()
        && g.is_none()
    {
        if let super::io::EngineKind::Fallback(why) = eng.kind() {
            tracing::warn!("staging falls back to threaded pwrite: {why}");
        }
        *g = Some(eng.kind().clone());
    }
    let mut w = Writer {
        sh,
        drive,
        eng,
        seg: None,
        pending: vec![],
        pending_bytes: 0,
    };
    loop {
        let msg = if w.pending.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(COMMIT_IDLE)
        };
        match msg {
            Ok(Msg::Chunk(req)) => {
                w.write_chunk(req);
                if w.pending_bytes >= w.sh.settings.commit_bytes {
                    w.commit_or_fail();
                }
            }
            Err(RecvTimeoutError::Timeout) => w.commit_or_fail(),
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                w.commit_or_fail();
                if let Err(e) = w.close_segment() {
                    tracing::error!("{e}");
                }
                return;
            }
        }
    }
}

impl Writer {
    fn drive_path(&self) -> &Path {
        &self.sh.drives[self.drive].path
    }

    fn drive_err(&self, message: impl std::fmt::Display) -> Error {
        Error::Drive {
            drive: self.drive_path().to_path_buf(),
            message: message.to_string(),
        }
    }

    fn write_chunk(&mut self, req: WriteReq) {
        let need = (RECORD_HEADER_LEN + req.data.len() + TAG_LEN) as u64;
        // Roll to a new segment when this record plus the grown footer would not fit.
        if let Some(s) = &self.seg {
            let footer = (s.index.len() as u64 + 1) * INDEX_ENTRY_LEN as u64 + TRAILER_LEN as u64;
            if s.pos + need + footer + BLOCK as u64 > s.capacity {
                self.commit_or_fail();
                if let Err(e) = self.close_segment() {
                    tracing::error!("{e}");
                }
            }
        }
        if self.seg.is_none() {
            match self.open_segment() {
                Ok(s) => self.seg = Some(s),
                Err(e) if e.is_no_space() => {
                    tracing::warn!("{e}; striping over the remaining drives");
                    self.sh.drives[self.drive]
                        .full
                        .store(true, Ordering::Relaxed);
                    return self.sh.route(req);
                }
                Err(e) => {
                    return self
                        .sh
                        .complete(&req.id, Err(StageFailure::new(e.to_string())));
                }
            }
        }
        if let Err(e) = self.append_record(req.id, req.data) {
            let msg = self.drive_err(format!("write failed: {e}")).to_string();
            self.sh
                .complete(&req.id, Err(StageFailure::new(msg.clone())));
            self.abandon_segment(&msg);
        }
    }

    fn append_record(&mut self, id: ChunkId, mut data: bytes::BytesMut) -> std::io::Result<()> {
        let Some(seg) = &mut self.seg else {
            return Err(std::io::Error::other("no open segment"));
        };
        let offset = seg.pos;
        let plain_len = data.len() as u32;
        let tag = seg
            .cipher
            .seal_detached(nonce(offset), &aad(&id, seg.id, offset), &mut data)
            .map_err(|_| std::io::Error::other("AES-GCM seal failed"))?;
        let hdr = RecordHeader {
            chunk: id,
            plain_len,
            sealed_len: (data.len() + TAG_LEN) as u32,
        };
        crate::failpoint::point("staging.before_append");
        append(&mut self.eng, seg, &hdr.encode(), true)?;
        append(&mut self.eng, seg, &data, true)?;
        append(&mut self.eng, seg, &tag, true)?;
        seg.index.push(IndexEntry {
            chunk: id,
            offset,
            plain_len,
            sealed_len: hdr.sealed_len,
        });
        self.pending.push((
            id,
            ChunkOp::Locate {
                segment: seg.id,
                offset,
                sealed_len: hdr.sealed_len,
                plain_len,
            },
        ));
        let rec_len = hdr.record_len();
        self.pending_bytes += rec_len;
        let st = &self.sh.stats;
        st.chunks_new.fetch_add(1, Ordering::Relaxed);
        st.bytes_new.fetch_add(plain_len as u64, Ordering::Relaxed);
        st.bytes_sealed.fetch_add(rec_len, Ordering::Relaxed);
        self.sh.drives[self.drive]
            .bytes_written
            .fetch_add(rec_len, Ordering::Relaxed);
        Ok(())
    }

    /// Takes a free slot of a raw drive: (device, its path, slot offset).
    fn open_slot(&self) -> Result<(File, PathBuf, u64)> {
        let drive = &self.sh.drives[self.drive];
        let Some(raw) = &drive.raw else {
            return Err(self.drive_err("not a raw drive"));
        };
        let base = {
            let mut r = raw
                .lock()
                .map_err(|_| self.drive_err("slot map lock poisoned"))?;
            let Some(slot) = r.take_slot() else {
                return Err(Error::DriveFull {
                    drive: drive.path.clone(),
                });
            };
            r.sb.slot_offset(slot)
        };
        let file = super::device::open(&drive.path, true)?;
        Ok((file, drive.path.clone(), base))
    }

    fn open_segment(&mut self) -> Result<OpenSeg> {
        let id = self.sh.catalog.next_id(META_NEXT_SEGMENT)?;
        let capacity = self.sh.settings.segment_size;
        let raw = self.sh.drives[self.drive].raw.is_some();
        let (file, path, base) = if raw {
            self.open_slot()?
        } else {
            let path = self.drive_path().join(format!("seg-{id:016x}.barge"));
            let file = open_direct(&path).map_err(|e| Error::io("creating segment", &path, e))?;
            self.reserve(&file, &path, capacity)?;
            (file, path, 0)
        };
        let salt: [u8; 16] = random_bytes();
        let key = segment_key(&self.sh.master, id, &salt);
        let cipher = SegmentCipher::new(self.sh.settings.seal_backend, &key);
        // Invariant 6: the catalog learns of the segment (state Open) before any record
        // is written. A crash between creating the file and this line leaves a file the
        // catalog does not know, holding no committed chunk; `recover` deletes it (on a
        // raw drive the slot simply stays free).
        self.sh.catalog.put_segment(
            id,
            &SegmentRecord {
                drive: self.drive_path().display().to_string(),
                path: path.display().to_string(),
                salt,
                state: SegmentState::Open,
                data_len: BLOCK as u64,
                records: 0,
                checksum: None,
                base,
            },
        )?;
        let header = SegmentHeader {
            version: SEGMENT_FORMAT_VERSION,
            appliance_id: self.sh.appliance_id,
            segment_id: id,
            salt,
            created: unix_now(),
            capacity,
        }
        .encode();
        let cur = self
            .eng
            .acquire()
            .map_err(|e| Error::io("staging write", &path, e))?;
        let mut seg = OpenSeg {
            id,
            file,
            path,
            base,
            salt,
            cipher,
            pos: 0,
            cur,
            cur_start: 0,
            cur_fill: 0,
            index: vec![],
            hasher: SegmentHasher::new(),
            capacity,
        };
        let mut block = vec![0u8; BLOCK];
        block[..header.len()].copy_from_slice(&header);
        append(&mut self.eng, &mut seg, &block, true)
            .map_err(|e| Error::io("writing segment header", &seg.path, e))?;
        Ok(seg)
    }

    /// Reserves a segment file's whole capacity: a full drive is found here, not mid-write.
    fn reserve(&self, file: &File, path: &Path, capacity: u64) -> Result<()> {
        if let Err(e) = nix::fcntl::fallocate(
            file.as_raw_fd(),
            nix::fcntl::FallocateFlags::empty(),
            0,
            capacity as i64,
        ) {
            if e == nix::errno::Errno::ENOSPC {
                let _ = std::fs::remove_file(path);
                return Err(Error::DriveFull {
                    drive: self.drive_path().to_path_buf(),
                });
            }
            if e != nix::errno::Errno::EOPNOTSUPP {
                return Err(Error::io("reserving segment space", path, e.into()));
            }
        }
        sync_dir(self.drive_path())
            .map_err(|e| Error::io("syncing staging directory", self.drive_path(), e))
    }

    fn segment_record(
        &self,
        seg: &OpenSeg,
        state: SegmentState,
        checksum: Option<[u8; CHECKSUM_LEN]>,
    ) -> SegmentRecord {
        SegmentRecord {
            drive: self.drive_path().display().to_string(),
            path: seg.path.display().to_string(),
            salt: seg.salt,
            state,
            data_len: seg.pos,
            records: seg.index.len() as u64,
            checksum,
            base: seg.base,
        }
    }

    /// Writes the partial tail block, waits, fdatasyncs, then commits the pending chunk
    /// locations and acknowledges their waiters.
    fn commit(&mut self) -> Result<()> {
        let Some(seg) = &mut self.seg else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        // Invariant 1: the locations are committed only after this fdatasync.
        flush_tail(&mut self.eng, seg).map_err(|e| Error::io("staging write", &seg.path, e))?;
        crate::failpoint::point("staging.after_sync");
        let rec = self.segment_record(
            self.seg.as_ref().expect("checked above"),
            SegmentState::Open,
            None,
        );
        let seg = self.seg.as_ref().expect("checked above");
        self.sh
            .catalog
            .commit_chunk_locations(seg.id, &rec, &self.pending)?;
        crate::failpoint::point("staging.after_commit");
        // Invariant 2: waiters are resolved only after the commit.
        for (id, _) in self.pending.drain(..) {
            self.sh.complete(&id, Ok(()));
        }
        self.pending_bytes = 0;
        Ok(())
    }

    fn commit_or_fail(&mut self) {
        if let Err(e) = self.commit() {
            let msg = self.drive_err(format!("commit failed: {e}")).to_string();
            self.abandon_segment(&msg);
        }
    }

    /// Fails every pending chunk and drops the open segment. Chunks committed earlier
    /// stay valid; the segment stays `Open` in the catalog for `barge fsck` to seal.
    fn abandon_segment(&mut self, msg: &str) {
        tracing::error!("{msg}");
        for (id, _) in self.pending.drain(..) {
            self.sh.complete(&id, Err(StageFailure::new(msg)));
        }
        self.pending_bytes = 0;
        if let Some(seg) = self.seg.take() {
            let _ = self.eng.drain();
            self.eng.release(seg.cur);
        }
    }

    /// Writes index and trailer, fdatasyncs, trims the file and marks it sealed.
    fn close_segment(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.commit()?;
        }
        let Some(mut seg) = self.seg.take() else {
            return Ok(());
        };
        let index_offset = seg.pos;
        let mut tail = Vec::with_capacity(seg.index.len() * INDEX_ENTRY_LEN + 2 * BLOCK);
        for e in &seg.index {
            e.encode(&mut tail);
        }
        seg.hasher.update(&tail);
        let index_len = tail.len() as u64;
        let checksum = seg.hasher.finish();
        let file_len = Trailer::file_len(index_offset + index_len);
        tail.resize((file_len - TRAILER_LEN as u64 - index_offset) as usize, 0);
        tail.extend_from_slice(
            &Trailer {
                record_count: seg.index.len() as u32,
                index_offset,
                index_len,
                data_checksum: checksum,
            }
            .encode(),
        );
        crate::failpoint::point("staging.before_seal");
        let res = (|| {
            append(&mut self.eng, &mut seg, &tail, false)?;
            flush_tail(&mut self.eng, &mut seg)?;
            if seg.base == 0 {
                seg.file.set_len(file_len)?;
                seg.file.sync_all()?;
            }
            Ok(())
        })();
        self.eng.release(seg.cur);
        res.map_err(|e| Error::io("sealing segment", &seg.path, e))?;
        debug_assert_eq!(round_up(seg.pos), file_len);
        seg.pos = index_offset;
        let rec = self.segment_record(&seg, SegmentState::Sealed, Some(checksum));
        self.sh.catalog.put_segment(seg.id, &rec)
    }
}

/// Appends bytes at the segment's logical end through the aligned buffers.
fn append(
    eng: &mut WriteEngine,
    seg: &mut OpenSeg,
    bytes: &[u8],
    hash: bool,
) -> std::io::Result<()> {
    let bs = eng.block_size();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (bs - seg.cur_fill).min(rest.len());
        eng.buf_mut(seg.cur)[seg.cur_fill..seg.cur_fill + n].copy_from_slice(&rest[..n]);
        seg.cur_fill += n;
        rest = &rest[n..];
        if seg.cur_fill == bs {
            eng.submit(&seg.file, seg.cur, seg.base + seg.cur_start, bs)?;
            seg.cur = eng.acquire()?;
            seg.cur_start += bs as u64;
            seg.cur_fill = 0;
        }
    }
    if hash {
        seg.hasher.update(bytes);
    }
    seg.pos += bytes.len() as u64;
    Ok(())
}

/// Writes the partially filled current block (zero padded to BLOCK), waits for all
/// writes and fdatasyncs. The block stays current: later appends rewrite it in place.
fn flush_tail(eng: &mut WriteEngine, seg: &mut OpenSeg) -> std::io::Result<()> {
    if seg.cur_fill > 0 {
        let len = round_up(seg.cur_fill as u64) as usize;
        eng.buf_mut(seg.cur)[seg.cur_fill..len].fill(0);
        eng.submit(&seg.file, seg.cur, seg.base + seg.cur_start, len)?;
        eng.fdatasync(&seg.file)?;
        eng.claim(seg.cur);
        Ok(())
    } else {
        eng.fdatasync(&seg.file)
    }
}

/// Opens a new file for O_DIRECT writing; falls back to buffered I/O on filesystems that
/// refuse O_DIRECT (tmpfs), which the fdatasync still makes durable.
fn open_direct(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create_new(true).mode(0o600);
    match o.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let _ = std::fs::remove_file(path);
            tracing::warn!(
                "{}: O_DIRECT refused by the filesystem; using buffered writes",
                path.display()
            );
            o.open(path)
        }
        Err(e) => Err(e),
    }
}

/// fsyncs a directory so a new file's entry is durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

//! Block I/O for staging: io_uring with registered, BLOCK-aligned buffers (O_DIRECT), and
//! a threaded pwrite/pread fallback for kernels or sandboxes without io_uring.
//!
//! This is the only module with `unsafe`: aligned allocation and handing buffer addresses
//! to the kernel. Each block says why it is sound.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::Arc;

use io_uring::{IoUring, opcode, types};

use super::format::BLOCK;

/// Environment variable that forces the pwrite/pread fallback (`pwrite`), for tests and
/// for kernels where io_uring misbehaves.
pub const ENV_IO_ENGINE: &str = "BARGE_IO_ENGINE";

/// A zeroed heap buffer aligned to [`BLOCK`], as O_DIRECT requires.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like Vec<u8>); moving it to another
// thread moves that ownership.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` bytes (rounded up to BLOCK, at least BLOCK), zeroed.
    pub fn new(len: usize) -> Self {
        let len = len.max(1).div_ceil(BLOCK) * BLOCK;
        let layout = Layout::from_size_align(len, BLOCK).expect("BLOCK-aligned layout is valid");
        // SAFETY: layout has non-zero size; the pointer is checked for null below.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is a live allocation of len initialised (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len, BLOCK).expect("layout was valid at alloc");
        // SAFETY: ptr was allocated by alloc_zeroed with exactly this layout and is freed once.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// Most read buffers the pool keeps for reuse; more in flight are freed when returned.
/// Reusing them saves zeroing and page-faulting a fresh multi-MiB buffer for every chunk.
const POOL_KEEP: usize = 32;

/// Read buffers handed back by dropped [`ReadBuf`]s, reused by the read thread.
#[derive(Clone, Default)]
struct BufPool(Arc<std::sync::Mutex<Vec<AlignedBuf>>>);

impl BufPool {
    /// A buffer of at least `len` bytes: the smallest pooled one that fits, or a new one
    /// rounded up to a power of two so that chunks of similar size share buffers.
    fn take(&self, len: usize) -> AlignedBuf {
        if let Ok(mut v) = self.0.lock() {
            let best = v
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= len)
                .min_by_key(|(_, b)| b.len())
                .map(|(i, _)| i);
            if let Some(i) = best {
                return v.swap_remove(i);
            }
        }
        AlignedBuf::new(len.next_power_of_two())
    }

    fn give(&self, buf: AlignedBuf) {
        if let Ok(mut v) = self.0.lock()
            && v.len() < POOL_KEEP
        {
            v.push(buf);
        }
    }
}

/// The bytes of one staging read, still in their aligned buffer (no copy). The buffer
/// goes back to the reader's pool when this (or the [`bytes::Bytes`] made from it) drops.
pub struct ReadBuf {
    buf: Option<AlignedBuf>,
    start: usize,
    len: usize,
    pool: BufPool,
}

impl ReadBuf {
    pub fn as_slice(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b.as_slice()[self.start..self.start + self.len],
            None => &[],
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let (start, len) = (self.start, self.len);
        match &mut self.buf {
            Some(b) => &mut b.as_mut_slice()[start..start + len],
            None => &mut [],
        }
    }

    /// Drops the first `n` bytes from the view (for example a record header).
    pub fn advance(&mut self, n: usize) {
        let n = n.min(self.len);
        self.start += n;
        self.len -= n;
    }

    /// Keeps only the first `n` bytes in the view.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// Shares the bytes without copying; the buffer returns to the pool once every
    /// clone of the result is dropped.
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.give(b);
        }
    }
}

/// Which engine a writer or reader ended up with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineKind {
    Uring,
    Fallback(String),
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineKind::Uring => f.write_str("io_uring"),
            EngineKind::Fallback(why) => write!(f, "threaded pwrite/pread fallback ({why})"),
        }
    }
}

fn try_ring(depth: u32) -> Result<IoUring, String> {
    if std::env::var(ENV_IO_ENGINE).is_ok_and(|v| v == "pwrite") {
        return Err(format!("{ENV_IO_ENGINE}=pwrite"));
    }
    IoUring::new(depth.next_power_of_two().max(8)).map_err(|e| format!("io_uring unavailable: {e}"))
}

/// Writes BLOCK-aligned buffers at BLOCK-aligned offsets, up to `depth` at once.
pub struct WriteEngine {
    ring: Option<IoUring>,
    kind: EngineKind,
    bufs: Vec<AlignedBuf>,
    /// For each buffer in flight: (file offset, length) of the write.
    in_flight: Vec<Option<(u64, u32)>>,
    free: Vec<usize>,
    /// Errors of fallback writes, reported at the next wait.
    deferred: Option<io::Error>,
}

impl WriteEngine {
    /// `depth` buffers of `block_size` bytes each (block_size a multiple of BLOCK).
    pub fn new(depth: usize, block_size: usize) -> Self {
        let depth = depth.clamp(1, 1024);
        let mut bufs: Vec<AlignedBuf> = (0..depth).map(|_| AlignedBuf::new(block_size)).collect();
        let (ring, kind) = match try_ring(depth as u32) {
            Ok(ring) => {
                let iov: Vec<libc::iovec> = bufs
                    .iter_mut()
                    .map(|b| libc::iovec {
                        iov_base: b.as_mut_ptr().cast(),
                        iov_len: b.len(),
                    })
                    .collect();
                // SAFETY: every iovec points at a live AlignedBuf owned by this engine. The
                // heap blocks never move (only the AlignedBuf handles do), and Drop drains
                // and drops the ring before the buffers are freed.
                match unsafe { ring.submitter().register_buffers(&iov) } {
                    Ok(()) => (Some(ring), EngineKind::Uring),
                    Err(e) => (
                        None,
                        EngineKind::Fallback(format!("io_uring buffer registration failed: {e}")),
                    ),
                }
            }
            Err(why) => (None, EngineKind::Fallback(why)),
        };
        WriteEngine {
            ring,
            kind,
            in_flight: vec![None; bufs.len()],
            free: (0..bufs.len()).rev().collect(),
            bufs,
            deferred: None,
        }
    }

    pub fn kind(&self) -> &EngineKind {
        &self.kind
    }

    pub fn block_size(&self) -> usize {
        self.bufs[0].len()
    }

    pub fn buf_mut(&mut self, idx: usize) -> &mut [u8] {
        self.bufs[idx].as_mut_slice()
    }

    /// Takes a free buffer, waiting for a write to finish if all are in flight.
    pub fn acquire(&mut self) -> io::Result<usize> {
        loop {
            if let Some(i) = self.free.pop() {
                return Ok(i);
            }
            self.wait_one()?;
        }
    }

    /// Takes buffer `idx` back out of the free list once its write has completed (used to
    /// keep appending to a partially written tail block).
    pub fn claim(&mut self, idx: usize) {
        self.free.retain(|&i| i != idx);
    }

    /// Returns buffer `idx` to the free list.
    pub fn release(&mut self, idx: usize) {
        if self.in_flight[idx].is_none() && !self.free.contains(&idx) {
            self.free.push(idx);
        }
    }

    /// Starts writing `len` bytes of buffer `idx` at `offset` of `file`. The buffer is
    /// returned to the free list when the write completes.
    pub fn submit(&mut self, file: &File, idx: usize, offset: u64, len: usize) -> io::Result<()> {
        debug_assert!(
            offset.is_multiple_of(BLOCK as u64)
                && len.is_multiple_of(BLOCK)
                && len <= self.block_size()
        );
        match &mut self.ring {
            Some(ring) => {
                let ptr = self.bufs[idx].as_mut_ptr();
                let sqe = opcode::WriteFixed::new(
                    types::Fd(file.as_raw_fd()),
                    ptr,
                    len as u32,
                    idx as u16,
                )
                .offset(offset)
                .build()
                .user_data(idx as u64);
                // SAFETY: the buffer at `ptr` is registered buffer `idx`, stays alive and is
                // not touched by us until its completion is reaped (it is out of `free`);
                // the fd stays open because the caller holds `file` until `drain`.
                while unsafe { ring.submission().push(&sqe) }.is_err() {
                    ring.submit()?;
                }
                ring.submit()?;
                self.in_flight[idx] = Some((offset, len as u32));
            }
            None => {
                let r = file.write_all_at(&self.bufs[idx].as_slice()[..len], offset);
                if let Err(e) = r {
                    self.deferred.get_or_insert(e);
                }
                self.free.push(idx);
            }
        }
        Ok(())
    }

    /// Reaps one completion (io_uring only), freeing its buffer.
    fn wait_one(&mut self) -> io::Result<()> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let Some(ring) = &mut self.ring else {
            return Ok(());
        };
        if self.in_flight.iter().all(Option::is_none) {
            return Ok(());
        }
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        let mut first_err = None;
        for (ud, res) in done {
            let idx = ud as usize;
            let Some((off, len)) = self.in_flight.get_mut(idx).and_then(Option::take) else {
                continue;
            };
            self.free.push(idx);
            if res < 0 {
                first_err.get_or_insert(io::Error::from_raw_os_error(-res));
            } else if res as u32 != len {
                first_err.get_or_insert(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write at offset {off}: {res} of {len} bytes"),
                ));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Waits for every write in flight.
    pub fn drain(&mut self) -> io::Result<()> {
        let mut first_err = self.deferred.take();
        while self.in_flight.iter().any(Option::is_some) {
            if let Err(e) = self.wait_one() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Drains, then fdatasyncs `file` (through the ring when there is one).
    pub fn fdatasync(&mut self, file: &File) -> io::Result<()> {
        self.drain()?;
        match &mut self.ring {
            Some(ring) => {
                let sqe = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(u64::MAX);
                // SAFETY: an fsync entry references no memory; the fd outlives the wait.
                while unsafe { ring.submission().push(&sqe) }.is_err() {
                    ring.submit()?;
                }
                ring.submit_and_wait(1)?;
                let mut res = None;
                while res.is_none() {
                    for c in ring.completion() {
                        if c.user_data() == u64::MAX {
                            res = Some(c.result());
                        }
                    }
                    if res.is_none() {
                        ring.submit_and_wait(1)?;
                    }
                }
                match res {
                    Some(r) if r < 0 => Err(io::Error::from_raw_os_error(-r)),
                    _ => Ok(()),
                }
            }
            None => file.sync_data(),
        }
    }
}

impl Drop for WriteEngine {
    fn drop(&mut self) {
        // Buffers must outlive any write the kernel still holds.
        let _ = self.drain();
        // Dropping the ring unregisters the buffers before `bufs` is freed (field order is
        // irrelevant here because we drop the ring explicitly first).
        self.ring.take();
    }
}

/// A read request for the reader thread.
struct ReadReq {
    file: Arc<File>,
    offset: u64,
    len: usize,
    reply: tokio::sync::oneshot::Sender<io::Result<ReadBuf>>,
}

/// A thread with its own io_uring that serves aligned reads for many callers at once.
#[derive(Clone)]
pub struct ReadService {
    tx: crossbeam_channel::Sender<ReadReq>,
    kind: EngineKind,
}

impl ReadService {
    /// Starts the service thread with up to `depth` reads in flight.
    pub fn start(depth: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<ReadReq>(depth * 2);
        let pool = BufPool::default();
        let ring = try_ring(depth as u32);
        let kind = match &ring {
            Ok(_) => EngineKind::Uring,
            Err(why) => EngineKind::Fallback(why.clone()),
        };
        let spawn = std::thread::Builder::new().name("barge-read".into());
        let res = match ring {
            Ok(ring) => spawn.spawn(move || uring_read_loop(ring, rx, depth, pool)),
            Err(_) => spawn.spawn(move || {
                for r in rx {
                    let _ = r.reply.send(read_exact_at(&r.file, r.offset, r.len, &pool));
                }
            }),
        };
        if let Err(e) = res {
            tracing::error!("cannot start the staging read thread: {e}");
        }
        ReadService { tx, kind }
    }

    pub fn kind(&self) -> &EngineKind {
        &self.kind
    }

    /// Reads `len` bytes at `offset` (any alignment) of `file`.
    pub async fn read(&self, file: Arc<File>, offset: u64, len: usize) -> io::Result<ReadBuf> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let req = ReadReq {
            file,
            offset,
            len,
            reply,
        };
        // The channel is bounded. Most sends find room and cost no thread hand-off; only
        // a full queue, where a send blocks, goes through the blocking pool.
        match self.tx.try_send(req) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(req)) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(req))
                    .await
                    .map_err(io::Error::other)?
                    .map_err(|_| io::Error::other("staging read thread has stopped"))?;
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                return Err(io::Error::other("staging read thread has stopped"));
            }
        }
        rx.await
            .map_err(|_| io::Error::other("staging read thread dropped a request"))?
    }
}

/// Reads `len` bytes at `offset` with BLOCK-aligned I/O (the fd may be O_DIRECT).
fn read_exact_at(file: &File, offset: u64, len: usize, pool: &BufPool) -> io::Result<ReadBuf> {
    let start = offset / BLOCK as u64 * BLOCK as u64;
    let skip = (offset - start) as usize;
    let want = (skip + len).div_ceil(BLOCK) * BLOCK;
    let mut buf = pool.take(want);
    let mut got = 0;
    while got < skip + len {
        let n = file.read_at(&mut buf.as_mut_slice()[got..want], start + got as u64)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        got += n;
    }
    Ok(ReadBuf {
        buf: Some(buf),
        start: skip,
        len,
        pool: pool.clone(),
    })
}

struct InFlightRead {
    _file: Arc<File>,
    buf: AlignedBuf,
    skip: usize,
    len: usize,
    want: usize,
    reply: tokio::sync::oneshot::Sender<io::Result<ReadBuf>>,
}

/// The read thread's loop: keeps up to `depth` reads in flight on `ring` until the
/// channel closes and every read has been answered.
fn uring_read_loop(
    mut ring: IoUring,
    rx: crossbeam_channel::Receiver<ReadReq>,
    depth: usize,
    pool: BufPool,
) {
    let mut slots: Vec<Option<InFlightRead>> = (0..depth).map(|_| None).collect();
    let mut open = true;
    loop {
        let busy = slots.iter().filter(|s| s.is_some()).count();
        if !open && busy == 0 {
            return;
        }
        // Fill free slots: block for the first request only when nothing is in flight.
        while open && slots.iter().any(Option::is_none) {
            let busy_now = slots.iter().any(Option::is_some);
            let Some(req) = next_request(&rx, busy_now, &mut open) else {
                break;
            };
            submit_read(&mut ring, &mut slots, req, &pool);
        }
        if slots.iter().all(Option::is_none) {
            continue;
        }
        if let Err(e) = ring.submit_and_wait(1) {
            for s in slots.iter_mut().filter_map(Option::take) {
                let _ = s.reply.send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            continue;
        }
        reap_reads(&mut ring, &mut slots, &pool);
    }
}

/// The next request: waits for one only when `busy_now` is false. `None` when there is
/// none waiting or the channel closed (then `open` becomes false).
fn next_request(
    rx: &crossbeam_channel::Receiver<ReadReq>,
    busy_now: bool,
    open: &mut bool,
) -> Option<ReadReq> {
    if busy_now {
        match rx.try_recv() {
            Ok(r) => Some(r),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                *open = false;
                None
            }
        }
    } else {
        match rx.recv() {
            Ok(r) => Some(r),
            Err(_) => {
                *open = false;
                None
            }
        }
    }
}

/// Queues `req` on the ring in a free slot with a pooled aligned buffer; when the
/// submission queue is full, answers it with a synchronous read instead.
fn submit_read(
    ring: &mut IoUring,
    slots: &mut [Option<InFlightRead>],
    req: ReadReq,
    pool: &BufPool,
) {
    let start = req.offset / BLOCK as u64 * BLOCK as u64;
    let skip = (req.offset - start) as usize;
    let want = (skip + req.len).div_ceil(BLOCK) * BLOCK;
    let mut buf = pool.take(want);
    let slot = slots.iter().position(Option::is_none).unwrap_or(0);
    let sqe = opcode::Read::new(
        types::Fd(req.file.as_raw_fd() as RawFd),
        buf.as_mut_ptr(),
        want as u32,
    )
    .offset(start)
    .build()
    .user_data(slot as u64);
    // SAFETY: `buf` is moved into `slots[slot]` right after and is neither read nor
    // freed until this entry's completion is reaped; the Arc<File> kept beside it
    // keeps the fd open for the kernel.
    let pushed = unsafe { ring.submission().push(&sqe) }.is_ok();
    if !pushed {
        let _ = req
            .reply
            .send(read_exact_at(&req.file, req.offset, req.len, pool));
        return;
    }
    slots[slot] = Some(InFlightRead {
        _file: req.file,
        buf,
        skip,
        len: req.len,
        want,
        reply: req.reply,
    });
}

/// Answers every completed read: its buffer as a [`ReadBuf`], or the error or short read.
fn reap_reads(ring: &mut IoUring, slots: &mut [Option<InFlightRead>], pool: &BufPool) {
    let done: Vec<(u64, i32)> = ring
        .completion()
        .map(|c| (c.user_data(), c.result()))
        .collect();
    for (ud, res) in done {
        let Some(s) = slots.get_mut(ud as usize).and_then(Option::take) else {
            continue;
        };
        let out = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else if (res as usize) < s.skip + s.len {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read: {res} of {} bytes", s.want),
            ))
        } else {
            Ok(ReadBuf {
                buf: Some(s.buf),
                start: s.skip,
                len: s.len,
                pool: pool.clone(),
            })
        };
        let _ = s.reply.send(out);
    }
}

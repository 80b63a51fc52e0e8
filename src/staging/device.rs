//! Raw staging drives: a block device (or a whole file standing in for one) that starts
//! with a superblock and holds segments in fixed-size slots.
//!
//! ```text
//! block 0, block 1    superblock copies A and B (the valid one with the higher sequence wins)
//! DATA_START ..       slot 0, slot 1, ... each `slot_size` bytes, one segment per slot
//! ```
//!
//! A segment in a slot has exactly the layout of a segment file (see [`super::format`]):
//! its offsets are relative to the slot start, which the catalog records as the segment's
//! `base`. A sealed drive also carries its manifest (see `crate::ship`) in slots that no
//! segment uses; the superblock points at it and holds the set key wrapped under the
//! unlock code. Superblocks are rewritten copy A / copy B alternately, so a crash during
//! a rewrite leaves the previous copy intact.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::format::{BLOCK, round_up};
use super::io::{AlignedBuf, WriteEngine};
use crate::error::{Error, Result};

/// Magic at the start of each superblock copy.
pub const DRIVE_MAGIC: [u8; 8] = *b"BARGEDRV";
/// Superblock layout version.
pub const DRIVE_FORMAT_VERSION: u16 = 1;
/// Where slot 0 starts: 1 MiB, aligned for any device.
pub const DATA_START: u64 = 1 << 20;
/// Bytes of a superblock copy covered by its CRC (the rest of the block is zero).
pub const SUPERBLOCK_LEN: usize = 256;
/// Length of a wrapped key: GCM nonce, 32-byte key, tag.
pub const WRAPPED_KEY_LEN: usize = 12 + 32 + 16;
/// Most bytes of one write while writing regions (manifests, erase passes).
const REGION_IO: usize = 1 << 20;

/// The largest manifest `import` reads from a drive. A manifest lists the drive's
/// chunks and objects and the whole set's index (about 100 B per chunk and per object:
/// a 16 TB drive of 1 MiB chunks needs about 2 GiB); the superblock's `manifest_len` is
/// only CRC-protected until the manifest authenticates, so it is bounded before
/// anything is allocated for it.
pub const MAX_MANIFEST_LEN: u64 = 4 << 30;

/// Set once `barge seal` wrote the manifest and the wrapped key.
pub const FLAG_SEALED: u16 = 1;
/// Set by `barge import` at the destination: the drive may take new segments again.
pub const FLAG_IMPORTED: u16 = 2;

/// The decoded superblock of a raw staging drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Superblock {
    pub version: u16,
    pub flags: u16,
    #[serde(serialize_with = "ser_hex")]
    pub appliance_id: [u8; 16],
    #[serde(serialize_with = "ser_hex")]
    pub drive_id: [u8; 16],
    #[serde(serialize_with = "ser_hex")]
    pub set_id: [u8; 16],
    /// Position of this drive in its set, and the set's size.
    pub index: u32,
    pub set_size: u32,
    /// Incremented on every rewrite; decides between the two copies.
    pub sequence: u64,
    pub created: u64,
    pub device_size: u64,
    pub slot_size: u64,
    pub slot_count: u64,
    /// Where the encrypted manifest is (0, 0 until sealed).
    pub manifest_offset: u64,
    pub manifest_len: u64,
    pub sealed_at: u64,
    /// The set key (the appliance master key) sealed under the unlock code; zero until
    /// sealed and after a crypto-erase.
    #[serde(skip)]
    pub wrapped_key: [u8; WRAPPED_KEY_LEN],
}

fn ser_hex<S: serde::Serializer>(b: &[u8; 16], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

impl Superblock {
    pub fn is_sealed(&self) -> bool {
        self.flags & FLAG_SEALED != 0
    }

    pub fn is_imported(&self) -> bool {
        self.flags & FLAG_IMPORTED != 0
    }

    /// Byte offset of slot `n`.
    pub fn slot_offset(&self, n: u64) -> u64 {
        DATA_START + n * self.slot_size
    }

    /// The slot a segment at `base` occupies.
    pub fn slot_of(&self, base: u64) -> Option<u64> {
        let rel = base.checked_sub(DATA_START)?;
        (rel.is_multiple_of(self.slot_size) && rel / self.slot_size < self.slot_count)
            .then_some(rel / self.slot_size)
    }

    /// Slots covered by the manifest region.
    pub fn manifest_slots(&self) -> std::ops::Range<u64> {
        if self.manifest_len == 0 {
            return 0..0;
        }
        let first = self.manifest_offset.saturating_sub(DATA_START) / self.slot_size;
        let end = (self.manifest_offset.saturating_add(self.manifest_len))
            .saturating_sub(DATA_START)
            .div_ceil(self.slot_size);
        first.min(self.slot_count)..end.min(self.slot_count)
    }

    /// The end of the last slot (decode checked that it does not overflow).
    fn slots_end(&self) -> u64 {
        DATA_START.saturating_add(self.slot_count.saturating_mul(self.slot_size))
    }

    /// The manifest's offset and length, checked before any of it is read on a drive of
    /// `device_len` bytes: the drive is as large as its superblock says, and the
    /// manifest lies within its slots and is at most [`MAX_MANIFEST_LEN`] bytes (the
    /// length is authenticated only once the manifest is read and opened).
    pub fn manifest_region(
        &self,
        device_len: u64,
    ) -> std::result::Result<(u64, usize), SuperblockError> {
        let bad = |why: String| Err(SuperblockError::ManifestRegion(why));
        if self.device_size > device_len {
            return bad(format!(
                "the superblock says the drive has {} bytes, it has {device_len}",
                self.device_size
            ));
        }
        let (off, len) = (self.manifest_offset, self.manifest_len);
        if len == 0 || len > MAX_MANIFEST_LEN {
            return bad(format!(
                "manifest length {len} is not within 1..={MAX_MANIFEST_LEN}"
            ));
        }
        let end = off.checked_add(len);
        if off < DATA_START || end.is_none_or(|e| e > self.slots_end()) {
            return bad(format!(
                "manifest at {off} ({len} bytes) is not within the slots ({DATA_START}..{})",
                self.slots_end()
            ));
        }
        Ok((off, len as usize))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(BLOCK);
        b.extend_from_slice(&DRIVE_MAGIC);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.appliance_id);
        b.extend_from_slice(&self.drive_id);
        b.extend_from_slice(&self.set_id);
        b.extend_from_slice(&self.index.to_le_bytes());
        b.extend_from_slice(&self.set_size.to_le_bytes());
        for v in [
            self.sequence,
            self.created,
            self.device_size,
            self.slot_size,
            self.slot_count,
            self.manifest_offset,
            self.manifest_len,
            self.sealed_at,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.wrapped_key);
        b.resize(SUPERBLOCK_LEN - 4, 0);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.resize(BLOCK, 0);
        b
    }

    pub fn decode(b: &[u8]) -> std::result::Result<Self, SuperblockError> {
        if b.len() < SUPERBLOCK_LEN || b[..8] != DRIVE_MAGIC {
            return Err(SuperblockError::BadMagic);
        }
        let crc = u32::from_le_bytes(le(&b[SUPERBLOCK_LEN - 4..]));
        if crc32c::crc32c(&b[..SUPERBLOCK_LEN - 4]) != crc {
            return Err(SuperblockError::Checksum);
        }
        let version = u16::from_le_bytes(le(&b[8..]));
        if version != DRIVE_FORMAT_VERSION {
            return Err(SuperblockError::Version(version));
        }
        let u64_at = |i: usize| u64::from_le_bytes(le(&b[68 + i * 8..]));
        let sb = Superblock {
            version,
            flags: u16::from_le_bytes(le(&b[10..])),
            appliance_id: le(&b[12..]),
            drive_id: le(&b[28..]),
            set_id: le(&b[44..]),
            index: u32::from_le_bytes(le(&b[60..])),
            set_size: u32::from_le_bytes(le(&b[64..])),
            sequence: u64_at(0),
            created: u64_at(1),
            device_size: u64_at(2),
            slot_size: u64_at(3),
            slot_count: u64_at(4),
            manifest_offset: u64_at(5),
            manifest_len: u64_at(6),
            sealed_at: u64_at(7),
            wrapped_key: le(&b[132..]),
        };
        if sb.slot_size == 0 || !sb.slot_size.is_multiple_of(BLOCK as u64) {
            return Err(SuperblockError::SlotSize(sb.slot_size));
        }
        let slots = sb.slot_count.checked_mul(sb.slot_size);
        if slots
            .and_then(|b| b.checked_add(DATA_START))
            .is_none_or(|end| end > sb.device_size)
        {
            return Err(SuperblockError::SlotsPastEnd);
        }
        Ok(sb)
    }
}

/// Copies the first N bytes of `b` into an array (callers slice with room to spare).
fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// True when `path` is a raw drive rather than a staging directory: a block device, or
/// a regular file (a drive image).
pub fn is_raw(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device() || m.is_file())
}

/// Opens a raw drive for O_DIRECT I/O (buffered where the filesystem refuses O_DIRECT,
/// e.g. an image file on tmpfs; fdatasync still makes writes durable).
pub fn open(path: &Path, write: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(write);
    match o.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => o
            .open(path)
            .map_err(|e| Error::io("opening raw drive", path, e)),
        Err(e) => Err(Error::io("opening raw drive", path, e)),
    }
}

/// Size in bytes of a block device or file (lseek to the end works for both).
pub fn size_of(f: &File, path: &Path) -> Result<u64> {
    let mut f = f;
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::io("sizing raw drive", path, e))
}

/// Reads `len` bytes at `offset` with BLOCK-aligned I/O (the fd may be O_DIRECT).
pub fn read_at(f: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let start = offset / BLOCK as u64 * BLOCK as u64;
    let skip = (offset - start) as usize;
    let mut buf = AlignedBuf::new(round_up((skip + len) as u64) as usize);
    let mut done = 0;
    while done < buf.len() {
        let n = (buf.len() - done).min(REGION_IO);
        f.read_exact_at(&mut buf.as_mut_slice()[done..done + n], start + done as u64)
            .map_err(|e| Error::io("reading raw drive", path, e))?;
        done += n;
    }
    Ok(buf.as_slice()[skip..skip + len].to_vec())
}

/// Writes `data` (zero-padded to a BLOCK multiple) at BLOCK-aligned `offset` through the
/// io_uring write engine, then fdatasyncs.
pub fn write_at(f: &File, path: &Path, offset: u64, data: &[u8]) -> Result<()> {
    debug_assert!(offset.is_multiple_of(BLOCK as u64));
    let ioe = |e| Error::io("writing raw drive", path, e);
    let mut eng = WriteEngine::new(4, REGION_IO);
    let mut pos = 0usize;
    while pos < data.len() {
        let n = (data.len() - pos).min(REGION_IO);
        let len = round_up(n as u64) as usize;
        let idx = eng.acquire().map_err(ioe)?;
        let buf = eng.buf_mut(idx);
        buf[..n].copy_from_slice(&data[pos..pos + n]);
        buf[n..len].fill(0);
        eng.submit(f, idx, offset + pos as u64, len).map_err(ioe)?;
        pos += n;
    }
    eng.drain().map_err(ioe)?;
    eng.fdatasync(f).map_err(ioe)
}

/// Overwrites bytes [0, len) with zeros (len a BLOCK multiple), several writes in
/// flight, then fdatasyncs.
pub fn zero_fill(f: &File, path: &Path, len: u64) -> Result<()> {
    let ioe = |e| Error::io("erasing raw drive", path, e);
    let mut eng = WriteEngine::new(8, REGION_IO);
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(REGION_IO as u64) as usize;
        let idx = eng.acquire().map_err(ioe)?;
        eng.buf_mut(idx).fill(0);
        eng.submit(f, idx, pos, n).map_err(ioe)?;
        pos += n as u64;
    }
    eng.drain().map_err(ioe)?;
    eng.fdatasync(f).map_err(ioe)
}

/// Why a block is not a valid superblock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    #[error("no barge superblock (bad magic)")]
    BadMagic,
    #[error("superblock checksum mismatch")]
    Checksum,
    #[error("drive format version {0}, this barge reads {DRIVE_FORMAT_VERSION}")]
    Version(u16),
    #[error("slot size {0} is not a multiple of {BLOCK}")]
    SlotSize(u64),
    #[error("slots extend past the recorded device size")]
    SlotsPastEnd,
    #[error("superblock points at no usable manifest: {0}")]
    ManifestRegion(String),
}

/// Reads both superblock copies and returns the valid one with the higher sequence.
pub fn read_superblock(f: &File, path: &Path) -> Result<Superblock> {
    let both = read_at(f, path, 0, 2 * BLOCK)?;
    let a = Superblock::decode(&both[..BLOCK]);
    let b = Superblock::decode(&both[BLOCK..]);
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(if b.sequence > a.sequence { b } else { a }),
        (Ok(s), Err(_)) | (Err(_), Ok(s)) => Ok(s),
        (Err(e), Err(_)) => Err(Error::Drive {
            drive: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Writes `sb` with the next sequence into the copy the current one is not in.
pub fn write_superblock(f: &File, path: &Path, sb: &mut Superblock) -> Result<()> {
    sb.sequence += 1;
    write_at(f, path, (sb.sequence % 2) * BLOCK as u64, &sb.encode())
}

/// Refuses a device that holds a mounted filesystem (the OS included).
pub fn check_not_mounted(path: &Path) -> Result<()> {
    std::fs::metadata(path).map_err(|e| Error::io("inspecting drive", path, e))?;
    let Some(rdev) = barge_firmware::dev_number(path) else {
        return Ok(());
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| barge_firmware::parse_mountinfo(&t))
        .map_err(|e| Error::io("reading mount table", "/proc/self/mountinfo", e))?;
    let devices = barge_firmware::discover(Path::new("/sys/block")).unwrap_or_default();
    let whole = barge_firmware::find_dev(&devices, &rdev);
    let used: Vec<String> = mounts
        .iter()
        .filter(|m| m.dev == rdev || whole.is_some_and(|d| d.holds(&m.dev)))
        .map(|m| m.mount_point.clone())
        .collect();
    if used.is_empty() {
        return Ok(());
    }
    let what = if used.iter().any(|m| m == "/") {
        "holds the operating system".to_string()
    } else {
        format!("holds a mounted filesystem ({})", used.join(", "))
    };
    Err(Error::Drive {
        drive: path.to_path_buf(),
        message: format!("{what}; refusing to use it for staging"),
    })
}

/// What is on a device and who uses it, read before anything is written to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// A regular file (a drive image), not a block device.
    pub regular_file: bool,
    /// An `O_EXCL` open answered `EBUSY`: mounted, held by the kernel or claimed by
    /// another process.
    pub busy: bool,
    /// Kernel holders of the device or its partitions (device-mapper, md, bcache).
    pub holders: Vec<String>,
    /// Kernel names of its partitions.
    pub partitions: Vec<String>,
    /// Partition table, filesystem and volume-manager signatures on it.
    pub signatures: Vec<&'static str>,
}

impl Usage {
    /// Why the device must not be written, `None` when it may. Holders and an exclusive
    /// user are live users of the device: never overridden. Partitions and signatures
    /// are old contents: `forced` (the operator named this device with `--force`)
    /// overrides them.
    pub fn refusal(&self, forced: bool) -> Option<String> {
        if !self.holders.is_empty() {
            return Some(format!(
                "held by {} (device-mapper, md or bcache use it)",
                self.holders.join(", ")
            ));
        }
        if self.busy {
            return Some(
                "in use: an exclusive open answered EBUSY (mounted, or claimed by another \
                 process)"
                    .into(),
            );
        }
        if forced {
            return None;
        }
        let mut found: Vec<String> = self.signatures.iter().map(|s| s.to_string()).collect();
        if !self.partitions.is_empty() {
            found.push(format!("partitions {}", self.partitions.join(", ")));
        }
        (!found.is_empty())
            .then(|| format!("holds {} (--force DEVICE overwrites it)", found.join(", ")))
    }
}

/// What is on the device at `path` and who uses it (see [`Usage`]), with the exclusive
/// claim on a block device held by the returned file while the caller writes (`None`
/// when busy).
pub fn usage(path: &Path) -> Result<(Usage, Option<File>)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("inspecting drive", path, e))?;
    let fw = |e: barge_firmware::Error| Error::Drive {
        drive: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut u = Usage {
        regular_file: meta.is_file(),
        ..Usage::default()
    };
    if meta.file_type().is_block_device() {
        let real = std::fs::canonicalize(path).map_err(|e| Error::io("resolving", path, e))?;
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sys = Path::new(barge_firmware::probe::SYS_CLASS_BLOCK);
        u.partitions = barge_firmware::probe::partitions(sys, &name);
        u.holders = barge_firmware::probe::holders(sys, &name, &u.partitions);
    }
    let claim = barge_firmware::probe::open_exclusive(path).map_err(fw)?;
    match &claim {
        None => u.busy = true,
        Some(f) => {
            let size = size_of(f, path)?;
            u.signatures = barge_firmware::probe::read_signatures(f, path, size).map_err(fw)?;
        }
    }
    Ok((u, claim))
}

/// What to write on a drive being prepared.
#[derive(Debug, Clone)]
pub struct PrepareSpec {
    pub appliance_id: [u8; 16],
    pub set_id: [u8; 16],
    pub index: u32,
    pub set_size: u32,
    pub slot_size: u64,
    /// Overwrite a superblock of another appliance or set, a partition table or a
    /// filesystem signature.
    pub force: bool,
}

/// Writes a fresh superblock: the drive joins `spec.set_id` with no segments. Refuses a
/// device in use (mounted, held, claimed) and, unless forced, one holding partitions or
/// another signature; the device stays claimed (`O_EXCL`) while it is written.
pub fn prepare(path: &Path, spec: &PrepareSpec) -> Result<Superblock> {
    check_not_mounted(path)?;
    let drive_err = |message: String| Error::Drive {
        drive: path.to_path_buf(),
        message,
    };
    let (u, _claim) = usage(path)?;
    if let Some(why) = u.refusal(spec.force) {
        return Err(drive_err(format!("{why}; refusing to use it for staging")));
    }
    let f = open(path, true)?;
    let size = size_of(&f, path)?;
    if let Ok(old) = read_superblock(&f, path)
        && !spec.force
        && (old.appliance_id != spec.appliance_id || old.set_id != spec.set_id)
    {
        return Err(drive_err(format!(
            "already holds barge drive set {}{}; pass --force to overwrite it",
            hex::encode(old.set_id),
            if old.is_sealed() && !old.is_imported() {
                " (sealed for shipping)"
            } else {
                ""
            }
        )));
    }
    let slot_count = size.saturating_sub(DATA_START) / spec.slot_size;
    if slot_count < 2 {
        return Err(drive_err(format!(
            "{size} bytes hold fewer than 2 segments of {} bytes",
            spec.slot_size
        )));
    }
    let sb = Superblock {
        version: DRIVE_FORMAT_VERSION,
        flags: 0,
        appliance_id: spec.appliance_id,
        drive_id: crate::crypto::random_bytes(),
        set_id: spec.set_id,
        index: spec.index,
        set_size: spec.set_size,
        sequence: 0,
        created: crate::catalog::unix_now(),
        device_size: size,
        slot_size: spec.slot_size,
        slot_count,
        manifest_offset: 0,
        manifest_len: 0,
        sealed_at: 0,
        wrapped_key: [0; WRAPPED_KEY_LEN],
    };
    // Both copies: an old superblock must not win over the new one by sequence.
    write_at(&f, path, 0, &[sb.encode(), sb.encode()].concat())?;
    Ok(sb)
}

/// A raw drive as the staging layer sees it: its superblock and which slots are taken.
#[derive(Debug)]
pub struct RawDrive {
    pub path: PathBuf,
    pub sb: Superblock,
    /// Slots holding a segment the catalog knows, or the manifest.
    pub used: std::collections::BTreeSet<u64>,
}

impl RawDrive {
    /// A free slot, lowest first.
    pub fn take_slot(&mut self) -> Option<u64> {
        let n = (0..self.sb.slot_count).find(|n| !self.used.contains(n))?;
        self.used.insert(n);
        Some(n)
    }

    pub fn free_slots(&self) -> u64 {
        self.sb.slot_count - self.used.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            version: DRIVE_FORMAT_VERSION,
            flags: FLAG_SEALED,
            appliance_id: [1; 16],
            drive_id: [2; 16],
            set_id: [3; 16],
            index: 1,
            set_size: 3,
            sequence: 7,
            created: 1_700_000_000,
            device_size: 64 << 20,
            slot_size: 8 << 20,
            slot_count: 7,
            manifest_offset: DATA_START + 6 * (8 << 20),
            manifest_len: 12345,
            sealed_at: 1_700_000_100,
            wrapped_key: [9; WRAPPED_KEY_LEN],
        }
    }

    #[test]
    fn superblock_round_trips_and_detects_damage() {
        let sb = sample();
        let b = sb.encode();
        assert_eq!(b.len(), BLOCK);
        assert_eq!(Superblock::decode(&b).unwrap(), sb);
        for i in [0, 9, 40, 70, 140, SUPERBLOCK_LEN - 1] {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(Superblock::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert_eq!(sb.manifest_slots(), 6..7);
        assert_eq!(sb.slot_of(DATA_START + 2 * (8 << 20)), Some(2));
        assert_eq!(sb.slot_of(DATA_START + 1), None);
    }

    #[test]
    fn holders_and_exclusive_users_are_refused_even_when_forced() {
        let clean = Usage::default();
        assert_eq!(clean.refusal(false), None);
        let held = Usage {
            holders: vec!["dm-0 (of loop3p1)".into()],
            ..Usage::default()
        };
        for forced in [false, true] {
            let why = held.refusal(forced).unwrap();
            assert!(why.contains("held by dm-0 (of loop3p1)"), "{why}");
        }
        let busy = Usage {
            busy: true,
            ..Usage::default()
        };
        assert!(busy.refusal(true).unwrap().contains("EBUSY"));
        let old = Usage {
            partitions: vec!["loop3p1".into()],
            signatures: vec!["GPT partition table"],
            ..Usage::default()
        };
        let why = old.refusal(false).unwrap();
        assert!(
            why.contains("GPT partition table, partitions loop3p1"),
            "{why}"
        );
        assert_eq!(old.refusal(true), None);
    }

    #[test]
    fn an_image_with_a_filesystem_is_not_prepared_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("drive.img");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(32 << 20).unwrap();
        f.write_all_at(b"XFSB", 0).unwrap();
        let spec = PrepareSpec {
            appliance_id: [1; 16],
            set_id: [2; 16],
            index: 0,
            set_size: 1,
            slot_size: 4 << 20,
            force: false,
        };
        let e = prepare(&p, &spec).unwrap_err().to_string();
        assert!(e.contains("holds XFS filesystem"), "{e}");
        prepare(
            &p,
            &PrepareSpec {
                force: true,
                ..spec
            },
        )
        .unwrap();
    }

    #[test]
    fn a_manifest_region_is_bounded_before_it_is_read() {
        let sb = sample();
        let size = sb.device_size;
        assert_eq!(
            sb.manifest_region(size).unwrap(),
            (sb.manifest_offset, 12345)
        );
        let with = |f: &dyn Fn(&mut Superblock)| {
            let mut s = sample();
            f(&mut s);
            // Still a valid superblock (CRC only): the region check is what refuses it.
            Superblock::decode(&s.encode()).unwrap();
            s.manifest_region(size).unwrap_err().to_string()
        };
        // A huge length, past the slots or past the hard cap.
        let e = with(&|s| s.manifest_len = u64::MAX - 10);
        assert!(e.contains("manifest length"), "{e}");
        let e = with(&|s| s.manifest_len = 9 << 20);
        assert!(e.contains("not within the slots"), "{e}");
        let e = with(&|s| s.manifest_offset = 4096);
        assert!(e.contains("not within the slots"), "{e}");
        let e = with(&|s| s.manifest_offset = u64::MAX);
        assert!(e.contains("not within the slots"), "{e}");
        let e = with(&|s| s.manifest_len = 0);
        assert!(e.contains("manifest length"), "{e}");
        // A drive smaller than its superblock says.
        let e = sample().manifest_region(size - 1).unwrap_err().to_string();
        assert!(e.contains("bytes, it has"), "{e}");
        // Slot arithmetic that overflows is refused, not a panic.
        let mut s = sample();
        s.slot_count = u64::MAX / 4096;
        s.slot_size = 1 << 20;
        assert!(Superblock::decode(&s.encode()).is_err());
    }

    #[test]
    fn newer_copy_wins_and_a_torn_copy_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("drive.img");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(32 << 20).unwrap();
        let spec = PrepareSpec {
            appliance_id: [1; 16],
            set_id: [2; 16],
            index: 0,
            set_size: 1,
            slot_size: 4 << 20,
            force: false,
        };
        let mut sb = prepare(&p, &spec).unwrap();
        assert_eq!(sb.slot_count, 7);
        let f = open(&p, true).unwrap();
        sb.flags = FLAG_SEALED;
        write_superblock(&f, &p, &mut sb).unwrap();
        assert_eq!(read_superblock(&f, &p).unwrap(), sb);
        // Tear the newer copy: the older one is read.
        let plain = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        plain
            .write_all_at(&[0xff; 16], (sb.sequence % 2) * BLOCK as u64 + 100)
            .unwrap();
        plain.sync_all().unwrap();
        assert_eq!(read_superblock(&f, &p).unwrap().flags, 0);
        // Another set is refused without --force.
        let other = PrepareSpec {
            set_id: [5; 16],
            ..spec
        };
        let e = prepare(&p, &other).unwrap_err().to_string();
        assert!(e.contains("already holds barge drive set"), "{e}");
        prepare(
            &p,
            &PrepareSpec {
                force: true,
                ..other
            },
        )
        .unwrap();
    }
}

//! What is on a block device before barge writes to it: on-disk signatures of partition
//! tables, filesystems and volume managers (a pure function over the first and last
//! bytes of the device), the kernel's holders of the device and its partitions (sysfs),
//! and whether anyone has it open exclusively (an `O_EXCL` open answering `EBUSY`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::Error;

/// Bytes read from the start of a device: covers ZFS labels L0 and L1 (256 KiB each).
pub const HEAD_LEN: u64 = 512 << 10;
/// Bytes read from the end of a device: covers ZFS labels L2 and L3, the md 0.90 and 1.0
/// superblocks and the backup GPT header.
pub const TAIL_LEN: u64 = 512 << 10;
/// Where sysfs lists every block device and partition by kernel name.
pub const SYS_CLASS_BLOCK: &str = "/sys/class/block";

/// LVM2 physical volume label (in one of the first four 512-byte sectors).
const LVM_LABEL: &[u8] = b"LABELONE";
/// LUKS header magic (LUKS1 and LUKS2) at offset 0.
const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";
/// Linux md superblock magic (0.90 and 1.x), little-endian on disk.
const MD_MAGIC: u32 = 0xa92b_4efc;
/// ZFS uberblock magic, in either byte order.
const ZFS_UB_MAGIC: u64 = 0x00ba_b10c;
/// bcache superblock magic at 4 KiB + 24.
const BCACHE_MAGIC: [u8; 16] = [
    0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81,
];
/// Page sizes a swap signature may have been written for (it sits at page end - 10).
const SWAP_PAGES: [u64; 4] = [4096, 8192, 16384, 65536];
/// Size of one ZFS vdev label; four per device (two at the start, two at the end).
const ZFS_LABEL: u64 = 256 << 10;

/// The first and last bytes of a device of `size` bytes: `head` from offset 0, `tail`
/// from offset `tail_at`.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    pub head: &'a [u8],
    pub tail: &'a [u8],
    pub tail_at: u64,
    pub size: u64,
}

impl Probe<'_> {
    /// `len` bytes at `off`, when they were read (in the head or the tail).
    fn at(&self, off: u64, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len as u64)?;
        if end <= self.head.len() as u64 {
            return Some(&self.head[off as usize..end as usize]);
        }
        let rel = off.checked_sub(self.tail_at)?;
        let rend = rel + len as u64;
        (rend <= self.tail.len() as u64).then(|| &self.tail[rel as usize..rend as usize])
    }

    fn is(&self, off: u64, want: &[u8]) -> bool {
        self.at(off, want.len()) == Some(want)
    }

    fn u32_le(&self, off: u64) -> Option<u32> {
        self.at(off, 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_either(&self, off: u64, want: u64) -> bool {
        self.at(off, 8).is_some_and(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a) == want || u64::from_be_bytes(a) == want
        })
    }
}

/// A test for one signature.
type Check = fn(&Probe) -> bool;

/// Every signature found, by name ("GPT partition table", "ext2/3/4 filesystem", ...);
/// empty for a blank (or barge-only) device.
pub fn signatures(p: &Probe) -> Vec<&'static str> {
    let checks: [(&'static str, Check); 14] = [
        ("GPT partition table", gpt),
        ("MBR partition table", mbr),
        ("LUKS container", |p| p.is(0, LUKS_MAGIC)),
        ("LVM2 physical volume", |p| {
            (0..4).any(|s| p.is(s * 512, LVM_LABEL))
        }),
        ("md RAID member", md),
        ("ext2/3/4 filesystem", ext),
        ("XFS filesystem", |p| p.is(0, b"XFSB")),
        ("btrfs filesystem", |p| p.is((64 << 10) + 64, b"_BHRfS_M")),
        ("swap space", swap),
        ("ZFS pool member", zfs),
        ("bcache device", |p| p.is(4096 + 24, &BCACHE_MAGIC)),
        ("NTFS filesystem", |p| p.is(3, b"NTFS    ")),
        ("FAT filesystem", fat),
        ("ISO 9660 filesystem", |p| p.is(32769, b"CD001")),
    ];
    checks
        .iter()
        .filter(|(_, f)| f(p))
        .map(|(name, _)| *name)
        .collect()
}

/// The ext2/3/4 magic at 1080 with a block size (log, at 1048) and revision (at 1100)
/// an ext superblock can have: two bytes alone would match 1 in 65536 random blocks.
fn ext(p: &Probe) -> bool {
    p.is(1080, &[0x53, 0xef])
        && p.u32_le(1048).is_some_and(|l| l <= 6)
        && p.u32_le(1100).is_some_and(|r| r <= 1)
}

/// "EFI PART" at LBA 1 (512- or 4096-byte sectors) or in the last sector (backup).
fn gpt(p: &Probe) -> bool {
    [512, 4096].iter().any(|&s| {
        p.is(s, b"EFI PART") || p.size.checked_sub(s).is_some_and(|o| p.is(o, b"EFI PART"))
    })
}

/// 0x55AA at 510 with at least one non-empty partition entry (type byte set), and not
/// a FAT or NTFS boot sector (which carry the same marker) nor GPT's protective MBR.
fn mbr(p: &Probe) -> bool {
    !gpt(p)
        && p.is(510, &[0x55, 0xaa])
        && !fat(p)
        && !p.is(3, b"NTFS    ")
        && (0..4).any(|i| p.at(446 + i * 16 + 4, 1).is_some_and(|t| t[0] != 0))
}

/// A 1.1 (at 0), 1.2 (at 4 KiB), 1.0 (end - 8 KiB, 4 KiB aligned) or 0.90 (last 64 KiB
/// aligned block but one) md superblock.
fn md(p: &Probe) -> bool {
    let mut at = vec![0, 4096];
    if let Some(e) = p.size.checked_sub(8192) {
        at.push(e & !4095);
    }
    if let Some(e) = (p.size & !65535).checked_sub(65536) {
        at.push(e);
    }
    at.into_iter().any(|o| p.u32_le(o) == Some(MD_MAGIC))
}

/// "SWAPSPACE2" or "SWAP-SPACE" 10 bytes before the end of the first page.
fn swap(p: &Probe) -> bool {
    SWAP_PAGES
        .iter()
        .any(|&pg| p.is(pg - 10, b"SWAPSPACE2") || p.is(pg - 10, b"SWAP-SPACE"))
}

/// An uberblock magic in the uberblock array (second half) of any of the four labels,
/// at each 1 KiB step.
fn zfs(p: &Probe) -> bool {
    let end = p.size & !(ZFS_LABEL - 1);
    let mut labels = vec![0, ZFS_LABEL];
    labels.extend(end.checked_sub(2 * ZFS_LABEL));
    labels.extend(end.checked_sub(ZFS_LABEL));
    labels
        .into_iter()
        .any(|l| (0..128u64).any(|i| p.u64_either(l + (128 << 10) + i * 1024, ZFS_UB_MAGIC)))
}

/// A FAT boot sector: "FAT" at 54 (FAT12/16) or 82 (FAT32) and the 0x55AA marker.
fn fat(p: &Probe) -> bool {
    p.is(510, &[0x55, 0xaa]) && (p.is(54, b"FAT") || p.is(82, b"FAT"))
}

/// Reads the head and tail of the device open as `f` and returns the signatures there.
pub fn read_signatures(f: &File, path: &Path, size: u64) -> Result<Vec<&'static str>, Error> {
    let read = |off: u64, len: u64| {
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, off)
            .map(|()| b)
            .map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })
    };
    let head = read(0, HEAD_LEN.min(size))?;
    let tail_at = size.saturating_sub(TAIL_LEN);
    let tail = read(tail_at, size - tail_at)?;
    Ok(signatures(&Probe {
        head: &head,
        tail: &tail,
        tail_at,
        size,
    }))
}

/// Opens a block device `O_EXCL` (read-only, buffered): `Ok(None)` when it is busy
/// (mounted, held by device-mapper, md, or opened exclusively by another process). Any
/// other path is opened plainly.
pub fn open_exclusive(path: &Path) -> Result<Option<File>, Error> {
    let block = std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    let mut o = OpenOptions::new();
    o.read(true);
    if block {
        // O_EXCL without O_CREAT claims a block device exclusively.
        o.custom_flags(nix::libc::O_EXCL);
    }
    match o.open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if block && e.raw_os_error() == Some(nix::libc::EBUSY) => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The kernel's holders (device-mapper, md, bcache...) of the device `name` and of each
/// of its partitions, as "holder (of partition)" or "holder".
pub fn holders(sys_class_block: &Path, name: &str, partitions: &[String]) -> Vec<String> {
    let list = |n: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(sys_class_block.join(n).join("holders"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut out = list(name);
    for part in partitions {
        out.extend(list(part).into_iter().map(|h| format!("{h} (of {part})")));
    }
    out
}

/// Kernel names of the partitions of the device `name` (sysfs entries with a
/// `partition` file).
pub fn partitions(sys_class_block: &Path, name: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sys_class_block.join(name))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 64 << 20;

    /// Bytes to write at an offset of the synthetic device.
    type Patch<'a> = (u64, &'a [u8]);

    /// A zeroed device image of SIZE bytes with `patch` written at each offset, probed.
    fn found(patches: &[Patch]) -> Vec<&'static str> {
        let mut head = vec![0u8; HEAD_LEN as usize];
        let tail_at = SIZE - TAIL_LEN;
        let mut tail = vec![0u8; TAIL_LEN as usize];
        for &(off, b) in patches {
            if off < HEAD_LEN {
                head[off as usize..off as usize + b.len()].copy_from_slice(b);
            } else {
                let r = (off - tail_at) as usize;
                tail[r..r + b.len()].copy_from_slice(b);
            }
        }
        signatures(&Probe {
            head: &head,
            tail: &tail,
            tail_at,
            size: SIZE,
        })
    }

    #[test]
    fn a_zeroed_device_is_clean() {
        assert!(found(&[]).is_empty());
        // A barge superblock is not a foreign signature.
        assert!(found(&[(0, b"BARGEDRV\x01\x00")]).is_empty());
    }

    #[test]
    fn each_signature_is_recognised() {
        let md_magic = MD_MAGIC.to_le_bytes();
        let zfs_le = ZFS_UB_MAGIC.to_le_bytes();
        let zfs_be = ZFS_UB_MAGIC.to_be_bytes();
        let cases: Vec<(&str, Vec<Patch>)> = vec![
            ("GPT partition table", vec![(512, b"EFI PART")]),
            ("GPT partition table", vec![(4096, b"EFI PART")]),
            ("GPT partition table", vec![(SIZE - 512, b"EFI PART")]),
            (
                "MBR partition table",
                vec![(510, &[0x55, 0xaa]), (446 + 4, &[0x83])],
            ),
            ("LUKS container", vec![(0, b"LUKS\xba\xbe")]),
            ("LVM2 physical volume", vec![(512, b"LABELONE")]),
            ("LVM2 physical volume", vec![(1536, b"LABELONE")]),
            ("md RAID member", vec![(4096, &md_magic)]),
            ("md RAID member", vec![(0, &md_magic)]),
            ("md RAID member", vec![(SIZE - 8192, &md_magic)]),
            ("md RAID member", vec![(SIZE - 65536, &md_magic)]),
            ("ext2/3/4 filesystem", vec![(1080, &[0x53, 0xef])]),
            ("XFS filesystem", vec![(0, b"XFSB")]),
            ("btrfs filesystem", vec![(65536 + 64, b"_BHRfS_M")]),
            ("swap space", vec![(4086, b"SWAPSPACE2")]),
            ("swap space", vec![(65526, b"SWAP-SPACE")]),
            ("ZFS pool member", vec![(128 << 10, &zfs_le)]),
            ("ZFS pool member", vec![((256 + 128 + 5) << 10, &zfs_be)]),
            (
                "ZFS pool member",
                vec![(SIZE - (128 << 10) + 3072, &zfs_le)],
            ),
            ("bcache device", vec![(4096 + 24, &BCACHE_MAGIC)]),
            (
                "NTFS filesystem",
                vec![(3, b"NTFS    "), (510, &[0x55, 0xaa])],
            ),
            (
                "FAT filesystem",
                vec![(82, b"FAT32   "), (510, &[0x55, 0xaa])],
            ),
            (
                "FAT filesystem",
                vec![(54, b"FAT16   "), (510, &[0x55, 0xaa])],
            ),
            ("ISO 9660 filesystem", vec![(32769, b"CD001")]),
        ];
        for (want, patches) in cases {
            assert_eq!(found(&patches), vec![want], "{patches:?}");
        }
    }

    #[test]
    fn near_misses_are_not_signatures() {
        // The boot-sector marker alone (no partition entry) is no partition table.
        assert!(found(&[(510, &[0x55, 0xaa])]).is_empty());
        // A FAT boot sector's boot code in the entry area is no partition table.
        let fat = found(&[(54, b"FAT12"), (510, &[0x55, 0xaa]), (450, &[7])]);
        assert_eq!(fat, vec!["FAT filesystem"]);
        // The md magic one byte off.
        assert!(found(&[(4097, &MD_MAGIC.to_le_bytes())]).is_empty());
    }

    #[test]
    fn a_device_smaller_than_head_and_tail_is_probed() {
        let mut b = vec![0u8; 8192];
        b[1080..1082].copy_from_slice(&[0x53, 0xef]);
        let p = Probe {
            head: &b,
            tail: &b,
            tail_at: 0,
            size: 8192,
        };
        assert_eq!(signatures(&p), vec!["ext2/3/4 filesystem"]);
    }

    fn put(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    #[test]
    fn holders_of_the_device_and_its_partitions_are_listed() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("sda/holders")).unwrap();
        assert!(holders(r, "sda", &[]).is_empty());
        put(r, "sda/sda1/partition");
        put(r, "sda/sda2/partition");
        put(r, "sda/queue/rotational");
        put(r, "sda2/holders/dm-0");
        put(r, "sdb/holders/md0");
        assert_eq!(partitions(r, "sda"), vec!["sda1", "sda2"]);
        assert_eq!(
            holders(r, "sda", &partitions(r, "sda")),
            vec!["dm-0 (of sda2)"]
        );
        assert_eq!(holders(r, "sdb", &[]), vec!["md0"]);
    }
}

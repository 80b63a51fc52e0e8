//! Drive discovery and preparation for the barge appliance.
//!
//! * Block devices from sysfs (model, serial, firmware, size, block size, NUMA node,
//!   rotational, `major:minor` of the device and its partitions), NVMe controllers and
//!   their namespaces, and the kernel's mount table: `barge drives` tells the OS disk,
//!   staging drives, other mounted disks and free ones apart.
//! * [`nvme`]: health (SMART log), identify, Format NVM with secure erase and Sanitize
//!   through the NVMe admin passthrough ioctl.
//! * [`discard`]: TRIM of a byte range (`BLKDISCARD`).
//! * [`by_id`]: the stable `/dev/disk/by-id` name of a device (kernel names change
//!   across boots and must never identify a drive).
//! * [`sysfs`]: the NVMe namespace behind any name of a device, and a drive's serial.

pub mod nvme;
pub mod sysfs;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Errors of drive discovery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("NVMe {dev}: {message}")]
    Nvme { dev: PathBuf, message: String },
    #[error("discard on {dev}: {message}")]
    Discard { dev: PathBuf, message: String },
}

/// `major:minor` of a block device node (any name of it); `None` for anything else.
pub fn dev_number(path: &Path) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = fs::metadata(path).ok()?;
    m.file_type().is_block_device().then(|| {
        let d = m.rdev();
        format!("{}:{}", nix::sys::stat::major(d), nix::sys::stat::minor(d))
    })
}

/// The device among `devices` whose `major:minor` is `dev` (whole devices only).
pub fn find_dev<'a>(devices: &'a [BlockDevice], dev: &str) -> Option<&'a BlockDevice> {
    devices.iter().find(|d| d.dev.as_deref() == Some(dev))
}

/// Health of one NVMe drive, read through the admin passthrough ioctl.
#[derive(Debug, Clone, Serialize)]
pub struct NvmeHealth {
    pub controller: nvme::ControllerInfo,
    pub smart: nvme::SmartLog,
    /// Why the drive must not take staging data; empty when healthy.
    pub problems: Vec<String>,
}

/// Reads and decodes only the SMART log of `dev` (what a dashboard polls each second;
/// identify data does not change).
pub fn nvme_smart(dev: &Path) -> Result<nvme::SmartLog, Error> {
    nvme::SmartLog::decode(&nvme::smart_log(dev)?).map_err(|message| Error::Nvme {
        dev: dev.to_path_buf(),
        message,
    })
}

/// Reads Identify Controller and the SMART log of the NVMe device `dev`.
pub fn nvme_health(dev: &Path) -> Result<NvmeHealth, Error> {
    let err = |message: String| Error::Nvme {
        dev: dev.to_path_buf(),
        message,
    };
    let id = nvme::identify_controller(dev)?;
    let log = nvme::smart_log(dev)?;
    let controller = nvme::ControllerInfo::decode(&id).map_err(err)?;
    let smart = nvme::SmartLog::decode(&log).map_err(err)?;
    let problems = smart.problems();
    Ok(NvmeHealth {
        controller,
        smart,
        problems,
    })
}

nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);

/// Discards (TRIMs) `len` bytes at `offset` of a block device: the drive may forget
/// them. Both must be multiples of the logical block size.
pub fn discard(dev: &std::fs::File, path: &Path, offset: u64, len: u64) -> Result<(), Error> {
    let range = [offset, len];
    // SAFETY: BLKDISCARD reads a `[u64; 2]` (start, length) from the pointer, which
    // points at `range`, alive for the whole synchronous call.
    unsafe { blkdiscard(dev.as_raw_fd(), &range) }.map_err(|e| Error::Discard {
        dev: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(())
}

/// The `/dev/disk/by-id` link of a block device, preferring serial-based NVMe and ATA
/// names (`nvme-<model>_<serial>`, `ata-…`) over EUI/WWN ones. `None` when udev made no
/// link (loop devices, drive images).
pub fn by_id(dev: &Path, by_id_dir: &Path) -> Option<PathBuf> {
    let target = fs::canonicalize(dev).ok()?;
    let mut links: Vec<PathBuf> = fs::read_dir(by_id_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| fs::canonicalize(p).is_ok_and(|t| t == target))
        .collect();
    let rank = |p: &PathBuf| {
        let n = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if n.starts_with("nvme-eui.") || n.starts_with("nvme-nvme.") || n.starts_with("wwn-") {
            2
        } else if n.ends_with("_1") && n.starts_with("nvme-") {
            1
        } else {
            0
        }
    };
    links.sort_by_key(|p| (rank(p), p.clone()));
    links.into_iter().next()
}

/// Size of the unit `/sys/block/*/size` counts in, whatever the device's block size.
pub const SYSFS_SECTOR: u64 = 512;

/// One block device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockDevice {
    /// Kernel name (nvme0n1, sda, loop3). Not stable across boots: never an identity.
    pub name: String,
    pub size_bytes: u64,
    pub logical_block_size: u32,
    pub rotational: bool,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub firmware_rev: Option<String>,
    pub numa_node: Option<i32>,
    pub is_nvme: bool,
    /// `major:minor` of the whole device (sysfs `dev`).
    pub dev: Option<String>,
    /// `major:minor` of its partitions.
    pub partitions: Vec<String>,
}

impl BlockDevice {
    /// Whether `major:minor` is this device or one of its partitions.
    pub fn holds(&self, dev: &str) -> bool {
        self.dev.as_deref() == Some(dev) || self.partitions.iter().any(|p| p == dev)
    }

    /// Mount points of filesystems on this device or its partitions.
    pub fn mount_points(&self, mounts: &[Mount]) -> Vec<String> {
        mounts
            .iter()
            .filter(|m| self.holds(&m.dev))
            .map(|m| m.mount_point.clone())
            .collect()
    }
}

/// One line of `/proc/self/mountinfo`: the filesystem's device and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// `major:minor`.
    pub dev: String,
    pub mount_point: String,
}

/// Parses `/proc/self/mountinfo` (fields: id, parent, major:minor, root, mount point,
/// ...; the mount point has spaces escaped as `\040`). Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let dev = f.nth(2)?;
            let mount_point = f.nth(1)?.replace("\\040", " ");
            dev.contains(':').then(|| Mount {
                dev: dev.to_string(),
                mount_point,
            })
        })
        .collect()
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// One NVMe controller (`/sys/class/nvme/nvmeX`) and its namespaces' block devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvmeController {
    /// Kernel name (nvme0): not stable across boots.
    pub name: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub firmware_rev: Option<String>,
    /// pcie, tcp, rdma, fc, loop.
    pub transport: Option<String>,
    /// PCI address for pcie.
    pub address: Option<String>,
    pub numa_node: Option<i32>,
    /// Namespace block devices (nvme0n1, ...), sorted.
    pub namespaces: Vec<String>,
}

/// Lists NVMe controllers under `sys_class_nvme` (normally `/sys/class/nvme`); an
/// absent directory (no NVMe driver loaded) is an empty list.
pub fn nvme_controllers(sys_class_nvme: &Path) -> Vec<NvmeController> {
    let Ok(rd) = fs::read_dir(sys_class_nvme) else {
        return vec![];
    };
    let mut out: Vec<NvmeController> = rd
        .flatten()
        .map(|e| {
            let dir = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let mut namespaces: Vec<String> = fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|n| n.file_name().to_string_lossy().into_owned())
                        .filter(|n| {
                            n.starts_with(&format!("{name}n"))
                                || (n.starts_with("nvme") && n.contains('c') && n.contains('n'))
                        })
                        .collect()
                })
                .unwrap_or_default();
            namespaces.sort();
            NvmeController {
                model: read_trim(&dir.join("model")),
                serial: read_trim(&dir.join("serial")),
                firmware_rev: read_trim(&dir.join("firmware_rev")),
                transport: read_trim(&dir.join("transport")),
                address: read_trim(&dir.join("address")),
                numa_node: read_trim(&dir.join("numa_node"))
                    .or_else(|| read_trim(&dir.join("device/numa_node")))
                    .and_then(|s| s.parse().ok()),
                namespaces,
                name,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Lists the block devices under `sys_block` (normally `/sys/block`), sorted by name.
/// Devices with size 0 (empty loop devices, card readers) are left out.
pub fn discover(sys_block: &Path) -> Result<Vec<BlockDevice>, Error> {
    let rd = fs::read_dir(sys_block).map_err(|source| Error::Read {
        path: sys_block.to_path_buf(),
        source,
    })?;
    let mut out = vec![];
    for e in rd.flatten() {
        let dir = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let sectors: u64 = read_trim(&dir.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        let dev = dir.join("device");
        // NVMe namespaces keep model/serial on the controller (device/), others too.
        let mut partitions: Vec<String> = fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|p| p.path().join("partition").exists())
                    .filter_map(|p| read_trim(&p.path().join("dev")))
                    .collect()
            })
            .unwrap_or_default();
        partitions.sort();
        let numa = read_trim(&dev.join("numa_node"))
            .or_else(|| read_trim(&dev.join("device/numa_node")))
            .and_then(|s| s.parse().ok());
        out.push(BlockDevice {
            is_nvme: name.starts_with("nvme"),
            size_bytes: sectors * SYSFS_SECTOR,
            logical_block_size: read_trim(&dir.join("queue/logical_block_size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(512),
            rotational: read_trim(&dir.join("queue/rotational")).as_deref() == Some("1"),
            model: read_trim(&dev.join("model")),
            serial: read_trim(&dev.join("serial")),
            firmware_rev: read_trim(&dev.join("firmware_rev"))
                .or_else(|| read_trim(&dev.join("rev"))),
            numa_node: numa,
            dev: read_trim(&dir.join("dev")),
            partitions,
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, v: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("{v}\n")).unwrap();
    }

    #[test]
    fn reads_a_recorded_sysfs_tree() {
        // Shaped after a qemu guest with an emulated NVMe drive and a virtio disk.
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        put(r, "nvme0n1/size", "2097152");
        put(r, "nvme0n1/queue/logical_block_size", "4096");
        put(r, "nvme0n1/queue/rotational", "0");
        put(
            r,
            "nvme0n1/device/model",
            "QEMU NVMe Ctrl                          ",
        );
        put(r, "nvme0n1/device/serial", "barge-data-1");
        put(r, "nvme0n1/device/firmware_rev", "9.2.0   ");
        put(r, "nvme0n1/device/device/numa_node", "-1");
        put(r, "vda/size", "41943040");
        put(r, "vda/dev", "254:0");
        put(r, "vda/vda1/partition", "1");
        put(r, "vda/vda1/dev", "254:1");
        put(r, "vda/queue/logical_block_size", "512");
        put(r, "vda/queue/rotational", "1");
        put(r, "loop0/size", "0");
        let d = discover(r).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "nvme0n1");
        assert_eq!(d[0].size_bytes, 1 << 30);
        assert_eq!(d[0].logical_block_size, 4096);
        assert_eq!(d[0].serial.as_deref(), Some("barge-data-1"));
        assert_eq!(d[0].model.as_deref(), Some("QEMU NVMe Ctrl"));
        assert_eq!(d[0].firmware_rev.as_deref(), Some("9.2.0"));
        assert_eq!(d[0].numa_node, Some(-1));
        assert!(d[0].is_nvme && !d[0].rotational);
        assert!(d[1].rotational && d[1].serial.is_none());
        assert_eq!(d[1].partitions, vec!["254:1".to_string()]);
        let mounts = parse_mountinfo(
            "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
             30 22 0:26 / /run rw shared:5 - tmpfs tmpfs rw\n\
             31 22 254:1 /srv /mnt/my\\040disk rw - ext4 /dev/vda1 rw\n\
             garbage\n",
        );
        assert_eq!(mounts.len(), 3);
        assert_eq!(d[1].mount_points(&mounts), vec!["/", "/mnt/my disk"]);
        assert!(d[0].mount_points(&mounts).is_empty());
    }

    #[test]
    fn lists_nvme_controllers_and_their_namespaces() {
        // Shaped after /sys/class/nvme of the qemu guest in image/test-boot.sh.
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for (c, serial, addr) in [
            ("nvme0", "BARGENVME0001", "0000:00:04.0"),
            ("nvme1", "BARGENVME0002", "0000:00:05.0"),
        ] {
            put(
                r,
                &format!("{c}/model"),
                "QEMU NVMe Ctrl                          ",
            );
            put(r, &format!("{c}/serial"), &format!("{serial}       "));
            put(r, &format!("{c}/firmware_rev"), "7.2.22  ");
            put(r, &format!("{c}/transport"), "pcie");
            put(r, &format!("{c}/address"), addr);
            put(r, &format!("{c}/numa_node"), "-1");
            put(r, &format!("{c}/{c}n1/size"), "8388608");
        }
        let cs = nvme_controllers(r);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[1].serial.as_deref(), Some("BARGENVME0002"));
        assert_eq!(cs[1].namespaces, vec!["nvme1n1".to_string()]);
        assert_eq!(cs[0].transport.as_deref(), Some("pcie"));
        assert_eq!(cs[0].address.as_deref(), Some("0000:00:04.0"));
        assert!(nvme_controllers(Path::new("/nonexistent/class/nvme")).is_empty());
    }

    /// BLKDISCARD on a real loop device punches the range out of its backing file.
    /// Needs root (losetup), as the whole test suite does.
    #[test]
    fn discard_frees_a_range_of_a_loop_device() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk.img");
        let f = fs::File::create(&img).unwrap();
        f.write_all_at(&vec![0xa5u8; 8 << 20], 0).unwrap();
        f.sync_all().unwrap();
        let before = fs::metadata(&img).unwrap().blocks();
        let o = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)
            .output()
            .expect("losetup");
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let res = fs::OpenOptions::new()
            .write(true)
            .open(&dev)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                discard(&d, Path::new(&dev), 1 << 20, 4 << 20).map_err(|e| e.to_string())
            });
        let _ = std::process::Command::new("losetup")
            .args(["-d", &dev])
            .status();
        res.unwrap();
        let after = fs::metadata(&img).unwrap().blocks();
        assert!(
            after < before,
            "{after} blocks after discard, {before} before"
        );
        let mut b = vec![1u8; 4096];
        fs::File::open(&img)
            .unwrap()
            .read_exact_at(&mut b, 2 << 20)
            .unwrap();
        assert!(b.iter().all(|&x| x == 0));
        let mut b = vec![0u8; 4096];
        fs::File::open(&img)
            .unwrap()
            .read_exact_at(&mut b, 6 << 20)
            .unwrap();
        assert!(b.iter().all(|&x| x == 0xa5), "outside the range kept");
    }

    /// The sysfs tree and mount table of the machine this project is built on (a
    /// Firecracker guest: one virtio disk holding `/`, zram for swap), recorded with
    /// `firmware/fixtures/record-sysfs.sh`.
    #[test]
    fn reads_the_recorded_build_host() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sysfs-build-host");
        let d = discover(&root.join("block")).unwrap();
        // zram0 has size 0 there (not set up) and is left out.
        assert_eq!(d.len(), 1, "{d:?}");
        let vda = &d[0];
        assert_eq!(vda.name, "vda");
        assert_eq!(vda.size_bytes, 536_870_912 * 512);
        assert_eq!(vda.logical_block_size, 512);
        assert!(vda.rotational && !vda.is_nvme);
        assert_eq!(vda.serial, None);
        assert_eq!(vda.dev.as_deref(), Some("254:0"));
        let mounts = parse_mountinfo(&fs::read_to_string(root.join("mountinfo")).unwrap());
        assert!(vda.mount_points(&mounts).contains(&"/".to_string()));
        assert!(nvme_controllers(&root.join("class-nvme")).is_empty());
    }

    #[test]
    fn a_missing_sysfs_is_named() {
        let e = discover(Path::new("/nonexistent/sys/block")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/sys/block"));
    }
}

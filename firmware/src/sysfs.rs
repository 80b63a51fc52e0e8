//! Lookups in sysfs by any name of a device: the NVMe namespace behind a path and the
//! serial of a drive.

use std::path::{Path, PathBuf};

/// Where sysfs lists block devices.
pub const SYS_BLOCK: &str = "/sys/block";

/// An NVMe namespace reached through any of its names (by-id link, kernel name).
#[derive(Debug, Clone)]
pub struct Namespace {
    /// `/dev/nvmeXnY`.
    pub dev: PathBuf,
    /// NVMe namespace id (sysfs `nsid`; 1 when sysfs does not say).
    pub nsid: u32,
}

/// The NVMe namespace behind `p`; `None` when `p` is not one.
pub fn nvme_namespace(p: &Path) -> Option<Namespace> {
    let dev = std::fs::canonicalize(p).ok()?;
    let name = dev.file_name()?.to_string_lossy().into_owned();
    if !name.starts_with("nvme") {
        return None;
    }
    let nsid = crate::nvme::namespace_id(Path::new(SYS_BLOCK), &name).unwrap_or(1);
    Some(Namespace { dev, nsid })
}

/// Where the serial of a drive comes from: sysfs for real devices, the backing file
/// for a loop device, the path for a drive image.
pub fn drive_serial(path: &Path) -> Option<String> {
    let Some(rdev) = crate::dev_number(path) else {
        return path.exists().then(|| format!("file:{}", path.display()));
    };
    let sys = Path::new(SYS_BLOCK);
    let devs = crate::discover(sys).ok()?;
    let d = crate::find_dev(&devs, &rdev)?;
    if let Some(s) = &d.serial {
        return Some(s.clone());
    }
    std::fs::read_to_string(format!("/sys/block/{}/loop/backing_file", d.name))
        .ok()
        .map(|b| format!("loop:{}", b.trim()))
}

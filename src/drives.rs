//! The node's drives: what each block device is (OS, staging, mounted, free), its health,
//! and preparing NVMe drives as raw staging drives (`barge drives`, `drives prepare`).
//!
//! Drives are named by their `/dev/disk/by-id` link (serial-based) wherever udev made
//! one: kernel names such as `nvme0n1` follow PCI enumeration and change across boots.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use barge_firmware::sysfs::{SYS_BLOCK, nvme_namespace};
use barge_firmware::{BlockDevice, NvmeHealth};
use serde::Serialize;

use crate::crypto::keys::KeyRequest;
use crate::error::{Error, Result};
use crate::node::{InitOptions, Node};
use crate::staging::device;
use crate::staging::set::DriveSet;

/// Where udev puts serial-based links.
pub const BY_ID: &str = "/dev/disk/by-id";

/// One block device as `barge drives` shows it.
#[derive(Debug, Serialize)]
pub struct DriveRow {
    #[serde(flatten)]
    pub device: BlockDevice,
    /// `/dev/disk/by-id/…` when udev made a link, else `/dev/<name>`.
    pub stable_path: String,
    pub mount_points: Vec<String>,
    /// "os", "staging <path>", "mounted <points>" or "free".
    pub role: String,
    /// "ok", "n/a" (not NVMe), "unreadable: …", or the problems found.
    pub health: String,
    pub nvme: Option<NvmeHealth>,
}

/// `major:minor` a path stands for: the device itself for a block device, else the
/// filesystem holding it.
fn dev_of(p: &Path) -> Option<String> {
    barge_firmware::dev_number(p).or_else(|| {
        std::fs::metadata(p).ok().map(|m| {
            let d = m.dev();
            format!("{}:{}", libc::major(d), libc::minor(d))
        })
    })
}

/// "ok", or the problems joined.
fn problems_text(problems: &[String]) -> String {
    if problems.is_empty() {
        "ok".into()
    } else {
        problems.join("; ")
    }
}

/// Health read through the ioctl: "ok", the problems, or "unreadable: …"; with details.
fn health_text(dev: &Path) -> (String, Option<NvmeHealth>) {
    match barge_firmware::nvme_health(dev) {
        Ok(h) => (problems_text(&h.problems), Some(h)),
        Err(e) => (format!("unreadable: {e}"), None),
    }
}

/// Health of an NVMe namespace: ("ok" | problems, details); "n/a" for other devices.
pub fn health_of(d: &BlockDevice) -> (String, Option<NvmeHealth>) {
    if !d.is_nvme {
        return ("n/a".into(), None);
    }
    health_text(&Path::new("/dev").join(&d.name))
}

/// Health of the NVMe namespace behind a staging path (any name of it): `None` when the
/// path is not an NVMe namespace, `"ok"` or the problems otherwise. Reads only the SMART
/// log (the status API asks every second).
pub fn health_of_path(p: &Path) -> Option<String> {
    let ns = nvme_namespace(p)?;
    Some(match barge_firmware::nvme_smart(&ns.dev) {
        Ok(s) => problems_text(&s.problems()),
        Err(e) => format!("unreadable: {e}"),
    })
}

/// Every block device with its role and health. `staging` are the node's drive paths.
pub fn table(staging: &[PathBuf]) -> Result<Vec<DriveRow>> {
    let devices = barge_firmware::discover(Path::new(SYS_BLOCK)).map_err(|e| Error::Drive {
        drive: SYS_BLOCK.into(),
        message: e.to_string(),
    })?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading", "/proc/self/mountinfo", e))?;
    let mounts = barge_firmware::parse_mountinfo(&mountinfo);
    let root = dev_of(Path::new("/"));
    Ok(devices
        .into_iter()
        .map(|d| {
            let mount_points = d.mount_points(&mounts);
            let on: Vec<String> = staging
                .iter()
                .filter(|p| dev_of(p).is_some_and(|x| d.holds(&x)))
                .map(|p| p.display().to_string())
                .collect();
            let role = if root.as_deref().is_some_and(|r| d.holds(r)) {
                if on.is_empty() {
                    "os".to_string()
                } else {
                    format!("os, staging {}", on.join(" "))
                }
            } else if !on.is_empty() {
                format!("staging {}", on.join(" "))
            } else if !mount_points.is_empty() {
                format!("mounted {}", mount_points.join(" "))
            } else {
                "free".to_string()
            };
            let dev = Path::new("/dev").join(&d.name);
            let stable_path = barge_firmware::by_id(&dev, Path::new(BY_ID))
                .unwrap_or(dev)
                .display()
                .to_string();
            let (health, nvme) = health_of(&d);
            DriveRow {
                device: d,
                stable_path,
                mount_points,
                role,
                health,
                nvme,
            }
        })
        .collect())
}

/// What `drives prepare` should do.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// Devices named on the command line.
    pub devices: Vec<PathBuf>,
    /// Every NVMe namespace that is free: not the OS, nothing mounted, no holder, no
    /// exclusive user, no partitions and no filesystem or volume signature on it.
    pub all_free: bool,
    /// Erase each new drive with its controller's strongest method first.
    pub secure_erase: bool,
    /// Devices (also prepared) whose old contents may be overwritten: a superblock of
    /// another appliance or set, partitions, a filesystem or volume signature.
    pub force: Vec<PathBuf>,
    /// Settings for a state directory that is not initialised yet.
    pub init: InitOptions,
}

/// The outcome for one device.
#[derive(Debug, Serialize)]
pub struct PrepareRow {
    pub device: String,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub health: String,
    /// "prepared as drive #N", "already staging drive #N", "erased with …", or
    /// "refused: <why>".
    pub outcome: String,
}

/// Prepares drives as raw staging drives of the node at `state` (initialising it, with
/// these drives as its set, when it is not yet). Refuses mounted or OS devices, devices in
/// use (holders, an exclusive user), unhealthy drives and, unless forced, drives of
/// another set or holding partitions or signatures, each with the reason.
pub fn prepare(state: &Path, key: &KeyRequest, opts: &PrepareOptions) -> Result<Vec<PrepareRow>> {
    let devices = barge_firmware::discover(Path::new(SYS_BLOCK)).unwrap_or_default();
    let wanted = wanted_devices(&devices, opts);
    let initialised = state.join("keys/key.json").exists();
    let node = if initialised {
        Some(Node::open(state, key, &[])?)
    } else {
        None
    };
    let mut set = match &node {
        Some(n) => DriveSet::load(&n.catalog)?,
        None => None,
    };
    if node.is_some() && set.is_none() {
        return Err(Error::State {
            path: state.to_path_buf(),
            message: "this node stages on directories; raw drives cannot join it".into(),
        });
    }
    let mut rows = vec![];
    let mut accepted: Vec<PathBuf> = vec![];
    for (path, bd) in wanted {
        let (row, stable) = check_candidate(&path, bd.as_ref(), node.as_ref(), set.as_mut(), opts)?;
        if let Some(stable) = stable {
            accepted.push(stable);
        }
        rows.push(row);
    }
    if accepted.is_empty() {
        if let (Some(n), Some(s)) = (&node, &set) {
            s.store(&n.catalog)?;
        }
        return Ok(rows);
    }
    add_accepted(state, key, opts, node, set, &accepted, &mut rows)?;
    Ok(rows)
}

/// The devices named on the command line, then (with `all_free`) every other NVMe
/// namespace, each with its sysfs entry when it has one.
fn wanted_devices(
    devices: &[BlockDevice],
    opts: &PrepareOptions,
) -> Vec<(PathBuf, Option<BlockDevice>)> {
    let mut wanted: Vec<(PathBuf, Option<BlockDevice>)> = vec![];
    let find = |p: &Path| {
        let real = std::fs::canonicalize(p).ok()?;
        let name = real.file_name()?.to_string_lossy().into_owned();
        devices.iter().find(|d| d.name == name).cloned()
    };
    for p in opts.devices.iter().chain(&opts.force) {
        let same = |w: &PathBuf| {
            w == p
                || std::fs::canonicalize(w)
                    .is_ok_and(|a| std::fs::canonicalize(p).is_ok_and(|b| a == b))
        };
        if !wanted.iter().any(|(w, _)| same(w)) {
            wanted.push((p.clone(), find(p)));
        }
    }
    if opts.all_free {
        for d in devices.iter().filter(|d| d.is_nvme) {
            let dev = Path::new("/dev").join(&d.name);
            if !wanted
                .iter()
                .any(|(_, w)| w.as_ref().is_some_and(|w| w.name == d.name))
            {
                wanted.push((dev, Some(d.clone())));
            }
        }
    }
    wanted
}

/// Decides whether the device at `path` may become a staging drive: its row (the reason
/// when refused) and its stable path when accepted. A member of the node's set already
/// is not accepted again; its recorded path follows it. Runs the secure erase if asked.
fn check_candidate(
    path: &Path,
    bd: Option<&BlockDevice>,
    node: Option<&Node>,
    set: Option<&mut DriveSet>,
    opts: &PrepareOptions,
) -> Result<(PrepareRow, Option<PathBuf>)> {
    let stable = barge_firmware::by_id(path, Path::new(BY_ID)).unwrap_or(path.to_path_buf());
    let (health, nvme) = match bd {
        Some(d) => health_of(d),
        None => ("n/a".into(), None),
    };
    let mut row = PrepareRow {
        device: stable.display().to_string(),
        serial: bd.and_then(|d| d.serial.clone()),
        model: bd.and_then(|d| d.model.clone()),
        health: health.clone(),
        outcome: String::new(),
    };
    if let Some(why) = refusal(path, &health, nvme.as_ref()) {
        row.outcome = why;
        return Ok((row, None));
    }
    // Already one of ours? Then only its path may need updating.
    let existing = device::open(path, false)
        .and_then(|f| device::read_superblock(&f, path))
        .ok();
    if let Some(outcome) = follow_member(existing.as_ref(), node, set, &stable)? {
        row.outcome = outcome;
        return Ok((row, None));
    }
    let forced = is_forced(opts, path);
    if let Some(sb) = &existing
        && !forced
    {
        row.outcome = format!(
            "refused: holds barge drive set {} of appliance {} (--force DEVICE reuses it)",
            hex::encode(sb.set_id),
            hex::encode(sb.appliance_id)
        );
        return Ok((row, None));
    }
    // The claim (O_EXCL) is held until the erase ran.
    let (usage, _claim) = device::usage(path)?;
    if let Some(why) = usage.refusal(forced) {
        row.outcome = format!("refused: {why}");
        return Ok((row, None));
    }
    if let Some(why) = too_small(path, node, opts)? {
        row.outcome = format!("refused: {why}");
        return Ok((row, None));
    }
    if opts.secure_erase
        && let Some(d) = bd
        && let Some(ns) = nvme_namespace(&Path::new("/dev").join(&d.name))
    {
        let mut progress = |pct| tracing::info!(drive = %stable.display(), "sanitize {pct}% done");
        match barge_firmware::nvme::erase(
            &ns.dev,
            ns.nsid,
            None,
            d.serial.as_deref(),
            false,
            &mut progress,
        ) {
            Ok(p) => row.outcome = format!("erased with {}; ", p.method.name()),
            Err(e) => {
                row.outcome = format!("refused: secure erase failed: {e}");
                return Ok((row, None));
            }
        }
    }
    Ok((row, Some(stable)))
}

/// Why the device cannot hold two segments of the node's segment size (of the one being
/// initialised), if it cannot: refused alone instead of failing the whole preparation.
fn too_small(path: &Path, node: Option<&Node>, opts: &PrepareOptions) -> Result<Option<String>> {
    let segment = node.map_or(opts.init.staging.segment_size, |n| {
        n.staging.settings.segment_size
    });
    let size = device::size_of(&device::open(path, false)?, path)?;
    let room = size.saturating_sub(device::DATA_START);
    Ok((segment > 0 && room / segment < 2)
        .then(|| format!("{size} bytes hold fewer than 2 segments of {segment} bytes")))
}

/// Whether the operator named the device at `path` with `--force` (any name of it).
fn is_forced(opts: &PrepareOptions, path: &Path) -> bool {
    let real = std::fs::canonicalize(path).ok();
    opts.force
        .iter()
        .any(|f| f == path || (real.is_some() && std::fs::canonicalize(f).ok() == real))
}

/// Why a device must not take staging data (mounted, unhealthy, health unreadable), as
/// its row's outcome; `None` when none of these holds.
fn refusal(path: &Path, health: &str, nvme: Option<&NvmeHealth>) -> Option<String> {
    if let Err(e) = device::check_not_mounted(path) {
        return Some(format!("refused: {e}"));
    }
    if let Some(h) = nvme
        && !h.problems.is_empty()
    {
        return Some(format!("refused: unhealthy: {}", h.problems.join("; ")));
    }
    if health.starts_with("unreadable") {
        return Some(format!("refused: health {health}"));
    }
    None
}

/// When `sb` is a member of the node's set: its outcome ("already staging drive #N"),
/// after recording it (set and node) under `stable` if it was found under a new path.
fn follow_member(
    sb: Option<&device::Superblock>,
    node: Option<&Node>,
    set: Option<&mut DriveSet>,
    stable: &Path,
) -> Result<Option<String>> {
    if let (Some(sb), Some(n), Some(s)) = (sb, node, set)
        && sb.appliance_id == n.appliance_id
        && sb.set_id == s.set_id
        && let Some(m) = s.members.iter_mut().find(|m| m.drive_id == sb.drive_id)
    {
        let mut outcome = format!("already staging drive #{}", m.index);
        let now = stable.display().to_string();
        if m.path != now {
            n.move_drive(&m.path, &now)?;
            outcome.push_str(&format!(" (was {})", m.path));
            m.path = now;
        }
        return Ok(Some(outcome));
    }
    Ok(None)
}

/// Makes the accepted drives staging drives: a new node with them as its set, or new
/// members of the node's set. Appends each one's outcome to its row.
fn add_accepted(
    state: &Path,
    key: &KeyRequest,
    opts: &PrepareOptions,
    node: Option<Node>,
    set: Option<DriveSet>,
    accepted: &[PathBuf],
    rows: &mut [PrepareRow],
) -> Result<()> {
    let mut outcome_for = |p: &Path, text: String| {
        if let Some(r) = rows
            .iter_mut()
            .find(|r| r.device == p.display().to_string())
        {
            r.outcome.push_str(&text);
        }
    };
    match (node, set) {
        (None, _) => {
            let mut init = opts.init.clone();
            init.drives = accepted.to_vec();
            init.key = key.clone();
            // Each drive passed check_candidate with its own --force; this only lets the
            // forced ones through device::prepare's second look.
            init.force_drives = accepted.iter().any(|p| is_forced(opts, p));
            let n = Node::init(state, &init)?;
            let s = DriveSet::load(&n.catalog)?.ok_or_else(|| Error::State {
                path: state.to_path_buf(),
                message: "init wrote no drive set".into(),
            })?;
            for m in &s.members {
                outcome_for(
                    Path::new(&m.path),
                    format!("prepared as drive #{}", m.index),
                );
            }
        }
        (Some(n), Some(mut s)) => {
            for p in accepted {
                let index = s.prepare_member(
                    p,
                    &n.appliance_id,
                    n.staging.settings.segment_size,
                    None,
                    is_forced(opts, p),
                )?;
                n.add_drive(&p.display().to_string())?;
                outcome_for(p, format!("prepared as drive #{index}"));
            }
            s.store(&n.catalog)?;
        }
        (Some(_), None) => {
            return Err(Error::State {
                path: state.to_path_buf(),
                message: "this node stages on directories; raw drives cannot join it".into(),
            });
        }
    }
    Ok(())
}

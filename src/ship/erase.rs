//! `barge erase DRIVE...`: after a verified drain, makes a drive's contents unrecoverable
//! and writes an erase certificate for it.
//!
//! 0. Only a block device that is a member of this node's drive set (by superblock), or
//!    whose serial the operator typed with `--confirm SERIAL`, is erased; never a
//!    regular file, a device in use (an exclusive open answering EBUSY) or one with
//!    kernel holders. The device stays claimed (`O_EXCL`) while it is erased.
//! 1. Crypto-erase: both superblock copies (which hold the wrapped set key) and the
//!    manifest region are overwritten with random bytes and synced; without the wrapped
//!    key and the unlock code nothing on the drive can be opened.
//! 2. Device erase: an NVMe namespace is sanitized or formatted with secure erase by
//!    its controller (firmware crate, strongest supported method); anything else
//!    (files, loop devices, controllers without either) has every byte overwritten with
//!    zeros through the io_uring write engine, synced, and read back at sampled offsets
//!    (NIST SP 800-88 "clear").
//! 3. The node's catalog forgets the drive's segments.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::catalog::unix_now;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::staging::device::{self, Superblock};
use crate::staging::format::BLOCK;

/// Erase certificate layout version.
pub const CERTIFICATE_VERSION: u32 = 1;
/// Blocks read back after the overwrite, spread over the device (plus the first 2 MiB).
pub const VERIFY_SAMPLES: u64 = 256;

/// The erase certificate of one drive (written as JSON).
#[derive(Debug, Serialize)]
pub struct Certificate {
    pub certificate_version: u32,
    pub drive: DriveIdentity,
    pub methods: Vec<Step>,
    pub started: u64,
    pub finished: u64,
    /// "success" or "failed: <why>".
    pub result: String,
    pub appliance_id: String,
    pub host: String,
}

#[derive(Debug, Serialize)]
pub struct DriveIdentity {
    pub path: String,
    pub serial: Option<String>,
    pub drive_id: Option<String>,
    pub set_id: Option<String>,
    pub size_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub method: String,
    pub detail: String,
    pub result: String,
}

/// Why `erase` refuses to run without `--force`, if it does: the report's verdict is
/// not DONE (a listing that did not finish, objects not at the destination, or no
/// verify passed since the last drain).
pub fn drain_unverified(node: &Node) -> Result<Option<String>> {
    let r = crate::report::build(node)?;
    Ok((!r.done).then_some(r.verdict))
}

/// The drive being erased, as found before anything was written to it.
struct Target<'a> {
    f: std::fs::File,
    path: &'a Path,
    size: u64,
    sb: Option<Superblock>,
    started: u64,
}

/// The steps run so far and the first failure, if any.
#[derive(Default)]
struct Steps {
    methods: Vec<Step>,
    failed: Option<String>,
}

impl Steps {
    /// Records a step and its outcome; a failure becomes the erase's failure.
    fn record(&mut self, method: String, detail: String, res: Result<()>) {
        self.methods.push(Step {
            method,
            detail,
            result: outcome(&res),
        });
        if let Err(e) = res {
            self.failed = Some(e.to_string());
        }
    }
}

/// What `erase` knows about a device before it writes anything.
#[derive(Debug, Clone, Default)]
pub struct EraseFacts {
    /// A regular file, not a block device.
    pub regular_file: bool,
    /// Why the device is in use (holders, an exclusive user), if it is.
    pub in_use: Option<String>,
    /// Its superblock names this node's drive set and a member of it.
    pub member: bool,
    /// The barge set its superblock names, when it has one.
    pub set_id: Option<[u8; 16]>,
    /// Its serial (sysfs, or `loop:<backing file>`).
    pub serial: Option<String>,
}

/// Why the device must not be erased, `None` when it may: a regular file or a device in
/// use never is; a member of the node's set is, and any other drive only when `confirm`
/// holds its serial, typed out.
pub fn erase_refusal(f: &EraseFacts, confirm: &[String]) -> Option<String> {
    if f.regular_file {
        return Some("is a regular file, not a drive; barge erases only block devices".into());
    }
    if let Some(why) = &f.in_use {
        return Some(why.clone());
    }
    if f.member {
        return None;
    }
    if f.serial.as_ref().is_some_and(|s| confirm.contains(s)) {
        return None;
    }
    let holds = match f.set_id {
        Some(s) => format!("holds barge drive set {}", hex::encode(s)),
        None => "holds no barge superblock".into(),
    };
    Some(match &f.serial {
        Some(s) => format!(
            "is not a drive of this node's set ({holds}); pass --confirm {s} (its serial) to \
             erase it anyway"
        ),
        None => format!("is not a drive of this node's set ({holds}) and has no serial"),
    })
}

/// The facts about the device open as `f`, and whether its superblock is a member of
/// the node's set.
fn facts(
    node: &Node,
    path: &Path,
    usage: &device::Usage,
    sb: Option<&Superblock>,
) -> Result<EraseFacts> {
    let set = crate::staging::set::DriveSet::load(&node.catalog)?;
    let member = match (sb, &set) {
        (Some(sb), Some(set)) => {
            sb.set_id == set.set_id && set.members.iter().any(|m| m.drive_id == sb.drive_id)
        }
        _ => false,
    };
    Ok(EraseFacts {
        regular_file: usage.regular_file,
        in_use: (usage.busy || !usage.holders.is_empty())
            .then(|| usage.refusal(true).unwrap_or_default()),
        member,
        set_id: sb.map(|s| s.set_id),
        serial: barge_firmware::sysfs::drive_serial(path),
    })
}

/// Erases one drive and returns its certificate (also written into `cert_dir`). Refuses
/// (see [`erase_refusal`]) before anything is written; `confirm` are serials typed by
/// the operator.
pub fn erase(
    node: &Node,
    path: &Path,
    cert_dir: &Path,
    confirm: &[String],
) -> Result<(Certificate, PathBuf)> {
    let started = unix_now();
    device::check_not_mounted(path)?;
    let (usage, _claim) = device::usage(path)?;
    let f = device::open(path, false)?;
    let sb = device::read_superblock(&f, path).ok();
    if let Some(why) = erase_refusal(&facts(node, path, &usage, sb.as_ref())?, confirm) {
        return Err(Error::Drive {
            drive: path.to_path_buf(),
            message: format!("{why}; refusing to erase it"),
        });
    }
    let f = device::open(path, true)?;
    let size = device::size_of(&f, path)?;
    let t = Target {
        f,
        path,
        size,
        sb,
        started,
    };
    let mut steps = Steps::default();
    crypto_erase(&t, &mut steps);
    device_erase(&t, &mut steps);
    forget_drive(node, path)?;
    let cert = certificate(node, &t, steps);
    let out = write_certificate(cert_dir, &t, &cert)?;
    Ok((cert, out))
}

/// Step 1: overwrites both superblock copies and the manifest with random data.
fn crypto_erase(t: &Target, steps: &mut Steps) {
    let mut region = vec![(0u64, 2 * BLOCK as u64)];
    // A manifest region the drive cannot hold (a damaged or altered superblock) is left
    // to step 2's full overwrite rather than allocated.
    if let Some(sb) = &t.sb
        && sb.manifest_len > 0
        && let Ok((off, len)) = sb.manifest_region(t.size)
    {
        region.push((off, len as u64));
    }
    let res: Result<()> = region.iter().try_for_each(|&(off, len)| {
        let len = crate::staging::format::round_up(len.min(t.size.saturating_sub(off)));
        let mut noise = vec![0u8; len as usize];
        getrandom::fill(&mut noise).map_err(|e| Error::Key(e.to_string()))?;
        device::write_at(&t.f, t.path, off, &noise)
    });
    steps.record(
        "crypto-erase".into(),
        format!(
            "superblocks (wrapped set key){} overwritten with random data",
            if region.len() > 1 {
                " and manifest"
            } else {
                ""
            }
        ),
        res,
    );
}

/// Step 2: the controller's erase, else a zero overwrite; skipped after a failed step 1.
fn device_erase(t: &Target, steps: &mut Steps) {
    // The NVMe controller's own erase where it has one, else (and for files and loop
    // devices) overwrite with zeros, then read back samples.
    let controller = if steps.failed.is_none() {
        nvme_erase(t.path)
    } else {
        None
    };
    if let Some((method, res)) = controller {
        steps.record(
            method,
            "NVMe admin command through the passthrough ioctl, confirmed by serial".into(),
            res,
        );
    } else if steps.failed.is_none() {
        let size = t.size;
        let res = overwrite(&t.f, t.path, size);
        steps.record(
            "overwrite".into(),
            format!(
                "{size} bytes written with zeros, fdatasync'ed; the first 2 MiB and \
                 {VERIFY_SAMPLES} blocks spread over the device read back as zeros"
            ),
            res,
        );
    }
}

/// Step 3: the catalog forgets the segments on the drive and their chunks.
fn forget_drive(node: &Node, path: &Path) -> Result<()> {
    // One pass over the chunks for all of the drive's segments.
    let want = path.display().to_string();
    let mut on_drive: std::collections::HashMap<u64, Vec<crate::crypto::ChunkId>> =
        std::collections::HashMap::new();
    for item in node.catalog.segments()? {
        let (id, rec) = item?;
        if rec.path == want {
            on_drive.insert(id, vec![]);
        }
    }
    if !on_drive.is_empty() {
        for item in node.catalog.chunks()? {
            let (cid, c) = item?;
            if let Some(v) = on_drive.get_mut(&c.segment) {
                v.push(cid);
            }
        }
    }
    for (id, chunks) in on_drive {
        node.catalog.forget_segment(id, &chunks)?;
    }
    Ok(())
}

/// The certificate of the steps run on the drive, finished now.
fn certificate(node: &Node, t: &Target, steps: Steps) -> Certificate {
    let sb = &t.sb;
    Certificate {
        certificate_version: CERTIFICATE_VERSION,
        drive: DriveIdentity {
            path: t.path.display().to_string(),
            serial: barge_firmware::sysfs::drive_serial(t.path),
            drive_id: sb.as_ref().map(|s| hex::encode(s.drive_id)),
            set_id: sb.as_ref().map(|s| hex::encode(s.set_id)),
            size_bytes: t.size,
        },
        methods: steps.methods,
        started: t.started,
        finished: unix_now(),
        result: match &steps.failed {
            None => "success".into(),
            Some(e) => format!("failed: {e}"),
        },
        appliance_id: hex::encode(node.appliance_id),
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    }
}

/// Writes the certificate into `cert_dir` (synced) and returns the file's path.
fn write_certificate(cert_dir: &Path, t: &Target, cert: &Certificate) -> Result<PathBuf> {
    std::fs::create_dir_all(cert_dir).map_err(|e| Error::io("creating", cert_dir, e))?;
    let name = match &t.sb {
        Some(s) => hex::encode(s.drive_id),
        None => t
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "drive".into()),
    };
    let started = t.started;
    let out = cert_dir.join(format!("erase-{name}-{started}.json"));
    let json =
        serde_json::to_vec_pretty(cert).map_err(|e| Error::encode("an erase certificate", e))?;
    super::seal::write_synced(&out, &json, 0o644)?;
    Ok(out)
}

/// Runs the controller's strongest erase on an NVMe namespace; `None` when `path` is not
/// NVMe or the controller offers no erase (the caller then overwrites).
fn nvme_erase(path: &Path) -> Option<(String, Result<()>)> {
    let ns = barge_firmware::sysfs::nvme_namespace(path)?;
    let (real, nsid) = (ns.dev, ns.nsid);
    let mut progress = |pct| tracing::info!(drive = %path.display(), "sanitize {pct}% done");
    let plan = barge_firmware::nvme::erase(&real, nsid, None, None, true, &mut progress).ok()?;
    let res = barge_firmware::nvme::erase(
        &real,
        nsid,
        Some(plan.method),
        Some(&plan.serial),
        false,
        &mut progress,
    )
    .map(|_| ())
    .map_err(|e| Error::Drive {
        drive: path.to_path_buf(),
        message: e.to_string(),
    });
    Some((plan.method.name().to_string(), res))
}

fn outcome(r: &Result<()>) -> String {
    match r {
        Ok(()) => "success".into(),
        Err(e) => format!("failed: {e}"),
    }
}

/// Zeroes the whole device and checks samples read back as zeros.
fn overwrite(f: &std::fs::File, path: &Path, size: u64) -> Result<()> {
    let full = size / BLOCK as u64 * BLOCK as u64;
    device::zero_fill(f, path, full)?;
    let blocks = full / BLOCK as u64;
    let head = device::read_at(f, path, 0, (2 << 20).min(full) as usize)?;
    let mut bad = head.iter().any(|&b| b != 0);
    for i in 0..VERIFY_SAMPLES.min(blocks) {
        let blk = i * blocks / VERIFY_SAMPLES.min(blocks).max(1);
        let b = device::read_at(f, path, blk * BLOCK as u64, BLOCK)?;
        bad |= b.iter().any(|&x| x != 0);
    }
    if bad {
        return Err(Error::Drive {
            drive: path.to_path_buf(),
            message: "read-back after the overwrite found non-zero data".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_never_erased() {
        let f = EraseFacts {
            regular_file: true,
            member: true,
            serial: Some("file:/tmp/x".into()),
            ..EraseFacts::default()
        };
        let why = erase_refusal(&f, &["file:/tmp/x".into()]).unwrap();
        assert!(why.contains("regular file"), "{why}");
    }

    #[test]
    fn only_members_or_a_typed_serial_are_erased() {
        let member = EraseFacts {
            member: true,
            set_id: Some([7; 16]),
            serial: Some("S1".into()),
            ..EraseFacts::default()
        };
        assert_eq!(erase_refusal(&member, &[]), None);
        let stranger = EraseFacts {
            member: false,
            set_id: Some([9; 16]),
            ..member.clone()
        };
        let why = erase_refusal(&stranger, &[]).unwrap();
        assert!(
            why.contains("not a drive of this node's set") && why.contains("--confirm S1"),
            "{why}"
        );
        assert!(erase_refusal(&stranger, &["S2".into()]).is_some());
        assert_eq!(erase_refusal(&stranger, &["S1".into()]), None);
        let busy = EraseFacts {
            in_use: Some("held by dm-0".into()),
            ..member
        };
        assert_eq!(
            erase_refusal(&busy, &["S1".into()]).as_deref(),
            Some("held by dm-0")
        );
    }
}

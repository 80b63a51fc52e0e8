//! `barge erase DRIVE...`: after a verified drain, makes a drive's contents unrecoverable
//! and writes an erase certificate for it.
//!
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
use crate::staging::device;
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

/// Why `erase` refuses to run without `--force`, if it does.
pub fn drain_unverified(node: &Node) -> Result<Option<String>> {
    let mut pending = 0u64;
    for item in node.catalog.objects()? {
        let (_, rec) = item?;
        if !rec.state.is_at_destination() {
            pending += 1;
        }
    }
    if pending > 0 {
        return Ok(Some(format!(
            "{pending} objects are not at the destination yet"
        )));
    }
    let runs = node.catalog.runs()?;
    let last_change = runs
        .iter()
        .filter(|(_, r)| r.command == "drain" || r.command == "ingest" || r.command == "migrate")
        .map(|(id, _)| *id)
        .max()
        .unwrap_or(0);
    let verified = runs.iter().any(|(id, r)| {
        *id > last_change && r.command.starts_with("verify") && r.outcome.as_deref() == Some("ok")
    });
    Ok((!verified)
        .then(|| "no `barge verify` has passed since the last drain; verify first".to_string()))
}

/// Erases one drive and returns its certificate (also written into `cert_dir`).
pub fn erase(node: &Node, path: &Path, cert_dir: &Path) -> Result<(Certificate, PathBuf)> {
    let started = unix_now();
    device::check_not_mounted(path)?;
    let f = device::open(path, true)?;
    let size = device::size_of(&f, path)?;
    let sb = device::read_superblock(&f, path).ok();
    let mut methods = vec![];
    let mut failed: Option<String> = None;

    // 1. Crypto-erase.
    let mut region = vec![(0u64, 2 * BLOCK as u64)];
    if let Some(sb) = &sb
        && sb.manifest_len > 0
    {
        region.push((sb.manifest_offset, sb.manifest_len));
    }
    let res: Result<()> = region.iter().try_for_each(|&(off, len)| {
        let len = crate::staging::format::round_up(len.min(size.saturating_sub(off)));
        let mut noise = vec![0u8; len as usize];
        getrandom::fill(&mut noise).map_err(|e| Error::Key(e.to_string()))?;
        device::write_at(&f, path, off, &noise)
    });
    methods.push(Step {
        method: "crypto-erase".into(),
        detail: format!(
            "superblocks (wrapped set key){} overwritten with random data",
            if region.len() > 1 {
                " and manifest"
            } else {
                ""
            }
        ),
        result: outcome(&res),
    });
    if let Err(e) = res {
        failed = Some(e.to_string());
    }

    // 2. Device erase: the NVMe controller's own erase where it has one, else (and for
    // files and loop devices) overwrite with zeros, then read back samples.
    let controller = if failed.is_none() {
        nvme_erase(path)
    } else {
        None
    };
    if let Some((method, res)) = controller {
        methods.push(Step {
            method: method.clone(),
            detail: "NVMe admin command through the passthrough ioctl, confirmed by serial".into(),
            result: outcome(&res),
        });
        if let Err(e) = res {
            failed = Some(e.to_string());
        }
    } else if failed.is_none() {
        let res = overwrite(&f, path, size);
        methods.push(Step {
            method: "overwrite".into(),
            detail: format!(
                "{size} bytes written with zeros, fdatasync'ed; the first 2 MiB and \
                 {VERIFY_SAMPLES} blocks spread over the device read back as zeros"
            ),
            result: outcome(&res),
        });
        if let Err(e) = res {
            failed = Some(e.to_string());
        }
    }

    // 3. The catalog forgets what was on the drive.
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

    let cert = Certificate {
        certificate_version: CERTIFICATE_VERSION,
        drive: DriveIdentity {
            path: want,
            serial: barge_firmware::sysfs::drive_serial(path),
            drive_id: sb.as_ref().map(|s| hex::encode(s.drive_id)),
            set_id: sb.as_ref().map(|s| hex::encode(s.set_id)),
            size_bytes: size,
        },
        methods,
        started,
        finished: unix_now(),
        result: match &failed {
            None => "success".into(),
            Some(e) => format!("failed: {e}"),
        },
        appliance_id: hex::encode(node.appliance_id),
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    };
    std::fs::create_dir_all(cert_dir).map_err(|e| Error::io("creating", cert_dir, e))?;
    let name = match &sb {
        Some(s) => hex::encode(s.drive_id),
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "drive".into()),
    };
    let out = cert_dir.join(format!("erase-{name}-{started}.json"));
    let json = serde_json::to_vec_pretty(&cert).map_err(|e| Error::Pipeline(e.to_string()))?;
    super::seal::write_synced(&out, &json, 0o644)?;
    Ok((cert, out))
}

/// Runs the controller's strongest erase on an NVMe namespace; `None` when `path` is not
/// NVMe or the controller offers no erase (the caller then overwrites).
fn nvme_erase(path: &Path) -> Option<(String, Result<()>)> {
    let ns = barge_firmware::sysfs::nvme_namespace(path)?;
    let (real, nsid) = (ns.dev, ns.nsid);
    let plan = barge_firmware::nvme::erase(&real, nsid, None, None, true).ok()?;
    let res =
        barge_firmware::nvme::erase(&real, nsid, Some(plan.method), Some(&plan.serial), false)
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

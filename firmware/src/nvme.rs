//! NVMe admin commands through the kernel's passthrough ioctl (`NVME_IOCTL_ADMIN_CMD`):
//! Identify Controller, the SMART / Health Information log page, Format NVM with secure
//! erase, and Sanitize. The decoders are pure functions over the returned pages, unit
//! tested on pages recorded from qemu's emulated controller; the ioctls themselves run
//! in the image's boot test.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::Serialize;

use crate::Error;

/// Admin opcode: Get Log Page.
pub const OPC_GET_LOG_PAGE: u8 = 0x02;
/// Admin opcode: Identify.
pub const OPC_IDENTIFY: u8 = 0x06;
/// Admin opcode: Format NVM.
pub const OPC_FORMAT_NVM: u8 = 0x80;
/// Admin opcode: Sanitize.
pub const OPC_SANITIZE: u8 = 0x84;
/// Log identifier of the SMART / Health Information page.
pub const LID_SMART: u8 = 0x02;
/// Log identifier of the Sanitize Status page.
pub const LID_SANITIZE: u8 = 0x81;
/// Bytes of the Sanitize Status log page.
pub const SANITIZE_LOG_LEN: usize = 512;
/// Identify CNS 02h: the active namespace ids of the controller (up to 1024, ascending).
pub const CNS_ACTIVE_NS_LIST: u32 = 0x02;
/// How often a running sanitize's status log is read.
pub const SANITIZE_POLL: std::time::Duration = std::time::Duration::from_secs(2);
/// Most status reads while waiting for a sanitize (12 hours at SANITIZE_POLL): an
/// overwrite sanitize of a large drive takes hours; past this it is reported unfinished.
pub const SANITIZE_MAX_POLLS: u32 = 12 * 3600 / 2;
/// Bytes of the SMART / Health Information page.
pub const SMART_LEN: usize = 512;
/// Bytes of an Identify data structure.
pub const IDENTIFY_LEN: usize = 4096;
/// Namespace id meaning "the controller as a whole" / all namespaces.
pub const NSID_ALL: u32 = 0xFFFF_FFFF;
/// Timeout of a Format NVM or Sanitize start (the kernel's default is 60 s).
pub const ERASE_TIMEOUT_MS: u32 = 10 * 60 * 1000;

/// `struct nvme_passthru_cmd` of `<linux/nvme_ioctl.h>` (72 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PassthruCmd {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    pub timeout_ms: u32,
    pub result: u32,
}

nix::ioctl_readwrite!(nvme_admin_cmd, b'N', 0x41, PassthruCmd);

/// Sends one admin command with an optional data buffer (read from the device).
fn admin(dev: &Path, mut cmd: PassthruCmd, buf: Option<&mut [u8]>) -> Result<u32, Error> {
    let f = File::open(dev).map_err(|source| Error::Read {
        path: dev.to_path_buf(),
        source,
    })?;
    if let Some(b) = buf {
        cmd.addr = b.as_mut_ptr() as u64;
        cmd.data_len = b.len() as u32;
    }
    // SAFETY: `cmd` is a valid `nvme_passthru_cmd`; `addr`/`data_len` describe a live,
    // exclusively borrowed buffer that outlives the call (the ioctl is synchronous), or
    // are zero when the command moves no data. The kernel validates the rest.
    let status = unsafe { nvme_admin_cmd(f.as_raw_fd(), &mut cmd) }.map_err(|e| Error::Nvme {
        dev: dev.to_path_buf(),
        message: format!("admin command {:#04x}: {e}", cmd.opcode),
    })?;
    if status != 0 {
        return Err(Error::Nvme {
            dev: dev.to_path_buf(),
            message: format!(
                "admin command {:#04x} failed with NVMe status {status:#x}",
                cmd.opcode
            ),
        });
    }
    Ok(cmd.result)
}

/// Reads the Identify Controller data structure.
pub fn identify_controller(dev: &Path) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; IDENTIFY_LEN];
    let cmd = PassthruCmd {
        opcode: OPC_IDENTIFY,
        cdw10: 1, // CNS 01h: Identify Controller
        ..Default::default()
    };
    admin(dev, cmd, Some(&mut buf))?;
    Ok(buf)
}

/// Reads the active namespace id list (Identify CNS 02h) of the controller behind `dev`.
pub fn active_namespaces(dev: &Path) -> Result<Vec<u32>, Error> {
    let mut buf = vec![0u8; IDENTIFY_LEN];
    let cmd = PassthruCmd {
        opcode: OPC_IDENTIFY,
        cdw10: CNS_ACTIVE_NS_LIST,
        ..Default::default()
    };
    admin(dev, cmd, Some(&mut buf))?;
    Ok(decode_ns_list(&buf))
}

/// The non-zero namespace ids of an Identify namespace list page (ascending, zero ends).
pub fn decode_ns_list(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&n| n != 0)
        .collect()
}

/// Reads the Sanitize Status log page.
pub fn sanitize_log(dev: &Path) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; SANITIZE_LOG_LEN];
    let numd = (SANITIZE_LOG_LEN / 4 - 1) as u32;
    let cmd = PassthruCmd {
        opcode: OPC_GET_LOG_PAGE,
        cdw10: (numd << 16) | LID_SANITIZE as u32,
        ..Default::default()
    };
    admin(dev, cmd, Some(&mut buf))?;
    Ok(buf)
}

/// Where a sanitize operation stands (Sanitize Status log, SSTAT bits 2:0, SPROG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanitizeState {
    /// The NVM subsystem was never sanitized.
    Never,
    /// The most recent sanitize completed successfully (with or without deallocation).
    Completed,
    /// Running; progress in 1/65536 of the whole.
    InProgress(u16),
    /// The most recent sanitize failed.
    Failed,
    /// A status this code does not know.
    Unknown(u16),
}

impl SanitizeState {
    pub fn decode(b: &[u8]) -> Result<Self, ShortPage> {
        if b.len() < 4 {
            return Err(ShortPage {
                page: "sanitize status log",
                len: b.len(),
                want: 4,
            });
        }
        let sprog = le_u16(b, 0);
        let sstat = le_u16(b, 2);
        Ok(match sstat & 0b111 {
            0 => SanitizeState::Never,
            1 | 4 => SanitizeState::Completed,
            2 => SanitizeState::InProgress(sprog),
            3 => SanitizeState::Failed,
            _ => SanitizeState::Unknown(sstat),
        })
    }
}

/// Waits for a started sanitize to end: reads the status with `read` at most
/// `max_polls` times, `sleep` between reads, telling `progress` the percentage while it
/// runs. Ok once the log says completed; an error naming why when it failed, reports
/// never having run, or is still running after the last read.
pub fn wait_sanitize(
    mut read: impl FnMut() -> Result<Vec<u8>, Error>,
    mut sleep: impl FnMut(),
    max_polls: u32,
    progress: &mut dyn FnMut(u32),
    dev: &Path,
) -> Result<(), Error> {
    let err = |message: String| Error::Nvme {
        dev: dev.to_path_buf(),
        message,
    };
    let mut last = 0;
    for _ in 0..max_polls {
        let state = SanitizeState::decode(&read()?).map_err(|e| err(e.to_string()))?;
        match state {
            SanitizeState::Completed => return Ok(()),
            SanitizeState::InProgress(p) => {
                last = u32::from(p) * 100 / 65536;
                progress(last);
            }
            SanitizeState::Failed => {
                return Err(err(
                    "the sanitize status log says the sanitize failed".into()
                ));
            }
            SanitizeState::Never => {
                return Err(err(
                    "the sanitize status log says the drive was never sanitized".into(),
                ));
            }
            SanitizeState::Unknown(s) => {
                return Err(err(format!("sanitize status {s:#06x} not understood")));
            }
        }
        sleep();
    }
    Err(err(format!(
        "the sanitize was still running ({last}% done) after {max_polls} status reads"
    )))
}

/// Reads the SMART / Health Information log page (controller-wide).
pub fn smart_log(dev: &Path) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; SMART_LEN];
    let numd = (SMART_LEN / 4 - 1) as u32;
    let cmd = PassthruCmd {
        opcode: OPC_GET_LOG_PAGE,
        nsid: NSID_ALL,
        cdw10: (numd << 16) | LID_SMART as u32,
        ..Default::default()
    };
    admin(dev, cmd, Some(&mut buf))?;
    Ok(buf)
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The low 64 bits of a 128-bit little-endian counter (saturated if higher bits are set).
fn le_u128_sat(b: &[u8], at: usize) -> u64 {
    let mut lo = [0u8; 8];
    lo.copy_from_slice(&b[at..at + 8]);
    if b[at + 8..at + 16].iter().any(|&x| x != 0) {
        u64::MAX
    } else {
        u64::from_le_bytes(lo)
    }
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string()
}

/// What Identify Controller says about the drive and its erase features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControllerInfo {
    pub vendor_id: u16,
    pub serial: String,
    pub model: String,
    pub firmware_rev: String,
    pub namespaces: u32,
    /// OACS bit 1: Format NVM is supported.
    pub format_supported: bool,
    /// FNA bit 0: a Format NVM of one namespace formats all of them.
    pub format_all_namespaces: bool,
    /// FNA bit 1: a secure erase by Format NVM of one namespace erases all of them.
    pub erase_all_namespaces: bool,
    /// FNA bit 2: cryptographic erase is supported as a Format secure erase setting.
    pub format_crypto_erase: bool,
    /// SANICAP bits 0..2: crypto erase, block erase, overwrite.
    pub sanitize_crypto: bool,
    pub sanitize_block: bool,
    pub sanitize_overwrite: bool,
}

/// A page shorter than its fixed layout: the one way a page fails to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{page} is {len} bytes, want {want}")]
pub struct ShortPage {
    /// Which page ("identify data", "SMART log").
    pub page: &'static str,
    /// Bytes received.
    pub len: usize,
    /// Bytes its layout needs.
    pub want: usize,
}

impl ControllerInfo {
    pub fn decode(b: &[u8]) -> Result<Self, ShortPage> {
        if b.len() < IDENTIFY_LEN {
            return Err(ShortPage {
                page: "identify data",
                len: b.len(),
                want: IDENTIFY_LEN,
            });
        }
        let oacs = le_u16(b, 256);
        let fna = b[524];
        let sanicap = le_u32(b, 328);
        Ok(ControllerInfo {
            vendor_id: le_u16(b, 0),
            serial: ascii(&b[4..24]),
            model: ascii(&b[24..64]),
            firmware_rev: ascii(&b[64..72]),
            namespaces: le_u32(b, 516),
            format_supported: oacs & 0b10 != 0,
            format_all_namespaces: fna & 0b1 != 0,
            erase_all_namespaces: fna & 0b10 != 0,
            format_crypto_erase: fna & 0b100 != 0,
            sanitize_crypto: sanicap & 0b1 != 0,
            sanitize_block: sanicap & 0b10 != 0,
            sanitize_overwrite: sanicap & 0b100 != 0,
        })
    }

    /// Erase methods this controller offers, strongest first.
    pub fn erase_methods(&self) -> Vec<EraseMethod> {
        let mut v = vec![];
        if self.sanitize_crypto {
            v.push(EraseMethod::SanitizeCrypto);
        }
        if self.sanitize_block {
            v.push(EraseMethod::SanitizeBlock);
        }
        if self.format_supported && self.format_crypto_erase {
            v.push(EraseMethod::FormatCrypto);
        }
        if self.sanitize_overwrite {
            v.push(EraseMethod::SanitizeOverwrite);
        }
        if self.format_supported {
            v.push(EraseMethod::FormatUserData);
        }
        v
    }

    /// Why `m` would erase more than the one namespace asked for on a controller with
    /// `namespaces` active namespaces; `None` when it touches only that namespace.
    /// Sanitize has no namespace scope at all (it alters every namespace of the NVM
    /// subsystem), and Format NVM reaches all namespaces when FNA bit 0 or 1 says so.
    pub fn scope_refusal(&self, m: EraseMethod, namespaces: usize) -> Option<String> {
        if namespaces <= 1 {
            return None;
        }
        if m.is_sanitize() {
            return Some(format!(
                "{} erases every namespace of the controller, which has {namespaces}",
                m.name()
            ));
        }
        (self.format_all_namespaces || self.erase_all_namespaces).then(|| {
            format!(
                "the controller formats all {namespaces} namespaces at once (FNA), so {} \
                 would erase the others too",
                m.name()
            )
        })
    }
}

/// The method to use: `want` if offered and confined to the namespace, else the
/// strongest one that is; the reason when none is.
pub fn choose_method(
    info: &ControllerInfo,
    namespaces: usize,
    want: Option<EraseMethod>,
) -> Result<EraseMethod, String> {
    let offered = info.erase_methods();
    if let Some(m) = want {
        if !offered.contains(&m) {
            return Err(format!("the controller does not support {}", m.name()));
        }
        return match info.scope_refusal(m, namespaces) {
            Some(why) => Err(why),
            None => Ok(m),
        };
    }
    if offered.is_empty() {
        return Err("the controller supports neither Format NVM nor Sanitize".into());
    }
    offered
        .iter()
        .copied()
        .find(|&m| info.scope_refusal(m, namespaces).is_none())
        .ok_or_else(|| {
            let names: Vec<&str> = offered.iter().map(|m| m.name()).collect();
            format!(
                "the controller has {namespaces} namespaces and each erase it offers ({}) \
                 would erase all of them",
                names.join(", ")
            )
        })
}

/// The SMART / Health Information log page, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmartLog {
    pub critical_warning: u8,
    pub temperature_kelvin: u16,
    /// Percent of spare capacity left, and the threshold below which it is critical.
    pub available_spare: u8,
    pub spare_threshold: u8,
    pub percentage_used: u8,
    /// In units of 512 000 bytes, as the spec counts them.
    pub data_units_read: u64,
    pub data_units_written: u64,
    pub power_cycles: u64,
    pub power_on_hours: u64,
    pub unsafe_shutdowns: u64,
    pub media_errors: u64,
    pub error_log_entries: u64,
}

impl SmartLog {
    pub fn decode(b: &[u8]) -> Result<Self, ShortPage> {
        if b.len() < SMART_LEN {
            return Err(ShortPage {
                page: "SMART log",
                len: b.len(),
                want: SMART_LEN,
            });
        }
        Ok(SmartLog {
            critical_warning: b[0],
            temperature_kelvin: le_u16(b, 1),
            available_spare: b[3],
            spare_threshold: b[4],
            percentage_used: b[5],
            data_units_read: le_u128_sat(b, 32),
            data_units_written: le_u128_sat(b, 48),
            power_cycles: le_u128_sat(b, 112),
            power_on_hours: le_u128_sat(b, 128),
            unsafe_shutdowns: le_u128_sat(b, 144),
            media_errors: le_u128_sat(b, 160),
            error_log_entries: le_u128_sat(b, 176),
        })
    }

    pub fn temperature_celsius(&self) -> i32 {
        self.temperature_kelvin as i32 - 273
    }

    /// Reasons the drive must not take staging data; empty when healthy.
    pub fn problems(&self) -> Vec<String> {
        const BITS: [&str; 6] = [
            "available spare below threshold",
            "temperature outside its limits",
            "reliability degraded (media or internal errors)",
            "media is read-only",
            "volatile memory backup failed",
            "persistent memory region read-only",
        ];
        let mut v: Vec<String> = BITS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.critical_warning & (1 << i) != 0)
            .map(|(_, s)| format!("critical warning: {s}"))
            .collect();
        if self.critical_warning != 0 && v.is_empty() {
            v.push(format!("critical warning {:#04x}", self.critical_warning));
        }
        if self.available_spare < self.spare_threshold && self.critical_warning & 1 == 0 {
            v.push(format!(
                "available spare {}% is below its threshold {}%",
                self.available_spare, self.spare_threshold
            ));
        }
        v
    }
}

/// How a drive can be erased by its controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EraseMethod {
    /// Sanitize, crypto erase (SANACT 4): the media encryption key is replaced.
    SanitizeCrypto,
    /// Sanitize, block erase (SANACT 2).
    SanitizeBlock,
    /// Sanitize, overwrite (SANACT 3).
    SanitizeOverwrite,
    /// Format NVM with SES 2 (cryptographic erase).
    FormatCrypto,
    /// Format NVM with SES 1 (user data erase).
    FormatUserData,
}

impl EraseMethod {
    pub fn name(&self) -> &'static str {
        match self {
            EraseMethod::SanitizeCrypto => "nvme-sanitize-crypto",
            EraseMethod::SanitizeBlock => "nvme-sanitize-block",
            EraseMethod::SanitizeOverwrite => "nvme-sanitize-overwrite",
            EraseMethod::FormatCrypto => "nvme-format-crypto-erase",
            EraseMethod::FormatUserData => "nvme-format-user-data-erase",
        }
    }

    /// Whether this is a Sanitize (NVM subsystem wide, runs in the background).
    pub fn is_sanitize(&self) -> bool {
        matches!(
            self,
            EraseMethod::SanitizeCrypto
                | EraseMethod::SanitizeBlock
                | EraseMethod::SanitizeOverwrite
        )
    }

    /// The admin command that performs it on namespace `nsid` (LBA format 0 for Format,
    /// on that namespace only: never NSID_ALL). Sanitize's NSID field is unused (it has no
    /// namespace scope), hence `choose_method`'s refusal on multi-namespace controllers.
    pub fn command(&self, nsid: u32) -> PassthruCmd {
        let (opcode, nsid, cdw10) = match self {
            EraseMethod::SanitizeCrypto => (OPC_SANITIZE, 0, 4),
            EraseMethod::SanitizeBlock => (OPC_SANITIZE, 0, 2),
            EraseMethod::SanitizeOverwrite => (OPC_SANITIZE, 0, 3 | (1 << 16)),
            EraseMethod::FormatCrypto => (OPC_FORMAT_NVM, nsid, 2 << 9),
            EraseMethod::FormatUserData => (OPC_FORMAT_NVM, nsid, 1 << 9),
        };
        PassthruCmd {
            opcode,
            nsid,
            cdw10,
            timeout_ms: ERASE_TIMEOUT_MS,
            ..Default::default()
        }
    }
}

/// What an erase would do, or did.
#[derive(Debug, Clone, Serialize)]
pub struct ErasePlan {
    pub dev: String,
    pub serial: String,
    pub method: EraseMethod,
    pub nsid: u32,
    pub done: bool,
}

/// Erases an NVMe namespace with the controller's strongest method that erases that
/// namespace only (see `choose_method`). `confirm_serial` must equal the drive's serial,
/// or nothing is sent (`dry_run` never sends anything). A sanitize is waited for (its
/// status log read until it completed or failed, `progress` told the percentage).
/// Returns the plan, with `done` set when the erase completed.
pub fn erase(
    dev: &Path,
    nsid: u32,
    want: Option<EraseMethod>,
    confirm_serial: Option<&str>,
    dry_run: bool,
    progress: &mut dyn FnMut(u32),
) -> Result<ErasePlan, Error> {
    let nvme_err = |message: String| Error::Nvme {
        dev: dev.to_path_buf(),
        message,
    };
    let info =
        ControllerInfo::decode(&identify_controller(dev)?).map_err(|e| nvme_err(e.to_string()))?;
    let namespaces = active_namespaces(dev)?.len();
    let method = choose_method(&info, namespaces, want).map_err(nvme_err)?;
    let mut plan = ErasePlan {
        dev: dev.display().to_string(),
        serial: info.serial.clone(),
        method,
        nsid,
        done: false,
    };
    if dry_run {
        return Ok(plan);
    }
    if confirm_serial != Some(info.serial.as_str()) {
        return Err(Error::Nvme {
            dev: dev.to_path_buf(),
            message: format!(
                "erasing needs explicit confirmation with the drive's serial ({})",
                info.serial
            ),
        });
    }
    admin(dev, method.command(nsid), None)?;
    if method.is_sanitize() {
        wait_sanitize(
            || sanitize_log(dev),
            || std::thread::sleep(SANITIZE_POLL),
            SANITIZE_MAX_POLLS,
            progress,
            dev,
        )?;
    }
    plan.done = true;
    Ok(plan)
}

/// The namespace id of an NVMe namespace block device (sysfs `nsid`).
pub fn namespace_id(sys_block: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(sys_block.join(name).join("nsid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthru_struct_matches_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<PassthruCmd>(), 72);
    }

    #[test]
    fn smart_problems_name_each_warning() {
        let mut page = vec![0u8; SMART_LEN];
        page[1..3].copy_from_slice(&310u16.to_le_bytes());
        page[3] = 100;
        page[4] = 10;
        let s = SmartLog::decode(&page).unwrap();
        assert!(s.problems().is_empty());
        assert_eq!(s.temperature_celsius(), 37);
        page[0] = 0b0100;
        let p = SmartLog::decode(&page).unwrap().problems();
        assert_eq!(
            p,
            vec!["critical warning: reliability degraded (media or internal errors)"]
        );
        page[0] = 0;
        page[3] = 5;
        let p = SmartLog::decode(&page).unwrap().problems();
        assert_eq!(p, vec!["available spare 5% is below its threshold 10%"]);
        assert!(SmartLog::decode(&page[..100]).is_err());
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = crate::fixtures_dir().join(name);
        let text = std::fs::read_to_string(&p).unwrap();
        hex::decode(text.trim()).unwrap()
    }

    /// Pages read through the ioctl from qemu 7.2's emulated controller (serial set on
    /// the qemu command line), recorded by the image's boot test.
    #[test]
    fn decodes_pages_recorded_from_qemu() {
        let id = ControllerInfo::decode(&fixture("qemu-7.2-identify.hex")).unwrap();
        assert_eq!(id.vendor_id, 0x1b36);
        assert_eq!(id.serial, "BARGENVME0001");
        assert_eq!(id.model, "QEMU NVMe Ctrl");
        assert_eq!(id.firmware_rev, "7.2.22");
        assert_eq!(id.namespaces, 256);
        assert!(id.format_supported && !id.format_crypto_erase);
        assert!(!id.sanitize_crypto && !id.sanitize_block && !id.sanitize_overwrite);
        assert_eq!(id.erase_methods(), vec![EraseMethod::FormatUserData]);
        let smart = SmartLog::decode(&fixture("qemu-7.2-smart.hex")).unwrap();
        assert_eq!(smart.critical_warning, 0);
        assert_eq!(smart.temperature_celsius(), 50);
        assert_eq!(smart.data_units_read, 5);
        assert_eq!(smart.media_errors, 0);
        assert!(smart.problems().is_empty());
        // The same page from a drive that lost its spare area and went read-only.
        let mut worn = fixture("qemu-7.2-smart.hex");
        worn[0] = 0b1001;
        worn[3] = 2;
        worn[4] = 10;
        let p = SmartLog::decode(&worn).unwrap().problems();
        assert_eq!(
            p,
            vec![
                "critical warning: available spare below threshold",
                "critical warning: media is read-only"
            ]
        );
    }

    fn controller(sanicap: u32, fna: u8) -> ControllerInfo {
        let mut id = fixture("qemu-7.2-identify.hex");
        id[328..332].copy_from_slice(&sanicap.to_le_bytes());
        id[524] = fna;
        ControllerInfo::decode(&id).unwrap()
    }

    #[test]
    fn a_controller_with_several_namespaces_is_never_sanitized() {
        // Sanitize offered (crypto + block), Format per namespace.
        let c = controller(0b011, 0);
        assert_eq!(choose_method(&c, 1, None), Ok(EraseMethod::SanitizeCrypto));
        // Two namespaces: Sanitize would take the other one too; Format of this one only.
        assert_eq!(choose_method(&c, 2, None), Ok(EraseMethod::FormatUserData));
        let why = choose_method(&c, 2, Some(EraseMethod::SanitizeBlock)).unwrap_err();
        assert!(
            why.contains("every namespace") && why.contains("has 2"),
            "{why}"
        );
        // Format reaching all namespaces (FNA bit 0 or 1): nothing is safe.
        for fna in [0b01, 0b10] {
            let c = controller(0b011, fna);
            let why = choose_method(&c, 3, None).unwrap_err();
            assert!(why.contains("has 3 namespaces"), "{why}");
            assert_eq!(choose_method(&c, 1, None), Ok(EraseMethod::SanitizeCrypto));
        }
        // qemu 7.2: Format only, per namespace.
        let q = controller(0, 0);
        assert_eq!(choose_method(&q, 2, None), Ok(EraseMethod::FormatUserData));
        // Format is sent to the namespace, never to all.
        assert_eq!(EraseMethod::FormatUserData.command(2).nsid, 2);
    }

    #[test]
    fn the_active_namespace_list_is_decoded() {
        let mut page = vec![0u8; IDENTIFY_LEN];
        page[..4].copy_from_slice(&1u32.to_le_bytes());
        page[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(decode_ns_list(&page), vec![1, 3]);
        assert!(decode_ns_list(&[0; 16]).is_empty());
    }

    fn sanitize_page(sstat: u16, sprog: u16) -> Vec<u8> {
        let mut b = vec![0u8; SANITIZE_LOG_LEN];
        b[0..2].copy_from_slice(&sprog.to_le_bytes());
        b[2..4].copy_from_slice(&sstat.to_le_bytes());
        b
    }

    /// Runs `wait_sanitize` over scripted status pages; returns the result, the
    /// progress reported and how many pages were read.
    fn wait_over(pages: Vec<Vec<u8>>, max: u32) -> (Result<(), String>, Vec<u32>, usize) {
        let mut it = pages.into_iter();
        let mut reads = 0;
        let mut seen = vec![];
        let r = wait_sanitize(
            || {
                reads += 1;
                Ok(it.next().unwrap_or_else(|| sanitize_page(2, 0)))
            },
            || {},
            max,
            &mut |p| seen.push(p),
            Path::new("/dev/nvme9n1"),
        );
        (r.map_err(|e| e.to_string()), seen, reads)
    }

    #[test]
    fn a_sanitize_is_done_only_when_its_status_log_says_so() {
        let (r, seen, reads) = wait_over(
            vec![
                sanitize_page(2, 0),
                sanitize_page(2, 32768),
                sanitize_page(1, 0),
            ],
            10,
        );
        assert_eq!(r, Ok(()));
        assert_eq!((seen, reads), (vec![0, 50], 3));
        let (r, _, _) = wait_over(vec![sanitize_page(2, 100), sanitize_page(3, 0)], 10);
        assert!(r.unwrap_err().contains("failed"));
        let (r, _, reads) = wait_over(vec![], 5);
        assert!(r.unwrap_err().contains("still running"));
        assert_eq!(reads, 5);
        let (r, _, _) = wait_over(vec![sanitize_page(0, 0)], 5);
        assert!(r.unwrap_err().contains("never"));
        // Completed without deallocation (4), overwrite pass count in the high bits.
        assert_eq!(wait_over(vec![sanitize_page(4 | (3 << 3), 0)], 5).0, Ok(()));
    }

    #[test]
    fn erase_commands_follow_the_spec() {
        let c = EraseMethod::FormatUserData.command(1);
        assert_eq!((c.opcode, c.nsid, c.cdw10), (0x80, 1, 0x200));
        let c = EraseMethod::SanitizeCrypto.command(1);
        assert_eq!((c.opcode, c.nsid, c.cdw10), (0x84, 0, 4));
    }
}

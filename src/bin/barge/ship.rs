//! CLI edge of offline seeding (`seal`, `import`, `erase`) and of the `drives`
//! subcommands (`show`, `prepare`, `health`, `erase`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use barge::ship::{self, UnlockCode};
use barge::staging::device;

use barge_firmware::nvme::EraseMethod;

use crate::NOT_DONE;
use crate::actions::code;
use crate::cli::{Global, InitArgs, init_opts};

#[derive(Subcommand)]
pub enum DrivesCmd {
    /// Print a drive's barge superblock (set, drive id, slots, sealed or not) as JSON.
    Show { drive: PathBuf },
    /// Make drives raw staging drives of this node (initialising the state directory
    /// with them when it is not yet). Refuses the OS disk, mounted, held (device-mapper,
    /// md), exclusively opened or unhealthy drives, and unless forced drives of another
    /// set or with partitions or a filesystem, LUKS, LVM, md, swap or ZFS signature;
    /// drives already in the set are recognised by superblock.
    Prepare {
        /// Devices to prepare (any name; they are recorded by their /dev/disk/by-id link).
        devices: Vec<PathBuf>,
        /// Every NVMe namespace that is free (the same refusals apply).
        #[arg(long)]
        all_free: bool,
        /// Prepare this device even though it holds another barge set, partitions or a
        /// signature (its contents are lost); never one in use. Repeat per device.
        #[arg(long, value_name = "DEVICE")]
        force: Vec<PathBuf>,
        /// Erase new drives first with the controller's strongest method (NVMe Sanitize
        /// or Format with secure erase).
        #[arg(long)]
        secure_erase: bool,
        #[command(flatten)]
        init: InitArgs,
    },
    /// Identify and SMART / health log of an NVMe drive, read through the admin ioctl.
    Health {
        device: PathBuf,
        /// Also write the raw pages (identify.bin, smart.bin) into this directory.
        #[arg(long)]
        dump: Option<PathBuf>,
    },
    /// Erase an NVMe drive with its controller (Sanitize or Format NVM secure erase).
    Erase {
        device: PathBuf,
        /// Say what would be done; send nothing.
        #[arg(long)]
        dry_run: bool,
        /// The drive's serial number, typed out: nothing is erased without it.
        #[arg(long)]
        confirm: Option<String>,
        /// Force one method (default: the strongest the controller offers).
        #[arg(long, value_parser = parse_method)]
        method: Option<EraseMethod>,
    },
}

fn parse_method(s: &str) -> Result<EraseMethod, String> {
    [
        EraseMethod::SanitizeCrypto,
        EraseMethod::SanitizeBlock,
        EraseMethod::SanitizeOverwrite,
        EraseMethod::FormatCrypto,
        EraseMethod::FormatUserData,
    ]
    .into_iter()
    .find(|m| m.name() == s)
    .ok_or_else(|| {
        "one of nvme-sanitize-crypto, nvme-sanitize-block, nvme-sanitize-overwrite,          nvme-format-crypto-erase, nvme-format-user-data-erase"
            .to_string()
    })
}

/// The namespace device and id behind any name of an NVMe namespace.
fn nvme_target(device: &Path) -> Result<(PathBuf, u32)> {
    let ns = barge_firmware::sysfs::nvme_namespace(device)
        .with_context(|| format!("{}: not an NVMe namespace", device.display()))?;
    Ok((ns.dev, ns.nsid))
}

pub fn drives(g: &Global, cmd: &DrivesCmd) -> Result<ExitCode> {
    match cmd {
        DrivesCmd::Prepare {
            devices,
            all_free,
            force,
            secure_erase,
            init,
        } => {
            if devices.is_empty() && force.is_empty() && !all_free {
                bail!("name the devices to prepare, or pass --all-free");
            }
            let opts = barge::drives::PrepareOptions {
                devices: devices.clone(),
                all_free: *all_free,
                secure_erase: *secure_erase,
                force: force.clone(),
                init: init_opts(g, init, !force.is_empty())?,
            };
            prepare(g, &opts)
        }
        DrivesCmd::Health { device, dump } => health(device, dump.as_deref()),
        DrivesCmd::Erase {
            device,
            dry_run,
            confirm,
            method,
        } => drive_erase(g, device, *dry_run, confirm.as_deref(), *method),
        DrivesCmd::Show { drive } => {
            let f = device::open(drive, false)?;
            let sb = device::read_superblock(&f, drive)?;
            let v = serde_json::json!({
                "path": drive,
                "serial": barge_firmware::sysfs::drive_serial(drive),
                "superblock": sb,
                "sealed": sb.is_sealed(),
                "imported": sb.is_imported(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `drives prepare`: one line (or JSON row) per device; NOT_DONE when one was refused.
fn prepare(g: &Global, opts: &barge::drives::PrepareOptions) -> Result<ExitCode> {
    let rows = barge::drives::prepare(&g.state, &g.key(), opts)?;
    let refused = rows
        .iter()
        .filter(|r| r.outcome.starts_with("refused"))
        .count();
    if g.json {
        println!("{}", serde_json::json!({ "prepare": rows }));
    } else {
        for r in &rows {
            println!(
                "{} serial {} health {}: {}",
                r.device,
                r.serial.as_deref().unwrap_or("-"),
                r.health,
                r.outcome
            );
        }
    }
    Ok(code(refused == 0))
}

/// `drives health`: the NVMe health as JSON (the raw pages into `dump`); NOT_DONE when
/// the drive reports a problem.
fn health(device: &Path, dump: Option<&Path>) -> Result<ExitCode> {
    let (dev, _) = nvme_target(device)?;
    if let Some(dir) = dump {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("identify.bin"),
            barge_firmware::nvme::identify_controller(&dev)?,
        )?;
        std::fs::write(
            dir.join("smart.bin"),
            barge_firmware::nvme::smart_log(&dev)?,
        )?;
    }
    let h = barge_firmware::nvme_health(&dev)?;
    println!("{}", serde_json::to_string_pretty(&h)?);
    Ok(code(h.problems.is_empty()))
}

/// `drives erase`: the controller's erase, or what it would do (dry run).
fn drive_erase(
    g: &Global,
    device: &Path,
    dry_run: bool,
    confirm: Option<&str>,
    method: Option<EraseMethod>,
) -> Result<ExitCode> {
    let (dev, nsid) = nvme_target(device)?;
    if !dry_run {
        device::check_not_mounted(device)?;
    }
    let (usage, _claim) = device::usage(device)?;
    if !dry_run && (usage.busy || !usage.holders.is_empty()) {
        bail!(
            "{}: {}; refusing to erase it",
            device.display(),
            usage.refusal(true).unwrap_or_default()
        );
    }
    let mut progress = |pct| eprintln!("{}: sanitize {pct}% done", device.display());
    let plan = barge_firmware::nvme::erase(&dev, nsid, method, confirm, dry_run, &mut progress)?;
    if g.json {
        println!("{}", serde_json::json!({ "erase": plan }));
    } else if plan.done {
        println!(
            "{} (serial {}): {} completed",
            plan.dev,
            plan.serial,
            plan.method.name()
        );
    } else {
        println!(
            "{} (serial {}): would run {} on namespace {} (dry run; confirm with --confirm {})",
            plan.dev,
            plan.serial,
            plan.method.name(),
            plan.nsid,
            plan.serial
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn seal(g: &Global, out: Option<&Path>) -> Result<ExitCode> {
    let node = g.open()?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| g.state.join("ship"));
    let (r, code) = ship::seal::seal(&node, &out)?;
    if g.json {
        println!("{}", serde_json::json!({ "seal": r }));
    } else {
        println!("sealed drive set {} ({} drives)", r.set_id, r.drives.len());
        for d in &r.drives {
            println!(
                "  #{} {} serial {}: {} segments, {} chunks, {} objects, {} bytes sealed",
                d.index,
                d.path,
                d.serial.as_deref().unwrap_or("-"),
                d.segments,
                d.chunks,
                d.objects,
                d.sealed_bytes
            );
        }
        println!(
            "objects on the drives: {} ({} bytes); not on them (moved by the top-up): {}",
            r.objects_on_drives,
            r.bytes_on_drives,
            r.objects_not_on_drives.len()
        );
        println!("bill of materials: {}", r.bill_of_materials.display());
        println!(
            "unlock code (send it apart from the drives; also in {}):",
            r.unlock_code_file.display()
        );
        println!("  {}", code.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

/// The variable `import` takes the unlock code from (never from the command line).
pub const UNLOCK_CODE_ENV: &str = "BARGE_UNLOCK_CODE";

pub fn import(
    g: &Global,
    drives: &[PathBuf],
    code: Option<&str>,
    code_file: Option<&Path>,
) -> Result<ExitCode> {
    let code = match (code, code_file) {
        (Some(c), _) if std::env::var(UNLOCK_CODE_ENV).ok().as_deref() != Some(c) => bail!(
            "--unlock-code on the command line is refused: every user of this machine sees it in ps; put it in a file (mode 0600) for --unlock-code-file, or in {UNLOCK_CODE_ENV}"
        ),
        (Some(c), _) => UnlockCode::parse(c)?,
        (None, Some(f)) => UnlockCode::from_file(f)?,
        (None, None) => bail!("import needs --unlock-code-file or {UNLOCK_CODE_ENV}"),
    };
    let r = ship::import::import(&g.state, &g.key(), &code, drives)
        .with_context(|| format!("importing into {}", g.state.display()))?;
    if g.json {
        println!("{}", serde_json::json!({ "import": r }));
    } else {
        println!("drive set {}", r.set_id);
        for d in &r.drives {
            match &d.error {
                Some(e) => println!("  {}: NOT IMPORTED: {e}", d.path),
                None => println!(
                    "  {}: drive #{} serial {}: {} segments, {} chunks, {} objects{}",
                    d.path,
                    d.index.unwrap_or_default(),
                    d.serial.as_deref().unwrap_or("-"),
                    d.segments,
                    d.chunks,
                    d.objects,
                    if d.segments_bad.is_empty() {
                        String::new()
                    } else {
                        format!("; left out: {}", d.segments_bad.join(", "))
                    }
                ),
            }
        }
        for m in &r.missing_drives {
            println!("  {m}");
        }
        println!(
            "objects ready to drain: {} of {} ({} bytes)",
            r.objects_ready, r.objects_in_set, r.bytes_ready
        );
        if !r.objects_missing.is_empty() {
            println!(
                "objects not on the sound drives ({}; `barge ingest` fetches them):",
                r.objects_missing.len()
            );
            for k in &r.objects_missing {
                println!("  {k}");
            }
        }
        println!("report: {}", g.state.join("import-report.json").display());
    }
    Ok(if r.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_DONE)
    })
}

pub fn erase(
    g: &Global,
    drives: &[PathBuf],
    force: bool,
    confirm: &[String],
    cert_dir: Option<&Path>,
) -> Result<ExitCode> {
    let node = g.open()?;
    if let Some(why) = ship::erase::drain_unverified(&node)? {
        if !force {
            bail!("refusing to erase: {why} (or pass --force)");
        }
        tracing::warn!("erasing although {why} (--force)");
    }
    let dir = cert_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| g.state.join("ship"));
    let mut all_ok = true;
    let mut certs = vec![];
    for d in drives {
        let (cert, path) = ship::erase::erase(&node, d, &dir, confirm)
            .with_context(|| format!("erasing {}", d.display()))?;
        all_ok &= cert.result == "success";
        if !g.json {
            println!(
                "{}: {} ({}); certificate {}",
                d.display(),
                cert.result,
                cert.methods
                    .iter()
                    .map(|m| m.method.as_str())
                    .collect::<Vec<_>>()
                    .join(" + "),
                path.display()
            );
        }
        certs.push(serde_json::json!({ "certificate": path, "result": cert.result }));
    }
    if g.json {
        println!("{}", serde_json::json!({ "erase": certs }));
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

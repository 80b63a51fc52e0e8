//! CLI edge of offline seeding (`seal`, `import`, `erase`) and of `drives show`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use barge::ship::{self, UnlockCode};
use barge::staging::device;

use super::{Global, NOT_DONE};

#[derive(Subcommand)]
pub enum DrivesCmd {
    /// Print a drive's barge superblock (set, drive id, slots, sealed or not) as JSON.
    Show { drive: PathBuf },
}

pub fn drives(_g: &Global, cmd: &DrivesCmd) -> Result<ExitCode> {
    match cmd {
        DrivesCmd::Show { drive } => {
            let f = device::open(drive, false)?;
            let sb = device::read_superblock(&f, drive)?;
            let v = serde_json::json!({
                "path": drive,
                "serial": ship::drive_serial(drive),
                "superblock": sb,
                "sealed": sb.is_sealed(),
                "imported": sb.is_imported(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
    }
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

pub fn import(
    g: &Global,
    drives: &[PathBuf],
    code: Option<&str>,
    code_file: Option<&Path>,
) -> Result<ExitCode> {
    let code = match (code, code_file) {
        (Some(c), _) => UnlockCode::parse(c)?,
        (None, Some(f)) => UnlockCode::from_file(f)?,
        (None, None) => bail!("import needs --unlock-code or --unlock-code-file"),
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
        let (cert, path) = ship::erase::erase(&node, d, &dir)
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

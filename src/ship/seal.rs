//! `barge seal`: makes the node's raw drive set ready to ship.
//!
//! Order matters for crash safety: open segments are sealed (recovery), the unlock code
//! file is written and fsynced, then each drive gets its manifest (fdatasync) and only
//! then its new superblock. A crash at any point leaves every drive either as it was or
//! sealed under a code that is already on disk; running `seal` again reseals all drives
//! under a new code.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::{self, Manifest};
use super::{UnlockCode, manifest_key, wrap_key};
use crate::catalog::{SegmentRecord, SegmentState, unix_now};
use crate::crypto::ChunkId;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::object::ObjectKey;
use crate::staging::device::{self, FLAG_SEALED, Superblock};
use crate::staging::set::{DriveSet, Member};

/// What `seal` wrote and where.
#[derive(Debug, Serialize)]
pub struct SealReport {
    pub set_id: String,
    pub sealed_at: u64,
    /// Printed code's public fingerprint (the code itself is only in `unlock_code_file`).
    pub unlock_fingerprint: String,
    pub unlock_code_file: PathBuf,
    pub bill_of_materials: PathBuf,
    pub drives: Vec<SealedDrive>,
    /// Objects whose every chunk is on the drives.
    pub objects_on_drives: u64,
    pub bytes_on_drives: u64,
    /// Catalog objects that are not on the drives (not staged): the top-up moves them.
    pub objects_not_on_drives: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SealedDrive {
    pub index: u32,
    pub drive_id: String,
    pub path: String,
    pub serial: Option<String>,
    pub segments: u64,
    pub chunks: u64,
    pub objects: u64,
    pub sealed_bytes: u64,
    pub manifest_bytes: u64,
}

/// One drive's share of the set: what goes into its manifest.
#[derive(Default)]
struct DriveShare {
    segments: Vec<(u64, SegmentRecord)>,
    chunks: Vec<(ChunkId, Vec<u8>)>,
    objects: Vec<(Vec<u8>, crate::catalog::ObjectRecord)>,
    sealed_bytes: u64,
}

/// The set's objects: the index every drive carries, the bill of materials, the totals.
struct SetObjects {
    index_of_set: Vec<(Vec<u8>, u64, String)>,
    not_on: Vec<String>,
    bom: String,
    on_count: u64,
    on_bytes: u64,
}

/// What the sealing of every drive of the set shares.
struct SealRun<'a> {
    node: &'a Node,
    set: &'a DriveSet,
    code: &'a UnlockCode,
    mkey: [u8; 32],
    sealed_at: u64,
    index_of_set: &'a [(Vec<u8>, u64, String)],
}

/// Seals every drive of the node's set; writes the unlock code file and the bill of
/// materials into `out_dir` (which must not travel with the drives).
pub fn seal(node: &Node, out_dir: &Path) -> Result<(SealReport, UnlockCode)> {
    let set = recovered_set(node)?;
    // Which drive each segment and chunk is on.
    let mut shares: Vec<DriveShare> = (0..set.members.len())
        .map(|_| DriveShare::default())
        .collect();
    let seg_drive = segments_by_drive(node, &set, &mut shares)?;
    let chunk_drive = chunks_by_drive(node, &seg_drive, &mut shares)?;
    let objects = objects_by_drive(node, &set, &chunk_drive, &mut shares)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io("creating", out_dir, e))?;
    let sealed_at = unix_now();
    let tag = format!("{}-{sealed_at}", &hex::encode(set.set_id)[..8]);
    let code = UnlockCode::generate();
    let code_file = out_dir.join(format!("unlock-{tag}.txt"));
    write_unlock_code(node, &set, &code, &code_file, sealed_at)?;
    let bom_file = out_dir.join(format!("bom-{tag}.csv"));
    write_synced(&bom_file, objects.bom.as_bytes(), 0o644)?;

    let run = SealRun {
        node,
        set: &set,
        code: &code,
        mkey: manifest_key(&node.master, &set.set_id),
        sealed_at,
        index_of_set: &objects.index_of_set,
    };
    let mut drives_out = vec![];
    for (m, share) in set.members.iter().zip(shares) {
        crate::failpoint::point("ship.seal_drive");
        drives_out.push(seal_drive(&run, m, share)?);
    }
    let report = SealReport {
        set_id: hex::encode(set.set_id),
        sealed_at,
        unlock_fingerprint: code.fingerprint(),
        unlock_code_file: code_file,
        bill_of_materials: bom_file,
        drives: drives_out,
        objects_on_drives: objects.on_count,
        bytes_on_drives: objects.on_bytes,
        objects_not_on_drives: objects.not_on,
    };
    let json =
        serde_json::to_vec_pretty(&report).map_err(|e| Error::encode("the seal report", e))?;
    write_synced(&out_dir.join(format!("seal-{tag}.json")), &json, 0o644)?;
    Ok((report, code))
}

/// The node's raw drive set, after recovery has sealed every open segment.
fn recovered_set(node: &Node) -> Result<DriveSet> {
    let set = DriveSet::load(&node.catalog)?.ok_or_else(|| Error::State {
        path: node.state_dir.clone(),
        message: "this node stages on directories; sealing needs raw drives \
                  (`barge init --staging /dev/...`)"
            .into(),
    })?;
    let paths: Vec<PathBuf> = set.members.iter().map(|m| PathBuf::from(&m.path)).collect();
    let rec = node.recover_staging(&paths)?;
    if let Some(e) = rec.unrecoverable.first() {
        return Err(Error::State {
            path: node.state_dir.clone(),
            message: format!("cannot seal: a segment could not be finished: {e}"),
        });
    }
    Ok(set)
}

/// Puts each sealed segment into its drive's share; returns segment id -> drive.
fn segments_by_drive(
    node: &Node,
    set: &DriveSet,
    shares: &mut [DriveShare],
) -> Result<HashMap<u64, usize>> {
    let member_of: HashMap<&str, usize> = set
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.path.as_str(), i))
        .collect();
    let mut seg_drive: HashMap<u64, usize> = HashMap::new();
    for item in node.catalog.segments()? {
        let (id, rec) = item?;
        let Some(&i) = member_of.get(rec.path.as_str()) else {
            return Err(Error::Segment {
                segment: id,
                drive: PathBuf::from(&rec.drive),
                message: "is not on a drive of the set; it cannot be shipped".into(),
            });
        };
        if rec.state != SegmentState::Sealed {
            return Err(Error::Segment {
                segment: id,
                drive: PathBuf::from(&rec.drive),
                message: "is still open after recovery; run `barge fsck`".into(),
            });
        }
        seg_drive.insert(id, i);
        shares[i].segments.push((id, rec));
    }
    Ok(seg_drive)
}

/// Puts each sealed chunk into the share of its segment's drive; returns chunk -> drive.
fn chunks_by_drive(
    node: &Node,
    seg_drive: &HashMap<u64, usize>,
    shares: &mut [DriveShare],
) -> Result<HashMap<ChunkId, usize>> {
    let mut chunk_drive: HashMap<ChunkId, usize> = HashMap::new();
    for item in node.catalog.chunks()? {
        let (id, c) = item?;
        if c.sealed_len == 0 {
            continue;
        }
        if let Some(&i) = seg_drive.get(&c.segment) {
            chunk_drive.insert(id, i);
            shares[i].sealed_bytes += c.sealed_len as u64;
            shares[i].chunks.push((id, c.encode().to_vec()));
        }
    }
    Ok(chunk_drive)
}

/// Puts each object wholly on the drives into the shares of the drives holding its chunks.
fn objects_by_drive(
    node: &Node,
    set: &DriveSet,
    chunk_drive: &HashMap<ChunkId, usize>,
    shares: &mut [DriveShare],
) -> Result<SetObjects> {
    // Objects: full records go with each drive holding one of their chunks.
    let mut o = SetObjects {
        index_of_set: vec![],
        not_on: vec![],
        bom: String::from("key,size,blake3,source_etag,drives\n"),
        on_count: 0,
        on_bytes: 0,
    };
    for item in node.catalog.objects()? {
        let (key, rec) = item?;
        o.index_of_set
            .push((key.as_bytes().to_vec(), rec.size, rec.version.clone()));
        let drives: Option<BTreeSet<usize>> = if rec.state.is_staged_or_later() {
            rec.chunks
                .iter()
                .map(|c| chunk_drive.get(&c.id).copied())
                .collect()
        } else {
            None
        };
        let Some(mut drives) = drives else {
            o.not_on.push(key.to_string());
            continue;
        };
        if drives.is_empty() {
            drives.insert(0);
        }
        o.bom.push_str(&bom_row(&key, &rec, &drives, set));
        o.on_count += 1;
        o.on_bytes += rec.size;
        for &i in &drives {
            shares[i]
                .objects
                .push((key.as_bytes().to_vec(), rec.clone()));
        }
    }
    Ok(o)
}

/// Writes the unlock code file (mode 0600, synced) with the set's drives as comments.
fn write_unlock_code(
    node: &Node,
    set: &DriveSet,
    code: &UnlockCode,
    code_file: &Path,
    sealed_at: u64,
) -> Result<()> {
    let mut text = format!(
        "# barge unlock code for drive set {} (sealed {sealed_at}, appliance {})\n\
         # Send it separately from the drives: with it, anyone holding them can read them.\n",
        hex::encode(set.set_id),
        hex::encode(node.appliance_id)
    );
    for m in &set.members {
        text.push_str(&format!(
            "# drive #{} id {} serial {}\n",
            m.index,
            hex::encode(m.drive_id),
            m.serial.as_deref().unwrap_or("-")
        ));
    }
    text.push_str(&code.to_text());
    text.push('\n');
    write_synced(code_file, text.as_bytes(), 0o600)
}

/// Seals one drive: its manifest into free slots (synced), then its new superblock.
fn seal_drive(run: &SealRun, m: &Member, share: DriveShare) -> Result<SealedDrive> {
    let (node, set) = (run.node, run.set);
    let path = Path::new(&m.path);
    let f = device::open(path, true)?;
    let mut sb = device::read_superblock(&f, path)?;
    check_identity(path, &sb, m, set)?;
    let man = Manifest {
        set_id: set.set_id,
        appliance_id: node.appliance_id,
        drive_id: m.drive_id,
        index: m.index,
        sealed_at: run.sealed_at,
        members: set.members.clone(),
        chunk_params: node.chunks,
        staging: node.staging.settings.clone(),
        segments: share.segments,
        chunks: share.chunks,
        objects: share.objects,
        index_of_set: run.index_of_set.to_vec(),
    };
    let blob = manifest::seal(&man, &run.mkey).map_err(|message| Error::Drive {
        drive: path.to_path_buf(),
        message,
    })?;
    let offset = manifest_offset(path, &sb, &man, blob.len())?;
    device::write_at(&f, path, offset, &blob)?;
    sb.flags = (sb.flags | FLAG_SEALED) & !device::FLAG_IMPORTED;
    sb.manifest_offset = offset;
    sb.manifest_len = blob.len() as u64;
    sb.sealed_at = run.sealed_at;
    sb.wrapped_key = wrap_key(run.code, &node.master, &set.set_id, &m.drive_id)?;
    device::write_superblock(&f, path, &mut sb)?;
    tracing::info!(
        "sealed drive #{} ({}): {} segments, manifest {} bytes",
        m.index,
        path.display(),
        man.segments.len(),
        blob.len()
    );
    Ok(SealedDrive {
        index: m.index,
        drive_id: hex::encode(m.drive_id),
        path: m.path.clone(),
        serial: m.serial.clone(),
        segments: man.segments.len() as u64,
        chunks: man.chunks.len() as u64,
        objects: man.objects.len() as u64,
        sealed_bytes: share.sealed_bytes,
        manifest_bytes: blob.len() as u64,
    })
}

/// Fails when the superblock on `path` is not that of member `m` of `set`.
fn check_identity(path: &Path, sb: &Superblock, m: &Member, set: &DriveSet) -> Result<()> {
    if sb.drive_id != m.drive_id || sb.set_id != set.set_id {
        return Err(Error::Drive {
            drive: path.to_path_buf(),
            message: format!(
                "holds drive {} of set {}, but drive #{} of this node's set is {}: \
                 was a drive swapped?",
                hex::encode(sb.drive_id),
                hex::encode(sb.set_id),
                m.index,
                hex::encode(m.drive_id)
            ),
        });
    }
    Ok(())
}

/// Offset of the first free consecutive slots that hold a `len`-byte manifest.
fn manifest_offset(path: &Path, sb: &Superblock, man: &Manifest, len: usize) -> Result<u64> {
    let used: BTreeSet<u64> = man
        .segments
        .iter()
        .filter_map(|(_, r)| sb.slot_of(r.base))
        .collect();
    let need = (len as u64).div_ceil(sb.slot_size);
    let start = (0..sb.slot_count.saturating_sub(need - 1))
        .find(|s| (*s..s + need).all(|x| !used.contains(&x)))
        .ok_or_else(|| Error::Drive {
            drive: path.to_path_buf(),
            message: format!(
                "no room for its {len}-byte manifest ({need} free consecutive slots needed)"
            ),
        })?;
    Ok(sb.slot_offset(start))
}

fn bom_row(
    key: &ObjectKey,
    rec: &crate::catalog::ObjectRecord,
    drives: &BTreeSet<usize>,
    set: &DriveSet,
) -> String {
    let on: Vec<String> = drives
        .iter()
        .map(|&i| set.members[i].index.to_string())
        .collect();
    format!(
        "{},{},{},{},{}\n",
        crate::report::csv_field(&key.to_string()),
        rec.size,
        rec.blake3.map(hex::encode).unwrap_or_default(),
        crate::report::csv_field(&rec.version),
        on.join(" ")
    )
}

/// Writes a file and fsyncs it and its directory.
pub(crate) fn write_synced(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("writing", path, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("writing", path, e))?;
    if let Some(dir) = path.parent() {
        crate::staging::writer::sync_dir(dir).map_err(|e| Error::io("syncing", dir, e))?;
    }
    Ok(())
}

//! `barge import DRIVE...`: turns shipped drives into a fresh node at the destination.
//!
//! Every superblock, wrapped key, manifest and segment checksum is checked. A drive that
//! fails a check is reported by path with the reason and left out; the import goes on
//! with the sound drives, and objects that are not (wholly) on them are recorded as
//! `Listed` so that the top-up ingest fetches them over the wire.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use barge_firmware::sysfs::drive_serial;
use serde::Serialize;

use super::manifest::{self, Manifest};
use super::{UnlockCode, manifest_key, unwrap_key};
use crate::catalog::{META_NEXT_SEGMENT, ObjectRecord, ObjectState, SegmentRecord, unix_now};
use crate::chunker::ChunkParams;
use crate::crypto::{ChunkId, MasterKey};
use crate::error::{Error, Result};
use crate::node::{Imported, InitOptions, Node};
use crate::object::ObjectKey;
use crate::staging::StagingSettings;
use crate::staging::device::{self, FLAG_IMPORTED, Superblock};
use crate::staging::format::{INDEX_ENTRY_LEN, SegmentHasher};
use crate::staging::set::{DriveSet, Member};

/// Records written per catalog batch while importing.
const IMPORT_BATCH: usize = 10_000;

/// What the import found on each drive and overall.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub set_id: String,
    pub unlock_fingerprint: String,
    pub drives: Vec<DriveReport>,
    /// Members of the set that were not given or could not be used.
    pub missing_drives: Vec<String>,
    pub objects_in_set: u64,
    /// Objects whose every chunk came in on a sound drive: ready to drain.
    pub objects_ready: u64,
    pub bytes_ready: u64,
    /// Objects that are not (wholly) on the sound drives; the top-up fetches them.
    pub objects_missing: Vec<String>,
    /// True when every drive and segment was sound and nothing is missing.
    pub complete: bool,
}

#[derive(Debug, Serialize, Default)]
pub struct DriveReport {
    pub path: String,
    pub ok: bool,
    pub error: Option<String>,
    pub index: Option<u32>,
    pub drive_id: Option<String>,
    pub serial: Option<String>,
    pub segments: u64,
    pub segments_bad: Vec<String>,
    pub chunks: u64,
    pub objects: u64,
}

struct Good {
    path: PathBuf,
    sb: Superblock,
    manifest: Manifest,
    bad_segments: HashSet<u64>,
}

/// A drive whose superblock reads and is sealed; `report` indexes its [`DriveReport`].
struct Found {
    report: usize,
    path: PathBuf,
    sb: Superblock,
}

/// What the first sound drive's manifest says about the whole set.
struct SetInfo {
    members: Vec<Member>,
    appliance_id: [u8; 16],
    settings: StagingSettings,
    chunk_params: ChunkParams,
}

/// The sound drives' manifests merged: usable chunks, object records, the set's index.
struct Merged {
    chunk_ok: HashSet<ChunkId>,
    objects: BTreeMap<Vec<u8>, ObjectRecord>,
    index: BTreeMap<Vec<u8>, (u64, String)>,
}

/// The set's objects sorted into ready to drain and missing.
struct Tally {
    ready: u64,
    bytes_ready: u64,
    missing: Vec<String>,
}

/// Imports `drives` into the fresh state directory `state`. Fails without creating
/// anything when the unlock code opens none of the drives.
pub fn import(
    state: &Path,
    key: &crate::crypto::keys::KeyRequest,
    code: &UnlockCode,
    drives: &[PathBuf],
) -> Result<ImportReport> {
    ensure_fresh(state)?;
    let (mut reports, found) = open_drives(drives);
    let (set_id, master) = open_set(code, &found, &reports)?;
    let (mut good, set) = check_drives(found, &mut reports, code, &master, &set_id)?;
    check_segments(&mut good)?;
    let missing_drives = missing_members(&set.members, &good, &set_id);
    // The new node: the set's key, appliance id and settings; the sound drives. The
    // marker says "not finished" to every other command until the end.
    let marker = mark_in_progress(state)?;
    let node = init_node(state, key, &set, &good, &master)?;
    let merged = rebuild_catalog(&node, &good, &mut reports)?;
    let tally = import_objects(&node, merged)?;
    store_drive_set(&node, set_id, &set.members, &good)?;
    node.catalog.sync()?;
    crate::failpoint::point("ship.import_synced");
    // The drives may now take top-up segments at this site.
    mark_imported(&good)?;
    let report = build_report(set_id, code, reports, missing_drives, tally);
    write_report(state, &marker, &report)?;
    Ok(report)
}

/// Refuses a state directory that already holds a node or an unfinished import.
fn ensure_fresh(state: &Path) -> Result<()> {
    if state.join("keys/key.json").exists() || state.join(crate::node::IMPORT_MARKER).exists() {
        return Err(Error::State {
            path: state.to_path_buf(),
            message: "already initialised: import needs a fresh state directory".into(),
        });
    }
    Ok(())
}

/// Reads each given drive's superblock: a report per drive, and the sealed drives found.
fn open_drives(drives: &[PathBuf]) -> (Vec<DriveReport>, Vec<Found>) {
    let mut reports: Vec<DriveReport> = vec![];
    let mut found: Vec<Found> = vec![];
    for p in drives {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        let mut r = DriveReport {
            path: p.display().to_string(),
            serial: drive_serial(&p),
            ..Default::default()
        };
        match device::open(&p, false).and_then(|f| device::read_superblock(&f, &p)) {
            Ok(sb) if !sb.is_sealed() => {
                r.error = Some("is not sealed (run `barge seal` at the source)".into())
            }
            Ok(sb) => {
                r.index = Some(sb.index);
                r.drive_id = Some(hex::encode(sb.drive_id));
                found.push(Found {
                    report: reports.len(),
                    path: p,
                    sb,
                });
            }
            Err(e) => r.error = Some(e.to_string()),
        }
        reports.push(r);
    }
    (reports, found)
}

/// The id and master key of the set whose wrapped key this code opens.
fn open_set(
    code: &UnlockCode,
    found: &[Found],
    reports: &[DriveReport],
) -> Result<([u8; 16], MasterKey)> {
    // The set is the one whose wrapped key this code opens.
    let opened = found.iter().find_map(|Found { sb, .. }| {
        unwrap_key(code, &sb.wrapped_key, &sb.set_id, &sb.drive_id).map(|m| (sb.set_id, m))
    });
    let Some(opened) = opened else {
        let names: Vec<String> = reports
            .iter()
            .map(|r| match &r.error {
                Some(e) => format!("{}: {e}", r.path),
                None => format!("{}: does not open", r.path),
            })
            .collect();
        return Err(Error::Key(format!(
            "the unlock code opens none of the drives (wrong code, or drives of another set): {}",
            names.join("; ")
        )));
    };
    Ok(opened)
}

/// Checks the found drives' superblocks and manifests; the sound drives and their set.
fn check_drives(
    found: Vec<Found>,
    reports: &mut [DriveReport],
    code: &UnlockCode,
    master: &MasterKey,
    set_id: &[u8; 16],
) -> Result<(Vec<Good>, SetInfo)> {
    let mkey = manifest_key(master, set_id);
    let mut good: Vec<Good> = vec![];
    for Found { report, path, sb } in found {
        let r = &mut reports[report];
        match check_drive(&path, &sb, code, master, set_id, &mkey) {
            Ok(manifest) => {
                if good.iter().any(|g| g.sb.drive_id == sb.drive_id) {
                    r.error = Some(format!(
                        "drive #{} was given twice (also as another path)",
                        sb.index
                    ));
                    continue;
                }
                good.push(Good {
                    path,
                    sb,
                    manifest,
                    bad_segments: HashSet::new(),
                });
            }
            Err(e) => r.error = Some(e),
        }
    }
    let Some(first) = good.first() else {
        return Err(Error::Key(format!(
            "no drive of set {} passed its checks: {}",
            hex::encode(set_id),
            reports
                .iter()
                .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.path)))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    };
    let set = SetInfo {
        members: first.manifest.members.clone(),
        appliance_id: first.manifest.appliance_id,
        settings: first.manifest.staging.clone(),
        chunk_params: first.manifest.chunk_params,
    };
    Ok((good, set))
}

/// Checks every segment against its manifest checksum, recording the bad ones per drive.
fn check_segments(good: &mut [Good]) -> Result<()> {
    // Segments: each checked against its manifest checksum by reading it whole; one
    // thread per drive, so the drives are read at once.
    std::thread::scope(|sc| -> Result<()> {
        let handles: Vec<_> = good
            .iter_mut()
            .map(|g| {
                sc.spawn(move || -> Result<()> {
                    let f = device::open(&g.path, false)?;
                    for (id, rec) in &g.manifest.segments {
                        if let Err(e) = check_segment(&f, &g.path, rec) {
                            tracing::error!("{}: segment {id}: {e}", g.path.display());
                            g.bad_segments.insert(*id);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| Error::task("a segment check thread", "panicked"))??;
        }
        Ok(())
    })
}

/// One line for each member of the set that is not among the sound drives.
fn missing_members(members: &[Member], good: &[Good], set_id: &[u8; 16]) -> Vec<String> {
    members
        .iter()
        .filter(|m| !good.iter().any(|g| g.sb.drive_id == m.drive_id))
        .map(|m| {
            format!(
                "drive #{} (id {}, serial {}) of set {} is missing or unusable",
                m.index,
                hex::encode(m.drive_id),
                m.serial.as_deref().unwrap_or("-"),
                hex::encode(set_id)
            )
        })
        .collect()
}

/// Creates the state directory and writes the synced "import in progress" marker.
fn mark_in_progress(state: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(state).map_err(|e| Error::io("creating", state, e))?;
    let marker = state.join(crate::node::IMPORT_MARKER);
    super::seal::write_synced(&marker, b"barge import in progress\n", 0o644)?;
    Ok(marker)
}

/// Initialises the new node with the set's key, appliance id, settings and sound drives.
fn init_node(
    state: &Path,
    key: &crate::crypto::keys::KeyRequest,
    set: &SetInfo,
    good: &[Good],
    master: &MasterKey,
) -> Result<Node> {
    let opts = InitOptions {
        key: key.clone(),
        chunks: set.chunk_params,
        staging: set.settings.clone(),
        drives: good.iter().map(|g| g.path.clone()).collect(),
        force_drives: false,
    };
    Node::init_imported(
        state,
        &opts,
        Imported {
            master: MasterKey::from_bytes(*master.expose()),
            appliance_id: set.appliance_id,
        },
    )
}

/// Imports the sound segments and their chunks of each drive and fills in its report.
fn rebuild_catalog(node: &Node, good: &[Good], reports: &mut [DriveReport]) -> Result<Merged> {
    let mut merged = Merged {
        chunk_ok: HashSet::new(),
        objects: BTreeMap::new(),
        index: BTreeMap::new(),
    };
    let mut max_segment = 0u64;
    for g in good {
        let r = reports
            .iter_mut()
            .find(|r| r.path == g.path.display().to_string())
            .ok_or_else(|| Error::task("import", "lost track of a drive"))?;
        let path = g.path.display().to_string();
        let segs: Vec<(u64, SegmentRecord)> = g
            .manifest
            .segments
            .iter()
            .filter(|(id, _)| !g.bad_segments.contains(id))
            .map(|(id, rec)| {
                max_segment = max_segment.max(*id);
                let mut rec = rec.clone();
                rec.drive = path.clone();
                rec.path = path.clone();
                (*id, rec)
            })
            .collect();
        let live: HashSet<u64> = segs.iter().map(|(id, _)| *id).collect();
        let mut chunks = vec![];
        for (id, enc) in &g.manifest.chunks {
            let c = crate::catalog::ChunkRecord::decode(enc)?;
            if live.contains(&c.segment) {
                merged.chunk_ok.insert(*id);
                chunks.push((*id, enc.clone()));
            }
        }
        node.catalog.import_batch(&segs, &chunks, &[])?;
        r.ok = g.bad_segments.is_empty();
        r.segments = segs.len() as u64;
        r.segments_bad = g
            .bad_segments
            .iter()
            .map(|id| format!("segment {id}: checksum mismatch (altered or damaged in transit)"))
            .collect();
        r.chunks = chunks.len() as u64;
        r.objects = g.manifest.objects.len() as u64;
        merge_objects(&mut merged, &g.manifest);
    }
    node.catalog
        .raise_counter(META_NEXT_SEGMENT, max_segment + 1)?;
    Ok(merged)
}

/// Adds a drive's object records and index entries that no earlier drive brought.
fn merge_objects(merged: &mut Merged, manifest: &Manifest) {
    for (k, rec) in &manifest.objects {
        merged
            .objects
            .entry(k.clone())
            .or_insert_with(|| rec.clone());
    }
    for (k, size, version) in &manifest.index_of_set {
        merged
            .index
            .entry(k.clone())
            .or_insert((*size, version.clone()));
    }
}

/// Writes every object of the set: `Staged` when all its chunks came in, else `Listed`.
fn import_objects(node: &Node, merged: Merged) -> Result<Tally> {
    let Merged {
        chunk_ok,
        mut objects,
        index,
    } = merged;
    let now = unix_now();
    let (mut ready, mut bytes_ready) = (0u64, 0u64);
    let mut missing = vec![];
    let mut batch: Vec<(ObjectKey, ObjectRecord)> = vec![];
    for (k, (size, version)) in index {
        let key = ObjectKey::from_bytes(k.clone());
        let rec = match objects.remove(&k) {
            Some(mut rec) if rec.chunks.iter().all(|c| chunk_ok.contains(&c.id)) => {
                rec.state = ObjectState::Staged;
                rec.uploads = 0;
                rec.updated = now;
                ready += 1;
                bytes_ready += rec.size;
                rec
            }
            other => {
                missing.push(key.to_string());
                listed_record(size, version, other, now)
            }
        };
        batch.push((key, rec));
        if batch.len() >= IMPORT_BATCH {
            node.catalog.import_batch(&[], &[], &batch)?;
            batch.clear();
        }
    }
    node.catalog.import_batch(&[], &[], &batch)?;
    Ok(Tally {
        ready,
        bytes_ready,
        missing,
    })
}

/// The `Listed` record of an object the top-up fetches (keeping any metadata it had).
fn listed_record(size: u64, version: String, had: Option<ObjectRecord>, now: u64) -> ObjectRecord {
    let (content_type, user_meta) = had
        .map(|r| (r.content_type, r.user_meta))
        .unwrap_or_default();
    ObjectRecord {
        size,
        version,
        content_type,
        user_meta,
        blake3: None,
        chunks: vec![],
        state: ObjectState::Listed,
        checked: String::new(),
        uploads: 0,
        updated: now,
    }
}

/// Stores the set's membership with the paths and serials of the drives at this site.
fn store_drive_set(node: &Node, set_id: [u8; 16], members: &[Member], good: &[Good]) -> Result<()> {
    DriveSet {
        set_id,
        members: members
            .iter()
            .map(|m| {
                let here = good.iter().find(|g| g.sb.drive_id == m.drive_id);
                Member {
                    path: here
                        .map(|g| g.path.display().to_string())
                        .unwrap_or_default(),
                    serial: here
                        .and_then(|g| drive_serial(&g.path))
                        .or(m.serial.clone()),
                    ..m.clone()
                }
            })
            .collect(),
    }
    .store(&node.catalog)
}

/// Sets the imported flag in each sound drive's superblock.
fn mark_imported(good: &[Good]) -> Result<()> {
    for g in good {
        let f = device::open(&g.path, true)?;
        let mut sb = device::read_superblock(&f, &g.path)?;
        sb.flags |= FLAG_IMPORTED;
        device::write_superblock(&f, &g.path, &mut sb)?;
    }
    Ok(())
}

/// The import report; complete when every drive and object came in sound.
fn build_report(
    set_id: [u8; 16],
    code: &UnlockCode,
    reports: Vec<DriveReport>,
    missing_drives: Vec<String>,
    tally: Tally,
) -> ImportReport {
    let Tally {
        ready,
        bytes_ready,
        missing,
    } = tally;
    let complete = missing.is_empty()
        && missing_drives.is_empty()
        && reports.iter().all(|r| r.ok && r.error.is_none());
    ImportReport {
        set_id: hex::encode(set_id),
        unlock_fingerprint: code.fingerprint(),
        drives: reports,
        missing_drives,
        objects_in_set: ready + missing.len() as u64,
        objects_ready: ready,
        bytes_ready,
        objects_missing: missing,
        complete,
    }
}

/// Writes `import-report.json` (synced), then removes the marker and syncs the directory.
fn write_report(state: &Path, marker: &Path, report: &ImportReport) -> Result<()> {
    let json =
        serde_json::to_vec_pretty(report).map_err(|e| Error::encode("the import report", e))?;
    super::seal::write_synced(&state.join("import-report.json"), &json, 0o644)?;
    std::fs::remove_file(marker).map_err(|e| Error::io("removing", marker, e))?;
    crate::staging::writer::sync_dir(state).map_err(|e| Error::io("syncing", state, e))?;
    Ok(())
}

/// Superblock and manifest checks of one drive; the error names what is wrong.
fn check_drive(
    path: &Path,
    sb: &Superblock,
    code: &UnlockCode,
    master: &MasterKey,
    set_id: &[u8; 16],
    mkey: &[u8; 32],
) -> std::result::Result<Manifest, String> {
    if sb.set_id != *set_id {
        return Err(format!(
            "belongs to drive set {}, not to set {} that this unlock code opens",
            hex::encode(sb.set_id),
            hex::encode(set_id)
        ));
    }
    match unwrap_key(code, &sb.wrapped_key, &sb.set_id, &sb.drive_id) {
        Some(k) if k.expose() == master.expose() => {}
        _ => {
            return Err(
                "its wrapped key does not open with this unlock code (superblock altered?)".into(),
            );
        }
    }
    let f = device::open(path, false).map_err(|e| e.to_string())?;
    // The region is CRC-protected only: bounded by the drive and a cap before reading.
    let device_len = device::size_of(&f, path).map_err(|e| e.to_string())?;
    let (offset, len) = sb.manifest_region(device_len).map_err(|e| e.to_string())?;
    let bytes = device::read_at(&f, path, offset, len).map_err(|e| e.to_string())?;
    manifest::open(&bytes, mkey, &sb.set_id, &sb.drive_id, sb.index).map_err(|e| e.to_string())
}

/// Recomputes a sealed segment's checksum (header, records and index) from the drive.
fn check_segment(
    f: &std::fs::File,
    path: &Path,
    rec: &SegmentRecord,
) -> std::result::Result<(), String> {
    let want = rec.checksum.ok_or("was never sealed")?;
    let len = rec.data_len + rec.records * INDEX_ENTRY_LEN as u64;
    let mut h = SegmentHasher::new();
    // One aligned buffer, reads at block-aligned offsets (slots start on 1 MiB), hashed
    // in place: no copy per read.
    let step: u64 = 8 << 20;
    let mut buf = crate::staging::io::AlignedBuf::new(step as usize);
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(step) as usize;
        let want = crate::staging::format::round_up(n as u64) as usize;
        let b = &mut buf.as_mut_slice()[..want];
        std::os::unix::fs::FileExt::read_exact_at(f, b, rec.base + pos)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        h.update(&b[..n]);
        pos += n as u64;
    }
    if h.finish() != want {
        return Err("checksum mismatch (altered or damaged in transit)".into());
    }
    Ok(())
}

//! `barge drives prepare` on this machine's real block devices (run as root): the disk
//! holding `/` is refused, loop devices become raw staging drives of a new node and then
//! new members of its set, a drive already in the set is recognised, and a drive of
//! another set is refused without --force.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Size of each drive image: 3 slots of 32 MiB.
const DRIVE_BYTES: u64 = 128 << 20;

/// The block device `/` is on, from the mount table.
fn root_device() -> String {
    let o = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE", "/"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn prepare(state: &Path, devs: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut args = vec!["--json", "drives", "prepare", "--segment-size", "32MiB"];
    args.extend_from_slice(devs);
    let o = barge(state, &args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let v = if out.trim().is_empty() {
        serde_json::Value::Null
    } else {
        json_doc(&out, "prepare")["prepare"].clone()
    };
    (o.status.code(), v, stderr(&o))
}

#[test]
fn prepare_refuses_the_os_disk_and_foreign_drives_and_grows_the_set() {
    let t = tmp();
    let state = t.path().join("state");
    let a = Loop::attach(&sparse_file(t.path(), "a.img", DRIVE_BYTES));
    let b = Loop::attach(&sparse_file(t.path(), "b.img", DRIVE_BYTES));
    let c = Loop::attach(&sparse_file(t.path(), "c.img", DRIVE_BYTES));

    // The OS disk is refused with the reason; the free loop device is prepared and the
    // state directory initialised with it.
    let root = root_device();
    let (code, rows, err) = prepare(&state, &[&root, &a.dev]);
    assert_eq!(code, Some(3), "{rows} {err}");
    let r = rows.as_array().unwrap();
    assert!(
        r[0]["outcome"]
            .as_str()
            .unwrap()
            .contains("holds the operating system"),
        "{rows}"
    );
    assert_eq!(r[1]["outcome"], "prepared as drive #0", "{rows}");
    assert!(state.join("keys/key.json").exists());

    // Again: recognised by its superblock; another drive joins as #1.
    let (code, rows, err) = prepare(&state, &[&a.dev, &b.dev]);
    assert_eq!(code, Some(0), "{rows} {err}");
    let r = rows.as_array().unwrap();
    assert_eq!(r[0]["outcome"], "already staging drive #0", "{rows}");
    assert_eq!(r[1]["outcome"], "prepared as drive #1", "{rows}");
    let show: serde_json::Value =
        serde_json::from_str(&ok(&barge(&state, &["drives", "show", &b.dev]))).unwrap();
    assert_eq!(show["superblock"]["index"], 1);
    let set_a = show["superblock"]["set_id"].clone();

    // A drive of another node's set is refused unless forced.
    let other = t.path().join("other");
    let (code, _, err) = prepare(&other, &[&c.dev]);
    assert_eq!(code, Some(0), "{err}");
    let (code, rows, _) = prepare(&state, &[&c.dev]);
    assert_eq!(code, Some(3));
    assert!(
        rows[0]["outcome"]
            .as_str()
            .unwrap()
            .contains("refused: holds barge drive set"),
        "{rows}"
    );
    let o = barge(&state, &["--json", "drives", "prepare", "--force", &c.dev]);
    assert!(o.status.success(), "{}", stderr(&o));
    let show: serde_json::Value =
        serde_json::from_str(&ok(&barge(&state, &["drives", "show", &c.dev]))).unwrap();
    assert_eq!(show["superblock"]["set_id"], set_a);
    assert_eq!(show["superblock"]["index"], 2);

    // The node stages on all three: a small ingest stripes over them.
    let src = t.path().join("src");
    for i in 0..6u64 {
        write(&src, format!("f{i}").as_bytes(), &rand_bytes(i, 3_000_000));
    }
    ok(&barge(
        &state,
        &[
            "--quiet",
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            t.path().join("out").to_str().unwrap(),
        ],
    ));
    assert_same_tree(&src, &t.path().join("out"));
    let st = ok(&barge(&state, &["status"]));
    for d in [&a.dev, &b.dev, &c.dev] {
        assert!(st.contains(d.as_str()), "{d} not a staging drive:\n{st}");
    }
}

/// Raw drives (here drive images: regular files are raw drives too) survive a SIGKILL in
/// the middle of staging: fsck reseals the open segments in their slots (footer written
/// O_DIRECT), and the next run completes with every byte right.
#[test]
fn a_crash_while_staging_on_raw_drives_loses_nothing() {
    let t = tmp();
    let state = t.path().join("state");
    let imgs: Vec<_> = (0..2)
        .map(|i| sparse_file(t.path(), &format!("raw{i}.img"), DRIVE_BYTES))
        .collect();
    init_small(
        &state,
        &[
            "--staging",
            imgs[0].to_str().unwrap(),
            "--staging",
            imgs[1].to_str().unwrap(),
        ],
    );
    let src = t.path().join("src");
    for i in 0..12u64 {
        write(
            &src,
            format!("d/{i}").as_bytes(),
            &rand_bytes(300 + i, 900_000),
        );
    }
    for point in ["staging.after_commit:4", "staging.after_sync:9"] {
        let o = bin()
            .arg("--state")
            .arg(&state)
            .args(["--quiet", "ingest", "--source", src.to_str().unwrap()])
            .env("BARGE_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), None, "{point}: not killed: {}", stderr(&o));
        let out = ok(&barge(&state, &["--json", "fsck"]));
        let f = json_doc(&out, "fsck");
        // Killed right after a location commit, the open segment holds committed records
        // and must be resealed. Killed after an fdatasync but before its commit, the
        // segment may have no committed record yet: then it is dropped, slot and all.
        let resealed = f["fsck"]["segments_resealed"].as_u64().unwrap();
        let dropped = f["fsck"]["empty_segments_removed"].as_u64().unwrap();
        if point.starts_with("staging.after_commit") {
            assert!(resealed >= 1, "{point}: nothing resealed: {f}");
        } else {
            assert!(resealed + dropped >= 1, "{point}: open segment left: {f}");
        }
        assert!(
            f["fsck"]["unrecoverable"].as_array().unwrap().is_empty(),
            "{f}"
        );
    }
    let out = t.path().join("out");
    ok(&barge(
        &state,
        &[
            "--quiet",
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    ));
    assert_same_tree(&src, &out);
    let r = ok(&barge(&state, &["report"]));
    assert!(r.contains("verdict     DONE"), "{r}");
}

//! `barge drives prepare` on this machine's real block devices (run as root): the disk
//! holding `/` is refused, loop devices become raw staging drives of a new node and then
//! new members of its set, a drive already in the set is recognised, and a drive of
//! another set is refused without --force; devices with old contents (partition table,
//! filesystem, LVM) or in use are refused, and `erase` takes only members of the set.

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

/// Runs a tool the test needs (sfdisk, mkfs.ext4, pvcreate) with `input` on its
/// standard input; it must succeed.
fn tool(cmd: &str, args: &[&str], input: &str) {
    use std::io::Write;
    use std::process::Stdio;
    let mut c = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd} (scripts/deps.sh test): {e}"));
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The outcome of the one device in a `drives prepare` answer, after checking the row
/// names that device.
fn outcome_of(rows: &serde_json::Value, dev: &str) -> String {
    let r = rows
        .as_array()
        .and_then(|a| a.iter().find(|r| r["device"] == dev))
        .unwrap_or_else(|| panic!("no row for {dev}: {rows}"));
    r["outcome"].as_str().unwrap_or_default().to_string()
}

/// Devices with old contents (a partition table, an ext4 filesystem, an LVM physical
/// volume) are refused by `drives prepare`, naming the device and what it holds (and a
/// device too small for two segments is refused alone, not failing the others), and
/// prepared once named with `--force DEVICE`; a device another process holds open
/// O_EXCL is refused even with `--force`.
#[test]
fn prepare_refuses_partitioned_formatted_lvm_and_busy_devices() {
    let t = tmp();
    let state = t.path().join("state");
    let pt = sparse_file(t.path(), "pt.img", DRIVE_BYTES);
    tool(
        "sfdisk",
        &["-q", pt.to_str().unwrap()],
        "label: gpt\n,32MiB\n",
    );
    let ext = sparse_file(t.path(), "ext.img", DRIVE_BYTES);
    tool("mkfs.ext4", &["-q", "-F", ext.to_str().unwrap()], "");
    let pt = Loop::attach(&pt);
    let ext = Loop::attach(&ext);
    let pv = Loop::attach(&sparse_file(t.path(), "pv.img", DRIVE_BYTES));
    tool("pvcreate", &["-q", "-ff", "-y", &pv.dev], "");
    let busy = Loop::attach(&sparse_file(t.path(), "busy.img", DRIVE_BYTES));
    let small = Loop::attach(&sparse_file(t.path(), "small.img", 48 << 20));

    let (code, rows, err) = prepare(&state, &[&pt.dev, &ext.dev, &pv.dev, &small.dev]);
    assert_eq!(code, Some(3), "{rows} {err}");
    for (dev, what) in [
        (&pt.dev, "holds GPT partition table"),
        (&ext.dev, "holds ext2/3/4 filesystem"),
        (&pv.dev, "holds LVM2 physical volume"),
        (&small.dev, "fewer than 2 segments of 33554432 bytes"),
    ] {
        let o = outcome_of(&rows, dev);
        assert!(o.starts_with("refused: ") && o.contains(what), "{dev}: {o}");
    }
    assert!(
        !state.join("keys/key.json").exists(),
        "nothing was accepted, nothing initialised"
    );

    // Held open O_EXCL by another process (here: this test): in use, even when forced.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _held = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&busy.dev)
            .unwrap();
        for force in [false, true] {
            let mut args = vec!["--json", "drives", "prepare", "--segment-size", "32MiB"];
            if force {
                args.push("--force");
            }
            args.push(&busy.dev);
            let o = barge(&state, &args);
            assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
            let rows = json_doc(&String::from_utf8_lossy(&o.stdout), "prepare")["prepare"].clone();
            let out = outcome_of(&rows, &busy.dev);
            assert!(
                out.contains("refused: in use") && out.contains("EBUSY"),
                "{out}"
            );
        }
    }

    // Named with --force, the partitioned and the formatted devices are prepared.
    let o = barge(
        &state,
        &[
            "--json",
            "drives",
            "prepare",
            "--segment-size",
            "32MiB",
            "--force",
            &pt.dev,
            "--force",
            &ext.dev,
            &pv.dev,
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let rows = json_doc(&String::from_utf8_lossy(&o.stdout), "prepare")["prepare"].clone();
    assert!(
        outcome_of(&rows, &pt.dev).starts_with("prepared as drive #"),
        "{rows}"
    );
    assert!(
        outcome_of(&rows, &ext.dev).starts_with("prepared as drive #"),
        "{rows}"
    );
    assert!(outcome_of(&rows, &pv.dev).contains("LVM2"), "{rows}");
    let _ = Command::new("pvremove")
        .args(["-q", "-ff", "-y", &pv.dev])
        .status();
}

/// `barge erase` erases only members of this node's set: a regular file is refused
/// (even forced past the drain check), a loop device of no set is refused until its
/// serial is typed with --confirm.
#[test]
fn erase_refuses_a_regular_file_and_a_drive_outside_the_set() {
    let t = tmp();
    let state = t.path().join("state");
    init_small(&state, &[]);
    let img = t.path().join("file.img");
    std::fs::write(&img, vec![0x5a; 1 << 20]).unwrap();
    let o = barge(&state, &["erase", "--force", img.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is a regular file, not a drive"),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0x5a));

    let backing = sparse_file(t.path(), "stranger.img", 8 << 20);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&backing)
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 4096], 0))
        .unwrap();
    let dev = Loop::attach(&backing);
    let o = barge(&state, &["erase", "--force", &dev.dev]);
    assert!(!o.status.success());
    let serial = format!("loop:{}", backing.display());
    assert!(
        stderr(&o).contains("is not a drive of this node's set")
            && stderr(&o).contains(&format!("--confirm {serial}")),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&backing).unwrap()[0], 0x5a, "untouched");
    let o = barge(
        &state,
        &["erase", "--force", "--confirm", &serial, &dev.dev],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    drop(dev);
    assert!(std::fs::read(&backing).unwrap().iter().all(|&b| b == 0));
}

//! Issue 27 ("Hostile names, hostile trees, hostile servers"), the directory items: a
//! destination tree with links in it, names like barge's temporary files, a source that
//! holds barge's own directories, links leading out of a source, and file modes. Each
//! test drives the real binary and checks that nothing outside the destination changed.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::*;

/// Everything under `dir` (links not followed): path → (kind, content or link target,
/// mode), to compare before and after.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, Vec<u8>, u32)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let (kind, data) = if md.is_symlink() {
                let to = std::fs::read_link(e.path()).unwrap();
                ("link", to.into_os_string().into_encoded_bytes())
            } else if md.is_file() {
                ("file", std::fs::read(e.path()).unwrap())
            } else {
                ("dir", vec![])
            };
            let mode = md.permissions().mode();
            (e.path().to_path_buf(), (kind.to_string(), data, mode))
        })
        .collect()
}

/// A scratch directory with `state`, `src`, `out` and a sibling `elsewhere` holding a
/// file barge never wrote.
struct Scene {
    t: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let s = Scene { t: tmp() };
        write(&s.elsewhere(), b"x", b"a file barge never wrote");
        write(&s.elsewhere(), b"keep/y", b"another one");
        s
    }
    fn state(&self) -> PathBuf {
        self.t.path().join("state")
    }
    fn src(&self) -> PathBuf {
        self.t.path().join("src")
    }
    fn out(&self) -> PathBuf {
        self.t.path().join("out")
    }
    fn elsewhere(&self) -> PathBuf {
        self.t.path().join("elsewhere")
    }
    fn migrate(&self, extra: &[&str]) -> (Option<i32>, String) {
        let (src, out) = (self.src(), self.out());
        let mut args = extra.to_vec();
        args.extend(["migrate", "--source", src.to_str().unwrap()]);
        args.extend(["--dest", out.to_str().unwrap()]);
        let o = barge(&self.state(), &args);
        let text = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
        (o.status.code(), text)
    }
}

/// Item 2 (a): with `out/a -> elsewhere`, migrating `a/x` is refused with the object and
/// the path named; nothing in `elsewhere` changes, and the other objects arrive.
#[test]
fn a_link_in_the_destination_tree_is_never_written_through() {
    let s = Scene::new();
    write(&s.src(), b"a/x", b"from the source");
    write(&s.src(), b"a/new", b"from the source too");
    write(&s.src(), b"b", b"elsewhere in the tree");
    std::fs::create_dir_all(s.out()).unwrap();
    symlink(s.elsewhere(), s.out().join("a")).unwrap();
    init_small(&s.state(), &[]);
    let before = snapshot(&s.elsewhere());
    let (code, out) = s.migrate(&[]);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("a/x") && out.contains("symbolic link"),
        "{out}"
    );
    assert!(
        out.contains(&s.out().join("a/x").display().to_string()),
        "{out}"
    );
    assert_eq!(snapshot(&s.elsewhere()), before, "{out}");
    assert_eq!(
        std::fs::read(s.out().join("b")).unwrap(),
        b"elsewhere in the tree"
    );
}

/// Item 2 (b): after a pass, `out/a` is replaced by a link to `elsewhere` (holding an
/// `x`) and `a/x` is deleted at the source: `sync --max-delete 100%` deletes nothing
/// through the link, and says why.
#[test]
fn a_sync_never_deletes_through_a_link_in_the_destination_tree() {
    let s = Scene::new();
    write(&s.src(), b"a/x", b"from the source");
    write(&s.src(), b"b", b"stays");
    init_small(&s.state(), &[]);
    let (code, out) = s.migrate(&[]);
    assert_eq!(code, Some(0), "{out}");
    std::fs::remove_dir_all(s.out().join("a")).unwrap();
    symlink(s.elsewhere(), s.out().join("a")).unwrap();
    std::fs::remove_file(s.src().join("a/x")).unwrap();
    let before = snapshot(&s.elsewhere());
    let o = bin()
        .arg("--state")
        .arg(s.state())
        .args(["sync", "--passes", "1", "--max-delete", "100%", "--source"])
        .arg(s.src())
        .arg("--dest")
        .arg(s.out())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    assert_eq!(snapshot(&s.elsewhere()), before, "{text}");
    assert!(
        text.contains("a/x") && text.contains("symbolic link"),
        "{text}"
    );
    assert!(s.out().join("b").exists());
}

/// Item 7: a file at the destination named like a temporary file and source objects
/// named like temporary files (barge's old form and its current one) survive the drain
/// that moves them and the cleanup of the next one, and the move ends DONE.
#[test]
fn names_like_temporary_files_are_never_cleaned_up() {
    let s = Scene::new();
    let foreign = s.out().join(".foo.barge-tmp.0000");
    write(&s.out(), b".foo.barge-tmp.0000", b"someone else's");
    let named = [
        "d/.bar.barge-tmp.1111",
        ".baz.barge-tmp.0123456789abcdef.0123456789abcdef",
        "plain",
    ];
    for (i, n) in named.iter().enumerate() {
        write(&s.src(), n.as_bytes(), &rand_bytes(i as u64, 5000));
    }
    init_small(&s.state(), &[]);
    let (code, out) = s.migrate(&[]);
    assert_eq!(code, Some(0), "{out}");
    // The next drain cleans up before it writes.
    let o = barge(&s.state(), &["drain", "--dest", s.out().to_str().unwrap()]);
    ok(&o);
    assert_eq!(std::fs::read(&foreign).unwrap(), b"someone else's");
    for n in named {
        assert!(s.out().join(n).exists(), "{n} was removed");
    }
    let o = barge(&s.state(), &["verify", "--dest", s.out().to_str().unwrap()]);
    ok(&o);
    let report = ok(&barge(&s.state(), &["report"]));
    assert!(
        report.contains("DONE") && !report.contains("NOT DONE"),
        "{report}"
    );
}

/// Item 8: a directory source holding the state directory (whose `keys/master.key`
/// would be copied out), a destination inside the source, and a destination holding
/// the state directory are refused before anything moves, naming both paths.
#[test]
fn a_source_or_destination_overlapping_barge_or_each_other_is_refused() {
    let s = Scene::new();
    write(&s.src(), b"f", b"data");
    let inner_state = s.src().join("state");
    init_small(&inner_state, &[]);
    let (src, out) = (s.src(), s.out());
    let o = barge(
        &inner_state,
        &[
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("state directory"), "{err}");
    assert!(err.contains(&inner_state.display().to_string()), "{err}");
    assert!(!s.out().join("state").exists());

    init_small(&s.state(), &[]);
    let inside = s.src().join("copy");
    let o = barge(
        &s.state(),
        &[
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            inside.to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&inside.display().to_string()) && err.contains("the source"),
        "{err}"
    );
    assert!(!inside.exists());

    // A destination holding the state directory: a source object could overwrite it.
    let boxed = s.t.path().join("box");
    init_small(&boxed.join("state"), &[]);
    let o = barge(
        &boxed.join("state"),
        &[
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            boxed.to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("contains the state directory"), "{err}");
    assert!(!boxed.join("f").exists());
}

/// Item 8: `--follow-symlinks` follows links that stay in the source and skips, unread
/// and reported, a link to a file outside it and a link to a directory outside it.
#[test]
fn follow_symlinks_never_leaves_the_source() {
    let s = Scene::new();
    write(&s.src(), b"real", b"inside");
    symlink(s.elsewhere().join("x"), s.src().join("leak")).unwrap();
    symlink(s.elsewhere().join("keep"), s.src().join("dirleak")).unwrap();
    std::fs::create_dir_all(s.src().join("d")).unwrap();
    symlink("../real", s.src().join("d/inside")).unwrap();
    symlink("../../elsewhere/x", s.src().join("d/up")).unwrap();
    init_small(&s.state(), &[]);
    let (code, out) = s.migrate(&["--follow-symlinks"]);
    assert_eq!(code, Some(0), "{out}");
    for name in ["leak", "dirleak", "d/up"] {
        assert!(!s.out().join(name).exists(), "{name}");
        let line = format!("skipped: {name} (symbolic link leaving the source)");
        assert!(out.contains(&line), "{out}");
    }
    assert_eq!(std::fs::read(s.out().join("d/inside")).unwrap(), b"inside");
}

/// Item 8: a file keeps its source file's permission bits at a directory destination.
#[test]
fn a_source_file_mode_is_kept() {
    let s = Scene::new();
    let modes = [("private", 0o600), ("script", 0o750), ("shared", 0o644)];
    for (name, mode) in modes {
        let p = write(&s.src(), name.as_bytes(), b"#!/bin/sh\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    init_small(&s.state(), &[]);
    let (code, out) = s.migrate(&[]);
    assert_eq!(code, Some(0), "{out}");
    for (name, mode) in modes {
        let md = std::fs::metadata(s.out().join(name)).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, mode, "{name}");
    }
}

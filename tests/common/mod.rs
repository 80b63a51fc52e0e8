//! Helpers shared by the integration tests: run the real `barge` binary against real
//! files, RocksDB and io_uring, in directories under cargo's target tmpdir (a disk
//! filesystem, so O_DIRECT is exercised).

#![allow(dead_code)]

pub mod gateway;
pub mod proxy;
pub mod servers;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("barge-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_barge"));
    c.env_remove("BARGE_CRASH_AT")
        .env_remove("BARGE_IO_ENGINE")
        .env_remove("BARGE_STATE")
        .env_remove("BARGE_FLEET_KEY")
        .env_remove("BARGE_FLEET_KEY_FILE");
    c
}

/// Runs barge with `--state state` and the given arguments.
pub fn barge(state: &Path, args: &[&str]) -> Output {
    bin()
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .expect("run barge")
}

pub fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "barge failed ({:?})\nstdout:\n{out}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `barge --json migrate --source src --dest out`, which must succeed; returns stdout.
pub fn migrate_json(state: &Path, src: &Path, out: &Path) -> String {
    ok(&barge(
        state,
        &[
            "--json",
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    ))
}

/// Small chunk and segment sizes so tests cross every boundary with little data.
pub const SMALL: &[&str] = &[
    "--chunk-min",
    "16KiB",
    "--chunk-avg",
    "64KiB",
    "--chunk-max",
    "256KiB",
    "--segment-size",
    "2MiB",
    "--block-size",
    "64KiB",
    "--commit-bytes",
    "512KiB",
];

pub fn init_small(state: &Path, extra: &[&str]) {
    let mut args = vec!["init"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    ok(&barge(state, &args));
}

/// Deterministic pseudo-random bytes.
pub fn rand_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut f = barge::sample::Filler::new(seed);
    f.bytes(n)
}

pub fn write(root: &Path, rel: &[u8], data: &[u8]) -> PathBuf {
    let p = root.join(OsStr::from_bytes(rel));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    p
}

/// Parses the JSON document a `--json` stage printed that has `key` at the top.
pub fn json_doc(out: &str, key: &str) -> serde_json::Value {
    for line in out.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && v.get(key).is_some()
        {
            return v;
        }
    }
    panic!("no JSON document with {key:?} in:\n{out}");
}

/// `diff -r` must find the trees identical.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let o = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .expect("run diff");
    assert!(
        o.status.success(),
        "diff -r {} {}:\n{}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// All regular files under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

/// True if `needle` occurs anywhere in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The swift CLI (python3-swiftclient) logged in to a test server from its env.sh.
pub fn swift_cli(env: &servers::Env) -> Command {
    let mut c = Command::new("/usr/bin/swift");
    c.args([
        "-A",
        &env["ST_AUTH"],
        "-U",
        &env["ST_USER"],
        "-K",
        &env["ST_KEY"],
    ]);
    c
}

/// Downloads every object of `container` with the swift CLI and compares it with the
/// file of the same name under `src`; also checks nothing else is there.
pub fn assert_container_equals_tree(env: &servers::Env, container: &str, src: &Path) {
    let d = tmp();
    let o = swift_cli(env)
        .args(["download", container, "-D"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "swift download: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same_tree(src, d.path());
}

/// A sparse file of `bytes` (a drive image).
pub fn sparse_file(dir: &Path, name: &str, bytes: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(bytes).unwrap();
    p
}

/// A loop device over a file (the tests run as root); detached on drop.
pub struct Loop {
    pub dev: String,
}

impl Loop {
    pub fn attach(file: &Path) -> Loop {
        let o = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .expect("run losetup (the test needs root and util-linux)");
        assert!(
            o.status.success(),
            "losetup {}: {}",
            file.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        Loop {
            dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// Runs barge with a deadline; returns its exit code (None: killed by a signal).
pub fn run_with_deadline(c: &mut Command, limit: std::time::Duration) -> (Option<i32>, String) {
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn barge");
    let t = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let o = child.wait_with_output().expect("output");
            return (st.code(), String::from_utf8_lossy(&o.stderr).into_owned());
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("barge ran past {limit:?}: {c:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The cutover certificate's digest of a tree, computed here from the files themselves:
/// one line per file in ascending order of its relative path's bytes, "hex(path) size
/// hex(BLAKE3 of the content)\n", and BLAKE3 over the lines.
pub fn tree_digest(root: &Path) -> String {
    let mut lines: Vec<(Vec<u8>, String)> = files_under(root)
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let data = std::fs::read(&p).unwrap();
            let line = format!(
                "{} {} {}\n",
                hex::encode(&rel),
                data.len(),
                blake3::hash(&data).to_hex()
            );
            (rel, line)
        })
        .collect();
    lines.sort();
    let mut h = blake3::Hasher::new();
    for (_, line) in lines {
        h.update(line.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

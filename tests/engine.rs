//! End-to-end tests of the core engine with the real binary, real RocksDB, real io_uring
//! on real files: round trips, dedup, sealing, bad input, crash recovery.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::*;
use serde_json::Value;

/// A tree with the edge cases the issue names.
fn edge_tree(root: &Path) {
    write(root, b"empty", b"");
    write(root, b"one", b"1");
    // Exactly the chunk minimum, maximum, and one past the maximum.
    write(root, b"bounds/min", &rand_bytes(1, 16 << 10));
    write(root, b"bounds/max", &rand_bytes(2, 256 << 10));
    write(
        root,
        b"bounds/max-plus-one",
        &rand_bytes(3, (256 << 10) + 1),
    );
    // Bigger than a 2 MiB segment: spans several segments.
    write(root, b"big/five-mib.bin", &rand_bytes(4, 5 << 20));
    write(
        root,
        b"names/with space and \xe2\x9c\x93 unicode",
        b"unicode name",
    );
    write(root, b"names/not-utf8-\xff\xfe", b"raw bytes in the name");
    write(root, b"names/%41?#+", b"reserved characters");
    write(root, b"deep/a/b/c/d/e/f/leaf", &rand_bytes(5, 70_000));
    // Duplicates and a shifted copy.
    let base = rand_bytes(6, 900_000);
    write(root, b"dup/a", &base);
    write(root, b"dup/b", &base);
    let mut shifted = b"a few bytes in front".to_vec();
    shifted.extend_from_slice(&base);
    write(root, b"dup/shifted", &shifted);
}

#[test]
fn round_trip_of_edge_cases_is_byte_identical() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    edge_tree(&src);
    init_small(
        &state,
        &[
            "--staging",
            t.path().join("d1").to_str().unwrap(),
            "--staging",
            t.path().join("d2").to_str().unwrap(),
        ],
    );
    let text = migrate_json(&state, &src, &out);
    assert_same_tree(&src, &out);
    let ingest = json_doc(&text, "ingest");
    assert_eq!(ingest["ingest"]["failed"], 0);
    assert!(
        ingest["ingest"]["chunks_dedup"].as_u64().unwrap() > 0,
        "duplicates were deduplicated"
    );
    assert!(
        ingest["ingest"]["io_engine"]
            .as_str()
            .unwrap()
            .contains("io_uring"),
        "{text}"
    );
    let report = json_doc(&text, "report");
    assert_eq!(report["report"]["done"], true);
    assert!(report["report"]["dedup_ratio"].as_f64().unwrap() > 1.2);
    // dup/b (or dup/a) was copied at the destination from its twin, not rebuilt.
    assert_eq!(json_doc(&text, "drain")["drain"]["copied"], 1, "{text}");
    // Both drives were used (striping), and the big file crossed segments.
    let d1 = files_under(&t.path().join("d1")).len();
    let d2 = files_under(&t.path().join("d2")).len();
    assert!(d1 >= 1 && d2 >= 1, "segments on both drives: {d1} {d2}");
    assert!(
        d1 + d2 >= 3,
        "5 MiB over 2 MiB segments needs several segments"
    );
    // Full verify downloads and hashes everything.
    let v = ok(&barge(
        &state,
        &[
            "--json",
            "verify",
            "--full",
            "--dest",
            out.to_str().unwrap(),
        ],
    ));
    let v = json_doc(&v, "verify");
    assert_eq!(v["verify"]["matched"], 13);
    assert_eq!(v["verify"]["missing"].as_array().unwrap().len(), 0);
}

#[test]
fn staging_holds_no_plaintext_and_no_names() {
    let t = tmp();
    let (state, src) = (t.path().join("state"), t.path().join("src"));
    let marker = b"PLAINTEXT-MARKER-7f3a";
    // The marker in a tiny file, at chunk starts, and spread through a large file.
    write(&src, b"small-secret-file-name.txt", marker);
    let mut big = rand_bytes(9, 1 << 20);
    for i in (0..big.len() - marker.len()).step_by(50_000) {
        big[i..i + marker.len()].copy_from_slice(marker);
    }
    write(&src, b"customer-ledger-2026.csv", &big);
    write(&src, b"zeros", &vec![0u8; 300_000]);
    init_small(&state, &[]);
    ok(&barge(
        &state,
        &["ingest", "--source", src.to_str().unwrap()],
    ));
    let staged = files_under(&state.join("staging"));
    assert!(!staged.is_empty());
    let mut total = 0;
    for f in staged {
        let bytes = std::fs::read(&f).unwrap();
        total += bytes.len();
        assert!(
            !contains(&bytes, marker),
            "plaintext marker found in {}",
            f.display()
        );
        assert!(
            !contains(&bytes, b"customer-ledger"),
            "object key found in {}",
            f.display()
        );
        assert!(
            !contains(&bytes, b"small-secret-file-name"),
            "object key found in {}",
            f.display()
        );
        // All-zero plaintext must not leave long zero runs in record bodies either: the
        // only zero runs allowed are header/footer padding, far less than 300 KB.
        let longest_zero_run = bytes.split(|&b| b != 0).map(<[u8]>::len).max().unwrap_or(0);
        assert!(
            longest_zero_run < 64 << 10,
            "suspicious zero run of {longest_zero_run} in {}",
            f.display()
        );
    }
    assert!(total > 1 << 20);
}

/// A migrate's drain takes the small chunks its ingest staged moments ago from memory;
/// a drain in a later process reads every chunk back from staging. Both trees come out
/// equal.
#[test]
fn a_migrate_drains_just_staged_chunks_from_memory_and_a_later_drain_from_staging() {
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..200u64 {
        write(
            &src,
            format!("f{i:03}").as_bytes(),
            &rand_bytes(i, 1_000 + (i as usize * 37) % 8_000),
        );
    }
    let (state, out) = (t.path().join("state"), t.path().join("out"));
    init_small(&state, &[]);
    let text = migrate_json(&state, &src, &out);
    assert_same_tree(&src, &out);
    let d = &json_doc(&text, "drain")["drain"];
    assert!(d["chunks_from_memory"].as_u64().unwrap() > 0, "{text}");

    let (state, out) = (t.path().join("state2"), t.path().join("out2"));
    init_small(&state, &[]);
    ok(&barge(
        &state,
        &["ingest", "--source", src.to_str().unwrap()],
    ));
    let text = ok(&barge(
        &state,
        &["--json", "drain", "--dest", out.to_str().unwrap()],
    ));
    assert_same_tree(&src, &out);
    let d = &json_doc(&text, "drain")["drain"];
    assert_eq!(d["chunks_from_memory"], 0, "{text}");
    assert!(d["chunks_from_staging"].as_u64().unwrap() >= 200, "{text}");
}

#[test]
fn second_migrate_stages_zero_new_chunks() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    edge_tree(&src);
    init_small(&state, &[]);
    ok(&barge(
        &state,
        &[
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    ));
    let again = migrate_json(&state, &src, &out);
    let i = json_doc(&again, "ingest");
    assert_eq!(i["ingest"]["chunks_new"], 0, "{again}");
    assert_eq!(i["ingest"]["staged"], 0);
    assert_eq!(i["ingest"]["unchanged"], 13);
    // The same content again as new files (new inodes and mtimes): every object is
    // staged again, and no new chunk is written.
    let copy = t.path().join("copy");
    let o = std::process::Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(o.status.success());
    let third = ok(&barge(
        &state,
        &["--json", "ingest", "--source", copy.to_str().unwrap()],
    ));
    let i = json_doc(&third, "ingest");
    assert_eq!(i["ingest"]["staged"], 13);
    assert_eq!(i["ingest"]["chunks_new"], 0, "{third}");
    assert!(i["ingest"]["chunks_dedup"].as_u64().unwrap() > 20);
}

/// Hash of every file under the catalog directory: content, size and mtime.
fn catalog_fingerprint(state: &Path) -> Vec<(String, u64, std::time::SystemTime, Vec<u8>)> {
    let mut v: Vec<_> = files_under(&state.join("catalog"))
        .into_iter()
        .map(|p| {
            let md = std::fs::metadata(&p).unwrap();
            (
                p.display().to_string(),
                md.len(),
                md.modified().unwrap(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn wrong_key_is_refused_without_touching_the_catalog() {
    let t = tmp();
    let (state, src) = (t.path().join("state"), t.path().join("src"));
    write(&src, b"f", b"some data");
    let o = bin()
        .args([
            "--state",
            state.to_str().unwrap(),
            "--passphrase-env",
            "TEST_PASS",
            "init",
        ])
        .args(SMALL)
        .env("TEST_PASS", "correct horse battery staple")
        .output()
        .unwrap();
    ok(&o);
    assert!(
        !state.join("keys/master.key").exists(),
        "passphrase keys are not stored"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.join("keys/key.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "key.json is private");
    let before = catalog_fingerprint(&state);
    let o = bin()
        .args([
            "--state",
            state.to_str().unwrap(),
            "--passphrase-env",
            "TEST_PASS",
            "ingest",
            "--source",
            src.to_str().unwrap(),
        ])
        .env("TEST_PASS", "wrong horse")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("wrong key") && err.contains("$TEST_PASS"),
        "{err}"
    );
    assert!(
        !err.contains("wrong horse"),
        "the passphrase is never printed"
    );
    assert_eq!(before, catalog_fingerprint(&state), "catalog untouched");
    // A key file of the wrong size and one with the wrong key are refused too.
    let o = barge(&state, &["--key-file", "/dev/null", "status"]);
    assert!(
        stderr(&o).contains("--key-file") && stderr(&o).contains("passphrase"),
        "{}",
        stderr(&o)
    );
    let o = bin()
        .args([
            "--state",
            state.to_str().unwrap(),
            "--passphrase-env",
            "TEST_PASS",
            "ingest",
            "--source",
            src.to_str().unwrap(),
        ])
        .env("TEST_PASS", "correct horse battery staple")
        .output()
        .unwrap();
    ok(&o);
    let state = t.path().join("state2");
    init_small(&state, &[]);
    let before = catalog_fingerprint(&state);
    let bad = t.path().join("bad.key");
    std::fs::write(&bad, [7u8; 32]).unwrap();
    let o = barge(&state, &["--key-file", bad.to_str().unwrap(), "status"]);
    assert_eq!(o.status.code(), Some(1));
    std::fs::write(&bad, [7u8; 31]).unwrap();
    let o = barge(&state, &["--key-file", bad.to_str().unwrap(), "status"]);
    assert!(stderr(&o).contains("exactly 32"), "{}", stderr(&o));
    assert_eq!(before, catalog_fingerprint(&state), "catalog untouched");
    ok(&barge(
        &state,
        &["ingest", "--source", src.to_str().unwrap()],
    ));
}

#[test]
fn bad_input_is_named() {
    let t = tmp();
    let state = t.path().join("state");
    init_small(&state, &[]);
    let o = barge(
        &state,
        &[
            "ingest",
            "--source",
            t.path().join("nope").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("nope") && stderr(&o).contains("cannot open source"),
        "{}",
        stderr(&o)
    );
    let o = barge(&state, &["ingest", "--source", "gopher://x/y"]);
    assert!(
        stderr(&o).contains("--source") && stderr(&o).contains("gopher"),
        "{}",
        stderr(&o)
    );
    let o = barge(&t.path().join("never-initialised"), &["status"]);
    assert!(stderr(&o).contains("barge init"), "{}", stderr(&o));
    let o = barge(&t.path().join("s2"), &["init", "--segment-size", "1MiB"]);
    assert!(stderr(&o).contains("--segment-size"), "{}", stderr(&o));
    let o = barge(&state, &["init"]);
    assert!(stderr(&o).contains("already initialised"), "{}", stderr(&o));
    // Issue 18: --containers only shards a Swift destination; elsewhere it is refused.
    let out = t.path().join("out");
    let o = barge(
        &state,
        &[
            "--containers",
            "hash:4",
            "drain",
            "--dest",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--containers") && stderr(&o).contains("swift://"),
        "{}",
        stderr(&o)
    );
}

/// Issue 27: a name with terminal escapes and line breaks moves byte for byte, but what
/// barge prints and logs about it shows the escapes instead of obeying them.
#[test]
fn names_with_terminal_escapes_are_shown_escaped_never_raw() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    init_small(&state, &[]);
    let name: &[u8] = b"esc-\x1b]0;owned\x07-\x1b[2J-\nINFO forged line-\r\xc2\x9b-\xe2\x80\xae";
    write(&src, name, b"hostile name");
    write(&src, b"plain", b"plain");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&barge(
        &state,
        &["migrate", "--source", &s(&src), "--dest", &s(&out)],
    ));
    assert_same_tree(&src, &out);
    // The copy goes missing: verify names it, and debug logs mention it.
    std::fs::remove_file(out.join(std::ffi::OsStr::from_bytes(name))).unwrap();
    let o = bin()
        .args(["--state", &s(&state), "verify", "--dest", &s(&out)])
        .env("BARGE_LOG", "debug")
        .output()
        .unwrap();
    let (stdout, stderr) = (o.stdout, o.stderr);
    let shown = String::from_utf8_lossy(&stdout);
    assert!(
        shown.contains("esc-\\x1b]0;owned\\x07-\\x1b[2J-\\nINFO forged line-\\r\\u{9b}-\\u{202e}"),
        "{shown}"
    );
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        for raw in [
            &b"\x1b"[..],
            b"\x07",
            b"\xc2\x9b",
            b"\xe2\x80\xae",
            b"\r",
            b"\nINFO forged",
        ] {
            assert!(
                !contains(text, raw),
                "{what} holds raw {raw:?}: {}",
                String::from_utf8_lossy(text)
            );
        }
    }
}

#[test]
fn a_file_changing_while_read_fails_alone_and_is_retried() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    write(&src, b"stable", &rand_bytes(1, 300_000));
    let growing = write(&src, b"growing.log", &rand_bytes(2, 4 << 20));
    init_small(&state, &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let stop = stop.clone();
        let p = growing.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"another log line\n").unwrap();
            }
        })
    };
    let o = barge(
        &state,
        &[
            "ingest",
            "--concurrency",
            "1",
            "--source",
            src.to_str().unwrap(),
        ],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    appender.join().unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("growing.log") && text.contains("changed while read"),
        "{text}"
    );
    let r = barge(&state, &["--json", "report"]);
    assert_eq!(r.status.code(), Some(3), "report exits 3 when NOT DONE");
    let r = json_doc(&String::from_utf8_lossy(&r.stdout), "report");
    assert_eq!(r["report"]["failed"], 1);
    assert_eq!(r["report"]["done"], false);
    // Once the file is quiet, the next run picks it up; the stable file is not redone.
    let again = migrate_json(&state, &src, &out);
    let i = json_doc(&again, "ingest");
    assert_eq!(i["ingest"]["staged"], 1);
    assert_eq!(i["ingest"]["unchanged"], 1);
    assert_same_tree(&src, &out);
    let csv = t.path().join("f.csv");
    let o = barge(&state, &["report", "--csv", csv.to_str().unwrap()]);
    ok(&o);
    assert_eq!(std::fs::read_to_string(csv).unwrap(), "key,stage,reason\n");
}

#[test]
fn pwrite_fallback_works_and_is_reported() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    edge_tree(&src);
    init_small(&state, &[]);
    let o = bin()
        .args([
            "--state",
            state.to_str().unwrap(),
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ])
        .env("BARGE_IO_ENGINE", "pwrite")
        .output()
        .unwrap();
    ok(&o);
    assert_same_tree(&src, &out);
    let s = ok(&barge(&state, &["status"]));
    assert!(
        s.contains("fallback") && s.contains("BARGE_IO_ENGINE=pwrite"),
        "{s}"
    );
}

#[test]
fn a_flipped_byte_in_staging_never_reaches_the_destination() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    write(&src, b"victim", &rand_bytes(1, 100_000));
    init_small(&state, &[]);
    ok(&barge(
        &state,
        &["ingest", "--source", src.to_str().unwrap()],
    ));
    let seg = files_under(&state.join("staging")).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[4096 + 48 + 5000] ^= 0x20; // inside the first record's ciphertext
    std::fs::write(&seg, bytes).unwrap();
    let o = barge(&state, &["drain", "--dest", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("victim") && text.contains("failed authentication"),
        "{text}"
    );
    assert!(
        !out.join("victim").exists(),
        "nothing corrupt at the destination"
    );
    assert!(
        files_under(&out).is_empty(),
        "no temporary file left behind"
    );
}

#[test]
fn crashes_during_ingest_and_drain_lose_nothing() {
    // SIGKILL at staging and catalog steps, re-run after each; end byte-identical, no
    // object recorded as uploaded twice.
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    edge_tree(&src);
    for i in 0..12u64 {
        write(
            &src,
            format!("many/{i}").as_bytes(),
            &rand_bytes(100 + i, 40_000 + i as usize * 7_000),
        );
    }
    init_small(&state, &[]);
    let points = [
        ("staging.before_append", 3),
        ("staging.after_sync", 2),
        ("staging.after_commit", 4),
        ("staging.before_seal", 1),
        ("ingest.after_object", 5),
        ("drain.after_put", 3),
        ("drain.after_mark", 6),
    ];
    let mut crashed = 0;
    for (point, n) in points {
        let o = bin()
            .args([
                "--state",
                state.to_str().unwrap(),
                "migrate",
                "--concurrency",
                "2",
                "--source",
                src.to_str().unwrap(),
                "--dest",
                out.to_str().unwrap(),
            ])
            .env("BARGE_CRASH_AT", format!("{point}:{n}"))
            .output()
            .unwrap();
        if o.status.code().is_none() {
            crashed += 1;
        }
    }
    assert!(crashed >= 5, "only {crashed} crash points were reached");
    let text = migrate_json(&state, &src, &out);
    assert_same_tree(&src, &out);
    assert_eq!(json_doc(&text, "report")["report"]["done"], true);
    assert_eq!(json_doc(&text, "report")["report"]["segments_open"], 0);
    assert_eq!(json_doc(&text, "report")["report"]["uploaded_twice"], 0);
    let v = ok(&barge(
        &state,
        &[
            "--json",
            "verify",
            "--full",
            "--dest",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(json_doc(&v, "verify")["verify"]["matched"], 25);
}

#[test]
fn a_crash_before_a_directory_group_sync_loses_nothing() {
    // Files drained into a directory are made durable a batch at a time (one syncfs)
    // before any of them is marked drained. SIGKILL right before the second sync: what
    // was written but not synced is not marked, so the next drain writes it again; the
    // end is byte-identical, DONE, nothing counted as uploaded twice.
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    for i in 0..200u64 {
        let len = 1_000 + (i as usize * 97) % 15_000;
        write(
            &src,
            format!("small/{i:03}").as_bytes(),
            &rand_bytes(500 + i, len),
        );
    }
    init_small(&state, &[]);
    ok(&barge(
        &state,
        &["ingest", "--source", src.to_str().unwrap()],
    ));
    let o = bin()
        .args(["--state", state.to_str().unwrap(), "--json", "drain"])
        .args(["--dest", out.to_str().unwrap()])
        .env("BARGE_CRASH_AT", "drain.before_sync:2")
        .output()
        .unwrap();
    assert!(o.status.code().is_none(), "the crash point was not reached");
    // NOT DONE (exit 3) after the crash: the report is read from its output.
    let r = barge(&state, &["--json", "report"]);
    let r = String::from_utf8_lossy(&r.stdout);
    let drained = json_doc(&r, "report")["report"]["drained"]
        .as_u64()
        .unwrap();
    assert!(
        drained < 200,
        "{drained} of 200 marked drained before the crash"
    );
    let d = ok(&barge(
        &state,
        &["--json", "drain", "--dest", out.to_str().unwrap()],
    ));
    assert!(json_doc(&d, "drain")["drain"]["drained"].as_u64().unwrap() > 0);
    assert_same_tree(&src, &out);
    // DONE needs a verify after the last drain.
    ok(&barge(&state, &["verify", "--dest", out.to_str().unwrap()]));
    let r = ok(&barge(&state, &["--json", "report"]));
    assert_eq!(json_doc(&r, "report")["report"]["done"], true);
    assert_eq!(json_doc(&r, "report")["report"]["uploaded_twice"], 0);
}

#[test]
fn a_destination_down_with_more_objects_than_the_queue_ends_the_drain() {
    // More objects than the drain queue holds, and a destination nobody answers at: once
    // it is taken for down the workers stop, and the scanner blocked on the full queue
    // must stop too (it used to wait forever). Nothing is marked failed: the endpoint,
    // not the objects, is at fault.
    let t = tmp();
    let (state, src) = (t.path().join("state"), t.path().join("src"));
    // The queue holds 256 and the 64 workers one each: 600 leave the scanner blocked.
    for i in 0..600u64 {
        write(
            &src,
            format!("q/{i:03}").as_bytes(),
            &rand_bytes(900 + i, 1_500),
        );
    }
    init_small(&state, &[]);
    ok(&barge(
        &state,
        &["ingest", "--source", src.to_str().unwrap()],
    ));
    // A port that refuses connections: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut c = bin();
    c.args([
        "--state",
        state.to_str().unwrap(),
        "--quiet",
        "--down-after",
        "1",
    ])
    .args([
        "--dest-endpoint",
        &endpoint,
        "drain",
        "--dest",
        "s3://nobody",
    ])
    .env("AWS_ACCESS_KEY_ID", "k")
    .env("AWS_SECRET_ACCESS_KEY", "s")
    .env("AWS_REGION", "us-east-1")
    .env_remove("AWS_ENDPOINT_URL");
    // It used to wait forever: the deadline turns that into a failure.
    let (code, _) = run_with_deadline(&mut c, std::time::Duration::from_secs(120));
    assert_eq!(code, Some(3), "NOT DONE");
    let r = barge(&state, &["--json", "report"]);
    let r = String::from_utf8_lossy(&r.stdout);
    let rep = &json_doc(&r, "report")["report"];
    assert_eq!(rep["staged"], 600, "{r}");
    assert_eq!(rep["failed"], 0, "{r}");
}

#[test]
fn full_staging_stops_cleanly_and_resumes_on_another_drive() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    for i in 0..6u64 {
        write(
            &src,
            format!("obj-{i}").as_bytes(),
            &rand_bytes(i + 1, 1_500_000),
        );
    }
    // A 5 MiB tmpfs holds two 2 MiB segments: the ingest must stop cleanly, not crash.
    let small = t.path().join("small-drive");
    std::fs::create_dir_all(&small).unwrap();
    let m = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=5M", "tmpfs"])
        .arg(&small)
        .output()
        .unwrap();
    if !m.status.success() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run this test as root: {}",
            String::from_utf8_lossy(&m.stderr)
        );
        eprintln!("skipping: cannot mount tmpfs (not root?)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    init_small(&state, &["--staging", small.to_str().unwrap()]);
    let o = barge(
        &state,
        &[
            "--json",
            "ingest",
            "--concurrency",
            "1",
            "--source",
            src.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let i = json_doc(&String::from_utf8_lossy(&o.stdout), "ingest");
    let why = i["ingest"]["stopped_early"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("full") && why.contains("small-drive"), "{i}");
    let staged_first = i["ingest"]["staged"].as_u64().unwrap();
    assert!((1..6).contains(&staged_first), "{i}");
    // Add a drive: the re-run stages only what is missing, then everything drains.
    let big = t.path().join("big-drive");
    let o = barge(
        &state,
        &[
            "--json",
            "--staging",
            big.to_str().unwrap(),
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    );
    let text = ok(&o);
    let i = json_doc(&text, "ingest");
    assert_eq!(i["ingest"]["unchanged"].as_u64().unwrap(), staged_first);
    assert_same_tree(&src, &out);
}

#[test]
fn drives_lists_the_os_disk_and_the_staging_drive_on_it() {
    let t = tmp();
    let staging = t.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let out = ok(&bin()
        .args(["--state"])
        .arg(t.path().join("no-state"))
        .arg("--staging")
        .arg(&staging)
        .args(["--json", "drives"])
        .output()
        .unwrap());
    let doc = json_doc(&out, "drives");
    let rows = doc["drives"].as_array().expect("rows");
    // Independently: the device of "/" as findmnt (util-linux) reports it.
    let f = std::process::Command::new("findmnt")
        .args(["-n", "-o", "MAJ:MIN", "/"])
        .output()
        .unwrap();
    let root = String::from_utf8_lossy(&f.stdout).trim().to_string();
    let os = rows
        .iter()
        .find(|r| {
            r["dev"] == root.as_str()
                || r["partitions"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == root.as_str()))
        })
        .unwrap_or_else(|| panic!("no listed device holds / ({root}): {out}"));
    let role = os["role"].as_str().unwrap();
    assert!(role.starts_with("os"), "{out}");
    // The staging directory lives on the root filesystem here.
    assert!(role.contains(staging.to_str().unwrap()), "{out}");
    assert!(
        os["mount_points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "/")
    );
}

/// Issue 15: `--resume-listing-only` after a complete listing does not list the source
/// again (a file added since is not seen), and the next ingest without it does.
#[test]
fn resume_listing_only_does_not_list_a_source_whose_listing_completed() {
    let t = tmp();
    let (state, src) = (t.path().join("state"), t.path().join("src"));
    for i in 0..20u64 {
        write(&src, format!("f{i}").as_bytes(), &rand_bytes(i, 5000));
    }
    init_small(&state, &[]);
    let s = src.to_str().unwrap();
    let first = ok(&barge(&state, &["--json", "ingest", "--source", s]));
    assert_eq!(
        json_doc(&first, "ingest")["ingest"]["staged"],
        20,
        "{first}"
    );
    write(&src, b"added-later", b"found by the next full listing");
    let only = ok(&barge(
        &state,
        &["--json", "ingest", "--source", s, "--resume-listing-only"],
    ));
    let i = &json_doc(&only, "ingest")["ingest"];
    assert_eq!(
        (i["listed"].as_u64(), i["staged"].as_u64()),
        (Some(0), Some(0)),
        "{only}"
    );
    let full = ok(&barge(&state, &["--json", "ingest", "--source", s]));
    let i = &json_doc(&full, "ingest")["ingest"];
    assert_eq!(
        (i["listed"].as_u64(), i["staged"].as_u64()),
        (Some(21), Some(1)),
        "{full}"
    );
}

/// Issue 18: a state directory's drained objects belong to their destination: a second
/// migrate of the same source into another directory is refused, naming the first, and
/// never prints a DONE verdict.
#[test]
fn a_drain_to_another_destination_is_refused_naming_the_first() {
    let t = tmp();
    let (state, src) = (t.path().join("state"), t.path().join("src"));
    for i in 0..5u64 {
        write(&src, format!("f{i}").as_bytes(), &rand_bytes(i, 2000));
    }
    init_small(&state, &[]);
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let s = src.to_str().unwrap();
    ok(&barge(
        &state,
        &["migrate", "--source", s, "--dest", a.to_str().unwrap()],
    ));
    let o = barge(
        &state,
        &["migrate", "--source", s, "--dest", b.to_str().unwrap()],
    );
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("--dest") && out.contains(a.to_str().unwrap()),
        "{out}"
    );
    assert!(!out.contains("DONE:"), "{out}");
    assert!(!b.join("f0").exists());
}

/// Issue 18: a directory source counts and names what it skips (a symbolic link, a
/// socket, a FIFO); with --follow-symlinks the link's target is moved under the link's
/// name.
#[test]
fn a_directory_source_names_what_it_skips_and_can_follow_links() {
    let t = tmp();
    let (state, src) = (t.path().join("state"), t.path().join("src"));
    write(&src, b"real", b"the file a link points at");
    std::os::unix::fs::symlink(src.join("real"), src.join("link")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(src.join("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    init_small(&state, &[]);
    let a = t.path().join("a");
    let s = src.to_str().unwrap();
    let o = barge(
        &state,
        &["migrate", "--source", s, "--dest", a.to_str().unwrap()],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("skipped: 3 entries"), "{out}");
    for (name, kind) in [
        ("link", "symbolic link"),
        ("sock", "socket"),
        ("fifo", "FIFO"),
    ] {
        assert!(out.contains(&format!("skipped: {name} ({kind})")), "{out}");
    }
    assert!(a.join("real").exists() && !a.join("link").exists());
    // Issue 27: `report` itself names what the last listing left out, and its DONE
    // says how many, in text and JSON.
    let r = ok(&barge(&state, &["report"]));
    assert!(
        r.contains("verdict     DONE, with 3 entries left out (listed below)"),
        "{r}"
    );
    let j = ok(&barge(&state, &["--json", "report"]));
    let j = &json_doc(&j, "report")["report"];
    assert_eq!(j["left_out"], 3, "{j}");
    assert!(
        j["verdict"]
            .as_str()
            .unwrap()
            .starts_with("DONE, with 3 entries left out"),
        "{j}"
    );
    for (name, kind) in [
        ("link", "symbolic link"),
        ("sock", "socket"),
        ("fifo", "FIFO"),
    ] {
        assert!(r.contains(&format!("left out    {name}: {kind}\n")), "{r}");
        let named = j["left_out_entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["key"] == name && e["why"] == kind);
        assert!(named, "{j}");
    }
    // An ingest that takes the catalog's objects instead of a listing keeps the count.
    ok(&barge(
        &state,
        &["ingest", "--source", s, "--resume-listing-only"],
    ));
    // (NOT DONE until a verify follows that ingest, and still naming them.)
    let j = barge(&state, &["--json", "report"]);
    let j = String::from_utf8_lossy(&j.stdout);
    assert_eq!(json_doc(&j, "report")["report"]["left_out"], 3, "{j}");

    let state2 = t.path().join("state2");
    init_small(&state2, &[]);
    let b = t.path().join("b");
    let o = barge(
        &state2,
        &[
            "--follow-symlinks",
            "migrate",
            "--source",
            s,
            "--dest",
            b.to_str().unwrap(),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("skipped: 2 entries"), "{out}");
    assert_eq!(
        std::fs::read(b.join("link")).unwrap(),
        b"the file a link points at"
    );
}

/// One `barge --json sync --passes 1` of `src` into `out` with `extra` options: its exit
/// code and pass document ({"pass", "record", "deletions"}).
fn sync_pass(
    state: &Path,
    src: &Path,
    out: &Path,
    extra: &[&str],
) -> (Option<i32>, serde_json::Value) {
    let o = bin()
        .arg("--state")
        .arg(state)
        .args(["--json", "sync", "--passes", "1", "--source"])
        .arg(src)
        .arg("--dest")
        .arg(out)
        .args(extra)
        .output()
        .expect("run barge");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.code().is_some_and(|c| c == 0 || c == 3),
        "sync failed ({:?}): {text}{}",
        o.status,
        stderr(&o)
    );
    (o.status.code(), json_doc(&text, "pass"))
}

fn counts(p: &serde_json::Value) -> [u64; 4] {
    let r = &p["record"];
    ["new", "changed", "deleted", "unchanged"].map(|k| r[k].as_u64().unwrap())
}

#[test]
fn sync_passes_follow_a_changing_tree_and_cutover_certifies_it() {
    // Issue 16: pass 1 moves the tree; at the source files are then overwritten (same
    // size other content, and another size), deleted, added and one renamed; pass 2
    // makes the destination equal again and its record has the counts; cutover ends
    // DONE with a digest equal to one computed here from the files.
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    for i in 0..30u64 {
        let len = 3_000 + i as usize * 500;
        write(&src, format!("d/{i:02}").as_bytes(), &rand_bytes(i, len));
    }
    init_small(&state, &[]);
    let (code, p1) = sync_pass(&state, &src, &out, &[]);
    assert_eq!(code, Some(0), "{p1}");
    assert_eq!(counts(&p1), [30, 0, 0, 0], "{p1}");
    assert_same_tree(&src, &out);

    write(&src, b"d/00", &rand_bytes(1000, 3_000)); // same size, other content
    write(&src, b"d/01", &rand_bytes(1001, 77)); // another size
    std::fs::remove_file(src.join("d/02")).unwrap();
    write(&src, b"n/new", b"a new object");
    std::fs::create_dir_all(src.join("r")).unwrap();
    std::fs::rename(src.join("d/03"), src.join("r/renamed")).unwrap();
    let (code, p2) = sync_pass(&state, &src, &out, &["--max-delete", "2"]);
    assert_eq!(code, Some(0), "{p2}");
    assert_eq!(p2["pass"], 2);
    assert_eq!(
        counts(&p2),
        [2, 2, 2, 26],
        "new, changed, deleted, unchanged: {p2}"
    );
    assert_eq!(p2["record"]["deletions"], "applied");
    assert_same_tree(&src, &out);

    let o = ok(&barge(
        &state,
        &[
            "--json",
            "cutover",
            "--full",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    ));
    let c = &json_doc(&o, "certificate")["certificate"];
    assert_eq!(c["done"], true, "{o}");
    assert_eq!(c["objects"], 30);
    assert_eq!(c["digest"]["value"].as_str().unwrap(), tree_digest(&src));
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("cutover-certificate.json")).unwrap())
            .unwrap();
    assert_eq!(file["digest"], c["digest"]);
    assert_eq!(
        file["passes"].as_array().unwrap().len(),
        3,
        "two sync passes and the cutover"
    );
    let status = ok(&barge(&state, &["status"]));
    assert!(status.contains("sync        pass 3 (cutover)"), "{status}");
    assert!(status.contains("cutover   a final pass"), "{status}");

    // A change after the cutover: a second cutover is NOT DONE until it moved it.
    write(&src, b"late", b"written after the freeze");
    let o = barge(
        &state,
        &[
            "verify",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn deletions_stay_within_max_delete_and_never_touch_what_barge_did_not_write() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    for i in 0..20u64 {
        write(
            &src,
            format!("f{i:02}").as_bytes(),
            &rand_bytes(50 + i, 2_000),
        );
    }
    init_small(&state, &[]);
    sync_pass(&state, &src, &out, &[]);
    write(&out, b"foreign.txt", b"put here by someone else");
    for i in 0..5 {
        std::fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    // Default 1% of 20 objects: 1 may go, 5 are gone: nothing is deleted, and it says so.
    let (code, p) = sync_pass(&state, &src, &out, &[]);
    assert_eq!(
        code,
        Some(3),
        "a pass that leaves deletions undone is not complete"
    );
    let why = p["record"]["deletions"].as_str().unwrap();
    assert!(
        why.starts_with("refused: 5 objects") && why.contains("--max-delete 1% allows (1 of 20"),
        "{why}"
    );
    assert_eq!(p["record"]["deleted"], 0);
    for i in 0..5 {
        assert!(
            out.join(format!("f{i:02}")).exists(),
            "f{i:02} deleted despite the limit"
        );
    }
    // --keep-deleted reports and keeps them.
    let (_, p) = sync_pass(
        &state,
        &src,
        &out,
        &["--keep-deleted", "--max-delete", "100%"],
    );
    assert_eq!(p["record"]["deletions"], "kept (--keep-deleted)");
    assert_eq!(p["record"]["deletes_pending"], 5);
    assert!(out.join("f00").exists());
    // Within the limit they go; the object barge never wrote stays.
    let (code, p) = sync_pass(&state, &src, &out, &["--max-delete", "5"]);
    assert_eq!(code, Some(0), "{p}");
    assert_eq!(p["record"]["deleted"], 5);
    assert!(
        out.join("foreign.txt").exists(),
        "an object barge did not write was deleted"
    );
    std::fs::remove_file(out.join("foreign.txt")).unwrap();
    assert_same_tree(&src, &out);
}

#[test]
fn a_kill_during_deletions_loses_nothing_and_the_next_pass_finishes_them() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    // More deletions than one batch (DELETE_BATCH = 256), so some are left whatever
    // the deletes in flight finish before the kill lands.
    for i in 0..500u64 {
        write(
            &src,
            format!("k/{i:03}").as_bytes(),
            &rand_bytes(70 + i, 300),
        );
    }
    init_small(&state, &[]);
    sync_pass(&state, &src, &out, &[]);
    for i in 0..400 {
        std::fs::remove_file(src.join(format!("k/{i:03}"))).unwrap();
    }
    let o = bin()
        .args(["--state", state.to_str().unwrap(), "sync", "--passes", "1"])
        .args(["--max-delete", "100%", "--source", src.to_str().unwrap()])
        .args(["--dest", out.to_str().unwrap()])
        .env("BARGE_CRASH_AT", "sync.deleted:5")
        .output()
        .unwrap();
    assert!(
        o.status.code().is_none(),
        "the crash point was not reached: {}",
        stderr(&o)
    );
    let left = (0..400)
        .filter(|i| out.join(format!("k/{i:03}")).exists())
        .count();
    assert!(
        left > 0 && left < 400,
        "{left} of 400 deletions left after the kill"
    );
    let r = barge(&state, &["--json", "report"]);
    let r = json_doc(&String::from_utf8_lossy(&r.stdout), "report");
    assert!(r["report"]["deleting"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["report"]["done"], false);

    // The next run finishes the same pass: every deletion, nothing else touched.
    let (code, p) = sync_pass(&state, &src, &out, &["--max-delete", "100%"]);
    assert_eq!(code, Some(0), "{p}");
    assert_eq!(
        p["pass"], 2,
        "the interrupted pass is resumed, not a new one"
    );
    assert_eq!(p["record"]["runs"], 2);
    assert_eq!(p["record"]["deleted"], 400);
    assert_same_tree(&src, &out);
    let c = ok(&barge(
        &state,
        &[
            "cutover",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    ));
    assert!(c.contains("cutover: DONE"), "{c}");
}

/// Issue 17 with a directory source (no key-range listing: each shard walks the tree and
/// keeps its range): two shards into one destination make the whole tree, each moves
/// its half; bad plan input is refused by name.
#[test]
fn shards_of_a_directory_move_their_halves_and_bad_plans_are_named() {
    let t = tmp();
    let (src, out) = (t.path().join("src"), t.path().join("out"));
    for i in 0..40u64 {
        write(
            &src,
            format!("d{}/f{i:02}", i % 4).as_bytes(),
            &rand_bytes(900 + i, 700),
        );
    }
    let plan = t.path().join("plan.json");
    let srcs = src.to_str().unwrap();
    let key = t.path().join("fleet.key");
    let o = bin()
        .args(["plan", "--shards", "2", "--source", srcs, "--out"])
        .arg(&plan)
        .arg("--new-fleet-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    assert_eq!(p["shards"][0]["objects"], 20);
    assert_eq!(p["shards"][1]["objects"], 20);
    let plan_s = plan.to_str().unwrap();
    let outs = out.to_str().unwrap();
    let keys = key.to_str().unwrap();
    for i in 0..2 {
        let state = t.path().join(format!("state-{i}"));
        init_small(&state, &[]);
        let shard = i.to_string();
        let o = ok(&barge(
            &state,
            &[
                "--plan",
                plan_s,
                "--shard",
                &shard,
                "--fleet-key-file",
                keys,
                "--json",
                "migrate",
                "--source",
                srcs,
                "--dest",
                outs,
            ],
        ));
        let ing = &json_doc(&o, "ingest")["ingest"];
        assert_eq!(ing["staged"], 20, "shard {i}: {o}");
        assert_eq!(ing["outside_shard"], 20, "shard {i}: {o}");
        assert_eq!(json_doc(&o, "report")["report"]["done"], true, "shard {i}");
    }
    // The destination holds the tree and the two shards' reports.
    let reports = out.join(".barge").join(p["id"].as_str().unwrap());
    assert!(reports.join("shard-0.json").exists() && reports.join("shard-1.json").exists());
    let f = barge(
        &t.path().join("state-0"),
        &[
            "--plan",
            plan_s,
            "--fleet-key-file",
            keys,
            "report",
            "--fleet",
            outs,
        ],
    );
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stdout));
    std::fs::remove_dir_all(out.join(".barge")).unwrap();
    assert_same_tree(&src, &out);

    // Bad input, each named.
    let state = t.path().join("state-0");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--plan", "/nonexistent/plan.json", "verify", "--dest", outs],
            "/nonexistent/plan.json",
        ),
        (
            &["--plan", plan_s, "--shard", "7", "verify", "--dest", outs],
            "--shard: 7: plan",
        ),
        (
            &[
                "--plan",
                plan_s,
                "--shard",
                "0",
                "ingest",
                "--source",
                "/elsewhere",
            ],
            "/elsewhere: plan",
        ),
        (
            &["--shard", "0", "verify", "--dest", outs],
            "--shard needs --plan",
        ),
    ];
    for (args, want) in cases {
        let o = barge(&state, args);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

/// Issue 27 item 7: `--max-delete-total` counts the deletions of every pass of the move.
/// Two passes each within `--max-delete` delete 2 objects, then 2 more: the second
/// would take the move to 4, past a total of 3, so it deletes nothing and says so; with
/// the total raised it deletes them.
#[test]
fn max_delete_total_refuses_a_pass_that_would_pass_the_move_s_total() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    for i in 0..20u64 {
        write(&src, format!("f{i:02}").as_bytes(), &rand_bytes(i, 1_000));
    }
    init_small(&state, &[]);
    let limits = ["--max-delete", "100%", "--max-delete-total", "3"];
    let (code, p) = sync_pass(&state, &src, &out, &limits);
    assert_eq!(code, Some(0), "{p}");
    for k in ["f00", "f01"] {
        std::fs::remove_file(src.join(k)).unwrap();
    }
    let (code, p) = sync_pass(&state, &src, &out, &limits);
    assert_eq!(code, Some(0), "{p}");
    assert_eq!(p["record"]["deleted"], 2, "{p}");
    for k in ["f02", "f03"] {
        std::fs::remove_file(src.join(k)).unwrap();
    }
    let (code, p) = sync_pass(&state, &src, &out, &limits);
    assert_eq!(code, Some(3), "{p}");
    let outcome = p["deletions"]["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("refused:") && outcome.contains("--max-delete-total 3"),
        "{p}"
    );
    assert_eq!(p["deletions"]["deleted_before"], 2, "{p}");
    assert_eq!(p["record"]["deleted"], 0, "{p}");
    assert!(out.join("f02").exists() && out.join("f03").exists());
    let (code, p) = sync_pass(
        &state,
        &src,
        &out,
        &["--max-delete", "100%", "--max-delete-total", "20%"],
    );
    assert_eq!(code, Some(0), "{p}");
    assert_eq!(p["record"]["deleted"], 2, "{p}");
    assert_same_tree(&src, &out);
}

/// Issue 27 item 7 on a directory destination: a file someone else wrote over barge's
/// (another size) is kept when the source deletes the key; barge's own are deleted.
#[test]
fn a_sync_keeps_a_file_someone_else_wrote_over_barge_s() {
    let t = tmp();
    let (state, src, out) = (
        t.path().join("state"),
        t.path().join("src"),
        t.path().join("out"),
    );
    for i in 0..6u64 {
        write(&src, format!("f{i}").as_bytes(), &rand_bytes(i, 2_000));
    }
    init_small(&state, &[]);
    let limits = ["--max-delete", "100%"];
    let (code, p) = sync_pass(&state, &src, &out, &limits);
    assert_eq!(code, Some(0), "{p}");
    std::fs::write(out.join("f0"), b"someone else's").unwrap();
    for k in ["f0", "f1"] {
        std::fs::remove_file(src.join(k)).unwrap();
    }
    let (code, p) = sync_pass(&state, &src, &out, &limits);
    assert_eq!(code, Some(0), "{p}");
    let d = &p["deletions"];
    assert_eq!(
        (d["deleted"].as_u64(), d["kept_foreign"].as_u64()),
        (Some(1), Some(1)),
        "{p}"
    );
    assert_eq!(d["kept_foreign_keys"][0][0], "f0", "{p}");
    assert_eq!(std::fs::read(out.join("f0")).unwrap(), b"someone else's");
    assert!(!out.join("f1").exists());
}

/// `barge --plan PLAN --fleet-key-file KEY --json report --fleet OUT` (with `extra`
/// arguments first): its exit code and the fleet document.
fn fleet_report(state: &Path, plan: &Path, out: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["--plan", plan.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--json", "report", "--fleet", out.to_str().unwrap()]);
    let o = barge(state, &args);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("\"fleet\""), "{args:?}: {text}{}", stderr(&o));
    (o.status.code(), json_doc(&text, "fleet")["fleet"].clone())
}

/// Issue 27, item 5: a source object `.barge/<plan>/shard-1.json` saying DONE is refused
/// by the listing and named (the run's output, `report`), so it never lands on shard 1's
/// report; `report --fleet` is DONE only once shard 1 published its own report, checked
/// under the fleet key. Refused by name: a report edited at the destination, one without
/// a MAC, every report under another key, reports of another plan or source or older
/// than the plan; without a key the fleet is UNVERIFIED. The cutover certificate carries
/// a MAC under the same key.
#[test]
fn forged_shard_reports_are_refused_by_name() {
    let t = tmp();
    let (src, out) = (t.path().join("src"), t.path().join("out"));
    for i in 0..20u64 {
        write(
            &src,
            format!("f{i:02}").as_bytes(),
            &rand_bytes(60 + i, 500),
        );
    }
    let (plan, key) = (t.path().join("plan.json"), t.path().join("fleet.key"));
    let srcs = src.to_str().unwrap();
    let o = bin()
        .args(["plan", "--shards", "2", "--source", srcs, "--out"])
        .arg(&plan)
        .arg("--new-fleet-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let p: Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let id = p["id"].as_str().unwrap().to_string();
    // The forgery: shard 1's report, DONE, as an object of the source (in shard 0's
    // range: "." sorts first).
    let forged = format!(".barge/{id}/shard-1.json");
    let doc = serde_json::json!({
        "report_version": 2, "plan_id": id, "shard": 1, "shards": 2, "source": srcs,
        "destination": out.to_str().unwrap(), "started": p["created"], "unix": p["created"],
        "done": true, "verdict": "DONE: all 10 objects are at the destination, verified",
        "objects": 10, "drained": 10, "failed": 0, "bytes": 5000, "left_out": 0,
        "left_out_entries": [],
        "digest": {"objects": 10, "bytes": 5000, "unhashed": 0, "value": "00"}
    });
    write(&src, forged.as_bytes(), doc.to_string().as_bytes());
    let keys = key.to_str().unwrap();
    let state = |i: u32| t.path().join(format!("state-{i}"));
    let shard = |i: u32, cmd: &[&str]| {
        let si = i.to_string();
        let mut args = vec![
            "--plan",
            plan.to_str().unwrap(),
            "--shard",
            &si,
            "--fleet-key-file",
            keys,
        ];
        args.extend_from_slice(cmd);
        args.extend_from_slice(&["--source", srcs, "--dest", out.to_str().unwrap()]);
        ok(&barge(&state(i), &args))
    };
    init_small(&state(0), &[]);
    let o = shard(0, &["migrate"]);
    assert!(
        !out.join(&forged).exists(),
        "the source's .barge/ key was moved"
    );
    assert!(
        o.contains(&format!("skipped: {forged} (refused: a key under .barge/")),
        "{o}"
    );
    // Nor does verify count it as only at the source.
    shard(0, &["verify"]);
    let r = ok(&barge(&state(0), &["report"]));
    assert!(
        r.contains("verdict     DONE, with 1 entries left out (listed below)"),
        "{r}"
    );
    assert!(
        r.contains(&format!(
            "left out    {forged}: refused: a key under .barge/"
        )),
        "{r}"
    );
    let (code, f) = fleet_report(&state(0), &plan, &out, &["--fleet-key-file", keys]);
    assert_eq!(code, Some(3), "{f}");
    let verdict = f["verdict"].as_str().unwrap();
    assert!(verdict.contains("shard 1 has not reported"), "{verdict}");

    // Shard 1's own report: DONE, saying what was left out.
    init_small(&state(1), &[]);
    shard(1, &["migrate"]);
    let (code, f) = fleet_report(&state(0), &plan, &out, &["--fleet-key-file", keys]);
    assert_eq!(code, Some(0), "{f}");
    assert_eq!(f["done"], true);
    assert_eq!(f["left_out"], 1);
    let verdict = f["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("DONE, with 1 entries left out (listed below)"),
        "{verdict}"
    );

    // Without the key: UNVERIFIED, never DONE. Under another key: both refused.
    let (code, f) = fleet_report(&state(0), &plan, &out, &[]);
    assert_eq!(code, Some(3), "{f}");
    assert!(
        f["verdict"].as_str().unwrap().starts_with("UNVERIFIED"),
        "{f}"
    );
    let other = t.path().join("other.key");
    barge::fleet_key::FleetKey::write_new(&other).unwrap();
    let (code, f) = fleet_report(
        &state(0),
        &plan,
        &out,
        &["--fleet-key-file", other.to_str().unwrap()],
    );
    assert_eq!(code, Some(3), "{f}");
    let verdict = f["verdict"].as_str().unwrap();
    for i in 0..2 {
        assert!(
            verdict.contains(&format!(
                "shard {i} report refused: its MAC does not verify: forged or from another fleet key"
            )),
            "{verdict}"
        );
    }

    // Forged at the destination: edited, or written without a MAC.
    let at = out.join(&forged);
    let real = std::fs::read(&at).unwrap();
    let mut edited: Value = serde_json::from_slice(&real).unwrap();
    edited["objects"] = 999.into();
    std::fs::write(&at, edited.to_string()).unwrap();
    let (code, f) = fleet_report(&state(0), &plan, &out, &["--fleet-key-file", keys]);
    assert_eq!(code, Some(3), "{f}");
    let verdict = f["verdict"].as_str().unwrap();
    assert!(
        verdict.contains(
            "shard 1 report refused: its MAC does not verify: forged or from another fleet key"
        ),
        "{verdict}"
    );
    assert!(!verdict.contains("shard 0"), "{verdict}");
    edited.as_object_mut().unwrap().remove("mac");
    std::fs::write(&at, edited.to_string()).unwrap();
    let (_, f) = fleet_report(&state(0), &plan, &out, &["--fleet-key-file", keys]);
    assert!(
        f["verdict"]
            .as_str()
            .unwrap()
            .contains("shard 1 report refused: it carries no MAC"),
        "{f}"
    );
    std::fs::write(&at, &real).unwrap();

    // Reports of another source, another plan, or older than the plan.
    let edited_plan = |name: &str, field: &str, value: Value| {
        let mut q = p.clone();
        q[field] = value;
        let path = t.path().join(name);
        std::fs::write(&path, q.to_string()).unwrap();
        path
    };
    let cases = [
        (
            edited_plan("other-source.json", "source", "/elsewhere".into()),
            format!("shard 0 report refused: it is of source {srcs}, the plan's is /elsewhere"),
        ),
        (
            edited_plan(
                "future.json",
                "created",
                (p["created"].as_u64().unwrap() + 86_400).into(),
            ),
            "shard 1 report refused: its work started at".to_string(),
        ),
        (
            edited_plan("other-plan.json", "id", "0123456789abcdef".into()),
            format!("shard 1 report refused: it is for shard 1 of plan {id}"),
        ),
    ];
    let copy = out.join(".barge/0123456789abcdef");
    std::fs::create_dir_all(&copy).unwrap();
    for i in 0..2 {
        let name = format!("shard-{i}.json");
        std::fs::copy(out.join(".barge").join(&id).join(&name), copy.join(&name)).unwrap();
    }
    for (plan, want) in cases {
        let (code, f) = fleet_report(&state(0), &plan, &out, &["--fleet-key-file", keys]);
        assert_eq!(code, Some(3), "{f}");
        assert!(
            f["verdict"].as_str().unwrap().contains(&want),
            "{want}: {f}"
        );
    }

    // A cutover certificate under the same key.
    shard(1, &["cutover"]);
    let cert = std::fs::read(state(1).join("cutover-certificate.json")).unwrap();
    let k = barge::fleet_key::FleetKey::load(&key).unwrap();
    let ctx = barge::fleet_key::CTX_CERTIFICATE;
    k.check(ctx, &cert).unwrap();
    let mut c: Value = serde_json::from_slice(&cert).unwrap();
    c["done"] = false.into();
    assert!(k.check(ctx, c.to_string().as_bytes()).is_err());
}

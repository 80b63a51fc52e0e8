//! Offline seeding end to end on real loop devices (the test runs as root): ingest at
//! "site A" onto 3 raw drives, seal, detach; at "site B" (its own state directory; only
//! the drives and the unlock code file cross over) import, drain into the real Swift
//! SAIO, top up what changed at the source meanwhile, verify DONE, erase with
//! certificates. Variants: wrong unlock code, a missing drive, a flipped manifest byte,
//! a drive from another set. The raw bytes of every sealed drive are scanned for any
//! plaintext of the input, any object key and the key material.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::servers::{Env, saio};
use common::*;

/// Size of each drive image.
const DRIVE_BYTES: u64 = 40 << 20;

/// barge with the SAIO credentials in its environment.
fn barge_swift(state: &Path, env: &Env, args: &[&str]) -> Output {
    bin()
        .arg("--state")
        .arg(state)
        .args(args)
        .env("ST_AUTH", &env["ST_AUTH"])
        .env("ST_USER", &env["ST_USER"])
        .env("ST_KEY", &env["ST_KEY"])
        .output()
        .unwrap()
}

fn import(state: &Path, code_file: &Path, devs: &[&str]) -> Output {
    let mut args = vec![
        "--json",
        "import",
        "--unlock-code-file",
        code_file.to_str().unwrap(),
    ];
    args.extend_from_slice(devs);
    barge(state, &args)
}

fn flip_byte(file: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
}

/// The source tree: random content with a marker line, two duplicates, an empty file.
fn make_source(src: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![];
    for i in 0..24u64 {
        let key = format!("docs/shipkey-confidential-{i:03}.bin");
        let mut data = format!("BARGE-PLAINTEXT-MARKER {key}\n").into_bytes();
        data.extend(rand_bytes(
            900 + i,
            60_000 + (i as usize * 37_000) % 700_000,
        ));
        write(src, key.as_bytes(), &data);
        files.push((key, data));
    }
    for (k, from) in [
        ("dups/shipkey-copy-a.bin", 3),
        ("dups/shipkey-copy-b.bin", 7),
    ] {
        let d = files[from].1.clone();
        write(src, k.as_bytes(), &d);
        files.push((k.to_string(), d));
    }
    write(src, b"shipkey-empty.txt", b"");
    files.push(("shipkey-empty.txt".into(), vec![]));
    files
}

/// Scans raw drive bytes for any of `needles`; returns the ones found.
fn scan(devs: &[PathBuf], needles: &[Vec<u8>]) -> Vec<String> {
    let ac = aho_corasick::AhoCorasick::new(needles).unwrap();
    let mut found = vec![];
    for d in devs {
        let bytes = std::fs::read(d).unwrap();
        assert_eq!(bytes.len() as u64, DRIVE_BYTES);
        for m in ac.find_iter(&bytes) {
            found.push(format!(
                "{}: {:?} at {}",
                d.display(),
                String::from_utf8_lossy(&needles[m.pattern().as_usize()]),
                m.start()
            ));
        }
    }
    found
}

/// Where the shipping test leaves the documents it produced (beside the boot test's
/// console log), so the CI run keeps them for inspection.
fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("../artifacts/ship")
}

fn keep_artifact(name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(artifacts()).unwrap();
    std::fs::write(artifacts().join(name), bytes).unwrap();
}

#[test]
fn ship_seal_import_drain_topup_erase_on_loop_devices() {
    // Only this run's documents are kept.
    let _ = std::fs::remove_dir_all(artifacts());
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    let files = make_source(&src);
    let imgs: Vec<PathBuf> = (0..3)
        .map(|i| sparse_file(t.path(), &format!("drive{i}.img"), DRIVE_BYTES))
        .collect();

    // ---- site A: ingest onto 3 raw drives, seal.
    let site_a = t.path().join("site-a");
    let ship_a = t.path().join("site-a-ship");
    let (unlock_file, bom_file) = {
        let loops: Vec<Loop> = imgs.iter().map(|f| Loop::attach(f)).collect();
        let mut extra = vec![];
        for l in &loops {
            extra.extend(["--staging", l.dev.as_str()]);
        }
        init_small(&site_a, &extra);
        ok(&barge(
            &site_a,
            &["--quiet", "ingest", "--source", src.to_str().unwrap()],
        ));
        // Killed after the first drive was sealed: the second run reseals the set.
        let o = bin()
            .arg("--state")
            .arg(&site_a)
            .args(["--quiet", "seal", "--out", ship_a.to_str().unwrap()])
            .env("BARGE_CRASH_AT", "ship.seal_drive:2")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), None, "the seal must die by SIGKILL");
        let out = ok(&barge(
            &site_a,
            &["--json", "seal", "--out", ship_a.to_str().unwrap()],
        ));
        let seal = &json_doc(&out, "seal")["seal"];
        assert_eq!(seal["drives"].as_array().unwrap().len(), 3);
        assert_eq!(seal["objects_on_drives"], files.len() as u64);
        assert!(seal["objects_not_on_drives"].as_array().unwrap().is_empty());
        for d in seal["drives"].as_array().unwrap() {
            assert!(d["segments"].as_u64().unwrap() > 0, "{d}");
            assert!(
                d["serial"].as_str().unwrap().starts_with("loop:"),
                "serial of a loop drive names its backing file: {d}"
            );
        }
        let show = ok(&barge(&site_a, &["drives", "show", &loops[1].dev]));
        let show: serde_json::Value = serde_json::from_str(&show).unwrap();
        assert_eq!(show["sealed"], true);
        assert_eq!(show["superblock"]["index"], 1);
        // A sealed drive takes no more segments at the source.
        let o = barge(
            &site_a,
            &["--quiet", "ingest", "--source", src.to_str().unwrap()],
        );
        assert!(!o.status.success());
        assert!(stderr(&o).contains("sealed for shipping"), "{}", stderr(&o));
        (
            PathBuf::from(seal["unlock_code_file"].as_str().unwrap()),
            PathBuf::from(seal["bill_of_materials"].as_str().unwrap()),
        )
        // loops detach here: the drives are "shipped".
    };
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&unlock_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let code_text = std::fs::read_to_string(&unlock_file).unwrap();
    let code_line = code_text
        .lines()
        .find(|l| l.starts_with("BARGE1-"))
        .unwrap()
        .to_string();

    // ---- the bill of materials: every object, its size and BLAKE3. Kept, with the
    // erase certificates below, in <target>/artifacts/ship/ for whoever reads the run.
    let bom = std::fs::read_to_string(&bom_file).unwrap();
    keep_artifact("bill-of-materials.csv", bom.as_bytes());
    let mut lines = bom.lines();
    assert_eq!(lines.next().unwrap(), "key,size,blake3,source_etag,drives");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), files.len());
    for (k, data) in &files {
        let row = rows
            .iter()
            .find(|r| r[0] == k)
            .unwrap_or_else(|| panic!("{k} not in the bill of materials"));
        assert_eq!(row[1], data.len().to_string(), "{k}");
        assert_eq!(row[2], blake3::hash(data).to_hex().as_str(), "{k}");
        assert!(!row[3].is_empty(), "{k} has no source tag");
    }

    // ---- no plaintext, no key, no key material on the drives.
    let mut needles: Vec<Vec<u8>> = vec![b"BARGE-PLAINTEXT-MARKER".to_vec(), b"shipkey".to_vec()];
    for (i, (k, data)) in files.iter().enumerate() {
        needles.push(k.as_bytes().to_vec());
        if data.len() > 4096 {
            for j in 0..4usize {
                let at = 100 + (i * 7919 + j * 104_729) % (data.len() - 200);
                needles.push(data[at..at + 24].to_vec());
            }
        }
    }
    needles.push(std::fs::read(site_a.join("keys/master.key")).unwrap());
    needles.push(code_line.as_bytes().to_vec());
    let found = scan(&imgs, &needles);
    assert!(found.is_empty(), "plaintext on the drives: {found:#?}");

    // ---- the source changes after the drives left.
    let changed = "docs/shipkey-confidential-005.bin";
    write(&src, changed.as_bytes(), &rand_bytes(4242, 333_333));
    write(
        &src,
        b"docs/shipkey-late-arrival.bin",
        &rand_bytes(4343, 222_222),
    );

    // ---- site B: the drives come back (under whatever loop names).
    let loops: Vec<Loop> = imgs.iter().map(|f| Loop::attach(f)).collect();
    let devs: Vec<&str> = loops.iter().map(|l| l.dev.as_str()).collect();

    // Wrong unlock code: nothing is imported, every drive is named.
    let wrong = t.path().join("wrong-code.txt");
    std::fs::write(&wrong, barge::ship::UnlockCode::generate().to_text()).unwrap();
    let st = t.path().join("site-b-wrong");
    let o = import(&st, &wrong, &devs);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("unlock code opens none of the drives"), "{e}");
    for d in &devs {
        assert!(e.contains(d), "{d} not named in: {e}");
    }
    assert!(!st.join("keys/key.json").exists());

    // One drive missing: the others import; what is not on them is listed.
    let st = t.path().join("site-b-missing");
    let o = import(&st, &unlock_file, &devs[..2]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let r = &json_doc(&String::from_utf8_lossy(&o.stdout), "import")["import"];
    let missing = r["missing_drives"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{r}");
    assert!(missing[0].as_str().unwrap().contains("drive #2"), "{r}");
    assert!(!r["objects_missing"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(
        r["objects_ready"].as_u64().unwrap()
            + r["objects_missing"].as_array().unwrap().len() as u64,
        files.len() as u64
    );
    // Erase refuses before a verified drain.
    let o = barge(&st, &["erase", devs[0]]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("refusing to erase"), "{}", stderr(&o));

    // One byte flipped in a manifest (on a copy of drive 1).
    let tampered = t.path().join("drive1-tampered.img");
    std::fs::copy(&imgs[1], &tampered).unwrap();
    let show: serde_json::Value =
        serde_json::from_str(&ok(&barge(&st, &["drives", "show", devs[1]]))).unwrap();
    let moff = show["superblock"]["manifest_offset"].as_u64().unwrap();
    let mlen = show["superblock"]["manifest_len"].as_u64().unwrap();
    flip_byte(&tampered, moff + mlen / 2);
    let tl = Loop::attach(&tampered);
    // And one byte flipped inside the first segment (slot 0) of a copy of drive 2.
    let seg_tampered = t.path().join("drive2-tampered.img");
    std::fs::copy(&imgs[2], &seg_tampered).unwrap();
    flip_byte(&seg_tampered, (1 << 20) + 10_000);
    let sl = Loop::attach(&seg_tampered);
    let st = t.path().join("site-b-tampered");
    let o = import(&st, &unlock_file, &[devs[0], &tl.dev, &sl.dev]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let r = &json_doc(&String::from_utf8_lossy(&o.stdout), "import")["import"];
    let bad = r["drives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == tl.dev.as_str())
        .unwrap();
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("manifest fails authentication"),
        "{bad}"
    );
    assert!(!r["objects_missing"].as_array().unwrap().is_empty());
    let seg_bad = r["drives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == sl.dev.as_str())
        .unwrap();
    assert_eq!(seg_bad["ok"], false, "{seg_bad}");
    let why = seg_bad["segments_bad"][0].as_str().unwrap();
    assert!(why.contains("checksum mismatch"), "{seg_bad}");
    drop((tl, sl));

    // A drive of another set.
    let other_src = t.path().join("other-src");
    write(&other_src, b"other/file.bin", &rand_bytes(77, 300_000));
    let other_img = sparse_file(t.path(), "other.img", DRIVE_BYTES);
    let st_c = t.path().join("site-c");
    {
        let l = Loop::attach(&other_img);
        init_small(&st_c, &["--staging", &l.dev]);
        ok(&barge(
            &st_c,
            &["--quiet", "ingest", "--source", other_src.to_str().unwrap()],
        ));
        ok(&barge(&st_c, &["--quiet", "seal"]));
    }
    let ol = Loop::attach(&other_img);
    let st = t.path().join("site-b-foreign");
    let o = import(&st, &unlock_file, &[devs[0], devs[1], &ol.dev]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let r = &json_doc(&String::from_utf8_lossy(&o.stdout), "import")["import"];
    let foreign = r["drives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == ol.dev.as_str())
        .unwrap();
    assert!(
        foreign["error"]
            .as_str()
            .unwrap()
            .contains("belongs to drive set"),
        "{foreign}"
    );
    drop(ol);

    // A killed import is never taken for a finished one.
    let st = t.path().join("site-b-killed");
    let o = bin()
        .arg("--state")
        .arg(&st)
        .args([
            "import",
            "--unlock-code-file",
            unlock_file.to_str().unwrap(),
        ])
        .args(&devs)
        .env("BARGE_CRASH_AT", "ship.import_synced:1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), None, "the import must die by SIGKILL");
    let o = barge(&st, &["status"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("did not finish"), "{}", stderr(&o));
    assert!(!import(&st, &unlock_file, &devs).status.success());

    // ---- the code on the command line is refused (ps shows it), nothing imported.
    let site_b = t.path().join("site-b");
    let mut args = vec!["--json", "import", "--unlock-code", code_line.as_str()];
    args.extend_from_slice(&devs);
    let o = barge(&site_b, &args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
    // ---- the real import: all three drives, the right code (by text in the environment).
    let mut args = vec!["--json", "import"];
    args.extend_from_slice(&devs);
    let o = bin()
        .arg("--state")
        .arg(&site_b)
        .args(&args)
        .env("BARGE_UNLOCK_CODE", &code_line)
        .output()
        .unwrap();
    let out = ok(&o);
    let r = &json_doc(&out, "import")["import"];
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["objects_ready"], files.len() as u64);
    for d in r["drives"].as_array().unwrap() {
        assert_eq!(d["ok"], true, "{d}");
    }
    let container = format!("ship{}", std::process::id());
    let dest = format!("swift://{container}");
    ok(&barge_swift(
        &site_b,
        env,
        &["--quiet", "drain", "--dest", &dest],
    ));
    // Against the source as it is now: the change and the late arrival are not there.
    let o = barge_swift(
        &site_b,
        env,
        &["verify", "--dest", &dest, "--source", src.to_str().unwrap()],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Top-up over the wire: the delta pass against the imported catalog.
    let out = ok(&barge_swift(
        &site_b,
        env,
        &["--json", "ingest", "--source", src.to_str().unwrap()],
    ));
    let ing = &json_doc(&out, "ingest")["ingest"];
    assert_eq!(ing["staged"], 2, "only the delta is fetched: {ing}");
    ok(&barge_swift(
        &site_b,
        env,
        &["--quiet", "drain", "--dest", &dest],
    ));
    let out = ok(&barge_swift(
        &site_b,
        env,
        &["verify", "--dest", &dest, "--source", src.to_str().unwrap()],
    ));
    assert!(out.contains("verdict: DONE"), "{out}");
    assert_container_equals_tree(env, &container, &src);

    // ---- erase after the verified drain: certificates, and nothing left on the drives.
    let certs = t.path().join("certs");
    let out = ok(&barge(
        &site_b,
        &[
            "--json",
            "erase",
            devs[0],
            devs[1],
            devs[2],
            "--certificate-dir",
            certs.to_str().unwrap(),
        ],
    ));
    let er = &json_doc(&out, "erase")["erase"];
    assert_eq!(er.as_array().unwrap().len(), 3);
    for c in er.as_array().unwrap() {
        assert_eq!(c["result"], "success");
        let cert: serde_json::Value =
            serde_json::from_slice(&std::fs::read(c["certificate"].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(cert["result"], "success", "{cert}");
        keep_artifact(
            &format!(
                "erase-certificate-{}.json",
                cert["drive"]["drive_id"].as_str().unwrap_or("unknown")
            ),
            &serde_json::to_vec_pretty(&cert).unwrap(),
        );
        let methods: Vec<&str> = cert["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["crypto-erase", "overwrite"], "{cert}");
        assert!(
            cert["drive"]["serial"].as_str().unwrap().contains("drive"),
            "{cert}"
        );
        assert!(cert["drive"]["drive_id"].is_string(), "{cert}");
    }
    drop(loops);
    for img in &imgs {
        let b = std::fs::read(img).unwrap();
        assert!(b.iter().all(|&x| x == 0), "{} not erased", img.display());
    }
    let o = barge(&site_b, &["drives", "show", imgs[0].to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no barge superblock"), "{}", stderr(&o));
}

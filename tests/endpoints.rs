//! barge against real object stores started by scripts/servers/: S3 (Swift's s3api and
//! Ceph radosgw) as source, Swift (SAIO and radosgw's Swift API) and Ceph S3 as
//! destinations. Every result is checked with an independent client (the swift CLI or
//! awscli), downloading and comparing content.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::servers::{Env, ceph, keystone, saio, saio_throttled};
use common::*;

const SWIFT: &str = "/usr/bin/swift";
const AWS: &str = "/usr/bin/aws";

fn run_ok(c: &mut Command) -> String {
    let o = c.output().expect("run client");
    assert!(
        o.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The swift CLI against an account.
fn swift(auth: &str, user: &str, key: &str) -> Command {
    let mut c = Command::new(SWIFT);
    c.args(["-A", auth, "-U", user, "-K", key]);
    c
}

/// awscli against an S3 endpoint with the given keys.
fn aws(endpoint: &str, access: &str, secret: &str) -> Command {
    let mut c = Command::new(AWS);
    c.args(["--endpoint-url", endpoint])
        .env("AWS_ACCESS_KEY_ID", access)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
        .env("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE");
    c
}

/// barge with one S3 endpoint's credentials in the environment (both sides use them
/// unless a profile says otherwise) and Swift credentials per side.
fn barge_env(
    state: &Path,
    s3: Option<(&str, &str, &str)>,
    swift_src: Option<&Env>,
    swift_dst: Option<(&str, &str, &str)>,
    args: &[&str],
) -> Output {
    let mut c = bin();
    c.arg("--state").arg(state).args(args);
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_PROFILE",
        "ST_AUTH",
        "ST_USER",
        "ST_KEY",
    ] {
        c.env_remove(k);
    }
    if let Some((_, a, s)) = s3 {
        c.env("AWS_ACCESS_KEY_ID", a)
            .env("AWS_SECRET_ACCESS_KEY", s)
            .env("AWS_DEFAULT_REGION", "us-east-1");
    }
    if let Some(e) = swift_src {
        c.env("BARGE_SOURCE_ST_AUTH", &e["ST_AUTH"])
            .env("BARGE_SOURCE_ST_USER", &e["ST_USER"])
            .env("BARGE_SOURCE_ST_KEY", &e["ST_KEY"]);
    }
    if let Some((a, u, k)) = swift_dst {
        c.env("BARGE_DEST_ST_AUTH", a)
            .env("BARGE_DEST_ST_USER", u)
            .env("BARGE_DEST_ST_KEY", k);
    }
    c.output().expect("run barge")
}

/// radosgw's S3 endpoint and keys: (endpoint, access key, secret key).
fn ceph_s3(e: &Env) -> (&str, &str, &str) {
    (
        e["CEPH_S3_ENDPOINT"].as_str(),
        e["CEPH_S3_ACCESS_KEY"].as_str(),
        e["CEPH_S3_SECRET_KEY"].as_str(),
    )
}

/// A unique name per test run (servers keep data between runs).
fn uniq(base: &str) -> String {
    format!("{base}{}", std::process::id())
}

/// Names the issue lists: spaces, unicode, %, ?, #, +; plus empty and nested objects
/// and one duplicate.
fn tricky_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let files = vec![
        ("plain.txt".to_string(), b"plain".to_vec()),
        ("with space/and more.txt".to_string(), rand_bytes(1, 5000)),
        ("ünïcødé/ファイル.bin".to_string(), rand_bytes(2, 70_000)),
        ("pct%41 q?x h#y p+z.dat".to_string(), rand_bytes(3, 1234)),
        ("empty".to_string(), vec![]),
        ("deep/a/b/c/leaf".to_string(), rand_bytes(4, 300_000)),
        // The same content as the leaf, above drain::COPY_MIN_SIZE: written as a
        // server-side copy of whichever of the two went first.
        ("twin/leaf copy".to_string(), rand_bytes(4, 300_000)),
    ];
    for (k, v) in &files {
        write(dir, k.as_bytes(), v);
    }
    files
}

#[test]
fn s3_to_swift_with_sharded_containers_slo_and_metadata() {
    let e = saio();
    let t = tmp();
    let bucket = uniq("srcs3-");
    let dest = uniq("dst");
    let s3 = (
        e["SAIO_S3_ENDPOINT"].as_str(),
        e["SAIO_S3_ACCESS_KEY"].as_str(),
        e["SAIO_S3_SECRET_KEY"].as_str(),
    );
    let a = || aws(s3.0, s3.1, s3.2);
    run_ok(a().args(["s3", "mb", &format!("s3://{bucket}")]));
    let src = t.path().join("src");
    let mut files = tricky_files(&src);
    // One object above the SLO threshold (3 MiB in this test), uploaded multipart by
    // awscli (8 MiB parts: the ETag is md5-of-md5s-2), with metadata and a content type.
    let big = rand_bytes(5, 9 << 20);
    write(&src, b"big/video.mp4", &big);
    files.push(("big/video.mp4".into(), big));
    for (k, _) in &files {
        let mut c = a();
        c.args(["s3", "cp"])
            .arg(src.join(k))
            .arg(format!("s3://{bucket}/{k}"));
        if k == "big/video.mp4" {
            c.args([
                "--metadata",
                "owner=alice,project=barge",
                "--content-type",
                "video/mp4",
            ]);
        }
        if k == "twin/leaf copy" {
            c.args(["--metadata", "role=twin", "--content-type", "text/x-twin"]);
        }
        run_ok(&mut c);
    }
    let state = t.path().join("state");
    init_small(&state, &[]);
    let dst = (
        e["ST_AUTH"].as_str(),
        e["ST_USER"].as_str(),
        e["ST_KEY"].as_str(),
    );
    let o = barge_env(
        &state,
        Some(s3),
        None,
        Some(dst),
        &[
            "--json",
            "--source-endpoint",
            s3.0,
            "--containers",
            "hash:8",
            "--large-threshold",
            "3MiB",
            "--slo-segment-size",
            "1MiB",
            "migrate",
            "--source",
            &format!("s3://{bucket}"),
            "--dest",
            &format!("swift://{dest}"),
        ],
    );
    let out = ok(&o);
    let r = json_doc(&out, "report");
    assert_eq!(r["report"]["done"], true, "{out}");
    assert_eq!(r["report"]["checks"]["md5"], 7, "{out}");
    assert_eq!(json_doc(&out, "drain")["drain"]["copied"], 1, "{out}");
    assert_eq!(r["report"]["checks"]["md5-multipart"], 1, "{out}");
    // Independent check: the swift CLI downloads every object of every shard.
    let sw = || swift(dst.0, dst.1, dst.2);
    let containers: Vec<String> = run_ok(sw().arg("list"))
        .lines()
        .filter(|c| c.starts_with(&format!("{dest}-")) && !c.ends_with("_segments"))
        .map(str::to_string)
        .collect();
    assert!(
        containers.len() >= 3,
        "objects spread over shards: {containers:?}"
    );
    let got = t.path().join("got");
    for c in &containers {
        run_ok(sw().args(["download", c, "-D"]).arg(&got));
    }
    for (k, v) in &files {
        let p = got.join(k);
        assert_eq!(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{k}: {e}")),
            v,
            "{k} differs"
        );
    }
    let stat_of = |name: &str| {
        let shard = containers
            .iter()
            .find(|c| run_ok(sw().args(["list", c])).lines().any(|l| l == name))
            .unwrap();
        run_ok(sw().args(["stat", shard, name]))
    };
    // The big object is a Static Large Object with its metadata; segments are >= 1 MiB.
    let stat = stat_of("big/video.mp4");
    assert!(stat.contains("X-Static-Large-Object: True"), "{stat}");
    assert!(
        stat.contains("Meta Owner: alice") && stat.contains("video/mp4"),
        "{stat}"
    );
    // Whichever of the twins was a server-side copy, each has its own metadata.
    let twin = stat_of("twin/leaf copy");
    assert!(
        twin.contains("Meta Role: twin") && twin.contains("text/x-twin"),
        "{twin}"
    );
    let leaf = stat_of("deep/a/b/c/leaf");
    assert!(
        !leaf.contains("Meta Role") && !leaf.contains("text/x-twin"),
        "{leaf}"
    );
    // The lookup file names the mapping; verify uses it without --containers.
    let map: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("container-map.json")).unwrap()).unwrap();
    assert_eq!(map["map"]["scheme"], "hash");
    let o = barge_env(
        &state,
        Some(s3),
        None,
        Some(dst),
        &[
            "--json",
            "verify",
            "--full",
            "--dest",
            &format!("swift://{dest}"),
        ],
    );
    let v = json_doc(&ok(&o), "verify");
    assert_eq!(v["verify"]["matched"], 8);
}

#[test]
fn radosgw_s3_to_ceph_s3_with_multipart() {
    let e = ceph();
    let t = tmp();
    let (src_b, dst_b) = (uniq("srcceph-"), uniq("dstceph-"));
    let s3 = ceph_s3(e);
    let a = || aws(s3.0, s3.1, s3.2);
    run_ok(a().args(["s3", "mb", &format!("s3://{src_b}")]));
    let src = t.path().join("src");
    let mut files = tricky_files(&src);
    let big = rand_bytes(6, 13 << 20);
    write(&src, b"big.bin", &big);
    files.push(("big.bin".into(), big));
    run_ok(
        a().args(["s3", "cp", "--recursive"])
            .arg(&src)
            .arg(format!("s3://{src_b}/")),
    );
    let state = t.path().join("state");
    init_small(&state, &[]);
    let o = barge_env(
        &state,
        Some(s3),
        None,
        None,
        &[
            "--json",
            "--source-endpoint",
            s3.0,
            "--dest-endpoint",
            s3.0,
            "--large-threshold",
            "6MiB",
            "--part-size",
            "5MiB",
            "migrate",
            "--source",
            &format!("s3://{src_b}"),
            "--dest",
            &format!("s3://{dst_b}/moved"),
        ],
    );
    let out = ok(&o);
    assert_eq!(json_doc(&out, "report")["report"]["done"], true, "{out}");
    assert_eq!(json_doc(&out, "drain")["drain"]["copied"], 1, "{out}");
    let got = t.path().join("got");
    run_ok(
        a().args(["s3", "cp", "--recursive", &format!("s3://{dst_b}/moved/")])
            .arg(&got),
    );
    for (k, v) in &files {
        assert_eq!(
            &std::fs::read(got.join(k)).unwrap_or_else(|e| panic!("{k}: {e}")),
            v,
            "{k} differs"
        );
    }
    // 13 MiB in 5 MiB parts: a 3-part multipart object at the destination.
    let head = run_ok(a().args([
        "s3api",
        "head-object",
        "--bucket",
        &dst_b,
        "--key",
        "moved/big.bin",
    ]));
    assert!(head.contains("-3\\\""), "{head}");
}

#[test]
fn swift_to_ceph_through_radosgw_swift_api() {
    let (s, c) = (saio(), ceph());
    let t = tmp();
    let (src_c, dst_c) = (uniq("srcsw"), uniq("dstrgw"));
    let sw_src = || swift(&s["ST_AUTH"], &s["ST_USER"], &s["ST_KEY"]);
    let src = t.path().join("src");
    let files = tricky_files(&src);
    let mut up = sw_src();
    up.current_dir(&src).args(["upload", &src_c]);
    for (k, _) in &files {
        up.arg(k);
    }
    run_ok(&mut up);
    let listed = run_ok(sw_src().args(["list", &src_c]));
    let state = t.path().join("state");
    init_small(&state, &[]);
    let dst = (
        c["CEPH_SWIFT_AUTH_URL"].as_str(),
        c["CEPH_SWIFT_USER"].as_str(),
        c["CEPH_SWIFT_KEY"].as_str(),
    );
    let o = barge_env(
        &state,
        None,
        Some(s),
        Some(dst),
        &[
            "--json",
            "migrate",
            "--source",
            &format!("swift://{src_c}"),
            "--dest",
            &format!("swift://{dst_c}"),
        ],
    );
    let out = ok(&o);
    assert_eq!(
        json_doc(&out, "report")["report"]["done"],
        true,
        "{out}\n{listed}"
    );
    assert_eq!(json_doc(&out, "drain")["drain"]["copied"], 1, "{out}");
    let got = t.path().join("got");
    run_ok(
        swift(dst.0, dst.1, dst.2)
            .args(["download", &dst_c, "-D"])
            .arg(&got),
    );
    for (k, v) in &files {
        assert_eq!(
            &std::fs::read(got.join(k)).unwrap_or_else(|e| panic!("{k}: {e}\n{listed}")),
            v,
            "{k} differs"
        );
    }
}

#[test]
fn ten_thousand_small_objects_into_swift() {
    let e = saio();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..10_000u32 {
        write(
            &src,
            format!("d{:02}/obj-{i:05}", i % 50).as_bytes(),
            format!("object {i} {}", "x".repeat((i % 97) as usize)).as_bytes(),
        );
    }
    let state = t.path().join("state");
    init_small(&state, &[]);
    let dest = uniq("many");
    let dst = (
        e["ST_AUTH"].as_str(),
        e["ST_USER"].as_str(),
        e["ST_KEY"].as_str(),
    );
    let o = barge_env(
        &state,
        None,
        None,
        Some(dst),
        &[
            "--json",
            "--containers",
            "hash:16",
            "migrate",
            "--concurrency",
            "16",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            &format!("swift://{dest}"),
        ],
    );
    let out = ok(&o);
    assert_eq!(
        json_doc(&out, "report")["report"]["drained"],
        10_000,
        "{out}"
    );
    let got = t.path().join("got");
    let sw = || swift(dst.0, dst.1, dst.2);
    let containers: Vec<String> = run_ok(sw().arg("list"))
        .lines()
        .filter(|c| c.starts_with(&format!("{dest}-")))
        .map(str::to_string)
        .collect();
    assert_eq!(containers.len(), 16);
    for c in &containers {
        run_ok(
            sw().args(["download", c, "--object-threads", "16", "-D"])
                .arg(&got),
        );
    }
    assert_same_tree(&src, &got);
}

#[test]
fn a_throttling_swift_slows_barge_down_but_every_object_arrives() {
    let e = saio_throttled();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..150u32 {
        write(
            &src,
            format!("o{i:04}").as_bytes(),
            &rand_bytes(i as u64 + 10, 2000),
        );
    }
    let dst = (
        e["ST_AUTH"].as_str(),
        e["ST_USER"].as_str(),
        e["ST_KEY"].as_str(),
    );
    let dest = uniq("thr");
    // Prime: Swift limits object writes only once the container's cached count is >= 1.
    let sw = || swift(dst.0, dst.1, dst.2);
    let seed = t.path().join("seed");
    std::fs::write(&seed, b"seed").unwrap();
    // (barge overwrites the placeholder with the real o0000.)
    run_ok(
        sw().args(["upload", &dest])
            .arg(&seed)
            .args(["--object-name", "o0000"]),
    );
    run_ok(sw().args(["stat", &dest]));
    let state = t.path().join("state");
    init_small(&state, &[]);
    let o = barge_env(
        &state,
        None,
        None,
        Some(dst),
        &[
            "--json",
            "migrate",
            "--concurrency",
            "16",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            &format!("swift://{dest}"),
        ],
    );
    let out = ok(&o);
    let d = json_doc(&out, "drain");
    assert_eq!(d["drain"]["drained"], 150, "{out}");
    let thr = &d["drain"]["endpoint"];
    assert!(
        thr["throttled"].as_u64().unwrap() > 0,
        "the server throttled: {thr}"
    );
    let rps = thr["requests"].as_f64().unwrap() / d["secs"].as_f64().unwrap();
    // The same objects into the unthrottled SAIO: barge goes faster there.
    let free = saio();
    let fd = (
        free["ST_AUTH"].as_str(),
        free["ST_USER"].as_str(),
        free["ST_KEY"].as_str(),
    );
    let state2 = t.path().join("state2");
    init_small(&state2, &[]);
    let o = barge_env(
        &state2,
        None,
        None,
        Some(fd),
        &[
            "--json",
            "migrate",
            "--concurrency",
            "16",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            &format!("swift://{dest}"),
        ],
    );
    let out2 = ok(&o);
    let d2 = json_doc(&out2, "drain");
    let rps_free =
        d2["drain"]["endpoint"]["requests"].as_f64().unwrap() / d2["secs"].as_f64().unwrap();
    assert!(
        rps < rps_free,
        "throttled {rps:.1} req/s should be below unthrottled {rps_free:.1} req/s ({thr})"
    );
    let got = t.path().join("got");
    run_ok(sw().args(["download", &dest, "-D"]).arg(&got));
    assert_same_tree(&src, &got);
}

#[test]
fn expired_swift_tokens_are_refreshed_mid_run() {
    let e = saio();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..400u32 {
        write(
            &src,
            format!("t{i:04}").as_bytes(),
            &rand_bytes(i as u64 + 500, 3000),
        );
    }
    let state = t.path().join("state");
    init_small(&state, &[]);
    let dest = uniq("tok");
    let dst = (
        e["ST_AUTH"].as_str(),
        e["ST_USER"].as_str(),
        e["ST_KEY"].as_str(),
    );
    // tempauth keeps its tokens in the SAIO's private memcached: flushing it expires
    // every token, so barge's next request gets 401 and must log in again.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(300));
                if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:11311") {
                    use std::io::Write;
                    let _ = s.write_all(b"flush_all\r\n");
                    n += 1;
                }
            }
            n
        })
    };
    let o = barge_env(
        &state,
        None,
        None,
        Some(dst),
        &[
            "--json",
            "migrate",
            "--concurrency",
            "2",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            &format!("swift://{dest}"),
        ],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flushes = flusher.join().unwrap();
    let out = ok(&o);
    assert!(
        flushes >= 2,
        "tokens were expired during the run ({flushes} flushes)"
    );
    assert!(
        stderr(&o).contains("token expired (401); logging in again"),
        "{}",
        stderr(&o)
    );
    assert_eq!(json_doc(&out, "report")["report"]["done"], true, "{out}");
    let got = t.path().join("got");
    run_ok(
        swift(dst.0, dst.1, dst.2)
            .args(["download", &dest, "-D"])
            .arg(&got),
    );
    assert_same_tree(&src, &got);
}

/// The Keystone v3 variables of the test Keystone (and nothing of tempauth or S3).
fn with_keystone(c: &mut Command, k: &Env) {
    for v in [
        "ST_AUTH",
        "ST_USER",
        "ST_KEY",
        "OS_AUTH_TOKEN",
        "OS_STORAGE_URL",
    ] {
        c.env_remove(v);
    }
    for v in [
        "OS_AUTH_URL",
        "OS_USERNAME",
        "OS_PASSWORD",
        "OS_PROJECT_NAME",
        "OS_USER_DOMAIN_NAME",
        "OS_PROJECT_DOMAIN_NAME",
        "OS_IDENTITY_API_VERSION",
    ] {
        c.env(v, &k[v]);
    }
}

#[test]
fn keystone_v3_password_login_into_swift() {
    let k = keystone();
    let t = tmp();
    let dest = uniq("ks");
    let src = t.path().join("src");
    let mut files = tricky_files(&src);
    let big = rand_bytes(7, 5 << 20);
    write(&src, b"big.bin", &big);
    files.push(("big.bin".into(), big));
    let state = t.path().join("state");
    init_small(&state, &[]);
    let mut c = bin();
    c.arg("--state").arg(&state).args([
        "--json",
        "--large-threshold",
        "2MiB",
        "--slo-segment-size",
        "1MiB",
        "migrate",
        "--source",
        src.to_str().unwrap(),
        "--dest",
        &format!("swift://{dest}"),
    ]);
    with_keystone(&mut c, k);
    let o = c.output().expect("run barge");
    let out = ok(&o);
    assert_eq!(json_doc(&out, "report")["report"]["done"], true, "{out}");
    // The swift CLI logs in to Keystone itself and downloads from the project's account.
    let got = t.path().join("got");
    let mut dl = Command::new(SWIFT);
    dl.args(["download", &dest, "-D"]).arg(&got);
    with_keystone(&mut dl, k);
    run_ok(&mut dl);
    for (name, v) in &files {
        assert_eq!(
            &std::fs::read(got.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")),
            v,
            "{name} differs"
        );
    }
    let mut st = Command::new(SWIFT);
    st.args(["stat", &dest, "big.bin"]);
    with_keystone(&mut st, k);
    let stat = run_ok(&mut st);
    assert!(stat.contains("X-Static-Large-Object: True"), "{stat}");
    assert!(
        stat.contains(k["KEYSTONE_SWIFT_STORAGE_URL"].rsplit('/').next().unwrap()),
        "in the project's account: {stat}"
    );
}

/// Issue 18: no leftovers at the destination. barge is killed in the middle of a
/// multipart upload to radosgw: the upload is left open (seen with awscli's
/// list-multipart-uploads); the next drain aborts it before anything else, writes the
/// object again, and nothing is left open. The object downloads equal to its source.
#[test]
fn a_multipart_upload_killed_halfway_is_aborted_by_the_next_run() {
    let e = ceph();
    let t = tmp();
    let s3 = ceph_s3(e);
    let a = || aws(s3.0, s3.1, s3.2);
    let bucket = uniq("leftovers-");
    run_ok(a().args(["s3", "mb", &format!("s3://{bucket}")]));
    let src = t.path().join("src");
    let big = rand_bytes(18, 24 << 20);
    write(&src, b"big.bin", &big);
    let state = t.path().join("state");
    init_small(&state, &[]);
    let dest = format!("s3://{bucket}");
    let args = [
        "--dest-endpoint",
        s3.0,
        "--large-threshold",
        "6MiB",
        "--part-size",
        "5MiB",
    ];
    let o = barge_env(
        &state,
        Some(s3),
        None,
        None,
        &[&args[..], &["ingest", "--source", src.to_str().unwrap()]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut c = bin();
    c.arg("--state")
        .arg(&state)
        .args(args)
        .args(["drain", "--dest", &dest])
        .env("AWS_ACCESS_KEY_ID", s3.1)
        .env("AWS_SECRET_ACCESS_KEY", s3.2)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env("BARGE_CRASH_AT", "s3.after_part:2");
    let o = c.output().unwrap();
    assert!(
        o.status.code().is_none(),
        "the crash point was not reached: {}",
        stderr(&o)
    );
    let open = |what: &str| {
        let out = run_ok(a().args(["s3api", "list-multipart-uploads", "--bucket", &bucket]));
        let v: serde_json::Value =
            serde_json::from_str(if out.trim().is_empty() { "{}" } else { &out })
                .unwrap_or_else(|e| panic!("{what}: {e}: {out}"));
        v["Uploads"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(
        open("after the kill"),
        1,
        "the killed upload should be open"
    );
    let o = barge_env(
        &state,
        Some(s3),
        None,
        None,
        &[&args[..], &["drain", "--dest", &dest]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(open("after the next drain"), 0, "an upload was left open");
    let got = t.path().join("got");
    run_ok(a().args(["s3", "cp", &format!("{dest}/big.bin")]).arg(&got));
    assert!(
        std::fs::read(&got).unwrap() == big,
        "downloaded object differs"
    );
}

/// Issue 18: metadata carried in full, S3 (radosgw) -> Swift -> Swift (the SAIO):
/// Content-Encoding, Content-Disposition, Content-Language, Cache-Control, Expires,
/// user metadata and the source's last-modified time (`X-Object-Meta-Mtime`), read back
/// with the swift CLI. An object whose metadata Swift would refuse (a value of 300
/// bytes, which S3 allows) fails alone, its reason naming the key, listed by report.
#[test]
fn metadata_is_carried_in_full_and_swift_limits_fail_one_object_alone() {
    let (sa, ce) = (saio(), ceph());
    let t = tmp();
    let s3 = ceph_s3(ce);
    let a = || aws(s3.0, s3.1, s3.2);
    let bucket = uniq("meta-");
    let url = format!("s3://{bucket}");
    run_ok(a().args(["s3", "mb", &url]));
    let f = write(
        &t.path().join("files"),
        b"a",
        b"gzipped bytes, as far as S3 knows",
    );
    run_ok(
        a().arg("s3")
            .arg("cp")
            .arg(&f)
            .arg(format!("{url}/a.txt"))
            .args([
                "--content-encoding",
                "gzip",
                "--content-disposition",
                "attachment; filename=\"a.txt\"",
                "--content-language",
                "de",
                "--cache-control",
                "max-age=60",
                "--expires",
                "2030-01-01T00:00:00Z",
                "--metadata",
                "color=blue",
            ]),
    );
    let long = "x".repeat(300);
    run_ok(
        a().arg("s3")
            .arg("cp")
            .arg(&f)
            .arg(format!("{url}/b.txt"))
            .args(["--metadata", &format!("long={long}")]),
    );
    let dst = (
        sa["ST_AUTH"].as_str(),
        sa["ST_USER"].as_str(),
        sa["ST_KEY"].as_str(),
    );
    let stat =
        |container: &str| run_ok(swift(dst.0, dst.1, dst.2).args(["stat", container, "a.txt"]));
    let (c1, c2) = (uniq("meta-one-"), uniq("meta-two-"));
    let s1 = t.path().join("s1");
    init_small(&s1, &[]);
    let o = barge_env(
        &s1,
        Some(s3),
        None,
        Some(dst),
        &[
            "--source-endpoint",
            s3.0,
            "migrate",
            "--source",
            &url,
            "--dest",
            &format!("swift://{c1}"),
        ],
    );
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(3), "b.txt must fail alone: {out}");
    assert!(out.contains("b.txt") && out.contains("\"long\""), "{out}");
    let one = stat(&c1);
    for want in [
        "Content-Encoding: gzip",
        "Content-Disposition: attachment; filename=\"a.txt\"",
        "Content-Language: de",
        "Cache-Control: max-age=60",
        "Expires: ",
        "Meta Color: blue",
        "Meta Mtime: ",
    ] {
        assert!(one.contains(want), "{want:?} not in:\n{one}");
    }
    let rep = String::from_utf8_lossy(&barge(&s1, &["report"]).stdout).into_owned();
    assert!(rep.contains("b.txt") && rep.contains("\"long\""), "{rep}");
    // Swift -> Swift: the same headers, and the first source's time, not the copy's.
    let s2 = t.path().join("s2");
    init_small(&s2, &[]);
    let o = barge_env(
        &s2,
        None,
        Some(sa),
        Some(dst),
        &[
            "migrate",
            "--source",
            &format!("swift://{c1}"),
            "--dest",
            &format!("swift://{c2}"),
        ],
    );
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let two = stat(&c2);
    let line = |s: &str, k: &str| {
        s.lines()
            .find(|l| l.contains(k))
            .map(|l| l.trim().to_string())
    };
    for k in [
        "Content-Encoding",
        "Content-Disposition",
        "Content-Language",
        "Cache-Control",
        "Expires",
        "Meta Color",
        "Meta Mtime",
    ] {
        assert_eq!(line(&one, k), line(&two, k), "{k}:\n{one}\n{two}");
    }
    // Swift -> S3 (radosgw), read back with awscli.
    let back = uniq("meta-back-");
    let s3b = t.path().join("s3b");
    init_small(&s3b, &[]);
    let o = barge_env(
        &s3b,
        Some(s3),
        Some(sa),
        None,
        &[
            "--dest-endpoint",
            s3.0,
            "migrate",
            "--source",
            &format!("swift://{c2}"),
            "--dest",
            &format!("s3://{back}"),
        ],
    );
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let head = run_ok(a().args(["s3api", "head-object", "--bucket", &back, "--key", "a.txt"]));
    let h: serde_json::Value = serde_json::from_str(&head).unwrap();
    assert_eq!(h["ContentEncoding"], "gzip", "{head}");
    assert_eq!(
        h["ContentDisposition"], "attachment; filename=\"a.txt\"",
        "{head}"
    );
    assert_eq!(h["ContentLanguage"], "de", "{head}");
    assert_eq!(h["CacheControl"], "max-age=60", "{head}");
    assert_eq!(h["Metadata"]["color"], "blue", "{head}");
    let mtime = line(&one, "Meta Mtime").unwrap_or_default();
    assert!(
        mtime.ends_with(h["Metadata"]["mtime"].as_str().unwrap_or("?")),
        "{mtime} / {head}"
    );
}

/// Issue 18: objects of any size. The test radosgw allows 8 parts per multipart upload
/// (`rgw_multipart_part_upload_limit`); a 50 MiB object at `--part-size 5MiB` needs 10.
/// Without `--max-parts` the server refuses the upload (the object fails alone); with
/// `--max-parts 8` the parts grow to 7 MiB, the ETag says 8 parts, and the object
/// downloads equal to its source.
#[test]
fn parts_grow_to_fit_a_lowered_part_limit_on_radosgw() {
    let e = ceph();
    let t = tmp();
    let s3 = ceph_s3(e);
    let a = || aws(s3.0, s3.1, s3.2);
    let bucket = uniq("parts-");
    run_ok(a().args(["s3", "mb", &format!("s3://{bucket}")]));
    let src = t.path().join("src");
    let big = rand_bytes(50, 50 << 20);
    write(&src, b"fifty.bin", &big);
    let state = t.path().join("state");
    init_small(&state, &[]);
    let dest = format!("s3://{bucket}");
    let run = |extra: &[&str]| {
        let args = [
            &[
                "--dest-endpoint",
                s3.0,
                "--large-threshold",
                "6MiB",
                "--part-size",
                "5MiB",
            ][..],
            extra,
            &[
                "migrate",
                "--source",
                src.to_str().unwrap(),
                "--dest",
                &dest,
            ],
        ]
        .concat();
        barge_env(&state, Some(s3), None, None, &args)
    };
    let o = run(&[]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "10 parts must be refused: {}",
        stderr(&o)
    );
    let o = run(&["--max-parts", "8"]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let head = run_ok(a().args([
        "s3api",
        "head-object",
        "--bucket",
        &bucket,
        "--key",
        "fifty.bin",
    ]));
    assert!(head.contains("-8\\\""), "an 8-part ETag expected: {head}");
    let got = t.path().join("got");
    run_ok(
        a().args(["s3", "cp", &format!("{dest}/fifty.bin")])
            .arg(&got),
    );
    assert!(
        std::fs::read(&got).unwrap() == big,
        "downloaded object differs"
    );
}

/// Issue 16 on an S3 destination (radosgw): a directory followed by sync passes, a
/// change and two deletions reach the bucket (DeleteObject), nothing else in it is
/// touched, and cutover certifies it.
#[test]
fn sync_into_radosgw_deletes_what_the_source_deleted() {
    let e = ceph();
    let t = tmp();
    let dst_b = uniq("syncceph-");
    let s3 = ceph_s3(e);
    let a = || aws(s3.0, s3.1, s3.2);
    let src = t.path().join("src");
    for i in 0..12u64 {
        write(
            &src,
            format!("s/{i:02}").as_bytes(),
            &rand_bytes(80 + i, 900 + i as usize * 300),
        );
    }
    run_ok(a().args(["s3", "mb", &format!("s3://{dst_b}")]));
    let other = t.path().join("other");
    write(&other, b"x", b"not barge's");
    run_ok(
        a().args(["s3", "cp"])
            .arg(other.join("x"))
            .arg(format!("s3://{dst_b}/other/x")),
    );
    let state = t.path().join("state");
    init_small(&state, &[]);
    let dest = format!("s3://{dst_b}/synced");
    let run = |args: &[&str]| {
        let mut all = vec!["--json", "--dest-endpoint", s3.0];
        all.extend_from_slice(args);
        barge_env(&state, Some(s3), None, None, &all)
    };
    let sync = [
        "sync",
        "--passes",
        "1",
        "--max-delete",
        "2",
        "--source",
        src.to_str().unwrap(),
        "--dest",
        &dest,
    ];
    ok(&run(&sync));
    std::fs::remove_file(src.join("s/00")).unwrap();
    std::fs::remove_file(src.join("s/01")).unwrap();
    write(&src, b"s/02", &rand_bytes(999, 50));
    let out = ok(&run(&sync));
    let r = &json_doc(&out, "pass")["record"];
    assert_eq!(
        (r["changed"].as_u64(), r["deleted"].as_u64()),
        (Some(1), Some(2)),
        "{out}"
    );
    let got = t.path().join("got");
    run_ok(
        a().args(["s3", "cp", "--recursive", &format!("s3://{dst_b}/synced/")])
            .arg(&got),
    );
    assert_same_tree(&src, &got);
    let listed = run_ok(a().args(["s3", "ls", &format!("s3://{dst_b}/other/")]));
    assert!(
        listed.contains(" x"),
        "an object barge did not write was deleted: {listed}"
    );
    let out = ok(&run(&[
        "cutover",
        "--source",
        src.to_str().unwrap(),
        "--dest",
        &dest,
    ]));
    let c = &json_doc(&out, "certificate")["certificate"];
    assert_eq!(c["done"], true, "{out}");
    assert_eq!(c["digest"]["value"].as_str().unwrap(), tree_digest(&src));
}

/// Issue 27 item 7 on an S3 destination (radosgw): after pass 1 a third party writes its
/// own object (awscli, same size, other bytes) at one of barge's keys; the source then
/// deletes that key, a multipart object and a small one. Pass 2 deletes barge's two
/// (the multipart one checked against the ETag its completion answered) and keeps the
/// third party's object, counted and named.
#[test]
fn sync_into_radosgw_keeps_what_a_third_party_wrote_at_a_key() {
    let e = ceph();
    let t = tmp();
    let dst_b = uniq("keepforeign-");
    let s3 = ceph_s3(e);
    let a = || aws(s3.0, s3.1, s3.2);
    let src = t.path().join("src");
    write(&src, b"theirs-now", &rand_bytes(7_000, 5_000));
    write(&src, b"multi", &rand_bytes(7_001, 7 << 20));
    write(&src, b"small", &rand_bytes(7_002, 3_000));
    write(&src, b"stays", &rand_bytes(7_003, 1_000));
    run_ok(a().args(["s3", "mb", &format!("s3://{dst_b}")]));
    let state = t.path().join("state");
    init_small(&state, &[]);
    let dest = format!("s3://{dst_b}/synced");
    let run = |args: &[&str]| {
        let mut all = vec![
            "--json",
            "--dest-endpoint",
            s3.0,
            "--large-threshold",
            "6MiB",
            "--part-size",
            "5MiB",
        ];
        all.extend_from_slice(args);
        barge_env(&state, Some(s3), None, None, &all)
    };
    let sync = [
        "sync",
        "--passes",
        "1",
        "--max-delete",
        "100%",
        "--source",
        src.to_str().unwrap(),
        "--dest",
        &dest,
    ];
    ok(&run(&sync));
    let head = run_ok(a().args([
        "s3api",
        "head-object",
        "--bucket",
        &dst_b,
        "--key",
        "synced/multi",
    ]));
    assert!(head.contains("-2\\\""), "a 2-part object expected: {head}");
    let theirs = write(&t.path().join("theirs"), b"x", &rand_bytes(7_100, 5_000));
    run_ok(
        a().args(["s3", "cp"])
            .arg(&theirs)
            .arg(format!("s3://{dst_b}/synced/theirs-now")),
    );
    for k in ["theirs-now", "multi", "small"] {
        std::fs::remove_file(src.join(k)).unwrap();
    }
    let out = ok(&run(&sync));
    let d = &json_doc(&out, "pass")["deletions"];
    assert_eq!(
        (d["deleted"].as_u64(), d["kept_foreign"].as_u64()),
        (Some(2), Some(1)),
        "{out}"
    );
    assert_eq!(d["kept_foreign_keys"][0][0], "theirs-now", "{out}");
    let got = t.path().join("got");
    run_ok(
        a().args(["s3", "cp", &format!("s3://{dst_b}/synced/theirs-now")])
            .arg(&got),
    );
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(&theirs).unwrap()
    );
    let listed = run_ok(a().args(["s3", "ls", &format!("s3://{dst_b}/synced/")]));
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(names, ["stays", "theirs-now"], "{listed}");
}

/// Issue 27: an S3 key with a `..` segment (`../<victim>/pwned`) moved into Swift. A URL
/// parser resolves the segment, so the PUT would land in container `<victim>`: barge
/// refuses the object alone (named, the run goes on and ends NOT DONE), the other key
/// moves, and nothing appears in the victim container.
#[test]
fn an_s3_key_with_dot_segments_never_leaves_its_swift_container() {
    let e = saio();
    let t = tmp();
    let s3 = (
        e["SAIO_S3_ENDPOINT"].as_str(),
        e["SAIO_S3_ACCESS_KEY"].as_str(),
        e["SAIO_S3_SECRET_KEY"].as_str(),
    );
    let dst = (
        e["ST_AUTH"].as_str(),
        e["ST_USER"].as_str(),
        e["ST_KEY"].as_str(),
    );
    let (bucket, victim, landing) = (uniq("hostile-"), uniq("escape"), uniq("landing"));
    let sw = || swift(dst.0, dst.1, dst.2);
    run_ok(sw().args(["post", &victim]));
    let a = || aws(s3.0, s3.1, s3.2);
    run_ok(a().args(["s3", "mb", &format!("s3://{bucket}")]));
    let f = write(&t.path().join("f"), b"body", b"attacker's bytes");
    let bad = format!("../{victim}/pwned");
    for key in [bad.as_str(), "good.txt"] {
        run_ok(
            a().args([
                "s3api",
                "put-object",
                "--bucket",
                &bucket,
                "--key",
                key,
                "--body",
            ])
            .arg(&f),
        );
    }
    let state = t.path().join("state");
    init_small(&state, &[]);
    let o = barge_env(
        &state,
        Some(s3),
        None,
        Some(dst),
        &[
            "--source-endpoint",
            s3.0,
            "migrate",
            "--source",
            &format!("s3://{bucket}"),
            "--dest",
            &format!("swift://{landing}"),
        ],
    );
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(3), "the bad key fails alone: {out}");
    assert!(out.contains(&bad) && out.contains("segment"), "{out}");
    assert!(out.contains("NOT DONE"), "{out}");
    assert_eq!(
        run_ok(sw().args(["list", &victim])),
        "",
        "nothing in {victim}"
    );
    assert_eq!(run_ok(sw().args(["list", &landing])), "good.txt\n");
}

/// The storage URL and a token of a swift CLI login.
fn swift_token(env: &Env) -> (String, String) {
    let auth = run_ok(swift(&env["ST_AUTH"], &env["ST_USER"], &env["ST_KEY"]).arg("auth"));
    let var = |name: &str| {
        auth.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(|v| v.trim_matches('"').trim_matches('\'').to_string())
            .unwrap_or_else(|| panic!("no {name} in {auth}"))
    };
    (var("OS_STORAGE_URL"), var("OS_AUTH_TOKEN"))
}

/// Issue 27: a Swift source object whose name has a `..` segment (created with curl
/// `--path-as-is`, which the SAIO stores as named). A GET of it would fetch another
/// container's object with barge's credentials: the name is a listing error naming it,
/// it is never fetched, and the private object's bytes land nowhere.
#[test]
fn a_swift_source_name_with_dot_segments_is_never_fetched() {
    let e = saio();
    let t = tmp();
    let (src_c, private) = (uniq("dotsrc"), uniq("private"));
    let (storage, token) = swift_token(e);
    let secret = format!("PRIVATE-{}", std::process::id());
    let put = |path: &str, body: &str| {
        run_ok(Command::new("curl").args([
            "-sSf",
            "--path-as-is",
            "-X",
            "PUT",
            "-H",
            &format!("X-Auth-Token: {token}"),
            "--data-binary",
            body,
            &format!("{storage}/{path}"),
        ]))
    };
    put(&src_c, "");
    put(&private, "");
    put(&format!("{private}/x"), &secret);
    put(&format!("{src_c}/good"), "good bytes");
    let bad = format!("../{private}/x");
    // As long as the private object, so that a fetch of it passes the size check.
    put(&format!("{src_c}/{bad}"), &"d".repeat(secret.len()));
    let listed = run_ok(swift(&e["ST_AUTH"], &e["ST_USER"], &e["ST_KEY"]).args(["list", &src_c]));
    assert!(listed.contains(&bad), "the SAIO keeps the name: {listed}");
    let state = t.path().join("state");
    init_small(&state, &[]);
    let out_dir = t.path().join("out");
    let o = barge_env(
        &state,
        None,
        Some(e),
        None,
        &[
            "--json",
            "migrate",
            "--source",
            &format!("swift://{src_c}"),
            "--dest",
            out_dir.to_str().unwrap(),
        ],
    );
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains(&bad) && out.contains("segment"), "{out}");
    let ingest = &json_doc(&out, "ingest")["ingest"];
    assert_eq!(ingest["listing_errors"], 1, "{out}");
    assert_eq!(
        ingest["staged"], 1,
        "only the good object is fetched: {out}"
    );
    assert_eq!(json_doc(&out, "report")["report"]["done"], false, "{out}");
    assert_eq!(std::fs::read(out_dir.join("good")).unwrap(), b"good bytes");
    for f in files_under(t.path()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "{} holds the private object",
            f.display()
        );
    }
}

/// Issue 27: radosgw caps a Swift listing page at `rgw_max_listing_results` (1,000)
/// whatever `limit` asks; a listing that stopped at the first short page saw 1,000 of
/// 1,500 objects and the move said DONE. Pages now run to an empty one.
#[test]
fn a_radosgw_swift_container_of_1500_objects_lists_and_moves_whole() {
    let c = ceph();
    let t = tmp();
    let container = uniq("capped");
    let src = t.path().join("src");
    let names: Vec<String> = (0..1_500u32).map(|i| format!("o{i:04}")).collect();
    for (i, n) in names.iter().enumerate() {
        write(&src, n.as_bytes(), format!("{i}").as_bytes());
    }
    // Named one by one: `upload <container> .` would name them "./o0000".
    run_ok(
        swift(&c["ST_AUTH"], &c["ST_USER"], &c["ST_KEY"])
            .current_dir(&src)
            .args(["upload", "--object-threads", "32", &container])
            .args(&names),
    );
    let url = format!("swift://{container}");
    let state = t.path().join("state");
    init_small(&state, &[]);
    let keys = barge_env(
        &state,
        None,
        Some(c),
        None,
        &["list", "--keys", "--source", &url],
    );
    let keys = ok(&keys);
    assert_eq!(
        keys.lines().count(),
        1_500,
        "{}",
        &keys[keys.len().saturating_sub(200)..]
    );
    let out_dir = t.path().join("out");
    let o = barge_env(
        &state,
        None,
        Some(c),
        None,
        &[
            "--json",
            "migrate",
            "--source",
            &url,
            "--dest",
            out_dir.to_str().unwrap(),
        ],
    );
    let out = ok(&o);
    let report = &json_doc(&out, "report")["report"];
    assert_eq!(report["done"], true, "{out}");
    assert_eq!(report["drained"], 1_500, "{out}");
    assert_same_tree(&src, &out_dir);
}

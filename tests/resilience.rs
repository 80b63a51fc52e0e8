//! Resilience against the real servers of scripts/servers/: SIGKILL at many points of a
//! migration into Swift, then a resume that ends with the destination equal to the source
//! object by object (checked with the swift CLI, downloading every object), and no
//! object uploaded again after it was recorded done.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::servers::{Env, saio};
use common::*;

#[test]
fn sigkill_at_24_points_of_a_migration_into_swift_loses_nothing() {
    let env = saio();
    let t = tmp();
    let (state, src) = (t.path().join("state"), t.path().join("src"));
    // Small objects, duplicates, and three objects large enough to become SLOs.
    for i in 0..80u64 {
        write(
            &src,
            format!("small/{i:03}").as_bytes(),
            &rand_bytes(i, 20_000 + i as usize * 3_000),
        );
    }
    write(&src, b"dup/a", &rand_bytes(7, 300_000));
    write(&src, b"dup/b", &rand_bytes(7, 300_000));
    for i in 0..3u64 {
        write(
            &src,
            format!("large/{i}").as_bytes(),
            &rand_bytes(50 + i, 3_500_000 + i as usize * 100_000),
        );
    }
    init_small(&state, &[]);
    let container = format!("crash{}", std::process::id());
    let dest = format!("swift://{container}");
    let run = |cmd: &str, crash: Option<String>| {
        let mut c = bin();
        c.arg("--state").arg(&state).args([
            "--quiet",
            "--large-threshold",
            "2MiB",
            "--slo-segment-size",
            "1MiB",
            cmd,
            "--concurrency",
            "3",
        ]);
        if cmd != "drain" {
            c.arg("--source").arg(&src);
        }
        if cmd != "ingest" {
            c.args(["--dest", &dest]);
        }
        c.env("ST_AUTH", &env["ST_AUTH"])
            .env("ST_USER", &env["ST_USER"])
            .env("ST_KEY", &env["ST_KEY"]);
        if let Some(p) = crash {
            c.env("BARGE_CRASH_AT", p);
        }
        run_with_deadline(&mut c, Duration::from_secs(300))
    };
    // 24 kill points. `ingest` runs die at every step of fetching and staging (listing,
    // staging writes, fdatasync, catalog commits, segment sealing); `drain` runs die
    // before and after PUTs, between SLO segments and after the catalog mark. Each point
    // is taken at an early and a later pass; every run resumes what the last one left.
    let points = [
        ("ingest", "ingest.listed", 3),
        ("ingest", "ingest.listed", 20),
        ("ingest", "staging.before_append", 1),
        ("ingest", "staging.before_append", 9),
        ("ingest", "staging.after_sync", 1),
        ("ingest", "staging.after_sync", 3),
        ("ingest", "staging.after_commit", 2),
        ("ingest", "staging.after_commit", 5),
        ("ingest", "ingest.before_commit", 2),
        ("ingest", "ingest.before_commit", 11),
        ("ingest", "ingest.after_object", 1),
        ("ingest", "ingest.after_object", 7),
        ("ingest", "staging.before_seal", 1),
        ("drain", "swift.after_segment", 1),
        ("drain", "swift.after_segment", 3),
        ("drain", "drain.before_put", 1),
        ("drain", "drain.before_put", 6),
        ("drain", "drain.after_put", 2),
        ("drain", "drain.after_put", 8),
        ("drain", "drain.after_mark", 1),
        ("drain", "drain.after_mark", 4),
        ("drain", "drain.after_mark", 12),
        ("drain", "drain.after_put", 10),
        ("drain", "drain.before_put", 15),
    ];
    let mut killed = vec![];
    let mut finished = vec![];
    for (cmd, point, n) in points {
        let (code, err) = run(cmd, Some(format!("{point}:{n}")));
        match code {
            None => killed.push(format!("{point}:{n}")),
            Some(c) => {
                // Not reached: the run finished (all work was done by earlier runs).
                assert!(c == 0 || c == 3, "{point}:{n} exited {c}: {err}");
                finished.push(format!("{point}:{n}"));
            }
        }
    }
    eprintln!(
        "killed at {} points: {killed:?}; not reached (run completed): {finished:?}",
        killed.len()
    );
    assert!(
        killed.len() >= 20,
        "only {} of {} kill points were hit: {killed:?}",
        killed.len(),
        points.len()
    );
    let (code, err) = run("migrate", None);
    eprintln!("final resume stderr:\n{err}");
    assert_eq!(code, Some(0), "final resume: {err}");
    let rep = ok(&barge(&state, &["--json", "report"]));
    let r = &json_doc(&rep, "report")["report"];
    assert_eq!(r["done"], true, "{rep}");
    assert_eq!(
        r["uploaded_twice"], 0,
        "uploaded again after it was done: {}",
        r["uploaded_twice_keys"]
    );
    assert_eq!(r["segments_open"], 0, "{rep}");
    assert_container_equals_tree(env, &container, &src);
}

fn aws_s3(env: &Env) -> Command {
    let mut c = Command::new("/usr/bin/aws");
    c.args(["--endpoint-url", &env["SAIO_S3_ENDPOINT"]])
        .env("AWS_ACCESS_KEY_ID", &env["SAIO_S3_ACCESS_KEY"])
        .env("AWS_SECRET_ACCESS_KEY", &env["SAIO_S3_SECRET_KEY"])
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_CA_BUNDLE");
    c
}

fn must(c: &mut Command) -> String {
    let o = c.output().expect("run client");
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Makes bucket `url` (s3://name) in the SAIO and uploads the tree `src` into it with the
/// AWS CLI, `concurrency` requests at once.
fn s3_bucket_from(env: &Env, url: &str, src: &Path, concurrency: usize) {
    let cfg = src.with_extension("aws-config");
    let text = format!("[default]\ns3 =\n  max_concurrent_requests = {concurrency}\n");
    std::fs::write(&cfg, text).expect("write the AWS CLI config");
    must(aws_s3(env).args(["s3", "mb", url]));
    must(
        aws_s3(env)
            .env("AWS_CONFIG_FILE", &cfg)
            .args(["s3", "cp", "--recursive", "--quiet"])
            .arg(src)
            .arg(url),
    );
}

/// barge on `state` with the SAIO's S3 keys (its s3api as the source endpoint) and its
/// Swift account in the environment.
fn barge_saio(env: &Env, state: &Path) -> Command {
    barge_saio_via(env, state, &env["SAIO_S3_ENDPOINT"])
}

/// [`barge_saio`] with another S3 source endpoint (a fault proxy in front of the SAIO).
fn barge_saio_via(env: &Env, state: &Path, endpoint: &str) -> Command {
    let mut c = bin();
    c.arg("--state")
        .arg(state)
        .args(["--source-endpoint", endpoint])
        .env("AWS_ACCESS_KEY_ID", &env["SAIO_S3_ACCESS_KEY"])
        .env("AWS_SECRET_ACCESS_KEY", &env["SAIO_S3_SECRET_KEY"])
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env("ST_AUTH", &env["ST_AUTH"])
        .env("ST_USER", &env["ST_USER"])
        .env("ST_KEY", &env["ST_KEY"]);
    c
}

/// Migrates the tree `src` into `container` of the SAIO through a fresh state directory
/// beside it, objects above 2 MiB as SLOs of 1 MiB segments, with `extra` options.
fn migrate_as_slo(env: &Env, src: &Path, container: &str, extra: &[&str]) {
    let state = src.with_extension("state");
    init_small(&state, &[]);
    let o = barge_saio(env, &state)
        .args(["--large-threshold", "2MiB", "--slo-segment-size", "1MiB"])
        .args(extra)
        .args(["migrate", "--source"])
        .arg(src)
        .args(["--dest", &format!("swift://{container}")])
        .output()
        .expect("run barge");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

/// The SAIO's address, for a fault proxy in front of it.
fn saio_addr(env: &Env) -> std::net::SocketAddr {
    env["SAIO_S3_ENDPOINT"]
        .trim_start_matches("http://")
        .parse()
        .expect("SAIO address")
}

#[test]
fn faults_on_the_wire_are_retried_and_nothing_corrupt_is_recorded() {
    use common::proxy::{self, Fault};
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    // Small objects and some large enough for ranged GETs (5 MiB parts) and SLOs.
    for i in 0..40u64 {
        write(
            &src,
            format!("f/{i:03}").as_bytes(),
            &rand_bytes(300 + i, 10_000 + i as usize * 4_000),
        );
    }
    for i in 0..3u64 {
        write(
            &src,
            format!("big/{i}").as_bytes(),
            &rand_bytes(400 + i, 6_000_000 + i as usize * 500_000),
        );
    }
    let bucket = format!("faultsrc{}", std::process::id());
    s3_bucket_from(env, &format!("s3://{bucket}"), &src, 10);
    // One proxy in front of the SAIO, used for both sides (S3 source, Swift destination).
    let upstream = saio_addr(env);
    let p = proxy::start(
        upstream,
        vec![
            Fault::Pass,
            Fault::Reset,
            Fault::Pass,
            Fault::SlowDown,
            Fault::Truncate,
            Fault::Pass,
            Fault::ServerError,
            Fault::Stall,
            Fault::Pass,
            Fault::Truncate,
        ],
    );
    let via = format!("http://{}", p.addr);
    let state = t.path().join("state");
    init_small(&state, &[]);
    let container = format!("faultdst{}", std::process::id());
    let mut c = bin();
    c.arg("--state")
        .arg(&state)
        .args([
            "--json",
            "--stall-timeout",
            "1",
            "--source-endpoint",
            &via,
            "--part-size",
            "5MiB",
            "--large-threshold",
            "4MiB",
            "--slo-segment-size",
            "2MiB",
            "migrate",
            "--concurrency",
            "4",
            "--source",
            &format!("s3://{bucket}"),
            "--dest",
            &format!("swift://{container}"),
        ])
        .env("AWS_ACCESS_KEY_ID", &env["SAIO_S3_ACCESS_KEY"])
        .env("AWS_SECRET_ACCESS_KEY", &env["SAIO_S3_SECRET_KEY"])
        .env("AWS_REGION", "us-east-1")
        .env("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
        .env("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
        .env_remove("AWS_ENDPOINT_URL")
        .env("ST_AUTH", format!("{via}/auth/v1.0"))
        .env("ST_USER", &env["ST_USER"])
        .env("ST_KEY", &env["ST_KEY"]);
    let (code, err) = run_with_deadline(&mut c, Duration::from_secs(600));
    let counts = p.counts();
    eprintln!("proxy connections per fault: {counts:?}");
    // Objects a fault made fail for good are retried by the next run; the first run
    // usually finishes everything.
    let mut runs = 1;
    let mut code = code;
    while code != Some(0) && runs < 3 {
        eprintln!("run {runs} exited {code:?}:\n{err}");
        let (c2, _) = run_with_deadline(&mut c, Duration::from_secs(600));
        code = c2;
        runs += 1;
    }
    assert_eq!(
        code,
        Some(0),
        "migrate through the faulty proxy did not finish"
    );
    for f in [
        Fault::Reset,
        Fault::Stall,
        Fault::Truncate,
        Fault::SlowDown,
        Fault::ServerError,
    ] {
        assert!(
            counts.get(&f).copied().unwrap_or(0) > 0,
            "{f:?} never injected: {counts:?}"
        );
    }
    drop(p);
    let rep = ok(&barge(&state, &["--json", "report"]));
    let r = &json_doc(&rep, "report")["report"];
    assert_eq!(r["done"], true, "{rep}");
    assert_eq!(r["uploaded_twice"], 0, "{rep}");
    // Source ETags were checked on every fetch; nothing unchecked slipped through.
    assert!(r["checks"].get("unchecked").is_none(), "{rep}");
    assert_container_equals_tree(env, &container, &src);
    // The independent pass, straight to the servers: lists the source and the
    // destination, downloads everything and compares content hashes.
    let mut v = bin();
    v.arg("--state")
        .arg(&state)
        .args([
            "--json",
            "--source-endpoint",
            &env["SAIO_S3_ENDPOINT"],
            "verify",
            "--full",
            "--source",
            &format!("s3://{bucket}"),
            "--dest",
            &format!("swift://{container}"),
        ])
        .env("AWS_ACCESS_KEY_ID", &env["SAIO_S3_ACCESS_KEY"])
        .env("AWS_SECRET_ACCESS_KEY", &env["SAIO_S3_SECRET_KEY"])
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env("ST_AUTH", &env["ST_AUTH"])
        .env("ST_USER", &env["ST_USER"])
        .env("ST_KEY", &env["ST_KEY"]);
    let vo = ok(&v.output().unwrap());
    let vr = &json_doc(&vo, "verify")["verify"];
    assert_eq!(vr["source_listed"], 43, "{vo}");
    assert_eq!(vr["matched"], 43, "{vo}");
    // A new object and a changed one at the source: not done, named.
    must(
        aws_s3(env)
            .args(["s3", "cp", "-", &format!("s3://{bucket}/late/arrival")])
            .stdin(std::process::Stdio::null()),
    );
    let o = v.output().unwrap();
    assert_eq!(o.status.code(), Some(3));
    let vo = String::from_utf8_lossy(&o.stdout);
    assert!(vo.contains("late/arrival"), "{vo}");
}

/// Runs migrate from a local tree into a Swift container of the SAIO.
fn migrate_to_swift(env: &Env, state: &Path, src: &Path, container: &str) -> std::process::Output {
    migrate_to_swift_with(env, state, src, container, &[])
}

fn migrate_to_swift_with(
    env: &Env,
    state: &Path,
    src: &Path,
    container: &str,
    extra: &[&str],
) -> std::process::Output {
    bin()
        .arg("--state")
        .arg(state)
        .args(["--json", "migrate"])
        .args(extra)
        .arg("--source")
        .arg(src)
        .args(["--dest", &format!("swift://{container}")])
        .env("ST_AUTH", &env["ST_AUTH"])
        .env("ST_USER", &env["ST_USER"])
        .env("ST_KEY", &env["ST_KEY"])
        .output()
        .expect("run barge")
}

#[test]
fn a_flipped_byte_in_staging_is_fetched_again_from_the_source() {
    let env = saio();
    let t = tmp();
    let (state, src) = (t.path().join("state"), t.path().join("src"));
    for i in 0..6u64 {
        write(
            &src,
            format!("obj/{i}").as_bytes(),
            &rand_bytes(900 + i, 150_000 + i as usize * 10_000),
        );
    }
    init_small(&state, &[]);
    ok(&barge(
        &state,
        &["ingest", "--source", src.to_str().unwrap()],
    ));
    // Rot: one bit inside the first record's ciphertext of every segment.
    let segs = files_under(&state.join("staging"));
    assert!(!segs.is_empty());
    for seg in &segs {
        let mut b = std::fs::read(seg).unwrap();
        b[4096 + 48 + 5000] ^= 0x10;
        std::fs::write(seg, b).unwrap();
    }
    let container = format!("rot{}", std::process::id());
    let o = migrate_to_swift(env, &state, &src, &container);
    let out = ok(&o);
    // The first pass found the rot and dropped the staged copies; the second fetched
    // the objects again from the source and drained them.
    let rot: u64 = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["drain"]["rot"].as_u64())
        .sum();
    assert!(rot >= 1, "no object was found rotten:\n{out}");
    assert!(
        stderr(&o).contains("fetching them again from the source"),
        "{}",
        stderr(&o)
    );
    let r = json_doc(&out, "report");
    assert_eq!(r["report"]["done"], true, "{out}");
    assert_container_equals_tree(env, &container, &src);

    // Rot again, and this time the source no longer has the objects: they are reported
    // by name, and nothing corrupt reaches the destination.
    let t2 = tmp();
    let (state2, src2) = (t2.path().join("state"), t2.path().join("src"));
    write(&src2, b"only/copy", &rand_bytes(77, 200_000));
    init_small(&state2, &[]);
    ok(&barge(
        &state2,
        &["ingest", "--source", src2.to_str().unwrap()],
    ));
    for seg in files_under(&state2.join("staging")) {
        let mut b = std::fs::read(&seg).unwrap();
        b[4096 + 48 + 5000] ^= 0x10;
        std::fs::write(&seg, b).unwrap();
    }
    std::fs::remove_file(src2.join("only/copy")).unwrap();
    let container2 = format!("rotgone{}", std::process::id());
    let o = migrate_to_swift(env, &state2, &src2, &container2);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = barge(&state2, &["report"]);
    assert_eq!(o.status.code(), Some(3), "NOT DONE exits 3");
    let rep = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        rep.contains("only/copy") && rep.contains("staged copy is corrupt"),
        "{rep}"
    );
    let listing = swift_cli(env).args(["list", &container2]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&listing.stdout).contains("only/copy"),
        "nothing corrupt at the destination"
    );
}

#[test]
fn a_swift_quota_refusal_is_clear_and_the_run_resumes_when_raised() {
    let env = saio();
    let t = tmp();
    let (state, src) = (t.path().join("state"), t.path().join("src"));
    for i in 0..9u64 {
        write(
            &src,
            format!("q/{i}").as_bytes(),
            &rand_bytes(600 + i, 10_000),
        );
    }
    write(&src, b"q/big", &rand_bytes(650, 400_000));
    init_small(&state, &[]);
    let container = format!("quota{}", std::process::id());
    // Swift's container_quotas middleware: at most 300 kB in the container, so the
    // 400 kB object is always refused (the container's usage is updated lazily, so
    // small objects may slip under the quota).
    must(swift_cli(env).args(["post", "-m", "quota-bytes:300000", &container]));
    let o = migrate_to_swift(env, &state, &src, &container);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("q/big") && out.contains("413") && out.contains("quota exceeded or disk full"),
        "the refusal is named:\n{out}"
    );
    let r = json_doc(&out, "report");
    assert_eq!(r["report"]["done"], false);
    let drained = r["report"]["drained"].as_u64().unwrap();
    assert!((1..10).contains(&drained), "{out}");
    assert!(
        r["report"]["failures"].to_string().contains("q/big"),
        "{out}"
    );
    // The operator raises the quota; the same command finishes the job.
    must(swift_cli(env).args(["post", "-m", "quota-bytes:100000000", &container]));
    let out = ok(&migrate_to_swift(env, &state, &src, &container));
    let r = json_doc(&out, "report");
    assert_eq!(r["report"]["done"], true, "{out}");
    assert_eq!(r["report"]["uploaded_twice"], 0, "{out}");
    assert!(r["report"]["elapsed_secs"].is_u64() && r["report"]["busy_secs"].is_u64());
    assert_container_equals_tree(env, &container, &src);
}

#[test]
fn full_staging_stops_cleanly_then_drained_space_is_reclaimed_and_the_move_finishes() {
    let env = saio();
    let t = tmp();
    let (state, src) = (t.path().join("state"), t.path().join("src"));
    // 12 MiB of unique data through a 5 MiB staging drive.
    for i in 0..8u64 {
        write(
            &src,
            format!("obj-{i}").as_bytes(),
            &rand_bytes(700 + i, 1_500_000),
        );
    }
    let small = t.path().join("small-drive");
    std::fs::create_dir_all(&small).unwrap();
    let m = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=5M", "tmpfs"])
        .arg(&small)
        .output()
        .unwrap();
    assert!(
        m.status.success(),
        "the test suite runs as root (tmpfs staging drive): {}",
        String::from_utf8_lossy(&m.stderr)
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    init_small(&state, &["--staging", small.to_str().unwrap()]);
    let container = format!("full{}", std::process::id());
    // Each run stages until the drive is full (and stops cleanly, naming it), drains
    // what it staged; the next run reclaims the drained segments and goes on.
    let mut runs = vec![];
    let mut done = false;
    // One object at a time: a drive smaller than (objects in flight x their size) can
    // fill up with parts of several objects and complete none (see ARCHITECTURE.md).
    for _ in 0..8 {
        let o = migrate_to_swift_with(env, &state, &src, &container, &["--concurrency", "1"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let code = o.status.code();
        assert!(
            code == Some(0) || code == Some(3),
            "a full drive must not crash the run: {code:?}\n{}",
            stderr(&o)
        );
        let stopped = json_doc(&out, "ingest")["ingest"]["stopped_early"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if code == Some(3) {
            assert!(
                stopped.contains("full") && stopped.contains("small-drive"),
                "the stop names the drive: {out}"
            );
        }
        runs.push(stopped);
        if code == Some(0) {
            done = true;
            break;
        }
    }
    assert!(done, "the move never finished: {runs:?}");
    assert!(runs.len() >= 2, "the drive never filled up: {runs:?}");
    let rep = ok(&barge(&state, &["--json", "report"]));
    let r = &json_doc(&rep, "report")["report"];
    assert_eq!(r["done"], true, "{rep}");
    assert_eq!(r["uploaded_twice"], 0, "{rep}");
    assert_container_equals_tree(env, &container, &src);
    // Everything is drained: an explicit reclaim empties the drive.
    let rc = ok(&barge(&state, &["--json", "reclaim"]));
    assert_eq!(
        json_doc(&rc, "reclaim")["reclaim"]["segments_kept"],
        0,
        "{rc}"
    );
    assert!(files_under(&small).is_empty(), "staging emptied");
}

#[test]
fn a_destination_that_is_down_stops_the_drain_and_loses_nothing() {
    use common::proxy::{self, Fault};
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..60u64 {
        write(
            &src,
            format!("o/{i:03}").as_bytes(),
            &rand_bytes(700 + i, 5_000 + i as usize * 100),
        );
    }
    let state = t.path().join("state");
    init_small(&state, &[]);
    ok(&barge(
        &state,
        &["--quiet", "ingest", "--source", src.to_str().unwrap()],
    ));
    // Every request through the proxy is answered 500: the destination is "down".
    let upstream = saio_addr(env);
    let p = proxy::start(upstream, vec![Fault::ServerError]);
    let bucket = format!("downdst{}", std::process::id());
    let drain = |endpoint: &str| {
        let mut c = bin();
        c.arg("--state")
            .arg(&state)
            .args([
                "--json",
                "--down-after",
                "2",
                "--dest-endpoint",
                endpoint,
                "drain",
                "--dest",
                &format!("s3://{bucket}"),
            ])
            .env("AWS_ACCESS_KEY_ID", &env["SAIO_S3_ACCESS_KEY"])
            .env("AWS_SECRET_ACCESS_KEY", &env["SAIO_S3_SECRET_KEY"])
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL");
        c.output().expect("run barge")
    };
    let o = drain(&format!("http://{}", p.addr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(3), "NOT DONE: {out}{}", stderr(&o));
    let d = &json_doc(&out, "drain")["drain"];
    let why = d["stopped_early"].as_str().unwrap_or_default();
    assert!(
        why.contains("is down") && why.contains("run again when it answers"),
        "{d}"
    );
    // The run stopped taking objects: only those in flight when the endpoint was taken
    // for down failed; the others are still staged, none was lost.
    let rep = barge(&state, &["--json", "report"]);
    let rep = String::from_utf8_lossy(&rep.stdout);
    let r = &json_doc(&rep, "report")["report"];
    assert_eq!(r["drained"], 0, "{rep}");
    assert!(r["failed"].as_u64().unwrap() <= 8, "{rep}");
    assert!(r["staged"].as_u64().unwrap() >= 52, "{rep}");
    drop(p);
    // Back up: the next run drains everything.
    let o = drain(&env["SAIO_S3_ENDPOINT"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let got = t.path().join("got");
    must(
        aws_s3(env)
            .args([
                "s3",
                "cp",
                "--recursive",
                "--quiet",
                &format!("s3://{bucket}"),
            ])
            .arg(&got),
    );
    assert_same_tree(&src, &got);
}

/// Issue 15: "done" needs a whole listing. After a complete move, the next pass's
/// listing fails for good (every request answered 500): every object the catalog knows
/// is still drained, yet the report is NOT DONE naming the listing, and erase refuses.
/// A whole listing again makes it DONE.
#[test]
fn a_listing_that_fails_leaves_the_move_not_done_and_erase_refuses() {
    use common::proxy::{self, Fault};
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..40u64 {
        write(
            &src,
            format!("k{i:03}").as_bytes(),
            &rand_bytes(900 + i, 2_000 + i as usize * 50),
        );
    }
    let bucket = format!("listfail{}", std::process::id());
    let url = format!("s3://{bucket}");
    s3_bucket_from(env, &url, &src, 10);
    let state = t.path().join("state");
    init_small(&state, &[]);
    let out = t.path().join("out");
    let run = |endpoint: &str, cmd: &[&str]| {
        let mut c = bin();
        c.arg("--state")
            .arg(&state)
            .args(["--json", "--down-after", "2", "--source-endpoint", endpoint])
            .args(cmd)
            .env("AWS_ACCESS_KEY_ID", &env["SAIO_S3_ACCESS_KEY"])
            .env("AWS_SECRET_ACCESS_KEY", &env["SAIO_S3_SECRET_KEY"])
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL");
        c.output().expect("run barge")
    };
    let migrate = ["migrate", "--source", &url, "--dest", out.to_str().unwrap()];
    let o = run(&env["SAIO_S3_ENDPOINT"], &migrate);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tree(&src, &out);

    let upstream = saio_addr(env);
    let p = proxy::start(upstream, vec![Fault::ServerError]);
    let o = run(&format!("http://{}", p.addr), &["ingest", "--source", &url]);
    assert!(!o.status.success(), "a failed listing is not a success");
    let rep = barge(&state, &["--json", "report"]);
    assert_eq!(rep.status.code(), Some(3), "report exits 3 when NOT DONE");
    let text = String::from_utf8_lossy(&rep.stdout);
    let r = &json_doc(&text, "report")["report"];
    assert_eq!(r["done"], false, "{text}");
    assert_eq!(r["drained"], 40, "{text}");
    let verdict = r["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict.contains(&format!("the listing of {url}")) && verdict.contains("run ingest again"),
        "{verdict}"
    );
    let e = barge(&state, &["erase", "/nonexistent-drive"]);
    assert!(!e.status.success());
    let why = stderr(&e);
    assert!(
        why.contains("refusing to erase") && why.contains("listing"),
        "{why}"
    );
    drop(p);

    let o = run(&env["SAIO_S3_ENDPOINT"], &migrate);
    assert!(o.status.success(), "{}", stderr(&o));
    let rep = barge(&state, &["--json", "report"]);
    let text = String::from_utf8_lossy(&rep.stdout);
    assert_eq!(json_doc(&text, "report")["report"]["done"], true, "{text}");
}

/// The keys the server returned to ListObjectsV2 requests for `bucket` whose log line
/// comes at or after `from` (a line number of the proxy log), counted from each
/// request's `start-after` and `max-keys` against the bucket's sorted `keys` (the
/// bucket does not change while it is listed).
fn keys_listed(bucket: &str, keys: &[String], from: usize) -> (usize, usize) {
    let log = std::fs::read_to_string("/tmp/barge-saio/log/proxy.log").unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut n = 0;
    for l in lines.iter().skip(from) {
        let needle = format!("GET /{bucket}/%3Flist-type%3D2");
        let Some(at) = l.find(&needle) else { continue };
        let path = l[at + 4..].split(' ').next().unwrap_or("");
        let query = decode(path);
        let query = query.split_once('?').map(|q| q.1).unwrap_or("");
        let (mut max, mut after) = (1000, None);
        for kv in query.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "max-keys" => max = v.parse().unwrap_or(1000),
                "start-after" => after = Some(decode(v)),
                _ => {}
            }
        }
        let start = after.map_or(0, |a| keys.partition_point(|k| *k <= a));
        n += max.min(keys.len() - start);
    }
    (n, lines.len())
}

/// Issue 15: a listing killed halfway resumes from its checkpoint. 20,000 flat keys (no
/// `/`) in the SAIO's s3api, listed over parallel key ranges (the default); the ingest
/// SIGKILLs itself at the 14,000th listed object; the next run lists at most 60% of the
/// keys again (each ListObjectsV2 request in the server's log counted for the keys it
/// returned), then the move ends DONE, byte for byte.
#[test]
fn a_listing_killed_halfway_resumes_from_its_checkpoint() {
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..20_000u64 {
        write(
            &src,
            format!("k{i:05}").as_bytes(),
            &i.to_le_bytes().repeat(8),
        );
    }
    let bucket = format!("resume{}", std::process::id());
    let url = format!("s3://{bucket}");
    // The AWS CLI's default of 10 requests at once would take minutes.
    s3_bucket_from(env, &url, &src, 64);
    let state = t.path().join("state");
    init_small(&state, &[]);
    let run = |cmd: &[&str], crash: Option<&str>| {
        let mut c = bin();
        c.arg("--state")
            .arg(&state)
            .args(["--json", "--source-endpoint", &env["SAIO_S3_ENDPOINT"]])
            .args(cmd)
            .env("AWS_ACCESS_KEY_ID", &env["SAIO_S3_ACCESS_KEY"])
            .env("AWS_SECRET_ACCESS_KEY", &env["SAIO_S3_SECRET_KEY"])
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL");
        if let Some(at) = crash {
            c.env("BARGE_CRASH_AT", at);
        }
        c.output().expect("run barge")
    };
    let mut keys: Vec<String> = (0..20_000u64).map(|i| format!("k{i:05}")).collect();
    keys.sort();
    let (_, before) = keys_listed(&bucket, &keys, usize::MAX);
    let o = run(&["ingest", "--source", &url], Some("ingest.listed:14000"));
    assert!(!o.status.success(), "the crash point was not reached");
    let (first, after_first) = keys_listed(&bucket, &keys, before);
    assert!(first >= 14_000, "the killed run listed {first} keys");

    let out = t.path().join("out");
    let o = run(
        &["migrate", "--source", &url, "--dest", out.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (again, _) = keys_listed(&bucket, &keys, after_first);
    eprintln!("listed {first} keys before the kill, {again} after");
    assert!(
        (1..=12_000).contains(&again),
        "the resumed run listed {again} of 20,000 keys again"
    );
    assert_same_tree(&src, &out);
    let rep = barge(&state, &["--json", "report"]);
    let text = String::from_utf8_lossy(&rep.stdout);
    assert_eq!(json_doc(&text, "report")["report"]["done"], true, "{text}");
}

/// One row of a test inventory: (key, size, etag, is latest, is a delete marker).
type InvRow = (String, u64, String, bool, bool);

/// Writes an S3 Inventory the way AWS delivers it, under `root` (a copy of the bucket it
/// was delivered to): `inv/<bucket>/cfg/<date>/manifest.json` and `manifest.checksum`,
/// and one data file under `inv/<bucket>/cfg/data/`: CSV (gzip, every field quoted, keys
/// URL-encoded) or Parquet (written with the parquet crate, AWS's column names).
/// Returns the manifest's path and the data file's key.
fn write_inventory(root: &Path, bucket: &str, rows: &[InvRow], parquet: bool) -> (PathBuf, String) {
    use md5::{Digest, Md5};
    let data_key = format!(
        "inv/{bucket}/cfg/data/0f1e2d3c-{}.{}",
        if parquet { "pq" } else { "cv" },
        if parquet { "parquet" } else { "csv.gz" }
    );
    let data = if parquet {
        parquet_rows(bucket, rows)
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for (k, size, etag, latest, marker) in rows {
            let enc = percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%20", "+");
            let line = format!(
                "\"{bucket}\",\"{enc}\",\"v1\",\"{latest}\",\"{marker}\",\"{size}\",\"2026-11-29T00:00:00.000Z\",\"{etag}\"\n"
            );
            std::io::Write::write_all(&mut gz, line.as_bytes()).unwrap();
        }
        gz.finish().unwrap()
    };
    let path = root.join(&data_key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &data).unwrap();
    let manifest = serde_json::json!({
        "sourceBucket": bucket,
        "destinationBucket": "arn:aws:s3:::inventories",
        "version": "2016-11-30",
        "creationTimestamp": "1796000000000",
        "fileFormat": if parquet { "Parquet" } else { "CSV" },
        "fileSchema": if parquet {
            "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional binary version_id (UTF8); optional boolean is_latest; optional boolean is_delete_marker; optional int64 size; optional binary e_tag (UTF8); }"
        } else {
            "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"
        },
        "files": [{ "key": data_key, "size": data.len(), "MD5checksum": hex::encode(Md5::digest(&data)) }],
    });
    let text = serde_json::to_vec_pretty(&manifest).unwrap();
    let dir = root.join(format!("inv/{bucket}/cfg/2026-11-29T00-00Z"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.json"), &text).unwrap();
    std::fs::write(
        dir.join("manifest.checksum"),
        hex::encode(Md5::digest(&text)),
    )
    .unwrap();
    (dir.join("manifest.json"), data_key)
}

/// A Parquet data file with AWS's inventory columns.
fn parquet_rows(bucket: &str, rows: &[InvRow]) -> Vec<u8> {
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let schema = parquet::schema::parser::parse_message_type(
        "message s3_inventory { required binary bucket (UTF8); required binary key (UTF8); \
         required boolean is_latest; required boolean is_delete_marker; required int64 size; \
         required binary e_tag (UTF8); }",
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, Arc::new(schema), Arc::new(props)).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let bytes = |f: &dyn Fn(&InvRow) -> String| -> Vec<ByteArray> {
        rows.iter()
            .map(|r| ByteArray::from(f(r).as_str()))
            .collect()
    };
    let mut i = 0;
    while let Some(mut col) = rg.next_column().unwrap() {
        match i {
            0 => col.typed::<ByteArrayType>().write_batch(
                &bytes(&|_| bucket.to_string()),
                None,
                None,
            ),
            1 => col
                .typed::<ByteArrayType>()
                .write_batch(&bytes(&|r| r.0.clone()), None, None),
            2 => col.typed::<BoolType>().write_batch(
                &rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                None,
                None,
            ),
            3 => col.typed::<BoolType>().write_batch(
                &rows.iter().map(|r| r.4).collect::<Vec<_>>(),
                None,
                None,
            ),
            4 => col.typed::<Int64Type>().write_batch(
                &rows.iter().map(|r| r.1 as i64).collect::<Vec<_>>(),
                None,
                None,
            ),
            _ => col
                .typed::<ByteArrayType>()
                .write_batch(&bytes(&|r| r.2.clone()), None, None),
        }
        .unwrap();
        col.close().unwrap();
        i += 1;
    }
    rg.close().unwrap();
    w.close().unwrap();
    out
}

/// Issue 15: a bucket moved into Swift from its S3 Inventory (CSV.gz, then Parquet, from
/// a local copy of the inventory bucket; then CSV.gz from that bucket over s3://),
/// with no List request to the bucket (the server's log shows none). The inventory has
/// an object deleted since it was taken (counted as vanished, not failed), a delete
/// marker and an older version (neither moved), and keys with a space and a `+`.
/// A data file whose MD5 does not match the manifest is refused, naming the file.
#[test]
fn a_bucket_moves_into_swift_from_its_s3_inventory_csv_and_parquet() {
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..30u64 {
        write(
            &src,
            format!("d/f{i:02}").as_bytes(),
            &rand_bytes(i, 1000 + i as usize * 37),
        );
    }
    write(&src, b"d/sp ace+plus", b"a key CSV inventories URL-encode");
    let bucket = format!("inventoried{}", std::process::id());
    let url = format!("s3://{bucket}");
    s3_bucket_from(env, &url, &src, 16);
    // Rows from the bucket's own listing (ETags as S3 gives them), then the changes.
    let listed = must(aws_s3(env).args([
        "s3api",
        "list-objects-v2",
        "--bucket",
        &bucket,
        "--query",
        "Contents[].[Key, Size, ETag]",
        "--output",
        "json",
    ]));
    let listed: Vec<(String, u64, String)> = serde_json::from_str(&listed).unwrap();
    let mut rows: Vec<InvRow> = listed
        .into_iter()
        .map(|(k, s, e)| (k, s, e.trim_matches('"').to_string(), true, false))
        .collect();
    rows.push((
        "d/f03".into(),
        5,
        "0123456789abcdef0123456789abcdef".into(),
        false,
        false,
    ));
    rows.push(("d/deleted-before".into(), 0, String::new(), true, true));
    assert_eq!(rows.len(), 33);
    must(aws_s3(env).args(["s3", "rm", &format!("{url}/d/f07")]));
    std::fs::remove_file(src.join("d/f07")).unwrap();

    // CSV and Parquet from a local copy of the inventory bucket, then CSV read from the
    // inventory bucket itself (s3://).
    for (n, (parquet, in_s3)) in [(false, false), (true, false), (false, true)]
        .into_iter()
        .enumerate()
    {
        let inv = t.path().join(format!("inventory-{n}"));
        let (manifest, data_key) = write_inventory(&inv, &bucket, &rows, parquet);
        let inv_bucket = format!("s3://inventories{}", std::process::id());
        // Puts the local inventory tree (as it is now) into the inventory bucket.
        let publish = || {
            must(
                aws_s3(env)
                    .args(["s3", "cp", "--recursive", "--quiet"])
                    .arg(&inv)
                    .arg(&inv_bucket),
            );
        };
        let manifest = match in_s3 {
            false => manifest.display().to_string(),
            true => {
                must(aws_s3(env).args(["s3", "mb", &inv_bucket]));
                let rel = manifest.strip_prefix(&inv).unwrap().display().to_string();
                format!("{inv_bucket}/{rel}")
            }
        };
        let state = t.path().join(format!("state-{n}"));
        init_small(&state, &[]);
        let container = format!("inv{n}x{}", std::process::id());
        let log_lines = std::fs::read_to_string("/tmp/barge-saio/log/proxy.log")
            .map(|l| l.lines().count())
            .unwrap_or(0);
        let run = |manifest: &str| {
            barge_saio(env, &state)
                .args(["migrate", "--source", &url, "--inventory", manifest])
                .args(["--dest", &format!("swift://{container}")])
                .output()
                .expect("run barge")
        };
        // A damaged data file first: refused, naming it; nothing is moved.
        let path = inv.join(&data_key);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        std::fs::write(&path, &bad).unwrap();
        if in_s3 {
            publish();
        }
        let o = run(&manifest);
        assert!(!o.status.success(), "a damaged inventory was used");
        let err = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert!(err.contains(&data_key) && err.contains("MD5"), "{err}");
        let rep = barge(&state, &["--json", "report"]);
        let text = String::from_utf8_lossy(&rep.stdout);
        assert_eq!(json_doc(&text, "report")["report"]["done"], false, "{text}");

        std::fs::write(&path, &good).unwrap();
        if in_s3 {
            publish();
        }
        let o = run(&manifest);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{out}{}", stderr(&o));
        assert!(out.contains("1 listed objects had vanished"), "{out}");
        assert_container_equals_tree(env, &container, &src);
        let log = std::fs::read_to_string("/tmp/barge-saio/log/proxy.log").unwrap();
        let lists = log
            .lines()
            .skip(log_lines)
            .filter(|l| {
                l.contains(&format!("GET /{bucket}/%3F")) || l.contains(&format!("GET /{bucket}/ "))
            })
            .count();
        assert_eq!(
            lists, 0,
            "the bucket was listed although an inventory was given"
        );
        let rep = barge(&state, &["--json", "report"]);
        let text = String::from_utf8_lossy(&rep.stdout);
        assert_eq!(json_doc(&text, "report")["report"]["done"], true, "{text}");
    }
}

/// Issue 18: filters on a real listing (the SAIO's s3api into Swift): an exclude file
/// with a customer's prefix, an unanchored `*.log` and a size bound leave those objects
/// out; the filter is recorded, and verify against both listings counts what it left out
/// (even a copy of one already at the destination) neither missing nor extra.
#[test]
fn filters_leave_objects_out_of_a_real_listing_and_verify_agrees() {
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    for (k, n) in [
        ("keep/a.txt", 100usize),
        ("keep/b.jpg", 100),
        ("big/huge.bin", 200_000),
        ("customer-x/secret.bin", 100),
        ("customer-x/sub/y.txt", 100),
        ("logs/2024/app.log", 100),
        ("deep/x/app.log", 100),
    ] {
        write(&src, k.as_bytes(), &rand_bytes(n as u64, n));
    }
    let bucket = format!("filtered{}", std::process::id());
    let url = format!("s3://{bucket}");
    s3_bucket_from(env, &url, &src, 8);
    let excludes = t.path().join("excludes");
    std::fs::write(
        &excludes,
        "# customers whose keys were deleted\n/customer-x/**\n\n",
    )
    .unwrap();
    let state = t.path().join("state");
    init_small(&state, &[]);
    let container = format!("filtered-dest{}", std::process::id());
    let dest = format!("swift://{container}");
    let run = |args: &[&str]| {
        barge_saio(env, &state)
            .args(args)
            .output()
            .expect("run barge")
    };
    let o = run(&[
        "--exclude-from",
        excludes.to_str().unwrap(),
        "--exclude",
        "*.log",
        "--max-size",
        "100KiB",
        "migrate",
        "--source",
        &url,
        "--dest",
        &dest,
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("filter: 5 listed objects left out"), "{out}");
    let listed = must(swift_cli(env).args(["list", &container]));
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["keep/a.txt", "keep/b.jpg"]
    );
    // An excluded key already at the destination is not "extra".
    must(
        swift_cli(env)
            .current_dir(&src)
            .args(["upload", &container, "customer-x/secret.bin"]),
    );
    let o = run(&["verify", "--dest", &dest, "--source", &url]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let rep = run(&["report"]);
    let text = String::from_utf8_lossy(&rep.stdout).into_owned();
    assert!(
        text.contains("filter      exclude *.log /customer-x/**; at most 102400 bytes"),
        "{text}"
    );
    assert!(text.contains("verdict     DONE"), "{text}");
}

/// Issue 18: an object needing more SLO segments than the cluster allows (the SAIO's
/// `max_manifest_segments` is 16; 40 MiB at `--slo-segment-size 1MiB` would be 40) is
/// written with segments grown to fit (3 MiB, 14 of them, the limit read from `/info`),
/// and downloads equal to its source.
#[test]
fn an_object_needing_too_many_slo_segments_gets_larger_ones() {
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    write(&src, b"huge/forty", &rand_bytes(40, 40 << 20));
    let container = format!("grown{}", std::process::id());
    migrate_as_slo(env, &src, &container, &[]);
    // Segment names carry the object's size and the segment size barge chose.
    let segs = must(swift_cli(env).args(["list", &format!("{container}_segments")]));
    let names: Vec<&str> = segs
        .lines()
        .filter(|l| l.contains("huge/forty/slo/"))
        .collect();
    assert_eq!(names.len(), 14, "{segs}");
    let grown = format!("huge/forty/slo/{}/{}/", 40u64 << 20, 3u64 << 20);
    assert!(names.iter().all(|n| n.starts_with(&grown)), "{segs}");
    assert_container_equals_tree(env, &container, &src);
}

/// Issue 18: no leftovers in Swift. A drain killed in the middle of an SLO upload leaves
/// segments; the object then changes at the source (so the retry writes segments of
/// other names); the next drain deletes the orphans it journaled and leaves only the new
/// object's segments.
#[test]
fn orphan_slo_segments_of_a_killed_upload_are_deleted_by_the_next_drain() {
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    write(&src, b"big", &rand_bytes(61, 6 << 20));
    let state = t.path().join("state");
    init_small(&state, &[]);
    let container = format!("orphans{}", std::process::id());
    let run = |cmd: &[&str], crash: Option<&str>| {
        let mut c = barge_saio(env, &state);
        c.args(["--large-threshold", "2MiB", "--slo-segment-size", "1MiB"])
            .args(cmd);
        if let Some(p) = crash {
            c.env("BARGE_CRASH_AT", p);
        }
        c.output().expect("run barge")
    };
    let s = src.to_str().unwrap();
    let dest = format!("swift://{container}");
    assert!(run(&["ingest", "--source", s], None).status.success());
    let o = run(&["drain", "--dest", &dest], Some("swift.after_segment:2"));
    assert!(o.status.code().is_none(), "the crash point was not reached");
    let segments = || {
        must(swift_cli(env).args(["list", &format!("{container}_segments")]))
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let before = segments();
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before
            .iter()
            .all(|n| n.starts_with(&format!("big/slo/{}/", 6 << 20)))
    );
    // The object changes size at the source: the retry writes other segment names.
    write(&src, b"big", &rand_bytes(62, 5 << 20));
    let o = run(&["migrate", "--source", s, "--dest", &dest], None);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let after = segments();
    assert_eq!(after.len(), 5, "{after:?}");
    assert!(
        after
            .iter()
            .all(|n| n.starts_with(&format!("big/slo/{}/", 5 << 20))),
        "{after:?}"
    );
    assert_container_equals_tree(env, &container, &src);
}

/// Issue 18: a very large object as a nested SLO. With segments capped at 1 MiB
/// (`--slo-max-segment-size`, standing in for a cluster's `max_file_size`) and the SAIO's
/// 16 segments per manifest, 40 MiB needs 40 segments: barge writes 3 sub-manifests
/// (16, 16, 8 segments) under one top manifest, and the object downloads equal.
#[test]
fn an_object_beyond_one_manifest_is_written_as_a_nested_slo() {
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    write(&src, b"nested/forty", &rand_bytes(41, 40 << 20));
    let container = format!("nested{}", std::process::id());
    migrate_as_slo(env, &src, &container, &["--slo-max-segment-size", "1MiB"]);
    let segs = must(swift_cli(env).args(["list", &format!("{container}_segments")]));
    let prefix = format!("nested/forty/slo/{}/{}/", 40u64 << 20, 1u64 << 20);
    let names: Vec<&str> = segs.lines().filter(|l| l.starts_with(&prefix)).collect();
    let subs = names
        .iter()
        .filter(|n| n[prefix.len()..].starts_with('m'))
        .count();
    assert_eq!((names.len() - subs, subs), (40, 3), "{segs}");
    assert_container_equals_tree(env, &container, &src);
}

/// Runs one `barge --json sync --passes 1` (or another command) from `bucket_url` into
/// Swift `container` of the SAIO; returns the exit code and stdout.
fn saio_sync(
    env: &Env,
    state: &Path,
    endpoint: Option<&str>,
    args: &[&str],
) -> (Option<i32>, String) {
    let mut c = match endpoint {
        Some(e) => barge_saio_via(env, state, e),
        None => barge_saio(env, state),
    };
    c.args(["--down-after", "2"]);
    let o = c
        .args([
            "--large-threshold",
            "2MiB",
            "--slo-segment-size",
            "1MiB",
            "--json",
        ])
        .args(args)
        .output()
        .expect("run barge");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.code().is_some_and(|c| c == 0 || c == 3),
        "barge {args:?} failed ({:?}): {out}{}",
        o.status,
        stderr(&o)
    );
    (o.status.code(), out)
}

fn pass_counts(out: &str) -> [u64; 4] {
    let r = &json_doc(out, "pass")["record"];
    ["new", "changed", "deleted", "unchanged"].map(|k| r[k].as_u64().unwrap())
}

/// Issue 16: a bucket in the SAIO's s3api followed into Swift. Pass 1 moves it; then
/// objects are overwritten (same size other content; another size, an SLO), deleted
/// (one of them an SLO, whose segments must go too), added and one renamed; pass 2
/// makes the container equal to the changed bucket (downloaded with the swift CLI)
/// and records the counts; cutover ends DONE with the digest computed here from the
/// objects' contents.
#[test]
fn sync_follows_a_changing_bucket_into_swift_until_cutover() {
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..24u64 {
        let key = if i % 3 == 0 {
            format!("flat-{i:03}")
        } else {
            format!("d{}/o{i:03}", i % 4)
        };
        write(
            &src,
            key.as_bytes(),
            &rand_bytes(2_000 + i, 1_000 + i as usize * 700),
        );
    }
    write(&src, b"big/changes", &rand_bytes(2_100, 3_000_000));
    write(&src, b"big/goes", &rand_bytes(2_101, 2_500_000));
    let pid = std::process::id();
    let bucket = format!("syncsrc{pid}");
    let url = format!("s3://{bucket}");
    s3_bucket_from(env, &url, &src, 10);
    let container = format!("syncdst{pid}");
    let dest = format!("swift://{container}");
    let state = t.path().join("state");
    init_small(&state, &[]);
    let sync = ["sync", "--passes", "1", "--source", &url, "--dest", &dest];
    let (code, out) = saio_sync(env, &state, None, &sync);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(pass_counts(&out), [26, 0, 0, 0]);
    assert_container_equals_tree(env, &container, &src);

    // The source changes, through the S3 API, and the local tree mirrors it.
    let put = |key: &str, data: &[u8]| {
        let p = write(&src, key.as_bytes(), data);
        must(
            aws_s3(env)
                .args(["s3", "cp", "--quiet"])
                .arg(&p)
                .arg(format!("{url}/{key}")),
        );
    };
    let rm = |key: &str| {
        std::fs::remove_file(src.join(key)).unwrap();
        must(aws_s3(env).args(["s3", "rm", "--quiet", &format!("{url}/{key}")]));
    };
    put("d1/o001", &rand_bytes(3_000, 1_700)); // same size, other content
    put("big/changes", &rand_bytes(3_001, 2_200_000)); // another size, still an SLO
    rm("flat-003");
    rm("big/goes");
    put("new/one", b"added after pass 1");
    std::fs::create_dir_all(src.join("moved")).unwrap();
    std::fs::rename(src.join("d2/o002"), src.join("moved/o002")).unwrap();
    must(aws_s3(env).args([
        "s3",
        "mv",
        "--quiet",
        &format!("{url}/d2/o002"),
        &format!("{url}/moved/o002"),
    ]));

    let mut sync2 = sync.to_vec();
    sync2.extend(["--max-delete", "3"]);
    let (code, out) = saio_sync(env, &state, None, &sync2);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        pass_counts(&out),
        [2, 2, 3, 21],
        "new, changed, deleted, unchanged: {out}"
    );
    assert_container_equals_tree(env, &container, &src);
    let segs = must(swift_cli(env).args([
        "list",
        &format!("{container}_segments"),
        "--prefix",
        "big/goes/",
    ]));
    assert!(
        segs.trim().is_empty(),
        "segments of a deleted SLO are left: {segs}"
    );

    let (code, out) = saio_sync(
        env,
        &state,
        None,
        &[
            "cutover",
            "--full",
            "--publish",
            "--source",
            &url,
            "--dest",
            &dest,
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let c = &json_doc(&out, "certificate")["certificate"];
    assert_eq!(c["done"], true, "{out}");
    assert_eq!(c["objects"], 25);
    assert_eq!(c["digest"]["value"].as_str().unwrap(), tree_digest(&src));
    let published = must(swift_cli(env).args([
        "download",
        &container,
        ".barge/cutover-certificate.json",
        "-o",
        "-",
    ]));
    let published: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert_eq!(published["digest"], c["digest"]);
}

/// Issue 16: a pass whose listing fails deletes nothing (the objects gone from the
/// source stay at the destination, and the pass says why); the next pass with a whole
/// listing deletes them.
#[test]
fn a_sync_pass_whose_listing_fails_deletes_nothing() {
    use common::proxy::{self, Fault};
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..30u64 {
        write(
            &src,
            format!("k{i:03}").as_bytes(),
            &rand_bytes(4_000 + i, 1_500),
        );
    }
    let bucket = format!("synclistfail{}", std::process::id());
    let url = format!("s3://{bucket}");
    s3_bucket_from(env, &url, &src, 10);
    let out_dir = t.path().join("out");
    let state = t.path().join("state");
    init_small(&state, &[]);
    let sync = [
        "sync",
        "--passes",
        "1",
        "--max-delete",
        "100%",
        "--source",
        &url,
        "--dest",
        out_dir.to_str().unwrap(),
    ];
    let (code, _) = saio_sync(env, &state, None, &sync);
    assert_eq!(code, Some(0));
    for i in 0..10 {
        let key = format!("k{i:03}");
        std::fs::remove_file(src.join(&key)).unwrap();
        must(aws_s3(env).args(["s3", "rm", "--quiet", &format!("{url}/{key}")]));
    }
    let p = proxy::start(saio_addr(env), vec![Fault::ServerError]);
    let (code, out) = saio_sync(env, &state, Some(&format!("http://{}", p.addr)), &sync);
    drop(p);
    assert_eq!(code, Some(3), "{out}");
    let r = &json_doc(&out, "pass")["record"];
    assert_eq!(r["listing_complete"], false, "{out}");
    assert!(
        r["deletions"].as_str().unwrap().starts_with("skipped:"),
        "{out}"
    );
    assert_eq!(r["deleted"], 0);
    assert_eq!(
        files_under(&out_dir).len(),
        30,
        "a failed listing deleted something"
    );

    let (code, out) = saio_sync(env, &state, None, &sync);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(json_doc(&out, "pass")["record"]["deleted"], 10);
    assert_same_tree(&src, &out_dir);
}

/// Issue 27 item 7: a sync deletes at a Swift destination only what barge wrote. After
/// pass 1, a third party overwrites one barge object with its own (the swift CLI, same
/// size) and replaces barge's SLO with its own SLO (the swift CLI's segments, in the
/// same `_segments` container); the source then deletes both keys and a third. Pass 2
/// deletes the third, keeps the two (counted and named) with the SLO's segments, and
/// a pass 3 leaves them alone (forgotten).
#[test]
fn a_sync_keeps_what_a_third_party_wrote_at_barge_s_keys_in_swift() {
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    write(&src, b"plain", &rand_bytes(5_100, 4_000));
    write(&src, b"big/slo", &rand_bytes(5_101, 3_000_000));
    write(&src, b"mine", &rand_bytes(5_102, 2_000));
    write(&src, b"stays", &rand_bytes(5_103, 1_000));
    let container = format!("keepforeign{}", std::process::id());
    let dest = format!("swift://{container}");
    let state = t.path().join("state");
    init_small(&state, &[]);
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
    let (code, out) = saio_sync(env, &state, None, &sync);
    assert_eq!(code, Some(0), "{out}");
    let segs = |prefix: &str| {
        must(swift_cli(env).args(["list", &format!("{container}_segments"), "--prefix", prefix]))
    };
    assert!(!segs("big/slo/").trim().is_empty(), "pass 1 wrote no SLO");

    // The third party: the same size with other bytes, and an SLO of its own.
    let theirs = t.path().join("theirs");
    let plain = write(&theirs, b"plain", &rand_bytes(5_200, 4_000));
    let slo = write(&theirs, b"slo", &rand_bytes(5_201, 2_500_000));
    must(
        swift_cli(env)
            .current_dir(&theirs)
            .args(["upload", &container, "plain"]),
    );
    must(swift_cli(env).current_dir(&theirs).args([
        "upload",
        "--use-slo",
        "--segment-size",
        "1048576",
        "--object-name",
        "big/slo",
        &container,
        "slo",
    ]));
    let their_segs = segs("big/slo/");
    assert!(
        !their_segs.trim().is_empty(),
        "the swift CLI wrote no segments"
    );
    for k in ["plain", "big/slo", "mine"] {
        std::fs::remove_file(src.join(k)).unwrap();
    }

    let (code, out) = saio_sync(env, &state, None, &sync);
    assert_eq!(code, Some(0), "{out}");
    let d = &json_doc(&out, "pass")["deletions"];
    assert_eq!(
        (d["deleted"].as_u64(), d["kept_foreign"].as_u64()),
        (Some(1), Some(2)),
        "{out}"
    );
    let mut kept: Vec<&str> = d["kept_foreign_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k[0].as_str().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, ["big/slo", "plain"], "{out}");
    let download = |name: &str| {
        let to = t.path().join(name.replace('/', "_"));
        must(
            swift_cli(env)
                .args(["download", &container, name, "-o"])
                .arg(&to),
        );
        std::fs::read(&to).unwrap()
    };
    assert_eq!(download("plain"), std::fs::read(&plain).unwrap());
    assert_eq!(download("big/slo"), std::fs::read(&slo).unwrap());
    assert_eq!(
        segs("big/slo/"),
        their_segs,
        "the third party's segments changed"
    );
    let listed = must(swift_cli(env).args(["list", &container]));
    assert!(!listed.lines().any(|l| l == "mine"), "{listed}");

    // Forgotten: the next pass leaves them alone.
    let (code, out) = saio_sync(env, &state, None, &sync);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(json_doc(&out, "pass")["record"]["deleted"], 0, "{out}");
    assert_eq!(download("plain"), std::fs::read(&plain).unwrap());
}

/// Issue 27 item 7: one GET answered 404 (by the fault proxy in front of the source's
/// s3api) in a pass that fetches changed objects is not taken for a deletion: a HEAD
/// finds the object, it fails for this pass, nothing is deleted at the destination,
/// and the next pass moves it.
#[test]
fn one_404_at_fetch_in_a_sync_pass_deletes_nothing() {
    use common::proxy::{self, Fault};
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..12u64 {
        write(
            &src,
            format!("k{i:03}").as_bytes(),
            &rand_bytes(6_000 + i, 1_500),
        );
    }
    let bucket = format!("sync404{}", std::process::id());
    let url = format!("s3://{bucket}");
    s3_bucket_from(env, &url, &src, 10);
    let out_dir = t.path().join("out");
    let state = t.path().join("state");
    init_small(&state, &[]);
    let sync = [
        "sync",
        "--passes",
        "1",
        "--max-delete",
        "100%",
        "--source",
        &url,
        "--dest",
        out_dir.to_str().unwrap(),
    ];
    let (code, out) = saio_sync(env, &state, None, &sync);
    assert_eq!(code, Some(0), "{out}");
    // Every object changes, so pass 2 fetches each of them.
    for i in 0..12u64 {
        let key = format!("k{i:03}");
        let p = write(&src, key.as_bytes(), &rand_bytes(6_100 + i, 1_600));
        must(
            aws_s3(env)
                .args(["s3", "cp", "--quiet"])
                .arg(&p)
                .arg(format!("{url}/{key}")),
        );
    }
    let p = proxy::start(saio_addr(env), vec![Fault::NotFoundOnce]);
    let (code, out) = saio_sync(env, &state, Some(&format!("http://{}", p.addr)), &sync);
    let fired = p.not_found();
    drop(p);
    assert!(fired.is_some(), "the proxy answered no GET with 404: {out}");
    assert_eq!(code, Some(3), "{out}");
    let r = &json_doc(&out, "pass")["record"];
    assert_eq!(
        (
            r["deleted"].as_u64(),
            r["vanished"].as_u64(),
            r["failed"].as_u64()
        ),
        (Some(0), Some(0), Some(1)),
        "{fired:?}: {out}"
    );
    assert_eq!(
        files_under(&out_dir).len(),
        12,
        "a 404 at fetch deleted an object"
    );

    let (code, out) = saio_sync(env, &state, None, &sync);
    assert_eq!(code, Some(0), "{out}");
    assert_same_tree(&src, &out_dir);
}

/// A child process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 17: one bucket (3,000 keys, a flat part and a tree) moved into Swift by three
/// shards of a plan, run as three processes with their own state and staging. Each
/// shard's ListObjects requests cover its range and little more (counted from the
/// server's log, the shards run one after the other); the fleet report is NOT DONE,
/// naming the shard, until the last shard ran; that shard, killed with SIGKILL, finishes
/// its share when run again; the union of the moves is exactly the bucket and no object
/// was written twice. The shards' reports carry a MAC under the fleet key (from the
/// environment); a forged `.barge/<plan>/shard-1.json` saying DONE, put in the bucket,
/// is refused by shard 0's listing and named in the fleet's verdict (issue 27).
#[test]
fn three_shards_move_one_bucket_and_the_fleet_has_one_verdict() {
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    let mut keys = vec![];
    for i in 0..3_000u64 {
        let key = if i < 1_800 {
            format!("f{i:05}")
        } else {
            format!("d{:02}/o{i:05}", i % 12)
        };
        write(&src, key.as_bytes(), &i.to_le_bytes().repeat(4));
        keys.push(key);
    }
    keys.sort();
    let pid = std::process::id();
    let bucket = format!("fleet{pid}");
    let url = format!("s3://{bucket}");
    s3_bucket_from(env, &url, &src, 64);
    let container = format!("fleetdst{pid}");
    let dest = format!("swift://{container}");

    let plan = t.path().join("plan.json");
    let key_file = t.path().join("fleet.key");
    let o = barge_saio(env, &t.path().join("unused"))
        .args(["plan", "--shards", "3", "--source", &url, "--out"])
        .arg(&plan)
        .arg("--new-fleet-key")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The nodes and the watcher take the key from the environment, as from a Secret.
    let key = std::fs::read_to_string(&key_file).unwrap();
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let counts: Vec<u64> = (0..3)
        .map(|i| p["shards"][i]["objects"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1000, 1000, 1000], "{p}");
    let state = |i: u32| t.path().join(format!("state-{i}"));
    for i in 0..3 {
        init_small(&state(i), &[]);
    }
    let node = |i: u32| {
        let mut c = barge_saio(env, &state(i));
        c.arg("--plan")
            .arg(&plan)
            .args(["--json", "migrate", "--source", &url, "--dest", &dest]);
        c.env("JOB_COMPLETION_INDEX", i.to_string())
            .env("BARGE_FLEET_KEY", &key);
        c
    };
    let fleet = || {
        let o = barge_saio(env, &state(0))
            .env("BARGE_FLEET_KEY", &key)
            .arg("--plan")
            .arg(&plan)
            .args(["--json", "report", "--fleet", &dest])
            .output()
            .unwrap();
        (
            o.status.code(),
            json_doc(&String::from_utf8_lossy(&o.stdout), "fleet")["fleet"].clone(),
        )
    };
    let log_lines = || keys_listed(&bucket, &keys, usize::MAX).1;
    for i in [0u32, 2] {
        let from = log_lines();
        let o = node(i).output().unwrap();
        assert!(o.status.success(), "shard {i}: {}", stderr(&o));
        let (listed, _) = keys_listed(&bucket, &keys, from);
        eprintln!(
            "shard {i}: {listed} keys listed for {} in its range",
            counts[i as usize]
        );
        assert!(
            listed as f64 <= 1.1 * counts[i as usize] as f64,
            "shard {i} listed {listed} keys for a range of {}",
            counts[i as usize]
        );
    }
    // A node watching the fleet serves its verdict at /metrics.
    let watch_state = t.path().join("watch");
    let mut watcher = Killed(
        barge_saio(env, &watch_state)
            .env("BARGE_FLEET_KEY", &key)
            .arg("--plan")
            .arg(&plan)
            .args(["report", "--fleet", &dest, "--watch", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let plan_id = p["id"].as_str().unwrap().to_string();
    let scrape = |want: &str| {
        let sock = watch_state.join("barge.sock");
        let t0 = std::time::Instant::now();
        loop {
            let got = barge_tui::client::request(
                &barge_tui::client::Target::Unix(sock.clone()),
                "GET",
                "/metrics",
            )
            .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
            if got.contains(want) {
                return got;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no {want} in /metrics: {got}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    scrape(&format!(
        "barge_fleet_shards{{plan=\"{plan_id}\",state=\"missing\"}} 1"
    ));
    scrape(&format!("barge_fleet_done{{plan=\"{plan_id}\"}} 0"));
    let (code, f) = fleet();
    assert_eq!(code, Some(3), "{f}");
    assert_eq!(f["done"], false);
    let verdict = f["verdict"].as_str().unwrap();
    assert!(verdict.contains("shard 1 has not reported"), "{verdict}");
    assert!(!verdict.contains("shard 0"), "{verdict}");

    // A state directory belongs to its shard.
    let o = barge_saio(env, &state(0))
        .arg("--plan")
        .arg(&plan)
        .args(["--shard", "1", "migrate", "--source", &url, "--dest", &dest])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("belongs to shard 0 of 3 of plan"),
        "{}",
        stderr(&o)
    );

    // Shard 1 is killed midway, then run again.
    let o = node(1)
        .env("BARGE_CRASH_AT", "ingest.after_object:300")
        .output()
        .unwrap();
    assert!(
        o.status.code().is_none(),
        "the crash point was not reached: {}",
        stderr(&o)
    );
    let o = node(1).output().unwrap();
    assert!(o.status.success(), "shard 1 again: {}", stderr(&o));
    // Issue 27: a forged report of shard 1 saying DONE, put in the bucket once every
    // shard ran (in shard 0's range, "." sorts first), and shard 0 run again: its
    // listing refuses and names it, it never reaches the destination.
    let forged = t.path().join("forged.json");
    let doc = serde_json::json!({
        "report_version": 2, "plan_id": p["id"], "shard": 1, "shards": 3, "source": url,
        "destination": dest, "started": p["created"], "unix": p["created"], "done": true,
        "verdict": "DONE", "objects": 1000, "drained": 1000, "failed": 0, "bytes": 1,
        "left_out": 0, "left_out_entries": [],
        "digest": {"objects": 1000, "bytes": 1, "unhashed": 0, "value": "00"}
    });
    std::fs::write(&forged, doc.to_string()).unwrap();
    let forged_key = format!(".barge/{}/shard-1.json", p["id"].as_str().unwrap());
    must(
        aws_s3(env)
            .args(["s3", "cp"])
            .arg(&forged)
            .arg(format!("{url}/{forged_key}")),
    );

    let o = node(0).output().unwrap();
    assert!(o.status.success(), "shard 0 again: {}", stderr(&o));
    let (code, f) = fleet();
    assert_eq!(code, Some(0), "{f}");
    assert_eq!(f["done"], true);
    assert_eq!(f["objects"], 3000);
    assert_eq!(f["left_out"], 1, "the forged report, named by shard 0: {f}");
    let left = &f["shards"][0]["report"]["left_out_entries"][0];
    assert_eq!(left["key"], forged_key.as_str(), "{f}");
    let m = scrape(&format!("barge_fleet_done{{plan=\"{plan_id}\"}} 1"));
    assert!(m.ends_with("# EOF\n"), "{m}");
    let _ = watcher.0.kill();

    // The union is exactly the bucket; every object was written once.
    let mut drained = 0;
    for i in 0..3 {
        let r = ok(&barge(&state(i), &["--json", "report"]));
        let r = &json_doc(&r, "report")["report"];
        assert_eq!(r["uploaded_twice"], 0, "shard {i}");
        drained += r["drained"].as_u64().unwrap() + r["verified"].as_u64().unwrap();
    }
    assert_eq!(drained, 3000, "the shards' objects add up to the bucket");
    let got = t.path().join("got");
    let o = swift_cli(env)
        .args(["download", &container, "-D"])
        .arg(&got)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reports = got.join(".barge").join(p["id"].as_str().unwrap());
    for i in 0..3 {
        assert!(
            reports.join(format!("shard-{i}.json")).exists(),
            "shard {i} report"
        );
    }
    std::fs::remove_dir_all(got.join(".barge")).unwrap();
    assert_same_tree(&src, &got);
}

/// Issue 17 with a Swift source: each shard lists only its range of the container
/// (`marker` inside it: no key outside the range reaches the node), and the shards'
/// moves into one directory make the whole container.
#[test]
fn shards_of_a_swift_container_list_only_their_ranges() {
    let env = saio();
    let t = tmp();
    let src = t.path().join("src");
    for i in 0..300u64 {
        let key = if i % 2 == 0 {
            format!("flat{i:04}")
        } else {
            format!("p{}/o{i:04}", i % 5)
        };
        write(&src, key.as_bytes(), &rand_bytes(6_000 + i, 500));
    }
    let container = format!("swshards{}", std::process::id());
    migrate_as_slo(env, &src, &container, &[]);
    let url = format!("swift://{container}");
    let plan = t.path().join("plan.json");
    let o = barge_saio(env, &t.path().join("unused"))
        .args(["plan", "--shards", "3", "--source", &url, "--out"])
        .arg(&plan)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = t.path().join("out");
    for i in 0..3u32 {
        let state = t.path().join(format!("state-{i}"));
        init_small(&state, &[]);
        let o = barge_saio(env, &state)
            .arg("--plan")
            .arg(&plan)
            .args([
                "--shard",
                &i.to_string(),
                "--json",
                "migrate",
                "--source",
                &url,
                "--dest",
            ])
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "shard {i}: {text}{}", stderr(&o));
        let ing = &json_doc(&text, "ingest")["ingest"];
        assert_eq!(ing["staged"], 100, "shard {i}: {text}");
        assert_eq!(
            ing["outside_shard"], 0,
            "shard {i} was sent keys of another range: {text}"
        );
    }
    std::fs::remove_dir_all(out.join(".barge")).unwrap();
    assert_same_tree(&src, &out);
}

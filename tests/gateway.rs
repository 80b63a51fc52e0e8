//! `barge gateway` against real servers with a real client: the SAIO's s3api is the
//! source, Ceph radosgw's S3 the destination, awscli the application. The same reads
//! are checked before any pass (everything at the source) and after a pass (everything
//! moved); writes and deletes made through the gateway are never undone by the pass.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::gateway::*;
use common::servers::{ceph, saio};
use common::*;

#[test]
fn reads_follow_the_move_and_writes_and_deletes_through_the_gateway_stay() {
    let (s, c) = (saio(), ceph());
    let t = tmp();
    let src_bucket = format!("gwsrc{}", std::process::id());
    let dst_bucket = format!("gwdst{}", std::process::id());
    let src = || {
        aws(
            &s["SAIO_S3_ENDPOINT"],
            &s["SAIO_S3_ACCESS_KEY"],
            &s["SAIO_S3_SECRET_KEY"],
        )
    };
    let dst = || {
        aws(
            &c["CEPH_S3_ENDPOINT"],
            &c["CEPH_S3_ACCESS_KEY"],
            &c["CEPH_S3_SECRET_KEY"],
        )
    };
    run_ok(src().args(["s3", "mb", &format!("s3://{src_bucket}")]));
    run_ok(dst().args(["s3", "mb", &format!("s3://{dst_bucket}")]));
    // The source: small, awkward names, and one multipart object (awscli, 8 MiB parts).
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.txt", rand_bytes(1, 2048)),
        ("dir/&+-é\"x", rand_bytes(2, 777)),
        ("dir/with space", rand_bytes(3, 10)),
        ("pct%41", vec![]),
        ("big", rand_bytes(4, 10 << 20)),
        ("gone", rand_bytes(5, 100)),
        ("over", rand_bytes(6, 100)),
    ];
    let up = t.path().join("up");
    for (k, v) in &files {
        let p = write(&up, k.as_bytes(), v);
        run_ok(
            src()
                .args(["s3", "cp"])
                .arg(&p)
                .arg(format!("s3://{src_bucket}/{k}")),
        );
    }
    let source_view: Vec<(String, u64)> = files
        .iter()
        .map(|(k, _)| {
            let (e, n, _) = seen(src, &src_bucket, k);
            (e, n)
        })
        .collect();
    // The gateway's own credentials (the application's), 0600.
    let creds = t.path().join("gateway-keys");
    std::fs::write(&creds, "APPKEY appsecret\n").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sides = Sides {
        state: t.path().join("state"),
        files: profiles(
            t.path(),
            (&s["SAIO_S3_ACCESS_KEY"], &s["SAIO_S3_SECRET_KEY"]),
            (&c["CEPH_S3_ACCESS_KEY"], &c["CEPH_S3_SECRET_KEY"]),
        ),
        src_ep: s["SAIO_S3_ENDPOINT"].clone(),
        dst_ep: c["CEPH_S3_ENDPOINT"].clone(),
    };
    init_small(&sides.state, &[]);
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let app = || aws(&endpoint, "APPKEY", "appsecret");
    let serve = |passes: &str| {
        start(
            &sides,
            &[
                "gateway",
                "--source",
                &format!("s3://{src_bucket}"),
                "--dest",
                &format!("s3://{dst_bucket}"),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--credentials",
                creds.to_str().unwrap(),
                "--passes",
                passes,
            ],
            port,
        )
    };

    // State 1: nothing moved. Every read falls through to the source, as the source has it.
    let gw = serve("0");
    for ((k, v), (etag, n)) in files.iter().zip(&source_view) {
        let (e, len, body) = seen(app, &src_bucket, k);
        assert_eq!(
            (&e, len),
            (etag, *n),
            "{k} through the gateway, nothing moved"
        );
        assert_eq!(&body, v, "{k}");
    }
    // A range, and a wrong secret.
    let part = t.path().join("part");
    run_ok(
        app()
            .args([
                "s3api",
                "get-object",
                "--bucket",
                &src_bucket,
                "--key",
                "a.txt",
                "--range",
                "bytes=10-19",
            ])
            .arg(&part),
    );
    assert_eq!(std::fs::read(&part).unwrap(), files[0].1[10..20]);
    let denied = run(aws(&endpoint, "APPKEY", "wrong").args([
        "s3api",
        "head-bucket",
        "--bucket",
        &src_bucket,
    ]));
    assert!(!denied.status.success());
    let denied =
        run(aws(&endpoint, "APPKEY", "wrong").args(["s3", "ls", &format!("s3://{src_bucket}/")]));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("SignatureDoesNotMatch"),
        "{denied:?}"
    );
    // A presigned URL works until it expires; then it is refused.
    let url = String::from_utf8(run_ok(app().args([
        "s3",
        "presign",
        &format!("s3://{src_bucket}/a.txt"),
        "--expires-in",
        "2",
    ])))
    .unwrap();
    let got = run_ok(Command::new("curl").args(["-sf", url.trim()]));
    assert_eq!(got, files[0].1, "presigned GET");
    std::thread::sleep(std::time::Duration::from_secs(4));
    let late =
        run(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url.trim()]));
    assert_eq!(
        String::from_utf8_lossy(&late.stdout),
        "403",
        "an expired presigned URL"
    );
    // A key of 1,024 bytes (S3's longest) written and read back through the gateway.
    let long_key = format!("long/{}", "k".repeat(1024 - 5));
    let long = write(&up, b"long.up", b"a long name");
    run_ok(
        app()
            .args(["s3", "cp"])
            .arg(&long)
            .arg(format!("s3://{src_bucket}/{long_key}")),
    );
    assert_eq!(seen(app, &src_bucket, &long_key).2, b"a long name");
    // rclone as the application's client: lists and reads what is still at the source.
    let rclone = |args: &[&str]| {
        let mut c = Command::new("rclone");
        c.args(args)
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_CONFIG_GW_TYPE", "s3")
            .env("RCLONE_CONFIG_GW_PROVIDER", "Other")
            .env("RCLONE_CONFIG_GW_ENDPOINT", &endpoint)
            .env("RCLONE_CONFIG_GW_ACCESS_KEY_ID", "APPKEY")
            .env("RCLONE_CONFIG_GW_SECRET_ACCESS_KEY", "appsecret")
            .env("RCLONE_CONFIG_GW_FORCE_PATH_STYLE", "true")
            // rclone's SDK refuses a custom CA bundle with its own transport.
            .env_remove("AWS_CA_BUNDLE");
        run_ok(&mut c)
    };
    let lsf = String::from_utf8(rclone(&["lsf", &format!("gw:{src_bucket}/dir/")])).unwrap();
    assert_eq!(
        lsf.lines().collect::<Vec<_>>(),
        ["&+-é\"x", "with space"],
        "{lsf}"
    );
    assert_eq!(
        rclone(&["cat", &format!("gw:{src_bucket}/dir/with space")]),
        files[2].1
    );
    run_ok(app().args(["s3", "rm", &format!("s3://{src_bucket}/{long_key}")]));
    // The application writes one key the source also has, writes a new one, deletes one.
    let over = write(&up, b"over.new", b"the application's");
    run_ok(
        app()
            .args(["s3", "cp"])
            .arg(&over)
            .arg(format!("s3://{src_bucket}/over")),
    );
    run_ok(
        app()
            .args(["s3", "cp"])
            .arg(&over)
            .arg(format!("s3://{src_bucket}/new/one")),
    );
    run_ok(app().args(["s3", "rm", &format!("s3://{src_bucket}/gone")]));
    let missing = run(app().args([
        "s3api",
        "head-object",
        "--bucket",
        &src_bucket,
        "--key",
        "gone",
    ]));
    assert!(!missing.status.success(), "a deleted key came back");
    assert_eq!(seen(app, &src_bucket, "over").2, b"the application's");
    // The source never saw any of it.
    assert_eq!(seen(src, &src_bucket, "over").2, files[6].1);
    // A server-side copy from the source's side to the destination's, and a batch delete.
    run_ok(app().args([
        "s3",
        "cp",
        &format!("s3://{src_bucket}/a.txt"),
        &format!("s3://{src_bucket}/copy/a.txt"),
    ]));
    assert_eq!(seen(app, &src_bucket, "copy/a.txt").2, files[0].1);
    run_ok(
        app()
            .args(["s3", "cp"])
            .arg(&over)
            .arg(format!("s3://{src_bucket}/tmp/x")),
    );
    let del = json(&run_ok(app().args([
        "s3api",
        "delete-objects",
        "--bucket",
        &src_bucket,
        "--delete",
        r#"{"Objects":[{"Key":"tmp/x"}]}"#,
    ])));
    assert_eq!(del["Deleted"][0]["Key"], "tmp/x", "{del}");
    let missing = run(app().args([
        "s3api",
        "head-object",
        "--bucket",
        &src_bucket,
        "--key",
        "tmp/x",
    ]));
    assert!(
        !missing.status.success(),
        "a batch-deleted key is still there"
    );
    // A multipart upload (awscli: two 8 MiB parts) gets S3's multipart ETag, and a
    // multipart download (ranged GETs) of an object still at the source reads whole.
    let mp = rand_bytes(7, 10 << 20);
    let mp_file = write(&up, b"mp.up", &mp);
    run_ok(
        app()
            .args(["s3", "cp"])
            .arg(&mp_file)
            .arg(format!("s3://{src_bucket}/mp/big")),
    );
    let (e, n, body) = seen(app, &src_bucket, "mp/big");
    assert!(e.ends_with("-2\""), "{e}");
    assert_eq!((n, body == mp), (mp.len() as u64, true));
    let down = t.path().join("down");
    run_ok(
        app()
            .args(["s3", "cp", &format!("s3://{src_bucket}/big")])
            .arg(&down),
    );
    assert!(
        std::fs::read(&down).unwrap() == files[4].1,
        "ranged download of big"
    );
    let uploads = run_ok(app().args(["s3api", "list-multipart-uploads", "--bucket", &src_bucket]));
    let uploads = match uploads.is_empty() {
        true => serde_json::json!({}),
        false => json(&uploads),
    };
    assert!(
        uploads["Uploads"].as_array().is_none_or(|u| u.is_empty()),
        "{uploads}"
    );
    let model: Vec<String> = {
        let mut m: Vec<String> = files
            .iter()
            .map(|(k, _)| k.to_string())
            .filter(|k| k != "gone")
            .collect();
        m.push("new/one".into());
        m.push("mp/big".into());
        m.push("copy/a.txt".into());
        m.sort();
        m
    };
    for max in ["1", "2", "1000"] {
        assert_eq!(keys(app, &src_bucket, "", max), model, "page size {max}");
    }
    // ListObjectVersions in its unversioned form: the same keys, each version "null".
    let versions = json(&run_ok(app().args([
        "s3api",
        "list-object-versions",
        "--bucket",
        &src_bucket,
        "--page-size",
        "2",
    ])));
    let listed: Vec<&str> = versions["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["VersionId"], "null", "{v}");
            v["Key"].as_str().unwrap()
        })
        .collect();
    assert_eq!(listed, model, "list-object-versions");
    assert_eq!(
        keys(app, &src_bucket, "dir/", "1"),
        ["dir/&+-é\"x", "dir/with space"]
    );
    // What it answered, on the node's /metrics (its status socket).
    let metrics = run_ok(
        Command::new("curl")
            .args(["-s", "--unix-socket"])
            .arg(sides.state.join("barge.sock"))
            .arg("http://barge/metrics"),
    );
    let m = String::from_utf8_lossy(&metrics);
    for line in [
        "barge_gateway_requests_total{op=\"write\",side=\"destination\"} 6",
        "barge_gateway_requests_total{op=\"delete\",side=\"destination\"} 3",
        "barge_gateway_errors_total{} 0",
    ] {
        assert!(m.contains(line), "{line} not in:\n{m}");
    }
    drop(gw);

    // The source changes the key the application wrote: a conflict the destination wins.
    let theirs = write(&up, b"over.src", b"the source's late change");
    run_ok(
        src()
            .args(["s3", "cp"])
            .arg(&theirs)
            .arg(format!("s3://{src_bucket}/over")),
    );

    // One pass moves everything else; it neither brings `gone` back nor overwrites `over`.
    let pass = run(&mut sides.barge(&[
        "--json",
        "sync",
        "--passes",
        "1",
        "--source",
        &format!("s3://{src_bucket}"),
        "--dest",
        &format!("s3://{dst_bucket}"),
    ]));
    let out = String::from_utf8_lossy(&pass.stdout);
    assert!(
        pass.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&pass.stderr)
    );
    assert!(
        String::from_utf8_lossy(&pass.stderr).contains("conflict: over changed at the source"),
        "{}",
        String::from_utf8_lossy(&pass.stderr)
    );
    let gw = serve("0");
    // State 2: moved. The same answers, now from the destination.
    for ((k, v), (etag, n)) in files.iter().zip(&source_view) {
        if *k == "gone" || *k == "over" {
            continue;
        }
        let (e, len, body) = seen(app, &src_bucket, k);
        assert_eq!((&e, len), (etag, *n), "{k} through the gateway, moved");
        assert_eq!(&body, v, "{k}");
        assert_eq!(seen(dst, &dst_bucket, k).2, *v, "{k} at the destination");
    }
    assert_eq!(seen(app, &src_bucket, "over").2, b"the application's");
    assert_eq!(seen(dst, &dst_bucket, "over").2, b"the application's");
    let gone = run(dst().args([
        "s3api",
        "head-object",
        "--bucket",
        &dst_bucket,
        "--key",
        "gone",
    ]));
    assert!(
        !gone.status.success(),
        "the pass moved a key deleted through the gateway"
    );
    for max in ["1", "3", "1000"] {
        assert_eq!(
            keys(app, &src_bucket, "", max),
            model,
            "page size {max}, moved"
        );
    }
    drop(gw);
    // Cutover proves destination = source - tombstones + gateway writes.
    let cut = run(&mut sides.barge(&[
        "--json",
        "cutover",
        "--source",
        &format!("s3://{src_bucket}"),
        "--dest",
        &format!("s3://{dst_bucket}"),
    ]));
    let out = String::from_utf8_lossy(&cut.stdout);
    let c = &json_doc(&out, "certificate")["certificate"];
    assert_eq!(
        c["done"],
        true,
        "{out}\n{}",
        String::from_utf8_lossy(&cut.stderr)
    );
}

/// HTTPS with an operator's certificate; plain HTTP beyond loopback and credentials
/// others can read are refused, each naming the option.
#[test]
fn https_with_a_certificate_and_nothing_plain_beyond_loopback() {
    let (s, c) = (saio(), ceph());
    let t = tmp();
    let src_bucket = format!("gwtls{}", std::process::id());
    let dst_bucket = format!("gwtlsdst{}", std::process::id());
    let src = || {
        aws(
            &s["SAIO_S3_ENDPOINT"],
            &s["SAIO_S3_ACCESS_KEY"],
            &s["SAIO_S3_SECRET_KEY"],
        )
    };
    run_ok(src().args(["s3", "mb", &format!("s3://{src_bucket}")]));
    let data = rand_bytes(9, 3000);
    let f = write(t.path(), b"obj", &data);
    run_ok(
        src()
            .args(["s3", "cp"])
            .arg(&f)
            .arg(format!("s3://{src_bucket}/obj")),
    );
    let sides = Sides {
        state: t.path().join("state"),
        files: profiles(
            t.path(),
            (&s["SAIO_S3_ACCESS_KEY"], &s["SAIO_S3_SECRET_KEY"]),
            (&c["CEPH_S3_ACCESS_KEY"], &c["CEPH_S3_SECRET_KEY"]),
        ),
        src_ep: s["SAIO_S3_ENDPOINT"].clone(),
        dst_ep: c["CEPH_S3_ENDPOINT"].clone(),
    };
    init_small(&sides.state, &[]);
    let creds = t.path().join("gateway-keys");
    std::fs::write(&creds, "APPKEY appsecret\n").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = free_port();
    let args = |listen: &str, extra: &[&str]| {
        let mut a: Vec<String> = [
            "gateway",
            "--source",
            &format!("s3://{src_bucket}"),
            "--dest",
            &format!("s3://{dst_bucket}"),
            "--listen",
            listen,
            "--credentials",
            creds.to_str().unwrap(),
            "--passes",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let refused = |a: Vec<String>, want: &str| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = run(&mut sides.barge(&a));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{want}: {err}");
    };
    refused(args(&format!("127.0.0.1:{port}"), &[]), "chmod 600");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(args(&format!("0.0.0.0:{port}"), &[]), "--insecure-http");
    // A self-signed certificate for 127.0.0.1.
    let (cert, key) = self_signed(t.path());
    let a = args(
        &format!("127.0.0.1:{port}"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let _gw = start(&sides, &a, port);
    let endpoint = format!("https://127.0.0.1:{port}");
    let app = || {
        let mut c = aws(&endpoint, "APPKEY", "appsecret");
        c.arg("--ca-bundle").arg(&cert);
        c
    };
    let (_, n, body) = seen(app, &src_bucket, "obj");
    assert_eq!((n, body == data), (3000, true));
    // Any other bucket of the account is the destination's, passed through: made,
    // written, listed and removed through the gateway, seen directly at radosgw.
    let other = format!("gwother{}", std::process::id());
    let dst = || {
        aws(
            &c["CEPH_S3_ENDPOINT"],
            &c["CEPH_S3_ACCESS_KEY"],
            &c["CEPH_S3_SECRET_KEY"],
        )
    };
    run_ok(app().args(["s3", "mb", &format!("s3://{other}")]));
    run_ok(
        app()
            .args(["s3", "cp"])
            .arg(&f)
            .arg(format!("s3://{other}/x")),
    );
    assert_eq!(seen(dst, &other, "x").2, data);
    let listed = String::from_utf8(run_ok(app().args(["s3", "ls"]))).unwrap();
    assert!(listed.contains(&other), "{listed}");
    run_ok(app().args(["s3", "rb", "--force", &format!("s3://{other}")]));
    assert!(
        !run(dst().args(["s3api", "head-bucket", "--bucket", &other]))
            .status
            .success()
    );
    // Plain HTTP to the TLS port is no S3 answer.
    let plain = run(
        aws(&format!("http://127.0.0.1:{port}"), "APPKEY", "appsecret").args([
            "s3api",
            "head-object",
            "--bucket",
            &src_bucket,
            "--key",
            "obj",
        ]),
    );
    assert!(!plain.status.success());
}

/// SIGKILL at the gateway's crash points loses no acknowledged write, and a delete the
/// client was never told of is finished by its retry; the next pass brings nothing back.
#[test]
fn a_killed_gateway_keeps_what_it_acknowledged() {
    let (s, c) = (saio(), ceph());
    let t = tmp();
    let src_bucket = format!("gwkill{}", std::process::id());
    let dst_bucket = format!("gwkilldst{}", std::process::id());
    let src = || {
        aws(
            &s["SAIO_S3_ENDPOINT"],
            &s["SAIO_S3_ACCESS_KEY"],
            &s["SAIO_S3_SECRET_KEY"],
        )
    };
    let dst = || {
        aws(
            &c["CEPH_S3_ENDPOINT"],
            &c["CEPH_S3_ACCESS_KEY"],
            &c["CEPH_S3_SECRET_KEY"],
        )
    };
    run_ok(src().args(["s3", "mb", &format!("s3://{src_bucket}")]));
    run_ok(dst().args(["s3", "mb", &format!("s3://{dst_bucket}")]));
    let up = t.path().join("up");
    for k in ["keep", "del"] {
        let f = write(&up, k.as_bytes(), &rand_bytes(11, 1000));
        run_ok(
            src()
                .args(["s3", "cp"])
                .arg(&f)
                .arg(format!("s3://{src_bucket}/{k}")),
        );
    }
    let sides = Sides {
        state: t.path().join("state"),
        files: profiles(
            t.path(),
            (&s["SAIO_S3_ACCESS_KEY"], &s["SAIO_S3_SECRET_KEY"]),
            (&c["CEPH_S3_ACCESS_KEY"], &c["CEPH_S3_SECRET_KEY"]),
        ),
        src_ep: s["SAIO_S3_ENDPOINT"].clone(),
        dst_ep: c["CEPH_S3_ENDPOINT"].clone(),
    };
    init_small(&sides.state, &[]);
    let pass = || {
        let o = run(&mut sides.barge(&[
            "sync",
            "--passes",
            "1",
            "--source",
            &format!("s3://{src_bucket}"),
            "--dest",
            &format!("s3://{dst_bucket}"),
        ]));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    pass();
    let creds = t.path().join("gateway-keys");
    std::fs::write(&creds, "APPKEY appsecret\n").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let app = || {
        let mut c = aws(&endpoint, "APPKEY", "appsecret");
        c.env("AWS_MAX_ATTEMPTS", "1");
        c
    };
    let args = [
        "gateway".to_string(),
        "--source".into(),
        format!("s3://{src_bucket}"),
        "--dest".into(),
        format!("s3://{dst_bucket}"),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--credentials".into(),
        creds.to_string_lossy().into_owned(),
        "--passes".into(),
        "0".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let exists = |at: &dyn Fn() -> Command, bucket: &str, k: &str| {
        run(at().args(["s3api", "head-object", "--bucket", bucket, "--key", k]))
            .status
            .success()
    };
    let new = write(&up, b"new", b"written through the gateway");

    // Killed after the tombstone, before the destination's delete: never acknowledged.
    let mut gw = start_with(&sides, &args, port, Some("gateway.after_tombstone:1"));
    assert!(
        !run(app().args(["s3", "rm", &format!("s3://{src_bucket}/del")]))
            .status
            .success()
    );
    let _ = gw.0.wait();
    assert!(
        exists(&dst, &dst_bucket, "del"),
        "the delete was sent before the crash point"
    );
    // The restart finishes the delete the tombstone's batch named.
    let gw = start(&sides, &args, port);
    assert!(!exists(&app, &src_bucket, "del"), "a tombstone was lost");
    assert!(
        !exists(&dst, &dst_bucket, "del"),
        "the restart left the copy at the destination"
    );
    run_ok(app().args(["s3", "rm", &format!("s3://{src_bucket}/del")]));
    drop(gw);

    // Killed once the write is recorded, before the answer: the write stands.
    let mut gw = start_with(&sides, &args, port, Some("gateway.after_record:1"));
    let put = run(app()
        .args(["s3", "cp"])
        .arg(&new)
        .arg(format!("s3://{src_bucket}/rec")));
    assert!(!put.status.success());
    let _ = gw.0.wait();
    let gw = start(&sides, &args, port);
    assert_eq!(
        seen(app, &src_bucket, "rec").2,
        b"written through the gateway"
    );
    // An acknowledged write and delete, then a kill at the next write's put.
    run_ok(
        app()
            .args(["s3", "cp"])
            .arg(&new)
            .arg(format!("s3://{src_bucket}/keep")),
    );
    drop(gw);
    let mut gw = start_with(&sides, &args, port, Some("gateway.after_put:1"));
    let put = run(app()
        .args(["s3", "cp"])
        .arg(&new)
        .arg(format!("s3://{src_bucket}/lost")));
    assert!(!put.status.success());
    let _ = gw.0.wait();
    // Killed before the put was sent: nothing landed, nothing is served.
    let mut gw = start_with(&sides, &args, port, Some("gateway.after_intent:1"));
    let put = run(app()
        .args(["s3", "cp"])
        .arg(&new)
        .arg(format!("s3://{src_bucket}/never")));
    assert!(!put.status.success());
    let _ = gw.0.wait();
    // The same cut over an acknowledged write: the destination then holds bytes its
    // record does not describe until the restart resolves it.
    let again = write(t.path(), b"again", b"rewritten, never acknowledged");
    let mut gw = start_with(&sides, &args, port, Some("gateway.after_put:1"));
    let put = run(app()
        .args(["s3", "cp"])
        .arg(&again)
        .arg(format!("s3://{src_bucket}/keep")));
    assert!(!put.status.success());
    let _ = gw.0.wait();
    let gw = start(&sides, &args, port);
    // Both unacknowledged writes landed, so the restart recorded them (an S3 write whose
    // answer was lost may have taken effect): what is served matches its ETag and size.
    for (k, want) in [
        ("lost", &b"written through the gateway"[..]),
        ("keep", &b"rewritten, never acknowledged"[..]),
    ] {
        let (etag, len, body) = seen(app, &src_bucket, k);
        assert_eq!(body, want, "{k}");
        assert_eq!(len, want.len() as u64, "{k}");
        let md5 = format!(
            "\"{}\"",
            hex::encode(<md5::Md5 as md5::Digest>::digest(want))
        );
        assert_eq!(etag, md5, "{k}");
    }
    assert!(!exists(&app, &src_bucket, "del"));
    assert!(
        !exists(&app, &src_bucket, "never"),
        "a write that never landed"
    );
    drop(gw);
    // The next pass overwrites nothing the gateway wrote and brings nothing back.
    pass();
    assert_eq!(
        seen(dst, &dst_bucket, "keep").2,
        b"rewritten, never acknowledged"
    );
    assert!(
        !exists(&dst, &dst_bucket, "del"),
        "a pass brought back a deleted key"
    );
}

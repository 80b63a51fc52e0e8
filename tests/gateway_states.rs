//! What boto3 sees through `barge gateway` in every state of a move: everything still at
//! the source; half moved, with tombstones and writes made through the gateway; all
//! moved; and after a proven cutover, with the source closed. Listings (prefix,
//! delimiter, start-after, marker, max-keys 1..n+1, 100, 999, 1000, paged to their end)
//! equal the model in each state, and HEAD, GET, range and conditional answers are the
//! same in each. A source or destination that cannot be reached gets 503, never 404 or a
//! partial listing; boto3's default checksums are verified and a multipart download
//! across an object's move keeps its ETag.

mod common;

use std::path::Path;
use std::process::Command;

use common::gateway::*;
use common::*;

/// `barge gateway` for the fixture's move on a fresh port; returns it and its endpoint.
fn serve(f: &Fixture, sides: &Sides, source: bool, extra: &[&str]) -> (Gw, String) {
    let port = free_port();
    let a = f.gateway_args(port, source, extra);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    (start(sides, &a, port), format!("http://127.0.0.1:{port}"))
}

/// boto3's answers for `keys` through `endpoint`, keyed by key.
fn answers(endpoint: &str, bucket: &str, keys: &[String], dir: &Path) -> serde_json::Value {
    let (list, out) = (dir.join("keys.json"), dir.join("answers.json"));
    std::fs::write(&list, serde_json::to_vec(keys).unwrap()).unwrap();
    let mut c = boto(endpoint, bucket, &["answers"]);
    run_ok(c.arg(&list).arg(&out));
    json(&std::fs::read(&out).unwrap())
}

/// Every listing through `endpoint` equals `model` (the client exits non-zero otherwise).
fn listings_match(endpoint: &str, bucket: &str, model: &[String], dir: &Path) {
    let list = dir.join("model.json");
    std::fs::write(&list, serde_json::to_vec(model).unwrap()).unwrap();
    let out = run_ok(boto(endpoint, bucket, &["listings"]).arg(&list));
    eprintln!("{}", String::from_utf8_lossy(&out).trim());
}

fn sorted(keys: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = keys.into_iter().collect();
    v.sort();
    v.dedup();
    v
}

/// awscli as the application, one attempt per request (an outage is seen, not retried).
fn once(endpoint: &str) -> Command {
    let mut c = aws(endpoint, "APPKEY", "appsecret");
    c.env("AWS_MAX_ATTEMPTS", "1");
    c
}

/// An HTTP status through awscli's error text ("(503)", "Not Found"...).
fn refused_with(o: &std::process::Output, what: &str) -> String {
    assert!(!o.status.success(), "{what} was answered");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_state_of_the_move_lists_and_reads_the_same() {
    let f = Fixture::new("gwst");
    let long = format!("d/{}", "k".repeat(1022));
    // Moved by the first pass, and added to the source after it.
    let first: Vec<(String, Vec<u8>)> = [
        ("a", 2048),
        ("d/a", 100),
        ("d/b/1", 10),
        ("d/b/2", 2048),
        ("d/c", 7),
        ("e&+-é\"/x", 33),
        ("sp ace", 1),
        ("pct%41", 0),
    ]
    .iter()
    .enumerate()
    .map(|(i, (k, n))| (k.to_string(), rand_bytes(i as u64 + 1, *n)))
    .chain([(long.clone(), rand_bytes(20, 5))])
    .collect();
    let later: Vec<(String, Vec<u8>)> = [("b", 3000), ("d/b/3", 64), ("z", 9)]
        .iter()
        .enumerate()
        .map(|(i, (k, n))| (k.to_string(), rand_bytes(i as u64 + 40, *n)))
        .collect();
    for (k, v) in &first {
        f.put_source(k, v);
    }
    let moving = f.sides("moving");
    let (src_url, dst_url) = (
        format!("s3://{}", f.src_bucket),
        format!("s3://{}", f.dst_bucket),
    );
    let pass = |sides: &Sides| {
        run_ok(&mut sides.barge(&[
            "sync", "--source", &src_url, "--dest", &dst_url, "--passes", "1",
        ]));
    };
    pass(&moving);
    for (k, v) in &later {
        f.put_source(k, v);
    }
    let all = sorted(first.iter().chain(&later).map(|(k, _)| k.clone()));
    let bucket = f.src_bucket.as_str();
    let work = f.dir.path();

    // 1. Everything at the source: a gateway over a catalog that moved nothing.
    let (gw, ep) = serve(&f, &f.sides("untouched"), true, &["--passes", "0"]);
    listings_match(&ep, bucket, &all, work);
    let at_source = answers(&ep, bucket, &all, work);
    drop(gw);

    // 2. Half moved, and the application writes, copies and deletes through the gateway.
    let (gw, ep) = serve(&f, &moving, true, &["--passes", "0"]);
    let app = || aws(&ep, "APPKEY", "appsecret");
    let blob = work.join("w");
    std::fs::write(&blob, rand_bytes(77, 4000)).unwrap();
    for k in ["a", "b", "d/w"] {
        run_ok(
            app()
                .args([
                    "s3api",
                    "put-object",
                    "--bucket",
                    bucket,
                    "--key",
                    k,
                    "--body",
                ])
                .arg(&blob),
        );
    }
    run_ok(app().args([
        "s3api",
        "copy-object",
        "--bucket",
        bucket,
        "--key",
        "d/copy",
        "--copy-source",
        &format!("{bucket}/d/a"),
    ]));
    for k in ["d/c", "z"] {
        run_ok(app().args(["s3api", "delete-object", "--bucket", bucket, "--key", k]));
    }
    let model = sorted(
        all.iter()
            .filter(|k| !["d/c", "z"].contains(&k.as_str()))
            .cloned()
            .chain(["d/w".to_string(), "d/copy".to_string()]),
    );
    listings_match(&ep, bucket, &model, work);
    let half = answers(&ep, bucket, &model, work);
    for k in model
        .iter()
        .filter(|k| !["a", "b", "d/w", "d/copy"].contains(&k.as_str()))
    {
        assert_eq!(
            half[k], at_source[k],
            "{k}: half moved against all at the source"
        );
    }
    drop(gw);

    // 3. Neither side reachable in turn: 503, never a 404 or a partial listing.
    let mut no_source = f.sides("moving");
    no_source.src_ep = "http://127.0.0.1:9".into();
    let (gw, ep) = serve(&f, &no_source, true, &["--passes", "0"]);
    let app = || once(&ep);
    let head = |k: &str| run(app().args(["s3api", "head-object", "--bucket", bucket, "--key", k]));
    assert!(
        head("d/a").status.success(),
        "a moved object without its source"
    );
    assert!(
        head("d/w").status.success(),
        "a gateway write without the source"
    );
    let e = refused_with(&head("d/b/3"), "an unmoved object without its source");
    assert!(e.contains("503"), "{e}");
    let e = refused_with(
        &run(app().args(["s3api", "list-objects-v2", "--bucket", bucket])),
        "a listing without its source",
    );
    assert!(e.contains("ServiceUnavailable"), "{e}");
    drop(gw);
    let mut no_dest = f.sides("moving");
    no_dest.dst_ep = "http://127.0.0.1:9".into();
    let (gw, ep) = serve(&f, &no_dest, true, &["--passes", "0"]);
    let app = || once(&ep);
    let e = refused_with(
        &run(app()
            .args([
                "s3api",
                "put-object",
                "--bucket",
                bucket,
                "--key",
                "nowhere",
                "--body",
            ])
            .arg(&blob)),
        "a write without its destination",
    );
    assert!(e.contains("ServiceUnavailable"), "{e}");
    drop(gw);
    let at = run(f.src().args([
        "s3api",
        "head-object",
        "--bucket",
        bucket,
        "--key",
        "nowhere",
    ]));
    assert!(!at.status.success(), "a write reached the source");

    // 4. Everything moved: a pass, then the same answers.
    pass(&moving);
    let (gw, ep) = serve(&f, &moving, true, &["--passes", "0"]);
    listings_match(&ep, bucket, &model, work);
    let moved = answers(&ep, bucket, &model, work);
    assert_eq!(moved, half, "all moved against half moved");
    drop(gw);

    // 5. The cutover proves it; the gateway then serves without the source, path style
    // and virtual-host style.
    let o = run(&mut moving.barge(&[
        "--json", "cutover", "--source", &src_url, "--dest", &dst_url,
    ]));
    assert!(
        o.status.success(),
        "cutover: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let refused = run(&mut f.sides("untouched").barge(&[
        "gateway",
        "--bucket",
        bucket,
        "--dest",
        &dst_url,
        "--credentials",
        f.creds.to_str().unwrap(),
    ]));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--source"),
        "no source without a cutover: {refused:?}"
    );
    let (gw, ep) = serve(&f, &moving, false, &["--domain", "s3.barge.test"]);
    listings_match(&ep, bucket, &model, work);
    assert_eq!(answers(&ep, bucket, &model, work), moved, "source closed");
    let vh = format!(
        "http://{bucket}.s3.barge.test:{}",
        ep.rsplit(':').next().unwrap()
    );
    let mut c = boto(
        &format!("http://s3.barge.test:{}", ep.rsplit(':').next().unwrap()),
        bucket,
        &["listings"],
    );
    let list = work.join("model.json");
    let out = run(c.arg(&list).env("GW_STYLE", "virtual").env("GW_PROXY", &ep));
    assert!(
        out.status.success(),
        "virtual-host listings through {vh}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(gw);
}

#[test]
fn boto3_defaults_are_verified_and_a_download_spans_the_move() {
    let f = Fixture::new("gwbo");
    let t = tmp();
    // HTTPS, where boto3 sends its CRC32 in an aws-chunked trailer.
    let (cert, key) = self_signed(t.path());
    let sides = f.sides("state");
    let port = free_port();
    let mut a = f.gateway_args(port, true, &["--interval", "2s"]);
    a.extend(["--tls-cert".into(), cert.to_string_lossy().into_owned()]);
    a.extend(["--tls-key".into(), key.to_string_lossy().into_owned()]);
    let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
    a.insert(0, "--json");
    let passes = PassCounter::start(&sides, &a, port);
    let ep = format!("https://127.0.0.1:{port}");
    let py = |args: &[&str]| {
        let mut c = boto(&ep, &f.src_bucket, args);
        c.env("GW_CA", &cert);
        c
    };
    run_ok(&mut py(&["checksums"]));

    // A 10 MiB object the passes have not moved yet, downloaded in 1 MiB parts; the
    // download stops after its first MiB until the object has moved.
    passes.wait_for(1);
    let big = rand_bytes(50, 10 << 20);
    f.put_source("big", &big);
    let (out, pause) = (t.path().join("big"), t.path().join("pause"));
    let mut dl = py(&["download", "big"])
        .arg(&out)
        .arg(&pause)
        .spawn()
        .expect("boto3 download");
    for _ in 0..600 {
        if pause.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(pause.exists(), "the download did not start");
    let now = passes.count();
    passes.wait_for(now + 2);
    let at_dest = run(f.dst().args([
        "s3api",
        "head-object",
        "--bucket",
        &f.dst_bucket,
        "--key",
        "big",
    ]));
    assert!(at_dest.status.success(), "big did not move meanwhile");
    std::fs::write(pause.with_extension("go"), b"").unwrap();
    let st = dl.wait().unwrap();
    assert!(st.success(), "the download across the move failed");
    assert!(std::fs::read(&out).unwrap() == big, "the download differs");
}

#[test]
fn a_native_swift_destination_serves_the_same_and_takes_multipart_as_slo() {
    let f = Fixture::new("gwsw");
    let sw = f.env.0;
    let container = format!("gwswdst{}", std::process::id());
    let small = rand_bytes(60, 2048);
    let sized = rand_bytes(61, 4 << 20);
    f.put_source("a", &small);
    f.put_source("dir/big", &sized);
    let source_etags: Vec<String> = ["a", "dir/big"]
        .iter()
        .map(|k| {
            let head = run_ok(f.src().args([
                "s3api",
                "head-object",
                "--bucket",
                &f.src_bucket,
                "--key",
                k,
            ]));
            json(&head)["ETag"].as_str().unwrap().to_string()
        })
        .collect();
    let state = f.dir.path().join("swift-state");
    init_small(&state, &[]);
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    // The move into native Swift: objects over 3 MiB become SLOs of 1 MiB segments.
    let mut c = bin();
    c.arg("--state")
        .arg(&state)
        .args(["--json", "--source-endpoint", &sw["SAIO_S3_ENDPOINT"]])
        .args(["--source-profile", "src"])
        .args(["--large-threshold", "3MiB", "--slo-segment-size", "1MiB"])
        .args([
            "gateway",
            "--source",
            &format!("s3://{}", f.src_bucket),
            "--dest",
            &format!("swift://{container}"),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--credentials",
            f.creds.to_str().unwrap(),
            "--passes",
            "1",
        ])
        .env("AWS_SHARED_CREDENTIALS_FILE", &f.files.0)
        .env("AWS_CONFIG_FILE", &f.files.1)
        .env("BARGE_DEST_ST_AUTH", &sw["ST_AUTH"])
        .env("BARGE_DEST_ST_USER", &sw["ST_USER"])
        .env("BARGE_DEST_ST_KEY", &sw["ST_KEY"]);
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
    ] {
        c.env_remove(k);
    }
    let passes = PassCounter::spawn(c, port);
    passes.wait_for(1);
    let app = || aws(&ep, "APPKEY", "appsecret");
    let b = f.src_bucket.as_str();
    // Moved into Swift (the SLO among them), served with the source's ETags.
    for ((k, want), etag) in [("a", &small), ("dir/big", &sized)]
        .iter()
        .zip(&source_etags)
    {
        let (e, n, body) = seen(app, b, k);
        assert_eq!(
            (&e, n),
            (etag, want.len() as u64),
            "{k} after its move into Swift"
        );
        assert_eq!(&body, *want, "{k}");
    }
    let stat =
        String::from_utf8(run_ok(swift_cli(sw).args(["stat", &container, "dir/big"]))).unwrap();
    assert!(
        stat.contains("Manifest"),
        "dir/big is an SLO in Swift: {stat}"
    );
    // A multipart upload through the gateway lands as an SLO, with an S3-shaped ETag.
    let big = rand_bytes(62, 10 << 20);
    let p = write(f.dir.path(), b"up-big", &big);
    run_ok(
        app()
            .args(["s3", "cp"])
            .arg(&p)
            .arg(format!("s3://{b}/up/big")),
    );
    let (e, n, body) = seen(app, b, "up/big");
    assert!(e.trim_matches('"').ends_with("-2"), "multipart ETag {e}");
    assert_eq!(
        (n, body == big),
        (big.len() as u64, true),
        "up/big read back"
    );
    let stat =
        String::from_utf8(run_ok(swift_cli(sw).args(["stat", &container, "up/big"]))).unwrap();
    assert!(
        stat.contains("Manifest"),
        "up/big is an SLO in Swift: {stat}"
    );
    let got = run_ok(swift_cli(sw).args(["download", &container, "up/big", "-o", "-"]));
    assert!(got == big, "Swift holds the bytes the client wrote");
    // A delete through the gateway removes the SLO from Swift too.
    run_ok(app().args(["s3api", "delete-object", "--bucket", b, "--key", "up/big"]));
    let gone = run(swift_cli(sw).args(["stat", &container, "up/big"]));
    assert!(!gone.status.success(), "up/big is still in Swift");
    let listed = keys(app, b, "", "1000");
    assert_eq!(listed, ["a", "dir/big"], "the listing through the gateway");
}

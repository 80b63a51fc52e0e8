//! Clients and passes at once, and kills: four boto3 clients PUT (single and multipart),
//! GET, DELETE, copy and LIST through `barge gateway` while its passes move the source
//! behind them, and the process is SIGKILLed at a crash point of the gateway or of the
//! move, or from outside. After each restart every acknowledged write reads back (with
//! its ETag, the source's for what the clients never touched), no acknowledged delete
//! comes back, and every listing paged to its end equals the model's keys. At the end a
//! pass and `cutover` prove destination = source − tombstones + gateway writes.

mod common;

use common::gateway::*;
use common::*;

/// Where each round's gateway dies: a crash point (its n-th passage), or None for a
/// SIGKILL from the test while the clients run.
const ROUNDS: &[Option<&str>] = &[
    Some("gateway.after_put:6"),
    Some("gateway.after_intent:4"),
    None,
    Some("gateway.after_record:5"),
    Some("gateway.after_tombstone:2"),
    Some("drain.after_put:3"),
    None,
];

/// Seconds the clients run in a round (the gateway may die before).
const ROUND_SECS: &str = "6";

#[test]
fn clients_passes_and_kills_lose_nothing_acknowledged() {
    let f = Fixture::new("gwch");
    let bucket = f.src_bucket.clone();
    // The source: 24 keys the clients share with the passes.
    let mut model = serde_json::Map::new();
    for i in 0..24u64 {
        let data = rand_bytes(i + 100, [0, 10, 3000, 70_000][i as usize % 4]);
        let k = format!("s/{i:02}");
        f.put_source(&k, &data);
        let etag = json(&run_ok(f.src().args([
            "s3api",
            "head-object",
            "--bucket",
            &bucket,
            "--key",
            &k,
        ])))["ETag"]
            .as_str()
            .unwrap()
            .to_string();
        let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(&data));
        model.insert(k, serde_json::json!([[data.len(), md5, etag]]));
    }
    let model_file = f.dir.path().join("model.json");
    std::fs::write(&model_file, serde_json::to_vec(&model).unwrap()).unwrap();
    let sides = f.sides("state");
    let port = free_port();
    let ep = format!("http://127.0.0.1:{port}");
    let args = f.gateway_args(port, true, &["--interval", "1s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let model_arg = model_file.to_str().unwrap();

    for (round, crash) in ROUNDS.iter().enumerate() {
        let mut gw = start_with(&sides, &args, port, *crash);
        let mut clients = boto(&ep, &bucket, &["chaos", model_arg, ROUND_SECS])
            .arg(round.to_string())
            .spawn()
            .expect("boto3 clients");
        if crash.is_none() {
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
        // A crash point not reached while the clients ran: killed from outside then.
        if crash.is_none() || clients.try_wait().ok().flatten().is_some() {
            let _ = gw.0.kill();
        }
        let st = clients.wait().unwrap();
        let _ = gw.0.kill();
        let _ = gw.0.wait();
        assert!(
            st.success(),
            "round {round} ({crash:?}): a client saw a wrong answer"
        );
        // Restarted: what was acknowledged is there, and the listings are whole.
        let gw = start(&sides, &args, port);
        run_ok(&mut boto(&ep, &bucket, &["check", model_arg]));
        drop(gw);
    }

    // The move ends: a pass, then the cutover's proof.
    let (src_url, dst_url) = (format!("s3://{bucket}"), format!("s3://{}", f.dst_bucket));
    run_ok(&mut sides.barge(&[
        "sync", "--source", &src_url, "--dest", &dst_url, "--passes", "1",
    ]));
    let o = run(&mut sides.barge(&["cutover", "--source", &src_url, "--dest", &dst_url]));
    assert!(
        o.status.success(),
        "cutover after the chaos: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let gw = start(&sides, &args, port);
    run_ok(&mut boto(&ep, &bucket, &["check", model_arg]));
    drop(gw);
}

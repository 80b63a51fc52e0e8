//! The live status API, Prometheus metrics and the terminal dashboard, against real runs:
//! `/metrics` scraped from a running migrate and parsed with a Prometheus text parser;
//! `barge tui` run in tmux against a migration into the project's Swift SAIO, its screen
//! read twice.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use barge_tui::client::{self, Target};
use barge_tui::model::{Action, Status};
use common::*;

/// Polls `f` every 100 ms until it returns Some, failing after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child barge that is killed if the test fails before it ends (a paused run would
/// otherwise wait forever).
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(state: &Path, args: &[&str]) -> Running {
    let mut c = bin();
    c.arg("--state").arg(state).args(args);
    spawn_cmd(&mut c)
}

fn spawn_cmd(c: &mut Command) -> Running {
    Running(Some(
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn barge"),
    ))
}

fn finish(mut r: Running) -> String {
    let c = r.0.take().expect("child");
    let o = c.wait_with_output().expect("wait barge");
    ok(&o)
}

/// Kills the tmux session it names when dropped.
struct Tmux(String);

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn live(sock: &Path) -> Option<Status> {
    client::status(&Target::Unix(sock.to_path_buf())).ok()
}

#[test]
fn metrics_are_scraped_during_a_run_and_parse_as_prometheus_text() {
    let d = tmp();
    let (src, state, out) = (
        d.path().join("src"),
        d.path().join("state"),
        d.path().join("out"),
    );
    ok(&bin()
        .args(["sample", "--size", "24MiB", "--seed", "4", "--out"])
        .arg(&src)
        .output()
        .unwrap());
    init_small(&state, &[]);
    let files = files_under(&src).len() as f64;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = spawn(
        &state,
        &[
            "--http",
            &addr,
            "--start-paused",
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    );
    let sock = state.join("barge.sock");
    // Paused: listing runs, nothing moves, so the scrape sees a run in a known state.
    let s = wait_for(
        "the listing of a paused run",
        Duration::from_secs(60),
        || live(&sock).filter(|s| s.progress.listing_done),
    );
    assert!(s.paused);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "status socket must be private");

    let (code, body) = client::request(&Target::tcp(addr.clone()), "GET", "/metrics").unwrap();
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {label:?} not in scrape:\n{text}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: unexpected {other:?}"),
        }
    };
    assert_eq!(
        value("barge_objects_total", Some(("stage", "listed"))),
        files
    );
    assert_eq!(
        value("barge_objects_total", Some(("stage", "drained"))),
        0.0
    );
    assert_eq!(value("barge_bytes_total", Some(("stage", "drained"))), 0.0);
    assert_eq!(value("barge_paused", None), 1.0);
    assert!(value("barge_drive_size_bytes", None) > 0.0);
    assert!(value("barge_queue_capacity", Some(("queue", "fetch"))) > 0.0);
    // Every family carries its HELP text, and a local-to-local run has no remote endpoint.
    assert!(scrape.docs.contains_key("barge_objects"), "{text}");
    assert!(!text.contains("endpoint=\""), "{text}");

    // Resume from the control API; the run then finishes and the socket goes away.
    let r = client::control(&Target::Unix(sock.clone()), Action::Resume).unwrap();
    assert!(r.contains("resumed"), "{r}");
    let stdout = finish(child);
    assert!(stdout.contains("DONE"), "{stdout}");
    assert!(!sock.exists(), "status socket removed at exit");
    assert_same_tree(&src, &out);
    // Idle node: `barge status` reads the catalog again.
    let st = ok(&barge(&state, &["status"]));
    assert!(st.contains("DONE"), "{st}");
    // The report draws the run's throughput from the samples kept in the catalog.
    let rep = ok(&barge(&state, &["report"]));
    assert!(rep.contains("report.svg"), "{rep}");
    let svg = std::fs::read_to_string(state.join("report.svg")).unwrap();
    assert!(
        svg.contains("barge migrate: throughput") && svg.contains("<polyline"),
        "{svg}"
    );
}

fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux")
        .args(args)
        .output()
        .expect("run tmux (scripts/deps.sh test installs it)");
    assert!(
        o.status.success(),
        "tmux {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The number after `drained` on the dashboard's objects panel.
fn drained_on_screen(screen: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        let i = l.find("drained")?;
        l[i + "drained".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[test]
fn tui_in_tmux_follows_a_running_migration_into_swift() {
    let env = common::servers::saio();
    let d = tmp();
    let (src, state) = (d.path().join("src"), d.path().join("state"));
    for i in 0..200u64 {
        write(
            &src,
            format!("obj/{i:04}.bin").as_bytes(),
            &rand_bytes(i, 40_000 + i as usize * 700),
        );
    }
    init_small(&state, &[]);
    let container = format!("tui{}", std::process::id());
    let mut mig = bin();
    mig.arg("--state")
        .arg(&state)
        .args([
            "--quiet",
            "--max-requests-per-second",
            "8",
            "migrate",
            "--source",
        ])
        .arg(&src)
        .args(["--dest", &format!("swift://{container}")])
        .env("ST_AUTH", &env["ST_AUTH"])
        .env("ST_USER", &env["ST_USER"])
        .env("ST_KEY", &env["ST_KEY"]);
    let child = spawn_cmd(&mut mig);
    let sock = state.join("barge.sock");
    wait_for("the node's status socket", Duration::from_secs(60), || {
        live(&sock).filter(|s| s.totals.drained_objects > 0)
    });

    let session = format!("barge-tui-test-{}", std::process::id());
    let cmd = format!(
        "{} --state {} tui",
        env!("CARGO_BIN_EXE_barge"),
        state.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        &cmd,
    ]);
    let _session = Tmux(session.clone());
    let capture = || tmux(&["capture-pane", "-p", "-t", &session]);
    let first = wait_for("the dashboard to draw", Duration::from_secs(30), || {
        let s = capture();
        (s.contains("RUNNING") && drained_on_screen(&s).is_some()).then_some(s)
    });
    let n1 = drained_on_screen(&first).unwrap();
    let second = wait_for(
        "the drained counter to move",
        Duration::from_secs(60),
        || {
            let s = capture();
            drained_on_screen(&s).filter(|n| *n > n1).map(|_| s)
        },
    );
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::write(artifacts.join("tui-capture-1.txt"), &first);
    let _ = std::fs::write(artifacts.join("tui-capture-2.txt"), &second);
    for panel in [
        "barge migrate",
        "throughput MB/s",
        " objects ",
        "queue drain",
        "drives (",
        "endpoints (",
        "errors (",
        "q quit",
    ] {
        assert!(second.contains(panel), "panel {panel:?} missing:\n{second}");
    }
    // Tab switches the bottom panel to the endpoints.
    tmux(&["send-keys", "-t", &session, "Tab"]);
    let want = format!("destination swift://{container}");
    wait_for("the endpoints panel", Duration::from_secs(30), || {
        capture().contains(&want).then_some(())
    });
    // Keys reach the node: pause shows on the dashboard, resume lets the run finish.
    tmux(&["send-keys", "-t", &session, "p"]);
    wait_for("PAUSED on the dashboard", Duration::from_secs(30), || {
        capture().contains("PAUSED").then_some(())
    });
    assert!(live(&sock).is_some_and(|s| s.paused));
    tmux(&["send-keys", "-t", &session, "p"]);
    wait_for("RUNNING again", Duration::from_secs(30), || {
        capture().contains("RUNNING").then_some(())
    });
    tmux(&["send-keys", "-t", &session, "q"]);
    let out = finish(child);
    assert!(out.contains("DONE"), "{out}");
}

/// Issue 18: with --start-paused the listing goes on to its end although more objects
/// are listed than the queues hold (new ones are recorded and fetched after it), so the
/// operator sees the whole object count before resuming; nothing is fetched meanwhile.
/// After resuming, every object arrives.
#[test]
fn a_paused_run_lists_everything_before_it_resumes() {
    let d = tmp();
    let (src, state, out) = (
        d.path().join("src"),
        d.path().join("state"),
        d.path().join("out"),
    );
    let n = 6_000u64;
    for i in 0..n {
        write(
            &src,
            format!("d{}/f{i}", i % 10).as_bytes(),
            &i.to_le_bytes(),
        );
    }
    init_small(&state, &[]);
    let child = spawn(
        &state,
        &[
            "--start-paused",
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    );
    let sock = state.join("barge.sock");
    let s = wait_for(
        "the listing of a paused run",
        Duration::from_secs(120),
        || live(&sock).filter(|s| s.progress.listing_done),
    );
    assert!(s.paused);
    assert_eq!(s.totals.listed_objects, n);
    assert_eq!(s.totals.staged_objects, 0);
    assert_eq!(s.totals.drained_objects, 0);
    let r = client::control(&Target::Unix(sock.clone()), Action::Resume).unwrap();
    assert!(r.contains("resumed"), "{r}");
    let stdout = finish(child);
    assert!(stdout.contains("DONE"), "{stdout}");
    assert_same_tree(&src, &out);
}

/// Issue 16: an object deleted at the source while a pass is fetching it (listed
/// changed, then gone before the paused pass fetched it) is counted vanished, not
/// failed, and its old copy leaves the destination with that pass. While the pass is
/// paused, the status document and /metrics show the sync's pass and lag.
#[test]
fn an_object_deleted_while_a_pass_fetches_it_is_vanished_not_failed() {
    let d = tmp();
    let (src, state, out) = (
        d.path().join("src"),
        d.path().join("state"),
        d.path().join("out"),
    );
    for i in 0..10u64 {
        write(&src, format!("d/{i}").as_bytes(), &rand_bytes(i, 4_000));
    }
    init_small(&state, &[]);
    let sync = |extra: &[&str]| {
        let mut a = vec!["--json"];
        a.extend_from_slice(extra);
        a.extend([
            "sync",
            "--passes",
            "1",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let a = sync(&[]);
    ok(&barge(
        &state,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    write(&src, b"d/5", &rand_bytes(55, 4_100));
    let a = sync(&["--start-paused"]);
    let child = spawn(&state, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let sock = state.join("barge.sock");
    let s = wait_for("the paused pass's listing", Duration::from_secs(60), || {
        live(&sock).filter(|s| s.progress.listing_done)
    });
    let sync_st = s.sync.expect("a sync shows its pass");
    assert_eq!((sync_st.pass, sync_st.phase.as_str()), (2, "moving"));
    assert_eq!(
        s.totals.staged_objects, 0,
        "nothing is fetched while paused"
    );
    let (code, body) = client::request(&Target::Unix(sock.clone()), "GET", "/metrics").unwrap();
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("barge_sync_pass 2"), "{text}");
    assert!(
        text.contains("barge_sync_estimated_final_pass_seconds"),
        "{text}"
    );
    std::fs::remove_file(src.join("d/5")).unwrap();
    client::control(&Target::Unix(sock.clone()), Action::Resume).unwrap();
    let stdout = finish(child);
    let r = &json_doc(&stdout, "pass")["record"];
    assert_eq!(r["vanished"], 1, "{stdout}");
    assert_eq!(r["failed"], 0, "{stdout}");
    assert_eq!(r["deleted"], 1, "{stdout}");
    assert_eq!(r["outcome"], "ok", "{stdout}");
    assert_same_tree(&src, &out);
}

/// One raw HTTP/1.1 exchange with `addr`: `head` is the request line and any headers
/// (each ending in CRLF); returns the status code and the body.
fn raw_http(addr: &str, head: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the status port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{head}Connection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"));
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_string())
}

/// A barge started through `sh` with the open files limits `ulimit` sets (e.g. "-Sn
/// 256": soft only; "-n 1024": soft and hard).
fn spawn_limited(state: &Path, ulimit: &str, args: &[&str]) -> Running {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_barge"))
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("BARGE_CRASH_AT")
        .env_remove("BARGE_IO_ENGINE");
    spawn_cmd(&mut c)
}

/// The soft and hard "Max open files" of a process.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"));
    let mut w = line["Max open files".len()..].split_whitespace();
    (w.next().unwrap().into(), w.next().unwrap().into())
}

/// Issue 27: over TCP, a request naming a foreign Host or carrying an Origin is refused
/// (403) whatever its method, so neither a page rebinding its name to this address nor a
/// cross-origin page can read status or steer the run; POST /control needs the bearer
/// token of <state>/control.token (401 without it or with another), and with it the
/// paused run resumes. barge also raises its open files soft limit to the hard one.
#[test]
fn control_over_tcp_needs_the_node_s_host_no_origin_and_the_token() {
    let d = tmp();
    let (src, state, out) = (
        d.path().join("src"),
        d.path().join("state"),
        d.path().join("out"),
    );
    for i in 0..20u64 {
        write(&src, format!("f/{i}").as_bytes(), &rand_bytes(i, 5_000));
    }
    init_small(&state, &[]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = spawn_limited(
        &state,
        "-Sn 256",
        &[
            "--http",
            &addr,
            "--start-paused",
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    );
    let pid = child.0.as_ref().unwrap().id();
    let sock = state.join("barge.sock");
    wait_for(
        "the listing of a paused run",
        Duration::from_secs(60),
        || live(&sock).filter(|s| s.progress.listing_done),
    );
    let (soft, hard) = open_files_limits(pid);
    assert_eq!(
        soft, hard,
        "the open files soft limit is raised to the hard one"
    );

    let token_file = state.join("control.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the control token is private");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.len() >= 32, "{token}");
    let auth = format!("Authorization: Bearer {token}\r\n");
    let resume = "POST /control?action=resume HTTP/1.1\r\n";
    let paused = || live(&sock).expect("status over the socket").paused;

    // A rebinding page: its own name as Host, even with the token.
    let (code, body) = raw_http(&addr, &format!("{resume}Host: evil.example\r\n{auth}"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("evil.example"), "{body}");
    let (code, _) = raw_http(&addr, "GET /status HTTP/1.1\r\nHost: evil.example:80\r\n");
    assert_eq!(
        code, 403,
        "status is not readable under a foreign Host either"
    );
    let (code, _) = raw_http(&addr, "GET /status HTTP/1.1\r\n");
    assert_eq!(code, 403, "a request without Host");
    // A cross-origin page: the right Host, but an Origin.
    let origin = "Origin: http://evil.example\r\n";
    let (code, _) = raw_http(&addr, &format!("{resume}Host: {addr}\r\n{origin}{auth}"));
    assert_eq!(code, 403);
    let (code, _) = raw_http(
        &addr,
        &format!("GET /status HTTP/1.1\r\nHost: {addr}\r\n{origin}"),
    );
    assert_eq!(code, 403);
    assert!(paused(), "nothing refused resumed the run");
    // The node's own names: status and metrics without a token, control with it only.
    for host in [addr.clone(), format!("localhost:{port}")] {
        let (code, body) = raw_http(&addr, &format!("GET /status HTTP/1.1\r\nHost: {host}\r\n"));
        assert_eq!(code, 200, "{host}: {body}");
        let (code, _) = raw_http(&addr, &format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\n"));
        assert_eq!(code, 200, "{host}");
    }
    let (code, body) = raw_http(&addr, &format!("{resume}Host: {addr}\r\n"));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("control.token"), "{body}");
    let wrong = format!("Authorization: Bearer {}x\r\n", &token[..token.len() - 1]);
    let (code, _) = raw_http(&addr, &format!("{resume}Host: {addr}\r\n{wrong}"));
    assert_eq!(code, 401);
    let (code, _) = raw_http(
        &addr,
        &format!("{resume}Host: {addr}\r\nAuthorization: Basic {token}\r\n"),
    );
    assert_eq!(code, 401);
    assert!(paused(), "nothing refused resumed the run");
    let (code, body) = raw_http(&addr, &format!("{resume}Host: {addr}\r\n{auth}"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("resumed"), "{body}");
    let stdout = finish(child);
    assert!(stdout.contains("DONE"), "{stdout}");
    assert_same_tree(&src, &out);
}

/// Issue 27: `faster` (the dashboard's `+`) never lifts an endpoint's concurrency cap
/// above --max-concurrency, however often it is sent; `barge tui`'s client sends the
/// control token over TCP.
#[test]
fn faster_never_raises_the_cap_above_max_concurrency() {
    let env = common::servers::saio();
    let d = tmp();
    let (src, state) = (d.path().join("src"), d.path().join("state"));
    for i in 0..10u64 {
        write(&src, format!("o/{i}").as_bytes(), &rand_bytes(i, 3_000));
    }
    init_small(&state, &[]);
    let container = format!("ctlcap{}", std::process::id());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut mig = bin();
    mig.arg("--state")
        .arg(&state)
        .args(["--http", &addr, "--start-paused", "--max-concurrency", "8"])
        .args(["migrate", "--source"])
        .arg(&src)
        .args(["--dest", &format!("swift://{container}")])
        .env("ST_AUTH", &env["ST_AUTH"])
        .env("ST_USER", &env["ST_USER"])
        .env("ST_KEY", &env["ST_KEY"]);
    let child = spawn_cmd(&mut mig);
    let sock = state.join("barge.sock");
    wait_for("the destination endpoint", Duration::from_secs(60), || {
        live(&sock).filter(|s| !s.endpoints.is_empty())
    });
    let token = std::fs::read_to_string(state.join("control.token")).unwrap();
    let tcp = Target::Tcp {
        addr: addr.clone(),
        token: Some(token.trim().to_string()),
    };
    for _ in 0..4 {
        let said = client::control(&tcp, Action::Faster).unwrap();
        assert!(said.contains("max concurrency 8"), "{said}");
    }
    let caps = |s: Status| s.endpoints.iter().map(|e| e.max_concurrency).max();
    assert_eq!(live(&sock).and_then(caps), Some(8));
    client::control(&tcp, Action::Slower).unwrap();
    assert_eq!(live(&sock).and_then(caps), Some(6));
    client::control(&tcp, Action::Faster).unwrap();
    client::control(&tcp, Action::Faster).unwrap();
    client::control(&tcp, Action::Faster).unwrap();
    assert_eq!(live(&sock).and_then(caps), Some(8));
    // Without the token the client is refused and says why.
    let e = client::control(&Target::tcp(addr.clone()), Action::Faster).unwrap_err();
    assert!(format!("{e:#}").contains("401"), "{e:#}");
    client::control(&tcp, Action::Resume).unwrap();
    let out = finish(child);
    assert!(out.contains("DONE"), "{out}");
}

/// Issue 27: 2,000 connections opened to the status port and left silent, against a
/// barge whose open files limit (soft and hard) is 1,024, neither starve the status
/// socket nor the run: the port holds at most 256 and closes the rest at once (and the
/// held ones after the header timeout), so `GET /status` over <state>/barge.sock still
/// answers and the migrate ends DONE.
#[test]
fn idle_connections_to_the_status_port_starve_neither_the_socket_nor_the_run() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const IDLE: usize = 2_000;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= IDLE as u64 + 256,
        "this test needs {} open files; the hard limit is {hard}",
        IDLE + 256
    );
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let d = tmp();
    let (src, state, out) = (
        d.path().join("src"),
        d.path().join("state"),
        d.path().join("out"),
    );
    for i in 0..200u64 {
        write(
            &src,
            format!("d{}/f{i}", i % 7).as_bytes(),
            &rand_bytes(i, 9_000),
        );
    }
    init_small(&state, &[]);
    let addr = format!("127.0.0.1:{}", free_port());
    let child = spawn_limited(
        &state,
        "-n 1024",
        &[
            "--http",
            &addr,
            "--start-paused",
            "migrate",
            "--source",
            src.to_str().unwrap(),
            "--dest",
            out.to_str().unwrap(),
        ],
    );
    let sock = state.join("barge.sock");
    wait_for(
        "the listing of a paused run",
        Duration::from_secs(60),
        || live(&sock).filter(|s| s.progress.listing_done),
    );
    let to = addr.parse().unwrap();
    let mut idle = vec![];
    let mut failed = None;
    for _ in 0..IDLE {
        // A node that stopped accepting fills its backlog, and connecting then hangs:
        // the first connection not made in 5 s ends the opening.
        match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
            Ok(s) => idle.push(s),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Every connection made is still open on this side; the node answers on its
    // socket, and the run goes on to its end.
    let s = wait_for("status over the socket", Duration::from_secs(20), || {
        live(&sock)
    });
    assert!(s.paused);
    client::control(&Target::Unix(sock.clone()), Action::Resume).unwrap();
    let stdout = finish(child);
    assert!(stdout.contains("DONE"), "{stdout}");
    assert_same_tree(&src, &out);
    assert!(
        failed.is_none(),
        "connection {}: {failed:?}",
        idle.len() + 1
    );
    assert_eq!(idle.len(), IDLE);
}

//! Helpers of the gateway tests: awscli and boto3 as the application, both sides'
//! profiles, a running `barge gateway`.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{bin, tmp};

pub const AWS: &str = "/usr/bin/aws";

/// awscli against an S3 endpoint with the given keys.
pub fn aws(endpoint: &str, access: &str, secret: &str) -> Command {
    let mut c = Command::new(AWS);
    c.args(["--endpoint-url", endpoint])
        .env("AWS_ACCESS_KEY_ID", access)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE");
    c
}

pub fn run(c: &mut Command) -> std::process::Output {
    c.output().expect("run client")
}

pub fn run_ok(c: &mut Command) -> Vec<u8> {
    let o = run(c);
    assert!(
        o.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

pub fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

/// The two sides' keys as AWS profiles `src` and `dst` in files under `dir`.
pub fn profiles(dir: &Path, src: (&str, &str), dst: (&str, &str)) -> (String, String) {
    let creds = dir.join("aws-credentials");
    std::fs::write(
        &creds,
        format!(
            "[src]\naws_access_key_id = {}\naws_secret_access_key = {}\n[dst]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            src.0, src.1, dst.0, dst.1
        ),
    )
    .unwrap();
    let config = dir.join("aws-config");
    std::fs::write(
        &config,
        "[profile src]\nregion = us-east-1\n[profile dst]\nregion = us-east-1\n",
    )
    .unwrap();
    (
        creds.to_string_lossy().into_owned(),
        config.to_string_lossy().into_owned(),
    )
}

/// A barge command with both sides' endpoints and profiles.
pub struct Sides {
    pub state: std::path::PathBuf,
    pub files: (String, String),
    pub src_ep: String,
    pub dst_ep: String,
}

impl Sides {
    pub fn barge(&self, args: &[&str]) -> Command {
        let mut c = bin();
        c.arg("--state")
            .arg(&self.state)
            .args(["--source-endpoint", &self.src_ep, "--source-profile", "src"])
            .args(["--dest-endpoint", &self.dst_ep, "--dest-profile", "dst"])
            .args(args)
            .env("AWS_SHARED_CREDENTIALS_FILE", &self.files.0)
            .env("AWS_CONFIG_FILE", &self.files.1);
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
            "AWS_PROFILE",
        ] {
            c.env_remove(k);
        }
        c
    }
}

/// A running gateway, stopped (SIGTERM) when dropped.
pub struct Gw(pub Child);

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start(sides: &Sides, args: &[&str], port: u16) -> Gw {
    start_with(sides, args, port, None)
}

/// `start`, with `BARGE_CRASH_AT=crash` (the gateway kills itself there).
pub fn start_with(sides: &Sides, args: &[&str], port: u16, crash: Option<&str>) -> Gw {
    let mut c = sides.barge(args);
    if let Some(at) = crash {
        c.env("BARGE_CRASH_AT", at);
    }
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the gateway");
    let gw = Gw(child);
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return gw;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the gateway did not listen on {port}");
}

/// What a client sees of one object through an endpoint: ETag, length, bytes.
pub fn seen(c: impl Fn() -> Command, bucket: &str, key: &str) -> (String, u64, Vec<u8>) {
    let head = json(&run_ok(c().args([
        "s3api",
        "head-object",
        "--bucket",
        bucket,
        "--key",
        key,
    ])));
    let t = tmp();
    let out = t.path().join("o");
    run_ok(
        c().args(["s3api", "get-object", "--bucket", bucket, "--key", key])
            .arg(&out),
    );
    (
        head["ETag"].as_str().unwrap_or_default().to_string(),
        head["ContentLength"].as_u64().unwrap_or(u64::MAX),
        std::fs::read(&out).unwrap(),
    )
}

/// Every key of a listing, paged by `max` (awscli follows the continuation tokens).
pub fn keys(c: impl Fn() -> Command, bucket: &str, prefix: &str, max: &str) -> Vec<String> {
    let out = json(&run_ok(c().args([
        "s3api",
        "list-objects-v2",
        "--bucket",
        bucket,
        "--prefix",
        prefix,
        "--page-size",
        max,
    ])));
    out["Contents"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o["Key"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files under `dir`.
pub fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    (cert, key)
}

/// The venv python with boto3 (scripts/pyvenv.sh installs it once, from PyPI).
pub fn python() -> String {
    static PY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let o = Command::new(format!("{root}/scripts/pyvenv.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/pyvenv.sh");
        assert!(o.status.success(), "scripts/pyvenv.sh failed");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    })
    .clone()
}

/// tests/gateway_client/s3client.py (boto3) against `endpoint` as the application.
pub fn boto(endpoint: &str, bucket: &str, args: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/gateway_client/s3client.py"
    ))
    .args(args)
    .env("GW_ENDPOINT", endpoint)
    .env("GW_KEY", "APPKEY")
    .env("GW_SECRET", "appsecret")
    .env("GW_BUCKET", bucket)
    .env("TMPDIR", env!("CARGO_TARGET_TMPDIR"));
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_CA_BUNDLE",
    ] {
        c.env_remove(k);
    }
    c
}

/// A move from a fresh SAIO s3api bucket into a fresh radosgw bucket, and the
/// application's gateway keys (`APPKEY appsecret`, 0600).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub env: (&'static super::servers::Env, &'static super::servers::Env),
    pub src_bucket: String,
    pub dst_bucket: String,
    pub creds: std::path::PathBuf,
    pub files: (String, String),
}

impl Fixture {
    pub fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let (s, c) = (super::servers::saio(), super::servers::ceph());
        let dir = tmp();
        let id = std::process::id();
        let f = Fixture {
            src_bucket: format!("{tag}src{id}"),
            dst_bucket: format!("{tag}dst{id}"),
            creds: dir.path().join("gateway-keys"),
            files: profiles(
                dir.path(),
                (&s["SAIO_S3_ACCESS_KEY"], &s["SAIO_S3_SECRET_KEY"]),
                (&c["CEPH_S3_ACCESS_KEY"], &c["CEPH_S3_SECRET_KEY"]),
            ),
            env: (s, c),
            dir,
        };
        std::fs::write(&f.creds, "APPKEY appsecret\n").unwrap();
        std::fs::set_permissions(&f.creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        run_ok(
            f.src()
                .args(["s3", "mb", &format!("s3://{}", f.src_bucket)]),
        );
        run_ok(
            f.dst()
                .args(["s3", "mb", &format!("s3://{}", f.dst_bucket)]),
        );
        f
    }

    /// awscli at the source, with its own keys.
    pub fn src(&self) -> Command {
        let s = &self.env.0;
        aws(
            &s["SAIO_S3_ENDPOINT"],
            &s["SAIO_S3_ACCESS_KEY"],
            &s["SAIO_S3_SECRET_KEY"],
        )
    }

    /// awscli at the destination, with its own keys.
    pub fn dst(&self) -> Command {
        let c = &self.env.1;
        aws(
            &c["CEPH_S3_ENDPOINT"],
            &c["CEPH_S3_ACCESS_KEY"],
            &c["CEPH_S3_SECRET_KEY"],
        )
    }

    /// A state directory `name` (made with small chunks and segments) over both sides.
    pub fn sides(&self, name: &str) -> Sides {
        let state = self.dir.path().join(name);
        if !state.exists() {
            super::init_small(&state, &[]);
        }
        Sides {
            state,
            files: self.files.clone(),
            src_ep: self.env.0["SAIO_S3_ENDPOINT"].clone(),
            dst_ep: self.env.1["CEPH_S3_ENDPOINT"].clone(),
        }
    }

    /// Uploads `data` to the source as `key` (awscli's PutObject).
    pub fn put_source(&self, key: &str, data: &[u8]) {
        let p = self.dir.path().join("blob");
        std::fs::write(&p, data).unwrap();
        run_ok(
            self.src()
                .args([
                    "s3api",
                    "put-object",
                    "--bucket",
                    &self.src_bucket,
                    "--key",
                    key,
                ])
                .arg("--body")
                .arg(&p),
        );
    }

    /// `barge gateway` arguments for this move on `port` (`source`: with --source).
    pub fn gateway_args(&self, port: u16, source: bool, extra: &[&str]) -> Vec<String> {
        let mut a = vec!["gateway".to_string()];
        if source {
            a.extend(["--source".into(), format!("s3://{}", self.src_bucket)]);
        } else {
            a.extend(["--bucket".into(), self.src_bucket.clone()]);
        }
        a.extend([
            "--dest".into(),
            format!("s3://{}", self.dst_bucket),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--credentials".into(),
            self.creds.to_string_lossy().into_owned(),
        ]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
}

/// A running gateway (started with `--json`) whose finished passes are counted from the
/// lines it prints.
pub struct PassCounter {
    _gw: Gw,
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PassCounter {
    pub fn start(sides: &Sides, args: &[&str], port: u16) -> Self {
        Self::spawn(sides.barge(args), port)
    }

    /// Starts `c` (a `barge --json gateway` command) and counts its passes.
    pub fn spawn(mut c: Command, port: u16) -> Self {
        use std::io::BufRead;
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gateway");
        let out = child.stdout.take().expect("stdout");
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with("{\"pass\"") || line.contains("\"pass\":") {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        let gw = Gw(child);
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return PassCounter { _gw: gw, seen };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the gateway did not listen on {port}");
    }

    pub fn count(&self) -> u64 {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `n` passes have ended (a stuck move fails the test after 10 minutes).
    pub fn wait_for(&self, n: u64) {
        for _ in 0..6000 {
            if self.count() >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("{} passes ended, not {n}", self.count());
    }
}

//! Starts the project's real test servers (scripts/servers/) once per test binary and
//! hands out their endpoints. A server that does not come up fails the test: it is never
//! skipped.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Parsed `export NAME=value` lines of an env.sh.
pub type Env = HashMap<String, String>;

fn start(script: &str, state: &str, extra: &[(&str, &str)]) -> Env {
    // Cargo's run-time value: the compile-time one names wherever the binary was built.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let out = Command::new(root.join("scripts/servers").join(script))
        .arg(state)
        .envs(extra.iter().copied())
        .output()
        .expect("run server start script");
    assert!(
        out.status.success(),
        "{script} {state} failed: the test servers must come up\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.trim_matches('\'').trim_matches('"').to_string(),
            )
        })
        .collect()
}

/// The default SAIO (Swift API, tempauth, s3api) on 127.0.0.1:8080.
pub fn saio() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| start("saio-start.sh", "/tmp/barge-saio", &[]))
}

/// A second SAIO with Swift's ratelimit middleware on, on 127.0.0.1:8090.
pub fn saio_throttled() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        start(
            "saio-start.sh",
            "/tmp/barge-saio-throttled",
            &[
                ("SAIO_PORT", "8090"),
                ("SAIO_ACCOUNT_PORT", "6222"),
                ("SAIO_CONTAINER_PORT", "6221"),
                ("SAIO_OBJECT_PORT", "6220"),
                ("SAIO_MEMCACHED_PORT", "11321"),
                ("SAIO_RATELIMIT_OBJ_WRITES", "10"),
                ("SAIO_RATELIMIT_CONT_WRITES", "2"),
                ("SAIO_RATELIMIT_MAX_SLEEP", "0.2"),
                ("SAIO_RATELIMIT_BUFFER", "0"),
                ("SAIO_UPDATER", "0"),
            ],
        )
    })
}

/// Ceph (mon, osd, radosgw with S3 and Swift APIs) on 127.0.0.1:7480.
pub fn ceph() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| start("ceph-start.sh", "/tmp/barge-ceph", &[]))
}

/// Keystone v3 on 127.0.0.1:5000 and a Swift proxy on :8085 that takes its tokens, in
/// front of the default SAIO's storage (started first).
pub fn keystone() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        saio();
        start("keystone-start.sh", "/tmp/barge-keystone", &[])
    })
}

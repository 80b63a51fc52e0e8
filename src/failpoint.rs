//! Crash points for tests: `BARGE_CRASH_AT=<name>:<n>` makes the process SIGKILL itself
//! the n-th time it passes the named point, exactly like an operator's `kill -9` at
//! that moment. Unset (always, in production) it costs one relaxed load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Environment variable naming the crash point.
pub const ENV_CRASH_AT: &str = "BARGE_CRASH_AT";

struct Point {
    name: String,
    at: u64,
    seen: AtomicU64,
}

fn config() -> &'static Option<Point> {
    static CFG: OnceLock<Option<Point>> = OnceLock::new();
    CFG.get_or_init(|| {
        let v = std::env::var(ENV_CRASH_AT).ok()?;
        let (name, n) = v.rsplit_once(':')?;
        Some(Point {
            name: name.to_string(),
            at: n.parse().ok()?,
            seen: AtomicU64::new(0),
        })
    })
}

/// Passes the crash point `name`.
pub fn point(name: &str) {
    if let Some(p) = config()
        && p.name == name
        && p.seen.fetch_add(1, Ordering::SeqCst) + 1 == p.at
    {
        eprintln!("barge: crash point {name} reached, killing myself");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

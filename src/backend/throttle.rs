//! Per-endpoint back-pressure: an AIMD concurrency limit, an optional request-rate cap,
//! and jittered exponential retries of transient failures.
//!
//! * Every request takes a [`Permit`]; at most `floor(limit)` are out at once.
//! * A success raises the limit by 1/limit (about +1 per round trip of the whole window,
//!   TCP-style additive increase), up to `--max-concurrency`.
//! * A throttle answer (S3 503 SlowDown, HTTP 429, Swift 498) halves it (multiplicative
//!   decrease, at most once per 200 ms so one burst of 503s counts once) and honours
//!   `Retry-After` by pausing new requests.
//! * Latency growth: when a request takes more than [`LATENCY_FACTOR`] times the smoothed
//!   baseline, the limit shrinks by 10%, before the server has to say no.
//! * `--max-requests-per-second` spaces request starts.
//! * Transient failures (reset, timeout, 5xx) retry with jittered exponential back-off;
//!   permanent ones (4xx, bad input) fail at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use serde::Serialize;
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// Lowest concurrency the limit can shrink to.
pub const MIN_CONCURRENCY: f64 = 1.0;
/// Recent requests this many times slower than the smoothed baseline mean congestion.
pub const LATENCY_FACTOR: f64 = 4.0;
/// Latencies per size class whose median is "recent latency": one slow request (a GC
/// pause, a disk flush on the server) moves a median of this many samples not at all,
/// growth that lasts does.
pub const RECENT_SAMPLES: usize = 7;
/// Attempts per request before giving up (first try included) when it fails (timeouts,
/// resets, 5xx).
pub const MAX_ATTEMPTS: usize = 8;
/// Throttled answers (429, Swift's 498, 503 SlowDown) a request may get before it gives
/// up: the server is up and asks for patience, so a request waits longer for it than for
/// failures (with the 10 s cap on one wait, minutes), and an object is not failed just
/// because many workers queued behind a rate limit at once.
pub const MAX_THROTTLED: usize = 24;
/// Minimum time between two multiplicative decreases.
pub const DECREASE_GAP: Duration = Duration::from_millis(200);

/// How long an endpoint may fail every request (timeouts, resets, 5xx; not throttling,
/// which is an answer) before it is declared down: calls then fail at once and drain stops
/// taking objects, instead of spending 8 stall timeouts on each one (`--down-after`).
pub const DOWN_AFTER: Duration = Duration::from_secs(300);

/// Limits of one endpoint.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    pub max_concurrency: usize,
    pub initial_concurrency: usize,
    pub max_rps: Option<f64>,
    /// Silence on a connection after which an attempt is abandoned and retried
    /// (`--stall-timeout`).
    pub stall_timeout: Duration,
    /// Failing without a single success for this long declares the endpoint down
    /// (`--down-after`, [`DOWN_AFTER`]).
    pub down_after: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_concurrency: 64,
            initial_concurrency: 8,
            max_rps: None,
            stall_timeout: crate::backend::STALL_TIMEOUT,
            down_after: DOWN_AFTER,
        }
    }
}

/// How a failed attempt should be treated.
#[derive(Debug)]
pub enum Failure {
    /// The server asked us to slow down (503 SlowDown, 429, 498).
    Throttled {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Worth retrying (connection reset, timeout, 5xx, truncated body).
    Transient(String),
    /// Retrying cannot help.
    Permanent(Error),
}

/// Counters of one endpoint, for status and tests.
#[derive(Debug, Default, Serialize, Clone)]
pub struct ThrottleStats {
    pub name: String,
    pub max_concurrency: usize,
    pub max_rps: Option<f64>,
    /// Smoothed latency of requests with small payloads (size class 0), seconds.
    pub latency_small: Option<f64>,
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub errors: u64,
    pub limit: f64,
    pub in_flight: usize,
    /// Why the endpoint was declared down, if it was.
    pub down: Option<String>,
}

struct State {
    limit: f64,
    last_decrease: Option<Instant>,
    pause_until: Option<Instant>,
    next_start: Instant,
    /// Smoothed latency per payload size class (see [`size_class`]): a 32 MiB PUT is not
    /// congestion just because it takes longer than a 1 KiB one.
    latency_ewma: [Option<f64>; SIZE_CLASSES],
    /// The last [`RECENT_SAMPLES`] latencies per size class (ring buffers, written at
    /// `recent_seen % RECENT_SAMPLES`), and how many each class has seen.
    recent: [[f64; RECENT_SAMPLES]; SIZE_CLASSES],
    recent_seen: [u64; SIZE_CLASSES],
    /// The first failed attempt since the last success (tokio's clock, so tests can
    /// pause it).
    failing_since: Option<tokio::time::Instant>,
}

/// Number of payload size classes for the latency baseline.
pub const SIZE_CLASSES: usize = 8;

/// Size class of a payload: 0 for unknown/≤ 64 KiB, then one class per 4× up to 1 GiB+.
pub fn size_class(bytes: u64) -> usize {
    let mut c = 0;
    let mut limit = 64u64 << 10;
    while bytes > limit && c < SIZE_CLASSES - 1 {
        c += 1;
        limit *= 4;
    }
    c
}

/// The back-pressure controller of one endpoint.
pub struct Throttle {
    name: String,
    stall_timeout: Duration,
    /// `--max-concurrency`, changeable while running (`Throttle::set_caps`).
    cap: AtomicUsize,
    /// `--max-requests-per-second` as f64 bits; 0 means no cap.
    rps_bits: AtomicU64,
    /// The configured caps (`--max-concurrency`, `--max-requests-per-second`): the
    /// operator's live changes ([`Throttle::set_caps`]) never go above them.
    ceiling: (usize, Option<f64>),
    state: Mutex<State>,
    in_flight: AtomicUsize,
    freed: Notify,
    requests: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    errors: AtomicU64,
    down_after: Duration,
    /// Set once when the endpoint is declared down; never cleared within a run.
    down: std::sync::OnceLock<String>,
}

/// A slot of the concurrency window, released on drop.
pub struct Permit<'a> {
    t: &'a Throttle,
    start: Instant,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.t.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.t.freed.notify_waiters();
    }
}

impl Throttle {
    pub fn new(name: impl Into<String>, cfg: ThrottleConfig) -> Self {
        let init = cfg.initial_concurrency.clamp(1, cfg.max_concurrency.max(1)) as f64;
        Throttle {
            name: name.into(),
            stall_timeout: cfg.stall_timeout,
            state: Mutex::new(State {
                limit: init,
                last_decrease: None,
                pause_until: None,
                next_start: Instant::now(),
                latency_ewma: [None; SIZE_CLASSES],
                recent: [[0.0; RECENT_SAMPLES]; SIZE_CLASSES],
                recent_seen: [0; SIZE_CLASSES],
                failing_since: None,
            }),
            cap: AtomicUsize::new(cfg.max_concurrency.max(1)),
            rps_bits: AtomicU64::new(cfg.max_rps.filter(|r| *r > 0.0).unwrap_or(0.0).to_bits()),
            ceiling: (cfg.max_concurrency.max(1), cfg.max_rps.filter(|r| *r > 0.0)),
            in_flight: AtomicUsize::new(0),
            freed: Notify::new(),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            down_after: cfg.down_after,
            down: std::sync::OnceLock::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configured stall timeout of this endpoint's connections.
    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The concurrency cap and request-rate cap now in force.
    pub fn caps(&self) -> (usize, Option<f64>) {
        let rps = f64::from_bits(self.rps_bits.load(Ordering::Relaxed));
        (self.cap.load(Ordering::Relaxed), (rps > 0.0).then_some(rps))
    }

    /// The configured caps, which [`Throttle::set_caps`] never exceeds.
    pub fn ceiling(&self) -> (usize, Option<f64>) {
        self.ceiling
    }

    /// Changes the caps of a running endpoint (the operator's keys in `barge tui`),
    /// within the configured ones ([`Throttle::ceiling`]): a request above them gets
    /// them. The adaptive window shrinks at once to a lower cap; a higher cap is grown
    /// into.
    pub fn set_caps(&self, max_concurrency: usize, max_rps: Option<f64>) {
        let cap = max_concurrency.clamp(1, self.ceiling.0);
        self.cap.store(cap, Ordering::Relaxed);
        let rps = match (max_rps.filter(|r| *r > 0.0), self.ceiling.1) {
            (Some(r), Some(top)) => r.min(top),
            (None, Some(top)) => top,
            (r, None) => r.unwrap_or(0.0),
        };
        self.rps_bits.store(rps.to_bits(), Ordering::Relaxed);
        let mut s = self.lock();
        s.limit = s.limit.min(cap as f64);
        self.freed.notify_waiters();
    }

    pub fn stats(&self) -> ThrottleStats {
        let (max_concurrency, max_rps) = self.caps();
        let latency_small = self.lock().latency_ewma[0];
        ThrottleStats {
            name: self.name.clone(),
            max_concurrency,
            max_rps,
            latency_small,
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            limit: self.lock().limit,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            down: self.down().map(str::to_string),
        }
    }

    /// Why the endpoint was declared down (every request failing for `down_after`).
    pub fn down(&self) -> Option<&str> {
        self.down.get().map(String::as_str)
    }

    /// The error of every call once the endpoint is down ([`Error::Unreachable`], naming
    /// the endpoint and why); None while it is up.
    pub fn down_error(&self) -> Option<Error> {
        self.down().map(|why| Error::Unreachable {
            endpoint: self.name.clone(),
            message: why.to_string(),
        })
    }

    /// Records a failed attempt; the endpoint's down error when it has now failed every
    /// attempt for `down_after`.
    fn on_failure(&self, message: &str) -> Option<Error> {
        let since = *self
            .lock()
            .failing_since
            .get_or_insert_with(tokio::time::Instant::now);
        let failing = since.elapsed();
        if failing < self.down_after {
            return None;
        }
        let why = format!(
            "no request succeeded for {:.0} s; last error: {message}",
            failing.as_secs_f64()
        );
        if self.down.set(why).is_ok() {
            tracing::error!("{} is down: {}", self.name, self.down().unwrap_or_default());
        }
        self.down_error()
    }

    /// Waits for a slot in the window, a pause to end and the rate cap.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let notified = self.freed.notified();
            let (wait, limit) = {
                let mut s = self.lock();
                let now = Instant::now();
                let mut wait = s.pause_until.filter(|&p| p > now).map(|p| p - now);
                if wait.is_none()
                    && let Some(rps) = self.caps().1
                {
                    if s.next_start > now {
                        wait = Some(s.next_start - now);
                    }
                    if wait.is_none()
                        && (self.in_flight.load(Ordering::SeqCst) as f64) < s.limit.floor()
                    {
                        s.next_start = now + Duration::from_secs_f64(1.0 / rps);
                    }
                }
                (wait, s.limit.floor().max(MIN_CONCURRENCY) as usize)
            };
            if let Some(w) = wait {
                tokio::time::sleep(w).await;
                continue;
            }
            let cur = self.in_flight.load(Ordering::SeqCst);
            if cur < limit
                && self
                    .in_flight
                    .compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                self.requests.fetch_add(1, Ordering::Relaxed);
                return Permit {
                    t: self,
                    start: Instant::now(),
                };
            }
            // Wake on a release, or re-check soon (the limit may have grown).
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    fn on_success(&self, latency: Duration, class: usize) {
        let mut s = self.lock();
        s.failing_since = None;
        let l = latency.as_secs_f64();
        let class = class.min(SIZE_CLASSES - 1);
        let base = *s.latency_ewma[class].get_or_insert(l);
        let seen = s.recent_seen[class];
        s.recent[class][(seen % RECENT_SAMPLES as u64) as usize] = l;
        s.recent_seen[class] = seen + 1;
        // Per request, under the lock: a copy of 7 floats on the stack, no allocation.
        let mut sorted = s.recent[class];
        sorted.sort_by(f64::total_cmp);
        let median = sorted[RECENT_SAMPLES / 2];
        let full = seen + 1 >= RECENT_SAMPLES as u64;
        if full && median > base * LATENCY_FACTOR && median > 0.05 {
            let gap_ok = s.last_decrease.is_none_or(|t| t.elapsed() >= DECREASE_GAP);
            if gap_ok {
                s.limit = (s.limit * 0.9).max(MIN_CONCURRENCY);
                s.last_decrease = Some(Instant::now());
            }
        } else {
            s.limit = (s.limit + 1.0 / s.limit).min(self.cap.load(Ordering::Relaxed) as f64);
        }
        // Slow samples barely move the baseline: congestion must not become "normal"
        // before the median sees it; a lasting shift still does, slowly.
        let alpha = if l <= base * LATENCY_FACTOR {
            0.1
        } else {
            0.01
        };
        s.latency_ewma[class] = Some(base * (1.0 - alpha) + l * alpha);
    }

    fn on_throttle(&self, retry_after: Option<Duration>) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        if s.last_decrease.is_none_or(|t| t.elapsed() >= DECREASE_GAP) {
            s.limit = (s.limit / 2.0).max(MIN_CONCURRENCY);
            s.last_decrease = Some(Instant::now());
        }
        if let Some(ra) = retry_after {
            let until = Instant::now() + ra.min(Duration::from_secs(60));
            s.pause_until = Some(s.pause_until.map_or(until, |p| p.max(until)));
        }
    }

    /// Runs `op` under the throttle, retrying what is worth retrying. `what` names the
    /// request in errors (e.g. "PUT swift://c/key").
    pub async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        self.call_sized(what, 0, op).await
    }

    /// [`Throttle::call`] for a request carrying `bytes` of payload (up or down), so its
    /// latency is compared with requests of similar size.
    pub async fn call_sized<T, F, Fut>(&self, what: &str, bytes: u64, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        let class = size_class(bytes);
        let waits = |times: usize| {
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(times)
                .with_jitter()
                .build()
        };
        let (mut failed, mut throttled) = (waits(MAX_ATTEMPTS - 1), waits(MAX_THROTTLED));
        let mut attempts = 0;
        loop {
            attempts += 1;
            if let Some(e) = self.down_error() {
                return Err(e);
            }
            let permit = self.acquire().await;
            let res = op().await;
            let latency = permit.start.elapsed();
            drop(permit);
            let (message, retry_after, wait) = match res {
                Ok(v) => {
                    self.on_success(latency, class);
                    return Ok(v);
                }
                Err(Failure::Permanent(e)) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e.at_endpoint(&self.name));
                }
                Err(Failure::Throttled {
                    retry_after,
                    message,
                }) => {
                    self.on_throttle(retry_after);
                    (message, retry_after, throttled.next())
                }
                Err(Failure::Transient(message)) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(e) = self.on_failure(&message) {
                        return Err(e);
                    }
                    (message, None, failed.next())
                }
            };
            match wait {
                Some(d) => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("{what} on {}: {message}; retrying in {d:?}", self.name);
                    tokio::time::sleep(d.max(retry_after.unwrap_or_default())).await;
                }
                None => {
                    return Err(Error::Request {
                        endpoint: self.name.clone(),
                        message: format!("{what}: gave up after {attempts} attempts: {message}"),
                    });
                }
            }
        }
    }
}

/// Classifies an HTTP status: throttle, transient or permanent.
pub fn classify_status(status: u16, retry_after: Option<Duration>, message: String) -> Failure {
    match status {
        429 | 498 | 503 => Failure::Throttled {
            retry_after,
            message,
        },
        408 | 500 | 502 | 504 => Failure::Transient(message),
        _ => Failure::Permanent(Error::refused(message)),
    }
}

/// Parses a `Retry-After` header given in seconds.
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    let v = v?.trim();
    let secs = match v.parse::<f64>() {
        Ok(s) => s,
        // The other form (RFC 9110): an HTTP date; a date already past means now.
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            at.duration_since(std::time::SystemTime::now())
                .map_or(0.0, |d| d.as_secs_f64())
        }
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_and_as_an_http_date() {
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        let in_a_minute = std::time::SystemTime::now() + Duration::from_secs(60);
        let d = parse_retry_after(Some(&httpdate::fmt_http_date(in_a_minute))).unwrap();
        assert!((55..=60).contains(&d.as_secs()), "{d:?}");
        let past = parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(past, Some(Duration::ZERO));
        assert_eq!(parse_retry_after(Some("soon")), None);
        assert_eq!(parse_retry_after(Some("-3")), None);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_endpoint_failing_for_down_after_is_down_and_fails_fast() {
        let t = Throttle::new(
            "test",
            ThrottleConfig {
                down_after: Duration::from_secs(2),
                ..Default::default()
            },
        );
        // A success in between resets the clock: one failing request alone is retried.
        let mut n = 0;
        let r: Result<u32> = t
            .call("GET x", || {
                n += 1;
                let fail = n < 3;
                async move {
                    if fail {
                        Err(Failure::Transient("500".into()))
                    } else {
                        Ok(1)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 1);
        assert!(t.down().is_none());
        // Failing without an answer for 2 s: down, with the last error named.
        let r: Result<u32> = t
            .call("PUT y", || async {
                Err(Failure::Transient("reset".into()))
            })
            .await;
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("test is down") && e.contains("last error: reset"),
            "{e}"
        );
        // From now on calls fail without a request.
        let mut called = false;
        let r: Result<u32> = t
            .call("GET z", || {
                called = true;
                async { Ok(1) }
            })
            .await;
        assert!(r.is_err() && !called);
        assert!(t.stats().down.is_some());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn throttling_halves_and_success_grows_the_window() {
        let t = Throttle::new(
            "test",
            ThrottleConfig {
                max_concurrency: 16,
                initial_concurrency: 8,
                max_rps: None,
                ..Default::default()
            },
        );
        let mut n = 0;
        let r: Result<u32> = t
            .call("GET x", || {
                n += 1;
                let k = n;
                async move {
                    if k < 3 {
                        Err(Failure::Throttled {
                            retry_after: None,
                            message: "503 SlowDown".into(),
                        })
                    } else {
                        Ok(k)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 3);
        let s = t.stats();
        assert_eq!((s.throttled, s.retries), (2, 2));
        assert!(s.limit < 8.0, "window shrank: {}", s.limit);
        for _ in 0..200 {
            t.call("GET y", || async { Ok::<_, Failure>(()) })
                .await
                .unwrap();
        }
        assert!(t.stats().limit > s.limit, "window grew back");
        assert!(t.stats().limit <= 16.0);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_throttled_request_waits_longer_than_a_failing_one() {
        let t = Throttle::new("test", ThrottleConfig::default());
        let mut calls = 0;
        let r: Result<()> = t
            .call("PUT k", || {
                calls += 1;
                async {
                    Err(Failure::Throttled {
                        retry_after: None,
                        message: "498 Slow down".into(),
                    })
                }
            })
            .await;
        let e = r.unwrap_err().to_string();
        assert!(e.contains("gave up after 25 attempts"), "{e}");
        assert_eq!(calls, MAX_THROTTLED + 1);
        let mut calls = 0;
        let r: Result<u32> = t
            .call("PUT k", || {
                calls += 1;
                let k = calls;
                async move {
                    match k {
                        k if k <= 10 => Err(Failure::Throttled {
                            retry_after: None,
                            message: "503 SlowDown".into(),
                        }),
                        _ => Ok(k),
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 11, "ten throttled answers are waited out");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn permanent_errors_are_not_retried_and_transient_ones_give_up() {
        let t = Throttle::new("test", ThrottleConfig::default());
        let mut calls = 0;
        let r: Result<()> = t
            .call("PUT k", || {
                calls += 1;
                async { Err(Failure::Permanent(Error::refused("403"))) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r: Result<()> = t
            .call("PUT k", || {
                calls += 1;
                async { Err(Failure::Transient("reset".into())) }
            })
            .await;
        assert!(
            r.unwrap_err()
                .to_string()
                .contains("gave up after 8 attempts")
        );
        assert_eq!(calls, MAX_ATTEMPTS);
    }

    #[test]
    fn one_slow_request_does_not_cut_the_window_lasting_slowness_does() {
        let cfg = ThrottleConfig {
            initial_concurrency: 8,
            max_concurrency: 8,
            ..Default::default()
        };
        let t = Throttle::new("test", cfg);
        let ms = Duration::from_millis;
        for _ in 0..30 {
            t.on_success(ms(10), 0);
        }
        // A flush on the server: one request takes 100x longer.
        t.on_success(ms(1000), 0);
        for _ in 0..5 {
            t.on_success(ms(10), 0);
        }
        assert_eq!(t.lock().limit, 8.0, "a single outlier cut the window");
        // The server stays slow: the window shrinks once the median sees it.
        for _ in 0..RECENT_SAMPLES {
            t.on_success(ms(300), 0);
        }
        assert!(
            t.lock().limit < 8.0,
            "lasting slowness left the window at 8"
        );
    }

    #[test]
    fn size_classes_separate_small_and_large_payloads() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(64 << 10), 0);
        assert_eq!(size_class((64 << 10) + 1), 1);
        assert!(size_class(32 << 20) > size_class(1 << 20));
        assert_eq!(size_class(u64::MAX), SIZE_CLASSES - 1);
    }

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(
            classify_status(503, None, "x".into()),
            Failure::Throttled { .. }
        ));
        assert!(matches!(
            classify_status(498, None, "x".into()),
            Failure::Throttled { .. }
        ));
        assert!(matches!(
            classify_status(500, None, "x".into()),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify_status(404, None, "x".into()),
            Failure::Permanent(_)
        ));
        assert_eq!(parse_retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(Some("soon")), None);
    }
}

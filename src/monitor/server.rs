//! The status API: HTTP/1.1 (hyper) on a Unix socket in the state directory (mode 0600,
//! always) and, when asked with `--http ADDR`, on a TCP address (loopback by default;
//! binding elsewhere is the operator's explicit choice).
//!
//! - `GET /status`: the status document as JSON (`barge_tui::model::Status`);
//! - `GET /metrics`: Prometheus / OpenMetrics text;
//! - `POST /control?action=pause|resume|faster|slower|rate-up|rate-down`.
//!
//! The socket's 0600 mode is its only check. On TCP (issue 27), every request must name
//! a `Host` this node answers to (the bound address, `localhost`, `127.0.0.1`, `[::1]`,
//! or an `--http-allow-host` name: a page of another site rebinding its name to this
//! address is refused) and carry no `Origin` (browsers add one to cross-origin
//! requests), else 403; `POST /control` also needs `Authorization: Bearer <token>`
//! ([`token`], `<state>/control.token`), else 401. `--metrics-http ADDR` is a second,
//! read-only listener: `GET /metrics` only, any IP literal as `Host`, so it may bind
//! wider than the control port.
//!
//! Every listener holds at most [`MAX_CONNECTIONS`] connections (one more is closed at
//! once), gives a client [`HEADER_TIMEOUT`] to send a request's head (hyper restarts
//! that timer before each request, so it also closes idle keep-alive connections) and
//! closes any connection after [`CONNECTION_LIFETIME`].

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use barge_tui::model::Action;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Monitor;
use super::token::{self, ControlToken};
use crate::error::{Error, Result};

/// Name of the status socket inside the state directory.
pub const SOCKET_NAME: &str = "barge.sock";

/// Content type of `/metrics` (prometheus-client writes OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections one listener holds at once; a connection beyond them is closed as soon
/// as it is accepted, so idle clients cannot take the process's file descriptors.
pub const MAX_CONNECTIONS: usize = 256;

/// Time a client has to send a request's head, from the moment the server waits for
/// one (after the connection opens, and after each reply on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest life of a connection: replies take milliseconds, so this only ends clients
/// that trickle a request body or hold a connection open by other means.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// Host names every TCP listener answers to, besides its own address.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// The status API's TCP listeners (the Unix socket is always served).
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// `--http`: status, metrics and control (control with the bearer token).
    pub addr: Option<SocketAddr>,
    /// `--metrics-http`: `GET /metrics` only.
    pub metrics: Option<SocketAddr>,
    /// `--http-allow-host`: more `Host` names (or addresses) the listeners answer to.
    pub allow_hosts: Vec<String>,
}

/// The running status API; the socket file is removed when this is dropped.
pub struct StatusServer {
    socket: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The TCP address actually bound (useful with port 0).
    pub http: Option<SocketAddr>,
    /// The read-only metrics address actually bound.
    pub metrics: Option<SocketAddr>,
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Starts the status API for `monitor` on `<state>/barge.sock` and, if given, `http`.
/// The monitor a server answers for; the daemon swaps in a new one for each job.
#[derive(Clone)]
pub struct MonitorSlot(Arc<std::sync::RwLock<Arc<Monitor>>>);

impl MonitorSlot {
    pub fn new(m: Arc<Monitor>) -> Self {
        MonitorSlot(Arc::new(std::sync::RwLock::new(m)))
    }

    pub fn get(&self) -> Arc<Monitor> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set(&self, m: Arc<Monitor>) {
        match self.0.write() {
            Ok(mut g) => *g = m,
            Err(p) => *p.into_inner() = m,
        }
    }
}

pub async fn start(
    monitor: Arc<Monitor>,
    state: &Path,
    http: &HttpOptions,
) -> Result<StatusServer> {
    start_slot(MonitorSlot::new(monitor), state, http).await
}

/// Like [`start`], answering for whatever monitor `slot` holds at each request.
pub async fn start_slot(
    monitor: MonitorSlot,
    state: &Path,
    http: &HttpOptions,
) -> Result<StatusServer> {
    let socket = state.join(SOCKET_NAME);
    if socket.exists() {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            return Err(Error::State {
                path: state.to_path_buf(),
                message: format!("{} is served by another running barge", socket.display()),
            });
        }
        // Left by a process that died: nobody answers on it.
        std::fs::remove_file(&socket)
            .map_err(|e| Error::io("removing a stale status socket", &socket, e))?;
    }
    let ul = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| Error::io("binding the status socket", &socket, e))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("restricting the status socket", &socket, e))?;
    let mut tasks = vec![tokio::spawn(accept_unix(ul, monitor.clone()))];
    let mut bound = None;
    if let Some(addr) = http.addr {
        let token = token::load_or_create(state)?;
        let (tl, at) = listen("--http", addr).await?;
        bound = Some(at);
        let door = Door::Control(
            Arc::new(TcpPolicy::new(at, &http.allow_hosts, false)),
            token,
        );
        tasks.push(tokio::spawn(accept_tcp(tl, monitor.clone(), door)));
        tracing::info!(
            "POST /control on {at} needs `Authorization: Bearer` and the token in {}",
            token::path(state).display()
        );
    }
    let mut metrics = None;
    if let Some(addr) = http.metrics {
        let (tl, at) = listen("--metrics-http", addr).await?;
        metrics = Some(at);
        let door = Door::Metrics(Arc::new(TcpPolicy::new(at, &http.allow_hosts, true)));
        tasks.push(tokio::spawn(accept_tcp(tl, monitor.clone(), door)));
    }
    Ok(StatusServer {
        socket,
        tasks,
        http: bound,
        metrics,
    })
}

/// Binds one TCP listener; returns it with the address it got.
async fn listen(option: &str, addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let tl = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::option(option, format!("cannot listen on {addr}: {e}")))?;
    let at = tl.local_addr().unwrap_or(addr);
    if !addr.ip().is_loopback() {
        tracing::warn!("status API listening on {at}, beyond loopback ({option})");
    }
    Ok((tl, at))
}

/// Which listener a connection came through, and so what it may do.
#[derive(Clone)]
enum Door {
    /// `<state>/barge.sock`: everything, no checks beyond the socket's mode.
    Unix,
    /// `--http`: everything, with the Host and Origin checks; control with the token.
    Control(Arc<TcpPolicy>, ControlToken),
    /// `--metrics-http`: `GET /metrics`, with the Host and Origin checks.
    Metrics(Arc<TcpPolicy>),
}

/// The `Host` values a TCP listener answers to.
struct TcpPolicy {
    /// Lower-case hosts without port: the bound address, loopback names, allowed names.
    hosts: Vec<String>,
    /// Any IP literal is a fine `Host` (the read-only metrics listener: a rebinding page
    /// always names a host name).
    any_ip: bool,
}

impl TcpPolicy {
    fn new(bound: SocketAddr, allow: &[String], any_ip: bool) -> Self {
        let mut hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
        hosts.push(ip_host(bound.ip()));
        for a in allow {
            let a = a.trim().to_ascii_lowercase();
            match a.parse::<IpAddr>() {
                Ok(ip) => hosts.push(ip_host(ip)),
                Err(_) => hosts.push(a),
            }
        }
        TcpPolicy { hosts, any_ip }
    }

    /// Why a request may not pass this listener, if it may not.
    fn refuse(&self, headers: &hyper::HeaderMap) -> Option<String> {
        if headers.contains_key(hyper::header::ORIGIN) {
            return Some("requests from web pages (with an Origin header) are refused".into());
        }
        let Some(host) = headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
        else {
            return Some("a request must name its Host".into());
        };
        let name = host_name(host).map(|n| n.to_ascii_lowercase());
        let ok = name.as_deref().is_some_and(|n| {
            self.hosts.iter().any(|h| h == n)
                || (self.any_ip
                    && n.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .is_ok())
        });
        (!ok).then(|| format!("Host {host:?} is not this node's (see --http-allow-host)"))
    }
}

/// An address as it appears in a `Host` header (IPv6 in brackets).
fn ip_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`); None if
/// it is not one.
fn host_name(host: &str) -> Option<&str> {
    let (name, rest) = if let Some(v6) = host.strip_prefix('[') {
        host.split_at(v6.find(']')? + 2)
    } else {
        host.split_at(host.find(':').unwrap_or(host.len()))
    };
    let port_ok = rest.is_empty()
        || rest
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (!name.is_empty() && port_ok).then_some(name)
}

/// Accepts on the status socket until the server is dropped.
async fn accept_unix(ul: tokio::net::UnixListener, slot: MonitorSlot) {
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let warned = AtomicBool::new(false);
    loop {
        match ul.accept().await {
            Ok((s, _)) => {
                if let Some(permit) = admit(&room, &warned, "status socket") {
                    serve(slot.clone(), Door::Unix, s, permit);
                }
            }
            Err(e) => {
                tracing::warn!("status socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts on a TCP listener until the server is dropped.
async fn accept_tcp(tl: tokio::net::TcpListener, slot: MonitorSlot, door: Door) {
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let warned = AtomicBool::new(false);
    loop {
        match tl.accept().await {
            Ok((s, _)) => {
                if let Some(permit) = admit(&room, &warned, "status port") {
                    serve(slot.clone(), door.clone(), s, permit);
                }
            }
            Err(e) => {
                tracing::warn!("status port: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A place for one more connection, or None: the caller drops (closes) it at once.
fn admit(room: &Arc<Semaphore>, warned: &AtomicBool, what: &str) -> Option<OwnedSemaphorePermit> {
    let permit = room.clone().try_acquire_owned().ok();
    if permit.is_none() && !warned.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "{what}: {MAX_CONNECTIONS} connections open; further ones are closed at once"
        );
    }
    permit
}

/// Serves one connection on its own task, holding its place until it closes.
fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    slot: MonitorSlot,
    door: Door,
    s: S,
    permit: OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let m = slot.get();
            let door = door.clone();
            async move { Ok::<_, Infallible>(route(&door, &m, req)) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(s), svc);
        match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
            Ok(Err(e)) => tracing::debug!("status connection: {e}"),
            Err(_) => tracing::debug!("status connection closed after {CONNECTION_LIFETIME:?}"),
            Ok(Ok(())) => {}
        }
        drop(permit);
    });
}

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The bearer token a request carries, if any.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let v = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// Checks a request against the listener it came through, then answers it.
fn route(door: &Door, m: &Monitor, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let refused = match door {
        Door::Unix => None,
        Door::Control(p, _) | Door::Metrics(p) => p.refuse(req.headers()),
    };
    if let Some(why) = refused {
        tracing::warn!(
            "status API: {} {} refused: {why}",
            req.method(),
            req.uri().path()
        );
        return reply(StatusCode::FORBIDDEN, "text/plain", why);
    }
    if let Door::Metrics(_) = door
        && (req.method(), req.uri().path()) != (&Method::GET, "/metrics")
    {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "barge metrics listener (--metrics-http): GET /metrics only",
        );
    }
    if let Door::Control(_, t) = door
        && req.uri().path() == "/control"
        && !bearer(&req).is_some_and(|b| t.matches(b))
    {
        tracing::warn!("status API: /control without the control token refused");
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "/control over TCP needs `Authorization: Bearer <token>`, the token in \
             <state>/control.token",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"barge\""),
        );
        return r;
    }
    answer(m, req)
}

fn answer(m: &Monitor, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/status") => match serde_json::to_vec(&m.status()) {
            Ok(b) => reply(StatusCode::OK, "application/json", b),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            super::metrics::with_extra(
                super::metrics::encode_status(&m.status()),
                &m.extra_metrics(),
            ),
        ),
        (&Method::POST, "/control") => {
            let action = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("action="));
            match action.and_then(Action::parse) {
                Some(a) => {
                    let what = m.control(a);
                    tracing::info!("operator: {}: {what}", a.as_str());
                    reply(StatusCode::OK, "text/plain", what)
                }
                None => reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "action must be one of pause, resume, faster, slower, rate-up, rate-down",
                ),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "barge status API: GET /status, GET /metrics, POST /control?action=...",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn host_names_are_split_from_their_port() {
        assert_eq!(host_name("127.0.0.1:9898"), Some("127.0.0.1"));
        assert_eq!(host_name("[::1]:9898"), Some("[::1]"));
        assert_eq!(host_name("[::1]"), Some("[::1]"));
        assert_eq!(host_name("Node7"), Some("Node7"));
        assert_eq!(host_name("a:b:c"), None);
        assert_eq!(host_name("[::1"), None);
        assert_eq!(host_name(":80"), None);
        assert_eq!(host_name("x:"), None);
    }

    #[test]
    fn only_the_node_s_own_hosts_and_no_origin_pass() {
        let at: SocketAddr = "10.1.2.3:9898".parse().unwrap();
        let p = TcpPolicy::new(at, &["Node7.example".into(), "::2".into()], false);
        for ok in [
            "10.1.2.3:9898",
            "localhost:9898",
            "LOCALHOST",
            "127.0.0.1",
            "[::1]:1",
            "node7.example:9898",
            "[::2]",
        ] {
            assert_eq!(p.refuse(&headers(&[("host", ok)])), None, "{ok}");
        }
        for bad in [
            "evil.example",
            "10.1.2.4:9898",
            "node7.example.evil",
            "0.0.0.0",
        ] {
            assert!(p.refuse(&headers(&[("host", bad)])).is_some(), "{bad}");
        }
        assert!(p.refuse(&headers(&[])).is_some(), "no Host");
        let with_origin = headers(&[("host", "localhost"), ("origin", "http://localhost")]);
        assert!(p.refuse(&with_origin).unwrap().contains("Origin"));
        // The metrics listener takes any address, never a foreign name.
        let m = TcpPolicy::new("0.0.0.0:9899".parse().unwrap(), &[], true);
        assert_eq!(m.refuse(&headers(&[("host", "10.9.8.7:9899")])), None);
        assert_eq!(m.refuse(&headers(&[("host", "[fe80::1]:9899")])), None);
        assert!(
            m.refuse(&headers(&[("host", "evil.example:9899")]))
                .is_some()
        );
    }
}

//! The status API: HTTP/1.1 (hyper) on a Unix socket in the state directory (mode 0600,
//! always) and, when asked with `--http ADDR`, on a TCP address (loopback by default;
//! binding elsewhere is the operator's explicit choice).
//!
//! - `GET /status`: the status document as JSON (`barge_tui::model::Status`);
//! - `GET /metrics`: Prometheus / OpenMetrics text;
//! - `POST /control?action=pause|resume|faster|slower|rate-up|rate-down`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use barge_tui::model::Action;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Monitor;
use crate::error::{Error, Result};

/// Name of the status socket inside the state directory.
pub const SOCKET_NAME: &str = "barge.sock";

/// Content type of `/metrics` (prometheus-client writes OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The running status API; the socket file is removed when this is dropped.
pub struct StatusServer {
    socket: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The TCP address actually bound (useful with port 0).
    pub http: Option<SocketAddr>,
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
    http: Option<SocketAddr>,
) -> Result<StatusServer> {
    start_slot(MonitorSlot::new(monitor), state, http).await
}

/// Like [`start`], answering for whatever monitor `slot` holds at each request.
pub async fn start_slot(
    monitor: MonitorSlot,
    state: &Path,
    http: Option<SocketAddr>,
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
    let mut tasks = vec![];
    let m = monitor.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            match ul.accept().await {
                Ok((s, _)) => serve(m.clone(), s),
                Err(e) => {
                    tracing::warn!("status socket: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }));
    let mut bound = None;
    if let Some(addr) = http {
        let tl = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::option("--http", format!("cannot listen on {addr}: {e}")))?;
        bound = tl.local_addr().ok();
        if !addr.ip().is_loopback() {
            tracing::warn!("status API listening on {addr}, beyond loopback (--http)");
        }
        let m = monitor.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match tl.accept().await {
                    Ok((s, _)) => serve(m.clone(), s),
                    Err(e) => {
                        tracing::warn!("status port: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    Ok(StatusServer {
        socket,
        tasks,
        http: bound,
    })
}

fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(slot: MonitorSlot, s: S) {
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let m = slot.get();
            async move { Ok::<_, Infallible>(route(&m, req)) }
        });
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(s), svc)
            .await
        {
            tracing::debug!("status connection: {e}");
        }
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

fn route(m: &Monitor, req: Request<Incoming>) -> Response<Full<Bytes>> {
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

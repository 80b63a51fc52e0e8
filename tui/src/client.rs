//! A small blocking HTTP/1.1 client for the node's status API, over the node's Unix
//! socket or a TCP address. Hand-written because the dashboard needs three requests
//! (`GET /status`, `POST /control`) and no HTTP crate here speaks Unix sockets without a
//! runtime; it sends `Connection: close` and reads the body to the end. Over TCP it
//! names the address it was given as `Host` and sends the control token, if it has one,
//! as `Authorization: Bearer` (the node refuses `POST /control` without it).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::model::{Action, Status};

/// How long a request may take before the node counts as unreachable.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Where the node's status API is.
#[derive(Debug, Clone)]
pub enum Target {
    /// `<state>/barge.sock`.
    Unix(PathBuf),
    /// `host:port` of `--http`, and the node's control token (`<state>/control.token`)
    /// if known: status and metrics need none, control does.
    Tcp { addr: String, token: Option<String> },
}

impl Target {
    /// A TCP target without a token (enough for `GET /status` and `GET /metrics`).
    pub fn tcp(addr: impl Into<String>) -> Self {
        Target::Tcp {
            addr: addr.into(),
            token: None,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "{}", p.display()),
            Target::Tcp { addr, .. } => write!(f, "http://{addr}"),
        }
    }
}

/// The request's head lines beyond the request line.
struct Head<'a> {
    host: &'a str,
    token: Option<&'a str>,
}

fn exchange<S: Read + Write>(
    mut s: S,
    head: &Head,
    method: &str,
    path: &str,
) -> Result<(u16, Vec<u8>)> {
    let auth = head
        .token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n",
        head.host
    )?;
    let mut buf = vec![];
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("reply without an end of headers")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {:?}", head.lines().next()))?;
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        bail!("chunked replies are not expected from the status API");
    }
    Ok((status, buf[split + 4..].to_vec()))
}

/// One request; returns the status code and body.
pub fn request(t: &Target, method: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    match t {
        Target::Unix(p) => {
            let s = std::os::unix::net::UnixStream::connect(p)
                .with_context(|| format!("connecting to {}", p.display()))?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            let head = Head {
                host: "localhost",
                token: None,
            };
            exchange(s, &head, method, path)
        }
        Target::Tcp { addr: a, token } => {
            let addr = std::net::ToSocketAddrs::to_socket_addrs(a)
                .with_context(|| format!("resolving {a}"))?
                .next()
                .with_context(|| format!("{a} resolves to nothing"))?;
            let s = std::net::TcpStream::connect_timeout(&addr, TIMEOUT)
                .with_context(|| format!("connecting to {a}"))?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            let head = Head {
                host: a,
                token: token.as_deref(),
            };
            exchange(s, &head, method, path)
        }
    }
}

/// The node's status document.
pub fn status(t: &Target) -> Result<Status> {
    let (code, body) = request(t, "GET", "/status")?;
    if code != 200 {
        bail!("GET /status: HTTP {code}");
    }
    serde_json::from_slice(&body).context("parsing the status document")
}

/// Sends an operator action; returns the node's answer.
pub fn control(t: &Target, a: Action) -> Result<String> {
    let (code, body) = request(t, "POST", &format!("/control?action={}", a.as_str()))?;
    let text = String::from_utf8_lossy(&body).to_string();
    if code != 200 {
        bail!("{}: HTTP {code}: {text}", a.as_str());
    }
    Ok(text)
}

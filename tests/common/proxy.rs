//! A fault-injecting TCP proxy for the tests: sits between barge and a real server on
//! loopback and spoils connections on a fixed schedule: connection resets, stalls,
//! truncated response bodies, `503 SlowDown` and `500` answers, one `404 NoSuchKey` to
//! an object's GET. Healthy connections
//! are forwarded as they are, but cut after a budget of response bytes, so pooled
//! connections keep being replaced and the schedule keeps firing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What happens to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Forwarded; closed after [`PASS_BUDGET`] response bytes (mid-body, if a body is
    /// that long: another truncation).
    Pass,
    /// The request is read, then the connection is reset (RST).
    Reset,
    /// The request is read, then nothing comes back for [`STALL`].
    Stall,
    /// The response head and half of its body are forwarded, then a reset.
    Truncate,
    /// `503 Slow Down` (S3's SlowDown error) without asking the server.
    SlowDown,
    /// `500 Internal Server Error` without asking the server.
    ServerError,
    /// The first GET of an object (not a listing) on any such connection of the proxy
    /// is answered `404 NoSuchKey` without asking the server, once per proxy; every
    /// other request is forwarded alone on its connection (`Connection: close` added,
    /// so the next request comes on a new connection and is looked at too).
    NotFoundOnce,
}

/// Response bytes a healthy connection may carry before it is cut.
pub const PASS_BUDGET: usize = 16 << 20;
/// How long a stalled connection stays silent (tests set barge's --stall-timeout below).
pub const STALL: Duration = Duration::from_secs(4);

pub struct Proxy {
    pub addr: SocketAddr,
    counts: Arc<Mutex<BTreeMap<Fault, u64>>>,
    /// The GET [`Fault::NotFoundOnce`] answered 404, once it did (request line).
    not_found: Arc<Mutex<Option<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    /// Connections handled so far, per fault.
    pub fn counts(&self) -> BTreeMap<Fault, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The request [`Fault::NotFoundOnce`] answered with a 404, if it did.
    pub fn not_found(&self) -> Option<String> {
        self.not_found.lock().ok().and_then(|n| n.clone())
    }
}

/// Starts a proxy to `upstream`; connection `i` gets `schedule[i % schedule.len()]`.
pub fn start(upstream: SocketAddr, schedule: Vec<Fault>) -> Proxy {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("proxy runtime");
    let listener = rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("proxy bind");
    let addr = listener.local_addr().expect("proxy addr");
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let c2 = counts.clone();
    let not_found = Arc::new(Mutex::new(None));
    let nf = not_found.clone();
    rt.spawn(async move {
        let mut n = 0usize;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let fault = schedule[n % schedule.len()];
            n += 1;
            if let Ok(mut c) = c2.lock() {
                *c.entry(fault).or_default() += 1;
            }
            tokio::spawn(handle(client, upstream, fault, nf.clone()));
        }
    });
    Proxy {
        addr,
        counts,
        not_found,
        _rt: rt,
    }
}

/// Reads until the end of an HTTP head; returns everything read (head and any body
/// bytes after it).
async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(buf);
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    }
}

fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn answer(mut client: TcpStream, status: &str, code: &str) {
    if read_head(&mut client).await.is_none() {
        return;
    }
    respond(client, status, code).await;
}

/// Writes an S3 error answer and closes the connection.
async fn respond(mut client: TcpStream, status: &str, code: &str) {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(msg.as_bytes()).await;
    let _ = client.shutdown().await;
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(head);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// [`Fault::NotFoundOnce`]: the request is read; an object's GET is answered 404 if no
/// connection got that answer yet, anything else goes to the server alone.
async fn not_found_once(
    mut client: TcpStream,
    upstream: SocketAddr,
    fired: Arc<Mutex<Option<String>>>,
) {
    let Some(head) = read_head(&mut client).await else {
        return;
    };
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let path = line.split(' ').nth(1).unwrap_or_default();
    let object = path.split('?').next().unwrap_or_default();
    let object_get = line.starts_with("GET ")
        && object
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .count()
            >= 2;
    let first = object_get
        && fired
            .lock()
            .map(|mut f| f.is_none() && f.replace(line).is_none())
            .unwrap_or(false);
    if first {
        respond(client, "404 Not Found", "NoSuchKey").await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
    let mut sent = head[..end].to_vec();
    sent.extend_from_slice(b"\r\nConnection: close");
    sent.extend_from_slice(&head[end..]);
    if server.write_all(&sent).await.is_err() {
        return;
    }
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
    });
    let _ = tokio::io::copy(&mut sr, &mut cw).await;
    let _ = cw.shutdown().await;
    up.abort();
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    fired: Arc<Mutex<Option<String>>>,
) {
    match fault {
        Fault::NotFoundOnce => not_found_once(client, upstream, fired).await,
        Fault::Reset => {
            if read_head(&mut client).await.is_some() {
                reset(client);
            }
        }
        Fault::Stall => {
            if read_head(&mut client).await.is_some() {
                tokio::time::sleep(STALL).await;
            }
        }
        Fault::SlowDown => answer(client, "503 Slow Down", "SlowDown").await,
        Fault::ServerError => answer(client, "500 Internal Server Error", "InternalError").await,
        Fault::Pass | Fault::Truncate => {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            // Requests flow untouched.
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                let _ = sw.shutdown().await;
            });
            let mut sent = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            if fault == Fault::Truncate {
                // Forward the response head, then half the body, then cut.
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                let body_len = content_length(&head[..end]).unwrap_or(0);
                let keep = end + body_len / 2;
                if body_len > 1 {
                    let _ = cw.write_all(&head[..keep.min(head.len())]).await;
                    let mut left = keep.saturating_sub(head.len());
                    while left > 0 {
                        match sr.read(&mut buf[..left.min(64 * 1024)]).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let _ = cw.write_all(&buf[..n]).await;
                                left -= n;
                            }
                        }
                    }
                    // Closing mid-body: the client sees the connection end before
                    // Content-Length bytes arrived.
                    up.abort();
                    drop(cw);
                    return;
                }
                let _ = cw.write_all(&head).await;
                sent += head.len();
            }
            loop {
                match sr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                        if sent > PASS_BUDGET {
                            break;
                        }
                    }
                }
            }
            up.abort();
        }
    }
}

//! A small OpenStack Swift client over reqwest: TempAuth (v1) and Keystone v3 password
//! auth, token refresh on 401, and the handful of calls barge needs.
//!
//! Why hand-written: no maintained Rust crate covers TempAuth plus Keystone plus SLO
//! (`openstack`/`openstack_sdk` have Keystone only, opendal's Swift service cannot log
//! in, `swift-rs` is an Apple-Swift FFI crate). The surface is small: auth, PUT/GET/HEAD/
//! DELETE of containers and objects, JSON listings, SLO manifests.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::backend::Rope;
use crate::backend::throttle::{Failure, Throttle, classify_status, parse_retry_after};
use crate::error::{Error, Result};

/// Logins one request may go through when its token keeps expiring (each after a 401 on
/// a token another request obtained).
pub const MAX_REAUTH: usize = 3;
/// Total time one request with a whole reply may take (logins, `/info`, listings, PUTs,
/// HEADs, DELETEs), body included. A streaming GET of an object has none: only the stall
/// timeout, so a large object is not cut off at a fixed length of time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest body read from a listing page or an SLO manifest (a GET through
/// [`SwiftClient::call`]): 10,000 entries of Swift's longest (1,024-byte) names, escaped
/// as JSON, fit in it. A larger reply fails, naming the request.
pub const LISTING_REPLY_MAX: usize = 64 << 20;
/// The largest body read from any other reply: `/info`, a Keystone token document, an
/// error's text, a bulk-delete result. A larger reply fails, naming the request (an error
/// reply keeps its status and loses its text).
pub const REPLY_MAX: usize = 1 << 20;

/// How to log in.
#[derive(Debug, Clone)]
pub enum Auth {
    /// TempAuth / Swift v1 auth: `X-Auth-User`/`X-Auth-Key` against the auth URL.
    V1 {
        url: String,
        user: String,
        key: String,
    },
    /// Keystone v3 password auth, project scoped.
    V3 {
        url: String,
        username: String,
        password: String,
        project: String,
        user_domain: String,
        project_domain: String,
        region: Option<String>,
    },
}

impl Auth {
    /// From the ecosystem's variables: `ST_AUTH`/`ST_USER`/`ST_KEY` (v1) or
    /// `OS_AUTH_URL`/`OS_USERNAME`/`OS_PASSWORD`/`OS_PROJECT_NAME`/`OS_USER_DOMAIN_NAME`/
    /// `OS_PROJECT_DOMAIN_NAME` (v3). `prefix` selects a per-side set first (e.g.
    /// `BARGE_DEST_ST_AUTH`), so source and destination can differ.
    pub fn from_env(prefix: &str) -> Result<Self> {
        let get = |k: &str| {
            std::env::var(format!("{prefix}{k}"))
                .ok()
                .or_else(|| std::env::var(k).ok())
                .filter(|v| !v.is_empty())
        };
        if let (Some(url), Some(user), Some(key)) = (get("ST_AUTH"), get("ST_USER"), get("ST_KEY"))
        {
            return Ok(Auth::V1 { url, user, key });
        }
        if let (Some(url), Some(username), Some(password)) =
            (get("OS_AUTH_URL"), get("OS_USERNAME"), get("OS_PASSWORD"))
        {
            return Ok(Auth::V3 {
                url,
                username,
                password,
                project: get("OS_PROJECT_NAME").unwrap_or_default(),
                user_domain: get("OS_USER_DOMAIN_NAME").unwrap_or_else(|| "Default".into()),
                project_domain: get("OS_PROJECT_DOMAIN_NAME").unwrap_or_else(|| "Default".into()),
                region: get("OS_REGION_NAME"),
            });
        }
        Err(Error::option(
            "swift credentials",
            format!(
                "set ST_AUTH/ST_USER/ST_KEY (TempAuth) or OS_AUTH_URL/OS_USERNAME/OS_PASSWORD/OS_PROJECT_NAME (Keystone v3){}",
                if prefix.is_empty() {
                    String::new()
                } else {
                    format!(", optionally prefixed with {prefix}")
                }
            ),
        ))
    }
}

#[derive(Debug, Clone)]
struct Session {
    storage_url: String,
    token: String,
}

/// An authenticated Swift account.
pub struct SwiftClient {
    http: reqwest::Client,
    auth: Auth,
    session: RwLock<Option<Session>>,
    throttle: std::sync::Arc<Throttle>,
    /// `--allow-insecure-http`: a plain-http storage URL on another host is used.
    insecure_http: bool,
}

/// A response with its body read.
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Deserialize)]
struct KsToken {
    token: KsBody,
}
#[derive(Deserialize)]
struct KsBody {
    #[serde(default)]
    catalog: Vec<KsService>,
}
#[derive(Deserialize)]
struct KsService {
    #[serde(rename = "type")]
    kind: String,
    endpoints: Vec<KsEndpoint>,
}
#[derive(Deserialize)]
struct KsEndpoint {
    interface: String,
    url: String,
    #[serde(default)]
    region: Option<String>,
}

impl SwiftClient {
    pub fn new(auth: Auth, throttle: std::sync::Arc<Throttle>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(crate::backend::CONNECT_TIMEOUT)
            .read_timeout(throttle.stall_timeout())
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| Error::task("Swift HTTP client", e))?;
        Ok(SwiftClient {
            http,
            auth,
            session: RwLock::new(None),
            throttle,
            insecure_http: false,
        })
    }

    pub fn throttle(&self) -> &std::sync::Arc<Throttle> {
        &self.throttle
    }

    /// Logs in. Network errors and 5xx/429/498 answers are transient (the request that
    /// needed the token is retried under the throttle); 401/403 and bad replies are not.
    /// With `allowed`, a storage URL in plain http on another host is used (see
    /// [`crate::backend::check_transport`]).
    pub fn allow_insecure_http(mut self, allowed: bool) -> Self {
        self.insecure_http = allowed;
        self
    }

    /// Logs in and checks where the reply sends barge: the storage URL it names must
    /// pass [`check_storage_url`].
    async fn login(&self) -> std::result::Result<Session, Failure> {
        let s = self.login_reply().await?;
        let auth_url = match &self.auth {
            Auth::V1 { url, .. } | Auth::V3 { url, .. } => url,
        };
        check_storage_url(auth_url, &s.storage_url, self.insecure_http)
            .map_err(Failure::Permanent)?;
        Ok(s)
    }

    async fn login_reply(&self) -> std::result::Result<Session, Failure> {
        match &self.auth {
            Auth::V1 { url, user, key } => self.login_v1(url, user, key).await,
            Auth::V3 {
                url,
                username,
                password,
                project,
                user_domain,
                project_domain,
                region,
            } => {
                let body = serde_json::json!({"auth": {
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": username, "domain": {"name": user_domain}, "password": password}}},
                    "scope": {"project": {"name": project, "domain": {"name": project_domain}}}
                }});
                self.login_v3(url, username, &body, region.as_deref()).await
            }
        }
    }

    /// TempAuth: the storage URL and token come back as headers.
    async fn login_v1(
        &self,
        url: &str,
        user: &str,
        key: &str,
    ) -> std::result::Result<Session, Failure> {
        let r = self
            .http
            .get(url)
            .timeout(REQUEST_TIMEOUT)
            .header("X-Auth-User", user)
            .header("X-Auth-Key", key)
            .send()
            .await
            .map_err(|e| Failure::Transient(format!("Swift auth at {url}: {e}")))?;
        if !r.status().is_success() {
            return Err(classify_status(
                r.status().as_u16(),
                None,
                format!("Swift auth at {url} as {user}: HTTP {}", r.status()),
            ));
        }
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match (h("x-storage-url"), h("x-auth-token")) {
            (Some(storage_url), Some(token)) => Ok(Session { storage_url, token }),
            _ => Err(Failure::Permanent(Error::Login {
                url: url.to_string(),
                message: "no X-Storage-Url/X-Auth-Token in the reply".into(),
            })),
        }
    }

    /// Keystone v3 password login, project scoped: the token comes as a header, the
    /// storage URL from the token's catalog (public object-store endpoint).
    async fn login_v3(
        &self,
        url: &str,
        username: &str,
        body: &serde_json::Value,
        region: Option<&str>,
    ) -> std::result::Result<Session, Failure> {
        let tokens = format!("{}/auth/tokens", url.trim_end_matches('/'));
        let r = self
            .http
            .post(&tokens)
            .timeout(REQUEST_TIMEOUT)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Failure::Transient(format!("Keystone auth at {tokens}: {e}")))?;
        if !r.status().is_success() {
            return Err(classify_status(
                r.status().as_u16(),
                None,
                format!(
                    "Keystone auth at {tokens} as {username}: HTTP {}",
                    r.status()
                ),
            ));
        }
        let token = r
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                Failure::Permanent(Error::Login {
                    url: tokens.clone(),
                    message: "the reply has no X-Subject-Token".into(),
                })
            })?;
        let raw = read_capped(
            &format!("Keystone token document from {tokens}"),
            r,
            REPLY_MAX,
        )
        .await?;
        let doc: KsToken = serde_json::from_slice(&raw).map_err(|e| {
            Failure::Permanent(Error::Decode {
                what: format!("the Keystone token document from {tokens}"),
                message: e.to_string(),
            })
        })?;
        let storage_url = doc
            .token
            .catalog
            .iter()
            .filter(|s| s.kind == "object-store")
            .flat_map(|s| s.endpoints.iter())
            .find(|e| {
                e.interface == "public" && region.is_none_or(|r| e.region.as_deref() == Some(r))
            })
            .map(|e| e.url.clone())
            .ok_or_else(|| {
                Failure::Permanent(Error::Login {
                    url: tokens.clone(),
                    message: "the token's catalog has no public object-store endpoint".into(),
                })
            })?;
        Ok(Session { storage_url, token })
    }

    /// The current session, or a new login when there is none or it holds the `stale`
    /// token. The flag says whether this call logged in itself (the token is brand new).
    async fn session(&self, stale: Option<&str>) -> std::result::Result<(Session, bool), Failure> {
        if let Some(s) = self.session.read().await.as_ref()
            && Some(s.token.as_str()) != stale
        {
            return Ok((s.clone(), false));
        }
        let mut w = self.session.write().await;
        if let Some(s) = w.as_ref()
            && Some(s.token.as_str()) != stale
        {
            return Ok((s.clone(), false));
        }
        let s = self.login().await?;
        *w = Some(s.clone());
        Ok((s, true))
    }

    /// Sends one request with the current token. A 401 logs in again and resends; a 401
    /// on a token this call has just obtained itself is final (the credentials do not
    /// reach the account), while one on a token another request had obtained (it may
    /// have expired in the meantime: short-lived tokens, a long wait under a rate cap)
    /// logs in again, at most [`MAX_REAUTH`] times. Other statuses go to the caller.
    /// A request whose reply is read whole (`whole`) may take [`REQUEST_TIMEOUT`] in all.
    async fn send_authed(
        &self,
        what: &str,
        method: &Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&Rope>,
        whole: bool,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let mut stale: Option<String> = None;
        let mut reauths = 0;
        loop {
            let (s, fresh) = self.session(stale.as_deref()).await?;
            let url = url_of(&s.storage_url, path).map_err(|m| {
                Failure::Permanent(Error::refused(format!("{what}: {m}; not sent")))
            })?;
            let mut rb = self
                .http
                .request(method.clone(), url)
                .header("X-Auth-Token", &s.token);
            if whole {
                rb = rb.timeout(REQUEST_TIMEOUT);
            }
            for (k, v) in headers {
                rb = rb.header(*k, v);
            }
            if let Some(b) = body {
                rb = rb
                    .header("Content-Length", b.len())
                    .body(reqwest::Body::wrap(b.http_body()));
            } else if *method == Method::PUT {
                rb = rb.header("Content-Length", "0");
            }
            let r = rb
                .send()
                .await
                .map_err(|e| Failure::Transient(format!("{what}: {e}")))?;
            if r.status() != StatusCode::UNAUTHORIZED {
                return Ok(r);
            }
            if fresh || reauths == MAX_REAUTH {
                return Err(Failure::Permanent(Error::refused(format!(
                    "{what}: HTTP 401 right after logging in (do the credentials reach this account?)"
                ))));
            }
            reauths += 1;
            tracing::info!("{what}: token expired (401); logging in again");
            stale = Some(s.token);
        }
    }

    /// One request under the endpoint's throttle. `path` is already escaped and starts
    /// after the storage URL ("/container/object"); it is sent exactly as written or not
    /// at all (see [`url_of`]). A 401 logs in again (see `send_authed`).
    /// Statuses in `ok` are success (a 404 in `ok` comes back as a reply). The reply's
    /// body is read whole, up to [`LISTING_REPLY_MAX`] for a GET (a listing or a
    /// manifest: objects are read by [`SwiftClient::get_stream`]), else [`REPLY_MAX`].
    pub async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Rope>,
        ok: &[u16],
    ) -> Result<Reply> {
        let bytes = body.as_ref().map_or(0, |b| b.len() as u64);
        self.throttle
            .call_sized(what, bytes, || async {
                let r = self
                    .send_authed(what, &method, path, headers, body.as_ref(), true)
                    .await?;
                let status = r.status();
                let headers = r.headers().clone();
                if !ok.contains(&status.as_u16()) {
                    let text = match read_capped(what, r, REPLY_MAX).await {
                        Ok(b) => String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned(),
                        Err(_) => String::new(),
                    };
                    return Err(status_failure(what, status, &headers, text.trim()));
                }
                let cap = match method == Method::GET {
                    true => LISTING_REPLY_MAX,
                    false => REPLY_MAX,
                };
                let body = read_capped(what, r, cap).await?;
                Ok(Reply {
                    status,
                    headers,
                    body,
                })
            })
            .await
    }

    /// The cluster's capabilities (`GET /info` at the proxy's root, no token needed);
    /// None when the cluster does not publish them (`expose_info = false`).
    pub async fn info(&self) -> Result<Option<serde_json::Value>> {
        let r = self
            .throttle
            .call("GET /info", || async {
                let (s, _) = self.session(None).await?;
                let mut url = url::Url::parse(&s.storage_url).map_err(|e| {
                    Failure::Permanent(Error::Decode {
                        what: format!("storage URL {}", s.storage_url),
                        message: e.to_string(),
                    })
                })?;
                url.set_path("/info");
                url.set_query(None);
                let what = format!("GET {url}");
                let r = self
                    .http
                    .get(url)
                    .timeout(REQUEST_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| Failure::Transient(format!("{what}: {e}")))?;
                match r.status().is_success() {
                    true => Ok((true, read_capped(&what, r, REPLY_MAX).await?)),
                    false => Ok((false, Bytes::new())),
                }
            })
            .await?;
        Ok(match r {
            (true, body) => serde_json::from_slice(&body).ok(),
            (false, _) => None,
        })
    }

    /// Starts a streaming GET of an object; the caller reads the body.
    pub async fn get_stream(&self, what: &str, path: &str) -> Result<reqwest::Response> {
        self.throttle
            .call(what, || async {
                let r = self
                    .send_authed(what, &Method::GET, path, &[], None, false)
                    .await?;
                if r.status().is_success() {
                    Ok(r)
                } else {
                    Err(status_failure(what, r.status(), r.headers(), ""))
                }
            })
            .await
    }
}

/// Reads a reply's body whole; one over `cap` bytes (by its Content-Length, or as it
/// arrives) fails for good, naming the request: no Swift reply barge reads whole is that
/// large, and holding it could exhaust memory.
async fn read_capped(
    what: &str,
    mut r: reqwest::Response,
    cap: usize,
) -> std::result::Result<Bytes, Failure> {
    let too_large = || {
        Failure::Permanent(Error::refused(format!(
            "{what}: the reply is larger than {cap} bytes, more than any Swift reply of this kind; not read"
        )))
    };
    if r.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    while let Some(piece) = r
        .chunk()
        .await
        .map_err(|e| Failure::Transient(format!("{what}: reading the reply: {e}")))?
    {
        if buf.len() + piece.len() > cap {
            return Err(too_large());
        }
        buf.extend_from_slice(&piece);
    }
    Ok(buf.freeze())
}

/// The first `.` or `..` segment of an object (or container) name. A URL parser removes
/// such segments (`..` with the segment before it), so a request for the name would
/// address another object, container or even account; barge refuses such names.
pub(crate) fn dot_segment(name: &str) -> Option<&str> {
    name.split('/').find(|s| *s == "." || *s == "..")
}

/// Refuses the storage URL a login reply named when it would send the token and the
/// data in plain http: to another host without `allowed`, or at all after an https login
/// (a downgrade an attacker on the auth path would ask for).
fn check_storage_url(auth_url: &str, storage_url: &str, allowed: bool) -> Result<()> {
    crate::backend::check_transport("the storage URL of the login reply", storage_url, allowed)?;
    let downgraded = auth_url.starts_with("https://") && storage_url.starts_with("http://");
    if downgraded && !allowed {
        return Err(Error::Login {
            url: auth_url.to_string(),
            message: format!(
                "the reply names storage URL {storage_url}: plain http after an https login; refused (--allow-insecure-http to use it)"
            ),
        });
    }
    Ok(())
}

/// The URL of `path` (escaped, starting after the storage URL) under `storage_url`,
/// refused unless the URL parser keeps the path exactly as written. The parser removes
/// `.` and `..` segments, percent-encoded ones (`%2e`) too; object names are escaped with
/// `%` as `%25`, so only a literal dot segment can reach it, and it is refused here
/// whichever caller built the path. Empty segments (`a//b`, `dir/`) are kept as written.
pub(crate) fn url_of(storage_url: &str, path: &str) -> std::result::Result<url::Url, String> {
    let url = url::Url::parse(&format!("{storage_url}{path}"))
        .map_err(|e| format!("{storage_url}{path} is not a URL: {e}"))?;
    let written = path.split(['?', '#']).next().unwrap_or_default();
    if !url.path().ends_with(written) {
        return Err(format!(
            "the path {written} would be sent as {} (a `.` or `..` segment addresses another object)",
            url.path()
        ));
    }
    Ok(url)
}

/// How a non-success Swift status is retried: quota/full are final, a 422 (ETag
/// mismatch: corrupted in transit) is retried, the rest as [`classify_status`] says.
fn status_failure(
    what: &str,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    text: &str,
) -> Failure {
    let msg = format!("{what}: HTTP {status} {text}");
    let ra = parse_retry_after(headers.get("retry-after").and_then(|v| v.to_str().ok()));
    match status.as_u16() {
        413 | 507 => Failure::Permanent(Error::refused(format!(
            "{msg} (destination refuses writes: quota exceeded or disk full)"
        ))),
        422 => Failure::Transient(format!("{msg} (ETag mismatch: body corrupted in transit)")),
        404 => Failure::Permanent(Error::Gone { what: msg }),
        s => classify_status(s, ra, msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_reply_may_not_downgrade_to_plain_http() {
        let ok = |a, s| check_storage_url(a, s, false);
        ok(
            "http://127.0.0.1:8080/auth/v1.0",
            "http://127.0.0.1:8080/v1/AUTH_t",
        )
        .unwrap();
        ok("https://sw.example/auth", "https://sw.example/v1/AUTH_t").unwrap();
        let e = ok("https://sw.example/auth", "http://127.0.0.1/v1/AUTH_t").unwrap_err();
        assert!(
            e.to_string().contains("plain http after an https login"),
            "{e}"
        );
        let e = ok("http://127.0.0.1/auth", "http://10.1.1.1/v1/AUTH_t").unwrap_err();
        assert!(e.to_string().contains("storage URL"), "{e}");
        check_storage_url("https://sw.example/auth", "http://10.1.1.1/v1/x", true).unwrap();
    }
    use crate::backend::escape_object;

    const BASE: &str = "http://127.0.0.1:8080/v1/AUTH_test";

    #[test]
    fn paths_are_sent_as_written_or_refused() {
        for name in [
            "x", "dir/", "a//b", "/lead", "%2e%2e/x", "%2E./y", "...", ".x/x.",
        ] {
            let path = format!("/c/{}", escape_object(name));
            let url = url_of(BASE, &format!("{path}?multipart-manifest=get")).unwrap();
            assert_eq!(url.path(), format!("/v1/AUTH_test{path}"), "{name}");
            assert_eq!(dot_segment(name), None, "{name}");
        }
        // Whatever a caller built: literal and percent-encoded dot segments.
        for path in [
            "/c/../victim/obj",
            "/c/./x",
            "/c/a/..",
            "/c/%2e%2e/x",
            "/c/.%2E/x",
            "/c/%2e/x",
            "/../../AUTH_other/c/o",
        ] {
            let err = url_of(BASE, path).unwrap_err();
            assert!(err.contains(path), "{path}: {err}");
        }
        for name in ["../victim/obj", "./x", "a/..", ".."] {
            assert!(dot_segment(name).is_some(), "{name}");
            assert!(url_of(BASE, &format!("/c/{}", escape_object(name))).is_err());
        }
    }
}

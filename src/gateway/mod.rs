//! `barge gateway`: one S3 endpoint in front of both sides while the move runs. Reads of
//! the move's bucket are answered by catalog record (moved: the destination; not moved:
//! streamed from the source; deleted through the gateway: not found), writes and deletes
//! land at the destination only and are recorded, so no later pass undoes them.
//!
//! Steps of [`serve`]: load the credentials, bind the listener (plain HTTP on loopback
//! only, unless told otherwise), then answer connections until stopped.

mod checked;
mod front;
pub mod list;
pub mod multipart;
pub mod recover;
pub mod route;
mod s3;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Destination, Source};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::monitor::Monitor;

/// How long a client may take to send a request's headers, and how long an idle
/// keep-alive connection is kept.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Options of `barge gateway`.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Address to listen on (`127.0.0.1:9000`).
    pub listen: String,
    /// `ACCESS_KEY_ID SECRET` per line, mode 0600.
    pub credentials: PathBuf,
    /// Plain HTTP on an address other than loopback.
    pub insecure_http: bool,
    /// HTTPS: a PEM certificate chain and its PEM private key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The bucket clients name (the source bucket's name by default).
    pub bucket: String,
    /// Also answer virtual-host style requests (`BUCKET.DOMAIN`).
    pub domain: Option<String>,
}

/// What every request needs.
pub struct Shared {
    pub catalog: Arc<Catalog>,
    /// None after a proven cutover: the catalog then lists what the source had.
    pub source: Option<Arc<dyn Source>>,
    pub dest: Arc<dyn Destination>,
    pub monitor: Arc<Monitor>,
    pub bucket: String,
    /// Virtual-host style requests (`BUCKET.DOMAIN`) are answered too.
    pub domain: Option<String>,
    /// Multipart uploads in progress (parts in the state directory).
    pub uploads: multipart::Uploads,
}

/// The bucket an `s3://bucket[/prefix]` source URL names, refused with a prefix (the
/// gateway serves whole buckets).
pub fn bucket_of(source: &str) -> Result<String> {
    let bad = |m: &str| Error::Option {
        option: format!("--source {source}"),
        message: m.to_string(),
    };
    let rest = source
        .strip_prefix("s3://")
        .ok_or_else(|| bad("not an s3:// URL; give --bucket"))?;
    match rest.trim_end_matches('/').split_once('/') {
        None if !rest.is_empty() => Ok(rest.trim_end_matches('/').to_string()),
        _ => Err(bad("the gateway serves a whole bucket, without a prefix")),
    }
}

/// Reads the credentials file: `ACCESS_KEY_ID SECRET` per line (`#` comments), refused
/// unless only its owner can read it.
pub fn load_credentials(path: &Path) -> Result<s3s::auth::SimpleAuth> {
    use std::os::unix::fs::MetadataExt;
    let bad = |m: String| Error::Option {
        option: format!("--credentials {}", path.display()),
        message: m,
    };
    let md = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if md.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:o}: secrets must be readable by their owner only (chmod 600)",
            md.mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut auth = s3s::auth::SimpleAuth::new();
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(id), Some(secret), None) => {
                auth.register(id.to_string(), secret.to_string().into());
                n += 1;
            }
            _ => return Err(bad(format!("line {}: not `ACCESS_KEY_ID SECRET`", i + 1))),
        }
    }
    if n == 0 {
        return Err(bad("no credentials: anonymous access is not offered".into()));
    }
    Ok(auth)
}

/// The TLS settings of `--tls-cert`/`--tls-key`: HTTP/1.1 over TLS 1.2 or 1.3.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<tokio_rustls::rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |option: &str, p: &Path, m: String| Error::Option {
        option: format!("{option} {}", p.display()),
        message: m,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|e| bad("--tls-cert", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("--tls-cert", cert, "no certificate in it".into()));
    }
    let pk = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("--tls-key", key, e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, pk))
        .map_err(|e| bad("--tls-key", key, e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Binds `o.listen`: plain HTTP only on a loopback address unless `o.insecure_http`.
pub async fn bind(o: &GatewayOptions) -> Result<tokio::net::TcpListener> {
    let bad = |m: String| Error::Option {
        option: format!("--listen {}", o.listen),
        message: m,
    };
    let addr: SocketAddr = o.listen.parse().map_err(|e| bad(format!("{e}")))?;
    if o.tls.is_none() && !addr.ip().is_loopback() && !o.insecure_http {
        return Err(bad(
            "plain HTTP beyond loopback sends every request in clear; give --tls-cert and --tls-key, or --insecure-http to accept that".into(),
        ));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| bad(e.to_string()))
}

/// Answers S3 requests on `listener` (over TLS with `tls`) until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shared: Shared,
    auth: s3s::auth::SimpleAuth,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let bucket = shared.bucket.clone();
    let domain = shared
        .domain
        .as_deref()
        .map(front::Domain::new)
        .transpose()?;
    let proxy = shared.dest.s3_client().map(s3s_aws::Proxy::from);
    let front = front::Front {
        gateway: s3::Gateway(Arc::new(shared)),
        proxy,
        bucket,
    };
    let mut b = s3s::service::S3ServiceBuilder::new(front);
    b.set_auth(auth);
    if let Some(d) = domain {
        b.set_host(d);
    }
    let service = b.build();
    tokio::pin!(stop);
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("gateway: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => return Ok(()),
        };
        let service = service.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let r = match tls {
                None => connection(conn, service).await,
                Some(t) => match tokio::time::timeout(HEADER_TIMEOUT, t.accept(conn)).await {
                    Ok(Ok(c)) => connection(c, service).await,
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("TLS handshake timed out".into()),
                },
            };
            if let Err(e) = r {
                tracing::debug!("gateway: connection from {peer}: {e}");
            }
        });
    }
}

/// One client connection: HTTP/1.1 requests until it closes or idles past
/// [`HEADER_TIMEOUT`] (the header timeout runs before every request).
async fn connection<IO>(io: IO, service: s3s::service::S3Service) -> std::result::Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_url_names_a_whole_bucket() {
        assert_eq!(bucket_of("s3://b").unwrap(), "b");
        assert_eq!(bucket_of("s3://b/").unwrap(), "b");
        assert!(bucket_of("s3://b/p").is_err());
        assert!(bucket_of("/tmp/x").is_err());
    }

    #[test]
    fn credentials_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("creds");
        std::fs::write(&p, "# app\nAKID secret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_credentials(&p).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        load_credentials(&p).unwrap();
        std::fs::write(&p, "AKID\n").unwrap();
        let e = load_credentials(&p).err().unwrap().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}

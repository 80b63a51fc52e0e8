//! OpenStack Swift (and radosgw's Swift API) as source and destination.
//!
//! * URL `swift://container[/prefix]`; credentials from `ST_AUTH`/`ST_USER`/`ST_KEY` or
//!   the `OS_*` Keystone v3 variables (see [`client::Auth::from_env`]).
//! * Container sharding ([`ContainerMap`]): `--containers hash:N` or `prefix:K` spreads
//!   one source bucket over many containers, because Swift keeps each container's
//!   listing in one SQLite database. Without it, objects go to the named container.
//! * Objects up to `slo_threshold` are one PUT; larger ones become Static Large Objects
//!   with segments in `<container>_segments`. Every PUT (object, segment, manifest)
//!   carries the body's MD5 as `ETag`, so Swift rejects a corrupted body (422). Bodies
//!   are buffered per PUT (at most `slo_threshold`, or one segment) to know the MD5
//!   before sending.

pub(crate) mod client;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};

use self::client::{Auth, SwiftClient};
use super::ranges::{Entry, KeyPages, Page, RangeListing};
use super::throttle::{Throttle, ThrottleConfig};
use super::{
    Body, ContentCheck, Deleted, Destination, Expect, ListFrom, Listed, Opened, Placed, Reader,
    Rope, Source, escape_container, escape_object,
};
use crate::error::{Error, Result};
use crate::object::{ObjectKey, ObjectMeta};

/// Swift's default `max_object_name_length`.
pub const MAX_OBJECT_NAME: usize = 1024;
/// Swift's default maximum size of one object (5 GiB).
pub const MAX_OBJECT_SIZE: u64 = 5 << 30;
/// Default size above which objects become SLOs.
pub const DEFAULT_SLO_THRESHOLD: u64 = 128 << 20;
/// Default SLO segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Smallest segment barge writes (Swift rate-limits tiny segments).
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;
/// Swift's default `max_meta_count`: metadata keys per object.
const MAX_META_COUNT: usize = 90;
/// Swift's default `max_meta_name_length`.
const MAX_META_NAME: usize = 128;
/// Swift's default `max_meta_value_length`.
const MAX_META_VALUE: usize = 256;
/// Swift's default `max_meta_overall_size`: names and values together.
const MAX_META_TOTAL: usize = 4096;
/// Objects per listing page.
pub const LIST_LIMIT: usize = 10_000;

/// How source keys map to containers. Recorded in the catalog and exported as a lookup
/// file; `verify` uses it to find every object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum ContainerMap {
    /// Everything in the named container.
    Single { container: String },
    /// `{container}-{h:04x}` with h = (first 8 bytes of BLAKE3(key), little-endian) mod n.
    Hash { container: String, n: u32 },
    /// `{container}-{first k characters of the key, '/' as '_'}` (shorter keys: all of it).
    Prefix { container: String, k: u32 },
}

impl ContainerMap {
    /// Parses `--containers`: `hash:N` or `prefix:K`; none means a single container.
    pub fn parse(container: &str, spec: Option<&str>) -> Result<Self> {
        let bad = |m: &str| {
            Error::option(
                "--containers",
                format!("{spec:?}: {m} (use hash:N or prefix:K)"),
            )
        };
        match spec {
            None => Ok(ContainerMap::Single {
                container: container.into(),
            }),
            Some(s) => match s.split_once(':') {
                Some(("hash", n)) => {
                    let n: u32 = n.parse().map_err(|_| bad("N is not a number"))?;
                    if !(1..=65536).contains(&n) {
                        return Err(bad("N must be 1..=65536"));
                    }
                    Ok(ContainerMap::Hash {
                        container: container.into(),
                        n,
                    })
                }
                Some(("prefix", k)) => {
                    let k: u32 = k.parse().map_err(|_| bad("K is not a number"))?;
                    if !(1..=16).contains(&k) {
                        return Err(bad("K must be 1..=16"));
                    }
                    Ok(ContainerMap::Prefix {
                        container: container.into(),
                        k,
                    })
                }
                _ => Err(bad("unknown scheme")),
            },
        }
    }

    /// The container of a key.
    pub fn container_of(&self, key: &str) -> String {
        match self {
            ContainerMap::Single { container } => container.clone(),
            ContainerMap::Hash { container, n } => {
                let h = blake3::hash(key.as_bytes());
                let mut b = [0u8; 8];
                b.copy_from_slice(&h.as_bytes()[..8]);
                format!("{container}-{:04x}", u64::from_le_bytes(b) % *n as u64)
            }
            ContainerMap::Prefix { container, k } => {
                let p: String = key
                    .chars()
                    .take(*k as usize)
                    .map(|c| if c == '/' { '_' } else { c })
                    .collect();
                format!("{container}-{p}")
            }
        }
    }

    /// The base container name.
    pub fn base(&self) -> &str {
        match self {
            ContainerMap::Single { container }
            | ContainerMap::Hash { container, .. }
            | ContainerMap::Prefix { container, .. } => container,
        }
    }
}

/// Options of a Swift endpoint.
#[derive(Debug, Clone, Default)]
pub struct SwiftOptions {
    /// Environment prefix for per-side credentials ("BARGE_SOURCE_" / "BARGE_DEST_").
    pub env_prefix: String,
    pub containers: Option<String>,
    pub slo_threshold: Option<u64>,
    pub segment_size: Option<u64>,
    pub throttle: ThrottleConfig,
    /// Key ranges of a container listed at once.
    pub list_parallel: usize,
    /// The largest SLO segment (default: the cluster's `max_file_size`).
    pub max_segment: Option<u64>,
    /// Plain http to another host is allowed ([`crate::backend::check_transport`]).
    pub allow_insecure_http: bool,
}

/// What one SLO may hold: segments per manifest (`slo.max_manifest_segments`) and bytes
/// per segment (`swift.max_file_size`), from the cluster's `/info`, or Swift's defaults.
#[derive(Debug, Clone, Copy)]
struct SloLimits {
    max_segments: u64,
    max_segment: u64,
}

/// An SLO upload under way: the object, and its segments' container and name prefix.
#[derive(Debug, Serialize, Deserialize)]
struct SloUpload {
    container: String,
    name: String,
    segments: String,
    prefix: String,
}

impl SloUpload {
    fn journal_key(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::encode("an SLO journal entry", e))
    }
}

/// The entries of an SLO manifest being built, and what its ETag will be.
#[derive(Default)]
struct Manifest {
    entries: Vec<serde_json::Value>,
    /// The entries' ETags, concatenated: the manifest's ETag is their MD5.
    etags: String,
    bytes: u64,
}

impl Manifest {
    fn push(&mut self, path: String, etag: String, size: u64) {
        self.entries
            .push(serde_json::json!({"path": path, "etag": etag, "size_bytes": size}));
        self.etags.push_str(&etag);
        self.bytes += size;
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The ETag Swift gives the SLO: the MD5 of its segments' ETags.
    fn etag(&self) -> String {
        hex::encode(Md5::digest(self.etags.as_bytes()))
    }
}

/// Whether `path` (`/<container>/<name>`, as an SLO manifest lists its segments) is a
/// segment or sub-manifest barge writes for object `name` of container `c`:
/// `/<c>_segments/<name>/slo/<size>/<segment size>/<index:08>` (or `m<index:08>`). The
/// swift CLI's segments (`<name>/slo/<timestamp>/<size>/<segment size>/<index>`) are not.
fn barge_segment(c: &str, name: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(&format!("/{c}_segments/{name}/slo/")) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match rest.split('/').collect::<Vec<_>>()[..] {
        [size, seg, idx] => {
            let idx = idx.strip_prefix('m').unwrap_or(idx);
            digits(size) && digits(seg) && idx.len() == 8 && digits(idx)
        }
        _ => false,
    }
}

/// Swift's default `max_manifest_segments`.
const DEFAULT_MAX_SEGMENTS: u64 = 1000;

/// A container (or a sharded set of them) in one Swift account.
pub struct SwiftStore {
    client: SwiftClient,
    url: String,
    map: ContainerMap,
    prefix: String,
    slo_threshold: u64,
    segment_size: u64,
    list_parallel: usize,
    /// The cluster's SLO limits, read from `/info` at the first large upload.
    slo_limits: tokio::sync::OnceCell<SloLimits>,
    /// `--slo-max-segment-size`: the largest segment, instead of the cluster's
    /// `max_file_size`.
    max_segment: Option<u64>,
    /// Where SLO uploads are recorded until their manifest is written.
    journal: std::sync::OnceLock<Arc<dyn super::UploadJournal>>,
    made: Mutex<BTreeSet<String>>,
    used: std::sync::Mutex<BTreeSet<String>>,
}

#[derive(Deserialize)]
struct ListEntry {
    name: Option<String>,
    bytes: Option<u64>,
    hash: Option<String>,
    content_type: Option<String>,
    /// `2024-01-31T12:00:00.000000`, UTC without a zone.
    last_modified: Option<String>,
}

/// Why an object name with a `.` or `..` segment is refused (see
/// [`client::dot_segment`]).
fn refusal(name: &str, seg: &str) -> String {
    format!(
        "the Swift name {name:?} has a {seg:?} segment: a request for it would address another object, container or account; refused"
    )
}

/// Splits `swift://container/prefix`.
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("swift://")
        .ok_or_else(|| Error::option("url", format!("{url}: not a swift:// URL")))?;
    let (c, p) = rest.split_once('/').unwrap_or((rest, ""));
    if c.is_empty() || c.len() > 256 {
        return Err(Error::option(
            "url",
            format!("{url}: container name must be 1..=256 bytes"),
        ));
    }
    if let Some(seg) = client::dot_segment(c).or_else(|| client::dot_segment(p)) {
        return Err(Error::option(
            "url",
            format!("{url}: {seg:?} cannot be a container name or a segment of the prefix"),
        ));
    }
    Ok((c.to_string(), p.to_string()))
}

impl SwiftStore {
    pub fn new(url: &str, opts: &SwiftOptions) -> Result<Self> {
        Self::with_auth(url, opts, Auth::from_env(&opts.env_prefix)?)
    }

    /// [`SwiftStore::new`] with credentials given instead of read from the environment.
    fn with_auth(url: &str, opts: &SwiftOptions, auth: Auth) -> Result<Self> {
        let (container, prefix) = parse_url(url)?;
        let auth_url = match &auth {
            Auth::V1 { url, .. } | Auth::V3 { url, .. } => url,
        };
        crate::backend::check_transport("Swift auth URL", auth_url, opts.allow_insecure_http)?;
        let throttle = Arc::new(Throttle::new(url.to_string(), opts.throttle.clone()));
        let segment_size = opts
            .segment_size
            .unwrap_or(DEFAULT_SEGMENT_SIZE)
            .max(MIN_SEGMENT_SIZE);
        let slo_threshold = opts
            .slo_threshold
            .unwrap_or(DEFAULT_SLO_THRESHOLD)
            .min(MAX_OBJECT_SIZE);
        if slo_threshold < MIN_SEGMENT_SIZE {
            return Err(Error::option(
                "--slo-threshold",
                format!("must be at least {MIN_SEGMENT_SIZE} bytes"),
            ));
        }
        Ok(SwiftStore {
            client: SwiftClient::new(auth, throttle)?.allow_insecure_http(opts.allow_insecure_http),
            url: url.to_string(),
            map: ContainerMap::parse(&container, opts.containers.as_deref())?,
            prefix,
            slo_threshold,
            segment_size,
            list_parallel: opts.list_parallel.max(1),
            slo_limits: tokio::sync::OnceCell::new(),
            journal: std::sync::OnceLock::new(),
            max_segment: opts.max_segment,
            made: Mutex::new(BTreeSet::new()),
            used: std::sync::Mutex::new(BTreeSet::new()),
        })
    }

    pub fn throttle(&self) -> &Arc<Throttle> {
        self.client.throttle()
    }

    pub fn map(&self) -> &ContainerMap {
        &self.map
    }

    /// Containers written to so far.
    pub fn used_containers(&self) -> Vec<String> {
        self.used
            .lock()
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn name_of(&self, key: &ObjectKey) -> Result<(String, String)> {
        let k = std::str::from_utf8(key.as_bytes())
            .map_err(|_| Error::object(key, "Swift object names must be UTF-8"))?;
        let name = if self.prefix.is_empty() {
            k.to_string()
        } else {
            format!("{}/{k}", self.prefix.trim_end_matches('/'))
        };
        if name.len() > MAX_OBJECT_NAME {
            return Err(Error::object(
                key,
                format!(
                    "name is {} bytes; Swift takes at most {MAX_OBJECT_NAME}",
                    name.len()
                ),
            ));
        }
        if name.is_empty() {
            return Err(Error::object(key, "empty object name"));
        }
        if let Some(seg) = client::dot_segment(&name) {
            return Err(Error::object(key, refusal(&name, seg)));
        }
        Ok((self.map.container_of(k), name))
    }

    /// Where an object is written: its container (created if needed and recorded as
    /// used), its name, and its escaped path ("/container/name").
    async fn place(&self, key: &ObjectKey) -> Result<(String, String, String)> {
        let (c, name) = self.name_of(key)?;
        self.ensure_container(&c).await?;
        if let Ok(mut u) = self.used.lock() {
            u.insert(c.clone());
        }
        let path = format!("/{}/{}", escape_container(&c), escape_object(&name));
        Ok((c, name, path))
    }

    async fn ensure_container(&self, c: &str) -> Result<()> {
        let mut made = self.made.lock().await;
        if made.contains(c) {
            return Ok(());
        }
        self.client
            .call(
                &format!("PUT container {c}"),
                Method::PUT,
                &format!("/{}", escape_container(c)),
                &[],
                None,
                &[201, 202, 204],
            )
            .await?;
        made.insert(c.to_string());
        Ok(())
    }

    /// Content-Type and the standard headers the object carries.
    fn meta_headers(meta: &ObjectMeta) -> Vec<(&'static str, String)> {
        let mut h = vec![];
        if let Some(ct) = &meta.content_type {
            h.push(("Content-Type", ct.clone()));
        }
        let (carried, _) = crate::object::carried(&meta.user_meta);
        for (name, v) in carried {
            let header = match name {
                "content-encoding" => "Content-Encoding",
                "content-disposition" => "Content-Disposition",
                "content-language" => "Content-Language",
                "cache-control" => "Cache-Control",
                "expires" => "Expires",
                _ => continue,
            };
            h.push((header, v.to_string()));
        }
        h
    }

    /// `X-Object-Meta-*` headers, refused (naming the metadata key) when Swift's limits
    /// would refuse them: at most [`MAX_META_COUNT`] keys, names of [`MAX_META_NAME`]
    /// bytes, values of [`MAX_META_VALUE`], [`MAX_META_TOTAL`] in all.
    fn user_meta_headers(meta: &ObjectMeta) -> Result<Vec<(String, String)>> {
        let (_, user) = crate::object::carried(&meta.user_meta);
        let refuse = |m: String| Err(Error::object(&meta.key, m));
        if user.len() > MAX_META_COUNT {
            return refuse(format!(
                "{} metadata keys; Swift allows {MAX_META_COUNT}",
                user.len()
            ));
        }
        let mut total = 0;
        for (k, v) in &user {
            if k.len() > MAX_META_NAME {
                return refuse(format!(
                    "metadata key {k:?} is {} bytes long; Swift allows {MAX_META_NAME}",
                    k.len()
                ));
            }
            if v.len() > MAX_META_VALUE {
                return refuse(format!(
                    "metadata key {k:?} has a value of {} bytes; Swift allows {MAX_META_VALUE}",
                    v.len()
                ));
            }
            total += k.len() + v.len();
        }
        if total > MAX_META_TOTAL {
            return refuse(format!(
                "its metadata takes {total} bytes; Swift allows {MAX_META_TOTAL}"
            ));
        }
        Ok(user
            .iter()
            .map(|(k, v)| (format!("X-Object-Meta-{k}"), v.to_string()))
            .collect())
    }

    async fn put_bytes(
        &self,
        what: &str,
        path: &str,
        body: Rope,
        extra: &[(&str, String)],
    ) -> Result<String> {
        let md5 = hex::encode(body.md5());
        let mut h: Vec<(&str, String)> = vec![("ETag", md5.clone())];
        h.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        self.client
            .call(what, Method::PUT, path, &h, Some(body), &[201])
            .await?;
        Ok(md5)
    }

    /// The cluster's SLO limits, read once from `/info` (Swift's defaults when it does
    /// not publish them).
    async fn slo_limits(&self) -> SloLimits {
        *self
            .slo_limits
            .get_or_init(|| async {
                let info = self.client.info().await.ok().flatten();
                let num = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_u64());
                let info = info.as_ref();
                let l = SloLimits {
                    max_segments: num(info.and_then(|i| i.pointer("/slo/max_manifest_segments")))
                        .unwrap_or(DEFAULT_MAX_SEGMENTS)
                        .max(1),
                    max_segment: self.max_segment.unwrap_or_else(|| {
                        num(info.and_then(|i| i.pointer("/swift/max_file_size")))
                            .unwrap_or(MAX_OBJECT_SIZE)
                    }),
                };
                tracing::debug!("{}: SLO limits {l:?}", self.url);
                l
            })
            .await
    }

    /// PUTs an SLO manifest at `path` (escaped) with `headers` (its ETag among them).
    async fn put_manifest(
        &self,
        what: &str,
        path: &str,
        m: &Manifest,
        headers: &[(&str, String)],
    ) -> Result<()> {
        let body = Bytes::from(
            serde_json::to_vec(&m.entries).map_err(|e| Error::encode("an SLO manifest", e))?,
        );
        self.client
            .call(
                what,
                Method::PUT,
                &format!("{path}?multipart-manifest=put"),
                headers,
                Some(Rope::from(body)),
                &[201],
            )
            .await
            .map(|_| ())
    }

    /// Writes `sub` as sub-manifest `k` of a nested SLO (beside its segments, so the
    /// journal's prefix covers it) and adds it to `top` as one of its segments.
    async fn put_sub_manifest(
        &self,
        slo: &SloUpload,
        k: usize,
        sub: Manifest,
        top: &mut Manifest,
    ) -> Result<()> {
        let name = format!("{}m{k:08}", slo.prefix);
        let path = format!(
            "/{}/{}",
            escape_container(&slo.segments),
            escape_object(&name)
        );
        let etag = sub.etag();
        let what = format!(
            "PUT sub-manifest {k} of swift://{}/{}",
            slo.container, slo.name
        );
        self.put_manifest(&what, &path, &sub, &[("ETag", etag.clone())])
            .await?;
        top.push(format!("/{}/{name}", slo.segments), etag, sub.bytes);
        Ok(())
    }

    /// Whether the object's manifest exists and lists segments of `slo` (the upload
    /// finished before the crash).
    async fn manifest_refers(&self, slo: &SloUpload) -> Result<bool> {
        let path = format!(
            "/{}/{}?multipart-manifest=get",
            escape_container(&slo.container),
            escape_object(&slo.name)
        );
        let r = self
            .client
            .call("GET manifest", Method::GET, &path, &[], None, &[200, 404])
            .await?;
        if r.status.as_u16() == 404 {
            return Ok(false);
        }
        let segs: Vec<serde_json::Value> = serde_json::from_slice(&r.body).unwrap_or_default();
        let mine = format!("/{}/{}", slo.segments, slo.prefix);
        Ok(segs.iter().any(|s| {
            s.get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| n.starts_with(&mine))
        }))
    }

    /// Whether every segment of the SLO `name` in container `c` (its manifest read with
    /// `multipart-manifest=get`) is one barge names: under `<name>/slo/` in
    /// `<c>_segments`. Sub-manifests of a nested SLO are named so too.
    async fn segments_are_ours(&self, c: &str, name: &str) -> Result<bool> {
        let path = format!(
            "/{}/{}?multipart-manifest=get",
            escape_container(c),
            escape_object(name)
        );
        let what = format!("GET manifest of swift://{c}/{name}");
        let r = self
            .client
            .call(&what, Method::GET, &path, &[], None, &[200, 404])
            .await?;
        if r.status.as_u16() == 404 {
            return Ok(false);
        }
        let segs: Vec<serde_json::Value> =
            serde_json::from_slice(&r.body).map_err(|e| Error::Decode {
                what: format!("{}: the SLO manifest of {name}", self.url),
                message: e.to_string(),
            })?;
        Ok(!segs.is_empty()
            && segs.iter().all(|s| {
                s.get("name")
                    .and_then(|n| n.as_str())
                    .is_some_and(|n| barge_segment(c, name, n))
            }))
    }

    /// Deletes every segment of `slo`, listed page by page to an empty one; true once
    /// none is left.
    async fn delete_segments(&self, slo: &SloUpload) -> bool {
        let pages = ContainerPages {
            store: self,
            container: slo.segments.clone(),
            prefix: slo.prefix.clone(),
            missing_ok: true,
        };
        let (mut ok, mut after) = (true, None);
        loop {
            let Ok(page) = pages.page(after.as_deref(), LIST_LIMIT).await else {
                return false;
            };
            if page.entries.is_empty() {
                return ok;
            }
            for e in page.entries {
                let path = format!(
                    "/{}/{}",
                    escape_container(&slo.segments),
                    escape_object(&e.key)
                );
                let what = format!("DELETE orphan segment {}/{}", slo.segments, e.key);
                ok &= self
                    .client
                    .call(&what, Method::DELETE, &path, &[], None, &[204, 404])
                    .await
                    .is_ok();
                after = Some(e.key);
            }
        }
    }

    /// Deletes an SLO with its segments. Swift answers with 200 and a bulk-delete result
    /// whose own status and error list say whether it worked.
    async fn delete_slo(&self, key: &ObjectKey, what: &str, path: &str) -> Result<()> {
        let accept = [("Accept", "application/json".to_string())];
        let r = self
            .client
            .call(what, Method::DELETE, path, &accept, None, &[200, 204, 404])
            .await
            .map_err(|e| Error::object(key, e))?;
        if r.status.as_u16() != 200 || r.body.is_empty() {
            return Ok(());
        }
        let res: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| {
            Error::object(
                key,
                format!("{what}: the bulk-delete result is not JSON: {e}"),
            )
        })?;
        let status = res["Response Status"].as_str().unwrap_or("");
        let errors = res["Errors"].as_array().map_or(0, Vec::len);
        if (status.starts_with('2') || status.starts_with("404")) && errors == 0 {
            return Ok(());
        }
        Err(Error::object(
            key,
            format!("{what}: {status}, {errors} not deleted: {}", res["Errors"]),
        ))
    }

    /// The store's object name prefix ("" or ending in "/").
    fn prefix_slash(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix.trim_end_matches('/'))
        }
    }

    /// Lists one container over key ranges, each resuming after its mark in `from`.
    /// A missing container fails the listing unless `missing_ok`.
    async fn list_container(
        &self,
        container: &str,
        from: &ListFrom,
        missing_ok: bool,
        tx: &mpsc::Sender<Listed>,
    ) -> Result<()> {
        let pages = ContainerPages {
            store: self,
            container: container.to_string(),
            prefix: self.prefix_slash(),
            missing_ok,
        };
        let scope = format!("{container}/");
        // The whole container, from its first name: its object count should match.
        let whole = self.prefix.is_empty() && !from.keys().any(|n| n.starts_with(&scope));
        let listing = RangeListing {
            pages: &pages,
            prefix: self.prefix_slash(),
            scope,
            parallel: self.list_parallel,
            page: LIST_LIMIT,
        };
        let sent = listing.run_counted(from, tx).await?;
        if whole && !tx.is_closed() {
            self.cross_check(container, sent).await;
        }
        Ok(())
    }

    /// Compares the objects a whole listing of `container` returned with the count the
    /// container reports (`X-Container-Object-Count`). A warning only: the count is
    /// updated asynchronously, and objects written or deleted during the listing change
    /// it; a listing short of it by far points at a server that ends listings early.
    async fn cross_check(&self, container: &str, listed: u64) {
        let path = format!("/{}", escape_container(container));
        let what = format!("HEAD container {container}");
        let Ok(r) = (self.client)
            .call(&what, Method::HEAD, &path, &[], None, &[200, 204, 404])
            .await
        else {
            return;
        };
        let count = r
            .header("x-container-object-count")
            .and_then(|v| v.parse::<u64>().ok());
        match count {
            Some(n) if n > listed => tracing::warn!(
                "{}: container {container} reports {n} objects, its listing returned {listed}: objects written meanwhile, or a server that ends listings early",
                self.url
            ),
            Some(n) => tracing::debug!(
                "{}: container {container}: {listed} listed, {n} reported",
                self.url
            ),
            None => {}
        }
    }

    /// The containers this store may hold objects in: the base one, or every container of
    /// the account whose name starts with "{base}-" when sharded.
    async fn containers(&self) -> Result<Vec<String>> {
        if let ContainerMap::Single { container } = &self.map {
            return Ok(vec![container.clone()]);
        }
        let base = format!("{}-", self.map.base());
        let mut out = vec![];
        let mut marker = String::new();
        loop {
            let path = format!(
                "?format=json&limit={LIST_LIMIT}&prefix={}&marker={}",
                escape_container(&base),
                escape_container(&marker)
            );
            let r = self
                .client
                .call("LIST account", Method::GET, &path, &[], None, &[200, 204])
                .await?;
            let page: Vec<ListEntry> = if r.body.is_empty() {
                vec![]
            } else {
                serde_json::from_slice(&r.body).map_err(|e| Error::Decode {
                    what: format!("{}: the account listing", self.url),
                    message: e.to_string(),
                })?
            };
            let names: Vec<String> = page.into_iter().filter_map(|e| e.name).collect();
            let after = (!marker.is_empty()).then_some(marker.as_str());
            check_advance(
                &self.url,
                "the account",
                after,
                names.iter().map(String::as_str),
            )?;
            let Some(last) = names.last().cloned() else {
                break;
            };
            out.extend(names.into_iter().filter(|n| !n.ends_with("_segments")));
            marker = last;
        }
        Ok(out)
    }
}

/// The pages of one container's listing, after a name (`marker`).
struct ContainerPages<'a> {
    store: &'a SwiftStore,
    container: String,
    /// The store's object name prefix ("" or ending in "/").
    prefix: String,
    /// A missing container lists as empty instead of failing.
    missing_ok: bool,
}

#[async_trait]
impl KeyPages for ContainerPages<'_> {
    /// A page of the container after `after`. Keys may follow while a page has entries:
    /// the listing ends at an empty page, as a server may return fewer than `limit`
    /// entries (radosgw caps pages at `rgw_max_listing_results`, 1,000 by default). A
    /// name with a `.` or `..` segment comes as a refused entry (a listing error naming
    /// it, never fetched).
    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Page> {
        let listed = self.fetch(after, limit.min(LIST_LIMIT)).await?;
        let names = listed.iter().filter_map(|e| e.name.as_deref());
        let what = format!("container {}", self.container);
        check_advance(&self.store.url, &what, after, names)?;
        let more = !listed.is_empty();
        let entries = listed
            .into_iter()
            .filter_map(|e| {
                let name = e.name?;
                let rel = name.strip_prefix(&self.prefix).unwrap_or(&name);
                let meta = ObjectMeta {
                    key: ObjectKey::from(rel),
                    size: e.bytes.unwrap_or(0),
                    version: e.hash.unwrap_or_default(),
                    content_type: e.content_type,
                    user_meta: vec![],
                    modified: e
                        .last_modified
                        .as_deref()
                        .and_then(crate::object::parse_utc),
                };
                let refused = client::dot_segment(&name).map(|seg| refusal(&name, seg));
                Some(Entry {
                    key: name,
                    meta,
                    refused,
                })
            })
            .collect();
        Ok(Page { entries, more })
    }
}

impl ContainerPages<'_> {
    /// One listing request: up to `limit` entries after `after` (none for a missing
    /// container when `missing_ok`).
    async fn fetch(&self, after: Option<&str>, limit: usize) -> Result<Vec<ListEntry>> {
        let c = &self.container;
        let path = format!(
            "/{}?format=json&limit={limit}&prefix={}&marker={}",
            escape_container(c),
            escape_container(&self.prefix),
            escape_container(after.unwrap_or(""))
        );
        let r = self
            .store
            .client
            .call(
                &format!("LIST {c}"),
                Method::GET,
                &path,
                &[],
                None,
                &[200, 204, 404],
            )
            .await?;
        if r.status.as_u16() == 404 {
            if self.missing_ok {
                return Ok(vec![]);
            }
            return Err(Error::Source {
                url: self.store.url.clone(),
                message: format!("container {c} does not exist"),
            });
        }
        if r.body.is_empty() {
            return Ok(vec![]);
        }
        serde_json::from_slice(&r.body).map_err(|e| Error::Decode {
            what: format!("{}: the listing of container {c}", self.store.url),
            message: e.to_string(),
        })
    }
}

/// Fails when a listing page of `what` (a container, or the account) after `after` holds
/// a name that is not after it: the server ignores `marker`, and paging on would list
/// the same names forever.
fn check_advance<'n>(
    url: &str,
    what: &str,
    after: Option<&str>,
    mut names: impl Iterator<Item = &'n str>,
) -> Result<()> {
    let Some(after) = after else {
        return Ok(());
    };
    match names.find(|n| *n <= after) {
        None => Ok(()),
        Some(n) => Err(Error::Source {
            url: url.to_string(),
            message: format!(
                "the listing of {what} after {after:?} returned {n:?}, which is not after it: the server does not honour the marker; stopped instead of listing the same names again"
            ),
        }),
    }
}

#[async_trait]
impl Source for SwiftStore {
    fn throttle(&self) -> Option<Arc<Throttle>> {
        Some(SwiftStore::throttle(self).clone())
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        self.list_resumable(tx, &ListFrom::new()).await
    }

    /// Each container in turn, over key ranges listed `--list-parallel` at once, each
    /// resuming after its mark (`marker`).
    async fn list_resumable(&self, tx: mpsc::Sender<Listed>, from: &ListFrom) -> Result<()> {
        for c in self.containers().await? {
            self.list_container(&c, from, false, &tx).await?;
        }
        Ok(())
    }

    /// One container: one range named as the container's ranges are (`<container>/` and
    /// the object name it starts after). A sharded source (`--containers`) spreads keys
    /// over containers by hash, so a key range is not a range of any container: None.
    fn range_from(
        &self,
        after: Option<&str>,
        until: Option<&str>,
        expect: Option<u64>,
    ) -> Option<ListFrom> {
        let ContainerMap::Single { container } = &self.map else {
            return None;
        };
        let scope = format!("{container}/");
        Some(super::ranges::one_range(
            &scope,
            &self.prefix_slash(),
            after,
            until,
            expect,
        ))
    }

    async fn open(&self, meta: &ObjectMeta) -> Result<Opened> {
        let (c, name) = self.name_of(&meta.key)?;
        let path = format!("/{}/{}", escape_container(&c), escape_object(&name));
        let r = self
            .client
            .get_stream(&format!("GET swift://{c}/{name}"), &path)
            .await
            .map_err(|e| Error::of_object(&meta.key, e))?;
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let large = h("x-static-large-object").is_some() || h("x-object-manifest").is_some();
        let check = if large {
            ContentCheck::Unchecked(
                "Swift large object: its ETag is not the MD5 of the body".into(),
            )
        } else {
            ContentCheck::from_etag(&h("etag").unwrap_or_default(), None)
        };
        let user_meta = {
            let mut v: Vec<(String, String)> = r
                .headers()
                .iter()
                .filter_map(|(k, v)| {
                    let k = k.as_str().strip_prefix("x-object-meta-")?;
                    Some((k.to_string(), v.to_str().ok()?.to_string()))
                })
                .collect();
            v.sort();
            for name in crate::object::CARRIED_HEADERS {
                crate::object::carry_header(&mut v, name, h(name).as_deref());
            }
            let modified = h("last-modified")
                .and_then(|d| httpdate::parse_http_date(&d).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            crate::object::carry_mtime(&mut v, modified);
            v
        };
        let content_type = h("content-type");
        let stream = r.bytes_stream().map_err(std::io::Error::other);
        Ok(Opened {
            reader: super::Payload::Stream(Box::new(tokio_util::io::StreamReader::new(Box::pin(
                stream,
            )))),
            content_type,
            user_meta,
            check,
            sum: None,
        })
    }

    async fn check_unchanged(&self, _meta: &ObjectMeta) -> Result<()> {
        Ok(())
    }

    /// A HEAD: a GET's 404 counts only if the HEAD does not find the object either.
    async fn confirm_gone(&self, meta: &ObjectMeta) -> Result<bool> {
        let (c, name) = self.name_of(&meta.key)?;
        let path = format!("/{}/{}", escape_container(&c), escape_object(&name));
        let what = format!("HEAD swift://{c}/{name}");
        let head = self
            .client
            .call(&what, Method::HEAD, &path, &[], None, &[200, 204, 404])
            .await?;
        Ok(head.status.as_u16() == 404)
    }
}

#[async_trait]
impl Destination for SwiftStore {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn throttle(&self) -> Option<Arc<Throttle>> {
        Some(SwiftStore::throttle(self).clone())
    }

    async fn put(&self, meta: &ObjectMeta, mut body: Body) -> Result<Option<Placed>> {
        let (c, name, obj_path) = self.place(&meta.key).await?;
        let mut headers = Self::meta_headers(meta);
        let user = Self::user_meta_headers(meta)?;
        let what = format!("PUT swift://{c}/{name}");
        let oerr = |e: Error| Error::object(&meta.key, e);
        if meta.size <= self.slo_threshold {
            let buf = super::collect_body(meta, body).await?;
            headers.extend(user.iter().map(|(k, v)| (k.as_str(), v.clone())));
            let md5 = self
                .put_bytes(&what, &obj_path, buf, &headers)
                .await
                .map_err(oerr)?;
            return Ok(Some(Placed {
                location: obj_path,
                etag: md5,
                copyable: true,
            }));
        }
        // Static Large Object: deterministic segment names, so a retry overwrites. The
        // segment size grows so that the object fits the cluster's manifest limit.
        let limits = self.slo_limits().await;
        let (max, largest) = (limits.max_segments, limits.max_segment);
        // One level of segments if they fit the manifest limit, else two: a manifest of
        // sub-manifests of up to `max` segments each (a nested SLO).
        let fit = |parts| super::piece_size(meta.size, self.segment_size, parts, largest);
        let (segment_size, nested) = match fit(max) {
            Some(s) => (s, false),
            None => (
                fit(max.saturating_mul(max)).ok_or_else(|| {
                    Error::object(
                        &meta.key,
                        format!(
                            "{} bytes do not fit two levels of SLO manifests of {max} segments of at most {largest} bytes",
                            meta.size
                        ),
                    )
                })?,
                true,
            ),
        };
        let seg_c = format!("{c}_segments");
        self.ensure_container(&seg_c).await?;
        // Journaled until the manifest is written or the segments deleted: a crash in
        // between leaves the segments to the next drain's cleanup.
        let slo = SloUpload {
            container: c.clone(),
            name: name.clone(),
            segments: seg_c.clone(),
            prefix: format!("{name}/slo/{}/{segment_size}/", meta.size),
        };
        let jkey = slo.journal_key()?;
        if let Some(j) = self.journal.get() {
            j.started(&self.url, &jkey, "slo")?;
        }
        let res: Result<String> = async {
            let mut level = Manifest::default();
            let mut top = Manifest::default();
            let mut buf = Rope::default();
            let mut idx = 0u32;
            let mut done = false;
            while !done {
                done = !super::fill(&mut body, &mut buf, segment_size as usize).await?;
                if buf.is_empty() {
                    break;
                }
                let take = buf.len().min(segment_size as usize);
                let seg = buf.split_to(take);
                let seg_name = format!("{}{idx:08}", slo.prefix);
                let seg_path =
                    format!("/{}/{}", escape_container(&seg_c), escape_object(&seg_name));
                let len = seg.len() as u64;
                let md5 = self
                    .put_bytes(
                        &format!("PUT segment {idx} of swift://{c}/{name}"),
                        &seg_path,
                        seg,
                        &[],
                    )
                    .await
                    .map_err(oerr)?;
                crate::failpoint::point("swift.after_segment");
                level.push(format!("/{seg_c}/{seg_name}"), md5, len);
                idx += 1;
                if nested && level.len() as u64 == max {
                    let sub = std::mem::take(&mut level);
                    self.put_sub_manifest(&slo, top.len(), sub, &mut top)
                        .await
                        .map_err(oerr)?;
                }
            }
            if nested {
                if !level.is_empty() {
                    self.put_sub_manifest(&slo, top.len(), level, &mut top)
                        .await
                        .map_err(oerr)?;
                }
                level = std::mem::take(&mut top);
            }
            let etag = level.etag();
            let mut h: Vec<(&str, String)> = vec![("ETag", etag.clone())];
            h.extend(headers);
            h.extend(user.iter().map(|(k, v)| (k.as_str(), v.clone())));
            self.put_manifest(&format!("{what} (SLO manifest)"), &obj_path, &level, &h)
                .await
                .map_err(oerr)?;
            Ok(etag)
        }
        .await;
        let ended = res.is_ok() || self.delete_segments(&slo).await;
        if let Some(j) = self.journal.get()
            && ended
        {
            j.ended(&self.url, &jkey, "slo")?;
        }
        // An SLO is not copied: a server-side COPY of one would concatenate its segments
        // into a plain object (and fail over 5 GiB).
        Ok(Some(Placed {
            location: obj_path,
            etag: res?,
            copyable: false,
        }))
    }

    fn can_copy(&self) -> bool {
        true
    }

    async fn copy(&self, from: &Placed, meta: &ObjectMeta) -> Result<()> {
        let (c, name, obj_path) = self.place(&meta.key).await?;
        let user = Self::user_meta_headers(meta)?;
        let mut h = Self::meta_headers(meta);
        // The copy takes this object's own metadata, none of its source's.
        h.push(("X-Copy-From", from.location.clone()));
        h.push(("X-Fresh-Metadata", "true".into()));
        h.extend(user.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let what = format!("COPY swift:/{} to swift://{c}/{name}", from.location);
        let reply = self
            .client
            .call(
                &what,
                Method::PUT,
                &obj_path,
                &h,
                Some(Rope::default()),
                &[201],
            )
            .await
            .map_err(|e| Error::object(&meta.key, e))?;
        from.check_copy(&meta.key, &what, reply.header("Etag"))
    }

    fn layout(&self) -> Option<super::DestLayout> {
        Some(super::DestLayout {
            url: self.url.clone(),
            map: self.map.clone(),
            containers_used: self.used_containers(),
        })
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        let cs = self.containers().await?;
        let from = ListFrom::new();
        futures::stream::iter(cs.into_iter().map(|c| {
            let (tx, from) = (tx.clone(), &from);
            async move { self.list_container(&c, from, true, &tx).await }
        }))
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    /// A HEAD shows what is at the key: anything but the object barge wrote (its size
    /// and ETag, an SLO's being its manifest's) is kept. Swift has no conditional
    /// DELETE (it ignores `If-Match` there), so an object written between the HEAD and
    /// the DELETE is lost. The HEAD also says whether the object is an SLO (Swift refuses
    /// `multipart-manifest=delete` of a plain object, and a plain DELETE of a manifest
    /// leaves its segments): an SLO whose segments are all barge's (named as barge names
    /// them, in `<container>_segments`) is deleted with `multipart-manifest=delete` (its
    /// segments and its sub-manifests' segments too); any other object, an SLO pointing
    /// at anyone else's segments included, with a plain DELETE.
    async fn delete(&self, key: &ObjectKey, expect: &Expect) -> Result<Deleted> {
        let (c, name) = self.name_of(key)?;
        let path = format!("/{}/{}", escape_container(&c), escape_object(&name));
        let what = format!("HEAD swift://{c}/{name}");
        let oerr = |e: Error| Error::object(key, e);
        let head = self
            .client
            .call(&what, Method::HEAD, &path, &[], None, &[200, 204, 404])
            .await
            .map_err(oerr)?;
        if head.status.as_u16() == 404 {
            return Ok(Deleted::Deleted);
        }
        let slo = head
            .header("x-static-large-object")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let large = slo || head.header("x-object-manifest").is_some();
        let size = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if let Some(why) = expect.mismatch(size, head.header("etag"), large) {
            return Ok(Deleted::Kept(why));
        }
        let what = format!("DELETE swift://{c}/{name}");
        if slo && self.segments_are_ours(&c, &name).await.map_err(oerr)? {
            self.delete_slo(key, &what, &format!("{path}?multipart-manifest=delete"))
                .await?;
        } else {
            self.client
                .call(&what, Method::DELETE, &path, &[], None, &[204, 404])
                .await
                .map_err(oerr)?;
        }
        Ok(Deleted::Deleted)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Reader> {
        let (c, name) = self.name_of(key)?;
        let path = format!("/{}/{}", escape_container(&c), escape_object(&name));
        let r = self
            .client
            .get_stream(&format!("GET swift://{c}/{name}"), &path)
            .await
            .map_err(|e| Error::of_object(key, e))?;
        let stream = r.bytes_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(Box::pin(
            stream,
        ))))
    }

    /// Deletes the segments of SLO uploads a crash interrupted (journaled, and no
    /// manifest refers to them); a retry of the same object would overwrite them, but
    /// one never retried (deleted or changed at the source) would leave them forever.
    async fn cleanup(&self) -> Result<u64> {
        let Some(j) = self.journal.get() else {
            return Ok(0);
        };
        let mut n = 0;
        for (jkey, id) in j.open(&self.url)? {
            let Ok(slo) = serde_json::from_str::<SloUpload>(&jkey) else {
                continue;
            };
            let done = self.manifest_refers(&slo).await? || {
                n += 1;
                self.delete_segments(&slo).await
            };
            if done {
                j.ended(&self.url, &jkey, &id)?;
            }
        }
        Ok(n)
    }

    fn set_journal(&self, journal: Arc<dyn super::UploadJournal>) {
        let _ = self.journal.set(journal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Listing requests a fake proxy answers before it lists nothing more: a client that
    /// pages forever ends (and fails its test) instead of hanging.
    const FAKE_MAX_PAGES: usize = 100;

    /// A fake Swift proxy on 127.0.0.1: TempAuth at `/auth` (storage URL
    /// `/v1/AUTH_t`), and every other request (path and query) answered by `answer`
    /// with a status and a body. Returns the auth URL.
    async fn fake_swift<F>(answer: F) -> String
    where
        F: Fn(&url::Url) -> (u16, Vec<u8>) + Send + Sync + 'static,
    {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let answer = Arc::new(answer);
        let b = base.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let (answer, base) = (answer.clone(), b.clone());
                tokio::spawn(async move {
                    let mut head = vec![];
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && c.read(&mut byte).await.unwrap_or(0) == 1
                    {
                        head.push(byte[0]);
                    }
                    let line = String::from_utf8_lossy(&head).into_owned();
                    let target = line.split(' ').nth(1).unwrap_or("/").to_string();
                    let reply = if target.starts_with("/auth") {
                        format!(
                            "HTTP/1.1 200 OK\r\nX-Storage-Url: {base}/v1/AUTH_t\r\nX-Auth-Token: tk\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .into_bytes()
                    } else {
                        let (status, body) =
                            answer(&url::Url::parse(&format!("{base}{target}")).unwrap());
                        let mut r = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    };
                    let _ = c.write_all(&reply).await;
                });
            }
        });
        format!("{base}/auth/v1.0")
    }

    /// A store on the fake proxy at `auth`.
    fn fake_store(auth: &str, url: &str) -> SwiftStore {
        let auth = Auth::V1 {
            url: auth.to_string(),
            user: "t:t".into(),
            key: "k".into(),
        };
        SwiftStore::with_auth(url, &SwiftOptions::default(), auth).unwrap()
    }

    /// A listing query's `marker` and `limit`.
    fn marker_limit(u: &url::Url) -> (String, usize) {
        let q = |k: &str| {
            u.query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
        };
        let limit = q("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        (q("marker").unwrap_or_default(), limit)
    }

    /// Everything the store lists, as (objects, refused keys), or its error.
    async fn listed(store: &SwiftStore) -> Result<(Vec<String>, Vec<String>)> {
        let (tx, mut rx) = mpsc::channel(100_000);
        Source::list(store, tx).await?;
        let (mut objects, mut refused) = (vec![], vec![]);
        while let Ok(item) = rx.try_recv() {
            match item {
                Listed::Object(m) => objects.push(m.key.to_string()),
                Listed::Error { key, .. } => refused.push(key.to_string()),
                _ => {}
            }
        }
        Ok((objects, refused))
    }

    fn page_of(names: &[&str]) -> Vec<u8> {
        let v: Vec<_> = names
            .iter()
            .map(|n| serde_json::json!({"name": n, "bytes": 1, "hash": "x"}))
            .collect();
        serde_json::to_vec(&v).unwrap()
    }

    #[tokio::test]
    async fn short_pages_are_paged_to_the_end_and_dot_names_are_refused_not_listed() {
        // radosgw caps a page at rgw_max_listing_results whatever `limit` asks.
        // In Swift's (byte) order, as the fake's marker filter needs.
        let names = [
            "./e",
            "a",
            "a/../secret",
            "b",
            "c",
            "d",
            "f",
            "g",
            "x/..",
            "z",
        ];
        let auth = fake_swift(move |u| {
            let (marker, limit) = marker_limit(u);
            let rest: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| *n > marker.as_str())
                .collect();
            (200, page_of(&rest[..rest.len().min(3).min(limit)]))
        })
        .await;
        let (objects, refused) = listed(&fake_store(&auth, "swift://c")).await.unwrap();
        assert_eq!(objects, ["a", "b", "c", "d", "f", "g", "z"]);
        assert_eq!(refused, ["./e", "a/../secret", "x/.."]);
    }

    #[tokio::test]
    async fn a_listing_that_does_not_advance_fails_naming_the_container() {
        let pages = Arc::new(AtomicUsize::new(0));
        let p = pages.clone();
        let auth = fake_swift(move |_| match p.fetch_add(1, Ordering::Relaxed) {
            n if n < FAKE_MAX_PAGES => (200, page_of(&["k1", "k2"])),
            _ => (200, page_of(&[])),
        })
        .await;
        let err = listed(&fake_store(&auth, "swift://loopc"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("container loopc") && err.contains("marker"),
            "{err}"
        );
        assert_eq!(
            pages.load(Ordering::Relaxed),
            2,
            "stopped at the first repeated page"
        );
    }

    #[tokio::test]
    async fn replies_over_their_bound_fail_naming_the_request() {
        let auth = fake_swift(|u| match u.path() {
            "/info" => (200, vec![b' '; client::REPLY_MAX + 1]),
            _ => (200, page_of(&[])),
        })
        .await;
        let store = fake_store(&auth, "swift://c");
        let err = store.client.info().await.unwrap_err().to_string();
        assert!(
            err.contains("/info") && err.contains("larger than"),
            "{err}"
        );
    }

    #[test]
    fn names_with_dot_segments_are_refused_naming_the_object() {
        let store = fake_store("http://127.0.0.1:9/auth/v1.0", "swift://c/pre");
        for bad in ["../victim/obj", "./x", "a/../../AUTH_other/o", "x/.", ".."] {
            let err = store
                .name_of(&ObjectKey::from(bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad) && err.contains("segment"), "{bad}: {err}");
        }
        for good in [
            "x",
            "dir/",
            "a//b",
            "/lead",
            "%2e%2e/x",
            "...",
            ".hidden/..x",
        ] {
            let (c, name) = store.name_of(&ObjectKey::from(good)).unwrap();
            assert_eq!((c.as_str(), name), ("c", format!("pre/{good}")));
        }
        assert!(parse_url("swift://../x").is_err());
        assert!(parse_url("swift://c/a/../b").is_err());
    }

    #[test]
    fn only_segments_named_as_barge_names_them_are_barge_s() {
        let ours = |p: &str| barge_segment("c", "a/b", p);
        assert!(ours("/c_segments/a/b/slo/3000000/1048576/00000002"));
        assert!(ours("/c_segments/a/b/slo/3000000/1048576/m00000000"));
        // The swift CLI's naming, another container, another object, other shapes.
        assert!(!ours(
            "/c_segments/a/b/slo/1765100000.123456/3000000/1048576/00000002"
        ));
        assert!(!ours("/d_segments/a/b/slo/3000000/1048576/00000002"));
        assert!(!ours("/c_segments/a/bb/slo/3000000/1048576/00000002"));
        assert!(!ours("/c_segments/a/b/slo/3000000/1048576/2"));
        assert!(!ours("/c_segments/a/b/slo/x/1048576/00000002"));
    }

    #[test]
    fn container_maps_are_deterministic_and_documented() {
        let m = ContainerMap::parse("bucket", Some("hash:256")).unwrap();
        let a = m.container_of("photos/2024/01/a.jpg");
        assert_eq!(a, m.container_of("photos/2024/01/a.jpg"));
        assert!(a.starts_with("bucket-") && a.len() == "bucket-".len() + 4);
        let spread: BTreeSet<String> = (0..2000)
            .map(|i| m.container_of(&format!("k{i}")))
            .collect();
        assert!(
            spread.len() > 200,
            "2000 keys over 256 containers: {}",
            spread.len()
        );
        let p = ContainerMap::parse("b", Some("prefix:2")).unwrap();
        assert_eq!(p.container_of("a/bc"), "b-a_");
        assert_eq!(p.container_of("x"), "b-x");
        assert_eq!(
            ContainerMap::parse("b", None).unwrap().container_of("q"),
            "b"
        );
        assert!(ContainerMap::parse("b", Some("hash:0")).is_err());
        assert!(ContainerMap::parse("b", Some("mod:3")).is_err());
    }
}

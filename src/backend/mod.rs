//! Sources and destinations. Each store is one module implementing [`Source`] and/or
//! [`Destination`]; [`open_source`] and [`open_destination`] pick one from a URL.

pub mod check;
pub mod local;
pub mod s3;
pub mod swift;
pub mod throttle;

pub use check::ContentCheck;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::object::{ObjectKey, ObjectMeta};

/// One line of a listing: an object, or an entry that could not be listed (named).
#[derive(Debug)]
pub enum Listed {
    Object(ObjectMeta),
    Error { key: ObjectKey, reason: String },
}

/// A body being uploaded: in-order plaintext pieces. An `Err` item aborts the upload;
/// nothing of it may become visible at the destination.
pub type Body = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Reads a whole body (an object below the large-object threshold) into memory and
/// checks its length against the catalog's.
pub async fn collect_body(meta: &ObjectMeta, mut body: Body) -> Result<Bytes> {
    use futures::StreamExt;
    let mut buf = bytes::BytesMut::with_capacity(meta.size as usize);
    while let Some(piece) = body.next().await {
        buf.extend_from_slice(&piece?);
    }
    if buf.len() as u64 != meta.size {
        return Err(Error::object(
            &meta.key,
            format!("body had {} bytes, expected {}", buf.len(), meta.size),
        ));
    }
    Ok(buf.freeze())
}

/// Appends body pieces to `buf` until it holds `target` bytes; false once the body ended.
pub async fn fill(body: &mut Body, buf: &mut bytes::BytesMut, target: usize) -> Result<bool> {
    use futures::StreamExt;
    while buf.len() < target {
        match body.next().await {
            Some(piece) => buf.extend_from_slice(&piece?),
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// A readable object body.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// An object opened for reading, with what the source says about it.
pub struct Opened {
    pub reader: Reader,
    pub content_type: Option<String>,
    pub user_meta: Vec<(String, String)>,
    /// What the body must match (S3 ETag MD5, ...), or why nothing can be checked.
    pub check: ContentCheck,
    /// A stored full-object checksum (`x-amz-checksum-*`), checked as well.
    pub sum: Option<check::SumCheck>,
}

/// Where objects come from.
#[async_trait]
pub trait Source: Send + Sync {
    /// The URL, for messages and run records.
    fn url(&self) -> String;
    /// Streams the listing into `tx`, page by page; returns when the listing is complete.
    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()>;
    /// Opens an object for reading.
    async fn open(&self, meta: &ObjectMeta) -> Result<Opened>;
    /// After a full read: fails if the object changed since it was listed.
    async fn check_unchanged(&self, meta: &ObjectMeta) -> Result<()>;
}

/// Where objects go.
#[async_trait]
pub trait Destination: Send + Sync {
    fn url(&self) -> String;
    /// Writes one object atomically: it is visible only if the whole body arrived and the
    /// body stream ended without error.
    async fn put(&self, meta: &ObjectMeta, body: Body) -> Result<()>;
    /// Lists what is at the destination (for verify).
    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()>;
    /// Reads an object back (for verify --full).
    async fn get(&self, key: &ObjectKey) -> Result<Reader>;
    /// Back-pressure counters of the endpoint (requests, retries, throttles, window).
    fn stats(&self) -> Option<throttle::ThrottleStats> {
        None
    }
    /// How objects are laid out at the destination (Swift container sharding), for the
    /// catalog and the exported lookup file. None for stores with one namespace.
    fn layout(&self) -> Option<serde_json::Value> {
        None
    }
    /// Removes leftovers of uploads a crash interrupted (temporary files, incomplete
    /// multipart uploads). Called before a drain starts; returns how many were removed.
    async fn cleanup(&self) -> Result<u64>;
}

/// Options of one side (source or destination) of a move.
#[derive(Debug, Clone, Default)]
pub struct EndpointOptions {
    /// S3 endpoint URL (`--source-endpoint` / `--dest-endpoint`).
    pub endpoint: Option<String>,
    /// AWS profile (`--source-profile` / `--dest-profile`).
    pub profile: Option<String>,
    pub region: Option<String>,
    pub throttle: throttle::ThrottleConfig,
    /// S3 ranged-GET / multipart part size.
    pub part_size: Option<u64>,
    /// S3 multipart threshold, Swift SLO threshold.
    pub large_threshold: Option<u64>,
    /// Swift SLO segment size.
    pub segment_size: Option<u64>,
    /// Swift container sharding (`hash:N`, `prefix:K`).
    pub containers: Option<String>,
    /// Parallel listings.
    pub list_parallel: usize,
    /// Prefix of per-side credential variables (`BARGE_SOURCE_`, `BARGE_DEST_`).
    pub env_prefix: String,
}

impl EndpointOptions {
    fn s3(&self) -> s3::S3Options {
        s3::S3Options {
            endpoint: self.endpoint.clone(),
            profile: self.profile.clone(),
            region: self.region.clone(),
            throttle: self.throttle.clone(),
            part_size: self.part_size,
            multipart_threshold: self.large_threshold,
            list_parallel: self.list_parallel,
        }
    }

    fn swift(&self) -> swift::SwiftOptions {
        swift::SwiftOptions {
            env_prefix: self.env_prefix.clone(),
            containers: self.containers.clone(),
            slo_threshold: self.large_threshold,
            segment_size: self.segment_size,
            throttle: self.throttle.clone(),
        }
    }
}

/// Opens a source: a path, `file://`, `s3://bucket[/prefix]` or `swift://container[/prefix]`.
pub async fn open_source(url: &str, o: &EndpointOptions) -> Result<Arc<dyn Source>> {
    match scheme(url) {
        Some("file") | None => Ok(Arc::new(local::LocalSource::new(local_path(url))?)),
        Some("s3") => Ok(Arc::new(s3::S3Store::new(url, &o.s3()).await?)),
        Some("swift") => Ok(Arc::new(swift::SwiftStore::new(url, &o.swift())?)),
        Some(other) => Err(Error::option(
            "--source",
            format!(
                "{url}: unsupported scheme {other}:// (supported: a path, file://, s3://, swift://)"
            ),
        )),
    }
}

/// Opens a destination: a path, `file://`, `s3://bucket[/prefix]` or `swift://container[/prefix]`.
pub async fn open_destination(url: &str, o: &EndpointOptions) -> Result<Arc<dyn Destination>> {
    match scheme(url) {
        Some("file") | None => Ok(Arc::new(local::LocalDest::new(local_path(url))?)),
        Some("s3") => Ok(Arc::new(s3::S3Store::new(url, &o.s3()).await?)),
        Some("swift") => Ok(Arc::new(swift::SwiftStore::new(url, &o.swift())?)),
        Some(other) => Err(Error::option(
            "--dest",
            format!(
                "{url}: unsupported scheme {other}:// (supported: a path, file://, s3://, swift://)"
            ),
        )),
    }
}

fn scheme(url: &str) -> Option<&str> {
    let (s, _) = url.split_once("://")?;
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '+')
        .then_some(s)
}

fn local_path(url: &str) -> std::path::PathBuf {
    url.strip_prefix("file://").unwrap_or(url).into()
}

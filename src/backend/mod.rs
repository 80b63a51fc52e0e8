//! Sources and destinations. Each store is one module implementing [`Source`] and/or
//! [`Destination`]; [`open_source`] and [`open_destination`] pick one from a URL.

pub mod local;

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

/// A readable object body.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// Where objects come from.
#[async_trait]
pub trait Source: Send + Sync {
    /// The URL, for messages and run records.
    fn url(&self) -> String;
    /// Streams the listing into `tx`, page by page; returns when the listing is complete.
    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()>;
    /// Opens an object for reading.
    async fn open(&self, meta: &ObjectMeta) -> Result<Reader>;
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
    /// Removes leftovers of uploads a crash interrupted (temporary files, incomplete
    /// multipart uploads). Called before a drain starts; returns how many were removed.
    async fn cleanup(&self) -> Result<u64>;
}

/// Parses a source URL: a path or `file:///path` in this version.
pub fn open_source(url: &str) -> Result<Arc<dyn Source>> {
    match scheme(url) {
        Some("file") | None => Ok(Arc::new(local::LocalSource::new(local_path(url))?)),
        Some(other) => Err(Error::option(
            "--source",
            format!("{url}: unsupported scheme {other}:// (supported: a path, file://)"),
        )),
    }
}

/// Parses a destination URL: a path or `file:///path` in this version.
pub fn open_destination(url: &str) -> Result<Arc<dyn Destination>> {
    match scheme(url) {
        Some("file") | None => Ok(Arc::new(local::LocalDest::new(local_path(url))?)),
        Some(other) => Err(Error::option(
            "--dest",
            format!("{url}: unsupported scheme {other}:// (supported: a path, file://)"),
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

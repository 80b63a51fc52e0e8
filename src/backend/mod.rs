//! Sources and destinations. Each store is one module implementing [`Source`] and/or
//! [`Destination`]; [`open_source`] and [`open_destination`] pick one from a URL
//! (`gen://` and `null://` are the synthetic ends of [`synthetic`]).

pub mod check;
pub(crate) mod local;
pub mod ranges;
pub mod s3;
pub mod swift;
pub mod synthetic;
pub mod throttle;

pub use check::ContentCheck;
pub use local::FILE_READERS;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Future, Stream};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::object::{ObjectKey, ObjectMeta};

/// One line of a listing: an object, an entry that could not be listed (named), or a
/// checkpoint of one key range of a resumable listing.
#[derive(Debug)]
pub enum Listed {
    Object(ObjectMeta),
    Error {
        key: ObjectKey,
        reason: String,
    },
    /// Every object of `range` up to `mark` was sent before this line.
    Mark {
        range: String,
        mark: RangeMark,
    },
    /// An entry that is not an object and is left out (a directory source's symlinks,
    /// sockets, devices, FIFOs), with what it is.
    Skipped {
        key: ObjectKey,
        kind: &'static str,
    },
    /// A range just planned, with its bounds, before any of its objects; a range the
    /// checkpoint already holds keeps its mark.
    Range {
        range: String,
        mark: RangeMark,
    },
}

/// Where barge keeps its own documents at a destination (plans, shard reports, cutover
/// certificates).
pub const RESERVED_PREFIX: &str = ".barge/";
/// What a source key under [`RESERVED_PREFIX`] is, as a left-out entry.
pub const RESERVED_KIND: &str =
    "refused: a key under .barge/, where barge keeps its plans, reports and certificates";

/// Whether `key` names barge's own place at a destination: `.barge` or anything under
/// it, also behind leading `/` or `./` (the same file in a directory destination).
pub fn is_reserved(key: &ObjectKey) -> bool {
    let mut k = key.as_bytes();
    while let Some(rest) = k.strip_prefix(b"/").or_else(|| k.strip_prefix(b"./")) {
        k = rest;
    }
    k == b".barge" || k.starts_with(RESERVED_PREFIX.as_bytes())
}

impl Listed {
    /// A listed object under [`RESERVED_PREFIX`] as a skipped entry: no source key ever
    /// lands where barge keeps its reports (a source object `.barge/<plan>/shard-1.json`
    /// would overwrite a shard's report). Every listing that decides what a move holds
    /// (ingest's dispatcher, verify's and plan's tables) passes its lines through here.
    pub fn refuse_reserved(self) -> Listed {
        match self {
            Listed::Object(m) if is_reserved(&m.key) => {
                tracing::warn!("object {}: left out, {RESERVED_KIND}", m.key);
                Listed::Skipped {
                    key: m.key,
                    kind: RESERVED_KIND,
                }
            }
            other => other,
        }
    }
}

/// How far the listing of one key range got: the last key listed (the store's own key,
/// prefix included), the range's last key (none: to the end of the key space) and
/// whether the range is finished.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangeMark {
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    pub done: bool,
    /// Keys expected after `after` up to `until`, when known (a shard's range, from its
    /// plan): pages are sized not to pass the range's end by more than a few keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<u64>,
}

/// Where a resumed listing starts, per range (empty: from the first key).
pub type ListFrom = std::collections::BTreeMap<String, RangeMark>;

/// A body being uploaded: in-order plaintext pieces. An `Err` item aborts the upload;
/// nothing of it may become visible at the destination.
pub type Body = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// An object body (or a part of one) held as the pieces it was rebuilt from: staging
/// chunks stay in their read buffers instead of being copied into one allocation.
/// Clones share the pieces, so a retried request resends the same bytes for free.
#[derive(Clone, Default)]
pub struct Rope {
    pieces: std::collections::VecDeque<Bytes>,
    len: usize,
}

impl Rope {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.pieces.push_back(b);
        }
    }

    /// MD5 of all pieces in order.
    pub fn md5(&self) -> [u8; 16] {
        use md5::Digest;
        let mut h = md5::Md5::new();
        for p in &self.pieces {
            h.update(p);
        }
        h.finalize().into()
    }

    /// Splits off the first `n` bytes (all if fewer), slicing a piece without copying.
    pub fn split_to(&mut self, n: usize) -> Rope {
        let mut out = Rope::default();
        while out.len < n {
            let Some(mut p) = self.pieces.pop_front() else {
                break;
            };
            let want = n - out.len;
            if p.len() > want {
                let head = p.split_to(want);
                self.pieces.push_front(p);
                p = head;
            }
            self.len -= p.len();
            out.push(p);
        }
        out
    }

    /// The pieces as an HTTP body with an exact size hint.
    pub fn http_body(&self) -> RopeBody {
        RopeBody(self.clone())
    }
}

impl From<Bytes> for Rope {
    fn from(b: Bytes) -> Self {
        let mut r = Rope::default();
        r.push(b);
        r
    }
}

/// An `http_body::Body` over a [`Rope`], for reqwest and the AWS SDK.
pub struct RopeBody(Rope);

impl http_body::Body for RopeBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        let r = &mut self.0;
        std::task::Poll::Ready(r.pieces.pop_front().map(|p| {
            r.len -= p.len();
            Ok(http_body::Frame::data(p))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.0.pieces.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.len as u64)
    }
}

/// Reads a whole body (an object below the large-object threshold) without copying it
/// and checks its length against the catalog's.
pub async fn collect_body(meta: &ObjectMeta, mut body: Body) -> Result<Rope> {
    use futures::StreamExt;
    let mut rope = Rope::default();
    while let Some(piece) = body.next().await {
        rope.push(piece?);
    }
    if rope.len() as u64 != meta.size {
        return Err(Error::object(
            &meta.key,
            format!("body had {} bytes, expected {}", rope.len(), meta.size),
        ));
    }
    Ok(rope)
}

/// Appends body pieces to `buf` until it holds `target` bytes; false once the body ended.
pub async fn fill(body: &mut Body, buf: &mut Rope, target: usize) -> Result<bool> {
    use futures::StreamExt;
    while buf.len() < target {
        match body.next().await {
            Some(piece) => buf.push(piece?),
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Time to open a TCP connection to an endpoint before the attempt counts as failed.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest silence on a connection (no response byte arriving) before the attempt is
/// abandoned and retried. A store that accepts a request and then stalls (a full Ceph
/// cluster holds writes for minutes before answering 408) must not hang the run.
pub const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The least time a GET may take to deliver its whole body, however small: the floor of
/// [`get_deadline`]. Above [`STALL_TIMEOUT`] so a request that waits for its first byte
/// has its full stall allowance.
pub const GET_DEADLINE_FLOOR: std::time::Duration = std::time::Duration::from_secs(120);
/// The slowest delivery a GET is allowed on top of [`GET_DEADLINE_FLOOR`], in bytes per
/// second: a body of `n` bytes may take `n / GET_MIN_RATE` seconds more. Low (256
/// fetches may share one slow link), but it turns a server that trickles a byte just
/// before every stall timeout into a failed attempt instead of a fetch slot held forever.
pub const GET_MIN_RATE: u64 = 64 << 10;

/// The whole-body deadline of a GET of `len` bytes: [`GET_DEADLINE_FLOOR`] plus `len` at
/// [`GET_MIN_RATE`].
pub fn get_deadline(len: u64) -> std::time::Duration {
    GET_DEADLINE_FLOOR + std::time::Duration::from_secs(len / GET_MIN_RATE)
}

/// A body reader that may not deliver more than `limit` bytes (the size the listing
/// gave) nor take longer than [`get_deadline`] of it: past either it fails with a reason
/// naming `what` (the object), instead of growing or waiting without end. Whether the
/// body was long enough is its caller's check (it knows what the size means).
pub struct Bounded<R> {
    inner: R,
    /// Bytes still allowed.
    left: u64,
    limit: u64,
    what: String,
    deadline: Pin<Box<tokio::time::Sleep>>,
    secs: u64,
}

impl<R> Bounded<R> {
    /// `inner`, limited to `limit` bytes within [`get_deadline`]`(limit)` from now.
    pub fn new(inner: R, limit: u64, what: impl Into<String>) -> Self {
        let d = get_deadline(limit);
        Bounded {
            inner,
            left: limit,
            limit,
            what: what.into(),
            deadline: Box::pin(tokio::time::sleep(d)),
            secs: d.as_secs(),
        }
    }
}

/// The error of a body longer than its listing said (also S3's capped GET).
pub(crate) fn too_long(what: &str, limit: u64) -> String {
    format!("{what}: the server sent more than the {limit} bytes listed")
}

/// The error of a body not complete within its deadline.
pub(crate) fn too_slow(what: &str, limit: u64, secs: u64) -> String {
    format!("{what}: the body of {limit} bytes did not arrive within {secs} s")
}

impl<R: AsyncRead + Unpin> AsyncRead for Bounded<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let me = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > me.left {
                    // An error delivers no bytes.
                    buf.set_filled(before);
                    let msg = too_long(&me.what, me.limit);
                    return Poll::Ready(Err(std::io::Error::other(msg)));
                }
                me.left -= n;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match me.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let msg = too_slow(&me.what, me.limit, me.secs);
                    Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, msg)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// An opened source object's bytes.
pub enum Payload {
    /// A network (or other asynchronous) stream.
    Stream(Reader),
    /// A local file, opened, read with plain blocking reads and checked unchanged on
    /// the chunking thread: one thread hand-off per object, no async bridge and no
    /// intermediate buffer between the page cache and the chunker.
    File(local::LocalFile),
}

/// A readable object body.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// An object opened for reading, with what the source says about it.
pub struct Opened {
    pub reader: Payload,
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
    /// Like [`Source::list`], resuming each key range after its mark in `from`, and
    /// sending a [`Listed::Mark`] after each page. A source that cannot resume lists
    /// everything (and sends no marks).
    async fn list_resumable(&self, tx: mpsc::Sender<Listed>, _from: &ListFrom) -> Result<()> {
        self.list(tx).await
    }
    /// Opens an object for reading.
    async fn open(&self, meta: &ObjectMeta) -> Result<Opened>;
    /// After a full read: fails if the object changed since it was listed.
    async fn check_unchanged(&self, meta: &ObjectMeta) -> Result<()>;
    /// The endpoint's back-pressure controller, for status and live caps.
    fn throttle(&self) -> Option<Arc<throttle::Throttle>> {
        None
    }
    /// The keys in `(after, until]` (object keys, without the URL's prefix) as where a
    /// [`Source::list_resumable`] starts, when the store lists key ranges (a shard of a
    /// plan lists only its own). None: it lists everything, and the caller keeps the
    /// range's keys.
    /// `expect`: the keys the range is expected to hold (see [`RangeMark::expect`]).
    fn range_from(
        &self,
        _after: Option<&str>,
        _until: Option<&str>,
        _expect: Option<u64>,
    ) -> Option<ListFrom> {
        None
    }
    /// Up to `limit` objects whose keys start with `prefix`, after `after`, in key order
    /// (keys without the URL's prefix): one page of the gateway's listings. Stores that
    /// cannot list that way answer an error naming themselves.
    async fn list_page(
        &self,
        prefix: &str,
        _after: Option<&str>,
        _limit: usize,
    ) -> Result<ranges::Page> {
        Err(Error::Source {
            url: self.url(),
            message: format!("cannot list the keys under {prefix:?} one page at a time"),
        })
    }
    /// What the store says of one key now (None: no such object): for the gateway's
    /// reads of keys the catalog has not listed yet. Stores that cannot be asked for one
    /// key answer an error naming themselves.
    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        Err(Error::object(
            key,
            format!("{} cannot be asked for one object", self.url()),
        ))
    }
    /// Whether a listed object may be gone by the time it is fetched without that being
    /// a failure (a listing from an inventory, a snapshot of the past).
    fn vanishes(&self) -> bool {
        false
    }
    /// Whether an object a fetch found missing is gone indeed: asked again (a HEAD)
    /// before the object counts as deleted at the source, which in a sync pass deletes
    /// the destination's copy (a store, or something in front of it, may answer one
    /// request 404 for an object it holds). A source whose reads cannot fail that way
    /// (a local tree) trusts the fetch.
    async fn confirm_gone(&self, _meta: &ObjectMeta) -> Result<bool> {
        Ok(true)
    }
}

/// Where [`Destination::put`] left an object: what a later server-side copy of the same
/// content ([`Destination::copy`]) names as its source and checks the copy against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The store's own address of the object (S3 key, Swift `/container/name` escaped
    /// for a URL, a file path).
    pub location: String,
    /// What the store reports for the object and for a faithful copy of it: the hex MD5
    /// of the body for S3 and Swift single-part objects, the size for files; for an S3
    /// multipart object the completion's ETag, for a Swift SLO its manifest's.
    pub etag: String,
    /// A server-side copy may be made from it ([`Destination::copy`]): not an SLO or a
    /// multipart object.
    pub copyable: bool,
}

impl Placed {
    /// Checks the entity tag a store reported for a server-side copy of this object
    /// (quotes ignored): a copy counts only if it is this object's.
    pub fn check_copy(&self, key: &ObjectKey, what: &str, etag: Option<&str>) -> Result<()> {
        let etag = etag.map(|e| e.trim_matches('"'));
        if etag == Some(self.etag.as_str()) {
            return Ok(());
        }
        Err(Error::object(
            key,
            format!(
                "{what}: the copy's ETag is {}, its source's {}",
                etag.unwrap_or("missing"),
                self.etag
            ),
        ))
    }
}

/// What a delete expects to find at the destination: the object barge wrote there, and
/// nothing else (a third party may have written another object at the same key since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// What the store answered when barge wrote the object.
    Written(crate::catalog::Landed),
    /// Written before barge recorded that (catalog format 4 or older): the size of the
    /// version the catalog holds and, when the source's ETag was that content's MD5, the
    /// MD5 (compared only with a single-part object: an SLO's or a multipart object's
    /// ETag is not one).
    Legacy { size: u64, md5: Option<String> },
}

impl Expect {
    /// Why the object the store shows (`size` bytes, entity tag `etag`; `not_md5`: that
    /// tag is not an MD5 of the body, as an SLO's, a multipart object's or a file's) is
    /// not the one barge wrote; None when it is.
    pub fn mismatch(&self, size: u64, etag: Option<&str>, not_md5: bool) -> Option<String> {
        let etag = etag.map(|e| e.trim_matches('"'));
        let (want_size, want_tag) = match self {
            Expect::Written(l) => (l.size, Some(l.etag.as_str())),
            Expect::Legacy { size, md5 } => (*size, md5.as_deref().filter(|_| !not_md5)),
        };
        let shown = || format!("{size} bytes, ETag {}", etag.unwrap_or("missing"),);
        if size != want_size {
            return Some(format!(
                "it holds {} where barge wrote {want_size} bytes",
                shown()
            ));
        }
        match want_tag {
            Some(t) if etag != Some(t) => {
                Some(format!("it holds {} where barge wrote ETag {t}", shown()))
            }
            _ => None,
        }
    }
}

/// What [`Destination::delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted, or already absent.
    Deleted,
    /// The key holds an object barge did not write (why): left as it is.
    Kept(String),
}

/// Where objects go.
#[async_trait]
pub trait Destination: Send + Sync {
    fn url(&self) -> String;
    /// Writes one object atomically: it is visible only if the whole body arrived and the
    /// body stream ended without error. Returns where it landed when the store can copy
    /// it server-side later ([`Destination::copy`]).
    async fn put(&self, meta: &ObjectMeta, body: Body) -> Result<Option<Placed>>;
    /// Whether an object that [`Destination::put`] or [`Destination::copy`] returned Ok for
    /// is already durable (S3 and Swift answer only once they stored it). When it is not
    /// (a directory), the drain calls [`Destination::sync`] for a whole batch of written
    /// objects before it marks any of them drained.
    fn durable_on_put(&self) -> bool {
        true
    }
    /// Makes every object written so far durable.
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// Whether the store implements [`Destination::copy`] (drain only then looks for
    /// duplicates to copy).
    fn can_copy(&self) -> bool {
        false
    }
    /// Writes `meta` as a server-side copy of `from`, an object of the same content this
    /// store already holds, so the bytes are not sent again. The copy is checked against
    /// `from.etag`; an error leaves nothing that counts as written (the caller sends the
    /// body instead). Called only when [`Destination::can_copy`].
    async fn copy(&self, _from: &Placed, meta: &ObjectMeta) -> Result<()> {
        Err(Error::object(
            &meta.key,
            format!("{} cannot copy objects server-side", self.url()),
        ))
    }
    /// Deletes an object barge wrote earlier (a sync pass found it gone from the source),
    /// with its segments if it is a Swift SLO whose segments barge wrote, but only while
    /// the store still shows the object `expect` describes: anything else at the key is
    /// someone else's and is kept ([`Deleted::Kept`]). An object already absent is not an
    /// error, so a delete interrupted by a crash can be sent again. Durable when it
    /// returns Ok, except where [`Destination::durable_on_put`] says otherwise (then
    /// after [`Destination::sync`]).
    async fn delete(&self, key: &ObjectKey, expect: &Expect) -> Result<Deleted>;
    /// Lists what is at the destination (for verify).
    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()>;
    /// Reads an object back (for verify --full).
    async fn get(&self, key: &ObjectKey) -> Result<Reader>;
    /// The object at `key` as the pieces the store sends (the gateway's reads): a store
    /// whose client hands out buffers passes them on without a copy.
    async fn get_stream(&self, key: &ObjectKey) -> Result<Body> {
        use futures::StreamExt;
        let reader = self.get(key).await?;
        let k = key.clone();
        let pieces = tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20);
        Ok(Box::pin(
            pieces.map(move |r| r.map_err(|e| Error::object(&k, e))),
        ))
    }
    /// The endpoint's back-pressure controller, for status and live caps.
    fn throttle(&self) -> Option<Arc<throttle::Throttle>> {
        None
    }
    /// Back-pressure counters of the endpoint (requests, retries, throttles, window).
    fn stats(&self) -> Option<throttle::ThrottleStats> {
        self.throttle().map(|t| t.stats())
    }
    /// The destination's S3 client, when it is an S3 store: the gateway passes requests
    /// for the account's other buckets to it.
    fn s3_client(&self) -> Option<aws_sdk_s3::Client> {
        None
    }
    /// How objects are laid out at the destination (Swift container sharding), for the
    /// catalog and the exported lookup file. None for stores with one namespace.
    fn layout(&self) -> Option<DestLayout> {
        None
    }
    /// Removes leftovers of uploads a crash interrupted (temporary files, incomplete
    /// multipart uploads). Called before a drain starts; returns how many were removed.
    async fn cleanup(&self) -> Result<u64>;
    /// Where the store records the uploads it starts and has not finished (see
    /// [`UploadJournal`]); stores that leave nothing behind ignore it.
    fn set_journal(&self, _journal: Arc<dyn UploadJournal>) {}
}

/// The multipart uploads a destination has started and not yet completed or aborted,
/// kept durably (by the drain, in the catalog) so that a run after a crash aborts them:
/// nothing barge started is left at the destination. Only uploads recorded here are
/// ever aborted, never another writer's.
pub trait UploadJournal: Send + Sync {
    /// An upload was started (recorded before any part is sent).
    fn started(&self, dest: &str, key: &str, upload_id: &str) -> Result<()>;
    /// An upload was completed or aborted.
    fn ended(&self, dest: &str, key: &str, upload_id: &str) -> Result<()>;
    /// The uploads to `dest` started and not ended: (key, upload id).
    fn open(&self, dest: &str) -> Result<Vec<(String, String)>>;
}

/// How a drain laid objects out at its destination: written by drain into the catalog
/// (`META_DEST_LAYOUT`) and as `<state>/container-map.json`, read back by
/// [`DestLayout::recorded`] so that verify finds every object without `--containers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DestLayout {
    /// The destination URL the drain wrote to.
    pub url: String,
    /// Which container each key went to.
    pub map: swift::ContainerMap,
    /// Containers that received objects.
    pub containers_used: Vec<String>,
}

impl DestLayout {
    /// The layout recorded by the last drain to `url`, if any.
    pub fn recorded(catalog: &crate::catalog::Catalog, url: &str) -> Result<Option<Self>> {
        let layout: Option<Self> = catalog.meta_json(
            crate::catalog::META_DEST_LAYOUT,
            "recorded destination layout",
        )?;
        Ok(layout.filter(|l| l.url == url))
    }

    /// The `--containers` option that reproduces this layout (None: a single container).
    pub fn containers_option(&self) -> Option<String> {
        match &self.map {
            swift::ContainerMap::Single { .. } => None,
            swift::ContainerMap::Hash { n, .. } => Some(format!("hash:{n}")),
            swift::ContainerMap::Prefix { k, .. } => Some(format!("prefix:{k}")),
        }
    }
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
    /// S3: the most parts of one multipart upload.
    pub max_parts: Option<u64>,
    /// Swift: the largest SLO segment (default: the cluster's `max_file_size`).
    pub max_segment: Option<u64>,
    /// S3 multipart threshold, Swift SLO threshold.
    pub large_threshold: Option<u64>,
    /// Swift SLO segment size.
    pub segment_size: Option<u64>,
    /// Swift container sharding (`hash:N`, `prefix:K`).
    pub containers: Option<String>,
    /// Parallel listings.
    pub list_parallel: usize,
    /// A directory source follows symbolic links (else they are skipped and counted).
    pub follow_symlinks: bool,
    /// Prefix of per-side credential variables (`BARGE_SOURCE_`, `BARGE_DEST_`).
    pub env_prefix: String,
    /// `--allow-insecure-http`: plain http to another host is allowed (see
    /// [`check_transport`]).
    pub allow_insecure_http: bool,
}

/// Refuses a plain `http://` URL to anything but a loopback address unless `allowed`
/// (`--allow-insecure-http`): credentials, signatures and object bytes would cross the
/// network readable by anyone on the path. `what` names the option or reply it came from.
pub fn check_transport(what: &str, url: &str, allowed: bool) -> Result<()> {
    let Ok(u) = url::Url::parse(url) else {
        return Err(Error::option(what, format!("{url:?} is not a URL")));
    };
    if u.scheme() != "http" || allowed || is_loopback(&u) {
        return Ok(());
    }
    Err(Error::option(
        what,
        format!(
            "{url} is plain http to a host that is not this machine: credentials and data would cross the network unencrypted; use https, or pass --allow-insecure-http for a network you trust"
        ),
    ))
}

/// Whether a URL's host is this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
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
            max_parts: self.max_parts,
            list_parallel: self.list_parallel,
            allow_insecure_http: self.allow_insecure_http,
        }
    }

    fn swift(&self) -> swift::SwiftOptions {
        swift::SwiftOptions {
            env_prefix: self.env_prefix.clone(),
            containers: self.containers.clone(),
            slo_threshold: self.large_threshold,
            segment_size: self.segment_size,
            throttle: self.throttle.clone(),
            list_parallel: self.list_parallel,
            max_segment: self.max_segment,
            allow_insecure_http: self.allow_insecure_http,
        }
    }
}

/// Opens a source: a path, `file://`, `s3://bucket[/prefix]` or `swift://container[/prefix]`.
pub async fn open_source(url: &str, o: &EndpointOptions) -> Result<Arc<dyn Source>> {
    match scheme(url) {
        Some("file") | None => Ok(Arc::new(local::LocalSource::new(
            local_path(url),
            o.follow_symlinks,
        )?)),
        Some("s3") => Ok(Arc::new(s3::S3Store::new(url, &o.s3()).await?)),
        Some("swift") => Ok(Arc::new(swift::SwiftStore::new(url, &o.swift())?)),
        Some("gen") => Ok(Arc::new(synthetic::GenSource::new(url)?)),
        Some(other) => Err(Error::option(
            "--source",
            format!(
                "{url}: unsupported scheme {other}:// (supported: a path, file://, s3://, swift://, gen://)"
            ),
        )),
    }
}

/// Opens a destination: a path, `file://`, `s3://bucket[/prefix]` or `swift://container[/prefix]`.
pub async fn open_destination(url: &str, o: &EndpointOptions) -> Result<Arc<dyn Destination>> {
    if let (Some(c), false) = (&o.containers, scheme(url) == Some("swift")) {
        return Err(Error::option(
            "--containers",
            format!(
                "{c:?} shards a swift:// destination over containers; {url} is not one (drop the option)"
            ),
        ));
    }
    match scheme(url) {
        Some("file") | None => Ok(Arc::new(local::LocalDest::new(local_path(url))?)),
        Some("s3") => Ok(Arc::new(s3::S3Store::new(url, &o.s3()).await?)),
        Some("swift") => Ok(Arc::new(swift::SwiftStore::new(url, &o.swift())?)),
        Some("null") => Ok(Arc::new(synthetic::NullDest)),
        Some(other) => Err(Error::option(
            "--dest",
            format!(
                "{url}: unsupported scheme {other}:// (supported: a path, file://, s3://, swift://, null://)"
            ),
        )),
    }
}

/// Writes a small document barge keeps at a destination (a plan, a shard report, a
/// cutover certificate, all under `.barge/`) as one object, durably: JSON, one piece.
pub async fn put_document(
    dest: &dyn Destination,
    key: &str,
    json: Vec<u8>,
    unix: u64,
) -> Result<()> {
    let meta = ObjectMeta {
        key: ObjectKey::from(key),
        size: json.len() as u64,
        version: String::new(),
        content_type: Some("application/json".into()),
        user_meta: vec![],
        modified: Some(unix),
    };
    let body: Body = Box::pin(futures::stream::once(async move { Ok(Bytes::from(json)) }));
    dest.put(&meta, body).await?;
    dest.sync().await
}

/// The part (or segment) size that cuts an object of `size` bytes into at most
/// `max_parts` pieces: `preferred` when that is enough, else the smallest whole MiB
/// that is. None when even pieces of `max_piece` bytes are too many.
pub fn piece_size(size: u64, preferred: u64, max_parts: u64, max_piece: u64) -> Option<u64> {
    const MIB: u64 = 1 << 20;
    let needed = size.div_ceil(max_parts.max(1));
    let piece = match needed <= preferred {
        true => preferred,
        false => needed.div_ceil(MIB).saturating_mul(MIB),
    };
    (piece <= max_piece).then_some(piece)
}

/// Characters left unescaped in a URL path: RFC 3986 unreserved, and `/` (object names).
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
/// The same, for one path segment (a Swift container): `/` escaped too.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes an object name for a URL path (Swift paths, S3 copy sources).
pub fn escape_object(name: &str) -> String {
    utf8_percent_encode(name, PATH).to_string()
}

/// Escapes a Swift container name (one path segment).
pub fn escape_container(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

pub(crate) fn scheme(url: &str) -> Option<&str> {
    let (s, _) = url.split_once("://")?;
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '+')
        .then_some(s)
}

fn local_path(url: &str) -> std::path::PathBuf {
    url.strip_prefix("file://").unwrap_or(url).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_reaches_only_this_machine_unless_allowed() {
        for ok in [
            "https://s3.example.com",
            "http://127.0.0.1:8080/auth/v1.0",
            "http://127.8.0.1",
            "http://localhost:7480",
            "http://[::1]:5000/v3",
        ] {
            check_transport("--dest-endpoint", ok, false).unwrap();
        }
        for bad in [
            "http://10.0.0.5:7480",
            "http://rgw.dc1.example",
            "http://[fd00::1]",
        ] {
            let e = check_transport("--dest-endpoint", bad, false).unwrap_err();
            let e = e.to_string();
            assert!(
                e.contains("--dest-endpoint") && e.contains("--allow-insecure-http"),
                "{e}"
            );
            check_transport("--dest-endpoint", bad, true).unwrap();
        }
        assert!(check_transport("S3 endpoint", "not a url", true).is_err());
    }

    #[test]
    fn pieces_grow_to_fit_the_part_limit() {
        const MIB: u64 = 1 << 20;
        // Small enough: the preferred size.
        assert_eq!(piece_size(40 * MIB, MIB, 100, 5 << 30), Some(MIB));
        // 40 MiB in at most 16 pieces: 3 MiB (14 pieces).
        assert_eq!(piece_size(40 * MIB, MIB, 16, 5 << 30), Some(3 * MIB));
        // 5 TB in S3's 10,000 parts of at most 5 GiB: 477 MiB parts.
        let tb5 = 5_000_000_000_000u64;
        let p = piece_size(tb5, 16 * MIB, 10_000, 5 << 30).unwrap();
        assert!(tb5.div_ceil(p) <= 10_000 && p.is_multiple_of(MIB), "{p}");
        // 5 TB in Swift's default 1,000 segments of at most 5 GiB: 4,769 MiB segments.
        assert!(piece_size(tb5, 64 * MIB, 1_000, 5 << 30).is_some());
        // Beyond pieces * largest piece: refused.
        assert_eq!(piece_size(tb5, MIB, 10, 5 << 30), None);
    }

    #[tokio::test]
    async fn a_body_longer_than_listed_fails_naming_its_source() {
        use tokio::io::AsyncReadExt;
        let mut v = vec![];
        let mut exact = Bounded::new(&b"hello"[..], 5, "s3://b");
        exact.read_to_end(&mut v).await.unwrap();
        assert_eq!(v, b"hello");
        // Shorter is the caller's check (it knows what the size means).
        let mut short = Bounded::new(&b"hell"[..], 5, "s3://b");
        short.read_to_end(&mut vec![]).await.unwrap();
        let e = Bounded::new(&b"hello!"[..], 5, "s3://b")
            .read_to_end(&mut vec![])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s3://b: the server sent more than the 5 bytes listed"),
            "{e}"
        );
        // An endless body stops within one read of its limit.
        let mut endless = Bounded::new(tokio::io::repeat(b'x'), 1 << 20, "s3://b");
        let mut got = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        let e = loop {
            match endless.read(&mut buf).await {
                Ok(n) => got += n as u64,
                Err(e) => break e,
            }
        };
        assert!(got <= 1 << 20, "{got}");
        assert!(e.to_string().contains("more than the 1048576 bytes"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_fails_at_its_deadline() {
        use tokio::io::AsyncReadExt;
        assert_eq!(get_deadline(0), GET_DEADLINE_FLOOR);
        assert_eq!(get_deadline(64 << 20).as_secs(), 120 + 1024);
        // A server that sends nothing more (time is paused: it advances when idle).
        let (quiet, _peer) = tokio::io::duplex(64);
        let e = Bounded::new(quiet, 1000, "swift://c")
            .read_to_end(&mut vec![])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            e.to_string()
                .contains("swift://c: the body of 1000 bytes did not arrive within 120 s"),
            "{e}"
        );
    }

    #[test]
    fn a_delete_expects_what_barge_wrote_and_older_records_their_size_and_md5() {
        let md5 = "0123456789abcdef0123456789abcdef";
        let written = Expect::Written(crate::catalog::Landed {
            size: 10,
            etag: "e-2".into(),
        });
        assert_eq!(written.mismatch(10, Some("\"e-2\""), true), None);
        assert!(written.mismatch(10, Some("e-3"), true).is_some());
        assert!(written.mismatch(11, Some("e-2"), true).is_some());
        assert!(written.mismatch(10, None, false).is_some());
        let legacy = Expect::Legacy {
            size: 10,
            md5: Some(md5.into()),
        };
        assert_eq!(legacy.mismatch(10, Some(md5), false), None);
        assert!(legacy.mismatch(10, Some("ffff"), false).is_some());
        // An SLO's or multipart object's tag is no MD5 of the body: only the size counts.
        assert_eq!(legacy.mismatch(10, Some("x-2"), true), None);
        assert!(legacy.mismatch(9, Some("x-2"), true).is_some());
        let sized = Expect::Legacy {
            size: 10,
            md5: None,
        };
        assert_eq!(sized.mismatch(10, Some("anything"), false), None);
    }

    #[test]
    fn names_are_escaped_for_paths() {
        assert_eq!(escape_object("a b/c%d?e#f+g"), "a%20b/c%25d%3Fe%23f%2Bg");
        assert_eq!(escape_object("ünï"), "%C3%BCn%C3%AF");
        assert_eq!(escape_container("c/x"), "c%2Fx");
    }
}

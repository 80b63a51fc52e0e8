//! S3 (AWS, radosgw, Swift's s3api, any S3 API) as source and destination, through
//! `aws-sdk-s3`.
//!
//! * URL `s3://bucket[/prefix]`. The endpoint comes from `--source-endpoint` /
//!   `--dest-endpoint`, else `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` / the profile; a
//!   custom endpoint implies path-style addressing. Credentials and region come from the
//!   standard AWS variables and profiles (a profile per side with `--*-profile`).
//! * Request/response checksum calculation is "when required": radosgw and Swift's
//!   s3api reject the SDK's default aws-chunked trailing-checksum uploads. Integrity is
//!   ours: ETag MD5 checks on fetch, Content-MD5 on every upload and part.
//! * The SDK's own retries are off: [`Throttle`] retries with back-pressure instead.
//! * Listing streams page by page, a checkpoint mark after each page so an ingest can
//!   resume it (`StartAfter`); with `list_parallel > 1` a listing longer than
//!   10,000 keys is split into key ranges listed concurrently (`ranges`). Objects above `part_size` are fetched as parallel ranged
//!   GETs.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::check::{SumCheck, SumKind};
use super::ranges::{Entry, KeyPages, Page, RangeListing};
use super::throttle::{Failure, Throttle, ThrottleConfig, parse_retry_after};
use super::{
    Body, ContentCheck, Deleted, Destination, Expect, ListFrom, Listed, Opened, Placed, Reader,
    Rope, Source, UploadJournal, escape_object,
};
use crate::error::{Error, Result};
use crate::object::{ObjectKey, ObjectMeta};

/// The most parts of one multipart upload (S3's limit; `--max-parts` for stores that
/// allow fewer, such as a Ceph with a lower `rgw_multipart_part_upload_limit`).
pub const MAX_PARTS: u64 = 10_000;
/// The largest part S3 takes.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Default size of ranged GETs and multipart parts (S3's minimum part is 5 MiB).
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// Keys per listing page (the most ListObjectsV2 returns).
pub const PAGE_SIZE: usize = 1000;
/// Default size above which uploads go multipart.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;
/// Ranged GETs in flight per large object.
pub const RANGE_CONCURRENCY: usize = 4;
/// Region when none is configured (on-prem S3 endpoints mostly ignore it; SigV4 needs one).
pub const DEFAULT_REGION: &str = "us-east-1";

/// How to reach one S3 endpoint.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub profile: Option<String>,
    pub region: Option<String>,
    pub throttle: ThrottleConfig,
    /// Ranged GET and multipart part size.
    pub part_size: Option<u64>,
    pub multipart_threshold: Option<u64>,
    /// The most parts of one multipart upload (default [`MAX_PARTS`]).
    pub max_parts: Option<u64>,
    /// Key ranges listed at once.
    pub list_parallel: usize,
    /// Plain http to another host is allowed ([`super::check_transport`]).
    pub allow_insecure_http: bool,
}

/// Splits `s3://bucket/prefix` into bucket and prefix (no leading slash).
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Error::option("url", format!("{url}: not an s3:// URL")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::option("url", format!("{url}: no bucket name")));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

async fn client(opts: &S3Options) -> Result<Client> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    // The region: --region, the AWS variables, the profile, else us-east-1. Not the EC2
    // metadata service of the SDK's default chain: an appliance in a datacenter has
    // none, and asking for it costs timeouts and warnings at every start.
    let mut profile_region = aws_config::profile::ProfileFileRegionProvider::builder();
    if let Some(p) = &opts.profile {
        profile_region = profile_region.profile_name(p);
    }
    loader = loader.region(
        RegionProviderChain::first_try(opts.region.clone().map(Region::new))
            .or_else(aws_config::environment::region::EnvironmentVariableRegionProvider::new())
            .or_else(profile_region.build())
            .or_else(Region::new(DEFAULT_REGION)),
    );
    let sdk = loader.load().await;
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(|| sdk.endpoint_url().map(str::to_string));
    let mut b = aws_sdk_s3::config::Builder::from(&sdk)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(super::CONNECT_TIMEOUT)
                .read_timeout(opts.throttle.stall_timeout)
                .build(),
        );
    if let Some(e) = endpoint {
        super::check_transport("S3 endpoint", &e, opts.allow_insecure_http)?;
        b = b.endpoint_url(e).force_path_style(true);
    }
    Ok(Client::from_conf(b.build()))
}

/// Maps an SDK error to retry policy.
fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    what: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Failure {
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_string();
            let msg = format!(
                "{what}: HTTP {status} {code} {}",
                se.err().message().unwrap_or("")
            );
            let ra = parse_retry_after(se.raw().headers().get("retry-after"));
            if code == "SlowDown" || code == "Throttling" || status == 429 || status == 503 {
                Failure::Throttled {
                    retry_after: ra,
                    message: msg,
                }
            } else if status >= 500 || code == "RequestTimeout" {
                Failure::Transient(msg)
            } else if status == 404 && code != "NoSuchBucket" {
                Failure::Permanent(Error::Gone { what: msg })
            } else if status == 507 || code == "QuotaExceeded" {
                Failure::Permanent(Error::refused(format!(
                    "{msg} (destination refuses writes: quota or full)"
                )))
            } else {
                Failure::Permanent(Error::refused(msg))
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Transient(format!(
                "{what}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            ))
        }
        _ => Failure::Permanent(Error::refused(format!(
            "{what}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        ))),
    }
}

/// The strongest full-object checksum the object carries, if any.
fn stored_sum(
    sha256: Option<&str>,
    crc32c: Option<&str>,
    crc32: Option<&str>,
    sha1: Option<&str>,
) -> Option<SumCheck> {
    SumCheck::from_header(SumKind::Sha256, sha256)
        .or_else(|| SumCheck::from_header(SumKind::Crc32c, crc32c))
        .or_else(|| SumCheck::from_header(SumKind::Crc32, crc32))
        .or_else(|| SumCheck::from_header(SumKind::Sha1, sha1))
}

/// How a ranged fetch is checked against the ETag. `head_len` is the HEAD's length,
/// the size of part 1 when `part_known`.
fn ranged_check(
    etag: &str,
    head_len: Option<i64>,
    size: u64,
    multipart: bool,
    part_known: bool,
) -> ContentCheck {
    // Some servers (radosgw 16) ignore ?partNumber and return the whole length: a
    // part size is trusted only if it gives the ETag's part count.
    let part1 = (multipart && part_known).then(|| head_len.unwrap_or(0).max(0) as u64);
    let parts = etag
        .trim_matches('"')
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u64>().ok());
    match (part1, parts) {
        (Some(p), Some(n)) if p > 0 && size.div_ceil(p) == n => {
            ContentCheck::from_etag(etag, Some(p))
        }
        _ if multipart => ContentCheck::guess_multipart(etag, size),
        _ => ContentCheck::from_etag(etag, None),
    }
}

/// The most bytes reserved up front for a GET's body; a larger body grows as it arrives.
const GET_PREALLOC_MAX: u64 = 16 << 20;

/// Reads a GET's body: at most `expected` bytes (a longer body, or a Content-Length
/// `len` above it, fails at once without being read further: a server sending an
/// endless body must not take the memory). A body shorter than its Content-Length is a
/// broken transfer, retried; one shorter than `expected` is returned for the caller's
/// size check (the object changed since it was listed).
async fn read_capped(
    mut body: ByteStream,
    expected: u64,
    len: Option<u64>,
    what: &str,
) -> std::result::Result<Bytes, Failure> {
    if len.is_some_and(|l| l > expected) {
        return Err(Failure::Permanent(Error::refused(super::too_long(
            what, expected,
        ))));
    }
    let mut buf = bytes::BytesMut::with_capacity(expected.min(GET_PREALLOC_MAX) as usize);
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| Failure::Transient(format!("{what}: body: {e}")))?;
        if (buf.len() + piece.len()) as u64 > expected {
            return Err(Failure::Permanent(Error::refused(super::too_long(
                what, expected,
            ))));
        }
        buf.extend_from_slice(&piece);
    }
    if let Some(l) = len
        && buf.len() as u64 != l
    {
        return Err(Failure::Transient(format!(
            "{what}: truncated body ({} of {l} bytes)",
            buf.len()
        )));
    }
    Ok(buf.freeze())
}

/// An SDK body over the rope's pieces (no copy); retryable because the rope is cheap to
/// clone.
fn rope_stream(r: &Rope) -> ByteStream {
    let r = r.clone();
    ByteStream::new(aws_smithy_types::body::SdkBody::retryable(move || {
        aws_smithy_types::body::SdkBody::from_body_1_x(r.http_body())
    }))
}

fn key_str(key: &ObjectKey) -> Result<&str> {
    std::str::from_utf8(key.as_bytes()).map_err(|_| Error::object(key, "S3 keys must be UTF-8"))
}

/// An object's user metadata as the SDK sends it (None when there is none).
/// Adds what S3 returned of [`crate::object::CARRIED_HEADERS`] (in that order) and the
/// last-modified time to `user_meta`.
fn carry(
    user_meta: &mut Vec<(String, String)>,
    headers: [Option<&str>; 5],
    modified: Option<&aws_sdk_s3::primitives::DateTime>,
) {
    for (name, v) in crate::object::CARRIED_HEADERS.iter().zip(headers) {
        crate::object::carry_header(user_meta, name, v);
    }
    let secs = modified.and_then(|d| u64::try_from(d.secs()).ok());
    crate::object::carry_mtime(user_meta, secs);
}

/// S3's limit on user metadata: names and values together, in bytes.
const MAX_USER_META: usize = 2048;

/// The user metadata to send (None if there is none), refused when S3 would refuse it.
fn s3_user_meta(meta: &ObjectMeta) -> Result<Option<HashMap<String, String>>> {
    let (_, user) = crate::object::carried(&meta.user_meta);
    let total: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_USER_META {
        return Err(Error::object(
            &meta.key,
            format!("its user metadata takes {total} bytes; S3 allows {MAX_USER_META}"),
        ));
    }
    Ok((!user.is_empty()).then(|| {
        user.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }))
}

/// The standard headers an object carries, as S3's requests take them (split out of the
/// object's metadata once per request).
#[derive(Default)]
struct S3Headers {
    encoding: Option<String>,
    disposition: Option<String>,
    language: Option<String>,
    cache_control: Option<String>,
    /// None also when the value is not an HTTP date.
    expires: Option<aws_sdk_s3::primitives::DateTime>,
}

impl S3Headers {
    fn of(meta: &ObjectMeta) -> Self {
        let mut h = S3Headers::default();
        for (name, v) in crate::object::carried(&meta.user_meta).0 {
            let v = Some(v.to_string());
            match name {
                "content-encoding" => h.encoding = v,
                "content-disposition" => h.disposition = v,
                "content-language" => h.language = v,
                "cache-control" => h.cache_control = v,
                "expires" => {
                    h.expires = v.and_then(|v| {
                        aws_sdk_s3::primitives::DateTime::from_str(
                            &v,
                            aws_smithy_types::date_time::Format::HttpDate,
                        )
                        .ok()
                    })
                }
                _ => {}
            }
        }
        h
    }
}

/// The user metadata S3 returned, sorted by name (the catalog's form).
fn user_meta(m: Option<&HashMap<String, String>>) -> Vec<(String, String)> {
    let mut v: Vec<_> = m
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A bucket (and prefix) on one endpoint.
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    url: String,
    throttle: Arc<Throttle>,
    part_size: u64,
    /// The most parts of one multipart upload.
    max_parts: u64,
    /// Where started multipart uploads are recorded until they end.
    journal: std::sync::OnceLock<Arc<dyn UploadJournal>>,
    multipart_threshold: u64,
    list_parallel: usize,
    bucket_ready: tokio::sync::OnceCell<()>,
}

impl S3Store {
    pub async fn new(url: &str, opts: &S3Options) -> Result<Self> {
        let (bucket, prefix) = parse_url(url)?;
        let part_size = opts.part_size.unwrap_or(DEFAULT_PART_SIZE).max(5 << 20);
        Ok(S3Store {
            client: client(opts).await?,
            throttle: Arc::new(Throttle::new(url.to_string(), opts.throttle.clone())),
            url: url.to_string(),
            bucket,
            prefix,
            part_size,
            max_parts: opts.max_parts.unwrap_or(MAX_PARTS).max(1),
            journal: std::sync::OnceLock::new(),
            multipart_threshold: opts
                .multipart_threshold
                .unwrap_or(DEFAULT_MULTIPART_THRESHOLD)
                .max(part_size),
            list_parallel: opts.list_parallel.max(1),
            bucket_ready: tokio::sync::OnceCell::new(),
        })
    }

    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
    }

    fn full_key(&self, key: &ObjectKey) -> Result<String> {
        Ok(format!("{}{}", self.prefix_slash(), key_str(key)?))
    }

    fn prefix_slash(&self) -> String {
        if self.prefix.is_empty() || self.prefix.ends_with('/') {
            self.prefix.clone()
        } else {
            format!("{}/", self.prefix)
        }
    }

    /// A listing of this store over key ranges, `list_parallel` at once.
    fn range_listing(&self) -> RangeListing<'_> {
        RangeListing {
            pages: self,
            prefix: self.prefix_slash(),
            scope: String::new(),
            parallel: self.list_parallel,
            page: PAGE_SIZE,
        }
    }

    /// One GET of `key` (a byte range of it), its body read into memory: at most
    /// `expected` bytes (the listed size, or the range's), within [`super::get_deadline`]
    /// of them per attempt.
    async fn get_range(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        expected: u64,
    ) -> Result<(Bytes, aws_sdk_s3::operation::get_object::GetObjectOutput)> {
        let what = format!("GET s3://{}/{key}", self.bucket);
        let deadline = super::get_deadline(expected);
        self.throttle
            .call_sized(&what, range.map_or(0, |(a, b)| b - a + 1), || {
                let req = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                    .set_range(range.map(|(a, b)| format!("bytes={a}-{b}")));
                let what = what.clone();
                let what2 = what.clone();
                let attempt = async move {
                    let mut out = req.send().await.map_err(|e| classify(&what2, e))?;
                    let body =
                        std::mem::replace(&mut out.body, ByteStream::new(Bytes::new().into()));
                    let len = out.content_length().and_then(|l| u64::try_from(l).ok());
                    let bytes = read_capped(body, expected, len, &what2).await?;
                    Ok((bytes, out))
                };
                async move {
                    tokio::time::timeout(deadline, attempt)
                        .await
                        .unwrap_or_else(|_| {
                            Err(Failure::Transient(super::too_slow(
                                &what,
                                expected,
                                deadline.as_secs(),
                            )))
                        })
                }
            })
            .await
    }

    /// Opens an object that one GET fetches whole (not above the part size, not
    /// multipart).
    async fn open_whole(&self, key: &str, meta: &ObjectMeta) -> Result<Opened> {
        let (bytes, out) = self
            .get_range(key, None, meta.size)
            .await
            .map_err(|e| Error::of_object(&meta.key, e))?;
        let check = ContentCheck::from_etag(out.e_tag().unwrap_or(&meta.version), None);
        let sum = stored_sum(
            out.checksum_sha256(),
            out.checksum_crc32_c(),
            out.checksum_crc32(),
            out.checksum_sha1(),
        );
        let mut user_meta = user_meta(out.metadata());
        carry(
            &mut user_meta,
            [
                out.content_encoding(),
                out.content_disposition(),
                out.content_language(),
                out.cache_control(),
                out.expires_string(),
            ],
            out.last_modified(),
        );
        Ok(Opened {
            sum,
            content_type: out.content_type().map(str::to_string),
            user_meta,
            check,
            reader: super::Payload::Stream(Box::new(std::io::Cursor::new(bytes))),
        })
    }

    /// HEAD of an object fetched in ranges; with `multipart`, of part 1 first. Returns
    /// the output and whether it describes part 1.
    async fn head_for_ranges(
        &self,
        key: &str,
        meta: &ObjectMeta,
        multipart: bool,
    ) -> Result<(aws_sdk_s3::operation::head_object::HeadObjectOutput, bool)> {
        // HEAD for metadata and, for a multipart ETag, the size of part 1 (servers that
        // refuse ?partNumber get a second, plain HEAD and a guessed part size).
        let what = format!("HEAD s3://{}/{key}", self.bucket);
        let head_req = |part: Option<i32>| {
            let what = what.clone();
            let key = key.to_string();
            async move {
                self.throttle
                    .call(&what, || {
                        let req = self
                            .client
                            .head_object()
                            .bucket(&self.bucket)
                            .key(&key)
                            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                            .set_part_number(part);
                        let what = what.clone();
                        async move { req.send().await.map_err(|e| classify(&what, e)) }
                    })
                    .await
            }
        };
        Ok(match head_req(multipart.then_some(1)).await {
            Ok(h) => (h, multipart),
            Err(_) if multipart => (
                head_req(None)
                    .await
                    .map_err(|e| Error::of_object(&meta.key, e))?,
                false,
            ),
            Err(e) => return Err(Error::of_object(&meta.key, e)),
        })
    }

    /// The body of `key` as ranged GETs of `part_size`, [`RANGE_CONCURRENCY`] in flight,
    /// delivered in order.
    fn ranged_reader(&self, key: &str, size: u64) -> super::Payload {
        let ps = self.part_size;
        let ranges: Vec<(u64, u64)> = (0..size.div_ceil(ps))
            .map(|i| (i * ps, ((i + 1) * ps).min(size) - 1))
            .collect();
        let me = Arc::new(S3Store {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            url: self.url.clone(),
            throttle: self.throttle.clone(),
            part_size: self.part_size,
            max_parts: self.max_parts,
            journal: std::sync::OnceLock::new(),
            multipart_threshold: self.multipart_threshold,
            list_parallel: self.list_parallel,
            bucket_ready: tokio::sync::OnceCell::new(),
        });
        let key2 = key.to_string();
        let stream = futures::stream::iter(ranges)
            .map(move |r| {
                let me = me.clone();
                let key = key2.clone();
                async move {
                    me.get_range(&key, Some(r), r.1 - r.0 + 1)
                        .await
                        .map(|(b, _)| b)
                        .map_err(|e| std::io::Error::other(e.to_string()))
                }
            })
            .buffered(RANGE_CONCURRENCY);
        super::Payload::Stream(Box::new(tokio_util::io::StreamReader::new(Box::pin(
            stream,
        ))))
    }

    async fn ensure_bucket(&self) -> Result<()> {
        let what = format!("CREATE BUCKET s3://{}", self.bucket);
        let r = self
            .throttle
            .call(&what, || {
                let req = self.client.head_bucket().bucket(&self.bucket);
                let what = what.clone();
                async move {
                    match req.send().await {
                        Ok(_) => Ok(true),
                        Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 404 => {
                            Ok(false)
                        }
                        Err(e) => Err(classify(&what, e)),
                    }
                }
            })
            .await?;
        if !r {
            self.throttle
                .call(&what, || {
                    let req = self.client.create_bucket().bucket(&self.bucket);
                    let what = what.clone();
                    async move {
                        match req.send().await {
                            Ok(_) => Ok(()),
                            Err(SdkError::ServiceError(se))
                                if matches!(
                                    se.err().code(),
                                    Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists")
                                ) =>
                            {
                                Ok(())
                            }
                            Err(e) => Err(classify(&what, e)),
                        }
                    }
                })
                .await?;
        }
        Ok(())
    }

    /// One PUT with Content-MD5; returns the ETag the store answered (without quotes),
    /// or the body's hex MD5 when it answered none.
    async fn put_single(&self, key: &str, meta: &ObjectMeta, body: Rope) -> Result<String> {
        let digest = body.md5();
        let md5 = base64::engine::general_purpose::STANDARD.encode(digest);
        let what = format!("PUT s3://{}/{key}", self.bucket);
        let metadata = s3_user_meta(meta)?;
        let hs = S3Headers::of(meta);
        let out = self
            .throttle
            .call_sized(&what, body.len() as u64, || {
                let req = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .content_md5(&md5)
                    .content_length(body.len() as i64)
                    .set_content_type(meta.content_type.clone())
                    .set_content_encoding(hs.encoding.clone())
                    .set_content_disposition(hs.disposition.clone())
                    .set_content_language(hs.language.clone())
                    .set_cache_control(hs.cache_control.clone())
                    .set_expires(hs.expires)
                    .set_metadata(metadata.clone())
                    .body(rope_stream(&body));
                let what = what.clone();
                async move { req.send().await.map_err(|e| classify(&what, e)) }
            })
            .await?;
        Ok(answered(out.e_tag()).unwrap_or_else(|| hex::encode(digest)))
    }

    /// A multipart upload; returns the ETag the completion answered.
    async fn put_multipart(&self, key: &str, meta: &ObjectMeta, body: Body) -> Result<String> {
        let what = format!("MULTIPART s3://{}/{key}", self.bucket);
        let metadata = s3_user_meta(meta)?;
        let hs = S3Headers::of(meta);
        let upload_id = self
            .throttle
            .call(&what, || {
                let req = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .set_content_type(meta.content_type.clone())
                    .set_content_encoding(hs.encoding.clone())
                    .set_content_disposition(hs.disposition.clone())
                    .set_content_language(hs.language.clone())
                    .set_cache_control(hs.cache_control.clone())
                    .set_expires(hs.expires)
                    .set_metadata(metadata.clone());
                let what = what.clone();
                async move { req.send().await.map_err(|e| classify(&what, e)) }
            })
            .await?
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| Error::object(&meta.key, "multipart upload without an upload id"))?;
        // The part size grows so that the object fits in max_parts parts.
        let part_size = super::piece_size(meta.size, self.part_size, self.max_parts, MAX_PART_SIZE)
            .ok_or_else(|| {
                Error::object(
                    &meta.key,
                    format!(
                        "{} bytes do not fit in {} parts of at most {MAX_PART_SIZE} bytes",
                        meta.size, self.max_parts
                    ),
                )
            })? as usize;
        if let Some(j) = self.journal.get() {
            j.started(&self.url, key, &upload_id)?;
        }
        let res = self
            .send_parts(key, &upload_id, part_size, &what, body)
            .await;
        let done = match res {
            Ok(parts) => self.complete(key, &upload_id, parts, &what).await,
            Err(e) => Err(e),
        };
        // A failed upload is aborted now; if even that fails, it stays in the journal
        // and the next drain's cleanup aborts it.
        let ended = done.is_ok() || self.abort(key, &upload_id).await;
        if let Some(j) = self.journal.get()
            && ended
        {
            j.ended(&self.url, key, &upload_id)?;
        }
        done
    }

    /// Aborts a multipart upload; true once it is gone (aborted now, or already gone).
    async fn abort(&self, key: &str, upload_id: &str) -> bool {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => true,
            Err(SdkError::ServiceError(se)) => se.raw().status().as_u16() == 404,
            Err(_) => false,
        }
    }

    /// Sends the body as parts of `part_size`, each with its Content-MD5.
    async fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        part_size: usize,
        what: &str,
        mut body: Body,
    ) -> Result<Vec<CompletedPart>> {
        let res: Result<Vec<CompletedPart>> = async {
            let mut parts = vec![];
            let mut buf = Rope::default();
            let mut n = 1i32;
            let mut eof = false;
            while !eof {
                eof = !super::fill(&mut body, &mut buf, part_size).await?;
                if buf.is_empty() && n > 1 {
                    break;
                }
                let take = buf.len().min(part_size);
                let part = buf.split_to(take);
                let md5 = base64::engine::general_purpose::STANDARD.encode(part.md5());
                let pwhat = format!("{what} part {n}");
                let etag = self
                    .throttle
                    .call_sized(&pwhat, part.len() as u64, || {
                        let req = self
                            .client
                            .upload_part()
                            .bucket(&self.bucket)
                            .key(key)
                            .upload_id(upload_id)
                            .part_number(n)
                            .content_md5(&md5)
                            .content_length(part.len() as i64)
                            .body(rope_stream(&part));
                        let pwhat = pwhat.clone();
                        async move { req.send().await.map_err(|e| classify(&pwhat, e)) }
                    })
                    .await?
                    .e_tag()
                    .map(str::to_string);
                parts.push(
                    CompletedPart::builder()
                        .set_e_tag(etag)
                        .part_number(n)
                        .build(),
                );
                crate::failpoint::point("s3.after_part");
                n += 1;
            }
            Ok(parts)
        }
        .await;
        res
    }

    /// Completes a multipart upload from its parts; returns the ETag it answered (or, when
    /// it answered none, the one a HEAD shows).
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        what: &str,
    ) -> Result<String> {
        let out = self
            .throttle
            .call(what, || {
                let req = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts.clone()))
                            .build(),
                    );
                let what = what.to_string();
                async move { req.send().await.map_err(|e| classify(&what, e)) }
            })
            .await?;
        if let Some(etag) = answered(out.e_tag()) {
            return Ok(etag);
        }
        // radosgw 16 answers the completion without an ETag: what a HEAD shows then.
        let head = self.head(key).await?;
        answered(head.as_ref().and_then(|h| h.e_tag())).ok_or_else(|| {
            Error::refused(format!(
                "{what}: neither the completion nor a HEAD after it answered an ETag"
            ))
        })
    }

    /// DELETE of `k`, with `If-Match: etag` when given: Some(true) deleted (or absent),
    /// Some(false) refused because the object is no longer `etag` (412), None when the
    /// store does not implement the condition (501).
    async fn delete_if(&self, k: &str, etag: Option<&str>) -> Result<Option<bool>> {
        let what = format!("DELETE s3://{}/{k}", self.bucket);
        self.throttle
            .call(&what, || {
                let req = self
                    .client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(k)
                    .set_if_match(etag.map(str::to_string));
                let what = what.clone();
                async move {
                    match req.send().await {
                        Ok(_) => Ok(Some(true)),
                        Err(SdkError::ServiceError(se)) => match se.raw().status().as_u16() {
                            412 => Ok(Some(false)),
                            501 if etag.is_some() => Ok(None),
                            _ => Err(classify(&what, SdkError::ServiceError(se))),
                        },
                        Err(e) => Err(classify(&what, e)),
                    }
                }
            })
            .await
    }

    /// A HEAD of the object at `k`; None when it is absent (404).
    async fn head(
        &self,
        k: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        let what = format!("HEAD s3://{}/{k}", self.bucket);
        self.throttle
            .call(&what, || {
                let req = self.client.head_object().bucket(&self.bucket).key(k);
                let what = what.clone();
                async move {
                    match req.send().await {
                        Ok(h) => Ok(Some(h)),
                        Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 404 => {
                            Ok(None)
                        }
                        Err(e) => Err(classify(&what, e)),
                    }
                }
            })
            .await
    }

    /// What is at `k` before a delete: a HEAD, its size and ETag compared with what
    /// barge wrote there (`expect`).
    async fn found(&self, k: &str, expect: &Expect) -> Result<Found> {
        let Some(head) = self.head(k).await? else {
            return Ok(Found::Absent);
        };
        let etag = head.e_tag().unwrap_or_default().to_string();
        let size = head.content_length().unwrap_or(0).max(0) as u64;
        // A multipart object's ETag is `<md5>-<parts>`, not an MD5 of the body.
        Ok(
            match expect.mismatch(size, Some(&etag), etag.contains('-')) {
                Some(why) => Found::Foreign(why),
                None => Found::Ours(etag),
            },
        )
    }
}

/// What a HEAD found at a key about to be deleted.
enum Found {
    Absent,
    /// The object barge wrote, with its ETag as the store shows it (quoted).
    Ours(String),
    /// Another object: why it is not barge's.
    Foreign(String),
}

/// An ETag a store answered, without its quotes.
fn answered(etag: Option<&str>) -> Option<String> {
    etag.map(|e| e.trim_matches('"').to_string())
        .filter(|e| !e.is_empty())
}

/// One ListObjectsV2 request per page, after a key (`StartAfter`): every page of every
/// key range is the same request, so a range resumes from its mark alone.
#[async_trait]
impl KeyPages for S3Store {
    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Page> {
        self.page_under("", after, limit).await
    }
}

impl S3Store {
    /// One ListObjectsV2 page of the keys under the URL's prefix and `under`, after
    /// `after` (a full store key); keys come back without the URL's prefix.
    async fn page_under(&self, under: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        let base = self.prefix_slash();
        let prefix = format!("{base}{under}");
        let what = format!("LIST s3://{}/{prefix}", self.bucket);
        let out = self
            .throttle
            .call(&what, || {
                let req = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&prefix)
                    .max_keys(i32::try_from(limit).unwrap_or(i32::MAX))
                    .set_start_after(after.map(str::to_string));
                let what = what.clone();
                async move { req.send().await.map_err(|e| classify(&what, e)) }
            })
            .await?;
        let entries = out
            .contents()
            .iter()
            .filter_map(|o| {
                let k = o.key()?;
                Some(Entry {
                    refused: None,
                    key: k.to_string(),
                    meta: ObjectMeta {
                        key: ObjectKey::from(k.strip_prefix(&base).unwrap_or(k)),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        version: o.e_tag().unwrap_or("").to_string(),
                        content_type: None,
                        user_meta: vec![],
                        modified: o.last_modified().and_then(|d| u64::try_from(d.secs()).ok()),
                    },
                })
            })
            .collect();
        let page = Page {
            entries,
            more: out.is_truncated() == Some(true),
        };
        let store = format!("s3://{}", self.bucket);
        super::ranges::check_advances(&store, "StartAfter", after, &page)?;
        Ok(page)
    }
}

#[async_trait]
impl Source for S3Store {
    fn throttle(&self) -> Option<Arc<Throttle>> {
        Some(self.throttle.clone())
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    /// The whole listing: a resumable one from the first key (its marks go unused).
    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        self.list_resumable(tx, &ListFrom::new()).await
    }

    /// Key ranges listed `--list-parallel` at once, each resuming after its mark.
    async fn list_resumable(&self, tx: mpsc::Sender<Listed>, from: &ListFrom) -> Result<()> {
        self.range_listing().run(from, &tx).await
    }

    /// One range named by the store key it starts after ("" from the first key), as
    /// [`RangeListing`] names its ranges: a range with an end is listed alone, the last
    /// (no end) is split further like any tail.
    fn range_from(
        &self,
        after: Option<&str>,
        until: Option<&str>,
        expect: Option<u64>,
    ) -> Option<ListFrom> {
        let p = self.prefix_slash();
        Some(super::ranges::one_range("", &p, after, until, expect))
    }

    async fn open(&self, meta: &ObjectMeta) -> Result<Opened> {
        let key = self.full_key(&meta.key)?;
        let multipart = meta.version.contains('-');
        if meta.size <= self.part_size && !multipart {
            return self.open_whole(&key, meta).await;
        }
        let (head, part_known) = self.head_for_ranges(&key, meta, multipart).await?;
        let etag = head.e_tag().unwrap_or(&meta.version).to_string();
        if etag != meta.version {
            return Err(Error::object(
                &meta.key,
                "changed since it was listed (ETag differs); will be fetched again on the next run",
            ));
        }
        let check = ranged_check(
            &etag,
            head.content_length(),
            meta.size,
            multipart,
            part_known,
        );
        let reader = self.ranged_reader(&key, meta.size);
        // A HEAD with ?partNumber reports the part's checksums, not the object's.
        let sum = if part_known {
            None
        } else {
            stored_sum(
                head.checksum_sha256(),
                head.checksum_crc32_c(),
                head.checksum_crc32(),
                head.checksum_sha1(),
            )
        };
        let mut user_meta = user_meta(head.metadata());
        carry(
            &mut user_meta,
            [
                head.content_encoding(),
                head.content_disposition(),
                head.content_language(),
                head.cache_control(),
                head.expires_string(),
            ],
            head.last_modified(),
        );
        Ok(Opened {
            sum,
            content_type: head.content_type().map(str::to_string),
            user_meta,
            check,
            reader,
        })
    }

    async fn list_page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        let base = self.prefix_slash();
        let after = after.map(|a| format!("{base}{a}"));
        self.page_under(prefix, after.as_deref(), limit).await
    }

    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        let k = self.full_key(key)?;
        let Some(head) = self.head(&k).await? else {
            return Ok(None);
        };
        let mut user_meta = user_meta(head.metadata());
        carry(
            &mut user_meta,
            [
                head.content_encoding(),
                head.content_disposition(),
                head.content_language(),
                head.cache_control(),
                head.expires_string(),
            ],
            head.last_modified(),
        );
        Ok(Some(ObjectMeta {
            key: key.clone(),
            size: head
                .content_length()
                .and_then(|l| u64::try_from(l).ok())
                .unwrap_or(0),
            version: head.e_tag().unwrap_or("").to_string(),
            content_type: head.content_type().map(str::to_string),
            user_meta,
            modified: head
                .last_modified()
                .and_then(|d| u64::try_from(d.secs()).ok()),
        }))
    }

    /// A HEAD: a GET's 404 counts only if the HEAD does not find the object either.
    async fn confirm_gone(&self, meta: &ObjectMeta) -> Result<bool> {
        let k = self.full_key(&meta.key)?;
        Ok(self.head(&k).await?.is_none())
    }

    async fn check_unchanged(&self, _meta: &ObjectMeta) -> Result<()> {
        // Every ranged GET is checked against the listed size, and the body against the
        // listed ETag: a changed object fails its checksum instead.
        Ok(())
    }
}

#[async_trait]
impl Destination for S3Store {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn s3_client(&self) -> Option<aws_sdk_s3::Client> {
        Some(self.client.clone())
    }

    fn throttle(&self) -> Option<Arc<Throttle>> {
        Some(self.throttle.clone())
    }

    async fn put(&self, meta: &ObjectMeta, body: Body) -> Result<Option<Placed>> {
        self.bucket_ready
            .get_or_try_init(|| self.ensure_bucket())
            .await?;
        let key = self.full_key(&meta.key)?;
        if meta.size <= self.multipart_threshold {
            let buf = super::collect_body(meta, body).await?;
            let etag = self
                .put_single(&key, meta, buf)
                .await
                .map_err(|e| Error::object(&meta.key, e))?;
            Ok(Some(Placed {
                location: key,
                etag,
                copyable: true,
            }))
        } else {
            // Multipart objects are not copied: CopyObject stops at 5 GiB and their
            // ETag is not the body's MD5.
            let etag = self
                .put_multipart(&key, meta, body)
                .await
                .map_err(|e| Error::object(&meta.key, e))?;
            Ok(Some(Placed {
                location: key,
                etag,
                copyable: false,
            }))
        }
    }

    fn can_copy(&self) -> bool {
        true
    }

    async fn copy(&self, from: &Placed, meta: &ObjectMeta) -> Result<()> {
        let key = self.full_key(&meta.key)?;
        let source = format!("{}/{}", self.bucket, escape_object(&from.location));
        let what = format!(
            "COPY s3://{}/{} to s3://{}/{key}",
            self.bucket, from.location, self.bucket
        );
        let metadata = s3_user_meta(meta)?;
        let hs = S3Headers::of(meta);
        let out = self
            .throttle
            .call(&what, || {
                let req = self
                    .client
                    .copy_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .copy_source(&source)
                    // Only from the very object this run wrote.
                    .copy_source_if_match(format!("\"{}\"", from.etag))
                    .metadata_directive(MetadataDirective::Replace)
                    .set_content_type(meta.content_type.clone())
                    .set_content_encoding(hs.encoding.clone())
                    .set_content_disposition(hs.disposition.clone())
                    .set_content_language(hs.language.clone())
                    .set_cache_control(hs.cache_control.clone())
                    .set_expires(hs.expires)
                    .set_metadata(metadata.clone());
                let what = what.clone();
                async move { req.send().await.map_err(|e| classify(&what, e)) }
            })
            .await
            .map_err(|e| Error::object(&meta.key, e))?;
        let etag = out.copy_object_result().and_then(|r| r.e_tag());
        from.check_copy(&meta.key, &what, etag)
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        self.range_listing().run(&ListFrom::new(), &tx).await
    }

    /// A HEAD compares the object with what barge wrote; the DELETE then carries
    /// `If-Match` with the ETag the HEAD saw, so a store that honours it (Swift's s3api
    /// does) refuses to delete an object written in between (412: kept). One that
    /// ignores it (radosgw 16 deletes whatever the header says) leaves that window, the
    /// time between the two requests; one that answers 501 gets a plain DELETE.
    async fn delete(&self, key: &ObjectKey, expect: &Expect) -> Result<Deleted> {
        let k = self.full_key(key)?;
        let etag = match self
            .found(&k, expect)
            .await
            .map_err(|e| Error::object(key, e))?
        {
            Found::Absent => return Ok(Deleted::Deleted),
            Found::Foreign(why) => return Ok(Deleted::Kept(why)),
            Found::Ours(etag) => etag,
        };
        let done = match self.delete_if(&k, Some(&etag)).await {
            // A store that does not implement conditional deletes: a plain one.
            Ok(None) => self.delete_if(&k, None).await,
            other => other,
        }
        .map_err(|e| Error::object(key, e))?;
        Ok(match done {
            Some(false) => Deleted::Kept(format!(
                "it changed between the check and the delete (ETag no longer {etag})"
            )),
            _ => Deleted::Deleted,
        })
    }

    async fn get(&self, key: &ObjectKey) -> Result<Reader> {
        let k = self.full_key(key)?;
        let what = format!("GET s3://{}/{k}", self.bucket);
        let out = self
            .throttle
            .call(&what, || {
                let req = self.client.get_object().bucket(&self.bucket).key(&k);
                let what = what.clone();
                async move { req.send().await.map_err(|e| classify(&what, e)) }
            })
            .await
            .map_err(|e| Error::of_object(key, e))?;
        Ok(Box::new(out.body.into_async_read()))
    }

    /// Aborts the multipart uploads the journal holds for this destination: a crash left
    /// them (a failed upload is aborted where it fails).
    async fn cleanup(&self) -> Result<u64> {
        let Some(j) = self.journal.get() else {
            return Ok(0);
        };
        let mut n = 0;
        for (key, id) in j.open(&self.url)? {
            if self.abort(&key, &id).await {
                n += 1;
                j.ended(&self.url, &key, &id)?;
            }
        }
        Ok(n)
    }

    fn set_journal(&self, journal: Arc<dyn UploadJournal>) {
        let _ = self.journal.set(journal);
    }
}

//! The S3 API of `barge gateway`: the only module that speaks `s3s` (HTTP, signatures,
//! XML). Every read and write goes through barge's own `Source` and `Destination`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use s3s::dto::{self, StreamingBlob, Timestamp};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::Shared;
use super::checked::{Checked, Expected, Verdict, verdict};
use super::list::{Ask, page};
use super::multipart::{Refused, Upload, multipart_etag};
use super::recover;
use super::route::{Conditions, Precondition, Route, View, route, view_of_meta};
use crate::backend::{Body, Deleted, Expect, Payload, Reader};
use crate::catalog::Landed;
use crate::catalog::gateway::{GatewayRecord, GatewayWrite, WriteIntent};
use crate::error::Error;
use crate::object::{ObjectKey, ObjectMeta};
use bytes::Bytes;

/// Bytes read from a store per piece of a response body (a 4 KiB default made a 16 MiB
/// GET 4,096 pieces).
const BODY_CHUNK: usize = 1 << 20;

/// The gateway's S3 service.
#[derive(Clone)]
pub struct Gateway(pub Arc<Shared>);

/// A read's object, where it is served from, and its view.
struct Found {
    view: View,
    /// None: at the destination.
    source: Option<ObjectMeta>,
}

impl Gateway {
    fn bucket(&self, name: &str) -> S3Result<()> {
        match name == self.0.bucket {
            true => Ok(()),
            false => Err(s3_error!(
                NoSuchBucket,
                "this gateway serves bucket {}",
                self.0.bucket
            )),
        }
    }

    /// An error of a store or the catalog: 503, named, counted.
    fn unavailable(&self, e: Error) -> S3Error {
        self.0
            .monitor
            .gateway
            .errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("gateway: {e}");
        s3_error!(ServiceUnavailable, "{e}")
    }

    /// Where `key` is read from, by its records; the source is asked only for a key the
    /// catalog has not listed.
    async fn find(&self, key: &str) -> S3Result<Found> {
        let k = ObjectKey::from(key);
        let cat = &self.0.catalog;
        let gw = cat.gateway_record(&k).map_err(|e| self.unavailable(e))?;
        let rec = cat.get_object(&k).map_err(|e| self.unavailable(e))?;
        match route(&k, gw, rec) {
            Route::Gone => Err(s3_error!(NoSuchKey)),
            Route::Dest(view) => Ok(Found { view, source: None }),
            Route::Source(..) if self.0.source.is_none() => Err(self.unavailable(Error::object(
                key,
                "listed at the source but never moved, and the gateway runs without --source",
            ))),
            Route::Source(view, meta) => Ok(Found {
                view,
                source: Some(meta),
            }),
            // Without a source the catalog holds every key it had (a cutover proved it).
            Route::Unknown => match self.0.source.as_ref().map(|s| s.stat(&k)) {
                None => Err(s3_error!(NoSuchKey)),
                Some(stat) => match stat.await {
                    Ok(Some(meta)) => Ok(Found {
                        view: view_of_meta(&meta),
                        source: Some(meta),
                    }),
                    Ok(None) => Err(s3_error!(NoSuchKey)),
                    Err(e) => Err(self.unavailable(e)),
                },
            },
        }
    }

    /// The body of a found object, from `skip` for `len` bytes.
    async fn body(&self, key: &str, f: &Found, skip: u64, len: u64) -> S3Result<StreamingBlob> {
        let k = ObjectKey::from(key);
        let counters = &self.0.monitor.gateway;
        let pieces: Body = match &f.source {
            None => {
                counters.reads_dest.fetch_add(1, Ordering::Relaxed);
                self.0
                    .dest
                    .get_stream(&k)
                    .await
                    .map_err(|e| self.unavailable(e))?
            }
            Some(meta) => {
                let Some(source) = &self.0.source else {
                    return Err(s3_error!(
                        ServiceUnavailable,
                        "no source to read {key} from"
                    ));
                };
                counters.reads_source.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes_read_through
                    .fetch_add(len, Ordering::Relaxed);
                let reader: Reader = match source.open(meta).await {
                    Ok(o) => match o.reader {
                        Payload::Stream(r) => r,
                        Payload::File(_) => {
                            return Err(s3_error!(
                                NotImplemented,
                                "reads through from a directory source"
                            ));
                        }
                    },
                    Err(Error::Gone { .. }) => return Err(s3_error!(NoSuchKey)),
                    Err(e) => return Err(self.unavailable(e)),
                };
                let pieces = tokio_util::io::ReaderStream::with_capacity(reader, BODY_CHUNK);
                Box::pin(pieces.map(move |r| r.map_err(|e| Error::object(&k, e))))
            }
        };
        let window = Window {
            inner: pieces,
            skip,
            left: len,
        };
        Ok(StreamingBlob::wrap(Shareable(std::sync::Mutex::new(
            window,
        ))))
    }

    /// Writes one object at the destination under its key's fence and records it as the
    /// gateway's; acknowledged (its ETag returned) only once both are done. `etag` is
    /// asked after the body was sent (a PUT's MD5 is known only then), from its verdict.
    async fn land<T>(
        &self,
        (meta, known): (&ObjectMeta, Option<&str>),
        body: Body,
        if_none_match: bool,
        etag: impl FnOnce() -> std::result::Result<(String, T), Option<Refused>>,
    ) -> S3Result<(String, T)> {
        let (cat, key) = (&self.0.catalog, &meta.key);
        let _fence = cat.fence(key).await;
        if if_none_match {
            let k = key.to_string();
            let exists =
                !matches!(self.find(&k).await, Err(e) if *e.code() == S3ErrorCode::NoSuchKey);
            if exists {
                return Err(s3_error!(PreconditionFailed));
            }
        }
        let intent = WriteIntent {
            size: meta.size,
            etag: known.map(str::to_string),
            modified: meta.modified.unwrap_or(0),
            content_type: meta.content_type.clone(),
            user_meta: meta.user_meta.clone(),
        };
        cat.set_write_intent(key, &intent)
            .map_err(|e| self.unavailable(e))?;
        crate::failpoint::point("gateway.after_intent");
        let put = self.0.dest.put(meta, body).await;
        let etag = etag();
        let placed = match (put, etag.as_ref()) {
            (Ok(p), _) => p,
            (Err(e), r) => {
                // The put failed: the destination kept nothing, so nothing is pending.
                let _ = cat.clear_write_intent(key);
                return Err(match r {
                    Err(Some(r)) => refused(r.clone()),
                    _ => self.unavailable(e),
                });
            }
        };
        crate::failpoint::point("gateway.after_put");
        let (etag, extra) =
            etag.map_err(|r| r.map_or_else(|| s3_error!(InternalError), refused))?;
        let w = GatewayWrite {
            size: meta.size,
            etag: etag.clone(),
            modified: meta.modified.unwrap_or(0),
            content_type: meta.content_type.clone(),
            user_meta: meta.user_meta.clone(),
            landed: placed.map(|p| Landed {
                size: meta.size,
                etag: p.etag,
            }),
        };
        cat.set_gateway_record(key, &GatewayRecord::Written(w), None)
            .map_err(|e| self.unavailable(e))?;
        crate::failpoint::point("gateway.after_record");
        cat.forget_for_gateway(key)
            .map_err(|e| self.unavailable(e))?;
        self.0
            .monitor
            .gateway
            .writes
            .fetch_add(1, Ordering::Relaxed);
        Ok((etag, extra))
    }

    /// Deletes `key` for the application: a tombstone first (synced, with what to delete
    /// at the destination as an intent), then the copy at the destination if barge or
    /// the gateway put one there, then the move's record.
    async fn remove(&self, key: &ObjectKey) -> S3Result<()> {
        let cat = &self.0.catalog;
        let _fence = cat.fence(key).await;
        let gw = cat.gateway_record(key).map_err(|e| self.unavailable(e))?;
        let expect = self.expect(key, &gw).map_err(|e| self.unavailable(e))?;
        let left = match &expect {
            Some(Expect::Written(l)) => Some(l.clone()),
            _ => None,
        };
        let intent = expect.as_ref().map(recover::delete_intent);
        let tombstone = GatewayRecord::Deleted { at: now(), left };
        cat.set_gateway_record(key, &tombstone, intent.as_ref())
            .map_err(|e| self.unavailable(e))?;
        crate::failpoint::point("gateway.after_tombstone");
        if let Some(expect) = expect {
            let done = self.0.dest.delete(key, &expect).await;
            match done.map_err(|e| self.unavailable(e))? {
                Deleted::Deleted => {}
                Deleted::Kept(why) => tracing::warn!(
                    "gateway: {key} is deleted for the application; the destination holds another writer's object there, left as it is: {why}"
                ),
            }
        }
        // Only now: a retry after a failed delete still knows what to delete.
        cat.clear_delete_intent(key)
            .map_err(|e| self.unavailable(e))?;
        cat.forget_for_gateway(key)
            .map_err(|e| self.unavailable(e))?;
        self.0
            .monitor
            .gateway
            .deletes
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// What to expect at the destination for a delete of `k` (called under its fence).
    fn expect(&self, k: &ObjectKey, gw: &Option<GatewayRecord>) -> crate::Result<Option<Expect>> {
        if let Some(l) = self.0.catalog.placed(k)? {
            return Ok(Some(Expect::Written(l)));
        }
        Ok(match gw {
            Some(GatewayRecord::Written(w)) => Some(match &w.landed {
                Some(l) => Expect::Written(l.clone()),
                // Recorded after a crash (`recover`): the destination's answer is unknown;
                // its size, and the MD5 a single-part object there shows as its ETag.
                None => Expect::Legacy {
                    size: w.size,
                    md5: (w.etag.len() == 32 && !w.etag.contains('-')).then(|| w.etag.clone()),
                },
            }),
            Some(GatewayRecord::Deleted { left: Some(l), .. }) => Some(Expect::Written(l.clone())),
            _ => None,
        })
    }
}

/// The bytes `skip..skip + left` of a stream of pieces (pieces are cut, never copied).
struct Window {
    inner: Body,
    skip: u64,
    left: u64,
}

impl Stream for Window {
    type Item = crate::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let mut b = match self.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(b))) => b,
                other => return other,
            };
            let drop = self.skip.min(b.len() as u64) as usize;
            self.skip -= drop as u64;
            let _ = b.split_to(drop);
            if b.is_empty() {
                continue;
            }
            if (b.len() as u64) > self.left {
                b.truncate(self.left as usize);
            }
            self.left -= b.len() as u64;
            return Poll::Ready(Some(Ok(b)));
        }
    }
}

/// A body stream s3s may share between threads (its reader is only `Send`): polled
/// through `&mut`, so the mutex is never contended.
struct Shareable<S>(std::sync::Mutex<S>);

impl<S: Stream + Unpin> Stream for Shareable<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        match self.0.get_mut() {
            Ok(s) => s.poll_next_unpin(cx),
            Err(_) => Poll::Ready(None),
        }
    }
}

fn stamp(secs: Option<u64>) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.unwrap_or(0)))
}

fn secs(t: &Timestamp) -> u64 {
    u64::try_from(time::OffsetDateTime::from(t.clone()).unix_timestamp()).unwrap_or(0)
}

fn tags(c: &Option<dto::ETagCondition>) -> Option<Vec<&str>> {
    c.as_ref().map(|c| match c {
        dto::ETagCondition::Any => vec!["*"],
        dto::ETagCondition::ETag(t) => vec![t.value()],
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Refuses unsigned requests: the gateway has no anonymous access.
fn signed<T>(req: &S3Request<T>) -> S3Result<()> {
    match req.credentials {
        Some(_) => Ok(()),
        None => Err(s3_error!(AccessDenied, "requests must be signed")),
    }
}

fn metadata(v: &View) -> Option<dto::Metadata> {
    let user = v.user();
    (!user.is_empty()).then(|| user.into_iter().collect())
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        signed(&req)?;
        self.bucket(&req.input.bucket)?;
        Ok(S3Response::new(dto::HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        signed(&req)?;
        self.bucket(&req.input.bucket)?;
        Ok(S3Response::new(dto::GetBucketLocationOutput::default()))
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        signed(&req)?;
        let i = &req.input;
        self.bucket(&i.bucket)?;
        let f = self.find(&i.key).await?;
        let c = Conditions {
            if_match: tags(&i.if_match),
            if_none_match: tags(&i.if_none_match),
            if_modified_since: i.if_modified_since.as_ref().map(secs),
            if_unmodified_since: i.if_unmodified_since.as_ref().map(secs),
        };
        precondition(c.check(&f.view))?;
        let v = &f.view;
        let range = satisfiable(&i.range, v.size)?;
        let len = range.as_ref().map_or(v.size, |r| r.end - r.start);
        Ok(S3Response::new(dto::HeadObjectOutput {
            content_length: i64::try_from(len).ok(),
            content_range: range.map(|r| format!("bytes {}-{}/{}", r.start, r.end - 1, v.size)),
            e_tag: Some(dto::ETag::Strong(v.etag.clone())),
            last_modified: Some(stamp(v.modified)),
            content_type: v.content_type.clone(),
            content_encoding: v.header("content-encoding"),
            content_disposition: v.header("content-disposition"),
            content_language: v.header("content-language"),
            cache_control: v.header("cache-control"),
            metadata: metadata(v),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        signed(&req)?;
        let i = &req.input;
        self.bucket(&i.bucket)?;
        let f = self.find(&i.key).await?;
        let c = Conditions {
            if_match: tags(&i.if_match),
            if_none_match: tags(&i.if_none_match),
            if_modified_since: i.if_modified_since.as_ref().map(secs),
            if_unmodified_since: i.if_unmodified_since.as_ref().map(secs),
        };
        precondition(c.check(&f.view))?;
        let size = f.view.size;
        let range = satisfiable(&i.range, size)?;
        let (skip, len) = range
            .as_ref()
            .map_or((0, size), |r| (r.start, r.end - r.start));
        let body = self.body(&i.key, &f, skip, len).await?;
        let v = &f.view;
        Ok(S3Response::new(dto::GetObjectOutput {
            body: Some(body),
            content_length: i64::try_from(len).ok(),
            content_range: range.map(|r| format!("bytes {}-{}/{size}", r.start, r.end - 1)),
            e_tag: Some(dto::ETag::Strong(v.etag.clone())),
            last_modified: Some(stamp(v.modified)),
            content_type: v.content_type.clone(),
            content_encoding: v.header("content-encoding"),
            content_disposition: v.header("content-disposition"),
            content_language: v.header("content-language"),
            cache_control: v.header("cache-control"),
            metadata: metadata(v),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        signed(&req)?;
        let i = req.input;
        self.bucket(&i.bucket)?;
        let key = ObjectKey::from(i.key.as_str());
        let expected = Expected::declared(
            (&req.headers, req.trailing_headers.clone()),
            &i.content_md5,
            i.content_length,
            [
                &i.checksum_crc32,
                &i.checksum_crc32c,
                &i.checksum_sha1,
                &i.checksum_sha256,
                &i.checksum_crc64nvme,
            ],
        )?;
        let size = expected.len.unwrap_or_default();
        let (body, cell) = Checked::new(i.body, &key, expected);
        let user_meta = written_meta(
            i.metadata,
            [
                &i.content_encoding,
                &i.content_disposition,
                &i.content_language,
                &i.cache_control,
            ],
        );
        let meta = ObjectMeta {
            key: key.clone(),
            size,
            version: String::new(),
            content_type: i.content_type.clone(),
            user_meta: user_meta.clone(),
            modified: Some(now()),
        };
        let body: Body = Box::pin(body);
        let none_match = matches!(i.if_none_match, Some(dto::ETagCondition::Any));
        let (etag, sums) = self
            .land((&meta, None), body, none_match, || match verdict(&cell) {
                Verdict::Whole(d, sums) => Ok((hex::encode(d), sums)),
                Verdict::Refused(r) => Err(Some(r)),
                Verdict::Unread => Err(None),
            })
            .await?;
        Ok(S3Response::new(dto::PutObjectOutput {
            e_tag: Some(dto::ETag::Strong(etag)),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        signed(&req)?;
        let i = req.input;
        self.bucket(&i.bucket)?;
        let user_meta = written_meta(
            i.metadata,
            [
                &i.content_encoding,
                &i.content_disposition,
                &i.content_language,
                &i.cache_control,
            ],
        );
        let u = Upload {
            key: i.key.clone(),
            content_type: i.content_type,
            user_meta,
            started: now(),
        };
        let id = self
            .0
            .uploads
            .create(&u)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        signed(&req)?;
        let i = req.input;
        self.bucket(&i.bucket)?;
        let up = &self.0.uploads;
        if up
            .get(&i.upload_id, &i.key)
            .await
            .map_err(|e| self.unavailable(e))?
            .is_none()
        {
            return Err(s3_error!(NoSuchUpload));
        }
        let expected = Expected::declared(
            (&req.headers, req.trailing_headers.clone()),
            &i.content_md5,
            i.content_length,
            [
                &i.checksum_crc32,
                &i.checksum_crc32c,
                &i.checksum_sha1,
                &i.checksum_sha256,
                &i.checksum_crc64nvme,
            ],
        )?;
        let key = ObjectKey::from(i.key.as_str());
        let (body, cell) = Checked::new(i.body, &key, expected);
        let etag = up
            .put_part(&i.upload_id, i.part_number, body, &cell)
            .await
            .map_err(|e| self.unavailable(e))?
            .map_err(refused)?;
        Ok(S3Response::new(dto::UploadPartOutput {
            e_tag: Some(dto::ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        signed(&req)?;
        let i = req.input;
        self.bucket(&i.bucket)?;
        let up = &self.0.uploads;
        let Some(u) = up
            .get(&i.upload_id, &i.key)
            .await
            .map_err(|e| self.unavailable(e))?
        else {
            return Err(s3_error!(NoSuchUpload));
        };
        let asked: Vec<(i32, String)> = i
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let etag = p.e_tag.map(|e| e.value().to_string()).unwrap_or_default();
                (p.part_number.unwrap_or(0), etag)
            })
            .collect();
        let parts = up
            .chosen(&i.upload_id, &asked)
            .await
            .map_err(|e| self.unavailable(e))?
            .map_err(refused)?;
        let meta = ObjectMeta {
            key: ObjectKey::from(i.key.as_str()),
            size: parts.iter().map(|p| p.size).sum(),
            version: String::new(),
            content_type: u.content_type,
            user_meta: u.user_meta,
            modified: Some(now()),
        };
        let etag = multipart_etag(&parts);
        let body = up.body(&i.upload_id, &parts);
        let none_match = matches!(i.if_none_match, Some(dto::ETagCondition::Any));
        let known = etag.clone();
        let (etag, ()) = self
            .land((&meta, Some(&known)), body, none_match, || Ok((etag, ())))
            .await?;
        up.remove(&i.upload_id)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            e_tag: Some(dto::ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        signed(&req)?;
        let i = &req.input;
        self.bucket(&i.bucket)?;
        let up = &self.0.uploads;
        if up
            .get(&i.upload_id, &i.key)
            .await
            .map_err(|e| self.unavailable(e))?
            .is_none()
        {
            return Err(s3_error!(NoSuchUpload));
        }
        up.remove(&i.upload_id)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(S3Response::new(dto::AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<dto::ListPartsInput>,
    ) -> S3Result<S3Response<dto::ListPartsOutput>> {
        signed(&req)?;
        let i = &req.input;
        self.bucket(&i.bucket)?;
        let up = &self.0.uploads;
        if up
            .get(&i.upload_id, &i.key)
            .await
            .map_err(|e| self.unavailable(e))?
            .is_none()
        {
            return Err(s3_error!(NoSuchUpload));
        }
        let after: i32 = i.part_number_marker.unwrap_or(0);
        let max = i.max_parts.map_or(1000, |m| m.clamp(0, 1000)) as usize;
        let all = up
            .parts(&i.upload_id)
            .await
            .map_err(|e| self.unavailable(e))?;
        let rest: Vec<_> = all.into_iter().filter(|p| p.number > after).collect();
        let truncated = rest.len() > max;
        let shown: Vec<_> = rest.into_iter().take(max).collect();
        Ok(S3Response::new(dto::ListPartsOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            upload_id: Some(i.upload_id.clone()),
            is_truncated: Some(truncated),
            max_parts: Some(max as i32),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: shown.last().filter(|_| truncated).map(|p| p.number),
            parts: Some(
                shown
                    .iter()
                    .map(|p| dto::Part {
                        part_number: Some(p.number),
                        size: i64::try_from(p.size).ok(),
                        e_tag: Some(dto::ETag::Strong(p.etag.clone())),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        signed(&req)?;
        let i = &req.input;
        self.bucket(&i.bucket)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let all = self
            .0
            .uploads
            .all()
            .await
            .map_err(|e| self.unavailable(e))?;
        let uploads: Vec<dto::MultipartUpload> = all
            .into_iter()
            .filter(|(_, u)| u.key.starts_with(&prefix))
            .take(1000)
            .map(|(id, u)| dto::MultipartUpload {
                key: Some(u.key),
                upload_id: Some(id),
                initiated: Some(stamp(Some(u.started))),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(dto::ListMultipartUploadsOutput {
            bucket: Some(i.bucket.clone()),
            prefix: i.prefix.clone(),
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        signed(&req)?;
        let i = &req.input;
        self.bucket(&i.bucket)?;
        self.remove(&ObjectKey::from(i.key.as_str())).await?;
        Ok(S3Response::new(dto::DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        signed(&req)?;
        let i = req.input;
        self.bucket(&i.bucket)?;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per request"));
        }
        let quiet = i.delete.quiet == Some(true);
        let (mut deleted, mut errors) = (vec![], vec![]);
        for o in i.delete.objects {
            match self.remove(&ObjectKey::from(o.key.as_str())).await {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(dto::DeletedObject {
                    key: Some(o.key),
                    ..Default::default()
                }),
                Err(e) => errors.push(dto::Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(o.key),
                    message: e.message().map(str::to_string),
                    ..Default::default()
                }),
            }
        }
        Ok(S3Response::new(dto::DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<dto::CopyObjectInput>,
    ) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        signed(&req)?;
        let i = req.input;
        self.bucket(&i.bucket)?;
        let dto::CopySource::Bucket {
            bucket, key: from, ..
        } = &i.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copies from access points"));
        };
        self.bucket(bucket)?;
        let f = self.find(from).await?;
        let c = Conditions {
            if_match: tags(&i.copy_source_if_match),
            if_none_match: tags(&i.copy_source_if_none_match),
            if_modified_since: i.copy_source_if_modified_since.as_ref().map(secs),
            if_unmodified_since: i.copy_source_if_unmodified_since.as_ref().map(secs),
        };
        if c.check(&f.view) != Precondition::Proceed {
            return Err(s3_error!(PreconditionFailed));
        }
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == "REPLACE");
        let (content_type, user_meta) = match replace {
            false => (f.view.content_type.clone(), f.view.user_meta.clone()),
            true => {
                let m = written_meta(
                    i.metadata,
                    [
                        &i.content_encoding,
                        &i.content_disposition,
                        &i.content_language,
                        &i.cache_control,
                    ],
                );
                (i.content_type.clone(), m)
            }
        };
        if !replace && &**from == i.key.as_str() {
            return Err(s3_error!(
                InvalidRequest,
                "a copy onto itself must change something (x-amz-metadata-directive: REPLACE)"
            ));
        }
        let size = f.view.size;
        let blob = self.body(from, &f, 0, size).await?;
        // A short body from a store is the store's fault (503), not the client's.
        let expected = Expected {
            len: Some(size),
            ..Default::default()
        };
        let (body, cell) = Checked::new(Some(blob), &ObjectKey::from(i.key.as_str()), expected);
        let meta = ObjectMeta {
            key: ObjectKey::from(i.key.as_str()),
            size,
            version: String::new(),
            content_type,
            user_meta,
            modified: Some(now()),
        };
        let (etag, ()) = self
            .land((&meta, None), Box::pin(body), false, || {
                match verdict(&cell) {
                    Verdict::Whole(d, _) => Ok((hex::encode(d), ())),
                    _ => Err(None),
                }
            })
            .await?;
        Ok(S3Response::new(dto::CopyObjectOutput {
            copy_object_result: Some(dto::CopyObjectResult {
                e_tag: Some(dto::ETag::Strong(etag)),
                last_modified: meta.modified.map(|m| stamp(Some(m))),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        signed(&req)?;
        let i = &req.input;
        self.bucket(&i.bucket)?;
        let after = match &i.continuation_token {
            Some(t) => hex::decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    s3_error!(InvalidArgument, "not a continuation token of this gateway")
                })?,
            None => i.start_after.clone().unwrap_or_default(),
        };
        let max = max_keys(i.max_keys);
        let prefix = i.prefix.clone().unwrap_or_default();
        let p = self
            .list(&prefix, i.delimiter.as_deref(), &after, max)
            .await?;
        let url = url_encoded(&i.encoding_type);
        let count = p.objects.len() + p.prefixes.len();
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(self.0.bucket.clone()),
            prefix: Some(encode(url, &prefix)),
            delimiter: i.delimiter.as_ref().map(|d| encode(url, d)),
            start_after: i.start_after.as_ref().map(|s| encode(url, s)),
            continuation_token: i.continuation_token.clone(),
            max_keys: Some(max as i32),
            key_count: Some(count as i32),
            is_truncated: Some(p.next.is_some()),
            next_continuation_token: p.next.as_ref().map(hex::encode),
            encoding_type: i.encoding_type.clone(),
            contents: Some(objects(url, &p.objects)),
            common_prefixes: Some(prefixes(url, &p.prefixes)),
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<dto::ListObjectVersionsInput>,
    ) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
        signed(&req)?;
        let i = &req.input;
        self.bucket(&i.bucket)?;
        // Unversioned: one version per key, "null", the latest; no delete markers.
        let after = i.key_marker.clone().unwrap_or_default();
        let max = max_keys(i.max_keys);
        let prefix = i.prefix.clone().unwrap_or_default();
        let p = self
            .list(&prefix, i.delimiter.as_deref(), &after, max)
            .await?;
        let url = url_encoded(&i.encoding_type);
        let versions = p
            .objects
            .iter()
            .map(|(k, v)| dto::ObjectVersion {
                key: Some(encode(url, k)),
                size: i64::try_from(v.size).ok(),
                e_tag: Some(dto::ETag::Strong(v.etag.clone())),
                last_modified: Some(stamp(v.modified)),
                version_id: Some("null".into()),
                is_latest: Some(true),
                storage_class: Some(dto::ObjectVersionStorageClass::from_static(
                    dto::ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(dto::ListObjectVersionsOutput {
            name: Some(self.0.bucket.clone()),
            prefix: Some(encode(url, &prefix)),
            delimiter: i.delimiter.as_ref().map(|d| encode(url, d)),
            key_marker: i.key_marker.as_ref().map(|m| encode(url, m)),
            max_keys: Some(max as i32),
            is_truncated: Some(p.next.is_some()),
            next_key_marker: p.next.as_ref().map(|n| encode(url, n)),
            next_version_id_marker: p.next.as_ref().map(|_| "null".into()),
            encoding_type: i.encoding_type.clone(),
            versions: Some(versions),
            common_prefixes: Some(prefixes(url, &p.prefixes)),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        signed(&req)?;
        let i = &req.input;
        self.bucket(&i.bucket)?;
        let after = i.marker.clone().unwrap_or_default();
        let max = max_keys(i.max_keys);
        let prefix = i.prefix.clone().unwrap_or_default();
        let p = self
            .list(&prefix, i.delimiter.as_deref(), &after, max)
            .await?;
        let url = url_encoded(&i.encoding_type);
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(self.0.bucket.clone()),
            prefix: Some(encode(url, &prefix)),
            delimiter: i.delimiter.as_ref().map(|d| encode(url, d)),
            marker: i.marker.as_ref().map(|m| encode(url, m)),
            max_keys: Some(max as i32),
            is_truncated: Some(p.next.is_some()),
            // Given with a delimiter, as S3 does; clients use the last key otherwise.
            next_marker: p
                .next
                .as_ref()
                .filter(|_| i.delimiter.is_some())
                .map(|n| encode(url, n)),
            encoding_type: i.encoding_type.clone(),
            contents: Some(objects(url, &p.objects)),
            common_prefixes: Some(prefixes(url, &p.prefixes)),
            ..Default::default()
        }))
    }
}

impl Gateway {
    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        after: &str,
        max: usize,
    ) -> S3Result<super::list::Page> {
        self.0.monitor.gateway.lists.fetch_add(1, Ordering::Relaxed);
        let ask = Ask {
            prefix,
            delimiter,
            after,
            max,
        };
        page(self.0.source.as_deref(), &self.0.catalog, &ask)
            .await
            .map_err(|e| self.unavailable(e))
    }
}

/// A multipart request the client got wrong.
fn refused(r: Refused) -> S3Error {
    match r {
        Refused::NoSuchUpload => s3_error!(NoSuchUpload),
        Refused::BadDigest => s3_error!(BadDigest),
        Refused::IncompleteBody => s3_error!(IncompleteBody),
        Refused::InvalidPart(n) => {
            s3_error!(InvalidPart, "part {n} is not one uploaded with that ETag")
        }
        Refused::InvalidPartOrder => s3_error!(InvalidPartOrder),
        Refused::EntityTooSmall(n) => {
            s3_error!(EntityTooSmall, "part {n} is below 5 MiB and not the last")
        }
        Refused::InvalidArgument(m) => s3_error!(InvalidArgument, "{m}"),
    }
}

/// What a write carries as `user_meta`: the client's user metadata (sorted) and the
/// standard headers barge carries with an object ([`crate::object::CARRIED_HEADERS`]
/// but Expires, which S3 clients send as a date barge does not parse).
fn written_meta(
    metadata: Option<dto::Metadata>,
    headers: [&Option<String>; 4],
) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = metadata.unwrap_or_default().into_iter().collect();
    m.sort();
    for (name, v) in crate::object::CARRIED_HEADERS.iter().zip(headers) {
        crate::object::carry_header(&mut m, name, v.as_deref());
    }
    m
}

/// S3's `max-keys`: 1000 unless asked for fewer.
fn max_keys(asked: Option<i32>) -> usize {
    asked.map_or(1000, |m| m.clamp(0, 1000)) as usize
}

/// Whether a listing asked for `encoding-type=url`.
fn url_encoded(e: &Option<dto::EncodingType>) -> bool {
    e.as_ref().is_some_and(|e| e.as_str() == "url")
}

fn precondition(p: Precondition) -> S3Result<()> {
    match p {
        Precondition::Proceed => Ok(()),
        Precondition::Failed => Err(s3_error!(PreconditionFailed)),
        Precondition::NotModified => Err(s3_error!(NotModified)),
    }
}

/// The bytes a Range asks of an object of `size` bytes; InvalidRange (416) when none
/// (an empty object satisfies no range).
fn satisfiable(r: &Option<dto::Range>, size: u64) -> S3Result<Option<std::ops::Range<u64>>> {
    match r.as_ref().map(|r| r.check(size)) {
        None => Ok(None),
        Some(Ok(r)) if r.end > r.start => Ok(Some(r)),
        Some(_) => Err(s3_error!(InvalidRange)),
    }
}

/// A key or prefix as a listing shows it (`encoding-type=url`: percent-encoded).
fn encode(url: bool, s: &str) -> String {
    match url {
        false => s.to_string(),
        true => percent_encoding::utf8_percent_encode(s, URL_SET).to_string(),
    }
}

/// What S3 percent-encodes in a listing with `encoding-type=url`.
const URL_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn objects(url: bool, list: &[(String, View)]) -> Vec<dto::Object> {
    list.iter()
        .map(|(k, v)| dto::Object {
            key: Some(encode(url, k)),
            size: i64::try_from(v.size).ok(),
            e_tag: Some(dto::ETag::Strong(v.etag.clone())),
            last_modified: Some(stamp(v.modified)),
            storage_class: Some(dto::ObjectStorageClass::from_static(
                dto::ObjectStorageClass::STANDARD,
            )),
            ..Default::default()
        })
        .collect()
}

fn prefixes(url: bool, list: &[String]) -> Vec<dto::CommonPrefix> {
    list.iter()
        .map(|p| dto::CommonPrefix {
            prefix: Some(encode(url, p)),
        })
        .collect()
}

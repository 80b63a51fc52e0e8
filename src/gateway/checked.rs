//! A request body checked as it streams: its length, its MD5 (`Content-MD5`) and the
//! `x-amz-checksum-*` values it declares, in headers or in an `aws-chunked` trailer (the
//! default of every current AWS SDK). A mismatch ends the stream with an error, so the
//! store it flows into keeps nothing, and leaves the reason in the [`Verdict`] for the
//! S3 answer (BadDigest, IncompleteBody) instead of in an error's text.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hyper::HeaderMap;
use md5::{Digest, Md5};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::{self, StreamingBlob};
use s3s::{S3Result, s3_error};

use super::multipart::Refused;
use crate::error::Error;
use crate::object::ObjectKey;

/// What a body must be, as the request declared it.
#[derive(Default)]
pub struct Expected {
    pub md5: Option<[u8; 16]>,
    pub len: Option<u64>,
    /// `x-amz-checksum-*` values sent as headers (base64).
    pub sums: dto::Checksum,
    /// The trailer of an `aws-chunked` body, and the checksum names `x-amz-trailer`
    /// announced in it.
    pub trailer: Option<(s3s::TrailingHeaders, Vec<String>)>,
}

impl Expected {
    /// What a PutObject or UploadPart request declares of its body: `Content-MD5`, its
    /// length ([`announced`]), the `x-amz-checksum-*` headers (CRC32, CRC32C, SHA1,
    /// SHA256, CRC64NVME, in that order) and the checksums an `aws-chunked` trailer will
    /// carry (named by `x-amz-trailer`).
    pub fn declared(
        (headers, trailer): (&HeaderMap, Option<s3s::TrailingHeaders>),
        content_md5: &Option<String>,
        content_length: Option<i64>,
        [crc32, crc32c, sha1, sha256, crc64nvme]: [&Option<String>; 5],
    ) -> S3Result<Self> {
        let names: Vec<String> = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| n.starts_with("x-amz-checksum-"))
            .collect();
        Ok(Expected {
            md5: md5_of(content_md5)?,
            len: Some(announced(headers, content_length)?),
            sums: dto::Checksum {
                checksum_crc32: crc32.clone(),
                checksum_crc32c: crc32c.clone(),
                checksum_sha1: sha1.clone(),
                checksum_sha256: sha256.clone(),
                checksum_crc64nvme: crc64nvme.clone(),
                ..Default::default()
            },
            trailer: trailer.filter(|_| !names.is_empty()).map(|t| (t, names)),
        })
    }

    /// A hasher for every algorithm the request declares a value of.
    fn hasher(&self) -> ChecksumHasher {
        let named = |alg: &str, header: &Option<String>| {
            header.is_some()
                || self
                    .trailer
                    .as_ref()
                    .is_some_and(|(_, n)| n.iter().any(|n| n == &format!("x-amz-checksum-{alg}")))
        };
        let s = &self.sums;
        ChecksumHasher {
            crc32: named("crc32", &s.checksum_crc32).then(Crc32::new),
            crc32c: named("crc32c", &s.checksum_crc32c).then(Crc32c::new),
            sha1: named("sha1", &s.checksum_sha1).then(Sha1::new),
            sha256: named("sha256", &s.checksum_sha256).then(Sha256::new),
            crc64nvme: named("crc64nvme", &s.checksum_crc64nvme).then(Crc64Nvme::new),
        }
    }

    /// The first declared checksum the computed ones contradict, by its name.
    fn contradicted(&self, got: &dto::Checksum) -> Option<&'static str> {
        let trailer = |name: &str| -> Option<String> {
            let (t, _) = self.trailer.as_ref()?;
            t.read(|h| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .flatten()
        };
        let s = &self.sums;
        let pairs: [(&'static str, &Option<String>, &Option<String>); 5] = [
            (
                "x-amz-checksum-crc32",
                &s.checksum_crc32,
                &got.checksum_crc32,
            ),
            (
                "x-amz-checksum-crc32c",
                &s.checksum_crc32c,
                &got.checksum_crc32c,
            ),
            ("x-amz-checksum-sha1", &s.checksum_sha1, &got.checksum_sha1),
            (
                "x-amz-checksum-sha256",
                &s.checksum_sha256,
                &got.checksum_sha256,
            ),
            (
                "x-amz-checksum-crc64nvme",
                &s.checksum_crc64nvme,
                &got.checksum_crc64nvme,
            ),
        ];
        pairs.into_iter().find_map(|(name, header, computed)| {
            let want = header.clone().or_else(|| trailer(name))?;
            (computed.as_deref() != Some(want.as_str())).then_some(name)
        })
    }
}

/// The most one PutObject or UploadPart may carry (S3's limit): a larger announced length
/// is refused before anything is read or sent on.
pub const MAX_PUT: u64 = 5 << 30;

/// The length a request announced for its body: `x-amz-decoded-content-length` for an
/// `aws-chunked` body, else `Content-Length`; a body of unknown length is refused (411),
/// as S3 does, since both kinds of destination need the length up front, and one over
/// [`MAX_PUT`] too (EntityTooLarge).
fn announced(headers: &HeaderMap, content_length: Option<i64>) -> S3Result<u64> {
    let decoded = headers
        .get("x-amz-decoded-content-length")
        .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()));
    let n = match (decoded, content_length.map(u64::try_from)) {
        (Some(Some(n)), _) | (None, Some(Ok(n))) => n,
        (Some(None), _) => {
            return Err(s3_error!(
                InvalidArgument,
                "x-amz-decoded-content-length is not a length"
            ));
        }
        _ => return Err(s3_error!(MissingContentLength)),
    };
    match n <= MAX_PUT {
        true => Ok(n),
        false => Err(s3_error!(
            EntityTooLarge,
            "{n} bytes: one upload carries at most {MAX_PUT}"
        )),
    }
}

/// A `Content-MD5` header's digest; InvalidDigest when it is not one.
fn md5_of(b64: &Option<String>) -> S3Result<Option<[u8; 16]>> {
    use base64::Engine;
    let Some(b64) = b64 else { return Ok(None) };
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|d| <[u8; 16]>::try_from(d).ok())
        .map(Some)
        .ok_or_else(|| s3_error!(InvalidDigest))
}

/// How a checked body ended.
#[derive(Default)]
pub enum Verdict {
    /// Not read to its end yet.
    #[default]
    Unread,
    /// Whole and as declared: its MD5, and the declared checksums it was verified
    /// against (answered back to the client, as S3 does).
    Whole([u8; 16], dto::Checksum),
    /// Refused, with why.
    Refused(Refused),
}

/// The shared cell a [`Checked`] body leaves its verdict in.
pub type VerdictCell = Arc<Mutex<Verdict>>;

/// A body checked as it streams, as barge's stores take it.
pub struct Checked {
    inner: StreamingBlob,
    key: ObjectKey,
    md5: Md5,
    sums: Option<ChecksumHasher>,
    len: u64,
    expected: Expected,
    verdict: VerdictCell,
    done: bool,
}

impl Checked {
    /// `body` (empty if none) checked against `expected`; its verdict lands in the cell.
    pub fn new(
        body: Option<StreamingBlob>,
        key: &ObjectKey,
        expected: Expected,
    ) -> (Self, VerdictCell) {
        let verdict = VerdictCell::default();
        let inner = body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>())
        });
        let c = Checked {
            inner,
            key: key.clone(),
            md5: Md5::new(),
            sums: Some(expected.hasher()),
            len: 0,
            expected,
            verdict: verdict.clone(),
            done: false,
        };
        (c, verdict)
    }

    fn refuse(&mut self, r: Refused, why: String) -> Poll<Option<crate::Result<Bytes>>> {
        if let Ok(mut v) = self.verdict.lock() {
            *v = Verdict::Refused(r);
        }
        Poll::Ready(Some(Err(Error::object(&self.key, why))))
    }

    /// The end of the body: the declared length and sums against what came.
    fn end(&mut self) -> Poll<Option<crate::Result<Bytes>>> {
        let d: [u8; 16] = self.md5.clone().finalize().into();
        if self.expected.md5.is_some_and(|w| w != d) {
            return self.refuse(Refused::BadDigest, "Content-MD5 does not match".into());
        }
        if let Some(w) = self.expected.len.filter(|w| *w != self.len) {
            let why = format!("{} bytes came of the {w} announced", self.len);
            return self.refuse(Refused::IncompleteBody, why);
        }
        let got = self
            .sums
            .take()
            .map(ChecksumHasher::finalize)
            .unwrap_or_default();
        if let Some(name) = self.expected.contradicted(&got) {
            return self.refuse(Refused::BadDigest, format!("{name} does not match"));
        }
        if let Ok(mut v) = self.verdict.lock() {
            *v = Verdict::Whole(d, got);
        }
        Poll::Ready(None)
    }
}

impl Stream for Checked {
    type Item = crate::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => {
                self.md5.update(&b);
                if let Some(h) = self.sums.as_mut() {
                    h.update(&b);
                }
                self.len += b.len() as u64;
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                self.refuse(Refused::IncompleteBody, format!("request body: {e}"))
            }
            Poll::Ready(None) => {
                self.done = true;
                self.end()
            }
        }
    }
}

/// The verdict a body left, once its stream ended.
pub fn verdict(cell: &VerdictCell) -> Verdict {
    cell.lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_lengths_and_digests_that_cannot_be_are_refused() {
        let none: &Option<String> = &None;
        let ask = |headers: &[(&'static str, &str)], md5: Option<&str>, len: Option<i64>| {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(*k, v.parse().unwrap());
            }
            let md5 = md5.map(str::to_string);
            Expected::declared((&h, None), &md5, len, [none; 5]).map(|e| e.len)
        };
        let code = |r: S3Result<Option<u64>>| r.unwrap_err().code().as_str().to_string();
        assert_eq!(ask(&[], None, Some(10)).unwrap(), Some(10));
        let decoded = [("x-amz-decoded-content-length", "7")];
        assert_eq!(ask(&decoded, None, Some(0)).unwrap(), Some(7));
        assert_eq!(code(ask(&[], None, None)), "MissingContentLength");
        assert_eq!(code(ask(&[], None, Some(-1))), "MissingContentLength");
        let junk = [("x-amz-decoded-content-length", "-5")];
        assert_eq!(code(ask(&junk, None, Some(0))), "InvalidArgument");
        let huge = [("x-amz-decoded-content-length", "18446744073709551615")];
        assert_eq!(code(ask(&huge, None, Some(0))), "EntityTooLarge");
        assert_eq!(code(ask(&[], None, Some(6 << 30))), "EntityTooLarge");
        assert_eq!(
            code(ask(&[], Some("not base64!"), Some(1))),
            "InvalidDigest"
        );
        assert_eq!(code(ask(&[], Some("AAAA"), Some(1))), "InvalidDigest");
    }

    fn blob(parts: &[&'static [u8]]) -> StreamingBlob {
        let items: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        StreamingBlob::wrap(futures::stream::iter(items))
    }

    async fn drain(c: Checked) -> Result<Vec<u8>, String> {
        let mut out = vec![];
        let mut c = c;
        while let Some(b) = c.next().await {
            out.extend_from_slice(&b.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[tokio::test]
    async fn declared_sums_are_checked_at_the_end_of_the_body() {
        let key = ObjectKey::from("k");
        let crc = b64(&Crc32::checksum(b"hello world"));
        let sha = b64(Sha256::checksum(b"hello world").as_ref());
        let good = Expected {
            len: Some(11),
            sums: dto::Checksum {
                checksum_crc32: Some(crc.clone()),
                checksum_sha256: Some(sha),
                ..Default::default()
            },
            ..Default::default()
        };
        let (c, cell) = Checked::new(Some(blob(&[b"hello", b" world"])), &key, good);
        assert_eq!(drain(c).await.as_deref(), Ok(&b"hello world"[..]));
        let want: [u8; 16] = Md5::digest(b"hello world").into();
        assert!(
            matches!(verdict(&cell), Verdict::Whole(d, s) if d == want && s.checksum_crc32.is_some())
        );

        let wrong = Expected {
            sums: dto::Checksum {
                checksum_crc32: Some(crc),
                ..Default::default()
            },
            ..Default::default()
        };
        let (c, cell) = Checked::new(Some(blob(&[b"hello", b" World"])), &key, wrong);
        let e = drain(c).await.expect_err("a contradicted CRC32 is refused");
        assert!(e.contains("x-amz-checksum-crc32"), "{e}");
        assert!(matches!(
            verdict(&cell),
            Verdict::Refused(Refused::BadDigest)
        ));

        let short = Expected {
            len: Some(12),
            ..Default::default()
        };
        let (c, cell) = Checked::new(Some(blob(&[b"hello world"])), &key, short);
        assert!(drain(c).await.is_err());
        assert!(matches!(
            verdict(&cell),
            Verdict::Refused(Refused::IncompleteBody)
        ));
    }
}

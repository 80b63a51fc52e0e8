//! Multipart uploads through the gateway: parts are kept as files in the state directory
//! (`gateway/uploads/<id>/`) until the upload completes, then sent to the destination as
//! one object, whatever multipart scheme the destination itself uses (S3 parts, a Swift
//! SLO): the client's ETag is S3's `md5-of-part-md5s-N` either way.
//!
//! A part is acknowledged only once its file is synced and renamed into place, so a
//! crash loses no acknowledged part. Each part's file is named `<number>-<md5 hex>`: one
//! rename publishes both.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::checked::{self, Checked, Verdict, VerdictCell};
use crate::backend::Body;
use crate::error::{Error, Result};

/// S3's smallest part, except the last.
pub const MIN_PART: u64 = 5 << 20;
/// S3's part numbers: 1 ..= this.
pub const MAX_PARTS: i32 = 10_000;

/// What an upload will write, recorded when it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    pub key: String,
    pub content_type: Option<String>,
    pub user_meta: Vec<(String, String)>,
    /// Unix seconds.
    pub started: u64,
}

/// One stored part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: i32,
    pub size: u64,
    /// MD5 hex of the part.
    pub etag: String,
}

/// Why a part or a completion is refused (the client's fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NoSuchUpload,
    BadDigest,
    IncompleteBody,
    InvalidPart(i32),
    InvalidPartOrder,
    EntityTooSmall(i32),
    InvalidArgument(String),
}

/// The uploads under one directory.
pub struct Uploads {
    dir: PathBuf,
}

/// The document of an upload, beside its parts.
const UPLOAD_DOC: &str = "upload.json";

impl Uploads {
    pub fn new(dir: PathBuf) -> Self {
        Uploads { dir }
    }

    fn io(&self, what: &'static str, p: &Path, e: std::io::Error) -> Error {
        Error::io(what, p, e)
    }

    /// The directory of upload `id`, if `id` is one of ours (hex only: never a path).
    fn upload_dir(&self, id: &str) -> Option<PathBuf> {
        (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| self.dir.join(id))
    }

    /// Starts an upload; returns its id.
    pub async fn create(&self, u: &Upload) -> Result<String> {
        let id = hex::encode(crate::crypto::random_bytes::<16>());
        let dir = self.dir.join(&id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| self.io("gateway uploads: create", &dir, e))?;
        let doc = serde_json::to_vec(u).map_err(|e| Error::Encode {
            what: "upload document".into(),
            message: e.to_string(),
        })?;
        write_synced(&dir.join(UPLOAD_DOC), &doc)
            .await
            .map_err(|e| self.io("gateway uploads: create", &dir, e))?;
        Ok(id)
    }

    /// The upload `id` of `key`, if it exists.
    pub async fn get(&self, id: &str, key: &str) -> Result<Option<Upload>> {
        let Some(dir) = self.upload_dir(id) else {
            return Ok(None);
        };
        let p = dir.join(UPLOAD_DOC);
        let bytes = match tokio::fs::read(&p).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("gateway uploads: read", &p, e)),
        };
        let u: Upload = serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            what: p.display().to_string(),
            message: e.to_string(),
        })?;
        Ok((u.key == key).then_some(u))
    }

    /// Stores part `number` of upload `id` from `body` (checked as it streams, its
    /// verdict in `verdict`); returns its MD5 hex, or why it was refused (nothing kept).
    pub async fn put_part(
        &self,
        id: &str,
        number: i32,
        mut body: Checked,
        verdict: &VerdictCell,
    ) -> Result<std::result::Result<String, Refused>> {
        let Some(dir) = self.upload_dir(id) else {
            return Ok(Err(Refused::NoSuchUpload));
        };
        if !(1..=MAX_PARTS).contains(&number) {
            return Ok(Err(Refused::InvalidArgument(format!(
                "part number {number}: from 1 to {MAX_PARTS}"
            ))));
        }
        let tmp = dir.join(format!(
            ".{number:05}.{}",
            hex::encode(crate::crypto::random_bytes::<8>())
        ));
        let mut f = match tokio::fs::File::create_new(&tmp).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err(Refused::NoSuchUpload));
            }
            Err(e) => return Err(self.io("gateway uploads: write", &tmp, e)),
        };
        let mut fail = None;
        while let Some(chunk) = body.next().await {
            let written = match chunk {
                Ok(b) => f.write_all(&b).await,
                Err(_) => break,
            };
            if let Err(e) = written {
                fail = Some(Err(self.io("gateway uploads: write", &tmp, e)));
                break;
            }
        }
        let digest = match (fail, checked::verdict(verdict)) {
            (Some(e), _) => Err(e),
            (None, Verdict::Whole(d, _)) => match f.sync_all().await {
                Ok(()) => Ok(d),
                Err(e) => Err(Err(self.io("gateway uploads: sync", &tmp, e))),
            },
            (None, Verdict::Refused(r)) => Err(Ok(Err(r))),
            (None, Verdict::Unread) => Err(Ok(Err(Refused::IncompleteBody))),
        };
        drop(f);
        let digest = match digest {
            Ok(d) => d,
            Err(r) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return r;
            }
        };
        let etag = hex::encode(digest);
        let name = dir.join(format!("{number:05}-{etag}"));
        let old = self.parts(id).await?;
        tokio::fs::rename(&tmp, &name)
            .await
            .map_err(|e| self.io("gateway uploads: rename", &name, e))?;
        sync_dir(&dir)
            .await
            .map_err(|e| self.io("gateway uploads: sync", &dir, e))?;
        // A part uploaded again replaces the earlier one of its number.
        for p in old.iter().filter(|p| p.number == number && p.etag != etag) {
            let _ = tokio::fs::remove_file(dir.join(format!("{:05}-{}", p.number, p.etag))).await;
        }
        Ok(Ok(etag))
    }

    /// The parts of upload `id`, by number.
    pub async fn parts(&self, id: &str) -> Result<Vec<Part>> {
        let Some(dir) = self.upload_dir(id) else {
            return Ok(vec![]);
        };
        let mut rd = match tokio::fs::read_dir(&dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(self.io("gateway uploads: list", &dir, e)),
        };
        let mut out = vec![];
        while let Some(e) = rd
            .next_entry()
            .await
            .map_err(|e| self.io("gateway uploads: list", &dir, e))?
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((n, etag)) = name.split_once('-') else {
                continue;
            };
            let (Ok(number), true) = (n.parse::<i32>(), etag.len() == 32) else {
                continue;
            };
            let size = e
                .metadata()
                .await
                .map_err(|x| self.io("gateway uploads: stat", &e.path(), x))?
                .len();
            out.push(Part {
                number,
                size,
                etag: etag.to_string(),
            });
        }
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    /// The parts a completion names (number, ETag), checked against the stored ones:
    /// ascending, each stored with that ETag, all but the last at least [`MIN_PART`].
    pub async fn chosen(
        &self,
        id: &str,
        asked: &[(i32, String)],
    ) -> Result<std::result::Result<Vec<Part>, Refused>> {
        let stored = self.parts(id).await?;
        let mut out: Vec<Part> = vec![];
        for (n, etag) in asked {
            if out.last().is_some_and(|p| p.number >= *n) {
                return Ok(Err(Refused::InvalidPartOrder));
            }
            match stored
                .iter()
                .find(|p| p.number == *n && p.etag == etag.trim_matches('"'))
            {
                Some(p) => out.push(p.clone()),
                None => return Ok(Err(Refused::InvalidPart(*n))),
            }
        }
        if out.is_empty() {
            return Ok(Err(Refused::InvalidArgument("no parts".into())));
        }
        if let Some(p) = out[..out.len() - 1].iter().find(|p| p.size < MIN_PART) {
            return Ok(Err(Refused::EntityTooSmall(p.number)));
        }
        Ok(Ok(out))
    }

    /// The object the parts make, read from their files in order.
    pub fn body(&self, id: &str, parts: &[Part]) -> Body {
        let files: Vec<PathBuf> = parts
            .iter()
            .map(|p| {
                self.dir
                    .join(id)
                    .join(format!("{:05}-{}", p.number, p.etag))
            })
            .collect();
        let s = futures::stream::iter(files)
            .then(|p| async move {
                let f = tokio::fs::File::open(&p)
                    .await
                    .map_err(|e| Error::io("gateway uploads: read", &p, e))?;
                Ok::<_, Error>(
                    tokio_util::io::ReaderStream::with_capacity(f, 256 << 10)
                        .map(move |r| r.map_err(|e| Error::io("gateway uploads: read", &p, e))),
                )
            })
            .map(|r| match r {
                Ok(s) => s.left_stream(),
                Err(e) => futures::stream::once(async { Err(e) }).right_stream(),
            })
            .flatten();
        Box::pin(s)
    }

    /// Forgets upload `id` and its parts.
    pub async fn remove(&self, id: &str) -> Result<bool> {
        let Some(dir) = self.upload_dir(id) else {
            return Ok(false);
        };
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("gateway uploads: remove", &dir, e)),
        }
    }

    /// The uploads in progress: (id, upload).
    pub async fn all(&self) -> Result<Vec<(String, Upload)>> {
        let mut rd = match tokio::fs::read_dir(&self.dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(self.io("gateway uploads: list", &self.dir, e)),
        };
        let mut out = vec![];
        while let Some(e) = rd
            .next_entry()
            .await
            .map_err(|x| self.io("gateway uploads: list", &self.dir, x))?
        {
            let id = e.file_name().to_string_lossy().into_owned();
            let p = e.path().join(UPLOAD_DOC);
            if self.upload_dir(&id).is_none() {
                continue;
            }
            if let Ok(b) = tokio::fs::read(&p).await
                && let Ok(u) = serde_json::from_slice::<Upload>(&b)
            {
                out.push((id, u));
            }
        }
        out.sort_by(|a, b| (&a.1.key, a.1.started).cmp(&(&b.1.key, b.1.started)));
        Ok(out)
    }
}

/// S3's multipart ETag: the MD5 of the parts' binary MD5s, then `-<parts>`.
pub fn multipart_etag(parts: &[Part]) -> String {
    let mut h = Md5::new();
    for p in parts {
        if let Ok(b) = hex::decode(&p.etag) {
            h.update(&b);
        }
    }
    format!("{}-{}", hex::encode(h.finalize()), parts.len())
}

async fn write_synced(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = tokio::fs::File::create(p).await?;
    f.write_all(data).await?;
    f.sync_all().await
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A part body with the `Content-MD5` and length a client declared.
    fn body(b: &'static [u8], md5: Option<[u8; 16]>, len: Option<u64>) -> (Checked, VerdictCell) {
        let blob =
            s3s::dto::StreamingBlob::wrap(futures::stream::iter(vec![Ok::<_, std::io::Error>(
                Bytes::from_static(b),
            )]));
        let expected = checked::Expected {
            md5,
            len,
            ..Default::default()
        };
        Checked::new(Some(blob), &crate::object::ObjectKey::from("k"), expected)
    }

    async fn put(
        up: &Uploads,
        id: &str,
        n: i32,
        (b, v): (Checked, VerdictCell),
    ) -> std::result::Result<String, Refused> {
        up.put_part(id, n, b, &v).await.unwrap()
    }

    #[tokio::test]
    async fn parts_are_checked_kept_replaced_and_assembled_in_order() {
        let d = tempfile::tempdir().unwrap();
        let up = Uploads::new(d.path().join("uploads"));
        let u = Upload {
            key: "k".into(),
            content_type: None,
            user_meta: vec![],
            started: 1,
        };
        let id = up.create(&u).await.unwrap();
        assert!(up.get(&id, "k").await.unwrap().is_some());
        assert!(up.get(&id, "other").await.unwrap().is_none());
        assert!(up.get("../../etc", "k").await.unwrap().is_none());
        // A wrong Content-MD5 keeps nothing.
        let r = put(&up, &id, 1, body(b"aaa", Some([0; 16]), None)).await;
        assert_eq!(r, Err(Refused::BadDigest));
        assert!(up.parts(&id).await.unwrap().is_empty());
        let e1 = put(&up, &id, 1, body(b"old", None, None)).await.unwrap();
        let e1b = put(&up, &id, 1, body(b"one", None, Some(3))).await.unwrap();
        let e2 = put(&up, &id, 2, body(b"two", None, None)).await.unwrap();
        assert_ne!(e1, e1b);
        let parts = up.parts(&id).await.unwrap();
        assert_eq!(parts.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2]);
        // Out of order, an unknown ETag, a small part before the last.
        let ask = |v: &[(i32, &String)]| {
            v.iter()
                .map(|(n, e)| (*n, (*e).clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            up.chosen(&id, &ask(&[(2, &e2), (1, &e1b)])).await.unwrap(),
            Err(Refused::InvalidPartOrder)
        );
        assert_eq!(
            up.chosen(&id, &ask(&[(1, &e1)])).await.unwrap(),
            Err(Refused::InvalidPart(1))
        );
        assert_eq!(
            up.chosen(&id, &ask(&[(1, &e1b), (2, &e2)])).await.unwrap(),
            Err(Refused::EntityTooSmall(1))
        );
        let one = up.chosen(&id, &ask(&[(2, &e2)])).await.unwrap().unwrap();
        let got: Vec<Bytes> = up.body(&id, &one).map(|r| r.unwrap()).collect().await;
        assert_eq!(got.concat(), b"two");
        assert!(multipart_etag(&one).ends_with("-1"));
        assert!(up.remove(&id).await.unwrap());
        assert!(up.all().await.unwrap().is_empty());
    }
}

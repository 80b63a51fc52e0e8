//! A local directory tree as source and destination.
//!
//! Keys are paths relative to the root with `/` separators, as raw bytes (names need not
//! be UTF-8). The destination writes each object to a temporary file beside its final
//! name, fsyncs it, renames it into place and fsyncs the directory.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Body, ContentCheck, Destination, Listed, Opened, Placed, Reader, Source};
use crate::error::{Error, Result};
use crate::object::{ObjectKey, ObjectMeta};

/// Marker in the names of in-progress destination files; listings skip them.
pub const TMP_MARKER: &str = ".barge-tmp.";

/// Version tag of a local file: mtime (ns) and inode (the size is compared separately).
fn version_of(md: &std::fs::Metadata) -> String {
    format!(
        "mtime:{}.{:09} ino:{}",
        md.mtime(),
        md.mtime_nsec(),
        md.ino()
    )
}

/// Maps a key to a path under `root`, refusing keys that would escape it.
fn key_path(root: &Path, key: &ObjectKey) -> Result<PathBuf> {
    let mut p = root.to_path_buf();
    let mut parts = 0;
    for comp in key.as_bytes().split(|&b| b == b'/') {
        match comp {
            b"" | b"." | b".." => {
                return Err(Error::object(
                    key,
                    "key has an empty, '.' or '..' path component and cannot be a file name",
                ));
            }
            c => p.push(OsStr::from_bytes(c)),
        }
        parts += 1;
    }
    if parts == 0 {
        return Err(Error::object(key, "empty key"));
    }
    Ok(p)
}

/// True for a temporary file of an interrupted destination write: `.<name>.barge-tmp.<hex>`.
fn is_tmp_name(name: &[u8]) -> bool {
    name.first() == Some(&b'.')
        && name
            .windows(TMP_MARKER.len())
            .any(|w| w == TMP_MARKER.as_bytes())
}

/// Lists regular files under `root`. `skip_tmp` hides our own temporary files (in a
/// destination tree only: a source may hold any name).
fn walk(root: &Path, tx: &mpsc::Sender<Listed>, skip_tmp: bool) -> Result<()> {
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let item = match entry {
            Ok(e) => {
                let ft = e.file_type();
                if ft.is_dir() {
                    continue;
                }
                let rel = e.path().strip_prefix(root).unwrap_or(e.path());
                let key = ObjectKey::from_bytes(rel.as_os_str().as_bytes().to_vec());
                if skip_tmp && is_tmp_name(e.file_name().as_bytes()) {
                    continue;
                }
                if !ft.is_file() {
                    tracing::warn!("{}: skipped, not a regular file", e.path().display());
                    continue;
                }
                match e.metadata() {
                    Ok(md) => Listed::Object(ObjectMeta {
                        key,
                        size: md.len(),
                        version: version_of(&md),
                        content_type: None,
                        user_meta: vec![],
                    }),
                    Err(err) => Listed::Error {
                        key,
                        reason: format!("cannot stat: {err}"),
                    },
                }
            }
            Err(err) => {
                let key = err
                    .path()
                    .map(|p| {
                        p.strip_prefix(root)
                            .unwrap_or(p)
                            .as_os_str()
                            .as_bytes()
                            .to_vec()
                    })
                    .unwrap_or_default();
                Listed::Error {
                    key: ObjectKey::from_bytes(key),
                    reason: format!("cannot list: {err}"),
                }
            }
        };
        if tx.blocking_send(item).is_err() {
            break;
        }
    }
    Ok(())
}

/// A directory tree read as a source.
pub struct LocalSource {
    root: PathBuf,
}

impl LocalSource {
    pub fn new(root: PathBuf) -> Result<Self> {
        let md = std::fs::metadata(&root).map_err(|e| Error::Source {
            url: root.display().to_string(),
            message: format!("cannot open source directory: {e}"),
        })?;
        if !md.is_dir() {
            return Err(Error::Source {
                url: root.display().to_string(),
                message: "not a directory".into(),
            });
        }
        Ok(LocalSource { root })
    }
}

#[async_trait]
impl Source for LocalSource {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk(&root, &tx, false))
            .await
            .map_err(|e| Error::task(format!("listing {}", self.root.display()), e))?
    }

    async fn open(&self, meta: &ObjectMeta) -> Result<Opened> {
        let p = key_path(&self.root, &meta.key)?;
        let f = tokio::fs::File::open(&p)
            .await
            .map_err(|e| Error::object(&meta.key, format!("cannot open {}: {e}", p.display())))?;
        Ok(Opened {
            reader: super::Payload::File(f.into_std().await),
            content_type: None,
            user_meta: vec![],
            check: ContentCheck::Unchecked(
                "local file: no source checksum (size and mtime are checked)".into(),
            ),
            sum: None,
        })
    }

    async fn check_unchanged(&self, meta: &ObjectMeta) -> Result<()> {
        let p = key_path(&self.root, &meta.key)?;
        let md = tokio::fs::metadata(&p)
            .await
            .map_err(|e| Error::object(&meta.key, format!("vanished while read: {e}")))?;
        if md.len() != meta.size || version_of(&md) != meta.version {
            return Err(Error::object(
                &meta.key,
                format!(
                    "changed while read (size {} -> {}); will be fetched again on the next run",
                    meta.size,
                    md.len()
                ),
            ));
        }
        Ok(())
    }
}

/// A directory tree written as a destination.
pub struct LocalDest {
    root: PathBuf,
}

impl LocalDest {
    pub fn new(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(|e| Error::Destination {
            url: root.display().to_string(),
            message: format!("cannot create destination directory: {e}"),
        })?;
        Ok(LocalDest { root })
    }
}

impl LocalDest {
    /// The object's final path and a fresh temporary name beside it (its directory made).
    async fn prepare(&self, key: &ObjectKey) -> Result<(PathBuf, PathBuf)> {
        let path = key_path(&self.root, key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            Error::object(
                key,
                format!("cannot create the directory of {}: {e}", path.display()),
            )
        })?;
        let name = path.file_name().unwrap_or_default().as_bytes();
        let mut tmp_name = b".".to_vec();
        tmp_name.extend_from_slice(&name[..name.len().min(100)]);
        tmp_name.extend_from_slice(TMP_MARKER.as_bytes());
        tmp_name.extend_from_slice(hex::encode(crate::crypto::random_bytes::<6>()).as_bytes());
        let tmp = dir.join(OsStr::from_bytes(&tmp_name));
        Ok((path, tmp))
    }

    /// Renames a complete temporary file into place. Neither is synced here: the drain
    /// makes a whole batch durable with [`Destination::sync`] before it marks any of it
    /// drained (a crash before that leaves the objects to be written again).
    async fn commit(&self, key: &ObjectKey, tmp: &Path, path: &Path) -> Result<()> {
        tokio::fs::rename(tmp, path).await.map_err(|e| {
            Error::object(
                key,
                format!("cannot rename into place {}: {e}", path.display()),
            )
        })
    }
}

#[async_trait]
impl Destination for LocalDest {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, meta: &ObjectMeta, mut body: Body) -> Result<Option<Placed>> {
        let (path, tmp) = self.prepare(&meta.key).await?;
        let derr = |what: &str, e: std::io::Error| {
            Error::object(&meta.key, format!("{what} {}: {e}", path.display()))
        };
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| derr("cannot create a temporary file for", e))?;
        let res: Result<()> = async {
            let mut written = 0u64;
            while let Some(piece) = body.next().await {
                let piece = piece?;
                written += piece.len() as u64;
                f.write_all(&piece)
                    .await
                    .map_err(|e| derr("cannot write", e))?;
            }
            if written != meta.size {
                return Err(Error::object(
                    &meta.key,
                    format!("body had {written} bytes, expected {}", meta.size),
                ));
            }
            f.flush().await.map_err(|e| derr("cannot write", e))?;
            Ok(())
        }
        .await;
        drop(f);
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        self.commit(&meta.key, &tmp, &path).await?;
        Ok(Some(Placed {
            location: path.display().to_string(),
            etag: meta.size.to_string(),
        }))
    }

    fn can_copy(&self) -> bool {
        true
    }

    fn durable_on_put(&self) -> bool {
        false
    }

    /// One `syncfs` of the destination's filesystem: every file and directory entry
    /// written so far, in one go instead of two fsyncs per object.
    async fn sync(&self) -> Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let d = std::fs::File::open(&root)?;
            nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)).map_err(std::io::Error::from)
        })
        .await
        .map_err(|e| Error::task(format!("syncing {}", self.root.display()), e))?
        .map_err(|e| Error::Destination {
            url: self.url(),
            message: format!("syncfs failed: {e}"),
        })
    }

    /// A kernel-side copy (`copy_file_range`, a reflink where the filesystem shares
    /// extents) of a file this run wrote.
    async fn copy(&self, from: &Placed, meta: &ObjectMeta) -> Result<()> {
        let (path, tmp) = self.prepare(&meta.key).await?;
        let src = PathBuf::from(&from.location);
        let (t, key) = (tmp.clone(), meta.key.clone());
        let res = tokio::task::spawn_blocking(move || -> Result<u64> {
            let cerr = |what: &str, e: std::io::Error| {
                Error::object(&key, format!("{what} {}: {e}", t.display()))
            };
            std::fs::copy(&src, &t).map_err(|e| cerr("cannot copy into", e))
        })
        .await
        .map_err(|e| Error::task(format!("copying {}", from.location), e))?;
        let what = format!("copy of {}", from.location);
        let res = res.and_then(|n| from.check_copy(&meta.key, &what, Some(&n.to_string())));
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        self.commit(&meta.key, &tmp, &path).await?;
        Ok(())
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk(&root, &tx, true))
            .await
            .map_err(|e| Error::task(format!("listing {}", self.root.display()), e))?
    }

    async fn cleanup(&self) -> Result<u64> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for e in walkdir::WalkDir::new(&root).into_iter().flatten() {
                if e.file_type().is_file() && is_tmp_name(e.file_name().as_bytes()) {
                    std::fs::remove_file(e.path()).map_err(|err| {
                        Error::io("removing an interrupted upload", e.path(), err)
                    })?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
        .map_err(|e| Error::task(format!("cleaning up {}", self.root.display()), e))?
    }

    async fn get(&self, key: &ObjectKey) -> Result<Reader> {
        let p = key_path(&self.root, key)?;
        let f = tokio::fs::File::open(&p)
            .await
            .map_err(|e| Error::object(key, format!("cannot open {}: {e}", p.display())))?;
        Ok(Box::new(tokio::io::BufReader::with_capacity(1 << 20, f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        let r = Path::new("/dst");
        assert!(key_path(r, &"a/../../etc/passwd".into()).is_err());
        assert!(key_path(r, &"/abs".into()).is_err());
        assert!(key_path(r, &"".into()).is_err());
        assert_eq!(
            key_path(r, &"a/b c".into()).unwrap(),
            Path::new("/dst/a/b c")
        );
    }
}

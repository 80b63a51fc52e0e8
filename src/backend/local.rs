//! A local directory tree as source and destination.
//!
//! Keys are paths relative to the root with `/` separators, as raw bytes (names need not
//! be UTF-8). The destination writes each object to a temporary file beside its final
//! name and renames it into place, in one blocking task per object; the drain then makes
//! a batch of them durable with one `syncfs` ([`Destination::sync`]).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use std::io::Write;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{
    Body, ContentCheck, Deleted, Destination, Expect, Listed, Opened, Placed, Reader, Source,
};
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

/// What a directory entry that is not a regular file is, for the skipped count.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "not a regular file"
    }
}

/// Lists regular files under `root`. `skip_tmp` hides our own temporary files (in a
/// destination tree only: a source may hold any name).
fn walk(root: &Path, tx: &mpsc::Sender<Listed>, skip_tmp: bool, follow: bool) -> Result<()> {
    for entry in walkdir::WalkDir::new(root)
        .follow_links(follow)
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
                    let kind = kind_of(ft);
                    tracing::warn!("{}: skipped, a {kind}", e.path().display());
                    if tx.blocking_send(Listed::Skipped { key, kind }).is_err() {
                        break;
                    }
                    continue;
                }
                match e.metadata() {
                    Ok(md) => Listed::Object(ObjectMeta {
                        key,
                        size: md.len(),
                        version: version_of(&md),
                        content_type: None,
                        user_meta: vec![],
                        modified: u64::try_from(std::os::unix::fs::MetadataExt::mtime(&md)).ok(),
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
    /// Symbolic links are followed (else skipped and counted).
    follow_symlinks: bool,
    /// [`FILE_READERS`] slots, each held by a [`LocalFile`] until it is dropped.
    readers: Arc<Semaphore>,
}

/// Source files read at once. Each is read on its own blocking thread; beyond a queue
/// deep enough for a fast drive, more only adds threads and switches between them
/// (measured with 256 fetchers: over a hundred threads, a seventh of the CPU in futex
/// wake-ups).
pub const FILE_READERS: usize = 32;

impl LocalSource {
    /// The tree under `root`; with `follow_symlinks`, symbolic links are followed (a loop
    /// is an entry that cannot be listed), else skipped and counted.
    pub fn new(root: PathBuf, follow_symlinks: bool) -> Result<Self> {
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
        Ok(LocalSource {
            root,
            follow_symlinks,
            readers: Arc::new(Semaphore::new(FILE_READERS)),
        })
    }
}

#[async_trait]
impl Source for LocalSource {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        let root = self.root.clone();
        let follow = self.follow_symlinks;
        tokio::task::spawn_blocking(move || walk(&root, &tx, false, follow))
            .await
            .map_err(|e| Error::task(format!("listing {}", self.root.display()), e))?
    }

    async fn open(&self, meta: &ObjectMeta) -> Result<Opened> {
        let path = key_path(&self.root, &meta.key)?;
        let slot = self
            .readers
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::task("reading a source file", e))?;
        let mut user_meta = vec![];
        crate::object::carry_mtime(&mut user_meta, meta.modified);
        Ok(Opened {
            reader: super::Payload::File(LocalFile { path, _slot: slot }),
            content_type: None,
            user_meta,
            check: ContentCheck::Unchecked(
                "local file: no source checksum (size and mtime are checked)".into(),
            ),
            sum: None,
        })
    }

    /// Checked already: the chunking thread compares the open file with its listing
    /// ([`LocalFile::check_unchanged`]) before it closes it.
    async fn check_unchanged(&self, _meta: &ObjectMeta) -> Result<()> {
        Ok(())
    }
}

/// A source file not opened yet: the chunking thread opens it, reads it and checks it
/// ([`LocalFile::check_unchanged`]) without a hand-off to another thread.
pub struct LocalFile {
    path: PathBuf,
    /// One of the source's [`FILE_READERS`] slots.
    _slot: OwnedSemaphorePermit,
}

impl LocalFile {
    /// Opens the file for reading (blocking).
    /// A file deleted since it was listed is [`Error::Gone`].
    pub fn open(&self, key: &ObjectKey) -> Result<std::fs::File> {
        std::fs::File::open(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Gone {
                what: format!("object {key}: {} is gone: {e}", self.path.display()),
            },
            _ => Error::object(key, format!("cannot open {}: {e}", self.path.display())),
        })
    }

    /// After the whole file was read through `f`: the open file still has the listed size
    /// and version (mtime, inode), so what was read is the listed version. A file replaced
    /// under the same name meanwhile is a newer version the next pass picks up.
    pub fn check_unchanged(&self, meta: &ObjectMeta, f: &std::fs::File) -> Result<()> {
        let md = f
            .metadata()
            .map_err(|e| Error::object(&meta.key, format!("cannot stat after reading: {e}")))?;
        same_version(meta, &md)
    }
}

/// Refuses a file whose size or version differs from its listing.
fn same_version(meta: &ObjectMeta, md: &std::fs::Metadata) -> Result<()> {
    if md.len() != meta.size || version_of(md) != meta.version {
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

/// A directory tree written as a destination.
pub struct LocalDest {
    root: PathBuf,
    /// [`FILE_WRITERS`] slots.
    writers: Semaphore,
}

impl LocalDest {
    /// One of the [`FILE_WRITERS`] slots.
    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.writers
            .acquire()
            .await
            .map_err(|e| Error::task("writing a destination file", e))
    }

    pub fn new(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(|e| Error::Destination {
            url: root.display().to_string(),
            message: format!("cannot create destination directory: {e}"),
        })?;
        Ok(LocalDest {
            root,
            writers: Semaphore::new(FILE_WRITERS),
        })
    }
}

/// Bodies up to this many bytes are gathered and written by one blocking task (one
/// thread hand-off per object, not one per system call); larger ones stream to a
/// blocking writer. The drain's byte budget already counts them.
const GATHER_MAX: usize = 4 << 20;

/// Files written at once. More threads creating files in one directory only queue on
/// its lock (measured: 64 writers spent more CPU spinning on it than writing); the drain's
/// other workers meanwhile read and check the next objects.
const FILE_WRITERS: usize = 8;

/// Pieces queued between a large body and its blocking writer.
const STREAM_DEPTH: usize = 4;

/// Where one object is written: a temporary name beside its final path.
struct Target {
    key: ObjectKey,
    path: PathBuf,
    tmp: PathBuf,
    size: u64,
}

impl Target {
    /// The object `meta` under `root`, with a fresh temporary name beside it.
    fn new(root: &Path, meta: &ObjectMeta) -> Result<Self> {
        let path = key_path(root, &meta.key)?;
        Ok(Target {
            key: meta.key.clone(),
            tmp: tmp_path(&path),
            path,
            size: meta.size,
        })
    }

    fn err(&self, what: &str, e: std::io::Error) -> Error {
        Error::object(&self.key, format!("{what} {}: {e}", self.path.display()))
    }

    /// On the calling (blocking) thread: creates the temporary file, lets `fill` write it
    /// and renames it into place; a failure leaves nothing behind.
    /// Nothing is synced here: the drain makes a whole batch durable with
    /// [`Destination::sync`] before it marks any of it drained (a crash before that
    /// leaves the objects to be written again).
    fn place(&self, fill: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
        let res = self.fill_and_rename(fill);
        if res.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        res
    }

    fn fill_and_rename(&self, fill: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
        let mut f = self.create_tmp()?;
        fill(&mut f)?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| self.err("cannot rename into place", e))
    }

    /// Creates the temporary file, and its directory only when that is missing: most
    /// objects land in a directory an earlier one made, and cost one `open`, not a
    /// `mkdir` and a `stat` more.
    fn create_tmp(&self) -> Result<std::fs::File> {
        let f = match std::fs::File::create(&self.tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| self.err("cannot create the directory of", e))?;
                }
                std::fs::File::create(&self.tmp)
            }
            other => other,
        };
        f.map_err(|e| self.err("cannot create a temporary file for", e))
    }

    /// Places the pieces of a body: `Some(None)` ends a complete body; pieces that stop
    /// without it (the body failed or was abandoned) leave nothing behind.
    fn write(&self, pieces: impl Iterator<Item = Option<Bytes>>) -> Result<()> {
        self.place(|f| self.write_pieces(f, pieces))
    }

    fn write_pieces(
        &self,
        f: &mut std::fs::File,
        mut pieces: impl Iterator<Item = Option<Bytes>>,
    ) -> Result<()> {
        let mut written = 0u64;
        loop {
            match pieces.next() {
                Some(Some(piece)) => {
                    written += piece.len() as u64;
                    f.write_all(&piece)
                        .map_err(|e| self.err("cannot write", e))?;
                }
                Some(None) => break,
                None => return Err(Error::object(&self.key, "body ended early; not written")),
            }
        }
        if written != self.size {
            return Err(Error::object(
                &self.key,
                format!("body had {written} bytes, expected {}", self.size),
            ));
        }
        Ok(())
    }
}

/// A fresh temporary name beside `path`: `.<name>.barge-tmp.<hex>`.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().as_bytes();
    let mut tmp_name = b".".to_vec();
    tmp_name.extend_from_slice(&name[..name.len().min(100)]);
    tmp_name.extend_from_slice(TMP_MARKER.as_bytes());
    tmp_name.extend_from_slice(format!("{:012x}", tmp_suffix()).as_bytes());
    path.with_file_name(OsStr::from_bytes(&tmp_name))
}

/// A temporary name's suffix: a random start drawn once per process, counted up per
/// file (unique within the process without a system call per object; another process
/// starts elsewhere), 48 bits as 12 hex digits.
fn tmp_suffix() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let start = *START.get_or_init(|| u64::from_le_bytes(crate::crypto::random_bytes::<8>()));
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    start.wrapping_add(n) & ((1 << 48) - 1)
}

/// Runs a file job on the blocking pool.
async fn blocking(job: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| Error::task("writing a destination file", e))?
}

/// Streams a large body to a blocking writer: the gathered head first, then each piece
/// as it comes, then the end mark; a failed body stops the writer without a rename.
async fn stream_to(target: Target, head: Vec<Bytes>, mut body: Body) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(STREAM_DEPTH);
    let writer = blocking(move || target.write(std::iter::from_fn(|| rx.blocking_recv())));
    let feed = async move {
        // A failed send means the writer stopped: its error is the one returned.
        for piece in head {
            if tx.send(Some(piece)).await.is_err() {
                return Ok(());
            }
        }
        while let Some(piece) = body.next().await {
            if tx.send(Some(piece?)).await.is_err() {
                return Ok(());
            }
        }
        let _ = tx.send(None).await;
        Ok(())
    };
    let (fed, written) = tokio::join!(feed, writer);
    fed.and(written)
}

#[async_trait]
impl Destination for LocalDest {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, meta: &ObjectMeta, mut body: Body) -> Result<Option<Placed>> {
        let target = Target::new(&self.root, meta)?;
        // Gather: a small body is written whole by one blocking task.
        let mut head = vec![];
        let mut held = 0;
        let whole = loop {
            if held > GATHER_MAX {
                break false;
            }
            match body.next().await {
                None => break true,
                Some(piece) => {
                    let piece = piece?;
                    held += piece.len();
                    head.push(piece);
                }
            }
        };
        let location = target.path.display().to_string();
        let _slot = self.slot().await?;
        if whole {
            let pieces = head.into_iter().map(Some).chain(std::iter::once(None));
            blocking(move || target.write(pieces)).await?;
        } else {
            stream_to(target, head, body).await?;
        }
        Ok(Some(Placed {
            location,
            etag: meta.size.to_string(),
            copyable: true,
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
        let target = Target::new(&self.root, meta)?;
        let from = from.clone();
        let _slot = self.slot().await?;
        blocking(move || {
            target.place(|tmp| {
                // std's File-to-File copy is copy_file_range (a reflink where shared).
                let n = std::fs::File::open(&from.location)
                    .and_then(|mut src| std::io::copy(&mut src, tmp))
                    .map_err(|e| target.err("cannot copy into", e))?;
                let what = format!("copy of {}", from.location);
                from.check_copy(&target.key, &what, Some(&n.to_string()))
            })
        })
        .await
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk(&root, &tx, true, false))
            .await
            .map_err(|e| Error::task(format!("listing {}", self.root.display()), e))?
    }

    /// Only the size is compared with what barge wrote (a file's ETag is its size): a
    /// file of another size at the path is someone else's and stays.
    async fn delete(&self, key: &ObjectKey, expect: &Expect) -> Result<Deleted> {
        let path = key_path(&self.root, key)?;
        let (root, key) = (self.root.clone(), key.clone());
        let size = std::fs::symlink_metadata(&path).map(|m| m.len());
        if let Some(why) = size
            .ok()
            .and_then(|n| expect.mismatch(n, Some(&n.to_string()), true))
        {
            return Ok(Deleted::Kept(why));
        }
        blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::object(
                        &key,
                        format!("cannot delete {}: {e}", path.display()),
                    ));
                }
            }
            // Directories the object's key made and that are now empty go too (the
            // source tree has none there either); the first non-empty one stops it.
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| *d != root && d.starts_with(&root)) {
                if std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await?;
        Ok(Deleted::Deleted)
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
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::Gone {
                    what: format!("object {key}: {}", p.display()),
                },
                _ => Error::object(key, format!("cannot open {}: {e}", p.display())),
            })?;
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

    fn meta(key: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            version: String::new(),
            content_type: None,
            user_meta: vec![],
            modified: None,
        }
    }

    /// A body of `pieces`, ending with an error when `fail_at_end` (what a drain body
    /// does when the whole object's BLAKE3 differs).
    fn body(pieces: Vec<Bytes>, fail_at_end: bool) -> Body {
        let mut items: Vec<Result<Bytes>> = pieces.into_iter().map(Ok).collect();
        if fail_at_end {
            items.push(Err(Error::object(ObjectKey::from("k"), "hash mismatch")));
        }
        Box::pin(futures::stream::iter(items))
    }

    /// Every file under `root`, temporary ones included.
    fn files(root: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn a_body_that_fails_after_its_last_byte_leaves_nothing_small_or_large() {
        let dir = tempfile::tempdir().unwrap();
        let dest = LocalDest::new(dir.path().to_path_buf()).unwrap();
        let small = vec![Bytes::from(vec![1u8; 1000])];
        let large: Vec<Bytes> = (0..5).map(|_| Bytes::from(vec![2u8; 1 << 20])).collect();
        for (done, (name, pieces)) in [("s/small", small), ("l/large", large)]
            .into_iter()
            .enumerate()
        {
            let n = pieces.iter().map(|p| p.len() as u64).sum();
            let r = dest.put(&meta(name, n), body(pieces.clone(), true)).await;
            assert!(r.is_err(), "{name}: a failed body was accepted");
            let left = files(dir.path());
            assert_eq!(left.len(), done, "{name}: left {left:?}");
            dest.put(&meta(name, n), body(pieces.clone(), false))
                .await
                .unwrap();
            let got = std::fs::read(dir.path().join(name)).unwrap();
            assert_eq!(got, pieces.concat(), "{name}");
        }
        assert_eq!(files(dir.path()).len(), 2);
    }

    #[tokio::test]
    async fn a_body_of_the_wrong_length_is_refused_small_or_large() {
        let dir = tempfile::tempdir().unwrap();
        let dest = LocalDest::new(dir.path().to_path_buf()).unwrap();
        let large: Vec<Bytes> = (0..5).map(|_| Bytes::from(vec![2u8; 1 << 20])).collect();
        let (a, b) = (meta("a", 999), meta("b", 1));
        let short = dest.put(&a, body(vec![Bytes::from_static(b"x")], false));
        assert!(short.await.is_err());
        assert!(dest.put(&b, body(large, false)).await.is_err());
        assert!(files(dir.path()).is_empty(), "left {:?}", files(dir.path()));
    }
}

//! A local directory tree as source and destination.
//!
//! Keys are paths relative to the root with `/` separators, as raw bytes (names need not
//! be UTF-8). Every path is resolved beneath a descriptor of the root held for the whole
//! run, without following a symbolic link ([`beneath`]): a link in the way is refused,
//! naming the object and the path (a source with `--follow-symlinks` follows links that
//! stay inside its root and skips the others). The destination writes each object to a
//! temporary file beside its final name, created `O_EXCL` under a name no one can guess
//! ([`TmpNames`]), and renames it into place, in one blocking task per object; the drain
//! then makes a batch of them durable with one `syncfs` ([`Destination::sync`]).
//! A file keeps its source file's permission bits ([`MODE_META`]).

mod beneath;
mod overlap;

pub(crate) use overlap::{dir_of, refuse_nested};

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use futures::StreamExt;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::io::Write;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{
    Body, ContentCheck, Deleted, Destination, Expect, Listed, Opened, Placed, Reader, Source,
    UploadJournal,
};
use crate::error::{Error, Result};
use crate::object::{ObjectKey, ObjectMeta};
use beneath::{Dir, Root};

/// Marker in the names of in-progress destination files; verify does not count them as
/// extra.
pub const TMP_MARKER: &str = ".barge-tmp.";

/// Where a directory source's file mode travels with its object (listing, catalog
/// record, destination), as octal permission bits: a carried name (see
/// [`crate::object::carried`]), which S3 and Swift destinations ignore and which no
/// store's user metadata can hold, so only a directory source ever sets it.
pub(crate) const MODE_META: &str = ":mode";

/// Mode of a file written at a directory destination when its object carries none (an
/// S3 or Swift source, or a record staged before modes were kept), less the umask.
pub(crate) const DEFAULT_MODE: u32 = 0o644;

/// The permission bits kept from a source file: read, write and execute for owner,
/// group and others; never setuid, setgid or sticky.
const MODE_BITS: u32 = 0o777;

/// What a `--follow-symlinks` listing reports for a link whose target is outside the
/// source's root (it is skipped, never read).
pub(crate) const LEAVING: &str = "symbolic link leaving the source";

/// Version tag of a local file: mtime (ns) and inode (the size is compared separately).
fn version_of(md: &std::fs::Metadata) -> String {
    format!(
        "mtime:{}.{:09} ino:{}",
        md.mtime(),
        md.mtime_nsec(),
        md.ino()
    )
}

/// The mode a file is written with at a directory destination (see [`MODE_META`]).
fn mode_of(meta: &ObjectMeta) -> u32 {
    meta.user_meta
        .iter()
        .find(|(k, _)| k == MODE_META)
        .and_then(|(_, v)| u32::from_str_radix(v, 8).ok())
        .map_or(DEFAULT_MODE, |m| m & MODE_BITS)
}

/// Maps a key to a path relative to the root, refusing keys that would escape it.
fn key_rel(key: &ObjectKey) -> Result<PathBuf> {
    let mut p = PathBuf::new();
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
    }
    if p.as_os_str().is_empty() {
        return Err(Error::object(key, "empty key"));
    }
    Ok(p)
}

/// An error of a path operation on `key` at `path`: a symbolic link (or `..`) in the
/// way is said to be one.
fn path_error(key: &ObjectKey, what: &str, path: &Path, e: Errno) -> Error {
    if beneath::is_link(e) {
        return Error::object(
            key,
            format!(
                "{what} {}: refused, a component of the path is a symbolic link (barge never follows links in a directory tree)",
                path.display()
            ),
        );
    }
    let e = std::io::Error::from(e);
    Error::object(key, format!("{what} {}: {e}", path.display()))
}

/// True for what looks like a temporary file of a destination write,
/// `.<name>.barge-tmp.<…>` (ours or anyone's): verify does not count it as extra.
pub(crate) fn is_tmp_name(name: &[u8]) -> bool {
    name.first() == Some(&b'.')
        && name
            .windows(TMP_MARKER.len())
            .any(|w| w == TMP_MARKER.as_bytes())
}

/// The run tag of one of barge's own temporary names,
/// `.<name>.barge-tmp.<tag: 16 hex>.<random: 16 hex>`; None for any other name.
fn tmp_tag(name: &[u8]) -> Option<&[u8]> {
    const HEX: usize = 16;
    let rest = name.len().checked_sub(TMP_MARKER.len() + 2 * HEX + 1)?;
    let (head, tail) = name.split_at(rest);
    let tail = tail.strip_prefix(TMP_MARKER.as_bytes())?;
    let (tag, random) = (&tail[..HEX], &tail[HEX..]);
    let hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (head.first() == Some(&b'.') && hex(tag) && random.first() == Some(&b'.') && hex(&random[1..]))
        .then_some(tag)
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

/// The key of a path found under `root`.
fn key_of(root: &Path, p: &Path) -> ObjectKey {
    let rel = p.strip_prefix(root).unwrap_or(p);
    ObjectKey::from_bytes(rel.as_os_str().as_bytes().to_vec())
}

/// Whether `p`, all links resolved, is `root` (canonical) or beneath it.
fn resolves_beneath(root: &Path, p: &Path) -> bool {
    std::fs::canonicalize(p).is_ok_and(|real| real.starts_with(root))
}

/// Lists the regular files under `root`, each with its permission bits
/// ([`MODE_META`]). With `follow`, symbolic links are followed where they resolve
/// inside the root; a link leading out of it is skipped as [`LEAVING`] (and a
/// directory there is not entered).
fn walk(root: &Path, tx: &mpsc::Sender<Listed>, follow: bool) -> Result<()> {
    let canonical = match follow {
        true => Some(std::fs::canonicalize(root).map_err(|e| Error::Source {
            url: root.display().to_string(),
            message: format!("cannot resolve the source directory: {e}"),
        })?),
        false => None,
    };
    let stays_inside = |e: &walkdir::DirEntry| {
        let Some(c) = &canonical else { return true };
        if !e.path_is_symlink() || resolves_beneath(c, e.path()) {
            return true;
        }
        tracing::warn!("{}: skipped, a {LEAVING}", e.path().display());
        let key = key_of(root, e.path());
        let _ = tx.blocking_send(Listed::Skipped { key, kind: LEAVING });
        false
    };
    let entries = walkdir::WalkDir::new(root)
        .follow_links(follow)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(stays_inside);
    for entry in entries {
        let item = match entry {
            Ok(e) => {
                let ft = e.file_type();
                if ft.is_dir() {
                    continue;
                }
                let key = key_of(root, e.path());
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
                        user_meta: vec![(
                            MODE_META.to_string(),
                            format!("{:o}", md.mode() & MODE_BITS),
                        )],
                        modified: u64::try_from(md.mtime()).ok(),
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
                    .map(|p| key_of(root, p))
                    .unwrap_or_else(|| ObjectKey::from_bytes(vec![]));
                Listed::Error {
                    key,
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
    root: Arc<Root>,
    /// With `--follow-symlinks`: the root with every link resolved (links are followed
    /// only where they resolve beneath it). None: no link is followed.
    canonical: Option<Arc<PathBuf>>,
    /// [`FILE_READERS`] slots, each held by a [`LocalFile`] until it is dropped.
    readers: Arc<Semaphore>,
}

/// Source files read at once. Each is read on its own blocking thread; beyond a queue
/// deep enough for a fast drive, more only adds threads and switches between them
/// (measured with 256 fetchers: over a hundred threads, a seventh of the CPU in futex
/// wake-ups).
pub const FILE_READERS: usize = 32;

impl LocalSource {
    /// The tree under `root`; with `follow_symlinks`, symbolic links that resolve inside
    /// the root are followed (a loop is an entry that cannot be listed) and the others
    /// skipped, else every link is skipped and counted.
    pub fn new(root: PathBuf, follow_symlinks: bool) -> Result<Self> {
        let refuse = |message: String| Error::Source {
            url: root.display().to_string(),
            message,
        };
        let md = std::fs::metadata(&root)
            .map_err(|e| refuse(format!("cannot open source directory: {e}")))?;
        if !md.is_dir() {
            return Err(refuse("not a directory".into()));
        }
        let dir =
            Root::open(&root).map_err(|e| refuse(format!("cannot open source directory: {e}")))?;
        let canonical = match follow_symlinks {
            true => Some(Arc::new(std::fs::canonicalize(&root).map_err(|e| {
                refuse(format!("cannot resolve the source directory: {e}"))
            })?)),
            false => None,
        };
        Ok(LocalSource {
            root: Arc::new(dir),
            canonical,
            readers: Arc::new(Semaphore::new(FILE_READERS)),
        })
    }
}

#[async_trait]
impl Source for LocalSource {
    fn url(&self) -> String {
        format!("file://{}", self.root.path().display())
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        let root = self.root.path().to_path_buf();
        let follow = self.canonical.is_some();
        tokio::task::spawn_blocking(move || walk(&root, &tx, follow))
            .await
            .map_err(|e| Error::task(format!("listing {}", self.root.path().display()), e))?
    }

    async fn open(&self, meta: &ObjectMeta) -> Result<Opened> {
        let rel = key_rel(&meta.key)?;
        let slot = self
            .readers
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::task("reading a source file", e))?;
        let mut user_meta: Vec<(String, String)> = meta
            .user_meta
            .iter()
            .filter(|(k, _)| k == MODE_META)
            .cloned()
            .collect();
        if user_meta.is_empty() {
            // Not from this source's listing (`--resume-listing-only` lists the catalog):
            // the mode is read here. The file itself is opened beneath the root later.
            let path = self.root.path().join(&rel);
            if let Ok(md) = std::fs::metadata(&path) {
                let mode = format!("{:o}", md.mode() & MODE_BITS);
                user_meta.push((MODE_META.to_string(), mode));
            }
        }
        crate::object::carry_mtime(&mut user_meta, meta.modified);
        Ok(Opened {
            reader: super::Payload::File(LocalFile {
                root: self.root.clone(),
                canonical: self.canonical.clone(),
                rel,
                _slot: slot,
            }),
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
    root: Arc<Root>,
    /// See [`LocalSource::canonical`].
    canonical: Option<Arc<PathBuf>>,
    /// The key as a path relative to the root.
    rel: PathBuf,
    /// One of the source's [`FILE_READERS`] slots.
    _slot: OwnedSemaphorePermit,
}

impl LocalFile {
    /// Opens the file for reading (blocking), beneath the root without following a link
    /// (with `--follow-symlinks`: at the path its links resolve to, which must be beneath
    /// the root). A file deleted since it was listed is [`Error::Gone`].
    pub fn open(&self, key: &ObjectKey) -> Result<std::fs::File> {
        let path = self.root.path().join(&self.rel);
        let gone = |e: &dyn std::fmt::Display| Error::Gone {
            what: format!("object {key}: {} is gone: {e}", path.display()),
        };
        let resolved;
        let rel = match &self.canonical {
            None => &self.rel,
            Some(c) => {
                let real = std::fs::canonicalize(&path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => gone(&e),
                    _ => Error::object(key, format!("cannot resolve {}: {e}", path.display())),
                })?;
                let leaving = || {
                    let (p, r) = (path.display(), real.display());
                    Error::object(key, format!("{p}: a {LEAVING} (to {r}); not read"))
                };
                resolved = real
                    .strip_prefix(c.as_path())
                    .map_err(|_| leaving())?
                    .to_path_buf();
                &resolved
            }
        };
        let fd = self
            .root
            .open_at(rel, OFlag::O_RDONLY, Mode::empty())
            .map_err(|e| match e {
                Errno::ENOENT => gone(&std::io::Error::from(e)),
                e => path_error(key, "cannot open", &path, e),
            })?;
        Ok(std::fs::File::from(fd))
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

/// The upload journal's key under which a directory destination records the tags of its
/// temporary names (see [`TmpNames`]).
const TAGS_KEY: &str = "temporary-name tags";

/// The temporary names of one opened destination:
/// `.<name>.barge-tmp.<tag>.<random>`. The tag (16 hex digits, drawn when the
/// destination is opened) is recorded in the drain's upload journal before the drain
/// writes anything, and `cleanup` removes only files whose name carries a tag recorded
/// by an earlier run of this state directory: a file of another writer, of another
/// state directory, or a source object named like a temporary file is never removed
/// (nobody can know a tag before the run that draws it writes its first temporary
/// file). The random part is a keyed BLAKE3 of a counter (a key drawn from getrandom
/// once): unguessable, with no system call per object, and the file is created
/// `O_EXCL | O_NOFOLLOW` besides, so nothing planted at a name is ever written through.
struct TmpNames {
    tag: String,
    key: [u8; 32],
    next: AtomicU64,
}

impl TmpNames {
    fn new() -> Self {
        TmpNames {
            tag: hex::encode(crate::crypto::random_bytes::<8>()),
            key: crate::crypto::random_bytes::<32>(),
            next: AtomicU64::new(0),
        }
    }

    /// A fresh temporary name for the file `name` (at most 100 bytes of it are kept).
    fn for_name(&self, name: &OsStr) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let random = blake3::keyed_hash(&self.key, &n.to_le_bytes());
        let name = name.as_bytes();
        let mut tmp = b".".to_vec();
        tmp.extend_from_slice(&name[..name.len().min(100)]);
        tmp.extend_from_slice(TMP_MARKER.as_bytes());
        tmp.extend_from_slice(self.tag.as_bytes());
        tmp.push(b'.');
        tmp.extend_from_slice(hex::encode(&random.as_bytes()[..8]).as_bytes());
        PathBuf::from(OsString::from_vec(tmp))
    }
}

/// A directory tree written as a destination.
pub struct LocalDest {
    root: Arc<Root>,
    /// [`FILE_WRITERS`] slots.
    writers: Semaphore,
    names: TmpNames,
    /// Where this run's tag is recorded (set by the drain before `cleanup`).
    journal: OnceLock<Arc<dyn UploadJournal>>,
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
        let refuse = |what: &str, e: std::io::Error| Error::Destination {
            url: root.display().to_string(),
            message: format!("cannot {what} destination directory: {e}"),
        };
        std::fs::create_dir_all(&root).map_err(|e| refuse("create", e))?;
        let dir = Root::open(&root).map_err(|e| refuse("open", e))?;
        Ok(LocalDest {
            root: Arc::new(dir),
            writers: Semaphore::new(FILE_WRITERS),
            names: TmpNames::new(),
            journal: OnceLock::new(),
        })
    }

    /// Where `meta` is written, under a fresh temporary name.
    fn target(&self, meta: &ObjectMeta) -> Result<Target> {
        let rel = key_rel(&meta.key)?;
        let name = rel.file_name().unwrap_or_default().to_os_string();
        Ok(Target {
            key: meta.key.clone(),
            path: self.root.path().join(&rel),
            dir: rel.parent().map(Path::to_path_buf).unwrap_or_default(),
            tmp: self.names.for_name(&name),
            name: PathBuf::from(name),
            size: meta.size,
            mode: mode_of(meta),
            root: self.root.clone(),
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

/// Where one object is written: a temporary name in its directory, renamed to its name.
struct Target {
    key: ObjectKey,
    /// The final path (messages only).
    path: PathBuf,
    /// The object's directory relative to the root (empty: the root).
    dir: PathBuf,
    /// Its file name, and the temporary name beside it.
    name: PathBuf,
    tmp: PathBuf,
    size: u64,
    /// Permission bits the file is created with (less the umask).
    mode: u32,
    root: Arc<Root>,
}

impl Target {
    fn err(&self, what: &str, e: std::io::Error) -> Error {
        Error::object(&self.key, format!("{what} {}: {e}", self.path.display()))
    }

    fn path_err(&self, what: &str, e: Errno) -> Error {
        path_error(&self.key, what, &self.path, e)
    }

    /// On the calling (blocking) thread: creates the temporary file, lets `fill` write it
    /// and renames it into place; a failure leaves nothing behind.
    /// Nothing is synced here: the drain makes a whole batch durable with
    /// [`Destination::sync`] before it marks any of it drained (a crash before that
    /// leaves the objects to be written again).
    fn place(&self, fill: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
        let dir = self.dir()?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = dir
            .open(&self.tmp, flags, Mode::from_bits_truncate(self.mode))
            .map_err(|e| self.path_err("cannot create a temporary file for", e))?;
        let mut f = std::fs::File::from(fd);
        let filled = fill(&mut f);
        drop(f);
        let res = filled.and_then(|()| {
            dir.rename(&self.tmp, &self.name)
                .map_err(|e| self.path_err("cannot rename into place", e))
        });
        if res.is_err() {
            let _ = dir.unlink(&self.tmp, false);
        }
        res
    }

    /// The object's directory, created only when it is missing: most objects land in a
    /// directory an earlier one made, and cost one `O_PATH` open (none at the root).
    fn dir(&self) -> Result<Dir<'_>> {
        match self.root.dir(&self.dir) {
            Err(Errno::ENOENT) => self.root.make_dirs(&self.dir),
            other => other,
        }
        .map_err(|e| self.path_err("cannot open or create the directory of", e))
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

/// Characters of a key left as they are in a [`Placed::location`]: RFC 3986 unreserved
/// and `/`; every other byte is percent-encoded, so any file name maps back exactly.
const LOCATION: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Runs a file job on the blocking pool.
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
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

/// Deletes the file `rel` beneath `root` without following a link (a link on the way is
/// refused; a link at the name itself is removed, never what it points at), then the
/// directories above it that are now empty, up to the root.
fn delete_beneath(root: &Root, key: &ObjectKey, rel: &Path, expect: &Expect) -> Result<Deleted> {
    let path = root.path().join(rel);
    let (parent, name) = (rel.parent().unwrap_or(Path::new("")), rel.file_name());
    let name = Path::new(name.unwrap_or_default());
    let dir = match root.dir(parent) {
        Ok(d) => d,
        // A missing directory, or a file where one was: the object is not there.
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(Deleted::Deleted),
        Err(e) => return Err(path_error(key, "cannot delete", &path, e)),
    };
    if let Some(why) = dir
        .size(name)
        .ok()
        .and_then(|n| expect.mismatch(n, Some(&n.to_string()), true))
    {
        return Ok(Deleted::Kept(why));
    }
    match dir.unlink(name, false) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(path_error(key, "cannot delete", &path, e)),
    }
    drop(dir);
    // Directories the object's key made and that are now empty go too (the source tree
    // has none there either); the first non-empty one stops it.
    let mut d = parent;
    while let (Some(up), Some(name)) = (d.parent(), d.file_name()) {
        let removed = root.dir(up).and_then(|u| u.unlink(Path::new(name), true));
        if removed.is_err() {
            break;
        }
        d = up;
    }
    Ok(Deleted::Deleted)
}

/// Records `tag` as this run's, then removes the temporary files of every other tag the
/// journal holds for `url` (earlier runs of this state directory) and forgets those
/// tags. Returns how many files were removed.
fn sweep(journal: &dyn UploadJournal, url: &str, root: &Root, tag: &str) -> Result<u64> {
    let recorded: Vec<String> = journal
        .open(url)?
        .into_iter()
        .filter(|(k, _)| k == TAGS_KEY)
        .map(|(_, t)| t)
        .collect();
    if !recorded.iter().any(|t| t == tag) {
        journal.started(url, TAGS_KEY, tag)?;
    }
    let old: Vec<&String> = recorded.iter().filter(|t| *t != tag).collect();
    if old.is_empty() {
        return Ok(0);
    }
    let mut n = 0;
    for e in walkdir::WalkDir::new(root.path()).into_iter().flatten() {
        let ours = tmp_tag(e.file_name().as_bytes())
            .is_some_and(|t| old.iter().any(|o| o.as_bytes() == t));
        if !ours || !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(root.path()).unwrap_or(e.path());
        let key = key_of(root.path(), e.path());
        let (parent, name) = (rel.parent().unwrap_or(Path::new("")), rel.file_name());
        let removed = root
            .dir(parent)
            .and_then(|d| d.unlink(Path::new(name.unwrap_or_default()), false));
        match removed {
            Ok(()) => n += 1,
            Err(Errno::ENOENT) => {}
            Err(err) => {
                return Err(path_error(
                    &key,
                    "removing an interrupted upload",
                    e.path(),
                    err,
                ));
            }
        }
    }
    for t in old {
        journal.ended(url, TAGS_KEY, t)?;
    }
    Ok(n)
}

#[async_trait]
impl Destination for LocalDest {
    fn url(&self) -> String {
        format!("file://{}", self.root.path().display())
    }

    async fn put(&self, meta: &ObjectMeta, mut body: Body) -> Result<Option<Placed>> {
        let target = self.target(meta)?;
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
        let location = percent_encoding::percent_encode(meta.key.as_bytes(), LOCATION).to_string();
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
        tokio::task::spawn_blocking(move || nix::unistd::syncfs(root.fd()))
            .await
            .map_err(|e| Error::task(format!("syncing {}", self.root.path().display()), e))?
            .map_err(|e| Error::Destination {
                url: self.url(),
                message: format!("syncfs failed: {}", std::io::Error::from(e)),
            })
    }

    /// A kernel-side copy (`copy_file_range`, a reflink where the filesystem shares
    /// extents) of a file this run wrote (`from.location`: its key, percent-encoded).
    async fn copy(&self, from: &Placed, meta: &ObjectMeta) -> Result<()> {
        let target = self.target(meta)?;
        let from_key = ObjectKey::from_bytes(
            percent_encoding::percent_decode(from.location.as_bytes()).collect(),
        );
        let from_rel = key_rel(&from_key)?;
        let what = format!("copy of {}", from.location);
        let from = from.clone();
        let _slot = self.slot().await?;
        blocking(move || {
            let src = target
                .root
                .open_at(&from_rel, OFlag::O_RDONLY, Mode::empty())
                .map_err(|e| target.path_err(&format!("cannot open the {what} for"), e))?;
            target.place(|tmp| {
                // std's File-to-File copy is copy_file_range (a reflink where shared).
                let n = std::io::copy(&mut std::fs::File::from(src), tmp)
                    .map_err(|e| target.err("cannot copy into", e))?;
                from.check_copy(&target.key, &what, Some(&n.to_string()))
            })
        })
        .await
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        let root = self.root.path().to_path_buf();
        tokio::task::spawn_blocking(move || walk(&root, &tx, false))
            .await
            .map_err(|e| Error::task(format!("listing {}", self.root.path().display()), e))?
    }

    /// Only the size is compared with what barge wrote (a file's ETag is its size): a
    /// file of another size at the path is someone else's and stays.
    async fn delete(&self, key: &ObjectKey, expect: &Expect) -> Result<Deleted> {
        let rel = key_rel(key)?;
        let (root, key, expect) = (self.root.clone(), key.clone(), expect.clone());
        blocking(move || delete_beneath(&root, &key, &rel, &expect)).await
    }

    /// Removes the temporary files that earlier drains of this state directory left (by
    /// the tags they recorded, see [`TmpNames`]), and records this drain's tag. Without
    /// a journal nothing is recorded, so nothing is removed.
    async fn cleanup(&self) -> Result<u64> {
        let Some(journal) = self.journal.get().cloned() else {
            return Ok(0);
        };
        let (url, root, tag) = (self.url(), self.root.clone(), self.names.tag.clone());
        tokio::task::spawn_blocking(move || sweep(journal.as_ref(), &url, &root, &tag))
            .await
            .map_err(|e| Error::task(format!("cleaning up {}", self.root.path().display()), e))?
    }

    fn set_journal(&self, journal: Arc<dyn UploadJournal>) {
        let _ = self.journal.set(journal);
    }

    async fn get(&self, key: &ObjectKey) -> Result<Reader> {
        let rel = key_rel(key)?;
        let (root, k) = (self.root.clone(), key.clone());
        let f = tokio::task::spawn_blocking(move || {
            let path = root.path().join(&rel);
            root.open_at(&rel, OFlag::O_RDONLY, Mode::empty())
                .map(std::fs::File::from)
                .map_err(|e| match e {
                    Errno::ENOENT => Error::Gone {
                        what: format!("object {k}: {}", path.display()),
                    },
                    e => path_error(&k, "cannot open", &path, e),
                })
        })
        .await
        .map_err(|e| Error::task(format!("reading {}", self.root.path().display()), e))??;
        let f = tokio::fs::File::from_std(f);
        Ok(Box::new(tokio::io::BufReader::with_capacity(1 << 20, f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        assert!(key_rel(&"a/../../etc/passwd".into()).is_err());
        assert!(key_rel(&"/abs".into()).is_err());
        assert!(key_rel(&"".into()).is_err());
        assert_eq!(key_rel(&"a/b c".into()).unwrap(), Path::new("a/b c"));
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
    /// An upload journal in memory (the drain's lives in the catalog).
    #[derive(Default)]
    struct MemJournal(std::sync::Mutex<Vec<(String, String, String)>>);

    impl UploadJournal for MemJournal {
        fn started(&self, dest: &str, key: &str, id: &str) -> Result<()> {
            let entry = (dest.to_string(), key.to_string(), id.to_string());
            self.0.lock().unwrap().push(entry);
            Ok(())
        }
        fn ended(&self, dest: &str, key: &str, id: &str) -> Result<()> {
            let mut all = self.0.lock().unwrap();
            all.retain(|(d, k, i)| (d.as_str(), k.as_str(), i.as_str()) != (dest, key, id));
            Ok(())
        }
        fn open(&self, dest: &str) -> Result<Vec<(String, String)>> {
            let all = self.0.lock().unwrap();
            let of = all.iter().filter(|(d, _, _)| d == dest);
            Ok(of.map(|(_, k, i)| (k.clone(), i.clone())).collect())
        }
    }

    /// A root and a sibling `elsewhere` holding one file, with `root/a -> elsewhere`.
    fn linked_tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (root, elsewhere) = (t.path().join("root"), t.path().join("elsewhere"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("x"), b"not barge's").unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("a")).unwrap();
        (t, root, elsewhere)
    }

    /// Issue 27 item 2: writes, copies, reads and deletes through a link in the
    /// destination's own tree are refused, naming the object and the path.
    #[tokio::test]
    async fn nothing_is_written_read_or_deleted_through_a_link_in_the_tree() {
        let (_t, root, elsewhere) = linked_tree();
        let dest = LocalDest::new(root.clone()).unwrap();
        let one = || body(vec![Bytes::from_static(b"new")], false);
        let e = dest
            .put(&meta("a/x", 3), one())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/x") && e.contains("symbolic link"), "{e}");
        let e = dest
            .put(&meta("a/b/y", 3), one())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(dest.get(&"a/x".into()).await.is_err());
        let e = dest
            .delete(
                &"a/x".into(),
                &Expect::Legacy {
                    size: 11,
                    md5: None,
                },
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/x") && e.contains("symbolic link"), "{e}");
        let placed = dest.put(&meta("real", 3), one()).await.unwrap().unwrap();
        assert!(dest.copy(&placed, &meta("a/copy", 3)).await.is_err());
        let through = Placed {
            location: "a/x".into(),
            etag: "11".into(),
            copyable: true,
        };
        assert!(dest.copy(&through, &meta("stolen", 11)).await.is_err());
        assert!(!root.join("stolen").exists());
        let left: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(std::fs::read(elsewhere.join("x")).unwrap(), b"not barge's");
        // A link at the object's own name is replaced, never written through.
        std::os::unix::fs::symlink(elsewhere.join("x"), root.join("l")).unwrap();
        dest.put(&meta("l", 3), one()).await.unwrap();
        assert!(!root.join("l").is_symlink());
        assert_eq!(std::fs::read(elsewhere.join("x")).unwrap(), b"not barge's");
    }

    /// Issue 27 item 2 (d): a link or a file planted at the temporary name is neither
    /// written through nor removed: the create fails (`O_EXCL | O_NOFOLLOW`).
    #[tokio::test]
    async fn a_link_planted_at_the_temporary_name_is_refused() {
        let (_t, root, elsewhere) = linked_tree();
        let dest = LocalDest::new(root.clone()).unwrap();
        let mut target = dest.target(&meta("f", 3)).unwrap();
        target.tmp = PathBuf::from(".f.barge-tmp.planted");
        std::os::unix::fs::symlink(elsewhere.join("x"), root.join(&target.tmp)).unwrap();
        let pieces = [Some(Bytes::from_static(b"new")), None].into_iter();
        let e = target.write(pieces).unwrap_err().to_string();
        assert!(e.contains("temporary file"), "{e}");
        assert!(
            root.join(&target.tmp).is_symlink(),
            "the planted link was removed"
        );
        assert!(!root.join("f").exists());
        assert_eq!(std::fs::read(elsewhere.join("x")).unwrap(), b"not barge's");
        // Names are not guessable: two are never alike and carry the destination's tag.
        let (a, b) = (
            dest.names.for_name(OsStr::new("f")),
            dest.names.for_name(OsStr::new("f")),
        );
        assert_ne!(a, b);
        let tag = tmp_tag(a.as_os_str().as_bytes()).unwrap();
        assert_eq!(tag, dest.names.tag.as_bytes());
    }

    /// Issue 27 item 7: cleanup removes only the temporary files of tags an earlier run
    /// of the same journal recorded: not a file merely named like one, not another
    /// state directory's, not the current run's.
    #[tokio::test]
    async fn cleanup_removes_only_what_an_earlier_run_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let journal: Arc<MemJournal> = Arc::default();
        let earlier = LocalDest::new(root.clone()).unwrap();
        earlier.set_journal(journal.clone());
        assert_eq!(earlier.cleanup().await.unwrap(), 0);
        let theirs = earlier.names.for_name(OsStr::new("f"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub").join(&theirs), b"left by a crash").unwrap();
        let foreign = [
            ".foo.barge-tmp.0000",
            ".bar.barge-tmp.0123456789abcdef.0123456789abcdef",
            "sub/.baz.barge-tmp.00000000000a",
        ];
        for f in foreign {
            std::fs::write(root.join(f), b"not ours").unwrap();
        }
        let now = LocalDest::new(root.clone()).unwrap();
        now.set_journal(journal.clone());
        let mine = now.names.for_name(OsStr::new("g"));
        std::fs::write(root.join(&mine), b"in flight").unwrap();
        assert_eq!(now.cleanup().await.unwrap(), 1);
        assert!(!root.join("sub").join(&theirs).exists());
        assert!(root.join(&mine).exists());
        for f in foreign {
            assert!(root.join(f).exists(), "{f} was removed");
        }
        let left = journal.open(&now.url()).unwrap();
        assert_eq!(left, vec![(TAGS_KEY.to_string(), now.names.tag.clone())]);
        // Without a journal nothing is recorded, so nothing is removed.
        let unjournaled = LocalDest::new(root.clone()).unwrap();
        assert_eq!(unjournaled.cleanup().await.unwrap(), 0);
        assert!(root.join(&mine).exists());
    }

    /// Issue 27 item 8: a file is created with the mode its object carries (a directory
    /// source's permission bits, never setuid/setgid/sticky), else 0644.
    #[tokio::test]
    async fn files_keep_the_mode_their_object_carries() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = LocalDest::new(dir.path().to_path_buf()).unwrap();
        let mut private = meta("private", 1);
        private.user_meta = vec![(MODE_META.into(), "600".into())];
        let mut setuid = meta("setuid", 1);
        setuid.user_meta = vec![(MODE_META.into(), "4700".into())];
        for m in [&private, &setuid, &meta("plain", 1)] {
            let b = body(vec![Bytes::from_static(b"x")], false);
            dest.put(m, b).await.unwrap();
        }
        let mode = |n: &str| {
            let md = std::fs::metadata(dir.path().join(n)).unwrap();
            md.permissions().mode() & 0o7777
        };
        assert_eq!(mode("private"), 0o600);
        assert_eq!(mode("setuid"), 0o700);
        assert_eq!(mode("plain") & 0o700, 0o600, "0644 less the umask");
    }

    #[test]
    fn only_barge_temporary_names_have_a_tag() {
        let tag = |s: &str| tmp_tag(s.as_bytes()).map(|t| String::from_utf8_lossy(t).into_owned());
        let ours = ".f.barge-tmp.0123456789abcdef.fedcba9876543210";
        assert_eq!(tag(ours).as_deref(), Some("0123456789abcdef"));
        for other in [
            ".foo.barge-tmp.0000",
            "f.barge-tmp.0123456789abcdef.fedcba9876543210",
            ".f.barge-tmp.0123456789ABCDEF.fedcba9876543210",
            ".f.barge-tmp.0123456789abcdef-fedcba9876543210",
            ".barge-tmp.0123456789abcdef.fedcba987654321",
        ] {
            assert_eq!(tag(other), None, "{other}");
        }
    }
}

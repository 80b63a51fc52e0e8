//! Paths resolved beneath a directory without following symbolic links.
//!
//! A directory destination (and a directory source that does not follow links) holds a
//! descriptor of its root for the whole run and opens every path relative to it with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: a component that is a symbolic link
//! fails with `ELOOP` (an absolute path or `..` with `EXDEV`) instead of leading out of
//! the tree. Names are then created, renamed and removed relative to the descriptor of
//! the directory that holds them (`openat`, `renameat`, `unlinkat`), so no path is ever
//! resolved through a link. Where the kernel lacks `openat2` (before Linux 5.6, or a
//! seccomp filter answering ENOSYS) the same is done one component at a time with
//! `O_NOFOLLOW`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

/// Set once `openat2` answered ENOSYS: the component walk is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Flags of a directory opened only to name things in it (`O_PATH`: no read access
/// needed, the cheapest open there is).
const DIR_FLAGS: OFlag = OFlag::O_PATH.union(OFlag::O_DIRECTORY);

/// A directory that paths are resolved beneath.
pub(crate) struct Root {
    /// As given (messages only).
    path: PathBuf,
    fd: OwnedFd,
}

/// A directory beneath a [`Root`] (or the root itself) to create, rename and remove
/// names in.
pub(crate) enum Dir<'a> {
    Root(&'a Root),
    Sub(OwnedFd),
}

impl Dir<'_> {
    pub(crate) fn fd(&self) -> RawFd {
        match self {
            Dir::Root(r) => r.fd.as_raw_fd(),
            Dir::Sub(fd) => fd.as_raw_fd(),
        }
    }

    /// Opens (or creates) the single name `name` in this directory, never through a link.
    pub(crate) fn open(&self, name: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        nix::fcntl::openat(Some(self.fd()), name, flags, mode)
            .map(owned)
            .map_err(|e| link_or(self.fd(), name, e))
    }

    /// Renames `from` to `to`, both names in this directory (a link at `to` is
    /// replaced, not followed).
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<(), Errno> {
        nix::fcntl::renameat(Some(self.fd()), from, Some(self.fd()), to)
    }

    /// The size of what the name `name` is (a link's own, never its target's).
    pub(crate) fn size(&self, name: &Path) -> Result<u64, Errno> {
        let st = nix::sys::stat::fstatat(
            Some(self.fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        Ok(st.st_size as u64)
    }

    /// Removes the name `name` (a file or a link, never what a link points at), or the
    /// empty directory of that name when `dir`.
    pub(crate) fn unlink(&self, name: &Path, dir: bool) -> Result<(), Errno> {
        let flag = match dir {
            true => nix::unistd::UnlinkatFlags::RemoveDir,
            false => nix::unistd::UnlinkatFlags::NoRemoveDir,
        };
        nix::unistd::unlinkat(Some(self.fd()), name, flag)
    }
}

/// Takes ownership of a descriptor an open call just returned.
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was returned by a successful open call of this module an instant ago
    // and is owned by nothing else; the `OwnedFd` closes it exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl Root {
    /// Opens the directory `path` itself (the operator named it; a link there is
    /// followed, the last time one is).
    pub(crate) fn open(path: &Path) -> std::io::Result<Root> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        let root = Root {
            path: path.to_path_buf(),
            fd: OwnedFd::from(f),
        };
        root.probe();
        Ok(root)
    }

    /// Whether `openat2` answers at all: a seccomp filter from before it existed (older
    /// container runtimes) refuses it with EPERM rather than ENOSYS, which an open of
    /// the root itself tells apart from a refusal of one path.
    fn probe(&self) {
        if NO_OPENAT2.load(Ordering::Relaxed) {
            return;
        }
        let how = OpenHow::new()
            .flags(DIR_FLAGS | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        match nix::fcntl::openat2(self.fd(), ".", how) {
            Ok(fd) => drop(owned(fd)),
            Err(e @ (Errno::ENOSYS | Errno::EPERM)) => {
                tracing::info!(
                    "openat2 is not available ({e}): resolving paths one component at a time"
                );
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Opens `rel` (relative, made of plain names) beneath the root without following
    /// any link: ELOOP if a component is one, EXDEV if the path would leave the root.
    pub(crate) fn open_at(&self, rel: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
        open_beneath(self.fd(), rel, flags, mode)
    }

    /// The directory `rel` beneath the root (empty: the root itself, no system call).
    pub(crate) fn dir(&self, rel: &Path) -> Result<Dir<'_>, Errno> {
        if rel.as_os_str().is_empty() {
            return Ok(Dir::Root(self));
        }
        self.open_at(rel, DIR_FLAGS, Mode::empty()).map(Dir::Sub)
    }

    /// The directory `rel`, created with its missing parents (mode 0777 less the umask,
    /// as `mkdir -p`); a component that is a link or not a directory fails.
    pub(crate) fn make_dirs(&self, rel: &Path) -> Result<Dir<'_>, Errno> {
        let mut cur = Dir::Root(self);
        for name in names(rel)? {
            match nix::sys::stat::mkdirat(Some(cur.fd()), name, Mode::from_bits_truncate(0o777)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            cur = Dir::Sub(cur.open(name, DIR_FLAGS, Mode::empty())?);
        }
        Ok(cur)
    }
}

/// The plain names of a relative path; anything else (`..`, `/`) is EXDEV, as
/// `RESOLVE_BENEATH` answers.
fn names(rel: &Path) -> Result<Vec<&Path>, Errno> {
    rel.components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(n) => Ok(Path::new(n)),
            _ => Err(Errno::EXDEV),
        })
        .collect()
}

/// `openat2` beneath `dir` with no link followed, or the component walk without it.
fn open_beneath(dir: RawFd, rel: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let mut how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        if flags.contains(OFlag::O_CREAT) {
            // openat2 refuses a mode without O_CREAT.
            how = how.mode(mode);
        }
        match nix::fcntl::openat2(dir, rel, how) {
            Err(Errno::ENOSYS) => {
                tracing::info!("openat2 is not available: resolving paths one component at a time");
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            r => return r.map(owned),
        }
    }
    walk_beneath(dir, rel, flags, mode)
}

/// What `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` does, one component at a time:
/// each directory opened `O_NOFOLLOW` relative to the one before.
fn walk_beneath(dir: RawFd, rel: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
    let names = names(rel)?;
    let Some((last, parents)) = names.split_last() else {
        return Err(Errno::ENOENT);
    };
    let mut cur: Option<OwnedFd> = None;
    for name in parents {
        let at = cur.as_ref().map_or(dir, AsRawFd::as_raw_fd);
        let flags = DIR_FLAGS | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let next = nix::fcntl::openat(Some(at), *name, flags, Mode::empty())
            .map_err(|e| link_or(at, name, e))?;
        cur = Some(owned(next));
    }
    let at = cur.as_ref().map_or(dir, AsRawFd::as_raw_fd);
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(Some(at), *last, flags, mode)
        .map(owned)
        .map_err(|e| link_or(at, last, e))
}

/// An open of `name` in `dir` with `O_NOFOLLOW` failed with `e`: ELOOP when `name` is a
/// symbolic link (an `O_DIRECTORY` open of one answers ENOTDIR), else `e`.
fn link_or(dir: RawFd, name: &Path, e: Errno) -> Errno {
    if e != Errno::ENOTDIR {
        return e;
    }
    let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    match nix::sys::stat::fstatat(Some(dir), name, flags) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
            Errno::ELOOP
        }
        _ => e,
    }
}

/// Whether an error of this module means a symbolic link (or `..`) was in the way.
pub(crate) fn is_link(e: Errno) -> bool {
    matches!(e, Errno::ELOOP | Errno::EXDEV)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Both ways of resolving (openat2 and the component walk) refuse links anywhere on
    /// the path and `..`, and open plain paths.
    #[test]
    fn links_and_dotdot_are_refused_by_openat2_and_by_the_walk() {
        let t = tempfile::tempdir().unwrap();
        let (root, elsewhere) = (t.path().join("root"), t.path().join("elsewhere"));
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(root.join("d/f"), b"in").unwrap();
        std::fs::write(elsewhere.join("f"), b"out").unwrap();
        symlink(&elsewhere, root.join("a")).unwrap();
        symlink(elsewhere.join("f"), root.join("d/l")).unwrap();
        symlink("f", root.join("d/rel")).unwrap();
        let r = Root::open(&root).unwrap();
        let read = OFlag::O_RDONLY;
        for open in [open_beneath, walk_beneath] {
            let fd = open(r.fd(), Path::new("d/f"), read, Mode::empty()).unwrap();
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s).unwrap();
            assert_eq!(s, "in");
            for (p, want) in [
                ("a/f", Errno::ELOOP),
                ("d/l", Errno::ELOOP),
                ("d/rel", Errno::ELOOP),
                ("d/../../elsewhere/f", Errno::EXDEV),
            ] {
                let got = open(r.fd(), Path::new(p), read, Mode::empty()).err();
                assert_eq!(got, Some(want), "{p}");
            }
            let got = open(r.fd(), Path::new("a"), DIR_FLAGS, Mode::empty()).err();
            assert_eq!(got, Some(Errno::ELOOP), "a as a directory");
            let create = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
            let got = open(
                r.fd(),
                Path::new("a/new"),
                create,
                Mode::from_bits_truncate(0o600),
            );
            assert_eq!(got.err(), Some(Errno::ELOOP));
        }
        assert!(!elsewhere.join("new").exists());
        assert!(r.make_dirs(Path::new("a/b")).is_err());
        assert!(!elsewhere.join("b").exists());
        assert!(r.make_dirs(Path::new("x/y")).is_ok());
        assert!(root.join("x/y").is_dir());
    }
}

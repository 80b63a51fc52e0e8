//! Whether two of the places a move touches are one inside the other: a directory
//! source holding the state directory would copy its keys and catalog out, a
//! destination holding it would let a source object overwrite them, and a destination
//! inside its own source would be listed and moved again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The directory of a `file://` URL or a plain path; None for a store (`s3://`, ...).
pub(crate) fn dir_of(url: &str) -> Option<PathBuf> {
    match crate::backend::scheme(url) {
        None => Some(PathBuf::from(url)),
        Some("file") => url.strip_prefix("file://").map(PathBuf::from),
        Some(_) => None,
    }
}

/// Refuses a directory endpoint (`role`, e.g. "source", at `url`) that is `other`
/// (`what`, e.g. "the state directory") or one of its ancestors, or lies inside it,
/// naming both paths.
pub(crate) fn refuse_nested(role: &str, url: &str, what: &str, other: &Path) -> Result<()> {
    let Some(dir) = dir_of(url) else {
        return Ok(());
    };
    let how = if contains(&dir, other) {
        format!("contains {what} {}", other.display())
    } else if contains(other, &dir) {
        format!("is inside {what} {}", other.display())
    } else {
        return Ok(());
    };
    let message = format!(
        "{} {how}; barge refuses a {role} that overlaps its own directories or the other side of the move: choose directories apart",
        dir.display()
    );
    Err(match role {
        "source" => Error::Source {
            url: url.to_string(),
            message,
        },
        _ => Error::Destination {
            url: url.to_string(),
            message,
        },
    })
}

/// Whether the directory `outer` is `inner` or one of its ancestors: compared by device
/// and inode along `inner`'s ancestors with every link resolved, so neither a symbolic
/// link nor a bind mount hides it. A path that does not exist yet is taken at its
/// nearest existing ancestor; an `outer` that does not exist contains nothing.
pub(crate) fn contains(outer: &Path, inner: &Path) -> bool {
    let Ok(o) = std::fs::metadata(outer) else {
        return false;
    };
    let Some(mut p) = nearest_existing(inner) else {
        return false;
    };
    loop {
        if std::fs::metadata(&p).is_ok_and(|m| m.dev() == o.dev() && m.ino() == o.ino()) {
            return true;
        }
        if !p.pop() {
            return false;
        }
    }
}

/// `p` (made absolute) or its nearest existing ancestor, links resolved.
fn nearest_existing(p: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(p).ok()?;
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(cur) {
            return Some(c);
        }
        cur = cur.parent()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_seen_through_links_and_missing_directories() {
        let t = tempfile::tempdir().unwrap();
        let (src, state) = (t.path().join("src"), t.path().join("src/state"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(t.path().join("other")).unwrap();
        std::os::unix::fs::symlink(&state, t.path().join("link")).unwrap();
        assert!(contains(&src, &state));
        assert!(contains(&src, &src));
        assert!(contains(&src, &t.path().join("link")));
        assert!(contains(&src, &src.join("not/yet")));
        assert!(!contains(&state, &src));
        assert!(!contains(&src, &t.path().join("other")));
        assert!(!contains(&t.path().join("missing"), &src));
        let url = format!("file://{}", src.display());
        let e = refuse_nested("source", &url, "the state directory", &state).unwrap_err();
        let m = e.to_string();
        assert!(m.contains(&src.display().to_string()), "{m}");
        assert!(m.contains(&state.display().to_string()), "{m}");
        assert!(refuse_nested("source", "s3://bucket", "the state directory", &state).is_ok());
        let inside = src.join("out");
        let e = refuse_nested("destination", inside.to_str().unwrap(), "the source", &src);
        assert!(e.unwrap_err().to_string().contains("is inside the source"));
    }
}

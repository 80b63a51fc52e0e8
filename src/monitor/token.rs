//! The bearer token of `POST /control` over TCP: 32 random bytes as hex in
//! `<state>/control.token`, created mode 0600 the first time a command serves the status
//! API on TCP, and kept (scripts and remote dashboards read it once). Whoever can read
//! the file may steer the run; the Unix socket needs none (its 0600 mode is the check).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the token file inside the state directory.
pub const TOKEN_NAME: &str = "control.token";

/// Random bytes in a token (written as twice as many hex digits).
const TOKEN_BYTES: usize = 32;

/// The token a client presents, compared in constant time.
#[derive(Clone)]
pub struct ControlToken(blake3::Hash);

impl ControlToken {
    /// Whether `given` is the token. Both sides are hashed and the hashes compared with
    /// `blake3::Hash`'s constant-time equality, so neither the length nor the first
    /// differing byte of a guess shows in the time of the answer.
    pub fn matches(&self, given: &str) -> bool {
        blake3::hash(given.trim().as_bytes()) == self.0
    }
}

/// Path of the token file of `state`.
pub fn path(state: &Path) -> PathBuf {
    state.join(TOKEN_NAME)
}

/// The token of `state`, created (random, 0600) if there is none yet.
pub fn load_or_create(state: &Path) -> Result<ControlToken> {
    let p = path(state);
    if !p.exists() {
        create(state, &p)?;
    }
    Ok(ControlToken(blake3::hash(read(&p)?.as_bytes())))
}

/// Writes a new token: a private temporary file linked to its name, so a reader never
/// sees a half-written token and of two processes starting at once, one token wins.
fn create(state: &Path, p: &Path) -> Result<()> {
    let tmp = state.join(format!("{TOKEN_NAME}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let text = hex::encode(crate::crypto::random_bytes::<TOKEN_BYTES>()) + "\n";
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()));
    let linked = written.and_then(|_| std::fs::hard_link(&tmp, p));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!("control token created in {}", p.display());
            Ok(())
        }
        // Another process made it first: theirs is the token.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("creating the control token", p, e)),
    }
}

/// Reads a token file, refusing one that others may read or that holds no token.
pub fn read(p: &Path) -> Result<String> {
    let meta = std::fs::metadata(p).map_err(|e| Error::io("reading the control token", p, e))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::State {
            path: p.to_path_buf(),
            message: format!(
                "the control token is readable by others (mode {:o}): `chmod 600` it, or \
                 delete it to have a new one made",
                mode & 0o777
            ),
        });
    }
    let text =
        std::fs::read_to_string(p).map_err(|e| Error::io("reading the control token", p, e))?;
    let token = text.trim();
    if token.len() < TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::State {
            path: p.to_path_buf(),
            message: format!(
                "not a control token (at least {TOKEN_BYTES} printable characters): delete \
                 it to have a new one made"
            ),
        });
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_privately_and_matched_exactly() {
        let d = tempfile::tempdir().unwrap();
        let t = load_or_create(d.path()).unwrap();
        let p = path(d.path());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = read(&p).unwrap();
        assert_eq!(text.len(), 2 * TOKEN_BYTES);
        assert!(t.matches(&text));
        assert!(!t.matches(&text[1..]));
        assert!(!t.matches(""));
        // Kept: a second start finds the same token.
        assert!(load_or_create(d.path()).unwrap().matches(&text));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(d.path()).err().unwrap().to_string();
        assert!(e.contains("control.token") && e.contains("644"), "{e}");
    }
}

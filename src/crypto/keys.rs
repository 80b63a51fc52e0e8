//! The master key: created by `barge init`, kept in `<state>/keys/`, or derived from a
//! passphrase (argon2id) given through an environment variable.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CTX_KEY_CHECK, random_bytes};
use crate::error::{Error, Result};

/// Version of `keys/key.json`.
pub const KEY_FILE_VERSION: u32 = 1;
/// argon2id memory cost in KiB (64 MiB: OWASP's 2023 floor is 19 MiB; this box has 24 GiB).
pub const ARGON2_M_COST_KIB: u32 = 64 * 1024;
/// argon2id passes.
pub const ARGON2_T_COST: u32 = 3;
/// argon2id lanes.
pub const ARGON2_P_COST: u32 = 1;
/// Fewest characters of a passphrase a new key is derived from.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// Words of the placeholders that example files ship (`change-me` in an env file):
/// a passphrase that is one of them, or contains one, letters and digits only and
/// lower-cased, is refused whatever its length.
const PLACEHOLDER_WORDS: [&str; 3] = ["changeme", "replaceme", "placeholder"];
/// Whole passphrases refused as placeholders (same normalisation).
const PLACEHOLDER_PASSPHRASES: [&str; 5] = ["password", "passphrase", "secret", "example", "barge"];

/// The appliance master key. Zeroed on drop; `Debug` shows a fingerprint, never the key.
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterKey(b)
    }

    pub fn generate() -> Self {
        MasterKey(random_bytes())
    }

    /// The raw key, for derivations only.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Value stored in key.json to recognise this key later.
    pub fn check_value(&self) -> String {
        hex::encode(blake3::derive_key(CTX_KEY_CHECK, &self.0))
    }

    /// Short, non-secret fingerprint for logs.
    pub fn fingerprint(&self) -> String {
        self.check_value()[..12].to_string()
    }

    /// argon2id(passphrase, salt).
    pub fn from_passphrase(passphrase: &[u8], salt: &[u8], p: &KdfParams) -> Result<Self> {
        let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
            .map_err(|e| Error::Key(format!("bad argon2id parameters in key.json: {e}")))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        a.hash_password_into(passphrase, salt, &mut out)
            .map_err(|e| Error::Key(format!("argon2id failed: {e}")))?;
        Ok(MasterKey(out))
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(fingerprint {})", self.fingerprint())
    }
}

/// argon2id cost parameters, stored with the salt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_cost_kib: ARGON2_M_COST_KIB,
            t_cost: ARGON2_T_COST,
            p_cost: ARGON2_P_COST,
        }
    }
}

/// How the master key of a state directory is obtained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyOrigin {
    /// 32 random bytes in `keys/master.key` (or a file named by `--key-file`).
    Random,
    /// argon2id of a passphrase from an environment variable.
    Passphrase { salt: String, params: KdfParams },
    /// 32 bytes in a file kept outside the state directory (`init --key-file`); later
    /// commands read it from the same path unless given another `--key-file`.
    File { path: String },
}

/// `keys/key.json`: everything about the key except the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyInfo {
    pub version: u32,
    pub origin: KeyOrigin,
    /// hex of derive_key(CTX_KEY_CHECK, master): lets us refuse a wrong key before
    /// anything is opened for writing.
    pub check: String,
}

/// Where the key comes from on this invocation.
#[derive(Debug, Clone, Default)]
pub struct KeyRequest {
    /// `--key-file`: use this 32-byte file instead of `<state>/keys/master.key`.
    pub key_file: Option<PathBuf>,
    /// Name of the environment variable holding a passphrase (`--passphrase-env`).
    pub passphrase_env: Option<String>,
}

fn keys_dir(state: &Path) -> PathBuf {
    state.join("keys")
}

/// Writes a new 0600 file and makes it durable: its content, then its directory entry.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("creating key file", path, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("writing key file", path, e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    crate::staging::writer::sync_dir(dir).map_err(|e| Error::io("syncing key directory", dir, e))
}

fn read_passphrase(var: &str) -> Result<Vec<u8>> {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => {
            use std::os::unix::ffi::OsStrExt;
            Ok(v.as_bytes().to_vec())
        }
        _ => Err(Error::option(
            "--passphrase-env",
            format!("environment variable {var} is not set or empty"),
        )),
    }
}

/// Why `pass` is no passphrase to derive a new key from (None: it will do): empty,
/// shorter than [`MIN_PASSPHRASE_CHARS`], or a known placeholder. Never says the
/// passphrase itself.
pub fn weak_passphrase(pass: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(pass);
    let chars = text.trim().chars().count();
    let plain: String = text
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    if chars == 0 {
        Some("is empty".into())
    } else if PLACEHOLDER_WORDS.iter().any(|w| plain.contains(w))
        || PLACEHOLDER_PASSPHRASES.contains(&plain.as_str())
    {
        Some("is a placeholder (such as change-me), not a passphrase".into())
    } else if chars < MIN_PASSPHRASE_CHARS {
        Some(format!(
            "is shorter than {MIN_PASSPHRASE_CHARS} characters ({chars})"
        ))
    } else {
        None
    }
}

fn read_key_file(path: &Path) -> Result<MasterKey> {
    let bytes = fs::read(path).map_err(|e| Error::io("reading key file", path, e))?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        Error::Key(format!(
            "{} holds {} bytes; a barge key file holds exactly 32",
            path.display(),
            bytes.len()
        ))
    })?;
    Ok(MasterKey(arr))
}

/// Creates the key material of a new state directory. Fails if one exists already.
pub fn init_key(state: &Path, req: &KeyRequest) -> Result<MasterKey> {
    init_key_inner(state, req, None)
}

/// Like [`init_key`] for a key that already exists (a shipped set's, opened with its
/// unlock code): it is stored in `keys/master.key`, or in the file `--key-file` names.
/// A passphrase cannot reproduce a given key and is refused.
pub fn init_key_given(state: &Path, req: &KeyRequest, key: MasterKey) -> Result<MasterKey> {
    if req.passphrase_env.is_some() {
        return Err(Error::Key(
            "--passphrase-env cannot hold an imported set's key; use the default key file or --key-file"
                .into(),
        ));
    }
    if let Some(path) = &req.key_file {
        if path.exists() {
            return Err(Error::Key(format!(
                "{} exists; import writes the set's key into a new --key-file",
                path.display()
            )));
        }
        write_private(path, key.expose())?;
    }
    init_key_inner(state, req, Some(key))
}

fn init_key_inner(state: &Path, req: &KeyRequest, given: Option<MasterKey>) -> Result<MasterKey> {
    let dir = keys_dir(state);
    let info_path = dir.join("key.json");
    if info_path.exists() {
        return Err(Error::State {
            path: state.to_path_buf(),
            message: "already initialised (keys/key.json exists)".into(),
        });
    }
    fs::create_dir_all(&dir).map_err(|e| Error::io("creating key directory", &dir, e))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("setting key directory mode", &dir, e))?;
    crate::staging::writer::sync_dir(state)
        .map_err(|e| Error::io("syncing the state directory", state, e))?;
    let (key, origin) = if let Some(var) = &req.passphrase_env {
        let pass = read_passphrase(var)?;
        if let Some(why) = weak_passphrase(&pass) {
            return Err(Error::option(
                "--passphrase-env",
                format!(
                    "the passphrase in ${var} {why}: choose one of at least \
                     {MIN_PASSPHRASE_CHARS} characters that no example file ships"
                ),
            ));
        }
        let salt: [u8; 16] = random_bytes();
        let params = KdfParams::default();
        let key = MasterKey::from_passphrase(&pass, &salt, &params)?;
        (
            key,
            KeyOrigin::Passphrase {
                salt: hex::encode(salt),
                params,
            },
        )
    } else if let Some(path) = &req.key_file {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        (
            read_key_file(path)?,
            KeyOrigin::File {
                path: abs.display().to_string(),
            },
        )
    } else {
        let key = given.unwrap_or_else(MasterKey::generate);
        write_private(&dir.join("master.key"), key.expose())?;
        (key, KeyOrigin::Random)
    };
    let info = KeyInfo {
        version: KEY_FILE_VERSION,
        origin,
        check: key.check_value(),
    };
    let json = serde_json::to_vec_pretty(&info).map_err(|e| Error::Key(e.to_string()))?;
    write_private(&info_path, &json)?;
    Ok(key)
}

/// Loads and checks the master key of an initialised state directory. A key that does
/// not match `key.json` is refused here, before the catalog is opened.
pub fn load_key(state: &Path, req: &KeyRequest) -> Result<MasterKey> {
    let info_path = keys_dir(state).join("key.json");
    let raw = fs::read(&info_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::State {
                path: state.to_path_buf(),
                message: "not initialised: run `barge init` first (or pass --state)".into(),
            }
        } else {
            Error::io("reading key info", &info_path, e)
        }
    })?;
    let info: KeyInfo = serde_json::from_slice(&raw).map_err(|e| Error::CorruptRecord {
        what: info_path.display().to_string(),
        message: e.to_string(),
    })?;
    if info.version != KEY_FILE_VERSION {
        return Err(Error::Key(format!(
            "{} has version {}, this barge reads version {KEY_FILE_VERSION}",
            info_path.display(),
            info.version
        )));
    }
    let (key, what) = match (&info.origin, req) {
        (
            KeyOrigin::Passphrase { .. },
            KeyRequest {
                key_file: Some(p), ..
            },
        ) => {
            return Err(Error::option(
                "--key-file",
                format!(
                    "{}: state directory {} takes its key from a passphrase (--passphrase-env), not a key file",
                    p.display(),
                    state.display()
                ),
            ));
        }
        (KeyOrigin::Passphrase { salt, params }, _) => {
            let var = req.passphrase_env.as_deref().unwrap_or("BARGE_PASSPHRASE");
            let pass = read_passphrase(var)?;
            if let Some(why) = weak_passphrase(&pass) {
                // A key made before placeholders were refused still opens its state
                // directory; the operator is told to move to a real one.
                tracing::warn!(
                    "the passphrase in ${var} {why}; the key of {} is only as strong",
                    state.display()
                );
            }
            let salt = hex::decode(salt).map_err(|e| Error::CorruptRecord {
                what: info_path.display().to_string(),
                message: format!("salt: {e}"),
            })?;
            (
                MasterKey::from_passphrase(&pass, &salt, params)?,
                format!("the passphrase in ${var}"),
            )
        }
        (
            KeyOrigin::Random | KeyOrigin::File { .. },
            KeyRequest {
                key_file: Some(p), ..
            },
        ) => (read_key_file(p)?, format!("key file {}", p.display())),
        (KeyOrigin::File { path }, _) => {
            let p = Path::new(path);
            (read_key_file(p)?, format!("key file {}", p.display()))
        }
        (KeyOrigin::Random, _) => {
            let p = keys_dir(state).join("master.key");
            (read_key_file(&p)?, format!("key file {}", p.display()))
        }
    };
    if key.check_value() != info.check {
        return Err(Error::WrongKey(format!(
            "{what} does not unlock state directory {}; nothing was changed",
            state.display()
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_short_and_empty_passphrases_are_refused() {
        for p in [
            "change-me",
            "changeme",
            "CHANGE_ME",
            " change-me-please-now ",
            "replace-me-with-a-real-one",
            "password",
            "",
            "   ",
            "short-pass1",
        ] {
            assert!(
                weak_passphrase(p.as_bytes()).is_some(),
                "{p:?} was accepted"
            );
        }
        assert_eq!(
            weak_passphrase(b"change-me").as_deref(),
            Some("is a placeholder (such as change-me), not a passphrase")
        );
        assert!(weak_passphrase(b"short-pass1").unwrap().contains("12"));
        for p in [
            "correct horse battery staple",
            "x7#Lq2!vR9$mT4",
            "twelve chars",
        ] {
            assert_eq!(weak_passphrase(p.as_bytes()), None, "{p:?} was refused");
        }
    }
}

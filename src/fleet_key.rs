//! The fleet key: 32 random bytes shared by the nodes of one move (and whoever runs
//! `report --fleet`), kept out of the plan, which travels in the clear (a ConfigMap, a
//! file copied to every node). Shard reports and cutover certificates carry a MAC under
//! it: keyed BLAKE3, under a key derived per kind of document, over the document's
//! canonical JSON without its `mac` field (object keys sorted, no white space, numbers
//! and strings as serde_json writes them). Anyone who can write at the destination, or
//! put an object under `.barge/` in the source, can write a report; only a holder of
//! the key can write one that verifies.
//!
//! The key comes from `--fleet-key-file FILE` (64 hex digits; refused when group or
//! others may read it) or `BARGE_FLEET_KEY` (the same hex), and `barge plan
//! --new-fleet-key FILE` makes one.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The variable that holds the fleet key (hex) when `--fleet-key-file` is not given.
pub const FLEET_KEY_ENV: &str = "BARGE_FLEET_KEY";
/// The MAC algorithm as documents name it.
pub const MAC_ALGORITHM: &str = "keyed-BLAKE3";
/// Derivation context of the key that authenticates shard reports.
pub const CTX_SHARD_REPORT: &str = "barge 2026-12 shard report mac v1";
/// Derivation context of the key that authenticates cutover certificates.
pub const CTX_CERTIFICATE: &str = "barge 2026-12 cutover certificate mac v1";
/// Derivation context of the key's public id (which key signed, for messages).
const CTX_KEY_ID: &str = "barge 2026-12 fleet key id v1";
/// The field of a document that holds its MAC (left out of what the MAC covers).
const MAC_FIELD: &str = "mac";

/// The shared key of one move's nodes. `Debug` shows its id, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetKey([u8; 32]);

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FleetKey({})", self.id())
    }
}

/// A document's MAC: the algorithm, the id of the key and the value (hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mac {
    pub algorithm: String,
    pub key_id: String,
    pub value: String,
}

impl FleetKey {
    /// A new random key.
    pub fn generate() -> FleetKey {
        FleetKey(crate::crypto::random_bytes())
    }

    /// The key from 64 hex digits (surrounding white space ignored); `what` names where
    /// they came from.
    pub fn from_hex(text: &str, what: &str) -> Result<FleetKey> {
        let bad = |why: &str| Error::Option {
            option: what.into(),
            message: format!("{why}: a fleet key is 32 bytes as 64 hex digits"),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| bad("not hex"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| bad(&format!("{} bytes", b.len())))?;
        Ok(FleetKey(key))
    }

    /// Reads a key file, refused when group or others have any access to it.
    pub fn load(path: &Path) -> Result<FleetKey> {
        let md =
            std::fs::metadata(path).map_err(|e| Error::io("reading the fleet key", path, e))?;
        let mode = md.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::Option {
                option: "--fleet-key-file".into(),
                message: format!(
                    "{}: mode {:o} lets group or others read it: chmod 600 it",
                    path.display(),
                    mode & 0o777
                ),
            });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("reading the fleet key", path, e))?;
        FleetKey::from_hex(&text, &format!("--fleet-key-file {}", path.display()))
    }

    /// The key from `file` when given, else from [`FLEET_KEY_ENV`] when set, else None.
    pub fn from_file_or_env(file: Option<&Path>) -> Result<Option<FleetKey>> {
        if let Some(p) = file {
            return FleetKey::load(p).map(Some);
        }
        match std::env::var(FLEET_KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => FleetKey::from_hex(&v, FLEET_KEY_ENV).map(Some),
            _ => Ok(None),
        }
    }

    /// Makes a new key and writes it to `path` (created, mode 0600, never overwritten).
    pub fn write_new(path: &Path) -> Result<FleetKey> {
        let key = FleetKey::generate();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io("creating the fleet key file", path, e))?;
        // The mode given at creation is masked by the umask; 0600 is what is meant.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("setting the fleet key file's mode", path, e))?;
        writeln!(f, "{}", hex::encode(key.0))
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("writing the fleet key", path, e))?;
        Ok(key)
    }

    /// The key's public id: 12 hex digits of a derivation, never the key.
    pub fn id(&self) -> String {
        hex::encode(&blake3::derive_key(CTX_KEY_ID, &self.0)[..6])
    }

    /// The MAC of `doc` (its `mac` field left out) for documents of `context`.
    fn value(&self, context: &str, doc: &Value) -> blake3::Hash {
        let key = blake3::derive_key(context, &self.0);
        blake3::keyed_hash(&key, canonical(doc).as_bytes())
    }

    /// `doc` as pretty JSON with a MAC under this key (or, without a key, without one).
    pub fn sign<T: Serialize>(
        key: Option<&FleetKey>,
        context: &str,
        what: &str,
        doc: &T,
    ) -> Result<Vec<u8>> {
        let encode = |e: serde_json::Error| Error::Encode {
            what: what.into(),
            message: e.to_string(),
        };
        let mut v = serde_json::to_value(doc).map_err(encode)?;
        if let (Some(k), Value::Object(map)) = (key, &mut v) {
            map.remove(MAC_FIELD);
            let mac = Mac {
                algorithm: MAC_ALGORITHM.into(),
                key_id: k.id(),
                value: k
                    .value(context, &Value::Object(map.clone()))
                    .to_hex()
                    .to_string(),
            };
            map.insert(MAC_FIELD.into(), serde_json::to_value(mac).map_err(encode)?);
        }
        serde_json::to_vec_pretty(&v).map_err(encode)
    }

    /// Checks the MAC of a document of `context`; the error says why it does not verify.
    pub fn check(&self, context: &str, doc: &[u8]) -> std::result::Result<(), String> {
        let mut v: Value =
            serde_json::from_slice(doc).map_err(|e| format!("not a JSON document: {e}"))?;
        let Value::Object(map) = &mut v else {
            return Err("not a JSON object".into());
        };
        let Some(mac) = map.remove(MAC_FIELD).filter(|m| !m.is_null()) else {
            return Err("it carries no MAC: written without a fleet key".into());
        };
        let mac: Mac = serde_json::from_value(mac).map_err(|e| format!("its MAC field: {e}"))?;
        if mac.algorithm != MAC_ALGORITHM {
            return Err(format!("its MAC is {}, not {MAC_ALGORITHM}", mac.algorithm));
        }
        let claimed =
            blake3::Hash::from_hex(&mac.value).map_err(|_| "its MAC is not hex".to_string())?;
        // blake3::Hash compares in constant time.
        if claimed != self.value(context, &v) {
            return Err(format!(
                "its MAC does not verify: forged or from another fleet key (it names key {}, this is key {})",
                mac.key_id,
                self.id()
            ));
        }
        Ok(())
    }
}

/// `v` as JSON with object keys in byte order and no white space: the same bytes
/// whatever order the writer's fields were in.
fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", Value::String(k.clone()));
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Doc {
        b: u64,
        a: String,
        f: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        mac: Option<Mac>,
    }

    fn doc() -> Doc {
        Doc {
            b: u64::MAX,
            a: "é\"x".into(),
            f: 1.0,
            mac: None,
        }
    }

    #[test]
    fn a_signed_document_verifies_and_any_change_or_other_key_does_not() {
        let k = FleetKey::generate();
        let signed = FleetKey::sign(Some(&k), CTX_SHARD_REPORT, "doc", &doc()).unwrap();
        k.check(CTX_SHARD_REPORT, &signed).unwrap();
        // Another kind of document, another key, an edited field: refused.
        assert!(k.check(CTX_CERTIFICATE, &signed).is_err());
        let other = FleetKey::generate().check(CTX_SHARD_REPORT, &signed);
        assert!(
            other
                .unwrap_err()
                .contains("forged or from another fleet key")
        );
        let text = String::from_utf8(signed.clone()).unwrap();
        let edited = text.replace("\"a\": \"é", "\"a\": \"e");
        assert_ne!(edited, text);
        assert!(k.check(CTX_SHARD_REPORT, edited.as_bytes()).is_err());
        // Re-indented, or with its fields in another order: still the same document.
        let v: Value = serde_json::from_slice(&signed).unwrap();
        k.check(CTX_SHARD_REPORT, &serde_json::to_vec(&v).unwrap())
            .unwrap();
        // Unsigned: named as such.
        let plain = FleetKey::sign(None, CTX_SHARD_REPORT, "doc", &doc()).unwrap();
        assert!(
            k.check(CTX_SHARD_REPORT, &plain)
                .unwrap_err()
                .contains("no MAC")
        );
    }

    #[test]
    fn key_files_readable_by_others_and_bad_hex_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fleet.key");
        let k = FleetKey::write_new(&p).unwrap();
        assert_eq!(FleetKey::load(&p).unwrap(), k);
        assert!(FleetKey::write_new(&p).is_err(), "never overwritten");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = FleetKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(FleetKey::from_hex("abcd", "X").is_err());
        assert!(FleetKey::from_hex(&"zz".repeat(32), "X").is_err());
        assert_eq!(format!("{k:?}"), format!("FleetKey({})", k.id()));
    }
}

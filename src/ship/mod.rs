//! Offline seeding: staging drives filled at the source site, sealed, shipped, imported
//! and drained at the destination, then erased.
//!
//! * [`manifest`]: what a sealed drive carries about itself and its set (encrypted).
//! * [`seal`]: `barge seal`: manifests, wrapped key, unlock code, bill of materials.
//! * [`import`]: `barge import`: checks drives and builds a fresh catalog from them.
//! * [`erase`]: `barge erase`: crypto-erase, device erase, erase certificate.
//!
//! Keys: chunks are sealed under keys derived from the appliance master key. `seal`
//! draws a random 32-byte unlock key, wraps the master key under it (AES-256-GCM) into
//! every superblock of the set, and prints the unlock key as the unlock code. The code
//! never goes onto a drive; a drive without it holds ciphertext and a wrapped key only.

pub mod erase;
pub mod import;
pub mod manifest;
pub mod seal;

use aes_gcm::aead::{Aead, KeyInit, Payload};

use crate::crypto::{MasterKey, random_bytes};
use crate::error::{Error, Result};
use crate::staging::device::WRAPPED_KEY_LEN;

/// Key-derivation context turning an unlock code into the key-encryption key.
pub const CTX_UNLOCK: &str = "barge 2026-11 unlock code v1";
/// Key-derivation context of the manifest key (from the master key and the set id).
pub const CTX_MANIFEST: &str = "barge 2026-11 manifest key v1";
/// Prefix of an unlock code; the digit is the code format version.
pub const UNLOCK_PREFIX: &str = "BARGE1";
/// Bytes of the unlock-code checksum (catches a mistyped code before any drive is read).
const UNLOCK_CHECK_LEN: usize = 2;

/// The secret that opens a sealed set: 32 random bytes, shown as base32 groups.
pub struct UnlockCode([u8; 32]);

impl UnlockCode {
    pub fn generate() -> Self {
        UnlockCode(random_bytes())
    }

    /// `BARGE1-XXXXX-XXXXX-...`: the key and a 2-byte BLAKE3 checksum in base32.
    pub fn to_text(&self) -> String {
        let mut raw = self.0.to_vec();
        raw.extend_from_slice(&blake3::hash(&self.0).as_bytes()[..UNLOCK_CHECK_LEN]);
        let b32 = data_encoding::BASE32_NOPAD.encode(&raw);
        let groups: Vec<&str> = b32
            .as_bytes()
            .chunks(5)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        format!("{UNLOCK_PREFIX}-{}", groups.join("-"))
    }

    /// Parses a code as printed (case, spaces and dashes are forgiven).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::option("--unlock-code", why);
        let clean: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect::<String>()
            .to_ascii_uppercase();
        let Some(body) = clean.strip_prefix(UNLOCK_PREFIX) else {
            return Err(bad(&format!("an unlock code starts with {UNLOCK_PREFIX}-")));
        };
        let raw = data_encoding::BASE32_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| bad("not a valid unlock code (letters A-Z and digits 2-7)"))?;
        if raw.len() != 32 + UNLOCK_CHECK_LEN {
            return Err(bad(
                "the unlock code has the wrong length (a group missing?)",
            ));
        }
        let (key, check) = raw.split_at(32);
        if blake3::hash(key).as_bytes()[..UNLOCK_CHECK_LEN] != *check {
            return Err(bad("the unlock code's checksum does not match: mistyped?"));
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(key);
        Ok(UnlockCode(k))
    }

    /// Reads a code from a file written by `barge seal` (the line starting BARGE1).
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("reading unlock code", path, e))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(UNLOCK_PREFIX))
            .ok_or_else(|| {
                Error::option(
                    "--unlock-code-file",
                    format!("{}: no line starting {UNLOCK_PREFIX}", path.display()),
                )
            })?;
        Self::parse(line)
    }

    fn kek(&self) -> [u8; 32] {
        blake3::derive_key(CTX_UNLOCK, &self.0)
    }

    /// Short public fingerprint (safe to print in reports and logs).
    pub fn fingerprint(&self) -> String {
        hex::encode(&blake3::derive_key("barge 2026-11 unlock fingerprint v1", &self.0)[..8])
    }
}

fn wrap_aad(set_id: &[u8; 16], drive_id: &[u8; 16]) -> Vec<u8> {
    [b"barge-wrap-v1".as_slice(), set_id, drive_id].concat()
}

/// Seals the master key under the unlock code for one drive of a set.
pub fn wrap_key(
    code: &UnlockCode,
    master: &MasterKey,
    set_id: &[u8; 16],
    drive_id: &[u8; 16],
) -> Result<[u8; WRAPPED_KEY_LEN]> {
    let kek = code.kek();
    let cipher = aes_gcm::Aes256Gcm::new((&kek).into());
    let nonce: [u8; 12] = random_bytes();
    let ct = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: master.expose(),
                aad: &wrap_aad(set_id, drive_id),
            },
        )
        .map_err(|_| Error::Key("wrapping the set key failed".into()))?;
    let mut out = [0u8; WRAPPED_KEY_LEN];
    out[..12].copy_from_slice(&nonce);
    out[12..].copy_from_slice(&ct);
    Ok(out)
}

/// Opens a wrapped key; `None` when the code is not the one it was sealed under (or the
/// wrapped key was altered or erased).
pub fn unwrap_key(
    code: &UnlockCode,
    wrapped: &[u8; WRAPPED_KEY_LEN],
    set_id: &[u8; 16],
    drive_id: &[u8; 16],
) -> Option<MasterKey> {
    let kek = code.kek();
    let cipher = aes_gcm::Aes256Gcm::new((&kek).into());
    let nonce: [u8; 12] = wrapped[..12].try_into().ok()?;
    let pt = cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: &wrapped[12..],
                aad: &wrap_aad(set_id, drive_id),
            },
        )
        .ok()?;
    let k: [u8; 32] = pt.as_slice().try_into().ok()?;
    Some(MasterKey::from_bytes(k))
}

/// The manifest key of a set.
pub fn manifest_key(master: &MasterKey, set_id: &[u8; 16]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CTX_MANIFEST);
    h.update(master.expose());
    h.update(set_id);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlock_code_round_trips_and_catches_typos() {
        let c = UnlockCode::generate();
        let t = c.to_text();
        assert!(t.starts_with("BARGE1-"), "{t}");
        assert_eq!(UnlockCode::parse(&t).unwrap().0, c.0);
        assert_eq!(
            UnlockCode::parse(&t.to_lowercase().replace('-', " "))
                .unwrap()
                .0,
            c.0
        );
        // One character changed: the checksum (or base32) refuses it. The
        // checksum is 2 bytes, so a random code would let 1 typo in 65536
        // through; a fixed code makes the outcome the same on every run.
        let t = UnlockCode([0x5a; 32]).to_text();
        let mut chars: Vec<char> = t.chars().collect();
        let i = 12;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        assert!(UnlockCode::parse(&typo).is_err());
        assert!(UnlockCode::parse("BARGE1-AAAA").is_err());
        assert!(UnlockCode::parse("hello").is_err());
    }

    #[test]
    fn wrapped_key_opens_only_with_its_code_and_drive() {
        let m = MasterKey::generate();
        let c = UnlockCode::generate();
        let w = wrap_key(&c, &m, &[1; 16], &[2; 16]).unwrap();
        let back = unwrap_key(&c, &w, &[1; 16], &[2; 16]).unwrap();
        assert_eq!(back.expose(), m.expose());
        assert!(unwrap_key(&UnlockCode::generate(), &w, &[1; 16], &[2; 16]).is_none());
        assert!(unwrap_key(&c, &w, &[1; 16], &[3; 16]).is_none());
        let mut bad = w;
        bad[20] ^= 1;
        assert!(unwrap_key(&c, &bad, &[1; 16], &[2; 16]).is_none());
    }
}

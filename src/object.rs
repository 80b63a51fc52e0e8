//! Object keys and listing metadata shared by every backend.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A source object key. Raw bytes: local file names need not be UTF-8; S3 and Swift
/// keys are UTF-8 and map 1:1.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey(Vec<u8>);

impl ObjectKey {
    pub fn from_bytes(b: Vec<u8>) -> Self {
        ObjectKey(b)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lossy UTF-8 for messages; invalid bytes are shown as `\xNN`.
    pub fn display(&self) -> String {
        self.to_string()
    }
}

impl From<&str> for ObjectKey {
    fn from(s: &str) -> Self {
        ObjectKey(s.as_bytes().to_vec())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// Unix seconds of an ISO 8601 UTC time (`2024-01-31T12:00:00.000Z`, or without the
/// zone as Swift lists it); None if it is not one.
pub fn parse_utc(s: &str) -> Option<u64> {
    let s = s.trim();
    let zoned = if s.ends_with('Z') || s.contains('+') {
        s.to_string()
    } else {
        format!("{s}Z")
    };
    let t =
        aws_smithy_types::DateTime::from_str(&zoned, aws_smithy_types::date_time::Format::DateTime)
            .ok()?;
    u64::try_from(t.secs()).ok()
}

/// Standard headers carried with an object besides Content-Type. They travel in
/// `user_meta` (listing, catalog record, upload) under their lower-case name prefixed
/// with `:`, which no user metadata name can start with; see [`carried`].
pub const CARRIED_HEADERS: [&str; 5] = [
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
];

/// The user metadata name the source's last-modified time is written under (unix
/// seconds): `X-Object-Meta-Mtime` in Swift, `x-amz-meta-mtime` in S3, as
/// python-swiftclient and rclone write it. A source object that has one keeps it.
pub const MTIME_META: &str = "mtime";

/// Adds a standard header to `user_meta` (see [`CARRIED_HEADERS`]).
pub fn carry_header(user_meta: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        user_meta.push((format!(":{name}"), v.to_string()));
    }
}

/// Adds the source's modification time unless the object carries one already.
pub fn carry_mtime(user_meta: &mut Vec<(String, String)>, secs: Option<u64>) {
    if let Some(s) = secs
        && !user_meta
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(MTIME_META))
    {
        user_meta.push((MTIME_META.to_string(), s.to_string()));
    }
}

/// Name-value pairs borrowed from a `user_meta` list.
pub type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// `user_meta` split into the standard headers it carries (name, value) and the user
/// metadata proper.
pub fn carried(user_meta: &[(String, String)]) -> (Pairs<'_>, Pairs<'_>) {
    let mut headers = vec![];
    let mut user = vec![];
    for (k, v) in user_meta {
        match k.strip_prefix(':') {
            Some(h) => headers.push((h, v.as_str())),
            None => user.push((k.as_str(), v.as_str())),
        }
    }
    (headers, user)
}

/// What a listing says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    /// Changes whenever the content may have changed (mtime+inode, ETag, ...).
    pub version: String,
    pub content_type: Option<String>,
    pub user_meta: Vec<(String, String)>,
    /// Last modified at the source, unix seconds, when the listing says.
    pub modified: Option<u64>,
}

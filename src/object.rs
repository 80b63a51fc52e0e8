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

    /// The key as a person or a log sees it: see [`fmt::Display`].
    pub fn display(&self) -> String {
        self.to_string()
    }
}

/// Whether a character is shown escaped: control characters (C0, DEL, C1) and the
/// bidirectional formatting characters that reorder what a terminal shows.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes `s` with every control character (C0, DEL, C1) and bidirectional override as a
/// visible escape: `\n`, `\r`, `\t`, `\x1b`, `\u{9b}`, `\u{202e}`. A name that arrived from
/// a store can then never move a terminal's cursor, set its title, reorder a line, or
/// start a forged line in a log or a report.
pub fn write_escaped(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let mut rest = s;
    while let Some(i) = rest.find(hidden) {
        f.write_str(&rest[..i])?;
        let c = rest[i..].chars().next().unwrap_or_default();
        match c {
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32)?,
            c => write!(f, "\\u{{{:x}}}", c as u32)?,
        }
        rest = &rest[i + c.len_utf8()..];
    }
    f.write_str(rest)
}

/// `s` with its control characters escaped (see [`write_escaped`]); borrowed when it
/// has none.
pub fn escaped(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let _ = write_escaped(&mut out, s);
    std::borrow::Cow::Owned(out)
}

impl From<&str> for ObjectKey {
    fn from(s: &str) -> Self {
        ObjectKey(s.as_bytes().to_vec())
    }
}

/// For messages, logs and reports, never for a store's request: invalid UTF-8 bytes are
/// shown as `\xNN` and control characters escaped ([`write_escaped`]). Backends address
/// objects by [`ObjectKey::as_bytes`].
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            write_escaped(f, chunk.valid())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_shown_without_raw_control_characters() {
        let raw = "a\u{1b}]0;owned\u{7}b\u{1b}[2J\nINFO forged\r\u{9b}\u{202e}c\tz";
        let shown = ObjectKey::from(raw).to_string();
        assert!(!shown.contains(hidden), "{shown:?}");
        assert_eq!(
            shown,
            "a\\x1b]0;owned\\x07b\\x1b[2J\\nINFO forged\\r\\u{9b}\\u{202e}c\\tz"
        );
        assert_eq!(
            ObjectKey::from_bytes(b"x\xff\x1by".to_vec()).to_string(),
            "x\\xff\\x1by"
        );
        assert!(matches!(escaped("plain/é"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(ObjectKey::from(raw).as_bytes(), raw.as_bytes());
    }
}

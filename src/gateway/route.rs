//! Where a read of one key is answered from, decided from the catalog's records alone
//! (never by probing a store), and what a client is told about the object whichever
//! side serves it.

use crate::catalog::ObjectState;
use crate::catalog::gateway::GatewayRecord;
use crate::catalog::records::ObjectRecord;
use crate::object::{MTIME_META, ObjectKey, ObjectMeta, carried};

/// What a client sees of an object: the same before and after it moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub size: u64,
    /// Entity tag without quotes: the source's, or the gateway write's MD5.
    pub etag: String,
    /// Last-Modified, unix seconds (None: unknown, answered as the epoch).
    pub modified: Option<u64>,
    pub content_type: Option<String>,
    /// User metadata and carried headers (`:`-prefixed, see [`carried`]).
    pub user_meta: Vec<(String, String)>,
}

impl View {
    /// The user metadata proper (without the carried standard headers).
    pub fn user(&self) -> Vec<(String, String)> {
        carried(&self.user_meta)
            .1
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A carried standard header (`content-encoding`, ...).
    pub fn header(&self, name: &str) -> Option<String> {
        carried(&self.user_meta)
            .0
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// Where a read goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Deleted through the gateway: not found, whatever the source holds.
    Gone,
    /// At the destination (moved, or written through the gateway).
    Dest(View),
    /// Not moved yet: streamed from the source, as the catalog last listed it.
    Source(View, ObjectMeta),
    /// The catalog does not know the key: only the source can say.
    Unknown,
}

/// The route of `key` from its gateway record and its object record.
pub fn route(key: &ObjectKey, gw: Option<GatewayRecord>, rec: Option<ObjectRecord>) -> Route {
    match (gw, rec) {
        (Some(GatewayRecord::Deleted { .. }), _) => Route::Gone,
        (Some(GatewayRecord::Written(w)), _) => Route::Dest(View {
            size: w.size,
            etag: w.etag,
            modified: Some(w.modified),
            content_type: w.content_type,
            user_meta: w.user_meta,
        }),
        (None, Some(rec)) if rec.state == ObjectState::Deleting => Route::Gone,
        (None, Some(rec)) => {
            let view = view_of(&rec);
            match rec.state {
                ObjectState::Drained | ObjectState::Verified => Route::Dest(view),
                _ => {
                    let meta = ObjectMeta {
                        key: key.clone(),
                        size: rec.size,
                        version: rec.version.clone(),
                        content_type: rec.content_type.clone(),
                        user_meta: rec.user_meta.clone(),
                        modified: view.modified,
                    };
                    Route::Source(view, meta)
                }
            }
        }
        (None, None) => Route::Unknown,
    }
}

/// What the catalog's record of a source object says a client sees.
pub fn view_of(rec: &ObjectRecord) -> View {
    View {
        size: rec.size,
        etag: unquote(&rec.version),
        modified: mtime(&rec.user_meta),
        content_type: rec.content_type.clone(),
        user_meta: rec.user_meta.clone(),
    }
}

/// The view of an object as a source's answer describes it.
pub fn view_of_meta(meta: &ObjectMeta) -> View {
    View {
        size: meta.size,
        etag: unquote(&meta.version),
        modified: meta.modified.or_else(|| mtime(&meta.user_meta)),
        content_type: meta.content_type.clone(),
        user_meta: meta.user_meta.clone(),
    }
}

/// An entity tag without its quotes.
pub fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// The source's modification time carried as user metadata.
fn mtime(user_meta: &[(String, String)]) -> Option<u64> {
    user_meta
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(MTIME_META))
        .and_then(|(_, v)| v.split('.').next()?.parse().ok())
}

/// What the conditional headers of a read decide, in S3's order: If-Match, then
/// If-Unmodified-Since (ignored when If-Match was given), If-None-Match, then
/// If-Modified-Since (ignored when If-None-Match was given).
#[derive(Debug, Default)]
pub struct Conditions<'a> {
    /// Entity tags (unquoted), `*` for any.
    pub if_match: Option<Vec<&'a str>>,
    pub if_none_match: Option<Vec<&'a str>>,
    pub if_modified_since: Option<u64>,
    pub if_unmodified_since: Option<u64>,
}

/// The answer conditional headers call for instead of the object.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    /// 412.
    Failed,
    /// 304.
    NotModified,
}

impl Conditions<'_> {
    pub fn check(&self, v: &View) -> Precondition {
        let matches = |tags: &[&str]| tags.iter().any(|t| *t == "*" || *t == v.etag);
        let modified = v.modified.unwrap_or(0);
        if let Some(tags) = &self.if_match {
            if !matches(tags) {
                return Precondition::Failed;
            }
        } else if self.if_unmodified_since.is_some_and(|t| modified > t) {
            return Precondition::Failed;
        }
        if let Some(tags) = &self.if_none_match {
            if matches(tags) {
                return Precondition::NotModified;
            }
        } else if self.if_modified_since.is_some_and(|t| modified <= t) {
            return Precondition::NotModified;
        }
        Precondition::Proceed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::gateway::GatewayWrite;

    fn rec(state: ObjectState) -> ObjectRecord {
        ObjectRecord {
            size: 5,
            version: "\"abc\"".into(),
            content_type: Some("text/plain".into()),
            user_meta: vec![("mtime".into(), "1700000000".into())],
            blake3: None,
            chunks: vec![],
            state,
            checked: String::new(),
            uploads: 0,
            updated: 0,
        }
    }

    #[test]
    fn reads_follow_the_records_never_a_probe() {
        let k = ObjectKey::from("k");
        assert_eq!(route(&k, None, None), Route::Unknown);
        let moved = route(&k, None, Some(rec(ObjectState::Drained)));
        let Route::Dest(v) = moved else {
            panic!("{moved:?}")
        };
        // The source's ETag and time, whichever side serves it.
        assert_eq!((v.etag.as_str(), v.modified), ("abc", Some(1_700_000_000)));
        let Route::Source(s, meta) = route(&k, None, Some(rec(ObjectState::Staged))) else {
            panic!()
        };
        assert_eq!(s, v);
        assert_eq!(meta.version, "\"abc\"");
        // A tombstone hides the source's copy; a gateway write is served as written.
        let gone = route(
            &k,
            Some(GatewayRecord::Deleted { at: 1, left: None }),
            Some(rec(ObjectState::Listed)),
        );
        assert_eq!(gone, Route::Gone);
        let w = GatewayWrite {
            size: 1,
            etag: "e".into(),
            modified: 2,
            content_type: None,
            user_meta: vec![],
            landed: None,
        };
        let r = route(
            &k,
            Some(GatewayRecord::Written(w)),
            Some(rec(ObjectState::Drained)),
        );
        assert!(matches!(r, Route::Dest(v) if v.etag == "e" && v.size == 1));
    }

    #[test]
    fn conditions_are_evaluated_in_s3_order() {
        let v = View {
            size: 1,
            etag: "abc".into(),
            modified: Some(100),
            content_type: None,
            user_meta: vec![],
        };
        let c = |f: fn(&mut Conditions<'static>)| {
            let mut c = Conditions::default();
            f(&mut c);
            c.check(&v)
        };
        assert_eq!(c(|c| c.if_match = Some(vec!["abc"])), Precondition::Proceed);
        assert_eq!(c(|c| c.if_match = Some(vec!["x"])), Precondition::Failed);
        assert_eq!(c(|c| c.if_match = Some(vec!["*"])), Precondition::Proceed);
        assert_eq!(
            c(|c| c.if_none_match = Some(vec!["abc"])),
            Precondition::NotModified
        );
        assert_eq!(
            c(|c| c.if_modified_since = Some(100)),
            Precondition::NotModified
        );
        assert_eq!(c(|c| c.if_modified_since = Some(99)), Precondition::Proceed);
        assert_eq!(
            c(|c| c.if_unmodified_since = Some(99)),
            Precondition::Failed
        );
        // If-Match true wins over If-Unmodified-Since false (S3's rule).
        assert_eq!(
            c(|c| {
                c.if_match = Some(vec!["abc"]);
                c.if_unmodified_since = Some(99);
            }),
            Precondition::Proceed
        );
        // If-None-Match false and If-Modified-Since true: 200 as S3 answers.
        assert_eq!(
            c(|c| {
                c.if_none_match = Some(vec!["x"]);
                c.if_modified_since = Some(100);
            }),
            Precondition::Proceed
        );
    }
}

//! What `barge gateway` wrote or deleted, per key (CF [`super::CF_GATEWAY`]), and the
//! per-key fence that orders a gateway write against a drain's write of the same key.
//!
//! A key with a gateway record belongs to the application from then on: ingest never
//! fetches it again, a drain never writes it, a sync pass never deletes it, and reads
//! are answered from the record (a tombstone: not found; a write: the destination).

use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::{CF_GATEWAY, CF_META, Catalog, records};
use crate::error::Result;
use crate::object::ObjectKey;

/// Stripes of the per-key fence: keys hash onto this many async mutexes, so a gateway
/// write and a drain of the same key never run at once (two keys may share a stripe and
/// wait for each other, which costs time, never correctness).
pub const FENCE_STRIPES: usize = 256;

/// Meta-CF key prefix of a gateway write in flight ([`WriteIntent`]); the object key's
/// bytes follow.
pub const INTENT_PREFIX: &[u8] = b"gateway-intent/";

/// A gateway write that was started: written synced before the destination's put and
/// removed in the batch of its record, so one left behind after a crash names a put the
/// client never saw acknowledged that the destination may hold anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteIntent {
    pub size: u64,
    /// The S3 ETag the write will get when it is known before its body is sent (a
    /// multipart completion's); None: the MD5 of the body.
    pub etag: Option<String>,
    pub modified: u64,
    pub content_type: Option<String>,
    pub user_meta: Vec<(String, String)>,
}

/// Meta-CF key prefix of a gateway delete whose tombstone is written and whose copy at
/// the destination may not be deleted yet ([`DeleteIntent`]).
pub const DELETE_PREFIX: &[u8] = b"gateway-delete/";

/// What a delete through the gateway expects to remove at the destination: written in
/// the tombstone's batch, removed once the destination answered, so a delete a crash cut
/// short is finished at the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteIntent {
    pub size: u64,
    /// The ETag to find there (None: size only).
    pub etag: Option<String>,
    /// `etag` is what the destination answered (else the MD5 of a write recorded after a
    /// crash, compared only with a single-part object).
    pub exact: bool,
}

fn intent_key(key: &ObjectKey) -> Vec<u8> {
    [INTENT_PREFIX, key.as_bytes()].concat()
}

fn delete_key(key: &ObjectKey) -> Vec<u8> {
    [DELETE_PREFIX, key.as_bytes()].concat()
}

/// What the gateway did at a key, as the application saw it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayRecord {
    /// Written through the gateway; the destination holds it.
    Written(GatewayWrite),
    /// Deleted through the gateway at unix seconds `at`: not found from then on, whatever
    /// the source still holds. `left`: what was at the destination to delete (a delete
    /// interrupted after the tombstone is finished by the next one from this).
    Deleted {
        at: u64,
        left: Option<super::Landed>,
    },
}

/// An object written through the gateway: what a read answers for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayWrite {
    pub size: u64,
    /// The S3-shaped entity tag clients got back (MD5 of the body, without quotes).
    pub etag: String,
    /// Unix seconds of the write (the object's Last-Modified).
    pub modified: u64,
    pub content_type: Option<String>,
    pub user_meta: Vec<(String, String)>,
    /// What the destination answered for the write (its own ETag, which for a large
    /// object is not the client's): what a delete through the gateway expects there.
    pub landed: Option<super::Landed>,
}

impl Catalog {
    /// Waits for the fence of `key`: held by the gateway across a write or delete and by
    /// the drain across its write of the key, with the gateway record re-read under it.
    pub async fn fence(&self, key: &ObjectKey) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize % FENCE_STRIPES;
        self.fences[stripe].lock().await
    }

    /// The gateway's record of `key`, if it wrote or deleted it.
    pub fn gateway_record(&self, key: &ObjectKey) -> Result<Option<GatewayRecord>> {
        match self
            .db
            .get_cf(self.cf(CF_GATEWAY)?, key.as_bytes())
            .map_err(|e| self.db_err(e))?
        {
            Some(v) => Ok(Some(records::decode(key, &v)?)),
            None => Ok(None),
        }
    }

    /// Records what the gateway did at `key`, synced before the client hears of it. The
    /// key's write intent goes in the same batch (resolved), and its delete intent is
    /// replaced by `delete` (a tombstone's) or dropped (a write replaced the object).
    pub fn set_gateway_record(
        &self,
        key: &ObjectKey,
        rec: &GatewayRecord,
        delete: Option<&DeleteIntent>,
    ) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_GATEWAY)?, key.as_bytes(), records::encode(rec));
        b.delete_cf(self.cf(CF_META)?, intent_key(key));
        match delete {
            Some(d) => {
                let v = serde_json::to_vec(d)
                    .map_err(|e| crate::error::Error::encode("gateway delete intent", e))?;
                b.put_cf(self.cf(CF_META)?, delete_key(key), v);
            }
            None => b.delete_cf(self.cf(CF_META)?, delete_key(key)),
        }
        self.write_sync(b)
    }

    /// Drops the delete intent of `key` once the destination answered the delete. Not
    /// synced: one a crash brings back is only done again at the next start (the copy is
    /// gone by then), and the next synced write persists it anyway.
    pub fn clear_delete_intent(&self, key: &ObjectKey) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(CF_META)?, delete_key(key));
        self.write(b)
    }

    /// The delete intents left behind, in key order.
    pub fn delete_intents(&self) -> Result<Vec<(ObjectKey, DeleteIntent)>> {
        self.intents(DELETE_PREFIX, "gateway delete intent")
    }

    /// Notes, synced, that a gateway write of `key` is about to reach the destination.
    pub fn set_write_intent(&self, key: &ObjectKey, w: &WriteIntent) -> Result<()> {
        self.put_meta_json(&intent_key(key), "gateway write intent", w)
    }

    /// Drops the write intent of `key` (a write that failed before the destination kept
    /// anything, or one resolved after a crash). Not synced, for the reason
    /// [`Catalog::clear_delete_intent`] gives: one brought back is resolved again.
    pub fn clear_write_intent(&self, key: &ObjectKey) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(CF_META)?, intent_key(key));
        self.write(b)
    }

    /// The write intents left behind, in key order.
    pub fn write_intents(&self) -> Result<Vec<(ObjectKey, WriteIntent)>> {
        self.intents(INTENT_PREFIX, "gateway write intent")
    }

    fn intents<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        what: &str,
    ) -> Result<Vec<(ObjectKey, T)>> {
        let it = self.db.iterator_cf(
            self.cf(CF_META)?,
            IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        let mut out = vec![];
        for kv in it {
            let (k, v) = kv.map_err(|e| self.db_err(e))?;
            let Some(key) = k.strip_prefix(prefix) else {
                break;
            };
            let key = ObjectKey::from_bytes(key.to_vec());
            let w = serde_json::from_slice(&v)
                .map_err(|e| self.err(format!("bad {what} of {key}: {e}")))?;
            out.push((key, w));
        }
        Ok(out)
    }

    /// Forgets the move's own record of `key` once the gateway owns it: the object record
    /// and its chunk references, its seen mark and what a drain left at the destination,
    /// in one batch. Nothing of the move touches the key again.
    pub fn forget_for_gateway(&self, key: &ObjectKey) -> Result<()> {
        let _g = self.object_lock(key)?;
        let mut b = WriteBatch::default();
        if let Some(rec) = self.get_object(key)? {
            let chunks = self.cf(super::CF_CHUNKS)?;
            for c in &rec.chunks {
                b.merge_cf(chunks, c.id.0, super::ChunkOp::AddRefs(-1).encode());
            }
        }
        b.delete_cf(self.cf(super::CF_OBJECTS)?, key.as_bytes());
        b.delete_cf(self.cf(super::CF_SEEN)?, key.as_bytes());
        b.delete_cf(self.cf(super::CF_PLACED)?, key.as_bytes());
        self.write_sync(b)
    }

    /// Every gateway record from the first key at or after `from`, in key order.
    pub fn gateway_records_from(
        &self,
        from: &[u8],
    ) -> Result<impl Iterator<Item = Result<(ObjectKey, GatewayRecord)>> + '_> {
        let it = self.db.iterator_cf(
            self.cf(CF_GATEWAY)?,
            IteratorMode::From(from, rocksdb::Direction::Forward),
        );
        Ok(it.map(move |kv| {
            let (k, v) = kv.map_err(|e| self.db_err(e))?;
            let key = ObjectKey::from_bytes(k.to_vec());
            let rec = records::decode(&key, &v)?;
            Ok((key, rec))
        }))
    }

    /// Every object record from the first key at or after `from`, in key order.
    pub fn objects_from(
        &self,
        from: &[u8],
    ) -> Result<impl Iterator<Item = Result<(ObjectKey, records::ObjectRecord)>> + '_> {
        let it = self.db.iterator_cf(
            self.cf(super::CF_OBJECTS)?,
            IteratorMode::From(from, rocksdb::Direction::Forward),
        );
        Ok(it.map(move |kv| {
            let (k, v) = kv.map_err(|e| self.db_err(e))?;
            let key = ObjectKey::from_bytes(k.to_vec());
            let rec = records::decode(&key, &v)?;
            Ok((key, rec))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gateway_record_survives_a_reopen_and_lists_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cat = Catalog::open(dir.path(), true).unwrap();
            let w = GatewayRecord::Written(GatewayWrite {
                size: 3,
                etag: "900150983cd24fb0d6963f7d28e17f72".into(),
                modified: 1,
                content_type: None,
                user_meta: vec![],
                landed: None,
            });
            let _f = cat.fence(&ObjectKey::from("b")).await;
            cat.set_gateway_record(&ObjectKey::from("b"), &w, None)
                .unwrap();
            cat.set_gateway_record(
                &ObjectKey::from("a"),
                &GatewayRecord::Deleted { at: 2, left: None },
                None,
            )
            .unwrap();
        }
        let cat = Catalog::open(dir.path(), false).unwrap();
        let keys: Vec<String> = cat
            .gateway_records_from(b"")
            .unwrap()
            .map(|r| r.unwrap().0.to_string())
            .collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(
            cat.gateway_record(&ObjectKey::from("a")).unwrap(),
            Some(GatewayRecord::Deleted { at: 2, left: None })
        );
        assert!(cat.gateway_record(&ObjectKey::from("c")).unwrap().is_none());
    }
}

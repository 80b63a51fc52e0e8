//! Gateway writes a crash cut short: killed after the destination's put began and before
//! its record, the client never heard an answer, and the destination may or may not hold
//! the new object. Before serving, each write intent left behind is resolved by reading
//! the key back from the destination, under the key's fence:
//!
//! 1. nothing there, or what the catalog expects there (same size and MD5): the put did
//!    not land; the intent is dropped;
//! 2. an object of the intent's size: the put landed (an unacknowledged S3 write may
//!    take effect): it is recorded as the gateway's write, with the intent's metadata;
//! 3. anything else (another writer's object): left alone, named in the log.
//!
//! A delete cut short after its tombstone (its delete intent left behind) is finished:
//! the copy the tombstone's batch named is deleted at the destination.

use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;

use super::Shared;
use crate::backend::{Deleted, Expect};
use crate::catalog::Landed;
use crate::catalog::gateway::{DeleteIntent, GatewayRecord, GatewayWrite, WriteIntent};
use crate::error::{Error, Result};
use crate::object::ObjectKey;

/// Read-back piece size.
const READ_CHUNK: usize = 1 << 20;

/// What [`recover`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Writes that never reached the destination.
    pub dropped: u64,
    /// Writes the destination holds, now recorded as the gateway's.
    pub adopted: u64,
    /// Deletes finished at the destination.
    pub deleted: u64,
    /// Keys where the destination holds something that is neither.
    pub foreign: u64,
}

/// The delete intent that stands for `e` in the catalog.
pub(super) fn delete_intent(e: &Expect) -> DeleteIntent {
    match e {
        Expect::Written(l) => DeleteIntent {
            size: l.size,
            etag: Some(l.etag.clone()),
            exact: true,
        },
        Expect::Legacy { size, md5 } => DeleteIntent {
            size: *size,
            etag: md5.clone(),
            exact: false,
        },
    }
}

/// What a delete intent expects at the destination.
fn expect_of(d: &DeleteIntent) -> Expect {
    match (&d.etag, d.exact) {
        (Some(etag), true) => Expect::Written(Landed {
            size: d.size,
            etag: etag.clone(),
        }),
        (md5, _) => Expect::Legacy {
            size: d.size,
            md5: md5.clone(),
        },
    }
}

/// Resolves every write intent left behind (see the module doc), then finishes the
/// deletes a crash cut short after their tombstone.
pub async fn recover(shared: &Shared) -> Result<Recovered> {
    let mut out = Recovered::default();
    for (key, intent) in shared.catalog.delete_intents()? {
        let _fence = shared.catalog.fence(&key).await;
        match shared.dest.delete(&key, &expect_of(&intent)).await? {
            Deleted::Deleted => out.deleted += 1,
            Deleted::Kept(why) => {
                tracing::warn!("gateway: {key}: another writer's object, left as it is: {why}");
                out.foreign += 1;
            }
        }
        shared.catalog.clear_delete_intent(&key)?;
    }
    for (key, intent) in shared.catalog.write_intents()? {
        let _fence = shared.catalog.fence(&key).await;
        let counter = match resolve(shared, &key, &intent).await? {
            // Its record's batch removed the intent.
            Outcome::Adopted => {
                out.adopted += 1;
                continue;
            }
            Outcome::Dropped => &mut out.dropped,
            Outcome::Foreign => &mut out.foreign,
        };
        *counter += 1;
        shared.catalog.clear_write_intent(&key)?;
    }
    Ok(out)
}

enum Outcome {
    Dropped,
    Adopted,
    Foreign,
}

async fn resolve(shared: &Shared, key: &ObjectKey, intent: &WriteIntent) -> Result<Outcome> {
    let cat = &shared.catalog;
    let Some((size, md5)) = read_back(shared, key).await? else {
        tracing::info!("gateway: an unacknowledged write of {key} never reached the destination");
        return Ok(Outcome::Dropped);
    };
    if expected(shared, key)?.is_some_and(|(s, m)| s == size && m == md5) {
        tracing::info!("gateway: an unacknowledged write of {key} did not land; kept as it was");
        return Ok(Outcome::Dropped);
    }
    if size != intent.size {
        tracing::warn!(
            "gateway: {key} at the destination is {size} bytes, neither the catalog's nor the unacknowledged write's: left alone"
        );
        return Ok(Outcome::Foreign);
    }
    let w = GatewayWrite {
        size,
        etag: intent.etag.clone().unwrap_or_else(|| md5.clone()),
        modified: intent.modified,
        content_type: intent.content_type.clone(),
        user_meta: intent.user_meta.clone(),
        landed: None,
    };
    cat.set_gateway_record(key, &GatewayRecord::Written(w), None)?;
    cat.forget_for_gateway(key)?;
    tracing::info!("gateway: an unacknowledged write of {key} landed; recorded as written");
    Ok(Outcome::Adopted)
}

/// What the catalog says the destination holds at `key` (size, MD5 hex), where an MD5 is
/// known: a gateway write's single-part ETag, or the move's copy when its ETag there is
/// one.
fn expected(shared: &Shared, key: &ObjectKey) -> Result<Option<(u64, String)>> {
    let cat = &shared.catalog;
    if let Some(GatewayRecord::Written(w)) = cat.gateway_record(key)? {
        return Ok(Some((w.size, w.etag)));
    }
    Ok(cat
        .placed(key)?
        .map(|l| (l.size, l.etag.trim_matches('"').to_string())))
}

/// The size and MD5 (hex) of what the destination holds at `key`; None if nothing.
async fn read_back(shared: &Shared, key: &ObjectKey) -> Result<Option<(u64, String)>> {
    let mut r = match shared.dest.get(key).await {
        Ok(r) => r,
        Err(Error::Gone { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (mut md5, mut size) = (Md5::new(), 0u64);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| Error::object(key, format!("reading back from the destination: {e}")))?;
        if n == 0 {
            return Ok(Some((size, hex::encode(md5.finalize()))));
        }
        md5.update(&buf[..n]);
        size += n as u64;
    }
}

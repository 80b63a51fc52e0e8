//! `--resume-listing-only`: after a complete listing, an ingest that does not list the
//! source again but takes the objects the catalog still has to fetch (listed and not
//! staged, or failed at ingest). For a huge bucket whose listing finished, this fetches
//! what is left without hours of List requests; changes at the source are then found by
//! the next ingest without the option.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::backend::throttle::Throttle;
use crate::backend::{ListFrom, Listed, Opened, Source};
use crate::catalog::{Catalog, ObjectState};
use crate::error::{Error, Result};
use crate::object::ObjectMeta;

/// A source whose listing is the catalog's unfinished objects; reads go to `inner`.
pub struct PendingSource {
    inner: Arc<dyn Source>,
    catalog: Arc<Catalog>,
}

impl PendingSource {
    pub fn new(inner: Arc<dyn Source>, catalog: Arc<Catalog>) -> Self {
        PendingSource { inner, catalog }
    }
}

/// Whether an ingest still has to fetch an object in this state.
fn to_fetch(state: &ObjectState, failed_too: bool) -> bool {
    match state {
        ObjectState::Listed => true,
        ObjectState::Failed { stage, .. } => failed_too && stage == "ingest",
        _ => false,
    }
}

/// Walks the catalog on the blocking pool, sending each object recorded `Listed` (and,
/// with `failed_too`, each that failed at ingest) as a listed object.
pub(crate) async fn walk(
    catalog: Arc<Catalog>,
    failed_too: bool,
    tx: mpsc::Sender<Listed>,
) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        for item in catalog.objects()? {
            let (key, rec) = item?;
            if !to_fetch(&rec.state, failed_too) {
                continue;
            }
            let meta = ObjectMeta {
                key,
                size: rec.size,
                version: rec.version,
                content_type: None,
                user_meta: vec![],
                modified: None,
            };
            if tx.blocking_send(Listed::Object(meta)).is_err() {
                break;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::task("catalog walk", e))?
}

#[async_trait]
impl Source for PendingSource {
    fn url(&self) -> String {
        self.inner.url()
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        walk(self.catalog.clone(), true, tx).await
    }

    async fn list_resumable(&self, tx: mpsc::Sender<Listed>, _from: &ListFrom) -> Result<()> {
        self.list(tx).await
    }

    async fn open(&self, meta: &ObjectMeta) -> Result<Opened> {
        self.inner.open(meta).await
    }

    async fn check_unchanged(&self, meta: &ObjectMeta) -> Result<()> {
        self.inner.check_unchanged(meta).await
    }

    fn throttle(&self) -> Option<Arc<Throttle>> {
        self.inner.throttle()
    }

    /// An object listed weeks ago may be gone now: not a failure of the move.
    fn vanishes(&self) -> bool {
        true
    }
}

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
    /// Reads go here; none for a walk that only lists ([`PendingSource::listed_only`]).
    inner: Option<Arc<dyn Source>>,
    catalog: Arc<Catalog>,
    /// Objects that failed at ingest are listed too.
    failed_too: bool,
}

impl PendingSource {
    pub fn new(inner: Arc<dyn Source>, catalog: Arc<Catalog>) -> Self {
        PendingSource {
            inner: Some(inner),
            catalog,
            failed_too: true,
        }
    }

    /// A walk of the objects recorded `Listed` (never fetched), for the ingest's own
    /// use: its `list` is all that may be called.
    pub fn listed_only(catalog: Arc<Catalog>) -> Self {
        PendingSource {
            inner: None,
            catalog,
            failed_too: false,
        }
    }

    fn inner(&self) -> Result<&Arc<dyn Source>> {
        self.inner
            .as_ref()
            .ok_or_else(|| Error::task("catalog walk", "a listing-only walk cannot read"))
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

#[async_trait]
impl Source for PendingSource {
    fn url(&self) -> String {
        self.inner.as_ref().map(|s| s.url()).unwrap_or_default()
    }

    /// Walks the catalog on the blocking pool, sending each object still to fetch.
    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        let (catalog, failed_too) = (self.catalog.clone(), self.failed_too);
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

    async fn list_resumable(&self, tx: mpsc::Sender<Listed>, _from: &ListFrom) -> Result<()> {
        self.list(tx).await
    }

    async fn open(&self, meta: &ObjectMeta) -> Result<Opened> {
        self.inner()?.open(meta).await
    }

    async fn check_unchanged(&self, meta: &ObjectMeta) -> Result<()> {
        self.inner()?.check_unchanged(meta).await
    }

    fn throttle(&self) -> Option<Arc<Throttle>> {
        self.inner.as_ref().and_then(|s| s.throttle())
    }

    /// An object listed weeks ago may be gone now: not a failure of the move.
    fn vanishes(&self) -> bool {
        true
    }
}

//! What each `barge` command does, as library functions that return typed outcomes: the
//! binary only parses options into [`Settings`], calls one of these and prints what comes
//! back; the daemon calls the same functions for its jobs.
//!
//! * [`stages`]: ingest, drain, verify, report, fsck, one stage each.
//! * [`migrate`]: ingest and drain together, the repair pass, the final check.
//! * [`sync`]: passes of migrate and deletions until `cutover` proves both sides equal.
//! * [`fleet`]: `plan` (a move cut into shards for several nodes) and `report --fleet`.
//! * [`live`]: the monitor, status API and progress display of a long command.
//! * [`daemon`]: the node's service: status socket, job spool, self-test.
//! * [`demo`]: the embedded default: a sample tree moved into a directory and verified.
//! * [`text`]: each outcome as the CLI prints it and the daemon logs it.

pub mod daemon;
pub mod demo;
pub mod fleet;
pub mod gateway;
pub mod live;
pub mod migrate;
pub mod stages;
pub mod sync;
pub mod text;

use std::path::PathBuf;

use crate::backend::{DestLayout, EndpointOptions};
use crate::crypto::keys::KeyRequest;
use crate::error::Result;
use crate::node::Node;

/// What every command takes from the command line: where the state is, how to unlock it,
/// and the options of each side of the move.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The state directory (catalog, keys).
    pub state: PathBuf,
    /// Staging drives given on the command line (added to the configured ones).
    pub staging: Vec<PathBuf>,
    /// Where the master key comes from.
    pub key: KeyRequest,
    /// Options of the source endpoint.
    pub source: EndpointOptions,
    /// Options of the destination endpoint, before the recorded layout is applied.
    pub dest: EndpointOptions,
    /// Objects fetched (ingest) or written (drain) at once; None: the stage's default.
    pub concurrency: Option<usize>,
    /// An S3 Inventory manifest that lists the source instead of List requests.
    pub inventory: Option<String>,
    /// After a complete listing, fetch what the catalog still has to fetch instead of
    /// listing the source again.
    pub resume_listing_only: bool,
    /// Which objects of the source are part of the move.
    pub filter: crate::filter::FilterSpec,
    /// Set by `sync` and `cutover` for the ingest of their pass (see
    /// [`crate::ingest::IngestOptions::pass`]).
    pub sync_pass: Option<u64>,
    /// Set by `cutover` for the first run of its pass: list from the first key.
    pub fresh_listing: bool,
    /// This node's share of a plan over several nodes (`--plan`, `--shard`).
    pub shard: Option<crate::plan::Shard>,
    /// The key the nodes of one move sign their reports and certificates with, and
    /// `report --fleet` checks them with (`--fleet-key-file`, `BARGE_FLEET_KEY`).
    pub fleet_key: Option<crate::fleet_key::FleetKey>,
}

impl Settings {
    /// Opens the state directory.
    pub fn open(&self) -> Result<Node> {
        Node::open(&self.state, &self.key, &self.staging)
    }

    /// Binds the state directory to this node's shard (or refuses it: see
    /// [`crate::plan::Shard::bind`]).
    pub fn bind_shard(&self, node: &Node) -> Result<()> {
        crate::plan::Shard::bind(&node.catalog, self.shard.as_ref())
    }

    /// Refuses a directory endpoint (`role`: "source" or "destination") that holds or
    /// lies inside the state directory, a staging drive or the key file, naming both
    /// paths (see [`crate::backend::local::refuse_nested`]). Stores are not checked.
    pub(crate) fn refuse_overlaps(&self, node: &Node, role: &str, url: &str) -> Result<()> {
        use crate::backend::local::refuse_nested;
        refuse_nested(role, url, "the state directory", &node.state_dir)?;
        let configured = node.staging.drives.iter().map(std::path::PathBuf::from);
        for drive in configured.chain(self.staging.iter().cloned()) {
            refuse_nested(role, url, "the staging drive", &drive)?;
        }
        if let Some(key) = &self.key.key_file {
            refuse_nested(role, url, "the key file", key)?;
        }
        Ok(())
    }

    /// Destination options; without `--containers`, the layout recorded by the last
    /// drain to the same URL, so that verify finds every object.
    pub fn dest_options(&self, node: &Node, url: &str) -> Result<EndpointOptions> {
        let mut o = self.dest.clone();
        if o.containers.is_none()
            && let Some(layout) = DestLayout::recorded(&node.catalog, url)?
        {
            o.containers = layout.containers_option();
        }
        Ok(o)
    }
}

/// A stage's summary and how long the stage took.
#[derive(Debug, Clone)]
pub struct Timed<T> {
    /// What the stage reports.
    pub summary: T,
    /// Wall-clock seconds.
    pub secs: f64,
}

impl<T> Timed<T> {
    /// Runs `f` and times it.
    pub(crate) async fn of<F: std::future::Future<Output = Result<T>>>(f: F) -> Result<Self> {
        let t = std::time::Instant::now();
        let summary = f.await?;
        Ok(Timed {
            summary,
            secs: t.elapsed().as_secs_f64(),
        })
    }
}

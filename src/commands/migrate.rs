//! `migrate`: ingest and drain at once (the drain follows what the ingest stages), a
//! repair pass when the drain found rot in staging, then the final check.

use std::sync::Arc;

use super::stages::{self, ReportOutcome};
use super::{Settings, Timed};
use crate::drain::DrainSummary;
use crate::error::Result;
use crate::ingest::IngestSummary;
use crate::monitor::Monitor;
use crate::node::Node;
use crate::verify::VerifyReport;

/// Passes `migrate` makes at most: the second only when the first found corrupt staged
/// chunks, to fetch those objects again from the source.
pub const REPAIR_PASSES: usize = 2;

/// One pass of ingest and drain, run together.
#[derive(Debug)]
pub struct Pass {
    /// The ingest's summary.
    pub ingest: Timed<IngestSummary>,
    /// The drain's summary.
    pub drain: Timed<DrainSummary>,
}

/// The passes a move made.
#[derive(Debug)]
pub struct MoveOutcome {
    /// In order; a second one only after rot was found in staging.
    pub passes: Vec<Pass>,
}

impl MoveOutcome {
    /// Nothing failed and nothing stopped early in the last pass.
    pub fn complete(&self) -> bool {
        self.passes
            .last()
            .is_some_and(|p| p.ingest.summary.complete() && p.drain.summary.complete())
    }
}

/// Refuses a directory destination inside a directory source or holding it, naming
/// both (the move would list and copy its own output).
pub(crate) fn refuse_crossed(source: &str, dest: &str) -> Result<()> {
    match crate::backend::local::dir_of(source) {
        Some(src) => crate::backend::local::refuse_nested("destination", dest, "the source", &src),
        None => Ok(()),
    }
}

/// Ingest from `source` and drain into `dest` together; a second pass when staging rot
/// was found (the chunk locations are forgotten and the objects fetched again).
pub async fn move_through(
    s: &Settings,
    node: &Node,
    source: &str,
    dest: &str,
    monitor: Arc<Monitor>,
) -> Result<MoveOutcome> {
    refuse_crossed(source, dest)?;
    let mut passes = Vec::new();
    loop {
        let (feed, follow) = crate::drain::follow();
        let (i, d) = tokio::join!(
            stages::ingest(s, node, source, Some(feed), monitor.clone()),
            stages::drain(s, node, dest, Some(follow), monitor.clone())
        );
        let pass = Pass {
            ingest: i?,
            drain: d?,
        };
        let rot = pass.drain.summary.rot;
        passes.push(pass);
        if rot == 0 || passes.len() == REPAIR_PASSES {
            return Ok(MoveOutcome { passes });
        }
        tracing::warn!(
            "{rot} objects had a corrupt staged copy: fetching them again from the source"
        );
    }
}

/// How a migrate ends: a cheap verify of the destination, then the report.
#[derive(Debug)]
pub struct Check {
    /// Presence and size of every catalogued object at the destination.
    pub verify: VerifyReport,
    /// The report (and its chart).
    pub report: ReportOutcome,
}

impl Check {
    /// Both say DONE.
    pub fn done(&self) -> bool {
        self.verify.ok() && self.report.report.done
    }
}

/// The final check of a migrate. The run's own listing was the source check; a second
/// listing of a huge bucket is left to an explicit `barge verify --source`.
pub async fn check(s: &Settings, node: &Node, dest: &str) -> Result<Check> {
    let verify = stages::verify(s, node, dest, None, false).await?;
    let report = stages::report(node, None, None)?;
    Ok(Check { verify, report })
}

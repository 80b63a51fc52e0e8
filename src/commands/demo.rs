//! `barge demo`, the embedded default: generate a sample tree (once), move it through
//! sealed staging into a local directory, verify every byte against the source, report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::stages::{self, ReportOutcome};
use super::{Settings, Timed};
use crate::crypto::keys::KeyRequest;
use crate::drain::DrainSummary;
use crate::error::Result;
use crate::ingest::IngestSummary;
use crate::monitor::Monitor;
use crate::node::{InitOptions, Node};
use crate::sample::{self, SampleStats};
use crate::verify::VerifyReport;

/// Where the demo keeps its parts, under its working directory.
#[derive(Debug)]
pub struct DemoDirs {
    /// The generated source tree.
    pub source: PathBuf,
    /// The demo's own state directory.
    pub state: PathBuf,
    /// The destination directory.
    pub out: PathBuf,
}

impl DemoDirs {
    /// The parts of the demo under `dir`.
    fn under(dir: &Path) -> Self {
        DemoDirs {
            source: dir.join("sample"),
            state: dir.join("state"),
            out: dir.join("out"),
        }
    }
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoOutcome {
    /// Where the demo's parts are.
    pub dirs: DemoDirs,
    /// The sample tree, when this run generated it.
    pub generated: Option<SampleStats>,
    /// The ingest of the sample.
    pub ingest: Timed<IngestSummary>,
    /// The drain into the output directory.
    pub drain: Timed<DrainSummary>,
    /// The full verify against the source.
    pub verify: VerifyReport,
    /// The report.
    pub report: ReportOutcome,
}

impl DemoOutcome {
    /// Every stage complete, verify and report DONE.
    pub fn done(&self) -> bool {
        self.ingest.summary.complete()
            && self.drain.summary.complete()
            && self.verify.ok()
            && self.report.report.done
    }
}

/// Runs the demo in `dir` with a sample of about `size` bytes; `s` gives the endpoint
/// options (its state directory is replaced by the demo's own).
pub async fn run(s: &Settings, dir: &Path, size: u64) -> Result<DemoOutcome> {
    let d = DemoDirs::under(dir);
    let generated = match d.source.exists() {
        true => None,
        false => Some(sample::generate(&d.source, size, 1)?),
    };
    let node = if d.state.join("keys/key.json").exists() {
        Node::open(&d.state, &KeyRequest::default(), &[])?
    } else {
        Node::init(&d.state, &InitOptions::default())?
    };
    let s = &Settings {
        state: d.state.clone(),
        concurrency: None,
        ..s.clone()
    };
    let (source, out) = (d.source.display().to_string(), d.out.display().to_string());
    let m = Arc::new(Monitor::new("demo"));
    let ingest = stages::ingest(s, &node, &source, None, m.clone()).await?;
    let drain = stages::drain(s, &node, &out, None, m).await?;
    let verify = stages::verify(s, &node, &out, Some(&source), true).await?;
    let report = stages::report(&node, None, None)?;
    Ok(DemoOutcome {
        dirs: d,
        generated,
        ingest,
        drain,
        verify,
        report,
    })
}

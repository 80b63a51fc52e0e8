//! The live side of a long command: a monitor that records the run in the catalog and
//! samples its rates, the status API on `<state>/barge.sock` (and `--http`), and the
//! progress display on stderr.

use std::sync::Arc;

use crate::error::Result;
use crate::monitor::progress::{self, Progress, Style};
use crate::monitor::server::{self, HttpOptions, StatusServer};
use crate::monitor::{Mode, Monitor};
use crate::node::Node;

/// How a command shows itself while it runs.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Also serve the status API (and read-only metrics) on these TCP addresses.
    pub http: HttpOptions,
    /// Start paused: nothing moves until resumed through the status API.
    pub start_paused: bool,
    /// The progress display on stderr.
    pub progress: Style,
}

/// A run's monitor: described, recorded in the catalog as the run goes, sampled once a
/// second. The daemon shows it through its own status server; commands through [`Live`].
pub fn monitor_for(node: &Node, command: &str, mode: Mode) -> Arc<Monitor> {
    let m = Arc::new(Monitor::new(command));
    m.describe(
        command,
        mode,
        &node.state_dir.display().to_string(),
        &node.master.fingerprint(),
    );
    m.persist_to(node.catalog.clone());
    m.start_sampler();
    m
}

/// The monitor, its status API and the progress display of one command. Dropping it
/// stops the last two (and removes the status socket); call [`Live::finish`] first.
pub struct Live {
    /// The run's monitor, handed to the stages.
    pub monitor: Arc<Monitor>,
    _server: StatusServer,
    _progress: Progress,
}

impl Live {
    /// Starts the monitor, the status API and the progress display of `command`.
    pub async fn start(node: &Node, command: &str, mode: Mode, o: &LiveOptions) -> Result<Live> {
        let m = monitor_for(node, command, mode);
        if o.start_paused {
            m.control(barge_tui::model::Action::Pause);
            tracing::info!(
                "started paused: resume with `barge tui` (p) or POST /control?action=resume"
            );
        }
        let server = server::start(m.clone(), &node.state_dir, &o.http).await?;
        if let Some(a) = server.http {
            tracing::info!("status API on http://{a}/status and /metrics");
        }
        if let Some(a) = server.metrics {
            tracing::info!("metrics on http://{a}/metrics");
        }
        let progress = progress::start(m.clone(), o.progress);
        Ok(Live {
            monitor: m,
            _server: server,
            _progress: progress,
        })
    }

    /// Marks the run finished (the progress display prints its last line) and stops the
    /// status API and the display.
    pub fn finish(self) {
        self.monitor.finish();
    }
}

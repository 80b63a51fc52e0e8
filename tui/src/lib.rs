//! Terminal dashboard for a barge node (ratatui). This version renders the node's status
//! document (`barge --json status`) as a one-screen summary; the live dashboard with
//! charts and keys comes with the monitoring issue.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Gauge, Paragraph};
use serde::Deserialize;

/// The fields of `barge --json status` the dashboard shows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatusView {
    pub objects: u64,
    pub listed: u64,
    pub staged: u64,
    pub drained: u64,
    pub verified: u64,
    pub failed: u64,
    pub logical_bytes: u64,
    pub unique_bytes: u64,
    pub dedup_ratio: f64,
    pub io_engine: Option<String>,
    pub drives: Vec<String>,
    pub verdict: String,
}

impl StatusView {
    /// Parses the output of `barge --json status`.
    pub fn from_status_json(s: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Doc {
            status: StatusView,
        }
        Ok(serde_json::from_str::<Doc>(s)?.status)
    }

    /// Fraction of objects at the destination.
    pub fn progress(&self) -> f64 {
        if self.objects == 0 {
            0.0
        } else {
            (self.drained + self.verified) as f64 / self.objects as f64
        }
    }
}

/// Draws the summary into the whole frame.
pub fn draw(f: &mut Frame, s: &StatusView) {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(3),
            Constraint::Min(6),
            Constraint::Length(3),
        ])
        .split(f.area());
    let pct = s.progress();
    f.render_widget(
        Gauge::default()
            .block(Block::default().borders(Borders::ALL).title(" progress "))
            .gauge_style(Style::default().fg(Color::Green))
            .ratio(pct.clamp(0.0, 1.0))
            .label(format!(
                "{:.1}% of {} objects at destination",
                pct * 100.0,
                s.objects
            )),
        rows[0],
    );
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let lines = vec![
        Line::from(format!(
            "listed {}  staged {}  drained {}  verified {}  failed {}",
            s.listed, s.staged, s.drained, s.verified, s.failed
        )),
        Line::from(format!(
            "logical {:.2} GiB  unique {:.2} GiB  dedup {:.2}x",
            gib(s.logical_bytes),
            gib(s.unique_bytes),
            s.dedup_ratio
        )),
        Line::from(format!(
            "io engine {}",
            s.io_engine.as_deref().unwrap_or("-")
        )),
        Line::from(format!("drives {}", s.drives.join(", "))),
    ];
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" barge ")),
        rows[1],
    );
    let color = if s.verdict.starts_with("DONE") {
        Color::Green
    } else {
        Color::Yellow
    };
    f.render_widget(
        Paragraph::new(s.verdict.as_str())
            .style(Style::default().fg(color))
            .block(Block::default().borders(Borders::ALL).title(" verdict ")),
        rows[2],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::{Terminal, backend::TestBackend};

    #[test]
    fn renders_a_recorded_status_in_80x24() {
        let doc = r#"{"status":{"objects":219,"listed":0,"staged":19,"drained":200,"verified":0,
            "failed":0,"logical_bytes":113874524,"unique_bytes":62914560,"dedup_ratio":1.83,
            "io_engine":"io_uring","drives":["/srv/nvme0"],"verdict":"NOT DONE: 19 of 219 objects left",
            "chunks":229}}"#;
        let s = StatusView::from_status_json(doc).unwrap();
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| draw(f, &s)).unwrap();
        let screen: String = t
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        assert!(screen.contains("91.3% of 219 objects"), "{screen}");
        assert!(screen.contains("dedup 1.83x"));
        assert!(screen.contains("io engine io_uring"));
        assert!(screen.contains("NOT DONE: 19 of 219"));
    }
}

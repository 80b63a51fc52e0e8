//! Progress of a long command on the CLI: an indicatif bar when stderr is a terminal,
//! a plain line every [`LINE_EVERY`] when it is not (logs, CI, `nohup`), JSON lines with
//! `--json`, nothing with `--quiet`. All of it is read from the [`Monitor`]; the stages
//! do not know it exists.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use barge_tui::model::Status;
use barge_tui::ui::{bytes, secs};

use super::Monitor;

/// Interval of the plain and JSON progress lines.
pub const LINE_EVERY: Duration = Duration::from_secs(10);
/// Refresh interval of the terminal bar.
pub const BAR_EVERY: Duration = Duration::from_millis(500);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bar,
    Lines,
    Json,
    Off,
}

impl Style {
    /// The style for the flags given and where stderr goes.
    pub fn choose(quiet: bool, json: bool) -> Style {
        if quiet {
            Style::Off
        } else if json {
            Style::Json
        } else if std::io::stderr().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

/// Shows progress until dropped (the bar is cleared then).
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<indicatif::ProgressBar>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// One line summarising a status: objects per stage, rates, dedup, ETA.
pub fn line(s: &Status) -> String {
    let t = &s.totals;
    let eta = match (s.progress.eta_secs, s.progress.listing_done) {
        (Some(e), _) => format!("ETA {}", secs(e)),
        (None, false) => "ETA after listing".into(),
        (None, true) => "ETA -".into(),
    };
    format!(
        "{:.1}% {} of {}; listed {} staged {} drained {} failed {}; stage {}/s {:.0} obj/s drain {}/s {:.0} obj/s; dedup {:.2}x; {eta}{}",
        s.progress.fraction * 100.0,
        bytes(s.progress.bytes_done as f64),
        bytes(s.progress.bytes_to_move as f64),
        t.listed_objects,
        t.staged_objects,
        t.drained_objects,
        t.failed_objects,
        bytes(s.rates.staged_bytes_per_sec),
        s.rates.staged_objects_per_sec,
        bytes(s.rates.drained_bytes_per_sec),
        s.rates.drained_objects_per_sec,
        s.staging.dedup_ratio,
        if s.paused { " [paused]" } else { "" }
    )
}

/// Starts showing progress of `m` in `style`.
pub fn start(m: Arc<Monitor>, style: Style) -> Progress {
    match style {
        Style::Off => Progress {
            task: None,
            bar: None,
        },
        Style::Bar => {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(st) =
                indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {msg}")
            {
                bar.set_style(st.progress_chars("=> "));
            }
            let b = bar.clone();
            let task = tokio::spawn(async move {
                let mut iv = tokio::time::interval(BAR_EVERY);
                loop {
                    iv.tick().await;
                    let s = m.status();
                    b.set_length(s.progress.bytes_to_move.max(1));
                    b.set_position(s.progress.bytes_done);
                    b.set_message(line(&s));
                    b.tick();
                }
            });
            Progress {
                task: Some(task),
                bar: Some(bar),
            }
        }
        Style::Lines | Style::Json => {
            let task = tokio::spawn(async move {
                let mut iv = tokio::time::interval(LINE_EVERY);
                iv.tick().await;
                loop {
                    iv.tick().await;
                    let s = m.status();
                    if style == Style::Json {
                        let doc = serde_json::json!({"progress": {
                            "command": s.command, "uptime_secs": s.uptime_secs,
                            "totals": s.totals, "rates": s.rates, "progress": s.progress,
                            "dedup_ratio": s.staging.dedup_ratio, "paused": s.paused,
                        }});
                        eprintln!("{doc}");
                    } else {
                        tracing::info!("progress: {}", line(&s));
                    }
                }
            });
            Progress {
                task: Some(task),
                bar: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_like_an_operator_expects() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(3.5 * 1024.0 * 1024.0), "3.5 MiB");
        assert_eq!(secs(3725.0), "1h02m");
        assert_eq!(secs(185.0), "3m05s");
        let mut s = Status::default();
        s.progress.fraction = 0.5;
        s.totals.drained_objects = 3;
        s.paused = true;
        let l = line(&s);
        assert!(l.starts_with("50.0%"), "{l}");
        assert!(l.contains("drained 3") && l.ends_with("[paused]"), "{l}");
    }
}

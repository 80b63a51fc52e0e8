//! Drawing the dashboard from one [`Status`]. Pure: no I/O, so tests render recorded
//! documents into ratatui's `TestBackend` and read the screen.
//!
//! Layout (fits 80x24; larger terminals get taller charts and tables):
//!
//! ```text
//!  title: command, source → destination, uptime, RUNNING / PAUSED / DISCONNECTED
//!  progress gauge with bytes done, total, ETA and objects per second
//!  sync: pass, phase, lag, change rate, cutover estimate  (only for sync/cutover)
//!  ┌ throughput ─────────────┐┌ objects ─────────────────┐
//!  │ staged / drained MB/s   ││ counts, rates, queues,    │
//!  │ over the last minutes   ││ dedup and encryption      │
//!  └─────────────────────────┘└──────────────────────────┘
//!  [ drives | endpoints | errors ]  (Tab switches)
//!  key help
//! ```

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Cell, Chart, Dataset, Gauge, GraphType, Paragraph, Row, Table, Tabs,
};

use crate::model::{Status, rates_of};

/// The switchable bottom panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Panel {
    #[default]
    Drives,
    Endpoints,
    Errors,
}

impl Panel {
    pub const ALL: [Panel; 3] = [Panel::Drives, Panel::Endpoints, Panel::Errors];

    pub fn title(self) -> &'static str {
        match self {
            Panel::Drives => "drives",
            Panel::Endpoints => "endpoints",
            Panel::Errors => "errors",
        }
    }

    pub fn next(self) -> Panel {
        let i = Panel::ALL.iter().position(|p| *p == self).unwrap_or(0);
        Panel::ALL[(i + 1) % Panel::ALL.len()]
    }

    pub fn prev(self) -> Panel {
        let i = Panel::ALL.iter().position(|p| *p == self).unwrap_or(0);
        Panel::ALL[(i + Panel::ALL.len() - 1) % Panel::ALL.len()]
    }
}

/// What the dashboard shows besides the status itself.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub panel: Panel,
    /// Lines scrolled up from the newest error.
    pub error_scroll: usize,
    /// Set while the node cannot be reached (the last status stays on screen).
    pub disconnected: Option<String>,
    /// The answer to the last key that changed something on the node.
    pub message: Option<String>,
}

/// Binary-unit bytes.
pub fn bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let (mut v, mut i) = (b.max(0.0), 0);
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// "1h02m", "3m05s", "12s".
pub fn secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn boxed(title: &str) -> Block<'_> {
    Block::default().borders(Borders::ALL).title(Span::styled(
        format!(" {title} "),
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

/// Draws the whole dashboard.
pub fn draw(f: &mut Frame, s: &Status, v: &View) {
    let area = f.area();
    let chart_h = ((area.height.saturating_sub(4)) / 2).max(8);
    let sync_h = u16::from(s.sync.is_some());
    let gateway_h = u16::from(s.gateway.is_some());
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(sync_h),
            Constraint::Length(gateway_h),
            Constraint::Length(chart_h),
            Constraint::Min(4),
            Constraint::Length(1),
        ])
        .split(area);
    draw_title(f, rows[0], s, v);
    draw_progress(f, rows[1], s);
    if let Some(sync) = &s.sync {
        f.render_widget(Paragraph::new(sync_line(sync)), rows[2]);
    }
    if let Some(g) = &s.gateway {
        f.render_widget(Paragraph::new(gateway_line(g)), rows[3]);
    }
    let mid = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(rows[4]);
    draw_chart(f, mid[0], s);
    draw_counters(f, mid[1], s);
    draw_bottom(f, rows[5], s, v);
    let help = match &v.message {
        Some(m) => Line::from(Span::styled(m.clone(), Style::default().fg(Color::Cyan))),
        None => Line::from(
            "p pause/resume  +/- concurrency  ]/[ rate cap  tab panel  \u{2191}\u{2193} scroll  q quit",
        ),
    };
    f.render_widget(Paragraph::new(help), rows[6]);
}

/// One line for a gateway: reads by the side that served them, writes, deletes,
/// read-through bytes, errors, and what the passes left to the application.
pub fn gateway_line(g: &crate::model::GatewayStatus) -> Line<'static> {
    let err = if g.errors == 0 {
        Color::Green
    } else {
        Color::Red
    };
    let conflicts = if g.conflicts == 0 {
        Color::Green
    } else {
        Color::Yellow
    };
    Line::from(vec![
        Span::styled(" gateway ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            " reads {} dest {} source ({} through)  writes {}  deletes {}  lists {} ",
            g.reads_dest,
            g.reads_source,
            bytes(g.bytes_read_through as f64),
            g.writes,
            g.deletes,
            g.lists
        )),
        Span::styled(format!(" errors {} ", g.errors), Style::default().fg(err)),
        Span::styled(
            format!(" yielded {} conflicts {}", g.yielded, g.conflicts),
            Style::default().fg(conflicts),
        ),
    ])
}

/// One line for a sync: the pass and its phase, the lag (known differences), the
/// source's change rate and how long a cutover pass would take now.
pub fn sync_line(st: &crate::model::SyncStatus) -> Line<'static> {
    let lag_color = if st.lag_objects == 0 {
        Color::Green
    } else {
        Color::Yellow
    };
    Line::from(vec![
        Span::styled(
            format!(" {} pass {} {} ", st.kind, st.pass, st.phase),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!(
                " lag {} obj {} ",
                st.lag_objects,
                bytes(st.lag_bytes as f64)
            ),
            Style::default().fg(lag_color),
        ),
        Span::raw(format!(
            " changes {:.0} obj/h {}/h  last pass {}  cutover ~{}",
            st.change_objects_per_hour,
            bytes(st.change_bytes_per_hour),
            secs(st.last_pass_secs),
            secs(st.estimated_final_pass_secs)
        )),
    ])
}

fn draw_title(f: &mut Frame, r: Rect, s: &Status, v: &View) {
    let (state, color) = if let Some(e) = &v.disconnected {
        (format!("DISCONNECTED ({e})"), Color::Red)
    } else if s.finished && s.command == "idle" {
        // The daemon between jobs: the drives are shown, nothing runs.
        ("IDLE".to_string(), Color::Cyan)
    } else if s.finished {
        ("FINISHED".to_string(), Color::Green)
    } else if s.paused {
        ("PAUSED".to_string(), Color::Yellow)
    } else {
        ("RUNNING".to_string(), Color::Green)
    };
    let route = match (&s.source, &s.destination) {
        (Some(a), Some(b)) => format!("{a} \u{2192} {b}"),
        (Some(a), None) => a.clone(),
        (None, Some(b)) => format!("\u{2192} {b}"),
        (None, None) => s.state_dir.clone(),
    };
    let line = Line::from(vec![
        Span::styled(
            format!(" barge {} ", s.command),
            Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ),
        // State first: a long route is what gets cut on a narrow terminal.
        Span::raw(" "),
        Span::styled(
            state,
            Style::default().fg(color).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!("  up {}  {route}", secs(s.uptime_secs))),
    ]);
    f.render_widget(Paragraph::new(line), r);
}

fn draw_progress(f: &mut Frame, r: Rect, s: &Status) {
    let p = &s.progress;
    let eta = match (p.eta_secs, p.listing_done) {
        (Some(e), _) => format!("ETA {}", secs(e)),
        (None, false) => "ETA after listing".into(),
        (None, true) => "ETA -".into(),
    };
    f.render_widget(
        Gauge::default()
            .gauge_style(Style::default().fg(Color::Green).bg(Color::DarkGray))
            .ratio(p.fraction.clamp(0.0, 1.0))
            .label(format!(
                "{:.1}%  {} of {}  {eta}  objects/s: stage {:.0} drain {:.0}",
                p.fraction * 100.0,
                bytes(p.bytes_done as f64),
                bytes(p.bytes_to_move as f64),
                s.rates.staged_objects_per_sec,
                s.rates.drained_objects_per_sec
            )),
        r,
    );
}

fn draw_chart(f: &mut Frame, r: Rect, s: &Status) {
    let pts = rates_of(&s.history);
    let staged: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1 / 1e6)).collect();
    let drained: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.2 / 1e6)).collect();
    let x0 = pts.first().map_or(0.0, |p| p.0);
    let x1 = pts.last().map_or(1.0, |p| p.0).max(x0 + 1.0);
    let ymax = pts
        .iter()
        .map(|p| p.1.max(p.2) / 1e6)
        .fold(1.0f64, f64::max)
        * 1.1;
    let sets = vec![
        Dataset::default()
            .marker(symbols::Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Cyan))
            .data(&staged),
        Dataset::default()
            .marker(symbols::Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Magenta))
            .data(&drained),
    ];
    // The current rates sit in the title, coloured like their lines: a legend box would
    // cover the start of the chart in 80x24.
    let title = Line::from(vec![
        Span::styled(
            " throughput MB/s ",
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!("stage {:.1} ", s.rates.staged_bytes_per_sec / 1e6),
            Style::default().fg(Color::Cyan),
        ),
        Span::styled(
            format!("drain {:.1} ", s.rates.drained_bytes_per_sec / 1e6),
            Style::default().fg(Color::Magenta),
        ),
    ]);
    let chart = Chart::new(sets)
        .block(Block::default().borders(Borders::ALL).title(title))
        .x_axis(Axis::default().bounds([x0, x1]))
        .y_axis(
            Axis::default()
                .bounds([0.0, ymax])
                .labels(vec![Span::raw("0"), Span::raw(format!("{ymax:.0}"))]),
        );
    f.render_widget(chart, r);
}

fn queue_bar(depth: u64, cap: u64, width: usize) -> String {
    let filled = if cap == 0 {
        0
    } else {
        ((depth as f64 / cap as f64) * width as f64).round() as usize
    }
    .min(width);
    format!(
        "{}{}",
        "\u{2588}".repeat(filled),
        "\u{00b7}".repeat(width - filled)
    )
}

fn draw_counters(f: &mut Frame, r: Rect, s: &Status) {
    let t = &s.totals;
    let st = &s.staging;
    let mut lines = vec![
        Line::from(format!(
            "listed {:>8}  unchanged {:>7}",
            t.listed_objects, t.unchanged_objects
        )),
        Line::from(format!(
            "staged {:>8}  {:>10}  {:>9}/s",
            t.staged_objects,
            bytes(t.staged_bytes as f64),
            bytes(s.rates.staged_bytes_per_sec)
        )),
        Line::from(format!(
            "drained{:>8}  {:>10}  {:>9}/s",
            t.drained_objects,
            bytes(t.drained_bytes as f64),
            bytes(s.rates.drained_bytes_per_sec)
        )),
        Line::from(Span::styled(
            format!("failed {:>8}", t.failed_objects),
            if t.failed_objects > 0 {
                Style::default().fg(Color::Red)
            } else {
                Style::default()
            },
        )),
    ];
    for q in &s.queues {
        lines.push(Line::from(format!(
            "queue {:<6} {} {}/{}",
            q.name,
            queue_bar(q.depth, q.capacity, 10),
            q.depth,
            q.capacity
        )));
    }
    lines.push(Line::from(Span::styled(
        format!(
            "dedup {:.2}x  new {}  dup {}",
            st.dedup_ratio,
            bytes(st.bytes_new as f64),
            bytes(st.bytes_dedup as f64)
        ),
        Style::default().fg(Color::Cyan),
    )));
    lines.push(Line::from(format!(
        "sealed {} {}/s  {}",
        bytes(st.bytes_sealed as f64),
        bytes(s.rates.sealed_bytes_per_sec),
        if st.cipher.is_empty() {
            "AES-256-GCM"
        } else {
            st.cipher.as_str()
        }
    )));
    if !st.io_engine.is_empty() || !st.key_fingerprint.is_empty() {
        lines.push(Line::from(format!(
            "io {}  key {}",
            st.io_engine, st.key_fingerprint
        )));
    }
    f.render_widget(Paragraph::new(lines).block(boxed("objects")), r);
}

fn draw_bottom(f: &mut Frame, r: Rect, s: &Status, v: &View) {
    let parts = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(1), Constraint::Min(3)])
        .split(r);
    let titles: Vec<Line> = Panel::ALL
        .iter()
        .map(|p| {
            let n = match p {
                Panel::Drives => s.drives.len(),
                Panel::Endpoints => s.endpoints.len(),
                Panel::Errors => s.errors.len(),
            };
            Line::from(format!("{} ({n})", p.title()))
        })
        .collect();
    let sel = Panel::ALL.iter().position(|p| *p == v.panel).unwrap_or(0);
    f.render_widget(
        Tabs::new(titles)
            .select(sel)
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        parts[0],
    );
    match v.panel {
        Panel::Drives => draw_drives(f, parts[1], s),
        Panel::Endpoints => draw_endpoints(f, parts[1], s),
        Panel::Errors => draw_errors(f, parts[1], s, v.error_scroll),
    }
}

fn draw_drives(f: &mut Frame, r: Rect, s: &Status) {
    let rows: Vec<Row> = s
        .drives
        .iter()
        .map(|d| {
            let fill = if d.size_bytes > 0 {
                d.used_bytes as f64 / d.size_bytes as f64 * 100.0
            } else {
                0.0
            };
            let bad = d.health != "ok";
            Row::new(vec![
                Cell::from(d.path.clone()),
                Cell::from(format!("{fill:.0}%")),
                Cell::from(bytes(d.size_bytes as f64)),
                Cell::from(format!("{:.0}", d.write_bytes_per_sec / 1e6)),
                Cell::from(bytes(d.written_bytes as f64)),
                Cell::from(d.health.clone()).style(if bad {
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
                } else {
                    Style::default().fg(Color::Green)
                }),
            ])
        })
        .collect();
    let t = Table::new(
        rows,
        [
            Constraint::Min(16),
            Constraint::Length(5),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    )
    .header(
        Row::new(vec!["drive", "fill", "size", "MB/s", "written", "health"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(boxed("drives"));
    f.render_widget(t, r);
}

fn draw_endpoints(f: &mut Frame, r: Rect, s: &Status) {
    let rows: Vec<Row> = s
        .endpoints
        .iter()
        .map(|e| {
            Row::new(vec![
                match &e.down {
                    Some(_) => Cell::from(format!("DOWN {} {}", e.role, e.url))
                        .style(Style::default().fg(Color::Red)),
                    None => Cell::from(format!("{} {}", e.role, e.url)),
                },
                Cell::from(format!("{:.1}/{}", e.concurrency, e.max_concurrency)),
                Cell::from(format!("{}", e.in_flight)),
                Cell::from(e.latency_ms.map_or("-".into(), |l| format!("{l:.0}"))),
                Cell::from(format!("{}", e.requests)),
                Cell::from(format!("{}", e.retries)),
                Cell::from(format!("{}", e.throttled)).style(if e.throttled > 0 {
                    Style::default().fg(Color::Yellow)
                } else {
                    Style::default()
                }),
                Cell::from(
                    e.max_requests_per_sec
                        .map_or("-".into(), |r| format!("{r:.1}")),
                ),
            ])
        })
        .collect();
    let t = Table::new(
        rows,
        [
            Constraint::Min(18),
            Constraint::Length(8),
            Constraint::Length(4),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(6),
        ],
    )
    .header(
        Row::new(vec![
            "endpoint", "window", "now", "ms", "reqs", "retry", "thrtl", "rps cap",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(boxed("endpoints"));
    f.render_widget(t, r);
}

/// `s` cut in the middle to at most `max` characters, so the reason after a long object
/// name stays on screen.
pub fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max / 2).collect();
    let tail: String = s.chars().skip(n - (max - max / 2 - 1)).collect();
    format!("{head}\u{2026}{tail}")
}

fn draw_errors(f: &mut Frame, r: Rect, s: &Status, scroll: usize) {
    let inner = r.height.saturating_sub(2) as usize;
    let n = s.errors.len();
    let end = n.saturating_sub(scroll.min(n));
    let start = end.saturating_sub(inner);
    let lines: Vec<Line> = if n == 0 {
        vec![Line::from(Span::styled(
            "no errors",
            Style::default().fg(Color::Green),
        ))]
    } else {
        s.errors[start..end]
            .iter()
            .map(|e| {
                Line::from(vec![
                    Span::styled(format!("{} ", e.stage), Style::default().fg(Color::Red)),
                    Span::styled(
                        format!("{}: ", shorten(&e.object, 40)),
                        Style::default().add_modifier(Modifier::BOLD),
                    ),
                    // Engine errors start with "object <key>: "; the key is shown already.
                    Span::raw(
                        e.message
                            .strip_prefix(&format!("object {}: ", e.object))
                            .unwrap_or(&e.message)
                            .to_string(),
                    ),
                ])
            })
            .collect()
    };
    f.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(boxed("errors")),
        r,
    );
}

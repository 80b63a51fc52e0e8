//! The interactive loop of `barge tui`: a poller thread fetches the status once a
//! second (the node never waits for the dashboard: if the dashboard stalls, it just
//! fetches less), the main thread draws and handles keys. When the node goes away the
//! last screen stays, marked DISCONNECTED, and the poller keeps trying, so a restarted
//! node is picked up without restarting the dashboard.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};

use crate::client::{self, Target};
use crate::model::{Action, Status};
use crate::ui::{self, View};

/// Interval between two status fetches.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

enum Msg {
    Status(Box<Status>),
    Down(String),
    Reply(String),
}

/// Maps a key to an action on the node, given whether it is paused.
pub fn action_for(key: KeyCode, paused: bool) -> Option<Action> {
    match key {
        KeyCode::Char('p') | KeyCode::Char(' ') => Some(if paused {
            Action::Resume
        } else {
            Action::Pause
        }),
        KeyCode::Char('+') | KeyCode::Char('=') => Some(Action::Faster),
        KeyCode::Char('-') => Some(Action::Slower),
        KeyCode::Char(']') => Some(Action::RateUp),
        KeyCode::Char('[') => Some(Action::RateDown),
        _ => None,
    }
}

/// Runs the dashboard until the operator quits.
pub fn run(target: Target) -> Result<()> {
    let (tx, rx) = mpsc::channel::<Msg>();
    {
        let tx = tx.clone();
        let target = target.clone();
        std::thread::Builder::new()
            .name("barge-tui-poll".into())
            .spawn(move || {
                loop {
                    let m = match client::status(&target) {
                        Ok(s) => Msg::Status(Box::new(s)),
                        Err(e) => Msg::Down(format!("{target}: {e:#}")),
                    };
                    if tx.send(m).is_err() {
                        return;
                    }
                    std::thread::sleep(POLL_EVERY);
                }
            })?;
    }
    let mut terminal = ratatui::init();
    let res = (|| -> Result<()> {
        let mut status = Status::default();
        let mut view = View {
            disconnected: Some(format!("connecting to {target}")),
            ..Default::default()
        };
        loop {
            while let Ok(m) = rx.try_recv() {
                match m {
                    Msg::Status(s) => {
                        status = *s;
                        view.disconnected = None;
                    }
                    Msg::Down(e) => view.disconnected = Some(e),
                    Msg::Reply(r) => view.message = Some(r),
                }
            }
            terminal.draw(|f| ui::draw(f, &status, &view))?;
            if !event::poll(Duration::from_millis(200))? {
                continue;
            }
            let Event::Key(k) = event::read()? else {
                continue;
            };
            if k.kind != KeyEventKind::Press {
                continue;
            }
            match k.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Tab | KeyCode::Right => view.panel = view.panel.next(),
                KeyCode::BackTab | KeyCode::Left => view.panel = view.panel.prev(),
                KeyCode::Up => view.error_scroll += 1,
                KeyCode::Down => view.error_scroll = view.error_scroll.saturating_sub(1),
                code => {
                    if let Some(a) = action_for(code, status.paused) {
                        let tx = tx.clone();
                        let target = target.clone();
                        std::thread::spawn(move || {
                            let r =
                                client::control(&target, a).unwrap_or_else(|e| format!("{e:#}"));
                            let _ = tx.send(Msg::Reply(r));
                        });
                    }
                }
            }
        }
    })();
    ratatui::restore();
    res
}

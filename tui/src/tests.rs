//! Rendering tests against a status document recorded from a real `barge migrate`
//! (local sample tree into the project's Swift SAIO, rate-capped so it was caught
//! mid-run, with one object whose name Swift refuses).

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::KeyCode;
use ratatui::style::Color;

use crate::app::action_for;
use crate::model::{Action, Status};
use crate::ui::{self, Panel, View};

const RECORDED: &str = include_str!("fixtures/status-migrate.json");

fn recorded() -> Status {
    serde_json::from_str(RECORDED).expect("recorded status parses")
}

fn render(s: &Status, v: &View, w: u16, h: u16) -> (String, Terminal<TestBackend>) {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| ui::draw(f, s, v)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut screen = String::new();
    for y in 0..h {
        for x in 0..w {
            screen.push_str(buf[(x, y)].symbol());
        }
        screen.push('\n');
    }
    (screen, t)
}

#[test]
fn every_panel_shows_the_recorded_run_in_80x24() {
    let s = recorded();
    let (screen, _) = render(&s, &View::default(), 80, 24);
    // Title and progress.
    assert!(screen.contains("barge migrate"), "{screen}");
    assert!(screen.contains("RUNNING"), "{screen}");
    let pct = format!("{:.1}%", s.progress.fraction * 100.0);
    assert!(screen.contains(&pct), "progress {pct}:\n{screen}");
    // Chart and counters panels.
    assert!(screen.contains("throughput MB/s"), "{screen}");
    assert!(
        screen.contains(&format!("drain {:.1}", s.rates.drained_bytes_per_sec / 1e6)),
        "{screen}"
    );
    assert!(screen.contains(" objects "), "{screen}");
    assert!(
        screen.contains(&format!("drained{:>8}", s.totals.drained_objects)),
        "{screen}"
    );
    assert!(
        screen.contains(&format!("failed {:>8}", s.totals.failed_objects)),
        "{screen}"
    );
    assert!(
        screen.contains(&format!("dedup {:.2}x", s.staging.dedup_ratio)),
        "{screen}"
    );
    assert!(screen.contains("AES-256-GCM"), "{screen}");
    for q in &s.queues {
        assert!(
            screen.contains(&format!("queue {:<6}", q.name)),
            "queue {}:\n{screen}",
            q.name
        );
    }
    // Bottom tabs, drives first.
    assert!(
        screen.contains("drives (1)") && screen.contains("errors (1)"),
        "{screen}"
    );
    assert!(screen.contains("health"), "{screen}");
    assert!(screen.contains("q quit"), "{screen}");
    for line in screen.lines() {
        assert!(line.chars().count() <= 80);
    }
}

#[test]
fn endpoint_and_error_panels() {
    let s = recorded();
    let v = View {
        panel: Panel::Endpoints,
        ..Default::default()
    };
    let (screen, _) = render(&s, &v, 80, 24);
    assert!(screen.contains("destination swift://mt3"), "{screen}");
    assert!(
        screen.contains("window") && screen.contains("thrtl"),
        "{screen}"
    );
    // An endpoint taken for down is marked, in red.
    let mut down = s.clone();
    down.endpoints[0].down = Some("no request succeeded for 300 s".into());
    let (screen, t) = render(&down, &v, 80, 24);
    assert!(screen.contains("DOWN destination swift://mt3"), "{screen}");
    let buf = t.backend().buffer();
    let (x, y) = (0..24u16)
        .flat_map(|y| (0..79u16).map(move |x| (x, y)))
        .find(|&(x, y)| buf[(x, y)].symbol() == "D" && buf[(x + 1, y)].symbol() == "O")
        .expect("DOWN shown");
    assert_eq!(buf[(x, y)].fg, Color::Red, "{screen}");
    let v = View {
        panel: Panel::Errors,
        ..Default::default()
    };
    let (screen, _) = render(&s, &v, 80, 24);
    assert!(screen.contains("drain 0-long/"), "{screen}");
    assert!(
        screen.contains("takes at most 1024"),
        "reason visible:\n{screen}"
    );
    assert_eq!(ui::shorten("abcdefghij", 5), "ab\u{2026}ij");
    let v = View {
        panel: Panel::Errors,
        ..Default::default()
    };
    let mut ok = s.clone();
    ok.errors.clear();
    let (screen, _) = render(&ok, &v, 80, 24);
    assert!(screen.contains("no errors"), "{screen}");
}

#[test]
fn an_unhealthy_drive_is_red_and_disconnection_is_shown() {
    let mut s = recorded();
    s.drives[0].health = "critical warning: spare below threshold".into();
    let (screen, t) = render(&s, &View::default(), 100, 30);
    let buf = t.backend().buffer();
    let y = (0..30u16)
        .find(|&y| {
            (0..100u16)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .contains("critical")
        })
        .expect("health shown");
    let x = (0..100u16).find(|&x| buf[(x, y)].symbol() == "c" && buf[(x + 1, y)].symbol() == "r");
    assert_eq!(buf[(x.unwrap(), y)].fg, Color::Red, "{screen}");
    let v = View {
        disconnected: Some("node gone".into()),
        ..Default::default()
    };
    let (screen, _) = render(&s, &v, 80, 24);
    assert!(screen.contains("DISCONNECTED"), "{screen}");
}

#[test]
fn a_sync_shows_its_pass_lag_and_cutover_estimate_in_80x24() {
    let mut s = recorded();
    let (plain, _) = render(&s, &View::default(), 80, 24);
    assert!(
        !plain.contains(" lag "),
        "no sync line without a sync:\n{plain}"
    );
    s.command = "sync".into();
    s.sync = Some(crate::model::SyncStatus {
        pass: 7,
        kind: "sync".into(),
        phase: "deleting".into(),
        passes_finished: 6,
        lag_objects: 42,
        lag_bytes: 3_000_000,
        change_objects_per_hour: 120.0,
        estimated_final_pass_secs: 125.0,
        last_pass_secs: 600.0,
        ..Default::default()
    });
    let (screen, _) = render(&s, &View::default(), 80, 24);
    assert!(screen.contains("sync pass 7 deleting"), "{screen}");
    assert!(screen.contains("lag 42 obj"), "{screen}");
    assert!(screen.contains("changes 120 obj/h"), "{screen}");
    // The rest of the dashboard is still there.
    assert!(screen.contains("throughput MB/s"), "{screen}");
}

#[test]
fn a_gateway_shows_reads_by_side_writes_and_conflicts_in_80x24() {
    let mut s = recorded();
    let (plain, _) = render(&s, &View::default(), 80, 24);
    assert!(
        !plain.contains(" gateway "),
        "no gateway line without one:\n{plain}"
    );
    s.command = "gateway".into();
    s.gateway = Some(crate::model::GatewayStatus {
        reads_dest: 12,
        reads_source: 3,
        writes: 4,
        conflicts: 1,
        ..Default::default()
    });
    let (screen, _) = render(&s, &View::default(), 80, 24);
    assert!(screen.contains("gateway"), "{screen}");
    assert!(screen.contains("reads 12 dest 3 source"), "{screen}");
    assert!(screen.contains("throughput MB/s"), "{screen}");
}

#[test]
fn the_daemon_between_jobs_is_idle_not_finished() {
    let mut s = recorded();
    s.command = "idle".into();
    s.finished = true;
    let (screen, _) = render(&s, &View::default(), 80, 24);
    assert!(screen.contains("IDLE"), "{screen}");
    assert!(!screen.contains("FINISHED"), "{screen}");
}

#[test]
fn keys_map_to_actions() {
    assert_eq!(action_for(KeyCode::Char('p'), false), Some(Action::Pause));
    assert_eq!(action_for(KeyCode::Char('p'), true), Some(Action::Resume));
    assert_eq!(action_for(KeyCode::Char('+'), false), Some(Action::Faster));
    assert_eq!(action_for(KeyCode::Char('-'), false), Some(Action::Slower));
    assert_eq!(
        action_for(KeyCode::Char('['), false),
        Some(Action::RateDown)
    );
    assert_eq!(action_for(KeyCode::Char('x'), false), None);
    for a in [Action::Pause, Action::RateUp] {
        assert_eq!(Action::parse(a.as_str()), Some(a));
    }
    assert_eq!(Panel::Errors.next(), Panel::Drives);
}

#[test]
fn unknown_fields_and_missing_fields_are_tolerated() {
    let s: Status = serde_json::from_str(r#"{"command":"drain","future_field":1}"#).unwrap();
    assert_eq!(s.command, "drain");
    let (screen, _) = render(&s, &View::default(), 80, 24);
    assert!(screen.contains("barge drain"));
}

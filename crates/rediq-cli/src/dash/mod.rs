//! `rediq dash`: a live terminal dashboard (ratatui). `model.rs` reads through the `Inspector`
//! and keeps a bounded history; `browse.rs` pages and searches a queue's tasks; `view.rs`
//! draws; this module runs the loop: refresh every interval, draw, handle keys. The terminal is
//! restored on exit, on Ctrl-C and on a panic (`ratatui::init` installs the hook); a failed
//! refresh shows a banner and the next refresh tries again.

mod browse;
mod model;
mod view;

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use rediq::Inspector;

pub use browse::{Browse, Input, STATES};
pub use model::Model;

use crate::commands::Result;
use crate::output::now_ms;

/// What `y` confirms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Pause(String),
    Resume(String),
}

/// The dashboard's state: what was read, and what the operator is doing.
pub struct App {
    pub model: Model,
    /// A queue being browsed (`None`: the overview).
    pub browse: Option<Browse>,
    /// The selected queue's row.
    pub selected: usize,
    pub help: bool,
    /// The `find:` line, while it is open (it takes every key).
    pub input: Option<Input>,
    /// A question on the status line, answered with `y`.
    pub confirm: Option<String>,
    action: Option<Action>,
    /// The outcome of the last action.
    pub message: Option<String>,
}

impl App {
    pub fn new(interval: Duration) -> App {
        App {
            model: Model::new(interval.as_millis() as u64),
            browse: None,
            selected: 0,
            help: false,
            input: None,
            confirm: None,
            action: None,
            message: None,
        }
    }

    fn selected_queue(&self) -> Option<String> {
        self.model
            .snapshot
            .queues
            .get(self.selected)
            .map(|q| q.stats.queue.clone())
    }

    /// Handles one key; returns false to quit.
    async fn key(&mut self, i: &Inspector, code: KeyCode, ctrl: bool) -> bool {
        if ctrl && code == KeyCode::Char('c') {
            return false;
        }
        if let Some(action) = self.action.take() {
            self.confirm = None;
            if code == KeyCode::Char('y') {
                let done = match &action {
                    Action::Pause(q) => i.pause_queue(q).await.map(|_| format!("paused queue {q}")),
                    Action::Resume(q) => i
                        .resume_queue(q)
                        .await
                        .map(|_| format!("resumed queue {q}")),
                };
                self.message = Some(done.unwrap_or_else(|e| format!("failed: {e}")));
            } else {
                self.message = Some("cancelled".into());
            }
            return true;
        }
        if self.input.is_some() {
            self.input_key(i, code).await;
            return true;
        }
        if self.browse.is_some() {
            self.browse_key(i, code).await;
            return true;
        }
        let n = self.model.snapshot.queues.len();
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Enter => {
                if let Some(queue) = self.selected_queue() {
                    self.browse = Some(Browse::new(queue, 0));
                    self.read_tasks(i).await;
                }
            }
            KeyCode::Char('/') => {
                if let Some(queue) = self.selected_queue() {
                    self.open_input(queue, 0);
                }
            }
            KeyCode::Char('j') | KeyCode::Down => {
                self.selected = (self.selected + 1).min(n.saturating_sub(1));
            }
            KeyCode::Char('k') | KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Char('?') => self.help = !self.help,
            KeyCode::Char('p') => {
                if let Some(q) = self.selected_queue() {
                    self.confirm = Some(format!("Pause queue {q}?"));
                    self.action = Some(Action::Pause(q));
                }
            }
            KeyCode::Char('r') => {
                if let Some(q) = self.selected_queue() {
                    self.confirm = Some(format!("Resume queue {q}?"));
                    self.action = Some(Action::Resume(q));
                }
            }
            _ => {}
        }
        true
    }

    /// One refresh: a failure keeps the last snapshot and shows a banner.
    pub async fn refresh(&mut self, i: &Inspector) {
        // A search's results stay as they are: stepping on is the operator's `n`.
        if self
            .browse
            .as_ref()
            .is_some_and(|b| b.details.is_none() && b.search.is_none())
        {
            self.read_tasks(i).await;
        }
        match Model::read(i, now_ms()).await {
            Ok(s) => {
                self.model.update(s);
                let n = self.model.snapshot.queues.len();
                self.selected = self.selected.min(n.saturating_sub(1));
            }
            Err(e) => self.model.error = Some(e.to_string()),
        }
    }
}

/// Runs the dashboard until `q`, Esc or Ctrl-C.
pub async fn run(i: &Inspector, interval: Duration) -> Result {
    let mut terminal = ratatui::init();
    let out = run_loop(&mut terminal, i, interval).await;
    ratatui::restore();
    out
}

async fn run_loop(
    terminal: &mut ratatui::DefaultTerminal,
    i: &Inspector,
    interval: Duration,
) -> Result {
    let mut app = App::new(interval);
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            app.refresh(i).await;
            next = Instant::now() + interval;
        }
        terminal.draw(|f| view::draw(f, &app))?;
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        // Polling blocks this thread for at most `wait`.
        if tokio::task::block_in_place(|| event::poll(wait))? {
            if let Event::Key(k) = event::read()? {
                if k.kind == KeyEventKind::Press
                    && !app
                        .key(i, k.code, k.modifiers.contains(KeyModifiers::CONTROL))
                        .await
                {
                    return Ok(());
                }
                if app.message.is_some() && app.confirm.is_none() {
                    // An action ran: show its effect at once.
                    next = Instant::now();
                }
            }
        }
    }
}

/// Parses `--interval`: `500ms`, `2s`, or plain seconds.
pub fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    let d = if let Some(ms) = s.strip_suffix("ms") {
        ms.trim().parse::<u64>().map(Duration::from_millis).ok()
    } else {
        s.trim_end_matches('s')
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(Duration::from_secs_f64)
    };
    match d {
        Some(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => Ok(d),
        Some(d) => Err(format!("{d:?} is outside 100ms ..= 1h")),
        None => Err(format!("{s:?} is not a duration such as 500ms or 2s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use rediq::QueueStats;

    fn screen(app: &App) -> String {
        let mut t = Terminal::new(TestBackend::new(120, 30)).unwrap();
        t.draw(|f| view::draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn snapshot(at_ms: u64, processed: u64) -> model::Snapshot {
        model::Snapshot {
            at_ms,
            queues: vec![model::QueueRow {
                stats: QueueStats {
                    queue: "emails".into(),
                    pending: 1234,
                    dead: 7,
                    processed_total: processed,
                    limits: rediq::QueueLimits {
                        concurrency: Some(3),
                        rate: Some(rediq::RateLimit {
                            count: 100,
                            period: Duration::from_secs(1),
                        }),
                    },
                    ..QueueStats::default()
                },
                latency_ms: 2500,
                throughput: 0.0,
                failures: 0.0,
            }],
            workers: Vec::new(),
        }
    }

    #[test]
    fn numbers_appear_where_expected_and_the_sparkline_moves() {
        let mut app = App::new(Duration::from_secs(1));
        app.model.update(snapshot(1_000, 0));
        let first = screen(&app);
        let row = first
            .lines()
            .find(|l| l.contains("emails"))
            .expect("a queue row");
        for cell in ["running", "1234", "7", "2s", "≤3 100/1s"] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
        assert!(first.contains("Throughput 0/s "), "{first}");
        assert!(
            first.contains(" 0m 1s "),
            "the span under each chart: {first}"
        );
        app.model.update(snapshot(2_000, 500));
        let second = screen(&app);
        assert!(second.contains("Throughput 500/s "), "{second}");
        assert_eq!(second.matches(" 0m 2s ").count(), 5, "{second}");
        assert!(
            second.contains("emails 500/s ") && second.contains("emails depth 1234 "),
            "the selected queue's own charts: {second}"
        );
        let row = second.lines().find(|l| l.contains("emails")).unwrap();
        assert!(row.contains("500"), "{row}");
        // The sparkline drew a bar for the new point.
        let bars = |s: &str| s.chars().filter(|c| "▁▂▃▄▅▆▇█".contains(*c)).count();
        assert!(bars(&second) > bars(&first), "{second}");
        app.model.error = Some("connection refused".into());
        assert!(screen(&app).contains("Redis cannot be read, retrying: connection refused"));
    }

    fn task(payload: &str) -> rediq::Task {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        rediq::Task::builder("email:send")
            .queue("emails")
            .payload(&v)
            .unwrap()
            .build()
            .unwrap()
    }

    /// The status line: the screen's last line.
    fn status(s: &str) -> &str {
        s.lines().last().unwrap_or_default()
    }

    #[test]
    fn a_browsed_queue_shows_its_state_tabs_tasks_and_details() {
        let mut app = App::new(Duration::from_secs(1));
        app.model.update(snapshot(1_000, 0));
        let task = task(r#"{"to":"a@b"}"#);
        let mut b = Browse::new("emails".into(), 5);
        b.tasks = vec![task.clone()];
        app.browse = Some(b);
        let s = screen(&app);
        assert!(
            s.contains(
                "Tasks of emails, page 1 (1–1 of 7): \
                 pending active scheduled retry waiting [dead] completed"
            ),
            "{s}"
        );
        assert!(s.contains(&task.id) && s.contains(r#"{"to":"a@b"}"#), "{s}");
        if let Some(b) = app.browse.as_mut() {
            b.details = Some(Box::new(rediq::TaskDetails {
                task: task.clone(),
                state: rediq::TaskState::Dead,
                lease: None,
                waiting_for: Vec::new(),
                dependents: vec![("0190-x".into(), "later".into())],
            }));
        }
        let s = screen(&app);
        assert!(s.contains(&format!("Task {}", task.id)), "{s}");
        assert!(
            s.contains("state        dead") && s.contains("dependents   0190-x (later)"),
            "{s}"
        );
    }

    #[test]
    fn a_page_is_titled_with_its_number_and_the_states_total() {
        let mut app = App::new(Duration::from_secs(1));
        app.model.update(snapshot(1_000, 0));
        let mut b = Browse::new("emails".into(), 0);
        b.page = 1;
        b.tasks = (0..100).map(|n| task(&format!(r#"{{"n":{n}}}"#))).collect();
        app.browse = Some(b);
        let s = screen(&app);
        assert!(
            s.contains("Tasks of emails, page 2 (101–200 of 1234): [pending] active scheduled"),
            "{s}"
        );
        assert!(
            status(&s).contains("PgDn/PgUp: page · /: find · Enter: details"),
            "{s}"
        );
        // A queue the last refresh did not read has no known total; an empty page says so.
        app.browse = Some(Browse::new("later".into(), 0));
        let s = screen(&app);
        assert!(
            s.contains("Tasks of later, page 1 (none): [pending]"),
            "{s}"
        );
        app.help = true;
        let s = screen(&app);
        assert!(
            status(&s).contains("PgDn/PgUp or ]/[: page · /: find · n: next find step"),
            "{s}"
        );
    }

    #[test]
    fn the_find_line_shows_what_is_typed_and_where_it_searches() {
        let mut app = App::new(Duration::from_secs(1));
        app.model.update(snapshot(1_000, 0));
        app.open_input("emails".into(), 5);
        let s = screen(&app);
        assert!(
            status(&s).starts_with(" find: ▏ (Enter: search dead of emails"),
            "{s}"
        );
        if let Some(input) = app.input.as_mut() {
            input.text.push_str("user@ex");
        }
        let s = screen(&app);
        assert!(status(&s).contains("find: user@ex▏"), "{s}");
        assert!(status(&s).contains("Esc: cancel"), "{s}");
        // The queue table stays in view above the line.
        assert!(s.contains("Queues (1)"), "{s}");
        app.help = true;
        assert!(status(&screen(&app)).contains("find: user@ex▏"));
        app.input = None;
        assert!(
            status(&screen(&app)).contains("/: find in a queue"),
            "the help names the key"
        );
    }

    #[test]
    fn search_results_are_titled_with_what_was_searched() {
        let mut app = App::new(Duration::from_secs(1));
        app.model.update(snapshot(1_000, 0));
        let found = task(r#"{"to":"abc@x"}"#);
        let mut b = Browse::new("emails".into(), 5);
        b.page = 3;
        b.tasks = vec![found.clone()];
        b.search = Some(browse::Search {
            text: "abc".into(),
            cursor: Some("1000".into()),
            step: 1,
        });
        app.browse = Some(b);
        let s = screen(&app);
        assert!(
            s.contains(r#" find "abc" in dead of emails, step 1: 1 found, n: next step "#),
            "{s}"
        );
        assert!(s.contains(&found.id) && s.contains("abc@x"), "{s}");
        assert!(!s.contains("page 4"), "a search is not a page: {s}");
        assert!(status(&s).contains("found · n: next step"), "{s}");
        assert!(status(&s).contains("Esc: back to the pages"), "{s}");
        if let Some(b) = app.browse.as_mut() {
            b.tasks.clear();
            b.search = Some(browse::Search {
                text: "abc".into(),
                cursor: None,
                step: 2,
            });
        }
        let s = screen(&app);
        assert!(
            s.contains(r#"find "abc" in dead of emails, step 2: 0 found, searched to the end"#),
            "{s}"
        );
        assert!(!status(&s).contains("n: next step"), "{s}");
    }

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_interval("10ms").is_err());
        assert!(parse_interval("soon").is_err());
    }
}

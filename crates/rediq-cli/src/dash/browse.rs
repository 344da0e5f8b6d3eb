//! The dashboard's task browser: a queue's tasks in one state, a page at a time
//! (`Inspector::list_page`), or the matches of a search (`Inspector::find_tasks`), and the
//! `find:` line that starts a search. Every key costs at most one bounded Redis call: a page of
//! [`PAGE`] tasks, or one search step over about [`SCAN`] records, whatever the queue holds.

use ratatui::crossterm::event::KeyCode;
use rediq::{Inspector, QueueStats};

use super::App;
use crate::cli::State;

/// The states a queue's tasks are browsed by, in tab order.
pub const STATES: [State; 7] = [
    State::Pending,
    State::Active,
    State::Scheduled,
    State::Retry,
    State::Waiting,
    State::Dead,
    State::Completed,
];

/// Tasks per page.
pub const PAGE: usize = 100;

/// Records one search step examines: what `rediq task find` examines per step too.
pub const SCAN: usize = 1000;

/// A search whose matches the browser shows instead of a page.
pub struct Search {
    pub text: String,
    /// Where the next step starts; `None` once a step has reached the end of the state.
    pub cursor: Option<String>,
    /// Steps taken so far (0: none yet).
    pub step: usize,
}

/// The `find:` line being typed, and where it will search.
pub struct Input {
    pub text: String,
    pub queue: String,
    /// Index into [`STATES`].
    pub state: usize,
}

/// A queue's tasks in one state, opened with Enter.
pub struct Browse {
    pub queue: String,
    /// Index into [`STATES`].
    pub state: usize,
    /// The page shown while browsing (from 0); kept during a search, to go back to it.
    pub page: usize,
    pub tasks: Vec<rediq::Task>,
    pub selected: usize,
    /// The selected task's details, opened with Enter.
    pub details: Option<Box<rediq::TaskDetails>>,
    /// The search shown instead of the page (`None`: the page).
    pub search: Option<Search>,
}

impl Browse {
    pub fn new(queue: String, state: usize) -> Browse {
        Browse {
            queue,
            state,
            page: 0,
            tasks: Vec::new(),
            selected: 0,
            details: None,
            search: None,
        }
    }

    /// The list's title: the search and how far it went, or the page, which tasks it holds
    /// and, with `total` (the state's count at the last refresh), of how many.
    pub fn title(&self, total: Option<u64>) -> String {
        let state = STATES[self.state].name();
        if let Some(s) = &self.search {
            let rest = if s.cursor.is_some() {
                "n: next step"
            } else {
                "searched to the end"
            };
            return format!(
                "find {:?} in {state} of {}, step {}: {} found, {rest}",
                s.text,
                self.queue,
                s.step,
                self.tasks.len()
            );
        }
        let first = self.page * PAGE;
        let shown = if self.tasks.is_empty() {
            "none".to_string()
        } else {
            format!("{}–{}", first + 1, first + self.tasks.len())
        };
        let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
        format!(
            "Tasks of {}, page {} ({shown}{of})",
            self.queue,
            self.page + 1
        )
    }
}

/// How many tasks `stats` counts in `state`.
pub fn count(stats: &QueueStats, state: State) -> u64 {
    match state {
        State::Pending => stats.pending,
        State::Active => stats.active,
        State::Scheduled => stats.delayed,
        State::Retry => stats.retry,
        State::Waiting => stats.waiting,
        State::Dead => stats.dead,
        State::Completed => stats.completed,
    }
}

impl App {
    /// Opens the `find:` line for `queue` in `state`.
    pub(super) fn open_input(&mut self, queue: String, state: usize) {
        self.input = Some(Input {
            text: String::new(),
            queue,
            state,
        });
    }

    /// Keys while the `find:` line is open: typing edits, Enter searches, Esc cancels.
    pub(super) async fn input_key(&mut self, i: &Inspector, code: KeyCode) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        match code {
            KeyCode::Char(c) => input.text.push(c),
            KeyCode::Backspace => {
                input.text.pop();
            }
            KeyCode::Esc => self.input = None,
            KeyCode::Enter => {
                let Some(input) = self.input.take() else {
                    return;
                };
                if input.text.is_empty() {
                    self.message = Some("nothing to find".into());
                    return;
                }
                // From the queue table this opens the queue; in the browser it keeps the page
                // to come back to with Esc.
                let b = match self.browse.take() {
                    Some(b) if b.queue == input.queue => self.browse.insert(b),
                    _ => self
                        .browse
                        .insert(Browse::new(input.queue.clone(), input.state)),
                };
                b.state = input.state;
                b.details = None;
                b.search = Some(Search {
                    text: input.text,
                    cursor: None,
                    step: 0,
                });
                self.find_step(i).await;
            }
            _ => {}
        }
    }

    /// Keys while a queue's tasks are open: states with `h`/`l`/Tab, rows with `j`/`k`, pages
    /// with PgDn/PgUp or `]`/`[`, a search with `/` (and its next step with `n`), a task's
    /// details with Enter, back with `q`/Esc (from a search: to the page).
    pub(super) async fn browse_key(&mut self, i: &Inspector, code: KeyCode) {
        let Some(b) = self.browse.as_mut() else {
            return;
        };
        if b.details.is_some() {
            if matches!(code, KeyCode::Char('q') | KeyCode::Esc | KeyCode::Enter) {
                b.details = None;
            }
            return;
        }
        // A notice is about the key before; the next key clears it.
        self.message = None;
        let searching = b.search.is_some();
        match code {
            KeyCode::Char('q') | KeyCode::Esc if searching => {
                b.search = None;
                b.selected = 0;
                self.read_tasks(i).await;
            }
            KeyCode::Char('q') | KeyCode::Esc => self.browse = None,
            KeyCode::Char('l') | KeyCode::Right | KeyCode::Tab => {
                b.state = (b.state + 1) % STATES.len();
                self.state_changed(i).await;
            }
            KeyCode::Char('h') | KeyCode::Left | KeyCode::BackTab => {
                b.state = (b.state + STATES.len() - 1) % STATES.len();
                self.state_changed(i).await;
            }
            KeyCode::Char('j') | KeyCode::Down => {
                b.selected = (b.selected + 1).min(b.tasks.len().saturating_sub(1));
            }
            KeyCode::Char('k') | KeyCode::Up => b.selected = b.selected.saturating_sub(1),
            KeyCode::Char('n') | KeyCode::PageDown | KeyCode::Char(']') if searching => {
                self.find_step(i).await;
            }
            KeyCode::PageUp | KeyCode::Char('[') if searching => {
                self.message = Some("a search goes forward only (Esc: back to the pages)".into());
            }
            KeyCode::PageDown | KeyCode::Char(']') => self.turn_page(i, true).await,
            KeyCode::PageUp | KeyCode::Char('[') => self.turn_page(i, false).await,
            KeyCode::Char('/') => {
                let (queue, state) = (b.queue.clone(), b.state);
                self.open_input(queue, state);
            }
            KeyCode::Char('?') => self.help = !self.help,
            KeyCode::Enter => {
                if let Some(t) = b.tasks.get(b.selected) {
                    match i.task(&t.id, Some(&b.queue)).await {
                        Ok(Some(d)) => b.details = Some(Box::new(d)),
                        Ok(None) => self.message = Some(format!("task {} has moved on", t.id)),
                        Err(e) => self.message = Some(format!("failed: {e}")),
                    }
                }
            }
            _ => {}
        }
    }

    /// Another state: its first page, or the same search from its start in that state.
    async fn state_changed(&mut self, i: &Inspector) {
        let Some(b) = self.browse.as_mut() else {
            return;
        };
        b.selected = 0;
        b.page = 0;
        match b.search.as_mut() {
            Some(s) => {
                s.cursor = None;
                s.step = 0;
                self.find_step(i).await;
            }
            None => self.read_tasks(i).await,
        }
    }

    /// The next or previous page. Past the last page it stays (a short page is the last; a
    /// full one may be followed by an empty one, which is read once and not shown).
    async fn turn_page(&mut self, i: &Inspector, forward: bool) {
        let Some(b) = self.browse.as_mut() else {
            return;
        };
        let page = if forward {
            if b.tasks.len() < PAGE {
                self.message = Some("last page".into());
                return;
            }
            b.page + 1
        } else if b.page == 0 {
            self.message = Some("first page".into());
            return;
        } else {
            b.page - 1
        };
        match i
            .list_page(&b.queue, STATES[b.state].to_library(), page, PAGE)
            .await
        {
            Ok(tasks) if forward && tasks.is_empty() => self.message = Some("last page".into()),
            Ok(tasks) => {
                b.page = page;
                b.tasks = tasks;
                b.selected = 0;
            }
            Err(e) => self.model.error = Some(e.to_string()),
        }
    }

    /// Reads the browsed page again (a refresh, another state, or back from a search).
    pub(super) async fn read_tasks(&mut self, i: &Inspector) {
        let Some(b) = self.browse.as_mut() else {
            return;
        };
        match i
            .list_page(&b.queue, STATES[b.state].to_library(), b.page, PAGE)
            .await
        {
            Ok(tasks) => {
                b.selected = b.selected.min(tasks.len().saturating_sub(1));
                b.tasks = tasks;
            }
            Err(e) => self.model.error = Some(e.to_string()),
        }
    }

    /// One step of the browsed search: its matches replace the list.
    async fn find_step(&mut self, i: &Inspector) {
        let Some(b) = self.browse.as_mut() else {
            return;
        };
        let Some(s) = b.search.as_mut() else {
            return;
        };
        if s.step > 0 && s.cursor.is_none() {
            self.message = Some("searched to the end".into());
            return;
        }
        match i
            .find_tasks(
                &b.queue,
                STATES[b.state].to_library(),
                &s.text,
                s.cursor.as_deref(),
                SCAN,
            )
            .await
        {
            Ok(found) => {
                s.cursor = found.cursor;
                s.step += 1;
                b.tasks = found.tasks;
                b.selected = 0;
            }
            Err(e) => {
                // A first step that failed searched nothing: leave the search rather than
                // let its title say it reached the end (the banner says why).
                if s.step == 0 {
                    b.search = None;
                }
                self.model.error = Some(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rediq::testing::RedisServer;
    use rediq::{Client, Task};
    use std::time::Duration;

    async fn press(app: &mut App, i: &Inspector, keys: &[KeyCode]) {
        for k in keys {
            assert!(app.key(i, *k, false).await, "{k:?} quit");
        }
    }

    fn browse(app: &App) -> &Browse {
        app.browse.as_ref().expect("a queue is open")
    }

    #[tokio::test]
    async fn pages_turn_and_stop_at_the_ends_and_a_search_steps_on_with_n() {
        let redis = RedisServer::start();
        let client = Client::builder()
            .redis_url(redis.url())
            .build()
            .await
            .unwrap();
        for n in 0..150 {
            let file = if n == 120 {
                "needle.pdf".to_string()
            } else {
                format!("f{n}.png")
            };
            let t = Task::builder("work")
                .queue("uploads")
                .payload(&serde_json::json!({ "file": file }))
                .unwrap()
                .build()
                .unwrap();
            client.enqueue(t).await.unwrap();
        }
        let i = Inspector::connect(&redis.url()).await.unwrap();
        let mut app = App::new(Duration::from_secs(1));
        app.refresh(&i).await;
        press(&mut app, &i, &[KeyCode::Enter]).await;
        assert_eq!((browse(&app).page, browse(&app).tasks.len()), (0, 100));
        press(&mut app, &i, &[KeyCode::PageDown]).await;
        assert_eq!((browse(&app).page, browse(&app).tasks.len()), (1, 50));
        // A short page is the last: PgDn stays.
        press(&mut app, &i, &[KeyCode::Char(']')]).await;
        assert_eq!(browse(&app).page, 1);
        assert_eq!(app.message.as_deref(), Some("last page"));
        press(&mut app, &i, &[KeyCode::Char('['), KeyCode::PageUp]).await;
        assert_eq!((browse(&app).page, browse(&app).tasks.len()), (0, 100));
        assert_eq!(app.message.as_deref(), Some("first page"));

        // Typing edits the line; Enter runs one step, which covers these 150 records.
        press(&mut app, &i, &[KeyCode::Char('/')]).await;
        for c in "needlx".chars() {
            press(&mut app, &i, &[KeyCode::Char(c)]).await;
        }
        press(&mut app, &i, &[KeyCode::Backspace, KeyCode::Char('e')]).await;
        assert_eq!(app.input.as_ref().map(|x| x.text.as_str()), Some("needle"));
        press(&mut app, &i, &[KeyCode::Enter]).await;
        assert!(app.input.is_none());
        let b = browse(&app);
        assert_eq!(b.tasks.len(), 1);
        assert!(b.tasks[0].payload.ends_with(br#""needle.pdf"}"#));
        assert!(b.search.as_ref().is_some_and(|s| s.cursor.is_none()));
        press(&mut app, &i, &[KeyCode::Char('n')]).await;
        assert_eq!(app.message.as_deref(), Some("searched to the end"));
        // Details open and close over the results; Esc then goes back to the page.
        press(&mut app, &i, &[KeyCode::Enter]).await;
        assert!(browse(&app).details.is_some());
        press(&mut app, &i, &[KeyCode::Esc, KeyCode::Esc]).await;
        let b = browse(&app);
        assert!(b.search.is_none() && b.details.is_none());
        assert_eq!(b.tasks.len(), 100);

        // A step scans at most SCAN records: with more, `n` goes on where it stopped.
        for n in 0..SCAN {
            let t = Task::builder("work")
                .queue("uploads")
                .payload(&serde_json::json!({ "file": format!("g{n}.png") }))
                .unwrap()
                .build()
                .unwrap();
            client.enqueue(t).await.unwrap();
        }
        // Every payload but the needle's holds "png".
        press(&mut app, &i, &[KeyCode::Char('/')]).await;
        for c in "png".chars() {
            press(&mut app, &i, &[KeyCode::Char(c)]).await;
        }
        press(&mut app, &i, &[KeyCode::Enter]).await;
        let first = browse(&app).tasks.len();
        let s = browse(&app).search.as_ref().expect("a search");
        assert!(s.cursor.is_some() && s.step == 1, "{first} found");
        let mut all = first;
        for _ in 0..5 {
            press(&mut app, &i, &[KeyCode::Char('n')]).await;
            all += browse(&app).tasks.len();
            if browse(&app)
                .search
                .as_ref()
                .is_some_and(|s| s.cursor.is_none())
            {
                break;
            }
        }
        assert!(
            browse(&app)
                .search
                .as_ref()
                .is_some_and(|s| s.cursor.is_none()),
            "the search ends"
        );
        assert_eq!(all, 149 + SCAN, "every match once over the steps");
        // Esc from the results is the page, a second Esc the queue table.
        press(&mut app, &i, &[KeyCode::Esc, KeyCode::Esc]).await;
        assert!(app.browse.is_none());
        // `/` on the queue table searches the selected queue; Esc on the line cancels.
        press(&mut app, &i, &[KeyCode::Char('/'), KeyCode::Char('x')]).await;
        press(&mut app, &i, &[KeyCode::Esc]).await;
        assert!(app.input.is_none() && app.browse.is_none());
    }
}

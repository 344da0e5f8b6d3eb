//! Drawing the dashboard: a queue table (or a queue's tasks: a page, a search's matches, one
//! task's details), sparklines of throughput and depth with the span they cover, an error-rate
//! sparkline, a worker table, and a status line (key hints, help, confirmations, the `find:`
//! line), with a banner while Redis cannot be read.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::App;
use crate::output::{age, limits_cell, millis, queue_state, task_cells, TASK_COLUMNS};

/// A queue's tasks in one state (a page, with tabs of states; or a search's matches), or one
/// task's details. `total`: the state's count at the last refresh, when known.
fn draw_browse(
    f: &mut Frame,
    b: &super::Browse,
    area: ratatui::layout::Rect,
    now: u64,
    total: Option<u64>,
) {
    use crate::output::payload_text;
    if let Some(d) = &b.details {
        let t = &d.task;
        let mut lines = vec![
            format!("id           {}", t.id),
            format!("type         {}", t.task_type),
            format!("queue        {}", t.queue),
            format!("state        {}", crate::cli::State::of(d.state).name()),
            format!("priority     {}", t.options.priority),
            format!(
                "attempts     {} failed of {} retries",
                t.retry_cnt, t.options.max_retry
            ),
            format!("last error   {}", t.last_error.as_deref().unwrap_or("-")),
            format!(
                "unique key   {}",
                t.options.unique_key.as_deref().unwrap_or("-")
            ),
        ];
        if let Some(l) = &d.lease {
            lines.push(format!("running on   {} (token {})", l.server, l.token));
        }
        if !d.waiting_for.is_empty() {
            lines.push(format!("waiting for  {}", d.waiting_for.join(", ")));
        }
        if !d.dependents.is_empty() {
            let deps: Vec<String> = d
                .dependents
                .iter()
                .map(|(id, q)| format!("{id} ({q})"))
                .collect();
            lines.push(format!("dependents   {}", deps.join(", ")));
        }
        lines.push(format!("payload      {}", payload_text(&t.payload)));
        f.render_widget(
            Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" Task {} ", t.id)),
            ),
            area,
        );
        return;
    }
    let tabs: Vec<String> = super::STATES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i == b.state {
                format!("[{}]", s.name())
            } else {
                s.name().to_string()
            }
        })
        .collect();
    let rows = b.tasks.iter().map(|t| Row::new(task_cells(t, now)));
    let table = Table::new(
        rows,
        [
            Constraint::Length(37),
            Constraint::Length(16),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Fill(1),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(TASK_COLUMNS).style(Style::default().add_modifier(Modifier::BOLD)))
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(if b.search.is_some() {
                // The state is named in the title; h/l search the next one.
                format!(" {} ", b.title(total))
            } else {
                format!(" {}: {} ", b.title(total), tabs.join(" "))
            }),
    )
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(b.selected));
    f.render_stateful_widget(table, area, &mut state);
}

pub fn draw(f: &mut Frame, app: &App) {
    let m = &app.model;
    let [banner, queues, charts, workers, status] = Layout::vertical([
        Constraint::Length(u16::from(m.error.is_some())),
        Constraint::Min(5),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(1),
    ])
    .areas(f.area());

    if let Some(e) = &m.error {
        f.render_widget(
            Paragraph::new(format!(" Redis cannot be read, retrying: {e}"))
                .style(Style::default().fg(Color::White).bg(Color::Red)),
            banner,
        );
    }

    let header = Row::new([
        "QUEUE", "STATE", "PENDING", "ACTIVE", "SCHED", "RETRY", "DEAD", "DONE", "TASKS/S",
        "LATENCY", "ERRORS", "LIMITS",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = m.snapshot.queues.iter().map(|q| {
        let s = &q.stats;
        Row::new([
            s.queue.clone(),
            queue_state(s.paused).into(),
            s.pending.to_string(),
            s.active.to_string(),
            s.delayed.to_string(),
            s.retry.to_string(),
            s.dead.to_string(),
            s.completed.to_string(),
            format!("{:.0}", q.throughput),
            millis(q.latency_ms),
            format!("{:.1}%", q.error_rate()),
            limits_cell(s),
        ])
    });
    let widths = [
        Constraint::Fill(3),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(14),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" Queues ({}) ", m.snapshot.queues.len())),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    match &app.browse {
        Some(b) => {
            let total = m
                .snapshot
                .queues
                .iter()
                .find(|q| q.stats.queue == b.queue)
                .map(|q| super::browse::count(&q.stats, super::STATES[b.state]));
            draw_browse(f, b, queues, m.snapshot.at_ms, total)
        }
        None => {
            let mut state = TableState::default().with_selected(Some(app.selected));
            f.render_stateful_widget(table, queues, &mut state);
        }
    }

    let [tput, depth, errors, selected, selected_depth] =
        Layout::horizontal([Constraint::Fill(1); 5]).areas(charts);
    let span = m.span();
    let last = |h: &std::collections::VecDeque<u64>| h.back().copied().unwrap_or(0);
    // The value in the top border, the span covered in the bottom one: five charts share the
    // width, so each title stays short.
    let spark = |title: String, data: &std::collections::VecDeque<u64>| {
        Sparkline::default()
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(title)
                    .title_bottom(Line::from(format!(" {span} ")).right_aligned()),
            )
            .data(data.iter().copied().collect::<Vec<u64>>())
            .style(Style::default().fg(Color::Cyan))
    };
    f.render_widget(
        spark(
            format!(" Throughput {}/s ", last(&m.throughput)),
            &m.throughput,
        ),
        tput,
    );
    f.render_widget(
        spark(format!(" Depth {} ", last(&m.depth)), &m.depth),
        depth,
    );
    f.render_widget(
        spark(format!(" Errors {}% ", last(&m.errors)), &m.errors),
        errors,
    );

    // The selected queue's own throughput and depth histories.
    if let Some(q) = m.snapshot.queues.get(app.selected) {
        let empty = std::collections::VecDeque::new();
        let h = m.queue_throughput.get(&q.stats.queue).unwrap_or(&empty);
        f.render_widget(
            spark(format!(" {} {}/s ", q.stats.queue, last(h)), h),
            selected,
        );
        let d = m.queue_depth.get(&q.stats.queue).unwrap_or(&empty);
        f.render_widget(
            spark(format!(" {} depth {} ", q.stats.queue, last(d)), d),
            selected_depth,
        );
    }

    let now = m.snapshot.at_ms;
    let wrows = m.snapshot.workers.iter().map(|w| {
        let field = |k: &str| w.fields.get(k).cloned().unwrap_or_default();
        let beat = w
            .fields
            .get("last_heartbeat_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or("-".into(), |b| format!("{} ago", age(b, now)));
        Row::new([
            w.id.clone(),
            if w.alive(now) { "alive" } else { "DEAD" }.into(),
            field("in_flight"),
            field("concurrency"),
            beat,
            field("queues"),
        ])
    });
    let wtable = Table::new(
        wrows,
        [
            Constraint::Fill(2),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(11),
            Constraint::Length(10),
            Constraint::Fill(2),
        ],
    )
    .header(
        Row::new([
            "SERVER",
            "STATUS",
            "IN FLIGHT",
            "CONCURRENCY",
            "HEARTBEAT",
            "QUEUES",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(format!(" Servers ({}) ", m.snapshot.workers.len())),
    );
    f.render_widget(wtable, workers);

    f.render_widget(Paragraph::new(status_line(app)), status);
}

/// Every key of the queue table (`?`).
const QUEUES_HELP: &str = " j/k or ↑/↓ move · Enter: tasks · /: find in a queue · p pause · \
     r resume (asks first) · ? help · q/Esc quit";

/// Every key of the task browser (`?`).
const BROWSE_HELP: &str = " h/l or Tab: state · j/k: move · PgDn/PgUp or ]/[: page · /: find · \
     n: next find step · Enter: details · Esc: back";

/// The bottom line: the `find:` line while it is open, a question to confirm, or key hints
/// (all keys with `?`).
fn status_line(app: &App) -> Line<'static> {
    let message = app.message.as_deref();
    if let Some(input) = &app.input {
        return Line::from(format!(
            " find: {}▏ (Enter: search {} of {} · Backspace: delete · Esc: cancel)",
            input.text,
            super::STATES[input.state].name(),
            input.queue
        ))
        .style(Style::default().fg(Color::Black).bg(Color::Cyan));
    }
    if let Some(c) = &app.confirm {
        return Line::from(format!(" {c} [y/N]"))
            .style(Style::default().fg(Color::Black).bg(Color::Yellow));
    }
    Line::from(match &app.browse {
        Some(b) if b.details.is_some() => " Esc back to the list".to_string(),
        Some(_) if app.help => BROWSE_HELP.into(),
        Some(b) if b.search.is_some() => format!(
            " {} · {}h/l: same find in another state · Enter: details · Esc: back to the pages",
            message.unwrap_or("found"),
            if b.search.as_ref().is_some_and(|s| s.cursor.is_some()) {
                "n: next step · "
            } else {
                ""
            }
        ),
        Some(_) => format!(
            " {} · h/l: state · j/k: move · PgDn/PgUp: page · /: find · Enter: details · \
             ? help · Esc: back",
            message.unwrap_or("browsing")
        ),
        None if app.help => QUEUES_HELP.into(),
        None => format!(
            " {} · refresh every {} ms · ? help · q quit",
            message.unwrap_or("rediq dash"),
            app.model.interval_ms
        ),
    })
}

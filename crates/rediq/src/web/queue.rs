//! One queue's page (`GET /queues/{queue}?state=&page=`): its counts, memory and 30 days of
//! history, a search box, one page of its tasks in one state with boxes to select some for a
//! bulk action, and its flow control.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::charts::{error_rate, errors, rate_text, throughput};
use super::layout::{action, bytes, millis, notice, page};
use super::views::{queue_and_state, redis_failure, STATES};
use super::{qp, tp, App};
use crate::{DailyStats, GroupInfo, GroupLimits, QueueStats, Task, TaskState};

/// Tasks per page of a queue's list.
pub const PAGE_SIZE: usize = 50;
/// Most groups a queue's page lists (by name; `rediq queue groups` lists more).
const GROUPS_SHOWN: usize = 50;
/// Days of history the page charts.
const DAYS: u32 = 30;

/// The query of a queue's page: which state, which page.
#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    page: Option<usize>,
    /// The result of an action, shown on top.
    msg: Option<String>,
}

/// What a queue's page reads.
struct QueuePage {
    stats: QueueStats,
    tasks: Vec<Task>,
    group_limits: GroupLimits,
    groups: Vec<GroupInfo>,
    days: Vec<DailyStats>,
    memory: Option<u64>,
}

async fn read(app: &App, name: &str, state: TaskState, page_no: usize) -> crate::Result<QueuePage> {
    let i = &app.inspector;
    let (stats, tasks, group_limits, groups, days, memory) = futures::try_join!(
        i.queue_stats(name),
        i.list_page(name, state, page_no, PAGE_SIZE),
        i.group_limits(name),
        i.groups(name, GROUPS_SHOWN),
        i.history(name, DAYS),
        i.memory_usage(name),
    )?;
    Ok(QueuePage {
        stats,
        tasks,
        group_limits,
        groups,
        days,
        memory,
    })
}

/// Ticks or clears every box of the task list (the page's only script, embedded).
const SELECT_ALL: &str =
    "document.querySelectorAll('input.pick').forEach(function(b){b.checked=this.checked}, this)";

/// `GET /queues/{queue}?state=pending&page=0`.
pub async fn queue(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let (state, state_name) = match queue_and_state(&app, &name, q.state.as_deref()).await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let state_name = state_name.as_str();
    // Past the last page (a stale link, or a number made up): an empty page, never an
    // overflow.
    let page_no = q.page.unwrap_or(0).min(u32::MAX as usize);
    let read = match read(&app, &name, state, page_no).await {
        Ok(v) => v,
        Err(e) => return redis_failure(&app, &e),
    };
    let stats = &read.stats;
    let total = stats.count(state);
    let base = app.link(&qp(&name, ""));
    let body = html! {
        (notice(q.msg.as_deref()))
        p {
            @if stats.paused {
                (action(&app, &qp(&name, "/resume"), "Resume"))
            } @else {
                (action(&app, &qp(&name, "/pause"), "Pause"))
            }
            @if state == TaskState::Dead && stats.dead > 0 {
                (action(&app, &qp(&name, "/retry-dead"), "Retry all dead"))
            }
            @if !app.read_only {
                a href=(app.link(&qp(&name, "/flush"))) { "Flush…" }
            }
        }
        (counts(stats, read.memory))
        div.history {
            h3 { "Last " (DAYS) " days: completed " span.done { "■" } ", failed "
                 span.failed { "■" } " (error rate " (rate_text(error_rate(&read.days))) ")" }
            (throughput(&read.days, 600, 100, true))
            h3 { "Error rate per day" }
            (errors(&read.days, 600, 50))
        }
        form.search method="get" action=(app.link(&qp(&name, "/search"))) {
            input name="text" size="32" placeholder="text in payload or error, or a task id" required;
            " in " select name="state" {
                @for (s, n) in STATES { option value=(n) selected[s == state] { (n) } }
            }
            " " button type="submit" { "Search" }
        }
        p.tabs {
            @for (s, n) in STATES {
                a class=[(s == state).then_some("on")] href=(format!("{base}?state={n}")) {
                    (n) " (" (stats.count(s)) ")"
                }
            }
        }
        (task_list(&app, &name, state, state_name, &read.tasks, page_no > 0))
        p.pager {
            "Page " (page_no + 1) " of " (total.div_ceil(PAGE_SIZE as u64).max(1)) " "
            @if page_no > 0 {
                a href=(format!("{base}?state={state_name}&page={}", page_no - 1)) { "← previous" } " "
            }
            @if ((page_no + 1) * PAGE_SIZE) < total as usize {
                a href=(format!("{base}?state={state_name}&page={}", page_no + 1)) { "next →" }
            }
        }
        (super::limits::section(&app, &name, &stats.limits, &read.group_limits, &read.groups))
    };
    page(&app, &format!("Queue {name}"), body).into_response()
}

/// The counts row, as the overview has it, with the memory.
fn counts(stats: &QueueStats, memory: Option<u64>) -> Markup {
    html! {
        table { tr {
            th { "State" } th.n { "Latency" } th.n { "Pending" } th.n { "Active" }
            th.n { "Scheduled" } th.n { "Retry" } th.n { "Waiting" } th.n { "Dead" }
            th.n { "Completed" } th.n { "Processed" } th.n { "Failed" } th { "Limits" }
            th.n { "Memory" }
        }
        tr {
            td { @if stats.paused { span.paused { "paused" } } @else { "running" } }
            td.n { (millis(stats.latency.as_millis() as u64)) }
            td.n { (stats.pending) } td.n { (stats.active) } td.n { (stats.delayed) }
            td.n { (stats.retry) } td.n { (stats.waiting) } td.n { (stats.dead) }
            td.n { (stats.completed) } td.n { (stats.processed_total) } td.n { (stats.failed_total) }
            td { (stats.limits) }
            td.n { (memory.map_or_else(|| "-".into(), bytes)) }
        } }
    }
}

/// The bulk actions a state's tasks offer: `(op, label)`.
fn bulk_ops(state: TaskState) -> &'static [(&'static str, &'static str)] {
    match state {
        TaskState::Dead => &[("retry", "Retry selected"), ("delete", "Delete selected")],
        TaskState::Completed => &[("delete", "Delete selected")],
        TaskState::Active => &[("cancel", "Cancel selected")],
        _ => &[("cancel", "Cancel selected"), ("delete", "Delete selected")],
    }
}

/// A list of tasks, with a box to select each for the bulk actions (none in read-only mode).
pub fn task_list(
    app: &App,
    queue: &str,
    state: TaskState,
    state_name: &str,
    tasks: &[Task],
    later_page: bool,
) -> Markup {
    let pick = !app.read_only && !tasks.is_empty();
    let table = html! {
        @if tasks.is_empty() {
            p { "No " (state_name) " tasks" @if later_page { " on this page" } "." }
        } @else {
            table {
                tr {
                    @if pick { th { input type="checkbox" title="select all" onclick=(SELECT_ALL); } }
                    th { "Id" } th { "Type" } th { "Group" } th.n { "Attempt" } th { "Last error" }
                }
                @for t in tasks {
                    tr {
                        @if pick { td { input.pick type="checkbox" name="id" value=(t.id); } }
                        td { a href=(app.link(&tp(queue, &t.id, ""))) { (t.id) } }
                        td { (t.task_type) }
                        td { (t.options.group.as_deref().unwrap_or("-")) }
                        td.n { (t.attempt()) }
                        td { (t.last_error.as_deref().unwrap_or("-")) }
                    }
                }
            }
        }
    };
    if !pick {
        return table;
    }
    html! {
        form.bulk method="post" action=(app.link(&qp(queue, "/bulk"))) {
            input type="hidden" name="csrf" value=(app.csrf);
            input type="hidden" name="state" value=(state_name);
            (table)
            p { @for (op, label) in bulk_ops(state) {
                button type="submit" name="op" value=(op) { (label) } " "
            } }
        }
    }
}

//! The pages: the queues overview, one queue's tasks by state (paged), one task's details.
//! Each reads Redis through the `Inspector`, as the CLI does.

use crate::{QueueStats, TaskState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{action, millis, notice, page, payload, time};
use super::App;

/// Tasks per page of a queue's list.
const PAGE_SIZE: usize = 50;

/// The states a queue's page shows, with their names in links and tabs.
const STATES: [(TaskState, &str); 7] = [
    (TaskState::Pending, "pending"),
    (TaskState::Active, "active"),
    (TaskState::Delayed, "scheduled"),
    (TaskState::Retry, "retry"),
    (TaskState::Waiting, "waiting"),
    (TaskState::Dead, "dead"),
    (TaskState::Completed, "completed"),
];

/// An error page: the status and a one-line reason (Redis errors name no password: the
/// library masks URLs in its errors).
fn failure(status: StatusCode, app: &App, reason: &str) -> Response {
    let body = page(app, "error", html! { p { (reason) } });
    (status, body).into_response()
}

pub(crate) fn redis_failure(app: &App, e: &crate::Error) -> Response {
    tracing::warn!(error = %e, "a web UI page could not read Redis");
    failure(StatusCode::SERVICE_UNAVAILABLE, app, &e.to_string())
}

/// `GET /`: every queue with its counts, latency, totals and limits.
pub async fn overview(State(app): State<App>) -> Response {
    let all = match app.inspector.all_queue_stats().await {
        Ok(all) => all,
        Err(e) => return redis_failure(&app, &e),
    };
    let body = html! {
        @if all.is_empty() {
            p { "No queues yet." }
        } @else {
            table {
                tr {
                    th { "Queue" } th { "State" } th.n { "Latency" } th.n { "Pending" }
                    th.n { "Active" } th.n { "Scheduled" } th.n { "Retry" } th.n { "Waiting" }
                    th.n { "Dead" } th.n { "Completed" } th.n { "Processed" } th.n { "Failed" }
                    th { "Limits" }
                }
                @for s in &all {
                    (queue_row(&app, s))
                }
            }
        }
    };
    page(&app, "Queues", body).into_response()
}

fn queue_row(app: &App, s: &QueueStats) -> Markup {
    html! {
        tr {
            td { a href=(app.link(&format!("/queues/{}", s.queue))) { (s.queue) } }
            td { @if s.paused { span.paused { "paused" } } @else { "running" } }
            td.n { (millis(s.latency.as_millis() as u64)) }
            td.n { (s.pending) } td.n { (s.active) } td.n { (s.delayed) } td.n { (s.retry) }
            td.n { (s.waiting) } td.n { (s.dead) } td.n { (s.completed) }
            td.n { (s.processed_total) } td.n { (s.failed_total) }
            td { (s.limits)
                 @if !s.group_limits.is_empty() { " · group " (s.group_limits) } }
        }
    }
}

/// The query of a queue's page: which state, which page.
#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    page: Option<usize>,
    /// The result of an action, shown on top.
    msg: Option<String>,
}

/// The query of a page that shows an action's result (`?msg=`).
#[derive(Deserialize)]
pub struct MsgQuery {
    pub msg: Option<String>,
}

/// `GET /queues/{queue}?state=pending&page=0`: the queue's counts and one page of its tasks in
/// one state, in the order they run.
pub async fn queue(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    match known(&app, &name).await {
        Ok(true) => {}
        Ok(false) => return failure(StatusCode::NOT_FOUND, &app, &format!("no queue {name:?}")),
        Err(e) => return redis_failure(&app, &e),
    }
    let state_name = q.state.as_deref().unwrap_or("pending");
    let Some(&(state, _)) = STATES.iter().find(|(_, n)| *n == state_name) else {
        return failure(
            StatusCode::BAD_REQUEST,
            &app,
            &format!("no task state {state_name:?} (pending, active, scheduled, retry, waiting, dead, completed)"),
        );
    };
    let page_no = q.page.unwrap_or(0);
    let read = match read_queue(&app, &name, state, page_no).await {
        Ok(v) => v,
        Err(e) => return redis_failure(&app, &e),
    };
    let (stats, tasks) = (&read.stats, &read.tasks);
    let total = stats.count(state);
    let base = app.link(&format!("/queues/{name}"));
    let body = html! {
        (notice(q.msg.as_deref()))
        p {
            @if stats.paused {
                (action(&app, &format!("/queues/{name}/resume"), "Resume"))
            } @else {
                (action(&app, &format!("/queues/{name}/pause"), "Pause"))
            }
            @if state == TaskState::Dead && stats.dead > 0 {
                (action(&app, &format!("/queues/{name}/retry-dead"), "Retry all dead"))
            }
            @if !app.read_only {
                a href=(app.link(&format!("/queues/{name}/flush"))) { "Flush…" }
            }
        }
        table { tr {
            th { "State" } th.n { "Latency" } th.n { "Pending" } th.n { "Active" }
            th.n { "Scheduled" } th.n { "Retry" } th.n { "Waiting" } th.n { "Dead" }
            th.n { "Completed" } th.n { "Processed" } th.n { "Failed" } th { "Limits" }
        }
        tr {
            td { @if stats.paused { span.paused { "paused" } } @else { "running" } }
            td.n { (millis(stats.latency.as_millis() as u64)) }
            td.n { (stats.pending) } td.n { (stats.active) } td.n { (stats.delayed) }
            td.n { (stats.retry) } td.n { (stats.waiting) } td.n { (stats.dead) }
            td.n { (stats.completed) } td.n { (stats.processed_total) } td.n { (stats.failed_total) }
            td { (stats.limits) }
        } }
        p.tabs {
            @for (s, n) in STATES {
                a class=[(s == state).then_some("on")] href=(format!("{base}?state={n}")) {
                    (n) " (" (stats.count(s)) ")"
                }
            }
        }
        @if tasks.is_empty() {
            p { "No " (state_name) " tasks" @if page_no > 0 { " on this page" } "." }
        } @else {
            table {
                tr { th { "Id" } th { "Type" } th { "Group" } th.n { "Attempt" } th { "Last error" } }
                @for t in tasks {
                    tr {
                        td { a href=(app.link(&format!("/queues/{name}/tasks/{}", t.id))) { (t.id) } }
                        td { (t.task_type) }
                        td { (t.options.group.as_deref().unwrap_or("-")) }
                        td.n { (t.attempt()) }
                        td { (t.last_error.as_deref().unwrap_or("-")) }
                    }
                }
            }
        }
        p.pager {
            "Page " (page_no + 1) " of " (total.div_ceil(PAGE_SIZE as u64).max(1)) " "
            @if page_no > 0 {
                a href=(format!("{base}?state={state_name}&page={}", page_no - 1)) { "← previous" } " "
            }
            @if ((page_no + 1) * PAGE_SIZE) < total as usize {
                a href=(format!("{base}?state={state_name}&page={}", page_no + 1)) { "next →" }
            }
        }
        (flow_control(&read))
    };
    page(&app, &format!("Queue {name}"), body).into_response()
}

/// What a queue's page reads: its counts, one page of its tasks in `state`, its group limits
/// and its first groups.
struct QueuePage {
    stats: QueueStats,
    tasks: Vec<crate::Task>,
    group_limits: crate::GroupLimits,
    groups: Vec<crate::GroupInfo>,
}

/// Most groups a queue's page lists (by name; `rediq queue groups` lists more).
const GROUPS_SHOWN: usize = 50;

async fn read_queue(
    app: &App,
    name: &str,
    state: TaskState,
    page_no: usize,
) -> crate::Result<QueuePage> {
    Ok(QueuePage {
        stats: app.inspector.queue_stats(name).await?,
        tasks: app
            .inspector
            .list_page(name, state, page_no, PAGE_SIZE)
            .await?,
        group_limits: app.inspector.group_limits(name).await?,
        groups: app.inspector.groups(name, GROUPS_SHOWN).await?,
    })
}

/// The queue's flow control: its limits, the group rule and overrides, and its groups.
fn flow_control(p: &QueuePage) -> Markup {
    let g = &p.group_limits;
    html! {
        h3 { "Flow control" }
        dl {
            dt { "Queue limits" } dd { (p.stats.limits) }
            dt { "Every group" } dd { (g.rule) }
            @for (name, l) in &g.overrides {
                dt { "Group " (name) } dd { (l) }
            }
        }
        @if !p.groups.is_empty() {
            table {
                tr { th { "Group" } th.n { "Pending" } th.n { "Running" } th { "Held" } th { "Limits" } }
                @for x in &p.groups {
                    tr {
                        td { (x.name) } td.n { (x.pending) } td.n { (x.running) }
                        td { @if x.at_limit { "at limit" }
                             @else if let Some(t) = x.held_until_ms { "until " (time(t)) }
                             @else { "-" } }
                        td { (g.for_group(&x.name)) }
                    }
                }
            }
        }
    }
}

/// Whether Redis knows the queue.
async fn known(app: &App, name: &str) -> crate::Result<bool> {
    Ok(app.inspector.queues().await?.iter().any(|q| q == name))
}

/// `GET /queues/{queue}/tasks/{id}`: one task: where it is, its payload, last error,
/// attempts, times, the server running it (with its fencing token), its dependencies and
/// dependents.
pub async fn task(
    State(app): State<App>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<MsgQuery>,
) -> Response {
    let details = match app.inspector.task(&id, Some(&name)).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return failure(
                StatusCode::NOT_FOUND,
                &app,
                &format!("no task {id} in queue {name}"),
            )
        }
        Err(e @ crate::Error::Validation { .. }) => {
            return failure(StatusCode::NOT_FOUND, &app, &e.to_string())
        }
        Err(e) => return redis_failure(&app, &e),
    };
    let t = &details.task;
    let state = STATES
        .iter()
        .find(|(s, _)| *s == details.state)
        .map_or("?", |(_, n)| n);
    let waiting = matches!(
        details.state,
        TaskState::Pending
            | TaskState::Delayed
            | TaskState::Retry
            | TaskState::Waiting
            | TaskState::Active
    );
    let body = html! {
        (notice(q.msg.as_deref()))
        p {
            @if details.state == TaskState::Dead {
                (action(&app, &format!("/queues/{name}/tasks/{id}/retry"), "Retry"))
            }
            @if waiting {
                (action(&app, &format!("/queues/{name}/tasks/{id}/cancel"), "Cancel"))
            }
        }
        dl {
            dt { "Id" } dd { (t.id) }
            dt { "Queue" } dd { a href=(app.link(&format!("/queues/{name}"))) { (name) } }
            dt { "State" } dd { (state) }
            dt { "Type" } dd { (t.task_type) }
            dt { "Group" } dd { (t.options.group.as_deref().unwrap_or("-")) }
            dt { "Priority" } dd { (t.options.priority) }
            dt { "Attempt" } dd { (t.attempt()) " of " (t.options.max_retry + 1) }
            dt { "Created" } dd { (t.created_at_ms().map_or("-".into(), time)) }
            dt { "Last failed" } dd { (t.last_failed_at.map_or("-".into(), time)) }
            dt { "Last error" } dd { (t.last_error.as_deref().unwrap_or("-")) }
            @if let Some(lease) = &details.lease {
                dt { "Running on" } dd { (lease.server) }
                dt { "Fencing token" } dd { (lease.token) }
                dt { "Lease lapses" } dd { (lease.expires_at_ms.map_or("-".into(), time)) }
            }
            @if !details.waiting_for.is_empty() {
                dt { "Waits for" } dd { @for d in &details.waiting_for { (d) " " } }
            }
            @if !details.dependents.is_empty() {
                dt { "Dependents" } dd {
                    @for (d, q) in &details.dependents {
                        a href=(app.link(&format!("/queues/{q}/tasks/{d}"))) { (d) } " (" (q) ") "
                    }
                }
            }
        }
        h3 { "Payload" }
        pre { (payload(&t.payload)) }
    };
    page(&app, &format!("Task {id}"), body).into_response()
}

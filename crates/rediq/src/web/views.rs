//! What the pages share (the task states by name, error pages, whether a queue exists) and one
//! task's page. Each page reads Redis through the `Inspector`, as the CLI does; the overview is
//! in `overview.rs`, a queue's page in `queue.rs`.

use crate::TaskState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{action, notice, page, payload, time};
use super::{qp, tp, App};

/// The states a queue's page shows, with their names in links and tabs.
pub(crate) const STATES: [(TaskState, &str); 7] = [
    (TaskState::Pending, "pending"),
    (TaskState::Active, "active"),
    (TaskState::Delayed, "scheduled"),
    (TaskState::Retry, "retry"),
    (TaskState::Waiting, "waiting"),
    (TaskState::Dead, "dead"),
    (TaskState::Completed, "completed"),
];

/// The state a page's `state=` names (`scheduled` is the delayed state), or why none.
fn state_named(name: &str) -> Result<TaskState, String> {
    STATES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(s, _)| *s)
        .ok_or_else(|| {
            format!("no task state {name:?} (pending, active, scheduled, retry, waiting, dead, completed)")
        })
}

/// An error page: the status and a one-line reason (Redis errors name no password: the
/// library masks URLs in its errors).
pub(crate) fn failure(status: StatusCode, app: &App, reason: &str) -> Response {
    let body = page(app, "error", html! { p { (reason) } });
    (status, body).into_response()
}

pub(crate) fn redis_failure(app: &App, e: &crate::Error) -> Response {
    tracing::warn!(error = %e, "a web UI page could not read Redis");
    failure(StatusCode::SERVICE_UNAVAILABLE, app, &e.to_string())
}

/// The query of a page that shows an action's result (`?msg=`).
#[derive(Deserialize)]
pub struct MsgQuery {
    pub msg: Option<String>,
}

/// Whether Redis knows the queue.
async fn known(app: &App, name: &str) -> crate::Result<bool> {
    Ok(app.inspector.queues().await?.iter().any(|q| q == name))
}

/// What a page about one queue's tasks in one state checks first: that Redis knows the queue
/// (else `404`) and that `state=` names a state (`pending` when absent; else `400`).
pub(crate) async fn queue_and_state(
    app: &App,
    name: &str,
    state: Option<&str>,
) -> Result<(TaskState, String), Response> {
    match known(app, name).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(failure(
                StatusCode::NOT_FOUND,
                app,
                &format!("no queue {name:?}"),
            ))
        }
        Err(e) => return Err(redis_failure(app, &e)),
    }
    let state_name = state.unwrap_or("pending");
    state_named(state_name)
        .map(|s| (s, state_name.to_string()))
        .map_err(|reason| failure(StatusCode::BAD_REQUEST, app, &reason))
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
                (action(&app, &tp(&name, &id, "/retry"), "Retry"))
            }
            @if waiting {
                (action(&app, &tp(&name, &id, "/cancel"), "Cancel"))
            }
            @if details.state != TaskState::Active {
                (action(&app, &tp(&name, &id, "/delete"), "Delete"))
            }
        }
        dl {
            dt { "Id" } dd { (t.id) }
            dt { "Queue" } dd { a href=(app.link(&qp(&name, ""))) { (name) } }
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
                dt { "Waits for" } dd { @for d in &details.waiting_for {
                    a href=(app.link(&format!("/search?id={d}"))) { (d) } " "
                } }
            }
            @if !details.dependents.is_empty() {
                dt { "Dependents" } dd {
                    @for (d, q) in &details.dependents {
                        a href=(app.link(&tp(q, d, ""))) { (d) } " (" (q) ") "
                    }
                }
            }
        }
        h3 { "Payload" }
        pre { (payload(&t.payload)) }
    };
    page(&app, &format!("Task {id}"), body).into_response()
}

//! Search: a queue's tasks in one state whose payload or last error contains a text (or whose
//! id it is), in bounded steps as [`Inspector::find_tasks`](crate::Inspector::find_tasks)
//! takes them (`GET /queues/{queue}/search?text=&state=&cursor=`: each page examines at most
//! 5 steps of 1,000 records and links to the next step); and a task by id in any queue
//! (`GET /search?id=`, the box in every page's header).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::bulk::MAX_BULK;
use super::layout::page;
use super::queue::{task_list, PAGE_SIZE};
use super::views::{failure, queue_and_state, redis_failure};
use super::{enc, qp, tp, App};

/// Records one step of a search examines.
const SCAN: usize = 1000;
/// Most steps one search page takes (so at most 5,000 records examined per page).
const STEPS: usize = 5;

/// `?text=…&state=dead&cursor=…`.
#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    text: String,
    state: Option<String>,
    cursor: Option<String>,
}

/// `GET /queues/{queue}/search`.
pub async fn in_queue(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<SearchQuery>,
) -> Response {
    let (state, state_name) = match queue_and_state(&app, &name, q.state.as_deref()).await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let state_name = state_name.as_str();
    if q.text.is_empty() {
        return failure(
            StatusCode::BAD_REQUEST,
            &app,
            "search for what? (text is empty)",
        );
    }
    // Steps of SCAN records until a page of matches is found, the state ends, or STEPS steps
    // were taken: a step may end early (at the end of the pending bands, for instance) and
    // find nothing while the next would.
    let mut tasks = Vec::new();
    let mut cursor = q.cursor.clone();
    for _ in 0..STEPS {
        let found = match app
            .inspector
            .find_tasks(&name, state, &q.text, cursor.as_deref(), SCAN)
            .await
        {
            Ok(f) => f,
            Err(e @ crate::Error::Validation { .. }) => {
                return failure(StatusCode::BAD_REQUEST, &app, &e.to_string())
            }
            Err(e) => return redis_failure(&app, &e),
        };
        tasks.extend(found.tasks);
        cursor = found.cursor;
        if cursor.is_none() || tasks.len() >= PAGE_SIZE {
            break;
        }
    }
    // A text that matches nearly everything would list every record examined: the page shows
    // the first MAX_BULK (what one bulk action takes) and says how many more matched.
    let unshown = tasks.len().saturating_sub(MAX_BULK);
    tasks.truncate(MAX_BULK);
    let here = app.link(&qp(&name, "/search"));
    let body = html! {
        p {
            a href=(app.link(&qp(&name, &format!("?state={state_name}")))) { "← " (name) ", " (state_name) }
        }
        p { (tasks.len() + unshown) " " (state_name) " task(s) match " strong { (q.text) }
            @if q.cursor.is_some() { " on this page" }
            " (a page examines up to " (SCAN * STEPS) " tasks)." }
        @if unshown > 0 {
            p.notice { (unshown) " more task(s) examined on this page match too and are not shown: \
                        search for a longer text, or act on these first." }
        }
        (task_list(&app, &name, state, state_name, &tasks, q.cursor.is_some()))
        p.pager {
            @if let Some(c) = &cursor {
                a href=(format!("{here}?state={state_name}&text={}&cursor={}", enc(&q.text), enc(c))) {
                    "search on →"
                }
            } @else {
                "End of the " (state_name) " tasks."
            }
        }
    };
    page(&app, &format!("Search {name}"), body).into_response()
}

/// `?id=…`.
#[derive(Deserialize)]
pub struct IdQuery {
    #[serde(default)]
    id: String,
}

/// `GET /search?id=`: to the task's page, whichever queue holds it.
pub async fn by_id(State(app): State<App>, Query(q): Query<IdQuery>) -> Response {
    let id = q.id.trim();
    match app.inspector.task(id, None).await {
        Ok(Some(d)) => Redirect::to(&app.link(&tp(&d.task.queue, id, ""))).into_response(),
        Ok(None) => failure(
            StatusCode::NOT_FOUND,
            &app,
            &format!("no queue holds a task {id}"),
        ),
        Err(e @ crate::Error::Validation { .. }) => {
            failure(StatusCode::BAD_REQUEST, &app, &e.to_string())
        }
        Err(e) => redis_failure(&app, &e),
    }
}

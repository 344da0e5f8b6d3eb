//! What an operator can do from the pages: pause or resume a queue, run one or every dead task
//! again, cancel or delete a task, flush a queue (after typing its name); bulk actions are in
//! `bulk.rs`, limits in `limits.rs`. Each goes through the same
//! `Inspector` call as the CLI and comes back to the page it was asked from with its result.
//!
//! Safety: in read-only mode every action is `403`; every form carries the UI's anti-forgery
//! token (a random value made at start, which another site's page cannot read), and a request
//! whose `Origin` names another host is refused, so another site cannot make a browser that is
//! logged in act (cross-site request forgery).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::layout::page;
use super::{enc, qp, tp, App};

/// The fields every action's form sends.
#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    /// The queue's name typed again (flush only).
    #[serde(default)]
    confirm: String,
}

impl ActionForm {
    /// The guard of a form read field by field (the bulk form repeats `id`).
    pub fn with_token(csrf: String) -> Self {
        ActionForm {
            csrf,
            confirm: String::new(),
        }
    }
}

/// Why an action is refused before it runs, if it is.
fn refused(app: &App, headers: &HeaderMap, form: &ActionForm) -> Option<Response> {
    if app.read_only {
        return Some(plain(StatusCode::FORBIDDEN, "the web UI is read-only"));
    }
    if !bool::from(form.csrf.as_bytes().ct_eq(app.csrf.as_bytes())) {
        return Some(plain(
            StatusCode::FORBIDDEN,
            "the form's anti-forgery token is missing or stale: reload the page and try again",
        ));
    }
    // A browser names the page a request comes from; it must be this host's: the one the
    // request was sent to (`Host`), or, behind a reverse proxy that rewrites `Host`, the one
    // the browser saw (`X-Forwarded-Host`).
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let origin_host = origin.split("://").nth(1).unwrap_or("");
        let ours = [header::HOST.as_str(), "x-forwarded-host"].iter().any(|h| {
            headers
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|one| one.trim() == origin_host))
        });
        if origin != "null" && !ours {
            return Some(plain(
                StatusCode::FORBIDDEN,
                "a request from another site is refused",
            ));
        }
    }
    None
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// Back to `path` with a one-line result to show.
fn back(app: &App, path: &str, msg: &str) -> Response {
    let mut url = app.link(path);
    url.push_str(if url.contains('?') { "&" } else { "?" });
    url.push_str("msg=");
    url.push_str(&enc(msg));
    // 303 See Other: the browser shows the page with a GET.
    Redirect::to(&url).into_response()
}

fn failed(app: &App, path: &str, e: &crate::Error) -> Response {
    back(app, path, &format!("failed: {e}"))
}

/// Runs an action unless it is refused, then goes back to `to` with its result.
pub(crate) async fn act(
    app: &App,
    headers: &HeaderMap,
    form: &ActionForm,
    to: &str,
    call: impl std::future::Future<Output = crate::Result<String>>,
) -> Response {
    if let Some(r) = refused(app, headers, form) {
        return r;
    }
    match call.await {
        Ok(msg) => back(app, to, &msg),
        Err(e) => failed(app, to, &e),
    }
}

/// `POST /queues/{queue}/pause`.
pub async fn pause(
    State(app): State<App>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let call = async {
        app.inspector.pause_queue(&queue).await?;
        Ok(format!("paused queue {queue}"))
    };
    act(&app, &headers, &form, &qp(&queue, ""), call).await
}

/// `POST /queues/{queue}/resume`.
pub async fn resume(
    State(app): State<App>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let call = async {
        app.inspector.resume_queue(&queue).await?;
        Ok(format!("resumed queue {queue}"))
    };
    act(&app, &headers, &form, &qp(&queue, ""), call).await
}

/// `POST /queues/{queue}/retry-dead`: every dead task of the queue runs again.
pub async fn retry_all_dead(
    State(app): State<App>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let call = async {
        let n = app.inspector.rerun_all_dead(&queue).await?;
        Ok(format!("{n} dead task(s) of {queue} run again"))
    };
    act(&app, &headers, &form, &qp(&queue, "?state=dead"), call).await
}

/// `POST /queues/{queue}/tasks/{id}/retry`: one dead task runs again.
pub async fn retry_dead(
    State(app): State<App>,
    Path((queue, id)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let call = async {
        Ok(match app.inspector.rerun_dead(&queue, &id).await? {
            true => format!("task {id} runs again"),
            false => format!("task {id} is not dead in {queue}"),
        })
    };
    act(&app, &headers, &form, &tp(&queue, &id, ""), call).await
}

/// `POST /queues/{queue}/tasks/{id}/cancel`: a waiting task is removed, a running one told to
/// stop (its server drops the handler).
pub async fn cancel(
    State(app): State<App>,
    Path((queue, id)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let call = async {
        Ok(match app.inspector.cancel_task(&queue, &id).await? {
            crate::CancelOutcome::Removed => format!("task {id} cancelled"),
            crate::CancelOutcome::Signalled => {
                format!("task {id} is running: its server was told to stop it")
            }
            crate::CancelOutcome::NotFound => {
                format!("task {id} is not waiting or running in {queue}")
            }
        })
    };
    act(&app, &headers, &form, &tp(&queue, &id, ""), call).await
}

/// `POST /queues/{queue}/tasks/{id}/delete`: a task that is not running is deleted (a dead
/// or completed one leaves its list, a waiting one is removed as a cancel removes it); back to
/// the queue's page, since the task's is gone.
pub async fn delete(
    State(app): State<App>,
    Path((queue, id)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let call = async {
        Ok(match app.inspector.delete_task(&queue, &id).await? {
            true => format!("task {id} deleted"),
            false => {
                format!("task {id} is running or gone: not deleted (cancel stops a running task)")
            }
        })
    };
    act(&app, &headers, &form, &qp(&queue, ""), call).await
}

/// `GET /queues/{queue}/flush`: the confirmation step (type the queue's name).
pub async fn flush_confirm(State(app): State<App>, Path(queue): Path<String>) -> Response {
    if app.read_only {
        return plain(StatusCode::FORBIDDEN, "the web UI is read-only");
    }
    let body = html! {
        p { "Flushing removes every task of queue " strong { (queue) } ", in every state. Running
             tasks finish, but their results are refused. This cannot be undone." }
        form method="post" action=(app.link(&qp(&queue, "/flush"))) {
            input type="hidden" name="csrf" value=(app.csrf);
            label { "Type the queue's name to confirm: " input name="confirm" autocomplete="off"; }
            " " button type="submit" { "Flush" }
        }
    };
    page(&app, &format!("Flush {queue}?"), body).into_response()
}

/// `POST /queues/{queue}/flush`: only with the queue's name typed again.
pub async fn flush(
    State(app): State<App>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let call = async {
        if form.confirm != queue {
            return Ok("not flushed: the name typed does not match the queue's".to_string());
        }
        let c = app.inspector.flush_queue(&queue).await?;
        let n = c.pending + c.delayed + c.retry + c.dead + c.completed + c.active + c.waiting;
        Ok(format!("flushed {queue}: {n} task(s) removed"))
    };
    act(&app, &headers, &form, &qp(&queue, ""), call).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_and_path_segments_are_encoded() {
        assert_eq!(enc("paused queue a b/c"), "paused%20queue%20a%20b%2Fc");
        assert_eq!(
            qp("a?b&c/d#e%", "?state=dead"),
            "/queues/a%3Fb%26c%2Fd%23e%25?state=dead"
        );
        assert_eq!(tp("q", "x y", "/retry"), "/queues/q/tasks/x%20y/retry");
    }
}

//! The cron page: every periodic entry with its schedule, time zone, next and last run, and
//! whether it is paused; pause and resume it (actions, guarded like the others).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::actions::{act, ActionForm};
use super::layout::{notice, page, time};
use super::views::{redis_failure, MsgQuery};
use super::{qp, App};

/// `GET /cron`.
pub async fn entries(State(app): State<App>, Query(q): Query<MsgQuery>) -> Response {
    let all = match app.inspector.cron_entries().await {
        Ok(all) => all,
        Err(e) => return redis_failure(&app, &e),
    };
    let body = html! {
        (notice(q.msg.as_deref()))
        @if all.is_empty() {
            p { "No periodic entry." }
        } @else {
            table {
                tr {
                    th { "Entry" } th { "Queue" } th { "Type" } th { "Schedule" } th { "Time zone" }
                    th { "State" } th { "Next run" } th { "Last run" } th {}
                }
                @for e in &all {
                    tr {
                        td { (e.id) }
                        td { a href=(app.link(&qp(&e.queue, ""))) { (e.queue) } }
                        td { (e.task.task_type) }
                        td { (e.schedule()) }
                        td { (e.time_zone) }
                        td { @if e.paused { span.paused { "paused" } } @else { "active" } }
                        td { (e.next_run_ms.map_or("-".into(), time)) }
                        td { (e.last_run_ms.map_or("-".into(), time)) }
                        td {
                            @if !app.read_only {
                                form.act method="post" action=(app.link(if e.paused { "/cron/resume" } else { "/cron/pause" })) {
                                    input type="hidden" name="csrf" value=(app.csrf);
                                    input type="hidden" name="id" value=(e.id);
                                    button type="submit" { @if e.paused { "Resume" } @else { "Pause" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&app, "Cron", body).into_response()
}

/// The entry an action names.
#[derive(Deserialize)]
pub struct CronForm {
    #[serde(flatten)]
    action: ActionForm,
    #[serde(default)]
    id: String,
}

/// `POST /cron/pause` (form field `id`).
pub async fn pause(
    State(app): State<App>,
    headers: HeaderMap,
    Form(f): Form<CronForm>,
) -> Response {
    let call = async {
        let found = app.inspector.pause_cron(&f.id).await?;
        Ok(outcome(found, "paused", &f.id))
    };
    act(&app, &headers, &f.action, "/cron", call).await
}

/// `POST /cron/resume` (form field `id`).
pub async fn resume(
    State(app): State<App>,
    headers: HeaderMap,
    Form(f): Form<CronForm>,
) -> Response {
    let call = async {
        let found = app.inspector.resume_cron(&f.id).await?;
        Ok(outcome(found, "resumed", &f.id))
    };
    act(&app, &headers, &f.action, "/cron", call).await
}

fn outcome(found: bool, done: &str, id: &str) -> String {
    if found {
        format!("{done} entry {id}")
    } else {
        format!("no entry {id}")
    }
}

//! Bulk actions on the tasks selected in a queue's list (`POST /queues/{queue}/bulk`, fields
//! `op` = `retry`, `cancel` or `delete`, and one `id` per task): each task goes through the
//! same `Inspector` call as its own button, and the result counts what happened.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;

use super::actions::{act, ActionForm};
use super::App;
use crate::CancelOutcome;

/// Most tasks one bulk action takes (a page of the list is 50).
const MAX_BULK: usize = 1000;

/// `POST /queues/{queue}/bulk`.
pub async fn bulk(
    State(app): State<App>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let guard = ActionForm::with_token(field("csrf"));
    let op = field("op");
    let state = field("state");
    let ids: Vec<&str> = fields
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.as_str())
        .collect();
    let call = async {
        if ids.len() > MAX_BULK {
            return Err(crate::Error::validation(
                "selection",
                format!("{} tasks: at most {MAX_BULK} at once", ids.len()),
            ));
        }
        if ids.is_empty() {
            return Ok("no task selected".to_string());
        }
        let i = &app.inspector;
        let (mut done, mut skipped) = (0, 0);
        for id in &ids {
            let ok = match op.as_str() {
                "retry" => i.rerun_dead(&queue, id).await?,
                "delete" => i.delete_task(&queue, id).await?,
                "cancel" => i.cancel_task(&queue, id).await? != CancelOutcome::NotFound,
                other => {
                    return Err(crate::Error::validation(
                        "bulk action",
                        format!("{other:?} is not retry, cancel or delete"),
                    ))
                }
            };
            if ok {
                done += 1;
            } else {
                skipped += 1;
            }
        }
        let verb = match op.as_str() {
            "retry" => "run again",
            "delete" => "deleted",
            _ => "cancelled",
        };
        Ok(match skipped {
            0 => format!("{done} task(s) {verb}"),
            _ => format!("{done} task(s) {verb}; {skipped} had moved on and were left alone"),
        })
    };
    let to = if state.is_empty() {
        format!("/queues/{queue}")
    } else {
        format!("/queues/{queue}?state={}", super::actions::encode(&state))
    };
    act(&app, &headers, &guard, &to, call).await
}

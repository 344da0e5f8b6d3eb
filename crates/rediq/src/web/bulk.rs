//! Bulk actions on the tasks selected in a queue's list (`POST /queues/{queue}/bulk`, fields
//! `op` = `retry`, `cancel` or `delete`, and one `id` per task): each task goes through the
//! same `Inspector` call as its own button, and the result counts what happened.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;

use super::actions::{act, ActionForm};
use super::{enc, qp, App};
use crate::CancelOutcome;

/// Most tasks one bulk action takes: a page of the list is 50, a page of search results at most
/// 100 (each task is one library call, and finding a pending task deep in a long queue costs
/// O(its position), so the bound keeps a request short).
pub const MAX_BULK: usize = 100;

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
        let verb = match op.as_str() {
            "retry" => "run again",
            "delete" => "deleted",
            "cancel" => "cancelled",
            other => {
                return Err(crate::Error::validation(
                    "bulk action",
                    format!("{other:?} is not retry, cancel or delete"),
                ))
            }
        };
        let (mut done, mut skipped) = (0, 0);
        for id in &ids {
            let step = match op.as_str() {
                "retry" => i.rerun_dead(&queue, id).await,
                "delete" => i.delete_task(&queue, id).await,
                _ => i
                    .cancel_task(&queue, id)
                    .await
                    .map(|o| o != CancelOutcome::NotFound),
            };
            match step {
                Ok(true) => done += 1,
                Ok(false) => skipped += 1,
                // Say what was done before the failure: those tasks did change.
                Err(e) => return Ok(format!("{done} task(s) {verb}, then failed at {id}: {e}")),
            }
        }
        Ok(match skipped {
            0 => format!("{done} task(s) {verb}"),
            _ => format!("{done} task(s) {verb}; {skipped} had moved on and were left alone"),
        })
    };
    let to = if state.is_empty() {
        qp(&queue, "")
    } else {
        qp(&queue, &format!("?state={}", enc(&state)))
    };
    act(&app, &headers, &guard, &to, call).await
}

//! The servers page: every server registered in Redis with its host, pid, queues,
//! concurrency, tasks in flight and heartbeat age; a server whose heartbeat is older than its
//! lease is marked dead (its tasks are being re-delivered).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::layout::{millis, page};
use super::views::redis_failure;
use super::App;

/// `GET /servers`.
pub async fn servers(State(app): State<App>) -> Response {
    let all = match app.inspector.workers().await {
        Ok(all) => all,
        Err(e) => return redis_failure(&app, &e),
    };
    // This machine's clock: a heartbeat's age is shown to the second or so.
    let now = crate::task::now_ms();
    let field =
        |w: &crate::WorkerInfo, k: &str| w.fields.get(k).cloned().unwrap_or_else(|| "-".into());
    let body = html! {
        @if all.is_empty() {
            p { "No server is registered." }
        } @else {
            table {
                tr {
                    th { "Server" } th { "State" } th { "Host" } th.n { "Pid" } th { "Queues" }
                    th.n { "Concurrency" } th.n { "In flight" } th.n { "Heartbeat" }
                }
                @for w in &all {
                    @let beat = w.fields.get("last_heartbeat_ms").and_then(|v| v.parse::<u64>().ok());
                    tr {
                        td { (w.id) }
                        td { @if w.alive(now) { "alive" } @else { span.paused { "dead" } } }
                        td { (field(w, "host")) }
                        td.n { (field(w, "pid")) }
                        td { (field(w, "queues")) }
                        td.n { (field(w, "concurrency")) }
                        td.n { (field(w, "in_flight")) }
                        td.n { (beat.map_or("-".into(), |b| format!("{} ago", millis(now.saturating_sub(b))))) }
                    }
                }
            }
        }
    };
    page(&app, "Servers", body).into_response()
}

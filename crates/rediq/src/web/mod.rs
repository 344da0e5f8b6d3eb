//! The web UI (cargo feature `web`): an [axum] router that shows queues (with their history,
//! memory and limits), tasks by state, one task's details, search results, servers and cron
//! entries from an [`Inspector`], to serve on its own (`rediq web --listen 127.0.0.1:8080`) or
//! to mount in an application's own axum router under any path prefix.
//!
//! Every page is rendered on the server (charts are inline SVG; the only script is the one
//! line that ticks every box of a list; no asset from elsewhere: it works with no internet
//! access) and reads Redis through the same `Inspector` calls as the CLI, so what it shows is
//! what `rediq queue inspect` or `rediq task inspect` would print.
//!
//! Rooms: `overview.rs` (`/`), `queue.rs` (a queue's page), `views.rs` (a task's page and what
//! the pages share), `search.rs`, `servers.rs`, `cron.rs`; the actions in `actions.rs` (one
//! guard for all), `bulk.rs` and `limits.rs`; `charts.rs` draws, `layout.rs` frames, `auth.rs`
//! lets in.
//!
//! Access: [`Auth`] (a bearer token or HTTP basic auth, from the environment with
//! [`Auth::from_env`]) guards every page; put it behind a reverse proxy's TLS in production.
//! Actions (pause, resume, retry, cancel, delete, bulk, flush, limits, cron) carry an
//! anti-forgery token and are refused from other sites' pages; [`WebConfig::read_only`] turns
//! them all off.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let inspector = rediq::Inspector::connect("redis://127.0.0.1:6379").await?;
//! let ui = rediq::web::router(inspector, rediq::web::WebConfig {
//!     base_path: "/ops/rediq".into(),
//!     auth: rediq::web::Auth::from_env()?,
//!     read_only: false,
//! });
//! // Mounted in an application of its own, under the same prefix.
//! let app: axum::Router = axum::Router::new().nest("/ops/rediq", ui);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod actions;
mod auth;
mod bulk;
mod charts;
mod cron;
mod layout;
mod limits;
mod overview;
mod queue;
mod search;
mod servers;
mod views;

use std::sync::Arc;

use crate::Inspector;
use axum::routing::{get, post};
use axum::Router;

pub use auth::{Auth, AuthError};

/// How the UI is served.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// The path the router is mounted under (`""` or `"/"` for the root, `"/ops/rediq"` when
    /// nested with `Router::nest("/ops/rediq", ..)`): the links of every page start with it.
    pub base_path: String,
    /// Who may see the pages.
    pub auth: Auth,
    /// Show only: every action (retry, cancel, pause, flush, …) is refused with `403` and no
    /// page offers one.
    pub read_only: bool,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    pub inspector: Inspector,
    /// The base path without a trailing slash (`""` at the root).
    pub base: Arc<str>,
    /// Actions are refused.
    pub read_only: bool,
    /// The anti-forgery token every form carries (random, made at start; see actions.rs).
    pub csrf: Arc<str>,
}

impl App {
    /// An absolute link to `path` (which starts with `/`) under the base path; the overview
    /// (`/`) of a nested router is the prefix itself (axum's `nest` does not route its
    /// trailing slash).
    pub fn link(&self, path: &str) -> String {
        if path == "/" && !self.base.is_empty() {
            return self.base.to_string();
        }
        format!("{}{path}", self.base)
    }
}

/// What [`enc`] leaves as it is: letters, digits and `-._~` (RFC 3986's unreserved).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A value made safe as one path segment or one query value: a queue may be named `a?b&c/d`,
/// and its links must still lead to it (axum decodes the segment back).
pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// The path of a queue's page, or of one below it (`rest`: `/flush`, `?state=dead`, …).
pub(crate) fn qp(queue: &str, rest: &str) -> String {
    format!("/queues/{}{rest}", enc(queue))
}

/// The path of a task's page, or of one of its actions (`rest`: `/retry`, …).
pub(crate) fn tp(queue: &str, id: &str, rest: &str) -> String {
    format!("/queues/{}/tasks/{}{rest}", enc(queue), enc(id))
}

/// The UI as an axum router (see the module's example for mounting it).
pub fn router(inspector: Inspector, config: WebConfig) -> Router {
    let base = config.base_path.trim_end_matches('/').to_string();
    let app = App {
        inspector,
        base: base.into(),
        read_only: config.read_only,
        csrf: uuid::Uuid::new_v4().simple().to_string().into(),
    };
    Router::new()
        .route("/", get(overview::overview))
        .route("/search", get(search::by_id))
        .route("/queues/{queue}", get(queue::queue))
        .route("/queues/{queue}/search", get(search::in_queue))
        .route("/queues/{queue}/bulk", post(bulk::bulk))
        .route("/queues/{queue}/limits", post(limits::set))
        .route("/queues/{queue}/pause", post(actions::pause))
        .route("/queues/{queue}/resume", post(actions::resume))
        .route("/queues/{queue}/retry-dead", post(actions::retry_all_dead))
        .route(
            "/queues/{queue}/flush",
            get(actions::flush_confirm).post(actions::flush),
        )
        .route("/queues/{queue}/tasks/{id}", get(views::task))
        .route(
            "/queues/{queue}/tasks/{id}/retry",
            post(actions::retry_dead),
        )
        .route("/queues/{queue}/tasks/{id}/cancel", post(actions::cancel))
        .route("/queues/{queue}/tasks/{id}/delete", post(actions::delete))
        .route("/servers", get(servers::servers))
        .route("/cron", get(cron::entries))
        .route("/cron/pause", post(cron::pause))
        .route("/cron/resume", post(cron::resume))
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(config.auth),
            auth::check,
        ))
}

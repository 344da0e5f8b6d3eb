//! The web UI (cargo feature `web`): an [axum] router that shows queues, tasks and their details from an
//! [`Inspector`], to serve on its own (`rediq web --listen 127.0.0.1:8080`) or to mount in an
//! application's own axum router under any path prefix.
//!
//! Every page is rendered on the server (no script, no asset from a CDN: it works with no
//! internet access) and reads Redis through the same `Inspector` calls as the CLI, so what
//! it shows is what `rediq queue inspect` or `rediq task inspect` would print.
//!
//! Access: [`Auth`] (a bearer token or HTTP basic auth, from the environment with
//! [`Auth::from_env`]) guards every page; put it behind a reverse proxy's TLS in production.
//! Actions (pause, resume, retry, cancel, flush) carry an anti-forgery token and are refused
//! from other sites' pages; [`WebConfig::read_only`] turns them all off.
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

//! The Rediq web UI: an [axum] router that shows queues, tasks and their details from an
//! [`Inspector`], to serve on its own (`rediq web --listen 127.0.0.1:8080`) or to mount in an
//! application's own axum router under any path prefix.
//!
//! Every page is rendered on the server (no script, no asset from a CDN: it works with no
//! internet access) and reads Redis through the same `Inspector` calls as the CLI, so what
//! it shows is what `rediq queue inspect` or `rediq task inspect` would print.
//!
//! Access: [`Auth`] (a bearer token or HTTP basic auth, from the environment with
//! [`Auth::from_env`]) guards every page; put it behind a reverse proxy's TLS in production.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let inspector = rediq::Inspector::connect("redis://127.0.0.1:6379").await?;
//! let ui = rediq_web::router(inspector, rediq_web::WebConfig {
//!     base_path: "/ops/rediq".into(),
//!     auth: rediq_web::Auth::from_env()?,
//! });
//! // Mounted in an application of its own, under the same prefix.
//! let app: axum::Router = axum::Router::new().nest("/ops/rediq", ui);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod auth;
mod layout;
mod views;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use rediq::Inspector;

pub use auth::{Auth, AuthError};

/// How the UI is served.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// The path the router is mounted under (`""` or `"/"` for the root, `"/ops/rediq"` when
    /// nested with `Router::nest("/ops/rediq", ..)`): the links of every page start with it.
    pub base_path: String,
    /// Who may see the pages.
    pub auth: Auth,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    pub inspector: Inspector,
    /// The base path without a trailing slash (`""` at the root).
    pub base: Arc<str>,
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

/// The UI as an axum router (see the crate's example for mounting it).
pub fn router(inspector: Inspector, config: WebConfig) -> Router {
    let base = config.base_path.trim_end_matches('/').to_string();
    let app = App {
        inspector,
        base: base.into(),
    };
    Router::new()
        .route("/", get(views::overview))
        .route("/queues/{queue}", get(views::queue))
        .route("/queues/{queue}/tasks/{id}", get(views::task))
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(config.auth),
            auth::check,
        ))
}

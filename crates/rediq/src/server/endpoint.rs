//! The metrics endpoint: an HTTP server (axum) with `GET /metrics` and `GET /healthz`.
//!
//! `/metrics` reads the queue depths from Redis, then answers with every metric of the server's
//! registry in the OpenMetrics text format. `/healthz` answers 200 while the server runs and
//! Redis answers `PING` within a second, 503 otherwise (with the reason as the body). The
//! endpoint is a service like the others: it starts before the fetchers, so a probe sees the
//! server come up, and stops last, so during shutdown `/healthz` already says 503.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::service::Service;
use super::Ctx;
use crate::metrics::Metrics;

/// How long `/healthz` waits for Redis to answer `PING`.
const PING_LIMIT: Duration = Duration::from_secs(1);

/// The content type of the OpenMetrics text format that prometheus-client writes (counter
/// families typed without `_total`, `# UNIT` and `# EOF` lines); Prometheus reads it.
const TEXT_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct App {
    ctx: Arc<Ctx>,
    metrics: Arc<Metrics>,
}

pub(crate) fn start(
    ctx: Arc<Ctx>,
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
) -> Service {
    Service::start("metrics endpoint", move |mut stop| async move {
        let app = Router::new()
            .route("/metrics", get(scrape))
            .route("/healthz", get(health))
            .with_state(App { ctx, metrics });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.stopped().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    })
}

async fn scrape(State(app): State<App>) -> impl IntoResponse {
    let body = app.metrics.render(&app.ctx.broker).await;
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], body)
}

async fn health(State(app): State<App>) -> (StatusCode, &'static str) {
    if !app.ctx.running.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not running\n");
    }
    match tokio::time::timeout(PING_LIMIT, app.ctx.broker.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n"),
        Ok(Err(_)) | Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n"),
    }
}

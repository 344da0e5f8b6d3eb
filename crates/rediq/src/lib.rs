//! # Rediq
//!
//! A distributed background-task queue for Rust with Redis as its store. Producers enqueue
//! [`Task`]s with a [`Client`]; servers ([`server::Server`]) fetch and run them through handlers
//! registered on a [`processor::Mux`], with retries and exponential backoff, priorities,
//! delays, a dead-letter queue, leases with fencing tokens, and graceful shutdown.
//!
//! ```
//! # #[tokio::main] async fn main() -> rediq::Result<()> {
//! use std::sync::Arc;
//! use rediq::processor::{Handler, Mux};
//! use rediq::server::{Server, ServerBuilder};
//! use rediq::{async_trait, Client, Task};
//!
//! struct EmailHandler(Arc<tokio::sync::Notify>);
//!
//! #[async_trait]
//! impl Handler for EmailHandler {
//!     async fn handle(&self, task: &Task) -> rediq::Result<()> {
//!         println!("sending {}", task.id);
//!         self.0.notify_one();
//!         Ok(())
//!     }
//! }
//!
//! // A private redis-server for this example; yours is a URL such as "redis://localhost:6379".
//! let redis = rediq::testing::RedisServer::start();
//! let client = Client::builder().redis_url(redis.url()).build().await?;
//! client.enqueue(Task::builder("email:send").queue("emails").build()?).await?;
//!
//! let state = ServerBuilder::new()
//!     .redis_url(redis.url())
//!     .queues(&["emails"])
//!     .concurrency(10)
//!     .build()
//!     .await?;
//! let sent = Arc::new(tokio::sync::Notify::new());
//! let mut mux = Mux::new();
//! mux.handle("email:send", EmailHandler(sent.clone()));
//! // `run(mux)` serves until SIGINT or SIGTERM; this one stops once the task was handled.
//! Server::from(state).run_until(mux, async move { sent.notified().await }).await?;
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//! - Every state change of a task is one Lua script: atomic, so a crash anywhere loses nothing.
//! - At-least-once: a fetched task is leased; a server that dies loses its leases and the tasks
//!   are re-delivered. Each delivery carries a fencing token, so a late acknowledgement from a
//!   server whose lease was taken over is refused.
//! - See `docs/architecture.md` for the state machine.
//!
//! ## Cargo features
//! - `otel`: the producer's OpenTelemetry trace context travels in the task, and the worker's
//!   `rediq.task` span continues it (needs a `tracing-opentelemetry` layer on both sides).
//! - `tls`: `rediss://` URLs (rustls with the webpki roots), on every topology.
//! - `web`: the operators' web UI, `web::router` (an axum router to serve or to mount; the
//!   `rediq web` command serves it).
//! - `testing` (on by default): `testing::RedisServer` and friends, private `redis-server`
//!   processes (standalone, cluster, sentinel, TLS) for your own tests. A production build can
//!   leave it out with `default-features = false` (keep it in `[dev-dependencies]`).

#![deny(missing_docs)]

mod broker;
mod client;
pub mod display;
mod error;
mod inspector;
mod metrics;
pub mod middleware;
mod otel;
pub mod processor;
mod schedule;
pub mod server;
mod task;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "web")]
pub mod web;

pub use async_trait::async_trait;
pub use broker::{
    FlushCounts, GroupInfo, GroupLimits, QueueLimits, QueueStats, RateLimit, TaskState,
};
pub use client::{Client, ClientBuilder, Enqueued, Existing};
pub use error::{Error, Result};
pub use inspector::{
    CancelOutcome, CronEntry, DailyStats, Found, Inspector, InspectorBuilder, Lease, TaskDetails,
    WorkerDetails, WorkerInfo, MAX_FIND_SCAN,
};
pub use task::{Task, TaskBuilder, TaskOptions};

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

//! The consumer side: a [`Server`] fetches tasks from its queues and runs them through a
//! [`Mux`].
//!
//! A server is a handful of background services sharing one lifecycle (`service.rs`):
//!
//! | module        | job                                                                    |
//! |---------------|------------------------------------------------------------------------|
//! | `fetcher`     | picks queues (weighted or strict), leases batches; `fetcher::idle` waits |
//! | `worker`      | runs one task: timeout, panic capture, retry / dead-letter decision      |
//! | `acker`       | acknowledges successes in batches                                        |
//! | `heartbeat`   | extends the leases of held tasks, refreshes the worker registry          |
//! | `forwarder`   | moves due delayed and retry tasks to pending                             |
//! | `recoverer`   | re-delivers tasks whose lease expired (their server died)                |
//! | `janitor`     | trims completed and dead tasks, prunes dead registry entries             |
//! | `scheduler`   | fires the ticks of periodic (cron) entries, once across all servers      |
//! | `canceller`   | listens for cancellations of running tasks and drops their handlers      |
//! | `resolver`    | tells dependents that their dependencies completed or failed             |
//! | `endpoint`    | serves `/metrics` and `/healthz` over HTTP (when enabled)                |
//!
//! Shutdown walks them in order: stop fetching, wait for running handlers (up to the shutdown
//! timeout), cancel and requeue the rest, flush acknowledgements, then stop the others.
//!
//! The options and their validation live in `builder.rs` ([`ServerBuilder`]), what the running
//! server tracks about its tasks in `inflight.rs`; this module runs the server.

mod acker;
mod ahead;
mod builder;
mod canceller;
mod endpoint;
mod fetcher;
mod forwarder;
mod heartbeat;
mod inflight;
mod janitor;
mod recoverer;
mod resolver;
mod scheduler;
pub(crate) mod service;
mod worker;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use service::Service;

pub(crate) use builder::Config;
pub use builder::{RetryDelayFn, RetryPolicy, ServerBuilder, ServerState};
pub(crate) use inflight::{Cancels, InFlight};
pub use scheduler::MissedTicks;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::broker::Broker;
use crate::metrics::Metrics;
use crate::processor::Mux;
use crate::{Error, Result};

/// What the services share.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub broker: Broker,
    pub cfg: Config,
    pub server_id: String,
    /// When this server started (Unix ms), for the registry.
    pub started_at_ms: u64,
    pub inflight: InFlight,
    pub cancels: Cancels,
    /// Set when shutdown begins: tasks fetched but not yet started go back at once.
    pub stopping: AtomicBool,
    /// The metrics registry (`None` when recording is off).
    pub metrics: Option<Arc<Metrics>>,
    /// True from the start of the services until shutdown begins (for `/healthz`).
    pub running: AtomicBool,
}

impl Ctx {
    /// The physical queue number `q` (a queue, or one partition of a partitioned one).
    pub fn queue_name(&self, q: usize) -> &str {
        &self.cfg.queues[q].0
    }

    /// The queue physical queue number `q` belongs to: what handlers and metrics see.
    pub fn logical_name(&self, q: usize) -> &str {
        &self.cfg.logical[q]
    }

    /// The context of a server that runs no services, for unit tests of one component.
    #[cfg(test)]
    pub async fn for_test(url: &str, queues: &[&str]) -> Ctx {
        let state = ServerBuilder::new()
            .redis_url(url)
            .queues(queues)
            .build()
            .await
            .expect("test server builds");
        Ctx {
            broker: state.broker,
            cfg: state.cfg,
            server_id: "host:1:test".into(),
            started_at_ms: 0,
            inflight: InFlight::default(),
            cancels: Cancels::default(),
            stopping: AtomicBool::new(false),
            metrics: None,
            running: AtomicBool::new(false),
        }
    }
}

/// Fails when a served queue's partitions differ from those read at `build()`.
async fn check_partitions(ctx: &Ctx) -> Result<()> {
    let served = ctx.cfg.served();
    let now = ctx.broker.partitions_now(&served).await?;
    for ((members, _), (name, parts)) in ctx.cfg.groups.iter().zip(served.iter().zip(now)) {
        if parts.len() != members.len() {
            return Err(Error::validation(
                "partitions",
                format!(
                    "queue {name:?} was given {} partitions after this server was built (it read {}); build the server again",
                    parts.len(),
                    members.len()
                ),
            ));
        }
    }
    Ok(())
}

/// A task-processing server.
///
/// ```
/// # #[tokio::main] async fn main() -> rediq::Result<()> {
/// use std::sync::Arc;
/// use rediq::processor::{Handler, Mux};
/// use rediq::server::{Server, ServerBuilder};
/// use rediq::{async_trait, Client, Task};
///
/// struct EmailHandler(Arc<tokio::sync::Notify>);
///
/// #[async_trait]
/// impl Handler for EmailHandler {
///     async fn handle(&self, task: &Task) -> rediq::Result<()> {
///         println!("sending {}", task.id);
///         self.0.notify_one();
///         Ok(())
///     }
/// }
///
/// // A private redis-server for this example; yours is a URL such as "redis://localhost:6379".
/// let redis = rediq::testing::RedisServer::start();
/// let client = Client::builder().redis_url(redis.url()).build().await?;
/// client.enqueue(Task::builder("email:send").queue("emails").build()?).await?;
///
/// let state = ServerBuilder::new()
///     .redis_url(redis.url())
///     .queues(&["emails"])
///     .concurrency(10)
///     .build()
///     .await?;
/// let sent = Arc::new(tokio::sync::Notify::new());
/// let mut mux = Mux::new();
/// mux.handle("email:send", EmailHandler(sent.clone()));
/// // `run(mux)` serves until SIGINT or SIGTERM; this one stops once the task was handled.
/// Server::from(state).run_until(mux, async move { sent.notified().await }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    state: ServerState,
    /// The metrics endpoint's listener (or why it could not bind), once enabled.
    endpoint: Option<Result<(std::net::SocketAddr, std::net::TcpListener)>>,
}

impl From<ServerState> for Server {
    fn from(state: ServerState) -> Self {
        Server {
            state,
            endpoint: None,
        }
    }
}

impl Server {
    /// Serves the server's metrics over HTTP at `addr` while it runs: `GET /metrics` (the
    /// Prometheus text format, with queue depths read from Redis at each scrape) and
    /// `GET /healthz` (200 while the server runs and Redis answers, 503 otherwise). Turns
    /// metric recording on if the builder turned it off.
    ///
    /// The address is bound at once (port 0 picks a free port; see [`Server::metrics_addr`]);
    /// if that fails, [`Server::run`] returns [`Error::MetricsEndpoint`] before starting
    /// anything. Every metric is listed in `docs/configuration.md`.
    ///
    /// ```no_run
    /// # use rediq::server::{Server, ServerBuilder};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let state = ServerBuilder::new().queues(&["emails"]).build().await?;
    /// let mut server = Server::from(state);
    /// server.enable_metrics("0.0.0.0:9090".parse()?);
    /// // curl http://localhost:9090/metrics
    /// # Ok(()) }
    /// ```
    pub fn enable_metrics(&mut self, addr: std::net::SocketAddr) -> &mut Self {
        let bound = std::net::TcpListener::bind(addr)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                Ok((l.local_addr()?, l))
            })
            .map_err(|source| Error::MetricsEndpoint { addr, source });
        self.endpoint = Some(bound);
        if self.state.metrics.is_none() {
            self.state.metrics = Some(Arc::new(Metrics::new(&self.state.cfg.logical)));
        }
        self
    }

    /// The address the metrics endpoint listens on (with the port resolved when 0 was asked
    /// for); `None` when it is not enabled or could not bind.
    ///
    /// ```no_run
    /// # use rediq::server::{Server, ServerBuilder};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut server = Server::from(ServerBuilder::new().build().await?);
    /// server.enable_metrics("127.0.0.1:0".parse()?);
    /// println!("metrics on http://{}/metrics", server.metrics_addr().expect("bound"));
    /// # Ok(()) }
    /// ```
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.endpoint {
            Some(Ok((addr, _))) => Some(*addr),
            _ => None,
        }
    }

    /// Runs until SIGINT (Ctrl-C) or SIGTERM, then shuts down gracefully.
    pub async fn run(self, mux: Mux) -> Result<()> {
        self.run_until(mux, shutdown_signal()).await
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until(self, mux: Mux, shutdown: impl Future<Output = ()>) -> Result<()> {
        let ServerState {
            broker,
            cfg,
            metrics,
        } = self.state;
        let listener = match self.endpoint {
            Some(Ok((addr, l))) => Some(
                tokio::net::TcpListener::from_std(l)
                    .map_err(|source| Error::MetricsEndpoint { addr, source })?,
            ),
            Some(Err(e)) => return Err(e),
            None => None,
        };
        let names = cfg.served();
        broker.register_queues(&names).await?;
        let server_id = format!(
            "{}:{}:{}",
            gethostname::gethostname().to_string_lossy(),
            std::process::id(),
            &uuid::Uuid::now_v7().simple().to_string()[24..]
        );
        let ctx = Arc::new(Ctx {
            broker,
            cfg,
            server_id,
            started_at_ms: crate::task::now_ms(),
            inflight: InFlight::default(),
            cancels: Cancels::default(),
            stopping: AtomicBool::new(false),
            metrics,
            running: AtomicBool::new(false),
        });
        let concurrency = ctx.cfg.concurrency;
        let slots = Arc::new(Semaphore::new(concurrency));
        let (ack_tx, ack_rx) = mpsc::channel(acker::BACKLOG);
        let (hard_tx, hard_rx) = watch::channel(false);

        heartbeat::beat(&ctx, &ctx.broker).await?;
        // Registered now, so a declaration from here on is refused (`declare_partitions`);
        // one made since `build()` read the partitions would leave partitions unserved.
        if let Err(e) = check_partitions(&ctx).await {
            let _ = ctx.broker.unregister_worker(&ctx.server_id).await;
            return Err(e);
        }
        let endpoint = match (listener, &ctx.metrics) {
            (Some(l), Some(m)) => Some(endpoint::start(ctx.clone(), m.clone(), l)),
            _ => None,
        };
        let heartbeat = heartbeat::start(ctx.clone());
        let acker = acker::start(ctx.clone(), ack_rx);
        let forwarder = forwarder::start(ctx.clone());
        let recoverer = recoverer::start(ctx.clone());
        let janitor = janitor::start(ctx.clone());
        let scheduler = scheduler::start(ctx.clone());
        let canceller = canceller::start(ctx.clone());
        let resolver = resolver::start(ctx.clone());
        let mux = Arc::new(mux);
        let fetchers: Vec<Service> = (0..ctx.cfg.fetchers)
            .map(|_| {
                fetcher::start(
                    ctx.clone(),
                    mux.clone(),
                    slots.clone(),
                    ack_tx.clone(),
                    hard_rx.clone(),
                )
            })
            .collect();
        drop(ack_tx);
        ctx.running.store(true, Ordering::SeqCst);
        tracing::info!(server = %ctx.server_id, queues = ?names, concurrency, "rediq server started");

        shutdown.await;
        tracing::info!(server = %ctx.server_id, "shutting down");
        ctx.running.store(false, Ordering::SeqCst);
        ctx.stopping.store(true, Ordering::SeqCst);
        // Every step below is bounded, whatever Redis does: handlers get the shutdown timeout,
        // and putting tasks back, flushing acknowledgements and leaving the registry get
        // SHUTDOWN_MARGIN on top. What cannot reach Redis in time is abandoned; the lease of
        // whatever this server still holds lapses and another server re-delivers it.
        let begun = tokio::time::Instant::now();
        let drain_by = begun + ctx.cfg.shutdown_timeout;
        let end_by = drain_by + SHUTDOWN_MARGIN;
        // All at once: each gives back the tasks it leased ahead before it ends.
        futures::future::join_all(fetchers.iter().map(|f| f.stop_by(drain_by))).await;
        let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout_at(drain_by, slots.clone().acquire_many_owned(all))
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                server = %ctx.server_id,
                "handlers still running after {:?}: cancelling them and requeueing their tasks",
                ctx.cfg.shutdown_timeout
            );
            let _ = hard_tx.send(true);
            if tokio::time::timeout_at(end_by, slots.acquire_many_owned(all))
                .await
                .is_err()
            {
                tracing::error!("tasks could not be requeued in time (a handler blocks its thread, or Redis does not answer); their leases will expire and another server re-delivers them");
            }
        }
        acker.stop_by(end_by).await;
        for s in [
            &canceller, &scheduler, &resolver, &heartbeat, &forwarder, &recoverer, &janitor,
        ] {
            s.stop_by(end_by).await;
        }
        match tokio::time::timeout_at(end_by, ctx.broker.unregister_worker(&ctx.server_id)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not remove this server from the registry")
            }
            Err(_) => tracing::warn!(
                "Redis did not answer in time to remove this server from the registry; its entry expires by itself"
            ),
        }
        if let Some(e) = &endpoint {
            e.stop_by(end_by.max(tokio::time::Instant::now() + Duration::from_millis(100)))
                .await;
        }
        tracing::info!(server = %ctx.server_id, took = ?begun.elapsed(), "rediq server stopped");
        Ok(())
    }
}

/// How much longer than the shutdown timeout a shutdown may take at most: the time left to put
/// back the tasks of cancelled handlers, flush acknowledgements and leave the registry. With a
/// healthy Redis these take milliseconds; with a Redis that does not answer they are abandoned
/// when the margin runs out.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(3);

/// Resolves on SIGINT or (on Unix) SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

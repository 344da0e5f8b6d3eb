//! The consumer side: a [`Server`] fetches tasks from its queues and runs them through a
//! [`Mux`](crate::processor::Mux).
//!
//! A server is a handful of background services sharing one lifecycle ([`service`]):
//!
//! | module        | job                                                                    |
//! |---------------|------------------------------------------------------------------------|
//! | [`fetcher`]   | picks queues (weighted or strict), leases batches, blocks when idle      |
//! | [`worker`]    | runs one task: timeout, panic capture, retry / dead-letter decision      |
//! | [`acker`]     | acknowledges successes in batches                                        |
//! | [`heartbeat`] | extends the leases of held tasks, refreshes the worker registry          |
//! | [`forwarder`] | moves due delayed and retry tasks to pending                             |
//! | [`recoverer`] | re-delivers tasks whose lease expired (their server died)                |
//! | [`janitor`]   | trims completed and dead tasks, prunes dead registry entries             |
//! | [`scheduler`] | fires the ticks of periodic (cron) entries, once across all servers      |
//! | [`canceller`] | listens for cancellations of running tasks and drops their handlers      |
//! | [`resolver`]  | tells dependents that their dependencies completed or failed             |
//! | [`endpoint`]  | serves `/metrics` and `/healthz` over HTTP (when enabled)                |
//!
//! Shutdown walks them in order: stop fetching, wait for running handlers (up to the shutdown
//! timeout), cancel and requeue the rest, flush acknowledgements, then stop the others.

mod acker;
mod canceller;
mod endpoint;
mod fetcher;
mod forwarder;
mod heartbeat;
mod janitor;
mod recoverer;
mod resolver;
mod scheduler;
pub(crate) mod service;
mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use service::Service;

pub use scheduler::MissedTicks;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::broker::{Broker, DeadLimits, DepLimits, MIN_DEP_RETENTION};
use crate::client::DEFAULT_REDIS_URL;
use crate::metrics::Metrics;
use crate::middleware::MiddlewareChain;
use crate::processor::Mux;
use crate::task::validate_queue_name;
use crate::{Error, Result, Task};

/// A custom retry delay: given the task (its `retry_cnt` already counts the failed attempt,
/// so it is 1 before the first retry) and the error, how long to wait.
pub type RetryDelayFn = dyn Fn(&Task, &Error) -> Duration + Send + Sync;

/// How long a failed task waits before its next attempt.
///
/// The default is exponential: 2 s, 4 s, 8 s, … capped at one hour, without jitter.
#[derive(Clone)]
pub struct RetryPolicy {
    base: Duration,
    cap: Duration,
    jitter: f64,
    custom: Option<Arc<RetryDelayFn>>,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("base", &self.base)
            .field("cap", &self.cap)
            .field("jitter", &self.jitter)
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(3600),
            jitter: 0.0,
            custom: None,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `task.retry_cnt` (1-based).
    pub fn delay(&self, task: &Task, error: &Error) -> Duration {
        if let Some(f) = &self.custom {
            return f(task, error);
        }
        let exp = task.retry_cnt.saturating_sub(1).min(40);
        let raw = self.base.saturating_mul(1u32 << exp.min(31)).min(self.cap);
        if self.jitter > 0.0 {
            let spread = rand::random_range(-self.jitter..=self.jitter);
            raw.mul_f64((1.0 + spread).max(0.0))
        } else {
            raw
        }
    }
}

/// Everything a built server needs; turn it into a [`Server`] with `Server::from`.
#[derive(Debug)]
pub struct ServerState {
    broker: Broker,
    cfg: Config,
    metrics: Option<Arc<Metrics>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub queues: Vec<(String, u32)>,
    pub strict: bool,
    pub concurrency: usize,
    pub fetch_batch: usize,
    pub fetchers: usize,
    pub lease: Duration,
    pub shutdown_timeout: Duration,
    pub retry: RetryPolicy,
    pub dead: DeadLimits,
    pub completed_retention: Option<Duration>,
    pub forward_interval: Duration,
    pub recover_interval: Duration,
    pub heartbeat_interval: Duration,
    pub janitor_interval: Duration,
    pub scheduler_interval: Duration,
    pub missed_ticks: MissedTicks,
    pub middleware: MiddlewareChain,
}

/// Builds a server: queues, concurrency and the reliability knobs. `build()` validates them and
/// connects to Redis.
///
/// ```no_run
/// # async fn demo() -> rediq::Result<()> {
/// use rediq::server::{Server, ServerBuilder};
/// let state = ServerBuilder::new()
///     .redis_url("redis://localhost:6379")
///     .queues_weighted(&[("critical", 6), ("default", 3), ("low", 1)])
///     .concurrency(50)
///     .build()
///     .await?;
/// let server = Server::from(state);
/// # let _ = server; Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ServerBuilder {
    url: String,
    queues: Vec<(String, u32)>,
    strict: bool,
    concurrency: usize,
    fetch_batch: Option<usize>,
    fetchers: usize,
    lease: Duration,
    shutdown_timeout: Duration,
    retry: RetryPolicy,
    dead_max_count: u64,
    dead_max_age: Duration,
    completed_retention: Option<Duration>,
    forward_interval: Duration,
    janitor_interval: Duration,
    scheduler_interval: Duration,
    missed_ticks: MissedTicks,
    deps: DepLimits,
    middleware: MiddlewareChain,
    metrics: bool,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            url: DEFAULT_REDIS_URL.to_string(),
            queues: vec![(crate::task::DEFAULT_QUEUE.to_string(), 1)],
            strict: false,
            concurrency: 10,
            fetch_batch: None,
            fetchers: 2,
            lease: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            dead_max_count: DeadLimits::default().max_count,
            dead_max_age: DeadLimits::default().max_age,
            completed_retention: None,
            forward_interval: Duration::from_millis(200),
            janitor_interval: Duration::from_secs(30),
            scheduler_interval: Duration::from_millis(250),
            missed_ticks: MissedTicks::FireOnce,
            deps: DepLimits::default(),
            middleware: MiddlewareChain::new(),
            metrics: true,
        }
    }
}

impl ServerBuilder {
    /// A builder with defaults: queue `default`, concurrency 10, lease 30 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Redis URL (default `redis://127.0.0.1:6379`).
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Queues to serve, with equal weight.
    pub fn queues(mut self, queues: &[&str]) -> Self {
        self.queues = queues.iter().map(|q| (q.to_string(), 1)).collect();
        self
    }

    /// Queues with weights: a queue of weight 6 is tried first six times as often as one of
    /// weight 1. Every queue is tried on every fetch round, so none starves.
    pub fn queues_weighted(mut self, queues: &[(&str, u32)]) -> Self {
        self.queues = queues.iter().map(|(q, w)| (q.to_string(), *w)).collect();
        self
    }

    /// Serve queues in the order given: a later queue only gets work when the earlier ones are
    /// empty.
    pub fn strict_priority(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// How many handlers run at once (default 10).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Most tasks leased per round trip (default: the concurrency, at most 100).
    pub fn fetch_batch(mut self, n: usize) -> Self {
        self.fetch_batch = Some(n);
        self
    }

    /// Fetch loops run side by side (default 2): while one waits for Redis, the other can
    /// already lease the slots freed meanwhile, so Redis never idles between round trips.
    /// Capped at the concurrency.
    pub fn fetchers(mut self, n: usize) -> Self {
        self.fetchers = n;
        self
    }

    /// How long a fetched task stays leased without a heartbeat (default 30 s). A server that
    /// dies loses its tasks to others after at most the lease plus a quarter of it (capped at
    /// 5 s): the recoverer's interval.
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long shutdown waits for running handlers before cancelling and requeueing them
    /// (default 10 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Exponential backoff: `base`, 2·`base`, 4·`base`, … at most `cap` (default 2 s and 1 h).
    pub fn retry_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.retry.base = base;
        self.retry.cap = cap;
        self
    }

    /// Random spread of each backoff, as a fraction: 0.2 = ±20 % (default 0).
    pub fn retry_jitter(mut self, fraction: f64) -> Self {
        self.retry.jitter = fraction;
        self
    }

    /// Replaces the backoff with a function of the task and the error.
    pub fn retry_delay_fn(
        mut self,
        f: impl Fn(&Task, &Error) -> Duration + Send + Sync + 'static,
    ) -> Self {
        self.retry.custom = Some(Arc::new(f));
        self
    }

    /// Most tasks kept in each dead-letter queue (default 100,000); older ones are trimmed and
    /// counted.
    pub fn dead_max_count(mut self, n: u64) -> Self {
        self.dead_max_count = n;
        self
    }

    /// Oldest dead task kept (default 90 days); older ones are trimmed and counted.
    pub fn dead_max_age(mut self, age: Duration) -> Self {
        self.dead_max_age = age;
        self
    }

    /// Keep completed tasks this long for inspection (default: delete at once).
    pub fn completed_retention(mut self, keep: Duration) -> Self {
        self.completed_retention = Some(keep);
        self
    }

    /// How often due delayed and retry tasks are moved to pending (default 200 ms).
    pub fn forward_interval(mut self, every: Duration) -> Self {
        self.forward_interval = every;
        self
    }

    /// How often completed and dead tasks are trimmed (default 30 s).
    pub fn janitor_interval(mut self, every: Duration) -> Self {
        self.janitor_interval = every;
        self
    }

    /// How often the scheduler looks for due periodic ticks (default 250 ms): a tick fires at
    /// most this long after it is due.
    pub fn scheduler_interval(mut self, every: Duration) -> Self {
        self.scheduler_interval = every;
        self
    }

    /// What to do with periodic ticks missed while no server ran (default
    /// [`MissedTicks::FireOnce`]: fire once, not once per missed tick).
    pub fn missed_ticks(mut self, policy: MissedTicks) -> Self {
        self.missed_ticks = policy;
        self
    }

    /// How long a record of each completed task is kept (default 24 h, at least 1 minute), so
    /// that a task enqueued later may depend on it. A record costs 16 bytes of Redis memory.
    pub fn dependency_retention(mut self, keep: Duration) -> Self {
        self.deps.retention = keep;
        self
    }

    /// Caps the completion records kept per queue (default: no cap); past it the oldest go
    /// first, even within the retention (never those of the last minute). For busy queues: at
    /// 1,000 tasks/s a day of records is 86 million, about 1.4 GB.
    pub fn dependency_max_records(mut self, n: u64) -> Self {
        self.deps.max_records = n;
        self
    }

    /// Middleware run around every task (default: none). See [`crate::middleware`].
    ///
    /// ```
    /// use rediq::middleware::{LoggingMiddleware, MetricsMiddleware, MiddlewareChain};
    /// use rediq::server::ServerBuilder;
    ///
    /// let builder = ServerBuilder::new().middleware(
    ///     MiddlewareChain::new()
    ///         .add(LoggingMiddleware::new())
    ///         .add(MetricsMiddleware::new()),
    /// );
    /// # let _ = builder;
    /// ```
    pub fn middleware(mut self, chain: MiddlewareChain) -> Self {
        self.middleware = chain;
        self
    }

    /// Whether the server records metrics into its registry (default `true`; the cost is a
    /// few atomic increments per task). `false` records nothing, unless
    /// [`Server::enable_metrics`] is called, which turns recording on.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Validates the options and connects to Redis.
    pub async fn build(self) -> Result<ServerState> {
        if self.queues.is_empty() {
            return Err(Error::validation("queues", "at least one queue is needed"));
        }
        let mut seen = std::collections::HashSet::new();
        for (q, w) in &self.queues {
            validate_queue_name(q)?;
            if *w == 0 {
                return Err(Error::validation(
                    "queue weight",
                    format!("queue {q:?} has weight 0; weights start at 1"),
                ));
            }
            if !seen.insert(q) {
                return Err(Error::validation(
                    "queues",
                    format!("{q:?} is listed twice"),
                ));
            }
        }
        if self.concurrency == 0 {
            return Err(Error::validation("concurrency", "must be at least 1"));
        }
        if self.lease < Duration::from_millis(200) {
            return Err(Error::validation(
                "lease_duration",
                format!("{:?} is below the minimum of 200 ms", self.lease),
            ));
        }
        if !(0.0..1.0).contains(&self.retry.jitter) {
            return Err(Error::validation(
                "retry_jitter",
                format!("{} is outside 0.0..1.0", self.retry.jitter),
            ));
        }
        if self.retry.base.is_zero() && self.retry.custom.is_none() {
            return Err(Error::validation(
                "retry_backoff",
                "base must be above zero",
            ));
        }
        let fetch_batch = self.fetch_batch.unwrap_or(self.concurrency.min(100));
        if fetch_batch == 0 {
            return Err(Error::validation("fetch_batch", "must be at least 1"));
        }
        if self.fetchers == 0 {
            return Err(Error::validation("fetchers", "must be at least 1"));
        }
        for (what, d) in [
            ("forward_interval", self.forward_interval),
            ("janitor_interval", self.janitor_interval),
            ("scheduler_interval", self.scheduler_interval),
        ] {
            if d.is_zero() {
                return Err(Error::validation(what, "must be above zero"));
            }
        }
        if self.deps.retention < MIN_DEP_RETENTION || self.deps.retention > crate::task::MAX_SPAN {
            return Err(Error::validation(
                "dependency_retention",
                format!(
                    "{:?} is outside {MIN_DEP_RETENTION:?} ..= 10 years (a dependent that saw its dependency a moment ago must find its completion record)",
                    self.deps.retention
                ),
            ));
        }
        let mut broker = Broker::connect(&self.url).await?;
        broker.ping().await?;
        broker.set_dep_limits(self.deps);
        let lease = self.lease;
        let names: Vec<String> = self.queues.iter().map(|(q, _)| q.clone()).collect();
        Ok(ServerState {
            broker,
            metrics: self.metrics.then(|| Arc::new(Metrics::new(&names))),
            cfg: Config {
                queues: self.queues,
                strict: self.strict,
                concurrency: self.concurrency,
                fetch_batch: fetch_batch.min(crate::broker::MAX_SCRIPT_BATCH),
                fetchers: self.fetchers.min(self.concurrency),
                lease,
                shutdown_timeout: self.shutdown_timeout,
                retry: self.retry,
                dead: DeadLimits {
                    max_count: self.dead_max_count,
                    max_age: self.dead_max_age,
                },
                completed_retention: self.completed_retention,
                forward_interval: self.forward_interval,
                recover_interval: (lease / 4)
                    .clamp(Duration::from_millis(50), Duration::from_secs(5)),
                heartbeat_interval: (lease / 3)
                    .clamp(Duration::from_millis(50), Duration::from_secs(10)),
                janitor_interval: self.janitor_interval,
                scheduler_interval: self.scheduler_interval,
                missed_ticks: self.missed_ticks,
                middleware: self.middleware,
            },
        })
    }
}

/// Tasks this server holds a lease on, with their fencing tokens: the heartbeat extends exactly
/// these leases. It also tracks the fetch calls on their way, so that the heartbeat (on its own
/// thread) does not take a task the fetch script leased, but whose reply the fetcher has not
/// handled yet, for an orphan.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    map: Mutex<HashMap<(usize, Vec<u8>), u64>>,
    fetches: Mutex<FetchTickets>,
}

/// Fetch calls on their way: each gets the next ticket number when it starts.
#[derive(Debug, Default)]
struct FetchTickets {
    next: u64,
    open: std::collections::BTreeSet<u64>,
}

/// A fetch call on its way; dropping it (reply handled, or the call abandoned) ends it.
pub(crate) struct FetchTicket<'a> {
    owner: &'a InFlight,
    number: u64,
}

impl Drop for FetchTicket<'_> {
    fn drop(&mut self) {
        self.owner.tickets().open.remove(&self.number);
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, Vec<u8>), u64>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map stays valid.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tickets(&self) -> std::sync::MutexGuard<'_, FetchTickets> {
        // As above: a poisoned lock leaves the tickets valid.
        self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a fetch call as on its way until the ticket is dropped, which must happen only
    /// after the tasks of its reply were inserted.
    pub fn begin_fetch(&self) -> FetchTicket<'_> {
        let mut t = self.tickets();
        let number = t.next;
        t.next += 1;
        t.open.insert(number);
        FetchTicket {
            owner: self,
            number,
        }
    }

    /// A mark in time: every fetch call started before now has a smaller ticket.
    pub fn fetch_mark(&self) -> u64 {
        self.tickets().next
    }

    /// Whether every fetch call started before `mark` has been handled.
    pub fn fetches_done_before(&self, mark: u64) -> bool {
        self.tickets().open.first().is_none_or(|&n| n >= mark)
    }

    /// Whether this delivery (queue, id, token) is still tracked.
    pub fn holds(&self, queue: usize, id: &[u8], token: u64) -> bool {
        self.lock().get(&(queue, id.to_vec())) == Some(&token)
    }

    pub fn insert(&self, queue: usize, id: Vec<u8>, token: u64) {
        self.lock().insert((queue, id), token);
    }

    /// Forgets a task, unless a newer delivery of it (another token) has replaced the entry.
    pub fn remove(&self, queue: usize, id: &[u8], token: u64) {
        let mut m = self.lock();
        let key = (queue, id.to_vec());
        if m.get(&key) == Some(&token) {
            m.remove(&key);
        }
    }

    /// Held tasks grouped by queue.
    pub fn snapshot(&self) -> HashMap<usize, Vec<(Vec<u8>, u64)>> {
        let mut out: HashMap<usize, Vec<(Vec<u8>, u64)>> = HashMap::new();
        for ((q, id), t) in self.lock().iter() {
            out.entry(*q).or_default().push((id.clone(), *t));
        }
        out
    }
}

/// (queue index, task id) → the cancellation handles of its running handlers, by fencing token.
/// Usually one; two when a task whose lease was taken over is delivered to this same server
/// again while its first run still runs, and a cancel must reach both.
type CancelMap = HashMap<(usize, Vec<u8>), Vec<(u64, Arc<tokio::sync::Notify>)>>;

/// Cancellation handles of the tasks whose handlers run on this server.
#[derive(Debug, Default)]
pub(crate) struct Cancels {
    map: Mutex<CancelMap>,
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, CancelMap> {
        // A poisoned lock only means a panic elsewhere while holding it; the map stays valid.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, queue: usize, id: &[u8], token: u64) -> Arc<tokio::sync::Notify> {
        let n = Arc::new(tokio::sync::Notify::new());
        self.lock()
            .entry((queue, id.to_vec()))
            .or_default()
            .push((token, n.clone()));
        n
    }

    /// Forgets the handle of one run (the one with `token`), leaving other runs' handles.
    pub fn unregister(&self, queue: usize, id: &[u8], token: u64) {
        let mut m = self.lock();
        let key = (queue, id.to_vec());
        if let Some(runs) = m.get_mut(&key) {
            runs.retain(|(t, _)| *t != token);
            if runs.is_empty() {
                m.remove(&key);
            }
        }
    }

    /// Signals every run of a task on this server; returns whether one runs here.
    pub fn cancel(&self, queue: usize, id: &[u8]) -> bool {
        match self.lock().get(&(queue, id.to_vec())) {
            Some(runs) => {
                for (_, n) in runs {
                    n.notify_one();
                }
                !runs.is_empty()
            }
            None => false,
        }
    }
}

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
    pub fn queue_name(&self, q: usize) -> &str {
        &self.cfg.queues[q].0
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

/// A task-processing server.
///
/// ```no_run
/// # use async_trait::async_trait;
/// # use rediq::{processor::{Handler, Mux}, server::{Server, ServerBuilder}, Task};
/// # struct EmailHandler;
/// # #[async_trait] impl Handler for EmailHandler { async fn handle(&self, _: &Task) -> rediq::Result<()> { Ok(()) } }
/// # async fn demo() -> rediq::Result<()> {
/// let state = ServerBuilder::new().queues(&["emails"]).concurrency(10).build().await?;
/// let server = Server::from(state);
/// let mut mux = Mux::new();
/// mux.handle("email:send", EmailHandler);
/// server.run(mux).await?; // until SIGINT or SIGTERM
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
            let names: Vec<String> = self
                .state
                .cfg
                .queues
                .iter()
                .map(|(q, _)| q.clone())
                .collect();
            self.state.metrics = Some(Arc::new(Metrics::new(&names)));
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
        let names: Vec<String> = cfg.queues.iter().map(|(q, _)| q.clone()).collect();
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
        for f in &fetchers {
            f.stop_by(drain_by).await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The map used to be keyed by (queue, id) alone: a second run of the same id on this
    /// server replaced the first run's handle, and the first run's end then removed the
    /// second's, so a cancel could no longer reach the run still going.
    #[tokio::test]
    async fn cancel_reaches_every_run_of_an_id() {
        let c = Cancels::default();
        let first = c.register(0, b"id", 1);
        let second = c.register(0, b"id", 2);
        c.unregister(0, b"id", 1);
        assert!(c.cancel(0, b"id"), "the second run is no longer reachable");
        tokio::time::timeout(Duration::from_secs(1), second.notified())
            .await
            .expect("the second run was not signalled");
        drop(first);
        c.unregister(0, b"id", 2);
        assert!(!c.cancel(0, b"id"));
    }

    fn task_with_retries(n: u32) -> Task {
        let mut t = Task::builder("t").build().unwrap();
        t.retry_cnt = n;
        t
    }

    #[test]
    fn default_backoff_doubles_from_two_seconds() {
        let p = RetryPolicy::default();
        let e = Error::handler("x");
        let secs: Vec<u64> = (1..=5)
            .map(|n| p.delay(&task_with_retries(n), &e).as_secs())
            .collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32]);
        assert_eq!(
            p.delay(&task_with_retries(60), &e),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RetryPolicy {
            jitter: 0.5,
            ..RetryPolicy::default()
        };
        let e = Error::handler("x");
        for _ in 0..100 {
            let d = p.delay(&task_with_retries(1), &e);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(3),
                "{d:?}"
            );
        }
    }
}

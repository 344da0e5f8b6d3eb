//! Building a server: [`ServerBuilder`] collects and validates the options, connects, and
//! hands over a [`ServerState`]; [`RetryPolicy`] decides the backoff of failed tasks. The
//! running server itself is in the parent module.

use std::sync::Arc;
use std::time::Duration;

use super::MissedTicks;
use crate::broker::{redis_options, Broker, DeadLimits, DepLimits, Target, MIN_DEP_RETENTION};
use crate::metrics::Metrics;
use crate::middleware::MiddlewareChain;
use crate::task::validate_queue_name;
use crate::{Error, Result, Task};

/// The default lease-ahead cap (`ServerBuilder::prefetch`): the concurrency for a server of
/// fewer than [`DEFAULT_PREFETCH_PER_SLOT`] slots, eight per slot from there (at most 500,
/// where `Config` caps it). The buffer itself follows the pace (what started in the last 2 ms),
/// so the cap binds only for quick tasks; there, eight per slot (400 at concurrency 50) took a
/// no-op backlog from ~235,000 to ~285,000 tasks/s and cut Redis CPU per task by ~15 % against
/// one per slot (docs/benchmark.md). A small server keeps one per slot: with one or two slots,
/// a buffer of eight would let that many tasks start before a higher-priority task enqueued
/// meanwhile, and coarsen the weighted turns between queues.
fn default_prefetch(concurrency: usize) -> usize {
    if concurrency < DEFAULT_PREFETCH_PER_SLOT {
        concurrency
    } else {
        concurrency.saturating_mul(DEFAULT_PREFETCH_PER_SLOT)
    }
}

/// Lease-ahead slots per concurrency slot, by default, from this many slots up.
const DEFAULT_PREFETCH_PER_SLOT: usize = 8;

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

/// Everything a built server needs; turn it into a [`Server`](super::Server) with `Server::from`.
#[derive(Debug)]
pub struct ServerState {
    pub(super) broker: Broker,
    pub(super) cfg: Config,
    pub(super) metrics: Option<Arc<Metrics>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The physical queues served (a partitioned queue's partitions each count), with the
    /// weight of their queue.
    pub queues: Vec<(String, u32)>,
    /// The queue each physical queue belongs to, by index (the name handlers and metrics see).
    pub logical: Vec<String>,
    /// The queues as configured: the indexes of their physical queues, and their weight.
    pub groups: Vec<(Vec<usize>, u32)>,
    pub strict: bool,
    pub concurrency: usize,
    pub fetch_batch: usize,
    pub prefetch: usize,
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

impl Config {
    /// The queues served, as configured (partitioned ones once).
    pub fn served(&self) -> Vec<String> {
        self.groups
            .iter()
            .filter_map(|(members, _)| members.first().map(|&i| self.logical[i].clone()))
            .collect()
    }
}

/// Builds a server: queues, concurrency and the reliability knobs. `build()` validates them and
/// connects to Redis.
///
/// ```
/// # #[tokio::main] async fn main() -> rediq::Result<()> {
/// use rediq::server::{Server, ServerBuilder};
/// // A private redis-server for this example; yours is a URL such as "redis://localhost:6379".
/// let redis = rediq::testing::RedisServer::start();
/// let state = ServerBuilder::new()
///     .redis_url(redis.url())
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
    target: Target,
    queues: Vec<(String, u32)>,
    strict: bool,
    concurrency: usize,
    fetch_batch: Option<usize>,
    prefetch: Option<usize>,
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
            target: Target::default(),
            queues: vec![(crate::task::DEFAULT_QUEUE.to_string(), 1)],
            strict: false,
            concurrency: 10,
            fetch_batch: None,
            prefetch: None,
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

    redis_options!();

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

    /// Most free slots one fetch round trip fills (default: the concurrency, at most 100).
    pub fn fetch_batch(mut self, n: usize) -> Self {
        self.fetch_batch = Some(n);
        self
    }

    /// Most tasks each fetch loop leases ahead of its free slots (default: the concurrency
    /// below 8 slots, 8 × the concurrency from 8 slots up, at most 500; 0 turns lease-ahead
    /// off).
    ///
    /// A fetch loop holds ahead as many tasks as its workers started in the last 2 ms, up to
    /// this cap: a backlog of quick tasks then travels in batches of hundreds (a fetch costs
    /// Redis about the same for one task as for fifty), while slow tasks, with fewer than one
    /// start per 2 ms, get none. A task that finds no free slot within 20 ms goes back to
    /// Redis, so a server does not sit on tasks that another server could run. Tasks held
    /// ahead are leased like running ones (extended by the heartbeat, given back at shutdown,
    /// re-delivered when a crashed server's lease lapses, which counts an attempt as for every
    /// task the crashed server held) and can be cancelled; they may run after a
    /// higher-priority task enqueued while they waited.
    ///
    /// ```
    /// use rediq::server::ServerBuilder;
    /// // Strict priority order, even among the last few tasks fetched: no lookahead.
    /// let builder = ServerBuilder::new().concurrency(20).prefetch(0);
    /// # let _ = builder;
    /// ```
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
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

    /// How long a queue remembers the id of each finished task (default 24 h, at least 1
    /// minute, and at most [`dependency_max_records`](Self::dependency_max_records) ids): within
    /// it a task enqueued later may depend on a completed one, and enqueueing a finished task's
    /// id again writes nothing ([`Client::enqueue_outcome`](crate::Client::enqueue_outcome)).
    /// A remembered completed id costs ~132 bytes of Redis memory (~55 for a dead-lettered or
    /// cancelled one).
    pub fn dependency_retention(mut self, keep: Duration) -> Self {
        self.deps.retention = keep;
        self
    }

    /// Caps the finished task ids remembered per queue (default 100,000: at most ~13 MB per
    /// queue whatever the throughput); past it the oldest are forgotten first, even within
    /// the retention. A queue whose tasks must find dependencies that completed long ago (or
    /// whose producers retry enqueues long after a timeout) raises it.
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
    /// [`Server::enable_metrics`](super::Server::enable_metrics) is called, which turns recording on.
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
        let mut broker = Broker::open(&self.target).await?;
        broker.ping().await?;
        broker.set_dep_limits(self.deps);
        let lease = self.lease;
        let names: Vec<String> = self.queues.iter().map(|(q, _)| q.clone()).collect();
        // A partitioned queue is served as its partitions (read once, now: a queue partitioned
        // later is served whole after a restart).
        let (mut queues, mut logical, mut groups) = (Vec::new(), Vec::new(), Vec::new());
        for ((name, weight), parts) in self.queues.iter().zip(broker.partitions_now(&names).await?)
        {
            let mut members = Vec::new();
            for p in parts.iter() {
                members.push(queues.len());
                queues.push((p.clone(), *weight));
                logical.push(name.clone());
            }
            groups.push((members, *weight));
        }
        Ok(ServerState {
            broker,
            metrics: self.metrics.then(|| Arc::new(Metrics::new(&logical))),
            cfg: Config {
                queues,
                logical,
                groups,
                strict: self.strict,
                concurrency: self.concurrency,
                fetch_batch: fetch_batch.min(crate::broker::MAX_SCRIPT_BATCH / 2),
                prefetch: self
                    .prefetch
                    .unwrap_or(default_prefetch(self.concurrency))
                    .min(crate::broker::MAX_SCRIPT_BATCH / 2),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn task_with_retries(n: u32) -> Task {
        let mut t = Task::builder("t").build().unwrap();
        t.retry_cnt = n;
        t
    }

    #[test]
    fn small_servers_lease_ahead_one_task_per_slot_larger_ones_eight() {
        let caps: Vec<usize> = [1, 2, 7, 8, 50].map(default_prefetch).to_vec();
        assert_eq!(caps, vec![1, 2, 7, 64, 400]);
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

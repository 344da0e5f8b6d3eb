//! Middleware: hooks around every task a server runs.
//!
//! This module owns the [`Middleware`] trait, the [`MiddlewareChain`] a server runs them in, and
//! the two built-in middlewares, [`LoggingMiddleware`] (logs through `tracing`) and
//! [`MetricsMiddleware`] (records the handler duration histogram into the server's metrics
//! registry). It exists so that cross-cutting concerns (logging, metrics, auth, tenancy,
//! feature switches) need no change to the handlers.
//!
//! For each task, the server calls every middleware's [`before`](Middleware::before) in the
//! order they were added, then the handler, then [`after`](Middleware::after) in **reverse**
//! order, like the layers of an onion:
//!
//! ```text
//! A.before → B.before → handler → B.after → A.after
//! ```
//!
//! * `before` may let the task through ([`Before::Continue`]), **skip** it
//!   ([`Before::Skip`]: the handler does not run and the task is completed, not retried), or
//!   **fail** it (return `Err`: the attempt fails with [`Error::Middleware`] naming the
//!   middleware, and is retried or dead-lettered like a handler error, by the same rules).
//! * When a `before` skips or fails, the middlewares after it are not called, and only those
//!   before it get their `after`.
//! * `after` sees the [`Outcome`] (also for a task cancelled or interrupted by shutdown), the
//!   attempt number and the run's duration.
//!
//! Nothing a middleware does can leave a task stuck: the `before` hooks and the handler run
//! together under the task's timeout, the `after` hooks under a timeout of their own (the
//! task's timeout again), and a panic in either hook is caught and reported with the
//! middleware's name.
//!
//! ```
//! use async_trait::async_trait;
//! use rediq::middleware::{Before, Finished, Middleware, MiddlewareChain, RunInfo};
//! use rediq::server::ServerBuilder;
//! use rediq::Task;
//!
//! /// Skips tasks of tenants that were switched off.
//! struct TenantSwitch;
//!
//! #[async_trait]
//! impl Middleware for TenantSwitch {
//!     async fn before(&self, task: &Task, _run: &RunInfo) -> rediq::Result<Before> {
//!         if task.task_type.starts_with("legacy:") {
//!             return Ok(Before::skip("legacy tasks are switched off"));
//!         }
//!         Ok(Before::Continue)
//!     }
//!
//!     async fn after(&self, task: &Task, run: &RunInfo, finished: &Finished<'_>) {
//!         println!("{} attempt {} took {:?}", task.id, run.attempt, finished.duration);
//!     }
//! }
//!
//! let builder = ServerBuilder::new().middleware(MiddlewareChain::new().add(TenantSwitch));
//! # let _ = builder;
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;

use crate::metrics::TaskMetrics;
use crate::{Error, Result, Task};

/// What a [`Middleware::before`] hook decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Before {
    /// Go on to the next middleware, and then the handler.
    Continue,
    /// Do not run the handler: the task is completed without running, and is not retried.
    /// The reason is logged and given to the `after` hooks of the middlewares before this one.
    Skip(String),
}

impl Before {
    /// [`Before::Skip`] with a reason.
    ///
    /// ```
    /// use rediq::middleware::Before;
    /// assert_eq!(Before::skip("off"), Before::Skip("off".into()));
    /// ```
    pub fn skip(reason: impl Into<String>) -> Before {
        Before::Skip(reason.into())
    }
}

/// About the run of one task on this server, the same for its `before` and `after` hooks.
///
/// ```
/// # use rediq::middleware::RunInfo;
/// fn describe(run: &RunInfo) -> String {
///     format!("attempt {} (fencing token {})", run.attempt, run.fencing_token)
/// }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunInfo {
    /// Which attempt this is, from 1 (the task's `retry_cnt` + 1).
    pub attempt: u32,
    /// The fencing token of this delivery: a later delivery of the same task carries a larger
    /// one.
    pub fencing_token: u64,
    /// The server's metric handles for this task's queue and type (`None` when metrics are off).
    pub(crate) metrics: Option<Arc<TaskMetrics>>,
}

/// How a task's run ended, as the `after` hooks see it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome<'a> {
    /// The handler returned `Ok`; the task will be completed.
    Succeeded,
    /// The attempt failed: the handler returned an error, timed out or panicked, or a `before`
    /// hook failed. `will_retry` tells whether another attempt follows or the task goes to the
    /// dead-letter queue.
    Failed {
        /// Why.
        error: &'a Error,
        /// Whether the task will be retried.
        will_retry: bool,
    },
    /// A `before` hook skipped the task; it is completed without running.
    Skipped {
        /// The reason the middleware gave.
        reason: &'a str,
    },
    /// The task was cancelled while running (`cancel_task`); it is removed, not retried.
    Cancelled,
    /// Shutdown ran out of patience; the task goes back to pending without counting an attempt.
    Interrupted,
}

impl Outcome<'_> {
    /// A short lowercase name: `succeeded`, `failed`, `skipped`, `cancelled` or `interrupted`.
    ///
    /// ```
    /// assert_eq!(rediq::middleware::Outcome::Succeeded.as_str(), "succeeded");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Cancelled => "cancelled",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// What an `after` hook is told about a finished run.
#[derive(Debug)]
#[non_exhaustive]
pub struct Finished<'a> {
    /// How the run ended.
    pub outcome: Outcome<'a>,
    /// From the start of the first `before` hook to the outcome: the handler's run time plus
    /// the `before` hooks.
    pub duration: Duration,
}

/// A hook around every task a server runs. Both methods have do-nothing defaults; implement
/// the ones you need. See the [module documentation](self) for the order and the rules.
///
/// ```
/// use async_trait::async_trait;
/// use rediq::middleware::{Before, Middleware, RunInfo};
/// use rediq::{Error, Task};
///
/// /// Refuses tasks without a payload: they go to the dead-letter queue at once.
/// struct RequirePayload;
///
/// #[async_trait]
/// impl Middleware for RequirePayload {
///     fn name(&self) -> &str {
///         "require-payload"
///     }
///     async fn before(&self, task: &Task, _run: &RunInfo) -> rediq::Result<Before> {
///         if task.payload.is_empty() {
///             return Err(Error::non_retryable("empty payload"));
///         }
///         Ok(Before::Continue)
///     }
/// }
/// ```
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// The name used in errors and logs (default: the type's name).
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// Called before the handler. `Err` fails the attempt (retried or dead-lettered as its
    /// error says); [`Before::Skip`] completes the task without running it.
    async fn before(&self, _task: &Task, _run: &RunInfo) -> Result<Before> {
        Ok(Before::Continue)
    }

    /// Called after the handler (or after a later `before` skipped or failed the task), in
    /// reverse order of `before`. It cannot change the outcome: a handler that ran is not run
    /// again because of an `after` hook.
    async fn after(&self, _task: &Task, _run: &RunInfo, _finished: &Finished<'_>) {}
}

/// The middlewares of a server, run in the order they were added.
///
/// ```
/// use rediq::middleware::{LoggingMiddleware, MetricsMiddleware, MiddlewareChain};
/// use rediq::server::ServerBuilder;
///
/// let chain = MiddlewareChain::new()
///     .add(LoggingMiddleware::new())
///     .add(MetricsMiddleware::new());
/// assert_eq!(chain.len(), 2);
/// let builder = ServerBuilder::new().middleware(chain);
/// # let _ = builder;
/// ```
#[derive(Clone, Default)]
pub struct MiddlewareChain {
    items: Vec<Arc<dyn Middleware>>,
}

impl std::fmt::Debug for MiddlewareChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.items.iter().map(|m| m.name()))
            .finish()
    }
}

impl MiddlewareChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a middleware: its `before` runs after those added earlier, its `after` before
    /// theirs.
    #[must_use]
    #[allow(clippy::should_implement_trait)] // the seed API's name; a chain is no number
    pub fn add(mut self, middleware: impl Middleware) -> Self {
        self.items.push(Arc::new(middleware));
        self
    }

    /// How many middlewares the chain holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the chain is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Runs the `before` hooks in order. `entered` counts those that let the task through, so
    /// that their `after` hooks run even if this future is dropped (timeout, cancellation).
    /// `Ok(Some(reason))` = skipped.
    pub(crate) async fn run_before(
        &self,
        task: &Task,
        run: &RunInfo,
        entered: &AtomicUsize,
    ) -> Result<Option<String>> {
        for (i, m) in self.items.iter().enumerate() {
            let r = std::panic::AssertUnwindSafe(m.before(task, run))
                .catch_unwind()
                .await;
            match r {
                Ok(Ok(Before::Continue)) => entered.store(i + 1, Ordering::Release),
                Ok(Ok(Before::Skip(reason))) => {
                    tracing::info!(task = %task.id, middleware = m.name(), %reason, "task skipped by middleware");
                    return Ok(Some(reason));
                }
                Ok(Err(e)) => {
                    return Err(Error::Middleware {
                        name: m.name().to_string(),
                        source: Box::new(e),
                    })
                }
                Err(panic) => {
                    return Err(Error::Middleware {
                        name: m.name().to_string(),
                        source: Box::new(Error::handler(format!(
                            "panicked: {}",
                            crate::panic_message(&panic)
                        ))),
                    })
                }
            }
        }
        Ok(None)
    }

    /// Runs the `after` hooks of the first `entered` middlewares, in reverse order, each with
    /// panics caught.
    pub(crate) async fn run_after(
        &self,
        entered: usize,
        task: &Task,
        run: &RunInfo,
        finished: &Finished<'_>,
    ) {
        for m in self.items[..entered.min(self.items.len())].iter().rev() {
            let r = std::panic::AssertUnwindSafe(m.after(task, run, finished))
                .catch_unwind()
                .await;
            if let Err(panic) = r {
                tracing::error!(
                    task = %task.id,
                    middleware = m.name(),
                    panic = %crate::panic_message(&panic),
                    "middleware after hook panicked; the task's outcome stands"
                );
            }
        }
    }
}

/// Logs every task through `tracing`: `debug` when it starts, `info` when it succeeds or is
/// skipped, `warn` when an attempt fails (with the error and whether it will be retried),
/// `info` when it is cancelled or interrupted. The events carry the task id, type, queue,
/// attempt and duration as fields, inside the server's `rediq.task` span.
///
/// ```
/// use rediq::middleware::{LoggingMiddleware, MiddlewareChain};
/// let chain = MiddlewareChain::new().add(LoggingMiddleware::new());
/// # let _ = chain;
/// ```
#[derive(Debug, Clone, Default)]
pub struct LoggingMiddleware {
    _private: (),
}

impl LoggingMiddleware {
    /// A logging middleware.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Middleware for LoggingMiddleware {
    fn name(&self) -> &str {
        "logging"
    }

    async fn before(&self, task: &Task, run: &RunInfo) -> Result<Before> {
        tracing::debug!(task_id = %task.id, task_type = %task.task_type, queue = %task.queue, attempt = run.attempt, "task started");
        Ok(Before::Continue)
    }

    async fn after(&self, task: &Task, run: &RunInfo, finished: &Finished<'_>) {
        // Milliseconds with microsecond precision: 5.329, not 5.3289599999999995.
        let ms = (finished.duration.as_secs_f64() * 1e6).round() / 1e3;
        let (id, ty, q, attempt) = (&task.id, &task.task_type, &task.queue, run.attempt);
        match &finished.outcome {
            Outcome::Succeeded => {
                tracing::info!(task_id = %id, task_type = %ty, queue = %q, attempt, duration_ms = ms, "task succeeded")
            }
            Outcome::Failed { error, will_retry } => {
                tracing::warn!(task_id = %id, task_type = %ty, queue = %q, attempt, duration_ms = ms, error = %error, will_retry, "task failed")
            }
            Outcome::Skipped { reason } => {
                tracing::info!(task_id = %id, task_type = %ty, queue = %q, attempt, reason = %reason, "task skipped")
            }
            Outcome::Cancelled => {
                tracing::info!(task_id = %id, task_type = %ty, queue = %q, attempt, duration_ms = ms, "task cancelled")
            }
            Outcome::Interrupted => {
                tracing::info!(task_id = %id, task_type = %ty, queue = %q, attempt, duration_ms = ms, "task interrupted by shutdown; it goes back to pending")
            }
        }
    }
}

/// Records each run's duration into the server's `rediq_task_duration_seconds` histogram
/// (labels `queue`, `task_type`), for runs whose handler ran (succeeded or failed).
///
/// The lifecycle counters (processed, failed, retried, dead-lettered, …), the in-flight gauge
/// and the queue depths are recorded by the server itself, with or without this middleware;
/// see `docs/configuration.md` for every metric. Recording is off when the server was built
/// with `ServerBuilder::metrics(false)` and no endpoint.
///
/// ```
/// use rediq::middleware::{MetricsMiddleware, MiddlewareChain};
/// let chain = MiddlewareChain::new().add(MetricsMiddleware::new());
/// # let _ = chain;
/// ```
#[derive(Debug, Clone, Default)]
pub struct MetricsMiddleware {
    _private: (),
}

impl MetricsMiddleware {
    /// A metrics middleware.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Middleware for MetricsMiddleware {
    fn name(&self) -> &str {
        "metrics"
    }

    async fn after(&self, _task: &Task, run: &RunInfo, finished: &Finished<'_>) {
        if let (Some(m), Outcome::Succeeded | Outcome::Failed { .. }) =
            (&run.metrics, &finished.outcome)
        {
            m.duration.observe(finished.duration.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::time::Instant;

    /// What recording costs per task, without Redis: the per-task metric lookup, the in-flight
    /// gauge, the MetricsMiddleware hooks (boxed futures, panic guards, histogram) and the
    /// processed counter, as the worker and acker do them. Run with
    /// `cargo test --release -p rediq-queue --lib recording_cost -- --ignored --nocapture`;
    /// `docs/benchmark.md` quotes the figures.
    #[tokio::test]
    #[ignore = "a measurement; run in release"]
    async fn recording_cost() {
        const N: u32 = 1_000_000;
        let metrics = Metrics::new(&["bench".to_string()]);
        let chain = MiddlewareChain::new().add(MetricsMiddleware::new());
        let task = Task::builder("bench").queue("bench").build().unwrap();

        let t0 = Instant::now();
        for _ in 0..N {
            let m = metrics.task(0, &task.task_type);
            m.in_flight.inc();
            m.in_flight.dec();
            m.processed.inc();
            drop(std::hint::black_box(m));
        }
        let counters = t0.elapsed() / N;

        let t0 = Instant::now();
        for _ in 0..N {
            let m = metrics.task(0, &task.task_type);
            m.in_flight.inc();
            let run = RunInfo {
                attempt: 1,
                fencing_token: 1,
                metrics: Some(m),
            };
            let entered = AtomicUsize::new(0);
            let started = Instant::now();
            let skipped = chain.run_before(&task, &run, &entered).await.unwrap();
            assert!(skipped.is_none());
            let finished = Finished {
                outcome: Outcome::Succeeded,
                duration: started.elapsed(),
            };
            chain
                .run_after(entered.load(Ordering::Acquire), &task, &run, &finished)
                .await;
            if let Some(m) = &run.metrics {
                m.in_flight.dec();
                m.processed.inc();
            }
        }
        let full = t0.elapsed() / N;
        println!(
            "recording per task: counters {counters:?}, counters + MetricsMiddleware {full:?}"
        );
        assert_eq!(
            crate::metrics::tests_support::processed(&metrics, "bench"),
            2 * u64::from(N)
        );
        assert!(full < Duration::from_micros(20), "{full:?} per task");
    }
}

//! The worker: runs one leased task.
//!
//! The task runs inside a `rediq.task` tracing span (task id, type, queue, attempt, fencing
//! token). The middleware `before` hooks and the handler run together with the task's timeout
//! and with panics caught, so a slot always survives; then the `after` hooks run in reverse
//! order (bounded by the timeout again). Success goes to the acker (batched); a failure is
//! decided here: retry with backoff while retries are left and the error allows it, else the
//! dead-letter queue. A record that cannot be decoded goes to the dead-letter queue with reason
//! "undecodable" instead of crash-looping. Lifecycle metrics are recorded where each transition
//! lands in Redis.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tracing::Instrument;

use super::acker::Done;
use super::Ctx;
use crate::broker::record;
use crate::broker::Ack;
use crate::metrics::TaskMetrics;
use crate::middleware::{Finished, Outcome, RunInfo};
use crate::processor::Mux;
use crate::task::now_ms;
use crate::{Error, Task};

/// A task as leased by the fetcher.
pub(crate) struct Leased {
    pub queue: usize,
    pub token: u64,
    pub record: Vec<u8>,
    /// Registered (in `Ctx::cancels`) when the task was leased, so that a cancel that arrives
    /// while the task waits in the fetcher's lease-ahead buffer is not lost: the handler then
    /// sees it at once.
    pub cancel: Arc<tokio::sync::Notify>,
}

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    mux: Arc<Mux>,
    leased: Leased,
    permit: OwnedSemaphorePermit,
    acks: mpsc::Sender<Done>,
    mut hard_stop: watch::Receiver<bool>,
) {
    let Leased {
        queue,
        token,
        record,
        cancel,
    } = leased;
    let id = record::raw_id(&record).to_vec();

    // The rare paths below are boxed so that the future spawned per task stays small: tokio
    // copies it into the task cell, and a large one shows up as memmove in profiles.
    let task = match record::decode(ctx.logical_name(queue), &record) {
        Ok(t) => t,
        Err(reason) => {
            ctx.cancels.unregister(queue, &id, token);
            Box::pin(undecodable(&ctx, queue, &id, token, &record, &reason)).await;
            drop(permit);
            return;
        }
    };

    if ctx.stopping.load(Ordering::SeqCst) {
        ctx.cancels.unregister(queue, &id, token);
        // Cancelled while it waited in the lease-ahead buffer: removed, not given back.
        if !(cancel_requested(&cancel)
            && Box::pin(cancel_unstarted(&ctx, queue, token, &record)).await)
        {
            Box::pin(requeue(&ctx, queue, &id, token)).await;
        }
        drop(permit);
        return;
    }

    let span = tracing::info_span!(
        "rediq.task",
        task_id = %task.id,
        task_type = %task.task_type,
        queue = ctx.logical_name(queue),
        attempt = task.retry_cnt + 1,
        token,
    );
    let trace = crate::otel::trace_of(&record);
    if let Some(tp) = &trace {
        crate::otel::continue_trace(&span, tp);
    }
    execute(
        &ctx,
        &mux,
        queue,
        id,
        token,
        task,
        trace,
        &cancel,
        &acks,
        &mut hard_stop,
    )
    .instrument(span)
    .await;
    drop(permit);
}

/// What happened before the `after` hooks run.
enum Step {
    Ran(crate::Result<()>),
    Skipped(String),
    ShutDown,
    Cancelled,
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    ctx: &Arc<Ctx>,
    mux: &Mux,
    queue: usize,
    id: Vec<u8>,
    token: u64,
    task: Task,
    trace: Option<String>,
    cancel: &tokio::sync::Notify,
    acks: &mpsc::Sender<Done>,
    hard_stop: &mut watch::Receiver<bool>,
) {
    let timeout = task.options.timeout;
    let chain = &ctx.cfg.middleware;
    let metrics = ctx.metrics.as_ref().map(|m| m.task(queue, &task.task_type));
    if let Some(m) = &metrics {
        m.in_flight.inc();
    }
    let run = RunInfo {
        attempt: task.retry_cnt + 1,
        fencing_token: token,
        metrics,
    };
    let entered = AtomicUsize::new(0);
    let started = Instant::now();
    let pipeline = async {
        if !chain.is_empty() {
            match chain.run_before(&task, &run, &entered).await {
                Ok(None) => {}
                Ok(Some(reason)) => return Step::Skipped(reason),
                Err(e) => return Step::Ran(Err(e)),
            }
        }
        Step::Ran(mux.dispatch(&task).await)
    };
    let pipeline = std::panic::AssertUnwindSafe(pipeline).catch_unwind();
    // Biased: a cancel that arrived before the handler started (the task waited in the
    // lease-ahead buffer) wins before the handler is polled even once.
    let step = tokio::select! {
        biased;
        _ = hard_stop.wait_for(|s| *s) => Step::ShutDown,
        _ = cancel.notified() => Step::Cancelled,
        r = tokio::time::timeout(timeout, pipeline) => match r {
            Ok(Ok(step)) => step,
            Ok(Err(panic)) => Step::Ran(Err(Error::Panic(crate::panic_message(&panic)))),
            Err(_) => Step::Ran(Err(Error::Timeout(timeout))),
        },
    };
    ctx.cancels.unregister(queue, &id, token);
    let duration = started.elapsed();

    let entered = entered.load(Ordering::Acquire);
    if entered > 0 {
        let outcome = match &step {
            Step::Ran(Ok(())) => Outcome::Succeeded,
            Step::Ran(Err(error)) => Outcome::Failed {
                error,
                will_retry: matches!(error, Error::RateLimited { .. })
                    || (error.is_retryable() && task.retry_cnt < task.options.max_retry),
            },
            Step::Skipped(reason) => Outcome::Skipped { reason },
            Step::ShutDown => Outcome::Interrupted,
            Step::Cancelled => Outcome::Cancelled,
        };
        let finished = Finished { outcome, duration };
        let after = chain.run_after(entered, &task, &run, &finished);
        if tokio::time::timeout(timeout, after).await.is_err() {
            tracing::error!(task = %task.id, ?timeout, "middleware after hooks ran past the task's timeout and were dropped");
        }
    }
    let metrics = run.metrics;
    if let Some(m) = &metrics {
        m.in_flight.dec();
    }

    // A middleware's before hook may be told to slow down too (it calls the same service).
    let step = match step {
        Step::Ran(Err(Error::Middleware { source, .. }))
            if matches!(*source, Error::RateLimited { .. }) =>
        {
            Step::Ran(Err(*source))
        }
        step => step,
    };
    match step {
        // Shutdown ran out of patience: the handler's future is dropped and the task goes back
        // without counting an attempt.
        Step::ShutDown => Box::pin(requeue(ctx, queue, &id, token)).await,
        // Cancelled through Redis: the handler's future is dropped and the task is removed,
        // never retried.
        Step::Cancelled => {
            Box::pin(cancelled(ctx, queue, &id, token, &task, metrics.as_deref())).await
        }
        Step::Ran(Ok(())) | Step::Skipped(_) => {
            let skipped = matches!(step, Step::Skipped(_));
            let done = Done {
                queue,
                ack: Ack {
                    id,
                    token,
                    unique_key: task.options.unique_key.clone(),
                },
                metrics,
                skipped,
            };
            if acks.send(done).await.is_err() {
                tracing::warn!(task = %task.id, "acker gone; the lease will expire and the task run again");
            }
        }
        Step::Ran(Err(Error::RateLimited { retry_after })) => {
            Box::pin(slow_down(
                ctx,
                queue,
                &id,
                token,
                &task,
                retry_after,
                trace.as_deref(),
            ))
            .await
        }
        Step::Ran(Err(e)) => {
            Box::pin(fail(
                ctx,
                queue,
                &id,
                token,
                task,
                e,
                metrics,
                trace.as_deref(),
            ))
            .await
        }
    }
}

/// Whether a cancel is stored for a task that has not started waiting for one yet (it arrived
/// while the task sat in the lease-ahead buffer). Consumes it.
pub(crate) fn cancel_requested(cancel: &tokio::sync::Notify) -> bool {
    cancel.notified().now_or_never().is_some()
}

/// A task cancelled while it waited in the lease-ahead buffer, at shutdown: removed like a
/// cancelled running task. Returns false (nothing done) for a record that cannot be decoded,
/// which the caller gives back instead (the next fetch dead-letters it).
pub(crate) async fn cancel_unstarted(ctx: &Ctx, queue: usize, token: u64, rec: &[u8]) -> bool {
    let Ok(task) = record::decode(ctx.logical_name(queue), rec) else {
        return false;
    };
    let metrics = ctx.metrics.as_ref().map(|m| m.task(queue, &task.task_type));
    let id = record::raw_id(rec);
    cancelled(ctx, queue, id, token, &task, metrics.as_deref()).await;
    true
}

/// A cancelled running task is removed (its unique key released), not retried.
async fn cancelled(
    ctx: &Ctx,
    queue: usize,
    id: &[u8],
    token: u64,
    task: &Task,
    metrics: Option<&TaskMetrics>,
) {
    let qname = ctx.queue_name(queue);
    tracing::info!(task = %task.id, queue = qname, "task cancelled (running, or leased ahead and not started yet)");
    let unique = task.options.unique_key.as_deref();
    let settled = settle(ctx, queue, id, token, || {
        ctx.broker
            .cancel_active(qname, &ctx.server_id, id, token, unique)
    })
    .await;
    if let Some(m) = metrics {
        settled.count(m, &m.cancelled);
    }
}

/// A record that cannot be decoded goes to the dead-letter queue, raw bytes and reason kept.
async fn undecodable(ctx: &Ctx, queue: usize, id: &[u8], token: u64, record: &[u8], reason: &str) {
    let qname = ctx.queue_name(queue);
    tracing::error!(queue = qname, %reason, "undecodable record moved to the dead-letter queue");
    let dead = record::undecodable(record, reason);
    let settled = settle(ctx, queue, id, token, || {
        ctx.broker.kill(
            qname,
            &ctx.server_id,
            id,
            token,
            &dead,
            None,
            ctx.cfg.dead,
            false,
        )
    })
    .await;
    if let Some(metrics) = &ctx.metrics {
        let m = metrics.task(queue, record::UNDECODABLE_TYPE);
        settled.count(&m, &m.dead);
    }
}

/// Records a failed attempt: retry with backoff, or dead-letter. The trace context stays with
/// the task.
#[allow(clippy::too_many_arguments)]
async fn fail(
    ctx: &Ctx,
    queue: usize,
    id: &[u8],
    token: u64,
    mut task: Task,
    err: Error,
    metrics: Option<Arc<TaskMetrics>>,
    trace: Option<&str>,
) {
    let qname = ctx.queue_name(queue);
    task.retry_cnt += 1;
    task.last_error = Some(err.to_string());
    task.last_failed_at = Some(now_ms());
    let record = match record::encode_traced(&task, trace) {
        Ok(r) => r,
        Err(e) => {
            // The heartbeat's orphan sweep puts the task back to pending.
            tracing::error!(task = %task.id, error = %e, "cannot re-encode failed task");
            ctx.inflight.remove(queue, id, token);
            return;
        }
    };
    if err.is_retryable() && task.retry_cnt <= task.options.max_retry {
        // A user's retry_delay_fn may panic; the task must still be settled.
        let backoff = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ctx.cfg.retry.delay(&task, &err)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(task = %task.id, "retry delay function panicked; using the default backoff");
            super::RetryPolicy::default().delay(&task, &err)
        });
        tracing::info!(task_id = %task.id, task_type = %task.task_type, queue = qname, attempt = task.retry_cnt, backoff_ms = backoff.as_millis() as u64, error = %err, "task failed; will retry");
        let settled = settle(ctx, queue, id, token, || {
            ctx.broker
                .retry(qname, &ctx.server_id, id, token, &record, backoff)
        })
        .await;
        if let Some(m) = &metrics {
            settled.count(m, &m.failed);
            settled.count(m, &m.retried);
        }
    } else {
        tracing::warn!(task_id = %task.id, task_type = %task.task_type, queue = qname, attempts = task.retry_cnt, retryable = err.is_retryable(), error = %err, "task moved to the dead-letter queue");
        let unique = task.options.unique_key.as_deref();
        let settled = settle(ctx, queue, id, token, || {
            ctx.broker.kill(
                qname,
                &ctx.server_id,
                id,
                token,
                &record,
                unique,
                ctx.cfg.dead,
                false,
            )
        })
        .await;
        if let Some(m) = &metrics {
            settled.count(m, &m.failed);
            settled.count(m, &m.dead);
        }
    }
}

/// The handler was told to slow down: the task waits `retry_after` in the retry set, its
/// record unchanged (no attempt used, no last error), counted as no failure.
async fn slow_down(
    ctx: &Ctx,
    queue: usize,
    id: &[u8],
    token: u64,
    task: &Task,
    retry_after: Duration,
    trace: Option<&str>,
) {
    let qname = ctx.queue_name(queue);
    let record = match record::encode_traced(task, trace) {
        Ok(r) => r,
        Err(e) => {
            // The heartbeat's orphan sweep puts the task back to pending.
            tracing::error!(task = %task.id, error = %e, "cannot re-encode a rate-limited task");
            ctx.inflight.remove(queue, id, token);
            return;
        }
    };
    tracing::info!(task_id = %task.id, task_type = %task.task_type, queue = qname, retry_after_ms = retry_after.as_millis() as u64, "handler was rate limited; the task waits without using an attempt");
    settle(ctx, queue, id, token, || {
        ctx.broker.retry_after(
            qname,
            &ctx.server_id,
            id,
            token,
            &record,
            retry_after,
            false,
        )
    })
    .await;
}

async fn requeue(ctx: &Ctx, queue: usize, id: &[u8], token: u64) {
    let qname = ctx.queue_name(queue);
    let items = [(id.to_vec(), token, None)];
    settle(ctx, queue, id, token, || async {
        ctx.broker
            .requeue(qname, &ctx.server_id, &items, false)
            .await
            .map(|_| true)
    })
    .await;
}

/// How a transition ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Redis applied it.
    Done,
    /// Refused: the task's lease had been taken over (stale fencing token).
    Stale,
    /// Redis kept failing; the heartbeat's orphan sweep or the recoverer takes over.
    GaveUp,
    /// Refused on a retry after an attempt whose reply was lost: that attempt may have landed
    /// (then this refusal is of our own transition) or the lease was taken over; not counted.
    Unknown,
}

impl Settled {
    /// Counts the transition in `counter` when it landed, or as a stale ack when refused.
    fn count(self, m: &TaskMetrics, counter: &prometheus_client::metrics::counter::Counter) {
        match self {
            Settled::Done => {
                counter.inc();
            }
            Settled::Stale => {
                m.stale.inc();
            }
            Settled::GaveUp | Settled::Unknown => {}
        }
    }
}

/// Runs a transition with a few quick retries on Redis errors, then forgets the task. If the
/// transition never lands, the task stays in this server's active hash: the heartbeat's orphan
/// sweep puts it back to pending (or, if this server dies, the recoverer does): nothing is lost.
async fn settle<F, Fut>(ctx: &Ctx, queue: usize, id: &[u8], token: u64, mut op: F) -> Settled
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::Result<bool>>,
{
    let mut settled = Settled::GaveUp;
    // Whether an earlier attempt failed in a way after which its script may still have run (a
    // refusal naming a corrupt key ran nothing).
    let mut ambiguous = false;
    for attempt in 0..3u64 {
        match op().await {
            Ok(true) => {
                settled = Settled::Done;
                break;
            }
            Ok(false) if !ambiguous => {
                tracing::warn!(queue = ctx.queue_name(queue), task = %record::id_text(id), token, "refused stale transition: the lease was taken over");
                settled = Settled::Stale;
                break;
            }
            Ok(false) => {
                // The first attempt failed with an error after which its script may still have
                // run: the entry being gone now does not tell a takeover from our own landing.
                tracing::info!(queue = ctx.queue_name(queue), task = %record::id_text(id), token, "transition retried after an error found the task no longer held: the first attempt landed, or the lease was taken over");
                settled = Settled::Unknown;
                break;
            }
            Err(e) => {
                ambiguous |= !matches!(e, Error::Corrupt { .. });
                tracing::warn!(error = %e, attempt, "transition failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
            }
        }
    }
    ctx.inflight.remove(queue, id, token);
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::RedisServer;

    /// A refusal on the first try is a stale token. A refusal on a retry after an error is not
    /// known to be one: the first try's script may have run although its reply was lost (a
    /// stall), and counting it as stale made a landed transition look refused.
    #[tokio::test]
    async fn a_refusal_after_an_error_is_not_counted_as_stale() {
        let redis = RedisServer::start();
        let ctx = Ctx::for_test(&redis.url(), &["w"]).await;
        let first = settle(&ctx, 0, b"id", 1, || async { Ok(false) }).await;
        assert_eq!(first, Settled::Stale);
        let mut calls = 0;
        let after_error = settle(&ctx, 0, b"id", 1, || {
            calls += 1;
            let n = calls;
            async move {
                if n == 1 {
                    Err(Error::Timeout(Duration::from_secs(10)))
                } else {
                    Ok(false)
                }
            }
        })
        .await;
        assert_eq!(after_error, Settled::Unknown);
        // A refusal naming a corrupt key ran nothing: what follows is known.
        let mut calls = 0;
        let after_corrupt = settle(&ctx, 0, b"id", 1, || {
            calls += 1;
            let n = calls;
            async move {
                if n == 1 {
                    Err(Error::Corrupt {
                        key: "k".into(),
                        reason: "holds a string".into(),
                    })
                } else {
                    Ok(false)
                }
            }
        })
        .await;
        assert_eq!(after_corrupt, Settled::Stale);
    }
}

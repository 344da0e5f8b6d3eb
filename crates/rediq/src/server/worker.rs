//! The worker: runs one leased task.
//!
//! The handler runs with the task's timeout and with panics caught, so a slot always survives.
//! Success goes to the acker (batched); a failure is decided here: retry with backoff while
//! retries are left and the error allows it, else the dead-letter queue. A record that cannot be
//! decoded goes to the dead-letter queue with reason "undecodable" instead of crash-looping.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use super::acker::Done;
use super::Ctx;
use crate::broker::record;
use crate::broker::Ack;
use crate::processor::Mux;
use crate::task::now_ms;
use crate::{Error, Task};

/// A task as leased by the fetcher.
pub(crate) struct Leased {
    pub queue: usize,
    pub token: u64,
    pub record: Vec<u8>,
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
    } = leased;
    let id = record::raw_id(&record).to_vec();

    // The rare paths below are boxed so that the future spawned per task stays small: tokio
    // copies it into the task cell, and a large one shows up as memmove in profiles.
    let task = match record::decode(ctx.queue_name(queue), &record) {
        Ok(t) => t,
        Err(reason) => {
            Box::pin(undecodable(&ctx, queue, &id, token, &record, &reason)).await;
            drop(permit);
            return;
        }
    };

    if ctx.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        Box::pin(requeue(&ctx, queue, &id, token)).await;
        drop(permit);
        return;
    }

    let timeout = task.options.timeout;
    let cancel = ctx.cancels.register(queue, &id);
    let handler = std::panic::AssertUnwindSafe(mux.dispatch(&task)).catch_unwind();
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, handler) => Outcome::Ran(match r {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(Error::Panic(panic_message(&panic))),
            Err(_) => Err(Error::Timeout(timeout)),
        }),
        _ = hard_stop.wait_for(|s| *s) => Outcome::ShutDown,
        _ = cancel.notified() => Outcome::Cancelled,
    };
    ctx.cancels.unregister(queue, &id);

    match outcome {
        // Shutdown ran out of patience: the handler's future is dropped and the task goes back
        // without counting an attempt.
        Outcome::ShutDown => Box::pin(requeue(&ctx, queue, &id, token)).await,
        // Cancelled through Redis: the handler's future is dropped and the task is removed,
        // never retried.
        Outcome::Cancelled => Box::pin(cancelled(&ctx, queue, &id, token, &task)).await,
        Outcome::Ran(Ok(())) => {
            let done = Done {
                queue,
                ack: Ack {
                    id,
                    token,
                    unique_key: task.options.unique_key.clone(),
                },
            };
            if acks.send(done).await.is_err() {
                tracing::warn!(task = %task.id, "acker gone; the lease will expire and the task run again");
            }
        }
        Outcome::Ran(Err(e)) => Box::pin(fail(&ctx, queue, &id, token, task, e)).await,
    }
    drop(permit);
}

/// How a handler's run ended.
enum Outcome {
    Ran(crate::Result<()>),
    ShutDown,
    Cancelled,
}

/// A cancelled running task is removed (its unique key released), not retried.
async fn cancelled(ctx: &Ctx, queue: usize, id: &[u8], token: u64, task: &Task) {
    let qname = ctx.queue_name(queue);
    tracing::info!(task = %task.id, queue = qname, "task cancelled while running");
    let unique = task.options.unique_key.as_deref();
    settle(ctx, queue, id, token, || {
        ctx.broker
            .cancel_active(qname, &ctx.server_id, id, token, unique)
    })
    .await;
}

/// A record that cannot be decoded goes to the dead-letter queue, raw bytes and reason kept.
async fn undecodable(ctx: &Ctx, queue: usize, id: &[u8], token: u64, record: &[u8], reason: &str) {
    let qname = ctx.queue_name(queue);
    tracing::error!(queue = qname, %reason, "undecodable record moved to the dead-letter queue");
    let dead = record::undecodable(record, reason);
    settle(ctx, queue, id, token, || {
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
}

/// Records a failed attempt: retry with backoff, or dead-letter.
async fn fail(ctx: &Ctx, queue: usize, id: &[u8], token: u64, mut task: Task, err: Error) {
    let qname = ctx.queue_name(queue);
    task.retry_cnt += 1;
    task.last_error = Some(err.to_string());
    task.last_failed_at = Some(now_ms());
    let record = match record::encode(&task) {
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
        tracing::info!(task = %task.id, queue = qname, attempt = task.retry_cnt, ?backoff, error = %err, "task failed; will retry");
        settle(ctx, queue, id, token, || {
            ctx.broker
                .retry(qname, &ctx.server_id, id, token, &record, backoff)
        })
        .await;
    } else {
        tracing::warn!(task = %task.id, queue = qname, attempts = task.retry_cnt, error = %err, "task moved to the dead-letter queue");
        let unique = task.options.unique_key.as_deref();
        settle(ctx, queue, id, token, || {
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
    }
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

/// Runs a transition with a few quick retries on Redis errors, then forgets the task. If the
/// transition never lands, the task stays in this server's active hash: the heartbeat's orphan
/// sweep puts it back to pending (or, if this server dies, the recoverer does): nothing is lost.
async fn settle<F, Fut>(ctx: &Ctx, queue: usize, id: &[u8], token: u64, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::Result<bool>>,
{
    for attempt in 0..3u64 {
        match op().await {
            Ok(true) => break,
            Ok(false) => {
                tracing::warn!(queue = ctx.queue_name(queue), task = %record::id_text(id), token, "refused stale transition: the lease was taken over");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "transition failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
            }
        }
    }
    ctx.inflight.remove(queue, id, token);
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

//! The recoverer: re-delivers the tasks of servers whose lease lapsed because they died or
//! stalled.
//!
//! Leases belong to servers: each server's heartbeat keeps its lease on every queue alive. When
//! a lease lapses, the recoverer (of any server) reads that server's active tasks and gives each
//! back. A recovered task counts a failed attempt ("lease expired"), so a task that kills every
//! worker it touches ends in the dead-letter queue instead of looping forever. It goes back to
//! pending at the front of its priority (where it was when fetched), or to the dead-letter queue when
//! its retries are used up. Both scripts check again that the lease is still lapsed and the
//! token unchanged, so a server that comes back to life meanwhile keeps its tasks.

use std::sync::Arc;

use super::service::{every, Service};
use super::Ctx;
use crate::broker::record;
use crate::task::now_ms;

/// Most lapsed servers handled per queue and round.
const BATCH: usize = 50;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    let interval = ctx.cfg.recover_interval;
    Service::start("recoverer", move |stop| async move {
        every(stop, interval, || {
            let ctx = ctx.clone();
            async move {
                for (i, (q, _)) in ctx.cfg.queues.iter().enumerate() {
                    if let Err(e) = recover_queue(&ctx, i, q).await {
                        tracing::warn!(queue = %q, error = %e, "recovering expired leases failed");
                    }
                }
            }
        })
        .await
    })
}

async fn recover_queue(ctx: &Ctx, q: usize, queue: &str) -> crate::Result<()> {
    let count = |task_type: &str, dead: bool| {
        if let Some(m) = &ctx.metrics {
            let m = m.task(q, task_type);
            m.recovered.inc();
            if dead {
                m.dead.inc();
            }
        }
    };
    for server in ctx.broker.expired_servers(queue, BATCH).await? {
        let (held, garbage) = ctx.broker.held_all(queue, &server).await?;
        // An entry without the token|record shape was never written by a script of ours; it
        // is set aside on its own (fenced by its exact value and the lapsed lease), or it would
        // keep the lapsed lease, and itself, there forever.
        for entry in &garbage {
            let reason = "active entry without the token|record shape";
            let dead = record::undecodable(&entry.1, reason);
            if ctx.broker.bury_active(queue, &server, entry, &dead).await? {
                tracing::error!(queue, %server, reason, "unparsable active entry of a lapsed lease moved to the dead-letter queue");
                count(record::UNDECODABLE_TYPE, true);
            }
        }
        let mut back = Vec::new();
        let mut back_types = Vec::new();
        for e in held {
            match record::decode(queue, &e.record) {
                Ok(mut task) => {
                    task.retry_cnt += 1;
                    task.last_error = Some("lease expired: its server died or stalled".into());
                    task.last_failed_at = Some(now_ms());
                    let rec = record::encode_traced(&task, record::trace_of(&e.record).as_deref())?;
                    if task.retry_cnt <= task.options.max_retry {
                        tracing::warn!(task_id = %task.id, task_type = %task.task_type, queue, %server, attempt = task.retry_cnt, "recovering task from a lapsed lease");
                        back.push((e.id, e.token, Some(rec)));
                        back_types.push(task.task_type);
                    } else if ctx
                        .broker
                        .kill(
                            queue,
                            &server,
                            &e.id,
                            e.token,
                            &rec,
                            task.options.unique_key.as_deref(),
                            ctx.cfg.dead,
                            true,
                        )
                        .await?
                    {
                        tracing::warn!(task_id = %task.id, task_type = %task.task_type, queue, %server, attempts = task.retry_cnt, "lease lapsed and retries used up: task moved to the dead-letter queue");
                        count(&task.task_type, true);
                    }
                }
                Err(reason) => {
                    let dead = record::undecodable(&e.record, &reason);
                    if ctx
                        .broker
                        .kill(
                            queue,
                            &server,
                            &e.id,
                            e.token,
                            &dead,
                            None,
                            ctx.cfg.dead,
                            true,
                        )
                        .await?
                    {
                        tracing::error!(queue, %server, %reason, "undecodable record of a lapsed lease moved to the dead-letter queue");
                        count(record::UNDECODABLE_TYPE, true);
                    }
                }
            }
        }
        // Also with nothing to move back: this drops the lapsed lease of a server that holds
        // nothing any more.
        let moved = ctx.broker.requeue(queue, &server, &back, true).await?;
        // requeue.lua refuses a task only when its server renewed the lease meanwhile (then it
        // refuses them all) or the token changed; the count cannot say which, so a partial move
        // is counted for the first tasks.
        for t in back_types.iter().take(moved as usize) {
            count(t, false);
        }
    }
    Ok(())
}

//! The recoverer: re-delivers tasks whose lease expired because their server died or stalled.
//!
//! A recovered task counts a failed attempt ("lease expired"), so a task that kills every worker
//! it touches ends in the dead-letter queue instead of looping forever. It goes back to pending
//! at its old place (it was at the front when fetched), or to the dead-letter queue when its
//! retries are used up. Both scripts check again that the lease is still expired and the token
//! unchanged, so a heartbeat that lands meanwhile wins.

use std::collections::HashMap;
use std::sync::Arc;

use super::service::{every, Service};
use super::Ctx;
use crate::broker::record;
use crate::task::now_ms;

/// Most expired leases handled per queue and round.
const BATCH: usize = 200;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    let interval = ctx.cfg.recover_interval;
    Service::start("recoverer", move |stop| async move {
        every(stop, interval, || {
            let ctx = ctx.clone();
            async move {
                for (q, _) in &ctx.cfg.queues {
                    if let Err(e) = recover_queue(&ctx, q).await {
                        tracing::warn!(queue = %q, error = %e, "recovering expired leases failed");
                    }
                }
            }
        })
        .await
    })
}

async fn recover_queue(ctx: &Ctx, queue: &str) -> crate::Result<()> {
    let expired = ctx.broker.expired(queue, BATCH).await?;
    if expired.is_empty() {
        return Ok(());
    }
    let mut back = Vec::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for e in expired {
        match record::decode(queue, &e.record) {
            Ok(mut task) => {
                task.retry_cnt += 1;
                task.last_error = Some("lease expired: its server died or stalled".into());
                task.last_failed_at = Some(now_ms());
                let rec = record::encode(&task)?;
                if task.retry_cnt <= task.options.max_retry {
                    tracing::warn!(task = %task.id, queue, attempt = task.retry_cnt, "recovering task from an expired lease");
                    back.push((e.id, e.token, Some(rec)));
                    *counts.entry("requeued").or_default() += 1;
                } else if ctx
                    .broker
                    .kill(
                        queue,
                        &e.id,
                        e.token,
                        &rec,
                        task.options.unique_key.as_deref(),
                        ctx.cfg.dead,
                        true,
                    )
                    .await?
                {
                    tracing::warn!(task = %task.id, queue, "lease expired and retries used up: task moved to the dead-letter queue");
                    *counts.entry("dead").or_default() += 1;
                }
            }
            Err(reason) => {
                let dead = record::undecodable(&e.record, &reason);
                if ctx
                    .broker
                    .kill(queue, &e.id, e.token, &dead, None, ctx.cfg.dead, true)
                    .await?
                {
                    tracing::error!(queue, %reason, "undecodable record with an expired lease moved to the dead-letter queue");
                }
            }
        }
    }
    if !back.is_empty() {
        ctx.broker.requeue(queue, &back, true).await?;
    }
    Ok(())
}

//! The janitor: trims completed tasks past their retention, dead tasks beyond the count and
//! age limits (the trimmed ones are counted in Redis, never dropped silently), completion
//! records past the dependency retention, and prunes
//! registry entries of servers that stopped heartbeating.

use std::sync::Arc;

use super::service::{every, Service};
use super::Ctx;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    let interval = ctx.cfg.janitor_interval;
    Service::start("janitor", move |stop| async move {
        every(stop, interval, || {
            let ctx = ctx.clone();
            async move { sweep(&ctx).await }
        })
        .await
    })
}

async fn sweep(ctx: &Ctx) {
    for (q, _) in &ctx.cfg.queues {
        match ctx.broker.trim(q, ctx.cfg.dead).await {
            Ok((done, dead, records)) if done + dead + records > 0 => {
                tracing::debug!(queue = %q, completed = done, dead, records, "trimmed old tasks and completion records");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(queue = %q, error = %e, "trimming failed"),
        }
    }
    let max_age = (ctx.cfg.heartbeat_interval * 3).max(ctx.cfg.lease) * 2;
    if let Err(e) = ctx.broker.prune_workers(max_age).await {
        tracing::warn!(error = %e, "pruning the worker registry failed");
    }
}

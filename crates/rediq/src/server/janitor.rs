//! The janitor: trims completed tasks past their retention, dead tasks beyond the count and
//! age limits (the trimmed ones are counted in Redis, never dropped silently), the id index's
//! memory of finished tasks past the dependency retention or beyond its cap (also at once when
//! a completion finds the cap exceeded), and prunes registry entries of servers that stopped
//! heartbeating. It also moves what an earlier version left in the old pending set into the
//! band lists (at start and on every sweep), and sets aside garbage a crash left on its way to
//! the dead-letter queue. And it says loudly when a queue it serves got partitions after the
//! server started (it serves the partitions it read at start).

use std::sync::Arc;

use super::service::Service;
use super::Ctx;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    let interval = ctx.cfg.janitor_interval;
    Service::start("janitor", move |mut stop| async move {
        // Tasks an earlier version left pending must not wait for the first sweep.
        upgrade(&ctx).await;
        let mut next = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = tokio::time::sleep_until(next) => {
                    sweep(&ctx).await;
                    next = tokio::time::Instant::now() + interval;
                }
                // A busy queue fills the finished list faster than the sweep comes round.
                _ = ctx.broker.finished_over_cap() => evict(&ctx).await,
            }
        }
    })
}

async fn evict(ctx: &Ctx) {
    for (q, _) in &ctx.cfg.queues {
        if let Err(e) = ctx.broker.evict_finished(q).await {
            tracing::warn!(queue = %q, error = %e, "forgetting finished task ids failed");
        }
    }
}

async fn upgrade(ctx: &Ctx) {
    for (q, _) in &ctx.cfg.queues {
        match ctx.broker.migrate_pending(q).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(queue = %q, tasks = n, "moved the pending tasks of an earlier version into the band lists")
            }
            Err(e) => {
                tracing::warn!(queue = %q, error = %e, "moving an earlier version's pending tasks failed")
            }
        }
        match ctx.broker.bury_leftover_foreign(q).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::error!(queue = %q, pieces = n, "undecodable pending members moved to the dead-letter queue")
            }
            Err(e) => {
                tracing::warn!(queue = %q, error = %e, "setting undecodable pending members aside failed")
            }
        }
    }
}

/// A queue partitioned after this server started (a declaration racing the start: a
/// declaration is refused while a server serves the queue) has partitions this server does not
/// serve: their tasks wait for a server started since.
async fn check_partitions(ctx: &Ctx) {
    for (members, _) in &ctx.cfg.groups {
        let Some(&first) = members.first() else {
            continue;
        };
        let name = ctx.logical_name(first);
        match ctx.broker.partitions(name).await {
            Ok(now) if now.len() != members.len() => {
                tracing::error!(queue = name, partitions = now.len(), served = members.len(), "the queue was partitioned after this server started, which serves only the partitions it read then: restart it");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(queue = name, error = %e, "reading the queue's partitions failed")
            }
        }
    }
}

async fn sweep(ctx: &Ctx) {
    upgrade(ctx).await;
    check_partitions(ctx).await;
    for (q, _) in &ctx.cfg.queues {
        match ctx.broker.drop_legacy_records(q).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(queue = %q, keys = n, "deleted the completion records of an earlier version")
            }
            Err(e) => {
                tracing::warn!(queue = %q, error = %e, "deleting an earlier version's completion records failed")
            }
        }
        match ctx.broker.trim(q, ctx.cfg.dead).await {
            Ok((done, dead, records)) if done + dead + records > 0 => {
                tracing::debug!(queue = %q, completed = done, dead, records, "trimmed old tasks and completion records");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(queue = %q, error = %e, "trimming failed"),
        }
    }
    let max_age = super::heartbeat::registry_ttl(&ctx.cfg);
    if let Err(e) = ctx.broker.prune_workers(max_age).await {
        tracing::warn!(error = %e, "pruning the worker registry failed");
    }
}

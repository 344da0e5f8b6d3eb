//! The resolver: delivers the news of completed and failed tasks to the tasks that depend on
//! them (`broker::deps` explains the protocol).
//!
//! Each settling script that finishes a task with dependents writes an outbox entry in the
//! task's own queue, atomically with the settlement. This service reads the outboxes of the
//! server's queues and, for every entry, tells each dependent in the dependent's queue (releasing
//! it, or dead-lettering it), then drops the entry. It runs at once when a transition made by this
//! server wrote an entry, and every `forward_interval` otherwise (entries written by clients, by
//! other servers that died before delivering, or left by a crash). Every server of a queue may
//! deliver the same entry at the same time: each step is idempotent, so a dependent is released
//! exactly once.

use std::sync::Arc;

use super::service::{Service, Stop};
use super::Ctx;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    Service::start("resolver", move |stop| run(ctx, stop))
}

async fn run(ctx: Arc<Ctx>, mut stop: Stop) {
    let interval = ctx.cfg.forward_interval;
    loop {
        tokio::select! {
            _ = stop.stopped() => return,
            _ = ctx.broker.outbox_written() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        resolve_all(&ctx).await;
    }
}

async fn resolve_all(ctx: &Ctx) {
    for (q, _) in &ctx.cfg.queues {
        match ctx.broker.resolve_outbox(q).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(queue = %q, entries = n, "delivered dependency news"),
            Err(e) => {
                tracing::warn!(queue = %q, error = %e, "delivering dependency news failed; will retry")
            }
        }
    }
}

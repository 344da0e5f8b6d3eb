//! The heartbeat: keeps this server's leases alive and its registry entry fresh.
//!
//! Every third of the lease it extends the lease of every task it holds (one script call per
//! queue, fenced by token: a lease that was taken over is not revived) and refreshes the worker
//! registry entry (id, host, pid, queues, concurrency, start time) with a TTL, so a server that
//! dies drops out of the registry by itself.

use std::sync::Arc;

use super::service::{every, Service};
use super::Ctx;
use crate::broker::record::id_text;
use crate::Result;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    let interval = ctx.cfg.heartbeat_interval;
    Service::start("heartbeat", move |stop| async move {
        every(stop, interval, || {
            let ctx = ctx.clone();
            async move {
                extend_leases(&ctx).await;
                if let Err(e) = beat(&ctx).await {
                    tracing::warn!(error = %e, "worker heartbeat failed");
                }
            }
        })
        .await
    })
}

async fn extend_leases(ctx: &Ctx) {
    for (q, held) in ctx.inflight.snapshot() {
        let qname = ctx.queue_name(q);
        match ctx
            .broker
            .extend(qname, &ctx.server_id, &held, ctx.cfg.lease)
            .await
        {
            Ok(lost) => {
                for i in lost {
                    tracing::warn!(queue = qname, task = %id_text(&held[i].0), "lease lost: the task was taken over; this run's result will be refused");
                }
            }
            Err(e) => tracing::warn!(queue = qname, error = %e, "lease extension failed"),
        }
    }
}

/// Registers or refreshes this server in the worker registry.
pub(crate) async fn beat(ctx: &Ctx) -> Result<()> {
    let queues: Vec<&str> = ctx.cfg.queues.iter().map(|(q, _)| q.as_str()).collect();
    let info = [
        (
            "host",
            gethostname::gethostname().to_string_lossy().into_owned(),
        ),
        ("pid", std::process::id().to_string()),
        ("queues", queues.join(",")),
        ("concurrency", ctx.cfg.concurrency.to_string()),
        ("started_at_ms", ctx.started_at_ms.to_string()),
    ];
    let ttl = (ctx.cfg.heartbeat_interval * 3).max(ctx.cfg.lease);
    ctx.broker
        .heartbeat_worker(&ctx.server_id, &info, ttl)
        .await
}

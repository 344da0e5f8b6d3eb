//! The canceller: listens on the cancellation channel and drops the handler of a running task
//! that was cancelled (the worker then removes the task, never retrying it).
//!
//! Pub/sub is fire-and-forget: an announcement made while this server is reconnecting is not
//! seen, and the task then runs to its end. The caller of the cancellation learns that the task
//! was running and was signalled, not that it stopped.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::service::{Service, Stop};
use super::Ctx;
use crate::broker::cancel::parse_announcement;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    Service::start("canceller", move |stop| run(ctx, stop))
}

async fn run(ctx: Arc<Ctx>, mut stop: Stop) {
    loop {
        let generation = ctx.broker.topology_generation();
        let mut ps = match ctx.broker.subscribe_cancels().await {
            Ok(ps) => ps,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to cancellations; retrying");
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut messages = ps.on_message();
        // Under Sentinel, a subscription on a master that was replaced hears nothing until it
        // is demoted: checked every second, and opened again on the new master.
        let mut moved = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = moved.tick() => if ctx.broker.topology_generation() != generation { break },
                msg = messages.next() => {
                    let Some(msg) = msg else { break }; // connection lost: subscribe again
                    let payload = msg.get_payload_bytes();
                    let Some((queue, id)) = parse_announcement(payload) else { continue };
                    if let Some(q) = ctx.cfg.queues.iter().position(|(name, _)| name == queue) {
                        if ctx.cancels.cancel(q, id) {
                            tracing::info!(queue, task = %crate::broker::record::id_text(id), "cancelling running task");
                        }
                    }
                }
            }
        }
    }
}

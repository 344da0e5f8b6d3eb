//! The forwarder: moves delayed and retry tasks whose time has come to pending.
//!
//! Due-ness is judged by the Redis clock inside the script, so a task never runs early; with the
//! default 200 ms interval an idle system starts a due task well within a second.

use std::sync::Arc;

use super::service::{every, Service};
use super::Ctx;
use crate::broker::Waiting;

/// Most tasks moved per script call; a full call is followed by another at once.
const BATCH: usize = 1000;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    let interval = ctx.cfg.forward_interval;
    Service::start("forwarder", move |stop| async move {
        every(stop, interval, || {
            let ctx = ctx.clone();
            async move { forward_all(&ctx).await }
        })
        .await
    })
}

async fn forward_all(ctx: &Ctx) {
    for (q, _) in &ctx.cfg.queues {
        for from in [Waiting::Delayed, Waiting::Retry] {
            loop {
                match ctx.broker.forward(q, from, BATCH).await {
                    Ok(n) if n as usize == BATCH => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(queue = %q, error = %e, "forwarding due tasks failed");
                        break;
                    }
                }
            }
        }
    }
}

//! The resolver: delivers the news of completed and failed tasks to the tasks that depend on
//! them (`broker::deps` explains the protocol).
//!
//! Each settling script that finishes a task with dependents writes an outbox entry in the
//! task's own queue, atomically with the settlement. This service reads the outboxes of the
//! server's queues and, for every entry, tells each dependent in the dependent's queue (releasing
//! it, or dead-lettering it), then drops the entry. It runs at once when a transition made by this
//! server wrote an entry, and every `forward_interval` otherwise (entries written by clients, by
//! other servers that died before delivering, or left by a crash). One server at a time delivers
//! a queue's outbox (a claim with a TTL, taken over when its holder stalls or dies); should two
//! deliver the same entry anyway, each step is idempotent, so a dependent is released exactly
//! once.
//!
//! An entry that cannot be delivered is set aside by the broker and tried again with backoff, so
//! the others flow; it is logged once as a warning when it is set aside (repeats at debug), and
//! once more when it is finally delivered. A round that fails as a whole (Redis unreachable, a
//! damaged outbox key) warns when the error first appears or changes, not every interval.

use std::collections::HashMap;
use std::sync::Arc;

use super::service::{Service, Stop};
use super::Ctx;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    Service::start("resolver", move |stop| run(ctx, stop))
}

async fn run(ctx: Arc<Ctx>, mut stop: Stop) {
    let interval = ctx.cfg.forward_interval;
    // The last round error per queue, so a lasting fault warns once.
    let mut failing: HashMap<String, String> = HashMap::new();
    let mut pause = interval;
    loop {
        tokio::select! {
            _ = stop.stopped() => return,
            _ = ctx.broker.outbox_written() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        // Another server was delivering an outbox: it may have read it before this server's
        // latest entry landed, so look again soon rather than after a whole interval.
        pause = if resolve_all(&ctx, &mut failing).await {
            interval.min(BUSY_PAUSE)
        } else {
            interval
        };
    }
}

/// How soon to look again at an outbox another server was delivering.
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Delivers the outboxes of the server's queues; returns whether one was busy (claimed by
/// another resolver).
async fn resolve_all(ctx: &Ctx, failing: &mut HashMap<String, String>) -> bool {
    let mut busy = false;
    for (q, _) in &ctx.cfg.queues {
        match ctx.broker.resolve_outbox(q).await {
            Ok(r) => {
                busy |= r.busy;
                if failing.remove(q).is_some() {
                    tracing::info!(queue = %q, "delivering dependency news works again");
                }
                if r.delivered > 0 {
                    tracing::debug!(queue = %q, entries = r.delivered, "delivered dependency news");
                }
                for a in &r.set_aside {
                    if a.attempts == 1 {
                        tracing::warn!(queue = %q, dependency = %a.dependency, reason = %a.reason,
                            "dependency news set aside: it could not be delivered; the rest \
                             flow, and it is tried again with backoff");
                    } else {
                        tracing::debug!(queue = %q, dependency = %a.dependency, reason = %a.reason,
                            attempts = a.attempts, "set-aside dependency news failed again");
                    }
                }
                for id in &r.recovered {
                    tracing::info!(queue = %q, dependency = %id, "set-aside dependency news delivered");
                }
            }
            Err(e) => {
                let text = e.to_string();
                if failing.get(q) != Some(&text) {
                    tracing::warn!(queue = %q, error = %text,
                        "delivering dependency news failed; retrying every interval");
                } else {
                    tracing::debug!(queue = %q, error = %text, "delivering dependency news failed again");
                }
                failing.insert(q.clone(), text);
            }
        }
    }
    busy
}

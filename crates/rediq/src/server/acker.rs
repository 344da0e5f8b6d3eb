//! The acker: acknowledges successful tasks in batches.
//!
//! Workers hand their success over and free their slot at once; the acker drains whatever has
//! accumulated and completes it with one script call per queue. Under load batches grow by
//! themselves, and a small batch lingers at most 1 ms for company. The channel is bounded,
//! so a Redis that falls behind slows the workers down instead of growing memory. At shutdown
//! it finishes every queued ack before it stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::service::{Service, Stop};
use super::Ctx;
use crate::broker::{Ack, MAX_SCRIPT_BATCH};
use crate::metrics::TaskMetrics;

/// Most successes waiting for acknowledgement before workers wait.
pub(crate) const BACKLOG: usize = 16 * 1024;

/// Batch size worth waiting for.
const GATHER: usize = 64;
/// Longest an acknowledgement waits for a fuller batch.
const LINGER: Duration = Duration::from_millis(1);

/// A success to acknowledge.
#[derive(Debug)]
pub(crate) struct Done {
    pub queue: usize,
    pub ack: Ack,
    /// Where to count it (`None` when metrics are off).
    pub metrics: Option<Arc<TaskMetrics>>,
    /// A middleware skipped the task: counted as skipped, not processed.
    pub skipped: bool,
}

pub(crate) fn start(ctx: Arc<Ctx>, rx: mpsc::Receiver<Done>) -> Service {
    Service::start("acker", move |stop| run(ctx, rx, stop))
}

async fn run(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Done>, mut stop: Stop) {
    loop {
        let first = tokio::select! {
            biased;
            d = rx.recv() => match d {
                Some(d) => d,
                None => return,
            },
            _ = stop.stopped() => {
                // No new acks are accepted; finish the ones already queued.
                rx.close();
                let mut rest = Vec::new();
                while let Some(d) = rx.recv().await {
                    rest.push(d);
                    if rest.len() == MAX_SCRIPT_BATCH {
                        flush(&ctx, std::mem::take(&mut rest)).await;
                    }
                }
                flush(&ctx, rest).await;
                return;
            }
        };
        // A queue held at its limit reuses a slot only once the ack reached Redis: no waiting
        // for company then.
        let urgent = ctx.inflight.is_limited(first.queue);
        let mut batch = vec![first];
        let linger_until =
            tokio::time::Instant::now() + if urgent { Duration::ZERO } else { LINGER };
        while batch.len() < MAX_SCRIPT_BATCH {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) if batch.len() >= GATHER => break,
                // A small batch waits a moment for company: one script call per 64 tasks
                // costs Redis far less than one per 8. Slots are already free, so this
                // delays only the acknowledgement, never the next task.
                Err(_) => match tokio::time::timeout_at(linger_until, rx.recv()).await {
                    Ok(Some(d)) => batch.push(d),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        flush(&ctx, batch).await;
    }
}

async fn flush(ctx: &Ctx, batch: Vec<Done>) {
    type Counted = (Option<Arc<TaskMetrics>>, bool);
    let mut by_queue: HashMap<usize, (Vec<Ack>, Vec<Counted>)> = HashMap::new();
    for d in batch {
        let (acks, counted) = by_queue.entry(d.queue).or_default();
        acks.push(d.ack);
        counted.push((d.metrics, d.skipped));
    }
    // Queues (the partitions of a partitioned one, on a cluster each on its own shard) are
    // acknowledged concurrently: one round trip for the batch, not one per queue.
    futures::future::join_all(
        by_queue
            .into_iter()
            .map(|(q, (acks, counted))| flush_queue(ctx, q, acks, counted)),
    )
    .await;
}

/// Acknowledges one queue's share of a batch.
async fn flush_queue(
    ctx: &Ctx,
    q: usize,
    acks: Vec<Ack>,
    counted: Vec<(Option<Arc<TaskMetrics>>, bool)>,
) {
    let qname = ctx.queue_name(q);
    // One nonce for the batch and all its retries: a retry after a lost reply gets the first
    // call's answer back (complete.lua keeps a receipt), so an ack that landed is never
    // taken for a refused one.
    let nonce: u64 = rand::random();
    for attempt in 0..5u64 {
        match ctx
            .broker
            .complete(
                qname,
                &ctx.server_id,
                &acks,
                ctx.cfg.completed_retention,
                nonce,
            )
            .await
        {
            Ok(stale) => {
                for &i in &stale {
                    tracing::warn!(
                        queue = qname,
                        task = %crate::broker::record::id_text(&acks[i].id),
                        token = acks[i].token,
                        "refused stale ack: the lease expired and the task was re-delivered"
                    );
                }
                count(&counted, &stale);
                break;
            }
            Err(e) => {
                tracing::warn!(queue = qname, error = %e, attempt, "ack failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
            }
        }
    }
    // Acknowledged, refused, or given up on (then the lease expires and the task runs again:
    // at-least-once): either way this server no longer holds these tasks.
    for a in &acks {
        ctx.inflight.remove(q, &a.id, a.token);
    }
}

/// Counts an acknowledged batch: processed (or skipped), except the refused positions in
/// `stale` (sorted ascending, as complete.lua returns them), which count as stale acks.
fn count(counted: &[(Option<Arc<TaskMetrics>>, bool)], stale: &[usize]) {
    let mut refused = stale.iter().peekable();
    for (i, (m, skipped)) in counted.iter().enumerate() {
        let is_stale = refused.next_if(|&&s| s == i).is_some();
        let Some(m) = m else { continue };
        if is_stale {
            m.stale.inc();
        } else if *skipped {
            m.skipped.inc();
        } else {
            m.processed.inc();
        }
    }
}

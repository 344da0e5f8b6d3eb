//! The fetcher: leases batches of tasks and hands each to a worker.
//!
//! It takes as many free concurrency slots as it can (at least one), leases that many tasks in
//! one script call, trying the queues in weighted-random order (or strictly in order), and
//! spawns a worker per task. When every queue is empty it blocks on the queues' wake markers
//! (BZPOPMIN on a dedicated connection), so an idle server costs nothing and a new task is picked
//! up within one round trip: there is no polling sleep.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::service::{Service, Stop};
use super::{worker, Ctx};
use crate::broker::Broker;
use crate::processor::Mux;

/// The longest a blocking wait lasts before the fetcher looks again on its own.
const IDLE_WAIT: Duration = Duration::from_secs(1);

pub(crate) fn start(
    ctx: Arc<Ctx>,
    mux: Arc<Mux>,
    slots: Arc<Semaphore>,
    acks: mpsc::Sender<super::acker::Done>,
    hard_stop: watch::Receiver<bool>,
) -> Service {
    Service::start("fetcher", move |stop| {
        run(ctx, mux, slots, acks, hard_stop, stop)
    })
}

async fn run(
    ctx: Arc<Ctx>,
    mux: Arc<Mux>,
    slots: Arc<Semaphore>,
    acks: mpsc::Sender<super::acker::Done>,
    hard_stop: watch::Receiver<bool>,
    mut stop: Stop,
) {
    let names: Vec<String> = ctx.cfg.queues.iter().map(|(q, _)| q.clone()).collect();
    let mut blocking = None;
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            _ = stop.stopped() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // the semaphore is never closed; treat it as a stop
            },
        };
        let mut permits: Vec<OwnedSemaphorePermit> = vec![first];
        while permits.len() < ctx.cfg.fetch_batch {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }

        let mut got = 0usize;
        let mut failed = false;
        for q in order(&ctx.cfg.queues, ctx.cfg.strict) {
            if permits.is_empty() {
                break;
            }
            match ctx
                .broker
                .fetch(
                    ctx.queue_name(q),
                    &ctx.server_id,
                    permits.len(),
                    ctx.cfg.lease,
                )
                .await
            {
                Ok(Some(batch)) => {
                    for record in batch.records {
                        // fetch.lua returns at most as many records as we asked for.
                        let Some(permit) = permits.pop() else { break };
                        let id = crate::broker::record::raw_id(&record).to_vec();
                        ctx.inflight.insert(q, id, batch.token);
                        got += 1;
                        tokio::spawn(worker::run(
                            ctx.clone(),
                            mux.clone(),
                            worker::Leased {
                                queue: q,
                                token: batch.token,
                                record,
                            },
                            permit,
                            acks.clone(),
                            hard_stop.clone(),
                        ));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    failed = true;
                    tracing::warn!(queue = ctx.queue_name(q), error = %e, "fetch failed");
                }
            }
        }
        drop(permits);

        if failed {
            failures += 1;
            let backoff = Duration::from_millis(50 * u64::from(failures.min(40)));
            tokio::select! {
                _ = stop.stopped() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            continue;
        }
        failures = 0;
        if got > 0 {
            continue;
        }
        // Every queue was empty: sleep on the wake markers until an enqueue or forward sets one.
        if blocking.is_none() {
            match ctx.broker.blocking_connection().await {
                Ok(c) => blocking = Some(c),
                Err(e) => tracing::warn!(error = %e, "cannot open the blocking connection"),
            }
        }
        match blocking.as_mut() {
            Some(conn) => {
                tokio::select! {
                    _ = stop.stopped() => return,
                    r = Broker::wait_for_work(conn, &names, IDLE_WAIT) => {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "blocking wait failed; reconnecting");
                            blocking = None;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            None => {
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

/// The order in which the queues are tried this round: as listed when strict, else a
/// weighted-random permutation (a queue's chance to come first is proportional to its weight,
/// and every queue comes at some place, so none starves).
pub(crate) fn order(queues: &[(String, u32)], strict: bool) -> Vec<usize> {
    if strict || queues.len() == 1 {
        return (0..queues.len()).collect();
    }
    let mut left: Vec<usize> = (0..queues.len()).collect();
    let mut out = Vec::with_capacity(queues.len());
    while !left.is_empty() {
        let total: u64 = left.iter().map(|&i| u64::from(queues[i].1)).sum();
        let mut pick = rand::random_range(0..total.max(1));
        let mut chosen = 0;
        for (pos, &i) in left.iter().enumerate() {
            let w = u64::from(queues[i].1);
            if pick < w {
                chosen = pos;
                break;
            }
            pick -= w;
        }
        out.push(left.remove(chosen));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_order_follows_weights() {
        let qs = vec![
            ("a".to_string(), 6),
            ("b".to_string(), 3),
            ("c".to_string(), 1),
        ];
        let mut first = [0u32; 3];
        for _ in 0..10_000 {
            let o = order(&qs, false);
            assert_eq!(o.len(), 3);
            first[o[0]] += 1;
        }
        assert!((5_500..6_500).contains(&first[0]), "{first:?}");
        assert!((2_500..3_500).contains(&first[1]), "{first:?}");
        assert!((700..1_300).contains(&first[2]), "{first:?}");
        assert_eq!(order(&qs, true), vec![0, 1, 2]);
    }
}

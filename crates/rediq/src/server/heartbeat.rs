//! The heartbeat: keeps this server's leases alive and its registry entry fresh.
//!
//! It runs on a thread of its own with its own Redis connection, so leases stay alive while
//! handlers block the threads of the shared runtime.
//!
//! Every third of the lease it extends its lease on every queue it serves (one script call per
//! queue, fenced by token: a lease that was taken over is not revived; a fetch whose reply is
//! not handled yet is covered too) and refreshes the worker
//! registry entry (id, host, pid, queues, concurrency, start time) with a TTL, so a server that
//! dies drops out of the registry by itself.
//!
//! It also sweeps for *orphans*: tasks in this server's active hash that the server itself no
//! longer tracks, because a transition for them failed against Redis too often, or a fetch reply
//! was lost after the fetch script ran. The server's lease stays alive while it works, so the
//! recoverer would never take those back; an orphan seen on two beats in a row (with the same
//! token, so not a fetch still on its way) is put back to pending by the heartbeat itself.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::service::{every, Service};
use super::Ctx;
use crate::broker::record::id_text;
use crate::broker::Broker;
use crate::Result;

/// Orphan candidates seen on the previous beat: (queue, id, token) → the fetch mark when first
/// seen.
type Seen = HashMap<(usize, Vec<u8>, u64), u64>;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    let interval = ctx.cfg.heartbeat_interval;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    // Its own thread and connection: leases must stay alive whatever the handlers do to the
    // shared runtime (a handler that blocks its thread would otherwise starve the heartbeat,
    // its lease would lapse, and the task would run a second time elsewhere).
    Service::start_thread("heartbeat", move |mut stop| async move {
        let broker = loop {
            match ctx.broker.detached().await {
                Ok(b) => break b,
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat cannot connect; trying again");
                    tokio::select! {
                        _ = stop.stopped() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                }
            }
        };
        every(stop, interval, || {
            let (ctx, seen, broker) = (ctx.clone(), seen.clone(), broker.clone());
            async move {
                extend_leases(&ctx, &broker).await;
                if let Err(e) = sweep_orphans(&ctx, &broker, &seen).await {
                    tracing::warn!(error = %e, "orphan sweep failed");
                }
                if let Err(e) = beat(&ctx, &broker).await {
                    tracing::warn!(error = %e, "worker heartbeat failed");
                }
            }
        })
        .await
    })
}

async fn extend_leases(ctx: &Ctx, broker: &Broker) {
    // Every served queue, not only those with tracked tasks: a fetch whose reply the fetcher
    // has not handled yet (the shared runtime busy with blocking handlers) holds tasks under
    // this server's lease that nothing tracks yet (extend.lua only extends such a lease, it
    // creates none).
    let mut snapshot = ctx.inflight.snapshot();
    for q in 0..ctx.cfg.queues.len() {
        let held = snapshot.remove(&q).unwrap_or_default();
        let qname = ctx.queue_name(q);
        match broker
            .extend(qname, &ctx.server_id, &held, ctx.cfg.lease)
            .await
        {
            Ok(lost) => {
                for i in lost {
                    let (id, token) = &held[i];
                    // Settled meanwhile (an ack that landed after the snapshot): nothing lost.
                    if ctx.inflight.holds(q, id, *token) {
                        tracing::warn!(queue = qname, task = %id_text(id), token, "lease lost: the task is no longer held under this delivery (its lease had lapsed, or it was delivered again); a late result of this run will be refused");
                    }
                }
            }
            Err(e) => tracing::warn!(queue = qname, error = %e, "lease extension failed"),
        }
    }
}

/// Puts back to pending the tasks of this server's active hashes that it no longer tracks, that
/// were already orphans on the previous beat, and whose fetch cannot still be on its way (every
/// fetch call started before they were first seen has been handled).
async fn sweep_orphans(ctx: &Ctx, broker: &Broker, seen: &Mutex<Seen>) -> Result<()> {
    let tracked: HashSet<(usize, Vec<u8>, u64)> = ctx
        .inflight
        .snapshot()
        .into_iter()
        .flat_map(|(q, held)| held.into_iter().map(move |(id, t)| (q, id, t)))
        .collect();
    let mut now = Seen::new();
    for (q, (name, _)) in ctx.cfg.queues.iter().enumerate() {
        let held = broker.held(name, &ctx.server_id).await?;
        // Taken after the read: a fetch whose script wrote an entry read above started before.
        let mark = ctx.inflight.fetch_mark();
        for e in held {
            let key = (q, e.id, e.token);
            if !tracked.contains(&key) {
                now.insert(key, mark);
            }
        }
    }
    let mut orphans = Vec::new();
    {
        let mut previous = seen.lock().unwrap_or_else(|p| p.into_inner());
        for (key, mark) in now.iter_mut() {
            if let Some(&first) = previous.get(key) {
                *mark = first;
                if ctx.inflight.fetches_done_before(first) {
                    orphans.push(key.clone());
                }
            }
        }
        *previous = now;
    }
    for (q, id, token) in &orphans {
        let qname = ctx.queue_name(*q);
        let n = broker
            .requeue(qname, &ctx.server_id, &[(id.clone(), *token, None)], false)
            .await?;
        if n > 0 {
            tracing::warn!(queue = qname, task = %id_text(id), "task orphaned by a failed transition put back to pending");
        }
    }
    Ok(())
}

/// Registers or refreshes this server in the worker registry.
pub(crate) async fn beat(ctx: &Ctx, broker: &Broker) -> Result<()> {
    let queues = ctx.cfg.served();
    let info = [
        (
            "host",
            gethostname::gethostname().to_string_lossy().into_owned(),
        ),
        ("pid", std::process::id().to_string()),
        ("queues", queues.join(",")),
        ("concurrency", ctx.cfg.concurrency.to_string()),
        ("started_at_ms", ctx.started_at_ms.to_string()),
        // A reader calls the server dead once its heartbeat is older than its lease.
        ("lease_ms", ctx.cfg.lease.as_millis().to_string()),
        (
            "in_flight",
            ctx.inflight
                .snapshot()
                .values()
                .map(Vec::len)
                .sum::<usize>()
                .to_string(),
        ),
    ];
    broker
        .heartbeat_worker(&ctx.server_id, &info, registry_ttl(&ctx.cfg))
        .await
}

/// How long a registry entry outlives its last heartbeat: twice the time after which the
/// server counts as dead, so that readers see it as dead for a while before it goes (the
/// janitor prunes the registry's index at the same age).
pub(crate) fn registry_ttl(cfg: &super::Config) -> std::time::Duration {
    (cfg.heartbeat_interval * 3).max(cfg.lease) * 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::record;
    use crate::testing::RedisServer;
    use std::time::Duration;

    /// Enqueues `n` plain tasks into `queue`.
    async fn put(broker: &Broker, queue: &str, n: usize) {
        for _ in 0..n {
            crate::broker::test_util::plain(broker, queue).await;
        }
    }

    #[tokio::test]
    async fn orphans_go_back_on_the_second_beat_tracked_tasks_stay() {
        let redis = RedisServer::start();
        let ctx = Ctx::for_test(&redis.url(), &["o"]).await;
        put(&ctx.broker, "o", 2).await;
        let lease = Duration::from_secs(60);
        // One fetch whose reply "was lost" (nobody tracks it), one that is tracked.
        let lost = ctx
            .broker
            .fetch("o", &ctx.server_id, 1, lease)
            .await
            .unwrap()
            .unwrap();
        let kept = ctx
            .broker
            .fetch("o", &ctx.server_id, 1, lease)
            .await
            .unwrap()
            .unwrap();
        ctx.inflight
            .insert(0, record::raw_id(&kept.records[0]).to_vec(), kept.token);
        let seen = Mutex::new(Seen::new());

        sweep_orphans(&ctx, &ctx.broker, &seen).await.unwrap();
        let st = ctx.broker.stats("o").await.unwrap();
        assert_eq!(
            (st.pending, st.active),
            (0, 2),
            "one sighting is not enough"
        );
        sweep_orphans(&ctx, &ctx.broker, &seen).await.unwrap();
        let st = ctx.broker.stats("o").await.unwrap();
        assert_eq!((st.pending, st.active), (1, 1), "the orphan went back");
        let back = ctx
            .broker
            .fetch("o", &ctx.server_id, 1, lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.records, lost.records, "unchanged, at its old place");
    }

    /// An acknowledgement landing between the heartbeat's snapshot of its in-flight tasks and
    /// the extension used to be reported as "lease lost: the task was taken over" (17 times in
    /// 25 s of a fault-free run). Only a lapsed lease or another token means a takeover.
    #[tokio::test]
    async fn a_task_settled_while_the_lease_held_is_not_reported_as_lost() {
        let redis = RedisServer::start();
        let broker = crate::broker::Broker::connect(&redis.url()).await.unwrap();
        let mut held = Vec::new();
        put(&broker, "x", 3).await;
        let lease = Duration::from_millis(300);
        let batch = broker.fetch("x", "s1", 3, lease).await.unwrap().unwrap();
        for r in &batch.records {
            held.push((record::raw_id(r).to_vec(), batch.token));
        }
        // The first one is acknowledged after the snapshot `held` was taken.
        let ack = crate::broker::Ack {
            id: held[0].0.clone(),
            token: batch.token,
            unique_key: None,
        };
        assert!(broker
            .complete("x", "s1", &[ack], None, rand::random())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            broker.extend("x", "s1", &held, lease).await.unwrap(),
            Vec::<usize>::new()
        );
        // Now the lease lapses and the recoverer's script takes the second one back.
        tokio::time::sleep(lease + Duration::from_millis(100)).await;
        let moved = broker
            .requeue("x", "s1", &[(held[1].0.clone(), batch.token, None)], true)
            .await
            .unwrap();
        assert_eq!(moved, 1);
        assert_eq!(
            broker.extend("x", "s1", &held, lease).await.unwrap(),
            vec![0, 1]
        );
    }

    /// Found in review: with the heartbeat on its own thread, a fetch whose script had run but
    /// whose reply the fetcher had not handled yet (its runtime blocked by a handler) looked
    /// like an orphan on two beats and was put back while this server was about to run it:
    /// the task ran twice. The sweep now waits until every fetch started before the first
    /// sighting was handled.
    #[tokio::test]
    async fn a_fetch_still_on_its_way_is_no_orphan() {
        let redis = RedisServer::start();
        let ctx = Ctx::for_test(&redis.url(), &["o"]).await;
        put(&ctx.broker, "o", 1).await;
        let ticket = ctx.inflight.begin_fetch();
        let got = ctx
            .broker
            .fetch("o", &ctx.server_id, 1, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let seen = Mutex::new(Seen::new());
        for _ in 0..3 {
            sweep_orphans(&ctx, &ctx.broker, &seen).await.unwrap();
        }
        assert_eq!(
            ctx.broker.stats("o").await.unwrap().active,
            1,
            "taken while on its way"
        );
        // The fetcher handles the reply: the task is tracked, and stays.
        ctx.inflight
            .insert(0, record::raw_id(&got.records[0]).to_vec(), got.token);
        drop(ticket);
        for _ in 0..3 {
            sweep_orphans(&ctx, &ctx.broker, &seen).await.unwrap();
        }
        assert_eq!(ctx.broker.stats("o").await.unwrap().active, 1);
        // Had the reply been lost instead, the task goes back once no fetch is on its way.
        ctx.inflight
            .remove(0, record::raw_id(&got.records[0]), got.token);
        sweep_orphans(&ctx, &ctx.broker, &seen).await.unwrap();
        sweep_orphans(&ctx, &ctx.broker, &seen).await.unwrap();
        let st = ctx.broker.stats("o").await.unwrap();
        assert_eq!((st.pending, st.active), (1, 0), "a real orphan stays");
    }

    /// Seen in the fault suite (`handlers`, a full run): the fetch script leased a task, but
    /// the fetcher, a task on the shared runtime whose threads were all held by blocking
    /// handlers, handled the reply only 2.5 s later. Meanwhile the heartbeat extended the
    /// leases of tracked tasks only, so the queue's lease lapsed, another server took the task
    /// back and ran it, and the first run's acknowledgement was refused: it ran twice with no
    /// fault. The heartbeat now keeps the server's lease alive on every queue it serves.
    #[tokio::test]
    async fn a_lease_of_a_fetch_not_yet_tracked_stays_alive() {
        let redis = RedisServer::start();
        let ctx = Ctx::for_test(&redis.url(), &["o"]).await;
        put(&ctx.broker, "o", 1).await;
        let lease = Duration::from_millis(600);
        // Leased in Redis, not yet tracked: the fetcher has not handled the reply.
        ctx.broker
            .fetch("o", &ctx.server_id, 1, lease)
            .await
            .unwrap()
            .unwrap();
        for _ in 0..6 {
            tokio::time::sleep(lease / 3).await;
            extend_leases(&ctx, &ctx.broker).await;
        }
        // Twice the lease has passed: without the heartbeat the recoverer would take it now.
        let expired = ctx.broker.expired_servers("o", 10).await.unwrap();
        assert!(expired.is_empty(), "the lease lapsed: {expired:?}");
        // An idle queue gets no lease from the heartbeat (nothing for the recoverer to do).
        let ctx2 = Ctx::for_test(&redis.url(), &["idle"]).await;
        extend_leases(&ctx2, &ctx2.broker).await;
        assert!(ctx2
            .broker
            .expired_servers("idle", 10)
            .await
            .unwrap()
            .is_empty());
        let mut c = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let leases: u64 = redis::cmd("ZCARD")
            .arg("rediq:{idle}:leases")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(leases, 0);
    }
}

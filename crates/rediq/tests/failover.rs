//! Failover while tasks flow: a producer keeps enqueueing and a server keeps processing while
//! the masters change under them, and afterwards every enqueue that returned `Ok` (before,
//! during or after the switch) has been processed, without restarting anything.
//! - Sentinel: `SENTINEL FAILOVER mymaster`; client and server follow the new master within
//!   15 s. The client waits for one replica (`wait_for_replicas`): Sentinel's failover is not
//!   coordinated with the old master, which takes writes until it is demoted, and those are
//!   lost by Redis itself; `Ok` with the setting means a replica held the task.
//! - Cluster: `CLUSTER FAILOVER` on each master's replica in turn (coordinated: the master
//!   pauses its clients until its replica caught up), queues on every shard; every `Ok`
//!   enqueue completes within 60 s of the switch.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rediq::server::ServerBuilder;
use rediq::testing::{RedisCluster, RedisSentinel};
use rediq::{Client, Task};
use support::{mux_with, start, wait_for};

/// Everything a run recorded.
#[derive(Default)]
struct Ledger {
    acked: Mutex<Vec<(String, Instant)>>,
    acked_after_switch: Mutex<u64>,
    refused: Mutex<u64>,
    last_refusal: Mutex<String>,
    processed: Mutex<HashMap<String, Instant>>,
    switched: AtomicBool,
    /// When the switch ended, and the first acknowledged enqueue after it.
    switched_at: Mutex<Option<Instant>>,
    first_ok_after: Mutex<Option<Duration>>,
}

/// Runs a producer over `queues` and a server on them, calls `switch` after a second of flow,
/// goes on producing for `after` more, then waits up to `within` (from the end of the switch)
/// until every acknowledged enqueue was processed, and checks that none waited longer than
/// `slowest_allowed` between its acknowledgement and its processing.
async fn flow_through_failover(
    client: Client,
    server: ServerBuilder,
    queues: &[&str],
    (after, within, slowest_allowed): (Duration, Duration, Duration),
    switch: impl FnOnce() + Send + 'static,
) {
    let ledger = Arc::new(Ledger::default());
    let l = ledger.clone();
    let mux = mux_with("job", move |t: Task| {
        let l = l.clone();
        async move {
            l.processed
                .lock()
                .unwrap()
                .entry(t.id.clone())
                .or_insert_with(Instant::now);
            Ok(())
        }
    });
    let srv = start(
        server
            .queues(queues)
            .concurrency(8)
            .lease_duration(Duration::from_secs(3)),
        mux,
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (ledger, stop, client) = (ledger.clone(), stop.clone(), client.clone());
        let queues: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let q = &queues[i % queues.len()];
                i += 1;
                let t = Task::builder("job").queue(q).build().unwrap();
                match client.enqueue(t).await {
                    Ok(id) => {
                        ledger.acked.lock().unwrap().push((id, Instant::now()));
                        if ledger.switched.load(Ordering::SeqCst) {
                            *ledger.acked_after_switch.lock().unwrap() += 1;
                            let at = *ledger.switched_at.lock().unwrap();
                            let mut first = ledger.first_ok_after.lock().unwrap();
                            if first.is_none() {
                                *first = at.map(|t| t.elapsed());
                            }
                        }
                    }
                    Err(e) => {
                        *ledger.refused.lock().unwrap() += 1;
                        *ledger.last_refusal.lock().unwrap() = e.to_string();
                    }
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    tokio::task::spawn_blocking(switch).await.unwrap();
    let switched_at = Instant::now();
    *ledger.switched_at.lock().unwrap() = Some(switched_at);
    ledger.switched.store(true, Ordering::SeqCst);
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::SeqCst);
    producer.await.unwrap();

    let all_done = wait_for(within.saturating_sub(switched_at.elapsed()), || async {
        let acked = ledger.acked.lock().unwrap().clone();
        let processed = ledger.processed.lock().unwrap();
        acked.iter().all(|(id, _)| processed.contains_key(id))
    })
    .await;
    let drained = switched_at.elapsed();
    let acked = ledger.acked.lock().unwrap().clone();
    let processed = ledger.processed.lock().unwrap().clone();
    let missing: Vec<&String> = acked
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !processed.contains_key(*id))
        .collect();
    // The longest an acknowledged task waited to be processed: a server still waiting on a
    // replaced master would leave the new master's tasks alone until that connection broke.
    let (slowest, slowest_at) = acked
        .iter()
        .filter_map(|(id, at)| {
            processed
                .get(id)
                .map(|p| (p.saturating_duration_since(*at), *at))
        })
        .max()
        .unwrap_or((Duration::ZERO, switched_at));
    let slowest_at = slowest_at.saturating_duration_since(started);
    let after = *ledger.acked_after_switch.lock().unwrap();
    let refused = *ledger.refused.lock().unwrap();
    srv.shutdown().await;
    // The figures docs/deployment.md quotes.
    eprintln!(
        "failover: {} enqueues acknowledged ({after} after the switch, the first {:?} after it), {refused} refused; all processed {drained:?} after the switch: {all_done}; the slowest waited {slowest:?} (acknowledged {slowest_at:?} after the switch began, which took {:?})",
        acked.len(),
        ledger.first_ok_after.lock().unwrap(),
        switched_at - started,
    );
    assert!(
        all_done,
        "{} of {} acknowledged enqueues not processed within {within:?} of the switch ({refused} refused): {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let last = ledger.last_refusal.lock().unwrap().clone();
    assert!(
        slowest < slowest_allowed,
        "an acknowledged task waited {slowest:?} to be processed: the server did not follow"
    );
    assert!(
        after > 50,
        "only {after} enqueues succeeded after the switch ({refused} refused, the last with: {last}): the client did not follow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_followed_and_every_acknowledged_enqueue_is_processed() {
    let ha = Arc::new(RedisSentinel::start());
    let client = Client::builder()
        .redis_url(ha.url())
        .sentinel_mode()
        .wait_for_replicas(1, Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let server = ServerBuilder::new().redis_url(ha.url()).sentinel_mode();
    let old = ha.current_master_port().unwrap();
    let h = ha.clone();
    // The demoted master resynchronises after the new master's diskless-sync delay (5 s by
    // default): until then no replica confirms, and the client says so rather than `Ok`.
    let times = (
        Duration::from_secs(8),
        Duration::from_secs(15),
        Duration::from_secs(3),
    );
    flow_through_failover(client, server, &["fo"], times, move || {
        let new = h.fail_over().expect("the failover completes");
        assert_ne!(new, old);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failovers_of_every_shard_lose_no_acknowledged_enqueue() {
    if std::env::var("REDIQ_TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("rediq=debug")
            .with_ansi(false)
            .try_init();
    }
    let cluster = Arc::new(RedisCluster::start());
    let client = Client::builder()
        .redis_url(cluster.seed_list_url())
        .cluster_mode()
        .build()
        .await
        .unwrap();
    let server = ServerBuilder::new()
        .redis_url(cluster.seed_list_url())
        .cluster_mode();
    // Six queues: with three shards of a third of the slots each, they fall on more than one.
    let queues = ["fa", "fb", "fc", "fd", "fe", "ff"];
    let c = cluster.clone();
    // A shard's master pauses its clients during its failover, and the server's wait on that
    // shard reconnects to the new master: seconds, not the 60 s allowed.
    let times = (
        Duration::from_secs(2),
        Duration::from_secs(60),
        Duration::from_secs(15),
    );
    flow_through_failover(client, server, &queues, times, move || {
        for replica in c.replicas().expect("the cluster answers") {
            c.fail_over(replica).expect("the failover completes");
        }
    })
    .await;
}

//! Fault injection: for each scenario, the loop that breaks workers or Redis while the
//! workload runs, and the record of each fault (what, whom, from when to when) that the
//! accounting uses to find the tasks in flight and the time to recover.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use crate::execlog::now_ms;
use crate::pool::Pool;
use crate::redis_proc::Deployment;
use crate::scenario::Scenario;

/// Who a fault hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One worker process, by name.
    Worker(String),
    /// Every worker (a Redis fault, garbage in a queue).
    All,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub what: String,
    pub scope: Scope,
    pub start_ms: u64,
    pub end_ms: u64,
    /// A failover: the master of some queues changed between `start_ms` and `end_ms`.
    pub switch: Option<Switch>,
}

/// What a failover switched.
#[derive(Debug, Clone)]
pub struct Switch {
    /// The queues whose master changed (all of them under Sentinel; the shard's on a cluster).
    pub queues: Vec<String>,
    /// Port of the master before and after.
    pub from: u16,
    pub to: u16,
}

/// What the injection loop touches.
pub struct Target<'a> {
    pub redis: &'a mut Deployment,
    pub pool: &'a mut Pool,
    pub workers: usize,
    pub lease: Duration,
    pub shutdown_timeout: Duration,
    pub rng: StdRng,
    /// Facts worth reporting (e.g. how long a shutdown took during an outage).
    pub notes: Vec<String>,
    /// On a cluster: the slot of each queue's keys (its hash tag `{queue}`).
    pub queue_slots: Vec<(String, u16)>,
}

/// How long a graceful shutdown may take beyond its `shutdown_timeout` before the suite calls
/// it a hang.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);
/// How long Redis stays unreachable in `redis-down`.
pub const OUTAGE: Duration = Duration::from_secs(10);
/// From one cluster failover's start to the next's (each shard in turn).
pub const CLUSTER_SWITCH_EVERY: Duration = Duration::from_secs(10);
/// From one sentinel failover's start to the next's. A switch leaves the new master without a
/// replica for about 15 s: the promotion (~1 s), the sentinels' wait before they turn the old
/// master, which still says it is one, into a replica (8 s), and its full resynchronisation
/// after the new master's `repl-diskless-sync-delay` (5 s). No enqueue is confirmed meanwhile,
/// nor can the next failover start (NOGOODSLAVE): 25 s leave ~10 s of confirmed flow.
pub const SENTINEL_SWITCH_EVERY: Duration = Duration::from_secs(25);
/// Workload time left, at least, for a switch to start: the switch itself, and then the
/// producer and the workers must be seen following the new master (under Sentinel after the
/// old master resynchronised).
const CLUSTER_FLOW_AFTER: Duration = Duration::from_secs(5);
const SENTINEL_FLOW_AFTER: Duration = Duration::from_secs(20);

/// Runs the faults of `scenario` until `until`.
pub async fn inject(
    scenario: Scenario,
    t: &mut Target<'_>,
    until: Instant,
) -> Result<Vec<Fault>, String> {
    // Let the workers get going first, so every fault meets tasks in flight.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut faults = Vec::new();
    match scenario {
        Scenario::Kill => {
            while Instant::now() + Duration::from_secs(1) < until {
                let i = t.rng.random_range(0..t.pool.live.len());
                let start_ms = now_ms();
                let name = t.pool.kill(i);
                t.pool.top_up(t.workers)?;
                faults.push(Fault {
                    what: format!("SIGKILL {name}, start a new worker"),
                    scope: Scope::Worker(name),
                    start_ms,
                    end_ms: now_ms(),
                    switch: None,
                });
                let gap = t.rng.random_range(2000..4000);
                tokio::time::sleep(Duration::from_millis(gap)).await;
            }
        }
        Scenario::Stop => {
            let hold = t.lease * 3 / 2 + Duration::from_millis(500);
            while Instant::now() + hold < until {
                let i = t.rng.random_range(0..t.pool.live.len());
                let name = t.pool.live[i].name.clone();
                let start_ms = now_ms();
                t.pool.freeze(i);
                tokio::time::sleep(hold).await;
                t.pool.thaw(i);
                faults.push(Fault {
                    what: format!("SIGSTOP {name} for {hold:?} (lease {:?}), SIGCONT", t.lease),
                    scope: Scope::Worker(name),
                    start_ms,
                    end_ms: now_ms(),
                    switch: None,
                });
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Scenario::RedisRestartAlways | Scenario::RedisRestartEverysec => {
            while Instant::now() + Duration::from_secs(1) < until {
                let start_ms = now_ms();
                t.redis.kill_primary()?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                t.redis.restart_primary().await?;
                faults.push(Fault {
                    what: "SIGKILL redis-server, restart it on its AOF".into(),
                    scope: Scope::All,
                    start_ms,
                    end_ms: now_ms(),
                    switch: None,
                });
                let gap = t.rng.random_range(3000..5000);
                tokio::time::sleep(Duration::from_millis(gap)).await;
            }
        }
        Scenario::RedisDown => {
            faults.push(outage(t).await?);
        }
        Scenario::Garbage => {
            faults = crate::garbage::inject(&t.redis.url(), until, &mut t.notes).await?;
        }
        Scenario::Handlers => {} // the handlers are the fault
        Scenario::ClusterFailover => {
            let mut k = 0;
            while Instant::now() + CLUSTER_FLOW_AFTER < until {
                let began = Instant::now();
                // Shards in slot order, one after the other; the view is read again each time,
                // since the last round swapped each shard's master and replica.
                let shards = t.redis.shards()?;
                let shard = &shards[k % shards.len()];
                k += 1;
                let Some(&replica) = shard.replicas.first() else {
                    return Err(format!(
                        "slots {}-{} have no replica to promote",
                        shard.slots.0, shard.slots.1
                    ));
                };
                let queues: Vec<String> = t
                    .queue_slots
                    .iter()
                    .filter(|(_, slot)| shard.holds(*slot))
                    .map(|(q, _)| q.clone())
                    .collect();
                let start_ms = now_ms();
                t.redis.cluster_fail_over(replica).await?;
                faults.push(Fault {
                    what: format!(
                        "CLUSTER FAILOVER on replica {replica} of master {} (slots {}-{}, queues {})",
                        shard.master,
                        shard.slots.0,
                        shard.slots.1,
                        if queues.is_empty() {
                            "none".to_string()
                        } else {
                            queues.join(", ")
                        }
                    ),
                    scope: Scope::All,
                    start_ms,
                    end_ms: now_ms(),
                    switch: Some(Switch {
                        queues,
                        from: shard.master,
                        to: replica,
                    }),
                });
                tokio::time::sleep_until((began + CLUSTER_SWITCH_EVERY).into()).await;
            }
        }
        Scenario::SentinelFailover => {
            while Instant::now() + SENTINEL_FLOW_AFTER < until {
                let began = Instant::now();
                let from = t.redis.sentinel_master_port()?;
                let start_ms = now_ms();
                let to = t.redis.sentinel_fail_over().await?;
                faults.push(Fault {
                    what: format!("SENTINEL FAILOVER mymaster: master {from} -> {to}"),
                    scope: Scope::All,
                    start_ms,
                    end_ms: now_ms(),
                    switch: Some(Switch {
                        queues: crate::workload::QUEUES.map(String::from).to_vec(),
                        from,
                        to,
                    }),
                });
                tokio::time::sleep_until((began + SENTINEL_SWITCH_EVERY).into()).await;
            }
        }
    }
    Ok(faults)
}

/// Redis frozen for [`OUTAGE`]; one second in, a worker is asked to shut down, and the time
/// it takes is measured against its shutdown timeout.
async fn outage(t: &mut Target<'_>) -> Result<Fault, String> {
    let start_ms = now_ms();
    t.redis.freeze()?;
    let redis = &*t.redis;
    let pool = &mut *t.pool;
    let patience = OUTAGE + Duration::from_secs(60);
    let ((), (name, took, exited)) = tokio::join!(
        async {
            tokio::time::sleep(OUTAGE).await;
            redis.thaw();
        },
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            pool.terminate(0, patience).await
        }
    );
    let end_ms = start_ms + OUTAGE.as_millis() as u64;
    t.notes.push(format!(
        "SIGTERM to {name} 1 s into the outage: {} after {:.1} s (shutdown_timeout {:?}, allowed {:?})",
        if exited { "exited" } else { "still running, SIGKILLed" },
        took.as_secs_f64(),
        t.shutdown_timeout,
        t.shutdown_timeout + SHUTDOWN_MARGIN,
    ));
    t.pool.top_up(t.workers)?;
    Ok(Fault {
        what: format!("redis-server SIGSTOPped for {OUTAGE:?}"),
        scope: Scope::All,
        start_ms,
        end_ms,
        switch: None,
    })
}

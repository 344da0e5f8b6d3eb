//! Rediq on a Redis Cluster: queues spread over the shards, one client and one server for all.
//!
//! ```text
//! cargo run --example cluster_example
//! ```
//!
//! Redis: `$REDIS_CLUSTER_URL` if set (one seed node, `redis://node:6379`, or a list,
//! `redis://n1:6379,n2:6379`); else a private cluster of three masters and three replicas,
//! started for this run and stopped when it ends. Logs: `RUST_LOG` (default `info,redis=error`).
//!
//! It enqueues tasks into six queues, shows which master holds each queue (each queue lives on
//! one slot through its hash tag `{queue}`), processes them all with one server, then sends a
//! burst into one queue declared with three partitions and shows that every master served a
//! third of its work, and then fails one shard over (`CLUSTER FAILOVER`, private cluster only)
//! while more tasks flow: they are processed too. The queues are named `cluster-example-*` and
//! flushed at start and at exit.

mod common;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::RedisCluster;
use rediq::{Client, Inspector, Task};

const QUEUES: [&str; 6] = [
    "cluster-example-a",
    "cluster-example-b",
    "cluster-example-c",
    "cluster-example-d",
    "cluster-example-e",
    "cluster-example-f",
];
const PER_QUEUE: u64 = 50;
/// One hot queue, spread over three partitions (one per master of a 3-master cluster).
const HOT: &str = "cluster-example-hot";
const HOT_TASKS: u64 = 3000;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs to stderr, filtered by RUST_LOG (default: info,redis=error).
    common::init_logging("info,redis=error");
    let (url, private) = match std::env::var("REDIS_CLUSTER_URL") {
        Ok(url) if !url.trim().is_empty() => (url, None),
        _ => match RedisCluster::try_start() {
            Ok(c) => {
                println!(
                    "Started a private Redis Cluster (3 masters, 3 replicas) on ports {:?}.",
                    c.ports()
                );
                (c.seed_url(), Some(c))
            }
            Err(e) => {
                eprintln!("cannot start a private Redis Cluster: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let result = demo(&url, private.as_ref()).await;
    drop(private);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn demo(url: &str, private: Option<&RedisCluster>) -> Result<(), Box<dyn std::error::Error>> {
    // One seed node is enough: the client discovers the others.
    let client = Client::builder()
        .redis_url(url)
        .cluster_mode()
        .build()
        .await?;
    let inspector = Inspector::from_client(&client);
    for q in QUEUES.iter().chain([&HOT]) {
        client.flush_queue(q).await?;
    }
    // Before the server starts: a server reads its queues' partitions when it is built.
    client.partition_queue(HOT, 3).await?;

    // Which master serves which queue: the slot of the queue's hash tag.
    let shards = shard_of_queues(url).await?;
    println!("Queues and the master that holds each:");
    for (q, node) in &shards {
        println!("  {q:<20} -> {node}");
    }
    let distinct: std::collections::BTreeSet<&str> = shards
        .values()
        .filter_map(|owner| owner.split(' ').next())
        .collect();
    println!("{} queues on {} shards.", QUEUES.len(), distinct.len());

    let done = Arc::new(AtomicU64::new(0));
    let mut mux = Mux::new();
    mux.handle("work", Count(done.clone()));
    let state = ServerBuilder::new()
        .redis_url(url)
        .cluster_mode()
        .queues(&[&QUEUES[..], &[HOT]].concat())
        .concurrency(20)
        .build()
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::from(state).run_until(mux, async {
        let _ = stop_rx.await;
    }));

    let start = Instant::now();
    let mut tasks = Vec::new();
    for q in QUEUES {
        for _ in 0..PER_QUEUE {
            tasks.push(Task::builder("work").queue(q).build()?);
        }
    }
    client.enqueue_batch(tasks).await?;
    let mut expected = PER_QUEUE * QUEUES.len() as u64;
    wait_until(&done, expected, Duration::from_secs(30)).await?;
    println!(
        "Processed {expected} tasks over {} shards in {:?}.",
        distinct.len(),
        start.elapsed()
    );

    // One hot queue over three partitions: every master serves a share of it.
    let before = master_calls(url).await?;
    let burst: Vec<Task> = (0..HOT_TASKS)
        .map(|_| Task::builder("work").queue(HOT).build())
        .collect::<rediq::Result<_>>()?;
    client.enqueue_batch(burst).await?;
    expected += HOT_TASKS;
    wait_until(&done, expected, Duration::from_secs(30)).await?;
    let after = master_calls(url).await?;
    let total: u64 = after
        .iter()
        .map(|(m, n)| n.saturating_sub(before.get(m).copied().unwrap_or(0)))
        .sum();
    println!(
        "Queue {HOT} ({} partitions): {HOT_TASKS} tasks processed; share of the commands each master served meanwhile:",
        inspector.queue_stats(HOT).await?.partitions
    );
    for (m, n) in &after {
        let share =
            n.saturating_sub(before.get(m).copied().unwrap_or(0)) as f64 / total.max(1) as f64;
        println!("  {m:<20} {:>5.1}%", share * 100.0);
    }

    if let Some(cluster) = private {
        let replica = cluster.replicas()?.first().copied().ok_or("no replica")?;
        println!("Failing over the shard of replica port {replica} (CLUSTER FAILOVER) while tasks flow...");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let q = QUEUES[(n % QUEUES.len() as u64) as usize];
                    if client
                        .enqueue(Task::builder("work").queue(q).build()?)
                        .await
                        .is_ok()
                    {
                        n += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok::<u64, rediq::Error>(n)
            })
        };
        let switch = Instant::now();
        let r = tokio::task::block_in_place(|| cluster.fail_over(replica));
        r?;
        println!("  the replica is master now ({:?}).", switch.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
        let acknowledged = producer.await??;
        expected += acknowledged;
        wait_until(&done, expected, Duration::from_secs(30)).await?;
        println!("  all {acknowledged} tasks enqueued around the failover were processed.");
    }

    for q in QUEUES {
        let s = inspector.queue_stats(q).await?;
        println!("  {q:<20} processed {:>4}", s.processed_total);
    }
    let _ = stop_tx.send(());
    server.await??;
    for q in QUEUES.iter().chain([&HOT]) {
        client.flush_queue(q).await?;
    }
    Ok(())
}

/// Commands served so far by each master (`INFO commandstats`, summed), by address.
async fn master_calls(url: &str) -> Result<BTreeMap<String, u64>, Box<dyn std::error::Error>> {
    // The seed URL's credentials (if any) are every node's.
    let rest = url.trim_start_matches("redis://");
    let auth = rest.rfind('@').map_or("", |at| &rest[..=at]);
    let mut out = BTreeMap::new();
    for (_, _, master) in slot_table(url).await? {
        if out.contains_key(&master) {
            continue;
        }
        let mut c = redis::Client::open(format!("redis://{auth}{master}"))?
            .get_multiplexed_async_connection()
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await?;
        let calls = info
            .lines()
            .filter_map(|l| {
                l.split_once("calls=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        out.insert(master, calls);
    }
    Ok(out)
}

/// Counts the tasks it runs.
struct Count(Arc<AtomicU64>);

#[async_trait]
impl Handler for Count {
    async fn handle(&self, _task: &Task) -> rediq::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn wait_until(done: &AtomicU64, n: u64, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while done.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {n} tasks processed within {within:?}",
                done.load(Ordering::SeqCst)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A cluster connection from the seed URL (one node or a comma-separated list).
async fn cluster_conn(
    url: &str,
) -> Result<redis::cluster_async::ClusterConnection, Box<dyn std::error::Error>> {
    let seeds: Vec<String> = url
        .trim_start_matches("redis://")
        .split(',')
        .map(|h| format!("redis://{h}"))
        .collect();
    Ok(redis::cluster::ClusterClient::new(seeds)?
        .get_async_connection()
        .await?)
}

/// `CLUSTER SLOTS`: each slot range with its master's address.
async fn slot_table(url: &str) -> Result<Vec<(i64, i64, String)>, Box<dyn std::error::Error>> {
    let mut c = cluster_conn(url).await?;
    // Each row: first slot, last slot, [master host, port, id], then the replicas.
    let rows: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut c)
        .await?;
    let slots: Vec<(i64, i64, String)> = rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [redis::Value::Int(lo), redis::Value::Int(hi), redis::Value::Array(m), ..] => {
                match m.as_slice() {
                    [redis::Value::BulkString(h), redis::Value::Int(p), ..] => {
                        Some((*lo, *hi, format!("{}:{p}", String::from_utf8_lossy(h))))
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    Ok(slots)
}

/// The master address serving each queue, from `CLUSTER KEYSLOT` and `CLUSTER SLOTS`.
async fn shard_of_queues(
    url: &str,
) -> Result<BTreeMap<String, String>, Box<dyn std::error::Error>> {
    let slots = slot_table(url).await?;
    let mut c = cluster_conn(url).await?;
    let mut out = BTreeMap::new();
    for q in QUEUES {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{{{q}}}"))
            .query_async(&mut c)
            .await?;
        let owner = slots
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
            .map(|(_, _, master)| format!("{master} (slot {slot})"))
            .unwrap_or_else(|| format!("? (slot {slot})"));
        out.insert(q.to_string(), owner);
    }
    Ok(out)
}

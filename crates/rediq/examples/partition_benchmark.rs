//! One hot queue on a Redis Cluster, unpartitioned and partitioned: aggregate throughput and
//! each master's share of the work.
//!
//! ```text
//! cargo run --release --example partition_benchmark -- --tasks 100000 --partitions 3
//! ```
//!
//! Without `--cluster-url` it starts a private 3-master, 3-replica cluster on free ports (never
//! 6379) and stops it at the end; with `--cluster-url` it uses that cluster and writes queues
//! named `pbench_*` only (it does not flush anything).
//!
//! For each layout (`--partitions 1`, i.e. the plain queue, then `--partitions N`), in
//! `--rounds` interleaved rounds on fresh queue names:
//!
//! 1. **enqueue**: `--producers` tokio tasks share one `Client` and enqueue `--tasks` tasks with
//!    `Client::enqueue` (group-committed per partition), timed from the first call to the last
//!    reply.
//! 2. **process**: a server with `--concurrency` slots serves the queue (all its partitions)
//!    with a handler that only counts; timed from its start to the last handler's return.
//!
//! Around each round it reads, on every master, `INFO commandstats` (calls of every command)
//! and `INFO cpu` (`used_cpu_sys + used_cpu_user`) after `CONFIG RESETSTAT`, and prints each
//! master's share of the commands and of the Redis CPU: an even split over M masters is 1/M
//! each. It also prints the CPU per task (enqueue plus processing) of the masters together and
//! of the benchmark process (producers and server). Medians of the rounds are printed at the
//! end.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::RedisCluster;
use rediq::{async_trait, Client, Task};

#[derive(Parser, Debug)]
#[command(about = "Throughput and per-shard split of one queue, unpartitioned and partitioned")]
struct Args {
    /// Print the commands per task of each round (summed over the masters).
    #[arg(long)]
    commands: bool,
    /// Tasks per phase.
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
    /// Partitions of the partitioned layout.
    #[arg(long, default_value_t = 3)]
    partitions: u16,
    /// Concurrent producers in the enqueue phase.
    #[arg(long, default_value_t = 100)]
    producers: u64,
    /// Handler slots of the server.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Rounds per layout, interleaved (medians are printed).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// A cluster to use instead of a private one (any node; the rest are discovered).
    #[arg(long)]
    cluster_url: Option<String>,
}

struct Count(Arc<AtomicU64>);

#[async_trait]
impl Handler for Count {
    async fn handle(&self, _task: &Task) -> rediq::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One master's counters: command calls and CPU seconds.
#[derive(Debug, Clone, Default)]
struct NodeStats {
    calls: u64,
    /// Calls per command.
    by_command: std::collections::BTreeMap<String, u64>,
    cpu: f64,
}

struct Round {
    enqueue_per_s: f64,
    process_per_s: f64,
    /// Per master: share of commands and of CPU, during both phases.
    shares: Vec<(String, f64, f64)>,
    /// Redis CPU (all masters) and this process's CPU per task (its enqueue and its
    /// processing together), in µs.
    redis_us: f64,
    bench_us: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("partition_benchmark: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let private = match &args.cluster_url {
        Some(_) => None,
        None => Some(RedisCluster::try_start()?),
    };
    let url = match (&args.cluster_url, &private) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => c.seed_url(),
        (None, None) => unreachable!("a private cluster is started when no URL is given"),
    };
    let masters = master_urls(&url).await?;
    println!(
        "rediq partition benchmark: {} tasks, {} producers, concurrency {}, {} masters, build {}",
        args.tasks,
        args.producers,
        args.concurrency,
        masters.len(),
        if cfg!(debug_assertions) {
            "DEBUG (not representative)"
        } else {
            "release"
        }
    );
    let mut results: Vec<(u16, Vec<Round>)> = vec![(1, Vec::new()), (args.partitions, Vec::new())];
    for round in 0..args.rounds {
        for (parts, rounds) in results.iter_mut() {
            let queue = format!("pbench_{parts}_{round}_{}", std::process::id());
            let r = one_round(args, &url, &masters, &queue, *parts).await?;
            println!(
                "round {round} partitions {parts:>2}: enqueue {:>9.0}/s  process {:>9.0}/s  cpu per task (enqueue + process): redis masters {:.1} µs, benchmark {:.1} µs  shares (commands / cpu): {}",
                r.enqueue_per_s,
                r.process_per_s,
                r.redis_us,
                r.bench_us,
                r.shares
                    .iter()
                    .map(|(m, c, p)| format!("{m} {:.1}% / {:.1}%", c * 100.0, p * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            rounds.push(r);
        }
    }
    println!("\nmedians of {} rounds:", args.rounds);
    let even = 1.0 / masters.len() as f64;
    let mut base = None;
    for (parts, rounds) in &results {
        let e = median(rounds.iter().map(|r| r.enqueue_per_s).collect());
        let p = median(rounds.iter().map(|r| r.process_per_s).collect());
        let (e0, p0) = *base.get_or_insert((e, p));
        // The largest deviation of any master's share from an even split, relative to it.
        let dev = |pick: fn(&(String, f64, f64)) -> f64| {
            median(
                rounds
                    .iter()
                    .map(|r| {
                        r.shares
                            .iter()
                            .map(|s| (pick(s) - even).abs() / even)
                            .fold(0.0, f64::max)
                    })
                    .collect(),
            )
        };
        println!(
            "partitions {parts:>2}: enqueue {e:>9.0}/s ({:.2}x)  process {p:>9.0}/s ({:.2}x)  cpu per task: redis {:.1} µs, benchmark {:.1} µs  largest deviation from an even split: commands {:.1}%, cpu {:.1}%",
            e / e0,
            p / p0,
            median(rounds.iter().map(|r| r.redis_us).collect()),
            median(rounds.iter().map(|r| r.bench_us).collect()),
            dev(|s| s.1) * 100.0,
            dev(|s| s.2) * 100.0
        );
    }
    drop(private);
    Ok(())
}

async fn one_round(
    args: &Args,
    url: &str,
    masters: &[String],
    queue: &str,
    partitions: u16,
) -> Result<Round, Box<dyn std::error::Error>> {
    let client = Client::builder()
        .redis_url(url)
        .cluster_mode()
        .build()
        .await?;
    if partitions > 1 {
        client.partition_queue(queue, partitions).await?;
    }
    let before = node_stats(masters, true).await?;
    let cpu_before = process_cpu();

    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut producers = tokio::task::JoinSet::<rediq::Result<()>>::new();
    for _ in 0..args.producers {
        let (client, next, queue, total) =
            (client.clone(), next.clone(), queue.to_string(), args.tasks);
        producers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Task::builder("bench").queue(&queue).build()?;
                client.enqueue(t).await?;
            }
            Ok(())
        });
    }
    while let Some(r) = producers.join_next().await {
        r??;
    }
    let enqueue_per_s = args.tasks as f64 / started.elapsed().as_secs_f64();

    let done = Arc::new(AtomicU64::new(0));
    let mut mux = Mux::new();
    mux.handle("bench", Count(done.clone()));
    let state = ServerBuilder::new()
        .redis_url(url)
        .cluster_mode()
        .queues(&[queue])
        .concurrency(args.concurrency)
        .build()
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let server = tokio::spawn(Server::from(state).run_until(mux, async {
        let _ = stop_rx.await;
    }));
    let mut last = (0, Instant::now());
    while done.load(Ordering::Relaxed) < args.tasks {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let n = done.load(Ordering::Relaxed);
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(15) {
            return Err(format!("stalled at {n} of {} tasks", args.tasks).into());
        }
    }
    let process_per_s = args.tasks as f64 / started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    server.await??;

    let bench_us = (process_cpu() - cpu_before) * 1e6 / args.tasks as f64;
    let after = node_stats(masters, false).await?;
    if args.commands {
        let mut all = std::collections::BTreeMap::<&str, u64>::new();
        for s in &after {
            for (c, n) in &s.by_command {
                *all.entry(c).or_default() += n;
            }
        }
        let per_task: Vec<String> = all
            .iter()
            .filter(|(_, n)| **n * 100 >= args.tasks)
            .map(|(c, n)| format!("{c} {:.3}", *n as f64 / args.tasks as f64))
            .collect();
        println!("  {queue}: commands per task: {}", per_task.join(", "));
    }
    let calls: u64 = after.iter().map(|s| s.calls).sum();
    let cpu: f64 = after.iter().zip(&before).map(|(a, b)| a.cpu - b.cpu).sum();
    let shares = masters
        .iter()
        .zip(after.iter().zip(&before))
        .map(|(m, (a, b))| {
            (
                m.trim_start_matches("redis://").to_string(),
                a.calls as f64 / calls.max(1) as f64,
                (a.cpu - b.cpu) / cpu.max(1e-9),
            )
        })
        .collect();
    Ok(Round {
        enqueue_per_s,
        process_per_s,
        shares,
        redis_us: cpu * 1e6 / args.tasks as f64,
        bench_us,
    })
}

/// The URLs of the cluster's masters (`CLUSTER SLOTS`, asked of the node given).
async fn master_urls(url: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let first = url.split(',').next().unwrap_or(url);
    let mut c = redis::Client::open(first)?
        .get_multiplexed_async_connection()
        .await?;
    let slots: Vec<(i64, i64, (String, i64))> = {
        let rows: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut c)
            .await?;
        rows.into_iter()
            .filter_map(|row| match row {
                redis::Value::Array(p) if p.len() >= 3 => {
                    let lo = redis::from_redis_value(p[0].clone()).ok()?;
                    let hi = redis::from_redis_value(p[1].clone()).ok()?;
                    let m: Vec<redis::Value> = redis::from_redis_value(p[2].clone()).ok()?;
                    let host: String = redis::from_redis_value(m.first()?.clone()).ok()?;
                    let port: i64 = redis::from_redis_value(m.get(1)?.clone()).ok()?;
                    Some((lo, hi, (host, port)))
                }
                _ => None,
            })
            .collect()
    };
    let mut out: Vec<String> = slots
        .into_iter()
        .map(|(_, _, (h, p))| format!("redis://{h}:{p}"))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Command calls and CPU seconds of each master; with `reset`, after `CONFIG RESETSTAT` (which
/// zeroes the command counts, not the CPU).
async fn node_stats(
    masters: &[String],
    reset: bool,
) -> Result<Vec<NodeStats>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for m in masters {
        let mut c = redis::Client::open(m.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        if reset {
            let _: () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut c)
                .await?;
        }
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .arg("cpu")
            .query_async(&mut c)
            .await?;
        let mut s = NodeStats::default();
        for line in info.lines() {
            if line.starts_with("cmdstat_") {
                // cmdstat_get:calls=12,usec=...; INFO itself is this benchmark's, not the queue's.
                if line.starts_with("cmdstat_info:") || line.starts_with("cmdstat_config") {
                    continue;
                }
                if let Some(n) = line
                    .split(':')
                    .nth(1)
                    .and_then(|v| v.split(',').next())
                    .and_then(|kv| kv.strip_prefix("calls="))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    s.calls += n;
                    let name = line.split(':').next().unwrap_or(line);
                    *s.by_command
                        .entry(name.trim_start_matches("cmdstat_").to_string())
                        .or_default() += n;
                }
            } else if let Some(v) = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))
            {
                s.cpu += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`, 10 ms ticks; 0
/// elsewhere).
fn process_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (in parentheses, may hold spaces); utime and stime are
    // the 12th and 13th of them.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

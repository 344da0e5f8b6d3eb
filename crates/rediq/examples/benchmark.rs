//! Throughput, latency and memory benchmark for Rediq.
//!
//! ```text
//! cargo run --release --example benchmark -- --tasks 50000 --concurrency 50
//! ```
//!
//! Without `--redis-url` the benchmark starts its own private `redis-server` on a free port
//! (never 6379) and stops it at the end; `--redis-server <path>` picks its binary (say, a Redis
//! 8.6 build, to measure beside chasquimq on the same server). With `--redis-url` it runs against that server and
//! **empties it with `FLUSHALL`** before every phase, so it refuses a server that already holds
//! keys unless `--allow-flush` is given. Every phase starts on an empty database with fresh
//! clients and servers. Every task has type `bench` and a JSON payload of about 30 bytes, such
//! as `{"n":12345,"s":"hello world"}`.
//!
//! The figures, in the order they are measured (`--only <phase>` runs one of them):
//!
//! 1. **memory**: Redis bytes per pending task. The benchmark reads `used_memory` from
//!    `INFO memory`, enqueues `--tasks` tasks into queue `bench_mem` with `enqueue_batch`, reads
//!    `used_memory` again and divides the growth by the number of tasks. This covers everything
//!    a waiting task costs in Redis: its record in its band's list, its entry in the id index
//!    and a share of the queue's fixed keys. The enqueue scripts are loaded before the first
//!    reading, so their cached bodies are not counted. A second line sums `MEMORY USAGE` over
//!    the queue's keys: Redis 8 built with jemalloc counts the Lua heap in `used_memory` too,
//!    and the garbage the scripts leave until Lua collects it is no task's memory.
//! 2. **single**: `Client::enqueue` throughput. `--producers` tokio tasks share one `Client`
//!    (clones of it) and enqueue `--tasks` tasks into queue `bench_single` between them, one call
//!    at a time each. The clock runs from the first call until the last one returns, and
//!    includes building each task (id, JSON payload). Concurrent single enqueues are
//!    group-committed by the client, so this shows how close they come to batch speed.
//! 3. **batch**: `Client::enqueue_batch` throughput into queue `bench_batch`, in chunks of
//!    `--batch-size` tasks: once from one caller sending the chunks one after another, once
//!    from four callers sharing the chunks.
//! 4. **process**: processing throughput. `--tasks` tasks are enqueued into queue `bench_proc`
//!    first (untimed). Then a server with `--concurrency` handler slots starts on that queue,
//!    with a handler that only counts. The clock runs from just before the server is spawned
//!    (the server is built, and connected, before) until the last handler returns, so it
//!    includes the server's start-up, every fetch and every acknowledgement the server sends
//!    while running. It prints the benchmark process's CPU per task (client and server side)
//!    and Redis's main-thread CPU per task (`INFO cpu`: fetch and acknowledgement). After a
//!    graceful shutdown the benchmark checks with `Inspector` that
//!    `processed_total` equals the task count and that nothing is left pending or active, and
//!    prints a WARNING line otherwise. `--metrics` sets what the server records: `off`
//!    (`ServerBuilder::metrics(false)`: nothing), `counters` (the default server: lifecycle
//!    counters and in-flight gauge, no middleware, no endpoint) or `full` (the default plus
//!    `MetricsMiddleware` timing every handler and the `/metrics` endpoint, scraped once a
//!    second during the run, as Prometheus would).
//! 5. **latency**: pickup latency under a steady load. A server with `--concurrency` slots
//!    serves queue `bench_lat`; 300 ms after it starts, `--latency-tasks` tasks are enqueued with
//!    `Client::enqueue` at `--rate` tasks per second, paced by a 1 ms tick. Each payload carries
//!    the wall-clock time (Unix nanoseconds) taken just before its enqueue call; the handler
//!    records how long ago that was. The latency therefore spans the enqueue round trip, the
//!    server noticing and leasing the task, and the dispatch to the handler. p50, p99 and max
//!    are printed in milliseconds.
//! 6. **deps** (only with `--only deps`): `--tasks` pending tasks, then 200 enqueues of a task
//!    depending on a random one of them; prints the wall time per dependent enqueue (p50, p99)
//!    and Redis's main-thread CPU per dependent enqueue, which must not grow with the backlog.
//!
//! Figures depend on the machine, the Redis version and what else runs; compare runs on the
//! same machine, and use a `--release` build (a debug build says so in its header).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rediq::middleware::{MetricsMiddleware, MiddlewareChain};
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::RedisServer;
use rediq::{async_trait, Client, Inspector, QueueStats, Task};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// `--prefetch`, when given, on a server builder.
trait PrefetchIf {
    fn prefetch_if(self, n: Option<usize>) -> Self;
}

impl PrefetchIf for ServerBuilder {
    fn prefetch_if(self, n: Option<usize>) -> Self {
        match n {
            Some(n) => self.prefetch(n),
            None => self,
        }
    }
}

/// Task type of every benchmark task.
const TASK_TYPE: &str = "bench";
/// Concurrent callers in the second batch measurement.
const BATCH_CALLERS: usize = 4;
/// How long the latency phase lets the server settle before the first enqueue.
const SERVER_WARMUP: Duration = Duration::from_millis(300);
/// How long acknowledgements may take to show in the queue stats after a shutdown.
const ACK_SETTLE: Duration = Duration::from_secs(5);
/// A phase that makes no progress for this long is aborted instead of hanging.
const STALL_LIMIT: Duration = Duration::from_secs(15);
/// Width of the label column of the report.
const LABEL_WIDTH: usize = 46;

#[derive(Parser, Debug)]
#[command(about = "Measures Rediq throughput, pickup latency and memory per task")]
struct Args {
    /// Tasks per throughput and memory phase.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    tasks: u64,
    /// Handler slots of the servers in the process and latency phases.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Concurrent tokio tasks calling `enqueue` in the single-enqueue phase.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    producers: u64,
    /// Tasks per `enqueue_batch` call.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Enqueue rate of the latency phase, in tasks per second.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Tasks enqueued in the latency phase.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    latency_tasks: u64,
    /// Redis to benchmark against (it is FLUSHALLed!). Default: a private redis-server.
    #[arg(long)]
    redis_url: Option<String>,
    /// The redis-server binary of the private server (default: `redis-server` on PATH), to
    /// measure on another Redis build, e.g. Redis 8.6 beside chasquimq.
    #[arg(long, conflicts_with = "redis_url")]
    redis_server: Option<std::path::PathBuf>,
    /// Let the benchmark FLUSHALL a `--redis-url` server that already holds keys.
    #[arg(long)]
    allow_flush: bool,
    /// Run only this phase.
    #[arg(long, value_enum)]
    only: Option<Phase>,
    /// What the processing server records.
    #[arg(long, value_enum, default_value_t = MetricsMode::Counters)]
    metrics: MetricsMode,
    /// Start this many private replicas of the private server and make every client wait for
    /// them on each enqueue (`ClientBuilder::wait_for_replicas`, 1 s timeout): the cost of
    /// the durability setting.
    #[arg(long, conflicts_with = "redis_url")]
    wait_replicas: Option<u32>,
    /// `ServerBuilder::prefetch` of the servers in the process and latency phases (default:
    /// the server's own default, 8 × the concurrency from 8 slots up, at most 500; 0 turns lease-ahead off).
    #[arg(long)]
    prefetch: Option<usize>,
    /// Process phase: give the queue this concurrency limit (`QueueLimits::concurrency`), to
    /// measure what the check costs (a limit above the server's concurrency never binds).
    #[arg(long)]
    limit_concurrency: Option<u32>,
    /// Process phase: give the queue a rate limit of this many starts per second.
    #[arg(long)]
    limit_rate: Option<u32>,
    /// Process and memory phases: spread the tasks over this many groups
    /// (`TaskBuilder::group`, task n in group `g<n mod N>`), to measure what groups cost.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    groups: Option<u64>,
    /// Process phase: give every group this concurrency limit (`Client::set_group_limits`).
    #[arg(long, requires = "groups")]
    group_concurrency: Option<u32>,
    /// Process phase: give every group a rate limit of this many starts per second.
    #[arg(long, requires = "groups")]
    group_rate: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MetricsMode {
    /// `ServerBuilder::metrics(false)`: nothing recorded.
    Off,
    /// The default server: lifecycle counters and the in-flight gauge.
    Counters,
    /// Counters plus MetricsMiddleware (duration histogram) and the endpoint, scraped every second.
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Memory,
    Single,
    Batch,
    Process,
    Latency,
    /// Dependent enqueues behind a backlog of `--tasks` pending tasks (not in the default run).
    Deps,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase::Memory,
        Phase::Single,
        Phase::Batch,
        Phase::Process,
        Phase::Latency,
    ];
}

/// The payload of the throughput and memory tasks: `{"n":12345,"s":"hello world"}`.
#[derive(Serialize)]
struct Payload {
    n: u64,
    s: &'static str,
}

/// The payload of the latency tasks: a sequence number and the enqueue time.
#[derive(Serialize, Deserialize)]
struct StampedPayload {
    n: u64,
    /// Wall-clock time just before the enqueue call, in Unix nanoseconds.
    t: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();

    // Keep the private server (and its replicas) alive until the end of main; they stop when
    // dropped.
    let mut _replicas = Vec::new();
    let (_private, url) = match &args.redis_url {
        Some(url) => (None, url.clone()),
        None => {
            let server = match &args.redis_server {
                Some(binary) => RedisServer::try_start_binary(binary),
                None => RedisServer::try_start(),
            }
            .map_err(|e| anyhow::anyhow!("cannot start a private redis-server: {e}"))?;
            for _ in 0..args.wait_replicas.unwrap_or(0) {
                _replicas.push(
                    server
                        .try_start_replica()
                        .map_err(|e| anyhow::anyhow!("cannot start a replica: {e}"))?,
                );
            }
            let url = server.url();
            (Some(server), url)
        }
    };
    WAIT_REPLICAS.store(
        args.wait_replicas.unwrap_or(0),
        std::sync::atomic::Ordering::SeqCst,
    );
    let mut admin = Admin::connect(&url).await?;

    print_header(&args, &url, &mut admin).await?;
    if args.redis_url.is_some() && !args.allow_flush && !admin.is_empty().await? {
        bail!(
            "{url} already holds keys and the benchmark FLUSHALLs it before every phase; \
             pass --allow-flush to proceed anyway, or omit --redis-url to use a private redis-server"
        );
    }

    let phases: Vec<Phase> = match args.only {
        Some(p) => vec![p],
        None => Phase::ALL.to_vec(),
    };
    for phase in phases {
        admin.flushall().await?;
        match phase {
            Phase::Memory => memory(&args, &url, &mut admin).await?,
            Phase::Single => single_enqueue(&args, &url, &mut admin).await?,
            Phase::Batch => batch_enqueue(&args, &url, &mut admin).await?,
            Phase::Process => processing(&args, &url, &mut admin).await?,
            Phase::Latency => latency(&args, &url).await?,
            Phase::Deps => dependents(&args, &url, &mut admin).await?,
        }
    }
    Ok(())
}

async fn print_header(args: &Args, url: &str, admin: &mut Admin) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let redis_version = admin.info_field("server", "redis_version").await?;
    let build = if cfg!(debug_assertions) {
        "DEBUG build: figures are not representative, use --release"
    } else {
        "release build"
    };
    let origin = if args.redis_url.is_some() {
        "given with --redis-url; it is FLUSHALLed before every phase"
    } else {
        "private redis-server started by this benchmark"
    };
    println!("Rediq benchmark");
    println!("  rediq           {} ({build})", env!("CARGO_PKG_VERSION"));
    println!("  cpus            {cpus} (available parallelism)");
    println!("  redis-server    {redis_version} at {url} ({origin})");
    println!(
        "  settings        tasks {}, concurrency {}, producers {}, batch size {}, \
         latency: {} tasks at {}/s",
        args.tasks,
        args.concurrency,
        args.producers,
        args.batch_size,
        args.latency_tasks,
        args.rate
    );
    println!();
    Ok(())
}

/// Prints one labelled figure of the report.
fn report(label: &str, figure: impl std::fmt::Display) {
    println!("{label:<LABEL_WIDTH$} {figure}");
}

fn jobs_per_sec(tasks: u64, elapsed: Duration) -> String {
    let rate = tasks as f64 / elapsed.as_secs_f64();
    format!(
        "{rate:>10.0} jobs/s  ({tasks} tasks in {:.3} s)",
        elapsed.as_secs_f64()
    )
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

/// Figure 1: growth of Redis `used_memory` per pending task.
async fn memory(args: &Args, url: &str, admin: &mut Admin) -> Result<()> {
    let client = connect_client(url).await?;
    // Load the enqueue scripts first: Redis caches their bodies, and FLUSHALL does not drop
    // them, so they would otherwise be counted as task memory.
    client
        .enqueue_batch(vec![bench_task("bench_mem_warmup", 0)?])
        .await
        .context("warm-up enqueue")?;
    admin.flushall().await?;

    let before = admin.used_memory().await?;
    enqueue_grouped(
        &client,
        "bench_mem",
        args.tasks,
        args.batch_size,
        args.groups,
    )
    .await?;
    let after = admin.used_memory().await?;
    check_pending(&Inspector::from_client(&client), "bench_mem", args.tasks).await?;

    let per_task = after.saturating_sub(before) as f64 / args.tasks as f64;
    report(
        "memory:  redis bytes per pending task",
        format!(
            "{per_task:>10.1} bytes   (used_memory {before} -> {after} for {} tasks)",
            args.tasks
        ),
    );
    // Redis 8 built with jemalloc also counts the Lua heap in used_memory, and the garbage the
    // enqueue scripts leave until Lua's collector runs inflates the figure above (~12 B a task
    // on 8.6.3): this one sums the queue's own keys.
    let keys = admin.usage_of("rediq:{bench_mem}:*").await?;
    report(
        "memory:  MEMORY USAGE of the queue's keys",
        format!(
            "{:>10.1} bytes   ({keys} bytes for {} tasks)",
            keys as f64 / args.tasks as f64,
            args.tasks
        ),
    );
    Ok(())
}

/// Dependent enqueues behind a backlog: `--tasks` pending tasks, then 200 tasks each depending
/// on a random one of them, enqueued one after the other. Prints the wall time per dependent
/// enqueue (median, p99) and the Redis CPU it costs (main thread, `INFO cpu`, over the 200
/// calls), which must not grow with the backlog (issue 13, defect 10).
async fn dependents(args: &Args, url: &str, admin: &mut Admin) -> Result<()> {
    const QUEUE: &str = "bench_deps";
    const DEPENDENTS: usize = 200;
    let client = connect_client(url).await?;
    let mut ids = Vec::with_capacity(args.tasks as usize);
    let mut next = 0;
    while next < args.tasks {
        let n = args.batch_size.min(args.tasks - next);
        let batch: Vec<Task> = (next..next + n)
            .map(|i| bench_task(QUEUE, i))
            .collect::<Result<_>>()?;
        ids.extend(batch.iter().map(|t| t.id.clone()));
        client.enqueue_batch(batch).await?;
        next += n;
    }
    // One dependent first, so that every script is loaded before the statistics start.
    let warm = Task::builder("bench_dep")
        .queue(QUEUE)
        .depends_on(&[ids[0].as_str()])
        .build()?;
    client.enqueue(warm).await?;
    let cpu_before = admin.main_thread_cpu_usec().await?;
    let mut took = Vec::with_capacity(DEPENDENTS);
    for i in 0..DEPENDENTS {
        let dep = &ids[(i * 7919 + 13) % ids.len()];
        let t = Task::builder("bench_dep")
            .queue(QUEUE)
            .depends_on(&[dep.as_str()])
            .build()?;
        let start = Instant::now();
        client.enqueue(t).await?;
        took.push(start.elapsed());
    }
    let redis_usec = admin.main_thread_cpu_usec().await? - cpu_before;
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    report(
        "deps:    dependent enqueue, backlog",
        format!(
            "{:>10} pending; wall p50 {:.3} ms, p99 {:.3} ms; redis {:.1} us per dependent",
            args.tasks,
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            redis_usec as f64 / DEPENDENTS as f64
        ),
    );
    Ok(())
}

/// Figure 2: `enqueue` from many concurrent producers sharing one client.
async fn single_enqueue(args: &Args, url: &str, admin: &mut Admin) -> Result<()> {
    const QUEUE: &str = "bench_single";
    let client = connect_client(url).await?;
    let producers = args.producers;

    let cpu_start = process_cpu();
    let redis_start = admin.main_thread_cpu_usec().await?;
    let start = Instant::now();
    let mut set = JoinSet::new();
    for p in 0..producers {
        let client = client.clone();
        // Producer p enqueues tasks p, p + producers, p + 2·producers, … below the total.
        let total = args.tasks;
        set.spawn(async move {
            for n in (p..total).step_by(producers as usize) {
                client
                    .enqueue(bench_task(QUEUE, n)?)
                    .await
                    .with_context(|| format!("single enqueue of task {n}"))?;
            }
            anyhow::Ok(())
        });
    }
    join_all(&mut set).await?;
    let elapsed = start.elapsed();
    let cpu = process_cpu().zip(cpu_start).map(|(end, start)| end - start);
    let redis_cpu = admin.main_thread_cpu_usec().await? - redis_start;

    check_pending(&Inspector::from_client(&client), QUEUE, args.tasks).await?;
    report(
        &format!("single:  enqueue, {producers} concurrent producers"),
        jobs_per_sec(args.tasks, elapsed),
    );
    report_cpu("single", args.tasks, cpu, redis_cpu, "enqueue");
    Ok(())
}

/// Prints the benchmark process's CPU and Redis's main-thread CPU per task of a phase.
fn report_cpu(phase: &str, tasks: u64, cpu: Option<Duration>, redis_usec: u64, what: &str) {
    if let Some(cpu) = cpu {
        report(
            &format!("{phase}: benchmark process CPU per task"),
            format!(
                "{:.2} µs  ({:.2} s user+sys)",
                cpu.as_secs_f64() * 1e6 / tasks as f64,
                cpu.as_secs_f64()
            ),
        );
    }
    report(
        &format!("{phase}: Redis CPU per task (main thread)"),
        format!(
            "{:.2} µs  ({:.2} s user+sys, {what})",
            redis_usec as f64 / tasks as f64,
            redis_usec as f64 / 1e6
        ),
    );
}

/// Figure 3: `enqueue_batch`, from one caller and from several.
async fn batch_enqueue(args: &Args, url: &str, admin: &mut Admin) -> Result<()> {
    const QUEUE: &str = "bench_batch";
    let client = connect_client(url).await?;
    let inspector = Inspector::from_client(&client);

    let start = Instant::now();
    enqueue_in_batches(&client, QUEUE, args.tasks, args.batch_size).await?;
    let elapsed = start.elapsed();
    check_pending(&inspector, QUEUE, args.tasks).await?;
    report(
        &format!("batch:   enqueue_batch x{}, 1 caller", args.batch_size),
        jobs_per_sec(args.tasks, elapsed),
    );

    // The same with several callers; a fresh client so the two runs start alike.
    admin.flushall().await?;
    let client = connect_client(url).await?;
    let chunks: Vec<(u64, u64)> = (0..args.tasks)
        .step_by(args.batch_size as usize)
        .map(|first| (first, (first + args.batch_size).min(args.tasks)))
        .collect();
    let start = Instant::now();
    let mut set = JoinSet::new();
    for caller in 0..BATCH_CALLERS {
        let client = client.clone();
        // Caller c sends chunks c, c + callers, c + 2·callers, …
        let mine: Vec<(u64, u64)> = chunks
            .iter()
            .copied()
            .skip(caller)
            .step_by(BATCH_CALLERS)
            .collect();
        set.spawn(async move {
            for (first, end) in mine {
                let tasks = (first..end)
                    .map(|n| bench_task(QUEUE, n))
                    .collect::<Result<Vec<_>>>()?;
                client
                    .enqueue_batch(tasks)
                    .await
                    .with_context(|| format!("batch enqueue of tasks {first}..{end}"))?;
            }
            anyhow::Ok(())
        });
    }
    join_all(&mut set).await?;
    let elapsed = start.elapsed();
    check_pending(&Inspector::from_client(&client), QUEUE, args.tasks).await?;
    report(
        &format!(
            "batch:   enqueue_batch x{}, {BATCH_CALLERS} callers",
            args.batch_size
        ),
        jobs_per_sec(args.tasks, elapsed),
    );
    Ok(())
}

/// Figure 4: how fast a server drains a full queue with a no-op handler.
async fn processing(args: &Args, url: &str, admin: &mut Admin) -> Result<()> {
    const QUEUE: &str = "bench_proc";
    let client = connect_client(url).await?;
    let inspector = Inspector::from_client(&client);
    enqueue_grouped(&client, QUEUE, args.tasks, args.batch_size, args.groups).await?;
    check_pending(&inspector, QUEUE, args.tasks).await?;
    inspector
        .set_group_limits(
            QUEUE,
            &rediq::QueueLimits {
                concurrency: args.group_concurrency,
                rate: args.group_rate.map(|count| rediq::RateLimit {
                    count,
                    period: Duration::from_secs(1),
                }),
            },
        )
        .await?;
    let limits = rediq::QueueLimits {
        concurrency: args.limit_concurrency,
        rate: args.limit_rate.map(|count| rediq::RateLimit {
            count,
            period: Duration::from_secs(1),
        }),
    };
    inspector.set_queue_limits(QUEUE, &limits).await?;

    let (completion, done) = Completion::new(args.tasks);
    let handler = Arc::new(CountHandler { completion });
    let mut mux = Mux::new();
    mux.handle(TASK_TYPE, handler.clone());
    let mut builder = ServerBuilder::new()
        .redis_url(url)
        .queues(&[QUEUE])
        .concurrency(args.concurrency as usize)
        .prefetch_if(args.prefetch)
        .metrics(args.metrics != MetricsMode::Off);
    if args.metrics == MetricsMode::Full {
        builder = builder.middleware(MiddlewareChain::new().add(MetricsMiddleware::new()));
    }
    let state = builder
        .build()
        .await
        .context("build the processing server")?;
    let mut server = Server::from(state);
    let mut scraper = None;
    if args.metrics == MetricsMode::Full {
        server.enable_metrics("127.0.0.1:0".parse()?);
        let addr = server.metrics_addr().context("metrics endpoint")?;
        scraper = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                // A failed scrape only means the server is busy starting or stopping.
                let _ = scrape(addr).await;
            }
        }));
    }

    let cpu_start = process_cpu();
    let redis_start = admin.main_thread_cpu_usec().await?;
    let start = Instant::now();
    let server = BenchServer::spawn(server, mux);
    let finished = handler.completion.wait(done, "processing").await;
    let cpu = process_cpu().zip(cpu_start).map(|(end, start)| end - start);
    let redis_cpu = admin.main_thread_cpu_usec().await? - redis_start;
    if let Some(s) = scraper {
        s.abort();
    }
    server.stop().await?;
    let elapsed = finished? - start;

    report(
        &format!(
            "process: no-op handler, concurrency {}, metrics {:?}{}",
            args.concurrency,
            args.metrics,
            if limits.is_empty() { "" } else { ", limited" }
        ),
        jobs_per_sec(args.tasks, elapsed),
    );
    report_cpu("process", args.tasks, cpu, redis_cpu, "fetch and complete");

    // Acknowledgements are flushed on shutdown; give them a moment to show in the stats.
    let settled =
        |s: &QueueStats| s.processed_total == args.tasks && s.pending == 0 && s.active == 0;
    let stats = poll_stats(&inspector, QUEUE, ACK_SETTLE, settled).await?;
    if !settled(&stats) {
        println!(
            "WARNING: after shutdown queue {QUEUE} shows processed_total {} (expected {}), \
             pending {}, active {} (expected 0 and 0); retry {}, dead {}",
            stats.processed_total, args.tasks, stats.pending, stats.active, stats.retry, stats.dead
        );
    }
    Ok(())
}

/// Figure 5: enqueue-to-handler latency at a steady enqueue rate.
async fn latency(args: &Args, url: &str) -> Result<()> {
    const QUEUE: &str = "bench_lat";
    let total = args.latency_tasks;
    let client = connect_client(url).await?;

    let (completion, done) = Completion::new(total);
    let handler = Arc::new(LatencyHandler {
        completion,
        micros: Mutex::new(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).context("create the histogram")?,
        ),
    });
    let mut mux = Mux::new();
    mux.handle(TASK_TYPE, handler.clone());
    let state = ServerBuilder::new()
        .redis_url(url)
        .queues(&[QUEUE])
        .concurrency(args.concurrency as usize)
        .prefetch_if(args.prefetch)
        .build()
        .await
        .context("build the latency server")?;
    let server = BenchServer::spawn(Server::from(state), mux);
    tokio::time::sleep(SERVER_WARMUP).await;

    let produced = produce_steadily(&client, QUEUE, total, args.rate).await;
    let finished = match produced {
        Ok(()) => handler.completion.wait(done, "latency").await.map(drop),
        Err(e) => Err(e),
    };
    server.stop().await?;
    finished?;

    let hist = handler
        .micros
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let ms = |micros: u64| micros as f64 / 1000.0;
    report(
        &format!(
            "latency: pickup at {}/s, concurrency {}",
            args.rate, args.concurrency
        ),
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms  ({} tasks)",
            ms(hist.value_at_quantile(0.50)),
            ms(hist.value_at_quantile(0.99)),
            ms(hist.max()),
            hist.len()
        ),
    );
    Ok(())
}

/// Enqueues `total` stamped tasks at `rate` per second with single `enqueue` calls, each in its
/// own tokio task so that a slow round trip never holds back the pace.
async fn produce_steadily(
    client: &Client,
    queue: &'static str,
    total: u64,
    rate: u64,
) -> Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    // The schedule comes from the elapsed time, not the tick count: late ticks catch up.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut set = JoinSet::new();
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        ticker.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        for n in sent..due {
            let task = Task::builder(TASK_TYPE)
                .queue(queue)
                .payload(&StampedPayload { n, t: unix_nanos() })?
                .build()?;
            let client = client.clone();
            set.spawn(async move {
                client
                    .enqueue(task)
                    .await
                    .with_context(|| format!("latency enqueue of task {n}"))?;
                anyhow::Ok(())
            });
        }
        sent = sent.max(due);
        // Reap finished enqueues as we go so errors surface early and the set stays small.
        while let Some(res) = set.try_join_next() {
            res.context("enqueue task panicked")??;
        }
    }
    join_all(&mut set).await
}

// ---------------------------------------------------------------------------------------------
// Handlers and the server harness
// ---------------------------------------------------------------------------------------------

/// Counts handled tasks and reports the instant the last one finished.
struct Completion {
    handled: AtomicU64,
    target: u64,
    done: Mutex<Option<oneshot::Sender<Instant>>>,
}

impl Completion {
    fn new(target: u64) -> (Completion, oneshot::Receiver<Instant>) {
        let (tx, rx) = oneshot::channel();
        let c = Completion {
            handled: AtomicU64::new(0),
            target,
            done: Mutex::new(Some(tx)),
        };
        (c, rx)
    }

    /// Counts one handled task; the one that reaches the target sends the instant.
    fn tick(&self) {
        if self.handled.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            let at = Instant::now();
            let sender = self
                .done
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(tx) = sender {
                let _ = tx.send(at);
            }
        }
    }

    /// Waits for the target, failing if no task is handled for [`STALL_LIMIT`].
    async fn wait(&self, mut done: oneshot::Receiver<Instant>, phase: &str) -> Result<Instant> {
        let mut last = self.handled.load(Ordering::Acquire);
        let mut last_progress = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(1), &mut done).await {
                Ok(Ok(at)) => return Ok(at),
                Ok(Err(_)) => bail!("{phase}: the completion signal was dropped"),
                Err(_) => {
                    let now = self.handled.load(Ordering::Acquire);
                    if now != last {
                        last = now;
                        last_progress = Instant::now();
                    } else if last_progress.elapsed() >= STALL_LIMIT {
                        bail!(
                            "{phase}: stalled at {now} of {} tasks handled, none in the last {:?}",
                            self.target,
                            STALL_LIMIT
                        );
                    }
                }
            }
        }
    }
}

/// The processing handler: does nothing but count.
struct CountHandler {
    completion: Completion,
}

#[async_trait]
impl Handler for CountHandler {
    async fn handle(&self, _task: &Task) -> rediq::Result<()> {
        self.completion.tick();
        Ok(())
    }
}

/// The latency handler: records how long ago the task was enqueued, in microseconds.
struct LatencyHandler {
    completion: Completion,
    micros: Mutex<Histogram<u64>>,
}

#[async_trait]
impl Handler for LatencyHandler {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        let now = unix_nanos();
        let payload: StampedPayload = task.payload_json()?;
        let micros = now.saturating_sub(payload.t) / 1000;
        self.micros
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .saturating_record(micros);
        self.completion.tick();
        Ok(())
    }
}

/// A server running in the background until [`BenchServer::stop`].
struct BenchServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<rediq::Result<()>>,
}

impl BenchServer {
    fn spawn(server: Server, mux: Mux) -> BenchServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(mux, async {
            // A dropped sender also means stop.
            let _ = stopped.await;
        }));
        BenchServer { stop, task }
    }

    /// Shuts the server down gracefully and returns its result.
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .context("the server task panicked")?
            .context("the server failed")
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, 10 ms ticks);
/// `None` elsewhere.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// One GET /metrics, body read to the end.
async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await
}

/// `--wait-replicas`, for [`connect_client`].
static WAIT_REPLICAS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

async fn connect_client(url: &str) -> Result<Client> {
    let mut b = Client::builder().redis_url(url);
    let replicas = WAIT_REPLICAS.load(std::sync::atomic::Ordering::SeqCst);
    if replicas > 0 {
        b = b.wait_for_replicas(replicas, Duration::from_secs(1));
    }
    b.build()
        .await
        .with_context(|| format!("connect a client to {url}"))
}

/// A benchmark task with the ~30-byte payload `{"n":<n>,"s":"hello world"}`.
fn bench_task(queue: &str, n: u64) -> Result<Task> {
    Ok(Task::builder(TASK_TYPE)
        .queue(queue)
        .payload(&Payload {
            n,
            s: "hello world",
        })?
        .build()?)
}

/// Like [`enqueue_in_batches`], with task n in group `g<n mod groups>` when `groups` is set.
async fn enqueue_grouped(
    client: &Client,
    queue: &str,
    total: u64,
    batch_size: u64,
    groups: Option<u64>,
) -> Result<()> {
    let Some(groups) = groups else {
        return enqueue_in_batches(client, queue, total, batch_size).await;
    };
    for first in (0..total).step_by(batch_size as usize) {
        let end = (first + batch_size).min(total);
        let tasks = (first..end)
            .map(|n| {
                let mut t = bench_task(queue, n)?;
                t.options.group = Some(format!("g{}", n % groups));
                Ok(t)
            })
            .collect::<Result<Vec<_>>>()?;
        client
            .enqueue_batch(tasks)
            .await
            .with_context(|| format!("grouped enqueue of tasks {first}..{end} into {queue}"))?;
    }
    Ok(())
}

/// Enqueues tasks `0..total` with sequential `enqueue_batch` calls of `batch_size`.
async fn enqueue_in_batches(
    client: &Client,
    queue: &str,
    total: u64,
    batch_size: u64,
) -> Result<()> {
    for first in (0..total).step_by(batch_size as usize) {
        let end = (first + batch_size).min(total);
        let tasks = (first..end)
            .map(|n| bench_task(queue, n))
            .collect::<Result<Vec<_>>>()?;
        client
            .enqueue_batch(tasks)
            .await
            .with_context(|| format!("batch enqueue of tasks {first}..{end} into {queue}"))?;
    }
    Ok(())
}

/// Waits for every task of the set, returning the first error.
async fn join_all(set: &mut JoinSet<Result<()>>) -> Result<()> {
    while let Some(res) = set.join_next().await {
        res.context("a benchmark task panicked")??;
    }
    Ok(())
}

/// Polls the stats of `queue` until `ok` holds or `within` has passed; returns the last stats.
async fn poll_stats(
    inspector: &Inspector,
    queue: &str,
    within: Duration,
    ok: impl Fn(&QueueStats) -> bool,
) -> Result<QueueStats> {
    let deadline = Instant::now() + within;
    loop {
        let stats = inspector
            .queue_stats(queue)
            .await
            .with_context(|| format!("read the stats of queue {queue}"))?;
        if ok(&stats) || Instant::now() >= deadline {
            return Ok(stats);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints a WARNING unless exactly `expected` tasks are pending in `queue`.
async fn check_pending(inspector: &Inspector, queue: &str, expected: u64) -> Result<()> {
    let stats = inspector
        .queue_stats(queue)
        .await
        .with_context(|| format!("read the stats of queue {queue}"))?;
    if stats.pending != expected {
        println!(
            "WARNING: queue {queue} holds {} pending tasks, expected {expected}",
            stats.pending
        );
    }
    Ok(())
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A plain Redis connection for what the benchmark itself asks of Redis: FLUSHALL and INFO.
struct Admin {
    conn: MultiplexedConnection,
}

impl Admin {
    async fn connect(url: &str) -> Result<Admin> {
        let client =
            redis::Client::open(url).with_context(|| format!("invalid Redis URL {url}"))?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connect to Redis at {url}"))?;
        Ok(Admin { conn })
    }

    async fn flushall(&mut self) -> Result<()> {
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut self.conn)
            .await
            .context("FLUSHALL")?;
        Ok(())
    }

    /// Whether no database of the server holds a key.
    async fn is_empty(&mut self) -> Result<bool> {
        let keyspace = self.info("keyspace").await?;
        Ok(!keyspace.lines().any(|l| l.starts_with("db")))
    }

    /// The sum of `MEMORY USAGE` over the keys matching `pattern`: what the keys holding the
    /// tasks take, key names and per-key overhead included, without the server-wide figures
    /// (Lua heap, client buffers) that `used_memory` also counts.
    async fn usage_of(&mut self, pattern: &str) -> Result<u64> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn)
                .await?;
            keys.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut total = 0;
        for key in keys {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut self.conn)
                .await?;
            total += bytes.unwrap_or(0);
        }
        Ok(total)
    }

    async fn used_memory(&mut self) -> Result<u64> {
        let raw = self.info_field("memory", "used_memory").await?;
        raw.parse()
            .with_context(|| format!("used_memory {raw:?} is not a number"))
    }

    /// One `field:value` line of an INFO section.
    async fn info_field(&mut self, section: &str, field: &str) -> Result<String> {
        let info = self.info(section).await?;
        let value = info
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| *name == field)
            .map(|(_, value)| value.trim().to_string());
        value.with_context(|| format!("INFO {section} has no {field} field"))
    }

    /// CPU time of Redis's main thread so far, in microseconds (`INFO cpu`).
    async fn main_thread_cpu_usec(&mut self) -> Result<u64> {
        let mut total = 0.0;
        for field in ["used_cpu_sys_main_thread", "used_cpu_user_main_thread"] {
            let v = self.info_field("cpu", field).await?;
            total += v
                .parse::<f64>()
                .with_context(|| format!("{field} {v:?} is not a number"))?;
        }
        Ok((total * 1e6) as u64)
    }

    async fn info(&mut self, section: &str) -> Result<String> {
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn)
            .await
            .with_context(|| format!("INFO {section}"))
    }
}

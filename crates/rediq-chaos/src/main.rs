//! `rediq-chaos`: the fault suite. It starts its own Redis and worker processes (this binary,
//! re-run with the hidden `worker` subcommand), feeds them a mixed workload through the public
//! `Client`, injects one kind of fault per scenario, and then accounts for every task from
//! outside: each handler run is recorded in an append-only file per worker, and the final state
//! is read back from Redis. See docs/reliability.md.

mod accounting;
mod driver;
mod execlog;
mod faults;
mod garbage;
mod ledger;
mod pool;
mod redis_proc;
mod report;
mod scenario;
mod worker;
mod workload;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "rediq-chaos",
    about = "Fault suite for Rediq: real workers and a real Redis, faults injected, every task accounted for",
    long_about = "Starts a private redis-server and worker processes, feeds them a mixed workload \
(priorities, delays, failing retries, dependencies across queues, unique keys, cron), injects \
the faults of each scenario, drains, and prints per scenario: enqueued, completed, dead-lettered \
as intended, lost (must be 0), duplicate executions, double completions (must be 0) and time to \
recover (for the failover scenarios also how long the producer and each worker took to follow \
the new master). Exits 1 if any scenario broke a promise (lost or double-completed tasks among them).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One worker process (started by the driver; not for direct use).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

/// Options of a run.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Scenarios to run, comma-separated, or `all` (each in a fresh Redis, in order; the two
    /// failover scenarios each in a fresh topology of their own).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<ScenarioArg>,
    /// Seconds of workload (and faults) per scenario; draining comes on top.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Redis topology of the scenarios whose faults hit workers or handlers (`kill`, `stop`,
    /// `handlers`). The scenarios that kill, freeze or corrupt the suite's own redis-server
    /// (`redis-restart-*`, `redis-down`, `garbage`) run on `standalone` only and are skipped on
    /// the others. `cluster-failover` always runs on a cluster and `sentinel-failover` on a
    /// sentinel set, whatever this says.
    #[arg(long, value_enum, default_value = "standalone")]
    pub topology: Topology,
    /// Worker processes kept running.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Producer units per second (a unit is one task, or a parent and its dependent, …).
    #[arg(long, default_value_t = 40)]
    pub rate: u32,
    /// Seed of the workload's random choices and of the fault schedule.
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
    /// Keep each scenario's directory (Redis data, execution logs, worker logs) even when it passed.
    #[arg(long)]
    pub keep: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioArg {
    /// Every scenario below, in this order.
    All,
    /// SIGKILL a random worker every few seconds and start a new one.
    Kill,
    /// SIGSTOP a worker past its lease, then SIGCONT it.
    Stop,
    /// SIGKILL Redis and restart it (appendonly yes, appendfsync always): no acknowledged enqueue may be lost.
    RedisRestartAlways,
    /// SIGKILL Redis and restart it (appendfsync everysec): losses are reported, not failed on.
    RedisRestartEverysec,
    /// Redis unreachable (SIGSTOP) for 10 s; a worker is asked to shut down meanwhile.
    RedisDown,
    /// Garbage in a served queue's keys: wrong-type token/pending/retry/wake, undecodable members.
    Garbage,
    /// Slow, panicking, never-returning (timed out) and blocking (std::thread::sleep) handlers.
    Handlers,
    /// Redis Cluster (3 masters, 3 replicas): CLUSTER FAILOVER of each shard in turn, every ~10 s.
    ClusterFailover,
    /// Redis Sentinel (master, replica, 3 sentinels): SENTINEL FAILOVER every ~25 s; the
    /// producer waits for one replica, so only replica-confirmed enqueues are promised.
    SentinelFailover,
}

/// Where Redis runs (also passed to each worker process, whose builders need the mode).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One redis-server process.
    Standalone,
    /// A Redis Cluster of 3 masters and 3 replicas (`cluster_mode()`, seed-list URL).
    Cluster,
    /// A master, one replica and 3 sentinels (`sentinel_mode()`, `redis+sentinel://` URL).
    Sentinel,
}

impl Topology {
    /// The name `--topology` and the worker's `--mode` take.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Standalone => "standalone",
            Topology::Cluster => "cluster",
            Topology::Sentinel => "sentinel",
        }
    }

    /// A client builder for `url`, in this mode.
    pub fn client(self, url: &str) -> rediq::ClientBuilder {
        let b = rediq::Client::builder().redis_url(url);
        match self {
            Topology::Standalone => b,
            Topology::Cluster => b.cluster_mode(),
            Topology::Sentinel => b.sentinel_mode(),
        }
    }

    /// A server builder for `url`, in this mode.
    pub fn server(self, url: &str) -> rediq::server::ServerBuilder {
        let b = rediq::server::ServerBuilder::new().redis_url(url);
        match self {
            Topology::Standalone => b,
            Topology::Cluster => b.cluster_mode(),
            Topology::Sentinel => b.sentinel_mode(),
        }
    }

    /// An inspector builder for `url`, in this mode: the accounting reads the final state
    /// through it (on a cluster each queue from its shard's master, under Sentinel from the
    /// current master).
    pub fn inspector(self, url: &str) -> rediq::InspectorBuilder {
        let b = rediq::Inspector::builder().redis_url(url);
        match self {
            Topology::Standalone => b,
            Topology::Cluster => b.cluster_mode(),
            Topology::Sentinel => b.sentinel_mode(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Worker(args)) => worker::main(args),
        None => driver::main(cli.run),
    }
}

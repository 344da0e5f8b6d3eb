//! The scenario driver: for each scenario, a fresh Redis and worker pool, the workload and the
//! faults side by side, then healing, draining, a graceful shutdown of every worker, and the
//! accounting. Everything runs on one thread (the driver is light; the workers do the work),
//! so the processes it starts always have a live parent to be cleaned up by.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rediq::{Client, Inspector};

use crate::accounting::{self, Inputs, Row};
use crate::execlog::{self, now_ms};
use crate::faults::{self, Target, SHUTDOWN_MARGIN};
use crate::ledger::Ledger;
use crate::pool::{Pool, WorkerConfig};
use crate::redis_proc::Deployment;
use crate::scenario::Scenario;
use crate::workload::{self, CRON_ID, QUEUES};
use crate::{report, RunArgs, Topology};

/// Lease of the workers: short, so that recovery shows within a short run.
const LEASE: Duration = Duration::from_secs(2);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the queues to drain after the faults.
const DRAIN: Duration = Duration::from_secs(90);
/// A drain whose count of live tasks did not go down for this long has stalled.
const STALL: Duration = Duration::from_secs(15);
/// How long the producer keeps retrying an enqueue after the workload phase.
const ENQUEUE_GRACE: Duration = Duration::from_secs(20);

pub fn main(args: RunArgs) -> ExitCode {
    if args.workers < 2 {
        eprintln!("--workers must be at least 2 (a fault must leave a worker to recover)");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rows = Vec::new();
    for s in Scenario::from_args(&args.scenario) {
        let topology = match s.topology(args.topology) {
            Ok(t) => t,
            Err(why) => {
                println!("== scenario {} == {why}", s.name());
                continue;
            }
        };
        println!("== scenario {} ({}) ==", s.name(), topology.name());
        let row = rt.block_on(async {
            tokio::select! {
                row = run(s, topology, &args) => Some(row),
                // Dropping the run kills its Redis and workers.
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let Some(row) = row else {
            eprintln!("interrupted");
            return ExitCode::from(130);
        };
        report::result_line(&row);
        report::details(&row);
        rows.push(row);
    }
    report::table(&rows);
    if rows.iter().any(|r| !r.failures.is_empty()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

async fn run(s: Scenario, topology: Topology, args: &RunArgs) -> Row {
    let dir = std::env::temp_dir().join(format!("rediq-chaos-{}-{}", std::process::id(), s.name()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut row = Row {
        scenario: s.name().to_string(),
        dir: dir.display().to_string(),
        ..Row::default()
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        row.failures.push(format!("cannot create {dir:?}: {e}"));
        return row;
    }
    if let Err(e) = run_in(s, topology, args, &dir, &mut row).await {
        row.failures.push(format!("the run itself failed: {e}"));
    }
    if row.failures.is_empty() && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
        row.dir = "(removed)".into();
    }
    row
}

async fn run_in(
    s: Scenario,
    topology: Topology,
    args: &RunArgs,
    dir: &Path,
    row: &mut Row,
) -> Result<(), String> {
    let mut redis = Deployment::start(topology, s.persistence(), &dir.join("redis")).await?;
    let url = redis.url();
    if topology != Topology::Standalone {
        row.notes.push(format!("{} at {url}", topology.name()));
    }
    let queue_slots = if topology == Topology::Cluster {
        spread_over_shards(&redis, row)?
    } else {
        Vec::new()
    };
    let mut pool = Pool::new(
        dir,
        WorkerConfig {
            url: url.clone(),
            mode: topology,
            lease: LEASE,
            shutdown_timeout: SHUTDOWN_TIMEOUT,
            concurrency: 8,
            threads: 2,
        },
    );
    let cron_from = now_ms();
    pool.top_up(args.workers)?;
    // The producer's client. Under Sentinel it waits for a replica: a failover loses what no
    // replica had, so only a replica-confirmed enqueue is acknowledged (docs/reliability.md).
    let mut builder = topology.client(&url);
    if let Some((n, timeout)) = Scenario::wait_for_replica(topology) {
        builder = builder.wait_for_replicas(n, timeout);
    }
    let client: Client = builder.build().await.map_err(|e| e.to_string())?;
    // The driver's own view (drain, accounting), on its own connection in the same mode.
    let insp = topology
        .inspector(&url)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let n = args.workers;
    if !wait_for(Duration::from_secs(20), || async {
        insp.workers().await.map(|w| w.len() >= n).unwrap_or(false)
    })
    .await
    {
        return Err(format!(
            "the workers did not register within 20 s (see {}/worker-*.log)",
            dir.display()
        ));
    }

    // Workload and faults side by side.
    let seconds = args.seconds.max(s.min_seconds());
    row.seconds = seconds as f64;
    let until = Instant::now() + Duration::from_secs(seconds);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let producer = workload::produce(
        client.clone(),
        ledger.clone(),
        s.mix(LEASE),
        args.rate,
        args.seed,
        until,
        ENQUEUE_GRACE,
    );
    let mut target = Target {
        redis: &mut redis,
        pool: &mut pool,
        workers: args.workers,
        lease: LEASE,
        shutdown_timeout: SHUTDOWN_TIMEOUT,
        rng: rand::rngs::StdRng::seed_from_u64(args.seed ^ 0xfa17),
        notes: Vec::new(),
        queue_slots,
    };
    let ((), faults) = tokio::join!(producer, faults::inject(s, &mut target, until));
    row.notes.append(&mut target.notes);
    let faults = faults?;
    if let Some(f) = faults.first() {
        row.notes
            .push(format!("{} fault(s), the first: {}", faults.len(), f.what));
    }

    // Heal: Redis answering, every worker running, the periodic entry gone.
    redis.thaw();
    for i in 0..pool.live.len() {
        pool.thaw(i);
    }
    pool.top_up(args.workers)?;
    // Workers register the entry at start-up: give the newest time to do so, then remove it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut cron_to = now_ms();
    let _ = insp.remove_cron(CRON_ID).await;

    // Drain.
    let drain_start = Instant::now();
    let mut drained = false;
    let mut quiet_rounds = 0;
    // (live count, since when it has not gone down): a drain that stalls this long is over.
    let mut stall: (u64, Instant) = (u64::MAX, Instant::now());
    while drain_start.elapsed() < DRAIN && stall.1.elapsed() < STALL {
        if insp.remove_cron(CRON_ID).await.unwrap_or(false) {
            cron_to = now_ms();
            row.notes
                .push("the periodic entry was registered again during the drain".into());
        }
        let live = live_tasks(&insp).await;
        if let Some(n) = live.filter(|n| *n < stall.0) {
            stall = (n, Instant::now());
        }
        if live == Some(0) {
            quiet_rounds += 1;
            if quiet_rounds >= 3 {
                drained = true;
                break;
            }
        } else {
            quiet_rounds = 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    row.notes.push(if drained {
        format!("drained in {:.1} s", drain_start.elapsed().as_secs_f64())
    } else {
        format!(
            "NOT drained: {} after {:.0} s, {} task(s) still live",
            if stall.1.elapsed() >= STALL {
                "no progress for 15 s"
            } else {
                "gave up"
            },
            drain_start.elapsed().as_secs_f64(),
            live_tasks(&insp).await.unwrap_or(u64::MAX)
        )
    });

    pool.terminate_all(SHUTDOWN_TIMEOUT + Duration::from_secs(30))
        .await;

    let fin = accounting::collect(&insp)
        .await
        .map_err(|e| format!("reading the final state: {e}"))?;
    let runs = execlog::read_runs(dir).map_err(|e| format!("reading the execution logs: {e}"))?;
    let ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
    if ledger.enqueue_errors > 0 {
        let mut errs: Vec<_> = ledger.errors.iter().collect();
        errs.sort_by(|a, b| b.1.cmp(a.1));
        if let Some((e, n)) = errs.first() {
            row.notes
                .push(format!("enqueue errors, most frequent ({n}×): {e}"));
        }
    }
    if let Some(r) = &ledger.first_refusal {
        row.notes
            .push(format!("{} enqueue(s) refused, first: {r}", ledger.refused));
    }
    let planted = if s == Scenario::Garbage {
        crate::garbage::planted()
    } else {
        Vec::new()
    };
    accounting::account(
        row,
        &Inputs {
            ledger: &ledger,
            runs: &runs,
            fin: &fin,
            faults: &faults,
            promises: s.promises(),
            cron_window_ms: (cron_from, cron_to),
            garbage_planted: &planted,
            shutdowns: &pool.shutdowns,
            shutdown_allowed: SHUTDOWN_TIMEOUT + SHUTDOWN_MARGIN,
            lease_ms: LEASE.as_millis() as u64,
        },
    );
    accounting::worker_warnings(row, dir);
    redis.stop();
    Ok(())
}

/// On a cluster: the slot of each queue and the shard holding it, noted in the row; an error
/// when they all fall on one shard (the failovers must move queues that depend on each other
/// apart: the dependents of `chaos-a` and `chaos-hi` live in `chaos-b`).
fn spread_over_shards(redis: &Deployment, row: &mut Row) -> Result<Vec<(String, u16)>, String> {
    let shards = redis.shards()?;
    let mut slots = Vec::new();
    let mut used = Vec::new();
    let mut where_ = Vec::new();
    for q in QUEUES {
        let slot = redis.slot_of(q)?;
        let shard = shards
            .iter()
            .position(|s| s.holds(slot))
            .ok_or_else(|| format!("no shard serves slot {slot} of queue {q}"))?;
        if !used.contains(&shard) {
            used.push(shard);
        }
        where_.push(format!(
            "{q} slot {slot} on shard {} (master {})",
            shard + 1,
            shards[shard].master
        ));
        slots.push((q.to_string(), slot));
    }
    row.notes.push(format!(
        "{} shards; queues on {} of them: {}",
        shards.len(),
        used.len(),
        where_.join(", ")
    ));
    if used.len() < 2 {
        return Err(
            "every queue falls on one shard: the failovers would not move queues apart".into(),
        );
    }
    Ok(slots)
}

/// Tasks not yet settled, over every queue (`None` when Redis does not answer).
async fn live_tasks(insp: &Inspector) -> Option<u64> {
    let mut n = 0;
    for q in QUEUES {
        let s = insp.queue_stats(q).await.ok()?;
        n += s.pending + s.active + s.delayed + s.retry + s.waiting;
    }
    Some(n)
}

async fn wait_for<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

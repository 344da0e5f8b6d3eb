//! The workload: what each task is planned to do (carried in its payload, so a handler knows
//! how to behave and the accounting knows the expected outcome), and the producer that enqueues
//! a seeded random mix through the public `Client`, retrying an enqueue that failed the way a
//! real producer would (same task, same id) until it is acknowledged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rediq::{Client, Error, Task};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::ledger::Ledger;

/// Queues served by every worker. `chaos-a` holds parents (and takes the garbage), `chaos-b`
/// their dependents, so every dependency crosses queues.
pub const QUEUES: [&str; 3] = ["chaos-hi", "chaos-a", "chaos-b"];
pub const GARBAGE_QUEUE: &str = "chaos-a";
/// The periodic entry every worker registers at start-up (the documented pattern).
pub const CRON_EXPR: &str = "@every 1s";
pub const CRON_ID: &str = "chaos:cron @every 1s";
/// Slack of retries above the planned failures, so that attempts lost to faults (a lapsed
/// lease counts as a failed attempt) do not turn a task that should complete into a dead one.
pub const RETRY_SLACK: u32 = 5;

/// What a handler does.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Works `ms` (async), succeeds.
    Plain,
    /// Fails attempts 1..=`fail`, then succeeds.
    Flaky,
    /// Always fails (retryable): dead-lettered after its retries.
    Doomed,
    /// Fails with a non-retryable error: dead-lettered at once.
    Nonretry,
    /// Works `ms` of seconds (async), succeeds.
    Slow,
    /// Panics on attempts 1..=`fail`, then succeeds.
    Panic,
    /// Never returns on attempts 1..=`fail` (its timeout fires), then succeeds.
    Hang,
    /// Blocks its thread for `ms` with `std::thread::sleep`, succeeds.
    Block,
    /// A copy fired by the periodic entry.
    Cron,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Plain,
        Kind::Flaky,
        Kind::Doomed,
        Kind::Nonretry,
        Kind::Slow,
        Kind::Panic,
        Kind::Hang,
        Kind::Block,
        Kind::Cron,
    ];

    pub fn task_type(self) -> &'static str {
        match self {
            Kind::Plain => "chaos:plain",
            Kind::Flaky => "chaos:flaky",
            Kind::Doomed => "chaos:doomed",
            Kind::Nonretry => "chaos:nonretry",
            Kind::Slow => "chaos:slow",
            Kind::Panic => "chaos:panic",
            Kind::Hang => "chaos:hang",
            Kind::Block => "chaos:block",
            Kind::Cron => "chaos:cron",
        }
    }
}

/// The plan of one task: its payload.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub k: Kind,
    /// Attempts that fail (panic, hang) before success.
    #[serde(default)]
    pub fail: u32,
    /// Work time in ms.
    #[serde(default)]
    pub ms: u64,
}

/// Where a task should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Completed,
    Dead,
}

impl Plan {
    /// Expected end state and the handler runs a fault-free run makes.
    pub fn expect(&self, max_retry: u32) -> (Expect, u32) {
        match self.k {
            Kind::Doomed => (Expect::Dead, max_retry + 1),
            Kind::Nonretry => (Expect::Dead, 1),
            Kind::Flaky | Kind::Panic | Kind::Hang => (Expect::Completed, self.fail + 1),
            Kind::Plain | Kind::Slow | Kind::Block | Kind::Cron => (Expect::Completed, 1),
        }
    }
}

/// What the producer mixes in.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Slow, panicking, hanging and blocking handlers too.
    pub handlers: bool,
    /// The workers' lease: the blocking handler outlasts it.
    pub lease: Duration,
}

/// Runs the producer until `until`, then waits (at most `grace`) for enqueues still retrying.
pub async fn produce(
    client: Client,
    ledger: Arc<Mutex<Ledger>>,
    mix: Mix,
    rate: u32,
    seed: u64,
    until: Instant,
    grace: Duration,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    // Bounds what piles up while Redis is away: the producer then slows down, as a real one.
    let inflight = Arc::new(Semaphore::new(256));
    let mut n: u64 = 0;
    let mut tick = tokio::time::interval(gap);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        n += 1;
        let unit = pick_unit(&mut rng, mix, n);
        let (client, ledger) = (client.clone(), ledger.clone());
        let give_up = until + grace;
        tokio::spawn(async move {
            unit.run(&client, &ledger, give_up).await;
            drop(permit);
        });
    }
    // Wait for the units still retrying.
    let _ = tokio::time::timeout(grace + Duration::from_secs(1), inflight.acquire_many(256)).await;
}

/// One producer step.
enum Unit {
    One(Task),
    /// A task holding a unique key, then a second one with the same key, which must be refused.
    Unique(Box<(Task, Task)>),
    /// Parents (in `chaos-a` and maybe `chaos-hi`), then a dependent in `chaos-b`.
    Deps(Vec<Task>, Task),
}

fn task(kind: Kind, queue: &str, fail: u32, ms: u64) -> rediq::TaskBuilder {
    let plan = Plan { k: kind, fail, ms };
    let b = Task::builder(kind.task_type())
        .queue(queue)
        .payload(&plan)
        .expect("a plan serializes");
    match kind {
        Kind::Doomed => b.max_retry(1),
        Kind::Nonretry => b.max_retry(0),
        Kind::Hang => b
            .max_retry(fail + RETRY_SLACK)
            .timeout(Duration::from_secs(1)),
        _ => b.max_retry(fail + RETRY_SLACK),
    }
}

fn pick_unit(rng: &mut StdRng, mix: Mix, n: u64) -> Unit {
    let queue = QUEUES[rng.random_range(0..2)]; // chaos-hi or chaos-a; chaos-b holds dependents
    let prio = rng.random_range(0..=100);
    let roll = rng.random_range(0..100);
    let build = |b: rediq::TaskBuilder| b.priority(prio).build().expect("valid task");
    if mix.handlers && roll < 20 {
        let t = match roll % 4 {
            0 => task(Kind::Slow, queue, 0, rng.random_range(1000..3000)),
            1 => task(Kind::Panic, queue, 1, 0),
            2 => task(Kind::Hang, queue, 1, 0),
            // Outlasts the lease: the heartbeat must keep the lease alive meanwhile.
            _ => task(
                Kind::Block,
                queue,
                0,
                (mix.lease * 3 / 2).as_millis() as u64,
            ),
        };
        return Unit::One(build(t));
    }
    match roll {
        0..45 => {
            let mut b = task(Kind::Plain, queue, 0, rng.random_range(20..600));
            if rng.random_bool(0.25) {
                b = b.delay(Duration::from_millis(rng.random_range(200..2000)));
            }
            Unit::One(build(b))
        }
        45..62 => Unit::One(build(task(
            Kind::Flaky,
            queue,
            rng.random_range(1..=2),
            rng.random_range(20..300),
        ))),
        62..67 => Unit::One(build(task(Kind::Doomed, queue, 0, 5))),
        67..70 => Unit::One(build(task(Kind::Nonretry, queue, 0, 0))),
        70..80 => {
            // Delayed, so the holder is certainly still live when the duplicate arrives.
            let key = format!("u-{n}");
            let mk = |rng: &mut StdRng| {
                build(
                    task(Kind::Plain, queue, 0, 10)
                        .unique_key(&key)
                        .delay(Duration::from_millis(rng.random_range(300..1500))),
                )
            };
            let a = mk(rng);
            let b = mk(rng);
            Unit::Unique(Box::new((a, b)))
        }
        _ => {
            let doomed = rng.random_bool(0.15);
            let kind = if doomed { Kind::Doomed } else { Kind::Plain };
            let mut parents = vec![build(task(kind, "chaos-a", 0, 10))];
            if rng.random_bool(0.3) {
                parents.push(build(task(Kind::Flaky, "chaos-hi", 1, 10)));
            }
            let ids: Vec<&str> = parents.iter().map(|p| p.id.as_str()).collect();
            let child = build(task(Kind::Plain, "chaos-b", 0, 10).depends_on(&ids));
            Unit::Deps(parents, child)
        }
    }
}

impl Unit {
    async fn run(self, client: &Client, ledger: &Mutex<Ledger>, give_up: Instant) {
        match self {
            Unit::One(t) => {
                enqueue(client, ledger, t, &[], give_up).await;
            }
            Unit::Unique(pair) => {
                let (a, b) = *pair;
                let holder = a.id.clone();
                if enqueue(client, ledger, a, &[], give_up).await {
                    let accepted = enqueue(client, ledger, b, &[], give_up).await;
                    lock(ledger).unique_checked(&holder, accepted);
                }
            }
            Unit::Deps(parents, child) => {
                let mut parent_ids = Vec::new();
                for p in parents {
                    let id = p.id.clone();
                    if !enqueue(client, ledger, p, &[], give_up).await {
                        return; // never acknowledged: its dependent is not tried
                    }
                    parent_ids.push(id);
                }
                enqueue(client, ledger, child, &parent_ids, give_up).await;
            }
        }
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// Enqueues `t` until acknowledged; records it in the ledger. Returns whether it was written.
async fn enqueue(
    client: &Client,
    ledger: &Mutex<Ledger>,
    t: Task,
    parents: &[String],
    give_up: Instant,
) -> bool {
    let first_try_ms = crate::execlog::now_ms();
    loop {
        match client.enqueue(t.clone()).await {
            Ok(_) => {
                lock(ledger).acknowledged(&t, parents, false, first_try_ms);
                return true;
            }
            // Our own earlier try was written although its answer was lost.
            Err(Error::Duplicate { existing_id, .. }) if existing_id == t.id => {
                lock(ledger).acknowledged(&t, parents, true, first_try_ms);
                return true;
            }
            Err(Error::Duplicate { .. }) => {
                lock(ledger).refused_duplicate();
                return false;
            }
            Err(e @ Error::UnknownDependency { .. }) => {
                lock(ledger).enqueue_refused(&t, &e);
                return false;
            }
            // Anything else, `NotReplicated` included (written on the master, no replica
            // confirmed it in time): not acknowledged; the same task again, which the queue
            // writes at most once.
            Err(e) => {
                lock(ledger).enqueue_error(&e);
                if Instant::now() > give_up {
                    lock(ledger).gave_up(&t, parents, first_try_ms);
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

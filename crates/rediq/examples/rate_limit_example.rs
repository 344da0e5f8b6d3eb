//! Flow control: a queue limited to 2 tasks at once and 10 starts a second, across two
//! servers, a handler told to slow down by the service it calls, and fair share across
//! groups (tenants) with a limit per group.
//!
//! ```text
//! cargo run --example rate_limit_example
//! ```
//!
//! 30 tasks wait in `ratelimit-demo`; two servers with 5 slots each serve it. Without limits they
//! would run 10 at once and finish in a blink; with `QueueLimits { concurrency: Some(2), rate:
//! 10 per second }`, kept in Redis and enforced by both servers' fetches, at most 2 run at once
//! and about 10 start each second. One task's handler answers `Error::rate_limited(500 ms)` on
//! its first run: it goes back without using an attempt and runs again half a second later.
//!
//! Then groups: in `ratelimit-demo-groups` customer `big` has a backlog of 20 tasks, `vip` 6,
//! and customers `a`, `b`, `c` one each, enqueued last. The group rule allows each customer 1
//! task at a time, and an override gives `vip` 3. The queue serves its groups round-robin, so
//! `a`, `b` and `c` start within the first round instead of after `big`'s backlog, while `big`
//! never runs more than one at a time.
//!
//! Redis: `$REDIS_URL` if set; else the Redis answering on 127.0.0.1:6379; else a private
//! `redis-server` started for this run (and stopped when it ends, also on Ctrl-C or error).
//! `REDIQ_DEMO_PRIVATE=1` forces the private server. The demo uses its own queue, flushes it
//! and removes its limits before and after. Logs: `RUST_LOG` (default `info`), on stderr.

mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::redis_for_demo;
use rediq::{Client, Error, Inspector, QueueLimits, RateLimit, Task};
use tokio::sync::oneshot;

const QUEUE: &str = "ratelimit-demo";
const GROUPED: &str = "ratelimit-demo-groups";
const TASKS: usize = 30;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Counts the handlers running at once and records when each task started.
#[derive(Default)]
struct Meter {
    running: AtomicUsize,
    most: AtomicUsize,
    starts: Mutex<Vec<Instant>>,
    slowed: AtomicUsize,
}

struct CallApi(Arc<Meter>);

#[async_trait]
impl Handler for CallApi {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        let m = &self.0;
        let n: usize = task.payload_json()?;
        // Task 7's "API" answers 429 once: the task waits 500 ms, no attempt used.
        if n == 7 && m.slowed.fetch_add(1, Ordering::SeqCst) == 0 {
            println!("  task 7: the API said slow down; trying again in 500 ms");
            return Err(Error::rate_limited(Duration::from_millis(500)));
        }
        m.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
        let now = m.running.fetch_add(1, Ordering::SeqCst) + 1;
        m.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await; // the API call
        m.running.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs to stderr, filtered by RUST_LOG (default: info).
    common::init_logging("info");
    let (url, private_redis) = match redis_for_demo() {
        Ok(chosen) => chosen,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::from(1);
        }
    };
    let both = async {
        let limits_held = demo(&url).await?;
        Ok::<_, Box<dyn std::error::Error>>(groups(&url).await? && limits_held)
    };
    let result: Result<bool, Box<dyn std::error::Error>> = tokio::select! {
        r = both => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    // Leave nothing behind, whatever happened.
    if let Ok(i) = Inspector::connect(&url).await {
        let _ = i.flush_queue(QUEUE).await;
        let _ = i.set_queue_limits(QUEUE, &QueueLimits::default()).await;
        let _ = i.flush_queue(GROUPED).await;
        let _ = i.set_group_limits(GROUPED, &QueueLimits::default()).await;
        let _ = i.set_group_override(GROUPED, "vip", None).await;
    }
    drop(private_redis); // stops the private redis-server, if we started one
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Returns whether the limits held.
async fn demo(url: &str) -> Result<bool, Box<dyn std::error::Error>> {
    let client = Client::builder().redis_url(url).build().await?;
    let inspector = Inspector::from_client(&client);
    inspector.flush_queue(QUEUE).await?; // what an interrupted earlier run left
    let limits = QueueLimits {
        concurrency: Some(2),
        rate: Some(RateLimit {
            count: 10,
            period: Duration::from_secs(1),
        }),
    };
    client.set_queue_limits(QUEUE, &limits).await?;
    println!("Queue {QUEUE:?}: at most 2 at once, 10 starts a second, across every server.");
    let tasks: Vec<Task> = (0..TASKS)
        .map(|n| Task::builder("api:call").queue(QUEUE).payload(&n)?.build())
        .collect::<rediq::Result<_>>()?;
    client.enqueue_batch(tasks).await?;
    println!("Enqueued {TASKS} tasks; starting two servers with 5 slots each.");

    let meter = Arc::new(Meter::default());
    let began = Instant::now();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let mut mux = Mux::new();
        mux.handle("api:call", CallApi(meter.clone()));
        let state = ServerBuilder::new()
            .redis_url(url)
            .queues(&[QUEUE])
            .concurrency(5)
            .build()
            .await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(Server::from(state).run_until(mux, async {
            let _ = stopped.await;
        }));
        servers.push((stop, run));
    }
    let deadline = Instant::now() + TIMEOUT;
    while inspector.queue_stats(QUEUE).await?.processed_total < TASKS as u64 {
        if Instant::now() > deadline {
            return Err("the tasks did not finish in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (stop, run) in servers {
        let _ = stop.send(());
        run.await??;
    }

    let starts = meter
        .starts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut per_second = vec![0usize; 1 + began.elapsed().as_secs() as usize];
    for s in &starts {
        per_second[s.duration_since(began).as_secs() as usize] += 1;
    }
    println!("Starts per second: {per_second:?}");
    let most = meter.most.load(Ordering::SeqCst);
    println!("Most running at once: {most}");
    let s = inspector.queue_stats(QUEUE).await?;
    println!(
        "Done: {} completed, {} failed attempts (the slowed-down task used none).",
        s.processed_total, s.failed_total
    );
    // The bucket starts full (1 token at this rate), so a second holds at most 10 + 1.
    let ok = most <= 2 && per_second.iter().all(|&n| n <= 11) && s.failed_total == 0;
    println!(
        "{}",
        if ok {
            "The limits held."
        } else {
            "A limit did not hold!"
        }
    );
    Ok(ok)
}

/// Records, per group, when each task started and the most running at once.
#[derive(Default)]
struct Tenants {
    starts: Mutex<Vec<(String, Instant)>>,
    running: Mutex<std::collections::HashMap<String, usize>>,
    most: Mutex<std::collections::HashMap<String, usize>>,
}

struct Render(Arc<Tenants>);

#[async_trait]
impl Handler for Render {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        let t = &self.0;
        let g = task.options.group.clone().unwrap_or_default();
        t.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((g.clone(), Instant::now()));
        {
            let mut r = t.running.lock().unwrap_or_else(|p| p.into_inner());
            let now = r.entry(g.clone()).or_default();
            *now += 1;
            let mut m = t.most.lock().unwrap_or_else(|p| p.into_inner());
            let most = m.entry(g.clone()).or_default();
            *most = (*most).max(*now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the work
        *t.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(g)
            .or_default() -= 1;
        Ok(())
    }
}

/// Fair share: returns whether the small customers were served within the first round and
/// every group limit held.
async fn groups(url: &str) -> Result<bool, Box<dyn std::error::Error>> {
    let client = Client::builder().redis_url(url).build().await?;
    let inspector = Inspector::from_client(&client);
    inspector.flush_queue(GROUPED).await?;
    let one = QueueLimits {
        concurrency: Some(1),
        rate: None,
    };
    client.set_group_limits(GROUPED, &one).await?;
    let three = QueueLimits {
        concurrency: Some(3),
        rate: None,
    };
    client
        .set_group_override(GROUPED, "vip", Some(&three))
        .await?;
    println!();
    println!("Queue {GROUPED:?}: 1 task at a time per customer, 3 for customer vip.");
    let mut tasks = Vec::new();
    for (customer, n) in [("big", 20), ("vip", 6), ("a", 1), ("b", 1), ("c", 1)] {
        for i in 0..n {
            tasks.push(
                Task::builder("report:render")
                    .queue(GROUPED)
                    .group(customer)
                    .payload(&i)?
                    .build()?,
            );
        }
    }
    let total = tasks.len() as u64;
    client.enqueue_batch(tasks).await?;
    println!(
        "Enqueued 20 tasks for big, 6 for vip, then 1 each for a, b and c; one server, 4 slots."
    );
    let tenants = Arc::new(Tenants::default());
    let mut mux = Mux::new();
    mux.handle("report:render", Render(tenants.clone()));
    let state = ServerBuilder::new()
        .redis_url(url)
        .queues(&[GROUPED])
        .concurrency(4)
        .build()
        .await?;
    let began = Instant::now();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(Server::from(state).run_until(mux, async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + TIMEOUT;
    while inspector.queue_stats(GROUPED).await?.processed_total < total {
        if Instant::now() > deadline {
            return Err("the grouped tasks did not finish in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    run.await??;
    let starts = tenants
        .starts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let most = tenants
        .most
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let first = |g: &str| {
        starts
            .iter()
            .find(|(x, _)| x == g)
            .map_or(Duration::MAX, |(_, at)| at.duration_since(began))
    };
    for g in ["big", "vip", "a", "b", "c"] {
        println!(
            "  customer {g:<3}: first task started after {:>4} ms, at most {} running at once",
            first(g).as_millis(),
            most.get(g).copied().unwrap_or(0)
        );
    }
    let last_big = starts
        .iter()
        .filter(|(g, _)| g == "big")
        .map(|(_, at)| at.duration_since(began))
        .max()
        .unwrap_or_default();
    println!(
        "  (big's last task started after {} ms: without groups, a, b and c would have waited for it)",
        last_big.as_millis()
    );
    let small_first = ["a", "b", "c"]
        .iter()
        .all(|g| first(g) < Duration::from_millis(500));
    let ok = small_first
        && most.get("big").copied() == Some(1)
        && most.get("vip").is_some_and(|&n| (2..=3).contains(&n));
    println!(
        "{}",
        if ok {
            "Fair share and the group limits held."
        } else {
            "Fair share or a group limit did not hold!"
        }
    );
    Ok(ok)
}

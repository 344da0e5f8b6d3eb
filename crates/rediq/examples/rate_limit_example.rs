//! Flow control: a queue limited to 2 tasks at once and 10 starts a second, across two
//! servers, and a handler told to slow down by the service it calls.
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
//! Groups (fair share per tenant) are not in this release yet.
//!
//! Redis: `$REDIS_URL` if set; else the Redis answering on 127.0.0.1:6379; else a private
//! `redis-server` started for this run (and stopped when it ends, also on Ctrl-C or error).
//! `REDIQ_DEMO_PRIVATE=1` forces the private server. The demo uses its own queue, flushes it
//! and removes its limits before and after. Logs: `RUST_LOG` (default `warn`, so the output
//! stays readable).

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let (url, private_redis) = match redis_for_demo() {
        Ok(chosen) => chosen,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::from(1);
        }
    };
    let result = tokio::select! {
        r = demo(&url) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    // Leave nothing behind, whatever happened.
    if let Ok(i) = Inspector::connect(&url).await {
        let _ = i.flush_queue(QUEUE).await;
        let _ = i.set_queue_limits(QUEUE, &QueueLimits::default()).await;
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

//! Periodic tasks: registers an entry that fires every 2 seconds, runs a server for about 7
//! seconds while printing each firing, lists the entry, then removes it — also after an error
//! or Ctrl-C, and at start what a killed earlier run left (its entry and its queue
//! `cron-demo`).
//!
//! ```text
//! cargo run --example cron_example
//! ```
//!
//! Redis: `REDIS_URL`, else 127.0.0.1:6379, else a private `redis-server` started for the demo.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use async_trait::async_trait;
use rediq::display::utc;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::{Client, Inspector, Task};

struct Report;

#[async_trait]
impl Handler for Report {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        let body: serde_json::Value = task.payload_json()?;
        println!(
            "  fired: {} for {} (task {})",
            task.task_type, body["report"], task.id
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs to stderr, filtered by RUST_LOG (default: info).
    common::init_logging("info");
    rediq::testing::run_demo(|url| async move { demo(&url).await }).await
}

async fn demo(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    // Ctrl-C is caught from here on, so the entry is always removed: a periodic entry left
    // behind would keep firing on a shared Redis.
    let interrupted = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            signal.notify_one();
        }
    });
    let client = Client::builder().redis_url(url).build().await?;
    let inspector = Inspector::from_client(&client);
    // What an earlier, killed run may have left: its entry and its tasks.
    inspector.remove_cron(ENTRY).await?;
    inspector.flush_queue(QUEUE).await?;

    let outcome = run(url, &client, &inspector, interrupted).await;
    inspector.remove_cron(ENTRY).await?;
    inspector.flush_queue(QUEUE).await?;
    println!("Removed entry {ENTRY:?} and the demo's queue.");
    outcome
}

/// The demo's entry (its unique key names it) and queue.
const ENTRY: &str = "cron-demo-report";
const QUEUE: &str = "cron-demo";

async fn run(
    url: &str,
    client: &Client,
    inspector: &Inspector,
    interrupted: std::sync::Arc<tokio::sync::Notify>,
) -> Result<(), Box<dyn std::error::Error>> {
    // Seconds first: every 2 seconds. `0 2 * * *`, `@daily` or `@every 30s` work the same way.
    let task = Task::builder("report:generate")
        .queue(QUEUE)
        .unique_key(ENTRY)
        .payload(&serde_json::json!({ "report": "sales" }))?
        .cron("*/2 * * * * *")
        .build()?;
    let id = client.enqueue(task).await?;
    println!("Registered periodic entry {id:?}; running a server for 7 s (Ctrl-C stops it)…");

    let state = ServerBuilder::new()
        .redis_url(url)
        .queues(&[QUEUE])
        .build()
        .await?;
    let mut mux = Mux::new();
    mux.handle("report:generate", Report);
    Server::from(state)
        .run_until(mux, async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(7)) => {}
                _ = interrupted.notified() => println!("Interrupted."),
            }
        })
        .await?;

    let when = |ms: Option<u64>| ms.map_or("-".to_string(), |ms| format!("{} UTC", utc(ms)));
    for e in inspector.cron_entries().await? {
        println!(
            "Entry {:?} on queue {:?}: {:?}, last run {}, next run {}",
            e.id,
            e.queue,
            e.expr,
            when(e.last_run_ms),
            when(e.next_run_ms)
        );
    }
    Ok(())
}

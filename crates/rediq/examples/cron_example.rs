//! Periodic tasks: registers an entry that fires every 2 seconds, runs a server for about 7
//! seconds while printing each firing, lists the entry, then removes it.
//!
//! ```text
//! cargo run --example cron_example
//! ```
//!
//! Redis: `REDIS_URL`, else 127.0.0.1:6379, else a private `redis-server` started for the demo.

use std::process::ExitCode;
use std::time::Duration;

use async_trait::async_trait;
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
    rediq::testing::run_demo(|url| async move { demo(&url).await }).await
}

async fn demo(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder().redis_url(url).build().await?;
    // Seconds first: every 2 seconds. `0 2 * * *`, `@daily` or `@every 30s` work the same way.
    let task = Task::builder("report:generate")
        .queue("cron-demo")
        .unique_key("cron-demo-report")
        .payload(&serde_json::json!({ "report": "sales" }))?
        .cron("*/2 * * * * *")
        .build()?;
    let id = client.enqueue(task).await?;
    println!("Registered periodic entry {id:?}; running a server for 7 s…");

    let state = ServerBuilder::new()
        .redis_url(url)
        .queues(&["cron-demo"])
        .build()
        .await?;
    let mut mux = Mux::new();
    mux.handle("report:generate", Report);
    Server::from(state)
        .run_until(mux, tokio::time::sleep(Duration::from_secs(7)))
        .await?;

    let inspector = Inspector::from_client(&client);
    for e in inspector.cron_entries().await? {
        println!(
            "Entry {:?} on queue {:?}: {:?}, last run {:?} ms, next run {:?} ms",
            e.id, e.queue, e.expr, e.last_run_ms, e.next_run_ms
        );
    }
    inspector.remove_cron(&id).await?;
    println!("Removed entry {id:?}.");
    Ok(())
}

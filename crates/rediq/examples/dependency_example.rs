//! Task dependencies: a chain A → B → C, and a fan-in where `report` waits for both `extract`
//! and `transform` (in another queue). Prints the order the tasks ran in, then shows that a
//! failing dependency sends its dependent to the dead-letter queue.
//!
//! ```text
//! cargo run --example dependency_example
//! ```
//!
//! Redis: `REDIS_URL`, else 127.0.0.1:6379, else a private `redis-server` started for the demo.

mod common;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::{Client, Error, Inspector, Task, TaskState};

/// Prints each task and remembers the order; `step:fail` fails for good.
struct Step(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Handler for Step {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        let name: String = task.payload_json()?;
        println!("  ran {name:<10} (queue {}, task {})", task.queue, task.id);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(name);
        if task.task_type == "step:fail" {
            return Err(Error::non_retryable("this step always fails"));
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs to stderr, filtered by RUST_LOG (default: info).
    common::init_logging("info");
    rediq::testing::run_demo(|url| async move { demo(&url).await }).await
}

fn step(name: &str, queue: &str) -> rediq::Result<rediq::TaskBuilder> {
    Task::builder("step").queue(queue).payload(&name)
}

async fn demo(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder().redis_url(url).build().await?;
    let inspector = Inspector::from_client(&client);
    // Start from empty demo queues (a shared Redis may hold an earlier run's tasks).
    for q in ["deps-demo", "deps-demo-etl"] {
        inspector.flush_queue(q).await?;
    }

    // A chain: B waits for A, C waits for B. Enqueued in one go, before any server runs.
    let a = client.enqueue(step("A", "deps-demo")?.build()?).await?;
    let b = client
        .enqueue(step("B", "deps-demo")?.depends_on(&[&a]).build()?)
        .await?;
    let _c = client
        .enqueue(step("C", "deps-demo")?.depends_on(&[&b]).build()?)
        .await?;

    // A fan-in across queues: `report` waits for `extract` and `transform`.
    let extract = client
        .enqueue(step("extract", "deps-demo")?.build()?)
        .await?;
    let transform = client
        .enqueue(step("transform", "deps-demo-etl")?.build()?)
        .await?;
    let _report = client
        .enqueue(
            step("report", "deps-demo")?
                .depends_on(&[&extract, &transform])
                .build()?,
        )
        .await?;

    // A failing dependency: its dependent never runs and is dead-lettered.
    let broken = client
        .enqueue(
            Task::builder("step:fail")
                .queue("deps-demo")
                .payload(&"broken")?
                .build()?,
        )
        .await?;
    let _orphan = client
        .enqueue(
            step("orphan", "deps-demo")?
                .depends_on(&[&broken])
                .build()?,
        )
        .await?;

    let waiting = inspector.queue_stats("deps-demo").await?.waiting;
    println!("Enqueued 8 tasks; {waiting} of them wait for dependencies. Running a server…");

    let order = Arc::new(Mutex::new(Vec::new()));
    let state = ServerBuilder::new()
        .redis_url(url)
        .queues(&["deps-demo", "deps-demo-etl"])
        .concurrency(4)
        .build()
        .await?;
    let mut mux = Mux::new();
    mux.handle("step", Step(order.clone()));
    mux.handle("step:fail", Step(order.clone()));
    Server::from(state)
        .run_until(mux, tokio::time::sleep(Duration::from_secs(3)))
        .await?;

    let order = order.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let pos = |n: &str| order.iter().position(|o| o == n);
    println!("Order: {}", order.join(" → "));
    let chain_ok = pos("A") < pos("B") && pos("B") < pos("C") && pos("C").is_some();
    let fan_in_ok = pos("report") > pos("extract") && pos("report") > pos("transform");
    println!(
        "Chain A → B → C in order: {chain_ok}; report after extract and transform: {fan_in_ok}"
    );
    for dead in inspector.list("deps-demo", TaskState::Dead, 10).await? {
        let name: String = dead.payload_json()?;
        println!(
            "Dead: {name} ({}): {}",
            dead.id,
            dead.last_error.unwrap_or_default()
        );
    }
    // Leave nothing behind on a shared Redis.
    for q in ["deps-demo", "deps-demo-etl"] {
        inspector.flush_queue(q).await?;
    }
    if chain_ok && fan_in_ok && pos("orphan").is_none() {
        Ok(())
    } else {
        Err("tasks did not run in dependency order".into())
    }
}

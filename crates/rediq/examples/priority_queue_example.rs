//! Priorities: 0 runs first, 100 last; equal priorities run in enqueue order.
//!
//! ```text
//! cargo run --example priority_queue_example
//! ```
//!
//! Five tasks are enqueued with priorities 100, 50, 0, 0, 75 before a server with concurrency 1
//! starts; it runs them as 0, 0, 50, 75, 100.
//!
//! Redis: `$REDIS_URL` if set; else the Redis answering on 127.0.0.1:6379; else a private
//! `redis-server` started for this run (and stopped when it ends, also on Ctrl-C or error).
//! `REDIQ_DEMO_PRIVATE=1` forces the private server. Logs: `RUST_LOG` (default `info`).

mod common;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::redis_for_demo;
use rediq::{Client, Inspector, Task};
use tokio::sync::{oneshot, watch};

const QUEUE: &str = "priority-demo";
const PRIORITIES: [i32; 5] = [100, 50, 0, 0, 75];
const TIMEOUT: Duration = Duration::from_secs(15);

/// Records the (priority, label) of each task of this run, in the order they ran.
struct OrderHandler {
    run: String,
    ran: Arc<Mutex<Vec<(i32, String)>>>,
}

#[async_trait]
impl Handler for OrderHandler {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        let body: serde_json::Value = task.payload_json()?;
        if body["run"] != self.run.as_str() {
            return Ok(()); // left over from an earlier, interrupted run
        }
        let label = body["label"].as_str().unwrap_or("?").to_string();
        let mut ran = self.ran.lock().unwrap_or_else(|p| p.into_inner());
        ran.push((task.options.priority, label.clone()));
        println!(
            "  ran #{}: priority {:>3}  ({label})",
            ran.len(),
            task.options.priority
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs to stderr, filtered by RUST_LOG (default: info).
    common::init_logging("info");

    // Ctrl-C from here on is caught (not fatal), so the private Redis is always stopped.
    let (interrupt_tx, interrupt) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = interrupt_tx.send(true);
        }
    });

    let (url, private_redis) = match redis_for_demo() {
        Ok(chosen) => chosen,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::from(1);
        }
    };
    let result = demo(&url, interrupt).await;
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

/// Returns whether the tasks ran in priority order.
async fn demo(
    url: &str,
    mut interrupt: watch::Receiver<bool>,
) -> Result<bool, Box<dyn std::error::Error>> {
    let run = format!("{}-{}", std::process::id(), now_ms());
    let ran = Arc::new(Mutex::new(Vec::new()));

    let setup = async {
        let client = Client::builder().redis_url(url).build().await?;
        // The demo's own queue, emptied of what an interrupted earlier run may have left.
        Inspector::from_client(&client).flush_queue(QUEUE).await?;
        println!("Enqueueing into queue {QUEUE:?}, before any server runs:");
        for (i, &priority) in PRIORITIES.iter().enumerate() {
            let label = format!("enqueued {}", ordinal(i + 1));
            let task = Task::builder("demo:priority")
                .queue(QUEUE)
                .priority(priority)
                .payload(&serde_json::json!({"run": run, "label": label}))?
                .build()?;
            client.enqueue(task).await?;
            println!("  priority {priority:>3}  ({label})");
        }
        let mut mux = Mux::new();
        mux.handle(
            "demo:priority",
            OrderHandler {
                run: run.clone(),
                ran: ran.clone(),
            },
        );
        // Concurrency 1: one task at a time, so the run order is the queue's order.
        let state = ServerBuilder::new()
            .redis_url(url)
            .queues(&[QUEUE])
            .concurrency(1)
            .build()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>((Inspector::from_client(&client), state, mux))
    };
    let (inspector, state, mux) = tokio::select! {
        ready = setup => ready?,
        Ok(_) = interrupt.wait_for(|i| *i) => {
            eprintln!("Interrupted.");
            return Ok(false);
        }
    };

    println!("Starting a server with concurrency 1:");
    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(Server::from(state).run_until(mux, async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::sleep(TIMEOUT);
    tokio::pin!(deadline);
    let mut interrupted = false;
    while ran.lock().unwrap_or_else(|p| p.into_inner()).len() < PRIORITIES.len() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = &mut deadline => break,
            Ok(_) = interrupt.wait_for(|i| *i) => { interrupted = true; break }
            finished = &mut server => {
                return Err(format!("the server stopped early: {:?}", finished?).into());
            }
        }
    }
    let _ = stop.send(());
    server.await??;

    let ran = ran.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let got: Vec<i32> = ran.iter().map(|(p, _)| *p).collect();
    let mut want = PRIORITIES.to_vec();
    want.sort_unstable();
    let stats = inspector.queue_stats(QUEUE).await?;
    println!(
        "Run order: {got:?} (expected {want:?}); queue now: pending {}, dead {}.",
        stats.pending, stats.dead
    );
    if interrupted {
        eprintln!("Interrupted.");
        return Ok(false);
    }
    if got != want {
        eprintln!("Unexpected order (or not all tasks ran within {TIMEOUT:?}).");
        return Ok(false);
    }
    let ties: Vec<&str> = ran
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, l)| l.as_str())
        .collect();
    if ties != ["enqueued 3rd", "enqueued 4th"] {
        eprintln!("The two priority-0 tasks ran out of enqueue order: {ties:?}.");
        return Ok(false);
    }
    println!("The two priority-0 tasks ran in enqueue order: {ties:?}.");
    Ok(true)
}

/// Milliseconds since the epoch: with the pid, tells this run's tasks from leftovers.
fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn ordinal(n: usize) -> String {
    let suffix = match n {
        1 => "st",
        2 => "nd",
        3 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

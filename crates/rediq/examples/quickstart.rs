//! First run of Rediq: enqueue a few tasks, process them, print what happened.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Redis: `$REDIS_URL` if set; else the Redis answering on 127.0.0.1:6379; else a private
//! `redis-server` started for this run (and stopped when it ends, also on Ctrl-C or error).
//! `REDIQ_DEMO_PRIVATE=1` forces the private server. Logs: `RUST_LOG` (default `info`).
//!
//! The demo uses its own queue, `quickstart`, so it never touches the tasks of other
//! applications on a shared Redis.

mod common;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::redis_for_demo;
use rediq::{Client, Inspector, Task};
use tokio::sync::{oneshot, watch};

const QUEUE: &str = "quickstart";
const TIMEOUT: Duration = Duration::from_secs(15);

/// The types of the tasks the handlers ran, in order.
type Log = Arc<Mutex<Vec<String>>>;

struct Recorder {
    log: Log,
    start: Instant,
}

impl Recorder {
    fn record(&self, task: &Task, what: String) {
        let at = self.start.elapsed().as_secs_f64();
        // The id is a UUID v7: it tells when the task was created.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let waited = now_ms.saturating_sub(task.created_at_ms().unwrap_or(now_ms));
        let line = format!(
            "  [{at:5.2}s] processed {:<16} priority {:>3}  {waited:>4} ms after enqueue  {what}",
            task.task_type, task.options.priority
        );
        println!("{}", line.trim_end());
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task.task_type.clone());
    }
}

struct EmailHandler(Recorder);

#[async_trait]
impl Handler for EmailHandler {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        let body: serde_json::Value = task.payload_json()?;
        self.0.record(
            task,
            format!(
                "to {} — {:?}",
                body["to"].as_str().unwrap_or("?"),
                body["subject"].as_str().unwrap_or("")
            ),
        );
        Ok(())
    }
}

struct PrintHandler(Recorder);

#[async_trait]
impl Handler for PrintHandler {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        self.0.record(task, String::new());
        Ok(())
    }
}

enum Outcome {
    Done,
    TimedOut,
    Interrupted,
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
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::TimedOut) => {
            eprintln!("Not every task was processed within {TIMEOUT:?}.");
            ExitCode::from(1)
        }
        Ok(Outcome::Interrupted) => {
            eprintln!("Interrupted.");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn demo(
    url: &str,
    mut interrupt: watch::Receiver<bool>,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    println!("Using Redis at {}", mask(url));
    let start = Instant::now();
    let log: Log = Arc::default();
    let setup = async {
        let client = Client::builder().redis_url(url).build().await?;
        let inspector = Inspector::from_client(&client);
        // The demo's own queue, emptied of what an interrupted earlier run may have left.
        inspector.flush_queue(QUEUE).await?;
        let before = inspector.queue_stats(QUEUE).await?.processed_total;

        // 1. Enqueue: JSON emails, an urgent payment (priority 0 runs first), a delayed report.
        let tasks = vec![
            Task::builder("email:send")
                .queue(QUEUE)
                .payload(
                    &serde_json::json!({"to": "user@example.com", "subject": "欢迎！ Welcome!"}),
                )?
                .build()?,
            Task::builder("email:send")
                .queue(QUEUE)
                .payload(&serde_json::json!({"to": "ops@example.com", "subject": "Daily digest"}))?
                .build()?,
            Task::builder("payment:charge")
                .queue(QUEUE)
                .priority(0)
                .build()?,
            Task::builder("report:generate")
                .queue(QUEUE)
                .delay(Duration::from_secs(1))
                .build()?,
        ];
        let total = tasks.len() as u64;
        println!("Enqueueing {total} tasks into queue {QUEUE:?}:");
        for task in tasks {
            let (kind, priority, delay) = (
                task.task_type.clone(),
                task.options.priority,
                task.options.delay,
            );
            let id = client.enqueue(task).await?;
            let delay = delay.map_or("none".to_string(), |d| format!("{d:?}"));
            println!("  {kind:<16} priority {priority:>3}  delay {delay:<4}  id {id}");
        }

        // 2. A server for the queue, with a handler per task type. Concurrency 1 runs one task
        //    at a time, so the output shows the priority order: the payment (0) comes first.
        let recorder = || Recorder {
            log: log.clone(),
            start,
        };
        let mut mux = Mux::new();
        mux.handle("email:send", EmailHandler(recorder()))
            .handle("payment:charge", PrintHandler(recorder()))
            .handle("report:generate", PrintHandler(recorder()));
        let state = ServerBuilder::new()
            .redis_url(url)
            .queues(&[QUEUE])
            .concurrency(1)
            .build()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>((inspector, before, total, state, mux))
    };
    let (inspector, before, total, state, mux) = tokio::select! {
        ready = setup => ready?,
        Ok(_) = interrupt.wait_for(|i| *i) => return Ok(Outcome::Interrupted),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(Server::from(state).run_until(mux, async {
        let _ = stopped.await;
    }));
    println!("Server started; processing:");

    // 3. Wait until all are processed (acknowledged), the timeout passes, or Ctrl-C.
    let deadline = tokio::time::sleep(TIMEOUT);
    tokio::pin!(deadline);
    let outcome = loop {
        let handled = log.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
        let processed = inspector
            .queue_stats(QUEUE)
            .await?
            .processed_total
            .saturating_sub(before);
        if handled >= total && processed >= total {
            break Outcome::Done;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = &mut deadline => break Outcome::TimedOut,
            Ok(_) = interrupt.wait_for(|i| *i) => break Outcome::Interrupted,
            finished = &mut server => {
                // The server only stops on its own when it fails.
                return Err(format!("the server stopped early: {:?}", finished?).into());
            }
        }
    };

    // 4. Graceful shutdown: running handlers finish, acknowledgements are flushed.
    println!("Shutting down gracefully…");
    let _ = stop.send(());
    server.await??;

    let stats = inspector.queue_stats(QUEUE).await?;
    let order = log.lock().unwrap_or_else(|p| p.into_inner()).join(" → ");
    println!("Run order: {order}");
    println!(
        "Summary: {} of {total} tasks processed in {:.2}s; queue {QUEUE:?} now: pending {}, active {}, delayed {}, retry {}, dead {}; processed ever {}, failed attempts ever {}.",
        stats.processed_total.saturating_sub(before),
        start.elapsed().as_secs_f64(),
        stats.pending,
        stats.active,
        stats.delayed,
        stats.retry,
        stats.dead,
        stats.processed_total,
        stats.failed_total,
    );
    Ok(outcome)
}

/// The URL with any password hidden, for printing.
fn mask(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}****@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

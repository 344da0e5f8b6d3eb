//! Middleware: a custom hook beside the built-in logging and metrics middlewares.
//!
//! The custom `AuditMiddleware` sees every task before its handler (it skips tasks of a
//! switched-off tenant and refuses tasks without a tenant) and after it (with the outcome, the
//! attempt and the duration). `after` hooks run in reverse order of `before`. The demo enqueues
//! four tasks, runs a server until they are settled, and prints what the hook saw.
//!
//! ```text
//! RUST_LOG=info cargo run --example middleware_test
//! ```
//!
//! Redis: `REDIS_URL`, else 127.0.0.1:6379, else a private `redis-server` started for the demo.

mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rediq::middleware::{
    Before, Finished, LoggingMiddleware, MetricsMiddleware, Middleware, MiddlewareChain, RunInfo,
};
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::{Client, Error, Inspector, Task};

const QUEUE: &str = "middleware-demo";

/// Checks the tenant of every task and reports how each run ended.
struct AuditMiddleware {
    seen: AtomicU32,
}

#[async_trait]
impl Middleware for AuditMiddleware {
    fn name(&self) -> &str {
        "audit"
    }

    async fn before(&self, task: &Task, run: &RunInfo) -> rediq::Result<Before> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let body: serde_json::Value = task.payload_json()?;
        println!(
            "  audit.before {:<12} attempt {}",
            task.task_type, run.attempt
        );
        match body["tenant"].as_str() {
            None => Err(Error::non_retryable("task has no tenant")),
            Some("suspended") => Ok(Before::skip("tenant is suspended")),
            Some(_) => Ok(Before::Continue),
        }
    }

    async fn after(&self, task: &Task, run: &RunInfo, finished: &Finished<'_>) {
        println!(
            "  audit.after  {:<12} attempt {} → {} in {:.2} ms",
            task.task_type,
            run.attempt,
            finished.outcome.as_str(),
            finished.duration.as_secs_f64() * 1000.0
        );
    }
}

struct Work;

#[async_trait]
impl Handler for Work {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if task.task_type == "report:fail" && task.retry_cnt == 0 {
            return Err(Error::handler("the printer is on fire"));
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

async fn demo(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder().redis_url(url).build().await?;
    let inspector = Inspector::from_client(&client);
    inspector.flush_queue(QUEUE).await?;
    let before = inspector.queue_stats(QUEUE).await?;

    let tasks = [
        ("report:ok", serde_json::json!({"tenant": "acme"})),
        ("report:fail", serde_json::json!({"tenant": "acme"})),
        ("report:skip", serde_json::json!({"tenant": "suspended"})),
        ("report:orphan", serde_json::json!({})),
    ];
    for (ty, payload) in &tasks {
        client
            .enqueue(Task::builder(*ty).queue(QUEUE).payload(payload)?.build()?)
            .await?;
    }

    let audit = Arc::new(AuditMiddleware {
        seen: AtomicU32::new(0),
    });
    let chain = MiddlewareChain::new()
        .add(LoggingMiddleware::new())
        .add(MetricsMiddleware::new())
        .add(SharedAudit(audit.clone()));
    let state = ServerBuilder::new()
        .redis_url(url)
        .queues(&[QUEUE])
        .concurrency(1)
        .retry_delay_fn(|_, _| Duration::from_millis(200))
        .middleware(chain)
        .build()
        .await?;
    let mut server = Server::from(state);
    server.enable_metrics("127.0.0.1:0".parse()?);
    let metrics = server
        .metrics_addr()
        .ok_or("metrics endpoint did not bind")?;
    let mut mux = Mux::new();
    for (ty, _) in &tasks {
        mux.handle(*ty, Work);
    }

    println!(
        "Running {} tasks through logging → metrics → audit:",
        tasks.len()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(mux, async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = inspector.queue_stats(QUEUE).await?;
        if s.processed_total - before.processed_total == 3 && s.dead == 1 && s.active == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("tasks not settled in 15 s: {s:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    running.await??;

    let dead = inspector.list(QUEUE, rediq::TaskState::Dead, 10).await?;
    println!(
        "The audit hook saw {} runs; the metrics endpoint was http://{metrics}/metrics.",
        audit.seen.load(Ordering::SeqCst)
    );
    for t in dead {
        println!(
            "Dead-lettered: {} ({})",
            t.task_type,
            t.last_error.unwrap_or_default()
        );
    }
    // Leave nothing behind on a shared Redis.
    inspector.flush_queue(QUEUE).await?;
    Ok(())
}

/// Lets the demo keep a handle on the middleware it gives to the chain.
struct SharedAudit(Arc<AuditMiddleware>);

#[async_trait]
impl Middleware for SharedAudit {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn before(&self, task: &Task, run: &RunInfo) -> rediq::Result<Before> {
        self.0.before(task, run).await
    }
    async fn after(&self, task: &Task, run: &RunInfo, finished: &Finished<'_>) {
        self.0.after(task, run, finished).await
    }
}

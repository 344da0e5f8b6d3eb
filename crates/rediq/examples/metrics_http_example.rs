//! The Prometheus endpoint: a server with `enable_metrics` runs a small workload (successes, a
//! retry, a dead-letter) and the demo scrapes its own `/metrics` and `/healthz` over HTTP and
//! prints the rediq lines.
//!
//! ```text
//! cargo run --example metrics_http_example                  # port 9090
//! METRICS_ADDR=127.0.0.1:0 cargo run --example metrics_http_example
//! ```
//!
//! Set `KEEP_RUNNING=1` to keep the server up afterwards (Ctrl-C stops it), e.g. to point a
//! Prometheus at it. Redis: `REDIS_URL`, else 127.0.0.1:6379, else a private `redis-server`.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use async_trait::async_trait;
use rediq::middleware::{MetricsMiddleware, MiddlewareChain};
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::{Client, Error, Inspector, Task};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const QUEUE: &str = "metrics-demo";

struct Mail;

#[async_trait]
impl Handler for Mail {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        match task.task_type.as_str() {
            "email:flaky" if task.retry_cnt == 0 => Err(Error::handler("smtp said 451")),
            "email:bounce" => Err(Error::non_retryable("mailbox does not exist")),
            _ => Ok(()),
        }
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

    let state = ServerBuilder::new()
        .redis_url(url)
        .queues(&[QUEUE])
        .retry_delay_fn(|_, _| Duration::from_millis(100))
        .middleware(MiddlewareChain::new().add(MetricsMiddleware::new()))
        .build()
        .await?;
    let mut server = Server::from(state);
    let addr = std::env::var("METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9090".into());
    server.enable_metrics(addr.parse()?);
    let addr = server
        .metrics_addr()
        .ok_or_else(|| format!("cannot listen on {addr} (taken? set METRICS_ADDR)"))?;
    // Only now that the port is ours does the demo touch Redis: its own queue, emptied of
    // what an earlier run left.
    inspector.flush_queue(QUEUE).await?;
    let before = inspector.queue_stats(QUEUE).await?;
    let mut mux = Mux::new();
    for ty in ["email:send", "email:flaky", "email:bounce"] {
        mux.handle(ty, Mail);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(mux, async {
        let _ = stopped.await;
    }));

    let mut batch = Vec::new();
    for _ in 0..20 {
        batch.push(Task::builder("email:send").queue(QUEUE).build()?);
    }
    batch.push(Task::builder("email:flaky").queue(QUEUE).build()?);
    batch.push(Task::builder("email:bounce").queue(QUEUE).build()?);
    client.enqueue_batch(batch).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = inspector.queue_stats(QUEUE).await?;
        if s.processed_total - before.processed_total == 21 && s.dead == 1 && s.active == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("tasks not settled in 15 s: {s:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await; // the last counters follow the acks

    let (status, _) = get(addr, "/healthz").await?;
    println!("GET http://{addr}/healthz → {status}");
    let (status, body) = get(addr, "/metrics").await?;
    println!("GET http://{addr}/metrics → {status}; the series with values:");
    for line in body.lines() {
        let zero = line.ends_with(" 0");
        if line.starts_with("rediq_") && !line.contains("_bucket{") && !zero {
            println!("  {line}");
        }
    }

    if std::env::var("KEEP_RUNNING").is_ok_and(|v| v == "1") {
        println!("Serving http://{addr}/metrics until Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(());
    running.await??;
    inspector.flush_queue(QUEUE).await?;
    Ok(())
}

/// A bare HTTP/1.1 GET, to keep the example free of an HTTP client dependency.
async fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    Ok((status, body.to_string()))
}

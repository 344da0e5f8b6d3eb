//! How fast the web UI's pages are with 1,000 queues and 1,000,000 tasks, and how many Redis
//! commands each costs: the figures of docs/web.md.
//!
//! ```text
//! cargo run --release --features web --example web_scale
//! ```
//!
//! It starts a private `redis-server` on a free port (never 6379) and fills it: 999 queues of
//! 500 pending tasks each, and a queue `big` with 10,000 dead tasks and 500,000 pending ones
//! (1,009,500 tasks). Then it renders each page `--runs` times through the router, in-process
//! (no HTTP, so the time is the handler's: its Redis reads over loopback and the rendering),
//! and prints the median and the slowest time and the Redis commands the page cost
//! (`total_commands_processed` before and after, less the `INFO` that reads it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use http_body_util::BodyExt;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::RedisServer;
use rediq::web::{router, WebConfig};
use rediq::{async_trait, Client, Inspector, Task};
use tower::ServiceExt;

#[derive(Parser, Debug)]
#[command(about = "Render time and Redis commands of the web UI's pages at scale")]
struct Args {
    /// Small queues besides `big`.
    #[arg(long, default_value_t = 999)]
    queues: usize,
    /// Pending tasks in each small queue.
    #[arg(long, default_value_t = 500)]
    per_queue: usize,
    /// Pending tasks in `big`.
    #[arg(long, default_value_t = 500_000)]
    big: usize,
    /// Dead tasks in `big`.
    #[arg(long, default_value_t = 10_000)]
    dead: usize,
    /// Renders per page (the median and the slowest are printed).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Always fails: its tasks (no retries) go to the dead-letter queue.
struct Fail(Arc<AtomicU64>);

#[async_trait]
impl Handler for Fail {
    async fn handle(&self, _task: &Task) -> rediq::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(rediq::Error::non_retryable("card declined"))
    }
}

fn task(queue: &str, n: usize, retries: u32) -> Task {
    Task::builder("payment:charge")
        .queue(queue)
        .max_retry(retries)
        .payload(&serde_json::json!({ "order": n, "customer": format!("cust-{}", n % 9973) }))
        .expect("a JSON payload")
        .build()
        .expect("a valid task")
}

/// Enqueues `n` tasks to `queue` in batches of 1,000, 4 batches in flight.
async fn fill(client: &Client, queue: &str, n: usize, retries: u32) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let batches: Vec<Vec<Task>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| c.iter().map(|&k| task(queue, k, retries)).collect())
        .collect();
    for group in batches.chunks(4) {
        let sent =
            futures::future::try_join_all(group.iter().map(|b| client.enqueue_batch(b.clone())))
                .await
                .expect("enqueued");
        ids.extend(sent.into_iter().flatten());
    }
    ids
}

async fn commands(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(c)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let redis = RedisServer::start();
    let url = redis.url();
    let client = Client::builder()
        .redis_url(&url)
        .build()
        .await
        .expect("client");
    let inspector = Inspector::connect(&url).await.expect("inspector");
    let began = Instant::now();

    // `big`: dead tasks first (a server fails them), then the pending ones.
    fill(&client, "big", args.dead, 0).await;
    let failed = Arc::new(AtomicU64::new(0));
    let state = ServerBuilder::new()
        .redis_url(&url)
        .queues(&["big"])
        .concurrency(100)
        .build()
        .await
        .expect("server");
    let mut mux = Mux::new();
    mux.handle("payment:charge", Fail(failed.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::from(state).run_until(mux, async {
        let _ = stopped.await;
    }));
    while inspector.queue_stats("big").await.expect("stats").dead < args.dead as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    inspector.pause_queue("big").await.expect("pause");
    let _ = stop.send(());
    server.await.expect("joined").expect("server ran");
    let big_ids = fill(&client, "big", args.big, 3).await;
    for q in 1..=args.queues {
        fill(&client, &format!("q{q:04}"), args.per_queue, 3).await;
    }
    let total = args.dead + args.big + args.queues * args.per_queue;
    println!(
        "filled {} queues, {total} tasks in {:.0?}",
        args.queues + 1,
        began.elapsed()
    );

    let dead_id = inspector
        .list("big", rediq::TaskState::Dead, 1)
        .await
        .expect("dead")[0]
        .id
        .clone();
    let middle = &big_ids[big_ids.len() / 2];
    let last_page = args.big / 50 - 1;
    let app = router(inspector.clone(), WebConfig::default());
    let pages = [
        ("overview, page 1 (50 queues)", "/".to_string()),
        (
            "overview, last page",
            format!("/?page={}", (args.queues + 1) / 50),
        ),
        ("overview, filtered by name", "/?q=q09".to_string()),
        ("queue big, pending page 1", "/queues/big".to_string()),
        (
            "queue big, pending, last page",
            format!("/queues/big?state=pending&page={last_page}"),
        ),
        (
            "queue big, dead page 1",
            "/queues/big?state=dead".to_string(),
        ),
        (
            "search big's pending payloads (one page)",
            "/queues/big/search?text=cust-42%7D&state=pending".to_string(),
        ),
        (
            "search big's dead errors (one page)",
            "/queues/big/search?text=declined&state=dead".to_string(),
        ),
        (
            "task in the middle of big's pending",
            format!("/queues/big/tasks/{middle}"),
        ),
        ("dead task of big", format!("/queues/big/tasks/{dead_id}")),
        (
            "task by id, any queue (/search?id=)",
            format!("/search?id={middle}"),
        ),
        ("servers", "/servers".to_string()),
        ("cron", "/cron".to_string()),
    ];
    let mut stats = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection for INFO");
    println!("| page | median | slowest | Redis commands | bytes |");
    println!("|---|---:|---:|---:|---:|");
    for (name, path) in pages {
        let mut times = Vec::new();
        let (mut cmds, mut size) = (0, 0);
        for _ in 0..args.runs {
            let before = commands(&mut stats).await;
            let t = Instant::now();
            let res = app
                .clone()
                .oneshot(
                    Request::builder()
                        .uri(&path)
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("response");
            let status = res.status();
            let body = res.into_body().collect().await.expect("body").to_bytes();
            times.push(t.elapsed());
            assert!(
                status == StatusCode::OK || status == StatusCode::SEE_OTHER,
                "{path}: {status}"
            );
            cmds = commands(&mut stats).await - before - 1;
            size = body.len();
        }
        times.sort();
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {cmds} | {size} |",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0,
        );
    }
}

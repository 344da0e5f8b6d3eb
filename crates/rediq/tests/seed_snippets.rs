//! Every Rust snippet of the seed README (README.zh.md), copied unchanged, so that the README's
//! promises are checked by the compiler. Each snippet is the body of its own `snippet_*`
//! function (marked `#[rustfmt::skip]` so it stays exactly as printed); the consumer snippet's
//! `use` lines and its `EmailHandler` live at module level because the handler is an item.
//!
//! The tests at the bottom run the producer and consumer snippets against a private
//! redis-server (only the URL is substituted, and `run` becomes `run_until` so the server
//! stops), run the builder-only snippets, and run the middleware and metrics snippets together
//! (URL and port substituted) with a real scrape of `/metrics`.

use std::time::Duration;

use rediq::{Client, Inspector, Task};

mod support;
use support::wait_for;

// ---- 消费者（处理任务）: the snippet's `use` lines and handler, as printed ----

#[rustfmt::skip]
use rediq::server::{Server, ServerBuilder};
#[rustfmt::skip]
use rediq::processor::{Handler, Mux};
#[rustfmt::skip]
use async_trait::async_trait;

struct EmailHandler;

#[rustfmt::skip]
#[async_trait]
impl Handler for EmailHandler {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        println!("处理任务: {}", task.id);
        // 您的任务处理逻辑
        Ok(())
    }
}

// ---- 基本示例 ----

/// 生产者（入队任务）
#[rustfmt::skip]
#[allow(dead_code, unused)]
async fn snippet_producer() -> Result<(), Box<dyn std::error::Error>> {
    use rediq::{Client, Inspector, Task};

    let client = Client::builder()
        .redis_url("redis://localhost:6379")
        .build()
        .await?;

    let task = Task::builder("email:send")
        .queue("emails")
        .payload(&serde_json::json!({
            "to": "user@example.com",
            "subject": "欢迎！"
        }))?
        .build()?;

    client.enqueue(task).await?;
    Ok(())
}

/// 消费者（处理任务）: the part after the handler (its `use` lines and `EmailHandler` are at
/// module level).
#[rustfmt::skip]
#[allow(dead_code, unused)]
async fn snippet_consumer() -> Result<(), Box<dyn std::error::Error>> {
    let state = ServerBuilder::new()
        .redis_url("redis://localhost:6379")
        .queues(&["emails"])
        .concurrency(10)
        .build()
        .await?;

    let server = Server::from(state);
    let mut mux = Mux::new();
    mux.handle("email:send", EmailHandler);

    server.run(mux).await?;
    Ok(())
}

// ---- 高级用法 ----

/// 优先级队列
#[rustfmt::skip]
#[allow(dead_code, unused)]
async fn snippet_priority() -> Result<(), Box<dyn std::error::Error>> {
    let task = Task::builder("urgent:payment")
        .queue("payments")
        .priority(0)  // 最高优先级
        .build()?;
    Ok(())
}

/// 延迟任务
#[rustfmt::skip]
#[allow(dead_code, unused)]
async fn snippet_delay() -> Result<(), Box<dyn std::error::Error>> {
    use std::time::Duration;

    let task = Task::builder("scheduled:report")
        .delay(Duration::from_secs(3600))  // 1 小时后执行
        .build()?;
    Ok(())
}

/// 周期性任务 (builds; `client.enqueue` of it registers a periodic entry)
#[rustfmt::skip]
#[allow(dead_code, unused)]
async fn snippet_cron() -> Result<(), Box<dyn std::error::Error>> {
    let task = Task::builder("daily:cleanup")
        .cron("0 2 * * *")  // 每天凌晨 2 点
        .build()?;
    Ok(())
}

/// 任务依赖 (builds; enqueueing dependent tasks arrives with issue 3)
#[rustfmt::skip]
#[allow(dead_code, unused)]
async fn snippet_depends_on() -> Result<(), Box<dyn std::error::Error>> {
    let task_b = Task::builder("process:b")
        .depends_on(&["task-a-id"])
        .build()?;
    // B 将等待 A 完成后执行
    Ok(())
}

/// Redis 高可用 — Cluster 模式 (the URL is a parameter: the test gives a private cluster's node)
#[rustfmt::skip]
#[allow(dead_code, unused)]
async fn snippet_cluster(node: &str) -> Result<Client, Box<dyn std::error::Error>> {
    let client = Client::builder()
        .redis_url(node) // "redis://cluster-node:6379"
        .cluster_mode()
        .build()
        .await?;
    Ok(client)
}

/// Redis 高可用 — Sentinel 模式 (the URL is a parameter: the test gives a private sentinel)
#[rustfmt::skip]
#[allow(dead_code, unused)]
async fn snippet_sentinel(sentinel: &str) -> Result<Client, Box<dyn std::error::Error>> {
    let client = Client::builder()
        .redis_url(sentinel) // "redis://sentinel:26379"
        .sentinel_mode()
        .build()
        .await?;
    Ok(client)
}

// ---- 中间件 and HTTP 指标端点 ----

/// 中间件
#[rustfmt::skip]
#[allow(dead_code, unused)]
async fn snippet_middleware() -> Result<(), Box<dyn std::error::Error>> {
    use rediq::middleware::{MiddlewareChain, LoggingMiddleware, MetricsMiddleware};

    let middleware = MiddlewareChain::new()
        .add(LoggingMiddleware::new())
        .add(MetricsMiddleware::new());

    let state = ServerBuilder::new()
        .middleware(middleware)
        .build()
        .await?;
    Ok(())
}

/// HTTP 指标端点. `state` comes from the snippet before it in the README.
#[rustfmt::skip]
#[allow(dead_code, unused)]
async fn snippet_metrics_http() -> Result<(), Box<dyn std::error::Error>> {
    let state = ServerBuilder::new().build().await?; // (added: the README's `state`)
    let mut server = Server::from(state);
    server.enable_metrics("0.0.0.0:9090".parse()?);
    // 访问地址: http://localhost:9090/metrics
    Ok(())
}

// ---- Tests ----

/// The 基本示例 end to end: the producer snippet enqueues, the consumer snippet's server (with its
/// `EmailHandler`) processes the task. Only the URL differs from the README, and `run` is
/// `run_until` so that the server stops.
#[tokio::test]
async fn basic_example_producer_and_consumer_process_the_task(
) -> Result<(), Box<dyn std::error::Error>> {
    let redis = rediq::testing::RedisServer::start();
    let url = redis.url();
    let inspector = rediq::Inspector::connect(&url).await?;

    // 生产者（入队任务）
    let client = Client::builder().redis_url(url.as_str()).build().await?;

    let task = Task::builder("email:send")
        .queue("emails")
        .payload(&serde_json::json!({
            "to": "user@example.com",
            "subject": "欢迎！"
        }))?
        .build()?;

    client.enqueue(task).await?;

    let before = inspector.queue_stats("emails").await?;
    assert_eq!(
        before.pending, 1,
        "the producer enqueued one task: {before:?}"
    );
    assert_eq!(before.processed_total, 0);

    // 消费者（处理任务）
    let state = ServerBuilder::new()
        .redis_url(url.as_str())
        .queues(&["emails"])
        .concurrency(10)
        .build()
        .await?;

    let server = Server::from(state);
    let mut mux = Mux::new();
    mux.handle("email:send", EmailHandler);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(mux, async {
        let _ = stopped.await;
    }));

    let insp = inspector.clone();
    let processed = wait_for(Duration::from_secs(15), || {
        let insp = insp.clone();
        async move {
            insp.queue_stats("emails")
                .await
                .is_ok_and(|s| s.processed_total == 1)
        }
    })
    .await;
    let _ = stop.send(());
    running.await??;
    assert!(processed, "the task was not processed within 15 s");

    let after = inspector.queue_stats("emails").await?;
    assert_eq!(after.processed_total, 1, "{after:?}");
    assert_eq!(after.failed_total, 0, "EmailHandler returned Ok: {after:?}");
    assert_eq!(
        (after.pending, after.active, after.retry, after.dead),
        (0, 0, 0, 0),
        "{after:?}"
    );
    assert!(
        inspector.workers().await?.is_empty(),
        "the server left the registry when it stopped"
    );
    Ok(())
}

/// The builder-only snippets run as printed and succeed: priority, delay, cron and depends_on
/// are accepted by `build()`.
#[tokio::test]
async fn builder_snippets_build() {
    assert!(snippet_priority().await.is_ok());
    assert!(snippet_delay().await.is_ok());
    assert!(snippet_cron().await.is_ok());
    assert!(snippet_depends_on().await.is_ok());
}

/// The Cluster and Sentinel snippets run as printed, with the host names of the seed
/// (`cluster-node:6379`, `sentinel:26379`) replaced by a private cluster's first node and a
/// private sentinel set's first sentinel: one seed node finds the whole cluster, one sentinel
/// finds the master under the default name `mymaster`, and a task enqueued through each is
/// there to read.
#[tokio::test]
async fn cluster_and_sentinel_snippets_connect() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = rediq::testing::RedisCluster::start();
    let ha = rediq::testing::RedisSentinel::start();
    let sentinel = format!("redis://127.0.0.1:{}", ha.sentinel_ports()[0]);
    for (mode, client) in [
        ("cluster", snippet_cluster(&cluster.seed_url()).await?),
        ("sentinel", snippet_sentinel(&sentinel).await?),
    ] {
        for q in ["alpha", "bravo", "charlie"] {
            client.enqueue(Task::builder("t").queue(q).build()?).await?;
            let stats = Inspector::from_client(&client).queue_stats(q).await?;
            assert_eq!(stats.pending, 1, "{mode}: queue {q}");
        }
    }
    Ok(())
}

/// 中间件 + HTTP 指标端点, as printed except the Redis URL and the address (a free local port
/// instead of 0.0.0.0:9090): the server runs the chain, and `/metrics` shows the processed task
/// and its duration, `/healthz` answers 200.
#[tokio::test]
async fn middleware_and_metrics_snippets_serve_metrics() -> Result<(), Box<dyn std::error::Error>> {
    use rediq::middleware::{LoggingMiddleware, MetricsMiddleware, MiddlewareChain};

    let redis = rediq::testing::RedisServer::start();
    let url = redis.url();

    // 中间件
    let middleware = MiddlewareChain::new()
        .add(LoggingMiddleware::new())
        .add(MetricsMiddleware::new());

    let state = ServerBuilder::new()
        .redis_url(url.as_str())
        .queues(&["emails"])
        .middleware(middleware)
        .build()
        .await?;

    // HTTP 指标端点
    let mut server = Server::from(state);
    server.enable_metrics("127.0.0.1:0".parse()?);
    let addr = server.metrics_addr().expect("bound");

    let mut mux = Mux::new();
    mux.handle("email:send", EmailHandler);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(mux, async {
        let _ = stopped.await;
    }));

    let client = Client::builder().redis_url(url.as_str()).build().await?;
    client
        .enqueue(Task::builder("email:send").queue("emails").build()?)
        .await?;

    let series = r#"{queue="emails",task_type="email:send"}"#;
    let mut text = String::new();
    for _ in 0..500 {
        text = support::http_get(addr, "/metrics").await?.1;
        if support::sample(&text, &format!("rediq_tasks_processed_total{series}")) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = support::http_get(addr, "/healthz").await?;
    let _ = stop.send(());
    running.await??;
    assert_eq!(
        support::sample(&text, &format!("rediq_tasks_processed_total{series}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        support::sample(&text, &format!("rediq_task_duration_seconds_count{series}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(health.0, 200, "{health:?}");
    Ok(())
}

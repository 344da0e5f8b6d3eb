//! Test harness: a private redis-server per test (never 6379), a client, and a server running
//! in the background that a test can shut down.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::RedisServer;
use rediq::{Client, Inspector, Task};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Env {
    pub redis: RedisServer,
    pub client: Client,
    pub inspector: Inspector,
}

impl Env {
    pub async fn new() -> Env {
        let redis = RedisServer::start();
        let client = Client::builder()
            .redis_url(redis.url())
            .build()
            .await
            .expect("client connects to the private redis");
        let inspector = Inspector::from_client(&client);
        Env {
            redis,
            client,
            inspector,
        }
    }

    pub fn url(&self) -> String {
        self.redis.url()
    }

    /// A server builder pointed at this Redis, with fast intervals for tests.
    pub fn server(&self) -> ServerBuilder {
        ServerBuilder::new()
            .redis_url(self.url())
            .forward_interval(Duration::from_millis(50))
    }
}

pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<rediq::Result<()>>,
}

impl Running {
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.handle)
            .await
            .expect("server task")
            .expect("server ran cleanly");
    }
}

pub async fn start(builder: ServerBuilder, mux: Mux) -> Running {
    let state = builder.build().await.expect("server builds");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        Server::from(state)
            .run_until(mux, async {
                let _ = rx.await;
            })
            .await
    });
    Running {
        stop: Some(tx),
        handle,
    }
}

/// Polls `cond` every 10 ms until it holds or `within` passes; returns whether it held.
pub async fn wait_for<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handler made of an async closure.
pub struct FnHandler<F>(pub F);

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = rediq::Result<()>> + Send,
{
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        (self.0)(task.clone()).await
    }
}

pub fn mux_with<F, Fut>(task_type: &str, f: F) -> Mux
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = rediq::Result<()>> + Send,
{
    let mut mux = Mux::new();
    mux.handle(task_type, FnHandler(f));
    mux
}

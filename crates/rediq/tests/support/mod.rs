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

    /// A plain connection to this Redis, to look at or break keys the way an operator or a bug
    /// might.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// `SET key value` on this Redis, bypassing Rediq.
    pub async fn set_raw(&self, key: &str, value: &str) {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut self.raw().await)
            .await
            .unwrap();
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
    run(Server::from(state), mux)
}

/// Runs a built server in the background until the returned handle shuts it down.
fn run(server: Server, mux: Mux) -> Running {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        server
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

/// A mux whose handler for `task_type` only counts its runs.
pub fn counting_mux(task_type: &str) -> (Mux, std::sync::Arc<std::sync::Mutex<u32>>) {
    let runs = std::sync::Arc::new(std::sync::Mutex::new(0u32));
    let r = runs.clone();
    let mux = mux_with(task_type, move |_| {
        let r = r.clone();
        async move {
            *r.lock().unwrap() += 1;
            Ok(())
        }
    });
    (mux, runs)
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

/// A plain HTTP/1.1 GET (no client library): returns the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, text.clone());
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of one sample line of a Prometheus text exposition (`name{labels} value`), by the
/// exact text before the value; `None` when there is no such line.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Starts a server with the metrics endpoint on a free local port; returns it and the address.
pub async fn start_with_metrics(
    builder: ServerBuilder,
    mux: Mux,
) -> (Running, std::net::SocketAddr) {
    let state = builder.build().await.expect("server builds");
    let mut server = Server::from(state);
    server.enable_metrics("127.0.0.1:0".parse().expect("an address"));
    let addr = server
        .metrics_addr()
        .expect("the endpoint bound a free port");
    (run(server, mux), addr)
}

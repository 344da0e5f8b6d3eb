//! Test harness: a private redis-server per test (never 6379), a client, and a server running
//! in the background that a test can shut down.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::{RedisServer, Topology};
use rediq::{Client, Inspector, Task};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A private Redis of the topology `REDIQ_TEST_TOPOLOGY` names (standalone by default), with a
/// client and an inspector on it: the suites that use it run unchanged on a cluster and under
/// Sentinel.
pub struct Env {
    pub redis: Topology,
    pub client: Client,
    pub inspector: Inspector,
}

impl Env {
    pub async fn new() -> Env {
        let redis = Topology::from_env();
        let client = redis
            .client()
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

    /// The URL builders are given (a seed list on a cluster, the sentinels under Sentinel).
    pub fn url(&self) -> String {
        self.redis.url()
    }

    /// The single server of a standalone Redis, for tests that stop or freeze it.
    pub fn standalone(&mut self) -> Option<&mut RedisServer> {
        match &mut self.redis {
            Topology::Standalone(s) => Some(s),
            _ => None,
        }
    }

    /// A plain connection to this Redis (routed by key on a cluster), to look at or break keys
    /// the way an operator or a bug might.
    pub async fn raw(&self) -> Raw {
        match &self.redis {
            Topology::Cluster(c) => Raw::Cluster(
                redis::cluster::ClusterClient::new(vec![c.seed_url()])
                    .unwrap()
                    .get_async_connection()
                    .await
                    .unwrap(),
            ),
            other => Raw::Plain(
                redis::Client::open(other.data_url().expect("a data node"))
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            ),
        }
    }

    /// A plain connection to every node that holds data, for per-node statistics.
    pub async fn nodes(&self) -> Vec<redis::aio::MultiplexedConnection> {
        let mut out = Vec::new();
        for url in self.redis.data_urls() {
            out.push(
                redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            );
        }
        out
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
        self.redis
            .server()
            .forward_interval(Duration::from_millis(50))
    }
}

/// A raw connection: to the one server (or the master), or to the cluster.
#[derive(Clone)]
pub enum Raw {
    Plain(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Raw {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Raw::Plain(c) => c.req_packed_command(cmd),
            Raw::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Raw::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            // The tests' pipelines look at several queues (slots): one command at a time.
            Raw::Cluster(c) => Box::pin(async move {
                let mut out = Vec::new();
                for cmd in pipeline.cmd_iter() {
                    let mut one = redis::pipe();
                    one.add_command(cmd.clone());
                    out.extend(c.req_packed_commands(&one, 0, 1).await?);
                }
                Ok(out)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// A server builder for `url` in the mode `REDIQ_TEST_TOPOLOGY` names: for a child process,
/// which inherits the variable from its parent test.
pub fn server_at(url: &str) -> ServerBuilder {
    let b = ServerBuilder::new().redis_url(url);
    match std::env::var(Topology::VARIABLE).as_deref() {
        Ok("cluster") => b.cluster_mode(),
        Ok("sentinel") => b.sentinel_mode(),
        _ => b,
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

//! The broker's connections: one Redis server, a Redis Cluster, or a master found through
//! Redis Sentinel.
//!
//! Every broker method talks to Redis through [`Conn`], which is a `ConnectionLike` like the
//! connections it wraps, so the commands, pipelines and scripts of the broker run unchanged on
//! every topology. On a cluster, redis-rs routes each command by its keys: all keys of a queue
//! share the hash tag `{queue}`, so every script of a queue runs on the master of its slot, and
//! `MOVED`/`ASK` refresh the slot map. Under Sentinel, [`super::sentinel`] follows the master.
//!
//! Two kinds of connection cannot be shared and come from [`Source`] instead: a fetcher's
//! blocking wait ([`Source::blocking`]), which on a cluster is a plain connection to the master
//! of its queue's slot (a blocking command over several slots is refused with `CROSSSLOT`),
//! and the cancel channel's subscription ([`Source::pubsub`]).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::sentinel::{SentinelConn, Shared};
use super::topology::{Opener, Parsed, CONNECT_TIMEOUT};
use super::MAX_BLOCK;

/// A connection manager's settings: reconnecting by itself, giving up on a command after 10 s
/// (twice retried), so nothing waits forever on a Redis that stopped answering.
pub(super) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

/// A cluster's client and how to reach one of its nodes directly.
pub(crate) struct ClusterSource {
    client: ClusterClient,
    /// Scheme and credentials of the seed URL, for node URLs.
    parsed: Parsed,
    seeds: Vec<String>,
    opener: Opener,
}

impl ClusterSource {
    pub fn new(seeds: Vec<String>, parsed: Parsed, opener: Opener) -> RedisResult<ClusterSource> {
        let builder = ClusterClient::builder(seeds.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(Duration::from_secs(10));
        #[cfg(feature = "tls")]
        let builder = match opener.tls_certificates() {
            Some(certs) => builder.certs(certs),
            None => builder,
        };
        Ok(ClusterSource {
            client: builder.build()?,
            parsed,
            seeds,
            opener,
        })
    }

    fn node_client(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
        self.opener.open(
            self.parsed
                .node_url(host, port, self.parsed.userinfo.as_deref())
                .as_str(),
        )
    }
}

/// Where a broker's connections come from.
#[derive(Clone)]
pub(crate) enum Source {
    Single(Box<redis::Client>),
    Cluster(Arc<ClusterSource>),
    Sentinel(Arc<Shared>),
}

/// A connection of its own for a fetcher's blocking wait, and the node it reached (for
/// `CLIENT UNBLOCK`, which must go to the same node).
pub(crate) struct BlockingConnection {
    pub conn: MultiplexedConnection,
    pub node: Option<(String, u16)>,
    /// Under Sentinel, which master (generation) it reached: once the deployment follows a
    /// new master, the connection is stale even if the old master still answers.
    generation: Option<u64>,
}

impl Source {
    /// A fresh shared connection (a cluster's or a sentinel deployment's follows its masters),
    /// whose I/O runs on the calling runtime.
    pub async fn connect(&self) -> RedisResult<Conn> {
        Ok(match self {
            Source::Single(client) => Conn::Single(
                client
                    .get_connection_manager_with_config(manager_config())
                    .await?,
            ),
            Source::Cluster(c) => Conn::Cluster(c.client.get_async_connection().await?),
            Source::Sentinel(shared) => Conn::Sentinel(SentinelConn::new(shared.fork().await?)),
        })
    }

    /// Whether each queue needs a blocking connection of its own (a cluster: one blocking
    /// command cannot wait on keys of several slots).
    pub fn blocks_per_queue(&self) -> bool {
        matches!(self, Source::Cluster(_))
    }

    /// A dedicated connection for blocking commands on `key`: to the server, to the master
    /// of the key's slot, or to the current master. Its response timeout is a little above
    /// [`MAX_BLOCK`], which tells a silently dropped connection from a long wait.
    pub async fn blocking(&self, shared: &Conn, key: &str) -> RedisResult<BlockingConnection> {
        let (client, node, generation) = match self {
            Source::Single(client) => ((**client).clone(), None, None),
            Source::Sentinel(s) => {
                let (generation, client) = s.master_client().await?;
                (client, None, Some(generation))
            }
            Source::Cluster(c) => {
                let (host, port) = slot_owner(shared, key).await?;
                (c.node_client(&host, port)?, Some((host, port)), None)
            }
        };
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(MAX_BLOCK + Duration::from_secs(5)));
        let conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        Ok(BlockingConnection {
            conn,
            node,
            generation,
        })
    }

    /// How many times the master followed has moved (Sentinel); 0 on the other topologies.
    pub fn generation(&self) -> u64 {
        match self {
            Source::Sentinel(s) => s.generation(),
            _ => 0,
        }
    }

    /// Whether a blocking connection still reaches the master this source follows (always,
    /// but under Sentinel: the old master may answer for a while after a failover, and a
    /// wait there would never hear of new tasks).
    pub fn is_current(&self, c: &BlockingConnection) -> bool {
        match self {
            Source::Sentinel(_) => c.generation == Some(self.generation()),
            _ => true,
        }
    }

    /// A pub/sub connection. On a cluster a classic `PUBLISH` reaches every node, so any
    /// master will do: the first that answers, of the current masters, then the seeds.
    pub async fn pubsub(&self, shared: &Conn) -> RedisResult<redis::aio::PubSub> {
        match self {
            Source::Single(client) => client.get_async_pubsub().await,
            Source::Sentinel(s) => s.master_client().await?.1.get_async_pubsub().await,
            Source::Cluster(c) => {
                let mut candidates: Vec<redis::Client> = masters(shared)
                    .await
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|(h, p)| c.node_client(h, *p).ok())
                    .collect();
                candidates.extend(
                    c.seeds
                        .iter()
                        .filter_map(|s| c.opener.open(s.as_str()).ok()),
                );
                let mut last = None;
                for client in candidates {
                    match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
                        Ok(Ok(ps)) => return Ok(ps),
                        Ok(Err(e)) => last = Some(e),
                        Err(_) => {}
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no cluster node answered a subscription",
                    ))
                }))
            }
        }
    }
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first `{`
/// and the next `}`, when not empty) or of the whole key, modulo 16384, as Redis computes it.
/// The `redis` crate has the same function but does not export it.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for byte in tagged {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The master of `key`'s slot, as the cluster reports it now.
async fn slot_owner(shared: &Conn, key: &str) -> RedisResult<(String, u16)> {
    let slot = i64::from(key_slot(key.as_bytes()));
    let ranges = slot_ranges(shared).await?;
    ranges
        .into_iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
        .map(|(_, _, owner)| owner)
        .ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "no master serves the slot (the cluster is not fully covered)",
            ))
        })
}

/// The cluster's masters.
async fn masters(shared: &Conn) -> RedisResult<Vec<(String, u16)>> {
    let mut all: Vec<(String, u16)> = slot_ranges(shared)
        .await?
        .into_iter()
        .map(|(_, _, m)| m)
        .collect();
    all.sort();
    all.dedup();
    Ok(all)
}

/// `CLUSTER SLOTS`: each slot range with its master's address.
pub(super) async fn slot_ranges(shared: &Conn) -> RedisResult<Vec<(i64, i64, (String, u16))>> {
    let mut c = shared.clone();
    let rows: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut c)
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let Value::Array(parts) = row else { continue };
        let (Some(Value::Int(lo)), Some(Value::Int(hi)), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        out.push((*lo, *hi, (host, *port as u16)));
    }
    Ok(out)
}

/// A connection to one server (reconnecting by itself), to a cluster, or to a sentinel
/// deployment's master.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

impl Conn {
    /// Sends `cmd` (a keyless command such as `WAIT`) on the connection that serves `key`: the
    /// master of its slot on a cluster, the one connection otherwise.
    pub async fn on_slot_of(&self, cmd: Cmd, key: &[u8]) -> RedisResult<Value> {
        match self {
            Conn::Cluster(c) => {
                let route = Route::new(key_slot(key), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                c.clone().route_command(cmd, routing).await
            }
            _ => cmd.query_async(&mut self.clone()).await,
        }
    }

    /// Sends `cmd` to one node: the one at `node` on a cluster, the one server otherwise.
    pub async fn on_node(&self, cmd: Cmd, node: Option<&(String, u16)>) -> RedisResult<Value> {
        match (self, node) {
            (Conn::Cluster(c), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                c.clone().route_command(cmd, routing).await
            }
            _ => cmd.query_async(&mut self.clone()).await,
        }
    }
}

/// A pipeline on a cluster. The `redis` crate sends a pipeline to one node and refuses one
/// whose commands span slots (`CROSSSLOT`, before anything is sent). The broker's pipelines
/// that span queues are reads and idempotent writes (counts over several queues, the
/// heartbeat's registry), so such a pipeline is sent as one single-command pipeline per
/// command, all at once, and the replies are put back in order: what the caller reads is
/// the same, errors included.
async fn cluster_pipeline(
    c: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    match c.req_packed_commands(pipeline, offset, count).await {
        Err(e) if e.code() == Some("CROSSSLOT") && !pipeline.is_transaction() => {
            let singles: Vec<Pipeline> = pipeline
                .cmd_iter()
                .map(|cmd| {
                    let mut p = redis::pipe();
                    p.add_command(cmd.clone());
                    p
                })
                .collect();
            let replies = futures::future::try_join_all(singles.iter().map(|p| {
                let mut c = c.clone();
                async move { c.req_packed_commands(p, 0, 1).await }
            }))
            .await?;
            Ok(replies.into_iter().flatten().collect())
        }
        r => r,
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => Box::pin(cluster_pipeline(c, pipeline, offset, count)),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

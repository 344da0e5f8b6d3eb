//! The broker's shared connection: one Redis server, or a Redis Cluster.
//!
//! Every broker method talks to Redis through [`Conn`], which is a `ConnectionLike` like the
//! connections it wraps, so the commands, pipelines and scripts of the broker run unchanged on
//! either topology. On a cluster, redis-rs routes each command by its keys: all keys of a queue
//! share the hash tag `{queue}`, so every script of a queue runs on the master of its slot, and
//! `MOVED`/`ASK` refresh the slot map.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where a broker's shared connections come from: one server, or a cluster's seed nodes.
#[derive(Clone)]
pub(crate) enum Source {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

impl Source {
    /// A fresh shared connection: to one server, reconnecting by itself and giving up on a
    /// command after 10 s (twice retried), so nothing waits forever on a Redis that stopped
    /// answering; or to the cluster, with the same timeouts.
    pub async fn connect(&self) -> RedisResult<Conn> {
        Ok(match self {
            Source::Single(client) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(10)))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(2));
                Conn::Single(client.get_connection_manager_with_config(cfg).await?)
            }
            Source::Cluster(cluster) => Conn::Cluster(cluster.get_async_connection().await?),
        })
    }
}

/// A connection to one server (reconnecting by itself) or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

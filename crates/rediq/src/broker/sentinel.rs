//! Redis Sentinel: finding the master, and following it when it moves.
//!
//! The `redis` crate's Sentinel client resolves the master once, when it connects, and does
//! not notice a failover (redis-rs #1438): a connection to the old master either fails or,
//! once that master is demoted, answers every write with `READONLY`. [`SentinelConn`] asks the
//! sentinels again on exactly those signals and on the sentinels' own `+switch-master`
//! announcement, swaps in a connection to the new master, and sends a command refused with
//! `READONLY` once more (a refused write wrote nothing, so that is safe). Resolving is ours
//! rather than the crate's for the same reason, and so that every step has a timeout and every
//! refusal one plain sentence.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::conn::{manager_config, Conn, Source};
use super::topology::{masked_url, Opener, Parsed, Target, CONNECT_TIMEOUT};
use crate::{Error, Result};

/// How a deployment's master is found: its name, the sentinels, and how to reach data nodes.
#[derive(Clone)]
pub(crate) struct Master {
    name: String,
    /// One URL per sentinel, with the sentinels' own credentials.
    sentinels: Vec<String>,
    /// The data nodes' scheme, credentials and database.
    node: Parsed,
    /// The target's URL, masked, for messages.
    shown: String,
    opener: Opener,
}

/// Where the master is now, and a connection to it.
struct Current {
    generation: u64,
    addr: (String, u16),
    client: redis::Client,
    conn: ConnectionManager,
}

/// The shared state of a sentinel deployment's connections.
pub(crate) struct Shared {
    master: Master,
    current: Mutex<Current>,
    /// Held while the sentinels are asked, so that one failover is resolved once; holds when
    /// the last lookup ended, so that callers whose commands failed meanwhile do not each run
    /// another one behind it (with a blackholed master, each costs seconds).
    resolving: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// The least time between two lookups of the master while it has not moved.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);

impl Master {
    pub fn new(target: &Target, parsed: Parsed, name: String) -> Result<Master> {
        let auth = match (&target.sentinel_username, &target.sentinel_password) {
            (u, Some(p)) => Some(format!(
                "{}:{}",
                encode(u.as_deref().unwrap_or_default()),
                encode(p)
            )),
            (Some(u), None) => Some(encode(u)),
            (None, None) => None,
        };
        let sentinels = parsed
            .hosts
            .iter()
            .map(|(h, p)| {
                let mut bare = parsed.clone();
                bare.db = None;
                bare.node_url(h, *p, auth.as_deref())
            })
            .collect();
        Ok(Master {
            name,
            sentinels,
            node: parsed,
            shown: target.masked(),
            opener: target.opener.clone(),
        })
    }

    fn wrong(&self, reason: String) -> Error {
        Error::Topology {
            url: self.shown.clone(),
            reason,
        }
    }

    /// Asks the sentinels in turn for the master's address, and checks with the master that it
    /// is one (a sentinel may still name the old master during a failover).
    async fn resolve(&self) -> Result<((String, u16), redis::Client)> {
        let mut unreachable: Option<redis::RedisError> = None;
        let mut not_sentinel = None;
        let mut unknown = 0usize;
        let mut replica = None;
        for url in &self.sentinels {
            let addr = match ask_sentinel(&self.opener, url, &self.name).await {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    unknown += 1;
                    continue;
                }
                Err(e) if e.code() == Some("ERR") && e.to_string().contains("unknown command") => {
                    not_sentinel = Some(masked_url(url));
                    continue;
                }
                Err(e) => {
                    unreachable = Some(e);
                    continue;
                }
            };
            let node = self
                .node
                .node_url(&addr.0, addr.1, self.node.userinfo.as_deref());
            let client = match self.opener.open(node.as_str()) {
                Ok(c) => c,
                Err(e) => {
                    return Err(Error::Connection {
                        url: masked_url(&node),
                        source: e,
                    })
                }
            };
            match role(&client).await {
                Ok(r) if r == "master" => return Ok((addr, client)),
                Ok(r) => replica = Some((addr, r)),
                // An ACL user without ROLE (`-@dangerous`): the sentinels' word is taken.
                Err(e) if e.code() == Some("NOPERM") => return Ok((addr, client)),
                Err(e) => unreachable = Some(e),
            }
        }
        if let Some(((h, p), r)) = replica {
            return Err(self.wrong(format!(
                "the sentinels name {h}:{p} as master {:?}, but it says it is a {r}; a failover is probably under way",
                self.name
            )));
        }
        if let Some(host) = not_sentinel {
            if unknown == 0 {
                return Err(self.wrong(format!(
                    "{host} is not a Redis Sentinel (it does not know the SENTINEL command): name the sentinels, or drop .sentinel_mode()"
                )));
            }
        }
        if unknown > 0 {
            return Err(self.wrong(format!(
                "no sentinel knows a master named {:?}: set the name in the URL (redis+sentinel://hosts/<name>) or with sentinel_master()",
                self.name
            )));
        }
        Err(match unreachable {
            Some(source) => Error::Connection {
                url: self.shown.clone(),
                source,
            },
            None => self.wrong("no sentinel in the URL".into()),
        })
    }

    /// Resolves the master, connects to it, and starts following its moves.
    pub async fn open(self) -> Result<(Conn, Source)> {
        let (addr, client) = self.resolve().await?;
        let shown = self.shown.clone();
        let shared = Shared::start(self, addr, client)
            .await
            .map_err(|source| Error::Connection { url: shown, source })?;
        let conn = Conn::Sentinel(SentinelConn::new(shared.clone()));
        Ok((conn, Source::Sentinel(shared)))
    }
}

impl Shared {
    /// Connects to the master at `addr` and starts watching the sentinels for its moves (on
    /// the calling runtime).
    async fn start(
        master: Master,
        addr: (String, u16),
        client: redis::Client,
    ) -> RedisResult<Arc<Shared>> {
        let conn = connect(&client).await?;
        let shared = Arc::new(Shared {
            master,
            current: Mutex::new(Current {
                generation: 0,
                addr,
                client,
                conn,
            }),
            resolving: tokio::sync::Mutex::new(None),
        });
        tokio::spawn(watch(Arc::downgrade(&shared)));
        Ok(shared)
    }

    /// Shared state of its own, starting at the master this one knows, with a connection (and
    /// a watcher) whose I/O runs on the calling runtime: for a detached broker.
    pub async fn fork(&self) -> RedisResult<Arc<Shared>> {
        let (addr, client) = {
            let c = self.current.lock().unwrap_or_else(|p| p.into_inner());
            (c.addr.clone(), c.client.clone())
        };
        Shared::start(self.master.clone(), addr, client).await
    }

    fn current(&self) -> (u64, ConnectionManager) {
        // A poisoned lock only means a panic elsewhere while swapping; the value is whole.
        let c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (c.generation, c.conn.clone())
    }

    fn client(&self) -> (u64, redis::Client) {
        let c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (c.generation, c.client.clone())
    }

    /// Asks the sentinels where the master is, unless someone did since `seen`; swaps in a
    /// connection to it when it moved. Returns the connection to use now.
    pub async fn refresh(&self, seen: u64) -> Option<ConnectionManager> {
        let mut last = self.resolving.lock().await;
        let (generation, conn) = self.current();
        if generation != seen {
            return Some(conn);
        }
        if last.is_some_and(|t| t.elapsed() < RESOLVE_EVERY) {
            return Some(conn);
        }
        let found = self.master.resolve().await;
        *last = Some(std::time::Instant::now());
        let (addr, client) = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot find the Redis master through the sentinels");
                return None;
            }
        };
        let moved = self.current.lock().unwrap_or_else(|p| p.into_inner()).addr != addr;
        if !moved {
            return Some(conn);
        }
        let fresh = match connect(&client).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to the new Redis master");
                return None;
            }
        };
        tracing::warn!(master = %self.master.name, host = %addr.0, port = addr.1, "following the Redis master to its new address");
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *c = Current {
            generation: c.generation + 1,
            addr,
            client,
            conn: fresh.clone(),
        };
        Some(fresh)
    }

    /// The generation of the master followed now (it grows with each move).
    pub fn generation(&self) -> u64 {
        self.current().0
    }

    /// A client for dedicated connections to the master (blocking commands, pub/sub), after
    /// checking it still is the master, with the generation it belongs to.
    pub async fn master_client(&self) -> RedisResult<(u64, redis::Client)> {
        let (generation, client) = self.client();
        match role(&client).await {
            Ok(r) if r == "master" => Ok((generation, client)),
            Err(e) if e.code() == Some("NOPERM") => Ok((generation, client)),
            _ => match self.refresh(generation).await {
                Some(_) => Ok(self.client()),
                None => Ok((generation, client)),
            },
        }
    }
}

/// The shared connection of a sentinel deployment: to the master, following it.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    shared: Arc<Shared>,
}

impl SentinelConn {
    pub fn new(shared: Arc<Shared>) -> SentinelConn {
        SentinelConn { shared }
    }
}

/// Errors after which the master may have moved.
pub(crate) fn after_failover(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut conn) = self.shared.current();
            match conn.req_packed_command(cmd).await {
                Err(e) if after_failover(&e) => match self.shared.refresh(generation).await {
                    // Refused writes wrote nothing: send it to the master once more.
                    Some(mut fresh) if e.code() == Some("READONLY") => {
                        fresh.req_packed_command(cmd).await
                    }
                    _ => Err(e),
                },
                r => r,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut conn) = self.shared.current();
            // A pipeline is never resent (part of it may have run). A broken connection fails
            // it as a whole; a demoted master's refusals come back inside the replies.
            match conn.req_packed_commands(pipeline, offset, count).await {
                Err(e) if after_failover(&e) => {
                    self.shared.refresh(generation).await;
                    Err(e)
                }
                Ok(replies) => {
                    let refused = replies.iter().any(|v| {
                        matches!(v, Value::ServerError(e) if matches!(e.code(), "READONLY" | "MASTERDOWN" | "LOADING"))
                    });
                    if refused {
                        self.shared.refresh(generation).await;
                    }
                    Ok(replies)
                }
                r => r,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.current().1.get_db()
    }
}

/// Listens to the sentinels' `+switch-master` announcements (one sentinel at a time, the next
/// when it goes away) and follows the master at once; ends when the connections are dropped.
async fn watch(shared: Weak<Shared>) {
    let mut i = 0usize;
    loop {
        let Some((url, opener)) = shared.upgrade().map(|s| {
            let n = s.master.sentinels.len();
            (s.master.sentinels[i % n].clone(), s.master.opener.clone())
        }) else {
            return;
        };
        i += 1;
        let ps = async {
            let client = opener.open(url.as_str())?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe("+switch-master").await?;
            RedisResult::Ok(ps)
        };
        let mut ps = match tokio::time::timeout(CONNECT_TIMEOUT, ps).await {
            Ok(Ok(ps)) => ps,
            _ => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut messages = ps.on_message();
        // A sentinel that went silent (blackholed) would never end the stream: the watcher
        // moves to the next sentinel every minute anyway, and a missed announcement is made
        // up for by the READONLY and connection errors that also trigger a lookup.
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
            let Some(s) = shared.upgrade() else { return };
            match msg {
                Err(_) if tokio::time::Instant::now() >= until => break,
                Err(_) => continue, // quiet: check that someone still holds the connections
                Ok(None) => break,  // the sentinel went away: the next one
                Ok(Some(m)) => {
                    let text: String = m.get_payload().unwrap_or_default();
                    if text.split(' ').next() == Some(s.master.name.as_str()) {
                        let (generation, _) = s.current();
                        s.refresh(generation).await;
                    }
                }
            }
        }
    }
}

/// `SENTINEL get-master-addr-by-name`: the address, or `None` when the sentinel does not know
/// the name.
async fn ask_sentinel(
    opener: &Opener,
    url: &str,
    name: &str,
) -> RedisResult<Option<(String, u16)>> {
    let client = opener.open(url)?;
    let mut c = dedicated(&client).await?;
    redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(name)
        .query_async(&mut c)
        .await
}

/// The node's `ROLE`: master, slave or sentinel.
async fn role(client: &redis::Client) -> RedisResult<String> {
    let mut c = dedicated(client).await?;
    let v: Vec<Value> = redis::cmd("ROLE").query_async(&mut c).await?;
    Ok(match v.first() {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    })
}

/// A short-lived connection with the connect timeout on every step.
async fn dedicated(client: &redis::Client) -> RedisResult<MultiplexedConnection> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

async fn connect(client: &redis::Client) -> RedisResult<ConnectionManager> {
    client
        .get_connection_manager_with_config(manager_config())
        .await
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

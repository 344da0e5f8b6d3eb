//! Leases: the fetcher's blocking wait for work, the heartbeat's lease extension, what a lapsed
//! server held (for the recoverer), and the fencing-token and active-entry formats they share
//! with the transitions. A server's lease covers every task in its active hash of a queue, so
//! these calls are per server and queue, not per task.

use std::time::Duration;

use redis::{AsyncCommands, Value};

use super::keys::QueueKeys;
use super::transitions::fetch_args;
use super::{BlockingConnection, Broker, MAX_BLOCK, MAX_SCRIPT_BATCH, SCRIPTS};
use crate::Result;

/// A leased task whose lease has expired.
#[derive(Debug)]
pub(crate) struct Expired {
    pub id: Vec<u8>,
    pub token: u64,
    pub record: Vec<u8>,
}

/// A fencing token as the scripts compare it: 16 digits, written straight into a command.
pub(super) fn token_text(token: u64) -> Token {
    Token(token)
}

/// See [`token_text`].
pub(super) struct Token(u64);

#[test]
fn a_token_is_sixteen_digits() {
    use redis::ToRedisArgs;
    assert_eq!(
        token_text(42).to_redis_args(),
        vec![b"0000000000000042".to_vec()]
    );
}

impl redis::ToRedisArgs for Token {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        // Writing into the command's buffer cannot fail.
        let _ = write!(out.writer_for_next_arg(), "{:016}", self.0);
    }
}

/// What [`Broker::wait_then_fetch`] brought back once its wait ended.
#[derive(Debug)]
pub(crate) struct Waited {
    /// Why the wait failed, if it did (the fetch ran all the same).
    pub wait_error: Option<crate::Error>,
    /// The fetch's tasks (`Some(None)`: it leased none); `None` when it failed and moved
    /// nothing.
    pub fetched: Option<Option<super::transitions::Fetched>>,
}

/// Splits an active entry (`token .. "|" .. record`; entries written by 0.1.0 carry the pending
/// score between the two) into token and record.
pub(super) fn parse_active(value: &[u8]) -> Option<(u64, &[u8])> {
    let token = std::str::from_utf8(value.get(..16)?).ok()?.parse().ok()?;
    let bar = value.get(16..)?.iter().position(|b| *b == b'|')? + 16;
    Some((token, &value[bar + 1..]))
}

impl Broker {
    /// Blocks on a dedicated connection until one of the queues signals new work or `timeout`
    /// passes. Returns whether a signal arrived.
    pub async fn wait_for_work(
        conn: &mut BlockingConnection,
        queues: &[String],
        timeout: Duration,
    ) -> Result<bool> {
        // Never 0: BZPOPMIN 0 waits forever.
        let timeout = timeout.clamp(Duration::from_millis(1), MAX_BLOCK);
        let mut cmd = redis::cmd("BZPOPMIN");
        for q in queues {
            cmd.arg(&QueueKeys::new(q).wake);
        }
        cmd.arg(timeout.as_secs_f64());
        let v: Value = cmd.query_async(&mut conn.conn).await?;
        Ok(!matches!(v, Value::Nil))
    }

    /// Blocks on `queue`'s wake marker like [`Broker::wait_for_work`] and leases up to `n` of
    /// its tasks as soon as the wait ends, in the same round trip: BZPOPMIN and fetch.lua go
    /// out as one pipeline on the blocking connection, and Redis runs a blocked client's next
    /// command right after serving it. A task enqueued while a server idles so reaches it in
    /// one round trip instead of two (the wake, then a fetch). The fetch also runs when the
    /// wait times out or is ended by [`Broker::unblock`].
    ///
    /// Redis runs the fetch whatever became of the wait, so its reply is always read: a wait
    /// that failed (a marker of the wrong type) comes back in [`Waited::wait_error`] beside
    /// the tasks the fetch leased. A fetch that fails (a band this process did not know of, a
    /// script Redis does not hold yet, a corrupt key) moved nothing: `fetched` is `None`, and
    /// a plain [`Broker::fetch`] then deals with it. `Err` means no reply came at all (the
    /// connection): the fetch may have run, and the heartbeat's orphan sweep takes back what
    /// it leased.
    pub async fn wait_then_fetch(
        &self,
        conn: &mut BlockingConnection,
        queue: &str,
        server: &str,
        n: usize,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Waited> {
        let k = QueueKeys::new(queue);
        let holders = self.holders.get(queue);
        let call = self.band_call(queue, &k, &SCRIPTS.fetch, |inv| {
            fetch_args(inv, &k, server, n, lease, &holders)
        });
        // Never 0: BZPOPMIN 0 waits forever.
        let timeout = timeout.clamp(Duration::from_millis(1), MAX_BLOCK);
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("BZPOPMIN")
            .arg(&k.wake)
            .arg(timeout.as_secs_f64())
            .add_command(call.cmd());
        let mut replies: Vec<redis::RedisResult<Value>> = pipe.query_async(&mut conn.conn).await?;
        let (Some(fetched), Some(waited)) = (replies.pop(), replies.pop()) else {
            return Err(crate::Error::Serialization(
                "the wait-and-fetch pipeline returned fewer than two replies".into(),
            ));
        };
        let fetched = match fetched {
            Ok(v) => match self.fetched_from(queue, v).await {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(queue, error = %e, "a fetch reply could not be read; the orphan sweep takes back what it leased");
                    None
                }
            },
            Err(_) => None,
        };
        Ok(Waited {
            wait_error: waited.err().map(Into::into),
            fetched,
        })
    }

    /// The Redis client id of a (blocking) connection, for [`Broker::unblock`].
    pub async fn client_id(conn: &mut BlockingConnection) -> Result<i64> {
        Ok(redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn.conn)
            .await?)
    }

    /// Ends the blocking wait of connection `id` at once, as if it had timed out (`CLIENT
    /// UNBLOCK`), so a pipelined fetch behind it runs now. Returns whether a wait was ended.
    /// `node` is the blocking connection's (on a cluster, the unblock must reach the same node).
    pub async fn unblock(&self, id: i64, node: Option<&(String, u16)>) -> Result<bool> {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("UNBLOCK").arg(id);
        let n = self.conn.on_node(cmd, node).await?;
        Ok(matches!(n, Value::Int(1)))
    }

    /// Replaces the wake markers among those of `queues` that hold something else than a sorted
    /// set (`rewake.lua`), and returns those queues with the type their marker held: the
    /// fetcher's blocking wait over every marker fails while one has the wrong type.
    pub async fn repair_wake_markers(&self, queues: &[String]) -> Result<Vec<(String, String)>> {
        let mut p = redis::pipe();
        for q in queues {
            p.cmd("TYPE").arg(&QueueKeys::new(q).wake);
        }
        let mut c = self.conn.clone();
        let kinds: Vec<String> = p.query_async(&mut c).await?;
        let mut broken = Vec::new();
        for (q, kind) in queues.iter().zip(kinds) {
            if kind != "zset" && kind != "none" {
                let _: i64 = SCRIPTS
                    .rewake
                    .key(&QueueKeys::new(q).wake)
                    .invoke_async(&mut c)
                    .await?;
                broken.push((q.clone(), kind));
            }
        }
        Ok(broken)
    }

    /// Extends `server`'s lease on `queue`; returns the positions of the tasks in `held` it no
    /// longer holds.
    pub async fn extend(
        &self,
        queue: &str,
        server: &str,
        held: &[(Vec<u8>, u64)],
        lease: Duration,
    ) -> Result<Vec<usize>> {
        let k = QueueKeys::new(queue);
        let mut lost = Vec::new();
        let mut chunks: Vec<&[(Vec<u8>, u64)]> = held.chunks(MAX_SCRIPT_BATCH).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for (n, chunk) in chunks.into_iter().enumerate() {
            let mut inv = SCRIPTS.extend.prepare_invoke();
            inv.key(&k.leases)
                .key(k.active(server))
                .arg(lease.as_millis() as u64)
                .arg(server)
                .arg(chunk.len());
            for (id, token) in chunk {
                inv.arg(&id[..]).arg(token_text(*token));
            }
            let mut c = self.conn.clone();
            let l: Vec<usize> = inv.invoke_async(&mut c).await?;
            lost.extend(
                l.into_iter()
                    .map(|i| n * MAX_SCRIPT_BATCH + i.saturating_sub(1)),
            );
        }
        Ok(lost)
    }

    /// Servers whose lease on `queue` has lapsed (read only).
    #[cfg(test)]
    pub async fn expired_servers(&self, queue: &str, limit: usize) -> Result<Vec<String>> {
        Ok(self.expired_servers_at(queue, limit).await?.1)
    }

    /// Servers whose lease on `queue` has lapsed, with the Redis time (Unix ms) they were
    /// judged at (read only).
    pub async fn expired_servers_at(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<(u64, Vec<String>)> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let mut out: Vec<String> = SCRIPTS
            .expired
            .key(&k.leases)
            .arg(limit)
            .invoke_async(&mut c)
            .await?;
        // expired.lua always puts the time first.
        let now = if out.is_empty() {
            0
        } else {
            out.remove(0).parse().unwrap_or(0)
        };
        Ok((now, out))
    }

    /// The tasks `server` holds on `queue` (read only); entries that do not parse are left out
    /// (see [`Broker::held_all`]).
    pub async fn held(&self, queue: &str, server: &str) -> Result<Vec<Expired>> {
        Ok(self.held_all(queue, server).await?.0)
    }

    /// Servers that hold (or held) a lease on `queue`.
    pub(super) async fn lease_holders(&self, queue: &str) -> Result<Vec<String>> {
        let mut c = self.conn.clone();
        Ok(c.zrange(&QueueKeys::new(queue).leases, 0, -1).await?)
    }
}

//! The one door to Redis.
//!
//! The broker owns every key name ([`keys`]), the record encoding ([`record`]) and the Lua scripts
//! (`scripts/*.lua`). Each state change of a task is one script, so it is atomic: a crash between
//! any two lines of Rust leaves every task in exactly one state. The rest of the crate calls the
//! typed methods below and never sees a key.
//!
//! ```text
//!             enqueue                 fetch                 complete
//!  producer ──────────▶ pending ─────────────▶ active ─────────────────▶ (gone / completed)
//!              │          ▲  ▲                 │ │ │
//!              │ delay    │  │ requeue         │ │ └── kill ──▶ dead
//!              ▼          │  │ (shutdown,      │ └─ retry ─▶ retry ──┐
//!           delayed ──────┘  │  lease expired) │                     │
//!              forward       └─────────────────┘          forward    │
//!                         pending ◀──────────────────────────────────┘
//! ```
//!
//! Scripts take all the keys they touch in KEYS, all under one `{queue}` hash tag, and read time
//! from Redis (`TIME`) so that no client clock decides when a task is due or a lease has expired.

pub(crate) mod cancel;
pub(crate) mod cron;
pub(crate) mod deps;
mod garbage;
pub(crate) use deps::MAX_DEPENDENCIES;
pub(crate) mod keys;
pub(crate) mod outbox;
pub(crate) mod record;

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncCommands, Script, Value};

use crate::error::mask_url;
use crate::{Error, Result};
use keys::QueueKeys;

/// The dedicated connection of a fetcher's blocking wait ([`Broker::blocking_connection`]).
pub(crate) type BlockingConnection = MultiplexedConnection;

/// The longest blocking wait on a [`Broker::blocking_connection`].
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(5);

struct Scripts {
    enqueue: Script,
    fetch: Script,
    complete: Script,
    retry: Script,
    kill: Script,
    requeue: Script,
    forward: Script,
    extend: Script,
    expired: Script,
    janitor: Script,
    rerun: Script,
    flush: Script,
    cron_fire: Script,
    cron_set: Script,
    cancel: Script,
    dep_register: Script,
    dep_enqueue: Script,
    dep_satisfy: Script,
    dep_fail: Script,
    dep_aside: Script,
    dep_begin: Script,
    dep_claim: Script,
    records_trim: Script,
    oldest: Script,
    bury: Script,
    resume: Script,
}

/// A script that moves or removes a task, with the shared prelude (`scripts/prelude.lua`: the
/// helpers that make a refusal name its key) in front.
macro_rules! guarded {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("scripts/prelude.lua"),
            include_str!(concat!("scripts/", $file))
        ))
    };
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: guarded!("enqueue.lua"),
    fetch: guarded!("fetch.lua"),
    complete: guarded!("complete.lua"),
    retry: guarded!("retry.lua"),
    kill: guarded!("kill.lua"),
    requeue: guarded!("requeue.lua"),
    forward: guarded!("forward.lua"),
    extend: Script::new(include_str!("scripts/extend.lua")),
    expired: Script::new(include_str!("scripts/expired.lua")),
    janitor: guarded!("janitor.lua"),
    rerun: guarded!("rerun.lua"),
    flush: guarded!("flush.lua"),
    cron_fire: guarded!("cron_fire.lua"),
    cron_set: Script::new(include_str!("scripts/cron_set.lua")),
    cancel: guarded!("cancel.lua"),
    dep_register: guarded!("dep_register.lua"),
    dep_enqueue: guarded!("dep_enqueue.lua"),
    dep_satisfy: guarded!("dep_satisfy.lua"),
    dep_fail: guarded!("dep_fail.lua"),
    dep_aside: guarded!("dep_aside.lua"),
    dep_begin: guarded!("dep_begin.lua"),
    dep_claim: guarded!("dep_claim.lua"),
    records_trim: guarded!("records_trim.lua"),
    oldest: Script::new(include_str!("scripts/oldest.lua")),
    bury: guarded!("bury.lua"),
    resume: guarded!("resume.lua"),
});

/// Most tasks sent to one script call; larger batches are split (Lua's `unpack` has a limit).
pub(crate) const MAX_SCRIPT_BATCH: usize = 1000;

/// A task ready to be written by [`Broker::enqueue`].
#[derive(Debug, Clone)]
pub(crate) struct NewTask {
    pub record: Vec<u8>,
    /// Counted per type in the queue's enqueued counters.
    pub task_type: String,
    pub delay_ms: u64,
    /// Unique key and its TTL in seconds.
    pub unique: Option<(String, u64)>,
}

/// How a batch treats unique-key conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnqueueMode {
    /// Each task stands alone.
    Each,
    /// All or nothing.
    All,
}

/// Tasks leased by one fetch.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub token: u64,
    pub records: Vec<Vec<u8>>,
    /// Pending members that were no record of ours and that this call moved to the dead-letter
    /// queue (`bury.lua`): the caller counts them as dead-lettered `rediq:undecodable` tasks.
    pub buried: usize,
    /// Why setting the rest of them aside failed, if it did: they stay in pending, and the
    /// caller backs off this queue as after a failed fetch (fetch.lua wakes it again at once).
    pub bury_error: Option<Error>,
}

/// A successful task to acknowledge.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    pub id: Vec<u8>,
    pub token: u64,
    pub unique_key: Option<String>,
}

/// A leased task whose lease has expired.
#[derive(Debug)]
pub(crate) struct Expired {
    pub id: Vec<u8>,
    pub token: u64,
    pub record: Vec<u8>,
}

/// A leased task to put back: id, fencing token, and the new record (`None` keeps the stored
/// one).
pub(crate) type Requeue = (Vec<u8>, u64, Option<Vec<u8>>);

/// Where delayed work waits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Waiting {
    Delayed,
    Retry,
}

/// Limits of the dead-letter queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeadLimits {
    pub max_count: u64,
    pub max_age: Duration,
}

impl Default for DeadLimits {
    /// The server's defaults: 100,000 tasks, 90 days.
    fn default() -> Self {
        DeadLimits {
            max_count: 100_000,
            max_age: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Task counts of one queue, per state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Ready to run.
    pub pending: u64,
    /// Leased to a server and running (or about to be acknowledged).
    pub active: u64,
    /// Waiting for their delay.
    pub delayed: u64,
    /// Waiting for their next attempt.
    pub retry: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// Kept after success (only with a completed-task retention).
    pub completed: u64,
    /// Waiting for their dependencies to complete.
    pub waiting: u64,
    /// Tasks completed successfully, ever.
    pub processed_total: u64,
    /// Failed attempts, ever.
    pub failed_total: u64,
    /// Dead tasks dropped by the dead-letter limits, ever.
    pub dead_trimmed_total: u64,
    /// Tasks cancelled, ever.
    pub cancelled_total: u64,
    /// Whether the queue is paused (hands out nothing).
    pub paused: bool,
}

/// How many tasks of each state a flush removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushCounts {
    /// Ready to run.
    pub pending: u64,
    /// Waiting for their delay.
    pub delayed: u64,
    /// Waiting for their next attempt.
    pub retry: u64,
    /// Dead-lettered.
    pub dead: u64,
    /// Kept after success.
    pub completed: u64,
    /// Leased to servers (their results will be refused).
    pub active: u64,
    /// Waiting for their dependencies.
    pub waiting: u64,
}

/// A task state that can be listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Ready to run.
    Pending,
    /// Leased to a server.
    Active,
    /// Waiting for its delay.
    Delayed,
    /// Waiting for its next attempt.
    Retry,
    /// Dead-lettered.
    Dead,
    /// Kept after success.
    Completed,
    /// Waiting for its dependencies to complete.
    Waiting,
}

fn token_text(token: u64) -> String {
    format!("{token:016}")
}

/// Splits an active entry (`token .. "|" .. record`; entries written by 0.1.0 carry the pending
/// score between the two) into token and record.
fn parse_active(value: &[u8]) -> Option<(u64, &[u8])> {
    let token = std::str::from_utf8(value.get(..16)?).ok()?.parse().ok()?;
    let bar = value.get(16..)?.iter().position(|b| *b == b'|')? + 16;
    Some((token, &value[bar + 1..]))
}

/// Connection to Redis plus the typed transitions.
#[derive(Clone)]
pub(crate) struct Broker {
    conn: ConnectionManager,
    client: redis::Client,
    url: String,
    /// How long completion and failure records of tasks are kept for dependents.
    deps: DepLimits,
    /// Notified when a transition wrote an outbox entry (the resolver then delivers it).
    outbox: std::sync::Arc<tokio::sync::Notify>,
}

/// How long completion records are kept, so a task may depend on one that already completed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DepLimits {
    /// At least [`MIN_DEP_RETENTION`].
    pub retention: Duration,
    /// Most completion records kept per queue (the oldest go first); `u64::MAX` = no cap.
    pub max_records: u64,
}

/// The shortest dependency retention: a dependent that found its dependency queued a moment
/// ago must find its completion record if it completed meanwhile.
pub(crate) const MIN_DEP_RETENTION: Duration = Duration::from_secs(60);

/// Early facts (news for a dependent that is still being written) live at least this long.
const EARLY_FACTS_FLOOR: Duration = Duration::from_secs(3600);

impl Default for DepLimits {
    fn default() -> Self {
        DepLimits {
            retention: Duration::from_secs(24 * 3600),
            max_records: u64::MAX,
        }
    }
}

/// The shared connection: reconnects by itself, and gives up on a command after 10 s (twice
/// retried), so nothing waits forever on a Redis that stopped answering.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("url", &self.url).finish()
    }
}

impl Broker {
    /// Connects, failing fast with the (masked) URL when Redis does not answer.
    pub async fn connect(url: &str) -> Result<Broker> {
        let masked = mask_url(url);
        let conn_err = |source| Error::Connection {
            url: masked.clone(),
            source,
        };
        let client = redis::Client::open(url).map_err(conn_err)?;
        let conn = client
            .get_connection_manager_with_config(manager_config())
            .await
            .map_err(conn_err)?;
        Ok(Broker {
            conn,
            client,
            url: masked,
            deps: DepLimits::default(),
            outbox: Default::default(),
        })
    }

    /// A broker with its own connection, whose I/O runs on the runtime this is called on: for
    /// a service on its own thread (the heartbeat), so that its Redis traffic does not wait for
    /// a shared runtime whose threads handlers may block.
    pub async fn detached(&self) -> Result<Broker> {
        let conn = self
            .client
            .get_connection_manager_with_config(manager_config())
            .await
            .map_err(|source| Error::Connection {
                url: self.url.clone(),
                source,
            })?;
        Ok(Broker {
            conn,
            client: self.client.clone(),
            url: self.url.clone(),
            deps: self.deps,
            outbox: self.outbox.clone(),
        })
    }

    /// Sets how long completion records are kept (a server's setting; before it is cloned).
    pub fn set_dep_limits(&mut self, limits: DepLimits) {
        self.deps = limits;
    }

    /// Resolves when a transition made through this broker (or a clone) wrote an outbox entry.
    pub async fn outbox_written(&self) {
        self.outbox.notified().await;
    }

    fn note_outbox(&self) {
        self.outbox.notify_one();
    }

    /// A dedicated connection for blocking commands: a blocking command on the shared
    /// multiplexed connection would delay every command queued behind it. Its waits are short
    /// (at most [`MAX_BLOCK`]), so a response timeout a little above that tells a silently
    /// dropped connection from a long wait: without it a fetcher could hang forever while its
    /// heartbeat keeps the server looking alive.
    pub async fn blocking_connection(&self) -> Result<MultiplexedConnection> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(MAX_BLOCK + Duration::from_secs(5)));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|source| Error::Connection {
                url: self.url.clone(),
                source,
            })
    }

    /// Answers PING.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Writes tasks into `queue` (at most [`MAX_SCRIPT_BATCH`]). Returns, per task, `None` when
    /// enqueued or the id bytes of the task holding its unique key.
    pub async fn enqueue(
        &self,
        queue: &str,
        tasks: &[NewTask],
        mode: EnqueueMode,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let k = QueueKeys::new(queue);
        let mut inv = SCRIPTS.enqueue.prepare_invoke();
        inv.key(&k.pending)
            .key(&k.delayed)
            .key(&k.seq)
            .key(&k.wake)
            .key(&k.enqueued);
        let mut locks: HashMap<&str, usize> = HashMap::new();
        for t in tasks {
            if let Some((key, _)) = &t.unique {
                let next = locks.len() + 1;
                if let std::collections::hash_map::Entry::Vacant(e) = locks.entry(key.as_str()) {
                    e.insert(next);
                    inv.key(k.unique(key));
                }
            }
        }
        inv.arg(match mode {
            EnqueueMode::Each => "each",
            EnqueueMode::All => "all",
        })
        .arg(tasks.len());
        for t in tasks {
            inv.arg(&t.record[..]);
        }
        let extra: Vec<(usize, &NewTask)> = tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.delay_ms > 0 || t.unique.is_some())
            .collect();
        // Task types of the call and how many of each (usually one type).
        let mut types: Vec<(&str, usize)> = Vec::new();
        let type_of: Vec<usize> = tasks
            .iter()
            .map(
                |t| match types.iter().position(|(ty, _)| *ty == t.task_type) {
                    Some(i) => {
                        types[i].1 += 1;
                        i + 1
                    }
                    None => {
                        types.push((&t.task_type, 1));
                        types.len()
                    }
                },
            )
            .collect();
        inv.arg(extra.len());
        for (i, t) in extra {
            let (idx, ttl) = match &t.unique {
                Some((key, ttl)) => (locks[key.as_str()], *ttl),
                None => (0, 0),
            };
            inv.arg(i + 1)
                .arg(t.delay_ms)
                .arg(idx)
                .arg(ttl)
                .arg(type_of[i]);
        }
        inv.arg(types.len());
        for (ty, n) in &types {
            inv.arg(*ty).arg(*n);
        }
        let mut c = self.conn.clone();
        let flat: Vec<Vec<u8>> = inv.invoke_async(&mut c).await?;
        let mut out = vec![None; tasks.len()];
        let mut it = flat.into_iter();
        while let (Some(pos), Some(holder)) = (it.next(), it.next()) {
            let pos: usize = std::str::from_utf8(&pos)
                .ok()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    Error::Serialization("enqueue.lua returned a bad position".into())
                })?;
            if let Some(slot) = out.get_mut(pos.wrapping_sub(1)) {
                *slot = Some(holder);
            }
        }
        Ok(out)
    }

    /// Leases up to `n` pending tasks of `queue` to `server`.
    pub async fn fetch(
        &self,
        queue: &str,
        server: &str,
        n: usize,
        lease: Duration,
    ) -> Result<Option<Fetched>> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let v: Value = SCRIPTS
            .fetch
            .key(&k.pending)
            .key(&k.leases)
            .key(k.active(server))
            .key(&k.token)
            .key(&k.wake)
            .key(&k.paused)
            .arg(n)
            .arg(lease.as_millis() as u64)
            .arg(server)
            .invoke_async(&mut c)
            .await?;
        let Value::Array(mut parts) = v else {
            return Err(Error::Serialization(format!("fetch.lua returned {v:?}")));
        };
        if parts.is_empty() {
            return Ok(None);
        }
        let (mut buried, mut bury_error) = (0, None);
        if parts.len() == 3 {
            // Members that are no record of ours: set aside one by one, never leased. The
            // tasks leased meanwhile are handed out whatever happens to them; what could not
            // be moved stays in pending for the next fetch.
            let foreign = parts.pop().unwrap_or(Value::Nil);
            let (n, done) = self.bury_foreign(queue, foreign).await;
            buried = n;
            bury_error = done.err();
        }
        if parts.len() != 2 {
            return Err(Error::Serialization(format!(
                "fetch.lua returned {} parts",
                parts.len()
            )));
        }
        let bad = |e: redis::ParsingError| Error::Serialization(format!("fetch.lua reply: {e}"));
        let records: Vec<Vec<u8>> =
            redis::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(bad)?;
        let token: u64 = redis::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(bad)?;
        Ok(Some(Fetched {
            token,
            records,
            buried,
            bury_error,
        }))
    }

    /// Acknowledges successful tasks of `server`. Returns the positions of refused (stale) acks.
    /// A retry of one batch passes the same `nonce`: if the first call landed (its reply lost),
    /// the retry returns that call's answer instead of refusing the acks it already applied.
    pub async fn complete(
        &self,
        queue: &str,
        server: &str,
        acks: &[Ack],
        retention: Option<Duration>,
        nonce: u64,
    ) -> Result<Vec<usize>> {
        let k = QueueKeys::new(queue);
        let mut inv = SCRIPTS.complete.prepare_invoke();
        inv.key(k.active(server))
            .key(&k.completed)
            .key(&k.processed)
            .key(&k.done)
            .key(&k.done_count)
            .key(&k.dependents)
            .key(&k.outbox);
        // Completion-record buckets, one per creation second among the acks (usually 1–2).
        let mut buckets: Vec<String> = Vec::new();
        let bucket_of: Vec<usize> = acks
            .iter()
            .map(|a| {
                let key = k.done_bucket(&a.id);
                match buckets.iter().position(|b| *b == key) {
                    Some(i) => i + 1,
                    None => {
                        buckets.push(key);
                        buckets.len()
                    }
                }
            })
            .collect();
        for b in &buckets {
            inv.key(b);
        }
        let mut locks: HashMap<&str, usize> = HashMap::new();
        for a in acks {
            if let Some(key) = &a.unique_key {
                let next = locks.len() + 1;
                if let std::collections::hash_map::Entry::Vacant(e) = locks.entry(key.as_str()) {
                    e.insert(next);
                    inv.key(k.unique(key));
                }
            }
        }
        inv.arg(retention.map_or(0, |r| r.as_millis().max(1) as u64))
            .arg(buckets.len())
            .arg(acks.len());
        for (a, bucket) in acks.iter().zip(bucket_of) {
            let idx = a.unique_key.as_deref().map_or(0, |key| locks[key]);
            inv.arg(&a.id[..])
                .arg(token_text(a.token))
                .arg(idx)
                .arg(bucket);
        }
        inv.key(k.ack_receipt(server)).arg(nonce);
        let mut c = self.conn.clone();
        let reply: Vec<usize> = inv.invoke_async(&mut c).await?;
        let mut it = reply.into_iter();
        if it.next().unwrap_or(0) > 0 {
            self.note_outbox();
        }
        Ok(it.map(|i| i.saturating_sub(1)).collect())
    }

    /// A failed attempt with retries left goes to the retry set. `false` = stale token.
    pub async fn retry(
        &self,
        queue: &str,
        server: &str,
        id: &[u8],
        token: u64,
        record: &[u8],
        backoff: Duration,
    ) -> Result<bool> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let r: i64 = SCRIPTS
            .retry
            .key(k.active(server))
            .key(&k.retry)
            .key(&k.failed)
            .arg(id)
            .arg(token_text(token))
            .arg(record)
            .arg(backoff.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(r == 1)
    }

    /// Moves a task of `server` to the dead-letter queue. `false` = stale token (or, with
    /// `expired_only`, a lease renewed meanwhile).
    #[allow(clippy::too_many_arguments)]
    pub async fn kill(
        &self,
        queue: &str,
        server: &str,
        id: &[u8],
        token: u64,
        record: &[u8],
        unique_key: Option<&str>,
        limits: DeadLimits,
        expired_only: bool,
    ) -> Result<bool> {
        let k = QueueKeys::new(queue);
        let mut inv = SCRIPTS.kill.prepare_invoke();
        inv.key(k.active(server))
            .key(&k.leases)
            .key(&k.dead)
            .key(&k.dead_trimmed)
            .key(&k.failed)
            .key(&k.failed_ids)
            .key(&k.dependents)
            .key(&k.outbox);
        if let Some(key) = unique_key {
            inv.key(k.unique(key));
        }
        inv.arg(id)
            .arg(token_text(token))
            .arg(record)
            .arg(limits.max_count)
            .arg(limits.max_age.as_millis() as u64)
            .arg(if expired_only { "1" } else { "0" })
            .arg(server);
        let mut c = self.conn.clone();
        let r: i64 = inv.invoke_async(&mut c).await?;
        if r == 2 {
            self.note_outbox();
        }
        Ok(r >= 1)
    }

    /// Puts tasks of `server` back to the front of pending (of their priority). `record: None` keeps the
    /// stored record (shutdown); `expired_only` acts only while the server's lease has lapsed
    /// (recoverer), and then also drops the lease of a server left holding nothing.
    pub async fn requeue(
        &self,
        queue: &str,
        server: &str,
        items: &[Requeue],
        expired_only: bool,
    ) -> Result<u64> {
        Ok(self
            .requeue_which(queue, server, items, expired_only)
            .await?
            .len() as u64)
    }

    /// Like [`Broker::requeue`], returning the positions in `items` of the tasks that went back
    /// (the others were refused: stale token, or the lease renewed meanwhile).
    pub async fn requeue_which(
        &self,
        queue: &str,
        server: &str,
        items: &[Requeue],
        expired_only: bool,
    ) -> Result<Vec<usize>> {
        let k = QueueKeys::new(queue);
        let mut moved = Vec::new();
        let mut chunks: Vec<&[Requeue]> = items.chunks(MAX_SCRIPT_BATCH).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for (n, chunk) in chunks.into_iter().enumerate() {
            let mut inv = SCRIPTS.requeue.prepare_invoke();
            inv.key(k.active(server))
                .key(&k.leases)
                .key(&k.pending)
                .key(&k.wake)
                .key(&k.failed)
                .arg(if expired_only { "1" } else { "0" })
                .arg(server)
                .arg(chunk.len());
            for (id, token, record) in chunk {
                inv.arg(&id[..])
                    .arg(token_text(*token))
                    .arg(record.as_deref().unwrap_or(&[]));
            }
            let mut c = self.conn.clone();
            let which: Vec<usize> = inv.invoke_async(&mut c).await?;
            moved.extend(
                which
                    .into_iter()
                    .map(|i| n * MAX_SCRIPT_BATCH + i.saturating_sub(1)),
            );
        }
        Ok(moved)
    }

    /// Moves due delayed or retry tasks to pending; returns how many.
    pub async fn forward(&self, queue: &str, from: Waiting, limit: usize) -> Result<u64> {
        let k = QueueKeys::new(queue);
        let src = match from {
            Waiting::Delayed => &k.delayed,
            Waiting::Retry => &k.retry,
        };
        let mut c = self.conn.clone();
        Ok(SCRIPTS
            .forward
            .key(src)
            .key(&k.pending)
            .key(&k.seq)
            .key(&k.wake)
            .arg(limit)
            .invoke_async(&mut c)
            .await?)
    }

    /// Trims completed tasks past their retention, dead tasks beyond the limits, and
    /// completion and failure records past the dependency retention (completion records also
    /// beyond their cap). Returns how many completed tasks, dead tasks and completion records
    /// went.
    pub async fn trim(&self, queue: &str, limits: DeadLimits) -> Result<(u64, u64, u64)> {
        const ROUND: isize = 100;
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let (done, dead): (u64, u64) = SCRIPTS
            .janitor
            .key(&k.completed)
            .key(&k.dead)
            .key(&k.dead_trimmed)
            .key(&k.failed_ids)
            .key(&k.early)
            .arg(limits.max_count)
            .arg(limits.max_age.as_millis() as u64)
            .arg(self.deps.retention.as_millis() as u64)
            .arg(self.deps.retention.max(EARLY_FACTS_FLOOR).as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        let mut records = 0;
        loop {
            let oldest: Vec<String> = c.zrange(&k.done, 0, ROUND - 1).await?;
            if oldest.is_empty() {
                break;
            }
            let mut inv = SCRIPTS.records_trim.prepare_invoke();
            inv.key(&k.done).key(&k.done_count);
            for b in &oldest {
                inv.key(b);
            }
            inv.arg(self.deps.retention.as_millis() as u64)
                .arg(self.deps.max_records);
            let (buckets, n): (usize, u64) = inv.invoke_async(&mut c).await?;
            records += n;
            if buckets < oldest.len() || oldest.len() < ROUND as usize {
                break;
            }
        }
        Ok((done, dead, records))
    }

    /// Blocks on a dedicated connection until one of the queues signals new work or `timeout`
    /// passes. Returns whether a signal arrived.
    pub async fn wait_for_work(
        conn: &mut MultiplexedConnection,
        queues: &[String],
        timeout: Duration,
    ) -> Result<bool> {
        // Never 0: BZPOPMIN 0 waits forever.
        let timeout = timeout.clamp(Duration::from_millis(1), MAX_BLOCK);
        let mut cmd = redis::cmd("BZPOPMIN");
        for q in queues {
            cmd.arg(QueueKeys::new(q).wake);
        }
        cmd.arg(timeout.as_secs_f64());
        let v: Value = cmd.query_async(conn).await?;
        Ok(!matches!(v, Value::Nil))
    }

    /// The queues among `queues` whose wake marker holds something else than a sorted set,
    /// with the type it holds: the blocking wait leaves them out until they are repaired.
    pub async fn broken_wake_markers(&self, queues: &[String]) -> Result<Vec<(String, String)>> {
        let mut p = redis::pipe();
        for q in queues {
            p.cmd("TYPE").arg(QueueKeys::new(q).wake);
        }
        let mut c = self.conn.clone();
        let kinds: Vec<String> = p.query_async(&mut c).await?;
        Ok(queues
            .iter()
            .zip(kinds)
            .filter(|(_, k)| k != "zset" && k != "none")
            .map(|(q, k)| (q.clone(), k))
            .collect())
    }

    /// Records a queue name in the set of known queues.
    pub async fn register_queues(&self, queues: &[String]) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.sadd(keys::queues(), queues).await?;
        Ok(())
    }

    /// Known queue names, sorted.
    pub async fn queues(&self) -> Result<Vec<String>> {
        let mut c = self.conn.clone();
        let mut q: Vec<String> = c.smembers(keys::queues()).await?;
        q.sort();
        Ok(q)
    }

    /// Registers or refreshes a server in the worker registry.
    pub async fn heartbeat_worker(
        &self,
        id: &str,
        info: &[(&str, String)],
        ttl: Duration,
    ) -> Result<()> {
        let key = keys::worker(id);
        let now = crate::task::now_ms();
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .hset_multiple(&key, info)
            .ignore()
            .hset(&key, "last_heartbeat_ms", now)
            .ignore()
            .pexpire(&key, ttl.as_millis() as i64)
            .ignore()
            .zadd(keys::workers(), id, now)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Removes a server from the registry (clean shutdown).
    pub async fn unregister_worker(&self, id: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .del(keys::worker(id))
            .ignore()
            .zrem(keys::workers(), id)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Drops registry entries whose heartbeat is older than `max_age`; returns how many.
    pub async fn prune_workers(&self, max_age: Duration) -> Result<u64> {
        let cutoff = crate::task::now_ms().saturating_sub(max_age.as_millis() as u64);
        let mut c = self.conn.clone();
        Ok(c.zrembyscore(keys::workers(), "-inf", format!("({cutoff}"))
            .await?)
    }

    /// Registered servers: (id, fields of their registration).
    pub async fn workers(&self) -> Result<Vec<(String, HashMap<String, String>)>> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c.zrange(keys::workers(), 0, -1).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let info: HashMap<String, String> = c.hgetall(keys::worker(&id)).await?;
            if !info.is_empty() {
                out.push((id, info));
            }
        }
        Ok(out)
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
    async fn lease_holders(&self, queue: &str) -> Result<Vec<String>> {
        let mut c = self.conn.clone();
        Ok(c.zrange(QueueKeys::new(queue).leases, 0, -1).await?)
    }

    /// Counts per state of one queue.
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        #[allow(clippy::type_complexity)]
        let (pending, delayed, retry, dead, completed, waiting, p, f, t, cancelled, paused): (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            bool,
        ) = redis::pipe()
            .zcard(&k.pending)
            .zcard(&k.delayed)
            .zcard(&k.retry)
            .zcard(&k.dead)
            .zcard(&k.completed)
            .hlen(&k.waiting)
            .get(&k.processed)
            .get(&k.failed)
            .get(&k.dead_trimmed)
            .get(&k.cancelled)
            .exists(&k.paused)
            .query_async(&mut c)
            .await?;
        let mut active = 0;
        for server in self.lease_holders(queue).await? {
            let n: u64 = c.hlen(k.active(&server)).await?;
            active += n;
        }
        Ok(QueueStats {
            queue: queue.to_string(),
            pending,
            active,
            delayed,
            retry,
            dead,
            completed,
            waiting,
            processed_total: p.unwrap_or(0),
            failed_total: f.unwrap_or(0),
            dead_trimmed_total: t.unwrap_or(0),
            cancelled_total: cancelled.unwrap_or(0),
            paused,
        })
    }

    /// Tasks enqueued into `queue`, ever, per task type (by every producer and scheduler).
    pub async fn enqueued_counts(&self, queue: &str) -> Result<Vec<(String, u64)>> {
        let mut c = self.conn.clone();
        Ok(c.hgetall(QueueKeys::new(queue).enqueued).await?)
    }

    /// The head of every priority band of `queue`'s pending set (what has waited longest in
    /// each), with the Redis time in Unix ms (read only).
    pub async fn pending_heads(&self, queue: &str) -> Result<(Vec<Vec<u8>>, u64)> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let v: Value = SCRIPTS.oldest.key(&k.pending).invoke_async(&mut c).await?;
        let Value::Array(mut parts) = v else {
            return Err(Error::Serialization(format!("oldest.lua returned {v:?}")));
        };
        if parts.is_empty() {
            return Err(Error::Serialization("oldest.lua returned nothing".into()));
        }
        let bad = |e: redis::ParsingError| Error::Serialization(format!("oldest.lua reply: {e}"));
        let now: u64 = redis::from_redis_value(parts.remove(0)).map_err(bad)?;
        let heads: Vec<Vec<u8>> = redis::from_redis_value(Value::Array(parts)).map_err(bad)?;
        Ok((heads, now))
    }

    /// Raw records of one state, oldest first (at most `limit`).
    pub async fn records(
        &self,
        queue: &str,
        state: TaskState,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        if limit == 0 {
            return Ok(Vec::new());
        }
        // ZRANGE's stop is inclusive; -1 (the end) for limits beyond isize.
        let stop = isize::try_from(limit).map_or(-1, |l| l - 1);
        Ok(match state {
            TaskState::Pending => c.zrange(&k.pending, 0, stop).await?,
            TaskState::Delayed => c.zrange(&k.delayed, 0, stop).await?,
            TaskState::Retry => c.zrange(&k.retry, 0, stop).await?,
            TaskState::Dead => c.zrange(&k.dead, 0, stop).await?,
            TaskState::Completed => c.zrange(&k.completed, 0, stop).await?,
            TaskState::Waiting => {
                let mut all: Vec<Vec<u8>> = c.hvals(&k.waiting).await?;
                // Hash order is arbitrary; ids are time-ordered, so sort by them (oldest first).
                all.sort_by(|a, b| record::raw_id(a).cmp(record::raw_id(b)));
                all.truncate(limit);
                all
            }
            TaskState::Active => {
                let mut out = Vec::new();
                for server in self.lease_holders(queue).await? {
                    out.extend(
                        self.held(queue, &server)
                            .await?
                            .into_iter()
                            .map(|e| e.record),
                    );
                }
                out.truncate(limit);
                out
            }
        })
    }
    /// Pauses a queue: fetches hand out nothing until it is resumed. Enqueueing still works,
    /// and the flag lives in Redis, so it holds across server restarts.
    pub async fn pause(&self, queue: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.set(QueueKeys::new(queue).paused, 1).await?;
        Ok(())
    }

    /// Resumes a paused queue and wakes blocked fetchers.
    pub async fn resume(&self, queue: &str) -> Result<()> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        // A script, not MULTI: a wake marker of the wrong type fails ZADD inside a MULTI after
        // the DEL already landed (the queue resumed, yet an error reported); resume.lua replaces
        // the marker instead.
        let _: i64 = SCRIPTS
            .resume
            .key(&k.paused)
            .key(&k.wake)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Dead records of a queue whose id is one of `ids` (all dead records when `ids` is
    /// `None`), at most `limit`. Reads the dead set in pages; ids are compared on the raw head
    /// bytes, without decoding.
    pub async fn dead_records(
        &self,
        queue: &str,
        ids: Option<&[Vec<u8>]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        const PAGE: isize = 1000;
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let mut out = Vec::new();
        let mut start = 0isize;
        loop {
            let page: Vec<Vec<u8>> = c.zrange(&k.dead, start, start + PAGE - 1).await?;
            let done = (page.len() as isize) < PAGE;
            for r in page {
                if ids.is_none_or(|ids| ids.iter().any(|id| id.as_slice() == record::raw_id(&r))) {
                    out.push(r);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
            start += PAGE;
        }
    }

    /// Moves dead records back to pending: `(stored record, record to run)` pairs. Returns how
    /// many moved.
    pub async fn rerun(&self, queue: &str, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<u64> {
        let k = QueueKeys::new(queue);
        let mut moved = 0;
        for chunk in pairs.chunks(MAX_SCRIPT_BATCH) {
            let mut inv = SCRIPTS.rerun.prepare_invoke();
            inv.key(&k.dead)
                .key(&k.pending)
                .key(&k.seq)
                .key(&k.wake)
                .key(&k.failed_ids)
                .arg(chunk.len());
            for (old, new) in chunk {
                inv.arg(&old[..]).arg(&new[..]);
            }
            let mut c = self.conn.clone();
            let n: u64 = inv.invoke_async(&mut c).await?;
            moved += n;
        }
        Ok(moved)
    }

    /// Removes every task of a queue. `locks` are the unique keys of the tasks being removed,
    /// with the id of the task each belongs to.
    ///
    /// The queue's set-aside dependency news (`deps:aside`) stays, like its outbox: it tells
    /// dependents in other queues that a task of this queue completed or failed before the
    /// flush, and their references left the dependents hash when the entry was written, so
    /// nothing else would ever tell them.
    pub async fn flush(&self, queue: &str, locks: &[(String, Vec<u8>)]) -> Result<FlushCounts> {
        let k = QueueKeys::new(queue);
        let holders = self.lease_holders(queue).await?;
        let mut inv = SCRIPTS.flush.prepare_invoke();
        inv.key(&k.pending)
            .key(&k.delayed)
            .key(&k.retry)
            .key(&k.dead)
            .key(&k.completed)
            .key(&k.leases)
            .key(&k.waiting)
            .key(&k.needs)
            .key(&k.dependents)
            .key(&k.outbox)
            .key(&k.flushes);
        for h in &holders {
            inv.key(k.active(h));
        }
        for (key, _) in locks {
            inv.key(k.unique(key));
        }
        inv.arg(holders.len());
        for (_, id) in locks {
            inv.arg(&id[..]);
        }
        let mut c = self.conn.clone();
        let n: Vec<u64> = inv.invoke_async(&mut c).await?;
        self.note_outbox();
        let at = |i: usize| n.get(i).copied().unwrap_or(0);
        Ok(FlushCounts {
            pending: at(0),
            delayed: at(1),
            retry: at(2),
            dead: at(3),
            completed: at(4),
            active: at(5),
            waiting: at(6),
        })
    }

    /// Writes a raw member into the pending set, bypassing every check. Tests use it to plant
    /// corrupt records; nothing else may.
    #[doc(hidden)]
    pub async fn plant_raw_pending(&self, queue: &str, raw: &[u8]) -> Result<()> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .zadd(&k.pending, raw, 0)
            .ignore()
            .zadd(&k.wake, "w", 0)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod deps_faults_tests;
#[cfg(test)]
mod faults_tests;
#[cfg(test)]
mod tests;

//! The transitions of a task, one script each: enqueue, fetch, complete, retry, kill, requeue,
//! forward, and the janitor's trim. The types they take and return live here too; the lease work
//! around them (blocking wait, extend, expired leases, held tasks) is in `leases.rs`.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::bands::{bands_of, Bands};
use super::call::Call;
use super::keys::QueueKeys;
use super::leases::token_text;
use super::record;
use super::{Broker, DeadLimits, EARLY_FACTS_FLOOR, MAX_SCRIPT_BATCH, SCRIPTS};
use crate::{Error, Result};

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

/// Why [`Broker::enqueue`] did not write a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotWritten {
    /// Another live task of the queue holds its unique key: that task's id bytes (empty when
    /// the lock vanished meanwhile).
    Held(Vec<u8>),
    /// The queue knows the id already (the enqueue is idempotent).
    Known(crate::Existing),
}

impl NotWritten {
    /// Reads enqueue.lua's answer: one state byte for a known id, else the holder's id.
    fn from_reply(answer: Vec<u8>) -> Self {
        match super::index::existing(&answer) {
            Some(state) => NotWritten::Known(state),
            None => NotWritten::Held(answer),
        }
    }
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
    /// Why setting the rest of them aside failed, if it did: they stay in the foreign list
    /// (the janitor tries again), and the caller backs off this queue as after a failed fetch.
    pub bury_error: Option<Error>,
    /// The queue's limits (concurrency, rate) allow nothing now: ask again after this long.
    pub held_for: Option<Duration>,
    /// The tasks asked for that each limit refused (for the metrics).
    pub held: Held,
}

/// Tasks a fetch asked for that the queue's limits refused, per limit.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Held {
    pub concurrency: u64,
    pub rate: u64,
    /// Groups held at their concurrency limit by this fetch (groups.lua).
    pub group_concurrency: u64,
    /// Groups held for their next rate token by this fetch.
    pub group_rate: u64,
    /// The queue has groups (the reply came from the round robin): like a limited queue, it
    /// is asked for free slots only, so that a task of another group does not wait behind
    /// tasks leased ahead.
    pub grouped: bool,
}

impl Held {
    /// Whether any limit held tasks back.
    pub fn any(&self) -> bool {
        self.concurrency + self.rate + self.group_concurrency + self.group_rate > 0
    }
}

/// A successful task to acknowledge.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    pub id: Vec<u8>,
    pub token: u64,
    pub unique_key: Option<String>,
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

impl Broker {
    /// Writes tasks into `queue` (at most [`MAX_SCRIPT_BATCH`]). Returns, per task, `None` when
    /// written, or why it was not: its unique key is held, or the queue knows its id already.
    pub async fn enqueue(
        &self,
        queue: &str,
        tasks: &[NewTask],
        mode: EnqueueMode,
    ) -> Result<Vec<Option<NotWritten>>> {
        let k = QueueKeys::new(queue);
        let mut locks: HashMap<&str, usize> = HashMap::new();
        for t in tasks {
            if let Some((key, _)) = &t.unique {
                let next = locks.len() + 1;
                locks.entry(key.as_str()).or_insert(next);
            }
        }
        let mut lock_keys: Vec<(&str, usize)> = locks.iter().map(|(k, i)| (*k, *i)).collect();
        lock_keys.sort_by_key(|(_, i)| *i);
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
        let type_map: Vec<u8> = if types.len() > 1 {
            type_of
                .iter()
                .flat_map(|i| (*i as u16).to_be_bytes())
                .collect()
        } else {
            Vec::new()
        };
        let ids: Vec<&[u8]> = tasks.iter().map(|t| record::raw_id(&t.record)).collect();
        let due = bands_of(
            tasks
                .iter()
                .filter(|t| t.delay_ms == 0)
                .map(|t| &t.record[..]),
        );
        let flat: Vec<Vec<u8>> = self
            .with_index_and_bands(
                queue,
                &k,
                &SCRIPTS.enqueue,
                &ids,
                ids.len(),
                Some(Bands::Exact(due)),
                |inv| {
                    inv.key(&k.delayed).key(&k.wake).key(&k.enqueued);
                    for (key, _) in &lock_keys {
                        inv.key(k.unique(key));
                    }
                    inv.arg(match mode {
                        EnqueueMode::Each => "each",
                        EnqueueMode::All => "all",
                    })
                    .arg(tasks.len());
                    for t in tasks {
                        inv.arg(&t.record[..]);
                    }
                    inv.arg(extra.len());
                    for (i, t) in &extra {
                        let (idx, ttl) = match &t.unique {
                            Some((key, ttl)) => (locks[key.as_str()], *ttl),
                            None => (0, 0),
                        };
                        inv.arg(i + 1)
                            .arg(t.delay_ms)
                            .arg(idx)
                            .arg(ttl)
                            .arg(type_of[*i]);
                    }
                    inv.arg(types.len());
                    for (ty, n) in &types {
                        inv.arg(*ty).arg(*n);
                    }
                    inv.arg(&type_map[..]);
                },
            )
            .await?;
        let mut out = vec![None; tasks.len()];
        let mut it = flat.into_iter();
        while let (Some(pos), Some(answer)) = (it.next(), it.next()) {
            let pos: usize = std::str::from_utf8(&pos)
                .ok()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    Error::Serialization("enqueue.lua returned a bad position".into())
                })?;
            if pos == 0 {
                self.note_index_shape(queue, &answer);
            } else if let Some(slot) = out.get_mut(pos - 1) {
                *slot = Some(NotWritten::from_reply(answer));
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
        // Under a concurrency limit the script counts every live holder's tasks and names them
        // when the call lacked one (HOLDERS): at most a few rounds while servers come and go;
        // the last round's answer is returned as it is (the fetcher backs off and asks again).
        for round in 0..8 {
            let holders = self.holders.get(queue);
            let v: std::result::Result<Value, Error> = self
                .with_bands(queue, &k, &SCRIPTS.fetch, Bands::Seen(0), |inv| {
                    fetch_args(inv, &k, server, n, lease, &holders)
                })
                .await;
            match v {
                Err(Error::Redis(e)) => match super::limits::holders_named(&e) {
                    Some(named) if round < 7 => self.holders.set(queue, named),
                    _ => return Err(Error::Redis(e)),
                },
                Err(e) => return Err(e),
                Ok(v) => return self.fetched_from(queue, v).await,
            }
        }
        // The loop returns in its last round.
        Err(Error::Serialization("no fetch round ran".into()))
    }

    /// Reads fetch.lua's reply (setting aside the foreign members it names).
    pub(super) async fn fetched_from(&self, queue: &str, v: Value) -> Result<Option<Fetched>> {
        let Value::Array(mut parts) = v else {
            return Err(Error::Serialization(format!("fetch.lua returned {v:?}")));
        };
        if parts.is_empty() {
            return Ok(None);
        }
        let bad = |e: redis::ParsingError| Error::Serialization(format!("fetch.lua reply: {e}"));
        // {"L", ms, held, held}: the queue's limits allow nothing now; try again in about that
        // long. Otherwise the last two of five parts are the tasks each limit held back. With
        // groups two more: the groups each group limit held (seven parts, or six after "L").
        let mut held = Held::default();
        let limited = matches!(&parts[0], Value::BulkString(b) if b == b"L");
        if parts.len() == 7 || (limited && parts.len() == 6) {
            held.group_rate =
                redis::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(bad)?;
            held.group_concurrency =
                redis::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(bad)?;
            held.grouped = true;
        }
        if parts.len() == 5 || (limited && parts.len() == 4) {
            let rate: u64 =
                redis::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(bad)?;
            let conc: u64 =
                redis::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(bad)?;
            held.concurrency = conc;
            held.rate = rate;
        }
        if limited {
            let ms: u64 =
                redis::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(bad)?;
            return Ok(Some(Fetched {
                token: 0,
                records: Vec::new(),
                buried: 0,
                bury_error: None,
                held_for: Some(Duration::from_millis(ms)),
                held,
            }));
        }
        let (mut buried, mut bury_error) = (0, None);
        if parts.len() == 3 {
            // Members that are no record of ours: set aside one by one, never leased. The
            // tasks leased meanwhile are handed out whatever happens to them; what could not
            // be moved stays in pending for the next fetch.
            let foreign = parts.pop().unwrap_or(Value::Nil);
            if !matches!(&foreign, Value::Array(a) if a.is_empty()) {
                let (n, done) = self.bury_foreign(queue, foreign).await;
                buried = n;
                bury_error = done.err();
            }
        }
        if parts.len() != 2 {
            return Err(Error::Serialization(format!(
                "fetch.lua returned {} parts",
                parts.len()
            )));
        }
        let records: Vec<Vec<u8>> =
            redis::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(bad)?;
        let token: u64 = redis::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(bad)?;
        Ok(Some(Fetched {
            token,
            records,
            buried,
            bury_error,
            held_for: None,
            held,
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
        let mut locks: Vec<&str> = Vec::new();
        let lock_of: Vec<usize> = acks
            .iter()
            .map(|a| match &a.unique_key {
                None => 0,
                Some(key) => match locks.iter().position(|l| *l == key.as_str()) {
                    Some(i) => i + 1,
                    None => {
                        locks.push(key);
                        locks.len()
                    }
                },
            })
            .collect();
        // The index block carries no ids: complete.lua writes only the index's done hash.
        let reply: Vec<u64> = self
            .with_index(queue, &k, &SCRIPTS.complete, &[], 0, |inv| {
                inv.key(k.active(server))
                    .key(&k.completed)
                    .key(&k.processed)
                    .key(&k.finished)
                    .key(&k.dependents)
                    .key(&k.outbox)
                    .key(k.ack_receipt(server))
                    .key(&k.daily)
                    .keys(&k.groups);
                for l in &locks {
                    inv.key(k.unique(l));
                }
                inv.arg(retention.map_or(0, |r| r.as_millis().max(1) as u64))
                    .arg(acks.len());
                for a in acks {
                    inv.arg(&a.id[..]);
                }
                // Runs of equal tokens: a batch is mostly the tasks of a few fetches.
                let runs = acks.chunk_by(|a, b| a.token == b.token);
                inv.arg(runs.clone().count());
                for run in runs {
                    inv.arg(token_text(run[0].token)).arg(run.len());
                }
                let locked: Vec<(usize, usize)> = lock_of
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| **l > 0)
                    .map(|(i, l)| (i + 1, *l))
                    .collect();
                inv.arg(locked.len());
                for (at, lock) in locked {
                    inv.arg(at).arg(lock);
                }
                inv.arg(nonce);
            })
            .await?;
        let mut it = reply.into_iter();
        if it.next().unwrap_or(0) > 0 {
            self.note_outbox();
        }
        if it.next().unwrap_or(0) > self.deps.max_records {
            self.note_finished();
        }
        Ok(it.map(|i| (i as usize).saturating_sub(1)).collect())
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
        self.retry_after(queue, server, id, token, record, backoff, true)
            .await
    }

    /// Like [`Broker::retry`]; `failed: false` (the handler was rate limited) counts no
    /// failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn retry_after(
        &self,
        queue: &str,
        server: &str,
        id: &[u8],
        token: u64,
        record: &[u8],
        backoff: Duration,
        failed: bool,
    ) -> Result<bool> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let r: i64 = SCRIPTS
            .retry
            .key(k.active(server))
            .key(&k.retry)
            .key(&k.failed)
            .key(&k.daily)
            .keys(&k.groups)
            .arg(id)
            .arg(token_text(token))
            .arg(record)
            .arg(backoff.as_millis() as u64)
            .arg(if failed { "1" } else { "0" })
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
        let r: i64 = self
            .with_index(queue, &k, &SCRIPTS.kill, &[id], 0, |inv| {
                inv.key(k.active(server))
                    .key(&k.leases)
                    .key(&k.dead)
                    .key(&k.dead_trimmed)
                    .key(&k.failed)
                    .key(&k.failed_ids)
                    .key(&k.dependents)
                    .key(&k.outbox)
                    .key(&k.finished)
                    .key(&k.daily)
                    .keys(&k.groups);
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
            })
            .await?;
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
        // Newest first: each call puts its tasks at the head of their group in id order, so
        // the older ones, given back by a later call, end up in front (bands order themselves
        // by id in bands_give_back whatever the calls' order).
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|a, b| items[*b].0.cmp(&items[*a].0));
        let sorted: Vec<&Requeue> = order.iter().map(|i| &items[*i]).collect();
        let mut chunks: Vec<&[&Requeue]> = sorted.chunks(MAX_SCRIPT_BATCH).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for (n, chunk) in chunks.into_iter().enumerate() {
            // A record given is in its own band; one kept (None) is in a band the script asks
            // for when this broker has not seen it in use.
            let given = bands_of(chunk.iter().filter_map(|(_, _, r)| r.as_deref()));
            let which: Vec<usize> = self
                .with_bands(queue, &k, &SCRIPTS.requeue, Bands::Seen(given), |inv| {
                    inv.key(k.active(server))
                        .key(&k.leases)
                        .key(&k.wake)
                        .key(&k.failed)
                        .key(&k.daily)
                        .arg(if expired_only { "1" } else { "0" })
                        .arg(server)
                        .arg(chunk.len());
                    for (id, token, record) in chunk {
                        inv.arg(&id[..])
                            .arg(token_text(*token))
                            .arg(record.as_deref().unwrap_or(&[]));
                    }
                })
                .await?;
            moved.extend(which.into_iter().filter_map(|i| {
                order
                    .get(n * MAX_SCRIPT_BATCH + i.saturating_sub(1))
                    .copied()
            }));
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
        self.with_bands(queue, &k, &SCRIPTS.forward, Bands::Seen(0), |inv| {
            inv.key(src).key(&k.wake).arg(limit);
        })
        .await
    }

    /// Trims completed tasks past their retention, dead tasks beyond the limits, and
    /// completion and failure records past the dependency retention (completion records also
    /// beyond their cap). Returns how many completed tasks, dead tasks and completion records
    /// went.
    pub async fn trim(&self, queue: &str, limits: DeadLimits) -> Result<(u64, u64, u64)> {
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
            // An hour past the retention: the finished list (ix_evict.lua) forgets a dead id's
            // index entry only while its failure record is there to tell it is dead.
            .arg((self.deps.retention + EARLY_FACTS_FLOOR).as_millis() as u64)
            .arg(self.deps.retention.max(EARLY_FACTS_FLOOR).as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        let records = self.evict_finished(queue).await?;
        self.prune_group_buckets(queue).await?;
        Ok((done, dead, records))
    }
}

/// The keys and arguments of a fetch.lua call (before its band block).
pub(super) fn fetch_args(
    inv: &mut Call,
    k: &QueueKeys,
    server: &str,
    n: usize,
    lease: Duration,
    holders: &[String],
) {
    inv.key(&k.foreign)
        .key(&k.leases)
        .key(k.active(server))
        .key(&k.token)
        .key(&k.wake)
        .key(&k.paused)
        .key(&k.limits)
        .key(&k.rate);
    let others: Vec<&String> = holders.iter().filter(|h| *h != server).collect();
    for h in &others {
        inv.key(k.active(h));
    }
    inv.arg(n)
        .arg(lease.as_millis() as u64)
        .arg(server)
        .arg(others.len());
    for h in others {
        inv.arg(h);
    }
}

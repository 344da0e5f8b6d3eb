//! Reading and steering a queue as a whole: listings, pause and resume,
//! the dead-letter queue (listing, re-running), flush, and the registry of queues and servers.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::bands::{bands_of, Bands};
use super::keys::{self, QueueKeys};
use super::{record, Broker, MAX_SCRIPT_BATCH, SCRIPTS};
use crate::Result;

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

impl FlushCounts {
    /// Adds the counts of one partition.
    pub(crate) fn absorb(&mut self, p: &FlushCounts) {
        self.pending += p.pending;
        self.delayed += p.delayed;
        self.retry += p.retry;
        self.dead += p.dead;
        self.completed += p.completed;
        self.active += p.active;
        self.waiting += p.waiting;
    }
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

impl Broker {
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

    /// Tasks enqueued into `queue`, ever, per task type (by every producer and scheduler).
    pub async fn enqueued_counts(&self, queue: &str) -> Result<Vec<(String, u64)>> {
        let mut c = self.conn.clone();
        Ok(c.hgetall(&QueueKeys::new(queue).enqueued).await?)
    }

    /// Raw records of one state, oldest first (at most `limit`).
    pub async fn records(
        &self,
        queue: &str,
        state: TaskState,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        self.records_page(queue, state, 0, limit).await
    }

    /// Raw records of one state in listing order, skipping the first `offset` (at most
    /// `limit`): reads of O(page) for the lists and sorted sets (`LRANGE`/`ZRANGE` by index),
    /// O(held) for active tasks (at most the servers' concurrency), and O(waiting) for tasks
    /// waiting for dependencies (a hash, sorted here by id).
    pub async fn records_page(
        &self,
        queue: &str,
        state: TaskState,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Inclusive index ranges; -1 (the end) beyond isize.
        let range = |skip: usize, n: usize| {
            let start = isize::try_from(skip).unwrap_or(isize::MAX);
            let stop = skip
                .checked_add(n)
                .and_then(|e| isize::try_from(e).ok())
                .map_or(-1, |e| e - 1);
            (start, stop)
        };
        let (start, stop) = range(offset, limit);
        let slice = |mut all: Vec<Vec<u8>>| {
            all.drain(..offset.min(all.len()));
            all.truncate(limit);
            all
        };
        Ok(match state {
            TaskState::Pending => {
                // Band after band, lowest first: the order fetch.lua hands them out.
                let mut out: Vec<Vec<u8>> = Vec::new();
                let mut skip = offset;
                for p in self.live_bands(&k).await? {
                    let len: usize = c.llen(k.band(p)).await?;
                    if skip >= len {
                        skip -= len;
                        continue;
                    }
                    let (a, b) = range(skip, limit - out.len());
                    skip = 0;
                    let page: Vec<Vec<u8>> = c.lrange(k.band(p), a, b).await?;
                    out.extend(page);
                    if out.len() >= limit {
                        break;
                    }
                }
                if out.len() < limit {
                    let (a, b) = range(skip, limit - out.len());
                    let old: Vec<Vec<u8>> = c.zrange(&k.legacy_pending, a, b).await?;
                    let len: usize = c.zcard(&k.legacy_pending).await?;
                    skip = skip.saturating_sub(len);
                    out.extend(old);
                }
                // Then the tasks of groups (groups.rs).
                if out.len() < limit {
                    let more = self.list_grouped(&k, skip, limit - out.len()).await?;
                    out.extend(more);
                }
                out
            }
            TaskState::Delayed => c.zrange(&k.delayed, start, stop).await?,
            TaskState::Retry => c.zrange(&k.retry, start, stop).await?,
            TaskState::Dead => c.zrange(&k.dead, start, stop).await?,
            TaskState::Completed => c.zrange(&k.completed, start, stop).await?,
            TaskState::Waiting => {
                let mut all: Vec<Vec<u8>> = c.hvals(&k.waiting).await?;
                // Hash order is arbitrary; ids are time-ordered, so sort by them (oldest first).
                all.sort_by(|a, b| record::raw_id(a).cmp(record::raw_id(b)));
                slice(all)
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
                slice(out)
            }
        })
    }

    /// Pauses a queue: fetches hand out nothing until it is resumed. Enqueueing still works,
    /// and the flag lives in Redis, so it holds across server restarts.
    pub async fn pause(&self, queue: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.set(&QueueKeys::new(queue).paused, 1).await?;
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
            let ids: Vec<&[u8]> = chunk.iter().map(|(_, new)| record::raw_id(new)).collect();
            let set = bands_of(chunk.iter().map(|(_, new)| &new[..]));
            let n: u64 = self
                .with_index_and_bands(
                    queue,
                    &k,
                    &SCRIPTS.rerun,
                    &ids,
                    ids.len(),
                    Some(Bands::Exact(set)),
                    |inv| {
                        inv.key(&k.dead)
                            .key(&k.wake)
                            .key(&k.failed_ids)
                            .arg(chunk.len());
                        for (old, new) in chunk {
                            inv.arg(&old[..]).arg(&new[..]);
                        }
                    },
                )
                .await?;
            moved += n;
        }
        Ok(moved)
    }

    /// Deletes a finished task's record (`state` is [`TaskState::Dead`] or
    /// [`TaskState::Completed`], `stored` the record as read); `false` when it is gone
    /// (re-run, trimmed or deleted meanwhile).
    pub async fn delete_finished(
        &self,
        queue: &str,
        state: TaskState,
        stored: &[u8],
    ) -> Result<bool> {
        let k = QueueKeys::new(queue);
        let set = match state {
            TaskState::Dead => &k.dead,
            TaskState::Completed => &k.completed,
            other => {
                return Err(crate::Error::validation(
                    "state",
                    format!("{other:?} is not a finished state (dead or completed)"),
                ))
            }
        };
        let mut c = self.conn.clone();
        let n: i64 = SCRIPTS
            .delete
            .key(set)
            .arg(stored)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
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
        let n: Vec<u64> = self
            .with_bands(queue, &k, &SCRIPTS.flush, Bands::Seen(0), |inv| {
                inv.key(&k.legacy_pending)
                    .key(&k.delayed)
                    .key(&k.retry)
                    .key(&k.dead)
                    .key(&k.completed)
                    .key(&k.leases)
                    .key(&k.waiting)
                    .key(&k.needs)
                    .key(&k.dependents)
                    .key(&k.outbox)
                    .key(&k.ix_meta)
                    .key(&k.foreign);
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
            })
            .await?;
        self.note_outbox();
        if let Some(old) = n.get(7) {
            // Unreachable now: deleting them can wait, and a failure only leaves memory behind.
            if let Err(e) = self.drop_index_generation(queue, *old).await {
                tracing::warn!(queue, error = %e, "could not delete the flushed queue's old id index");
            }
        }
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

    /// Writes a raw member at the tail of its pending band, bypassing every check. Tests use it
    /// to plant corrupt records; nothing else may.
    #[cfg(any(test, feature = "testing"))]
    pub async fn plant_raw_pending(&self, queue: &str, raw: &[u8]) -> Result<()> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let p = super::bands::band_of(raw);
        let _: () = redis::pipe()
            .rpush(k.band(p), raw)
            .ignore()
            .zadd(&k.bands, p, p)
            .ignore()
            .zadd(&k.wake, "w", 0)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }
}

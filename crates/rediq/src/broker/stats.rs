//! A queue's counts per state, totals and latency, read for many queues at once.
//!
//! A dashboard refreshes every queue every second, so the reads are pipelined across queues:
//! two round trips for any number of queues (the fixed keys of each, then the band lists and
//! active hashes the first round named; a third when queues have groups, for the head task of
//! the groups next in turn), where one queue at a time cost four round trips per
//! queue. Read only, and not a snapshot of one instant: counts taken while tasks move may be
//! off by the tasks moving.

use std::time::Duration;

use redis::Value;

use super::admin::TaskState;
use super::keys::QueueKeys;
use super::limits::{self, QueueLimits};
use super::{record, Broker};
use crate::{Error, Result};

/// Reads of the first round, per queue (the order `stats_many` queues them in).
const FIRST_ROUND: usize = 18;

/// Groups next in turn whose head task the latency looks at (the oldest grouped task is
/// usually among them: a group waits longest right before its turn).
const GROUP_HEADS: isize = 4;

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
    /// Whether the queue is paused (hands out nothing; on a partitioned queue: every
    /// partition is).
    pub paused: bool,
    /// Its partitions (1 when it is not partitioned; see `Inspector::partition_queue`).
    pub partitions: u16,
    /// How long the task that has waited longest in pending has been due (zero when none is
    /// pending): the queue's latency, by the Redis clock.
    pub latency: Duration,
    /// Its flow-control limits (see `Inspector::set_queue_limits`).
    pub limits: QueueLimits,
    /// The limits every group of it follows unless overridden (see
    /// `Inspector::set_group_limits`).
    pub group_limits: QueueLimits,
    /// Groups with tasks pending (waiting for their turn, or held).
    pub groups: u64,
}

impl QueueStats {
    /// The number of tasks in `state`.
    ///
    /// ```
    /// let s = rediq::QueueStats { pending: 3, ..Default::default() };
    /// assert_eq!(s.count(rediq::TaskState::Pending), 3);
    /// ```
    pub fn count(&self, state: TaskState) -> u64 {
        match state {
            TaskState::Pending => self.pending,
            TaskState::Active => self.active,
            TaskState::Delayed => self.delayed,
            TaskState::Retry => self.retry,
            TaskState::Dead => self.dead,
            TaskState::Completed => self.completed,
            TaskState::Waiting => self.waiting,
        }
    }

    /// Adds the counts of one partition.
    pub(crate) fn absorb(&mut self, p: &QueueStats) {
        self.pending += p.pending;
        self.active += p.active;
        self.delayed += p.delayed;
        self.retry += p.retry;
        self.dead += p.dead;
        self.completed += p.completed;
        self.waiting += p.waiting;
        self.processed_total += p.processed_total;
        self.failed_total += p.failed_total;
        self.dead_trimmed_total += p.dead_trimmed_total;
        self.cancelled_total += p.cancelled_total;
        self.paused &= p.paused;
        self.partitions += 1;
        self.latency = self.latency.max(p.latency);
        if self.limits.is_empty() {
            self.limits = p.limits;
        }
        if self.group_limits.is_empty() {
            self.group_limits = p.group_limits;
        }
        // A group's tasks may be spread over partitions: counted in each.
        self.groups += p.groups;
    }
}

impl Broker {
    /// Counts per state of one physical queue.
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let mut all = self.stats_many(&[queue]).await?;
        // stats_many returns one QueueStats per queue asked for.
        all.pop()
            .ok_or_else(|| Error::Serialization("no counts read".into()))
    }

    /// Counts per state of each physical queue, in the order given: two round trips in all.
    pub async fn stats_many(&self, queues: &[&str]) -> Result<Vec<QueueStats>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let keys: Vec<_> = queues.iter().map(|q| QueueKeys::new(q)).collect();
        let mut first = redis::pipe();
        first.cmd("TIME");
        for k in &keys {
            first
                .zcard(&k.legacy_pending)
                .llen(&k.foreign)
                .hlen(&k.groups[0])
                .hlen(&k.groups[1])
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
                .hmget(
                    &k.limits,
                    &[
                        "concurrency",
                        "rate",
                        "period_ms",
                        "g_concurrency",
                        "g_rate",
                        "g_period_ms",
                    ],
                )
                .zrange(&k.bands, 0, -1)
                .zrange(&k.leases, 0, -1)
                .zrange(&k.groups[2], 0, GROUP_HEADS - 1);
        }
        let mut got: Vec<Value> = first.query_async(&mut c).await?;
        if got.len() != 1 + FIRST_ROUND * queues.len() {
            return Err(Error::Serialization(format!(
                "{} replies to {} reads",
                got.len(),
                1 + FIRST_ROUND * queues.len()
            )));
        }
        let mut rest = got.split_off(1);
        let (secs, micros): (u64, u64) = parse(got.remove(0))?;
        let now_ms = secs * 1000 + micros / 1000;
        // Second round: the length and head of each band in use, the tasks each server holds.
        let mut second = redis::pipe();
        let mut shapes = Vec::with_capacity(queues.len());
        let mut out = Vec::with_capacity(queues.len());
        for (queue, k) in queues.iter().zip(&keys) {
            let mut r: Vec<Value> = rest.drain(..FIRST_ROUND).collect();
            let turn: Vec<String> = parse(r.pop().unwrap_or(Value::Nil))?;
            let holders: Vec<String> = parse(r.pop().unwrap_or(Value::Nil))?;
            let bands: Vec<u8> = parse(r.pop().unwrap_or(Value::Nil))?;
            // A limit that does not parse shows as unset here (`Broker::limits` names it).
            let fields: Vec<Option<String>> = parse(r.pop().unwrap_or(Value::Nil))?;
            let mut f = fields.into_iter();
            let mut three = || (f.next().flatten(), f.next().flatten(), f.next().flatten());
            // A limit that does not parse shows as unset here (`Broker::limits` names it).
            let read = |fields| {
                limits::from_fields(fields).unwrap_or_else(|(field, value)| {
                    tracing::warn!(queue, field, %value, "a limit does not parse; shown as unset");
                    QueueLimits::default()
                })
            };
            let limits = read(three());
            let group_limits = read(three());
            let mut n = r.into_iter();
            let mut next = || -> Result<u64> {
                let v: Option<u64> = parse(n.next().unwrap_or(Value::Nil))?;
                Ok(v.unwrap_or(0))
            };
            let mut s = QueueStats {
                queue: queue.to_string(),
                // Garbage on its way to the dead-letter queue counts as pending until it
                // gets there.
                pending: next()? + next()? + next()?,
                groups: next()?,
                delayed: next()?,
                retry: next()?,
                dead: next()?,
                completed: next()?,
                waiting: next()?,
                processed_total: next()?,
                failed_total: next()?,
                dead_trimmed_total: next()?,
                cancelled_total: next()?,
                partitions: 1,
                limits,
                group_limits,
                ..QueueStats::default()
            };
            s.paused = next()? == 1;
            for p in &bands {
                second.llen(k.band(*p)).lindex(k.band(*p), 0);
            }
            for h in &holders {
                second.hlen(k.active(h));
            }
            let groups: Vec<String> = turn.into_iter().filter(|g| !g.is_empty()).collect();
            for g in &groups {
                second.hget(&k.groups[1], g);
            }
            shapes.push((bands.len(), holders.len(), groups));
            out.push(s);
        }
        let mut got: Vec<Value> = if shapes.iter().all(|(b, h, g)| b + h + g.len() == 0) {
            Vec::new()
        } else {
            second.query_async(&mut c).await?
        };
        let mut got = got.drain(..);
        // Third round, for queues with groups: the head task of the groups next in turn.
        let mut third = redis::pipe();
        let mut heads = Vec::with_capacity(out.len());
        for (s, (bands, holders, groups)) in out.iter_mut().zip(shapes) {
            let mut oldest: Option<u64> = None;
            for _ in 0..bands {
                let len: u64 = parse(got.next().unwrap_or(Value::Nil))?;
                let head: Option<Vec<u8>> = parse(got.next().unwrap_or(Value::Nil))?;
                s.pending += len;
                let since = head.and_then(|rec| pending_since_ms(&s.queue, &rec));
                oldest = oldest.into_iter().chain(since).min();
            }
            for _ in 0..holders {
                let n: u64 = parse(got.next().unwrap_or(Value::Nil))?;
                s.active += n;
            }
            let mut asked = 0;
            for g in groups {
                let seq: Option<String> = parse(got.next().unwrap_or(Value::Nil))?;
                if let Some(head) = seq.as_deref().and_then(|v| v.split(' ').next()) {
                    third.hget(&QueueKeys::new(&s.queue).groups[0], format!("{g}|{head}"));
                    asked += 1;
                }
            }
            heads.push((oldest, asked));
        }
        let got: Vec<Value> = if heads.iter().all(|(_, n)| *n == 0) {
            Vec::new()
        } else {
            third.query_async(&mut c).await?
        };
        let mut got = got.into_iter();
        for (s, (mut oldest, asked)) in out.iter_mut().zip(heads) {
            for _ in 0..asked {
                let head: Option<Vec<u8>> = parse(got.next().unwrap_or(Value::Nil))?;
                let since = head.and_then(|rec| pending_since_ms(&s.queue, &rec));
                oldest = oldest.into_iter().chain(since).min();
            }
            s.latency = Duration::from_millis(oldest.map_or(0, |t| now_ms.saturating_sub(t)));
        }
        Ok(out)
    }
}

fn parse<T: redis::FromRedisValue>(v: Value) -> Result<T> {
    redis::from_redis_value(v).map_err(|e| Error::Serialization(format!("counts: {e}")))
}

/// When a pending record became due (Unix ms), as far as the record tells: its creation (the
/// timestamp of its UUIDv7 id) plus its delay, or its last failure when later (a retried or
/// recovered task). The retry backoff is not stored, so for a retried task this is early by at
/// most its backoff; a dead task re-run counts from its creation. Within a band the head has
/// waited longest (FIFO, and a task put back goes to the front because it was there); across
/// bands the records' own times decide.
pub(crate) fn pending_since_ms(queue: &str, rec: &[u8]) -> Option<u64> {
    let task = record::decode(queue, rec).ok()?;
    let id = uuid::Uuid::parse_str(&task.id).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    let created = secs * 1000 + u64::from(nanos) / 1_000_000;
    let due = created + task.options.delay.map_or(0, |d| d.as_millis() as u64);
    Some(due.max(task.last_failed_at.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_since_counts_delay_and_last_failure() {
        let mut t = crate::Task::builder("t")
            .delay(Duration::from_secs(60))
            .build()
            .unwrap();
        let id = uuid::Uuid::parse_str(&t.id).unwrap();
        let (s, n) = id.get_timestamp().unwrap().to_unix();
        let created = s * 1000 + u64::from(n) / 1_000_000;
        let rec = record::encode(&t).unwrap();
        assert_eq!(pending_since_ms("default", &rec), Some(created + 60_000));
        t.last_failed_at = Some(created + 120_000);
        let rec = record::encode(&t).unwrap();
        assert_eq!(pending_since_ms("default", &rec), Some(created + 120_000));
        assert_eq!(pending_since_ms("default", b"junk"), None);
    }
}

//! Task dependencies: a task that waits until other tasks — possibly of other queues — have
//! completed.
//!
//! On a cluster every queue is its own slot, so the step from a dependency's queue to its
//! dependent's queue cannot be one script. It is built from steps that are each one script in
//! one queue, each idempotent, joined by an outbox:
//!
//! 1. **Register** (`dep_register.lua`, in the dependency's queue): the dependent appends a
//!    reference to the dependency's entry in the queue's dependents hash, unless the dependency
//!    already completed ("done") or failed. Registration happens *before* the dependent is written, so a client that dies in
//!    between leaves at most a reference to a task that never arrives.
//! 2. **Write** (`dep_enqueue.lua`, in the dependent's queue): the dependent waits for the
//!    dependencies still open, or is pending at once.
//! 3. **Complete or fail** (`complete.lua`, `kill.lua`, `cancel.lua`, `dep_fail.lua`, `flush.lua`):
//!    when a task with dependents settles, the same script moves its references out of the
//!    dependents hash into an outbox entry of its queue: `S`/`F`, its id, the references. The
//!    entry names exactly the dependents registered until then.
//! 4. **Deliver** (the server's resolver, [`Broker::resolve_outbox`]): for each outbox entry, each
//!    referenced dependent is told in its own queue (`dep_satisfy.lua` crosses the dependency off
//!    and releases the task when none is left; `dep_fail.lua` dead-letters it and puts its own
//!    dependents in its outbox). Only then is the entry removed (`LREM`). A resolver that dies
//!    mid-way leaves the entry for the next one; delivering twice changes nothing. An entry that
//!    cannot be delivered is set aside and retried with backoff ([`super::outbox`]), so the
//!    others flow.
//!
//! News that reaches a dependent before step 2 wrote it is kept as an "early fact" that step 2
//! consumes, so the order of steps 1–4 across processes does not matter: the dependent becomes
//! pending exactly once. Only news for a dependent marked as being written (`dep_begin.lua`,
//! before step 1) is kept: news for an absent dependent without the mark is a redundant
//! delivery after its release, and writing it down would leave a record nobody reads.

use redis::AsyncCommands;

use super::bands::{band, band_of, Bands};
use super::keys::QueueKeys;
use super::{record, Broker, TaskState, SCRIPTS};
use crate::{Error, Result};

/// A dependency's answer to a dependent that registers with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// It already completed: nothing to wait for.
    Done,
    /// It was dead-lettered or cancelled.
    Failed,
    /// It is live; its completion or failure will be delivered.
    Registered,
    /// No trace of it in this queue.
    Unknown,
}

/// Where a dependent landed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// Waiting, pending, delayed or dead-lettered.
    Ok,
    /// Its unique key is held by this task.
    Duplicate(Vec<u8>),
    /// This dependency failed before the dependent was written.
    DependencyFailed(Vec<u8>),
    /// The queue knows the dependent's id already: nothing was written.
    Known(crate::Existing),
}

/// A dependent task to write with [`Broker::dep_enqueue`].
pub(crate) struct Dependent<'a> {
    pub id: &'a [u8],
    pub record: &'a [u8],
    pub task_type: &'a str,
    pub delay_ms: u64,
    /// Unique key and its TTL in seconds.
    pub unique: Option<(&'a str, u64)>,
    /// The ids of the dependencies registered and not yet met.
    pub open: &'a [Vec<u8>],
}

/// Most dependencies of one task.
pub(crate) const MAX_DEPENDENCIES: usize = 1000;

/// A reference from a dependency to its dependent: the dependent's id, the length of its queue
/// name (one byte: names are at most 128 bytes), the name.
fn reference(dependent: &[u8], queue: &str) -> Vec<u8> {
    let mut r = dependent.to_vec();
    // Queue names are validated to at most 128 bytes, so the length fits in a byte.
    r.push(queue.len().min(255) as u8);
    r.extend_from_slice(queue.as_bytes());
    r
}

/// The references of an outbox entry, in order; `None` if they do not parse.
pub(super) fn parse_references(mut refs: &[u8]) -> Option<Vec<(&[u8], &str)>> {
    let mut out = Vec::new();
    while !refs.is_empty() {
        let (id, rest) = refs.split_at_checked(16)?;
        let (&len, rest) = rest.split_first()?;
        let (queue, rest) = rest.split_at_checked(usize::from(len))?;
        out.push((id, std::str::from_utf8(queue).ok()?));
        refs = rest;
    }
    Some(out)
}

/// A ZSCAN pattern matching records whose head carries `id` (format byte, priority byte, then
/// the id, every id byte escaped: ids are binary).
fn head_pattern(id: &[u8]) -> Vec<u8> {
    let mut p = b"??".to_vec();
    for b in id {
        p.push(b'\\');
        p.push(*b);
    }
    p.push(b'*');
    p
}

impl Broker {
    /// The record of the task with this id in a pending band, or a delayed, retry or dead set,
    /// looked up with LRANGE pages or ZSCAN and a pattern on the record head: linear in the
    /// backlog, but in pages, so Redis keeps serving others meanwhile.
    pub async fn find_queued(
        &self,
        queue: &str,
        state: TaskState,
        id: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let k = QueueKeys::new(queue);
        if state == TaskState::Pending {
            if let Some(r) = self.find_pending(&k, id).await? {
                return Ok(Some(r));
            }
        }
        let key = match state {
            // Or still in the pending set of an earlier version (migrate.lua).
            TaskState::Pending => &k.legacy_pending,
            TaskState::Delayed => &k.delayed,
            TaskState::Retry => &k.retry,
            TaskState::Dead => &k.dead,
            TaskState::Completed => &k.completed,
            TaskState::Active | TaskState::Waiting => return Ok(None),
        };
        let pattern = head_pattern(id);
        let mut c = self.conn.clone();
        let mut cursor = 0u64;
        loop {
            let (next, flat): (u64, Vec<Vec<u8>>) = redis::cmd("ZSCAN")
                .arg(key)
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            // The reply alternates member and score.
            if let Some(r) = flat
                .into_iter()
                .step_by(2)
                .find(|r| record::raw_id(r) == id)
            {
                return Ok(Some(r));
            }
            if next == 0 {
                return Ok(None);
            }
            cursor = next;
        }
    }

    /// Marks `dependent` of `queue` as being written (see `dep_begin.lua`): news for it that
    /// arrives before it is written is kept only with this mark. Called before the first
    /// registration.
    pub async fn dep_begin(&self, queue: &str, dependent: &[u8]) -> Result<()> {
        let mut inv = SCRIPTS.dep_begin.prepare_invoke();
        inv.key(&QueueKeys::new(queue).early).arg(dependent);
        let mut c = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut c).await?;
        Ok(())
    }

    /// Drops the mark of [`Broker::dep_begin`] for a dependent that will not be written after
    /// all, so news for it leaves nothing behind.
    pub async fn dep_abandon(&self, queue: &str, dependent: &[u8]) -> Result<()> {
        let mut mark = b"W".to_vec();
        mark.extend_from_slice(dependent);
        let mut c = self.conn.clone();
        let _: i64 = c.zrem(&QueueKeys::new(queue).early, mark).await?;
        Ok(())
    }

    /// Registers `dependent` (of `dependent_queue`) with dependency `id` of `queue`.
    pub async fn dep_register(
        &self,
        queue: &str,
        id: &[u8],
        dependent: &[u8],
        dependent_queue: &str,
    ) -> Result<Answer> {
        let k = QueueKeys::new(queue);
        let answer: String = self
            .with_index(queue, &k, &SCRIPTS.dep_register, &[id], 0, |inv| {
                inv.key(&k.failed_ids)
                    .key(&k.dependents)
                    .arg(id)
                    .arg(reference(dependent, dependent_queue));
            })
            .await?;
        Ok(match answer.as_str() {
            "done" => Answer::Done,
            "failed" => Answer::Failed,
            "registered" => Answer::Registered,
            _ => Answer::Unknown,
        })
    }

    /// Finds dependency `id` in one of `queues` (the likeliest first) and registers `dependent`
    /// with it: one O(1) lookup per queue (the id index).
    pub async fn register_dependency(
        &self,
        queues: &[String],
        id: &[u8],
        dependent: &[u8],
        dependent_queue: &str,
    ) -> Result<Answer> {
        for q in queues {
            match self.dep_register(q, id, dependent, dependent_queue).await? {
                Answer::Unknown => {}
                found => return Ok(found),
            }
        }
        Ok(Answer::Unknown)
    }

    /// Writes a task that has dependencies (see `dep_enqueue.lua`). `dead` is the dead record
    /// to write instead, when a dependency is already known to have failed.
    pub async fn dep_enqueue(
        &self,
        queue: &str,
        task: &Dependent<'_>,
        dead: Option<&[u8]>,
    ) -> Result<Written> {
        let k = QueueKeys::new(queue);
        let open = task.open.concat();
        let set = band(band_of(task.record));
        let reply: Vec<Vec<u8>> = self
            .with_index_and_bands(
                queue,
                &k,
                &SCRIPTS.dep_enqueue,
                &[task.id],
                1,
                Some(Bands::Exact(set)),
                |inv| {
                    inv.key(&k.waiting)
                        .key(&k.needs)
                        .key(&k.early)
                        .key(&k.delayed)
                        .key(&k.wake)
                        .key(&k.dead)
                        .key(&k.failed_ids)
                        .key(&k.enqueued);
                    if let Some((key, _)) = task.unique {
                        inv.key(k.unique(key));
                    }
                    inv.arg(task.id)
                        .arg(task.record)
                        .arg(task.delay_ms)
                        .arg(task.unique.map_or(0, |(_, ttl)| ttl))
                        .arg(dead.unwrap_or(&[]))
                        .arg(&open[..])
                        .arg(task.task_type);
                },
            )
            .await?;
        let mut it = reply.into_iter();
        let kind = it.next().unwrap_or_default();
        Ok(match kind.as_slice() {
            b"dup" => Written::Duplicate(it.next().unwrap_or_default()),
            b"failed" => Written::DependencyFailed(it.next().unwrap_or_default()),
            b"known" => match super::index::existing(&it.next().unwrap_or_default()) {
                Some(state) => Written::Known(state),
                None => Written::Ok,
            },
            _ => Written::Ok,
        })
    }

    /// The waiting record of `id`, if any. A waiting key of the wrong type is reported as
    /// [`Error::Corrupt`] naming it, like the scripts' refusals.
    async fn waiting_record(&self, queue: &str, id: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = &QueueKeys::new(queue).waiting;
        let mut c = self.conn.clone();
        c.hget(key, id).await.map_err(|e| {
            if e.code() == Some("WRONGTYPE") {
                Error::Corrupt {
                    key: key.clone(),
                    reason: "is not a hash (HGET refused it)".into(),
                }
            } else {
                e.into()
            }
        })
    }

    /// The unique key of a waiting task and its lock TTL in seconds, read from its record.
    fn waiting_unique_key(queue: &str, stored: &[u8]) -> Option<(String, u64)> {
        record::decode(queue, stored).ok().and_then(|t| {
            let key = t.options.unique_key?;
            let ttl = t
                .options
                .unique_ttl
                .unwrap_or(crate::task::DEFAULT_UNIQUE_TTL)
                + t.options.delay.unwrap_or_default();
            Some((key, ttl.as_secs().max(1)))
        })
    }

    /// Crosses dependency `dep` off `dependent`'s list (see `dep_satisfy.lua`).
    pub(super) async fn dep_satisfy(
        &self,
        queue: &str,
        dependent: &[u8],
        dep: &[u8],
    ) -> Result<()> {
        let k = QueueKeys::new(queue);
        // The lock of a waiting task has no TTL; the release gives it one. A task written
        // between this read and the script keeps its lock without one until it settles (which
        // releases it), so nothing is lost.
        // The band it is released into is its record's (a record written after this read is
        // in a band the script asks for).
        let stored = self.waiting_record(queue, dependent).await?;
        let unique = stored
            .as_deref()
            .and_then(|r| Self::waiting_unique_key(queue, r));
        let set = stored.as_deref().map_or(0, |r| band(band_of(r)));
        let _: i64 = self
            .with_bands(queue, &k, &SCRIPTS.dep_satisfy, Bands::Exact(set), |inv| {
                inv.key(&k.waiting)
                    .key(&k.needs)
                    .key(&k.early)
                    .key(&k.delayed)
                    .key(&k.wake);
                if let Some((key, _)) = &unique {
                    inv.key(k.unique(key));
                }
                inv.arg(dependent)
                    .arg(dep)
                    .arg(unique.as_ref().map_or(0, |(_, ttl)| *ttl));
            })
            .await?;
        Ok(())
    }

    /// Dead-letters `dependent` because `dep` failed (see `dep_fail.lua`).
    pub(super) async fn fail_dependent(
        &self,
        queue: &str,
        dependent: &[u8],
        dep: &[u8],
    ) -> Result<()> {
        let k = QueueKeys::new(queue);
        // The record may be read while it changes (it cannot, today, but the script checks):
        // read again on a mismatch.
        for _ in 0..5 {
            let stored = self.waiting_record(queue, dependent).await?;
            let (dead, unique) = match &stored {
                Some(r) => match record::decode(queue, r) {
                    Ok(mut task) => {
                        task.last_error =
                            Some(format!("dependency {} failed", record::id_text(dep)));
                        task.last_failed_at = Some(crate::task::now_ms());
                        (record::encode(&task)?, task.options.unique_key)
                    }
                    Err(why) => (record::undecodable(r, &why), None),
                },
                None => (Vec::new(), None),
            };
            let r: i64 = self
                .with_index(queue, &k, &SCRIPTS.dep_fail, &[dependent], 0, |inv| {
                    inv.key(&k.waiting)
                        .key(&k.needs)
                        .key(&k.early)
                        .key(&k.dead)
                        .key(&k.failed_ids)
                        .key(&k.dependents)
                        .key(&k.outbox)
                        .key(&k.finished);
                    if let Some(key) = &unique {
                        inv.key(k.unique(key));
                    }
                    inv.arg(dependent)
                        .arg(dep)
                        .arg(stored.as_deref().unwrap_or(&[]))
                        .arg(&dead[..]);
                })
                .await?;
            if r >= 0 {
                return Ok(());
            }
        }
        Err(Error::Serialization(format!(
            "the waiting record of task {} kept changing while it was dead-lettered",
            record::id_text(dependent)
        )))
    }
}

#[cfg(test)]
#[path = "deps_tests.rs"]
mod tests;

//! Cancellation. A queued task (pending, delayed, retry) or one waiting for its dependencies is
//! removed by `cancel.lua` at once. A running task is announced on a pub/sub channel; the server
//! running it drops the handler and removes it with the same script (fenced by its token), so it
//! is never retried. Either way, tasks that depend on it fail through the outbox.

use redis::AsyncCommands;

use super::keys::{self, QueueKeys};
use super::{record, Broker, TaskState, SCRIPTS};
use crate::Result;

/// Where a task to cancel was found.
pub(crate) enum Located {
    /// Queued in a sorted set: which one, and its record as stored.
    Queued(TaskState, Vec<u8>),
    /// Waiting for its dependencies, with its record as stored.
    Blocked(Vec<u8>),
    /// Running on a server.
    Running,
    NotFound,
}

impl Broker {
    /// Finds a task by id among the queued, waiting and running tasks of a queue (scans the
    /// queued sets: an administrative call, not a hot path).
    pub async fn locate(&self, queue: &str, id: &[u8]) -> Result<Located> {
        // A pending task can slip between the pages of a band scan while fetches pop the
        // band's head (find_pending): while the id index says it is live, look again.
        for _ in 0..3 {
            match self.locate_once(queue, id).await? {
                Located::NotFound => {}
                found => return Ok(found),
            }
            if self.known(queue, id).await? != Some(crate::Existing::Live) {
                break;
            }
        }
        Ok(Located::NotFound)
    }

    async fn locate_once(&self, queue: &str, id: &[u8]) -> Result<Located> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let blocked: Option<Vec<u8>> = c.hget(&k.waiting, id).await?;
        if let Some(r) = blocked {
            return Ok(Located::Blocked(r));
        }
        for state in [TaskState::Pending, TaskState::Delayed, TaskState::Retry] {
            if let Some(r) = self.find_queued(queue, state, id).await? {
                return Ok(Located::Queued(state, r));
            }
        }
        for server in self.lease_holders(queue).await? {
            let held: bool = c.hexists(k.active(&server), id).await?;
            if held {
                return Ok(Located::Running);
            }
        }
        Ok(Located::NotFound)
    }

    /// Removes a queued task, or one waiting for its dependencies (`state` =
    /// [`TaskState::Waiting`]); `false` if it moved on meanwhile.
    pub async fn cancel_queued(
        &self,
        queue: &str,
        state: TaskState,
        stored: &[u8],
        unique_key: Option<&str>,
    ) -> Result<bool> {
        let k = QueueKeys::new(queue);
        let id = record::raw_id(stored);
        let band = k.band(super::bands::band_of(stored));
        let field = match state {
            TaskState::Pending if record::group_of(stored).is_some() => {
                match self.grouped_field(&k, stored).await? {
                    Some(f) => f,
                    None => return Ok(false),
                }
            }
            _ => Vec::new(),
        };
        let places = match state {
            TaskState::Waiting => vec![(&k.waiting, "blocked", id, stored)],
            TaskState::Delayed => vec![(&k.delayed, "queued", stored, id)],
            TaskState::Retry => vec![(&k.retry, "queued", stored, id)],
            // In its group.
            _ if !field.is_empty() => vec![(&k.groups[0], "grouped", stored, id)],
            // In its band, or still in the pending set of an earlier version (migrate.lua).
            _ => vec![
                (&band, "pending", stored, id),
                (&k.legacy_pending, "queued", stored, id),
            ],
        };
        for (place, mode, a2, a3) in places {
            let r: i64 = self
                .with_index(queue, &k, &SCRIPTS.cancel, &[id], 0, |inv| {
                    inv.key(place);
                    self.cancel_keys(inv, &k, unique_key);
                    inv.arg(mode).arg(a2).arg(a3);
                    if mode == "grouped" {
                        inv.arg(&field[..]);
                    }
                })
                .await?;
            if r == 1 {
                self.note_outbox();
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn cancel_keys(
        &self,
        inv: &mut super::call::Call<'_>,
        k: &QueueKeys,
        unique_key: Option<&str>,
    ) {
        inv.key(&k.cancelled)
            .key(&k.failed_ids)
            .key(&k.dependents)
            .key(&k.outbox)
            .key(&k.needs)
            .key(&k.finished)
            .keys(&k.groups);
        if let Some(key) = unique_key {
            inv.key(k.unique(key));
        }
    }

    /// Removes a running task of `server` whose handler was dropped; `false` if stale.
    pub async fn cancel_active(
        &self,
        queue: &str,
        server: &str,
        id: &[u8],
        token: u64,
        unique_key: Option<&str>,
    ) -> Result<bool> {
        let k = QueueKeys::new(queue);
        let r: i64 = self
            .with_index(queue, &k, &SCRIPTS.cancel, &[id], 0, |inv| {
                inv.key(k.active(server));
                self.cancel_keys(inv, &k, unique_key);
                inv.arg("active").arg(id).arg(super::token_text(token));
            })
            .await?;
        self.note_outbox();
        Ok(r == 1)
    }

    /// Announces the cancellation of a running task to every server.
    pub async fn publish_cancel(&self, queue: &str, id: &[u8]) -> Result<()> {
        let mut msg = queue.as_bytes().to_vec();
        msg.push(0);
        msg.extend_from_slice(id);
        let mut c = self.conn.clone();
        let _: i64 = c.publish(keys::cancel_channel(), msg).await?;
        Ok(())
    }

    /// A pub/sub connection subscribed to cancellation announcements.
    pub async fn subscribe_cancels(&self) -> Result<redis::aio::PubSub> {
        // Bounded: a blackholed node must not hold the canceller forever.
        let subscribe = async {
            let mut ps = self.source.pubsub(&self.conn).await?;
            ps.subscribe(keys::cancel_channel()).await?;
            redis::RedisResult::Ok(ps)
        };
        match tokio::time::timeout(super::topology::CONNECT_TIMEOUT * 2, subscribe).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(crate::Error::Connection {
                url: self.url.clone(),
                source: redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "subscribing to cancellations timed out",
                )),
            }),
        }
    }
}

/// Splits an announcement into queue and task id.
pub(crate) fn parse_announcement(msg: &[u8]) -> Option<(&str, &[u8])> {
    let nul = msg.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&msg[..nul]).ok()?, &msg[nul + 1..]))
}

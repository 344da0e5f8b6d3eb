//! Cancellation. A waiting task (pending, delayed, retry) is removed by `cancel.lua` at once. A
//! running task is announced on a pub/sub channel; the server running it drops the handler and
//! removes it with the same script (fenced by its token), so it is never retried.

use redis::AsyncCommands;

use super::keys::{self, QueueKeys};
use super::{record, Broker, TaskState, SCRIPTS};
use crate::Result;

/// Where a task to cancel was found.
pub(crate) enum Located {
    /// Waiting in a sorted set: which one, and its record as stored.
    Waiting(TaskState, Vec<u8>),
    /// Running on a server.
    Running,
    NotFound,
}

impl Broker {
    /// Finds a task by id among the waiting and running tasks of a queue (scans: an
    /// administrative call, not a hot path).
    pub async fn locate(&self, queue: &str, id: &[u8]) -> Result<Located> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        for (state, key) in [
            (TaskState::Pending, &k.pending),
            (TaskState::Delayed, &k.delayed),
            (TaskState::Retry, &k.retry),
        ] {
            let all: Vec<Vec<u8>> = c.zrange(key, 0, -1).await?;
            if let Some(r) = all.into_iter().find(|r| record::raw_id(r) == id) {
                return Ok(Located::Waiting(state, r));
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

    /// Removes a waiting task; `false` if it moved on meanwhile.
    pub async fn cancel_waiting(
        &self,
        queue: &str,
        state: TaskState,
        stored: &[u8],
        unique_key: Option<&str>,
    ) -> Result<bool> {
        let k = QueueKeys::new(queue);
        let set = match state {
            TaskState::Delayed => &k.delayed,
            TaskState::Retry => &k.retry,
            _ => &k.pending,
        };
        let mut inv = SCRIPTS.cancel.prepare_invoke();
        inv.key(set).key(&k.cancelled);
        if let Some(key) = unique_key {
            inv.key(k.unique(key));
        }
        inv.arg("waiting").arg(stored).arg(record::raw_id(stored));
        let mut c = self.conn.clone();
        let r: i64 = inv.invoke_async(&mut c).await?;
        Ok(r == 1)
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
        let mut inv = SCRIPTS.cancel.prepare_invoke();
        inv.key(k.active(server)).key(&k.cancelled);
        if let Some(key) = unique_key {
            inv.key(k.unique(key));
        }
        inv.arg("active").arg(id).arg(super::token_text(token));
        let mut c = self.conn.clone();
        let r: i64 = inv.invoke_async(&mut c).await?;
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
        let mut ps = self.client.get_async_pubsub().await?;
        ps.subscribe(keys::cancel_channel()).await?;
        Ok(ps)
    }
}

/// Splits an announcement into queue and task id.
pub(crate) fn parse_announcement(msg: &[u8]) -> Option<(&str, &[u8])> {
    let nul = msg.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&msg[..nul]).ok()?, &msg[nul + 1..]))
}

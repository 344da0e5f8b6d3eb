//! Taking tasks away: cancelling (a waiting task at once, a running one through its server)
//! and deleting (a finished or waiting task, never one under a running handler). Both remove
//! through one script each (`cancel.lua`, `delete.lua`) and then deliver the news to the
//! tasks that depended on the one removed.

use super::{validate_queue_name, Inspector};
use crate::broker::cancel::Located;
use crate::broker::{logical, record, TaskState};
use crate::{Existing, Result};

/// What [`Inspector::cancel_task`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The task was waiting (pending, delayed, retry, or for its dependencies) and is gone.
    Removed,
    /// The task was running; its server was told to drop the handler and remove it.
    Signalled,
    /// No waiting or running task of the queue has this id.
    NotFound,
}

impl Inspector {
    /// Cancels a task by id. A waiting task (pending, delayed, retry) is removed at once; a
    /// running one is announced over Redis pub/sub to the server running it, which drops the
    /// handler's future and removes the task; its unique key is released and `cancelled_total`
    /// counts it, and it is not retried. Pub/sub is fire-and-forget: a server that is
    /// reconnecting, or has leased the task but not yet started its handler, misses the signal
    /// and the task runs to its end.
    pub async fn cancel_task(&self, queue: &str, id: &str) -> Result<CancelOutcome> {
        validate_queue_name(queue)?;
        let raw = record::id_bytes(id)?;
        for p in self
            .broker
            .id_search_order(&[queue.to_string()], &raw)
            .await?
        {
            match self.cancel_in(&p, &raw).await? {
                CancelOutcome::NotFound => continue,
                done => return Ok(done),
            }
        }
        Ok(CancelOutcome::NotFound)
    }

    /// Cancels a task of one physical queue.
    async fn cancel_in(&self, queue: &str, raw: &[u8; 16]) -> Result<CancelOutcome> {
        // A waiting task may be fetched between locating and removing it: look again.
        for _ in 0..3 {
            match self.broker.locate(queue, raw).await? {
                Located::Queued(state, stored) => {
                    if self.cancel_queued(queue, state, &stored).await? {
                        return Ok(CancelOutcome::Removed);
                    }
                }
                Located::Blocked(stored) => {
                    if self
                        .cancel_queued(queue, TaskState::Waiting, &stored)
                        .await?
                    {
                        return Ok(CancelOutcome::Removed);
                    }
                }
                Located::Running => {
                    self.broker.publish_cancel(queue, raw).await?;
                    return Ok(CancelOutcome::Signalled);
                }
                Located::NotFound => return Ok(CancelOutcome::NotFound),
            }
        }
        Ok(CancelOutcome::NotFound)
    }

    async fn cancel_queued(&self, queue: &str, state: TaskState, stored: &[u8]) -> Result<bool> {
        let unique = record::decode(logical(queue), stored)
            .ok()
            .and_then(|t| t.options.unique_key);
        let removed = self
            .broker
            .cancel_queued(queue, state, stored, unique.as_deref())
            .await?;
        if removed {
            self.tell_dependents(queue).await;
        }
        Ok(removed)
    }

    /// Delivers dependency news now instead of waiting for a server's resolver (which delivers
    /// it anyway, also after a crash here): this (physical) queue's outbox, then — a failure
    /// travels on, queue by queue — every queue's, until a round delivers nothing.
    pub(super) async fn tell_dependents(&self, queue: &str) {
        let round = async {
            let mut delivered = self.broker.resolve_outbox(queue).await?.delivered;
            let queues = self.broker.physical_queues().await?;
            for _ in 0..10 {
                if delivered == 0 {
                    break;
                }
                delivered = 0;
                for q in &queues {
                    delivered += self.broker.resolve_outbox(q).await?.delivered;
                }
            }
            Ok::<(), crate::Error>(())
        };
        if let Err(e) = round.await {
            tracing::warn!(queue, error = %e, "dependents will be told by a server's resolver");
        }
    }

    /// Deletes a task that is not running: a dead task leaves the dead-letter queue, a
    /// completed one kept after success leaves the completed set, and a waiting one (pending,
    /// delayed, retry, or waiting for its dependencies) is removed as
    /// [`cancel_task`](Self::cancel_task) removes it (its dependents fail). Returns `false`
    /// when the queue holds no such task, or when the task is running: a running task is
    /// stopped with `cancel_task`, not deleted under its server.
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector, id: &str) -> rediq::Result<()> {
    /// if !inspector.delete_task("emails", id).await? {
    ///     println!("{id} is running or gone");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn delete_task(&self, queue: &str, id: &str) -> Result<bool> {
        validate_queue_name(queue)?;
        let raw = record::id_bytes(id)?;
        for p in self
            .broker
            .id_search_order(&[queue.to_string()], &raw)
            .await?
        {
            if let Some(deleted) = self.delete_in(&p, &raw).await? {
                return Ok(deleted);
            }
        }
        Ok(false)
    }

    /// Deletes a task of one physical queue: `None` when the queue holds no record of it.
    async fn delete_in(&self, queue: &str, raw: &[u8; 16]) -> Result<Option<bool>> {
        // The task may move between being found and being removed (fetched, re-run,
        // trimmed): look again, as cancel_in does.
        for _ in 0..3 {
            let finished = match self.broker.known(queue, raw).await? {
                None => return Ok(None),
                Some(Existing::Live) => {
                    let (state, stored) = match self.broker.locate(queue, raw).await? {
                        Located::Queued(state, stored) => (state, stored),
                        Located::Blocked(stored) => (TaskState::Waiting, stored),
                        // Running: not deleted under its handler (cancel_task stops it).
                        Located::Running => return Ok(Some(false)),
                        Located::NotFound => return Ok(None),
                    };
                    if self.cancel_queued(queue, state, &stored).await? {
                        return Ok(Some(true));
                    }
                    continue;
                }
                Some(Existing::Failed) => TaskState::Dead,
                Some(Existing::Completed) => TaskState::Completed,
            };
            let Some(stored) = self.broker.find_queued(queue, finished, raw).await? else {
                return Ok(None);
            };
            if self
                .broker
                .delete_finished(queue, finished, &stored)
                .await?
            {
                return Ok(Some(true));
            }
        }
        Ok(Some(false))
    }
}

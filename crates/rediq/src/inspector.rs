//! Read access to queues, tasks and servers, for dashboards, the CLI and tests.

use std::collections::HashMap;

use crate::broker::{record, redis_options, Broker, FlushCounts, QueueStats, Target, TaskState};
use crate::task::validate_queue_name;
use crate::{Client, Result, Task};

/// Reads the state of queues, tasks and servers.
///
/// ```no_run
/// # async fn demo() -> rediq::Result<()> {
/// use rediq::{Inspector, TaskState};
/// let inspector = Inspector::connect("redis://localhost:6379").await?;
/// for q in inspector.queues().await? {
///     let s = inspector.queue_stats(&q).await?;
///     println!("{q}: {} pending, {} dead", s.pending, s.dead);
///     for dead in inspector.list(&q, TaskState::Dead, 10).await? {
///         println!("  {} failed: {:?}", dead.id, dead.last_error);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Inspector {
    broker: Broker,
}

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

/// A periodic (cron) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronEntry {
    /// The entry's id: the task's unique key, or `"<task type> <expression>"`.
    pub id: String,
    /// The queue its tasks go to.
    pub queue: String,
    /// The schedule expression.
    pub expr: String,
    /// The task every tick enqueues a copy of (with a fresh id).
    pub task: Task,
    /// Whether the entry is paused.
    pub paused: bool,
    /// The last tick that fired (Unix ms).
    pub last_run_ms: Option<u64>,
    /// The next tick (Unix ms); `None` while paused.
    pub next_run_ms: Option<u64>,
}

/// A registered server, as its heartbeat last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// `host:pid:random`.
    pub id: String,
    /// The fields of its registration: host, pid, queues, concurrency, started_at_ms,
    /// last_heartbeat_ms.
    pub fields: HashMap<String, String>,
}

/// Builds an [`Inspector`] for any topology; [`Inspector::connect`] is the short form for one
/// server.
///
/// ```no_run
/// # async fn demo() -> rediq::Result<()> {
/// use rediq::Inspector;
/// let inspector = Inspector::builder()
///     .redis_url("redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster")
///     .sentinel_mode()
///     .build()
///     .await?;
/// # let _ = inspector; Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct InspectorBuilder {
    target: Target,
}

impl InspectorBuilder {
    redis_options!();

    /// Connects, checking that the server is the topology named.
    pub async fn build(self) -> Result<Inspector> {
        Ok(Inspector {
            broker: Broker::open(&self.target).await?,
        })
    }
}

impl Inspector {
    /// Connects to one Redis server.
    pub async fn connect(redis_url: &str) -> Result<Inspector> {
        Inspector::builder().redis_url(redis_url).build().await
    }

    /// Starts building an inspector (for a cluster or a sentinel deployment).
    pub fn builder() -> InspectorBuilder {
        InspectorBuilder::default()
    }

    /// An inspector sharing a client's connection.
    pub fn from_client(client: &Client) -> Inspector {
        Inspector {
            broker: client.broker().clone(),
        }
    }

    /// Names of all queues that were ever enqueued to or served.
    pub async fn queues(&self) -> Result<Vec<String>> {
        self.broker.queues().await
    }

    /// Counts per state of a queue.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        self.broker.stats(queue).await
    }

    /// Up to `limit` tasks of a queue in one state, in the order they would run (pending),
    /// become due (delayed, retry) or died (dead, oldest first). Undecodable records appear as
    /// tasks of type `rediq:undecodable`.
    pub async fn list(&self, queue: &str, state: TaskState, limit: usize) -> Result<Vec<Task>> {
        let raw = self.broker.records(queue, state, limit).await?;
        Ok(raw
            .iter()
            .map(|r| {
                record::decode(queue, r).unwrap_or_else(|reason| {
                    // Decoding our own stand-in record cannot fail.
                    record::decode(queue, &record::undecodable(r, &reason))
                        .expect("the undecodable stand-in record decodes")
                })
            })
            .collect())
    }

    /// Registered servers.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        Ok(self
            .broker
            .workers()
            .await?
            .into_iter()
            .map(|(id, fields)| WorkerInfo { id, fields })
            .collect())
    }

    /// Pauses a queue: servers fetch nothing from it until [`resume_queue`](Self::resume_queue).
    /// Enqueueing still works, running tasks finish, and the pause is kept in Redis, so it
    /// holds across server restarts.
    pub async fn pause_queue(&self, queue: &str) -> Result<()> {
        validate_queue_name(queue)?;
        self.broker.pause(queue).await
    }

    /// Resumes a paused queue; idle servers pick up its tasks at once.
    pub async fn resume_queue(&self, queue: &str) -> Result<()> {
        validate_queue_name(queue)?;
        self.broker.resume(queue).await
    }

    /// Removes every task of a queue in every state and returns how many of each. Tasks running
    /// on a server finish, but their results are refused. Unique keys held by removed tasks are
    /// released. Counters and the pause flag stay.
    pub async fn flush_queue(&self, queue: &str) -> Result<FlushCounts> {
        validate_queue_name(queue)?;
        let mut locks = Vec::new();
        for state in [
            TaskState::Pending,
            TaskState::Delayed,
            TaskState::Retry,
            TaskState::Active,
            TaskState::Waiting,
        ] {
            for r in self.broker.records(queue, state, usize::MAX).await? {
                if let Ok(t) = record::decode(queue, &r) {
                    if let Some(key) = t.options.unique_key {
                        locks.push((key, record::raw_id(&r).to_vec()));
                    }
                }
            }
        }
        // A task enqueued between the read above and the flush is removed too; its unique key,
        // unknown here, then lapses with its TTL.
        let counts = self.broker.flush(queue, &locks).await?;
        self.tell_dependents(queue).await;
        Ok(counts)
    }

    /// Runs a dead task again: back to pending with its attempt count and error cleared.
    /// Returns `false` when no dead task of the queue has this id.
    pub async fn rerun_dead(&self, queue: &str, id: &str) -> Result<bool> {
        validate_queue_name(queue)?;
        let id = record::id_bytes(id)?.to_vec();
        let found = self.broker.dead_records(queue, Some(&[id]), 1).await?;
        Ok(self.rerun(queue, found).await? == 1)
    }

    /// Runs every dead task of a queue again; returns how many. Undecodable records stay in the
    /// dead-letter queue.
    pub async fn rerun_all_dead(&self, queue: &str) -> Result<u64> {
        validate_queue_name(queue)?;
        let all = self.broker.dead_records(queue, None, usize::MAX).await?;
        self.rerun(queue, all).await
    }

    async fn rerun(&self, queue: &str, dead: Vec<Vec<u8>>) -> Result<u64> {
        let mut pairs = Vec::with_capacity(dead.len());
        for old in dead {
            let Ok(mut task) = record::decode(queue, &old) else {
                continue;
            };
            if task.task_type == record::UNDECODABLE_TYPE {
                continue;
            }
            task.retry_cnt = 0;
            task.last_error = None;
            task.last_failed_at = None;
            pairs.push((old, record::encode(&task)?));
        }
        self.broker.rerun(queue, &pairs).await
    }

    /// Cancels a task by id. A waiting task (pending, delayed, retry) is removed at once; a
    /// running one is announced over Redis pub/sub to the server running it, which drops the
    /// handler's future and removes the task; its unique key is released and `cancelled_total`
    /// counts it, and it is not retried. Pub/sub is fire-and-forget: a server that is
    /// reconnecting, or has leased the task but not yet started its handler, misses the signal
    /// and the task runs to its end.
    pub async fn cancel_task(&self, queue: &str, id: &str) -> Result<CancelOutcome> {
        use crate::broker::cancel::Located;
        validate_queue_name(queue)?;
        let raw = record::id_bytes(id)?;
        // A waiting task may be fetched between locating and removing it: look again.
        for _ in 0..3 {
            match self.broker.locate(queue, &raw).await? {
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
                    self.broker.publish_cancel(queue, &raw).await?;
                    return Ok(CancelOutcome::Signalled);
                }
                Located::NotFound => return Ok(CancelOutcome::NotFound),
            }
        }
        Ok(CancelOutcome::NotFound)
    }

    async fn cancel_queued(&self, queue: &str, state: TaskState, stored: &[u8]) -> Result<bool> {
        let unique = record::decode(queue, stored)
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
    /// it anyway, also after a crash here): this queue's outbox, then — a failure travels on,
    /// queue by queue — every queue's, until a round delivers nothing.
    async fn tell_dependents(&self, queue: &str) {
        let round = async {
            let mut delivered = self.broker.resolve_outbox(queue).await?.delivered;
            let queues = self.broker.queues().await?;
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

    /// Every periodic entry, of every queue.
    pub async fn cron_entries(&self) -> Result<Vec<CronEntry>> {
        let mut out = Vec::new();
        for queue in self.broker.cron_queues().await? {
            for (id, e, last, next) in self.broker.cron_list(&queue).await? {
                let Ok(task) = record::decode(&queue, &e.template) else {
                    continue;
                };
                out.push(CronEntry {
                    id,
                    queue: queue.clone(),
                    expr: e.expr,
                    task,
                    paused: e.paused,
                    last_run_ms: last,
                    next_run_ms: next,
                });
            }
        }
        Ok(out)
    }

    /// Pauses a periodic entry: no tick fires until it is resumed. `false` if no entry has
    /// this id.
    pub async fn pause_cron(&self, id: &str) -> Result<bool> {
        match self.find_cron(id).await? {
            Some(e) => self.broker.cron_set_paused(&e.queue, id, None).await,
            None => Ok(false),
        }
    }

    /// Resumes a paused periodic entry from its next tick after now (ticks passed while paused
    /// do not fire). `false` if no entry has this id.
    pub async fn resume_cron(&self, id: &str) -> Result<bool> {
        let Some(e) = self.find_cron(id).await? else {
            return Ok(false);
        };
        let schedule = crate::schedule::Schedule::parse(&e.expr)
            .map_err(|err| crate::Error::validation("cron", err))?;
        let now = self.broker.time_ms().await?;
        match schedule.next_after(now) {
            Some(next) => self.broker.cron_set_paused(&e.queue, id, Some(next)).await,
            None => Ok(false),
        }
    }

    /// Removes a periodic entry. `false` if no entry has this id.
    pub async fn remove_cron(&self, id: &str) -> Result<bool> {
        match self.find_cron(id).await? {
            Some(e) => self.broker.cron_remove(&e.queue, id).await,
            None => Ok(false),
        }
    }

    async fn find_cron(&self, id: &str) -> Result<Option<CronEntry>> {
        Ok(self.cron_entries().await?.into_iter().find(|e| e.id == id))
    }

    /// Plants raw bytes as a pending task, bypassing every check. Only for testing how servers
    /// treat foreign or corrupt records.
    #[doc(hidden)]
    pub async fn plant_raw_pending(&self, queue: &str, raw: &[u8]) -> Result<()> {
        self.broker.plant_raw_pending(queue, raw).await
    }
}

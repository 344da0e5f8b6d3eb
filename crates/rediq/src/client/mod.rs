//! The producer side: [`Client`] enqueues tasks.
//!
//! Single `enqueue` calls from many tokio tasks are *group-committed*: a background loop takes
//! whatever calls are waiting, writes them with one script call per queue, and answers each
//! caller. A lone call still goes out at once (no timer); under load, callers share round trips,
//! which is how single enqueues reach batch speed.
//!
//! This file holds the builder and the client's calls; `commit` the group-commit loop, `deps`
//! the enqueue of a task that depends on others.

mod commit;
mod deps;

use commit::{group_commit, Request};
use deps::has_dependencies;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::broker::record::{self, id_text};
use crate::broker::{
    redis_options, Broker, EnqueueMode, NewTask, NotWritten, Target, MAX_SCRIPT_BATCH,
};
use crate::task::{DEFAULT_MAX_PAYLOAD, DEFAULT_UNIQUE_TTL};
use crate::{Error, Inspector, Result, Task};

/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The longest `wait_for_replicas` timeout.
const MAX_REPLICA_WAIT: Duration = Duration::from_secs(5);

/// Builds a [`Client`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    target: Target,
    max_payload: usize,
    durability: Option<(u32, Duration)>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            target: Target::default(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            durability: None,
        }
    }
}

impl ClientBuilder {
    redis_options!();

    /// Every enqueue waits until `replicas` replicas hold its tasks, up to `timeout` (Redis
    /// `WAIT`), and fails with [`Error::NotReplicated`] when fewer confirmed in time; off by
    /// default.
    ///
    /// Redis replicates asynchronously: without this, an enqueue that returned `Ok` can be lost
    /// if the master dies before its replicas received it (a failover promotes a replica that
    /// never saw it). With it, an `Ok` enqueue survives the failover of its master to any
    /// replica that confirmed. It costs a wait for the replicas on every enqueue round trip
    /// (docs/benchmark.md has the figure), and it is no stronger than the replicas' own
    /// persistence.
    ///
    /// ```no_run
    /// # async fn demo() -> rediq::Result<()> {
    /// use std::time::Duration;
    /// let client = rediq::Client::builder()
    ///     .redis_url("redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster")
    ///     .sentinel_mode()
    ///     .wait_for_replicas(1, Duration::from_millis(500))
    ///     .build()
    ///     .await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.durability = Some((replicas, timeout));
        self
    }

    /// Largest payload accepted by `enqueue` (default 512 KiB).
    pub fn max_payload_size(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Connects to Redis and starts the enqueue loop.
    pub async fn build(self) -> Result<Client> {
        if self.max_payload == 0 {
            return Err(Error::validation("max_payload_size", "must be above zero"));
        }
        if let Some((replicas, timeout)) = self.durability {
            if replicas == 0 {
                return Err(Error::validation(
                    "wait_for_replicas",
                    "0 replicas: wait for at least 1, or leave the setting out",
                ));
            }
            // Below the connection's 10 s response timeout, which would otherwise end the
            // wait as a broken connection instead of NotReplicated.
            if timeout.is_zero() || timeout > MAX_REPLICA_WAIT {
                return Err(Error::validation(
                    "wait_for_replicas",
                    format!(
                        "timeout {timeout:?} is outside 1 ms ..= {MAX_REPLICA_WAIT:?} (WAIT 0 would wait forever)"
                    ),
                ));
            }
        }
        let mut broker = Broker::open(&self.target).await?;
        broker.set_durability(self.durability);
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(group_commit(broker.clone(), rx));
        Ok(Client {
            inner: Arc::new(Inner {
                broker,
                tx,
                max_payload: self.max_payload,
                known_queues: Mutex::new(HashSet::new()),
            }),
        })
    }
}

/// Enqueues tasks. Cheap to clone; clones share one connection and one enqueue loop.
///
/// ```
/// # #[tokio::main] async fn main() -> rediq::Result<()> {
/// use rediq::{Client, Task};
/// // A private redis-server for this example; yours is a URL such as "redis://localhost:6379".
/// let redis = rediq::testing::RedisServer::start();
/// let client = Client::builder().redis_url(redis.url()).build().await?;
/// let task = Task::builder("email:send").queue("emails").build()?;
/// let id = client.enqueue(task).await?;
/// println!("enqueued {id}");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker: Broker,
    tx: mpsc::Sender<Request>,
    max_payload: usize,
    known_queues: Mutex<HashSet<String>>,
}

/// What [`Client::enqueue_outcome`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The task's id.
    pub id: String,
    /// `None` when the task was written; else what the queue knew of its id (nothing was
    /// written).
    pub existing: Option<Existing>,
}

/// What a queue knows of a task id it was asked to enqueue again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Pending, delayed, retrying, running or waiting for its dependencies.
    Live,
    /// Completed (remembered for the finished-task retention).
    Completed,
    /// Dead-lettered or cancelled.
    Failed,
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Enqueues one task and returns its id.
    ///
    /// Fails with [`Error::Duplicate`] when another live task of the queue holds the task's
    /// unique key.
    ///
    /// A task built with [`cron`](crate::TaskBuilder::cron) is not run now: it registers a
    /// periodic entry whose every tick enqueues a copy of it (see [`Client::register_cron`]), and
    /// the entry's id is returned.
    ///
    /// A task built with [`depends_on`](crate::TaskBuilder::depends_on) waits (state
    /// "waiting") until every listed task has completed successfully, then becomes pending
    /// exactly once; the dependencies may live in any queue. If one of them is dead-lettered or
    /// cancelled — also before this call — the task goes to the dead-letter queue with the
    /// error `dependency <id> failed`. A dependency id that names no live task and no kept
    /// completion record fails with [`Error::UnknownDependency`]; a task that depends on itself
    /// is a validation error.
    ///
    /// ```no_run
    /// # async fn demo(client: rediq::Client) -> rediq::Result<()> {
    /// use rediq::Task;
    /// let a = Task::builder("process:a").build()?;
    /// let a_id = client.enqueue(a).await?;
    /// let b = Task::builder("process:b").depends_on(&[a_id.as_str()]).build()?;
    /// client.enqueue(b).await?; // runs once process:a has completed
    /// # Ok(()) }
    /// ```
    pub async fn enqueue(&self, task: Task) -> Result<String> {
        Ok(self.enqueue_outcome(task).await?.id)
    }

    /// Enqueues one task, as [`Client::enqueue`] does, and tells whether the queue knew its id
    /// already.
    ///
    /// Enqueueing is idempotent: a task whose id the queue knows — live (pending, delayed,
    /// retrying, running or waiting for dependencies), or completed, dead-lettered or
    /// cancelled within the finished-task memory (`ServerBuilder::dependency_retention`, at
    /// most `dependency_max_records` ids per queue) — is not written again, and
    /// [`Enqueued::existing`] says which. So a producer may safely enqueue the same
    /// [`Task`] again after a timeout: it runs once.
    ///
    /// ```no_run
    /// # async fn demo(client: rediq::Client) -> rediq::Result<()> {
    /// use rediq::{Existing, Task};
    /// let task = Task::builder("email:send").build()?;
    /// let first = client.enqueue_outcome(task.clone()).await?;
    /// assert_eq!(first.existing, None);
    /// let again = client.enqueue_outcome(task).await?;
    /// assert!(again.existing.is_some()); // written once
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_outcome(&self, task: Task) -> Result<Enqueued> {
        if task.options.cron.is_some() {
            let id = self.register_cron(&task).await?;
            return Ok(Enqueued { id, existing: None });
        }
        let new = self.prepare(&task)?;
        self.note_queues(std::slice::from_ref(&task.queue)).await?;
        let queue = self.placed(&task).await?;
        if has_dependencies(&task) {
            let raw = record::id_bytes(&task.id)?;
            if let Some(state) = self.inner.broker.known(&queue, &raw).await? {
                // Known already: with a durability setting, only once replicas hold it too.
                self.inner.broker.replicated(&queue).await?;
                return Ok(Enqueued {
                    id: task.id,
                    existing: Some(state),
                });
            }
            return self.enqueue_dependent(&task, &new, &queue).await;
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Request {
                queue,
                task: new,
                reply,
            })
            .await
            .map_err(|_| Error::NotSupported("the client's enqueue loop has stopped".into()))?;
        let answer = answer
            .await
            .map_err(|_| Error::NotSupported("the client's enqueue loop has stopped".into()))??;
        match answer {
            None => Ok(Enqueued {
                id: task.id,
                existing: None,
            }),
            Some(NotWritten::Known(state)) => Ok(Enqueued {
                id: task.id,
                existing: Some(state),
            }),
            Some(NotWritten::Held(h)) => Err(duplicate(&task, &h)),
        }
    }

    /// Enqueues many tasks with one script call per queue (and per 1,000 tasks) and returns
    /// their ids in order.
    ///
    /// Each script call (one queue, at most 1,000 tasks) is all or nothing: if any of its tasks'
    /// unique keys is held, none of them is written and [`Error::Duplicate`] names the holder;
    /// the calls before it stay written. Tasks of different queues live on different keys (and,
    /// on a cluster, different shards), so they are written queue by queue.
    ///
    /// Tasks with [`depends_on`](crate::TaskBuilder::depends_on) are written one by one after
    /// all the others, in batch order, so they may depend on tasks earlier in the batch. An
    /// error there (say [`Error::UnknownDependency`]) leaves the tasks written before it
    /// written.
    ///
    /// Enqueueing is idempotent (see [`Client::enqueue_outcome`]): a task whose id the queue
    /// knows already is not written again, also within one batch.
    pub async fn enqueue_batch(&self, tasks: Vec<Task>) -> Result<Vec<String>> {
        let mut by_queue: HashMap<String, Vec<(&Task, NewTask)>> = HashMap::new();
        let mut seen = HashSet::new();
        if let Some(t) = tasks.iter().find(|t| t.options.cron.is_some()) {
            return Err(Error::validation(
                "cron",
                format!(
                    "task {} is periodic; register it with enqueue or register_cron, not in a batch",
                    t.id
                ),
            ));
        }
        // Tasks with dependencies go one by one after the rest, in batch order, so they may
        // depend on tasks earlier in the same batch.
        let mut dependents = Vec::new();
        let mut queues = Vec::new();
        for t in &tasks {
            let new = self.prepare(t)?;
            if let Some(key) = &t.options.unique_key {
                if !seen.insert((t.queue.as_str(), key.as_str())) {
                    return Err(Error::validation(
                        "unique_key",
                        format!("{key:?} appears twice in one batch for queue {:?}", t.queue),
                    ));
                }
            }
            if !queues.contains(&t.queue) {
                queues.push(t.queue.clone());
            }
            if has_dependencies(t) {
                dependents.push((t, new));
            } else {
                by_queue
                    .entry(self.placed(t).await?)
                    .or_default()
                    .push((t, new));
            }
        }
        self.note_queues(&queues).await?;
        for (queue, items) in &by_queue {
            for chunk in items.chunks(MAX_SCRIPT_BATCH) {
                let news: Vec<NewTask> = chunk.iter().map(|(_, n)| n.clone()).collect();
                let res = self
                    .inner
                    .broker
                    .enqueue(queue, &news, EnqueueMode::All)
                    .await?;
                let held = res.iter().enumerate().find_map(|(i, r)| match r {
                    Some(NotWritten::Held(h)) => Some((i, h)),
                    _ => None,
                });
                if let Some((i, h)) = held {
                    return Err(duplicate(chunk[i].0, h));
                }
            }
        }
        for (t, new) in dependents {
            let raw = record::id_bytes(&t.id)?;
            let queue = self.placed(t).await?;
            if self.inner.broker.known(&queue, &raw).await?.is_none() {
                self.enqueue_dependent(t, &new, &queue).await?;
            } else {
                self.inner.broker.replicated(&queue).await?;
            }
        }
        Ok(tasks.into_iter().map(|t| t.id).collect())
    }

    /// Registers (or updates) a periodic entry from a task built with
    /// [`cron`](crate::TaskBuilder::cron) and returns the entry's id: the task's unique key if it
    /// has one, else `"<task type> <expression>"`. Registering an entry with the same id in the
    /// same queue updates it (keeping a pause) instead of adding a second one. Every tick then
    /// enqueues a copy of the task with a fresh id, exactly once across all servers.
    pub async fn register_cron(&self, task: &Task) -> Result<String> {
        let Some(expr) = task.options.cron.clone() else {
            return Err(Error::validation("cron", "the task has no cron expression"));
        };
        self.prepare(task)?;
        let schedule = crate::schedule::Schedule::parse(&expr)
            .map_err(|e| Error::validation("cron", format!("{expr:?}: {e}")))?;
        let id = task
            .options
            .unique_key
            .clone()
            .unwrap_or_else(|| format!("{} {}", task.task_type, expr.trim()));
        let now = self.inner.broker.time_ms().await?;
        let Some(first) = schedule.next_after(now) else {
            return Err(Error::validation(
                "cron",
                format!("{expr:?} has no future tick; it would never fire"),
            ));
        };
        let template = record::encode(task)?;
        self.note_queues(std::slice::from_ref(&task.queue)).await?;
        // On a partitioned queue the entry lives in the partition its unique key routes to
        // (the entry id is the unique key when there is one), so its ticks and enqueues of
        // that key meet the same lock.
        let queue = self
            .inner
            .broker
            .partition_for(&task.queue, || id.as_bytes().to_vec())
            .await?
            .unwrap_or_else(|| task.queue.clone());
        self.inner
            .broker
            .cron_put(&queue, &id, &expr, &template, Some(first))
            .await?;
        // Registered before the queue had partitions, the entry sits in partition 0: one entry
        // per id, or it would fire twice.
        for other in self.inner.broker.partitions(&task.queue).await?.iter() {
            if *other != queue {
                self.inner.broker.cron_remove(other, &id).await?;
            }
        }
        Ok(id)
    }

    /// Task counts per state of a queue.
    pub async fn queue_stats(&self, queue: &str) -> Result<crate::QueueStats> {
        self.inspector().queue_stats(queue).await
    }

    /// Spreads a queue over `partitions` partitions (see [`Inspector::partition_queue`]).
    ///
    /// ```no_run
    /// # async fn demo(client: rediq::Client) -> rediq::Result<()> {
    /// client.partition_queue("clicks", 6).await?; // before its servers start
    /// client.enqueue(rediq::Task::builder("click").queue("clicks").build()?).await?;
    /// # Ok(()) }
    /// ```
    pub async fn partition_queue(&self, queue: &str, partitions: u16) -> Result<()> {
        self.inspector().partition_queue(queue, partitions).await
    }

    /// Sets a queue's flow-control limits (see [`Inspector::set_queue_limits`] and
    /// [`QueueLimits`](crate::QueueLimits)).
    pub async fn set_queue_limits(&self, queue: &str, limits: &crate::QueueLimits) -> Result<()> {
        self.inspector().set_queue_limits(queue, limits).await
    }

    /// Sets the limits every group of a queue follows (see [`Inspector::set_group_limits`]
    /// and [`crate::GroupLimits`]).
    pub async fn set_group_limits(&self, queue: &str, rule: &crate::QueueLimits) -> Result<()> {
        self.inspector().set_group_limits(queue, rule).await
    }

    /// Gives a named group its own limits, or removes them with `None` (see
    /// [`Inspector::set_group_override`]).
    pub async fn set_group_override(
        &self,
        queue: &str,
        group: &str,
        limits: Option<&crate::QueueLimits>,
    ) -> Result<()> {
        self.inspector()
            .set_group_override(queue, group, limits)
            .await
    }

    /// Pauses a queue (see [`Inspector::pause_queue`]).
    pub async fn pause_queue(&self, queue: &str) -> Result<()> {
        self.inspector().pause_queue(queue).await
    }

    /// Resumes a paused queue (see [`Inspector::resume_queue`]).
    pub async fn resume_queue(&self, queue: &str) -> Result<()> {
        self.inspector().resume_queue(queue).await
    }

    /// Removes every task of a queue (see [`Inspector::flush_queue`]).
    pub async fn flush_queue(&self, queue: &str) -> Result<crate::FlushCounts> {
        self.inspector().flush_queue(queue).await
    }

    /// Runs a dead task again (see [`Inspector::rerun_dead`]).
    pub async fn rerun_dead(&self, queue: &str, id: &str) -> Result<bool> {
        self.inspector().rerun_dead(queue, id).await
    }

    /// Runs every dead task of a queue again (see [`Inspector::rerun_all_dead`]).
    pub async fn rerun_all_dead(&self, queue: &str) -> Result<u64> {
        self.inspector().rerun_all_dead(queue).await
    }

    /// Cancels a task by id (see [`Inspector::cancel_task`]).
    pub async fn cancel_task(&self, queue: &str, id: &str) -> Result<crate::CancelOutcome> {
        self.inspector().cancel_task(queue, id).await
    }

    /// An [`Inspector`] sharing this client's connection.
    pub fn inspector(&self) -> Inspector {
        Inspector::from_client(self)
    }

    pub(crate) fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    fn prepare(&self, task: &Task) -> Result<NewTask> {
        crate::task::validate_task_type(&task.task_type)?;
        crate::task::validate_queue_name(&task.queue)?;
        crate::task::validate_options(&task.options)?;
        if let Some(deps) = &task.options.depends_on {
            let me = record::id_bytes(&task.id)?;
            for d in deps {
                match record::id_bytes(d) {
                    Ok(raw) if raw == me => {
                        return Err(Error::validation(
                            "depends_on",
                            format!("task {} depends on itself", task.id),
                        ))
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(Error::UnknownDependency {
                            id: d.clone(),
                            task: task.id.clone(),
                        })
                    }
                }
            }
        }
        if task.payload.len() > self.inner.max_payload {
            return Err(Error::validation(
                "payload",
                format!(
                    "{} bytes is above the client's limit of {} bytes",
                    task.payload.len(),
                    self.inner.max_payload
                ),
            ));
        }
        let delay = task.options.delay.unwrap_or(Duration::ZERO);
        let unique = task.options.unique_key.as_ref().map(|k| {
            let ttl = task.options.unique_ttl.unwrap_or(DEFAULT_UNIQUE_TTL) + delay;
            (k.clone(), ttl.as_secs().max(1))
        });
        Ok(NewTask {
            record: record::encode_traced(task, crate::otel::producer_context().as_deref())?,
            task_type: task.task_type.clone(),
            delay_ms: delay.as_millis() as u64,
            unique,
        })
    }

    /// The physical queue a task goes to: its queue, or on a partitioned queue the partition
    /// its unique key (else its id) routes to.
    async fn placed(&self, task: &Task) -> Result<String> {
        let routed = self
            .inner
            .broker
            .partition_for(&task.queue, || match &task.options.unique_key {
                Some(k) => k.as_bytes().to_vec(),
                // prepare() checked that the id parses.
                None => record::id_bytes(&task.id)
                    .map_or_else(|_| task.id.clone().into_bytes(), |b| b.to_vec()),
            })
            .await?;
        Ok(routed.unwrap_or_else(|| task.queue.clone()))
    }

    async fn note_queues(&self, queues: &[String]) -> Result<()> {
        let fresh: Vec<String> = {
            let known = self
                .inner
                .known_queues
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            queues
                .iter()
                .filter(|q| !known.contains(*q))
                .cloned()
                .collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        self.inner.broker.register_queues(&fresh).await?;
        self.inner
            .known_queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(fresh);
        Ok(())
    }
}

fn duplicate(task: &Task, holder: &[u8]) -> Error {
    Error::Duplicate {
        queue: task.queue.clone(),
        unique_key: task.options.unique_key.clone().unwrap_or_default(),
        existing_id: id_text(holder),
    }
}

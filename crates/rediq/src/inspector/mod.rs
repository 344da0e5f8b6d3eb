//! Read access to queues, tasks and servers, for dashboards, the CLI and tests. Finding tasks
//! (by text or id, in bounded steps) and one task's details are in `lookup.rs`; a queue's
//! history per day and its memory in `usage.rs`; cancelling and deleting tasks in `remove.rs`.

mod limits;
mod lookup;
mod remove;
mod usage;
pub use lookup::{Found, Lease, TaskDetails, MAX_FIND_SCAN};
pub use remove::CancelOutcome;
pub use usage::DailyStats;

use std::collections::HashMap;

use crate::broker::{
    logical, record, redis_options, Broker, FlushCounts, QueueStats, Target, TaskState,
};
use crate::task::validate_queue_name;
use crate::{Client, Result, Task};

/// Reads the state of queues, tasks and servers.
///
/// ```
/// # #[tokio::main] async fn main() -> rediq::Result<()> {
/// use rediq::{Client, Inspector, Task, TaskState};
/// // A private redis-server for this example; yours is a URL such as "redis://localhost:6379".
/// let redis = rediq::testing::RedisServer::start();
/// let client = Client::builder().redis_url(redis.url()).build().await?;
/// client.enqueue(Task::builder("email:send").queue("emails").build()?).await?;
///
/// let inspector = Inspector::connect(&redis.url()).await?;
/// assert_eq!(inspector.queue_stats("emails").await?.pending, 1);
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

/// A periodic (cron) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronEntry {
    /// The entry's id: the task's unique key, or `"<task type> <expression>"`.
    pub id: String,
    /// The queue its tasks go to.
    pub queue: String,
    /// The schedule expression, as registered (with its `CRON_TZ=` prefix, if it has one).
    pub expr: String,
    /// The IANA time zone the expression is evaluated in (`"UTC"` unless it names one).
    pub time_zone: String,
    /// The task every tick enqueues a copy of (with a fresh id).
    pub task: Task,
    /// Whether the entry is paused.
    pub paused: bool,
    /// The last tick that fired (Unix ms).
    pub last_run_ms: Option<u64>,
    /// The next tick (Unix ms); `None` while paused.
    pub next_run_ms: Option<u64>,
}

impl CronEntry {
    /// The expression without its time zone prefix ([`CronEntry::time_zone`] names the zone).
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
    /// for e in inspector.cron_entries().await? {
    ///     println!("{}: {} ({})", e.id, e.schedule(), e.time_zone);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn schedule(&self) -> &str {
        crate::schedule::split_zone(&self.expr).1
    }
}

/// A registered server, as its heartbeat last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// `host:pid:random`.
    pub id: String,
    /// The fields of its registration: host, pid, queues, concurrency, started_at_ms,
    /// last_heartbeat_ms, lease_ms, in_flight (tasks held at the last heartbeat).
    pub fields: HashMap<String, String>,
}

impl WorkerInfo {
    /// Whether its last heartbeat is more recent than its lease (Unix ms `now_ms`): a server
    /// whose heartbeat is older has stopped or stalled, and the tasks it held are being
    /// re-delivered. Its registry entry stays a while longer so that it shows as dead.
    pub fn alive(&self, now_ms: u64) -> bool {
        let field = |k: &str| self.fields.get(k).and_then(|v| v.parse::<u64>().ok());
        match (field("last_heartbeat_ms"), field("lease_ms")) {
            (Some(beat), Some(lease)) => now_ms.saturating_sub(beat) <= lease,
            // Registered by a version without `lease_ms`: its entry lapses with its lease.
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// A server and the tasks it runs ([`Inspector::worker`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDetails {
    /// Its registration.
    pub info: WorkerInfo,
    /// See [`WorkerInfo::alive`], judged by the reader's clock.
    pub alive: bool,
    /// The tasks it holds now, read from Redis: (queue, task id, task type).
    pub in_flight: Vec<(String, String, String)>,
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

    /// Counts per state, totals and latency of a queue (summed over its partitions, when it
    /// has some). Two round trips to Redis.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        validate_queue_name(queue)?;
        let mut all = self.stats_of(&[queue.to_string()]).await?;
        // stats_of returns one entry per queue asked for.
        all.pop()
            .ok_or_else(|| crate::Error::Serialization("no counts read".into()))
    }

    /// [`Inspector::queue_stats`] of every queue, in [`Inspector::queues`]' order: what a
    /// dashboard reads on each refresh. The reads of all queues are pipelined: two round trips
    /// whatever the number of queues (about 19 commands per queue, none per task).
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
    /// for s in inspector.all_queue_stats().await? {
    ///     println!("{}: {} pending, {:?} behind", s.queue, s.pending, s.latency);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn all_queue_stats(&self) -> Result<Vec<QueueStats>> {
        let queues = self.queues().await?;
        self.stats_of(&queues).await
    }

    /// [`Inspector::queue_stats`] of each queue named, in the order given: what one page of a
    /// dashboard reads. Pipelined like [`all_queue_stats`](Self::all_queue_stats): two round
    /// trips whatever the number of queues.
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
    /// let page: Vec<String> = inspector.queues().await?.into_iter().take(50).collect();
    /// for s in inspector.queue_stats_many(&page).await? {
    ///     println!("{}: {} pending", s.queue, s.pending);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn queue_stats_many(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        for q in queues {
            validate_queue_name(q)?;
        }
        self.stats_of(queues).await
    }

    /// The stats of each logical queue, summed over its partitions.
    async fn stats_of(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        let mut parts = Vec::with_capacity(queues.len());
        for q in queues {
            parts.push(self.broker.partitions(q).await?);
        }
        let physical: Vec<&str> = parts
            .iter()
            .flat_map(|p| p.iter().map(String::as_str))
            .collect();
        let mut read = self.broker.stats_many(&physical).await?.into_iter();
        let mut out = Vec::with_capacity(queues.len());
        for (q, p) in queues.iter().zip(&parts) {
            let mut total = QueueStats {
                queue: q.clone(),
                paused: true,
                ..QueueStats::default()
            };
            for s in read.by_ref().take(p.len()) {
                total.absorb(&s);
            }
            out.push(total);
        }
        Ok(out)
    }

    /// How long the task that has waited longest in the queue's pending state has been due
    /// (zero when nothing is pending): the queue's latency, as [`QueueStats::latency`] has it.
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
    /// let behind = inspector.latency("emails").await?;
    /// println!("emails is {behind:?} behind");
    /// # Ok(()) }
    /// ```
    pub async fn latency(&self, queue: &str) -> Result<std::time::Duration> {
        Ok(self.queue_stats(queue).await?.latency)
    }

    /// Gives a queue `partitions` partitions (1 ..= 64), so that on a Redis Cluster one hot
    /// queue spreads over several shards; or checks that it has them already. Partition 0 is
    /// the queue itself, so what it holds stays. The count is fixed once declared (a unique key
    /// must keep landing in the same partition): another count is a validation error.
    ///
    /// Producers learn of a declaration within 5 s; servers read the partitions when they
    /// start, so declare before starting the servers of the queue (or restart them). See
    /// docs/deployment.md, "Scaling a hot workload", for what a partitioned queue promises.
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
    /// inspector.partition_queue("clicks", 6).await?;
    /// assert_eq!(inspector.queue_stats("clicks").await?.partitions, 6);
    /// # Ok(()) }
    /// ```
    pub async fn partition_queue(&self, queue: &str, partitions: u16) -> Result<()> {
        validate_queue_name(queue)?;
        self.broker.declare_partitions(queue, partitions).await?;
        self.broker.register_queues(&[queue.to_string()]).await
    }

    /// Up to `limit` tasks of a queue in one state, in the order they would run (pending),
    /// become due (delayed, retry) or died (dead, oldest first). Undecodable records appear as
    /// tasks of type `rediq:undecodable`. A partitioned queue lists its partitions one after
    /// the other, each in that order.
    pub async fn list(&self, queue: &str, state: TaskState, limit: usize) -> Result<Vec<Task>> {
        self.list_page(queue, state, 0, limit).await
    }

    /// Page `page` (from 0) of `size` tasks of a queue in one state, in the order of
    /// [`list`](Self::list). Each page costs reads of the page's size (plus one count per
    /// priority band in use and per partition), however many tasks the queue holds; only
    /// the tasks waiting for dependencies are read whole and sorted.
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
    /// use rediq::TaskState;
    /// let second = inspector.list_page("emails", TaskState::Dead, 1, 50).await?; // tasks 50..100
    /// # let _ = second; Ok(()) }
    /// ```
    pub async fn list_page(
        &self,
        queue: &str,
        state: TaskState,
        page: usize,
        size: usize,
    ) -> Result<Vec<Task>> {
        validate_queue_name(queue)?;
        let mut skip = page.saturating_mul(size);
        let parts = self.broker.partitions(queue).await?;
        let mut out = Vec::new();
        for p in parts.iter() {
            if out.len() >= size {
                break;
            }
            if parts.len() > 1 && skip > 0 {
                // Partitions before the page are skipped by their counts.
                let n =
                    usize::try_from(self.broker.stats(p).await?.count(state)).unwrap_or(usize::MAX);
                if skip >= n {
                    skip -= n;
                    continue;
                }
            }
            let raw = self
                .broker
                .records_page(p, state, skip, size - out.len())
                .await?;
            skip = 0;
            out.extend(raw.iter().map(|r| {
                record::decode(queue, r).unwrap_or_else(|reason| {
                    // Decoding our own stand-in record cannot fail.
                    record::decode(queue, &record::undecodable(r, &reason))
                        .expect("the undecodable stand-in record decodes")
                })
            }));
        }
        Ok(out)
    }

    /// One registered server with the tasks it holds now (read from its active hashes: O(its
    /// in-flight tasks)); `None` when no server has this id.
    pub async fn worker(&self, id: &str) -> Result<Option<WorkerDetails>> {
        let Some(info) = self.workers().await?.into_iter().find(|w| w.id == id) else {
            return Ok(None);
        };
        let queues: Vec<String> = info
            .fields
            .get("queues")
            .map(|q| {
                q.split(',')
                    .filter(|q| !q.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let mut in_flight = Vec::new();
        for q in &queues {
            for p in self.broker.partitions(q).await?.iter() {
                for e in self.broker.held(p, id).await? {
                    let task_type = record::decode(q, &e.record)
                        .map_or_else(|_| record::UNDECODABLE_TYPE.to_string(), |t| t.task_type);
                    in_flight.push((q.clone(), record::id_text(&e.id), task_type));
                }
            }
        }
        Ok(Some(WorkerDetails {
            alive: info.alive(crate::task::now_ms()),
            info,
            in_flight,
        }))
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
        for p in self.broker.partitions(queue).await?.iter() {
            self.broker.pause(p).await?;
        }
        Ok(())
    }

    /// Resumes a paused queue; idle servers pick up its tasks at once.
    pub async fn resume_queue(&self, queue: &str) -> Result<()> {
        validate_queue_name(queue)?;
        for p in self.broker.partitions(queue).await?.iter() {
            self.broker.resume(p).await?;
        }
        Ok(())
    }

    /// Removes every task of a queue in every state and returns how many of each. Tasks running
    /// on a server finish, but their results are refused. Unique keys held by removed tasks are
    /// released. Counters and the pause flag stay.
    pub async fn flush_queue(&self, queue: &str) -> Result<FlushCounts> {
        validate_queue_name(queue)?;
        let mut total = FlushCounts::default();
        for p in self.broker.partitions(queue).await?.iter() {
            total.absorb(&self.flush_partition(p).await?);
        }
        Ok(total)
    }

    /// Flushes one physical queue.
    async fn flush_partition(&self, queue: &str) -> Result<FlushCounts> {
        let mut locks = Vec::new();
        for state in [
            TaskState::Pending,
            TaskState::Delayed,
            TaskState::Retry,
            TaskState::Active,
            TaskState::Waiting,
        ] {
            for r in self.broker.records(queue, state, usize::MAX).await? {
                if let Ok(t) = record::decode(logical(queue), &r) {
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
        for p in self
            .broker
            .id_search_order(&[queue.to_string()], &id)
            .await?
        {
            let found = self
                .broker
                .dead_records(&p, Some(std::slice::from_ref(&id)), 1)
                .await?;
            if !found.is_empty() {
                return Ok(self.rerun(&p, found).await? == 1);
            }
        }
        Ok(false)
    }

    /// Runs every dead task of a queue again; returns how many. Undecodable records stay in the
    /// dead-letter queue.
    pub async fn rerun_all_dead(&self, queue: &str) -> Result<u64> {
        validate_queue_name(queue)?;
        let mut n = 0;
        for p in self.broker.partitions(queue).await?.iter() {
            let all = self.broker.dead_records(p, None, usize::MAX).await?;
            n += self.rerun(p, all).await?;
        }
        Ok(n)
    }

    /// Re-runs dead records of one physical queue.
    async fn rerun(&self, queue: &str, dead: Vec<Vec<u8>>) -> Result<u64> {
        let mut pairs = Vec::with_capacity(dead.len());
        for old in dead {
            let Ok(mut task) = record::decode(logical(queue), &old) else {
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

    /// Every periodic entry, of every queue.
    pub async fn cron_entries(&self) -> Result<Vec<CronEntry>> {
        Ok(self
            .cron_entries_where()
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// Every periodic entry with the physical queue (partition) that holds it.
    async fn cron_entries_where(&self) -> Result<Vec<(String, CronEntry)>> {
        let mut out = Vec::new();
        for queue in self.broker.cron_queues().await? {
            let name = logical(&queue).to_string();
            for (id, e, last, next) in self.broker.cron_list(&queue).await? {
                let Ok(task) = record::decode(&name, &e.template) else {
                    continue;
                };
                out.push((
                    queue.clone(),
                    CronEntry {
                        id,
                        queue: name.clone(),
                        time_zone: crate::schedule::split_zone(&e.expr)
                            .0
                            .unwrap_or("UTC")
                            .to_string(),
                        expr: e.expr,
                        task,
                        paused: e.paused,
                        last_run_ms: last,
                        next_run_ms: next,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Pauses a periodic entry: no tick fires until it is resumed. `false` if no entry has
    /// this id.
    pub async fn pause_cron(&self, id: &str) -> Result<bool> {
        match self.find_cron(id).await? {
            Some((queue, _)) => self.broker.cron_set_paused(&queue, id, None).await,
            None => Ok(false),
        }
    }

    /// Resumes a paused periodic entry from its next tick after now (ticks passed while paused
    /// do not fire). `false` if no entry has this id.
    pub async fn resume_cron(&self, id: &str) -> Result<bool> {
        let Some((queue, e)) = self.find_cron(id).await? else {
            return Ok(false);
        };
        let schedule = crate::schedule::Schedule::parse(&e.expr)
            .map_err(|err| crate::Error::validation("cron", err))?;
        let now = self.broker.time_ms().await?;
        match schedule.next_after(now) {
            Some(next) => self.broker.cron_set_paused(&queue, id, Some(next)).await,
            None => Ok(false),
        }
    }

    /// Removes a periodic entry. `false` if no entry has this id.
    pub async fn remove_cron(&self, id: &str) -> Result<bool> {
        match self.find_cron(id).await? {
            Some((queue, _)) => self.broker.cron_remove(&queue, id).await,
            None => Ok(false),
        }
    }

    async fn find_cron(&self, id: &str) -> Result<Option<(String, CronEntry)>> {
        Ok(self
            .cron_entries_where()
            .await?
            .into_iter()
            .find(|(_, e)| e.id == id))
    }

    /// Plants raw bytes as a pending task, bypassing every check. Only for testing how servers
    /// treat foreign or corrupt records (feature `testing`).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub async fn plant_raw_pending(&self, queue: &str, raw: &[u8]) -> Result<()> {
        self.broker.plant_raw_pending(queue, raw).await
    }
}

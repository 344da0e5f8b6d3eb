//! Read access to queues, tasks and servers, for dashboards, the CLI and tests.

use std::collections::HashMap;

use crate::broker::{record, Broker, QueueStats, TaskState};
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

/// A registered server, as its heartbeat last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// `host:pid:random`.
    pub id: String,
    /// The fields of its registration: host, pid, queues, concurrency, started_at_ms,
    /// last_heartbeat_ms.
    pub fields: HashMap<String, String>,
}

impl Inspector {
    /// Connects to Redis.
    pub async fn connect(redis_url: &str) -> Result<Inspector> {
        Ok(Inspector {
            broker: Broker::connect(redis_url).await?,
        })
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

    /// Plants raw bytes as a pending task, bypassing every check. Only for testing how servers
    /// treat foreign or corrupt records.
    #[doc(hidden)]
    pub async fn plant_raw_pending(&self, queue: &str, raw: &[u8]) -> Result<()> {
        self.broker.plant_raw_pending(queue, raw).await
    }
}

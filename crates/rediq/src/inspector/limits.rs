//! Setting and reading a queue's flow-control limits (kept in Redis, enforced by every
//! server's fetch: see `broker/limits.rs`).

use super::{validate_queue_name, Inspector};
use crate::broker::QueueLimits;
use crate::Result;

impl Inspector {
    /// Sets a queue's limits, replacing the ones it had (`QueueLimits::default()` removes
    /// them). Every server applies them at its next fetch, without a restart. See
    /// [`QueueLimits`] for an example.
    ///
    /// On a [partitioned](Inspector::partition_queue) queue each partition enforces the limits
    /// by itself (its keys live on their own shard, where a fetch can check them atomically):
    /// with P partitions, up to P × `concurrency` tasks run at once and up to P × `count`
    /// start per period. Divide by P for a total.
    pub async fn set_queue_limits(&self, queue: &str, limits: &QueueLimits) -> Result<()> {
        validate_queue_name(queue)?;
        limits.validate()?;
        for p in self.broker.partitions(queue).await?.iter() {
            self.broker.set_limits(p, limits).await?;
        }
        Ok(())
    }

    /// A queue's limits as kept in Redis (`QueueLimits::default()` when it has none).
    pub async fn queue_limits(&self, queue: &str) -> Result<QueueLimits> {
        validate_queue_name(queue)?;
        self.broker.limits(queue).await
    }
}

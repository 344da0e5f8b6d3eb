//! Setting and reading a queue's flow-control limits (kept in Redis, enforced by every
//! server's fetch: see `broker/limits.rs`).

use super::{validate_queue_name, Inspector};
use crate::broker::QueueLimits;
use crate::{Error, Result};

impl Inspector {
    /// Sets a queue's limits, replacing the ones it had (`QueueLimits::default()` removes
    /// them). Every server applies them at its next fetch, without a restart. See
    /// [`QueueLimits`] for an example.
    pub async fn set_queue_limits(&self, queue: &str, limits: &QueueLimits) -> Result<()> {
        validate_queue_name(queue)?;
        limits.validate()?;
        if self.broker.partitions(queue).await?.len() > 1 {
            return Err(Error::NotSupported(format!(
                "limits on the partitioned queue {queue:?}: each partition would apply them on \
                 its own; set them on a queue that is not partitioned"
            )));
        }
        self.broker.set_limits(queue, limits).await
    }

    /// A queue's limits as kept in Redis (`QueueLimits::default()` when it has none).
    pub async fn queue_limits(&self, queue: &str) -> Result<QueueLimits> {
        validate_queue_name(queue)?;
        self.broker.limits(queue).await
    }
}

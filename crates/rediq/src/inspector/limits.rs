//! Setting and reading a queue's flow-control limits (kept in Redis, enforced by every
//! server's fetch: see `broker/limits.rs`).

use super::{validate_queue_name, Inspector};
use crate::broker::{GroupInfo, GroupLimits, QueueLimits};
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

    /// Sets the limits every group of a queue follows, unless a group has an override
    /// ([`Inspector::set_group_override`]); `QueueLimits::default()` removes the rule. A group
    /// at its concurrency limit, or out of rate tokens, is skipped by every server's fetch: its
    /// tasks wait, without occupying a worker and without using an attempt, while the other
    /// groups run. See [`GroupLimits`] for an example.
    ///
    /// On a partitioned queue each partition enforces the rule for the groups' tasks it holds
    /// (a group's tasks spread over the partitions like any others): with P partitions a group
    /// may run up to P × `concurrency` at once.
    pub async fn set_group_limits(&self, queue: &str, rule: &QueueLimits) -> Result<()> {
        validate_queue_name(queue)?;
        rule.validate()?;
        for p in self.broker.partitions(queue).await?.iter() {
            self.broker.set_group_rule(p, rule).await?;
        }
        Ok(())
    }

    /// Gives a named group its own limits in place of the rule (`None` removes the override,
    /// and the rule applies again). A field `None` in an override means no such limit for
    /// that group.
    pub async fn set_group_override(
        &self,
        queue: &str,
        group: &str,
        limits: Option<&QueueLimits>,
    ) -> Result<()> {
        validate_queue_name(queue)?;
        if let Some(l) = limits {
            l.validate()?;
        }
        for p in self.broker.partitions(queue).await?.iter() {
            self.broker.set_group_override(p, group, limits).await?;
        }
        Ok(())
    }

    /// A queue's group limits: the rule and the overrides.
    pub async fn group_limits(&self, queue: &str) -> Result<GroupLimits> {
        validate_queue_name(queue)?;
        self.broker.group_limits(queue).await
    }

    /// The groups of a queue with tasks pending or running, or held by a limit or a handler's
    /// slow-down, by name, at most `limit` of them (summed over partitions).
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
    /// for g in inspector.groups("reports", 100).await? {
    ///     println!("{}: {} pending, {} running", g.name, g.pending, g.running);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn groups(&self, queue: &str, limit: usize) -> Result<Vec<GroupInfo>> {
        validate_queue_name(queue)?;
        let mut by: std::collections::BTreeMap<String, GroupInfo> = Default::default();
        for p in self.broker.partitions(queue).await?.iter() {
            for g in self.broker.groups(p, usize::MAX).await? {
                let e = by.entry(g.name.clone()).or_insert_with(|| GroupInfo {
                    name: g.name.clone(),
                    ..GroupInfo::default()
                });
                e.pending += g.pending;
                e.running += g.running;
                e.at_limit |= g.at_limit;
                e.held_until_ms = e.held_until_ms.max(g.held_until_ms);
            }
        }
        Ok(by.into_values().take(limit).collect())
    }
}

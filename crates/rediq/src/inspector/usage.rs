//! A queue's history per day and the memory it uses in Redis (both bounded reads; see
//! `broker/usage.rs` for how they are kept and measured).

use chrono::{DateTime, NaiveDate};

use super::{validate_queue_name, Inspector};
use crate::broker::DAILY_KEEP;
use crate::{Error, Result};

/// One day (UTC) of a queue's history, from [`Inspector::history`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyStats {
    /// The day, in UTC (by Redis's clock).
    pub date: NaiveDate,
    /// Tasks completed successfully that day.
    pub processed: u64,
    /// Failed attempts that day: retried, dead-lettered, or lost with a server whose lease
    /// lapsed (the same events as [`QueueStats::failed_total`](crate::QueueStats)).
    pub failed: u64,
}

impl Inspector {
    /// The queue's completions and failed attempts per day, for the last `days` days (1 ..= 90,
    /// today included), oldest first; a day without any is there with zeros. Redis keeps 90
    /// days per queue (a hash of at most 182 small fields), summed here over the partitions.
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
    /// for day in inspector.history("emails", 7).await? {
    ///     println!("{}: {} done, {} failed", day.date, day.processed, day.failed);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn history(&self, queue: &str, days: u32) -> Result<Vec<DailyStats>> {
        validate_queue_name(queue)?;
        if !(1..=DAILY_KEEP).contains(&days) {
            return Err(Error::Validation {
                what: "days",
                reason: format!("{days} is outside 1 ..= {DAILY_KEEP} (the days Redis keeps)"),
            });
        }
        let today = self.broker.time_ms().await? / 86_400_000;
        let first = today + 1 - u64::from(days);
        let mut counts = vec![(0u64, 0u64); days as usize];
        for p in self.broker.partitions(queue).await?.iter() {
            for (day, (done, failed)) in self.broker.daily(p).await? {
                if (first..=today).contains(&day) {
                    let c = &mut counts[(day - first) as usize];
                    c.0 += done;
                    c.1 += failed;
                }
            }
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, (processed, failed))| {
                let ms = (first + i as u64) * 86_400_000;
                let date = DateTime::from_timestamp_millis(ms as i64)
                    .ok_or_else(|| Error::Serialization(format!("day {ms} ms is out of range")))?
                    .date_naive();
                Ok(DailyStats {
                    date,
                    processed,
                    failed,
                })
            })
            .collect()
    }

    /// Bytes the queue uses in Redis, as Redis's `MEMORY USAGE` estimates them (it samples
    /// the elements of big keys; the id index's buckets are sampled too), summed over its
    /// keys and partitions: O(keys of the queue) commands, never O(tasks). `None` when Redis
    /// refuses `MEMORY USAGE` (some managed services disable it). Unique-key locks are not
    /// counted (they would need a scan of the keyspace).
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
    /// if let Some(bytes) = inspector.memory_usage("emails").await? {
    ///     println!("emails uses {} KiB", bytes / 1024);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn memory_usage(&self, queue: &str) -> Result<Option<u64>> {
        validate_queue_name(queue)?;
        let mut total = 0;
        for p in self.broker.partitions(queue).await?.iter() {
            match self.broker.memory_usage(p).await? {
                Some(b) => total += b,
                None => return Ok(None),
            }
        }
        Ok(Some(total))
    }
}

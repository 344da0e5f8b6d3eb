//! What the dashboard shows: the latest snapshot read through the `Inspector`, and a bounded
//! history of throughput and depth per queue for the sparklines.

use std::collections::{HashMap, VecDeque};

use rediq::{Inspector, QueueStats, WorkerInfo};

/// Points kept per history (at the default 1 s refresh: the last two minutes).
pub const HISTORY: usize = 120;

/// One queue at one refresh.
#[derive(Debug, Clone)]
pub struct QueueRow {
    pub stats: QueueStats,
    pub latency_ms: u64,
    /// Tasks completed per second since the previous refresh.
    pub throughput: f64,
    /// Failed attempts per second since the previous refresh.
    pub failures: f64,
}

impl QueueRow {
    /// Failed attempts among finished attempts since the previous refresh, in percent.
    pub fn error_rate(&self) -> f64 {
        let all = self.throughput + self.failures;
        if all > 0.0 {
            self.failures * 100.0 / all
        } else {
            0.0
        }
    }
}

/// Everything one refresh read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub at_ms: u64,
    pub queues: Vec<QueueRow>,
    pub workers: Vec<WorkerInfo>,
}

/// The dashboard's state across refreshes.
#[derive(Debug, Default)]
pub struct Model {
    pub snapshot: Snapshot,
    /// Total throughput (tasks/s) per refresh, oldest first.
    pub throughput: VecDeque<u64>,
    /// Total depth (pending + scheduled + retry) per refresh, oldest first.
    pub depth: VecDeque<u64>,
    /// Per queue: throughput per refresh.
    pub queue_throughput: HashMap<String, VecDeque<u64>>,
    /// Per queue: depth (pending + scheduled + retry) per refresh.
    pub queue_depth: HashMap<String, VecDeque<u64>>,
    /// Error rate (percent) per refresh.
    pub errors: VecDeque<u64>,
    /// The last refresh's error, shown as a banner until a refresh works again.
    pub error: Option<String>,
    /// Milliseconds between refreshes, for the time span the charts cover.
    pub interval_ms: u64,
}

/// The tasks a queue has yet to run: pending, scheduled and retry.
fn depth_of(s: &QueueStats) -> u64 {
    s.pending + s.delayed + s.retry
}

fn push(h: &mut VecDeque<u64>, v: u64) {
    if h.len() == HISTORY {
        h.pop_front();
    }
    h.push_back(v);
}

impl Model {
    pub fn new(interval_ms: u64) -> Model {
        Model {
            interval_ms,
            ..Model::default()
        }
    }

    /// Reads every queue and server once: the queues' reads are pipelined (two round trips
    /// for all of them), then one read of the servers.
    pub async fn read(i: &Inspector, now_ms: u64) -> rediq::Result<Snapshot> {
        let queues = i
            .all_queue_stats()
            .await?
            .into_iter()
            .map(|stats| QueueRow {
                latency_ms: stats.latency.as_millis() as u64,
                stats,
                throughput: 0.0,
                failures: 0.0,
            })
            .collect();
        Ok(Snapshot {
            at_ms: now_ms,
            queues,
            workers: i.workers().await?,
        })
    }

    /// Takes a new snapshot in: rates from the counters' growth since the previous one.
    pub fn update(&mut self, mut s: Snapshot) {
        let secs = (s.at_ms.saturating_sub(self.snapshot.at_ms) as f64 / 1000.0).max(0.001);
        let first = self.snapshot.at_ms == 0;
        for row in &mut s.queues {
            if let Some(old) = self
                .snapshot
                .queues
                .iter()
                .find(|o| o.stats.queue == row.stats.queue)
            {
                if !first {
                    row.throughput = row
                        .stats
                        .processed_total
                        .saturating_sub(old.stats.processed_total)
                        as f64
                        / secs;
                    row.failures =
                        row.stats
                            .failed_total
                            .saturating_sub(old.stats.failed_total) as f64
                            / secs;
                }
            }
            let h = self
                .queue_throughput
                .entry(row.stats.queue.clone())
                .or_default();
            push(h, row.throughput.round() as u64);
            let d = self.queue_depth.entry(row.stats.queue.clone()).or_default();
            push(d, depth_of(&row.stats));
        }
        let total: f64 = s.queues.iter().map(|q| q.throughput).sum();
        let failures: f64 = s.queues.iter().map(|q| q.failures).sum();
        let depth: u64 = s.queues.iter().map(|q| depth_of(&q.stats)).sum();
        push(&mut self.throughput, total.round() as u64);
        push(&mut self.depth, depth);
        let rate = if total + failures > 0.0 {
            failures * 100.0 / (total + failures)
        } else {
            0.0
        };
        push(&mut self.errors, rate.round() as u64);
        // Queues that are gone leave the history too (it stays bounded by the live queues).
        let live = |q: &String| s.queues.iter().any(|r| &r.stats.queue == q);
        self.queue_throughput.retain(|q, _| live(q));
        self.queue_depth.retain(|q, _| live(q));
        self.snapshot = s;
        self.error = None;
    }

    /// The time span the charts cover now, as `2m 0s`.
    pub fn span(&self) -> String {
        let secs = self.throughput.len() as u64 * self.interval_ms / 1000;
        format!("{}m {}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(at_ms: u64, processed: u64, failed: u64, pending: u64) -> Snapshot {
        Snapshot {
            at_ms,
            queues: vec![QueueRow {
                stats: QueueStats {
                    queue: "emails".into(),
                    pending,
                    processed_total: processed,
                    failed_total: failed,
                    ..QueueStats::default()
                },
                latency_ms: 0,
                throughput: 0.0,
                failures: 0.0,
            }],
            workers: Vec::new(),
        }
    }

    #[test]
    fn rates_come_from_counter_growth_and_history_is_bounded() {
        let mut m = Model::new(1000);
        m.update(snap(1_000, 100, 0, 50));
        m.update(snap(3_000, 300, 50, 40));
        let row = &m.snapshot.queues[0];
        assert_eq!((row.throughput, row.failures), (100.0, 25.0));
        assert_eq!(row.error_rate(), 20.0);
        assert_eq!(
            m.throughput.iter().copied().collect::<Vec<_>>(),
            vec![0, 100]
        );
        assert_eq!(m.depth.back(), Some(&40));
        for n in 0..500 {
            m.update(snap(5_000 + n * 1000, 300 + n, 50, 1));
        }
        assert_eq!(m.throughput.len(), HISTORY);
        assert_eq!(m.queue_throughput["emails"].len(), HISTORY);
        assert_eq!(m.queue_depth["emails"].len(), HISTORY);
        assert_eq!(m.queue_depth["emails"].back(), Some(&1));
        assert_eq!(m.span(), "2m 0s");
    }
}

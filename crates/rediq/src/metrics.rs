//! Prometheus metrics of one server.
//!
//! This module owns the server's metrics registry: every metric family, their names, labels and
//! help texts, and the text encoding served at `GET /metrics`. Each server has a registry of its
//! own (nothing is global, so servers in one process, and tests running in parallel, never share
//! counts).
//!
//! Recording is meant to be cheap enough to leave on: the per-task handles of a (queue, task
//! type) pair are resolved once and cached ([`TaskMetrics`]), so recording a task is a few atomic
//! increments and one histogram observation, without building label strings. Queue depths and
//! the oldest pending age are read from Redis when the endpoint is scraped, before encoding
//! (prometheus-client encodes synchronously).
//!
//! Every metric and its labels are listed in `docs/configuration.md` (section *Metrics*).
//!
//! ```no_run
//! # async fn demo() -> rediq::Result<()> {
//! use rediq::server::{Server, ServerBuilder};
//! let state = ServerBuilder::new().queues(&["emails"]).build().await?;
//! let mut server = Server::from(state);
//! server.enable_metrics("127.0.0.1:9090".parse().expect("an address"));
//! // GET http://127.0.0.1:9090/metrics and /healthz while the server runs.
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::broker::{Broker, QueueStats};

/// Buckets of the handler duration histogram, in seconds: 0.5 ms … 5 min.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    300.0,
];

/// Labels of the per-task metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TaskLabels {
    queue: String,
    task_type: String,
}

/// Labels of the queue depth gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabels {
    queue: String,
    state: &'static str,
}

/// Labels of the per-queue gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// Labels of the counter of tasks a queue's limits held back.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    queue: String,
    limit: &'static str,
}

/// Labels of the cron firing counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CronLabels {
    queue: String,
    entry: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

type AgeGauge = Gauge<f64, AtomicU64>;

/// The metric families.
struct Families {
    enqueued: Family<TaskLabels, Counter>,
    processed: Family<TaskLabels, Counter>,
    failed: Family<TaskLabels, Counter>,
    retried: Family<TaskLabels, Counter>,
    dead: Family<TaskLabels, Counter>,
    cancelled: Family<TaskLabels, Counter>,
    skipped: Family<TaskLabels, Counter>,
    recovered: Family<TaskLabels, Counter>,
    stale: Family<TaskLabels, Counter>,
    in_flight: Family<TaskLabels, Gauge>,
    duration: Family<TaskLabels, Histogram, fn() -> Histogram>,
    cron: Family<CronLabels, Counter>,
    depth: Family<DepthLabels, Gauge>,
    oldest: Family<QueueLabels, AgeGauge>,
    held: Family<LimitLabels, Counter>,
}

/// The metric handles of one (queue, task type) pair, resolved once and shared.
#[derive(Debug)]
pub(crate) struct TaskMetrics {
    pub processed: Counter,
    pub failed: Counter,
    pub retried: Counter,
    pub dead: Counter,
    pub cancelled: Counter,
    pub skipped: Counter,
    pub recovered: Counter,
    pub stale: Counter,
    pub in_flight: Gauge,
    pub duration: Histogram,
}

/// A server's registry and metric families.
pub(crate) struct Metrics {
    registry: Registry,
    families: Families,
    /// Per served queue (by index): task type → resolved handles.
    by_type: Vec<RwLock<HashMap<String, Arc<TaskMetrics>>>>,
    queues: Vec<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

/// Task states of the queue depth gauge, in the order they are reported.
pub(crate) const DEPTH_STATES: [&str; 7] = [
    "pending",
    "active",
    "delayed",
    "retry",
    "waiting",
    "dead",
    "completed",
];

impl Metrics {
    /// A fresh registry for a server serving `queues`.
    pub fn new(queues: &[String]) -> Metrics {
        let families = Families {
            enqueued: Family::default(),
            processed: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead: Family::default(),
            cancelled: Family::default(),
            skipped: Family::default(),
            recovered: Family::default(),
            stale: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            cron: Family::default(),
            depth: Family::default(),
            oldest: Family::default(),
            held: Family::default(),
        };
        let mut r = Registry::with_prefix("rediq");
        let f = &families;
        // Counter names carry no `_total`: the encoder appends it.
        r.register(
            "tasks_enqueued",
            "Tasks enqueued into the queue by any producer, ever (read from Redis at scrape time)",
            f.enqueued.clone(),
        );
        r.register(
            "tasks_processed",
            "Tasks whose handler succeeded and whose completion Redis accepted",
            f.processed.clone(),
        );
        r.register(
            "tasks_failed",
            "Failed attempts (handler error, timeout, panic, middleware failure); each one was retried or dead-lettered",
            f.failed.clone(),
        );
        r.register(
            "tasks_retried",
            "Failed attempts scheduled for another attempt",
            f.retried.clone(),
        );
        r.register(
            "tasks_dead_lettered",
            "Tasks moved to the dead-letter queue (retries used up, non-retryable error, undecodable, or lease lapsed with no retries left)",
            f.dead.clone(),
        );
        r.register(
            "tasks_cancelled",
            "Running tasks cancelled on this server",
            f.cancelled.clone(),
        );
        r.register(
            "tasks_skipped",
            "Tasks a middleware skipped (completed without running the handler)",
            f.skipped.clone(),
        );
        r.register(
            "tasks_recovered",
            "Tasks taken back from servers whose lease lapsed (requeued or dead-lettered)",
            f.recovered.clone(),
        );
        r.register(
            "stale_acks",
            "Completions and other settlements Redis refused because the task's lease had been taken over",
            f.stale.clone(),
        );
        r.register(
            "tasks_in_flight",
            "Tasks whose handler (with its middleware) is running on this server",
            f.in_flight.clone(),
        );
        r.register_with_unit(
            "task_duration",
            "Handler run time, from the first before hook to the outcome (recorded by MetricsMiddleware)",
            Unit::Seconds,
            f.duration.clone(),
        );
        r.register(
            "cron_firings",
            "Periodic ticks this server fired (enqueued a task, or found its unique key held)",
            f.cron.clone(),
        );
        r.register(
            "queue_depth",
            "Tasks per state, read from Redis at scrape time",
            f.depth.clone(),
        );
        r.register_with_unit(
            "queue_oldest_pending_age",
            "How long the task that has waited longest in pending has been due, read at scrape time (0 when none)",
            Unit::Seconds,
            f.oldest.clone(),
        );
        r.register(
            "queue_limit_held",
            "Tasks this server asked for that a queue's limit refused (they stayed pending), per limit: concurrency or rate; for group_concurrency and group_rate, the groups a fetch found at their limit",
            f.held.clone(),
        );
        Metrics {
            registry: r,
            families,
            by_type: queues.iter().map(|_| RwLock::default()).collect(),
            queues: queues.to_vec(),
        }
    }

    /// The handles of task type `task_type` on served queue number `queue`.
    pub fn task(&self, queue: usize, task_type: &str) -> Arc<TaskMetrics> {
        let Some(cache) = self.by_type.get(queue) else {
            // Queue indexes come from the server's own queue list; an unknown one still gets
            // working (uncached) handles rather than a panic.
            return Arc::new(self.resolve(&format!("#{queue}"), task_type));
        };
        if let Some(m) = cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_type)
        {
            return m.clone();
        }
        let m = Arc::new(self.resolve(&self.queues[queue], task_type));
        cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(task_type.to_string())
            .or_insert(m)
            .clone()
    }

    fn resolve(&self, queue: &str, task_type: &str) -> TaskMetrics {
        let l = TaskLabels {
            queue: queue.to_string(),
            task_type: task_type.to_string(),
        };
        let f = &self.families;
        TaskMetrics {
            processed: f.processed.get_or_create_owned(&l),
            failed: f.failed.get_or_create_owned(&l),
            retried: f.retried.get_or_create_owned(&l),
            dead: f.dead.get_or_create_owned(&l),
            cancelled: f.cancelled.get_or_create_owned(&l),
            skipped: f.skipped.get_or_create_owned(&l),
            recovered: f.recovered.get_or_create_owned(&l),
            stale: f.stale.get_or_create_owned(&l),
            in_flight: f.in_flight.get_or_create_owned(&l),
            duration: f.duration.get_or_create_owned(&l),
        }
    }

    /// A fetch from served queue number `queue` was held back by its limits.
    pub fn held(&self, queue: usize, held: crate::broker::Held) {
        let queue = self.queues.get(queue).cloned().unwrap_or_default();
        for (limit, n) in [
            ("concurrency", held.concurrency),
            ("rate", held.rate),
            ("group_concurrency", held.group_concurrency),
            ("group_rate", held.group_rate),
        ] {
            if n > 0 {
                self.families
                    .held
                    .get_or_create(&LimitLabels {
                        queue: queue.clone(),
                        limit,
                    })
                    .inc_by(n);
            }
        }
    }

    /// A periodic tick fired on `queue` (any queue with entries, not only served ones).
    pub fn cron_fired(&self, queue: &str, entry: &str) {
        self.families
            .cron
            .get_or_create(&CronLabels {
                queue: queue.to_string(),
                entry: entry.to_string(),
            })
            .inc();
    }

    /// Reads the queue depths and oldest pending ages from Redis, then encodes every metric in
    /// the Prometheus text format. A queue whose depths cannot be read is left out of the depth
    /// gauges (rather than showing stale values); the counters are always encoded.
    pub async fn render(&self, broker: &Broker) -> String {
        // The partitions of a partitioned queue share its name (and are summed in read_depths).
        let mut queues: Vec<&String> = self.queues.iter().collect();
        queues.dedup();
        for queue in queues {
            match read_depths(broker, queue).await {
                Ok((depths, age, enqueued)) => {
                    for (state, n) in DEPTH_STATES.iter().zip(depths) {
                        self.families
                            .depth
                            .get_or_create(&DepthLabels {
                                queue: queue.clone(),
                                state,
                            })
                            .set(i64::try_from(n).unwrap_or(i64::MAX));
                    }
                    self.families
                        .oldest
                        .get_or_create(&QueueLabels {
                            queue: queue.clone(),
                        })
                        .set(age);
                    for (task_type, n) in enqueued {
                        self.families
                            .enqueued
                            .get_or_create(&TaskLabels {
                                queue: queue.clone(),
                                task_type,
                            })
                            .inner()
                            .store(n, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "metrics: cannot read queue depths from Redis");
                    for state in DEPTH_STATES {
                        self.families.depth.remove(&DepthLabels {
                            queue: queue.clone(),
                            state,
                        });
                    }
                    self.families.oldest.remove(&QueueLabels {
                        queue: queue.clone(),
                    });
                }
            }
        }
        self.encode()
    }

    /// Encodes every metric as it stands, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Depths per state (in [`DEPTH_STATES`] order) and the oldest pending age in seconds.
/// Queue depths per state, the oldest pending age, and the tasks enqueued per type (ever, by
/// every producer: counted in Redis by the enqueue scripts).
async fn read_depths(
    broker: &Broker,
    queue: &str,
) -> crate::Result<([u64; 7], f64, Vec<(String, u64)>)> {
    let mut s = QueueStats::default();
    let mut enqueued: Vec<(String, u64)> = Vec::new();
    // A partitioned queue's figures are the sums over its partitions.
    for p in broker.partitions(queue).await?.iter() {
        s.absorb(&broker.stats(p).await?);
        for (task_type, n) in broker.enqueued_counts(p).await? {
            match enqueued.iter_mut().find(|(t, _)| *t == task_type) {
                Some((_, total)) => *total += n,
                None => enqueued.push((task_type, n)),
            }
        }
    }
    let waiting = s.waiting;
    let age = s.latency.as_secs_f64();
    Ok((
        [
            s.pending,
            s.active,
            s.delayed,
            s.retry,
            waiting,
            s.dead,
            s.completed,
        ],
        age,
        enqueued,
    ))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// The processed count of a task type on served queue 0.
    pub(crate) fn processed(m: &Metrics, task_type: &str) -> u64 {
        m.task(0, task_type).processed.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new(&["q".to_string()]);
        let t = m.task(0, "email:send");
        t.processed.inc();
        t.duration.observe(0.002);
        t.in_flight.inc();
        m.cron_fired("q", "e1");
        m.families
            .enqueued
            .get_or_create(&TaskLabels {
                queue: "q".into(),
                task_type: "email:send".into(),
            })
            .inc();
        let text = m.encode();
        for line in [
            "rediq_tasks_processed_total{queue=\"q\",task_type=\"email:send\"} 1",
            "rediq_tasks_enqueued_total{queue=\"q\",task_type=\"email:send\"} 1",
            "rediq_cron_firings_total{queue=\"q\",entry=\"e1\"} 1",
            "rediq_tasks_in_flight{queue=\"q\",task_type=\"email:send\"} 1",
            "rediq_task_duration_seconds_count{queue=\"q\",task_type=\"email:send\"} 1",
            "# TYPE rediq_task_duration_seconds histogram",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Resolved once: the same handles come back.
        assert!(Arc::ptr_eq(&t, &m.task(0, "email:send")));
    }
}

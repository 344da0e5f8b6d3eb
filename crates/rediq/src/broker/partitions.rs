//! Partitioned queues: one logical queue spread over several physical queues, so that one hot
//! queue can use more than one cluster shard.
//!
//! Every key of a queue carries its `{name}` hash tag, so a queue lives on one slot and one
//! shard. A partitioned queue `hot` with N partitions is N physical queues: `hot` itself
//! (partition 0, so declaring partitions keeps what the queue already holds) and `hot 1`,
//! `hot 2`, … — a space cannot appear in a queue name a user gives (see
//! `validate_queue_name`), so no user queue collides with a partition. On a cluster a partition's
//! name may carry a salt (`hot 2.17`) picked when the partitions are declared so that the
//! partitions' slots fall on the masters in turn: N partitions over M masters put N/M on each.
//!
//! The names are chosen once and kept in Redis (the `rediq:partitions` hash: logical name → the
//! names, one per line), so every producer and server agrees on them whatever the cluster
//! looks like later. The count is fixed once declared: a task's partition follows from a hash
//! of its unique key (or of its id) modulo the count, and a unique key must keep landing in
//! the same partition to stay unique. Everything above the broker calls [`Broker::partitions`]
//! and works per physical queue; every script stays in one slot.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use super::conn::{key_slot, slot_ranges, Conn};
use super::keys;
use super::Broker;
use crate::{Error, Result};

/// Most partitions of one queue. A server opens one blocking connection per partition it serves
/// on a cluster, and a partition beyond the number of masters adds no capacity.
pub const MAX_PARTITIONS: u16 = 64;

/// How long a producer keeps the partition map before reading it again: a declaration reaches
/// every producer within this time.
const REFRESH: Duration = Duration::from_secs(5);

/// Between a queue's name and a partition's number (impossible in a user's queue name).
const SEPARATOR: char = ' ';

/// Logical queue name → its partitions (only partitioned queues are listed).
type Map = HashMap<String, Arc<[String]>>;

/// The partition map as last read, shared by a broker's clones.
#[derive(Clone, Default)]
pub(crate) struct PartitionCache(Arc<Shared>);

#[derive(Default)]
struct Shared {
    snapshot: RwLock<Option<(Instant, Arc<Map>)>>,
    /// Held by the one caller that reads the map again; the others use the old one meanwhile.
    refresh: tokio::sync::Mutex<()>,
}

impl PartitionCache {
    fn fresh(&self) -> Option<Arc<Map>> {
        let s = self.0.snapshot.read().unwrap_or_else(|e| e.into_inner());
        s.as_ref()
            .filter(|(at, _)| at.elapsed() < REFRESH)
            .map(|(_, m)| m.clone())
    }

    fn any(&self) -> Option<Arc<Map>> {
        let s = self.0.snapshot.read().unwrap_or_else(|e| e.into_inner());
        s.as_ref().map(|(_, m)| m.clone())
    }

    fn store(&self, map: Arc<Map>) {
        let mut s = self.0.snapshot.write().unwrap_or_else(|e| e.into_inner());
        *s = Some((Instant::now(), map));
    }
}

/// The refusal of a count other than the declared one.
fn fixed(queue: &str, have: usize, count: u16) -> Error {
    Error::validation(
        "partitions",
        format!(
            "queue {queue:?} has {have} partitions already, not {count}; the count is fixed once declared (a unique key must keep its partition), so use a new queue name for another count"
        ),
    )
}

/// The logical queue a physical queue belongs to (itself when it is not a partition).
pub(crate) fn logical(physical: &str) -> &str {
    physical
        .split_once(SEPARATOR)
        .map_or(physical, |(name, _)| name)
}

/// The partition a routing key lands in: FNV-1a (64 bits) modulo the count. Fixed forever:
/// producers of different versions must agree on where a unique key lives.
pub(crate) fn route(partitions: &[String], key: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions.len().max(1) as u64) as usize
}

/// The partitions of `queue` in the order to look for a task routed by `key`: its own first.
pub(crate) fn search_order(partitions: &[String], key: &[u8]) -> Vec<String> {
    let first = route(partitions, key);
    let mut out = Vec::with_capacity(partitions.len());
    out.push(partitions[first].clone());
    out.extend(
        partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, p)| p.clone()),
    );
    out
}

impl Broker {
    /// The physical queues of `queue`: its partitions, or `[queue]` when it has none. From a
    /// map read at most [`REFRESH`] ago.
    pub async fn partitions(&self, queue: &str) -> Result<Arc<[String]>> {
        let map = self.partition_map().await?;
        Ok(map
            .get(queue)
            .cloned()
            .unwrap_or_else(|| Arc::from(vec![queue.to_string()])))
    }

    /// The partition a task routed by `key()` goes to, `None` when `queue` is not partitioned
    /// (the hot path of an enqueue: no key is computed then).
    pub async fn partition_for(
        &self,
        queue: &str,
        key: impl FnOnce() -> Vec<u8>,
    ) -> Result<Option<String>> {
        let map = self.partition_map().await?;
        Ok(map.get(queue).map(|p| p[route(p, &key())].clone()))
    }

    /// The physical queues to look for the task with id `id` in, given logical queues in the
    /// order to try them: each one's partitions, the one its id routes to first, without
    /// repeats.
    pub async fn id_search_order(&self, queues: &[String], id: &[u8]) -> Result<Vec<String>> {
        let map = self.partition_map().await?;
        let mut out: Vec<String> = Vec::new();
        for q in queues {
            let found = match map.get(q) {
                Some(p) => search_order(p, id),
                None => vec![q.clone()],
            };
            for f in found {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }

    /// Every physical queue of the known queues (the registry expanded by the partition map).
    pub async fn physical_queues(&self) -> Result<Vec<String>> {
        let known = self.queues().await?;
        let map = self.partition_map().await?;
        let mut out = Vec::new();
        for q in known {
            match map.get(&q) {
                Some(p) => out.extend(p.iter().cloned()),
                None => out.push(q),
            }
        }
        Ok(out)
    }

    /// The physical queues of each of `queues`, read from Redis now (a server at start).
    pub async fn partitions_now(&self, queues: &[String]) -> Result<Vec<Arc<[String]>>> {
        let map = self.read_partition_map().await?;
        self.parts.store(map.clone());
        Ok(queues
            .iter()
            .map(|q| {
                map.get(q)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(vec![q.clone()]))
            })
            .collect())
    }

    /// Gives `queue` `count` partitions, or checks that it has them already. The count is
    /// fixed once declared: another count is refused. So is partitioning a queue that holds
    /// live tasks (their unique keys and ids are known to partition 0 only) or that a running
    /// server serves (it would not serve the new partitions).
    pub async fn declare_partitions(&self, queue: &str, count: u16) -> Result<Arc<[String]>> {
        if !(1..=MAX_PARTITIONS).contains(&count) {
            return Err(Error::validation(
                "partitions",
                format!("{count} for queue {queue:?} is outside 1..={MAX_PARTITIONS}"),
            ));
        }
        let map = self.read_partition_map().await?;
        self.parts.store(map.clone());
        let have = map.get(queue).map_or(1, |p| p.len());
        if have == usize::from(count) {
            return self.partitions(queue).await;
        }
        if have != 1 {
            return Err(fixed(queue, have, count));
        }
        self.refuse_while_served(queue).await?;
        self.refuse_while_live(queue).await?;
        let names = self.choose_partition_names(queue, count).await?;
        let mut c = self.conn.clone();
        let set: bool = c
            .hset_nx(keys::partitions(), queue, names.join("\n"))
            .await?;
        if set {
            let s = self.stats(queue).await?;
            let groups = self.group_limits(queue).await?;
            // A paused queue stays paused as a whole, and its limits apply to each partition.
            for p in &names[1..] {
                if s.paused {
                    self.pause(p).await?;
                }
                if !s.limits.is_empty() {
                    self.set_limits(p, &s.limits).await?;
                }
                self.copy_group_limits(&groups, p).await?;
            }
        }
        // Another declaration may have won the race: its names stand.
        let map = self.read_partition_map().await?;
        self.parts.store(map.clone());
        match map.get(queue) {
            Some(p) if p.len() == usize::from(count) => Ok(p.clone()),
            Some(p) => Err(fixed(queue, p.len(), count)),
            None => Err(Error::Corrupt {
                key: keys::partitions(),
                reason: format!(
                    "field {queue:?} holds no partition names Rediq can read (HDEL it, then declare the partitions again)"
                ),
            }),
        }
    }

    /// Partitioning a queue with live tasks would split what must stay together: their unique
    /// keys and ids are known to partition 0, while new tasks with the same keys would go to
    /// other partitions.
    async fn refuse_while_live(&self, queue: &str) -> Result<()> {
        let s = self.stats(queue).await?;
        let live = s.pending + s.active + s.delayed + s.retry + s.waiting;
        if live == 0 {
            return Ok(());
        }
        Err(Error::validation(
            "partitions",
            format!(
                "queue {queue:?} holds {live} live task(s) (pending, running, delayed, retrying or waiting); partition a queue before it is used, or once it is drained, so that each unique key and task id is known to one partition only"
            ),
        ))
    }

    /// A running server reads a queue's partitions when it starts: partitioning a queue it
    /// serves would leave the new partitions' tasks unserved by it.
    async fn refuse_while_served(&self, queue: &str) -> Result<()> {
        let serving: Vec<String> = self
            .workers()
            .await?
            .into_iter()
            .filter(|(_, f)| {
                f.get("queues")
                    .is_some_and(|qs| qs.split(',').any(|q| q == queue))
            })
            .map(|(id, _)| id)
            .collect();
        if serving.is_empty() {
            return Ok(());
        }
        Err(Error::validation(
            "partitions",
            format!(
                "queue {queue:?} is served by {} running server(s) ({}); servers read partitions when they start, so stop them, declare the partitions, then start them (the queue's tasks wait in Redis meanwhile)",
                serving.len(),
                serving.join(", ")
            ),
        ))
    }

    async fn partition_map(&self) -> Result<Arc<Map>> {
        if let Some(m) = self.parts.fresh() {
            return Ok(m);
        }
        let guard = match self.parts.0.refresh.try_lock() {
            Ok(g) => g,
            // Another caller is reading it: use the old map meanwhile, if there is one.
            Err(_) => match self.parts.any() {
                Some(m) => return Ok(m),
                None => self.parts.0.refresh.lock().await,
            },
        };
        if let Some(m) = self.parts.fresh() {
            return Ok(m);
        }
        let read = self.read_partition_map().await;
        let out = match (read, self.parts.any()) {
            (Ok(m), _) => {
                self.parts.store(m.clone());
                Ok(m)
            }
            // The map only grows: an older one routes as well as the new one for every queue
            // it lists, so a failed read (its shard failing over) does not stop enqueues to
            // every other shard. It is read again on the next call.
            (Err(e), Some(old)) => {
                tracing::warn!(error = %e, "reading the partition map failed; using the last one read");
                Ok(old)
            }
            (Err(e), None) => Err(e),
        };
        drop(guard);
        out
    }

    async fn read_partition_map(&self) -> Result<Arc<Map>> {
        let mut c = self.conn.clone();
        let raw: HashMap<String, String> = c.hgetall(keys::partitions()).await?;
        let mut map = Map::with_capacity(raw.len());
        for (queue, value) in raw {
            let names: Vec<String> = value.split('\n').map(str::to_string).collect();
            let sound = names.len() >= 2
                && names.len() <= usize::from(MAX_PARTITIONS)
                && names[0] == queue
                && names.iter().skip(1).all(|n| {
                    n.split_once(SEPARATOR)
                        .is_some_and(|(q, rest)| q == queue && !rest.is_empty())
                });
            if !sound {
                // One broken field must not stop every queue: this one is taken as
                // unpartitioned (its partition 0 is served) until it is repaired.
                tracing::error!(
                    key = %keys::partitions(),
                    field = %queue,
                    value = %value,
                    "not a queue's partition names (the queue name, then \"<queue> <n>\" ones, one per line): the queue is treated as unpartitioned until the field is repaired or deleted"
                );
                continue;
            }
            map.insert(queue, Arc::from(names));
        }
        Ok(Arc::new(map))
    }

    /// Partition names for `queue`: on a cluster, each one salted until its slot belongs to the
    /// next master in turn (starting from the master of the queue itself), so the partitions
    /// spread evenly over the masters of the moment.
    async fn choose_partition_names(&self, queue: &str, count: u16) -> Result<Vec<String>> {
        let ranges = match &self.conn {
            Conn::Cluster(_) => slot_ranges(&self.conn).await?,
            _ => Vec::new(),
        };
        let mut masters: Vec<(String, u16)> = ranges.iter().map(|(_, _, m)| m.clone()).collect();
        masters.sort();
        masters.dedup();
        let owner = |name: &str| {
            let slot = i64::from(key_slot(format!("{{{name}}}").as_bytes()));
            ranges
                .iter()
                .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
                .and_then(|(_, _, m)| masters.iter().position(|x| x == m))
        };
        let start = owner(queue).unwrap_or(0);
        let mut names = vec![queue.to_string()];
        for i in 1..usize::from(count) {
            let plain = format!("{queue}{SEPARATOR}{i}");
            if masters.is_empty() {
                names.push(plain);
                continue;
            }
            let want = (start + i) % masters.len();
            // With M masters one salt in M fits; 100,000 tries miss only on a cluster whose
            // slots are spread very unevenly, and then the plain name is as good as any.
            let salted = (0..100_000u32)
                .map(|salt| match salt {
                    0 => plain.clone(),
                    s => format!("{plain}.{s}"),
                })
                .find(|n| owner(n) == Some(want))
                .unwrap_or(plain);
            names.push(salted);
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_names_its_queue() {
        assert_eq!(logical("hot 2.17"), "hot");
        assert_eq!(logical("hot 1"), "hot");
        assert_eq!(logical("hot"), "hot");
    }

    #[test]
    fn routing_is_stable_and_spreads() {
        let parts: Vec<String> = ["q", "q 1", "q 2"].map(String::from).to_vec();
        // Fixed values: a change here moves unique keys between partitions of running systems.
        // FNV-1a 64 of "order-1" is 16061103592383113325.
        assert_eq!(route(&parts, b"order-1"), 0);
        let many: Vec<String> = (0..64).map(|i| format!("q {i}")).collect();
        assert_eq!(route(&many, b"order-1"), 45);
        let mut seen = [0u32; 3];
        for i in 0..3000 {
            seen[route(&parts, format!("key-{i}").as_bytes())] += 1;
        }
        for n in seen {
            assert!((850..1150).contains(&n), "{seen:?}");
        }
        let order = search_order(&parts, b"order-1");
        assert_eq!(order.len(), 3);
        assert_eq!(order[0], parts[route(&parts, b"order-1")]);
    }
}

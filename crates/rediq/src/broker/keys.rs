//! Key names. Every key of a queue carries the `{queue}` hash tag, so all of them live in one
//! Redis Cluster slot and each script touches a single slot. Nothing outside the broker builds a
//! key.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// Prefix of every key Rediq writes.
pub(crate) const PREFIX: &str = "rediq";

/// The keys of one queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    base: String,
    /// The priority bands whose list may hold pending tasks (zset, member = score = band; see
    /// bands.lua). The lists themselves: [`QueueKeys::band`].
    pub bands: String,
    /// Pending members that are no record of ours, on their way to the dead-letter queue
    /// (fetch.lua, bury.lua).
    pub foreign: String,
    /// The pending zset of versions before the band lists (the janitor moves what it holds
    /// into the bands: migrate.lua).
    pub legacy_pending: String,
    pub delayed: String,
    pub retry: String,
    pub dead: String,
    pub completed: String,
    pub leases: String,
    pub token: String,
    pub wake: String,
    pub processed: String,
    pub failed: String,
    /// Flow-control limits (hash; see `limits.rs`).
    pub limits: String,
    /// The rate limit's token bucket (`tokens|Unix ms`, see fetch.lua).
    pub rate: String,
    /// Completions and failed attempts per day, the last 90 days (hash; prelude.lua,
    /// `daily_add`).
    pub daily: String,
    pub dead_trimmed: String,
    pub paused: String,
    pub cancelled: String,
    /// Tasks enqueued, ever, per task type (hash).
    pub enqueued: String,
    pub cron: String,
    pub cron_next: String,
    pub cron_last: String,
    /// Tasks waiting for their dependencies: id → record.
    pub waiting: String,
    /// Of each waiting task: `delay_ms|` then the 16-byte ids of the dependencies not yet met.
    pub needs: String,
    /// Ids of dead-lettered or cancelled tasks → time, kept for the dependency retention.
    pub failed_ids: String,
    /// Dependents of this queue's tasks: id → references (dependent id, queue name length,
    /// queue name), concatenated.
    pub dependents: String,
    /// Outbox: `S`/`F` + 16-byte id of a task that completed / failed and has dependents.
    pub outbox: String,
    /// Facts that arrived before their dependent was written: `S`/`F` + dependent id +
    /// dependency id → time.
    pub early: String,
    /// Outbox entries that could not be delivered: entry → when to try again (Unix ms).
    pub set_aside: String,
    /// Of each set-aside entry: failed attempts `|` first failure (Unix ms) `|` reason.
    pub set_aside_why: String,
    /// The token of the resolver delivering the outbox right now (with a TTL).
    pub outbox_claim: String,
    /// Meta hash of the id index (level, split pointer, entries, generation; see index.lua).
    pub ix_meta: String,
    /// Completion records of versions before the id index: the index of their buckets, their
    /// count and the flush counter (the janitor deletes them, see `Broker::drop_legacy_records`).
    pub legacy: [String; 3],
    /// Ids of finished tasks, oldest first (16 id bytes + 6 bytes of finish time, Unix ms):
    /// how long the index remembers them (see ix_evict.lua).
    pub finished: String,
    /// The group block (groups.lua): the pending tasks of every group and the round robin
    /// across groups, in the order the scripts open it.
    pub groups: [String; GROUP_KEYS],
}

/// Keys of the group block (groups.lua's `groups_open`).
pub(crate) const GROUP_KEYS: usize = 8;

/// The key sets built so far, per queue name: every transition needs one, and building one is
/// ~35 allocations (a tenth of the client's CPU per fetch and acknowledgement when rebuilt on
/// every call). Bounded: past [`KEY_CACHE_MAX`] queue names it starts over.
static KEY_CACHE: LazyLock<Mutex<HashMap<String, Arc<QueueKeys>>>> =
    LazyLock::new(Default::default);

/// Most queue names whose keys are kept (~3 KB each).
const KEY_CACHE_MAX: usize = 10_000;

impl QueueKeys {
    /// The keys of `queue` (shared: built once per queue name).
    pub fn new(queue: &str) -> Arc<QueueKeys> {
        // A poisoned lock only means another thread panicked while inserting a finished value.
        let mut cache = KEY_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cache.get(queue) {
            return k.clone();
        }
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        let k = Arc::new(QueueKeys::build(queue));
        cache.insert(queue.to_string(), k.clone());
        k
    }

    fn build(queue: &str) -> Self {
        let base = format!("{PREFIX}:{{{queue}}}");
        let k = |s: &str| format!("{base}:{s}");
        QueueKeys {
            bands: k("bands"),
            foreign: k("pending:foreign"),
            legacy_pending: k("pending"),
            delayed: k("delayed"),
            retry: k("retry"),
            dead: k("dead"),
            completed: k("completed"),
            leases: k("leases"),
            token: k("token"),
            wake: k("wake"),
            processed: k("stat:processed"),
            failed: k("stat:failed"),
            daily: k("stat:daily"),
            limits: k("limits"),
            rate: k("rate"),
            dead_trimmed: k("stat:dead_trimmed"),
            paused: k("paused"),
            cancelled: k("stat:cancelled"),
            enqueued: k("stat:enqueued"),
            cron: k("cron"),
            cron_next: k("cron:next"),
            cron_last: k("cron:last"),
            waiting: k("waiting"),
            needs: k("deps:needs"),
            failed_ids: k("deps:failed"),
            dependents: k("deps:of"),
            outbox: k("deps:outbox"),
            early: k("deps:early"),
            set_aside: k("deps:aside"),
            set_aside_why: k("deps:aside:why"),
            outbox_claim: k("deps:claim"),
            ix_meta: k("ix"),
            finished: k("finished"),
            legacy: [k("deps:done"), k("deps:done:count"), k("deps:flushes")],
            groups: [
                k("g:tasks"),
                k("g:seq"),
                k("g:turn"),
                k("g:wait"),
                k("g:full"),
                k("g:run"),
                k("g:limits"),
                k("g:rate"),
            ],
            base,
        }
    }

    /// The list of the pending tasks of one priority band (0..=100), oldest first.
    pub fn band(&self, p: u8) -> String {
        format!("{}:pending:{p}", self.base)
    }

    /// The active hash of one server: the tasks it holds under its lease.
    pub fn active(&self, server: &str) -> String {
        format!("{}:active:{server}", self.base)
    }

    /// The receipt of one server's last acknowledgement call on this queue (see complete.lua).
    pub fn ack_receipt(&self, server: &str) -> String {
        format!("{}:ack:{server}", self.base)
    }

    /// One bucket of the id index, written straight into a command (no `String`: a call
    /// passes two of them per id).
    pub fn bucket(&self, gen: u64, bucket: u64) -> BucketKey<'_> {
        BucketKey {
            base: &self.base,
            gen,
            bucket,
        }
    }

    /// One bucket of the id index.
    pub fn ix_bucket(&self, gen: u64, bucket: u64) -> String {
        format!("{}:ix:{gen}:{bucket}", self.base)
    }

    /// The done hash of an index generation: the completed ids it remembers (index.lua). Its
    /// name shares the buckets' prefix, so dropping a generation drops it too.
    pub fn ix_done(&self, gen: u64) -> String {
        format!("{}:ix:{gen}:done", self.base)
    }

    /// Every key of the queue whose name is fixed (the rest: band lists, active hashes and
    /// receipts per server, index buckets and done hashes per generation, unique-key locks).
    pub fn fixed(&self) -> [&str; 36 + GROUP_KEYS] {
        [
            &self.bands,
            &self.foreign,
            &self.legacy_pending,
            &self.delayed,
            &self.retry,
            &self.dead,
            &self.completed,
            &self.leases,
            &self.token,
            &self.wake,
            &self.processed,
            &self.failed,
            &self.daily,
            &self.limits,
            &self.rate,
            &self.dead_trimmed,
            &self.paused,
            &self.cancelled,
            &self.enqueued,
            &self.cron,
            &self.cron_next,
            &self.cron_last,
            &self.waiting,
            &self.needs,
            &self.failed_ids,
            &self.dependents,
            &self.outbox,
            &self.early,
            &self.set_aside,
            &self.set_aside_why,
            &self.outbox_claim,
            &self.ix_meta,
            &self.finished,
            &self.legacy[0],
            &self.legacy[1],
            &self.legacy[2],
            &self.groups[0],
            &self.groups[1],
            &self.groups[2],
            &self.groups[3],
            &self.groups[4],
            &self.groups[5],
            &self.groups[6],
            &self.groups[7],
        ]
    }

    /// The lock of a unique key.
    pub fn unique(&self, key: &str) -> String {
        format!("{}:unique:{key}", self.base)
    }
}

/// See [`QueueKeys::bucket`].
pub(crate) struct BucketKey<'a> {
    base: &'a str,
    gen: u64,
    bucket: u64,
}

impl redis::ToRedisArgs for BucketKey<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        // Writing into the command's buffer cannot fail.
        let _ = write!(
            out.writer_for_next_arg(),
            "{}:ix:{}:{}",
            self.base,
            self.gen,
            self.bucket
        );
    }
}

/// The set of known queue names.
pub(crate) fn queues() -> String {
    format!("{PREFIX}:queues")
}

/// Hash of the partitioned queues: logical queue name → the names of its partitions, one per
/// line (see `partitions.rs`).
pub(crate) fn partitions() -> String {
    format!("{PREFIX}:partitions")
}

/// Pub/sub channel on which cancellations of running tasks are announced.
pub(crate) fn cancel_channel() -> String {
    format!("{PREFIX}:cancel")
}

/// The set of queues that have periodic entries.
pub(crate) fn cron_queues() -> String {
    format!("{PREFIX}:cron:queues")
}

/// Sorted set of live servers, scored by their last heartbeat (Unix ms).
pub(crate) fn workers() -> String {
    format!("{PREFIX}:workers")
}

/// A server's registration hash.
pub(crate) fn worker(id: &str) -> String {
    format!("{PREFIX}:worker:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::ToRedisArgs;

    #[test]
    fn a_bucket_key_written_into_a_command_is_its_name() {
        let k = QueueKeys::new("emails");
        assert_eq!(
            k.bucket(2, 77).to_redis_args(),
            vec![k.ix_bucket(2, 77).into_bytes()]
        );
        assert!(Arc::ptr_eq(&k, &QueueKeys::new("emails")), "built once");
    }

    #[test]
    fn every_queue_key_shares_the_hash_tag() {
        let k = QueueKeys::new("emails");
        let dynamic = [
            k.band(0),
            k.band(100),
            k.active("host:1:ab"),
            k.ack_receipt("host:1:ab"),
            k.unique("x"),
            k.ix_bucket(2, 77),
            k.ix_done(2),
        ];
        for key in k
            .fixed()
            .into_iter()
            .chain(dynamic.iter().map(String::as_str))
        {
            assert!(key.starts_with("rediq:{emails}:"), "{key}");
        }
        let distinct: std::collections::HashSet<&str> = k.fixed().into_iter().collect();
        assert_eq!(
            distinct.len(),
            k.fixed().len(),
            "no fixed key is listed twice"
        );
    }
}

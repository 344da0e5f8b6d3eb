//! The one door to Redis.
//!
//! The broker owns every key name ([`keys`]), the record encoding ([`record`]) and the Lua scripts
//! (`scripts/*.lua`). Each state change of a task is one script, so it is atomic: a crash between
//! any two lines of Rust leaves every task in exactly one state. The rest of the crate calls the
//! typed methods below and never sees a key.
//!
//! ```text
//!             enqueue                 fetch                 complete
//!  producer ──────────▶ pending ─────────────▶ active ─────────────────▶ (gone / completed)
//!              │          ▲  ▲                 │ │ │
//!              │ delay    │  │ requeue         │ │ └── kill ──▶ dead
//!              ▼          │  │ (shutdown,      │ └─ retry ─▶ retry ──┐
//!           delayed ──────┘  │  lease expired) │                     │
//!              forward       └─────────────────┘          forward    │
//!                         pending ◀──────────────────────────────────┘
//! ```
//!
//! Scripts take all the keys they touch in KEYS, all under one `{queue}` hash tag, and read time
//! from Redis (`TIME`) so that no client clock decides when a task is due or a lease has expired.
//!
//! This file holds the connection and the script registry; the transitions of a task are in
//! `transitions.rs`, the leases around them in `leases.rs`, the pending band lists in
//! `bands.rs`, the id index in `index.rs`, script calls in `call.rs`, reading and steering whole
//! queues (listings, pause, flush, the registry) in `admin.rs`, their counts in `stats.rs`, dependencies in
//! `deps.rs` and `outbox.rs`, periodic entries in `cron.rs`, cancellation in `cancel.rs`,
//! setting garbage aside in `garbage.rs`, which physical queues (partitions) make up a queue
//! in `partitions.rs`, searching records in bounded steps in `find.rs`, and per-day counts and
//! memory readings in `usage.rs`.

mod admin;
mod bands;
mod call;
pub(crate) mod cancel;
mod conn;
mod sentinel;
mod topology;
pub(crate) use topology::{redis_options, Mode, Target};
pub(crate) mod cron;
pub(crate) mod deps;
mod find;
mod garbage;
mod index;
pub(crate) use deps::MAX_DEPENDENCIES;
mod groups;
pub(crate) mod keys;
mod leases;
pub use groups::{GroupInfo, GroupLimits};
mod limits;
pub use limits::{QueueLimits, RateLimit};
pub(crate) mod outbox;
mod partitions;
pub(crate) use partitions::logical;
pub(crate) mod record;
mod stats;
mod transitions;
mod usage;
pub use admin::{FlushCounts, TaskState};
pub(crate) use leases::{Expired, Waited};
pub use stats::QueueStats;
pub(crate) use transitions::{Ack, EnqueueMode, Fetched, Held, NewTask, NotWritten, Waiting};
pub(crate) use usage::DAILY_KEEP;
// What the broker's own test modules (`use super::*`) reach for.
use leases::{parse_active, token_text};
#[cfg(test)]
use {keys::QueueKeys, redis::AsyncCommands, transitions::Requeue};

use std::sync::LazyLock;
use std::time::Duration;

use call::Lua;

use crate::{Error, Result};

pub(crate) use conn::BlockingConnection;

/// The longest blocking wait on a [`Broker::blocking_connection`].
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(5);

struct Scripts {
    enqueue: Lua,
    fetch: Lua,
    complete: Lua,
    retry: Lua,
    kill: Lua,
    requeue: Lua,
    forward: Lua,
    extend: Lua,
    expired: Lua,
    janitor: Lua,
    rerun: Lua,
    flush: Lua,
    cron_fire: Lua,
    cron_set: Lua,
    rewake: Lua,
    cancel: Lua,
    dep_register: Lua,
    dep_enqueue: Lua,
    dep_satisfy: Lua,
    dep_fail: Lua,
    dep_aside: Lua,
    dep_begin: Lua,
    dep_claim: Lua,
    migrate: Lua,
    bury: Lua,
    resume: Lua,
    ix_lookup: Lua,
    ix_evict: Lua,
    g_prune: Lua,
    g_unhold: Lua,
    delete: Lua,
}

/// A script that moves or removes a task, with the shared prelude (`scripts/prelude.lua`: the
/// helpers that make a refusal name its key) in front, and the helpers it uses after it:
/// `bands.lua` (pending band lists) and `index.lua` (the id index).
macro_rules! guarded {
    ($($part:literal),*) => {
        Lua::new(concat!(
            include_str!("scripts/prelude.lua"),
            $(include_str!(concat!("scripts/", $part))),*
        ))
    };
}

/// A guarded script that also uses the id index (scripts/index.lua).
macro_rules! indexed {
    ($file:literal) => {
        guarded!("index.lua", $file)
    };
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: guarded!("groups.lua", "bands.lua", "index.lua", "enqueue.lua"),
    fetch: guarded!("groups.lua", "bands.lua", "fetch.lua"),
    complete: guarded!("groups.lua", "index.lua", "complete.lua"),
    retry: guarded!("groups.lua", "retry.lua"),
    kill: guarded!("groups.lua", "index.lua", "kill.lua"),
    requeue: guarded!("groups.lua", "bands.lua", "requeue.lua"),
    forward: guarded!("groups.lua", "bands.lua", "forward.lua"),
    extend: Lua::new(include_str!("scripts/extend.lua")),
    expired: Lua::new(include_str!("scripts/expired.lua")),
    janitor: guarded!("janitor.lua"),
    rerun: guarded!("groups.lua", "bands.lua", "index.lua", "rerun.lua"),
    flush: guarded!("groups.lua", "bands.lua", "flush.lua"),
    cron_fire: guarded!("groups.lua", "bands.lua", "index.lua", "cron_fire.lua"),
    cron_set: Lua::new(include_str!("scripts/cron_set.lua")),
    rewake: guarded!("rewake.lua"),
    cancel: guarded!("groups.lua", "index.lua", "cancel.lua"),
    dep_register: indexed!("dep_register.lua"),
    dep_enqueue: guarded!("groups.lua", "bands.lua", "index.lua", "dep_enqueue.lua"),
    dep_satisfy: guarded!("groups.lua", "bands.lua", "dep_satisfy.lua"),
    dep_fail: indexed!("dep_fail.lua"),
    dep_aside: guarded!("dep_aside.lua"),
    dep_begin: guarded!("dep_begin.lua"),
    dep_claim: guarded!("dep_claim.lua"),
    migrate: guarded!("groups.lua", "bands.lua", "migrate.lua"),
    bury: guarded!("bury.lua"),
    resume: guarded!("resume.lua"),
    ix_lookup: indexed!("ix_lookup.lua"),
    ix_evict: indexed!("ix_evict.lua"),
    g_prune: Lua::new(include_str!("scripts/g_prune.lua")),
    g_unhold: Lua::new(include_str!("scripts/g_unhold.lua")),
    delete: guarded!("delete.lua"),
});

/// Most tasks sent to one script call; larger batches are split (Lua's `unpack` has a limit).
pub(crate) const MAX_SCRIPT_BATCH: usize = 1000;

/// Limits of the dead-letter queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeadLimits {
    pub max_count: u64,
    pub max_age: Duration,
}

impl Default for DeadLimits {
    /// The server's defaults: 100,000 tasks, 90 days.
    fn default() -> Self {
        DeadLimits {
            max_count: 100_000,
            max_age: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Connection to Redis plus the typed transitions.
#[derive(Clone)]
pub(crate) struct Broker {
    conn: conn::Conn,
    /// Where `conn` came from, for another one like it ([`Broker::detached`]).
    source: conn::Source,
    /// The URL, masked, for messages.
    url: String,
    /// How long completion and failure records of tasks are kept for dependents.
    deps: DepLimits,
    /// Notified when a transition wrote an outbox entry (the resolver then delivers it).
    outbox: std::sync::Arc<tokio::sync::Notify>,
    /// The last-read shape of each queue's id index.
    ix: index::IxCache,
    /// The priority bands seen in use per queue.
    bands: bands::BandCache,
    /// Notified when a completion found more finished ids than the cap (the janitor evicts).
    finished: std::sync::Arc<tokio::sync::Notify>,
    /// Replicas an enqueue waits for (`WAIT`), and how long; `None` = not at all.
    durability: Option<(u32, Duration)>,
    /// The partitioned queues, as last read.
    parts: partitions::PartitionCache,
    /// The servers holding leases per queue, as the last limited fetch named them.
    holders: limits::HolderCache,
}

/// How long completion records are kept, so a task may depend on one that already completed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DepLimits {
    /// At least [`MIN_DEP_RETENTION`].
    pub retention: Duration,
    /// Most completion records kept per queue (the oldest go first); `u64::MAX` = no cap.
    pub max_records: u64,
}

/// How many finished task ids the index of a queue remembers by default: ~132 bytes each for a
/// completed one (index entry, done-hash entry and finished-list entry), so at most ~13 MB per
/// queue whatever the throughput.
pub(crate) const DEFAULT_FINISHED_MAX: u64 = 100_000;

/// The shortest dependency retention: a dependent that found its dependency queued a moment
/// ago must find its completion record if it completed meanwhile.
pub(crate) const MIN_DEP_RETENTION: Duration = Duration::from_secs(60);

/// Early facts (news for a dependent that is still being written) live at least this long.
const EARLY_FACTS_FLOOR: Duration = Duration::from_secs(3600);

impl Default for DepLimits {
    fn default() -> Self {
        DepLimits {
            retention: Duration::from_secs(24 * 3600),
            max_records: DEFAULT_FINISHED_MAX,
        }
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("url", &self.url).finish()
    }
}

impl Broker {
    /// Connects to one Redis server, failing fast with the (masked) URL when it does not answer.
    #[cfg(test)]
    pub async fn connect(url: &str) -> Result<Broker> {
        Broker::open(&Target {
            url: url.to_string(),
            ..Target::default()
        })
        .await
    }

    /// Connects to the Redis a builder named, in its mode (standalone, cluster, sentinel),
    /// refusing a mode that does not match the server with one sentence.
    pub async fn open(target: &Target) -> Result<Broker> {
        let (conn, source) = target.open().await?;
        Ok(Broker {
            conn,
            source,
            url: target.masked(),
            deps: DepLimits::default(),
            outbox: Default::default(),
            ix: Default::default(),
            bands: Default::default(),
            finished: Default::default(),
            durability: None,
            parts: Default::default(),
            holders: Default::default(),
        })
    }

    /// Makes every enqueue wait until `replicas` replicas hold it, up to `timeout` (a client's
    /// setting; before it is cloned).
    pub fn set_durability(&mut self, durability: Option<(u32, Duration)>) {
        self.durability = durability;
    }

    /// With a durability setting, after a call that wrote nothing (an enqueue that found its
    /// task known already): `WAIT`s on the queue's connection and node. Enqueue scripts wait in
    /// their own round trip instead (`Call::invoke_waiting`), which covers their very write.
    pub async fn replicated(&self, queue: &str) -> Result<()> {
        let Some((wanted, timeout)) = self.durability else {
            return Ok(());
        };
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(wanted).arg(timeout.as_millis().max(1) as u64);
        let key = keys::QueueKeys::new(queue).wake.clone();
        let reached = match self.conn.on_slot_of(cmd, key.as_bytes()).await? {
            redis::Value::Int(n) => n,
            _ => 0,
        };
        self.check_replicas(queue, reached)
    }

    /// [`Error::NotReplicated`] when fewer replicas than the durability setting asks for
    /// confirmed (the tasks stay written on the master).
    fn check_replicas(&self, queue: &str, reached: i64) -> Result<()> {
        let Some((wanted, timeout)) = self.durability else {
            return Ok(());
        };
        let reached = reached.max(0) as u32;
        if reached < wanted {
            return Err(Error::NotReplicated {
                queue: logical(queue).to_string(),
                reached,
                wanted,
                timeout,
            });
        }
        Ok(())
    }

    /// A broker with its own connection, whose I/O runs on the runtime this is called on: for
    /// a service on its own thread (the heartbeat), so that its Redis traffic does not wait for
    /// a shared runtime whose threads handlers may block.
    pub async fn detached(&self) -> Result<Broker> {
        let conn = self
            .source
            .connect()
            .await
            .map_err(|source| Error::Connection {
                url: self.url.clone(),
                source,
            })?;
        Ok(Broker {
            conn,
            source: self.source.clone(),
            url: self.url.clone(),
            deps: self.deps,
            outbox: self.outbox.clone(),
            ix: self.ix.clone(),
            bands: self.bands.clone(),
            finished: self.finished.clone(),
            durability: self.durability,
            parts: self.parts.clone(),
            holders: self.holders.clone(),
        })
    }

    /// Sets how long completion records are kept (a server's setting; before it is cloned).
    pub fn set_dep_limits(&mut self, limits: DepLimits) {
        self.deps = limits;
    }

    /// Resolves when a transition made through this broker (or a clone) wrote an outbox entry.
    pub async fn outbox_written(&self) {
        self.outbox.notified().await;
    }

    fn note_outbox(&self) {
        self.outbox.notify_one();
    }

    /// Waits until a completion found a finished list longer than the cap.
    pub async fn finished_over_cap(&self) {
        self.finished.notified().await;
    }

    fn note_finished(&self) {
        self.finished.notify_one();
    }

    /// A dedicated connection for blocking commands on `queues`' wake markers: a blocking
    /// command on the shared multiplexed connection would delay every command queued behind it.
    /// On a cluster it reaches the master of the first queue's slot, so each queue there needs
    /// its own ([`Broker::blocks_per_queue`]). Its waits are short (at most [`MAX_BLOCK`]), so
    /// a response timeout a little above that tells a silently dropped connection from a long
    /// wait: without it a fetcher could hang forever while its heartbeat keeps the server
    /// looking alive.
    pub async fn blocking_connection(&self, queues: &[String]) -> Result<BlockingConnection> {
        let key = queues
            .first()
            .map(|q| keys::QueueKeys::new(q).wake.clone())
            .unwrap_or_default();
        self.source
            .blocking(&self.conn, &key)
            .await
            .map_err(|source| Error::Connection {
                url: self.url.clone(),
                source,
            })
    }

    /// Whether a blocking connection still reaches the master followed now (see
    /// `Source::is_current`); a stale one is dropped before its next wait.
    pub fn blocking_is_current(&self, c: &BlockingConnection) -> bool {
        self.source.is_current(c)
    }

    /// Grows each time the master followed moves (Sentinel; always 0 elsewhere): dedicated
    /// connections opened before a move (the cancel subscription) are opened again.
    pub fn topology_generation(&self) -> u64 {
        self.source.generation()
    }

    /// Whether a blocking wait covers one queue only (on a cluster), not all of a server's.
    pub fn blocks_per_queue(&self) -> bool {
        self.source.blocks_per_queue()
    }

    /// Answers PING.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }
}

#[cfg(test)]
mod bands_tests;
#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod deps_faults_tests;
#[cfg(test)]
mod faults_tests;
#[cfg(test)]
mod groups_tests;
#[cfg(test)]
mod index_tests;
#[cfg(test)]
pub(crate) mod test_util;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wait_tests;

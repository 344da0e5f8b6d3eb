//! Periodic entries. Each lives with its queue (`{queue}` hash tag): the entry itself in
//! `cron`, its next tick in `cron:next` (absent while paused), the last tick that fired in
//! `cron:last`. Firing a tick is `cron_fire.lua`: compare-and-set on the next tick, so across any
//! number of schedulers each tick fires once.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::keys::{self, QueueKeys};
use super::{Broker, SCRIPTS};
use crate::{Error, Result};

/// A periodic entry as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredEntry {
    /// The schedule expression.
    #[serde(rename = "e")]
    pub expr: String,
    /// Record of the template task; every firing enqueues a copy with a fresh id.
    #[serde(rename = "r", with = "serde_bytes")]
    pub template: Vec<u8>,
    #[serde(rename = "p", default)]
    pub paused: bool,
}

impl StoredEntry {
    fn encode(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(self).map_err(|e| Error::Serialization(e.to_string()))
    }

    fn decode(raw: &[u8]) -> Option<StoredEntry> {
        rmp_serde::from_slice(raw).ok()
    }
}

/// A listed entry: id, entry, last fired tick, next tick.
pub(crate) type ListedEntry = (String, StoredEntry, Option<u64>, Option<u64>);

/// Outcome of [`Broker::cron_fire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fired {
    /// This call fired the tick.
    Now,
    /// Another scheduler did (or the entry was paused or removed).
    Claimed,
    /// A missed tick passed over (skip policy).
    Skipped,
    /// Fired, but the task's unique key is held: nothing enqueued.
    Duplicate,
}

impl Broker {
    /// Redis' clock, in Unix ms: the one clock all schedulers share.
    pub async fn time_ms(&self) -> Result<u64> {
        let mut c = self.conn.clone();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Creates or updates an entry. An existing entry keeps its paused state, and, when its
    /// expression is unchanged, its next tick (so re-registering at every start-up neither
    /// loses a due tick nor the missed-tick policy).
    pub async fn cron_put(
        &self,
        queue: &str,
        id: &str,
        expr: &str,
        template: &[u8],
        next: Option<u64>,
    ) -> Result<()> {
        let mut c = self.conn.clone();
        // Before the entry: a crash in between leaves a known queue without entries, harmless.
        let _: () = c.sadd(keys::cron_queues(), queue).await?;
        self.cron_update(queue, id, |old, stored_next| {
            let paused = old.is_some_and(|e| e.paused);
            let next = match (old, stored_next) {
                (Some(o), Some(n)) if o.expr == expr => Some(n),
                _ => next,
            };
            let entry = StoredEntry {
                expr: expr.to_string(),
                template: template.to_vec(),
                paused,
            };
            Some((entry, next.filter(|_| !paused)))
        })
        .await
        .map(|_| ())
    }

    /// Reads an entry and its next tick, lets `decide` compute the new ones from them (`None`:
    /// leave it alone), and writes them with `cron_set.lua`, which refuses when either changed
    /// since the read (a tick fired meanwhile); then it reads again. Returns whether it wrote.
    async fn cron_update<F>(&self, queue: &str, id: &str, mut decide: F) -> Result<bool>
    where
        F: FnMut(Option<&StoredEntry>, Option<u64>) -> Option<(StoredEntry, Option<u64>)>,
    {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        // Each refusal means a tick fired or another writer won in between; both are rare, so
        // a handful of rounds always suffices in practice.
        for _ in 0..32 {
            let (raw, stored_next): (Option<Vec<u8>>, Option<u64>) = redis::pipe()
                .hget(&k.cron, id)
                .zscore(&k.cron_next, id)
                .query_async(&mut c)
                .await?;
            let old = raw.as_deref().and_then(StoredEntry::decode);
            let Some((entry, next)) = decide(old.as_ref(), stored_next) else {
                return Ok(false);
            };
            let written: i64 = SCRIPTS
                .cron_set
                .key(&k.cron)
                .key(&k.cron_next)
                .arg(id)
                .arg(raw.as_deref().unwrap_or_default())
                .arg(stored_next.map(|n| n.to_string()).unwrap_or_default())
                .arg(entry.encode()?)
                .arg(next.map(|n| n.to_string()).unwrap_or_default())
                .invoke_async(&mut c)
                .await?;
            if written == 1 {
                return Ok(true);
            }
        }
        Err(Error::validation(
            "cron",
            format!(
                "entry {id:?} in queue {queue:?} kept changing while it was written; try again"
            ),
        ))
    }

    /// Queues that have periodic entries.
    pub async fn cron_queues(&self) -> Result<Vec<String>> {
        let mut c = self.conn.clone();
        Ok(c.smembers(keys::cron_queues()).await?)
    }

    /// Entries of `queue` whose next tick is at or before `now_ms`: (id, tick, entry).
    pub async fn cron_due(
        &self,
        queue: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, u64, Option<StoredEntry>)>> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let due: Vec<(String, u64)> = c
            .zrangebyscore_limit_withscores(&k.cron_next, "-inf", now_ms, 0, limit as isize)
            .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&String> = due.iter().map(|(id, _)| id).collect();
        let raw: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&k.cron)
            .arg(&ids)
            .query_async(&mut c)
            .await?;
        Ok(due
            .into_iter()
            .zip(raw)
            .map(|((id, tick), r)| (id, tick, r.as_deref().and_then(StoredEntry::decode)))
            .collect())
    }

    /// Fires (or, with `fire: false`, passes over) one tick of an entry.
    #[allow(clippy::too_many_arguments)]
    pub async fn cron_fire(
        &self,
        queue: &str,
        id: &str,
        tick: u64,
        next: Option<u64>,
        record: &[u8],
        unique: Option<(&str, u64)>,
        fire: bool,
        task_type: &str,
    ) -> Result<Fired> {
        let k = QueueKeys::new(queue);
        let set = super::bands::band(super::bands::band_of(record));
        let r: i64 = self
            .with_index_and_bands(
                queue,
                &k,
                &SCRIPTS.cron_fire,
                &[super::record::raw_id(record)],
                1,
                Some(super::bands::Bands::Exact(set)),
                |inv| {
                    inv.key(&k.cron_next)
                        .key(&k.cron_last)
                        .key(&k.wake)
                        .key(&k.enqueued);
                    if let Some((key, _)) = unique {
                        inv.key(k.unique(key));
                    }
                    inv.arg(id)
                        .arg(tick)
                        .arg(next.unwrap_or(0))
                        .arg(record)
                        .arg(unique.map_or(0, |(_, ttl)| ttl))
                        .arg(if fire { "1" } else { "0" })
                        .arg(task_type);
                },
            )
            .await?;
        Ok(match r {
            1 => Fired::Now,
            2 => Fired::Skipped,
            3 => Fired::Duplicate,
            _ => Fired::Claimed,
        })
    }

    /// Every entry of `queue` with its last and next tick.
    pub async fn cron_list(&self, queue: &str) -> Result<Vec<ListedEntry>> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        type Ticks = Vec<(String, u64)>;
        let (entries, last, next): (Vec<(String, Vec<u8>)>, Ticks, Ticks) = redis::pipe()
            .hgetall(&k.cron)
            .hgetall(&k.cron_last)
            .zrange_withscores(&k.cron_next, 0, -1)
            .query_async(&mut c)
            .await?;
        let find = |v: &[(String, u64)], id: &str| v.iter().find(|(i, _)| i == id).map(|x| x.1);
        let mut out: Vec<ListedEntry> = entries
            .into_iter()
            .filter_map(|(id, raw)| {
                let e = StoredEntry::decode(&raw)?;
                let (l, n) = (find(&last, &id), find(&next, &id));
                Some((id, e, l, n))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Pauses (`next: None`) or resumes (`next: Some(tick)`) an entry; `false` if unknown.
    /// Resuming an entry that is not paused keeps its next tick.
    pub async fn cron_set_paused(&self, queue: &str, id: &str, next: Option<u64>) -> Result<bool> {
        self.cron_update(queue, id, |old, stored_next| {
            let old = old?;
            let next = match next {
                Some(_) if !old.paused => stored_next,
                other => other,
            };
            let entry = StoredEntry {
                paused: next.is_none(),
                ..old.clone()
            };
            Some((entry, next))
        })
        .await
    }

    /// Removes an entry; `false` if unknown.
    pub async fn cron_remove(&self, queue: &str, id: &str) -> Result<bool> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let (n, _, _): (u64, u64, u64) = redis::pipe()
            .atomic()
            .hdel(&k.cron, id)
            .zrem(&k.cron_next, id)
            .hdel(&k.cron_last, id)
            .query_async(&mut c)
            .await?;
        Ok(n == 1)
    }
}

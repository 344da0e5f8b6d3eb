//! The id index of each queue (scripts/index.lua): which task ids the queue knows, so that an
//! enqueue of a known id writes nothing (it is idempotent) and a dependency is found in O(1)
//! whatever the backlog.
//!
//! The index lives in hash buckets that grow by linear hashing. Scripts may only touch keys
//! passed in `KEYS`, so this side computes the bucket keys of every id from the level,
//! generation and split pointer it last read (kept per queue in [`IxCache`]); a script that
//! finds them out of date answers `IXSTALE <level> <generation> <split>` before it reads or
//! writes anything, and [`Broker::with_index`] calls it again with the new values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::{AsyncCommands, FromRedisValue};

use super::call::{Call, Lua};

use super::bands::{self, Bands};
use super::keys::QueueKeys;
use super::{Broker, SCRIPTS};
use crate::{Error, Existing, Result};

/// What a queue's index looked like when last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IxMeta {
    pub level: u32,
    pub split: u64,
    pub gen: u64,
}

/// The level of a new index (index.lua's `IX_MIN_LEVEL`).
pub(crate) const MIN_LEVEL: u32 = 6;

impl Default for IxMeta {
    fn default() -> Self {
        IxMeta {
            level: MIN_LEVEL,
            split: 0,
            gen: 0,
        }
    }
}

/// The last [`IxMeta`] seen per queue.
#[derive(Debug, Clone, Default)]
pub(crate) struct IxCache(Arc<Mutex<HashMap<String, IxMeta>>>);

impl IxCache {
    fn get(&self, queue: &str) -> IxMeta {
        // A poisoned lock only means another thread panicked while copying a Copy value.
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(queue).copied().unwrap_or_default()
    }

    fn set(&self, queue: &str, meta: IxMeta) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(queue.to_string(), meta);
    }
}

/// The hash of an id, as index.lua computes it: bytes 1..4 XOR bytes 11..14 (1-based), each
/// read big-endian (random bytes of a UUIDv7 or v4; the fast-moving time of a UUIDv1, whose
/// last six bytes are the host's MAC address).
pub(crate) fn ix_hash(id: &[u8]) -> u64 {
    let word = |at: usize| {
        let mut b = [0u8; 4];
        for (j, slot) in b.iter_mut().enumerate() {
            *slot = id.get(at + j).copied().unwrap_or(0);
        }
        u32::from_be_bytes(b)
    };
    u64::from(word(0) ^ word(10))
}

/// How many split pairs a call that adds `adds` ids passes: its own entries call for one split
/// per 40; the rest is slack for the splits other callers made since this one read the pointer
/// (with four producers sending 1,000 ids each, one per 20 left the splits behind: 50,000 ids
/// ended in buckets of ~73 instead of ~40).
pub(crate) fn split_window(adds: usize) -> usize {
    if adds == 0 {
        0
    } else {
        8 + adds / 8
    }
}

/// Appends the index block (see index.lua) for `ids` to a script invocation.
fn block(inv: &mut Call, k: &QueueKeys, m: IxMeta, ids: &[&[u8]], window: usize) {
    inv.key(&k.ix_meta);
    inv.key(k.ix_done(m.gen));
    let lo = 1u64 << m.level;
    for id in ids {
        let h = ix_hash(id);
        inv.key(k.bucket(m.gen, h % lo));
        inv.key(k.bucket(m.gen, h % (lo * 2)));
    }
    // Splits past 2^level belong to the next level, whose keys a caller cannot know yet.
    let window = (window as u64).min(lo.saturating_sub(m.split)) as usize;
    for j in 0..window as u64 {
        inv.key(k.bucket(m.gen, m.split + j));
        inv.key(k.bucket(m.gen, m.split + j + lo));
    }
    inv.arg(format!(
        "{}|{}|{}|{}|{}",
        m.level,
        m.gen,
        ids.len(),
        window,
        m.split
    ));
}

/// Reads `IXSTALE <level> <generation> <split>`.
fn parse_stale(e: &redis::RedisError) -> Option<IxMeta> {
    stale_meta(e.code(), e.detail())
}

fn stale_meta(code: Option<&str>, detail: Option<&str>) -> Option<IxMeta> {
    if code != Some("IXSTALE") {
        return None;
    }
    let mut it = detail?.split_whitespace();
    Some(IxMeta {
        level: it.next()?.parse().ok()?,
        gen: it.next()?.parse().ok()?,
        split: it.next()?.parse().ok()?,
    })
}

impl Broker {
    /// Keeps the shape a script reported after it ran ("<level> <generation> <split>"), so the
    /// next call's split keys start where the splits are.
    pub(super) fn note_index_shape(&self, queue: &str, shape: &[u8]) {
        let text = String::from_utf8_lossy(shape);
        if let Some(m) = stale_meta(Some("IXSTALE"), Some(&text)) {
            self.ix.set(queue, m);
        }
    }

    /// Runs a script that ends with an index block for `ids` (`build` adds the script's own
    /// keys and arguments first), calling it again while the index it was built for is out of
    /// date. `adds`: how many of the ids the call may add (it then passes split keys).
    pub(super) async fn with_index<T: FromRedisValue>(
        &self,
        queue: &str,
        k: &QueueKeys,
        script: &Lua,
        ids: &[&[u8]],
        adds: usize,
        build: impl Fn(&mut Call),
    ) -> Result<T> {
        self.with_index_and_bands(queue, k, script, ids, adds, None, build)
            .await
    }

    /// [`Broker::with_index`] for a script that also takes a band block (bands.rs), which goes
    /// right before the index block; it is called again with the bands it reports missing.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn with_index_and_bands<T: FromRedisValue>(
        &self,
        queue: &str,
        k: &QueueKeys,
        script: &Lua,
        ids: &[&[u8]],
        adds: usize,
        bands: Option<Bands>,
        build: impl Fn(&mut Call),
    ) -> Result<T> {
        let mut c = self.conn.clone();
        let mut extra = 0;
        // A level changes log2(n) times in a queue's life, so a few rounds always suffice; the
        // bound only keeps a broken meta hash from looping forever.
        for _ in 0..16 {
            let m = self.ix.get(queue);
            let mut inv = script.prepare_invoke();
            build(&mut inv);
            let set = bands.map(|b| self.band_set(queue, b) | extra);
            if let Some(set) = set {
                bands::block(&mut inv, k, set);
            }
            block(&mut inv, k, m, ids, split_window(adds));
            // A client with a durability setting waits for its replicas in the same round trip.
            let reply = match self.durability {
                None => inv.invoke_async::<T>(&mut c).await.map(|v| (v, None)),
                Some((n, t)) => inv
                    .invoke_waiting::<T>(&mut c, n, t)
                    .await
                    .map(|(v, reached)| (v, Some(reached))),
            };
            match reply {
                Err(e) => {
                    if let Some(fresh) = parse_stale(&e) {
                        self.ix.set(queue, fresh);
                        continue;
                    }
                    match set.and_then(|set| self.missing_after(queue, set, &e)) {
                        Some(missing) => extra |= missing,
                        None => return Err(e.into()),
                    }
                }
                Ok((v, reached)) => {
                    if let Some(reached) = reached {
                        self.check_replicas(queue, reached)?;
                    }
                    return Ok(v);
                }
            }
        }
        Err(Error::Corrupt {
            key: k.ix_meta.clone(),
            reason: "the index kept changing under 16 calls in a row".into(),
        })
    }
}

impl Broker {
    /// What `queue` knows of the task `id` (16 bytes): `None` when nothing.
    pub async fn known(&self, queue: &str, id: &[u8]) -> Result<Option<Existing>> {
        let k = QueueKeys::new(queue);
        let states: Vec<Vec<u8>> = self
            .with_index(queue, &k, &SCRIPTS.ix_lookup, &[id], 0, |inv| {
                inv.key(&k.failed_ids).arg(id);
            })
            .await?;
        Ok(states.first().and_then(|s| existing(s)))
    }
}

impl Broker {
    /// Forgets the finished ids of `queue` past the dependency retention and beyond the
    /// newest `max_records` (scripts/ix_evict.lua). Returns how many went.
    pub async fn evict_finished(&self, queue: &str) -> Result<u64> {
        const ROUND: isize = 500;
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let (mut total, mut misses) = (0u64, 0);
        loop {
            let head: Vec<Vec<u8>> = c.lrange(&k.finished, 0, ROUND - 1).await?;
            if head.is_empty() {
                return Ok(total);
            }
            let ids: Vec<&[u8]> = head.iter().map(|e| &e[..e.len().min(16)]).collect();
            let gone: i64 = self
                .with_index(queue, &k, &SCRIPTS.ix_evict, &ids, 0, |inv| {
                    inv.key(&k.finished).arg(head.len());
                    for e in &head {
                        inv.arg(&e[..]);
                    }
                    inv.arg(self.deps.retention.as_millis() as u64)
                        .arg(self.deps.max_records);
                })
                .await?;
            if gone < 0 {
                // Another server evicted meanwhile: read the new head (a few times at most).
                misses += 1;
                if misses > 8 {
                    return Ok(total);
                }
                continue;
            }
            total += gone as u64;
            if (gone as usize) < head.len() {
                return Ok(total);
            }
        }
    }
}

impl Broker {
    /// Deletes what versions before the id index kept of completed tasks (a string of ids per
    /// creation second, listed in `deps:done`, kept 24 h with no cap by default) and the flush
    /// counter: nothing reads them any more. Returns how many keys went.
    pub async fn drop_legacy_records(&self, queue: &str) -> Result<u64> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let present: u64 = redis::cmd("EXISTS")
            .arg(&k.legacy)
            .query_async(&mut c)
            .await?;
        if present == 0 {
            return Ok(0);
        }
        let mut gone = 0;
        loop {
            let buckets: Vec<String> = c.zrange(&k.legacy[0], 0, 499).await?;
            if buckets.is_empty() {
                break;
            }
            // The members are key names this queue's old scripts wrote (`rediq:{q}:deps:done:<s>`);
            // anything else is left alone.
            let prefix = format!("{}:", k.legacy[0]);
            let own: Vec<&String> = buckets.iter().filter(|b| b.starts_with(&prefix)).collect();
            if !own.is_empty() {
                gone += redis::cmd("UNLINK")
                    .arg(&own)
                    .query_async::<u64>(&mut c)
                    .await?;
            }
            let _: u64 = c.zrem(&k.legacy[0], &buckets).await?;
        }
        gone += redis::cmd("UNLINK")
            .arg(&k.legacy)
            .query_async::<u64>(&mut c)
            .await?;
        Ok(gone)
    }

    /// Deletes the buckets of an index generation that a flush left behind.
    pub(super) async fn drop_index_generation(&self, queue: &str, gen: u64) -> Result<()> {
        let k = QueueKeys::new(queue);
        // The bucket key without its number, glob characters of the queue name escaped.
        let prefix = k.ix_bucket(gen, 0);
        let prefix = &prefix[..prefix.len() - 1];
        let mut pattern = String::with_capacity(prefix.len() + 8);
        for ch in prefix.chars() {
            if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push('*');
        let mut c = self.conn.clone();
        let mut cursor = 0u64;
        loop {
            // On a cluster, SCAN walks one node: the one that holds the queue's slot.
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let reply = self.conn.on_slot_of(scan, k.wake.as_bytes()).await?;
            let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)
                .map_err(|e| Error::Serialization(format!("SCAN reply: {e}")))?;
            if !keys.is_empty() {
                let _: () = redis::cmd("UNLINK").arg(&keys).query_async(&mut c).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// Reads a state byte of the index ('L', 'C', 'F').
pub(crate) fn existing(state: &[u8]) -> Option<Existing> {
    match state {
        b"L" => Some(Existing::Live),
        b"C" => Some(Existing::Completed),
        b"F" => Some(Existing::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_skips_the_queue_hint_and_mixes_time_and_random_bytes() {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&[0xf0, 0, 0, 0x0f]);
        id[10..14].copy_from_slice(&[1, 2, 3, 4]);
        id[14..16].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(ix_hash(&id), 0xf102_030b);
    }

    #[test]
    fn stale_replies_carry_the_fresh_meta() {
        assert_eq!(stale_meta(Some("CORRUPT"), Some("3 1 5")), None);
        assert_eq!(
            stale_meta(Some("IXSTALE"), Some("3 1 5 script: abc")),
            Some(IxMeta {
                level: 3,
                gen: 1,
                split: 5
            })
        );
    }
}

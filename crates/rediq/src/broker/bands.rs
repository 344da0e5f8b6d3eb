//! Pending tasks live in one Redis list per priority band (scripts/bands.lua explains why: a
//! list element costs its record and a few bytes, a sorted-set member ~50 B more).
//!
//! Scripts may only touch keys passed in `KEYS`, so every script that writes or pops pending
//! tasks receives a *band block*: the bands zset and the list keys of the bands it may touch.
//! Where this side knows the bands (an enqueue knows its tasks' priorities) it passes exactly
//! those; where only the script can tell (a fetch pops whatever band is lowest, a forward moves
//! whatever is due) it passes the bands this broker has seen in use for the queue
//! ([`BandCache`], the default band to begin with). A script that needs a band the block lacks
//! answers `BANDS <p> ...` before it writes anything, and [`Broker::with_bands`] learns them and
//! calls again: a queue that uses k priorities costs at most k extra round trips in the life of
//! a broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::{AsyncCommands, FromRedisValue};

use super::call::{Call, Lua};

use super::keys::QueueKeys;
use super::{record, Broker, SCRIPTS};
use crate::{Error, Result};

/// A set of bands (priorities 0..=100), one bit each.
pub(crate) type BandSet = u128;

/// The band of a task created with the default priority.
const DEFAULT_BAND: u8 = crate::task::DEFAULT_PRIORITY as u8;

/// Every band: for the rare calls that must see them all at once.
pub(crate) const ALL_BANDS: BandSet = (1 << 101) - 1;

/// The band of a record: its priority byte, at most 100 (bands.lua's `band_of`).
pub(crate) fn band_of(record: &[u8]) -> u8 {
    record.get(1).map_or(DEFAULT_BAND, |p| (*p).min(100))
}

/// The set holding one band.
pub(crate) fn band(p: u8) -> BandSet {
    1 << p.min(100)
}

/// The bands of some records.
pub(crate) fn bands_of<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> BandSet {
    records.into_iter().fold(0, |set, r| set | band(band_of(r)))
}

fn members(set: BandSet) -> impl Iterator<Item = u8> {
    (0..=100u8).filter(move |p| set & (1 << p) != 0)
}

/// Which bands a call passes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bands {
    /// Exactly these (the caller knows every band the script may touch).
    Exact(BandSet),
    /// These and every band seen in use for the queue (only the script can tell which it
    /// needs).
    Seen(BandSet),
}

/// The bands seen in use, per queue.
#[derive(Debug, Clone, Default)]
pub(crate) struct BandCache(Arc<Mutex<HashMap<String, BandSet>>>);

impl BandCache {
    fn get(&self, queue: &str) -> BandSet {
        // A poisoned lock only means another thread panicked while copying a Copy value.
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(queue)
            .copied()
            .unwrap_or_else(|| band(DEFAULT_BAND))
    }

    fn add(&self, queue: &str, set: BandSet) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(queue.to_string())
            .or_insert_with(|| band(DEFAULT_BAND)) |= set;
    }
}

/// Appends the band block (see bands.lua) to a script invocation: the bands zset, the group
/// block (groups.lua: grouped tasks are pushed to their group instead of a band), the bands.
pub(super) fn block(inv: &mut Call, k: &QueueKeys, set: BandSet) {
    inv.key(&k.bands).keys(&k.groups);
    let mut descriptor = String::new();
    for p in members(set) {
        inv.key(k.band(p));
        if !descriptor.is_empty() {
            descriptor.push(',');
        }
        descriptor.push_str(&p.to_string());
    }
    inv.arg(descriptor);
}

/// Reads `BANDS <p> ...`: the bands a script needed and did not get.
fn missing_bands(code: Option<&str>, detail: Option<&str>) -> Option<BandSet> {
    if code != Some("BANDS") {
        return None;
    }
    let set = detail?
        .split_whitespace()
        .filter_map(|p| p.parse::<u8>().ok())
        .fold(0, |set, p| set | band(p));
    (set != 0).then_some(set)
}

impl Broker {
    /// One call of `script` with the band block of the bands known for `queue` (no rounds: a
    /// caller that pipelines it learns of a missing band from a plain call later).
    pub(super) fn band_call<'a>(
        &self,
        queue: &str,
        k: &QueueKeys,
        script: &'a Lua,
        build: impl Fn(&mut Call),
    ) -> Call<'a> {
        let mut inv = script.prepare_invoke();
        build(&mut inv);
        block(&mut inv, k, self.band_set(queue, Bands::Seen(0)));
        inv
    }

    /// The band block's set for a call on `queue`.
    pub(super) fn band_set(&self, queue: &str, bands: Bands) -> BandSet {
        match bands {
            Bands::Exact(set) => set,
            Bands::Seen(set) => set | self.bands.get(queue),
        }
    }

    /// The bands to add before calling again when `e` is a script's `BANDS` answer to a call
    /// that passed `passed` (they are learned for the queue); `None` for any other error, or
    /// when the script names bands it was given (calling again would loop).
    pub(super) fn missing_after(
        &self,
        queue: &str,
        passed: BandSet,
        e: &redis::RedisError,
    ) -> Option<BandSet> {
        let missing = missing_bands(e.code(), e.detail())?;
        self.bands.add(queue, missing);
        (missing & !passed != 0).then_some(missing)
    }

    /// Runs a script that ends with a band block (`build` adds the script's own keys and
    /// arguments first), calling it again with the bands it reports missing.
    pub(super) async fn with_bands<T: FromRedisValue>(
        &self,
        queue: &str,
        k: &QueueKeys,
        script: &Lua,
        bands: Bands,
        build: impl Fn(&mut Call),
    ) -> Result<T> {
        let mut c = self.conn.clone();
        let mut extra = 0;
        // One round per new band at most (a script names every band it misses at once, so more
        // rounds only follow producers opening bands meanwhile); the bound stops a script that
        // keeps asking.
        for _ in 0..16 {
            let set = self.band_set(queue, bands) | extra;
            let mut inv = script.prepare_invoke();
            build(&mut inv);
            block(&mut inv, k, set);
            match inv.invoke_async::<T>(&mut c).await {
                Err(e) => match self.missing_after(queue, set, &e) {
                    Some(missing) => extra |= missing,
                    None => return Err(e.into()),
                },
                Ok(v) => return Ok(v),
            }
        }
        Err(too_many_rounds(k))
    }

    /// How many pending tasks `queue` holds in its band lists (read only; two round trips, so
    /// not a snapshot of one instant). For tests: `stats_many` reads it for many queues at once.
    #[cfg(test)]
    pub(super) async fn pending_len(&self, k: &QueueKeys) -> Result<u64> {
        let mut c = self.conn.clone();
        let live: Vec<u8> = c.zrange(&k.bands, 0, -1).await?;
        if live.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for p in &live {
            pipe.llen(k.band(*p));
        }
        let lens: Vec<u64> = pipe.query_async(&mut c).await?;
        Ok(lens.iter().sum())
    }

    /// The record of the pending task `id`, read band after band in pages of LRANGE: linear in
    /// the backlog, but Redis serves others between pages. Fetches popping the head meanwhile
    /// shift the pages, so a task may be missed: [`Broker::locate`] asks the id index and
    /// looks again.
    pub(super) async fn find_pending(&self, k: &QueueKeys, id: &[u8]) -> Result<Option<Vec<u8>>> {
        const PAGE: isize = 1000;
        let mut c = self.conn.clone();
        for p in self.live_bands(k).await? {
            let mut start = 0;
            loop {
                let page: Vec<Vec<u8>> = c.lrange(k.band(p), start, start + PAGE - 1).await?;
                let full = page.len() as isize == PAGE;
                if let Some(r) = page.into_iter().find(|r| record::raw_id(r) == id) {
                    return Ok(Some(r));
                }
                if !full {
                    break;
                }
                start += PAGE;
            }
        }
        Ok(self.find_grouped(k, id).await?.map(|(_, r)| r))
    }

    /// Moves the pending tasks an earlier version left in its pending set into the band lists
    /// (migrate.lua), 1,000 per call; returns how many moved.
    pub async fn migrate_pending(&self, queue: &str) -> Result<u64> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let mut total = 0;
        while c.exists::<_, bool>(&k.legacy_pending).await? {
            let n: u64 = self
                .with_bands(
                    queue,
                    &k,
                    &SCRIPTS.migrate,
                    Bands::Exact(ALL_BANDS),
                    |inv| {
                        inv.key(&k.legacy_pending).key(&k.wake).arg(1000);
                    },
                )
                .await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok(total)
    }

    /// The live bands of a queue, lowest (runs first) first.
    pub(super) async fn live_bands(&self, k: &QueueKeys) -> Result<Vec<u8>> {
        let mut c = self.conn.clone();
        Ok(c.zrange(&k.bands, 0, -1).await?)
    }
}

pub(super) fn too_many_rounds(k: &QueueKeys) -> Error {
    Error::Corrupt {
        key: k.bands.clone(),
        reason: "scripts kept asking for priority bands they were given".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_in_the_band_of_its_priority_byte() {
        assert_eq!(band_of(&[1, 0, 9]), 0);
        assert_eq!(band_of(&[1, 100]), 100);
        assert_eq!(band_of(&[1, 200]), 100, "clamped like bands.lua");
        assert_eq!(band_of(&[1]), 50, "too short: the default band");
        assert_eq!(
            members(bands_of([&[1u8, 3][..], &[1, 70][..], &[1, 3][..]])).collect::<Vec<_>>(),
            vec![3, 70]
        );
        assert_eq!(members(ALL_BANDS).count(), 101);
    }

    #[test]
    fn the_missing_bands_are_read_from_the_error() {
        assert_eq!(
            missing_bands(Some("BANDS"), Some("3 70")),
            Some(band(3) | band(70))
        );
        assert_eq!(missing_bands(Some("IXSTALE"), Some("3 70")), None);
        assert_eq!(missing_bands(Some("BANDS"), Some("")), None);
    }
}

//! What a queue did per day and what it occupies in Redis, for the Inspector.
//!
//! The per-day counts are written by the scripts that finish an attempt (complete, retry, kill,
//! and requeue for a lapsed lease; `daily_add` in prelude.lua) into one small hash per queue,
//! which keeps the last [`DAILY_KEEP`] days. Memory is Redis's own estimate (`MEMORY USAGE`,
//! which samples the elements of big keys) summed over the queue's keys; the id index's
//! buckets are sampled too, so a reading costs O(keys of the queue), never O(tasks). Both are
//! read only.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::keys::QueueKeys;
use super::Broker;
use crate::Result;

/// Days of per-day counts a queue keeps (`DAILY_KEEP` in prelude.lua).
pub(crate) const DAILY_KEEP: u32 = 90;

/// Elements `MEMORY USAGE` looks at in a big key (Redis's own default).
const MEMORY_SAMPLES: u32 = 5;

/// Index buckets measured per reading; the others are assumed to weigh what these weigh on
/// average (buckets hold 40–100 entries each, so they differ little).
const BUCKETS_SAMPLED: u64 = 16;

/// The id index's level, split pointer and generation (no level before the first task; no
/// generation before the first flush).
type IndexShape = (Option<u64>, Option<u64>, Option<u64>);

/// One day's counts of a physical queue: (tasks completed, failed attempts).
pub(crate) type DayCounts = (u64, u64);

impl Broker {
    /// The per-day counts of one physical queue, by day since 1970-01-01 UTC (Redis clock).
    /// A field that is not ours is skipped (the next day's first count drops it); a count
    /// that is not an integer is logged and skipped, so one damaged queue does not hide the
    /// others' history (its scripts refuse to count into it, naming the key).
    pub async fn daily(&self, queue: &str) -> Result<HashMap<u64, DayCounts>> {
        let key = &QueueKeys::new(queue).daily;
        let mut c = self.conn.clone();
        let raw: Vec<(Vec<u8>, Vec<u8>)> = c.hgetall(key).await?;
        let mut out: HashMap<u64, DayCounts> = HashMap::new();
        for (field, n) in raw {
            let field = String::from_utf8_lossy(&field);
            let Some((kind @ ("p" | "f"), day)) = field.split_once(':') else {
                continue;
            };
            let Ok(day) = day.parse::<u64>() else {
                continue;
            };
            let Some(n) = std::str::from_utf8(&n)
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                tracing::warn!(key = %key, field = %field, "a daily count is not an integer; skipped");
                continue;
            };
            let e = out.entry(day).or_default();
            if kind == "p" {
                e.0 += n;
            } else {
                e.1 += n;
            }
        }
        Ok(out)
    }

    /// Bytes used by one physical queue's keys as `MEMORY USAGE` estimates them; `None` when
    /// the server refuses the command (some managed services disable it). Unique-key locks
    /// are not counted: finding them would need a scan of the keyspace.
    pub async fn memory_usage(&self, queue: &str) -> Result<Option<u64>> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let (bands, holders, meta): (Vec<u8>, Vec<String>, IndexShape) = redis::pipe()
            .zrange(&k.bands, 0, -1)
            .zrange(&k.leases, 0, -1)
            .hmget(&k.ix_meta, &["l", "s", "g"])
            .query_async(&mut c)
            .await?;
        let mut keys: Vec<String> = k.fixed().iter().map(|s| s.to_string()).collect();
        keys.extend(bands.iter().map(|p| k.band(*p)));
        for h in &holders {
            keys.push(k.active(h));
            keys.push(k.ack_receipt(h));
        }
        // The index: its done hash, and a sample of its buckets (linear hashing: 2^l + s).
        let mut sampled = Vec::new();
        let mut buckets = 0;
        if let Some(l) = meta.0 {
            // The generation is written at the first flush; before it, it is 0.
            let g = meta.2.unwrap_or(0);
            keys.push(k.ix_done(g));
            buckets = (1u64 << l.min(40)) + meta.1.unwrap_or(0);
            let step = buckets.div_ceil(BUCKETS_SAMPLED).max(1);
            sampled = (0..buckets)
                .step_by(step as usize)
                .map(|b| k.ix_bucket(g, b))
                .collect();
        }
        let mut pipe = redis::pipe();
        for key in keys.iter().chain(&sampled) {
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(MEMORY_SAMPLES);
        }
        let sizes: Vec<Option<u64>> = match pipe.query_async(&mut c).await {
            Ok(v) => v,
            Err(e) if refused(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if sizes.len() != keys.len() + sampled.len() {
            return Err(crate::Error::Serialization(format!(
                "{} replies to {} MEMORY USAGE calls",
                sizes.len(),
                keys.len() + sampled.len()
            )));
        }
        let (fixed, sample) = sizes.split_at(keys.len());
        let mut total: u64 = fixed.iter().flatten().sum();
        if !sample.is_empty() {
            let measured: u64 = sample.iter().flatten().sum();
            total += measured * buckets / sample.len() as u64;
        }
        Ok(Some(total))
    }
}

/// Whether Redis refused `MEMORY USAGE` itself (unknown or renamed command, or forbidden by an
/// ACL), rather than failing for a reason that passes (loading, a failover).
fn refused(e: &redis::RedisError) -> bool {
    match e.code() {
        Some("NOPERM") => true,
        Some("ERR") => e
            .detail()
            .is_some_and(|d| d.to_ascii_lowercase().contains("unknown command")),
        _ => false,
    }
}

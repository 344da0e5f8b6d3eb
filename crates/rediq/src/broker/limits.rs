//! Flow control kept in Redis: a queue's limits, which every server's fetch reads, and the
//! servers holding leases on it, which a fetch under a concurrency limit counts.
//!
//! The limits live in `rediq:{q}:limits` (fields `concurrency`, `rate`, `period_ms`) so that
//! they change without a restart and every server sees the same; fetch.lua reads them on every
//! call (one `HMGET`) and enforces them in the same atomic step that leases the tasks. The
//! rate limit's token bucket is `rediq:{q}:rate`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;

use super::keys::QueueKeys;
use super::Broker;
use crate::{Error, Result};

/// A queue's flow-control limits, kept in Redis and enforced by every server's fetch.
///
/// ```no_run
/// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
/// use std::time::Duration;
/// use rediq::{QueueLimits, RateLimit};
/// // At most 5 `payments` tasks run at once, and at most 100 start per second, across every
/// // server of the queue.
/// let limits = QueueLimits {
///     concurrency: Some(5),
///     rate: Some(RateLimit { count: 100, period: Duration::from_secs(1) }),
/// };
/// inspector.set_queue_limits("payments", &limits).await?;
/// assert_eq!(inspector.queue_limits("payments").await?, limits);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// At most this many of the queue's tasks leased (running, or about to) at once, across
    /// every server whose lease has not lapsed. `None`: no limit.
    pub concurrency: Option<u32>,
    /// At most `count` task starts per `period`, across every server. `None`: no limit.
    pub rate: Option<RateLimit>,
}

/// The longest rate-limit period.
const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);

/// A rate: at most `count` task starts per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Starts allowed per period (at least 1).
    pub count: u32,
    /// The period (1 ms to 365 days).
    pub period: Duration,
}

impl QueueLimits {
    /// Refuses a zero concurrency, a zero count or a period under 1 ms, naming the value.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.concurrency == Some(0) {
            return Err(Error::Validation {
                what: "concurrency limit",
                reason: "0 would run nothing; use pause_queue to stop a queue".into(),
            });
        }
        if let Some(r) = self.rate {
            if r.count == 0 || r.period < Duration::from_millis(1) || r.period > MAX_PERIOD {
                return Err(Error::Validation {
                    what: "rate limit",
                    reason: format!(
                        "{} per {:?}: needs at least 1 start per period of 1 ms to 365 days",
                        r.count, r.period
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none()
    }
}

/// `COUNT/PERIOD`, as people write a rate: `100/1s`, `5/500ms`, `1000/2m`, `10/1h`, `500/1d`
/// (a bare number of seconds, `7/3`, also reads). The CLI's `--rate` and the web UI take it.
///
/// ```
/// use std::time::Duration;
/// let r: rediq::RateLimit = "5/500ms".parse()?;
/// assert_eq!((r.count, r.period), (5, Duration::from_millis(500)));
/// assert_eq!(r.to_string(), "5/500ms");
/// assert!("0/1s".parse::<rediq::RateLimit>().is_err());
/// # Ok::<(), rediq::Error>(())
/// ```
impl std::str::FromStr for RateLimit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Validation {
            what: "rate limit",
            reason: format!("{s:?} is not COUNT/PERIOD such as 100/1s or 5/500ms"),
        };
        let (count, period) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let (digits, unit_ms) = [
            ("ms", 1),
            ("s", 1000),
            ("m", 60_000),
            ("h", 3_600_000),
            ("d", 86_400_000),
        ]
        .iter()
        .find_map(|(suffix, ms)| period.strip_suffix(suffix).map(|d| (d, *ms)))
        .unwrap_or((period, 1000));
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let period = Duration::from_millis(n.checked_mul(unit_ms).ok_or_else(bad)?);
        let rate = RateLimit { count, period };
        QueueLimits {
            concurrency: None,
            rate: Some(rate),
        }
        .validate()?;
        Ok(rate)
    }
}

/// `COUNT/PERIOD` in the period's largest whole unit (`100/1s`, `5/500ms`, `10/2m`): what
/// [`FromStr`](std::str::FromStr) reads back.
impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.period.as_millis();
        let (n, unit) = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ]
        .iter()
        .find(|(u, _)| ms >= *u && ms.is_multiple_of(*u))
        .map_or((ms, "ms"), |(u, name)| (ms / u, *name));
        write!(f, "{}/{n}{unit}", self.count)
    }
}

/// The limits as a table cell shows them: `≤5 100/1s`, `≤5`, `100/1s`, or `-` when none.
impl std::fmt::Display for QueueLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.concurrency, self.rate) {
            (None, None) => f.write_str("-"),
            (Some(c), None) => write!(f, "≤{c}"),
            (None, Some(r)) => write!(f, "{r}"),
            (Some(c), Some(r)) => write!(f, "≤{c} {r}"),
        }
    }
}

/// The servers holding a lease on each queue, as the last fetch under a concurrency limit
/// named them (fetch.lua's `HOLDERS` answer).
#[derive(Debug, Default, Clone)]
pub(super) struct HolderCache(Arc<Mutex<HashMap<String, Vec<String>>>>);

impl HolderCache {
    pub fn get(&self, queue: &str) -> Vec<String> {
        // A poisoned lock only means another thread panicked while inserting a finished value.
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(queue).cloned().unwrap_or_default()
    }

    pub fn set(&self, queue: &str, holders: Vec<String>) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded by the queues this process fetches from.
        m.insert(queue.to_string(), holders);
    }
}

/// The live holders a `HOLDERS` error names, or `None` for any other error.
pub(super) fn holders_named(e: &redis::RedisError) -> Option<Vec<String>> {
    if e.code() != Some("HOLDERS") {
        return None;
    }
    let detail = e.detail().unwrap_or_default();
    // Redis appends where the script raised; server ids never contain it.
    let detail = detail.rsplit_once(" script: ").map_or(detail, |(d, _)| d);
    Some(detail.split_whitespace().map(str::to_string).collect())
}

impl Broker {
    /// Writes a queue's limits (one atomic step: fields not set are removed; the group rule's
    /// fields stay).
    pub async fn set_limits(&self, queue: &str, limits: &QueueLimits) -> Result<()> {
        limits.validate()?;
        let k = QueueKeys::new(queue);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(&k.limits, &["concurrency", "rate", "period_ms"]);
        if let Some(c) = limits.concurrency {
            pipe.hset(&k.limits, "concurrency", c);
        }
        if let Some(r) = limits.rate {
            pipe.hset(&k.limits, "rate", r.count).hset(
                &k.limits,
                "period_ms",
                r.period.as_millis() as u64,
            );
        }
        // A new rate starts from a full bucket.
        pipe.del(&k.rate);
        let mut c = self.conn.clone();
        let _: () = pipe.query_async(&mut c).await?;
        Ok(())
    }

    /// A queue's limits as kept in Redis (a field that does not parse is `Error::Corrupt`).
    pub async fn limits(&self, queue: &str) -> Result<QueueLimits> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let fields: LimitFields = c
            .hmget(&k.limits, &["concurrency", "rate", "period_ms"])
            .await?;
        from_fields(fields).map_err(|(field, v)| Error::Corrupt {
            key: k.limits.clone(),
            reason: format!("field {field} holds {v:?}, not a positive integer"),
        })
    }
}

/// The limits hash's `concurrency`, `rate` and `period_ms` fields, as read.
pub(super) type LimitFields = (Option<String>, Option<String>, Option<String>);

/// The limits the fields say; `Err` names a field that does not parse, and its value.
pub(super) fn from_fields(
    (c, r, p): LimitFields,
) -> std::result::Result<QueueLimits, (&'static str, String)> {
    let num = |field: &'static str, v: Option<String>| match v {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| (field, v)),
    };
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let concurrency = num("concurrency", c)?.map(count);
    let rate = match (num("rate", r)?, num("period_ms", p)?) {
        (Some(n), Some(ms)) => Some(RateLimit {
            count: count(n),
            period: Duration::from_millis(ms),
        }),
        _ => None,
    };
    Ok(QueueLimits { concurrency, rate })
}

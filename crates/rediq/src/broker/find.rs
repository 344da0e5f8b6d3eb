//! Finding tasks by the bytes of their records, in bounded steps with a cursor.
//!
//! A record holds its id (raw, in the head), and its payload and last error verbatim in the
//! MessagePack body, so a needle found in a record's bytes is a candidate that the caller then
//! checks on the decoded task. Each call examines at most `budget` records of one state of one
//! queue and says where to go on: Redis keeps serving everyone else between calls, and no call
//! costs more than its budget whatever the queue holds. The sorted sets (delayed, retry, dead,
//! completed) are walked with `ZSCAN … MATCH`, so Redis itself drops what cannot match; the
//! pending band lists by index windows; the waiting hash with `HSCAN`; active tasks (at most
//! the servers' concurrency) in one step.
//!
//! A scan sees a moving queue: a task that moves while it runs may be missed or seen twice.

use redis::AsyncCommands;

use super::keys::QueueKeys;
use super::{Broker, TaskState};
use crate::{Error, Result};

/// A `MATCH` pattern for records containing `needle` (glob characters escaped; binary safe).
fn contains_pattern(needle: &[u8]) -> Vec<u8> {
    let mut p = vec![b'*'];
    for b in needle {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            p.push(b'\\');
        }
        p.push(*b);
    }
    p.push(b'*');
    p
}

fn bad_cursor(cursor: &str) -> Error {
    Error::validation(
        "cursor",
        format!("{cursor:?} is not a cursor a previous find returned"),
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

impl Broker {
    /// Up to `budget` records of `queue` in `state` examined from `cursor` (`""` to start);
    /// returns those containing `needle` and the cursor to go on from (`None`: done).
    pub async fn scan_records(
        &self,
        queue: &str,
        state: TaskState,
        needle: &[u8],
        cursor: &str,
        budget: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<String>)> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let budget = budget.max(1);
        let zset = match state {
            TaskState::Delayed => Some(&k.delayed),
            TaskState::Retry => Some(&k.retry),
            TaskState::Dead => Some(&k.dead),
            TaskState::Completed => Some(&k.completed),
            _ => None,
        };
        if let Some(key) = zset {
            let from: u64 = match cursor {
                "" => 0,
                c => c.parse().map_err(|_| bad_cursor(c))?,
            };
            let (next, flat): (u64, Vec<Vec<u8>>) = redis::cmd("ZSCAN")
                .arg(key)
                .arg(from)
                .arg("MATCH")
                .arg(contains_pattern(needle))
                .arg("COUNT")
                .arg(budget)
                .query_async(&mut c)
                .await?;
            // The reply alternates member and score.
            let found = flat.into_iter().step_by(2).collect();
            return Ok((found, (next != 0).then(|| next.to_string())));
        }
        match state {
            TaskState::Pending => {
                // After the bands, the tasks of groups: `g:<HSCAN cursor>`.
                if let Some(at) = cursor.strip_prefix("g:") {
                    let at: u64 = at.parse().map_err(|_| bad_cursor(cursor))?;
                    let (window, next) = self.scan_grouped(&k, at, budget).await?;
                    let found = window.into_iter().filter(|r| contains(r, needle)).collect();
                    return Ok((found, next.map(|n| format!("g:{n}"))));
                }
                // `band:index` of the next record to look at, bands lowest first.
                let (band, index) = match cursor {
                    "" => (0u8, 0usize),
                    c => c
                        .split_once(':')
                        .and_then(|(b, i)| Some((b.parse().ok()?, i.parse().ok()?)))
                        .ok_or_else(|| bad_cursor(c))?,
                };
                let bands = self.live_bands(&k).await?;
                let gc = c.clone();
                let grouped = || async {
                    let n: u64 = gc.clone().hlen(&k.groups[0]).await?;
                    Ok::<_, crate::Error>((n > 0).then(|| "g:0".to_string()))
                };
                let Some(&band) = bands.iter().find(|b| **b >= band) else {
                    return Ok((Vec::new(), grouped().await?));
                };
                let index = if cursor.is_empty() || cursor.starts_with(&format!("{band}:")) {
                    index
                } else {
                    0
                };
                let stop = isize::try_from(index + budget - 1).unwrap_or(-1);
                let window: Vec<Vec<u8>> = c
                    .lrange(k.band(band), isize::try_from(index).unwrap_or(0), stop)
                    .await?;
                let next = if window.len() == budget {
                    Some(format!("{band}:{}", index + budget))
                } else {
                    match bands.iter().find(|b| **b > band) {
                        Some(b) => Some(format!("{b}:0")),
                        None => grouped().await?,
                    }
                };
                let found = window.into_iter().filter(|r| contains(r, needle)).collect();
                Ok((found, next))
            }
            TaskState::Waiting => {
                let from: u64 = match cursor {
                    "" => 0,
                    c => c.parse().map_err(|_| bad_cursor(c))?,
                };
                // HSCAN's MATCH looks at the fields (ids), not the records: filter here.
                let (next, flat): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
                    .arg(&k.waiting)
                    .arg(from)
                    .arg("COUNT")
                    .arg(budget)
                    .query_async(&mut c)
                    .await?;
                let found = flat
                    .into_iter()
                    .skip(1)
                    .step_by(2)
                    .filter(|r| contains(r, needle))
                    .collect();
                Ok((found, (next != 0).then(|| next.to_string())))
            }
            // Active: every server's held tasks, bounded by their concurrency.
            _ => {
                let mut found = Vec::new();
                for server in self.lease_holders(queue).await? {
                    for e in self.held(queue, &server).await? {
                        if contains(&e.record, needle) {
                            found.push(e.record);
                        }
                    }
                }
                Ok((found, None))
            }
        }
    }
}

/// The server running a task: its id, the task's fencing token, and when its lease on the
/// queue lapses (Unix ms, Redis clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub server: String,
    pub token: u64,
    pub lease_until_ms: Option<u64>,
}

impl Broker {
    /// The server holding task `id` of `queue` and its record, if one does (O(servers) reads
    /// of at most their concurrency each).
    pub async fn holder_of(&self, queue: &str, id: &[u8]) -> Result<Option<(Holder, Vec<u8>)>> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        for server in self.lease_holders(queue).await? {
            if let Some(e) = self
                .held(queue, &server)
                .await?
                .into_iter()
                .find(|e| e.id == id)
            {
                let until: Option<f64> = c.zscore(&k.leases, &server).await?;
                let holder = Holder {
                    server,
                    token: e.token,
                    lease_until_ms: until.map(|u| u as u64),
                };
                return Ok(Some((holder, e.record)));
            }
        }
        Ok(None)
    }

    /// The tasks registered as waiting for task `id` of `queue`: (dependent id, its queue).
    pub async fn dependents_of(&self, queue: &str, id: &[u8]) -> Result<Vec<(Vec<u8>, String)>> {
        let mut c = self.conn.clone();
        let refs: Option<Vec<u8>> = c.hget(&QueueKeys::new(queue).dependents, id).await?;
        Ok(refs
            .as_deref()
            .and_then(super::deps::parse_references)
            .unwrap_or_default()
            .into_iter()
            .map(|(d, q)| (d.to_vec(), q.to_string()))
            .collect())
    }

    /// The dependencies a waiting task `id` of `queue` still waits for (16-byte ids).
    pub async fn unmet_dependencies(&self, queue: &str, id: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut c = self.conn.clone();
        let needs: Option<Vec<u8>> = c.hget(&QueueKeys::new(queue).needs, id).await?;
        // `delay_ms|` then the ids, 16 bytes each.
        Ok(needs
            .as_deref()
            .and_then(|n| n.iter().position(|b| *b == b'|').map(|at| &n[at + 1..]))
            .map(|ids| ids.chunks_exact(16).map(<[u8]>::to_vec).collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_escape_globs_and_keep_bytes() {
        assert_eq!(contains_pattern(b"a*b"), b"*a\\*b*".to_vec());
        assert_eq!(contains_pattern(&[0, 0xff]), vec![b'*', 0, 0xff, b'*']);
        assert!(contains(b"hello world", b"lo w"));
        assert!(!contains(b"hello", b"world"));
    }
}

//! Groups (tenants) of a queue: their limits, and reads of their pending tasks.
//!
//! A task with a group waits in its group (scripts/groups.lua: one hash of fields
//! `<group>|<seq>` for every group, a `head tail count` per group, and a turn zset that makes
//! the round robin), not in a priority band. This file owns what the Rust side does with them:
//! the group limits (the queue's rule for every group in the limits hash, fields
//! `g_concurrency`, `g_rate`, `g_period_ms`; a named group's override as
//! `concurrency|rate|period_ms` in `rediq:{q}:g:limits`), the inspector's view of the groups, and
//! finding, listing and searching grouped pending tasks, which `admin.rs`, `find.rs` and
//! `cancel.rs` add to their bands.

use std::collections::BTreeMap;

use redis::AsyncCommands;

use super::keys::QueueKeys;
use super::limits::{from_fields, QueueLimits};
use super::{record, Broker, SCRIPTS};
use crate::{Error, Result};

/// The group limits of a queue: one rule for every group, and overrides for named groups.
///
/// ```no_run
/// # async fn demo(client: rediq::Client) -> rediq::Result<()> {
/// use std::time::Duration;
/// use rediq::{QueueLimits, RateLimit};
/// // Each customer may run 2 `reports` tasks at once, 10 starts a minute...
/// client.set_group_limits("reports", &QueueLimits {
///     concurrency: Some(2),
///     rate: Some(RateLimit { count: 10, period: Duration::from_secs(60) }),
/// }).await?;
/// // ...except a big one, which may run 8 at once without a rate limit.
/// client.set_group_override("reports", "customer-7",
///     Some(&QueueLimits { concurrency: Some(8), rate: None })).await?;
/// let limits = client.inspector().group_limits("reports").await?;
/// assert_eq!(limits.for_group("customer-7").concurrency, Some(8));
/// assert_eq!(limits.for_group("customer-1").concurrency, Some(2));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLimits {
    /// The limits of every group of the queue that has no override.
    pub rule: QueueLimits,
    /// Named groups' limits, in place of the rule (a field `None` there means no such limit
    /// for that group).
    pub overrides: BTreeMap<String, QueueLimits>,
}

impl GroupLimits {
    /// The limits that apply to `group`: its override, or the rule.
    pub fn for_group(&self, group: &str) -> QueueLimits {
        self.overrides.get(group).copied().unwrap_or(self.rule)
    }
}

/// One group with tasks pending, running or held, as [`crate::Inspector::groups`] shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Its tasks pending (waiting for their turn, or held with their group).
    pub pending: u64,
    /// Its tasks leased now, across every server.
    pub running: u64,
    /// Whether it is held at its concurrency limit (its tasks wait for one of its running
    /// tasks to end).
    pub at_limit: bool,
    /// Until when (Unix ms) it is held: a handler asked to slow down
    /// ([`crate::Error::rate_limited`]), or it waits for its next rate token.
    pub held_until_ms: Option<u64>,
}

/// What `Broker::groups` reads: each group's `head tail count`, running count, the groups at
/// their limit, and the held groups with the time they are held until.
type GroupReads = (
    Vec<(String, String)>,
    Vec<(String, u64)>,
    Vec<String>,
    Vec<(String, f64)>,
);

/// The fields of the rule in the limits hash.
const RULE_FIELDS: [&str; 3] = ["g_concurrency", "g_rate", "g_period_ms"];

/// A group's override as stored: `concurrency|rate|period_ms`, empty where unset.
fn encode_override(l: &QueueLimits) -> String {
    let c = l.concurrency.map(|c| c.to_string()).unwrap_or_default();
    let (r, p) = l.rate.map_or((String::new(), String::new()), |r| {
        (
            r.count.to_string(),
            (r.period.as_millis() as u64).to_string(),
        )
    });
    format!("{c}|{r}|{p}")
}

fn decode_override(v: &str) -> Option<QueueLimits> {
    let mut it = v.split('|');
    let (c, r, p) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    from_fields((some(c), some(r), some(p))).ok()
}

/// Escapes a group name for a `MATCH` pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// A group's `head tail count`.
fn parse_seq(v: &str) -> Option<(i64, i64, u64)> {
    let mut it = v.split(' ');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

impl Broker {
    /// Sets the rule every group of `queue` follows (`QueueLimits::default()` removes it).
    pub async fn set_group_rule(&self, queue: &str, rule: &QueueLimits) -> Result<()> {
        rule.validate()?;
        let k = QueueKeys::new(queue);
        let mut pipe = redis::pipe();
        pipe.atomic().hdel(&k.limits, &RULE_FIELDS[..]);
        if let Some(c) = rule.concurrency {
            pipe.hset(&k.limits, RULE_FIELDS[0], c);
        }
        if let Some(r) = rule.rate {
            pipe.hset(&k.limits, RULE_FIELDS[1], r.count).hset(
                &k.limits,
                RULE_FIELDS[2],
                r.period.as_millis() as u64,
            );
        }
        // A new rate starts from full buckets.
        pipe.del(&k.groups[7]);
        let mut c = self.conn.clone();
        let _: () = pipe.query_async(&mut c).await?;
        self.unhold_groups(&k, "").await
    }

    /// The groups held under the old limits (all, or `group`) take their turn again
    /// (g_unhold.lua): a raised limit or a removed rate frees them now, not when their wait ends.
    async fn unhold_groups(&self, k: &QueueKeys, group: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: i64 = SCRIPTS
            .g_unhold
            .key(&k.groups[4])
            .key(&k.groups[3])
            .key(&k.groups[2])
            .key(&k.groups[1])
            .key(&k.wake)
            .arg(group)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a named group's override of the rule.
    pub async fn set_group_override(
        &self,
        queue: &str,
        group: &str,
        limits: Option<&QueueLimits>,
    ) -> Result<()> {
        crate::task::validate_group(group)?;
        let k = QueueKeys::new(queue);
        let mut pipe = redis::pipe();
        pipe.atomic();
        match limits {
            Some(l) => {
                l.validate()?;
                pipe.hset(&k.groups[6], group, encode_override(l));
            }
            None => {
                pipe.hdel(&k.groups[6], group);
            }
        }
        pipe.hdel(&k.groups[7], group);
        let mut c = self.conn.clone();
        let _: () = pipe.query_async(&mut c).await?;
        self.unhold_groups(&k, group).await
    }

    /// The group limits of `queue` (a value that does not parse is `Error::Corrupt`).
    pub async fn group_limits(&self, queue: &str) -> Result<GroupLimits> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let (fields, all): (super::limits::LimitFields, Vec<(String, String)>) = redis::pipe()
            .hmget(&k.limits, &RULE_FIELDS[..])
            .hgetall(&k.groups[6])
            .query_async(&mut c)
            .await?;
        let rule = from_fields(fields).map_err(|(field, v)| Error::Corrupt {
            key: k.limits.clone(),
            reason: format!("group field {field} holds {v:?}, not a positive integer"),
        })?;
        let mut overrides = BTreeMap::new();
        for (group, v) in all {
            let l = decode_override(&v).ok_or_else(|| Error::Corrupt {
                key: k.groups[6].clone(),
                reason: format!("group {group:?} holds {v:?}, not \"concurrency|rate|period_ms\""),
            })?;
            overrides.insert(group, l);
        }
        Ok(GroupLimits { rule, overrides })
    }

    /// Copies the group limits of `from` to `to` (a new partition of a queue).
    pub(super) async fn copy_group_limits(&self, from: &GroupLimits, to: &str) -> Result<()> {
        if !from.rule.is_empty() {
            self.set_group_rule(to, &from.rule).await?;
        }
        for (g, l) in &from.overrides {
            self.set_group_override(to, g, Some(l)).await?;
        }
        Ok(())
    }

    /// The groups of `queue` that have tasks pending or running, or are held, by name, at most
    /// `limit` of them (read only, not one instant).
    pub async fn groups(&self, queue: &str, limit: usize) -> Result<Vec<GroupInfo>> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let (seqs, runs, full, wait): GroupReads = redis::pipe()
            .hgetall(&k.groups[1])
            .hgetall(&k.groups[5])
            .smembers(&k.groups[4])
            .zrange_withscores(&k.groups[3], 0, -1)
            .query_async(&mut c)
            .await?;
        let mut by: BTreeMap<String, GroupInfo> = BTreeMap::new();
        fn at(by: &mut BTreeMap<String, GroupInfo>, name: String) -> &mut GroupInfo {
            by.entry(name.clone()).or_insert_with(|| GroupInfo {
                name,
                ..GroupInfo::default()
            })
        }
        for (name, v) in seqs {
            at(&mut by, name).pending = parse_seq(&v).map_or(0, |(_, _, n)| n);
        }
        for (name, n) in runs {
            at(&mut by, name).running = n;
        }
        for name in full {
            at(&mut by, name).at_limit = true;
        }
        for (name, t) in wait {
            at(&mut by, name).held_until_ms = Some(t as u64);
        }
        Ok(by.into_values().take(limit).collect())
    }

    /// Drops the token buckets of groups that have filled up again (a whole period untouched):
    /// the bound of the buckets hash, swept by the janitor. Returns how many went.
    pub async fn prune_group_buckets(&self, queue: &str) -> Result<u64> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
        let now = secs * 1000 + micros / 1000;
        let mut cursor = 0u64;
        let mut gone = 0;
        loop {
            let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
                .arg(&k.groups[7])
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            let mut stale = Vec::new();
            let mut it = flat.into_iter();
            while let (Some(group), Some(v)) = (it.next(), it.next()) {
                let mut parts = v.split('|').skip(1).map(|p| p.parse::<u64>());
                let full = match (parts.next(), parts.next()) {
                    (Some(Ok(at)), Some(Ok(period))) => at.saturating_add(period) < now,
                    _ => true,
                };
                if full {
                    stale.push(group);
                }
            }
            if !stale.is_empty() {
                let n: u64 = SCRIPTS
                    .g_prune
                    .key(&k.groups[7])
                    .arg(&stale)
                    .invoke_async(&mut c)
                    .await?;
                gone += n;
            }
            if next == 0 {
                return Ok(gone);
            }
            cursor = next;
        }
    }

    /// The grouped pending task `id`: its field and record (an `HSCAN` of every group's
    /// tasks: linear, like a band scan; an administrative call).
    pub(super) async fn find_grouped(
        &self,
        k: &QueueKeys,
        id: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.scan_tasks_for(k, None, |rec| record::raw_id(rec) == id)
            .await
    }

    /// The field of a grouped pending record as stored (searched within its group).
    pub(super) async fn grouped_field(
        &self,
        k: &QueueKeys,
        stored: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let Some(group) = record::group_of(stored) else {
            return Ok(None);
        };
        let pattern = format!("{}|*", glob_escape(&String::from_utf8_lossy(group)));
        let found = self
            .scan_tasks_for(k, Some(&pattern), |rec| rec == stored)
            .await?;
        Ok(found.map(|(field, _)| field))
    }

    /// The first (field, record) of the groups' tasks hash (`MATCH`ing `pattern`, if given)
    /// whose record `hit` accepts: `HSCAN` in pages of 1,000.
    async fn scan_tasks_for(
        &self,
        k: &QueueKeys,
        pattern: Option<&str>,
        hit: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut c = self.conn.clone();
        let mut cursor = 0u64;
        loop {
            let mut cmd = redis::cmd("HSCAN");
            cmd.arg(&k.groups[0]).arg(cursor);
            if let Some(p) = pattern {
                cmd.arg("MATCH").arg(p);
            }
            let (next, flat): (u64, Vec<Vec<u8>>) =
                cmd.arg("COUNT").arg(1000).query_async(&mut c).await?;
            let mut it = flat.into_iter();
            while let (Some(field), Some(rec)) = (it.next(), it.next()) {
                if hit(&rec) {
                    return Ok(Some((field, rec)));
                }
            }
            if next == 0 {
                return Ok(None);
            }
            cursor = next;
        }
    }

    /// Grouped pending tasks, `skip` then at most `limit`: group by group (by name), each in
    /// the order it runs. Costs one read per group skipped over and one per page.
    pub(super) async fn list_grouped(
        &self,
        k: &QueueKeys,
        mut skip: usize,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let mut c = self.conn.clone();
        let mut seqs: Vec<(String, String)> = c.hgetall(&k.groups[1]).await?;
        seqs.sort();
        let mut out = Vec::new();
        for (name, v) in seqs {
            let Some((head, tail, count)) = parse_seq(&v) else {
                continue;
            };
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            if skip >= count {
                skip -= count;
                continue;
            }
            // Read the group's run of fields in windows; holes (cancelled tasks) are skipped.
            let mut at = head;
            while at <= tail && out.len() < limit {
                let n = (tail - at + 1).min(1000);
                let fields: Vec<String> = (at..at + n).map(|s| format!("{name}|{s}")).collect();
                let vals: Vec<Option<Vec<u8>>> = c.hmget(&k.groups[0], &fields).await?;
                for v in vals.into_iter().flatten() {
                    if skip > 0 {
                        skip -= 1;
                    } else if out.len() < limit {
                        out.push(v);
                    }
                }
                at += n;
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// One bounded step of a search through the grouped pending tasks: `HSCAN` from `cursor`
    /// with a `COUNT` of `budget`; the records and the next cursor (`None` at the end).
    pub(super) async fn scan_grouped(
        &self,
        k: &QueueKeys,
        cursor: u64,
        budget: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<u64>)> {
        let mut c = self.conn.clone();
        let (next, flat): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
            .arg(&k.groups[0])
            .arg(cursor)
            .arg("COUNT")
            .arg(budget)
            .query_async(&mut c)
            .await?;
        let records = flat.into_iter().skip(1).step_by(2).collect();
        Ok((records, (next != 0).then_some(next)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RateLimit;
    use std::time::Duration;

    #[test]
    fn an_override_round_trips_and_bad_ones_are_refused() {
        let l = QueueLimits {
            concurrency: Some(3),
            rate: Some(RateLimit {
                count: 10,
                period: Duration::from_secs(60),
            }),
        };
        assert_eq!(encode_override(&l), "3|10|60000");
        assert_eq!(decode_override("3|10|60000"), Some(l));
        assert_eq!(decode_override("||"), Some(QueueLimits::default()));
        assert_eq!(
            decode_override("|5|1000")
                .and_then(|l| l.rate)
                .map(|r| r.count),
            Some(5)
        );
        assert_eq!(decode_override("x||"), None);
        assert_eq!(decode_override("1|2"), None);
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(parse_seq("-2 7 9"), Some((-2, 7, 9)));
        assert_eq!(parse_seq("1 2"), None);
    }
}

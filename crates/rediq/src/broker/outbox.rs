//! Delivery of a queue's dependency outbox (step 4 of the protocol in [`super::deps`]), and the
//! entries set aside because they could not be delivered.
//!
//! An entry whose delivery fails with an error that belongs to the entry (a dependent's queue
//! holds a key of the wrong type, a record that does not decode, …) must not hold up the
//! entries behind it: it is moved to the queue's set-aside zset with its reason
//! (`dep_aside.lua`) and tried again with backoff (1 s, doubling, at most 60 s) until it is
//! delivered. Retrying instead of dropping is what keeps "nothing lost": the usual cause is a
//! damaged key that an operator repairs, after which the news must still arrive. An error that
//! belongs to the connection (I/O, timeout, cluster redirection, Redis loading) ends the round
//! instead: every entry would fail the same way, and setting them all aside would only delay
//! them.
//!
//! Every server's resolver looks at every outbox of its queues; a claim (`dep_claim.lua`, a
//! token with a TTL) lets one of them deliver a queue's outbox at a time, so an entry is
//! normally delivered once instead of once per server. Correctness does not rest on it
//! (delivery is idempotent): a resolver that stalls past the claim's TTL and wakes up delivers
//! again, which changes nothing.

use redis::{AsyncCommands, ErrorKind, ServerErrorKind};

use super::deps::parse_references;
use super::keys::QueueKeys;
use super::{record, Broker, SCRIPTS};
use crate::{Error, Result};

/// Outbox entries delivered per round, and set-aside entries looked at per round.
const ROUND: isize = 100;

/// How long a resolver's claim on an outbox lasts unless renewed (after every batch): the
/// longest a resolver that died mid-round holds the others off.
const CLAIM_MS: u64 = 5_000;

/// What one delivery round of a queue's outbox did.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// Outbox entries delivered and removed.
    pub delivered: usize,
    /// Entries that failed this round (newly set aside, or failed again).
    pub set_aside: Vec<SetAside>,
    /// Dependency ids (text) of entries set aside earlier and delivered now.
    pub recovered: Vec<String>,
    /// Another resolver was delivering this outbox: nothing was done.
    pub busy: bool,
}

/// An outbox entry that could not be delivered.
#[derive(Debug)]
pub(crate) struct SetAside {
    /// The id of the task whose news it carries (text), or `"?"` when the entry does not parse.
    pub dependency: String,
    /// Why it could not be delivered.
    pub reason: String,
    /// Failed attempts so far: 1 when it was set aside just now.
    pub attempts: u64,
}

/// Why an entry was not delivered.
enum Fault {
    /// Belongs to the entry: set it aside, go on with the others.
    Entry(String),
    /// Belongs to the connection or to Redis as a whole: end the round.
    Round(Error),
}

/// Whether `e` says something about the data a delivery touched (then only this entry is
/// affected) rather than about reaching Redis.
fn entry_error(e: &Error) -> bool {
    match e {
        Error::Redis(r) => matches!(
            r.kind(),
            ErrorKind::Server(ServerErrorKind::ResponseError)
                | ErrorKind::Extension
                | ErrorKind::Parse
                | ErrorKind::UnexpectedReturnType
        ),
        // A key of the dependent's queue holds garbage (dep_satisfy.lua / dep_fail.lua refused
        // before moving anything): only the dependents of that queue are affected.
        Error::Corrupt { .. } | Error::Serialization(_) => true,
        _ => false,
    }
}

impl Broker {
    /// Delivers the outbox of `queue` to the dependents it names, sets aside the entries that
    /// cannot be delivered, and tries again those set aside earlier that are due. Safe to run
    /// from several processes at once (every step is idempotent).
    pub async fn resolve_outbox(&self, queue: &str) -> Result<Resolved> {
        let k = QueueKeys::new(queue);
        let token = uuid::Uuid::now_v7().to_string();
        if !self.claim(&k, &token, "take").await? {
            return Ok(Resolved {
                busy: true,
                ..Resolved::default()
            });
        }
        let mut out = Resolved::default();
        let done = self.resolve_claimed(&k, &token, &mut out).await;
        // Best effort: an error here leaves a claim that lapses by itself.
        if let Err(e) = self.claim(&k, &token, "drop").await {
            tracing::debug!(queue, error = %e, "could not drop the outbox claim");
        }
        done.map(|()| out)
    }

    /// Takes, renews or drops this round's claim on the outbox (`dep_claim.lua`).
    async fn claim(&self, k: &QueueKeys, token: &str, how: &str) -> Result<bool> {
        let mut inv = SCRIPTS.dep_claim.prepare_invoke();
        inv.key(&k.outbox_claim).arg(token).arg(how).arg(CLAIM_MS);
        let mut c = self.conn.clone();
        let held: i64 = inv.invoke_async(&mut c).await?;
        Ok(held == 1)
    }

    /// [`Broker::resolve_outbox`] once the claim is held.
    async fn resolve_claimed(&self, k: &QueueKeys, token: &str, out: &mut Resolved) -> Result<()> {
        loop {
            let entries: Vec<Vec<u8>> = {
                let mut c = self.conn.clone();
                c.lrange(&k.outbox, 0, ROUND - 1).await?
            };
            for entry in &entries {
                match self.deliver(entry).await {
                    Ok(()) => {
                        let mut c = self.conn.clone();
                        let _: i64 = c.lrem(&k.outbox, 1, &entry[..]).await?;
                        out.delivered += 1;
                    }
                    Err(Fault::Entry(reason)) => self.aside(k, entry, reason, out).await?,
                    Err(Fault::Round(e)) => return Err(e),
                }
            }
            if entries.len() < ROUND as usize {
                break;
            }
            // A long outbox: keep the claim (or stop, if another resolver took over after
            // this one stalled; it delivers the rest).
            if !self.claim(k, token, "take").await? {
                return Ok(());
            }
        }
        self.retry_set_aside(k, out).await
    }

    /// Tells every dependent of `entry`. A dependent that cannot be told does not stop the
    /// others: the entry is then set aside whole (telling a dependent twice changes nothing).
    async fn deliver(&self, entry: &[u8]) -> std::result::Result<(), Fault> {
        let (kind, id, refs) = parse_entry(entry)
            .ok_or_else(|| Fault::Entry("malformed outbox entry: it does not parse".into()))?;
        let mut first: Option<String> = None;
        for (dependent, dq) in refs {
            let told = if kind == b'S' {
                self.dep_satisfy(dq, dependent, id).await
            } else {
                self.fail_dependent(dq, dependent, id).await
            };
            match told {
                Ok(()) => {}
                Err(e) if entry_error(&e) => {
                    first.get_or_insert_with(|| {
                        format!(
                            "telling dependent {} in queue {dq:?}: {e}",
                            record::id_text(dependent)
                        )
                    });
                }
                Err(e) => return Err(Fault::Round(e)),
            }
        }
        first.map_or(Ok(()), |reason| Err(Fault::Entry(reason)))
    }

    /// Moves `entry` to the set-aside zset (or counts another failed attempt of one already
    /// there) and notes it in `out`.
    async fn aside(
        &self,
        k: &QueueKeys,
        entry: &[u8],
        reason: String,
        out: &mut Resolved,
    ) -> Result<()> {
        let parsed = parse_entry(entry);
        let mut inv = SCRIPTS.dep_aside.prepare_invoke();
        inv.key(&k.outbox)
            .key(&k.set_aside)
            .key(&k.set_aside_why)
            .arg(entry)
            .arg(&reason)
            .arg(if parsed.is_some() { "retry" } else { "never" });
        let mut c = self.conn.clone();
        let attempts: u64 = inv.invoke_async(&mut c).await?;
        if attempts > 0 {
            out.set_aside.push(SetAside {
                dependency: parsed.map_or_else(|| "?".into(), |(_, id, _)| record::id_text(id)),
                reason,
                attempts,
            });
        }
        Ok(())
    }

    /// Tries again the set-aside entries of the queue that are due (by the Redis clock).
    async fn retry_set_aside(&self, k: &QueueKeys, out: &mut Resolved) -> Result<()> {
        let mut c = self.conn.clone();
        type Head = Vec<(Vec<u8>, f64)>;
        let ((secs, micros), head): ((u64, u64), Head) = redis::pipe()
            .cmd("TIME")
            .zrange_withscores(&k.set_aside, 0, ROUND - 1)
            .query_async(&mut c)
            .await?;
        let now = (secs * 1000 + micros / 1000) as f64;
        for (entry, due) in head {
            if due > now {
                break; // in score order: the rest are later
            }
            match self.deliver(&entry).await {
                Ok(()) => {
                    let _: () = redis::pipe()
                        .atomic()
                        .zrem(&k.set_aside, &entry)
                        .hdel(&k.set_aside_why, &entry)
                        .query_async(&mut c)
                        .await?;
                    if let Some((_, id, _)) = parse_entry(&entry) {
                        out.recovered.push(record::id_text(id));
                    }
                }
                Err(Fault::Entry(reason)) => self.aside(k, &entry, reason, out).await?,
                Err(Fault::Round(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// The entries set aside in `queue`: entry, failed attempts, reason.
    #[cfg(test)]
    pub(crate) async fn set_aside_entries(&self, queue: &str) -> Result<Vec<(Vec<u8>, String)>> {
        let mut c = self.conn.clone();
        let why: Vec<(Vec<u8>, String)> = c.hgetall(&QueueKeys::new(queue).set_aside_why).await?;
        Ok(why)
    }
}

/// An outbox entry: `S`/`F`, the dependency id, its references; `None` if it does not parse.
#[allow(clippy::type_complexity)]
fn parse_entry(entry: &[u8]) -> Option<(u8, &[u8], Vec<(&[u8], &str)>)> {
    let (&kind, rest) = entry.split_first()?;
    if kind != b'S' && kind != b'F' {
        return None;
    }
    let (id, refs) = rest.split_at_checked(16)?;
    Some((kind, id, parse_references(refs)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::RedisServer;

    #[tokio::test]
    async fn malformed_entries_are_each_set_aside_once_with_their_reason() {
        let redis = RedisServer::start();
        let b = Broker::connect(&redis.url()).await.unwrap();
        let k = QueueKeys::new("qm");
        let mut c = b.conn.clone();
        let _: () = c
            .rpush(&k.outbox, &["garbage-1", "garbage-2"])
            .await
            .unwrap();
        let r = b.resolve_outbox("qm").await.unwrap();
        assert_eq!(r.delivered, 0);
        assert_eq!(r.set_aside.len(), 2, "{r:?}");
        assert!(r
            .set_aside
            .iter()
            .all(|a| a.attempts == 1 && a.dependency == "?"));
        // Never tried again: it cannot parse.
        let r = b.resolve_outbox("qm").await.unwrap();
        assert!(r.set_aside.is_empty() && r.recovered.is_empty(), "{r:?}");
        let left: u64 = c.llen(&k.outbox).await.unwrap();
        assert_eq!(left, 0);
        let why = b.set_aside_entries("qm").await.unwrap();
        assert_eq!(why.len(), 2, "each kept on its own, raw: {why:?}");
        for (entry, reason) in why {
            assert!(entry.starts_with(b"garbage-"));
            assert!(
                reason.starts_with("1|") && reason.ends_with("does not parse"),
                "{reason}"
            );
        }
    }

    #[tokio::test]
    async fn only_the_newest_thousand_malformed_entries_are_kept() {
        let redis = RedisServer::start();
        let b = Broker::connect(&redis.url()).await.unwrap();
        let k = QueueKeys::new("qg");
        let mut c = b.conn.clone();
        let garbage: Vec<String> = (0..1005).map(|i| format!("garbage-{i:05}")).collect();
        for g in &garbage {
            let _: () = c.rpush(&k.outbox, g).await.unwrap();
            // One at a time, so that each is set aside at its own moment.
            b.resolve_outbox("qg").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_micros(1100)).await;
        }
        let kept: Vec<String> = c.zrange(&k.set_aside, 0, -1).await.unwrap();
        let why: u64 = c.hlen(&k.set_aside_why).await.unwrap();
        assert_eq!((kept.len(), why), (1000, 1000));
        assert_eq!(kept[0], garbage[5], "the oldest five went, in age order");
    }

    #[tokio::test]
    async fn one_resolver_at_a_time_and_a_stalled_one_is_taken_over() {
        let redis = RedisServer::start();
        let b = Broker::connect(&redis.url()).await.unwrap();
        let k = QueueKeys::new("qc");
        let mut c = b.conn.clone();
        let _: () = c.rpush(&k.outbox, "garbage").await.unwrap();
        // Another resolver holds the claim (and then stalls: its claim lapses in 300 ms).
        let _: () = redis::cmd("SET")
            .arg(&k.outbox_claim)
            .arg("someone else")
            .arg("PX")
            .arg(300)
            .query_async(&mut c)
            .await
            .unwrap();
        let r = b.resolve_outbox("qc").await.unwrap();
        assert!(r.busy && r.set_aside.is_empty(), "{r:?}");
        let left: u64 = c.llen(&k.outbox).await.unwrap();
        assert_eq!(left, 1, "left to the holder");
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let r = b.resolve_outbox("qc").await.unwrap();
        assert!(!r.busy && r.set_aside.len() == 1, "taken over: {r:?}");
        let claim: Option<String> = c.get(&k.outbox_claim).await.unwrap();
        assert_eq!(claim, None, "dropped after the round");
    }

    #[test]
    fn entries_parse_only_with_a_known_kind_and_whole_references() {
        let mut e = b"S".to_vec();
        e.extend([1u8; 16]);
        e.extend([2u8; 16]);
        e.push(1);
        e.push(b'q');
        let (kind, id, refs) = parse_entry(&e).unwrap();
        assert_eq!(
            (kind, id, refs),
            (b'S', &[1u8; 16][..], vec![(&[2u8; 16][..], "q")])
        );
        e[0] = b'X';
        assert!(parse_entry(&e).is_none());
        assert!(parse_entry(b"S short").is_none());
    }
}

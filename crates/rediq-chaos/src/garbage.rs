//! Garbage in a served queue's keys, written straight into Redis while the servers run, then
//! removed again: a non-integer fencing counter, a wrong-type `pending`, `pending:50`, `bands`,
//! `retry` or `wake` key, and undecodable members in the band list `pending:50` (which must
//! each be set aside in the dead-letter queue on their own, and are left there).
//!
//! The keys of the pending tasks (`crates/rediq/src/broker/scripts/bands.lua`):
//! - `pending:<p>`: one list per priority band p (0..=100), the tasks' records, oldest first;
//! - `bands`: the zset naming the bands whose list may hold tasks (member = score = p). A fetch
//!   reads only the bands it names, lowest first;
//! - `pending`: the single zset of versions before the band lists. Nothing writes it any more;
//!   the janitor moves what it holds into the bands (migrate.lua), which raises CORRUPT on a
//!   wrong type there;
//! - `pending:foreign`: where a fetch moves members that are no record of ours, on their way to
//!   the dead-letter queue (bury.lua). The suite leaves it alone: the planted members pass
//!   through it.
//!
//! The key names mirror `crates/rediq/src/broker/keys.rs` on purpose: this module corrupts
//! Rediq's own keys, which no public API reaches. A key holding tasks is renamed aside (into
//! the same hash tag) before the garbage takes its place, and renamed back when the garbage
//! goes, so every task lost is lost by Rediq, not by the suite.

use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::execlog::now_ms;
use crate::faults::{Fault, Scope};
use crate::workload::GARBAGE_QUEUE;

/// How long each piece of garbage stays.
const HOLD: Duration = Duration::from_secs(2);
/// Pause between two pieces.
const GAP: Duration = Duration::from_secs(1);

/// The priority band whose list takes the garbage. The producer draws each task's priority
/// uniformly from 0..=100 (`workload::pick_unit`), so no band holds all of the chaos tasks:
/// 50 is the default priority, and the band `bands.lua` gives a member too short to carry a
/// priority byte. Its list is rarely long (a task in 101 lands there) and often absent, so the
/// garbage also names the band in `bands`, which makes every fetch that gets past the lower
/// bands read the list.
const BAND: u8 = 50;
/// `pending:50`: the band list, as `QueueKeys::band` names it.
const BAND_LIST: &str = "pending:50";

/// Raw members planted in the band list `pending:50`: two short ones that share one (empty) id,
/// a foreign format byte, a valid head with an undecodable body, plain text. All distinct, so
/// each can be found again in the dead-letter queue by its payload. A fetch leases only the one
/// with a valid head (a worker then fails to decode it and kills it); it moves the others to
/// `pending:foreign`, from which they are buried one by one.
pub fn planted() -> Vec<Vec<u8>> {
    let mut bad_body = vec![1u8, 50];
    bad_body.extend_from_slice(&[0xab; 16]);
    bad_body.extend_from_slice(b"\xc1\xc1not messagepack");
    vec![
        b"x".to_vec(),
        b"y".to_vec(),
        [vec![9u8; 20], b"format nine".to_vec()].concat(),
        bad_body,
        b"hello, I am not a task record at all".to_vec(),
    ]
}

fn key(name: &str) -> String {
    format!("rediq:{{{GARBAGE_QUEUE}}}:{name}")
}

fn aside(name: &str) -> String {
    format!("rediq:{{{GARBAGE_QUEUE}}}:chaos-aside:{name}")
}

#[derive(Debug, Clone, Copy)]
enum Piece {
    Token,
    WrongType(&'static str),
    Undecodable,
}

/// Writes each piece of garbage in turn (at least one round, then until `until`).
pub async fn inject(
    url: &str,
    until: Instant,
    notes: &mut Vec<String>,
) -> Result<Vec<Fault>, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("garbage: cannot connect: {e}"))?;
    let pieces = [
        // `token`: the fencing counter every fetch INCRs.
        Piece::Token,
        // The pending zset of earlier versions, which only the janitor's migration reads.
        Piece::WrongType("pending"),
        // A band list: enqueues and give-backs of priority 50 push onto it, fetches read it.
        Piece::WrongType(BAND_LIST),
        // The bands zset: every fetch reads it, every push to any band adds to it.
        Piece::WrongType("bands"),
        Piece::WrongType("retry"),
        Piece::WrongType("wake"),
        Piece::Undecodable,
    ];
    let mut faults = Vec::new();
    let mut round = 0;
    loop {
        for p in pieces {
            // Undecodable members are planted once: the accounting looks for each of them.
            if matches!(p, Piece::Undecodable) && round > 0 {
                continue;
            }
            let start_ms = now_ms();
            apply(&mut c, p)
                .await
                .map_err(|e| format!("garbage {p:?}: {e}"))?;
            tokio::time::sleep(HOLD).await;
            remove(&mut c, p)
                .await
                .map_err(|e| format!("removing garbage {p:?}: {e}"))?;
            faults.push(Fault {
                what: format!("garbage {p:?} in {GARBAGE_QUEUE}"),
                scope: Scope::All,
                start_ms,
                end_ms: now_ms(),
                switch: None,
            });
            tokio::time::sleep(GAP).await;
        }
        round += 1;
        // The pieces of one more round (the undecodable members are not planted again).
        let next = (HOLD + GAP) * (pieces.len() as u32 - 1);
        if Instant::now() + next > until {
            break;
        }
    }
    notes.push(format!(
        "{} garbage writes in {round} round(s); {} undecodable members planted",
        faults.len(),
        planted().len()
    ));
    Ok(faults)
}

async fn apply(c: &mut redis::aio::MultiplexedConnection, p: Piece) -> redis::RedisResult<()> {
    match p {
        Piece::Token => {
            // Keep the counter aside: the fencing tokens must keep growing afterwards.
            let _: () = redis::Script::new(
                "local v = redis.call('GET', KEYS[1]) or '0' \
                 redis.call('SET', KEYS[2], v) redis.call('SET', KEYS[1], 'not-a-number')",
            )
            .key(key("token"))
            .key(aside("token"))
            .invoke_async(c)
            .await?;
        }
        Piece::WrongType(name) => {
            let _: () = redis::Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[2]) end \
                 redis.call('SET', KEYS[1], 'garbage of the wrong type')",
            )
            .key(key(name))
            .key(aside(name))
            .invoke_async(c)
            .await?;
            if name == BAND_LIST {
                // Named in `bands` (the zset is intact meanwhile: one piece at a time), so that
                // a fetch reads the broken list even when the band held no task.
                let _: () = c.zadd(key("bands"), BAND.to_string(), BAND).await?;
            }
        }
        Piece::Undecodable => {
            // At the tail of the band list, as an enqueue pushes (RPUSH), and the band named in
            // `bands` (as every push does), so that a fetch reaches them.
            for raw in planted() {
                let _: () = c.rpush(key(BAND_LIST), raw).await?;
            }
            let _: () = c.zadd(key("bands"), BAND.to_string(), BAND).await?;
            let _: () = c.zadd(key("wake"), "w", 0).await?;
        }
    }
    Ok(())
}

async fn remove(c: &mut redis::aio::MultiplexedConnection, p: Piece) -> redis::RedisResult<()> {
    match p {
        Piece::Token => {
            let _: () = redis::Script::new(
                "local v = tonumber(redis.call('GET', KEYS[2]) or '0') or 0 \
                 redis.call('SET', KEYS[1], v + 1000) redis.call('DEL', KEYS[2])",
            )
            .key(key("token"))
            .key(aside("token"))
            .invoke_async(c)
            .await?;
        }
        Piece::WrongType(name) => {
            // The band stays named in `bands` after `pending:50` is repaired: a fetch that finds
            // its list empty removes it (fetch.lua).
            let _: () = redis::Script::new(
                "redis.call('DEL', KEYS[1]) \
                 if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[1]) end \
                 redis.call('ZADD', KEYS[3], 0, 'w')",
            )
            .key(key(name))
            .key(aside(name))
            .key(key("wake"))
            .invoke_async(c)
            .await?;
        }
        Piece::Undecodable => {} // stays: Rediq must set each member aside by itself
    }
    Ok(())
}

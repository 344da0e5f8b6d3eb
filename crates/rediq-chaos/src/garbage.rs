//! Garbage in a served queue's keys, written straight into Redis while the servers run, then
//! removed again: a non-integer fencing counter, a `pending`, `retry` or `wake` key of the
//! wrong type, and undecodable members in `pending` (which must each be set aside in the
//! dead-letter queue on their own, and are left there).
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

/// Raw members planted in `pending`: two short ones that share one (empty) id, a foreign
/// format byte, a valid head with an undecodable body, plain text. All distinct, so each can be
/// found again in the dead-letter queue by its payload.
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
        Piece::Token,
        Piece::WrongType("pending"),
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
            });
            tokio::time::sleep(GAP).await;
        }
        round += 1;
        if Instant::now() + (HOLD + GAP) * 4 > until {
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
        }
        Piece::Undecodable => {
            for raw in planted() {
                let _: () = c.zadd(key("pending"), raw, 0).await?;
            }
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

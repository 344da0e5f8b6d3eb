//! Setting garbage aside: members of a queue's sets, or entries of a server's active hash, that
//! are no record of ours (written by something else, or damaged). Each piece goes to the
//! dead-letter queue on its own (`bury.lua`), as a task of type `rediq:undecodable` whose
//! payload is its raw bytes and whose error says why, so none can hide another: garbage has no
//! id of its own, and two pieces keyed by what their bytes would hold as an id used to overwrite
//! each other.

use redis::Value;

use super::keys::QueueKeys;
use super::{parse_active, record, Broker, Expired, SCRIPTS};
use crate::{Error, Result};

/// An active entry without the `token|record` shape: the field and the raw value.
pub(crate) type Unparsable = (Vec<u8>, Vec<u8>);

impl Broker {
    /// Sets aside the pending members `fetch.lua` did not lease (no record of ours); returns how
    /// many this call moved (another server may have moved some first) — also when it stopped
    /// at an error, which comes second: the pieces moved before it are dead-lettered all the
    /// same and must be counted.
    pub(super) async fn bury_foreign(&self, queue: &str, members: Value) -> (usize, Result<()>) {
        let mut moved = 0;
        let r = self.bury_each(queue, members, &mut moved).await;
        (moved, r)
    }

    /// Sets aside what a fetch moved to the foreign list and a crash kept from reaching the
    /// dead-letter queue (fetch.lua hands the pieces to [`Broker::bury_foreign`] at once).
    pub async fn bury_leftover_foreign(&self, queue: &str) -> Result<usize> {
        let mut c = self.conn.clone();
        let left: Value = redis::cmd("LRANGE")
            .arg(&QueueKeys::new(queue).foreign)
            .arg(0)
            .arg(99)
            .query_async(&mut c)
            .await?;
        let (n, done) = self.bury_foreign(queue, left).await;
        done.map(|()| n)
    }

    async fn bury_each(&self, queue: &str, members: Value, moved: &mut usize) -> Result<()> {
        let members: Vec<Vec<u8>> = redis::from_redis_value(members)
            .map_err(|e| Error::Serialization(format!("fetch.lua reply: {e}")))?;
        let k = QueueKeys::new(queue);
        for raw in members {
            let reason = match record::decode(queue, &raw) {
                Err(reason) => reason,
                // fetch.lua judges by the head alone; whatever it refused is not ours.
                Ok(_) => format!("format byte {} is not 1", raw.first().copied().unwrap_or(0)),
            };
            let dead = record::undecodable(&raw, &reason);
            let mut c = self.conn.clone();
            let n: i64 = SCRIPTS
                .bury
                .key(&k.foreign)
                .key(&k.dead)
                .key(&k.leases)
                .arg("pending")
                .arg(&raw[..])
                .arg(dead)
                .invoke_async(&mut c)
                .await?;
            if n == 1 {
                tracing::error!(queue, %reason, bytes = raw.len(), "undecodable pending member moved to the dead-letter queue");
                *moved += 1;
            }
        }
        Ok(())
    }

    /// Moves an unparsable entry of `server`'s active hash to the dead-letter queue as `dead`,
    /// only while the entry still holds `value` and the server's lease has lapsed (recoverer).
    /// `false` = it changed, is gone, or the lease was renewed.
    pub async fn bury_active(
        &self,
        queue: &str,
        server: &str,
        (field, value): &Unparsable,
        dead: &[u8],
    ) -> Result<bool> {
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let n: i64 = SCRIPTS
            .bury
            .key(k.active(server))
            .key(&k.dead)
            .key(&k.leases)
            .arg("active")
            .arg(&field[..])
            .arg(dead)
            .arg(&value[..])
            .arg(server)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// The tasks `server` holds on `queue`, and the entries that do not parse (read only).
    pub async fn held_all(
        &self,
        queue: &str,
        server: &str,
    ) -> Result<(Vec<Expired>, Vec<Unparsable>)> {
        use redis::AsyncCommands;
        let k = QueueKeys::new(queue);
        let mut c = self.conn.clone();
        let all: Vec<(Vec<u8>, Vec<u8>)> = c.hgetall(k.active(server)).await?;
        let mut held = Vec::with_capacity(all.len());
        let mut bad = Vec::new();
        for (id, value) in all {
            match parse_active(&value) {
                Some((token, record)) => held.push(Expired {
                    record: record.to_vec(),
                    id,
                    token,
                }),
                None => bad.push((id, value)),
            }
        }
        Ok((held, bad))
    }
}

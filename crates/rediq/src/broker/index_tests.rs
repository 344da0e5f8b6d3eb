//! The id index under the sequences a fresh-eyes review found defects in (flush, kill and rerun,
//! the finished-id cap, ids that are not random): each failed on the index as first built.

use std::time::Duration;

use redis::AsyncCommands;

use super::*;
use crate::testing::RedisServer;
use crate::{Existing, Task};

const Q: &str = "rv";
const S: &str = "host:1:review";
const LEASE: Duration = Duration::from_secs(30);
const LIMITS: DeadLimits = DeadLimits {
    max_count: 1_000_000,
    max_age: Duration::from_secs(3600),
};

fn new_task_from(t: &Task) -> NewTask {
    NewTask {
        record: record::encode(t).unwrap(),
        task_type: t.task_type.clone(),
        delay_ms: 0,
        unique: None,
    }
}

fn mk() -> (NewTask, Vec<u8>) {
    let t = Task::builder("t").queue(Q).build().unwrap();
    let id = record::id_bytes(&t.id).unwrap().to_vec();
    (new_task_from(&t), id)
}

async fn broker(redis: &RedisServer, max_records: u64) -> Broker {
    let mut b = Broker::connect(&redis.url()).await.unwrap();
    b.set_dep_limits(DepLimits {
        retention: Duration::from_secs(3600),
        max_records,
    });
    b
}

async fn fetch_one(b: &Broker) -> (u64, Vec<u8>) {
    let f = b.fetch(Q, S, 10, LEASE).await.unwrap().unwrap();
    assert_eq!(f.records.len(), 1);
    (f.token, f.records[0].clone())
}

/// Fetches the one pending task and dead-letters it.
async fn kill_one(b: &Broker, id: &[u8]) {
    let (tok, rec) = fetch_one(b).await;
    assert!(b
        .kill(Q, S, id, tok, &rec, None, LIMITS, false)
        .await
        .unwrap());
}

/// Re-runs the dead record of `id`; returns how many records went back.
async fn rerun_dead(b: &Broker, id: &[u8]) -> u64 {
    let dead = b.dead_records(Q, Some(&[id.to_vec()]), 1).await.unwrap();
    b.rerun(Q, &[(dead[0].clone(), dead[0].clone())])
        .await
        .unwrap()
}

/// Fetches and completes everything pending.
/// Leaves the index as an earlier version did after completing tasks it had not indexed (tasks
/// written by a version without the index): one completion entry per id ('C' and a 6-byte
/// time) in the id's bucket at the first level, counted in the meta, never split (such calls
/// passed no split keys). Completions now go to the done hash instead, so this state is
/// written directly.
async fn complete_unindexed(b: &Broker, tasks: &[Task]) {
    let k = QueueKeys::new(Q);
    let mut c = b.conn.clone();
    for chunk in tasks.chunks(1000) {
        let mut pipe = redis::pipe();
        for t in chunk {
            let id = record::id_bytes(&t.id).unwrap();
            let bucket = super::index::ix_hash(&id) % (1 << super::index::MIN_LEVEL);
            pipe.hset(k.ix_bucket(0, bucket), &id[..], b"C\0\0\0\0\0\x01")
                .ignore();
        }
        let _: () = pipe.query_async(&mut c).await.unwrap();
    }
    let _: () = c.hincr(&k.ix_meta, "n", tasks.len()).await.unwrap();
}

async fn pending(b: &Broker) -> u64 {
    b.pending_len(&QueueKeys::new(Q)).await.unwrap()
}

/// Found by review (defect A), fixed since: (ix_lookup.lua / dep_register.lua): after a flush, `deps:failed` still names a
/// killed id; the same id enqueued again is live, yet the queue reports it as Failed (a
/// dependent registering on it would be dead-lettered "dependency failed").
#[tokio::test]
async fn a_task_enqueued_again_after_a_flush_reads_as_live() {
    let redis = RedisServer::start();
    let b = broker(&redis, 100_000).await;
    let (new, id) = mk();
    assert_eq!(
        b.enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
            .await
            .unwrap(),
        vec![None]
    );
    kill_one(&b, &id).await;
    b.flush(Q, &[]).await.unwrap();
    // The flushed queue forgot the id: it is written again and is live.
    assert_eq!(
        b.enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
            .await
            .unwrap(),
        vec![None]
    );
    assert_eq!(pending(&b).await, 1);
    assert_eq!(
        b.known(Q, &id).await.unwrap(),
        Some(Existing::Live),
        "a pending task reads as failed"
    );
}

/// Found by review (defect B), fixed since: (ix_evict.lua:41): a finished-list entry from before a flush evicts the 'L' entry
/// of the live task of the same id (the id is still in deps:failed), so a retried enqueue
/// writes it a second time while it runs: it runs twice.
#[tokio::test]
async fn evicting_an_old_finish_keeps_the_entry_of_a_live_task() {
    let redis = RedisServer::start();
    let b = broker(&redis, 0).await;
    let (new, id) = mk();
    b.enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
        .await
        .unwrap();
    kill_one(&b, &id).await;
    b.flush(Q, &[]).await.unwrap();
    assert_eq!(
        b.enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
            .await
            .unwrap(),
        vec![None]
    );
    let (_running, _) = fetch_one(&b).await; // the task runs now
    b.evict_finished(Q).await.unwrap(); // the janitor
                                        // A producer retries its enqueue (say, after a lost reply): the task runs.
    let again = b
        .enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
        .await
        .unwrap();
    assert_eq!(
        pending(&b).await,
        0,
        "the running task was written again: it runs twice"
    );
    assert_eq!(again, vec![Some(NotWritten::Known(Existing::Live))]);
}

/// Found by review (defect C), fixed since: (rerun.lua): rerun writes a dead record's task although its id is live (the index
/// says 'L' and rerun.lua reads it, but only to count). Reached without any flush: the
/// finished-list cap forgets a dead id long before its dead record goes (100,000 finished ids,
/// shared with completions, against 100,000 dead records / 90 days), the producer's enqueue of
/// the id is then written, and a rerun of the dead record runs the task a second time.
#[tokio::test]
async fn a_dead_record_whose_id_is_live_is_not_rerun() {
    let redis = RedisServer::start();
    let b = broker(&redis, 0).await;
    let (new, id) = mk();
    b.enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
        .await
        .unwrap();
    kill_one(&b, &id).await;
    b.evict_finished(Q).await.unwrap(); // cap reached: the dead id is forgotten, its record stays
    assert_eq!(
        b.enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
            .await
            .unwrap(),
        vec![None]
    );
    let _ = fetch_one(&b).await; // running
    let moved = rerun_dead(&b, &id).await;
    assert_eq!(
        moved, 0,
        "rerun wrote a task whose id is live (running): it runs twice"
    );
}

/// Found by review (defect D), fixed since: (ix_evict.lua:39-41): kill, rerun, complete leaves two finished-list entries for
/// one id; evicting the older (kill) entry drops the 'C' of the newest completion, so with
/// `max_records = 1` the id that finished last is forgotten at once and an enqueue of it runs
/// it again.
#[tokio::test]
async fn an_older_finish_does_not_forget_a_newer_completion() {
    let redis = RedisServer::start();
    let b = broker(&redis, 1).await;
    let (new, id) = mk();
    b.enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
        .await
        .unwrap();
    kill_one(&b, &id).await;
    assert_eq!(rerun_dead(&b, &id).await, 1);
    let (tok, _) = fetch_one(&b).await;
    let ack = Ack {
        id: id.clone(),
        token: tok,
        unique_key: None,
    };
    assert!(b.complete(Q, S, &[ack], None, 7).await.unwrap().is_empty());
    b.evict_finished(Q).await.unwrap(); // keeps the newest 1 finished id: this one
    let again = b
        .enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![Some(NotWritten::Known(Existing::Completed))],
        "the newest completion was forgotten"
    );
}

/// Found by review (defect E), fixed since: (index.lua:211, ix_close): a split passes a whole bucket half to `unpack`; Lua's
/// limit (8000 values = 4000 entries) raises a plain error AFTER the script's writes, and the
/// meta is never updated, so every later adding call repeats it. Buckets get that big when ids
/// are added by calls that may not split (W = 0: complete/kill/cancel/dep_fail of ids the index
/// does not know, i.e. tasks enqueued by a version without the index, or after a flush raced a
/// fetch) — here 4,500 such completions of ids crafted into one bucket (with random ids the
/// same happens at ~512k such completions at level 6, reachable with dependency_max_records
/// raised above that, as docs suggest for long dependency memory).
#[tokio::test]
async fn an_overfull_bucket_splits_without_an_error() {
    let redis = RedisServer::start();
    let b = broker(&redis, 1_000_000).await;
    let k = QueueKeys::new(Q);
    let mut c = b.conn.clone();
    // Tasks written without the index (as an older version did): all in bucket 0 at level 6,
    // all moving to bucket 64 on its split (hash byte 14 = 0x40).
    let tasks: Vec<Task> = (0..4500u32)
        .map(|i| {
            let mut t = Task::builder("t").queue(Q).build().unwrap();
            let mut raw = record::id_bytes(&t.id).unwrap();
            raw[10] = (i >> 8) as u8;
            raw[11] = i as u8;
            raw[12] = 0;
            raw[13] = 0x40;
            t.id = uuid::Uuid::from_bytes(raw).to_string();
            t
        })
        .collect();
    complete_unindexed(&b, &tasks).await;
    let n: Option<u64> = c.hget(&k.ix_meta, "n").await.unwrap();
    eprintln!("index entries after completions: {n:?} (level 6, no split)");
    // A plain enqueue: its task is written, then the split raises.
    let (new, _) = mk();
    let r = b.enqueue(Q, &[new], EnqueueMode::Each).await;
    eprintln!("enqueue answered: {r:?}; pending now {}", pending(&b).await);
    let written_anyway = pending(&b).await;
    // The split never lands (the meta is not written), so every later new id fails the same way.
    let (new2, _) = mk();
    let r2 = b.enqueue(Q, &[new2], EnqueueMode::Each).await;
    eprintln!(
        "next enqueue answered: {r2:?}; pending now {}",
        pending(&b).await
    );
    assert!(
        r.is_ok(),
        "enqueue failed after writing its task ({written_anyway} pending): {r:?}"
    );
}

/// Found by review (liveness), fixed since: (index.rs with_index, index.lua:75): an index far over its load (here through
/// 30,000 completions of ids it did not know, W = 0, as after an upgrade with a backlog) sends
/// racing producers back with IXSTALE each time another one's splits move the pointer past
/// their window; a producer that loses 16 rounds gets Error::Corrupt "the index kept changing".
#[tokio::test]
async fn racing_producers_on_an_overloaded_index_all_get_through() {
    let redis = RedisServer::start();
    let b = broker(&redis, 1_000_000).await;
    let tasks: Vec<Task> = (0..30_000)
        .map(|_| Task::builder("t").queue(Q).build().unwrap())
        .collect();
    complete_unindexed(&b, &tasks).await;
    let mut producers = Vec::new();
    for _ in 0..64 {
        let url = redis.url();
        producers.push(tokio::spawn(async move {
            let b = Broker::connect(&url).await.unwrap();
            let mut errors = Vec::new();
            for _ in 0..20 {
                let (new, _) = mk();
                if let Err(e) = b.enqueue(Q, &[new], EnqueueMode::Each).await {
                    errors.push(e.to_string());
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for p in producers {
        errors.extend(p.await.unwrap());
    }
    eprintln!(
        "{} of 1280 enqueues failed; first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(errors.is_empty());
}

/// Found by review (defect F), fixed since: (index.lua:83 ix_hash + :211): the bucket is chosen from id bytes 11..14 only,
/// which `Task::id` (a public field, any UUID accepted) need not make random: a UUIDv1/v6 id
/// carries the host's MAC there, so every id of one producer host lands in one bucket. It
/// grows without bound (splits never move it until the level reaches a set bit of the MAC),
/// and once it must move, the split raises "too many results to unpack" after each enqueue
/// wrote its tasks: every enqueue of the queue fails from then on.
#[tokio::test]
async fn uuid_v1_ids_spread_over_the_buckets() {
    let redis = RedisServer::start();
    let b = broker(&redis, 1_000_000).await;
    let mac = [0x02u8, 0x42, 0xac, 0x11, 0x00, 0x02]; // a docker host's MAC
    let mut first_error = None;
    for batch in 0..60u32 {
        let news: Vec<NewTask> = (0..1000u32)
            .map(|i| {
                let mut t = Task::builder("t").queue(Q).build().unwrap();
                let mut raw = [0u8; 16];
                raw[..4].copy_from_slice(&(batch * 1000 + i).to_be_bytes()); // time_low
                raw[6] = 0x11; // version 1
                raw[8] = 0x80;
                raw[10..16].copy_from_slice(&mac);
                t.id = uuid::Uuid::from_bytes(raw).to_string();
                new_task_from(&t)
            })
            .collect();
        if let Err(e) = b.enqueue(Q, &news, EnqueueMode::Each).await {
            first_error = Some((batch, e.to_string(), pending(&b).await));
            break;
        }
    }
    let mut c = b.conn.clone();
    let meta: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(&QueueKeys::new(Q).ix_meta)
        .arg(&["l", "s", "n"])
        .query_async(&mut c)
        .await
        .unwrap();
    eprintln!("meta l/s/n {meta:?}; first error {first_error:?}");
    assert!(first_error.is_none(), "{first_error:?}");
}

/// Probe: 6 brokers with their own cached views enqueue
/// batches of new and repeated ids concurrently, completing some; afterwards every entry sits in
/// the bucket linear hashing names for the final (level, split), every id is found, and `n`
/// equals the number of entries.
#[tokio::test]
async fn concurrent_growth_keeps_every_entry_addressable() {
    let redis = RedisServer::start();
    let mut handles = Vec::new();
    for w in 0..6u64 {
        let url = redis.url();
        handles.push(tokio::spawn(async move {
            let b = Broker::connect(&url).await.unwrap();
            let mut mine: Vec<NewTask> = Vec::new();
            let mut ids: Vec<Vec<u8>> = Vec::new();
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (w + 1);
            let mut rnd = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for _ in 0..60 {
                let k = 1 + (rnd() % 300) as usize;
                let mut batch = Vec::new();
                for _ in 0..k {
                    if !mine.is_empty() && rnd() % 5 == 0 {
                        batch.push(mine[(rnd() % mine.len() as u64) as usize].clone());
                    } else {
                        let (n, id) = mk();
                        mine.push(n.clone());
                        ids.push(id);
                        batch.push(n);
                    }
                }
                b.enqueue(Q, &batch, EnqueueMode::Each).await.unwrap();
                if rnd() % 3 == 0 {
                    let server = format!("host:{w}:probe");
                    if let Some(f) = b.fetch(Q, &server, 50, LEASE).await.unwrap() {
                        let acks = super::test_util::acks(&f);
                        b.complete(Q, &server, &acks, None, rnd()).await.unwrap();
                    }
                }
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let b = broker(&redis, 1_000_000).await;
    let k = QueueKeys::new(Q);
    let mut c = b.conn.clone();
    let (l, s, n): (u32, u64, u64) = redis::cmd("HMGET")
        .arg(&k.ix_meta)
        .arg(&["l", "s", "n"])
        .query_async(&mut c)
        .await
        .unwrap();
    let mut entries = 0u64;
    let mut misplaced = 0u64;
    for bucket in 0..(1u64 << (l + 1)) {
        let fields: Vec<Vec<u8>> = c.hkeys(k.ix_bucket(0, bucket)).await.unwrap();
        for f in fields {
            entries += 1;
            let h = index::ix_hash(&f);
            let mut want = h % (1 << l);
            if want < s {
                want = h % (1 << (l + 1));
            }
            if want != bucket {
                misplaced += 1;
            }
        }
    }
    let mut unknown = 0;
    for id in &all {
        if b.known(Q, id).await.unwrap().is_none() {
            unknown += 1;
        }
    }
    eprintln!(
        "level {l} split {s} n {n} entries {entries} misplaced {misplaced} unknown {unknown} of {}",
        all.len()
    );
    assert_eq!((misplaced, unknown, n), (0, 0, entries));
}

/// Found by review (defect B), fixed since: without a flush: kill, rerun, kill leaves two finished entries; the first eviction
/// drops 'F' (the id stays in deps:failed and its dead record in the dead set), the producer's
/// enqueue of the id is then written, and the second eviction drops the 'L' of that live,
/// running task: the next enqueue writes it again (runs twice). Cap = 1 finished id.
#[tokio::test]
async fn kill_rerun_kill_and_evictions_never_write_a_live_task_twice() {
    let redis = RedisServer::start();
    let b = broker(&redis, 1).await;
    let (new, id) = mk();
    b.enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
        .await
        .unwrap();
    kill_one(&b, &id).await;
    assert_eq!(rerun_dead(&b, &id).await, 1);
    kill_one(&b, &id).await;
    // The first (older) entry goes from the list, but the index keeps 'F': its entry is the
    // second kill's.
    b.evict_finished(Q).await.unwrap();
    let w = b
        .enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
        .await
        .unwrap();
    assert_eq!(w, vec![Some(NotWritten::Known(Existing::Failed))]);
    assert_eq!(pending(&b).await, 0);
    // Another task finishes; evicting the kill's entry forgets the id for good.
    let (other, oid) = mk();
    b.enqueue(Q, &[other], EnqueueMode::Each).await.unwrap();
    let f = b.fetch(Q, S, 10, LEASE).await.unwrap().unwrap();
    b.complete(
        Q,
        S,
        &[Ack {
            id: oid,
            token: f.token,
            unique_key: None,
        }],
        None,
        9,
    )
    .await
    .unwrap();
    b.evict_finished(Q).await.unwrap();
    assert_eq!(
        b.known(Q, &id).await.unwrap(),
        Some(Existing::Failed),
        "still a failure record"
    );
    // Written again now (the queue forgot it), and it runs once: its dead record cannot be
    // re-run while it is live.
    let w = b
        .enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
        .await
        .unwrap();
    assert_eq!(w, vec![None]);
    assert_eq!(rerun_dead(&b, &id).await, 0);
    let again = b
        .enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
        .await
        .unwrap();
    assert_eq!(again, vec![Some(NotWritten::Known(Existing::Live))]);
    assert_eq!(pending(&b).await, 1);
}

/// Found by review (memory left behind on upgrade): the completion records of a version before
/// the index are deleted by the janitor, and nothing else is.
#[tokio::test]
async fn the_records_of_an_earlier_version_are_deleted() {
    let redis = RedisServer::start();
    let b = broker(&redis, 100).await;
    let k = QueueKeys::new(Q);
    let mut c = b.conn.clone();
    let old = [
        format!("{}:1796128336", k.legacy[0]),
        format!("{}:1796128337", k.legacy[0]),
    ];
    let _: () = redis::pipe()
        .set(&old[0], &[7u8; 32][..])
        .set(&old[1], &[8u8; 16][..])
        .zadd(&k.legacy[0], &old[0], 1)
        .zadd(&k.legacy[0], &old[1], 2)
        .zadd(&k.legacy[0], "not-ours", 3)
        .set("not-ours", "keep")
        .set(&k.legacy[1], 3)
        .set(&k.legacy[2], 1)
        .query_async(&mut c)
        .await
        .unwrap();
    // Two buckets, the count and the flush counter (the emptied zset goes by itself).
    assert_eq!(b.drop_legacy_records(Q).await.unwrap(), 4);
    let left: u64 = redis::cmd("EXISTS")
        .arg(&old)
        .arg(&k.legacy)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let kept: String = c.get("not-ours").await.unwrap();
    assert_eq!(kept, "keep");
    assert_eq!(
        b.drop_legacy_records(Q).await.unwrap(),
        0,
        "nothing left to do"
    );
}

/// Found by review of the done hash: a task that was never indexed (written by an earlier
/// version into the old pending set, moved into the bands by the janitor) has no bucket entry,
/// so after it completed only its done entry knows it. An enqueue of the same id must find it
/// completed, not write it again (and a dependency on it must find it done).
#[tokio::test]
async fn a_completed_task_that_was_never_indexed_is_not_written_again() {
    let redis = RedisServer::start();
    let b = broker(&redis, 1_000).await;
    let k = QueueKeys::new(Q);
    let t = Task::builder("t").queue(Q).build().unwrap();
    let mut c = b.conn.clone();
    let _: () = c
        .zadd(&k.legacy_pending, record::encode(&t).unwrap(), 0)
        .await
        .unwrap();
    assert_eq!(b.migrate_pending(Q).await.unwrap(), 1);
    super::test_util::complete_all(&b, Q, S).await;
    let again = b
        .enqueue(Q, &[new_task_from(&t)], EnqueueMode::Each)
        .await
        .unwrap();
    assert_eq!(again, vec![Some(NotWritten::Known(Existing::Completed))]);
    assert_eq!(b.pending_len(&k).await.unwrap(), 0, "nothing written again");
    let id = record::id_bytes(&t.id).unwrap();
    assert_eq!(b.known(Q, &id).await.unwrap(), Some(Existing::Completed));
}

/// ix_evict.lua removes a completed id's bucket entry unread, as its first removal: a bucket of
/// the wrong type is named, the entries already removed go back, and nothing is forgotten.
#[tokio::test]
async fn a_corrupt_bucket_stops_an_eviction_with_nothing_forgotten() {
    let redis = RedisServer::start();
    let b = broker(&redis, 0).await;
    let k = QueueKeys::new(Q);
    let mut ids = Vec::new();
    for _ in 0..8 {
        let (new, id) = mk();
        b.enqueue(Q, std::slice::from_ref(&new), EnqueueMode::Each)
            .await
            .unwrap();
        ids.push(id);
    }
    super::test_util::complete_all(&b, Q, S).await;
    let mut c = b.conn.clone();
    let finished: u64 = c.llen(&k.finished).await.unwrap();
    assert_eq!(finished, 8);
    // The bucket of the last id (level 6, no splits yet with 8 ids) becomes a string.
    let bad = k.ix_bucket(0, super::index::ix_hash(&ids[7]) % 64);
    let _: () = c.del(&bad).await.unwrap();
    let _: () = c.set(&bad, "garbage").await.unwrap();
    match b.evict_finished(Q).await {
        Err(Error::Corrupt { key, reason }) => {
            assert_eq!(key, bad);
            assert!(reason.contains("a string"), "{reason}");
        }
        other => panic!("expected Error::Corrupt on {bad}, got {other:?}"),
    }
    let after: u64 = c.llen(&k.finished).await.unwrap();
    assert_eq!(after, 8, "the finished list lost entries");
    let mut left = 0;
    for id in &ids[..7] {
        let bucket = k.ix_bucket(0, super::index::ix_hash(id) % 64);
        if bucket != bad {
            assert_eq!(b.known(Q, id).await.unwrap(), Some(Existing::Completed));
            let v: Option<Vec<u8>> = c.hget(&bucket, &id[..]).await.unwrap();
            assert_eq!(
                v.as_deref(),
                Some(&b"L"[..]),
                "a bucket entry was not put back"
            );
            left += 1;
        }
    }
    assert!(
        left > 0,
        "every id shared the corrupt bucket: the test proves nothing"
    );
    // Garbage gone, the same call forgets them all.
    let _: () = c.del(&bad).await.unwrap();
    assert_eq!(b.evict_finished(Q).await.unwrap(), 8);
    for id in &ids[..7] {
        assert_eq!(b.known(Q, id).await.unwrap(), None);
    }
}

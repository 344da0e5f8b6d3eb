//! Corrupt keys against a real redis-server: every script that moves a task refuses with
//! `Error::Corrupt` naming the key, nothing moves, and once the garbage is gone the same call
//! succeeds. Garbage members and unparsable active entries are set aside one by one.

use std::time::Duration;

use super::*;
use crate::testing::RedisServer;
use crate::Task;

const Q: &str = "faults";
const S: &str = "host:1:aaaa";
const LEASE: Duration = Duration::from_secs(60);
const LIMITS: DeadLimits = DeadLimits {
    max_count: 1_000_000,
    max_age: Duration::from_secs(3600),
};

fn tasks(n: usize, delay_ms: u64) -> Vec<NewTask> {
    (0..n)
        .map(|_| {
            let t = Task::builder("f").queue(Q).build().unwrap();
            NewTask {
                record: record::encode(&t).unwrap(),
                task_type: "f".into(),
                delay_ms,
                unique: None,
            }
        })
        .collect()
}

struct Fx {
    _redis: RedisServer,
    b: Broker,
    k: std::sync::Arc<QueueKeys>,
}

impl Fx {
    async fn new() -> Fx {
        let redis = RedisServer::start();
        let b = Broker::connect(&redis.url()).await.unwrap();
        Fx {
            _redis: redis,
            b,
            k: QueueKeys::new(Q),
        }
    }

    async fn set(&self, key: &str, value: &str) {
        let mut c = self.b.conn.clone();
        let _: () = c.set(key, value).await.unwrap();
    }

    async fn del(&self, key: &str) {
        let mut c = self.b.conn.clone();
        let _: () = c.del(key).await.unwrap();
    }

    async fn card(&self, key: &str) -> u64 {
        let mut c = self.b.conn.clone();
        c.zcard(key).await.unwrap()
    }

    /// Pending tasks, in every band.
    async fn pending(&self) -> u64 {
        self.b.pending_len(&self.k).await.unwrap()
    }

    async fn active(&self) -> u64 {
        let mut c = self.b.conn.clone();
        c.hlen(self.k.active(S)).await.unwrap()
    }

    /// (pending, delayed, retry, dead, active)
    async fn where_(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.pending().await,
            self.card(&self.k.delayed).await,
            self.card(&self.k.retry).await,
            self.card(&self.k.dead).await,
            self.active().await,
        )
    }
}

/// The call failed with Error::Corrupt naming `key`, and its message tells what it holds.
#[track_caller]
fn corrupt<T: std::fmt::Debug>(r: Result<T>, key: &str, holds: &str) {
    match r {
        Err(Error::Corrupt { key: k, reason }) => {
            assert_eq!(k, key);
            assert!(reason.contains(holds), "reason {reason:?} lacks {holds:?}");
            assert!(
                !reason.contains("script:"),
                "Redis's suffix is cut: {reason:?}"
            );
        }
        other => panic!("expected Error::Corrupt on {key}, got {other:?}"),
    }
}

#[tokio::test]
async fn fetch_moves_nothing_when_its_keys_are_corrupt() {
    let f = Fx::new().await;
    f.b.enqueue(Q, &tasks(200, 0), EnqueueMode::Each)
        .await
        .unwrap();

    f.set(&f.k.token, "x").await;
    corrupt(f.b.fetch(Q, S, 100, LEASE).await, &f.k.token, "non-integer");
    assert_eq!(f.where_().await, (200, 0, 0, 0, 0));
    f.del(&f.k.token).await;

    let active = f.k.active(S);
    f.set(&active, "x").await;
    corrupt(f.b.fetch(Q, S, 100, LEASE).await, &active, "holds a string");
    assert_eq!(f.pending().await, 200);
    f.del(&active).await;

    f.set(&f.k.leases, "x").await;
    corrupt(f.b.fetch(Q, S, 100, LEASE).await, &f.k.leases, "a string");
    assert_eq!(f.where_().await, (200, 0, 0, 0, 0));
    f.del(&f.k.leases).await;

    // Limits: a field that is no positive integer (a period that would make the bucket's
    // expiry no integer, a count that is a word) is refused before anything is written.
    let mut c = f.b.conn.clone();
    for (field, bad) in [
        ("period_ms", "1000.25"),
        ("concurrency", "abc"),
        ("rate", "0"),
    ] {
        let _: () = c.del(&f.k.limits).await.unwrap();
        let _: () = c
            .hset_multiple(
                &f.k.limits,
                &[("rate", "5"), ("period_ms", "1000"), (field, bad)],
            )
            .await
            .unwrap();
        corrupt(
            f.b.fetch(Q, S, 100, LEASE).await,
            &f.k.limits,
            "not a positive integer",
        );
        assert_eq!(f.where_().await, (200, 0, 0, 0, 0), "{field} = {bad}");
    }
    f.set(&f.k.limits, "x").await;
    corrupt(f.b.fetch(Q, S, 100, LEASE).await, &f.k.limits, "a string");
    f.del(&f.k.limits).await;
    // A bucket that does not parse is a full one: the fetch goes on.
    let _: () = c
        .hset_multiple(&f.k.limits, &[("rate", "1000"), ("period_ms", "1000")])
        .await
        .unwrap();
    f.set(&f.k.rate, ".|1").await;
    let got = f.b.fetch(Q, S, 1, LEASE).await.unwrap().unwrap();
    assert_eq!(got.records.len(), 1);
    f.del(&f.k.limits).await;
    f.del(&f.k.rate).await;
    let got = f.b.fetch(Q, S, 99, LEASE).await.unwrap().unwrap();
    assert_eq!(got.records.len(), 99);
    assert_eq!(f.where_().await, (100, 0, 0, 0, 100));

    // A wrong-type wake marker carries nothing: it is replaced.
    f.set(&f.k.wake, "x").await;
    let got = f.b.fetch(Q, S, 100, LEASE).await.unwrap().unwrap();
    assert_eq!(got.records.len(), 100);
    assert_eq!(f.where_().await, (0, 0, 0, 0, 200));
}

#[tokio::test]
async fn forward_moves_nothing_when_a_band_or_the_bands_zset_is_corrupt() {
    let f = Fx::new().await;
    f.b.enqueue(Q, &tasks(100, 1), EnqueueMode::Each)
        .await
        .unwrap();
    // 50 tasks in retry, due now.
    f.b.enqueue(Q, &tasks(50, 0), EnqueueMode::Each)
        .await
        .unwrap();
    let got = f.b.fetch(Q, S, 50, LEASE).await.unwrap().unwrap();
    for r in &got.records {
        assert!(f
            .b
            .retry(Q, S, record::raw_id(r), got.token, r, Duration::ZERO)
            .await
            .unwrap());
    }
    tokio::time::sleep(Duration::from_millis(5)).await;

    f.set(&f.k.band(50), "x").await;
    for from in [Waiting::Delayed, Waiting::Retry] {
        corrupt(f.b.forward(Q, from, 1000).await, &f.k.band(50), "a string");
    }
    assert_eq!(f.card(&f.k.delayed).await, 100);
    assert_eq!(f.card(&f.k.retry).await, 50);
    f.del(&f.k.band(50)).await;

    f.set(&f.k.bands, "1.5").await;
    for from in [Waiting::Delayed, Waiting::Retry] {
        corrupt(f.b.forward(Q, from, 1000).await, &f.k.bands, "a string");
    }
    f.del(&f.k.bands).await;
    let band: u64 = f.b.conn.clone().llen(f.k.band(50)).await.unwrap();
    assert_eq!(band, 0, "nothing reached the band");
    assert_eq!(f.where_().await, (0, 100, 50, 0, 0));

    assert_eq!(f.b.forward(Q, Waiting::Delayed, 1000).await.unwrap(), 100);
    assert_eq!(f.b.forward(Q, Waiting::Retry, 1000).await.unwrap(), 50);
    assert_eq!(f.where_().await, (150, 0, 0, 0, 0));
}

#[tokio::test]
async fn retry_kill_and_requeue_leave_the_task_active_when_a_key_is_corrupt() {
    let f = Fx::new().await;
    f.b.enqueue(Q, &tasks(3, 0), EnqueueMode::Each)
        .await
        .unwrap();
    let got = f.b.fetch(Q, S, 10, LEASE).await.unwrap().unwrap();
    let ids: Vec<Vec<u8>> = got
        .records
        .iter()
        .map(|r| record::raw_id(r).to_vec())
        .collect();
    let (r0, t) = (&got.records[0], got.token);

    // retry: wrong-type retry set, non-integer failed counter.
    f.set(&f.k.retry, "x").await;
    corrupt(
        f.b.retry(Q, S, &ids[0], t, r0, Duration::ZERO).await,
        &f.k.retry,
        "a string",
    );
    f.del(&f.k.retry).await;
    f.set(&f.k.daily, "x").await;
    corrupt(
        f.b.retry(Q, S, &ids[0], t, r0, Duration::ZERO).await,
        &f.k.daily,
        "a string",
    );
    f.del(&f.k.daily).await;
    f.set(&f.k.failed, "x").await;
    corrupt(
        f.b.retry(Q, S, &ids[0], t, r0, Duration::ZERO).await,
        &f.k.failed,
        "non-integer",
    );
    assert_eq!(f.where_().await, (0, 0, 0, 0, 3));

    // kill: the failed counter, a wrong-type dead set, failure records, trimmed counter.
    let kill = |i: usize| {
        f.b.kill(Q, S, &ids[i], t, &got.records[i], None, LIMITS, false)
    };
    corrupt(kill(1).await, &f.k.failed, "non-integer");
    f.del(&f.k.failed).await;
    for key in [&f.k.dead, &f.k.failed_ids, &f.k.daily] {
        f.set(key, "x").await;
        corrupt(kill(1).await, key, "a string");
        f.del(key).await;
    }
    f.set(&f.k.dead_trimmed, "x").await;
    corrupt(kill(1).await, &f.k.dead_trimmed, "non-integer");
    f.del(&f.k.dead_trimmed).await;
    assert_eq!(f.where_().await, (0, 0, 0, 0, 3));

    // requeue (shutdown and recovery): wrong-type pending, non-integer failed counter.
    f.set(&f.k.band(50), "x").await;
    let back = [(ids[2].clone(), t, None)];
    corrupt(
        f.b.requeue(Q, S, &back, false).await,
        &f.k.band(50),
        "a string",
    );
    f.del(&f.k.band(50)).await;
    f.set(&f.k.failed, "x").await;
    {
        let mut c = f.b.conn.clone();
        let _: () = c.zadd(&f.k.leases, S, 0).await.unwrap();
    }
    corrupt(
        f.b.requeue(Q, S, &back, true).await,
        &f.k.failed,
        "non-integer",
    );
    f.del(&f.k.failed).await;
    f.set(&f.k.daily, "x").await;
    corrupt(f.b.requeue(Q, S, &back, true).await, &f.k.daily, "a string");
    f.del(&f.k.daily).await;
    assert_eq!(f.where_().await, (0, 0, 0, 0, 3));

    // Garbage gone: every transition lands.
    assert!(f
        .b
        .retry(Q, S, &ids[0], t, r0, Duration::ZERO)
        .await
        .unwrap());
    assert!(kill(1).await.unwrap());
    assert_eq!(f.b.requeue(Q, S, &back, true).await.unwrap(), 1);
    assert_eq!(f.where_().await, (1, 0, 1, 1, 0));
}

#[tokio::test]
async fn complete_leaves_every_task_active_when_a_key_is_corrupt() {
    let f = Fx::new().await;
    f.b.enqueue(Q, &tasks(50, 0), EnqueueMode::Each)
        .await
        .unwrap();
    let got = f.b.fetch(Q, S, 50, LEASE).await.unwrap().unwrap();
    let acks = super::test_util::acks(&got);
    let keep = Some(Duration::from_secs(60));
    // The done hash of the index's first generation (completions are marked there).
    let done = f.k.ix_done(0);
    for (key, holds) in [
        (&f.k.processed, "non-integer"),
        (&f.k.finished, "a string"),
        (&f.k.ix_meta, "a string"),
        (&f.k.completed, "a string"),
        (&done, "a string"),
        (&f.k.daily, "a string"),
    ] {
        f.set(key, "x").await;
        corrupt(
            f.b.complete(Q, S, &acks, keep, rand::random()).await,
            key,
            holds,
        );
        f.del(key).await;
    }
    // A count of today that HINCRBY would refuse ("01" looks like a number but is not one
    // to Redis), and a counter INCRBY would refuse the same way.
    let today = f.b.time_ms().await.unwrap() / 86_400_000;
    for bad in ["x", "01", "-0"] {
        {
            let mut c = f.b.conn.clone();
            let _: () = c.hset(&f.k.daily, format!("p:{today}"), bad).await.unwrap();
        }
        corrupt(
            f.b.complete(Q, S, &acks, keep, rand::random()).await,
            &f.k.daily,
            "non-integer",
        );
        f.del(&f.k.daily).await;
    }
    f.set(&f.k.processed, "007").await;
    corrupt(
        f.b.complete(Q, S, &acks, keep, rand::random()).await,
        &f.k.processed,
        "non-integer",
    );
    f.del(&f.k.processed).await;
    // Thousands of fields that are not ours: the day's first count drops them in slices.
    {
        let mut c = f.b.conn.clone();
        let junk: Vec<(String, u8)> = (0..9000).map(|n| (format!("junk{n}"), 1)).collect();
        let _: () = c.hset_multiple(&f.k.daily, &junk).await.unwrap();
    }
    assert_eq!(f.active().await, 50);
    assert_eq!(f.card(&f.k.completed).await, 0);

    assert!(f
        .b
        .complete(Q, S, &acks, keep, rand::random())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(f.active().await, 0);
    assert_eq!(f.card(&f.k.completed).await, 50);
    let mut c = f.b.conn.clone();
    let processed: u64 = c.get(&f.k.processed).await.unwrap();
    assert_eq!(processed, 50, "refused calls counted nothing");
    assert_eq!(f.b.daily(Q).await.unwrap()[&today], (50, 0));
    let fields: u64 = c.hlen(&f.k.daily).await.unwrap();
    assert_eq!(fields, 1, "only today's count is left");
}

#[tokio::test]
async fn enqueue_writes_nothing_when_a_key_is_corrupt_and_ignores_a_broken_wake_marker() {
    let f = Fx::new().await;
    let mut batch = tasks(10, 0);
    batch.extend(tasks(5, 1000));
    batch[0].unique = Some(("u".into(), 60));
    for (key, holds) in [
        (&f.k.bands, "a string"),
        (&f.k.band(50), "a string"),
        (&f.k.delayed, "a string"),
        (&f.k.enqueued, "a string"),
    ] {
        f.set(key, "x").await;
        corrupt(f.b.enqueue(Q, &batch, EnqueueMode::Each).await, key, holds);
        f.del(key).await;
        let mut c = f.b.conn.clone();
        let lock: bool = c.exists(f.k.unique("u")).await.unwrap();
        assert!(!lock, "the lock taken by the refused call was released");
    }
    {
        let mut c = f.b.conn.clone();
        let _: () = c.hset(&f.k.enqueued, "f", "many").await.unwrap();
    }
    corrupt(
        f.b.enqueue(Q, &batch, EnqueueMode::All).await,
        &f.k.enqueued,
        "non-integer",
    );
    f.del(&f.k.enqueued).await;
    f.set(&f.k.unique("u"), "x").await;
    {
        let mut c = f.b.conn.clone();
        let _: () = c.del(f.k.unique("u")).await.unwrap();
        let _: () = c.hset(f.k.unique("u"), "a", "b").await.unwrap();
    }
    corrupt(
        f.b.enqueue(Q, &batch, EnqueueMode::Each).await,
        &f.k.unique("u"),
        "a hash",
    );
    f.del(&f.k.unique("u")).await;
    assert_eq!(f.where_().await, (0, 0, 0, 0, 0));

    f.set(&f.k.wake, "x").await;
    let rejected = f.b.enqueue(Q, &batch, EnqueueMode::Each).await.unwrap();
    assert!(rejected.iter().all(Option::is_none));
    assert_eq!(f.where_().await, (10, 5, 0, 0, 0));
    let mut c = f.b.conn.clone();
    let kind: String = redis::cmd("TYPE")
        .arg(&f.k.wake)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(kind, "zset", "the broken marker was replaced");
}

#[tokio::test]
async fn every_piece_of_garbage_is_set_aside_on_its_own() {
    let f = Fx::new().await;
    let mut garbage: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"a".to_vec(),
        b"b".to_vec(),
        b"ab".to_vec(),
        vec![1],
        vec![1, 50],
        b"seventeen bytes!!".to_vec(),
    ];
    // Long enough to carry an "id", all the same one.
    for i in 0..5 {
        garbage.push(format!("{{\"type\":\"from another system\",\"n\":{i}}}").into_bytes());
    }
    // Our format byte and a shared id, but no body.
    garbage.push([&[1u8, 50][..], &[7u8; 16][..]].concat());
    for g in &garbage {
        f.b.plant_raw_pending(Q, g).await.unwrap();
    }
    f.b.enqueue(Q, &tasks(3, 0), EnqueueMode::Each)
        .await
        .unwrap();

    let mut leased = 0;
    while let Some(got) = f.b.fetch(Q, S, 4, LEASE).await.unwrap() {
        leased += got.records.len();
        for r in &got.records {
            assert!(
                record::decode(Q, r).is_ok(),
                "only records of ours are leased"
            );
        }
    }
    assert_eq!(leased, 3);
    assert_eq!(f.where_().await, (0, 0, 0, garbage.len() as u64, 3));
    let mut payloads = Vec::new();
    for d in f.b.records(Q, TaskState::Dead, 100).await.unwrap() {
        let t = record::decode(Q, &d).unwrap();
        assert_eq!(t.task_type, record::UNDECODABLE_TYPE);
        assert!(t.last_error.unwrap().starts_with("undecodable: "));
        payloads.push(t.payload);
    }
    payloads.sort();
    garbage.sort();
    assert_eq!(payloads, garbage, "each piece once, with its raw bytes");
}

#[tokio::test]
async fn an_unparsable_active_entry_of_a_lapsed_lease_is_set_aside() {
    let f = Fx::new().await;
    f.b.enqueue(Q, &tasks(1, 0), EnqueueMode::Each)
        .await
        .unwrap();
    let got = f.b.fetch(Q, S, 10, LEASE).await.unwrap().unwrap();
    let active = f.k.active(S);
    let mut c = f.b.conn.clone();
    let _: () = c.hset(&active, "junk", "no token here").await.unwrap();
    let _: () = c.hset(&active, "", "x|y").await.unwrap();
    let (held, bad) = f.b.held_all(Q, S).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(bad.len(), 2);
    let dead = record::undecodable(&bad[0].1, "test");
    // Fenced: not while the lease is valid, not when the entry changed.
    assert!(!f.b.bury_active(Q, S, &bad[0], &dead).await.unwrap());
    let _: () = c.zadd(&f.k.leases, S, 0).await.unwrap();
    let changed = (bad[0].0.clone(), b"other".to_vec());
    assert!(!f.b.bury_active(Q, S, &changed, &dead).await.unwrap());
    for e in &bad {
        let dead = record::undecodable(&e.1, "test");
        assert!(f.b.bury_active(Q, S, e, &dead).await.unwrap());
        assert!(!f.b.bury_active(Q, S, e, &dead).await.unwrap(), "once");
    }
    assert_eq!(f.where_().await, (0, 0, 0, 2, 1));
    assert_eq!(
        f.b.held(Q, S).await.unwrap()[0].record,
        got.records[0],
        "the real task stays"
    );
}

#[tokio::test]
async fn cancel_rerun_and_flush_move_nothing_when_a_key_is_corrupt() {
    let f = Fx::new().await;
    f.b.enqueue(Q, &tasks(3, 0), EnqueueMode::Each)
        .await
        .unwrap();
    let stored = f.b.records(Q, TaskState::Pending, 10).await.unwrap();

    // cancel: the failure records, the cancelled counter.
    for (key, value, holds) in [
        (&f.k.failed_ids, "x", "a string"),
        (&f.k.cancelled, "x", "non-integer"),
    ] {
        f.set(key, value).await;
        corrupt(
            f.b.cancel_queued(Q, TaskState::Pending, &stored[0], None)
                .await,
            key,
            holds,
        );
        f.del(key).await;
    }
    assert_eq!(f.where_().await, (3, 0, 0, 0, 0));
    assert!(f
        .b
        .cancel_queued(Q, TaskState::Pending, &stored[0], None)
        .await
        .unwrap());

    // rerun: two dead tasks, a wrong-type pending set or failure records.
    let got = f.b.fetch(Q, S, 10, LEASE).await.unwrap().unwrap();
    for r in &got.records {
        assert!(f
            .b
            .kill(Q, S, record::raw_id(r), got.token, r, None, LIMITS, false)
            .await
            .unwrap());
    }
    let dead = f.b.records(Q, TaskState::Dead, 10).await.unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = dead.iter().map(|d| (d.clone(), d.clone())).collect();
    let failed_ids = f.card(&f.k.failed_ids).await;
    for key in [&f.k.band(50), &f.k.failed_ids] {
        f.set(key, "x").await;
        corrupt(f.b.rerun(Q, &pairs).await, key, "a string");
        f.del(key).await;
    }
    assert_eq!(f.where_().await, (0, 0, 0, 2, 0));
    assert_eq!(f.b.rerun(Q, &pairs).await.unwrap(), 2);
    assert_eq!(f.where_().await, (2, 0, 0, 0, 0));
    assert_eq!(failed_ids, 3);

    // flush: a non-integer flush counter removes nothing.
    f.b.enqueue(Q, &tasks(4, 0), EnqueueMode::Each)
        .await
        .unwrap();
    f.set(&f.k.ix_meta, "x").await;
    corrupt(f.b.flush(Q, &[]).await, &f.k.ix_meta, "a string");
    assert_eq!(f.pending().await, 6);
    f.del(&f.k.ix_meta).await;
    assert_eq!(f.b.flush(Q, &[]).await.unwrap().pending, 6);
}

#[tokio::test]
async fn the_janitor_trims_nothing_uncounted() {
    let f = Fx::new().await;
    f.b.enqueue(Q, &tasks(3, 0), EnqueueMode::Each)
        .await
        .unwrap();
    let got = f.b.fetch(Q, S, 10, LEASE).await.unwrap().unwrap();
    for r in &got.records {
        assert!(f
            .b
            .kill(Q, S, record::raw_id(r), got.token, r, None, LIMITS, false)
            .await
            .unwrap());
    }
    let keep_one = DeadLimits {
        max_count: 1,
        max_age: LIMITS.max_age,
    };
    f.set(&f.k.dead_trimmed, "x").await;
    corrupt(
        f.b.trim(Q, keep_one).await,
        &f.k.dead_trimmed,
        "non-integer",
    );
    assert_eq!(f.card(&f.k.dead).await, 3);
    f.del(&f.k.dead_trimmed).await;
    assert_eq!(f.b.trim(Q, keep_one).await.unwrap().1, 2);
    let mut c = f.b.conn.clone();
    let trimmed: u64 = c.get(&f.k.dead_trimmed).await.unwrap();
    assert_eq!(trimmed, 2);
}

/// An acknowledgement whose reply was lost (a timeout while Redis stalled) is retried by the
/// acker. The retry used to find its own, landed completion as "refused: stale token", so it was
/// logged and counted as a refused stale ack. Now a retry with the same nonce gets the first
/// call's reply back.
#[tokio::test]
async fn a_retried_ack_that_had_landed_is_not_reported_as_refused() {
    let f = Fx::new().await;
    f.b.enqueue(Q, &tasks(3, 0), EnqueueMode::Each)
        .await
        .unwrap();
    let batch = f.b.fetch(Q, S, 3, LEASE).await.unwrap().unwrap();
    let ids: Vec<Vec<u8>> = batch
        .records
        .iter()
        .map(|r| record::raw_id(r).to_vec())
        .collect();
    let ack = Ack {
        id: ids[0].clone(),
        token: batch.token,
        unique_key: None,
    };
    let nonce = 42;
    for _ in 0..2 {
        let refused =
            f.b.complete(Q, S, std::slice::from_ref(&ack), None, nonce)
                .await;
        assert_eq!(refused.unwrap(), Vec::<usize>::new());
    }
    // A new call (another nonce) for the same, gone, delivery is refused, as fencing wants.
    assert_eq!(f.b.complete(Q, S, &[ack], None, 43).await.unwrap(), vec![0]);

    assert_eq!(f.active().await, 2);
}

#[tokio::test]
async fn resume_replaces_a_wake_marker_of_the_wrong_type() {
    let f = Fx::new().await;
    f.b.enqueue(Q, &tasks(3, 0), EnqueueMode::Each)
        .await
        .unwrap();
    f.b.pause(Q).await.unwrap();
    assert!(f.b.fetch(Q, S, 10, LEASE).await.unwrap().is_none());
    f.set(&f.k.wake, "x").await;
    f.b.resume(Q).await.unwrap();
    let mut c = f.b.conn.clone();
    let kind: String = redis::cmd("TYPE")
        .arg(&f.k.wake)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        kind, "zset",
        "the marker was replaced, so blocked fetchers wake"
    );
    let got = f.b.fetch(Q, S, 10, LEASE).await.unwrap().unwrap();
    assert_eq!(got.records.len(), 3, "resumed");
}

/// Found in review: a count of 20 digits passed cron_fire's check, then HINCRBY refused it after
/// the tick had moved on: the tick was used up without its task. A receipt key of the wrong type
/// refused every acknowledgement of its server. A wait of 0 s became BZPOPMIN 0: forever.
#[tokio::test]
async fn review_findings_overflowing_count_broken_receipt_zero_wait() {
    let f = Fx::new().await;
    let t = Task::builder("c").queue(Q).build().unwrap();
    let rec = record::encode(&t).unwrap();
    f.b.cron_put(Q, "e", "@every 1s", &rec, Some(1_000))
        .await
        .unwrap();
    let mut c = f.b.conn.clone();
    let _: () = c
        .hset(&f.k.enqueued, "c", "99999999999999999999")
        .await
        .unwrap();
    let r =
        f.b.cron_fire(Q, "e", 1_000, Some(2_000), &rec, None, true, "c")
            .await;
    corrupt(r, &f.k.enqueued, "non-integer");
    let next: Option<u64> = c.zscore(&f.k.cron_next, "e").await.unwrap();
    assert_eq!(next, Some(1_000), "the tick moved on without its task");
    assert_eq!(f.where_().await.0, 0);

    f.b.enqueue(Q, &tasks(1, 0), EnqueueMode::Each)
        .await
        .unwrap();
    let batch = f.b.fetch(Q, S, 1, LEASE).await.unwrap().unwrap();
    let _: () = c.hset(f.k.ack_receipt(S), "x", "y").await.unwrap();
    let ack = Ack {
        id: record::raw_id(&batch.records[0]).to_vec(),
        token: batch.token,
        unique_key: None,
    };
    assert!(f
        .b
        .complete(Q, S, &[ack], None, 7)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(f.active().await, 0);

    let mut blocking = f.b.blocking_connection(&[Q.to_string()]).await.unwrap();
    let waited = tokio::time::timeout(
        Duration::from_secs(3),
        Broker::wait_for_work(&mut blocking, &[Q.to_string()], Duration::ZERO),
    )
    .await;
    assert!(waited.is_ok(), "a 0 s wait blocked");
}

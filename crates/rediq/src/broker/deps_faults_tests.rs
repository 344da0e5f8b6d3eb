//! Corrupt keys of a dependent's queue against a real redis-server, while one of its
//! dependencies completes or fails: `dep_satisfy.lua` and `dep_fail.lua` refuse with
//! `Error::Corrupt` naming the key, the dependent stays waiting (never lost), the resolver sets
//! the news aside while the rest flow, and once the garbage is gone the news is delivered and
//! the dependent released (or dead-lettered) exactly once.

use std::time::Duration;

use redis::AsyncCommands;

use super::deps::{Answer, Dependent};
use super::*;
use crate::testing::RedisServer;
use crate::Task;

const S: &str = "host:1:deps";

use super::test_util::plain;

/// How the dependent under test is built.
#[derive(Clone, Copy, Default)]
struct Shape {
    unique: bool,
    delay_ms: u64,
}

/// Writes a dependent of `dep` (in `dep_queue`) into `queue`, waiting; returns its id bytes.
async fn waiting(b: &Broker, queue: &str, dep_queue: &str, dep: &[u8], shape: Shape) -> Vec<u8> {
    let mut builder = Task::builder("d").queue(queue);
    if shape.unique {
        builder = builder
            .unique_key("only-one")
            .unique_ttl(Duration::from_secs(50));
    }
    let t = builder.build().unwrap();
    let id = record::id_bytes(&t.id).unwrap().to_vec();
    b.dep_begin(queue, &id).await.unwrap();
    let answer = b
        .register_dependency(&[dep_queue.to_string()], dep, &id, queue)
        .await
        .unwrap();
    assert_eq!(answer, Answer::Registered);
    let rec = record::encode(&t).unwrap();
    let open = [dep.to_vec()];
    let task = Dependent {
        id: &id,
        record: &rec,
        task_type: &t.task_type,
        delay_ms: shape.delay_ms,
        unique: shape.unique.then_some(("only-one", 50)),
        open: &open,
    };
    assert_eq!(
        b.dep_enqueue(queue, &task, None).await.unwrap(),
        deps::Written::Ok
    );
    id
}

/// Leases the next pending task of `queue` (which must be `id`); completes it, or kills it.
async fn settle(b: &Broker, queue: &str, id: &[u8], complete: bool) {
    let f = b
        .fetch(queue, S, 1, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record::raw_id(&f.records[0]), id);
    if complete {
        let ack = Ack {
            id: id.to_vec(),
            token: f.token,
            unique_key: None,
        };
        let stale = b
            .complete(queue, S, &[ack], None, rand::random())
            .await
            .unwrap();
        assert!(stale.is_empty());
    } else {
        let limits = DeadLimits::default();
        let killed = b
            .kill(queue, S, id, f.token, &f.records[0], None, limits, false)
            .await;
        assert!(killed.unwrap());
    }
}

/// Puts garbage of the wrong type in place of `key` (a string, or a hash in place of a string),
/// keeping what it held under `key:kept`.
async fn spoil(c: &mut conn::Conn, key: &str) {
    let kept = format!("{key}:kept");
    let exists: bool = c.exists(key).await.unwrap();
    if exists {
        let _: () = c.rename(key, &kept).await.unwrap();
    }
    let kind: String = redis::cmd("TYPE").arg(&kept).query_async(c).await.unwrap();
    if kind == "string" || key.contains(":unique:") {
        let _: () = c.hset(key, "garbage", "x").await.unwrap();
    } else {
        let _: () = c.set(key, "garbage").await.unwrap();
    }
}

/// Removes the garbage and puts back what `key` held.
async fn repair(c: &mut conn::Conn, key: &str) {
    let kept = format!("{key}:kept");
    let _: () = c.del(key).await.unwrap();
    let exists: bool = c.exists(&kept).await.unwrap();
    if exists {
        let _: () = c.rename(&kept, key).await.unwrap();
    }
}

/// Makes every set-aside entry of `queue` due now (instead of waiting out the backoff).
async fn due_now(c: &mut conn::Conn, queue: &str) {
    let k = QueueKeys::new(queue);
    let all: Vec<Vec<u8>> = c.zrange(&k.set_aside, 0, -1).await.unwrap();
    for e in all {
        let _: () = c.zadd(&k.set_aside, e, 0).await.unwrap();
    }
}

/// Whether `id` still waits in `queue` with its dependency not crossed off.
async fn still_waiting(c: &mut conn::Conn, queue: &str, id: &[u8]) -> (bool, bool) {
    let k = QueueKeys::new(queue);
    let w: bool = c.hexists(&k.waiting, id).await.unwrap();
    let n: bool = c.hexists(&k.needs, id).await.unwrap();
    (w, n)
}

/// A dependency completes (or fails, with `complete` false) while `key(queue keys)` of the
/// dependent's queue holds garbage. Checks the refusal, the set-aside, and the release once
/// the garbage is gone; returns the dependent's queue keys and id for further checks.
async fn case(
    b: &Broker,
    n: usize,
    complete: bool,
    shape: Shape,
    key: impl Fn(&QueueKeys) -> String,
) -> (std::sync::Arc<QueueKeys>, Vec<u8>) {
    let (qa, qb) = (format!("a{n}"), format!("b{n}"));
    let kb = QueueKeys::new(&qb);
    let bad = key(&kb);
    let mut c = b.conn.clone();
    let x = plain(b, &qa).await;
    let d = waiting(b, &qb, &qa, &x, shape).await;
    // A healthy dependent of the same dependency, in another queue: it must not wait.
    let qh = format!("h{n}");
    let healthy = waiting(b, &qh, &qa, &x, Shape::default()).await;
    // A dependent of the dependent (the news of its failure goes through qb's outbox).
    let qe = format!("e{n}");
    let e = waiting(b, &qe, &qb, &d, Shape::default()).await;

    spoil(&mut c, &bad).await;
    settle(b, &qa, &x, complete).await;
    let r = b.resolve_outbox(&qa).await.unwrap();
    assert_eq!(r.delivered, 0, "{bad}: {r:?}");
    assert_eq!(r.set_aside.len(), 1, "{bad}: {r:?}");
    assert!(
        r.set_aside[0].reason.contains(&bad),
        "the reason names {bad}: {}",
        r.set_aside[0].reason
    );
    // The healthy dependent was told all the same.
    let kh = QueueKeys::new(&qh);
    let h_released: u64 = if complete {
        b.pending_len(&kh).await.unwrap()
    } else {
        c.zcard(&kh.dead).await.unwrap()
    };
    assert_eq!(h_released, 1, "{bad}: the healthy dependent flowed");
    assert!(!c
        .hexists::<_, _, bool>(&kh.waiting, &healthy)
        .await
        .unwrap());

    // The refusal itself, told directly, names the key.
    let told = if complete {
        b.dep_satisfy(&qb, &d, &x).await
    } else {
        b.fail_dependent(&qb, &d, &x).await
    };
    match told {
        Err(Error::Corrupt { key: k, .. }) => assert_eq!(k, bad),
        other => panic!("expected Error::Corrupt on {bad}, got {other:?}"),
    }
    repair(&mut c, &bad).await;
    assert_eq!(
        still_waiting(&mut c, &qb, &d).await,
        (true, true),
        "{bad}: the dependent still waits, its dependency not crossed off"
    );

    // Tried again once due: delivered, and nothing stays aside.
    due_now(&mut c, &qa).await;
    let r = b.resolve_outbox(&qa).await.unwrap();
    assert_eq!(r.recovered.len(), 1, "{bad}: {r:?}");
    assert!(r.set_aside.is_empty(), "{bad}: {r:?}");
    let ka = QueueKeys::new(&qa);
    let left: (u64, u64, u64) = redis::pipe()
        .llen(&ka.outbox)
        .zcard(&ka.set_aside)
        .hlen(&ka.set_aside_why)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, (0, 0, 0), "{bad}");
    assert_eq!(
        still_waiting(&mut c, &qb, &d).await,
        (false, false),
        "{bad}"
    );
    // A redundant delivery changes nothing.
    if complete {
        b.dep_satisfy(&qb, &d, &x).await.unwrap();
    } else {
        b.fail_dependent(&qb, &d, &x).await.unwrap();
    }
    let placed: (u64, u64) = redis::pipe()
        .zcard(&kb.delayed)
        .zcard(&kb.dead)
        .query_async(&mut c)
        .await
        .unwrap();
    let placed = (b.pending_len(&kb).await.unwrap(), placed.0, placed.1);
    let want = match (complete, shape.delay_ms > 0) {
        (true, false) => (1, 0, 0),
        (true, true) => (0, 1, 0),
        (false, _) => (0, 0, 1),
    };
    assert_eq!(placed, want, "{bad}: released exactly once");
    // The healthy dependent was told again with the whole entry: still released once.
    let h_after: u64 = if complete {
        b.pending_len(&kh).await.unwrap()
    } else {
        c.zcard(&kh.dead).await.unwrap()
    };
    assert_eq!(h_after, 1, "{bad}: the healthy dependent released once");
    if !complete {
        // Its own dependent hears of the failure through qb's outbox.
        b.resolve_outbox(&qb).await.unwrap();
        let ke = QueueKeys::new(&qe);
        let dead: Vec<Vec<u8>> = c.zrange(&ke.dead, 0, -1).await.unwrap();
        assert_eq!(dead.len(), 1, "{bad}");
        assert_eq!(record::raw_id(&dead[0]), &e[..], "{bad}");
    }
    (kb, d)
}

#[tokio::test]
async fn a_completion_told_to_a_corrupt_queue_leaves_the_dependent_waiting_then_releases_it_once() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let plain_shape = Shape::default();
    let delayed = Shape {
        delay_ms: 60_000,
        ..Shape::default()
    };
    let unique = Shape {
        unique: true,
        ..Shape::default()
    };
    case(&b, 1, true, plain_shape, |k| k.band(50)).await;
    case(&b, 2, true, plain_shape, |k| k.bands.clone()).await;
    case(&b, 3, true, delayed, |k| k.delayed.clone()).await;
    case(&b, 4, true, plain_shape, |k| k.needs.clone()).await;
    case(&b, 5, true, plain_shape, |k| k.waiting.clone()).await;
    let (kb, d) = case(&b, 6, true, unique, |k| k.unique("only-one")).await;
    let mut c = b.conn.clone();
    let lock: Option<Vec<u8>> = c.get(kb.unique("only-one")).await.unwrap();
    assert_eq!(lock, Some(d), "the repaired lock is kept");
    let ttl: i64 = c.ttl(kb.unique("only-one")).await.unwrap();
    assert!((1..=50).contains(&ttl), "released with its TTL: {ttl}");
}

#[tokio::test]
async fn a_wrong_type_wake_marker_does_not_hold_up_a_release() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let mut c = b.conn.clone();
    let x = plain(&b, "wa").await;
    let d = waiting(&b, "wb", "wa", &x, Shape::default()).await;
    let k = QueueKeys::new("wb");
    let _: () = c.set(&k.wake, "garbage").await.unwrap();
    settle(&b, "wa", &x, true).await;
    let r = b.resolve_outbox("wa").await.unwrap();
    assert_eq!((r.delivered, r.set_aside.len()), (1, 0), "{r:?}");
    let pending: Vec<Vec<u8>> = c.lrange(k.band(50), 0, -1).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(record::raw_id(&pending[0]), &d[..]);
    let kind: String = redis::cmd("TYPE")
        .arg(&k.wake)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(kind, "zset", "the marker was replaced");
}

#[tokio::test]
async fn a_failure_told_to_a_corrupt_queue_leaves_the_dependent_waiting_then_dead_letters_it_once()
{
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let plain_shape = Shape::default();
    let unique = Shape {
        unique: true,
        ..Shape::default()
    };
    case(&b, 1, false, plain_shape, |k| k.dead.clone()).await;
    case(&b, 2, false, plain_shape, |k| k.failed_ids.clone()).await;
    case(&b, 3, false, plain_shape, |k| k.outbox.clone()).await;
    case(&b, 4, false, plain_shape, |k| k.needs.clone()).await;
    case(&b, 5, false, plain_shape, |k| k.waiting.clone()).await;
    case(&b, 6, false, unique, |k| k.unique("only-one")).await;
}

/// Writes a dependent of `dep` into `queue` (registered, with a unique key); returns the id
/// and the outcome of `dep_enqueue`.
async fn try_write(b: &Broker, queue: &str, dep_queue: &str, dep: &[u8]) -> (Vec<u8>, Result<()>) {
    let t = Task::builder("d")
        .queue(queue)
        .unique_key("only-one")
        .build()
        .unwrap();
    let id = record::id_bytes(&t.id).unwrap().to_vec();
    b.dep_begin(queue, &id).await.unwrap();
    let answer = b
        .register_dependency(&[dep_queue.to_string()], dep, &id, queue)
        .await
        .unwrap();
    assert_eq!(answer, Answer::Registered);
    let rec = record::encode(&t).unwrap();
    let open = [dep.to_vec()];
    let task = Dependent {
        id: &id,
        record: &rec,
        task_type: &t.task_type,
        delay_ms: 0,
        unique: Some(("only-one", 50)),
        open: &open,
    };
    let r = b.dep_enqueue(queue, &task, None).await.map(|_| ());
    (id, r)
}

#[tokio::test]
async fn a_dependent_write_refused_by_a_corrupt_key_leaves_nothing_half_written() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let mut c = b.conn.clone();
    for (n, bad) in [
        (1, QueueKeys::new("n1").needs.clone()),
        (2, QueueKeys::new("n2").enqueued.clone()),
    ] {
        let (qa, qb) = (format!("m{n}"), format!("n{n}"));
        let k = QueueKeys::new(&qb);
        let x = plain(&b, &qa).await;
        if bad == k.enqueued {
            // A non-integer count for this task type: HINCRBY would refuse it.
            let _: () = c.hset(&bad, "d", "many").await.unwrap();
        } else {
            let _: () = c.set(&bad, "garbage").await.unwrap();
        }
        let (id, r) = try_write(&b, &qb, &qa, &x).await;
        match r {
            Err(Error::Corrupt { key, .. }) => assert_eq!(key, bad),
            other => panic!("expected Error::Corrupt on {bad}, got {other:?}"),
        }
        let half: (bool, bool) = redis::pipe()
            .hexists(&k.waiting, &id)
            .exists(k.unique("only-one"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(
            half,
            (false, false),
            "{bad}: no waiting record, no lock taken"
        );
        let mut mark = b"W".to_vec();
        mark.extend_from_slice(&id);
        let marked: Option<f64> = c.zscore(&k.early, &mark).await.unwrap();
        assert!(marked.is_some(), "{bad}: still marked as being written");
        // Repaired, the same write goes through and the dependency's completion releases it.
        let _: () = c.del(&bad).await.unwrap();
        let (d, r) = try_write(&b, &qb, &qa, &x).await;
        r.unwrap();
        settle(&b, &qa, &x, true).await;
        assert_eq!(b.resolve_outbox(&qa).await.unwrap().delivered, 1);
        let pending: Vec<Vec<u8>> = c.lrange(k.band(50), 0, -1).await.unwrap();
        assert_eq!(pending.len(), 1, "{bad}");
        assert_eq!(record::raw_id(&pending[0]), &d[..]);
    }
}

#[tokio::test]
async fn a_claim_key_of_the_wrong_type_does_not_stop_delivery() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let mut c = b.conn.clone();
    let x = plain(&b, "ca").await;
    waiting(&b, "cb", "ca", &x, Shape::default()).await;
    let ka = QueueKeys::new("ca");
    let _: () = c.hset(&ka.outbox_claim, "garbage", "x").await.unwrap();
    settle(&b, "ca", &x, true).await;
    let r = b.resolve_outbox("ca").await.unwrap();
    assert_eq!(r.delivered, 1, "{r:?}");
    let pending: u64 = b.pending_len(&QueueKeys::new("cb")).await.unwrap();
    assert_eq!(pending, 1);
}

#[tokio::test]
async fn forgetting_finished_ids_drops_nothing_when_an_index_bucket_is_corrupt() {
    let redis = RedisServer::start();
    let mut b = Broker::connect(&redis.url()).await.unwrap();
    let mut c = b.conn.clone();
    let k = QueueKeys::new("tr");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let x = plain(&b, "tr").await;
        settle(&b, "tr", &x, true).await;
        ids.push(x);
    }
    let listed: u64 = c.llen(&k.finished).await.unwrap();
    assert_eq!(listed, 2);
    // The bucket of the older id is garbage, and both ids are past the retention.
    let bad = k.ix_bucket(
        0,
        super::index::ix_hash(&ids[0]) % (1 << super::index::MIN_LEVEL),
    );
    let _: () = c.del(&bad).await.unwrap();
    let _: () = c.set(&bad, "garbage").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.set_dep_limits(DepLimits {
        retention: Duration::from_millis(10),
        max_records: u64::MAX,
    });
    match b.trim("tr", DeadLimits::default()).await {
        Err(Error::Corrupt { key, .. }) => assert_eq!(key, bad),
        other => panic!("expected Error::Corrupt on {bad}, got {other:?}"),
    }
    let kept: u64 = c.llen(&k.finished).await.unwrap();
    assert_eq!(kept, 2, "nothing dropped from the finished list");
}

/// A flush of the dependency's queue keeps its set-aside news: it concerns dependents in other
/// queues (their references left the dependents hash when the entry was written), so dropping
/// it would leave them waiting forever.
#[tokio::test]
async fn a_flush_of_the_dependencys_queue_keeps_its_set_aside_news() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let mut c = b.conn.clone();
    let x = plain(&b, "fa").await;
    let d = waiting(&b, "fb", "fa", &x, Shape::default()).await;
    let kb = QueueKeys::new("fb");
    spoil(&mut c, &kb.band(50)).await;
    settle(&b, "fa", &x, true).await;
    let r = b.resolve_outbox("fa").await.unwrap();
    assert_eq!(r.set_aside.len(), 1, "{r:?}");
    plain(&b, "fa").await;
    let flushed = b.flush("fa", &[]).await.unwrap();
    assert_eq!(flushed.pending, 1);
    let ka = QueueKeys::new("fa");
    let aside: u64 = c.zcard(&ka.set_aside).await.unwrap();
    assert_eq!(aside, 1, "the news outlives the flush");
    repair(&mut c, &kb.band(50)).await;
    due_now(&mut c, "fa").await;
    let r = b.resolve_outbox("fa").await.unwrap();
    assert_eq!(r.recovered.len(), 1, "{r:?}");
    let pending: Vec<Vec<u8>> = c.lrange(kb.band(50), 0, -1).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(record::raw_id(&pending[0]), &d[..], "released once");
    assert_eq!(still_waiting(&mut c, "fb", &d).await, (false, false));
}

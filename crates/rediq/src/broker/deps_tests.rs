//! Tests of the dependency protocol's scripts, step by step and in every order (`deps.rs`).

use super::*;
use crate::broker::{DeadLimits, DepLimits};
use crate::testing::RedisServer;
use crate::Task;
use std::time::Duration;

const S: &str = "host:1:test";

async fn broker(redis: &RedisServer) -> Broker {
    Broker::connect(&redis.url()).await.unwrap()
}

use crate::broker::test_util::plain;

/// Leases everything pending in `queue` and acknowledges it.
async fn run_all(b: &Broker, queue: &str) {
    crate::broker::test_util::complete_all(b, queue, S).await;
}

/// Leases the next pending task of `queue` (which must be `id`) and dead-letters it.
async fn kill_next(b: &Broker, queue: &str, id: &[u8]) {
    let f = b
        .fetch(queue, S, 1, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record::raw_id(&f.records[0]), id);
    let limits = DeadLimits::default();
    assert!(b
        .kill(queue, S, id, f.token, &f.records[0], None, limits, false)
        .await
        .unwrap());
}

/// Writes task `t` as a dependent whose dependencies `open` are still open.
async fn write(b: &Broker, t: &Task, open: &[Vec<u8>]) -> Written {
    let id = record::id_bytes(&t.id).unwrap();
    let rec = record::encode(t).unwrap();
    let task = Dependent {
        id: &id,
        record: &rec,
        task_type: &t.task_type,
        delay_ms: 0,
        unique: None,
        open,
    };
    b.dep_enqueue(&t.queue, &task, None).await.unwrap()
}

/// Writes a dependent of `deps` (registering it first) into `queue`; returns its id bytes.
async fn dependent(b: &Broker, queue: &str, deps: &[(&str, &[u8])]) -> (Vec<u8>, Written) {
    let t = Task::builder("d").queue(queue).build().unwrap();
    let id = record::id_bytes(&t.id).unwrap().to_vec();
    b.dep_begin(queue, &id).await.unwrap();
    let mut open = Vec::new();
    for (q, d) in deps {
        let queues = [q.to_string()];
        match b.register_dependency(&queues, d, &id, queue).await.unwrap() {
            Answer::Registered => open.push(d.to_vec()),
            Answer::Done => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let w = write(b, &t, &open).await;
    (id, w)
}

async fn counts(b: &Broker, queue: &str) -> (u64, u64, u64) {
    let s = b.stats(queue).await.unwrap();
    (s.pending, s.waiting, s.processed_total)
}

#[tokio::test]
async fn news_that_arrives_before_the_dependent_is_written_is_kept() {
    let redis = RedisServer::start();
    let b = broker(&redis).await;
    let a = plain(&b, "qa").await;
    let t = Task::builder("d").queue("qb").build().unwrap();
    let me = record::id_bytes(&t.id).unwrap().to_vec();
    b.dep_begin("qb", &me).await.unwrap();
    let qa = ["qa".to_string()];
    assert_eq!(
        b.register_dependency(&qa, &a, &me, "qb").await.unwrap(),
        Answer::Registered
    );
    // The dependency completes and its news is delivered before the dependent is written
    // (a slow client): it becomes an early fact.
    run_all(&b, "qa").await;
    assert_eq!(b.resolve_outbox("qa").await.unwrap().delivered, 1);
    assert_eq!(write(&b, &t, std::slice::from_ref(&a)).await, Written::Ok);
    assert_eq!(counts(&b, "qb").await, (1, 0, 0), "pending at once");
    // Registering again now finds the completion record.
    assert_eq!(
        b.register_dependency(&qa, &a, &me, "qb").await.unwrap(),
        Answer::Done
    );
}

#[tokio::test]
async fn a_failure_that_arrives_before_the_dependent_is_written_is_kept() {
    let redis = RedisServer::start();
    let b = broker(&redis).await;
    let a = plain(&b, "qa").await;
    let t = Task::builder("d").queue("qb").build().unwrap();
    let me = record::id_bytes(&t.id).unwrap().to_vec();
    b.dep_begin("qb", &me).await.unwrap();
    let qa = ["qa".to_string()];
    b.register_dependency(&qa, &a, &me, "qb").await.unwrap();
    kill_next(&b, "qa", &a).await;
    b.resolve_outbox("qa").await.unwrap();
    assert_eq!(
        write(&b, &t, std::slice::from_ref(&a)).await,
        Written::DependencyFailed(a.clone())
    );
    assert_eq!(counts(&b, "qb").await, (0, 0, 0), "nothing written yet");
    assert_eq!(
        b.register_dependency(&qa, &a, &me, "qb").await.unwrap(),
        Answer::Failed
    );
}

#[tokio::test]
async fn news_delivered_many_times_at_once_releases_the_dependent_once() {
    let redis = RedisServer::start();
    let b = broker(&redis).await;
    for round in 0..20 {
        let x = plain(&b, "qa").await;
        let y = plain(&b, "qa").await;
        let (c, w) = dependent(&b, "qb", &[("qa", &x), ("qa", &y)]).await;
        assert_eq!(w, Written::Ok);
        run_all(&b, "qa").await;
        // Eight resolvers deliver the same two entries side by side, plus direct repeats.
        let mut all = Vec::new();
        for _ in 0..8 {
            let b = b.clone();
            all.push(tokio::spawn(async move {
                b.resolve_outbox("qa").await.unwrap()
            }));
        }
        for h in all {
            h.await.unwrap();
        }
        b.dep_satisfy("qb", &c, &x).await.unwrap();
        assert_eq!(counts(&b, "qb").await, (1, 0, round), "round {round}");
        run_all(&b, "qb").await;
        // Late duplicates of the news do not bring the finished task back.
        b.dep_satisfy("qb", &c, &x).await.unwrap();
        b.dep_satisfy("qb", &c, &y).await.unwrap();
        assert_eq!(counts(&b, "qb").await, (0, 0, round + 1), "round {round}");
    }
    let mut conn = b.conn.clone();
    let left: u64 = conn.llen(&QueueKeys::new("qa").outbox).await.unwrap();
    assert_eq!(left, 0, "every outbox entry was removed once delivered");
    // The repeats reached dependents already released or finished: nobody would read an
    // early fact for them, so none was written.
    let early: u64 = conn.zcard(&QueueKeys::new("qb").early).await.unwrap();
    assert_eq!(early, 0, "no early facts from redundant deliveries");
}

#[tokio::test]
async fn completion_records_are_found_and_trimmed_by_age_and_count() {
    let redis = RedisServer::start();
    let mut b = broker(&redis).await;
    let me = [9u8; 16];
    let qa = ["qa".to_string()];
    let first = plain(&b, "qa").await;
    run_all(&b, "qa").await;
    let second = plain(&b, "qa").await;
    run_all(&b, "qa").await;
    for id in [&first, &second] {
        assert_eq!(
            b.register_dependency(&qa, id, &me, "qb").await.unwrap(),
            Answer::Done
        );
    }
    // A cap of one id: the oldest goes.
    b.set_dep_limits(DepLimits {
        retention: Duration::from_secs(3600),
        max_records: 1,
    });
    let (_, _, records) = b.trim("qa", DeadLimits::default()).await.unwrap();
    assert_eq!(records, 1);
    assert_eq!(
        b.register_dependency(&qa, &first, &me, "qb").await.unwrap(),
        Answer::Unknown
    );
    assert_eq!(
        b.register_dependency(&qa, &second, &me, "qb")
            .await
            .unwrap(),
        Answer::Done
    );
    // Past the retention everything goes: the finished list and the index are empty.
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.set_dep_limits(DepLimits {
        retention: Duration::from_millis(10),
        max_records: 100,
    });
    let (_, _, records) = b.trim("qa", DeadLimits::default()).await.unwrap();
    assert_eq!(records, 1);
    let k = QueueKeys::new("qa");
    let mut conn = b.conn.clone();
    let left: (u64, Option<u64>, u64) = redis::pipe()
        .llen(&k.finished)
        .hget(&k.ix_meta, "n")
        .hlen(k.ix_done(0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        left,
        (0, Some(0), 0),
        "finished list, index entries, done hash"
    );
}

#[tokio::test]
async fn a_flush_of_the_dependents_queue_keeps_news_for_a_dependent_being_written() {
    let redis = RedisServer::start();
    let b = broker(&redis).await;
    let x = plain(&b, "qa").await;
    let t = Task::builder("d").queue("qb").build().unwrap();
    let me = record::id_bytes(&t.id).unwrap().to_vec();
    b.dep_begin("qb", &me).await.unwrap();
    let qa = ["qa".to_string()];
    b.register_dependency(&qa, &x, &me, "qb").await.unwrap();
    run_all(&b, "qa").await;
    b.resolve_outbox("qa").await.unwrap();
    // An unrelated flush of the dependent's queue before the slow client writes it.
    b.flush("qb", &[]).await.unwrap();
    assert_eq!(write(&b, &t, std::slice::from_ref(&x)).await, Written::Ok);
    assert_eq!(
        counts(&b, "qb").await,
        (1, 0, 0),
        "released, not waiting forever"
    );
}

#[tokio::test]
async fn news_goes_to_the_dependents_registered_before_it_across_re_runs() {
    let redis = RedisServer::start();
    let b = broker(&redis).await;
    let x = plain(&b, "qa").await;
    let outbox = |b: Broker| async move {
        let mut c = b.conn.clone();
        let v: Vec<Vec<u8>> = c.lrange(&QueueKeys::new("qa").outbox, 0, -1).await.unwrap();
        v
    };
    let (y1, _) = dependent(&b, "qb", &[("qa", &x)]).await;
    kill_next(&b, "qa", &x).await;
    // A resolver reads the entry (for y1) and stalls before removing it.
    let stale = outbox(b.clone()).await;
    assert_eq!(stale.len(), 1);
    // Meanwhile x is re-run, y2 registers, x dies again, and another resolver delivers.
    let dead = b.dead_records("qa", None, 10).await.unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = dead.iter().map(|r| (r.clone(), r.clone())).collect();
    assert_eq!(b.rerun("qa", &pairs).await.unwrap(), 1);
    let (y2, _) = dependent(&b, "qb", &[("qa", &x)]).await;
    kill_next(&b, "qa", &x).await;
    b.resolve_outbox("qa").await.unwrap();
    // x is re-run once more, y3 registers, then the stalled resolver finishes: its removal
    // matches no entry of today (each entry carries its own dependents).
    let dead = b.dead_records("qa", None, 10).await.unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = dead.iter().map(|r| (r.clone(), r.clone())).collect();
    assert_eq!(b.rerun("qa", &pairs).await.unwrap(), 1);
    let (y3, _) = dependent(&b, "qb", &[("qa", &x)]).await;
    let mut c = b.conn.clone();
    let removed: i64 = c
        .lrem(&QueueKeys::new("qa").outbox, 1, &stale[0])
        .await
        .unwrap();
    assert_eq!(removed, 0);
    run_all(&b, "qa").await;
    b.resolve_outbox("qa").await.unwrap();
    let dead: Vec<Vec<u8>> = b
        .dead_records("qb", None, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| record::raw_id(r).to_vec())
        .collect();
    assert!(
        dead.contains(&y1) && dead.contains(&y2),
        "y1 and y2 failed with x"
    );
    assert!(!dead.contains(&y3));
    assert_eq!(
        counts(&b, "qb").await,
        (1, 0, 0),
        "y3 released by x's completion"
    );
    assert!(outbox(b.clone()).await.is_empty());
}

#[tokio::test]
async fn a_waiting_dependent_holds_its_unique_key_until_released() {
    let redis = RedisServer::start();
    let b = broker(&redis).await;
    let x = plain(&b, "qa").await;
    let t = Task::builder("d")
        .queue("qb")
        .unique_key("report")
        .unique_ttl(Duration::from_secs(50))
        .build()
        .unwrap();
    let me = record::id_bytes(&t.id).unwrap().to_vec();
    b.dep_begin("qb", &me).await.unwrap();
    assert_eq!(
        b.register_dependency(&["qa".to_string()], &x, &me, "qb")
            .await
            .unwrap(),
        Answer::Registered
    );
    let rec = record::encode(&t).unwrap();
    let task = Dependent {
        id: &me,
        record: &rec,
        task_type: &t.task_type,
        delay_ms: 0,
        unique: Some(("report", 50)),
        open: std::slice::from_ref(&x),
    };
    assert_eq!(b.dep_enqueue("qb", &task, None).await.unwrap(), Written::Ok);
    let lock = QueueKeys::new("qb").unique("report");
    let mut c = b.conn.clone();
    let ttl: i64 = c.ttl(&lock).await.unwrap();
    assert_eq!(ttl, -1, "no TTL while it waits, however long");
    run_all(&b, "qa").await;
    b.resolve_outbox("qa").await.unwrap();
    assert_eq!(counts(&b, "qb").await, (1, 0, 0));
    let ttl: i64 = c.ttl(&lock).await.unwrap();
    assert!((1..=50).contains(&ttl), "released with its TTL: {ttl}");
}

#[tokio::test]
async fn a_resolver_that_dies_mid_delivery_leaves_the_rest_for_the_next() {
    let redis = RedisServer::start();
    let b = broker(&redis).await;
    let a = plain(&b, "qa").await;
    let (c1, _) = dependent(&b, "qb", &[("qa", &a)]).await;
    let (_c2, _) = dependent(&b, "qc", &[("qa", &a)]).await;
    run_all(&b, "qa").await;
    // The first resolver told c1, then died before telling c2 or removing the entry.
    b.dep_satisfy("qb", &c1, &a).await.unwrap();
    assert_eq!(counts(&b, "qb").await, (1, 0, 0));
    assert_eq!(counts(&b, "qc").await, (0, 1, 0));
    // The next one delivers the whole entry again: c2 is released, c1 stays released once.
    assert_eq!(b.resolve_outbox("qa").await.unwrap().delivered, 1);
    assert_eq!(counts(&b, "qb").await, (1, 0, 0));
    assert_eq!(counts(&b, "qc").await, (1, 0, 0));
}

#[tokio::test]
async fn a_running_dependency_is_found_in_one_lookup() {
    let redis = RedisServer::start();
    let b = broker(&redis).await;
    let x = plain(&b, "qa").await;
    let me = [5u8; 16];
    let f = b
        .fetch("qa", S, 1, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record::raw_id(&f.records[0]), &x[..]);
    assert_eq!(
        b.dep_register("qa", &x, &me, "qb").await.unwrap(),
        Answer::Registered
    );
}

#[test]
fn references_round_trip() {
    let (a, b) = ([7u8; 16], [b'|'; 16]);
    let mut blob = reference(&a, "emails");
    blob.extend(reference(&b, "q"));
    assert_eq!(
        parse_references(&blob),
        Some(vec![(&a[..], "emails"), (&b[..], "q")])
    );
    assert_eq!(parse_references(b"short"), None);
    assert_eq!(parse_references(&blob[..blob.len() - 1]), None);
    assert_eq!(parse_references(&[]), Some(vec![]));
}

#[test]
fn head_pattern_escapes_every_id_byte() {
    let p = head_pattern(b"*?");
    assert_eq!(p, b"??\\*\\?*".to_vec());
}

//! Garbage written into a queue's keys while a real server runs: no task is lost, the refusal
//! is reported as what it is, and once the garbage is removed every task completes.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rediq::{Error, Task, TaskState};
use support::*;

const LONG: Duration = Duration::from_secs(20);
/// How long a fault is left in place while the server runs against it.
const FAULT: Duration = Duration::from_millis(1500);

async fn set(env: &Env, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut env.raw().await)
        .await
        .unwrap();
}

async fn del(env: &Env, key: &str) {
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut env.raw().await)
        .await
        .unwrap();
}

fn key(queue: &str, name: &str) -> String {
    format!("rediq:{{{queue}}}:{name}")
}

async fn enqueue(env: &Env, queue: &str, n: usize, delay: Duration) {
    let batch: Vec<Task> = (0..n)
        .map(|_| {
            Task::builder("t")
                .queue(queue)
                .delay(delay)
                .build()
                .unwrap()
        })
        .collect();
    env.client.enqueue_batch(batch).await.unwrap();
}

/// Every task of the queue, wherever it is (the counters of a corrupt key are not read).
async fn everywhere(env: &Env, queue: &str) -> u64 {
    let s = env.inspector.queue_stats(queue).await.unwrap();
    s.pending + s.active + s.delayed + s.retry + s.dead + s.completed
}

/// Tasks pending or held by a server, read from the sets themselves (stats would read a broken
/// key too).
async fn pending_or_active(env: &Env, queue: &str) -> u64 {
    let mut c = env.raw().await;
    let mut n: u64 = redis::cmd("LLEN")
        .arg(key(queue, "pending:50"))
        .query_async(&mut c)
        .await
        .unwrap();
    let hashes: Vec<String> = redis::cmd("KEYS")
        .arg(key(queue, "active:*"))
        .query_async(&mut c)
        .await
        .unwrap();
    for h in hashes {
        let held: u64 = redis::cmd("HLEN").arg(h).query_async(&mut c).await.unwrap();
        n += held;
    }
    n
}

async fn processed(env: &Env, queue: &str) -> u64 {
    env.inspector
        .queue_stats(queue)
        .await
        .unwrap()
        .processed_total
}

fn counting_ok(runs: &Arc<AtomicU32>) -> rediq::processor::Mux {
    let r = runs.clone();
    mux_with("t", move |_| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

#[tokio::test]
async fn a_non_integer_token_counter_loses_no_pending_task() {
    let env = Env::new().await;
    let q = "tok";
    enqueue(&env, q, 200, Duration::ZERO).await;
    set(&env, &key(q, "token"), "x").await;
    let runs = Arc::new(AtomicU32::new(0));
    let srv = start(
        env.server().queues(&[q]).concurrency(20),
        counting_ok(&runs),
    )
    .await;
    tokio::time::sleep(FAULT).await;
    let s = env.inspector.queue_stats(q).await.unwrap();
    assert_eq!((s.pending, s.active), (200, 0), "every task still pending");
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    del(&env, &key(q, "token")).await;
    assert!(wait_for(LONG, || async { processed(&env, q).await == 200 }).await);
    srv.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 200);
}

#[tokio::test]
async fn a_wrong_type_pending_set_loses_no_delayed_task_coming_due() {
    let env = Env::new().await;
    let q = "due";
    enqueue(&env, q, 100, Duration::from_millis(300)).await;
    set(&env, &key(q, "pending:50"), "x").await;
    let runs = Arc::new(AtomicU32::new(0));
    let srv = start(
        env.server().queues(&[q]).concurrency(20),
        counting_ok(&runs),
    )
    .await;
    tokio::time::sleep(FAULT).await;
    let mut c = env.raw().await;
    let delayed: u64 = redis::cmd("ZCARD")
        .arg(key(q, "delayed"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(delayed, 100, "every delayed task still delayed");

    del(&env, &key(q, "pending:50")).await;
    assert!(wait_for(LONG, || async { processed(&env, q).await == 100 }).await);
    srv.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 100);
}

#[tokio::test]
async fn a_wrong_type_retry_set_loses_no_failing_task() {
    let env = Env::new().await;
    let q = "rty";
    enqueue(&env, q, 50, Duration::ZERO).await;
    set(&env, &key(q, "retry"), "x").await;
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    // The first attempt of every task fails.
    let mux = mux_with("t", move |t: Task| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            if t.retry_cnt == 0 {
                Err(Error::handler("first attempt fails"))
            } else {
                Ok(())
            }
        }
    });
    let srv = start(
        env.server()
            .queues(&[q])
            .concurrency(20)
            .lease_duration(Duration::from_secs(1))
            .retry_backoff(Duration::from_millis(10), Duration::from_millis(10)),
        mux,
    )
    .await;
    tokio::time::sleep(FAULT).await;
    assert_eq!(pending_or_active(&env, q).await, 50, "no task vanished");
    assert!(
        runs.load(Ordering::SeqCst) >= 20,
        "the tasks did run and fail"
    );

    del(&env, &key(q, "retry")).await;
    assert!(wait_for(LONG, || async { processed(&env, q).await == 50 }).await);
    srv.shutdown().await;
    let s = env.inspector.queue_stats(q).await.unwrap();
    assert_eq!((s.pending, s.active, s.retry, s.dead), (0, 0, 0, 0));
}

#[tokio::test]
async fn a_wrong_type_dead_set_loses_no_dying_task() {
    let env = Env::new().await;
    let q = "kil";
    enqueue(&env, q, 20, Duration::ZERO).await;
    set(&env, &key(q, "dead"), "x").await;
    let mux = mux_with("t", |_| async { Err(Error::non_retryable("always fails")) });
    let srv = start(
        env.server()
            .queues(&[q])
            .concurrency(20)
            .lease_duration(Duration::from_secs(1)),
        mux,
    )
    .await;
    tokio::time::sleep(FAULT).await;
    assert_eq!(
        pending_or_active(&env, q).await,
        20,
        "every task pending or active"
    );

    del(&env, &key(q, "dead")).await;
    assert!(
        wait_for(LONG, || async {
            env.inspector.queue_stats(q).await.unwrap().dead == 20
        })
        .await
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_non_integer_processed_counter_loses_no_completed_task() {
    let env = Env::new().await;
    let q = "cpl";
    enqueue(&env, q, 50, Duration::ZERO).await;
    set(&env, &key(q, "stat:processed"), "x").await;
    let runs = Arc::new(AtomicU32::new(0));
    let srv = start(
        env.server()
            .queues(&[q])
            .concurrency(20)
            .lease_duration(Duration::from_secs(1)),
        counting_ok(&runs),
    )
    .await;
    tokio::time::sleep(FAULT).await;
    assert!(
        env.inspector.queue_stats(q).await.is_err(),
        "the counter is still broken"
    );
    assert_eq!(
        pending_or_active(&env, q).await,
        50,
        "every task pending or active"
    );

    del(&env, &key(q, "stat:processed")).await;
    assert!(wait_for(LONG, || async { processed(&env, q).await == 50 }).await);
    srv.shutdown().await;
}

#[tokio::test]
async fn enqueue_reports_a_corrupt_key_and_writes_nothing_but_shrugs_off_a_broken_wake_marker() {
    let env = Env::new().await;
    let q = "enq";
    set(&env, &key(q, "bands"), "x").await;
    let err = env
        .client
        .enqueue(Task::builder("t").queue(q).build().unwrap())
        .await
        .unwrap_err();
    match &err {
        Error::Corrupt { key: k, reason } => {
            assert_eq!(k, &key(q, "bands"));
            assert!(reason.contains("a string"), "{reason}");
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
    assert!(err.to_string().contains("rediq:{enq}:bands"), "{err}");
    del(&env, &key(q, "bands")).await;
    assert_eq!(everywhere(&env, q).await, 0);

    set(&env, &key(q, "wake"), "x").await;
    env.client
        .enqueue(Task::builder("t").queue(q).build().unwrap())
        .await
        .unwrap();
    assert_eq!(env.inspector.queue_stats(q).await.unwrap().pending, 1);
}

#[tokio::test]
async fn every_piece_of_garbage_reaches_the_dead_letter_queue_on_its_own() {
    let env = Env::new().await;
    let q = "junk";
    let mut garbage: Vec<Vec<u8>> =
        vec![b"".to_vec(), b"a".to_vec(), b"bb".to_vec(), b"c".to_vec()];
    for i in 0..4 {
        garbage.push(format!("identical prefix, then #{i}").into_bytes());
    }
    for g in &garbage {
        env.inspector.plant_raw_pending(q, g).await.unwrap();
    }
    enqueue(&env, q, 5, Duration::ZERO).await;
    let runs = Arc::new(AtomicU32::new(0));
    let srv = start(env.server().queues(&[q]).concurrency(4), counting_ok(&runs)).await;
    assert!(
        wait_for(LONG, || async {
            let s = env.inspector.queue_stats(q).await.unwrap();
            s.dead == garbage.len() as u64 && s.processed_total == 5
        })
        .await
    );
    srv.shutdown().await;
    let mut payloads: Vec<Vec<u8>> = env
        .inspector
        .list(q, TaskState::Dead, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|t| {
            assert_eq!(t.task_type, "rediq:undecodable");
            assert!(t.last_error.unwrap().starts_with("undecodable: "));
            t.payload
        })
        .collect();
    payloads.sort();
    garbage.sort();
    assert_eq!(payloads, garbage);
}

#[tokio::test]
async fn an_unparsable_entry_of_a_dead_servers_active_hash_is_set_aside() {
    let env = Env::new().await;
    let q = "gone";
    let dead_server = "host:9:dead";
    let mut c = env.raw().await;
    let active = key(q, &format!("active:{dead_server}"));
    let _: () = redis::cmd("HSET")
        .arg(&active)
        .arg("some-id")
        .arg("not token|record")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(key(q, "leases"))
        .arg(0)
        .arg(dead_server)
        .query_async(&mut c)
        .await
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let srv = start(
        env.server()
            .queues(&[q])
            .lease_duration(Duration::from_secs(1)),
        counting_ok(&runs),
    )
    .await;
    assert!(
        wait_for(LONG, || async {
            env.inspector.queue_stats(q).await.unwrap().dead == 1
        })
        .await,
        "the entry reached the dead-letter queue"
    );
    srv.shutdown().await;
    let dead = env.inspector.list(q, TaskState::Dead, 10).await.unwrap();
    assert_eq!(dead[0].payload, b"not token|record");
    let mut c = env.raw().await;
    let left: u64 = redis::cmd("EXISTS")
        .arg(&active)
        .query_async(&mut c)
        .await
        .unwrap();
    let lease: Option<f64> = redis::cmd("ZSCORE")
        .arg(key(q, "leases"))
        .arg(dead_server)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        (left, lease),
        (0, None),
        "the dead server holds nothing, its lease is gone"
    );
}

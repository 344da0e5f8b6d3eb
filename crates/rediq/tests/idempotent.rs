//! Enqueueing is idempotent (issue 13, defect 4): a task whose id the queue knows is not written
//! again, whether it is pending, running, completed, dead-lettered or waiting for dependencies,
//! and the id index that makes this O(1) stays correct as it grows, when producers hold stale
//! views of it, and across a flush.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rediq::{Error, Existing, Task};
use support::*;

const LONG: Duration = Duration::from_secs(20);

fn task(queue: &str) -> Task {
    Task::builder("t").queue(queue).build().unwrap()
}

/// Enqueues a task of queue "q" and returns (not enqueued) a task of "q" that depends on it.
async fn enqueue_with_dependent(env: &Env) -> Task {
    let a = task("q");
    env.client.enqueue(a.clone()).await.unwrap();
    Task::builder("t")
        .queue("q")
        .depends_on(&[a.id.as_str()])
        .build()
        .unwrap()
}

/// Serves queue "q" until the task and its dependent (enqueue_with_dependent) have run, and
/// checks that each ran exactly once.
async fn both_run_once(env: &Env) {
    let (mux, runs) = counting_mux("t");
    let server = start(env.server().queues(&["q"]), mux).await;
    assert!(
        wait_for(LONG, || async {
            stats(env, "q").await.processed_total == 2
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *runs.lock().unwrap(),
        2,
        "the task and its dependent ran once each"
    );
    server.shutdown().await;
}

async fn stats(env: &Env, queue: &str) -> rediq::QueueStats {
    env.inspector.queue_stats(queue).await.unwrap()
}

#[tokio::test]
async fn a_pending_task_enqueued_again_is_written_once() {
    let env = Env::new().await;
    let t = task("q");
    let first = env.client.enqueue_outcome(t.clone()).await.unwrap();
    assert_eq!(first.existing, None);
    assert_eq!(first.id, t.id);
    let again = env.client.enqueue_outcome(t.clone()).await.unwrap();
    assert_eq!(again.existing, Some(Existing::Live));
    // The plain call answers with the id, as for a first enqueue.
    assert_eq!(env.client.enqueue(t.clone()).await.unwrap(), t.id);
    env.client
        .enqueue_batch(vec![t.clone(), t.clone()])
        .await
        .unwrap();
    let s = stats(&env, "q").await;
    assert_eq!(s.pending, 1, "{s:?}");
}

#[tokio::test]
async fn one_id_twice_in_a_batch_is_written_once() {
    let env = Env::new().await;
    let t = task("q");
    let other = task("q");
    let ids = env
        .client
        .enqueue_batch(vec![t.clone(), other, t.clone()])
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(stats(&env, "q").await.pending, 2);
}

#[tokio::test]
async fn a_running_or_completed_task_enqueued_again_does_not_run_again() {
    let env = Env::new().await;
    let started = Arc::new(Mutex::new(0u32));
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let s = started.clone();
    let mux = mux_with("t", move |_| {
        let s = s.clone();
        let mut go = go_rx.clone();
        async move {
            *s.lock().unwrap() += 1;
            let _ = go.wait_for(|g| *g).await;
            Ok(())
        }
    });
    let server = start(env.server().queues(&["q"]), mux).await;
    let t = task("q");
    env.client.enqueue(t.clone()).await.unwrap();
    assert!(wait_for(LONG, || async { *started.lock().unwrap() == 1 }).await);
    // Running: known, not written.
    let again = env.client.enqueue_outcome(t.clone()).await.unwrap();
    assert_eq!(again.existing, Some(Existing::Live));
    go_tx.send(true).unwrap();
    assert!(
        wait_for(LONG, || async {
            stats(&env, "q").await.processed_total == 1
        })
        .await
    );
    // Completed: known, not written.
    let after = env.client.enqueue_outcome(t.clone()).await.unwrap();
    assert_eq!(after.existing, Some(Existing::Completed));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = stats(&env, "q").await;
    assert_eq!((s.pending, s.active, s.processed_total), (0, 0, 1), "{s:?}");
    assert_eq!(*started.lock().unwrap(), 1, "the task ran once");
    server.shutdown().await;
}

#[tokio::test]
async fn a_dead_task_enqueued_again_stays_dead() {
    let env = Env::new().await;
    let mux = mux_with("t", |_| async { Err(Error::handler("always fails")) });
    let server = start(env.server().queues(&["q"]), mux).await;
    let t = Task::builder("t").queue("q").max_retry(0).build().unwrap();
    env.client.enqueue(t.clone()).await.unwrap();
    assert!(wait_for(LONG, || async { stats(&env, "q").await.dead == 1 }).await);
    let again = env.client.enqueue_outcome(t.clone()).await.unwrap();
    assert_eq!(again.existing, Some(Existing::Failed));
    let s = stats(&env, "q").await;
    assert_eq!((s.pending, s.dead), (0, 1), "{s:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_waiting_dependent_enqueued_again_is_written_once() {
    let env = Env::new().await;
    let b = enqueue_with_dependent(&env).await;
    assert_eq!(
        env.client
            .enqueue_outcome(b.clone())
            .await
            .unwrap()
            .existing,
        None
    );
    assert_eq!(
        env.client
            .enqueue_outcome(b.clone())
            .await
            .unwrap()
            .existing,
        Some(Existing::Live)
    );
    let s = stats(&env, "q").await;
    assert_eq!((s.pending, s.waiting), (1, 1), "{s:?}");
    // Once a completes, b runs exactly once.
    both_run_once(&env).await;
}

#[tokio::test]
async fn one_dependent_enqueued_by_many_producers_at_once_is_written_once() {
    let env = Env::new().await;
    let b = enqueue_with_dependent(&env).await;
    let mut joins = Vec::new();
    for _ in 0..8 {
        let c = env.redis.client().build().await.unwrap();
        let b = b.clone();
        joins.push(tokio::spawn(async move { c.enqueue_outcome(b).await }));
    }
    let mut written = 0;
    for j in joins {
        if j.await.unwrap().unwrap().existing.is_none() {
            written += 1;
        }
    }
    assert_eq!(written, 1, "one producer wrote it, the others found it");
    assert_eq!(stats(&env, "q").await.waiting, 1);
    both_run_once(&env).await;
}

/// Thousands of ids make the index split its buckets many times; producers with separate views
/// of it (two clients) keep finding every id, and every id is written exactly once.
#[tokio::test]
async fn the_index_grows_under_two_producers_and_finds_every_id() {
    let env = Env::new().await;
    let other = env.redis.client().build().await.unwrap();
    let tasks: Vec<Task> = (0..6000).map(|_| task("big")).collect();
    for (i, chunk) in tasks.chunks(500).enumerate() {
        let c = if i % 2 == 0 { &env.client } else { &other };
        c.enqueue_batch(chunk.to_vec()).await.unwrap();
    }
    // Single enqueues from both, concurrently, of ids known and new.
    let fresh: Vec<Task> = (0..400).map(|_| task("big")).collect();
    let mut joins = Vec::new();
    for (i, t) in fresh.iter().chain(tasks.iter().step_by(15)).enumerate() {
        let c = if i % 2 == 0 {
            env.client.clone()
        } else {
            other.clone()
        };
        let t = t.clone();
        joins.push(tokio::spawn(async move { c.enqueue_outcome(t).await }));
    }
    let mut known = 0;
    for j in joins {
        if j.await.unwrap().unwrap().existing == Some(Existing::Live) {
            known += 1;
        }
    }
    assert_eq!(known, 400, "every id enqueued before was found");
    assert_eq!(stats(&env, "big").await.pending, 6400);
    // The index split: more than one bucket, each small enough to stay listpack-encoded.
    let mut c = env.raw().await;
    let meta: (u32, u64, u64) = redis::cmd("HMGET")
        .arg("rediq:{big}:ix")
        .arg("l")
        .arg("s")
        .arg("n")
        .query_async::<(Option<u32>, Option<u64>, Option<u64>)>(&mut c)
        .await
        .map(|(l, s, n)| (l.unwrap_or(0), s.unwrap_or(0), n.unwrap_or(0)))
        .unwrap();
    assert_eq!(meta.2, 6400, "entries counted");
    let buckets = (1u64 << meta.0) + meta.1;
    // ~40 entries per bucket, a little more where the last calls could not split.
    assert!(buckets >= 6400 / 50, "split to {buckets} buckets: {meta:?}");
    for b in [0, buckets / 2, buckets - 1] {
        let enc: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(format!("rediq:{{big}}:ix:0:{b}"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(enc, "listpack", "bucket {b}");
    }
}

/// Eight producers growing one index from empty at once: the level changes under calls in flight
/// (they are answered IXSTALE and call again, or go through one level behind), and none of them
/// gives up.
#[tokio::test]
async fn producers_racing_on_a_growing_index_all_get_through() {
    let env = Env::new().await;
    let mut joins = Vec::new();
    for _ in 0..8 {
        let c = env.redis.client().build().await.unwrap();
        joins.push(tokio::spawn(async move {
            for _ in 0..10 {
                let batch: Vec<Task> = (0..500).map(|_| task("race")).collect();
                c.enqueue_batch(batch).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for j in joins {
        j.await.unwrap().unwrap();
    }
    assert_eq!(stats(&env, "race").await.pending, 40_000);
}

#[tokio::test]
async fn a_flushed_queue_forgets_its_ids() {
    let env = Env::new().await;
    let t = task("fl");
    env.client.enqueue(t.clone()).await.unwrap();
    env.client.flush_queue("fl").await.unwrap();
    let again = env.client.enqueue_outcome(t.clone()).await.unwrap();
    assert_eq!(again.existing, None, "written again after the flush");
    assert_eq!(stats(&env, "fl").await.pending, 1);
    // The old generation's buckets are gone.
    let mut c = env.raw().await;
    let old: Vec<String> = redis::cmd("KEYS")
        .arg("rediq:{fl}:ix:0:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(old.is_empty(), "{old:?}");
}

/// The finished-task memory is bounded: past the cap, a completion wakes the janitor, which
/// forgets the oldest ids at once (not at its next round).
#[tokio::test]
async fn finished_ids_beyond_the_cap_are_forgotten_at_once() {
    let env = Env::new().await;
    let (mux, _runs) = counting_mux("t");
    let server = start(
        env.server()
            .queues(&["cap"])
            .janitor_interval(Duration::from_secs(3600))
            .dependency_max_records(50),
        mux,
    )
    .await;
    let tasks: Vec<Task> = (0..300).map(|_| task("cap")).collect();
    env.client.enqueue_batch(tasks.clone()).await.unwrap();
    assert!(
        wait_for(LONG, || async {
            stats(&env, "cap").await.processed_total == 300
        })
        .await
    );
    let mut c = env.raw().await;
    let ok = wait_for(LONG, || {
        let mut c = c.clone();
        async move {
            let n: u64 = redis::cmd("LLEN")
                .arg("rediq:{cap}:finished")
                .query_async(&mut c)
                .await
                .unwrap();
            n <= 50
        }
    })
    .await;
    assert!(ok, "the finished list came back under its cap");
    let n: u64 = redis::cmd("HGET")
        .arg("rediq:{cap}:ix")
        .arg("n")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(n <= 50, "index entries {n}");
    server.shutdown().await;
    // Exactly the remembered ids answer "completed"; the others are forgotten (and written
    // again: the server is stopped, so they only wait).
    let mut completed = 0;
    for t in tasks {
        if env.client.enqueue_outcome(t).await.unwrap().existing == Some(Existing::Completed) {
            completed += 1;
        }
    }
    assert!(
        completed > 0 && completed == n,
        "{completed} known of {n} entries"
    );
}

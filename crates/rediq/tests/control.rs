//! Queue and task control: pause / resume (kept across server restarts), flush (every state,
//! counts per state, unique keys released, late results refused) and re-running dead tasks.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rediq::{Error, FlushCounts, Task, TaskState};
use support::*;

const LONG: Duration = Duration::from_secs(15);

fn counting(runs: Arc<AtomicU32>) -> rediq::processor::Mux {
    mux_with("c", move |_| {
        let r = runs.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

#[tokio::test]
async fn paused_queue_hands_out_nothing_even_after_a_restart() {
    let env = Env::new().await;
    let runs = Arc::new(AtomicU32::new(0));
    let srv = start(env.server().queues(&["pq"]), counting(runs.clone())).await;
    env.client.pause_queue("pq").await.unwrap();
    for _ in 0..5 {
        env.client
            .enqueue(Task::builder("c").queue("pq").build().unwrap())
            .await
            .expect("enqueueing into a paused queue works");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    srv.shutdown().await;
    let st = env.inspector.queue_stats("pq").await.unwrap();
    assert!(st.paused);
    assert_eq!((st.pending, runs.load(Ordering::SeqCst)), (5, 0));

    // A new server respects the pause too.
    let srv = start(env.server().queues(&["pq"]), counting(runs.clone())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    env.client.resume_queue("pq").await.unwrap();
    assert!(wait_for(LONG, || async { runs.load(Ordering::SeqCst) == 5 }).await);
    srv.shutdown().await;
    assert!(!env.inspector.queue_stats("pq").await.unwrap().paused);
}

#[tokio::test]
async fn flush_removes_every_state_and_releases_unique_keys() {
    let env = Env::new().await;
    let release = Arc::new(tokio::sync::Notify::new());
    let mut mux = rediq::processor::Mux::new();
    mux.handle(
        "bad",
        FnHandler(|_| async { Err(Error::non_retryable("x")) }),
    );
    mux.handle(
        "flaky",
        FnHandler(|_| async { Err(Error::handler("later")) }),
    );
    let r = release.clone();
    mux.handle(
        "slow",
        FnHandler(move |_| {
            let r = r.clone();
            async move {
                r.notified().await;
                Ok(())
            }
        }),
    );
    let srv = start(
        env.server()
            .queues(&["fq"])
            .retry_backoff(Duration::from_secs(600), Duration::from_secs(600)),
        mux,
    )
    .await;
    let q = |t: &str| Task::builder(t).queue("fq");
    env.client.enqueue(q("bad").build().unwrap()).await.unwrap();
    env.client
        .enqueue(q("flaky").build().unwrap())
        .await
        .unwrap();
    env.client
        .enqueue(q("slow").build().unwrap())
        .await
        .unwrap();
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            let s = insp.queue_stats("fq").await.unwrap();
            (s.dead, s.retry, s.active) == (1, 1, 1)
        })
        .await
    );
    // Pending and delayed tasks, while the queue is paused so they stay put.
    env.client.pause_queue("fq").await.unwrap();
    env.client
        .enqueue(q("c").unique_key("only-one").build().unwrap())
        .await
        .unwrap();
    env.client.enqueue(q("c").build().unwrap()).await.unwrap();
    env.client
        .enqueue(q("c").delay(Duration::from_secs(600)).build().unwrap())
        .await
        .unwrap();

    let counts = env.client.flush_queue("fq").await.unwrap();
    assert_eq!(
        counts,
        FlushCounts {
            pending: 2,
            delayed: 1,
            retry: 1,
            dead: 1,
            completed: 0,
            active: 1,
            waiting: 0,
        }
    );
    let st = env.inspector.queue_stats("fq").await.unwrap();
    assert_eq!(
        (st.pending, st.delayed, st.retry, st.dead, st.active),
        (0, 0, 0, 0, 0)
    );
    assert!(st.paused, "the pause outlives a flush");
    // The running task's result is refused: it was flushed.
    release.notify_one();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.inspector
            .queue_stats("fq")
            .await
            .unwrap()
            .processed_total,
        0
    );
    srv.shutdown().await;
    env.client
        .enqueue(q("c").unique_key("only-one").build().unwrap())
        .await
        .expect("the flushed task's unique key was released");
}

#[tokio::test]
async fn dead_tasks_run_again_with_their_attempts_reset() {
    let env = Env::new().await;
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (f, s) = (fail.clone(), seen.clone());
    let srv = start(
        env.server().queues(&["rq"]),
        mux_with("r", move |t| {
            let (f, s) = (f.clone(), s.clone());
            async move {
                s.lock().unwrap().push((t.id.clone(), t.retry_cnt));
                if f.load(Ordering::SeqCst) {
                    Err(Error::non_retryable("down"))
                } else {
                    Ok(())
                }
            }
        }),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            env.client
                .enqueue(Task::builder("r").queue("rq").max_retry(0).build().unwrap())
                .await
                .unwrap(),
        );
    }
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("rq").await.unwrap().dead == 3
        })
        .await
    );
    fail.store(false, Ordering::SeqCst);
    seen.lock().unwrap().clear();

    assert!(env.client.rerun_dead("rq", &ids[1]).await.unwrap());
    assert!(
        !env.client.rerun_dead("rq", &ids[1]).await.unwrap(),
        "no longer dead"
    );
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("rq").await.unwrap().processed_total == 1
        })
        .await
    );
    assert_eq!(*seen.lock().unwrap(), vec![(ids[1].clone(), 0)]);

    assert_eq!(env.client.rerun_all_dead("rq").await.unwrap(), 2);
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("rq").await.unwrap().processed_total == 3
        })
        .await
    );
    srv.shutdown().await;
    assert!(env
        .inspector
        .list("rq", TaskState::Dead, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(seen.lock().unwrap().iter().all(|(_, n)| *n == 0));
    let unknown = Task::builder("r").build().unwrap().id;
    assert!(!env.client.rerun_dead("rq", &unknown).await.unwrap());
}

#[tokio::test]
async fn cancel_removes_waiting_tasks_and_stops_running_ones_without_retry() {
    use rediq::CancelOutcome;
    let env = Env::new().await;
    let q = |t: &str| Task::builder(t).queue("cq");
    // Waiting: pending (with a unique key) and delayed.
    let pending = env
        .client
        .enqueue(q("c").unique_key("u1").build().unwrap())
        .await
        .unwrap();
    let delayed = env
        .client
        .enqueue(q("c").delay(Duration::from_secs(600)).build().unwrap())
        .await
        .unwrap();
    assert_eq!(
        env.client.cancel_task("cq", &pending).await.unwrap(),
        CancelOutcome::Removed
    );
    assert_eq!(
        env.client.cancel_task("cq", &delayed).await.unwrap(),
        CancelOutcome::Removed
    );
    assert_eq!(
        env.client.cancel_task("cq", &pending).await.unwrap(),
        CancelOutcome::NotFound
    );
    env.client
        .enqueue(q("c").unique_key("u1").build().unwrap())
        .await
        .expect("unique key released by the cancellation");
    env.client.flush_queue("cq").await.unwrap();

    // Running: the handler is dropped, the task is neither retried nor dead.
    let dropped = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicU32::new(0));
    let (d, f) = (dropped.clone(), finished.clone());
    let srv = start(
        env.server().queues(&["cq"]),
        mux_with("long", move |_| {
            let (d, f) = (d.clone(), f.clone());
            async move {
                struct OnDrop(Arc<AtomicU32>);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let _guard = OnDrop(d);
                tokio::time::sleep(Duration::from_secs(30)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }),
    )
    .await;
    let running = env
        .client
        .enqueue(q("long").max_retry(5).build().unwrap())
        .await
        .unwrap();
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("cq").await.unwrap().active == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await; // the handler has started
    assert_eq!(
        env.client.cancel_task("cq", &running).await.unwrap(),
        CancelOutcome::Signalled
    );
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("cq").await.unwrap().active == 0
        })
        .await
    );
    srv.shutdown().await;
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "handler future dropped");
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    let st = env.inspector.queue_stats("cq").await.unwrap();
    assert_eq!(
        (
            st.pending,
            st.retry,
            st.dead,
            st.processed_total,
            st.cancelled_total
        ),
        (0, 0, 0, 0, 3)
    );
}

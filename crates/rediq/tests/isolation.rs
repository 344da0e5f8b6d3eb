//! Faults stay where they are: a queue whose keys are broken does not slow the others, a Redis
//! that hangs does not stretch shutdown past its timeout, and a handler that blocks its thread
//! does not lose its server's leases.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rediq::Task;
use support::*;

/// Raw access to the test's Redis, to break keys the way an operator or a bug might.
async fn raw(env: &Env) -> redis::aio::MultiplexedConnection {
    redis::Client::open(env.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Enqueues `n` tasks to `queue` one after the other, each once the previous one ran, and
/// returns the slowest pickup (enqueue call to handler start).
async fn slowest_pickup(env: &Env, queue: &str, started: &Arc<Mutex<Vec<Instant>>>) -> Duration {
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let before = started.lock().unwrap().len();
        let t0 = Instant::now();
        env.client
            .enqueue(Task::builder("t").queue(queue).build().unwrap())
            .await
            .unwrap();
        assert!(
            wait_for(Duration::from_secs(5), || async {
                started.lock().unwrap().len() > before
            })
            .await,
            "task {i} of {queue} never ran"
        );
        let at = *started.lock().unwrap().last().unwrap();
        worst = worst.max(at - t0);
    }
    worst
}

fn recording_mux(started: &Arc<Mutex<Vec<Instant>>>) -> rediq::processor::Mux {
    let s = started.clone();
    mux_with("t", move |_| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(Instant::now());
            Ok(())
        }
    })
}

/// A queue whose fetch fails on every round (its pending key holds garbage) used to
/// make the fetcher back off for the whole round: pickups on a healthy queue took 12–309 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_fetch_fails_does_not_slow_the_others() {
    let env = Env::new().await;
    let started = Arc::new(Mutex::new(Vec::new()));
    let srv = start(
        env.server().queues(&["good", "broken"]).concurrency(4),
        recording_mux(&started),
    )
    .await;
    let mut r = raw(&env).await;
    let _: () = redis::cmd("SET")
        .arg("rediq:{broken}:pending")
        .arg("garbage")
        .query_async(&mut r)
        .await
        .unwrap();
    // Let the failures pile up, as they would in production before anyone notices.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let worst = slowest_pickup(&env, "good", &started).await;
    assert!(
        worst < Duration::from_millis(50),
        "a healthy queue waited {worst:?} for a broken one"
    );
    srv.shutdown().await;
}

/// A wake marker of the wrong type made the blocking wait (one BZPOPMIN over every queue's
/// marker) fail and reconnect ~19 times a second; the healthy queue then waited for polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_wake_marker_does_not_slow_the_others() {
    let env = Env::new().await;
    let started = Arc::new(Mutex::new(Vec::new()));
    let srv = start(
        env.server().queues(&["good", "broken"]).concurrency(4),
        recording_mux(&started),
    )
    .await;
    let mut r = raw(&env).await;
    let _: () = redis::cmd("SET")
        .arg("rediq:{broken}:wake")
        .arg("garbage")
        .query_async(&mut r)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let worst = slowest_pickup(&env, "good", &started).await;
    assert!(
        worst < Duration::from_millis(50),
        "a healthy queue waited {worst:?} behind a broken wake marker"
    );
    srv.shutdown().await;
}

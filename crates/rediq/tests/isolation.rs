//! Faults stay where they are: a queue whose keys are broken does not slow the others, a Redis
//! that hangs does not stretch shutdown past its timeout, and a handler that blocks its thread
//! does not lose its server's leases.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rediq::Task;
use support::*;

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

/// Serves a healthy queue "good" and a queue "broken" whose `key` holds garbage (left for
/// `settle` first, as it would be in production before anyone notices), and returns the slowest
/// pickup on the healthy queue.
async fn pickup_beside_broken(key: &str, settle: Duration) -> Duration {
    let env = Env::new().await;
    let started = Arc::new(Mutex::new(Vec::new()));
    let srv = start(
        env.server().queues(&["good", "broken"]).concurrency(4),
        recording_mux(&started),
    )
    .await;
    env.set_raw(key, "garbage").await;
    tokio::time::sleep(settle).await;
    let worst = slowest_pickup(&env, "good", &started).await;
    srv.shutdown().await;
    worst
}

/// A queue whose fetch fails on every round (its bands zset holds garbage) used to
/// make the fetcher back off for the whole round: pickups on a healthy queue took 12–309 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_fetch_fails_does_not_slow_the_others() {
    let worst = pickup_beside_broken("rediq:{broken}:bands", Duration::from_millis(1_500)).await;
    assert!(
        worst < Duration::from_millis(50),
        "a healthy queue waited {worst:?} for a broken one"
    );
}

/// A wake marker of the wrong type made the blocking wait (one BZPOPMIN over every queue's
/// marker) fail and reconnect ~19 times a second; the healthy queue then waited for polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_wake_marker_does_not_slow_the_others() {
    let worst = pickup_beside_broken("rediq:{broken}:wake", Duration::from_millis(500)).await;
    assert!(
        worst < Duration::from_millis(50),
        "a healthy queue waited {worst:?} behind a broken wake marker"
    );
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

/// With Redis frozen (SIGSTOP), SIGTERM used to take 60 s with a 2 s shutdown timeout: every
/// step waited for Redis. Shutdown is bounded by its timeout plus a small margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_when_redis_hangs() {
    let mut env = Env::new().await;
    let started = Arc::new(Mutex::new(Vec::new()));
    let s = started.clone();
    let srv = start(
        env.server()
            .queues(&["q"])
            .concurrency(4)
            .shutdown_timeout(Duration::from_secs(1)),
        mux_with("t", move |_| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(Instant::now());
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            }
        }),
    )
    .await;
    for _ in 0..8 {
        env.client
            .enqueue(Task::builder("t").queue("q").build().unwrap())
            .await
            .unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(5), || async {
            started.lock().unwrap().len() >= 4
        })
        .await
    );
    let pids: Vec<u32> = env
        .redis
        .data_servers()
        .iter()
        .filter_map(|s| s.pid())
        .collect();
    for pid in &pids {
        signal(*pid, "-STOP");
    }
    let t0 = Instant::now();
    let done = tokio::time::timeout(Duration::from_secs(30), srv.shutdown()).await;
    let took = t0.elapsed();
    for pid in &pids {
        signal(*pid, "-CONT");
    }
    assert!(done.is_ok(), "shutdown still running after 30 s");
    // 1 s shutdown timeout + the documented 3 s margin, plus scheduling slack.
    assert!(
        took < Duration::from_millis(4_500),
        "shutdown took {took:?}"
    );
}

/// A handler that blocks its thread (std::thread::sleep) on a one-thread runtime used to
/// starve the heartbeat: the lease lapsed, another server ran the task again, and the run's
/// own acknowledgement was refused. The heartbeat has its own thread now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_keeps_its_lease() {
    let env = Env::new().await;
    let runs = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let lease = Duration::from_millis(800);
    // Server A on a runtime with a single thread, which its handler blocks for 3 s.
    let (stop_a, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = env
        .server()
        .queues(&["b"])
        .lease_duration(lease)
        .build()
        .await
        .unwrap();
    let r = runs.clone();
    let a = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mux = mux_with("t", move |_| {
            r.lock().unwrap().push("a");
            std::thread::sleep(Duration::from_secs(3));
            async { Ok(()) }
        });
        rt.block_on(rediq::server::Server::from(state).run_until(mux, async {
            let _ = stopped.await;
        }))
    });
    env.client
        .enqueue(Task::builder("t").queue("b").build().unwrap())
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || async {
            !runs.lock().unwrap().is_empty()
        })
        .await
    );
    // Server B would take the task over if A's lease lapsed.
    let r = runs.clone();
    let b = start(
        env.server().queues(&["b"]).lease_duration(lease),
        mux_with("t", move |_| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push("b");
                Ok(())
            }
        }),
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            env.inspector
                .queue_stats("b")
                .await
                .unwrap()
                .processed_total
                >= 1
        })
        .await,
        "the task never completed"
    );
    tokio::time::sleep(lease * 3).await;
    b.shutdown().await;
    let _ = stop_a.send(());
    a.join().unwrap().unwrap();
    let st = env.inspector.queue_stats("b").await.unwrap();
    assert_eq!(*runs.lock().unwrap(), vec!["a"], "run again elsewhere");
    assert_eq!((st.processed_total, st.dead, st.retry), (1, 0, 0), "{st:?}");
}

/// Found in review: garbage at the head of pending that cannot be set aside (here the dead set
/// holds a string) came back on every fetch, and fetch.lua woke the fetcher again at once: a
/// busy loop against Redis. Now the queue backs off as after a failed fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_that_cannot_be_set_aside_backs_off() {
    let env = Env::new().await;
    let mut r = env.raw().await;
    let _: () = redis::cmd("ZADD")
        .arg("rediq:{broken}:pending")
        .arg(0)
        .arg("junk")
        .query_async(&mut r)
        .await
        .unwrap();
    env.set_raw("rediq:{broken}:dead", "garbage").await;
    let started = Arc::new(Mutex::new(Vec::new()));
    let srv = start(
        env.server().queues(&["good", "broken"]).concurrency(4),
        recording_mux(&started),
    )
    .await;
    // Counted on every node that holds data (all six on a cluster).
    let mut nodes = env.nodes().await;
    for n in &mut nodes {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(n)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut fetches = 0u64;
    for n in &mut nodes {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(n)
            .await
            .unwrap();
        fetches += stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_zrange:calls="))
            .and_then(|l| l.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap());
    }
    assert!(fetches < 200, "{fetches} fetches in 2 s: a busy loop");
    let worst = slowest_pickup(&env, "good", &started).await;
    assert!(
        worst < Duration::from_millis(50),
        "the healthy queue waited {worst:?}"
    );
    srv.shutdown().await;
}

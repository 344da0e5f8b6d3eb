//! Crash safety: a worker process is SIGKILLed
//! - in the middle of its tasks: another server must re-deliver every one of them within the
//!   lease time, each exactly once, with the lost attempt counted;
//! - in full flight under load (tasks completing, leased, acks on their way): afterwards every
//!   task is completed exactly once (fenced acks) and nothing is left behind;
//! - in full flight while it completes tasks that others depend on (outbox entries written,
//!   news half delivered): afterwards every dependent ran exactly once and none is left waiting.
//!
//! The worker is this very test binary, re-run with `--ignored --exact <child test>`, so it is a
//! real separate process that dies without any chance to clean up.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rediq::{Task, TaskState};
use support::*;

const QUEUE: &str = "crash";
const TASKS: usize = 20;
const LEASE: Duration = Duration::from_secs(1);
const LOAD_QUEUE: &str = "crash-load";
const DEP_QUEUES: [&str; 2] = ["crash-dep-a", "crash-dep-b"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_task_redelivers_every_task_within_the_lease() {
    let env = Env::new().await;
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let t = Task::builder("job")
            .queue(QUEUE)
            .payload(&serde_json::json!({ "i": i }))
            .unwrap()
            .build()
            .unwrap();
        ids.push(env.client.enqueue(t).await.unwrap());
    }

    let mut child = spawn_child("crash_child_worker", env.url());

    // The child leases every task and sits in its handlers.
    let insp = env.inspector.clone();
    let all_active = wait_for(Duration::from_secs(20), || async {
        insp.queue_stats(QUEUE).await.unwrap().active == TASKS as u64
    })
    .await;
    assert!(all_active, "the child never took all tasks");
    // Let a few heartbeats extend the leases: they must die with the process.
    tokio::time::sleep(LEASE).await;
    assert_eq!(
        env.inspector.queue_stats(QUEUE).await.unwrap().active,
        TASKS as u64
    );

    child.kill().expect("SIGKILL the child"); // Child::kill is SIGKILL on Unix
    child.wait().unwrap();
    let killed_at = Instant::now();

    let runs = Arc::new(Mutex::new(HashMap::<String, (u32, Instant)>::new()));
    let r = runs.clone();
    let (srv, metrics) = start_with_metrics(
        env.server()
            .queues(&[QUEUE])
            .concurrency(8)
            .lease_duration(LEASE),
        mux_with("job", move |t| {
            let r = r.clone();
            async move {
                assert_eq!(t.retry_cnt, 1, "the lost attempt counts");
                assert!(t.last_error.as_deref().unwrap().contains("lease expired"));
                let mut m = r.lock().unwrap();
                let e = m.entry(t.id).or_insert((0, Instant::now()));
                e.0 += 1;
                Ok(())
            }
        }),
    )
    .await;
    let all_done = wait_for(Duration::from_secs(20), || async {
        insp.queue_stats(QUEUE).await.unwrap().processed_total == TASKS as u64
    })
    .await;
    // The recovering server's metrics count the recoveries and the re-deliveries' successes.
    let series = |name: &str| format!("{name}{{queue=\"{QUEUE}\",task_type=\"job\"}}");
    let counted = wait_for(Duration::from_secs(5), || async {
        let text = http_get(metrics, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        sample(&text, &series("rediq_tasks_recovered_total")) == Some(TASKS as f64)
            && sample(&text, &series("rediq_tasks_processed_total")) == Some(TASKS as f64)
            && sample(&text, &series("rediq_tasks_dead_lettered_total")) == Some(0.0)
    })
    .await;
    srv.shutdown().await;
    assert!(all_done, "not every task was re-delivered");
    assert!(
        counted,
        "recovered / processed counters did not reach {TASKS}"
    );

    let runs = runs.lock().unwrap().clone();
    let mut got: Vec<&String> = runs.keys().collect();
    got.sort();
    let mut want: Vec<&String> = ids.iter().collect();
    want.sort();
    assert_eq!(got, want, "every task re-delivered");
    assert!(runs.values().all(|(n, _)| *n == 1), "each exactly once");
    // Worst case: the lease (1 s) plus one recoverer interval (a quarter lease) plus a fetch.
    let latest = runs.values().map(|(_, at)| *at - killed_at).max().unwrap();
    assert!(latest < LEASE * 3, "re-delivered {latest:?} after the kill");
    let st = env.inspector.queue_stats(QUEUE).await.unwrap();
    assert_eq!((st.pending, st.active, st.retry, st.dead), (0, 0, 0, 0));
    assert_eq!(
        st.failed_total, TASKS as u64,
        "each lost attempt is counted"
    );
    assert!(env
        .inspector
        .list(QUEUE, TaskState::Dead, 1)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_and_completes_nothing_twice() {
    const N: u64 = 3000;
    let env = Env::new().await;
    let tasks: Vec<Task> = (0..N)
        .map(|_| Task::builder("fast").queue(LOAD_QUEUE).build().unwrap())
        .collect();
    env.client.enqueue_batch(tasks).await.unwrap();
    let mut child = spawn_child("crash_child_fast_worker", env.url());
    // Kill it in full flight: some tasks done, some leased, some acks on their way.
    let insp = env.inspector.clone();
    let started = wait_for(Duration::from_secs(20), || async {
        insp.queue_stats(LOAD_QUEUE).await.unwrap().processed_total >= N / 4
    })
    .await;
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    assert!(started, "the child never got going");
    let st = env.inspector.queue_stats(LOAD_QUEUE).await.unwrap();
    assert!(st.processed_total < N, "killed too late to prove anything");

    let srv = start(
        env.server()
            .queues(&[LOAD_QUEUE])
            .concurrency(20)
            .lease_duration(LEASE),
        mux_with("fast", |_| async { Ok(()) }),
    )
    .await;
    let done = wait_for(Duration::from_secs(30), || async {
        insp.queue_stats(LOAD_QUEUE).await.unwrap().processed_total >= N
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.shutdown().await;
    assert!(done, "tasks were lost");
    let st = env.inspector.queue_stats(LOAD_QUEUE).await.unwrap();
    // Every ack that counted was fenced: exactly N completions, none twice.
    assert_eq!(st.processed_total, N);
    assert_eq!((st.pending, st.active, st.retry, st.dead), (0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_completing_dependencies_releases_every_dependent_once() {
    const N: u64 = 600;
    let env = Env::new().await;
    let deps: Vec<Task> = (0..N)
        .map(|_| Task::builder("fast").queue(DEP_QUEUES[0]).build().unwrap())
        .collect();
    // Dependents wait in the other queue: each release crosses queues.
    let dependents: Vec<Task> = deps
        .iter()
        .map(|d| {
            Task::builder("fast")
                .queue(DEP_QUEUES[1])
                .depends_on(&[&d.id])
                .build()
                .unwrap()
        })
        .collect();
    env.client.enqueue_batch(deps).await.unwrap();
    env.client.enqueue_batch(dependents).await.unwrap();
    assert_eq!(
        env.inspector
            .queue_stats(DEP_QUEUES[1])
            .await
            .unwrap()
            .waiting,
        N
    );
    let mut child = spawn_child("crash_child_deps_worker", env.url());
    let insp = env.inspector.clone();
    let started = wait_for(Duration::from_secs(20), || async {
        insp.queue_stats(DEP_QUEUES[0])
            .await
            .unwrap()
            .processed_total
            >= N / 4
    })
    .await;
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    assert!(started, "the child never got going");
    let a = env.inspector.queue_stats(DEP_QUEUES[0]).await.unwrap();
    let b = env.inspector.queue_stats(DEP_QUEUES[1]).await.unwrap();
    assert!(
        a.processed_total + b.processed_total < 2 * N,
        "killed too late to prove anything"
    );

    let srv = start(
        env.server()
            .queues(&DEP_QUEUES)
            .concurrency(20)
            .lease_duration(LEASE),
        mux_with("fast", |_| async { Ok(()) }),
    )
    .await;
    let done = wait_for(Duration::from_secs(30), || async {
        insp.queue_stats(DEP_QUEUES[1])
            .await
            .unwrap()
            .processed_total
            >= N
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.shutdown().await;
    assert!(done, "dependents were lost");
    for q in DEP_QUEUES {
        let st = env.inspector.queue_stats(q).await.unwrap();
        assert_eq!(
            st.processed_total, N,
            "{q}: each task completed exactly once"
        );
        assert_eq!(
            (st.pending, st.active, st.retry, st.dead, st.waiting),
            (0, 0, 0, 0, 0),
            "{q}"
        );
    }
}

/// Child of `sigkill_while_completing_dependencies_releases_every_dependent_once`; does nothing
/// unless started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of sigkill_while_completing_dependencies_releases_every_dependent_once"]
async fn crash_child_deps_worker() {
    serve_until_killed(
        &DEP_QUEUES,
        20,
        mux_with("fast", |_| async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(())
        }),
    )
    .await;
}

/// Child of `sigkill_under_load_loses_nothing_and_completes_nothing_twice`: processes fast until
/// it is killed; does nothing unless started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of sigkill_under_load_loses_nothing_and_completes_nothing_twice"]
async fn crash_child_fast_worker() {
    // Slow enough that the parent catches it in full flight.
    serve_until_killed(
        &[LOAD_QUEUE],
        20,
        mux_with("fast", |_| async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(())
        }),
    )
    .await;
}

/// Child of `sigkill_mid_task_redelivers_every_task_within_the_lease`; does nothing unless
/// started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of sigkill_mid_task_redelivers_every_task_within_the_lease"]
async fn crash_child_worker() {
    serve_until_killed(
        &[QUEUE],
        TASKS,
        mux_with("job", |_| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        }),
    )
    .await;
}

/// In a child process: serves `queues` until the parent kills the process (nothing when not
/// started by a parent test).
async fn serve_until_killed(queues: &[&str], concurrency: usize, mux: rediq::processor::Mux) {
    let Ok(url) = std::env::var("REDIQ_CRASH_URL") else {
        return;
    };
    let state = server_at(&url)
        .queues(queues)
        .concurrency(concurrency)
        .lease_duration(LEASE)
        .build()
        .await
        .expect("child server builds");
    let res = rediq::server::Server::from(state)
        .run_until(mux, std::future::pending())
        .await;
    assert!(res.is_ok());
}

/// Runs the child test `name` of this binary as a separate worker process.
fn spawn_child(name: &str, url: String) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--nocapture"])
        .env("REDIQ_CRASH_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child worker")
}

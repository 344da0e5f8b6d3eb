//! Task dependencies against real Redis: chains, fan-in, dependencies in other queues, already
//! completed dependencies, failure propagation (dead-lettering, cancellation, transitively),
//! unknown and self dependencies, a random 100-task graph on two servers, and concurrent
//! completion of two dependencies of one task.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rediq::{CancelOutcome, Error, Task, TaskState};
use support::*;

const LONG: Duration = Duration::from_secs(20);

/// Task id → (sequence number when its handler started, when it finished), per run.
type Runs = HashMap<String, Vec<(u64, u64)>>;

/// What ran, and in which order.
#[derive(Default, Clone)]
struct Log {
    seq: Arc<AtomicU64>,
    runs: Arc<Mutex<Runs>>,
}

impl Log {
    fn mux(&self, fail: HashSet<String>) -> rediq::processor::Mux {
        let log = self.clone();
        mux_with("node", move |t: Task| {
            let log = log.clone();
            let fail = fail.contains(&t.id);
            async move {
                let start = log.seq.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                let end = log.seq.fetch_add(1, Ordering::SeqCst);
                log.runs
                    .lock()
                    .unwrap()
                    .entry(t.id.clone())
                    .or_default()
                    .push((start, end));
                if fail {
                    Err(Error::non_retryable("this node fails"))
                } else {
                    Ok(())
                }
            }
        })
    }

    fn runs(&self, id: &str) -> Vec<(u64, u64)> {
        self.runs
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    fn total(&self) -> usize {
        self.runs.lock().unwrap().values().map(Vec::len).sum()
    }
}

fn node(queue: &str) -> rediq::TaskBuilder {
    Task::builder("node").queue(queue)
}

/// Builds and enqueues a task; returns its id.
async fn put(env: &Env, task: rediq::TaskBuilder) -> String {
    env.client.enqueue(task.build().unwrap()).await.unwrap()
}

async fn dead_errors(env: &Env, queue: &str) -> HashMap<String, String> {
    env.inspector
        .list(queue, TaskState::Dead, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.last_error.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn chain_and_fan_in_across_queues_run_in_order() {
    let env = Env::new().await;
    let log = Log::default();
    // Enqueued before any server runs: everything waits or is pending.
    let a = put(&env, node("qa")).await;
    let b = put(&env, node("qb").depends_on(&[&a])).await;
    let c = put(&env, node("qa").depends_on(&[&b])).await;
    let fan = put(&env, node("qc").depends_on(&[&a, &b])).await;
    assert_eq!(env.inspector.queue_stats("qb").await.unwrap().waiting, 1);
    let waiting = env
        .inspector
        .list("qa", TaskState::Waiting, 10)
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].id, c);
    assert_eq!(waiting[0].options.depends_on, Some(vec![b.clone()]));

    let srv = start(
        env.server().queues(&["qa", "qb", "qc"]).concurrency(4),
        log.mux(HashSet::new()),
    )
    .await;
    assert!(wait_for(LONG, || async { log.total() == 4 }).await);
    // A dependency that completed long ago still counts (completion records).
    let late = put(&env, node("qb").depends_on(&[&a, &c])).await;
    assert!(wait_for(LONG, || async { log.total() == 5 }).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    srv.shutdown().await;

    for id in [&a, &b, &c, &fan, &late] {
        assert_eq!(log.runs(id).len(), 1, "task {id} ran once");
    }
    let end = |id: &str| log.runs(id)[0].1;
    let start_of = |id: &str| log.runs(id)[0].0;
    assert!(start_of(&b) > end(&a));
    assert!(start_of(&c) > end(&b));
    assert!(start_of(&fan) > end(&a) && start_of(&fan) > end(&b));
    for q in ["qa", "qb", "qc"] {
        let st = env.inspector.queue_stats(q).await.unwrap();
        assert_eq!((st.waiting, st.pending, st.dead), (0, 0, 0), "{q}");
    }
}

#[tokio::test]
async fn unknown_and_self_dependencies_are_refused_and_write_nothing() {
    let env = Env::new().await;
    // Other tasks exist, so the lookup has something to scan.
    for _ in 0..50 {
        put(&env, node("u")).await;
    }
    let never_enqueued = node("u").build().unwrap();
    for bad in [
        "task-a-id".to_string(),
        uuid::Uuid::now_v7().to_string(),
        never_enqueued.id.clone(),
    ] {
        let t = node("u").depends_on(&[&bad]).build().unwrap();
        match env.client.enqueue(t).await {
            Err(Error::UnknownDependency { id, .. }) => assert_eq!(id, bad),
            other => panic!("expected UnknownDependency for {bad:?}, got {other:?}"),
        }
    }
    let mut selfish = node("u").build().unwrap();
    selfish.options.depends_on = Some(vec![selfish.id.clone()]);
    let e = env.client.enqueue(selfish).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Validation {
                what: "depends_on",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("depends on itself"), "{e}");
    let st = env.inspector.queue_stats("u").await.unwrap();
    assert_eq!((st.pending, st.waiting, st.dead), (50, 0, 0));
}

#[tokio::test]
async fn a_failed_dependency_dead_letters_its_descendants_transitively() {
    let env = Env::new().await;
    let log = Log::default();
    let a = node("fa").build().unwrap();
    let a_id = a.id.clone();
    env.client.enqueue(a).await.unwrap();
    let b = put(&env, node("fb").depends_on(&[&a_id])).await;
    let c = put(&env, node("fa").depends_on(&[&b])).await;
    let unrelated = put(&env, node("fb")).await;
    let srv = start(
        env.server().queues(&["fa", "fb"]),
        log.mux(HashSet::from([a_id.clone()])),
    )
    .await;
    assert!(
        wait_for(LONG, || async {
            dead_errors(&env, "fa").await.len() == 2 && dead_errors(&env, "fb").await.len() == 1
        })
        .await
    );
    // Enqueued after its dependency died: straight to the dead-letter queue.
    let d = put(&env, node("fb").depends_on(&[&c])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.shutdown().await;

    let fa = dead_errors(&env, "fa").await;
    let fb = dead_errors(&env, "fb").await;
    assert_eq!(fa[&a_id], "this node fails");
    assert_eq!(fb[&b], format!("dependency {a_id} failed"));
    assert_eq!(fa[&c], format!("dependency {b} failed"));
    assert_eq!(fb[&d], format!("dependency {c} failed"));
    assert_eq!(log.runs(&unrelated).len(), 1);
    assert!(log.runs(&b).is_empty() && log.runs(&c).is_empty() && log.runs(&d).is_empty());
    for q in ["fa", "fb"] {
        assert_eq!(env.inspector.queue_stats(q).await.unwrap().waiting, 0);
    }
}

#[tokio::test]
async fn cancelling_a_dependency_or_a_waiting_task_fails_the_dependents() {
    let env = Env::new().await;
    // No server: the client delivers the news itself after cancelling.
    let a = put(&env, node("c1")).await;
    let b = put(&env, node("c2").depends_on(&[&a])).await;
    let c = put(&env, node("c1").depends_on(&[&b])).await;
    let x = put(&env, node("c1")).await;
    let y = put(&env, node("c2").depends_on(&[&x]).unique_key("y")).await;

    // Cancelling a waiting (blocked) task removes it and fails its dependents.
    assert_eq!(
        env.client.cancel_task("c2", &b).await.unwrap(),
        CancelOutcome::Removed
    );
    assert!(
        wait_for(LONG, || async {
            dead_errors(&env, "c1").await.contains_key(&c)
        })
        .await
    );
    assert_eq!(
        dead_errors(&env, "c1").await[&c],
        format!("dependency {b} failed")
    );

    // Cancelling a pending dependency dead-letters its dependent and frees its unique key.
    assert_eq!(
        env.client.cancel_task("c1", &x).await.unwrap(),
        CancelOutcome::Removed
    );
    assert!(
        wait_for(LONG, || async {
            dead_errors(&env, "c2").await.contains_key(&y)
        })
        .await
    );
    env.client
        .enqueue(node("c2").unique_key("y").build().unwrap())
        .await
        .expect("the dead dependent released its unique key");
    let s1 = env.inspector.queue_stats("c1").await.unwrap();
    let s2 = env.inspector.queue_stats("c2").await.unwrap();
    assert_eq!(
        (s1.pending, s1.waiting, s1.dead),
        (1, 0, 1),
        "a stays pending"
    );
    assert_eq!((s2.pending, s2.waiting, s2.dead), (1, 0, 1));
    assert_eq!(s1.cancelled_total + s2.cancelled_total, 2);
}

#[tokio::test]
async fn flushing_a_queue_fails_dependents_in_other_queues() {
    let env = Env::new().await;
    let a = put(&env, node("fl1")).await;
    let b = put(&env, node("fl2").depends_on(&[&a])).await;
    let w = put(&env, node("fl1").depends_on(&[&a])).await;
    let counts = env.client.flush_queue("fl1").await.unwrap();
    assert_eq!((counts.pending, counts.waiting), (1, 1));
    assert!(
        wait_for(LONG, || async {
            dead_errors(&env, "fl2").await.contains_key(&b)
        })
        .await
    );
    assert_eq!(
        dead_errors(&env, "fl2").await[&b],
        format!("dependency {a} failed")
    );
    assert!(env
        .inspector
        .list("fl1", TaskState::Waiting, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(!dead_errors(&env, "fl1").await.contains_key(&w));
}

#[tokio::test]
async fn delay_of_a_dependent_counts_from_its_release() {
    let env = Env::new().await;
    let log = Log::default();
    let a = put(&env, node("dl")).await;
    let b = put(
        &env,
        node("dl")
            .depends_on(&[&a])
            .delay(Duration::from_millis(600)),
    )
    .await;
    let srv = start(env.server().queues(&["dl"]), log.mux(HashSet::new())).await;
    assert!(wait_for(LONG, || async { log.runs(&a).len() == 1 }).await);
    let released = std::time::Instant::now();
    assert!(wait_for(LONG, || async { log.runs(&b).len() == 1 }).await);
    assert!(
        released.elapsed() >= Duration::from_millis(450),
        "{:?}",
        released.elapsed()
    );
    srv.shutdown().await;
}

/// A random DAG of 100 tasks over 3 queues, enqueued while 2 servers run; one node fails.
#[tokio::test]
async fn random_graph_of_100_tasks_on_two_servers() {
    let env = Env::new().await;
    let queues = ["g0", "g1", "g2"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0fda);
    let n = 100;
    // Build ids first, so the failing node is known to the handlers.
    let tasks: Vec<Task> = (0..n)
        .map(|i| node(queues[i % 3]).build().unwrap())
        .collect();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, p) in parents.iter_mut().enumerate().skip(1) {
        let k = rng.random_range(0..=3.min(i));
        while p.len() < k {
            let j = rng.random_range(0..i);
            if !p.contains(&j) {
                p.push(j);
            }
        }
    }
    // Fail a node with descendants.
    let failing = (0..n / 2)
        .find(|&f| parents.iter().filter(|p| p.contains(&f)).count() >= 2)
        .expect("some node has children");
    let mut doomed = HashSet::from([failing]);
    for (i, p) in parents.iter().enumerate() {
        if p.iter().any(|p| doomed.contains(p)) {
            doomed.insert(i);
        }
    }
    assert!(doomed.len() >= 3, "the failure has descendants: {doomed:?}");
    let log = Log::default();
    let fail = HashSet::from([tasks[failing].id.clone()]);
    let builder = || env.server().queues(&queues).concurrency(8);
    let s1 = start(builder(), log.mux(fail.clone())).await;
    let s2 = start(builder(), log.mux(fail)).await;
    for (i, t) in tasks.iter().enumerate() {
        let mut t = t.clone();
        if !parents[i].is_empty() {
            t.options.depends_on = Some(parents[i].iter().map(|&j| tasks[j].id.clone()).collect());
        }
        env.client.enqueue(t).await.unwrap();
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let settled = wait_for(Duration::from_secs(60), || async {
        let mut total = 0;
        for q in queues {
            let st = env.inspector.queue_stats(q).await.unwrap();
            total += st.processed_total + st.dead;
        }
        total == n as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s1.shutdown().await;
    s2.shutdown().await;
    assert!(settled, "every task completed or was dead-lettered");

    let mut dead = HashMap::new();
    for q in queues {
        dead.extend(dead_errors(&env, q).await);
        let st = env.inspector.queue_stats(q).await.unwrap();
        assert_eq!((st.waiting, st.pending, st.active), (0, 0, 0), "{q}");
    }
    let dead_idx: HashSet<usize> = (0..n)
        .filter(|&i| dead.contains_key(&tasks[i].id))
        .collect();
    assert_eq!(
        dead_idx, doomed,
        "exactly the failing node and its descendants are dead"
    );
    for (i, task) in tasks.iter().enumerate() {
        let runs = log.runs(&task.id);
        if doomed.contains(&i) && i != failing {
            assert!(runs.is_empty(), "doomed task {i} never ran");
            let err = &dead[&task.id];
            assert!(
                parents[i].iter().any(|&p| doomed.contains(&p)
                    && *err == format!("dependency {} failed", tasks[p].id)),
                "task {i}: {err}"
            );
            continue;
        }
        assert_eq!(runs.len(), 1, "task {i} ran exactly once");
        for &p in &parents[i] {
            assert!(
                runs[0].0 > log.runs(&tasks[p].id)[0].1,
                "task {i} started after {p} finished"
            );
        }
    }
}

/// Two dependencies of one task, in two queues, completing at the same time on two servers —
/// repeated: the dependent is released and runs exactly once every time.
#[tokio::test]
async fn concurrent_completion_of_two_dependencies_releases_once() {
    let env = Env::new().await;
    let log = Log::default();
    let builder = || env.server().queues(&["r1", "r2"]).concurrency(4);
    let s1 = start(builder(), log.mux(HashSet::new())).await;
    let s2 = start(builder(), log.mux(HashSet::new())).await;
    let rounds = 40;
    let mut dependents = Vec::new();
    for _ in 0..rounds {
        let a = node("r1").build().unwrap();
        let b = node("r2").build().unwrap();
        let c = node("r1").depends_on(&[&a.id, &b.id]).build().unwrap();
        let d = node("r2").depends_on(&[&a.id, &b.id]).build().unwrap();
        dependents.push(c.id.clone());
        dependents.push(d.id.clone());
        // Dependents first (through a pause, so A and B wait for them), then both
        // dependencies in one go: the servers complete them side by side.
        env.client.pause_queue("r1").await.unwrap();
        env.client.pause_queue("r2").await.unwrap();
        env.client.enqueue(a.clone()).await.unwrap();
        env.client.enqueue(b.clone()).await.unwrap();
        env.client.enqueue(c).await.unwrap();
        env.client.enqueue(d).await.unwrap();
        env.client.resume_queue("r1").await.unwrap();
        env.client.resume_queue("r2").await.unwrap();
    }
    let all = wait_for(LONG, || async { log.total() == rounds * 4 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s1.shutdown().await;
    s2.shutdown().await;
    assert!(all, "ran {} of {}", log.total(), rounds * 4);
    assert_eq!(log.total(), rounds * 4, "nothing ran twice");
    for id in &dependents {
        assert_eq!(log.runs(id).len(), 1, "dependent {id} ran once");
    }
    for q in ["r1", "r2"] {
        let st = env.inspector.queue_stats(q).await.unwrap();
        assert_eq!(
            (st.waiting, st.pending, st.processed_total),
            (0, 0, rounds as u64 * 2)
        );
    }
}

#[tokio::test]
async fn a_batch_may_hold_a_chain_in_order() {
    let env = Env::new().await;
    let log = Log::default();
    let a = node("bq").build().unwrap();
    let b = node("bq2").depends_on(&[&a.id]).build().unwrap();
    // Listed twice, once in upper case: one dependency.
    let c = node("bq")
        .depends_on(&[b.id.clone(), b.id.to_uppercase()])
        .build()
        .unwrap();
    let ids = env
        .client
        .enqueue_batch(vec![a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    assert_eq!(ids, vec![a.id.clone(), b.id.clone(), c.id.clone()]);
    assert_eq!(env.inspector.queue_stats("bq").await.unwrap().waiting, 1);
    let srv = start(env.server().queues(&["bq", "bq2"]), log.mux(HashSet::new())).await;
    assert!(wait_for(LONG, || async { log.total() == 3 }).await);
    srv.shutdown().await;
    assert!(log.runs(&b.id)[0].0 > log.runs(&a.id)[0].1);
    assert!(log.runs(&c.id)[0].0 > log.runs(&b.id)[0].1);

    let mut selfish = node("bq").build().unwrap();
    selfish.options.depends_on = Some(vec![selfish.id.to_uppercase()]);
    let e = env.client.enqueue_batch(vec![selfish]).await.unwrap_err();
    assert!(e.to_string().contains("depends on itself"), "{e}");
}

#[tokio::test]
async fn cancelling_a_running_dependency_fails_its_dependent() {
    let env = Env::new().await;
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let srv = start(
        env.server().queues(&["cr"]),
        mux_with("slow", move |_| {
            let s = s.clone();
            async move {
                s.notify_one();
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(())
            }
        }),
    )
    .await;
    let a = put(&env, Task::builder("slow").queue("cr")).await;
    let b = put(&env, node("cr2").depends_on(&[&a])).await;
    started.notified().await;
    assert_eq!(
        env.client.cancel_task("cr", &a).await.unwrap(),
        CancelOutcome::Signalled
    );
    assert!(
        wait_for(LONG, || async {
            dead_errors(&env, "cr2").await.contains_key(&b)
        })
        .await
    );
    srv.shutdown().await;
    assert_eq!(
        dead_errors(&env, "cr2").await[&b],
        format!("dependency {a} failed")
    );
    assert_eq!(env.inspector.queue_stats("cr2").await.unwrap().waiting, 0);
}

#[tokio::test]
async fn delayed_and_retrying_dependencies_are_found_and_waited_for() {
    let env = Env::new().await;
    let log = Log::default();
    let delayed = put(&env, node("dq").delay(Duration::from_millis(500))).await;
    let b = put(&env, node("dq").depends_on(&[&delayed])).await;
    assert_eq!(env.inspector.queue_stats("dq").await.unwrap().waiting, 1);
    let srv = start(env.server().queues(&["dq"]), log.mux(HashSet::new())).await;
    assert!(wait_for(LONG, || async { log.runs(&b).len() == 1 }).await);
    srv.shutdown().await;
    assert!(log.runs(&b)[0].0 > log.runs(&delayed)[0].1);
}

#[tokio::test]
async fn dependency_limits_are_validated() {
    let env = Env::new().await;
    let many: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let e = node("v").depends_on(&many).build().unwrap_err();
    assert!(e.to_string().contains("1001 dependencies"), "{e}");
    let e = env
        .server()
        .dependency_retention(Duration::from_secs(10))
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("dependency_retention"), "{e}");
    assert!(env
        .server()
        .dependency_retention(Duration::from_secs(60))
        .dependency_max_records(1000)
        .build()
        .await
        .is_ok());
}

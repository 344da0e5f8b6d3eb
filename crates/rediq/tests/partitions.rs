//! Partitioned queues against real Redis, on the topology `REDIQ_TEST_TOPOLOGY` names (CI runs
//! it standalone and on a 3-master cluster): declaring partitions, tasks spread over them (one
//! master each on a cluster), servers serving them all under the queue's name, unique keys
//! unique across partitions, and every per-queue feature — pause, delays, cancel, idempotent
//! enqueue, dependencies, dead-lettering and re-running, flush, cron, stats, metrics — on the
//! queue as a whole.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rediq::{CancelOutcome, Error, Task, TaskState};
use support::*;

const LONG: Duration = Duration::from_secs(20);

fn task(queue: &str, n: u32) -> Task {
    Task::builder("work")
        .queue(queue)
        .payload(&n)
        .unwrap()
        .build()
        .unwrap()
}

/// Pending tasks per hash tag of `queue`'s keys, on each master: `(master, tag) → count`.
async fn pending_by_partition(env: &Env, queue: &str) -> HashMap<(usize, String), u64> {
    let mut out = HashMap::new();
    for (node, mut c) in env.nodes().await.into_iter().enumerate() {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await.unwrap();
        if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            continue;
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("rediq:{{{queue}*}}:pending:*"))
            .query_async(&mut c)
            .await
            .unwrap();
        for key in keys {
            let Some(tag) = key.split(['{', '}']).nth(1) else {
                continue;
            };
            // Only the queue and its partitions ("hot", "hot 1", …), not "hotter".
            if tag != queue && !tag.starts_with(&format!("{queue} ")) {
                continue;
            }
            if key.ends_with(":foreign") {
                continue;
            }
            let n: u64 = redis::cmd("LLEN")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            *out.entry((node, tag.to_string())).or_default() += n;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declaring_partitions_is_checked_and_kept() {
    let env = Env::new().await;
    let i = &env.inspector;
    assert_eq!(i.queue_stats("plain").await.unwrap().partitions, 1);
    env.client.partition_queue("hot", 3).await.unwrap();
    // Declaring the same count again is harmless; another count is refused by name.
    i.partition_queue("hot", 3).await.unwrap();
    let err = i.partition_queue("hot", 4).await.unwrap_err();
    assert!(matches!(err, Error::Validation { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"hot\"") && msg.contains('3') && msg.contains('4'),
        "{msg}"
    );
    for bad in [0, 65] {
        let err = i.partition_queue("other", bad).await.unwrap_err();
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
    }
    assert!(i.partition_queue("has space", 2).await.is_err());
    assert_eq!(i.queue_stats("hot").await.unwrap().partitions, 3);
    // The queue is known (listed once, by its name; never a partition's).
    assert_eq!(i.queues().await.unwrap(), vec!["hot".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_spread_over_the_partitions_and_are_all_served_under_the_queue_name() {
    let env = Env::new().await;
    env.client.partition_queue("hot", 3).await.unwrap();
    let batch: Vec<Task> = (0..300).map(|n| task("hot", n)).collect();
    env.client.enqueue_batch(batch).await.unwrap();
    for n in 300..600 {
        env.client.enqueue(task("hot", n)).await.unwrap();
    }
    let spread = pending_by_partition(&env, "hot").await;
    assert_eq!(spread.len(), 3, "three partitions hold tasks: {spread:?}");
    for n in spread.values() {
        assert!((140..=260).contains(n), "an even spread: {spread:?}");
    }
    if env.nodes().await.len() > 1 {
        let masters: HashSet<usize> = spread.keys().map(|(m, _)| *m).collect();
        assert_eq!(masters.len(), 3, "one partition per master: {spread:?}");
    }
    let stats = env.inspector.queue_stats("hot").await.unwrap();
    assert_eq!((stats.pending, stats.partitions), (600, 3));
    assert_eq!(
        env.inspector
            .list("hot", TaskState::Pending, 1000)
            .await
            .unwrap()
            .len(),
        600
    );

    let seen = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let s = seen.clone();
    let mux = mux_with("work", move |t: Task| {
        let s = s.clone();
        async move {
            *s.lock().unwrap().entry(t.queue.clone()).or_default() += 1;
            Ok(())
        }
    });
    let (running, addr) = start_with_metrics(env.server().queues(&["hot"]), mux).await;
    assert!(
        wait_for(LONG, || async {
            env.inspector
                .queue_stats("hot")
                .await
                .unwrap()
                .processed_total
                == 600
        })
        .await,
        "every task of every partition processed"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        HashMap::from([("hot".to_string(), 600)])
    );
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(
        sample(
            &metrics,
            r#"rediq_tasks_processed_total{queue="hot",task_type="work"}"#
        ),
        Some(600.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"rediq_tasks_enqueued_total{queue="hot",task_type="work"}"#
        ),
        Some(600.0),
        "summed over the partitions: {metrics}"
    );
    assert!(
        !metrics.contains("hot "),
        "no partition name leaks: {metrics}"
    );
    // The worker registry lists the queue once, by its name.
    let workers = env.inspector.workers().await.unwrap();
    assert_eq!(
        workers[0].fields.get("queues").map(String::as_str),
        Some("hot")
    );
    running.shutdown().await;
    let stats = env.inspector.queue_stats("hot").await.unwrap();
    assert_eq!((stats.pending, stats.active), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unique_keys_stay_unique_across_partitions() {
    let env = Env::new().await;
    env.client.partition_queue("hot", 4).await.unwrap();
    let keyed = |k: usize| {
        Task::builder("work")
            .queue("hot")
            .unique_key(format!("order-{k}"))
            .build()
            .unwrap()
    };
    let mut holders = HashMap::new();
    for k in 0..40 {
        holders.insert(k, env.client.enqueue(keyed(k)).await.unwrap());
    }
    for k in 0..40 {
        match env.client.enqueue(keyed(k)).await {
            Err(Error::Duplicate {
                existing_id, queue, ..
            }) => {
                assert_eq!(existing_id, holders[&k]);
                assert_eq!(queue, "hot");
            }
            other => panic!("order-{k} enqueued twice: {other:?}"),
        }
    }
    let err = env
        .client
        .enqueue_batch(vec![keyed(100), keyed(7)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Duplicate { .. }), "{err}");
    // A repeated enqueue of the very same task is idempotent, in whichever partition it went.
    let t = task("hot", 1);
    assert_eq!(
        env.client
            .enqueue_outcome(t.clone())
            .await
            .unwrap()
            .existing,
        None
    );
    assert!(env
        .client
        .enqueue_outcome(t)
        .await
        .unwrap()
        .existing
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_queue_feature_works_on_the_queue_as_a_whole() {
    let env = Env::new().await;
    let (c, i) = (&env.client, &env.inspector);
    c.partition_queue("hot", 3).await.unwrap();

    // Pause reaches every partition: nothing runs until resumed.
    c.pause_queue("hot").await.unwrap();
    assert!(i.queue_stats("hot").await.unwrap().paused);
    for n in 0..30 {
        c.enqueue(task("hot", n)).await.unwrap();
    }
    // Delayed tasks, cancelled by id wherever they landed.
    let mut delayed = Vec::new();
    for _ in 0..10 {
        let t = Task::builder("work")
            .queue("hot")
            .delay(Duration::from_secs(600))
            .build()
            .unwrap();
        delayed.push(c.enqueue(t).await.unwrap());
    }
    assert_eq!(i.queue_stats("hot").await.unwrap().delayed, 10);
    for id in &delayed {
        assert_eq!(
            c.cancel_task("hot", id).await.unwrap(),
            CancelOutcome::Removed
        );
    }
    let s = i.queue_stats("hot").await.unwrap();
    assert_eq!((s.delayed, s.cancelled_total), (0, 10));

    // Dependencies between partitions and another queue: a (hot) → b (other) → d (hot).
    let a = c.enqueue(task("hot", 100)).await.unwrap();
    let after = |queue: &str, dep: &str| {
        Task::builder("work")
            .queue(queue)
            .depends_on(&[dep])
            .build()
            .unwrap()
    };
    let b = c.enqueue(after("other", &a)).await.unwrap();
    let d = c.enqueue(after("hot", &b)).await.unwrap();
    assert_eq!(i.queue_stats("hot").await.unwrap().waiting, 1);
    // A task that fails goes to the dead-letter queue of its partition.
    let doomed = c
        .enqueue(
            Task::builder("fail")
                .queue("hot")
                .max_retry(0)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();

    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let o = order.clone();
    let mut mux = mux_with("work", move |t: Task| {
        let o = o.clone();
        async move {
            o.lock().unwrap().push(t.id.clone());
            Ok(())
        }
    });
    mux.handle(
        "fail",
        FnHandler(|_t: Task| async { Err(Error::handler("broken on purpose")) }),
    );
    let running = start(env.server().queues(&["hot", "other"]), mux).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        order.lock().unwrap().is_empty(),
        "a paused queue hands out nothing"
    );
    c.resume_queue("hot").await.unwrap();
    assert!(
        wait_for(LONG, || async {
            order.lock().unwrap().contains(&d) && i.queue_stats("hot").await.unwrap().dead == 1
        })
        .await,
        "everything ran: {:?}",
        i.queue_stats("hot").await
    );
    {
        let order = order.lock().unwrap();
        let at = |id: &String| order.iter().position(|x| x == id).unwrap();
        assert!(
            at(&a) < at(&b) && at(&b) < at(&d),
            "dependencies hold across partitions"
        );
        assert_eq!(order.len(), 33);
    }
    let dead = i.list("hot", TaskState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id.as_str(), dead[0].queue.as_str()),
        (doomed.as_str(), "hot")
    );
    running.shutdown().await;
    assert!(c.rerun_dead("hot", &doomed).await.unwrap());
    assert_eq!(i.queue_stats("hot").await.unwrap().pending, 1);

    // Flush empties every partition.
    for n in 0..20 {
        c.enqueue(task("hot", n)).await.unwrap();
    }
    let flushed = c.flush_queue("hot").await.unwrap();
    assert_eq!(flushed.pending, 21);
    assert_eq!(i.queue_stats("hot").await.unwrap().pending, 0);

    // A periodic entry lives in one partition, shows under the queue's name, and is steered
    // by id.
    let cron = Task::builder("work")
        .queue("hot")
        .unique_key("nightly")
        .cron("0 0 3 * * *")
        .build()
        .unwrap();
    assert_eq!(c.enqueue(cron.clone()).await.unwrap(), "nightly");
    c.register_cron(&cron).await.unwrap();
    let entries = i.cron_entries().await.unwrap();
    assert_eq!(entries.len(), 1, "registered twice, kept once: {entries:?}");
    assert_eq!(entries[0].queue, "hot");
    assert!(i.pause_cron("nightly").await.unwrap());
    assert!(i.cron_entries().await.unwrap()[0].paused);
    assert!(i.remove_cron("nightly").await.unwrap());
    assert!(i.cron_entries().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_periodic_entry_registered_before_partitioning_is_not_kept_twice() {
    let env = Env::new().await;
    let cron = Task::builder("work")
        .queue("hot")
        .cron("0 0 3 * * *")
        .build()
        .unwrap();
    let id = env.client.register_cron(&cron).await.unwrap();
    env.client.partition_queue("hot", 8).await.unwrap();
    env.client.register_cron(&cron).await.unwrap();
    let entries = env.inspector.cron_entries().await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        (entries[0].id.as_str(), entries[0].queue.as_str()),
        (id.as_str(), "hot")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_served_by_a_running_server_is_not_partitioned_under_it() {
    let env = Env::new().await;
    let (mux, runs) = counting_mux("work");
    let running = start(env.server().queues(&["hot"]), mux).await;
    assert!(
        wait_for(LONG, || async {
            !env.inspector.workers().await.unwrap().is_empty()
        })
        .await
    );
    let err = env.client.partition_queue("hot", 3).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"hot\"") && msg.contains("1 running server") && msg.contains("stop them"),
        "{msg}"
    );
    assert_eq!(
        env.inspector.queue_stats("hot").await.unwrap().partitions,
        1
    );
    // A queue no running server serves is not in the way.
    env.client.partition_queue("cold", 2).await.unwrap();
    running.shutdown().await;
    env.client.partition_queue("hot", 3).await.unwrap();
    for n in 0..30 {
        env.client.enqueue(task("hot", n)).await.unwrap();
    }
    let (mux, runs2) = counting_mux("work");
    let running = start(env.server().queues(&["hot"]), mux).await;
    assert!(wait_for(LONG, || async { *runs2.lock().unwrap() == 30 }).await);
    assert_eq!(*runs.lock().unwrap(), 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_an_idle_queue_is_partitioned_and_a_pause_covers_the_new_partitions() {
    let env = Env::new().await;
    let (c, i) = (&env.client, &env.inspector);
    let id = c.enqueue(task("hot", 1)).await.unwrap();
    let err = c.partition_queue("hot", 3).await.unwrap_err();
    assert!(
        err.to_string().contains("holds 1 live task"),
        "a unique key or id known to partition 0 would be split: {err}"
    );
    assert_eq!(
        c.cancel_task("hot", &id).await.unwrap(),
        CancelOutcome::Removed
    );
    c.pause_queue("hot").await.unwrap();
    c.partition_queue("hot", 3).await.unwrap();
    let s = i.queue_stats("hot").await.unwrap();
    assert!(s.paused && s.partitions == 3, "{s:?}");
    for n in 0..30 {
        c.enqueue(task("hot", n)).await.unwrap();
    }
    let (mux, runs) = counting_mux("work");
    let running = start(env.server().queues(&["hot"]), mux).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*runs.lock().unwrap(), 0, "no partition hands out a task");
    c.resume_queue("hot").await.unwrap();
    assert!(wait_for(LONG, || async { *runs.lock().unwrap() == 30 }).await);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_built_before_a_declaration_refuses_to_run() {
    let env = Env::new().await;
    let state = env.server().queues(&["hot"]).build().await.unwrap();
    env.client.partition_queue("hot", 2).await.unwrap();
    let (mux, _) = counting_mux("work");
    let err = rediq::server::Server::from(state)
        .run_until(mux, std::future::pending::<()>())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"hot\"") && msg.contains("build the server again"),
        "{msg}"
    );
    assert!(
        env.inspector.workers().await.unwrap().is_empty(),
        "it left the registry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_partition_entry_stops_only_its_queue_from_being_partitioned() {
    let env = Env::new().await;
    env.client.partition_queue("good", 2).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg("rediq:partitions")
        .arg("bad")
        .arg("not a partition list")
        .query_async(&mut env.raw().await)
        .await
        .unwrap();
    // A fresh client reads the map with the broken field in it.
    let client = env.redis.client().build().await.unwrap();
    let err = client.partition_queue("bad", 2).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("rediq:partitions"), "{err}");
    client.enqueue(task("bad", 1)).await.unwrap();
    client.enqueue(task("good", 1)).await.unwrap();
    let i = client.inspector();
    assert_eq!(i.queue_stats("bad").await.unwrap().pending, 1);
    let good = i.queue_stats("good").await.unwrap();
    assert_eq!((good.pending, good.partitions), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_and_cancelling_a_running_task_work_in_every_partition() {
    let env = Env::new().await;
    let c = &env.client;
    c.partition_queue("hot", 3).await.unwrap();
    // Each task fails its first attempt and succeeds on the second.
    let attempts = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let a = attempts.clone();
    let mut mux = mux_with("flaky", move |t: Task| {
        let a = a.clone();
        async move {
            let mut a = a.lock().unwrap();
            let n = a.entry(t.id.clone()).or_default();
            *n += 1;
            if *n == 1 {
                Err(Error::handler("first attempt fails"))
            } else {
                Ok(())
            }
        }
    });
    let started = Arc::new(Mutex::new(HashSet::<String>::new()));
    let dropped = Arc::new(Mutex::new(HashSet::<String>::new()));
    let (s, d) = (started.clone(), dropped.clone());
    mux.handle(
        "slow",
        FnHandler(move |t: Task| {
            let (s, d) = (s.clone(), d.clone());
            async move {
                struct OnDrop(Arc<Mutex<HashSet<String>>>, String);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        self.0.lock().unwrap().insert(self.1.clone());
                    }
                }
                let _guard = OnDrop(d, t.id.clone());
                s.lock().unwrap().insert(t.id.clone());
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
        }),
    );
    let running = start(
        env.server()
            .queues(&["hot"])
            .retry_backoff(Duration::from_millis(50), Duration::from_millis(100)),
        mux,
    )
    .await;
    for _ in 0..30 {
        c.enqueue(Task::builder("flaky").queue("hot").build().unwrap())
            .await
            .unwrap();
    }
    let mut slow = Vec::new();
    for _ in 0..6 {
        slow.push(
            c.enqueue(Task::builder("slow").queue("hot").build().unwrap())
                .await
                .unwrap(),
        );
    }
    assert!(
        wait_for(LONG, || async {
            env.inspector
                .queue_stats("hot")
                .await
                .unwrap()
                .processed_total
                == 30
                && started.lock().unwrap().len() == 6
        })
        .await,
        "{:?}",
        env.inspector.queue_stats("hot").await
    );
    assert!(attempts.lock().unwrap().values().all(|n| *n == 2));
    for id in &slow {
        assert_eq!(
            c.cancel_task("hot", id).await.unwrap(),
            CancelOutcome::Signalled
        );
    }
    assert!(
        wait_for(LONG, || async {
            dropped.lock().unwrap().len() == 6
                && env.inspector.queue_stats("hot").await.unwrap().active == 0
        })
        .await,
        "every running task's handler dropped, wherever it ran"
    );
    let s = env.inspector.queue_stats("hot").await.unwrap();
    assert_eq!((s.cancelled_total, s.failed_total, s.retry), (6, 30, 0));
    running.shutdown().await;
}

//! The Inspector's paged listings against real Redis (on the topology `REDIQ_TEST_TOPOLOGY`
//! names): pages of pending tasks across priority bands, of delayed tasks, and of a partitioned
//! queue, each page the matching slice of the whole listing.

mod support;

use std::time::Duration;

use rediq::{Task, TaskState};
use support::*;

/// Every page of `size`, concatenated, is the whole listing; the page past the end is empty.
async fn pages_match_the_listing(env: &Env, queue: &str, state: TaskState, total: usize) {
    let all: Vec<String> = env
        .inspector
        .list(queue, state, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(all.len(), total);
    for size in [1, 7, 50] {
        let mut paged = Vec::new();
        for page in 0.. {
            let got = env
                .inspector
                .list_page(queue, state, page, size)
                .await
                .unwrap();
            assert!(got.len() <= size);
            if got.is_empty() {
                break;
            }
            assert!(got.iter().all(|t| t.queue == queue));
            paged.extend(got.into_iter().map(|t| t.id));
        }
        assert_eq!(paged, all, "pages of {size} in {queue} {state:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_are_slices_of_the_listing_in_every_state_and_partition() {
    let env = Env::new().await;
    let c = &env.client;
    // Pending over three priority bands: the listing runs band by band.
    let mut tasks = Vec::new();
    for n in 0..60u32 {
        tasks.push(
            Task::builder("work")
                .queue("paged")
                .priority([1, 5, 9][(n % 3) as usize])
                .payload(&n)
                .unwrap()
                .build()
                .unwrap(),
        );
    }
    c.enqueue_batch(tasks).await.unwrap();
    let first = env
        .inspector
        .list_page("paged", TaskState::Pending, 0, 20)
        .await
        .unwrap();
    let priorities: Vec<i32> = first.iter().map(|t| t.options.priority).collect();
    assert!(
        priorities.windows(2).all(|w| w[0] >= w[1]),
        "{priorities:?}"
    );
    pages_match_the_listing(&env, "paged", TaskState::Pending, 60).await;

    for n in 0..25u64 {
        let t = Task::builder("work")
            .queue("paged")
            .delay(Duration::from_secs(600 + n))
            .build()
            .unwrap();
        c.enqueue(t).await.unwrap();
    }
    pages_match_the_listing(&env, "paged", TaskState::Delayed, 25).await;

    c.partition_queue("parted", 3).await.unwrap();
    let batch: Vec<Task> = (0..40u32)
        .map(|n| {
            Task::builder("work")
                .queue("parted")
                .payload(&n)
                .unwrap()
                .build()
                .unwrap()
        })
        .collect();
    c.enqueue_batch(batch).await.unwrap();
    pages_match_the_listing(&env, "parted", TaskState::Pending, 40).await;
    assert!(env
        .inspector
        .list_page("parted", TaskState::Pending, 1000, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Every match of a whole search, step by step, with at most `scan` records per step.
async fn find_all(env: &Env, queue: &str, state: TaskState, text: &str, scan: usize) -> Vec<Task> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let step = env
            .inspector
            .find_tasks(queue, state, text, cursor.as_deref(), scan)
            .await
            .unwrap();
        out.extend(step.tasks);
        match step.cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("the search did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finds_tasks_by_payload_text_error_and_id_in_bounded_steps() {
    let env = Env::new().await;
    let c = &env.client;
    let customer = |n: u32, queue: &str, delay: bool| {
        let mut b = Task::builder("work")
            .queue(queue)
            .priority([1, 9][(n % 2) as usize])
            .payload(&serde_json::json!({ "customer": format!("c-{n}"), "note": "a*b" }))
            .unwrap();
        if delay {
            b = b.delay(Duration::from_secs(600));
        }
        b.build().unwrap()
    };
    let mut ids = Vec::new();
    for n in 0..300 {
        ids.push(
            c.enqueue(customer(n, "search", n.is_multiple_of(3)))
                .await
                .unwrap(),
        );
    }
    // "c-7" matches c-7 and c-70..c-79 (pending or delayed by n % 3).
    let want = |delayed: bool| -> Vec<String> {
        (0..300u32)
            .filter(|n| (*n == 7 || (70..80).contains(n)) && n.is_multiple_of(3) == delayed)
            .map(|n| format!("c-{n}"))
            .collect()
    };
    let customers = |tasks: Vec<Task>| {
        let mut v: Vec<String> = tasks
            .iter()
            .map(|t| {
                t.payload_json::<serde_json::Value>().unwrap()["customer"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    let mut pending_want = want(false);
    pending_want.sort();
    let mut delayed_want = want(true);
    delayed_want.sort();
    for scan in [7, 1000] {
        let found = find_all(&env, "search", TaskState::Pending, "\"c-7", scan).await;
        assert_eq!(customers(found), pending_want, "pending, {scan} per step");
        let found = find_all(&env, "search", TaskState::Delayed, "\"c-7", scan).await;
        assert_eq!(customers(found), delayed_want, "delayed, {scan} per step");
    }
    // Glob characters are text, not patterns; an id finds its task.
    assert_eq!(
        find_all(&env, "search", TaskState::Delayed, "a*b", 50)
            .await
            .len(),
        100
    );
    assert!(find_all(&env, "search", TaskState::Delayed, "a?b", 50)
        .await
        .is_empty());
    let by_id = find_all(&env, "search", TaskState::Pending, &ids[1], 50).await;
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].id, ids[1]);
    // Each step examines a bounded window.
    let step = env
        .inspector
        .find_tasks("search", TaskState::Pending, "\"c-", None, 10)
        .await
        .unwrap();
    assert_eq!(step.tasks.len(), 10);
    assert!(step.cursor.is_some());
    assert!(env
        .inspector
        .find_tasks("search", TaskState::Pending, "x", Some("not a cursor"), 10)
        .await
        .is_err());
    assert!(env
        .inspector
        .find_tasks("search", TaskState::Pending, "", None, 10)
        .await
        .is_err());

    // Last errors of dead tasks, on a partitioned queue.
    c.partition_queue("parted", 3).await.unwrap();
    let mut failing = Vec::new();
    for n in 0..30u32 {
        let t = Task::builder("fail")
            .queue("parted")
            .max_retry(0)
            .payload(&n)
            .unwrap()
            .build()
            .unwrap();
        failing.push(c.enqueue(t).await.unwrap());
    }
    let mux = mux_with("fail", |t: Task| async move {
        let n: u32 = t.payload_json().unwrap();
        Err(rediq::Error::handler(if n.is_multiple_of(2) {
            "timeout talking to the bank"
        } else {
            "card declined"
        }))
    });
    let running = start(env.server().queues(&["parted"]), mux).await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            env.inspector.queue_stats("parted").await.unwrap().dead == 30
        })
        .await
    );
    running.shutdown().await;
    let found = find_all(&env, "parted", TaskState::Dead, "the bank", 4).await;
    assert_eq!(found.len(), 15);
    assert!(found
        .iter()
        .all(|t| t.queue == "parted"
            && t.last_error.as_deref() == Some("timeout talking to the bank")));
    let by_id = find_all(&env, "parted", TaskState::Dead, &failing[29], 4).await;
    assert_eq!(by_id.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_task_by_id_in_every_state_with_lease_and_dependencies() {
    let env = Env::new().await;
    let (c, i) = (&env.client, &env.inspector);
    c.partition_queue("parted", 3).await.unwrap();
    let pending = c
        .enqueue(
            Task::builder("work")
                .queue("parted")
                .unique_key("order-1")
                .payload(&serde_json::json!({"order": 1}))
                .unwrap()
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let d = i.task(&pending, None).await.unwrap().expect("found");
    assert_eq!(
        (d.state, d.task.queue.as_str()),
        (TaskState::Pending, "parted")
    );
    assert_eq!(d.task.options.unique_key.as_deref(), Some("order-1"));
    assert_eq!(
        d.task.payload_json::<serde_json::Value>().unwrap()["order"],
        1
    );
    assert!(d.lease.is_none());

    // A running task shows its server, token and lease; a task waiting for it shows what it
    // waits for, and the running one lists it as a dependent.
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let mux = mux_with("block", move |_t: Task| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            s.notify_one();
            r.notified().await;
            Ok(())
        }
    });
    let blocker = c
        .enqueue(Task::builder("block").queue("slow").build().unwrap())
        .await
        .unwrap();
    let running = start(env.server().queues(&["slow"]), mux).await;
    tokio::time::timeout(Duration::from_secs(20), started.notified())
        .await
        .expect("the handler started");
    let after = c
        .enqueue(
            Task::builder("work")
                .queue("later")
                .depends_on(&[blocker.as_str()])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let d = i.task(&blocker, None).await.unwrap().expect("found");
    assert_eq!(d.state, TaskState::Active);
    let lease = d.lease.expect("a lease");
    let workers = i.workers().await.unwrap();
    assert_eq!(lease.server, workers[0].id);
    assert!(lease.token > 0);
    assert!(lease.expires_at_ms.unwrap() > rediq_now_ms());
    assert_eq!(d.dependents, vec![(after.clone(), "later".to_string())]);
    let w = i.task(&after, Some("later")).await.unwrap().expect("found");
    assert_eq!(w.state, TaskState::Waiting);
    assert_eq!(w.waiting_for, vec![blocker.clone()]);
    release.notify_one();
    assert!(
        wait_for(Duration::from_secs(20), || async {
            i.task(&after, None).await.unwrap().map(|d| d.state) == Some(TaskState::Pending)
        })
        .await
    );
    running.shutdown().await;
    // Finished and not kept (no completed retention): no record.
    assert!(i.task(&blocker, None).await.unwrap().is_none());
    let never = "01900000-0000-7000-8000-000000000000";
    assert!(i.task(never, None).await.unwrap().is_none());
    assert!(i.task("not-an-id", None).await.is_err());
}

fn rediq_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_shows_the_tasks_it_runs_and_whether_it_is_alive() {
    let env = Env::new().await;
    let (c, i) = (&env.client, &env.inspector);
    c.partition_queue("parted", 2).await.unwrap();
    let started = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let mux = mux_with("hold", move |_t: Task| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r.notified().await;
            Ok(())
        }
    });
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            c.enqueue(Task::builder("hold").queue("parted").build().unwrap())
                .await
                .unwrap(),
        );
    }
    let running = start(
        env.server()
            .queues(&["parted"])
            .lease_duration(Duration::from_secs(3)),
        mux,
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            started.load(std::sync::atomic::Ordering::SeqCst) == 4
        })
        .await
    );
    let w = i.workers().await.unwrap().remove(0);
    let d = i.worker(&w.id).await.unwrap().expect("registered");
    assert!(d.alive);
    let mut held: Vec<String> = d.in_flight.iter().map(|(_, id, _)| id.clone()).collect();
    held.sort();
    ids.sort();
    assert_eq!(held, ids);
    assert!(d
        .in_flight
        .iter()
        .all(|(q, _, t)| q == "parted" && t == "hold"));
    assert_eq!(d.info.fields["lease_ms"], "3000");
    // Judged at a time past its lease, a silent server is dead.
    let beat: u64 = d.info.fields["last_heartbeat_ms"].parse().unwrap();
    assert!(d.info.alive(beat + 3000) && !d.info.alive(beat + 3001));
    assert!(i.worker("host:1:none").await.unwrap().is_none());
    for _ in 0..4 {
        release.notify_one();
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latency_is_the_age_of_the_oldest_pending_task() {
    let env = Env::new().await;
    let (c, i) = (&env.client, &env.inspector);
    c.partition_queue("parted", 3).await.unwrap();
    assert_eq!(i.latency("parted").await.unwrap(), Duration::ZERO);
    c.enqueue(Task::builder("work").queue("parted").build().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..20 {
        c.enqueue(
            Task::builder("work")
                .queue("parted")
                .priority(9)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    }
    let l = i.latency("parted").await.unwrap();
    assert!(
        l >= Duration::from_millis(350) && l < Duration::from_secs(10),
        "the oldest task, in whichever partition and band: {l:?}"
    );
}

/// The bytes of every key matching `pattern` on every master, each measured whole
/// (`MEMORY USAGE … SAMPLES 0`).
async fn exact_memory(env: &Env, pattern: &str) -> u64 {
    let mut exact = 0;
    for mut node in env.nodes().await {
        // A replica holds copies (and redirects MEMORY USAGE to its master).
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut node).await.unwrap();
        if role.first() != Some(&redis::Value::BulkString(b"master".to_vec())) {
            continue;
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut node)
            .await
            .unwrap();
        for k in keys {
            let b: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&k)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut node)
                .await
                .unwrap();
            exact += b.unwrap_or(0);
        }
    }
    exact
}

/// 30 tasks of `daily`; those whose payload is a multiple of 3 fail.
fn tasks_again() -> Vec<Task> {
    (0..30u32)
        .map(|n| {
            Task::builder("work")
                .queue("daily")
                .max_retry(0)
                .payload(&n)
                .unwrap()
                .build()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_counts_each_day_and_keeps_ninety_days_and_memory_is_measured() {
    let env = Env::new().await;
    let (c, i) = (&env.client, &env.inspector);
    c.partition_queue("daily", 2).await.unwrap();
    // Counts an earlier day left behind: one within the 90 days, one past them, and a field
    // that is not ours. Today's first count keeps the first and drops the other two.
    let today = rediq_now_ms() / 86_400_000;
    let mut raw = env.raw().await;
    let _: () = redis::cmd("HSET")
        .arg("rediq:{daily}:stat:daily")
        .arg(format!("p:{}", today - 3))
        .arg(5)
        .arg(format!("f:{}", today - 3))
        .arg(2)
        .arg(format!("p:{}", today - 95))
        .arg(7)
        .arg("junk")
        .arg(1)
        .arg(format!("f:{}", today - 2))
        .arg("oops")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        i.memory_usage("daily").await.unwrap().map(|b| b > 0),
        Some(true)
    );
    let before = i.memory_usage("daily").await.unwrap().unwrap();

    c.enqueue_batch(tasks_again()).await.unwrap();
    let grown = i.memory_usage("daily").await.unwrap().unwrap();
    assert!(
        grown > before,
        "30 pending tasks weigh something: {before} -> {grown}"
    );
    // Against the exact size of every key of both partitions, found on each node: before a
    // flush (no index generation written yet) and after one.
    for round in 0..2 {
        for n in 0..3000u32 {
            let t = Task::builder("filler")
                .queue("daily")
                .delay(Duration::from_secs(3600))
                .payload(&n)
                .unwrap()
                .build()
                .unwrap();
            c.enqueue(t).await.unwrap();
        }
        let estimate = i.memory_usage("daily").await.unwrap().unwrap();
        let exact = exact_memory(&env, "rediq:{daily*").await;
        let off = estimate.abs_diff(exact) as f64 / exact as f64;
        assert!(
            off < 0.1,
            "round {round}: estimate {estimate} vs exact {exact}"
        );
        i.flush_queue("daily").await.unwrap();
    }
    c.enqueue_batch(tasks_again()).await.unwrap();

    let mux = mux_with("work", |t: Task| async move {
        let n: u32 = t.payload_json()?;
        if n.is_multiple_of(3) {
            Err(rediq::Error::handler(format!("task {n} fails")))
        } else {
            Ok(())
        }
    });
    let running = start(env.server().queues(&["daily"]), mux).await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            let s = i.queue_stats("daily").await.unwrap();
            s.processed_total == 20 && s.dead == 10
        })
        .await
    );
    running.shutdown().await;

    let week = i.history("daily", 7).await.unwrap();
    assert_eq!(week.len(), 7);
    let (first, last) = (&week[0], &week[6]);
    assert_eq!(last.date.to_string().len(), 10, "{}", last.date);
    assert_eq!(
        (last.processed, last.failed),
        (20, 10),
        "today, both partitions"
    );
    assert_eq!(
        (week[3].processed, week[3].failed),
        (5, 2),
        "three days ago"
    );
    assert_eq!(week[4].failed, 0, "a count that is no integer is skipped");
    assert!(
        week.windows(2).all(|w| w[0].date < w[1].date),
        "oldest first"
    );
    assert_eq!(
        (last.date - first.date).num_days(),
        6,
        "{} .. {}",
        first.date,
        last.date
    );
    let all = i.history("daily", 90).await.unwrap();
    assert_eq!(all.iter().map(|d| d.processed).sum::<u64>(), 25);
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("rediq:{daily}:stat:daily")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        !fields.contains(&format!("p:{}", today - 95)) && !fields.contains(&"junk".to_string()),
        "past the retention and foreign fields are dropped: {fields:?}"
    );
    for bad in [0, 91] {
        let e = i.history("daily", bad).await.unwrap_err().to_string();
        assert!(e.contains(&bad.to_string()) && e.contains("90"), "{e}");
    }
    assert!(i.history("no queue", 7).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_queue_stats_reads_every_queue_as_queue_stats_does() {
    let env = Env::new().await;
    let (c, i) = (&env.client, &env.inspector);
    assert!(i.all_queue_stats().await.unwrap().is_empty());
    c.partition_queue("wide", 3).await.unwrap();
    for (n, q) in ["wide", "narrow", "wide", "other", "wide"]
        .iter()
        .enumerate()
    {
        c.enqueue(
            Task::builder("work")
                .queue(*q)
                .priority(n as i32)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    }
    c.enqueue(
        Task::builder("work")
            .queue("other")
            .delay(Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    i.pause_queue("narrow").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = i.all_queue_stats().await.unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.queue.as_str()).collect();
    assert_eq!(names, i.queues().await.unwrap());
    for s in &all {
        let one = i.queue_stats(&s.queue).await.unwrap();
        let latency_gap = one.latency.abs_diff(s.latency);
        assert!(latency_gap < Duration::from_secs(1), "{one:?} vs {s:?}");
        assert_eq!(
            QueueStatsNoLatency::from(&one),
            QueueStatsNoLatency::from(s)
        );
        assert!(s.latency >= Duration::from_millis(250), "{s:?}");
    }
    let wide = all.iter().find(|s| s.queue == "wide").unwrap();
    assert_eq!((wide.pending, wide.partitions), (3, 3));
    let other = all.iter().find(|s| s.queue == "other").unwrap();
    assert_eq!((other.pending, other.delayed), (1, 1));
    assert!(all.iter().find(|s| s.queue == "narrow").unwrap().paused);
}

/// A queue's stats apart from its latency (which grows between two reads).
#[derive(Debug, PartialEq)]
struct QueueStatsNoLatency(rediq::QueueStats);

impl From<&rediq::QueueStats> for QueueStatsNoLatency {
    fn from(s: &rediq::QueueStats) -> Self {
        QueueStatsNoLatency(rediq::QueueStats {
            latency: Duration::ZERO,
            ..s.clone()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_unknown_where_redis_refuses_memory_usage() {
    // A user whose ACL forbids MEMORY, on a standalone server of its own.
    let redis = rediq::testing::RedisServer::start();
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "viewer", "on", ">pw", "~*", "&*", "+@all", "-memory",
        ])
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://viewer:pw@127.0.0.1:{}", redis.port());
    let i = rediq::Inspector::connect(&url).await.unwrap();
    let c = rediq::Client::builder()
        .redis_url(&url)
        .build()
        .await
        .unwrap();
    c.enqueue(Task::builder("work").queue("acl").build().unwrap())
        .await
        .unwrap();
    assert_eq!(i.memory_usage("acl").await.unwrap(), None);
    assert_eq!(i.queue_stats("acl").await.unwrap().pending, 1);
}

#[tokio::test]
async fn delete_removes_dead_completed_and_waiting_tasks_but_not_running_ones() {
    let env = Env::new().await;
    let (c, i) = (&env.client, &env.inspector);
    let client = c.clone();
    let enqueue = move |t: &'static str, delay: Option<Duration>| {
        let client = client.clone();
        async move {
            let mut b = Task::builder(t).queue("del");
            if let Some(d) = delay {
                b = b.delay(d);
            }
            client.enqueue(b.build().unwrap()).await.unwrap()
        }
    };
    let (fail, ok) = (enqueue("fail", None).await, enqueue("ok", None).await);
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let mut mux = mux_with("fail", |_t: Task| async {
        Err(rediq::Error::non_retryable("broken"))
    });
    mux.handle("ok", FnHandler(|_t: Task| async { Ok(()) }));
    mux.handle(
        "block",
        FnHandler(move |_t: Task| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.notify_one();
                r.notified().await;
                Ok(())
            }
        }),
    );
    let server = env
        .server()
        .queues(&["del"])
        .completed_retention(Duration::from_secs(600));
    let running = start(server, mux).await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            let s = i.queue_stats("del").await.unwrap();
            s.dead == 1 && s.completed == 1
        })
        .await
    );
    let blocker = enqueue("block", None).await;
    tokio::time::timeout(Duration::from_secs(20), started.notified())
        .await
        .expect("the handler started");
    let later = enqueue("ok", Some(Duration::from_secs(3600))).await;

    // Running: refused (cancel_task stops it); dead, completed, delayed: gone.
    assert!(!i.delete_task("del", &blocker).await.unwrap());
    for id in [&fail, &ok, &later] {
        assert!(i.delete_task("del", id).await.unwrap(), "{id} deleted");
        assert!(
            i.task(id, Some("del")).await.unwrap().is_none(),
            "{id} gone"
        );
        assert!(
            !i.delete_task("del", id).await.unwrap(),
            "{id} deleted twice"
        );
    }
    let s = i.queue_stats("del").await.unwrap();
    assert_eq!((s.dead, s.completed, s.delayed, s.active), (0, 0, 0, 1));
    let never = "01900000-0000-7000-8000-000000000000";
    assert!(!i.delete_task("del", never).await.unwrap());
    assert!(i.delete_task("del", "not-an-id").await.is_err());
    release.notify_one();
    running.shutdown().await;
}

/// A connection that lost its authentication (the password was set after it connected, and it
/// reconnected without one) fails every command of a pipeline the same way: the error says so
/// once, not once per command.
#[tokio::test]
async fn a_pipeline_that_fails_the_same_way_everywhere_reports_it_once() {
    let redis = rediq::testing::RedisServer::start();
    let inspector = rediq::Inspector::connect(&redis.url()).await.unwrap();
    inspector.queue_stats("q").await.unwrap();
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut last = String::new();
    for _ in 0..20 {
        match inspector.queue_stats("q").await {
            Err(e) if e.to_string().contains("NOAUTH") => {
                last = e.to_string();
                break;
            }
            other => last = format!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.matches("NOAUTH").count(), 1, "{last}");
    assert!(!last.contains("Pipeline"), "{last}");
}

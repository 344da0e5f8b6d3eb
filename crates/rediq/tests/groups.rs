//! Groups (tenants) against real Redis (on the topology `REDIQ_TEST_TOPOLOGY` names): a queue
//! serves its groups round-robin, so one group's backlog does not delay another's task; a group
//! limit (the rule, or a group's override) holds across servers; a group's rate limit paces its
//! starts; a handler's slow-down holds its whole group for the time it asked; grouped tasks are
//! counted, listed, found and cancelled by the Inspector like any pending task.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rediq::{QueueLimits, RateLimit, Task, TaskState};
use support::*;

/// A concurrency limit of `n`, no rate limit.
fn at_most(n: u32) -> QueueLimits {
    QueueLimits {
        concurrency: Some(n),
        rate: None,
    }
}

/// What the handlers saw: per group the tasks running now and the most at once, and every
/// start in order (group, payload, when).
#[derive(Default)]
struct Probe {
    running: Mutex<HashMap<String, usize>>,
    most: Mutex<HashMap<String, usize>>,
    starts: Mutex<Vec<(String, u64, Instant)>>,
    done: AtomicUsize,
}

fn group(t: &Task) -> String {
    t.options.group.clone().unwrap_or_default()
}

fn probing(probe: &Arc<Probe>, hold: Duration) -> rediq::processor::Mux {
    let probe = probe.clone();
    mux_with("work", move |t: Task| {
        let p = probe.clone();
        async move {
            let g = group(&t);
            let n: u64 = t.payload_json().unwrap_or(0);
            p.starts
                .lock()
                .unwrap()
                .push((g.clone(), n, Instant::now()));
            {
                let mut r = p.running.lock().unwrap();
                let now = r.entry(g.clone()).or_default();
                *now += 1;
                let mut m = p.most.lock().unwrap();
                let most = m.entry(g.clone()).or_default();
                *most = (*most).max(*now);
            }
            tokio::time::sleep(hold).await;
            *p.running.lock().unwrap().entry(g).or_default() -= 1;
            p.done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

fn task(queue: &str, group: Option<&str>, n: u64) -> Task {
    let b = Task::builder("work").queue(queue).payload(&n).unwrap();
    match group {
        Some(g) => b.group(g),
        None => b,
    }
    .build()
    .unwrap()
}

async fn fill(env: &Env, queue: &str, group: Option<&str>, n: u64) {
    let tasks: Vec<Task> = (0..n).map(|i| task(queue, group, i)).collect();
    for chunk in tasks.chunks(1000) {
        env.client.enqueue_batch(chunk.to_vec()).await.unwrap();
    }
}

impl Probe {
    /// The payloads of one group's tasks, in the order they started.
    fn of(&self, group: &str) -> Vec<u64> {
        let starts = self.starts.lock().unwrap();
        starts
            .iter()
            .filter(|(g, _, _)| g == group)
            .map(|(_, n, _)| *n)
            .collect()
    }
}

/// Runs `servers` servers of `slots` each on `queue`, their handlers holding each task for
/// `hold`, until `total` tasks are done; returns what the probe saw.
async fn serve_all(
    env: &Env,
    queue: &str,
    servers: usize,
    slots: usize,
    hold: Duration,
    total: usize,
) -> Arc<Probe> {
    let probe = Arc::new(Probe::default());
    let mut running = Vec::new();
    for _ in 0..servers {
        running.push(
            start(
                env.server().queues(&[queue]).concurrency(slots),
                probing(&probe, hold),
            )
            .await,
        );
    }
    wait_done(&probe, total, Duration::from_secs(30)).await;
    for s in running {
        s.shutdown().await;
    }
    probe
}

async fn wait_done(probe: &Probe, total: usize, within: Duration) {
    assert!(
        wait_for(within, || async {
            probe.done.load(Ordering::SeqCst) >= total
        })
        .await,
        "all ran: {} of {total}",
        probe.done.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_take_turns_and_each_runs_in_order() {
    let env = Env::new().await;
    fill(&env, "rr", Some("a"), 6).await;
    fill(&env, "rr", Some("b"), 6).await;
    fill(&env, "rr", None, 6).await;
    fill(&env, "rr", Some("c"), 2).await;
    let s = env.inspector.queue_stats("rr").await.unwrap();
    assert_eq!(s.pending, 20, "grouped tasks count as pending");
    let probe = serve_all(&env, "rr", 1, 1, Duration::from_millis(2), 20).await;
    let order: Vec<String> = probe
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|(g, _, _)| g.clone())
        .collect();
    // Within a group, in the order enqueued.
    for g in ["a", "b", "", "c"] {
        let seq = probe.of(g);
        let mut sorted = seq.clone();
        sorted.sort();
        assert_eq!(seq, sorted, "group {g:?} ran in order: {order:?}");
    }
    // Round robin: while c still has tasks, the four take turns (each of the first 8 starts
    // names a different one of every 4 in a row), then a, b and the ungrouped ones alternate.
    for w in order[..8].chunks(4) {
        let distinct: std::collections::HashSet<&String> = w.iter().collect();
        assert_eq!(distinct.len(), 4, "one of each in turn: {order:?}");
    }
    for w in order[8..].windows(2) {
        assert_ne!(
            w[0], w[1],
            "no group twice in a row while others wait: {order:?}"
        );
    }
    let s = env.inspector.queue_stats("rr").await.unwrap();
    assert_eq!((s.pending, s.processed_total), (0, 20));
    assert!(env.inspector.groups("rr", 10).await.unwrap().is_empty());
}

/// The fairness bar: one group holds a backlog of 10,000 tasks, another gets one task
/// a second; the second group's pickup latency (enqueue to handler start) has a p99 under
/// 50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_in_one_group_does_not_delay_another() {
    let env = Env::new().await;
    fill(&env, "fair", Some("big"), 10_000).await;
    let enqueued: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let picked: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let (e, p) = (enqueued.clone(), picked.clone());
    let mux = mux_with("work", move |t: Task| {
        let (e, p) = (e.clone(), p.clone());
        async move {
            if t.options.group.as_deref() == Some("small") {
                let n: u64 = t.payload_json().unwrap();
                let at = e.lock().unwrap().get(&n).copied().unwrap();
                p.lock().unwrap().push(at.elapsed());
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        }
    });
    let server = start(env.server().queues(&["fair"]).concurrency(4), mux).await;
    // Let the backlog get going first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..10u64 {
        enqueued.lock().unwrap().insert(n, Instant::now());
        env.client
            .enqueue(task("fair", Some("small"), n))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        wait_for(Duration::from_secs(5), || async {
            picked.lock().unwrap().len() == 10
        })
        .await,
        "every small task ran"
    );
    let big_left = env.inspector.groups("fair", 10).await.unwrap();
    server.shutdown().await;
    let mut lat = picked.lock().unwrap().clone();
    lat.sort();
    let p99 = lat[lat.len() - 1];
    eprintln!("pickup latency of the small group, sorted: {lat:?}");
    assert!(
        big_left.iter().any(|g| g.name == "big" && g.pending > 1000),
        "the backlog was still there at the end: {big_left:?}"
    );
    assert!(
        p99 < Duration::from_millis(50),
        "pickup latency of the small group: {lat:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_limit_holds_across_servers_and_an_override_replaces_it() {
    let env = Env::new().await;
    let rule = at_most(2);
    env.client.set_group_limits("tenants", &rule).await.unwrap();
    let vip = at_most(5);
    env.client
        .set_group_override("tenants", "vip", Some(&vip))
        .await
        .unwrap();
    let limits = env.inspector.group_limits("tenants").await.unwrap();
    assert_eq!(limits.rule, rule);
    assert_eq!(limits.for_group("vip"), vip);
    assert_eq!(limits.for_group("x"), rule);
    for g in ["x", "y", "vip"] {
        fill(&env, "tenants", Some(g), 20).await;
    }
    let probe = Arc::new(Probe::default());
    let mut servers = Vec::new();
    for _ in 0..2 {
        servers.push(
            start(
                env.server().queues(&["tenants"]).concurrency(10),
                probing(&probe, Duration::from_millis(40)),
            )
            .await,
        );
    }
    // While tasks wait at the limit, the Inspector shows their group held.
    let mut seen_held = false;
    for _ in 0..50 {
        let groups = env.inspector.groups("tenants", 10).await.unwrap();
        if groups.iter().any(|g| g.at_limit && g.running >= 2) {
            seen_held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_done(&probe, 60, Duration::from_secs(30)).await;
    for s in servers {
        s.shutdown().await;
    }
    let most = probe.most.lock().unwrap().clone();
    assert_eq!(most.get("x"), Some(&2), "{most:?}");
    assert_eq!(most.get("y"), Some(&2), "{most:?}");
    let v = most.get("vip").copied().unwrap_or(0);
    assert!(v > 2 && v <= 5, "the override replaces the rule: {most:?}");
    assert!(seen_held, "a group at its limit shows as held");
    let s = env.inspector.queue_stats("tenants").await.unwrap();
    assert_eq!((s.processed_total, s.failed_total, s.retry), (60, 0, 0));
    // Removing the override: the rule applies to vip again.
    env.client
        .set_group_override("tenants", "vip", None)
        .await
        .unwrap();
    let limits = env.inspector.group_limits("tenants").await.unwrap();
    assert!(limits.overrides.is_empty());
    // Bad input is refused naming the value.
    let err = env
        .client
        .set_group_override("tenants", "", Some(&vip))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("group"), "{err}");
    let err = env
        .client
        .set_group_limits("tenants", &at_most(0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("concurrency"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_rate_limit_paces_each_group() {
    let env = Env::new().await;
    let rule = QueueLimits {
        concurrency: None,
        rate: Some(RateLimit {
            count: 20,
            period: Duration::from_secs(1),
        }),
    };
    env.client.set_group_limits("paced", &rule).await.unwrap();
    fill(&env, "paced", Some("a"), 200).await;
    fill(&env, "paced", Some("b"), 200).await;
    let probe = Arc::new(Probe::default());
    let t0 = Instant::now();
    let (server, addr) = start_with_metrics(
        env.server().queues(&["paced"]).concurrency(20),
        probing(&probe, Duration::from_millis(1)),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, text) = http_get(addr, "/metrics").await.unwrap();
    let held = sample(
        &text,
        "rediq_queue_limit_held_total{queue=\"paced\",limit=\"group_rate\"}",
    );
    assert!(
        held.is_some_and(|n| n > 0.0),
        "groups held by their rate: {held:?}"
    );
    server.shutdown().await;
    let starts = probe.starts.lock().unwrap().clone();
    for g in ["a", "b"] {
        let within: Vec<_> = starts
            .iter()
            .filter(|(x, _, at)| x == g && at.duration_since(t0) < Duration::from_secs(3))
            .collect();
        // A full bucket of 2, then 20 a second, for under 3 s.
        assert!(
            (54..=68).contains(&within.len()),
            "group {g}: {} starts in 3 s at 20/s",
            within.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_down_holds_its_group_and_the_group_resumes_on_time() {
    let env = Env::new().await;
    let starts: Arc<Mutex<Vec<(String, Instant, u32)>>> = Arc::default();
    let told = Arc::new(AtomicUsize::new(0));
    let (s, t) = (starts.clone(), told.clone());
    let mux = mux_with("work", move |task: Task| {
        let (s, t) = (s.clone(), t.clone());
        async move {
            let g = group(&task);
            s.lock()
                .unwrap()
                .push((g.clone(), Instant::now(), task.attempt()));
            if g == "slow" && t.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(rediq::Error::rate_limited(Duration::from_millis(600)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        }
    });
    // One task of the slow group at a time, so that none of its tasks is already running
    // when the first is told to slow down (tasks handed to a server before the hold still run).
    env.client
        .set_group_override("pause", "slow", Some(&at_most(1)))
        .await
        .unwrap();
    fill(&env, "pause", Some("slow"), 3).await;
    fill(&env, "pause", Some("other"), 20).await;
    let server = start(env.server().queues(&["pause"]).concurrency(4), mux).await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            env.inspector
                .queue_stats("pause")
                .await
                .unwrap()
                .processed_total
                == 23
        })
        .await
    );
    server.shutdown().await;
    let starts = starts.lock().unwrap().clone();
    let slow: Vec<_> = starts.iter().filter(|(g, _, _)| g == "slow").collect();
    assert_eq!(
        slow.len(),
        4,
        "told to slow down once, then three ran: {slow:?}"
    );
    let paused = slow[1].1.duration_since(slow[0].1);
    assert!(
        paused >= Duration::from_millis(590) && paused < Duration::from_millis(750),
        "the group resumed on time: {paused:?}"
    );
    assert!(
        slow.iter().all(|(_, _, attempt)| *attempt == 1),
        "no attempt used"
    );
    // The other group ran during the pause.
    let during = starts
        .iter()
        .filter(|(g, at, _)| g == "other" && *at > slow[0].1 && *at < slow[1].1)
        .count();
    assert!(during > 0, "other groups run while one is held");
    let s = env.inspector.queue_stats("pause").await.unwrap();
    assert_eq!((s.failed_total, s.retry, s.dead), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_tasks_are_listed_found_cancelled_and_flushed() {
    let env = Env::new().await;
    fill(&env, "look", None, 3).await;
    let mine = task("look", Some("acme"), 7);
    let id = mine.id.clone();
    env.client.enqueue(mine).await.unwrap();
    fill(&env, "look", Some("acme"), 4).await;
    fill(&env, "look", Some("zeta"), 2).await;
    let s = env.inspector.queue_stats("look").await.unwrap();
    assert_eq!(s.pending, 10);
    let all = env
        .inspector
        .list_page("look", TaskState::Pending, 0, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 10, "bands then groups");
    let page = env
        .inspector
        .list_page("look", TaskState::Pending, 1, 4)
        .await
        .unwrap();
    assert_eq!(page.len(), 4);
    assert_eq!(page[0].options.group.as_deref(), Some("acme"));
    let info = env.inspector.task(&id, Some("look")).await.unwrap();
    assert_eq!(info.map(|i| i.state), Some(TaskState::Pending));
    // Search by payload reaches the groups after the bands.
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let f = env
            .inspector
            .find_tasks("look", TaskState::Pending, "7", cursor.as_deref(), 100)
            .await
            .unwrap();
        found.extend(f.tasks.into_iter().map(|t| t.id));
        cursor = f.cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(found, vec![id.clone()]);
    let groups = env.inspector.groups("look", 10).await.unwrap();
    let names: Vec<(&str, u64)> = groups
        .iter()
        .map(|g| (g.name.as_str(), g.pending))
        .collect();
    assert_eq!(names, vec![("acme", 5), ("zeta", 2)]);
    assert_eq!(
        env.inspector.cancel_task("look", &id).await.unwrap(),
        rediq::CancelOutcome::Removed
    );
    let groups = env.inspector.groups("look", 10).await.unwrap();
    assert_eq!(groups[0].pending, 4);
    assert_eq!(env.inspector.queue_stats("look").await.unwrap().pending, 9);
    // The cancelled task's hole is stepped over: the rest still run, in order.
    let probe = serve_all(&env, "look", 1, 2, Duration::from_millis(1), 9).await;
    assert_eq!(probe.of("acme"), vec![0, 1, 2, 3]);
    // Flush removes grouped tasks too.
    fill(&env, "look", Some("acme"), 5).await;
    let counts = env.inspector.flush_queue("look").await.unwrap();
    assert_eq!(counts.pending, 5);
    assert!(env.inspector.groups("look", 10).await.unwrap().is_empty());
    assert_eq!(env.inspector.queue_stats("look").await.unwrap().pending, 0);
}

/// On a partitioned queue a group's tasks spread over the partitions, and each partition runs
/// the round robin and the group limits for the tasks it holds: a rule of 2 over 2 partitions
/// lets a group run up to 4. A rule set before the declaration reaches the new partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_partitioned_queue_each_partition_enforces_the_group_limits() {
    let env = Env::new().await;
    let rule = at_most(2);
    env.client.set_group_limits("wide", &rule).await.unwrap();
    env.client.partition_queue("wide", 2).await.unwrap();
    assert_eq!(
        env.inspector
            .queue_stats("wide")
            .await
            .unwrap()
            .group_limits,
        rule
    );
    fill(&env, "wide", Some("tenant"), 60).await;
    let groups = env.inspector.groups("wide", 10).await.unwrap();
    assert_eq!(
        (groups.len(), groups[0].pending),
        (1, 60),
        "one group, summed over the partitions"
    );
    let probe = serve_all(&env, "wide", 2, 10, Duration::from_millis(50), 60).await;
    assert_eq!(
        probe.most.lock().unwrap().get("tenant"),
        Some(&4),
        "2 per partition, 4 in all"
    );
}

/// A queue whose only tasks left are of one group held at its limit is not idle: the server
/// asks again as soon as one of the group's tasks ends (before the fix, once the other group
/// was done, it slept on the wake marker for up to a second per task).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_at_its_limit_runs_its_next_task_as_soon_as_one_ends() {
    let env = Env::new().await;
    let one = at_most(1);
    env.client.set_group_limits("serial", &one).await.unwrap();
    fill(&env, "serial", Some("only"), 10).await;
    fill(&env, "serial", Some("brief"), 6).await;
    let probe = serve_all(&env, "serial", 1, 4, Duration::from_millis(20), 16).await;
    let starts: Vec<_> = probe
        .starts
        .lock()
        .unwrap()
        .iter()
        .filter(|(g, _, _)| g == "only")
        .cloned()
        .collect();
    let gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| w[1].2.duration_since(w[0].2))
        .collect();
    assert_eq!(probe.most.lock().unwrap().get("only"), Some(&1));
    // 20 ms of work, then the next start: far from the second a sleep on the wake marker took.
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(200)),
        "{gaps:?}"
    );
}

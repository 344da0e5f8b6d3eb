//! Flow control against real Redis (on the topology `REDIQ_TEST_TOPOLOGY` names): a queue's
//! concurrency limit holds across several servers and gives a crashed server's slots back when
//! its lease lapses; a rate limit paces starts across servers; limits are validated, kept in
//! Redis and read back.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rediq::{QueueLimits, RateLimit, Task};
use support::*;

/// Counts the handlers running now and the most that ever ran at once, and records when each
/// task started (outside Rediq, as the handler sees it).
#[derive(Default)]
struct Probe {
    running: AtomicUsize,
    most: AtomicUsize,
    done: AtomicUsize,
    starts: Mutex<Vec<Instant>>,
}

fn probing(probe: &Arc<Probe>, hold: Duration) -> rediq::processor::Mux {
    let probe = probe.clone();
    mux_with("work", move |_t: Task| {
        let p = probe.clone();
        async move {
            p.starts.lock().unwrap().push(Instant::now());
            let now = p.running.fetch_add(1, Ordering::SeqCst) + 1;
            p.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(hold).await;
            p.running.fetch_sub(1, Ordering::SeqCst);
            p.done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

/// A concurrency limit of `n`, no rate limit.
fn at_most(n: u32) -> QueueLimits {
    QueueLimits {
        concurrency: Some(n),
        rate: None,
    }
}

async fn fill(env: &Env, queue: &str, n: usize) {
    let tasks: Vec<Task> = (0..n)
        .map(|_| Task::builder("work").queue(queue).build().unwrap())
        .collect();
    for chunk in tasks.chunks(500) {
        env.client.enqueue_batch(chunk.to_vec()).await.unwrap();
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
    assert!(
        wait_for(Duration::from_secs(30), || async {
            probe.done.load(Ordering::SeqCst) == total
        })
        .await,
        "all ran: {} of {total}",
        probe.done.load(Ordering::SeqCst)
    );
    for s in running {
        s.shutdown().await;
    }
    probe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrency_limit_holds_across_servers() {
    let env = Env::new().await;
    let limit = at_most(3);
    env.client.set_queue_limits("api", &limit).await.unwrap();
    fill(&env, "api", 45).await;
    let probe = serve_all(&env, "api", 3, 10, Duration::from_millis(60), 45).await;
    let most = probe.most.load(Ordering::SeqCst);
    assert_eq!(most, 3, "never more than the limit, and the limit is used");
    assert_eq!(
        env.inspector
            .queue_stats("api")
            .await
            .unwrap()
            .processed_total,
        45
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_servers_slots_come_back_when_its_lease_lapses() {
    let env = Env::new().await;
    let limit = at_most(2);
    env.inspector.set_queue_limits("api", &limit).await.unwrap();
    fill(&env, "api", 6).await;
    // A server that died holding two tasks: its lease runs 1.5 s more, its active hash holds
    // two entries (written by hand: a dead process cannot be asked to fetch).
    let mut raw = env.raw().await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut raw).await.unwrap();
    let lapses = secs * 1000 + micros / 1000 + 1500;
    let _: () = redis::cmd("ZADD")
        .arg("rediq:{api}:leases")
        .arg(lapses)
        .arg("ghost:1:dead")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("rediq:{api}:active:ghost:1:dead")
        .arg("aaaaaaaaaaaaaaaa")
        .arg("0000000000000001|x")
        .arg("bbbbbbbbbbbbbbbb")
        .arg("0000000000000001|y")
        .query_async(&mut raw)
        .await
        .unwrap();
    let set_up = Instant::now();
    let probe = Arc::new(Probe::default());
    let heir = start(
        env.server().queues(&["api"]).concurrency(5),
        probing(&probe, Duration::from_millis(10)),
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            probe.done.load(Ordering::SeqCst) == 6
        })
        .await,
        "the heir ran every task once the dead server's slots came back"
    );
    let first = probe.starts.lock().unwrap()[0];
    assert!(
        first.duration_since(set_up) >= Duration::from_millis(1200),
        "no slot while the dead server's lease held: {:?}",
        first.duration_since(set_up)
    );
    assert!(probe.most.load(Ordering::SeqCst) <= 2);
    heir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_paces_starts_across_servers() {
    let env = Env::new().await;
    let limit = QueueLimits {
        concurrency: None,
        rate: Some(RateLimit {
            count: 40,
            period: Duration::from_secs(1),
        }),
    };
    env.client.set_queue_limits("mail", &limit).await.unwrap();
    fill(&env, "mail", 1000).await;
    let probe = Arc::new(Probe::default());
    let (watched, addr) = start_with_metrics(
        env.server().queues(&["mail"]).concurrency(20),
        probing(&probe, Duration::ZERO),
    )
    .await;
    let other = start(
        env.server().queues(&["mail"]).concurrency(20),
        probing(&probe, Duration::ZERO),
    )
    .await;
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, text) = http_get(addr, "/metrics").await.unwrap();
    let held = sample(
        &text,
        "rediq_queue_limit_held_total{queue=\"mail\",limit=\"rate\"}",
    );
    assert!(
        held.is_some_and(|n| n > 0.0),
        "held back by the rate: {held:?}"
    );
    watched.shutdown().await;
    other.shutdown().await;
    let starts = probe.starts.lock().unwrap().clone();
    let within = starts
        .iter()
        .filter(|t| t.duration_since(began) <= Duration::from_secs(10))
        .count();
    // 40 a second for 10 s, ± 10 %.
    assert!(
        (360..=440).contains(&within),
        "{within} starts in 10 s at 40/s"
    );
}

#[tokio::test]
async fn limits_are_validated_kept_and_read_back() {
    let env = Env::new().await;
    let i = &env.inspector;
    assert_eq!(i.queue_limits("q").await.unwrap(), QueueLimits::default());
    let both = QueueLimits {
        concurrency: Some(7),
        rate: Some(RateLimit {
            count: 100,
            period: Duration::from_millis(1500),
        }),
    };
    i.set_queue_limits("q", &both).await.unwrap();
    assert_eq!(i.queue_limits("q").await.unwrap(), both);
    assert_eq!(
        i.queue_stats("q").await.unwrap().limits,
        both,
        "shown with the counts"
    );
    let fewer = QueueLimits {
        concurrency: None,
        ..both
    };
    env.client.set_queue_limits("q", &fewer).await.unwrap();
    assert_eq!(i.queue_limits("q").await.unwrap(), fewer);
    i.set_queue_limits("q", &QueueLimits::default())
        .await
        .unwrap();
    assert!(i.queue_limits("q").await.unwrap().is_empty());

    let zero = at_most(0);
    let e = i
        .set_queue_limits("q", &zero)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("concurrency limit") && e.contains("pause_queue"),
        "{e}"
    );
    let no_rate = QueueLimits {
        concurrency: None,
        rate: Some(RateLimit {
            count: 0,
            period: Duration::from_secs(1),
        }),
    };
    let e = i
        .set_queue_limits("q", &no_rate)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("0 per 1s"), "{e}");
    let long = QueueLimits {
        concurrency: None,
        rate: Some(RateLimit {
            count: 1,
            period: Duration::MAX,
        }),
    };
    let e = i
        .set_queue_limits("q", &long)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("365 days"), "{e}");
    assert!(i.set_queue_limits("bad queue", &both).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_partitioned_queue_each_partition_enforces_the_limits() {
    let env = Env::new().await;
    let limit = at_most(2);
    // Set before the partitions are declared: the new partitions get them too.
    env.client.set_queue_limits("wide", &limit).await.unwrap();
    env.client.partition_queue("wide", 2).await.unwrap();
    assert_eq!(
        env.inspector.queue_stats("wide").await.unwrap().limits,
        limit
    );
    fill(&env, "wide", 60).await;
    let probe = serve_all(&env, "wide", 2, 10, Duration::from_millis(50), 60).await;
    // Two partitions, each at most 2: up to 4 at once, which 60 tasks of 50 ms reach.
    assert_eq!(probe.most.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_handler_sends_its_task_back_without_using_an_attempt() {
    let env = Env::new().await;
    let runs: Arc<Mutex<Vec<(Instant, u32)>>> = Arc::default();
    let r = runs.clone();
    let mux = mux_with("work", move |t: Task| {
        let r = r.clone();
        async move {
            let first = {
                let mut runs = r.lock().unwrap();
                runs.push((Instant::now(), t.attempt()));
                runs.len() <= 2
            };
            if first {
                Err(rediq::Error::rate_limited(Duration::from_millis(400)))
            } else {
                Ok(())
            }
        }
    });
    env.client
        .enqueue(
            Task::builder("work")
                .queue("quota")
                .max_retry(0)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let server = start(env.server().queues(&["quota"]), mux).await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            env.inspector
                .queue_stats("quota")
                .await
                .unwrap()
                .processed_total
                == 1
        })
        .await,
        "done after being told to slow down twice, though it may not retry at all"
    );
    server.shutdown().await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|(_, attempt)| *attempt == 1), "{runs:?}");
    for w in runs.windows(2) {
        assert!(w[1].0.duration_since(w[0].0) >= Duration::from_millis(380));
    }
    let s = env.inspector.queue_stats("quota").await.unwrap();
    assert_eq!((s.failed_total, s.dead, s.retry), (0, 0, 0));
    let today = env.inspector.history("quota", 1).await.unwrap();
    assert_eq!((today[0].processed, today[0].failed), (1, 0));
}

/// Tasks, and how long each runs, in the several-processes test.
const GATE_TASKS: usize = 30;
const GATE_HOLD: Duration = Duration::from_millis(300);
const GATE_LIMIT: u32 = 3;

/// Several server processes share a concurrency limit of 3; one is SIGKILLed mid-flight. Every
/// start and end is recorded in Redis by the handlers themselves (outside Rediq's keys), and
/// at no moment do more than 3 run: the killed process's handlers stop at the kill, and its
/// slots come back only when its lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_never_run_more_than_the_limit_also_when_one_is_killed() {
    gate_under_kill(false).await;
}

/// The same with the limit on a group instead of the queue: every task is of group `tenant`,
/// whose rule allows 3 at once (the group's running count, kept by the scripts, is what holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_never_run_more_than_a_group_limit_also_when_one_is_killed() {
    gate_under_kill(true).await;
}

async fn gate_under_kill(grouped: bool) {
    let env = Env::new().await;
    let limit = at_most(GATE_LIMIT);
    if grouped {
        env.client.set_group_limits("gate", &limit).await.unwrap();
        let tasks: Vec<Task> = (0..GATE_TASKS)
            .map(|_| {
                Task::builder("work")
                    .queue("gate")
                    .group("tenant")
                    .build()
                    .unwrap()
            })
            .collect();
        env.client.enqueue_batch(tasks).await.unwrap();
    } else {
        env.client.set_queue_limits("gate", &limit).await.unwrap();
        fill(&env, "gate", GATE_TASKS).await;
    }
    let spawn = |n: usize| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "limits_child_worker", "--nocapture"])
            .env("REDIQ_LIMITS_URL", env.url())
            // The handlers' records go to a data node (a cluster client finds the others).
            .env("REDIQ_LIMITS_PROBE", &env.redis.data_urls()[0])
            .env("REDIQ_LIMITS_CHILD", n.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn a child server")
    };
    let mut children: Vec<_> = (0..3).map(spawn).collect();
    let insp = env.inspector.clone();
    assert!(
        wait_for(Duration::from_secs(30), || async {
            insp.queue_stats("gate").await.unwrap().processed_total >= 10
        })
        .await,
        "the children serve the queue"
    );
    // Kill a child that is running a task now (one with a start and no end yet).
    let mut raw = env.raw().await;
    let mut running_child = None;
    for _ in 0..50 {
        let events = probe_events(&mut raw).await;
        running_child = open_runs(&events)
            .keys()
            .filter_map(|run| run.split('-').next()?.parse::<usize>().ok())
            .next();
        if running_child.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n = running_child.expect("a child runs a task");
    let mut victim = children.remove(n);
    victim.kill().expect("SIGKILL a child"); // Child::kill is SIGKILL on Unix
    victim.wait().unwrap();
    let killed_ms = now_ms();
    assert!(
        wait_for(Duration::from_secs(60), || async {
            insp.queue_stats("gate").await.unwrap().processed_total == GATE_TASKS as u64
        })
        .await,
        "every task completed, those of the killed process included"
    );
    for mut c in children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    // Intervals from the handlers' own records; a start without an end was cut by the kill.
    let events = probe_events(&mut raw).await;
    let mut edges: Vec<(u64, i32)> = events
        .iter()
        .map(|e| {
            let mut p = e.split(' ');
            let up = p.next() == Some("S");
            let at: u64 = p.nth(1).unwrap().parse().unwrap();
            (at, if up { 1 } else { -1 })
        })
        .collect();
    let cut = open_runs(&events).len();
    for _ in 0..cut {
        edges.push((killed_ms, -1));
    }
    // Ends before starts at the same millisecond: a slot freed and taken again is not two.
    edges.sort_by_key(|&(at, d)| (at, d));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    assert!(cut >= 1, "the killed process was running tasks: {cut}");
    assert_eq!(
        most, GATE_LIMIT as i32,
        "never more than the limit, and the limit used"
    );
}

/// What the children's handlers recorded so far (`S|E <run> <Unix ms>`, in order).
async fn probe_events(raw: &mut Raw) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg("probe:{gate}")
        .arg(0)
        .arg(-1)
        .query_async(raw)
        .await
        .unwrap()
}

/// The runs with a start and no end yet, and when they started.
fn open_runs(events: &[String]) -> std::collections::HashMap<String, u64> {
    let mut open = std::collections::HashMap::new();
    for e in events {
        let mut p = e.split(' ');
        if let (Some(kind), Some(run), Some(at)) = (p.next(), p.next(), p.next()) {
            if kind == "S" {
                open.insert(run.to_string(), at.parse().unwrap_or(0));
            } else {
                open.remove(run);
            }
        }
    }
    open
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// In a child process: serves `gate` with 10 slots, each handler recording its start and end
/// (`S|E <run> <Unix ms>`) in a Redis list of its own, until the parent kills the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of several_processes_never_run_more_than_the_limit_also_when_one_is_killed and of its group twin"]
async fn limits_child_worker() {
    let Ok(url) = std::env::var("REDIQ_LIMITS_URL") else {
        return;
    };
    let child = std::env::var("REDIQ_LIMITS_CHILD").unwrap_or_default();
    let probe_url = std::env::var("REDIQ_LIMITS_PROBE").unwrap_or_else(|_| url.clone());
    let probe: Probe2 = match std::env::var(rediq::testing::Topology::VARIABLE).as_deref() {
        Ok("cluster") => Probe2::Cluster(
            redis::cluster::ClusterClient::new(vec![probe_url])
                .unwrap()
                .get_async_connection()
                .await
                .unwrap(),
        ),
        _ => Probe2::Plain(
            redis::Client::open(probe_url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        ),
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let mux = mux_with("work", move |t: Task| {
        let (mut probe, child) = (probe.clone(), child.clone());
        let run = format!("{child}-{}-{}", t.id, runs.fetch_add(1, Ordering::SeqCst));
        async move {
            probe.push(format!("S {run} {}", now_ms())).await;
            tokio::time::sleep(GATE_HOLD).await;
            probe.push(format!("E {run} {}", now_ms())).await;
            Ok(())
        }
    });
    let state = server_at(&url)
        .queues(&["gate"])
        .concurrency(10)
        .lease_duration(Duration::from_secs(1))
        .build()
        .await
        .expect("child server builds");
    let res = rediq::server::Server::from(state)
        .run_until(mux, std::future::pending())
        .await;
    assert!(res.is_ok());
}

/// The child's connection for its records (`probe:{gate}`: the queue's slot, one list).
#[derive(Clone)]
enum Probe2 {
    Plain(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Probe2 {
    async fn push(&mut self, event: String) {
        let cmd = redis::cmd("RPUSH").arg("probe:{gate}").arg(event).clone();
        let _: i64 = match self {
            Probe2::Plain(c) => cmd.query_async(c).await.unwrap(),
            Probe2::Cluster(c) => cmd.query_async(c).await.unwrap(),
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limited_queue_still_runs_beside_a_busy_unlimited_one() {
    let env = Env::new().await;
    let limit = at_most(4);
    env.client.set_queue_limits("small", &limit).await.unwrap();
    fill(&env, "small", 20).await;
    fill(&env, "busy", 100_000).await;
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let mux = mux_with("work", move |t: Task| {
        let d = d.clone();
        async move {
            if t.queue == "small" {
                tokio::time::sleep(Duration::from_millis(20)).await;
                d.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    });
    let server = start(env.server().queues(&["busy", "small"]).concurrency(16), mux).await;
    assert!(
        wait_for(Duration::from_secs(5), || async {
            done.load(Ordering::SeqCst) == 20
        })
        .await,
        "the limited queue ran beside the busy one: {} of 20",
        done.load(Ordering::SeqCst)
    );
    let busy = env.inspector.queue_stats("busy").await.unwrap().pending;
    server.shutdown().await;
    assert!(busy > 0, "while the busy queue still had a backlog");
}

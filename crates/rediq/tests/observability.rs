//! Middleware, metrics and the HTTP endpoint, against a private redis-server: a known workload
//! scraped over real HTTP, /healthz losing Redis, middleware order, skip and failure.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rediq::middleware::{
    Before, Finished, MetricsMiddleware, Middleware, MiddlewareChain, RunInfo,
};
use rediq::processor::Mux;
use rediq::{Error, Task};

mod support;
use support::{http_get, sample, start, start_with_metrics, wait_for, Env, FnHandler};

fn series(name: &str, queue: &str, task_type: &str) -> String {
    format!("{name}{{queue=\"{queue}\",task_type=\"{task_type}\"}}")
}

/// Scrapes /metrics every 20 ms until `done` holds (at most 10 s); panics with the last text
/// otherwise.
async fn scrape_until(addr: std::net::SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..500 {
        let (status, body) = http_get(addr, "/metrics").await.expect("scrape");
        assert_eq!(status, 200, "{body}");
        text = body;
        if done(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the scrape never showed what was expected:\n{text}");
}

/// A known workload: 5 tasks succeed, 2 fail once then succeed, 1 fails twice with one retry
/// allowed (dead), 1 fails non-retryably (dead), plus 3 pending tasks in a paused queue and 1
/// delayed task. The scrape shows exactly those counts.
#[tokio::test]
async fn scrape_after_a_known_workload_shows_its_counts() {
    let env = Env::new().await;
    let flaky_runs = Arc::new(AtomicU32::new(0));
    let mut mux = Mux::new();
    mux.handle("ok", FnHandler(|_t: Task| async { Ok(()) }));
    let runs = flaky_runs.clone();
    mux.handle(
        "flaky",
        FnHandler(move |t: Task| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move {
                if t.retry_cnt == 0 {
                    Err(Error::handler("first attempt fails"))
                } else {
                    Ok(())
                }
            }
        }),
    );
    mux.handle(
        "bad",
        FnHandler(|_t: Task| async { Err(Error::handler("always fails")) }),
    );
    mux.handle(
        "fatal",
        FnHandler(|_t: Task| async { Err(Error::non_retryable("cannot ever work")) }),
    );

    env.inspector.pause_queue("later").await.unwrap();
    for _ in 0..3 {
        let t = Task::builder("ok").queue("later").build().unwrap();
        env.client.enqueue(t).await.unwrap();
    }
    let t = Task::builder("ok")
        .queue("work")
        .delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    env.client.enqueue(t).await.unwrap();

    let builder = env
        .server()
        .queues(&["work", "later"])
        .retry_delay_fn(|_, _| Duration::from_millis(10))
        .middleware(MiddlewareChain::new().add(MetricsMiddleware::new()));
    let (server, addr) = start_with_metrics(builder, mux).await;

    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(Task::builder("ok").queue("work").build().unwrap());
    }
    for _ in 0..2 {
        tasks.push(Task::builder("flaky").queue("work").build().unwrap());
    }
    tasks.push(
        Task::builder("bad")
            .queue("work")
            .max_retry(1)
            .build()
            .unwrap(),
    );
    tasks.push(Task::builder("fatal").queue("work").build().unwrap());
    env.client.enqueue_batch(tasks).await.unwrap();

    let insp = env.inspector.clone();
    let settled = wait_for(Duration::from_secs(15), || {
        let insp = insp.clone();
        async move {
            insp.queue_stats("work")
                .await
                .is_ok_and(|s| s.processed_total == 7 && s.dead == 2 && s.active == 0)
        }
    })
    .await;
    assert!(settled, "{:?}", env.inspector.queue_stats("work").await);
    assert_eq!(flaky_runs.load(Ordering::SeqCst), 4);

    // Counters are bumped after the transition lands; scrape until the last one shows.
    let text = scrape_until(addr, |text| {
        sample(text, &series("rediq_tasks_processed_total", "work", "ok")) == Some(5.0)
            && sample(
                text,
                &series("rediq_tasks_processed_total", "work", "flaky"),
            ) == Some(2.0)
    })
    .await;

    let expect = [
        ("rediq_tasks_processed_total", "ok", 5.0),
        ("rediq_tasks_processed_total", "flaky", 2.0),
        ("rediq_tasks_failed_total", "ok", 0.0),
        ("rediq_tasks_failed_total", "flaky", 2.0),
        ("rediq_tasks_retried_total", "flaky", 2.0),
        ("rediq_tasks_dead_lettered_total", "flaky", 0.0),
        ("rediq_tasks_processed_total", "bad", 0.0),
        ("rediq_tasks_failed_total", "bad", 2.0),
        ("rediq_tasks_retried_total", "bad", 1.0),
        ("rediq_tasks_dead_lettered_total", "bad", 1.0),
        ("rediq_tasks_failed_total", "fatal", 1.0),
        ("rediq_tasks_retried_total", "fatal", 0.0),
        ("rediq_tasks_dead_lettered_total", "fatal", 1.0),
        ("rediq_stale_acks_total", "ok", 0.0),
        ("rediq_tasks_in_flight", "ok", 0.0),
        ("rediq_tasks_in_flight", "flaky", 0.0),
        // MetricsMiddleware times every run whose handler ran.
        ("rediq_task_duration_seconds_count", "ok", 5.0),
        ("rediq_task_duration_seconds_count", "flaky", 4.0),
        ("rediq_task_duration_seconds_count", "bad", 2.0),
        ("rediq_task_duration_seconds_count", "fatal", 1.0),
    ];
    for (name, ty, value) in expect {
        let s = series(name, "work", ty);
        assert_eq!(sample(&text, &s), Some(value), "{s} in\n{text}");
    }
    for (queue, state, n) in [
        ("work", "pending", 0.0),
        ("work", "active", 0.0),
        ("work", "delayed", 1.0),
        ("work", "retry", 0.0),
        ("work", "waiting", 0.0),
        ("work", "dead", 2.0),
        ("work", "completed", 0.0),
        ("later", "pending", 3.0),
    ] {
        let s = format!("rediq_queue_depth{{queue=\"{queue}\",state=\"{state}\"}}");
        assert_eq!(sample(&text, &s), Some(n), "{s} in\n{text}");
    }
    let age = sample(
        &text,
        "rediq_queue_oldest_pending_age_seconds{queue=\"later\"}",
    )
    .expect("age of the paused queue");
    assert!(age > 0.0 && age < 60.0, "oldest pending age {age}");
    assert_eq!(
        sample(
            &text,
            "rediq_queue_oldest_pending_age_seconds{queue=\"work\"}"
        ),
        Some(0.0)
    );
    for help in [
        "# TYPE rediq_tasks_processed counter",
        "# TYPE rediq_task_duration_seconds histogram",
        "# TYPE rediq_queue_depth gauge",
    ] {
        assert!(text.contains(help), "{help}");
    }
    server.shutdown().await;
}

/// /healthz answers 200 while the server runs with Redis, 503 once Redis is gone.
#[tokio::test]
async fn healthz_turns_503_when_redis_goes_away() {
    let mut env = Env::new().await;
    let (server, addr) = start_with_metrics(
        env.server().queues(&["h"]),
        support::mux_with("t", |_t| async { Ok(()) }),
    )
    .await;
    let up = wait_for(Duration::from_secs(5), || async {
        matches!(http_get(addr, "/healthz").await, Ok((200, _)))
    })
    .await;
    assert!(up, "healthz never answered 200");
    env.client
        .enqueue(Task::builder("t").queue("h").build().unwrap())
        .await
        .unwrap();
    scrape_until(addr, |text| {
        sample(text, &series("rediq_tasks_processed_total", "h", "t")) == Some(1.0)
            && text.contains("rediq_queue_depth{")
    })
    .await;

    for s in env.redis.data_servers() {
        s.stop();
    }
    let (status, body) = http_get(addr, "/healthz")
        .await
        .expect("the endpoint still answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
    // /metrics still answers with the counters; the depths it cannot read are left out.
    let (status, text) = http_get(addr, "/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    assert_eq!(
        sample(&text, &series("rediq_tasks_processed_total", "h", "t")),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("rediq_queue_depth{"), "{text}");
    server.shutdown().await;
    assert!(
        http_get(addr, "/healthz").await.is_err(),
        "the endpoint stops with the server"
    );
}

/// Records every hook call into a shared log.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    /// Task type this middleware skips.
    skip: Option<&'static str>,
    /// Task type this middleware refuses (non-retryable).
    refuse: Option<&'static str>,
    /// Task type on which `before` panics.
    panic_on: Option<&'static str>,
}

impl Recorder {
    fn new(name: &'static str, log: &Arc<Mutex<Vec<String>>>) -> Recorder {
        Recorder {
            name,
            log: log.clone(),
            skip: None,
            refuse: None,
            panic_on: None,
        }
    }

    fn push(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

#[async_trait]
impl Middleware for Recorder {
    fn name(&self) -> &str {
        self.name
    }

    async fn before(&self, task: &Task, run: &RunInfo) -> rediq::Result<Before> {
        self.push(format!(
            "{}.before {} #{}",
            self.name, task.task_type, run.attempt
        ));
        if self.panic_on == Some(task.task_type.as_str()) {
            panic!("boom in before");
        }
        if self.skip == Some(task.task_type.as_str()) {
            return Ok(Before::skip("switched off"));
        }
        if self.refuse == Some(task.task_type.as_str()) {
            return Err(Error::non_retryable("no tenant"));
        }
        Ok(Before::Continue)
    }

    async fn after(&self, task: &Task, run: &RunInfo, finished: &Finished<'_>) {
        self.push(format!(
            "{}.after {} #{} {}",
            self.name,
            task.task_type,
            run.attempt,
            finished.outcome.as_str()
        ));
        assert!(finished.duration < Duration::from_secs(10));
    }
}

fn events(log: &Arc<Mutex<Vec<String>>>, task_type: &str) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|e| e.split(' ').nth(1) == Some(task_type))
        .cloned()
        .collect()
}

/// before hooks in order, after hooks in reverse; a skip stops the chain, completes the task
/// without the handler and calls only the earlier middlewares' after; a failing before
/// dead-letters (non-retryable) naming the middleware; a panicking before fails the attempt
/// (retryable) and the task is retried.
#[tokio::test]
async fn middleware_order_skip_and_failure() {
    let env = Env::new().await;
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let a = Recorder::new("A", &log);
    let b = Recorder {
        skip: Some("skip"),
        refuse: Some("refuse"),
        ..Recorder::new("B", &log)
    };
    let mut c = Recorder::new("C", &log);
    c.panic_on = Some("panicky");
    let chain = MiddlewareChain::new().add(a).add(b).add(c);

    let mut mux = Mux::new();
    for ty in ["run", "skip", "refuse", "panicky"] {
        let log = log.clone();
        mux.handle(
            ty,
            FnHandler(move |t: Task| {
                log.lock()
                    .unwrap()
                    .push(format!("handler {} #{}", t.task_type, t.retry_cnt + 1));
                async { Ok(()) }
            }),
        );
    }
    let server = start(
        env.server()
            .queues(&["m"])
            .concurrency(1)
            .retry_delay_fn(|_, _| Duration::from_millis(10))
            .middleware(chain),
        mux,
    )
    .await;
    for ty in ["run", "skip", "refuse"] {
        env.client
            .enqueue(Task::builder(ty).queue("m").build().unwrap())
            .await
            .unwrap();
    }
    env.client
        .enqueue(
            Task::builder("panicky")
                .queue("m")
                .max_retry(1)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();

    let insp = env.inspector.clone();
    let done = wait_for(Duration::from_secs(15), || {
        let insp = insp.clone();
        async move {
            insp.queue_stats("m")
                .await
                .is_ok_and(|s| s.processed_total == 2 && s.dead == 2 && s.active == 0)
        }
    })
    .await;
    let stats = env.inspector.queue_stats("m").await.unwrap();
    server.shutdown().await;
    assert!(done, "{stats:?}");

    assert_eq!(
        events(&log, "run"),
        [
            "A.before run #1",
            "B.before run #1",
            "C.before run #1",
            "handler run #1",
            "C.after run #1 succeeded",
            "B.after run #1 succeeded",
            "A.after run #1 succeeded",
        ]
    );
    assert_eq!(
        events(&log, "skip"),
        [
            "A.before skip #1",
            "B.before skip #1",
            "A.after skip #1 skipped"
        ]
    );
    assert_eq!(
        events(&log, "refuse"),
        [
            "A.before refuse #1",
            "B.before refuse #1",
            "A.after refuse #1 failed"
        ]
    );
    assert_eq!(
        events(&log, "panicky"),
        [
            "A.before panicky #1",
            "B.before panicky #1",
            "C.before panicky #1",
            "B.after panicky #1 failed",
            "A.after panicky #1 failed",
            "A.before panicky #2",
            "B.before panicky #2",
            "C.before panicky #2",
            "B.after panicky #2 failed",
            "A.after panicky #2 failed",
        ]
    );

    let dead = env
        .inspector
        .list("m", rediq::TaskState::Dead, 10)
        .await
        .unwrap();
    let error_of = |ty: &str| {
        dead.iter()
            .find(|t| t.task_type == ty)
            .and_then(|t| t.last_error.clone())
            .unwrap_or_default()
    };
    assert_eq!(error_of("refuse"), "middleware B failed: no tenant");
    assert_eq!(
        error_of("panicky"),
        "middleware C failed: panicked: boom in before"
    );
}

/// A middleware's after hook that panics or hangs does not change the outcome or hold the slot.
#[tokio::test]
async fn after_hooks_that_panic_or_hang_leave_nothing_stuck() {
    struct Bad;
    #[async_trait]
    impl Middleware for Bad {
        async fn after(&self, task: &Task, _run: &RunInfo, _f: &Finished<'_>) {
            if task.task_type == "panic" {
                panic!("after hook bug");
            }
            std::future::pending::<()>().await;
        }
    }
    let env = Env::new().await;
    let mut mux = Mux::new();
    for ty in ["panic", "hang"] {
        mux.handle(ty, FnHandler(|_t: Task| async { Ok(()) }));
    }
    let server = start(
        env.server()
            .queues(&["x"])
            .concurrency(1)
            .middleware(MiddlewareChain::new().add(Bad)),
        mux,
    )
    .await;
    for ty in ["panic", "hang", "panic"] {
        let t = Task::builder(ty)
            .queue("x")
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        env.client.enqueue(t).await.unwrap();
    }
    let insp = env.inspector.clone();
    let done = wait_for(Duration::from_secs(10), || {
        let insp = insp.clone();
        async move {
            insp.queue_stats("x")
                .await
                .is_ok_and(|s| s.processed_total == 3 && s.active == 0)
        }
    })
    .await;
    let stats = env.inspector.queue_stats("x").await.unwrap();
    server.shutdown().await;
    assert!(done, "{stats:?}");
    assert_eq!((stats.failed_total, stats.dead, stats.retry), (0, 0, 0));
}

/// A skipped task counts as skipped, not processed; metrics can be switched off entirely.
#[tokio::test]
async fn skipped_tasks_are_counted_and_metrics_can_be_off() {
    struct SkipAll;
    #[async_trait]
    impl Middleware for SkipAll {
        async fn before(&self, _t: &Task, _r: &RunInfo) -> rediq::Result<Before> {
            Ok(Before::skip("maintenance"))
        }
    }
    let env = Env::new().await;
    let ran = Arc::new(AtomicU32::new(0));
    let r = ran.clone();
    let mux = support::mux_with("s", move |_t| {
        r.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    let (server, addr) = start_with_metrics(
        env.server()
            .queues(&["s"])
            .metrics(false) // enable_metrics turns recording back on
            .middleware(MiddlewareChain::new().add(SkipAll)),
        mux,
    )
    .await;
    env.client
        .enqueue(Task::builder("s").queue("s").build().unwrap())
        .await
        .unwrap();
    let text = scrape_until(addr, |text| {
        sample(text, &series("rediq_tasks_skipped_total", "s", "s")) == Some(1.0)
    })
    .await;
    server.shutdown().await;
    assert_eq!(
        sample(&text, &series("rediq_tasks_processed_total", "s", "s")),
        Some(0.0)
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the handler never ran");
}

/// enable_metrics on an address that is taken: run() fails at once, naming the address.
#[tokio::test]
async fn metrics_endpoint_on_a_taken_port_fails_clearly() {
    let env = Env::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let state = env.server().queues(&["p"]).build().await.unwrap();
    let mut server = rediq::server::Server::from(state);
    server.enable_metrics(addr);
    assert_eq!(server.metrics_addr(), None);
    let err = server
        .run_until(Mux::new(), async {})
        .await
        .expect_err("the port is taken");
    assert!(matches!(err, Error::MetricsEndpoint { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// A task whose lease was taken over while its handler ran (here: the queue was flushed) is
/// refused at acknowledgement and counted as a stale ack, not as processed.
#[tokio::test]
async fn refused_acks_count_as_stale() {
    let env = Env::new().await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let (g, st) = (gate.clone(), started.clone());
    let mux = support::mux_with("slow", move |_t| {
        let (g, st) = (g.clone(), st.clone());
        async move {
            st.notify_one();
            g.notified().await;
            Ok(())
        }
    });
    let (server, addr) = start_with_metrics(env.server().queues(&["st"]), mux).await;
    env.client
        .enqueue(Task::builder("slow").queue("st").build().unwrap())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the handler started");
    let flushed = env.inspector.flush_queue("st").await.unwrap();
    assert_eq!(flushed.active, 1);
    gate.notify_one();
    let text = scrape_until(addr, |t| {
        sample(t, &series("rediq_stale_acks_total", "st", "slow")) == Some(1.0)
    })
    .await;
    server.shutdown().await;
    assert_eq!(
        sample(&text, &series("rediq_tasks_processed_total", "st", "slow")),
        Some(0.0)
    );
    assert_eq!(
        env.inspector
            .queue_stats("st")
            .await
            .unwrap()
            .processed_total,
        0
    );
}

/// Periodic firings count as cron firings of their entry and as tasks this server enqueued.
#[tokio::test]
async fn cron_firings_are_counted() {
    let env = Env::new().await;
    let entry = Task::builder("tick")
        .queue("c")
        .unique_key("tick-entry")
        .cron("@every 1s")
        .build()
        .unwrap();
    env.client.enqueue(entry).await.unwrap();
    let (server, addr) = start_with_metrics(
        env.server()
            .queues(&["c"])
            .scheduler_interval(Duration::from_millis(50)),
        support::mux_with("tick", |_t| async { Ok(()) }),
    )
    .await;
    let text = scrape_until(addr, |t| {
        sample(t, &series("rediq_tasks_processed_total", "c", "tick")).is_some_and(|n| n >= 1.0)
    })
    .await;
    server.shutdown().await;
    let fired = sample(
        &text,
        "rediq_cron_firings_total{queue=\"c\",entry=\"tick-entry\"}",
    )
    .expect("firings of the entry");
    let enqueued = sample(&text, &series("rediq_tasks_enqueued_total", "c", "tick"))
        .expect("enqueued by the scheduler");
    assert!(fired >= 1.0, "{text}");
    // Each firing enqueued one task (the unique key is released when the task completes).
    assert!(enqueued >= 1.0 && enqueued <= fired, "{text}");
}

/// Every producer's enqueues are counted in Redis, per queue and task type, and scraped:
/// single, batch, dependent and periodic enqueues; a task refused for its unique key is not
/// counted.
#[tokio::test]
async fn enqueues_of_every_producer_are_counted_per_type() {
    let env = Env::new().await;
    let q = |t: &str| Task::builder(t).queue("eq");
    let a = env
        .client
        .enqueue(q("email").build().unwrap())
        .await
        .unwrap();
    env.client
        .enqueue(q("email").unique_key("once").build().unwrap())
        .await
        .unwrap();
    assert!(env
        .client
        .enqueue(q("email").unique_key("once").build().unwrap())
        .await
        .is_err());
    env.client
        .enqueue_batch((0..5).map(|_| q("report").build().unwrap()).collect())
        .await
        .unwrap();
    env.client
        .enqueue(q("report").depends_on(&[&a]).build().unwrap())
        .await
        .unwrap();
    // A second client (another producer process) counts into the same counters.
    let other = env.redis.client().build().await.unwrap();
    other
        .enqueue(q("email").delay(Duration::from_secs(60)).build().unwrap())
        .await
        .unwrap();
    let (server, addr) = start_with_metrics(
        env.server().queues(&["eq"]).metrics(false),
        support::mux_with("nothing", |_t| async { Ok(()) }),
    )
    .await;
    let text = scrape_until(addr, |t| {
        sample(t, &series("rediq_tasks_enqueued_total", "eq", "report")).is_some()
    })
    .await;
    server.shutdown().await;
    assert_eq!(
        sample(&text, &series("rediq_tasks_enqueued_total", "eq", "email")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &series("rediq_tasks_enqueued_total", "eq", "report")),
        Some(6.0),
        "{text}"
    );
}

/// Garbage in pending that a fetch sets aside (`bury.lua`) is dead-lettered as
/// `rediq:undecodable`, and counted as such, once per piece.
#[tokio::test]
async fn buried_garbage_counts_as_dead_lettered_undecodable() {
    let env = Env::new().await;
    for g in [&b""[..], b"x", b"\x07 not a record of ours"] {
        env.inspector.plant_raw_pending("gb", g).await.unwrap();
    }
    let t = Task::builder("ok").queue("gb").build().unwrap();
    env.client.enqueue(t).await.unwrap();
    let (server, addr) = start_with_metrics(
        env.server().queues(&["gb"]),
        support::mux_with("ok", |_t| async { Ok(()) }),
    )
    .await;
    let dead = series("rediq_tasks_dead_lettered_total", "gb", "rediq:undecodable");
    let text = scrape_until(addr, |t| {
        sample(t, &series("rediq_tasks_processed_total", "gb", "ok")) == Some(1.0)
            && sample(t, &dead) == Some(3.0)
    })
    .await;
    server.shutdown().await;
    assert_eq!(sample(&text, &dead), Some(3.0), "{text}");
    assert_eq!(env.inspector.queue_stats("gb").await.unwrap().dead, 3);
}

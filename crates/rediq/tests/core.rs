//! The core engine end to end against a real redis-server: processing, priority, delay, retry
//! and dead-lettering, timeout, panic, unique keys, missing handlers, corrupt records, queue
//! selection, completed retention, the worker registry and graceful shutdown.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rediq::{Error, Task, TaskState};
use support::*;

const LONG: Duration = Duration::from_secs(15);

#[tokio::test]
async fn processes_every_enqueued_task_once() {
    let env = Env::new().await;
    let seen = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    for i in 0..200 {
        let t = Task::builder("count")
            .queue("work")
            .payload(&serde_json::json!({ "i": i }))
            .unwrap()
            .build()
            .unwrap();
        env.client.enqueue(t).await.unwrap();
    }
    let s = seen.clone();
    let srv = start(
        env.server().queues(&["work"]).concurrency(8),
        mux_with("count", move |t| {
            let s = s.clone();
            async move {
                let v: serde_json::Value = t.payload_json()?;
                assert!(v["i"].is_number());
                *s.lock().unwrap().entry(t.id).or_default() += 1;
                Ok(())
            }
        }),
    )
    .await;
    assert!(wait_for(LONG, || async { seen.lock().unwrap().len() == 200 }).await);
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("work").await.unwrap().processed_total == 200
        })
        .await
    );
    srv.shutdown().await;
    assert!(seen.lock().unwrap().values().all(|&n| n == 1));
    let st = env.inspector.queue_stats("work").await.unwrap();
    assert_eq!((st.pending, st.active, st.dead, st.retry), (0, 0, 0, 0));
    assert_eq!(st.completed, 0, "completed tasks are removed by default");
    assert!(env
        .inspector
        .queues()
        .await
        .unwrap()
        .contains(&"work".to_string()));
}

#[tokio::test]
async fn lower_priority_value_runs_first_fifo_among_equals() {
    let env = Env::new().await;
    let mut expected = Vec::new();
    let mut by_prio: Vec<(i32, usize, String)> = Vec::new();
    for (n, p) in [50, 0, 100, 0, 50, 7, 100, 0].into_iter().enumerate() {
        let t = Task::builder("p")
            .queue("prio")
            .priority(p)
            .build()
            .unwrap();
        by_prio.push((p, n, t.id.clone()));
        env.client.enqueue(t).await.unwrap();
    }
    by_prio.sort();
    expected.extend(by_prio.into_iter().map(|(_, _, id)| id));
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    let srv = start(
        env.server().queues(&["prio"]).concurrency(1),
        mux_with("p", move |t| {
            let o = o.clone();
            async move {
                o.lock().unwrap().push(t.id);
                Ok(())
            }
        }),
    )
    .await;
    assert!(wait_for(LONG, || async { order.lock().unwrap().len() == 8 }).await);
    srv.shutdown().await;
    assert_eq!(*order.lock().unwrap(), expected);
}

#[tokio::test]
async fn delayed_task_runs_not_before_due_and_soon_after() {
    let env = Env::new().await;
    let ran_at = Arc::new(Mutex::new(None));
    let r = ran_at.clone();
    let srv = start(
        env.server().queues(&["later"]),
        mux_with("d", move |_| {
            let r = r.clone();
            async move {
                *r.lock().unwrap() = Some(Instant::now());
                Ok(())
            }
        }),
    )
    .await;
    let delay = Duration::from_millis(1500);
    let t = Task::builder("d")
        .queue("later")
        .delay(delay)
        .build()
        .unwrap();
    let enqueued = Instant::now();
    env.client.enqueue(t).await.unwrap();
    assert_eq!(env.inspector.queue_stats("later").await.unwrap().delayed, 1);
    assert!(wait_for(LONG, || async { ran_at.lock().unwrap().is_some() }).await);
    let took = ran_at.lock().unwrap().unwrap() - enqueued;
    assert!(took >= delay, "ran after {took:?}, before its delay");
    assert!(
        took <= delay + Duration::from_secs(1),
        "ran {took:?} after enqueue"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn failing_task_retries_with_backoff_then_dies_with_its_error() {
    let env = Env::new().await;
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let a = attempts.clone();
    let srv = start(
        env.server()
            .queues(&["flaky"])
            .retry_backoff(Duration::from_millis(200), Duration::from_secs(5)),
        mux_with("f", move |t| {
            let a = a.clone();
            async move {
                a.lock().unwrap().push((Instant::now(), t.retry_cnt));
                Err(Error::handler(format!("boom #{}", t.attempt())))
            }
        }),
    )
    .await;
    let t = Task::builder("f")
        .queue("flaky")
        .max_retry(2)
        .build()
        .unwrap();
    let id = env.client.enqueue(t).await.unwrap();
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("flaky").await.unwrap().dead == 1
        })
        .await
    );
    srv.shutdown().await;
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 3, "first attempt + max_retry 2");
    assert_eq!(
        attempts.iter().map(|a| a.1).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    // Backoff 200 ms then 400 ms (forwarding adds at most its 50 ms interval and a fetch).
    let gap1 = attempts[1].0 - attempts[0].0;
    let gap2 = attempts[2].0 - attempts[1].0;
    assert!(
        gap1 >= Duration::from_millis(200) && gap1 < Duration::from_millis(900),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(400) && gap2 < Duration::from_millis(1100),
        "{gap2:?}"
    );
    let dead = env
        .inspector
        .list("flaky", TaskState::Dead, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].retry_cnt, 3);
    assert_eq!(dead[0].last_error.as_deref(), Some("boom #3"));
    assert!(dead[0].last_failed_at.is_some());
    let st = env.inspector.queue_stats("flaky").await.unwrap();
    assert_eq!(
        (st.failed_total, st.pending, st.retry, st.active),
        (3, 0, 0, 0)
    );
}

#[tokio::test]
async fn non_retryable_error_goes_straight_to_dead() {
    let env = Env::new().await;
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let srv = start(
        env.server().queues(&["perm"]),
        mux_with("x", move |_| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Err(Error::non_retryable("card declined"))
            }
        }),
    )
    .await;
    env.client
        .enqueue(Task::builder("x").queue("perm").build().unwrap())
        .await
        .unwrap();
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("perm").await.unwrap().dead == 1
        })
        .await
    );
    srv.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let dead = env
        .inspector
        .list("perm", TaskState::Dead, 1)
        .await
        .unwrap();
    assert_eq!(dead[0].last_error.as_deref(), Some("card declined"));
}

#[tokio::test]
async fn timeout_cancels_the_handler_and_panics_are_caught() {
    let env = Env::new().await;
    let finished_slow = Arc::new(AtomicU32::new(0));
    let ok_runs = Arc::new(AtomicU32::new(0));
    let mut mux = rediq::processor::Mux::new();
    let f = finished_slow.clone();
    mux.handle(
        "slow",
        FnHandler(move |_| {
            let f = f.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }),
    );
    mux.handle(
        "panic",
        FnHandler(|_| async {
            if true {
                panic!("boom in handler");
            }
            Ok(())
        }),
    );
    let o = ok_runs.clone();
    mux.handle(
        "ok",
        FnHandler(move |_| {
            let o = o.clone();
            async move {
                o.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }),
    );
    // One slot: the panic and the timeout must not take it down.
    let srv = start(env.server().queues(&["tp"]).concurrency(1), mux).await;
    let slow = Task::builder("slow")
        .queue("tp")
        .timeout(Duration::from_millis(200))
        .max_retry(0)
        .build()
        .unwrap();
    let panic = Task::builder("panic")
        .queue("tp")
        .max_retry(0)
        .build()
        .unwrap();
    env.client.enqueue(slow).await.unwrap();
    env.client.enqueue(panic).await.unwrap();
    env.client
        .enqueue(Task::builder("ok").queue("tp").build().unwrap())
        .await
        .unwrap();
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("tp").await.unwrap().dead == 2
        })
        .await
    );
    assert!(wait_for(LONG, || async { ok_runs.load(Ordering::SeqCst) == 1 }).await);
    srv.shutdown().await;
    assert_eq!(
        finished_slow.load(Ordering::SeqCst),
        0,
        "timed-out handler was not dropped"
    );
    let dead = env.inspector.list("tp", TaskState::Dead, 10).await.unwrap();
    let errs: Vec<String> = dead.iter().filter_map(|t| t.last_error.clone()).collect();
    assert!(
        errs.iter().any(|e| e.contains("timed out after 200ms")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("panicked: boom in handler")),
        "{errs:?}"
    );
}

#[tokio::test]
async fn unique_key_rejects_duplicates_until_the_holder_finishes() {
    let env = Env::new().await;
    let t1 = Task::builder("u")
        .queue("uq")
        .unique_key("order-42")
        .build()
        .unwrap();
    let id1 = env.client.enqueue(t1).await.unwrap();
    let t2 = Task::builder("u")
        .queue("uq")
        .unique_key("order-42")
        .build()
        .unwrap();
    match env.client.enqueue(t2).await {
        Err(Error::Duplicate {
            existing_id,
            unique_key,
            ..
        }) => {
            assert_eq!(existing_id, id1);
            assert_eq!(unique_key, "order-42");
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // Another queue has its own keys.
    let other_q = Task::builder("u")
        .queue("uq2")
        .unique_key("order-42")
        .build()
        .unwrap();
    env.client.enqueue(other_q).await.unwrap();
    // A batch with a held key writes nothing.
    let batch = vec![
        Task::builder("u").queue("uq").build().unwrap(),
        Task::builder("u")
            .queue("uq")
            .unique_key("order-42")
            .build()
            .unwrap(),
    ];
    assert!(matches!(
        env.client.enqueue_batch(batch).await,
        Err(Error::Duplicate { .. })
    ));
    assert_eq!(env.inspector.queue_stats("uq").await.unwrap().pending, 1);

    let srv = start(
        env.server().queues(&["uq"]),
        mux_with("u", |_| async { Ok(()) }),
    )
    .await;
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("uq").await.unwrap().processed_total == 1
        })
        .await
    );
    srv.shutdown().await;
    let t3 = Task::builder("u")
        .queue("uq")
        .unique_key("order-42")
        .build()
        .unwrap();
    env.client
        .enqueue(t3)
        .await
        .expect("key released after completion");
}

#[tokio::test]
async fn unique_key_is_released_when_the_holder_dies() {
    let env = Env::new().await;
    let srv = start(
        env.server().queues(&["ud"]),
        mux_with("u", |_| async { Err(Error::non_retryable("no")) }),
    )
    .await;
    let t = Task::builder("u")
        .queue("ud")
        .unique_key("k")
        .build()
        .unwrap();
    env.client.enqueue(t).await.unwrap();
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("ud").await.unwrap().dead == 1
        })
        .await
    );
    srv.shutdown().await;
    let again = Task::builder("u")
        .queue("ud")
        .unique_key("k")
        .build()
        .unwrap();
    env.client
        .enqueue(again)
        .await
        .expect("key released after death");
}

#[tokio::test]
async fn task_without_handler_is_retried_then_dead_lettered() {
    let env = Env::new().await;
    let srv = start(
        env.server()
            .queues(&["nh"])
            .retry_backoff(Duration::from_millis(50), Duration::from_millis(50)),
        mux_with("known", |_| async { Ok(()) }),
    )
    .await;
    let t = Task::builder("unknown:type")
        .queue("nh")
        .max_retry(1)
        .build()
        .unwrap();
    env.client.enqueue(t).await.unwrap();
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("nh").await.unwrap().dead == 1
        })
        .await
    );
    srv.shutdown().await;
    let dead = env.inspector.list("nh", TaskState::Dead, 1).await.unwrap();
    assert_eq!(dead[0].retry_cnt, 2);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("no handler registered for type unknown:type")
    );
}

#[tokio::test]
async fn corrupt_record_is_dead_lettered_as_undecodable_and_the_server_keeps_going() {
    let env = Env::new().await;
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let srv = start(
        env.server().queues(&["bad"]).concurrency(2),
        mux_with("ok", move |_| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }),
    )
    .await;
    env.inspector
        .plant_raw_pending("bad", b"not a rediq record")
        .await
        .unwrap();
    env.inspector
        .plant_raw_pending("bad", b"{\"json\":\"from another system\"}")
        .await
        .unwrap();
    env.client
        .enqueue(Task::builder("ok").queue("bad").build().unwrap())
        .await
        .unwrap();
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("bad").await.unwrap().dead == 2
        })
        .await
    );
    assert!(wait_for(LONG, || async { runs.load(Ordering::SeqCst) == 1 }).await);
    srv.shutdown().await;
    let dead = env
        .inspector
        .list("bad", TaskState::Dead, 10)
        .await
        .unwrap();
    for d in &dead {
        assert_eq!(d.task_type, "rediq:undecodable");
        assert!(d.last_error.as_deref().unwrap().starts_with("undecodable"));
    }
    let payloads: Vec<&[u8]> = dead.iter().map(|d| d.payload.as_slice()).collect();
    assert!(
        payloads.contains(&&b"not a rediq record"[..]),
        "raw bytes kept"
    );
    let st = env.inspector.queue_stats("bad").await.unwrap();
    assert_eq!((st.pending, st.active), (0, 0));
}

#[tokio::test]
async fn weighted_queues_share_and_strict_queues_drain_in_order() {
    let env = Env::new().await;
    let mut batch = Vec::new();
    for _ in 0..300 {
        batch.push(Task::builder("w").queue("heavy").build().unwrap());
        batch.push(Task::builder("w").queue("light").build().unwrap());
    }
    env.client.enqueue_batch(batch).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    let srv = start(
        env.server()
            .queues_weighted(&[("heavy", 3), ("light", 1)])
            .concurrency(1)
            .fetch_batch(1),
        mux_with("w", move |t| {
            let o = o.clone();
            async move {
                o.lock().unwrap().push(t.queue);
                Ok(())
            }
        }),
    )
    .await;
    assert!(wait_for(LONG, || async { order.lock().unwrap().len() >= 200 }).await);
    srv.shutdown().await;
    let first: Vec<String> = order.lock().unwrap()[..200].to_vec();
    let heavy = first.iter().filter(|q| *q == "heavy").count();
    assert!(
        (120..=180).contains(&heavy),
        "heavy got {heavy} of 200 (expect ~150)"
    );

    // Strict: every "hi" task before any "lo" task.
    let mut batch = Vec::new();
    for _ in 0..50 {
        batch.push(Task::builder("s").queue("lo").build().unwrap());
        batch.push(Task::builder("s").queue("hi").build().unwrap());
    }
    env.client.enqueue_batch(batch).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    let srv = start(
        env.server()
            .queues(&["hi", "lo"])
            .strict_priority(true)
            .concurrency(1)
            .fetch_batch(1),
        mux_with("s", move |t| {
            let o = o.clone();
            async move {
                o.lock().unwrap().push(t.queue);
                Ok(())
            }
        }),
    )
    .await;
    assert!(wait_for(LONG, || async { order.lock().unwrap().len() == 100 }).await);
    srv.shutdown().await;
    let got = order.lock().unwrap().clone();
    assert!(got[..50].iter().all(|q| q == "hi") && got[50..].iter().all(|q| q == "lo"));
}

#[tokio::test]
async fn graceful_shutdown_waits_for_handlers_and_requeues_the_unfinished() {
    let env = Env::new().await;
    let done = Arc::new(AtomicU32::new(0));
    let d = done.clone();
    let srv = start(
        env.server()
            .queues(&["gs"])
            .concurrency(4)
            .shutdown_timeout(Duration::from_secs(5)),
        mux_with("short", move |_| {
            let d = d.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                d.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }),
    )
    .await;
    for _ in 0..4 {
        env.client
            .enqueue(Task::builder("short").queue("gs").build().unwrap())
            .await
            .unwrap();
    }
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("gs").await.unwrap().active == 4
        })
        .await
    );
    srv.shutdown().await;
    assert_eq!(
        done.load(Ordering::SeqCst),
        4,
        "shutdown waited for running handlers"
    );
    let st = env.inspector.queue_stats("gs").await.unwrap();
    assert_eq!((st.active, st.pending, st.processed_total), (0, 0, 4));

    // Handlers longer than the shutdown timeout are cancelled and their tasks go back.
    let srv = start(
        env.server()
            .queues(&["gs2"])
            .concurrency(2)
            .shutdown_timeout(Duration::from_millis(200)),
        mux_with("long", |_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        }),
    )
    .await;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..2 {
            v.push(
                env.client
                    .enqueue(Task::builder("long").queue("gs2").build().unwrap())
                    .await
                    .unwrap(),
            );
        }
        v
    };
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("gs2").await.unwrap().active == 2
        })
        .await
    );
    let t0 = Instant::now();
    srv.shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(5));
    let st = env.inspector.queue_stats("gs2").await.unwrap();
    assert_eq!((st.active, st.pending, st.failed_total), (0, 2, 0));
    let pending = env
        .inspector
        .list("gs2", TaskState::Pending, 10)
        .await
        .unwrap();
    assert!(
        pending.iter().all(|t| t.retry_cnt == 0),
        "no attempt counted"
    );
    let mut got: Vec<String> = pending.into_iter().map(|t| t.id).collect();
    got.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(got, want);
    assert!(
        env.inspector.workers().await.unwrap().is_empty(),
        "deregistered"
    );
}

#[tokio::test]
async fn registry_retention_and_dead_trimming() {
    let env = Env::new().await;
    let mut mux = rediq::processor::Mux::new();
    mux.handle("ok", FnHandler(|_| async { Ok(()) }));
    mux.handle(
        "bad",
        FnHandler(|_| async { Err(Error::non_retryable("x")) }),
    );
    let srv = start(
        env.server()
            .queues(&["rr"])
            .concurrency(3)
            .completed_retention(Duration::from_secs(60))
            .dead_max_count(2),
        mux,
    )
    .await;
    let insp = env.inspector.clone();
    assert!(wait_for(LONG, || async { !insp.workers().await.unwrap().is_empty() }).await);
    let w = &env.inspector.workers().await.unwrap()[0];
    assert_eq!(w.fields["pid"], std::process::id().to_string());
    assert_eq!(w.fields["queues"], "rr");
    assert_eq!(w.fields["concurrency"], "3");
    assert!(w.fields.contains_key("host") && w.fields.contains_key("started_at_ms"));

    for _ in 0..5 {
        env.client
            .enqueue(Task::builder("ok").queue("rr").build().unwrap())
            .await
            .unwrap();
        env.client
            .enqueue(Task::builder("bad").queue("rr").build().unwrap())
            .await
            .unwrap();
    }
    assert!(
        wait_for(LONG, || async {
            let s = insp.queue_stats("rr").await.unwrap();
            s.completed == 5 && s.dead + s.dead_trimmed_total == 5
        })
        .await
    );
    srv.shutdown().await;
    let s = env.inspector.queue_stats("rr").await.unwrap();
    assert_eq!(
        (s.dead, s.dead_trimmed_total),
        (2, 3),
        "trimmed, and counted"
    );
    let kept = env
        .inspector
        .list("rr", TaskState::Completed, 10)
        .await
        .unwrap();
    assert_eq!(kept.len(), 5);
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    // Unreachable Redis: the error names the URL with the password masked.
    let err = rediq::Client::builder()
        .redis_url("redis://:s3cret-pass@127.0.0.1:1/0")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("s3cret-pass"), "password leaked: {err}");
    let err = rediq::server::ServerBuilder::new()
        .redis_url("redis://:s3cret-pass@127.0.0.1:1")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("s3cret-pass") && err.contains("127.0.0.1:1"),
        "{err}"
    );

    let env = Env::new().await;
    let small = env
        .redis
        .client()
        .max_payload_size(10)
        .build()
        .await
        .unwrap();
    let t = Task::builder("t")
        .payload_bytes(vec![1u8; 11])
        .build()
        .unwrap();
    let err = small.enqueue(t).await.unwrap_err().to_string();
    assert!(err.contains("11 bytes"), "{err}");
    assert!(Task::builder("t").queue("bad queue").build().is_err());

    // Builders validate.
    let e = env
        .server()
        .concurrency(0)
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("concurrency"), "{e}");
    let e = env
        .server()
        .queues(&["a{b"])
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("a{b"), "{e}");
    let e = env
        .server()
        .queues_weighted(&[("a", 0)])
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("weight"), "{e}");

    // A dependency id that names no task is refused, never ignored.
    let dep = Task::builder("d")
        .depends_on(&["task-a-id"])
        .build()
        .unwrap();
    let e = env.client.enqueue(dep).await.unwrap_err();
    assert!(matches!(e, Error::UnknownDependency { .. }), "{e}");
    assert!(e.to_string().contains("\"task-a-id\""), "{e}");
    let st = env.inspector.queue_stats("default").await.unwrap();
    assert_eq!(st.pending + st.delayed, 0);
}

#[tokio::test]
async fn batch_enqueue_returns_ids_in_order() {
    let env = Env::new().await;
    let tasks: Vec<Task> = (0..2500)
        .map(|i| {
            Task::builder("b")
                .queue(if i % 2 == 0 { "b1" } else { "b2" })
                .build()
                .unwrap()
        })
        .collect();
    let want: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let ids = env.client.enqueue_batch(tasks).await.unwrap();
    assert_eq!(ids, want);
    let s1 = env.inspector.queue_stats("b1").await.unwrap();
    let s2 = env.inspector.queue_stats("b2").await.unwrap();
    assert_eq!(s1.pending + s2.pending, 2500);
}

#[tokio::test]
async fn unique_key_lock_expires_with_its_ttl() {
    let env = Env::new().await;
    let t = Task::builder("u")
        .queue("ttl")
        .unique_key("k")
        .unique_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    env.client.enqueue(t).await.unwrap();
    let dup = Task::builder("u")
        .queue("ttl")
        .unique_key("k")
        .build()
        .unwrap();
    assert!(matches!(
        env.client.enqueue(dup).await,
        Err(Error::Duplicate { .. })
    ));
    // Nobody processes the holder, as if its server had crashed for good: the lock still goes.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let again = Task::builder("u")
        .queue("ttl")
        .unique_key("k")
        .build()
        .unwrap();
    env.client.enqueue(again).await.expect("lock expired");
}

#[tokio::test]
async fn dead_tasks_older_than_the_age_limit_are_trimmed_and_counted() {
    let env = Env::new().await;
    let srv = start(
        env.server()
            .queues(&["aged"])
            .dead_max_age(Duration::from_millis(300))
            .janitor_interval(Duration::from_millis(100)),
        mux_with("x", |_| async { Err(Error::non_retryable("no")) }),
    )
    .await;
    for _ in 0..3 {
        env.client
            .enqueue(Task::builder("x").queue("aged").build().unwrap())
            .await
            .unwrap();
    }
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            let s = insp.queue_stats("aged").await.unwrap();
            s.dead == 0 && s.dead_trimmed_total == 3
        })
        .await
    );
    srv.shutdown().await;
    assert_eq!(
        env.inspector
            .queue_stats("aged")
            .await
            .unwrap()
            .failed_total,
        3
    );
}

#[tokio::test]
async fn custom_retry_delay_function_is_used() {
    let env = Env::new().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let srv = start(
        env.server()
            .queues(&["custom"])
            .retry_delay_fn(move |task, err| {
                s.lock().unwrap().push((task.retry_cnt, err.to_string()));
                Duration::from_millis(10)
            }),
        mux_with("x", move |_| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Err(Error::handler("nope"))
            }
        }),
    )
    .await;
    env.client
        .enqueue(
            Task::builder("x")
                .queue("custom")
                .max_retry(2)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("custom").await.unwrap().dead == 1
        })
        .await
    );
    srv.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(1, "nope".to_string()), (2, "nope".to_string())],
        "called once per retry with the raised attempt count and the error"
    );
}

/// A backlog of quick tasks is leased ahead of free slots (`ServerBuilder::prefetch`); a
/// graceful shutdown in the middle gives the tasks held ahead back at once: nothing stays
/// leased to the stopped server, every task is processed once or pending, and a later server
/// finishes the rest.
#[tokio::test]
async fn shutdown_gives_back_the_tasks_leased_ahead() {
    let env = Env::new().await;
    const N: u32 = 20_000;
    let tasks: Vec<Task> = (0..N)
        .map(|_| Task::builder("quick").queue("ahead").build().unwrap())
        .collect();
    for chunk in tasks.chunks(1000) {
        env.client.enqueue_batch(chunk.to_vec()).await.unwrap();
    }
    let (mux, runs) = counting_mux("quick");
    let srv = start(
        env.server().queues(&["ahead"]).concurrency(4).prefetch(100),
        mux,
    )
    .await;
    let r = runs.clone();
    assert!(wait_for(LONG, || async { *r.lock().unwrap() >= 2_000 }).await);
    srv.shutdown().await;
    let ran = *runs.lock().unwrap();
    assert!(ran < N, "the shutdown came before the backlog ran out");
    let st = env.inspector.queue_stats("ahead").await.unwrap();
    assert_eq!(st.active, 0, "no task stays leased to the stopped server");
    assert_eq!(st.processed_total, u64::from(ran), "every run acknowledged");
    assert_eq!(st.pending, u64::from(N - ran), "the rest is pending again");

    let (mux, rest) = counting_mux("quick");
    let srv = start(env.server().queues(&["ahead"]).concurrency(4), mux);
    let srv = srv.await;
    let insp = env.inspector.clone();
    assert!(
        wait_for(LONG, || async {
            insp.queue_stats("ahead").await.unwrap().processed_total == u64::from(N)
        })
        .await
    );
    srv.shutdown().await;
    assert_eq!(*rest.lock().unwrap(), N - ran, "each task ran once");
}

/// Tasks leased ahead while the tasks were quick do not stay on a server whose slots turned
/// busy: within 20 ms without a free slot they go back to pending, where other servers can take
/// them.
#[tokio::test]
async fn tasks_leased_ahead_go_back_when_no_slot_frees_up() {
    let env = Env::new().await;
    let quick: Vec<Task> = (0..3_000)
        .map(|_| Task::builder("quick").queue("turns").build().unwrap())
        .collect();
    for chunk in quick.chunks(1000) {
        env.client.enqueue_batch(chunk.to_vec()).await.unwrap();
    }
    let slow: Vec<Task> = (0..40)
        .map(|_| Task::builder("slow").queue("turns").build().unwrap())
        .collect();
    env.client.enqueue_batch(slow).await.unwrap();
    let started = Arc::new(AtomicU32::new(0));
    let s = started.clone();
    let mut mux = mux_with("slow", move |_| {
        let s = s.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        }
    });
    mux.handle("quick", FnHandler(|_| async { Ok(()) }));
    let srv = start(
        env.server()
            .queues(&["turns"])
            .concurrency(1)
            .fetchers(1)
            .prefetch(100)
            .shutdown_timeout(Duration::from_millis(100)),
        mux,
    )
    .await;
    let s = started.clone();
    assert!(wait_for(LONG, || async { s.load(Ordering::SeqCst) == 1 }).await);
    let insp = env.inspector.clone();
    assert!(
        wait_for(Duration::from_secs(2), || async {
            let st = insp.queue_stats("turns").await.unwrap();
            st.active == 1 && st.pending == 39
        })
        .await,
        "the slow tasks held ahead went back: {:?}",
        env.inspector.queue_stats("turns").await.unwrap()
    );
    srv.shutdown().await;
    let st = env.inspector.queue_stats("turns").await.unwrap();
    assert_eq!((st.active, st.pending, st.processed_total), (0, 40, 3_000));
}

/// An idle server of one queue blocks with a fetch pipelined behind its wait, so a new task
/// reaches it in one round trip. Stopping it ends that wait at once (`CLIENT UNBLOCK`) and
/// gives back whatever the fetch behind it leased: a task enqueued as the server stops ends up
/// run or pending, never leased to a server that has gone.
#[tokio::test]
async fn stopping_an_idle_server_is_prompt_and_leaves_nothing_leased() {
    let env = Env::new().await;
    let mut enqueued = 0u64;
    for round in 0..10u64 {
        let (mux, _runs) = counting_mux("idle");
        let srv = start(env.server().queues(&["idle"]).concurrency(4), mux).await;
        // Idle: blocked in the pipelined wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let client = env.client.clone();
        let enq = tokio::spawn(async move {
            let task = Task::builder("idle").queue("idle").build().unwrap();
            client.enqueue(task).await.unwrap()
        });
        // Vary where the stop falls against the enqueue.
        tokio::time::sleep(Duration::from_micros(300 * round)).await;
        let t = Instant::now();
        srv.shutdown().await;
        let took = t.elapsed();
        enq.await.unwrap();
        enqueued += 1;
        assert!(
            took < Duration::from_millis(900),
            "round {round}: stopping an idle server took {took:?} (its wait ran out instead of ending)"
        );
        let st = env.inspector.queue_stats("idle").await.unwrap();
        assert_eq!(
            st.active, 0,
            "round {round}: a task stays leased to the stopped server"
        );
        assert_eq!(st.pending + st.processed_total, enqueued, "round {round}");
    }
}

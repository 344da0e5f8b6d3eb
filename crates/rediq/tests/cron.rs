//! Periodic tasks: two servers racing on one seconds-field entry fire every tick exactly once;
//! registering again updates instead of duplicating; pause, resume and remove.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rediq::Task;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_fire_each_tick_exactly_once() {
    let env = Env::new().await;
    let per_second = fire_every_second(&env, Duration::from_millis(11_500), 0).await;
    assert!(
        per_second.len() >= 10,
        "only {} ticks fired",
        per_second.len()
    );
    let last = *per_second.keys().last().unwrap();
    let entry = env.inspector.cron_entries().await.unwrap().remove(0);
    assert_eq!(entry.last_run_ms.unwrap() / 1000, last);
}

/// The documented "register at every start-up" pattern, run in a tight loop by four producers
/// while two schedulers fire: registration is one atomic step, so it never re-arms a tick that
/// fired meanwhile (it used to read the next tick and write it back in two steps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_while_ticks_fire_never_fires_a_tick_twice() {
    let env = Env::new().await;
    let per_second = fire_every_second(&env, Duration::from_millis(8_500), 4).await;
    assert!(
        per_second.len() >= 7,
        "only {} ticks fired",
        per_second.len()
    );
}

/// Registers a `* * * * * *` entry, runs two servers (and `registrars` loops registering the
/// same entry again and again) for `run`, and returns the firings per second, after checking
/// that no second fired twice and none in between was lost.
async fn fire_every_second(env: &Env, run: Duration, registrars: usize) -> BTreeMap<u64, u32> {
    let fired: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let mk = |fired: Arc<Mutex<Vec<u64>>>| {
        mux_with("tick", move |t: Task| {
            let f = fired.clone();
            async move {
                f.lock().unwrap().push(t.created_at_ms().unwrap());
                Ok(())
            }
        })
    };
    let builder = || {
        env.server()
            .queues(&["cron"])
            .scheduler_interval(Duration::from_millis(100))
    };
    let a = start(builder(), mk(fired.clone())).await;
    let b = start(builder(), mk(fired.clone())).await;
    let entry = || {
        Task::builder("tick")
            .queue("cron")
            .cron("* * * * * *")
            .build()
            .unwrap()
    };
    let id = env.client.enqueue(entry()).await.unwrap();
    assert_eq!(id, "tick * * * * * *");
    let until = tokio::time::Instant::now() + run;
    let loops: Vec<_> = (0..registrars)
        .map(|_| {
            let client = env.client.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while tokio::time::Instant::now() < until {
                    client.enqueue(entry()).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep_until(until).await;
    for l in loops {
        assert!(l.await.unwrap() > 10, "the registration loop hardly ran");
    }
    // Stop the schedulers first, then let the last tasks finish.
    assert!(env.inspector.pause_cron(&id).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.shutdown().await;
    b.shutdown().await;

    let fired = fired.lock().unwrap().clone();
    let mut per_second: BTreeMap<u64, u32> = BTreeMap::new();
    for ms in &fired {
        *per_second.entry(ms / 1000).or_default() += 1;
    }
    assert!(
        per_second.values().all(|&n| n == 1),
        "a tick fired twice: {per_second:?}"
    );
    let (first, last) = (
        *per_second.keys().next().unwrap(),
        *per_second.keys().last().unwrap(),
    );
    assert_eq!(
        per_second.len() as u64,
        last - first + 1,
        "a tick was lost: {per_second:?}"
    );
    per_second
}

#[tokio::test]
async fn entries_update_pause_resume_and_remove() {
    let env = Env::new().await;
    let t = || Task::builder("report").queue("rep").cron("0 2 * * *");
    let id = env.client.enqueue(t().build().unwrap()).await.unwrap();
    let again = env.client.enqueue(t().build().unwrap()).await.unwrap();
    assert_eq!(id, again);
    // Same unique key, new schedule and priority: the entry is updated, not doubled.
    let keyed = |expr: &str, prio: i32| {
        Task::builder("report")
            .queue("rep")
            .unique_key("nightly")
            .priority(prio)
            .cron(expr)
            .build()
            .unwrap()
    };
    assert_eq!(
        env.client.enqueue(keyed("0 3 * * *", 10)).await.unwrap(),
        "nightly"
    );
    assert_eq!(
        env.client.enqueue(keyed("0 4 * * *", 5)).await.unwrap(),
        "nightly"
    );
    let entries = env.inspector.cron_entries().await.unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let nightly = entries.iter().find(|e| e.id == "nightly").unwrap();
    assert_eq!(
        (nightly.expr.as_str(), nightly.task.options.priority),
        ("0 4 * * *", 5)
    );
    let next = nightly.next_run_ms.unwrap();
    assert_eq!(next % 3_600_000, 0, "on the hour");
    assert!(nightly.last_run_ms.is_none() && !nightly.paused);
    assert_eq!(nightly.time_zone, "UTC");

    assert!(env.inspector.pause_cron("nightly").await.unwrap());
    let e = env.inspector.cron_entries().await.unwrap();
    let p = e.iter().find(|e| e.id == "nightly").unwrap();
    assert!(p.paused && p.next_run_ms.is_none());
    // Registering again keeps the pause.
    env.client.enqueue(keyed("0 4 * * *", 5)).await.unwrap();
    let e = env.inspector.cron_entries().await.unwrap();
    assert!(e.iter().find(|e| e.id == "nightly").unwrap().paused);
    assert!(env.inspector.resume_cron("nightly").await.unwrap());
    let e = env.inspector.cron_entries().await.unwrap();
    assert_eq!(
        e.iter().find(|e| e.id == "nightly").unwrap().next_run_ms,
        Some(next)
    );

    assert!(env.inspector.remove_cron("nightly").await.unwrap());
    assert!(!env.inspector.remove_cron("nightly").await.unwrap());
    assert!(!env.inspector.pause_cron("nope").await.unwrap());
    assert_eq!(env.inspector.cron_entries().await.unwrap().len(), 1);
    // A time zone is shown apart from the schedule: 02:00 in Shanghai is 18:00 UTC.
    env.client
        .enqueue(keyed("CRON_TZ=Asia/Shanghai 0 2 * * *", 5))
        .await
        .unwrap();
    let e = env.inspector.cron_entries().await.unwrap();
    let tz = e.iter().find(|e| e.id == "nightly").unwrap();
    assert_eq!(
        (tz.time_zone.as_str(), tz.schedule()),
        ("Asia/Shanghai", "0 2 * * *")
    );
    assert_eq!(tz.next_run_ms.unwrap() % 86_400_000, 18 * 3_600_000);
    assert!(env.inspector.remove_cron("nightly").await.unwrap());
    // An expression that can never fire is refused, not stored.
    let never = Task::builder("x").queue("rep").cron("0 0 30 2 *").build();
    match never {
        Err(e) => assert!(e.to_string().contains("cron"), "{e}"),
        Ok(t) => {
            let e = env.client.enqueue(t).await.unwrap_err().to_string();
            assert!(e.contains("never fire"), "{e}");
        }
    }
    // Registering enqueued nothing.
    assert_eq!(env.inspector.queue_stats("rep").await.unwrap().pending, 0);
}

#[tokio::test]
async fn paused_entry_fires_nothing() {
    let env = Env::new().await;
    let (mux, runs) = counting_mux("t");
    let srv = start(
        env.server()
            .queues(&["pc"])
            .scheduler_interval(Duration::from_millis(100)),
        mux,
    )
    .await;
    let id = env
        .client
        .enqueue(
            Task::builder("t")
                .queue("pc")
                .cron("@every 1s")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || async {
            *runs.lock().unwrap() >= 1
        })
        .await
    );
    env.inspector.pause_cron(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_pause = *runs.lock().unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(*runs.lock().unwrap(), at_pause, "fired while paused");
    env.inspector.resume_cron(&id).await.unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || async {
            *runs.lock().unwrap() > at_pause
        })
        .await
    );
    srv.shutdown().await;
}

/// A tick whose task cannot be written (the list of its priority band holds garbage) used to be used
/// up all the same: the script moved the next tick on and recorded the firing before the write
/// that failed. Now the tick stays due and fires once the key is repaired.
#[tokio::test]
async fn a_tick_whose_task_cannot_be_written_stays_due() {
    let env = Env::new().await;
    env.set_raw("rediq:{cf}:pending:50", "garbage").await;
    let (mux, runs) = counting_mux("t");
    let srv = start(
        env.server()
            .queues(&["cf"])
            .scheduler_interval(Duration::from_millis(100)),
        mux,
    )
    .await;
    env.client
        .enqueue(
            Task::builder("t")
                .queue("cf")
                .cron("@every 1s")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let first = env.inspector.cron_entries().await.unwrap()[0].next_run_ms;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let e = env.inspector.cron_entries().await.unwrap().remove(0);
    assert_eq!(
        e.last_run_ms, None,
        "a firing was recorded without its task"
    );
    assert_eq!(e.next_run_ms, first, "the tick moved on without its task");
    assert_eq!(*runs.lock().unwrap(), 0);
    let _: () = redis::cmd("DEL")
        .arg("rediq:{cf}:pending:50")
        .query_async(&mut env.raw().await)
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || async {
            *runs.lock().unwrap() >= 1
        })
        .await,
        "the tick never fired after the repair"
    );
    srv.shutdown().await;
}

/// Found in review: the scheduler stopped a queue's round at the first entry whose firing
/// failed, and that entry (its tick staying due) sorted first every time: no other entry of the
/// queue fired again.
#[tokio::test]
async fn an_entry_that_cannot_fire_does_not_stop_the_others() {
    let env = Env::new().await;
    let _: () = redis::cmd("HSET")
        .arg("rediq:{cq}:stat:enqueued")
        .arg("bad")
        .arg("99999999999999999999")
        .query_async(&mut env.raw().await)
        .await
        .unwrap();
    let (mux, runs) = counting_mux("good");
    let srv = start(
        env.server()
            .queues(&["cq"])
            .scheduler_interval(Duration::from_millis(100)),
        mux,
    )
    .await;
    for t in ["bad", "good"] {
        env.client
            .enqueue(
                Task::builder(t)
                    .queue("cq")
                    .cron("@every 1s")
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(5), || async {
            *runs.lock().unwrap() >= 2
        })
        .await,
        "the healthy entry stopped firing"
    );
    let bad = env.inspector.cron_entries().await.unwrap();
    let bad = bad.iter().find(|e| e.id.starts_with("bad")).unwrap();
    assert_eq!(
        bad.last_run_ms, None,
        "the broken entry fired without its task"
    );
    srv.shutdown().await;
}

//! Dependencies under faults, against real Redis: an outbox entry that cannot be delivered is set
//! aside without holding up the others, and redundant deliveries by several servers leave no
//! stale records behind.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rediq::{Task, TaskState};
use support::*;

/// Everything logged by this test binary, as text (one global subscriber per process: each
/// test filters by its own queue names).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let writer = move || LogWriter(buf);
        tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .with_env_filter("rediq=debug")
            .init();
        buf
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log lines at `level` that contain every one of `words`.
fn lines(level: &str, words: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(level) && words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

/// Counts runs per task id.
#[derive(Default, Clone)]
struct Runs(Arc<Mutex<Vec<String>>>, Arc<AtomicU64>);

impl Runs {
    fn mux(&self) -> rediq::processor::Mux {
        let runs = self.clone();
        mux_with("node", move |t: Task| {
            let runs = runs.clone();
            async move {
                runs.0.lock().unwrap().push(t.id.clone());
                runs.1.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
    }
    fn of(&self, id: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|r| *r == id).count()
    }
    fn total(&self) -> u64 {
        self.1.load(Ordering::SeqCst)
    }
}

fn node(queue: &str) -> rediq::TaskBuilder {
    Task::builder("node").queue(queue)
}

async fn put(env: &Env, task: rediq::TaskBuilder) -> String {
    env.client.enqueue(task.build().unwrap()).await.unwrap()
}

#[tokio::test]
async fn an_undeliverable_outbox_entry_is_set_aside_and_the_rest_flow() {
    logs();
    let env = Env::new().await;
    let runs = Runs::default();
    // x1 has two dependents: one in a queue whose dependency keys are about to be broken, one
    // in a healthy queue; x2, behind it in the outbox, has a third in another healthy queue.
    let x1 = put(&env, node("fx")).await;
    let x2 = put(&env, node("fx")).await;
    let bad = put(&env, node("fbad").depends_on(&[&x1])).await;
    let ok1 = put(&env, node("fok1").depends_on(&[&x1])).await;
    let ok2 = put(&env, node("fok2").depends_on(&[&x2])).await;
    // Garbage in place of the broken queue's needs hash (the real one kept aside, to be put
    // back later: "the garbage is removed").
    let mut c = env.raw().await;
    let needs = "rediq:{fbad}:deps:needs";
    let kept = "rediq:{fbad}:deps:needs:kept";
    let _: () = redis::cmd("RENAME")
        .arg(needs)
        .arg(kept)
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(needs)
        .arg("garbage")
        .query_async(&mut c)
        .await
        .unwrap();

    let srv = start(
        env.server().queues(&["fx", "fbad", "fok1", "fok2"]),
        runs.mux(),
    )
    .await;
    let healthy = wait_for(Duration::from_secs(5), || async {
        runs.of(&ok1) == 1 && runs.of(&ok2) == 1
    })
    .await;
    // Several retries of the bad entry happen meanwhile (backoff from 1 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let warned = lines("WARN", &["queue=fx", "set aside"]);
    let noisy = lines("WARN", &["queue=fx"]);
    assert_eq!(runs.of(&bad), 0, "still waiting behind the garbage");
    // The garbage goes; the entry set aside is delivered on its next retry.
    let _: () = redis::cmd("RENAME")
        .arg(kept)
        .arg(needs)
        .query_async(&mut c)
        .await
        .unwrap();
    let delivered = wait_for(Duration::from_secs(10), || async { runs.of(&bad) == 1 }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    srv.shutdown().await;

    assert!(healthy, "both healthy dependents ran promptly");
    assert_eq!(warned.len(), 1, "reported once: {noisy:#?}");
    assert_eq!(noisy.len(), 1, "and nothing else warned: {noisy:#?}");
    assert!(
        warned[0].contains(&x1) && warned[0].contains("rediq:{fbad}:deps:needs holds a string"),
        "names the dependency and the reason: {}",
        warned[0]
    );
    assert!(delivered, "delivered once the garbage was gone");
    assert_eq!(runs.total(), 5, "everything ran exactly once");
    for id in [&x1, &x2, &bad, &ok1, &ok2] {
        assert_eq!(runs.of(id), 1, "{id}");
    }
    let left: (u64, u64) = redis::pipe()
        .llen("rediq:{fx}:deps:outbox")
        .zcard("rediq:{fx}:deps:aside")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, (0, 0), "nothing left in the outbox or set aside");
}

/// Two servers deliver the same outbox entries side by side; every dependent was written before
/// its news, so no early fact may be left behind (nobody would ever read it).
#[tokio::test]
async fn redundant_deliveries_leave_no_early_facts() {
    let env = Env::new().await;
    let runs = Runs::default();
    let n = 300;
    // Written while the dependencies' queue is paused: every dependent waits for its news.
    env.client.pause_queue("ea").await.unwrap();
    let mut all = Vec::new();
    for i in 0..n {
        let x = put(&env, node("ea")).await;
        // Half of them have a second dependency in the dependents' own queue.
        let d = if i % 2 == 0 {
            put(&env, node("eb").depends_on(&[&x])).await
        } else {
            let y = put(&env, node("ea")).await;
            all.push(y.clone());
            put(&env, node("eb").depends_on(&[&x, &y])).await
        };
        all.extend([x, d]);
    }
    env.client.resume_queue("ea").await.unwrap();
    let builder = || env.server().queues(&["ea", "eb"]).concurrency(8);
    let s1 = start(builder(), runs.mux()).await;
    let s2 = start(builder(), runs.mux()).await;
    let done = wait_for(Duration::from_secs(60), || async {
        runs.total() == all.len() as u64
    })
    .await;
    // Let the resolvers finish any delivery in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s1.shutdown().await;
    s2.shutdown().await;
    assert!(done, "ran {} of {}", runs.total(), all.len());
    for id in &all {
        assert_eq!(runs.of(id), 1, "{id} ran once");
    }
    let mut c = env.raw().await;
    let early: (u64, u64) = redis::pipe()
        .zcard("rediq:{ea}:deps:early")
        .zcard("rediq:{eb}:deps:early")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(early, (0, 0), "early facts left behind");
}

/// A dependency completes (and another fails) while the key its dependent would be written to
/// holds garbage: the dependents stay waiting, nothing is lost, and once the garbage is gone the
/// one runs exactly once and the other is dead-lettered exactly once.
#[tokio::test]
async fn news_for_a_queue_with_a_corrupt_key_waits_and_lands_once_after_repair() {
    logs();
    let env = Env::new().await;
    let runs = Runs::default();
    let failing = mux_with("node", |t: Task| async move {
        if t.payload == b"fail" {
            Err(rediq::Error::non_retryable("planned"))
        } else {
            Ok(())
        }
    });
    let x = put(&env, node("cx")).await;
    let y = put(&env, node("cx").payload_bytes(b"fail".to_vec())).await;
    let ran = put(&env, node("cp").depends_on(&[&x])).await;
    let died = put(&env, node("cd").depends_on(&[&y])).await;
    let mut c = env.raw().await;
    for key in ["rediq:{cp}:pending:50", "rediq:{cd}:dead"] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("garbage")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    // The dependencies' queue is served by one server, the dependents' by another.
    let deps_srv = start(env.server().queues(&["cx"]), failing).await;
    let srv = start(env.server().queues(&["cp", "cd"]), runs.mux()).await;
    let set_aside = wait_for(Duration::from_secs(5), || async {
        let n: u64 = redis::cmd("ZCARD")
            .arg("rediq:{cx}:deps:aside")
            .query_async(&mut env.raw().await)
            .await
            .unwrap();
        n == 2
    })
    .await;
    let waiting: (u64, u64) = redis::pipe()
        .hlen("rediq:{cp}:waiting")
        .hlen("rediq:{cd}:waiting")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg("rediq:{cp}:pending:50")
        .arg("rediq:{cd}:dead")
        .query_async(&mut c)
        .await
        .unwrap();
    let landed = wait_for(Duration::from_secs(10), || async {
        let dead = env.inspector.queue_stats("cd").await.unwrap().dead;
        runs.of(&ran) == 1 && dead == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.shutdown().await;
    deps_srv.shutdown().await;

    assert!(set_aside, "both entries set aside");
    assert_eq!(waiting, (1, 1), "both dependents still waiting, not lost");
    assert!(landed, "delivered once the garbage was gone");
    assert_eq!(runs.of(&ran), 1, "ran once");
    assert_eq!(runs.of(&died), 0, "never ran");
    let dead = env.inspector.list("cd", TaskState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, died);
    let warned = lines("WARN", &["queue=cx", "set aside"]);
    assert!(
        warned.iter().any(|l| l.contains("rediq:{cp}:pending:50"))
            && warned.iter().any(|l| l.contains("rediq:{cd}:dead")),
        "each reason names its key: {warned:#?}"
    );
}

//! The idle fetcher's pipelined wait (`Broker::wait_then_fetch`) against a real redis-server:
//! the wake and the fetch in one round trip, `CLIENT UNBLOCK` at shutdown, and a fetch Redis
//! cannot run failing alone.

use std::time::{Duration, Instant};

use super::test_util::plain;
use super::*;
use crate::testing::RedisServer;

const Q: &str = "idle";
const S: &str = "host:1:idle";
const LEASE: Duration = Duration::from_secs(30);

/// The wait, spawned, with how long it took.
fn spawn_wait(
    b: &Broker,
    mut conn: BlockingConnection,
) -> tokio::task::JoinHandle<(Waited, Duration)> {
    let b = b.clone();
    tokio::spawn(async move {
        let t = Instant::now();
        let w = b
            .wait_then_fetch(&mut conn, Q, S, 10, LEASE, Duration::from_secs(4))
            .await
            .unwrap();
        (w, t.elapsed())
    })
}

#[tokio::test]
async fn a_task_enqueued_during_the_wait_is_leased_by_the_same_call() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    assert!(b.fetch(Q, S, 10, LEASE).await.unwrap().is_none());
    let waiting = spawn_wait(&b, b.blocking_connection(&[Q.to_string()]).await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = plain(&b, Q).await;
    let (w, took) = waiting.await.unwrap();
    assert!(w.wait_error.is_none(), "{w:?}");
    match w.fetched {
        Some(Some(f)) => {
            assert_eq!(f.records.len(), 1);
            assert_eq!(record::raw_id(&f.records[0]), &id[..]);
        }
        other => panic!("expected the task, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(2),
        "the enqueue did not end the wait: {took:?}"
    );
    assert_eq!(b.held(Q, S).await.unwrap().len(), 1, "leased to the server");
}

#[tokio::test]
async fn unblock_ends_the_wait_at_once_and_the_fetch_behind_it_runs() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    // The server's plain fetch came first (it loads the script).
    assert!(b.fetch(Q, S, 10, LEASE).await.unwrap().is_none());
    let mut conn = b.blocking_connection(&[Q.to_string()]).await.unwrap();
    let id = Broker::client_id(&mut conn).await.unwrap();
    let node = conn.node.clone();
    let waiting = spawn_wait(&b, conn);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        b.unblock(id, node.as_ref()).await.unwrap(),
        "no wait to end"
    );
    let (w, took) = waiting.await.unwrap();
    assert!(
        w.wait_error.is_none() && matches!(w.fetched, Some(None)),
        "{w:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "the wait ran to its timeout: {took:?}"
    );
}

#[tokio::test]
async fn a_fetch_redis_cannot_run_fails_alone_and_moves_nothing() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let id = plain(&b, Q).await; // sets the wake marker: the wait ends at once
    let mut c = b.conn.clone();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut conn = b.blocking_connection(&[Q.to_string()]).await.unwrap();
    let w = b
        .wait_then_fetch(&mut conn, Q, S, 10, LEASE, Duration::from_secs(4))
        .await
        .unwrap();
    assert!(w.wait_error.is_none() && w.fetched.is_none(), "{w:?}");
    assert!(b.held(Q, S).await.unwrap().is_empty(), "nothing leased");
    // A plain fetch loads the script again and leases the task.
    let f = b.fetch(Q, S, 10, LEASE).await.unwrap().unwrap();
    assert_eq!(record::raw_id(&f.records[0]), &id[..]);
}

/// A wait that fails (a wake marker of the wrong type) does not lose the fetch behind it: Redis
/// runs it all the same, and the tasks it leased come back beside the error.
#[tokio::test]
async fn a_failed_wait_still_returns_the_tasks_its_fetch_leased() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let id = plain(&b, Q).await;
    assert!(b.fetch("other", S, 1, LEASE).await.unwrap().is_none()); // loads the script
    let mut c = b.conn.clone();
    let wake = QueueKeys::new(Q).wake.clone();
    let _: () = c.del(&wake).await.unwrap();
    let _: () = c.set(&wake, "garbage").await.unwrap();
    let mut conn = b.blocking_connection(&[Q.to_string()]).await.unwrap();
    let w = b
        .wait_then_fetch(&mut conn, Q, S, 10, LEASE, Duration::from_secs(4))
        .await
        .unwrap();
    assert!(
        w.wait_error.is_some(),
        "the wait on a string marker succeeded"
    );
    match w.fetched {
        Some(Some(f)) => assert_eq!(record::raw_id(&f.records[0]), &id[..]),
        other => panic!("the fetch's tasks were lost: {other:?}"),
    }
}

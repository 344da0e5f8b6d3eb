//! Groups (groups.lua, groups.rs) against a real redis-server, at the broker's level: what a
//! crash leaves behind is repaired by the same scripts (a lapsed lease's tasks go back to the
//! head of their group and its running count drops, so a group at its limit runs again), and a
//! corrupt group record refuses with `Error::Corrupt` before anything moves.

use std::time::Duration;

use redis::AsyncCommands;

use super::*;
use crate::testing::RedisServer;
use crate::{Error, Task};

const Q: &str = "groups";
const S: &str = "host:1:groups";
const HEIR: &str = "host:2:heir";

/// A concurrency limit of `n`, no rate limit.
fn at_most(n: u32) -> QueueLimits {
    QueueLimits {
        concurrency: Some(n),
        rate: None,
    }
}

fn task(group: &str) -> (NewTask, Vec<u8>) {
    let t = Task::builder("g").queue(Q).group(group).build().unwrap();
    let id = record::id_bytes(&t.id).unwrap().to_vec();
    let new = NewTask {
        record: record::encode(&t).unwrap(),
        task_type: "g".into(),
        delay_ms: 0,
        unique: None,
    };
    (new, id)
}

/// Leases up to `n` tasks of the queue for `server` (the fetch must answer).
async fn take(b: &Broker, server: &str, n: usize, lease: Duration) -> Fetched {
    b.fetch(Q, server, n, lease).await.unwrap().unwrap()
}

/// The ids of the tasks a fetch leased, in order.
fn leased_ids(f: &Fetched) -> Vec<Vec<u8>> {
    f.records
        .iter()
        .map(|r| record::raw_id(r).to_vec())
        .collect()
}

async fn fill(b: &Broker, group: &str, n: usize) -> Vec<Vec<u8>> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (t, id) = task(group);
        b.enqueue(Q, &[t], EnqueueMode::Each).await.unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn a_lapsed_lease_gives_group_tasks_back_to_the_head_and_frees_the_groups_slots() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let k = QueueKeys::new(Q);
    b.set_group_rule(Q, &at_most(2)).await.unwrap();
    let ids = fill(&b, "acme", 5).await;
    // A server leases two (the group's limit) and dies: its lease lapses in 200 ms.
    let f = take(&b, S, 10, Duration::from_millis(200)).await;
    let got: Vec<Vec<u8>> = leased_ids(&f);
    assert_eq!(got, ids[..2].to_vec(), "the limit holds: two, oldest first");
    let mut c = b.conn.clone();
    let run: Option<u64> = c.hget(&k.groups[5], "acme").await.unwrap();
    assert_eq!(run, Some(2));
    // Nothing more for another server while the two are leased: the group is held.
    let held = take(&b, HEIR, 10, Duration::from_secs(60)).await;
    assert!(held.records.is_empty() && held.held_for.is_some());
    let full: bool = c.sismember(&k.groups[4], "acme").await.unwrap();
    assert!(full, "held at its limit");
    // The recoverer's call, once the lease lapsed: back to the head, counts down, group runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back: Vec<Requeue> = f
        .records
        .iter()
        .map(|r| (record::raw_id(r).to_vec(), f.token, None))
        .collect();
    assert_eq!(b.requeue(Q, S, &back, true).await.unwrap(), 2);
    let run: Option<u64> = c.hget(&k.groups[5], "acme").await.unwrap();
    assert_eq!(run, None, "no task of the group runs");
    let full: bool = c.sismember(&k.groups[4], "acme").await.unwrap();
    assert!(!full);
    let again = take(&b, HEIR, 10, Duration::from_secs(60)).await;
    let got: Vec<Vec<u8>> = leased_ids(&again);
    assert_eq!(got, ids[..2].to_vec(), "the same two, first again");
    // Acknowledged: the count drops and the last three run.
    b.complete(Q, HEIR, &test_util::acks(&again), None, 1)
        .await
        .unwrap();
    let last = take(&b, HEIR, 10, Duration::from_secs(60)).await;
    assert_eq!(last.records.len(), 2);
    b.complete(Q, HEIR, &test_util::acks(&last), None, 2)
        .await
        .unwrap();
    let last = take(&b, HEIR, 10, Duration::from_secs(60)).await;
    assert_eq!(last.records.len(), 1);
    b.complete(Q, HEIR, &test_util::acks(&last), None, 3)
        .await
        .unwrap();
    // Everything of the group is gone: no state is left behind.
    for key in &k.groups[..6] {
        let n: bool = c.exists(key).await.unwrap();
        assert!(!n, "{key} is empty");
    }
}

#[tokio::test]
async fn a_corrupt_group_record_refuses_before_anything_moves() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let k = QueueKeys::new(Q);
    fill(&b, "acme", 2).await;
    let mut c = b.conn.clone();
    let _: () = c.hset(&k.groups[1], "acme", "x y z").await.unwrap();
    let (t, _) = task("acme");
    match b.enqueue(Q, &[t], EnqueueMode::Each).await {
        Err(Error::Corrupt { key, reason }) => {
            assert_eq!(key, k.groups[1]);
            assert!(reason.contains("acme"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    match b.fetch(Q, S, 10, Duration::from_secs(60)).await {
        Err(Error::Corrupt { key, .. }) => assert_eq!(key, k.groups[1]),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let n: u64 = c.hlen(&k.groups[0]).await.unwrap();
    assert_eq!(n, 2, "nothing moved");
    let leased: bool = c.exists(k.active(S)).await.unwrap();
    assert!(!leased);
    // Repaired by hand, the same calls work.
    let _: () = c.hset(&k.groups[1], "acme", "0 1 2").await.unwrap();
    let f = take(&b, S, 10, Duration::from_secs(60)).await;
    assert_eq!(f.records.len(), 2);
    // A running count that is no integer: the ack refuses and the tasks stay leased.
    let _: () = c.hset(&k.groups[5], "acme", "many").await.unwrap();
    match b.complete(Q, S, &test_util::acks(&f), None, 4).await {
        Err(Error::Corrupt { key, .. }) => assert_eq!(key, k.groups[5]),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let n: u64 = c.hlen(k.active(S)).await.unwrap();
    assert_eq!(n, 2, "still leased");
}

#[tokio::test]
async fn the_janitor_drops_group_buckets_once_they_are_full_again() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let k = QueueKeys::new(Q);
    b.set_group_rule(
        Q,
        &QueueLimits {
            concurrency: None,
            rate: Some(crate::RateLimit {
                count: 50,
                period: Duration::from_millis(300),
            }),
        },
    )
    .await
    .unwrap();
    fill(&b, "old", 1).await;
    let f = take(&b, S, 10, Duration::from_secs(60)).await;
    assert_eq!(f.records.len(), 1);
    let mut c = b.conn.clone();
    let v: Option<String> = c.hget(&k.groups[7], "old").await.unwrap();
    assert!(v.is_some_and(|v| v.ends_with("|300")), "tokens|ms|period");
    assert_eq!(
        b.prune_group_buckets(Q).await.unwrap(),
        0,
        "still refilling"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    fill(&b, "new", 1).await;
    let f = take(&b, S, 10, Duration::from_secs(60)).await;
    assert_eq!(f.records.len(), 1);
    assert_eq!(
        b.prune_group_buckets(Q).await.unwrap(),
        1,
        "a period untouched: full"
    );
    let left: Vec<String> = c.hkeys(&k.groups[7]).await.unwrap();
    assert_eq!(left, vec!["new".to_string()]);
}

#[tokio::test]
async fn a_limit_change_lets_the_groups_held_under_the_old_one_run_at_once() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let lease = Duration::from_secs(60);
    // One start an hour: the second fetch holds the group for about an hour.
    b.set_group_rule(
        Q,
        &QueueLimits {
            concurrency: None,
            rate: Some(crate::RateLimit {
                count: 1,
                period: Duration::from_secs(3600),
            }),
        },
    )
    .await
    .unwrap();
    fill(&b, "slow", 3).await;
    assert_eq!(take(&b, S, 10, lease).await.records.len(), 1);
    let held = take(&b, S, 10, lease).await;
    assert!(held.records.is_empty() && held.held_for.is_some());
    let info = b.groups(Q, 10).await.unwrap();
    assert!(info[0].held_until_ms.is_some(), "{info:?}");
    // The rate goes: the group runs now, not in an hour.
    b.set_group_rule(Q, &QueueLimits::default()).await.unwrap();
    let f = take(&b, S, 10, lease).await;
    assert_eq!(f.records.len(), 2);
    // Likewise a group at its concurrency limit, freed by an override that raises it.
    b.set_group_rule(Q, &at_most(1)).await.unwrap();
    fill(&b, "busy", 3).await;
    assert_eq!(take(&b, HEIR, 10, lease).await.records.len(), 1);
    assert!(take(&b, HEIR, 10, lease).await.records.is_empty());
    assert!(b.groups(Q, 10).await.unwrap().iter().any(|g| g.at_limit));
    b.set_group_override(Q, "busy", Some(&at_most(5)))
        .await
        .unwrap();
    let f = take(&b, HEIR, 10, lease).await;
    assert_eq!(f.records.len(), 2, "the override freed the held group");
}

#[tokio::test]
async fn tasks_given_back_in_several_calls_stay_oldest_first_in_their_group() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    // More than one script call's worth (MAX_SCRIPT_BATCH), enqueued in one batch.
    let tasks: Vec<(NewTask, Vec<u8>)> = (0..2_500).map(|_| task("big")).collect();
    let ids: Vec<Vec<u8>> = tasks.iter().map(|(_, id)| id.clone()).collect();
    let news: Vec<NewTask> = tasks.into_iter().map(|(t, _)| t).collect();
    for chunk in news.chunks(1000) {
        b.enqueue(Q, chunk, EnqueueMode::Each).await.unwrap();
    }
    let f = take(&b, S, 2_500, Duration::from_secs(60)).await;
    assert_eq!(f.records.len(), 2_500);
    // Given back in an order that is no order (as HGETALL hands them to the recoverer).
    let mut back: Vec<Requeue> = f
        .records
        .iter()
        .map(|r| (record::raw_id(r).to_vec(), f.token, None))
        .collect();
    back.sort_by(|a, b| a.0[10..].cmp(&b.0[10..]));
    assert_eq!(b.requeue(Q, S, &back, false).await.unwrap(), 2_500);
    let again = take(&b, HEIR, 2_500, Duration::from_secs(60)).await;
    let got: Vec<Vec<u8>> = leased_ids(&again);
    assert_eq!(got, ids, "oldest first, across the three calls");
}

#[tokio::test]
async fn a_stale_band_does_not_hide_held_groups_from_an_idle_server() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let k = QueueKeys::new(Q);
    b.set_group_rule(Q, &at_most(1)).await.unwrap();
    fill(&b, "one", 2).await;
    assert_eq!(
        take(&b, S, 10, Duration::from_secs(60)).await.records.len(),
        1
    );
    // The second fetch finds the group at its limit and holds it.
    let held = take(&b, S, 10, Duration::from_secs(60)).await;
    assert!(held.records.is_empty());
    // A band listed though empty (a cancel leaves one): the answer still says "ask again soon".
    let mut c = b.conn.clone();
    let _: () = c.zadd(&k.bands, 50, 50).await.unwrap();
    let f = take(&b, S, 10, Duration::from_secs(60)).await;
    assert!(f.records.is_empty());
    assert_eq!(f.held_for, Some(Duration::from_millis(50)));
    let listed: bool = c
        .zscore::<_, _, Option<f64>>(&k.bands, 50)
        .await
        .unwrap()
        .is_some();
    assert!(!listed, "the empty band is no longer listed");
}

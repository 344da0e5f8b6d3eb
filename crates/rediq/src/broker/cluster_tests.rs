//! The broker's transitions on a real Redis Cluster (three masters, three replicas): every
//! script of a queue runs on the master of its hash tag's slot, whatever node the client was
//! given, and queues on different shards do not disturb each other.

use std::time::Duration;

use super::test_util::{acks, plain};
use super::*;
use crate::testing::RedisCluster;
use crate::Existing;

const S: &str = "host:1:cluster";
const LEASE: Duration = Duration::from_secs(30);

async fn cluster_broker(url: &str) -> Broker {
    Broker::open(&Target {
        url: url.into(),
        mode: Mode::Cluster,
        ..Target::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn enqueue_fetch_and_complete_run_on_every_shard() {
    let cluster = RedisCluster::start();
    let b = cluster_broker(&cluster.seed_url()).await;
    let queues = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    // redis-cli --cluster create gives each of the three masters a third of the slots.
    let mut thirds = std::collections::BTreeSet::new();
    let mut c = b.conn.clone();
    for q in queues {
        let slot: u64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(QueueKeys::new(q).wake.as_str())
            .query_async(&mut c)
            .await
            .unwrap();
        thirds.insert(slot * 3 / 16384);
    }
    assert!(
        thirds.len() >= 2,
        "the queues all fell on one shard: the test proves little"
    );
    for q in queues {
        let ids = [plain(&b, q).await, plain(&b, q).await];
        let f = b.fetch(q, S, 10, LEASE).await.unwrap().unwrap();
        assert_eq!(f.records.len(), 2, "queue {q}");
        assert!(b
            .complete(q, S, &acks(&f), None, 1)
            .await
            .unwrap()
            .is_empty());
        for id in &ids {
            assert_eq!(
                b.known(q, id).await.unwrap(),
                Some(Existing::Completed),
                "queue {q}"
            );
        }
        assert!(
            b.fetch(q, S, 10, LEASE).await.unwrap().is_none(),
            "queue {q}"
        );
    }
}

/// A detached broker (the heartbeat's, on its own thread) talks to the cluster too, not to the
/// seed node alone: it serves queues on every shard.
#[tokio::test]
async fn a_detached_broker_keeps_the_cluster_topology() {
    let cluster = RedisCluster::start();
    let b = cluster_broker(&cluster.seed_url()).await;
    let d = b.detached().await.unwrap();
    for q in ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"] {
        let id = plain(&d, q).await;
        let f = b.fetch(q, S, 10, LEASE).await.unwrap().unwrap();
        assert_eq!(record::raw_id(&f.records[0]), &id[..], "queue {q}");
        assert_eq!(d.held(q, S).await.unwrap().len(), 1, "queue {q}");
    }
}

/// Our slot function agrees with the cluster's `CLUSTER KEYSLOT`, hash tags included.
#[tokio::test]
async fn key_slot_agrees_with_the_cluster() {
    let cluster = RedisCluster::start();
    let b = cluster_broker(&cluster.seed_url()).await;
    let mut c = b.conn.clone();
    for key in [
        "plain",
        "rediq:{alpha}:wake",
        "{}empty-tag",
        "a{b}c{d}",
        "{unclosed",
        "日本語{キュー}",
        "",
    ] {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(conn::key_slot(key.as_bytes()), slot, "key {key:?}");
    }
}

//! The opt-in durability setting (`wait_for_replicas`): an enqueue returns `Ok` only once the
//! replicas asked for hold it, and otherwise an error that says so, with the task still on the
//! master (so enqueueing it again is safe and writes nothing twice).

mod support;

use std::time::Duration;

use rediq::testing::{RedisSentinel, RedisServer};
use rediq::{Client, Error, Inspector, Task};

#[tokio::test]
async fn an_enqueue_waits_for_its_replicas_and_says_when_they_do_not_confirm() {
    let mut ha = RedisSentinel::start();
    let client = Client::builder()
        .redis_url(ha.url())
        .sentinel_mode()
        .wait_for_replicas(1, Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let inspector = Inspector::from_client(&client);
    let t = Task::builder("t").queue("d").build().unwrap();
    client.enqueue(t).await.expect("the replica confirms");
    let batch: Vec<Task> = (0..5)
        .map(|_| Task::builder("t").queue("d").build().unwrap())
        .collect();
    client
        .enqueue_batch(batch)
        .await
        .expect("the replica confirms");

    ha.replica().stop();
    let t = Task::builder("t").queue("d").build().unwrap();
    let err = client.enqueue(t.clone()).await.unwrap_err();
    match &err {
        Error::NotReplicated {
            reached, wanted, ..
        } => assert_eq!((*reached, *wanted), (0, 1)),
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    assert!(
        err.to_string().contains("enqueue the same task again"),
        "{err}"
    );
    // Written on the master all the same, and written once when sent again.
    assert_eq!(inspector.queue_stats("d").await.unwrap().pending, 7);
    let again = client.enqueue_outcome(t).await;
    assert!(
        matches!(again, Err(Error::NotReplicated { .. })),
        "{again:?}"
    );
    assert_eq!(inspector.queue_stats("d").await.unwrap().pending, 7);
}

#[tokio::test]
async fn the_setting_is_validated_and_a_server_without_replicas_refuses_every_enqueue() {
    let redis = RedisServer::start();
    for (n, t) in [(0, Duration::from_millis(10)), (1, Duration::ZERO)] {
        let e = Client::builder()
            .redis_url(redis.url())
            .wait_for_replicas(n, t)
            .build()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("wait_for_replicas"), "{e}");
    }
    let client = Client::builder()
        .redis_url(redis.url())
        .wait_for_replicas(1, Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let e = client
        .enqueue(Task::builder("t").queue("d").build().unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only 0 of 1 replicas"), "{e}");
}

//! Helpers shared by the test modules of the crate (compiled for tests only).

use std::time::Duration;

use super::transitions::Fetched;
use super::{record, Ack, Broker, EnqueueMode, NewTask};
use crate::Task;

/// Enqueues a plain task of type `t` into `queue`; returns its id bytes.
pub(crate) async fn plain(b: &Broker, queue: &str) -> Vec<u8> {
    let t = Task::builder("t").queue(queue).build().unwrap();
    let new = NewTask {
        record: record::encode(&t).unwrap(),
        task_type: t.task_type.clone(),
        delay_ms: 0,
        unique: None,
    };
    b.enqueue(queue, &[new], EnqueueMode::Each).await.unwrap();
    record::id_bytes(&t.id).unwrap().to_vec()
}

/// An acknowledgement of every task of a fetch (no unique keys).
pub(crate) fn acks(f: &Fetched) -> Vec<Ack> {
    f.records
        .iter()
        .map(|r| Ack {
            id: record::raw_id(r).to_vec(),
            token: f.token,
            unique_key: None,
        })
        .collect()
}

/// Leases everything pending in `queue` for `server` and acknowledges it; no ack may be refused.
pub(crate) async fn complete_all(b: &Broker, queue: &str, server: &str) {
    while let Some(f) = b
        .fetch(queue, server, 1000, Duration::from_secs(30))
        .await
        .unwrap()
    {
        assert!(b
            .complete(queue, server, &acks(&f), None, rand::random())
            .await
            .unwrap()
            .is_empty());
    }
}

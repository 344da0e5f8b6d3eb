//! Helpers shared by the test modules of the crate (compiled for tests only).

use super::{record, Broker, EnqueueMode, NewTask};
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

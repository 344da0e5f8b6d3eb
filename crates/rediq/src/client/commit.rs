//! Group commit: single `enqueue` calls from many tokio tasks share script calls.
//!
//! Each call sends a [`Request`] to one background loop, which takes whatever calls are waiting
//! (up to a script's batch) and writes them with one script call per queue, then answers each
//! caller. A lone call goes out at once, with no timer: batching only happens when callers
//! already wait.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::broker::{Broker, EnqueueMode, NewTask, NotWritten, MAX_SCRIPT_BATCH};
use crate::{Error, Result};

/// Script calls of group-committed enqueues in flight at once. Two is the measured optimum
/// (docs/benchmark.md): one executes while the next batch gathers; more in flight only makes
/// the batches smaller, and each call has a fixed cost in Redis.
const ENQUEUE_PIPELINE: usize = 2;

/// Answers one enqueue call: `None` when written, else why not (a held unique key, a known id).
type Reply = oneshot::Sender<Result<Option<NotWritten>>>;

/// One waiting `enqueue` call: the task, prepared for its (physical) queue, and where to answer.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) queue: String,
    pub(super) task: NewTask,
    pub(super) reply: Reply,
}

/// One failed script call answers many callers; Redis errors clone, the rest keep their message.
fn share_error(e: &Error) -> Error {
    match e {
        Error::Redis(re) => Error::Redis(re.clone()),
        Error::Corrupt { key, reason } => Error::Corrupt {
            key: key.clone(),
            reason: reason.clone(),
        },
        Error::NotReplicated {
            queue,
            reached,
            wanted,
            timeout,
        } => Error::NotReplicated {
            queue: queue.clone(),
            reached: *reached,
            wanted: *wanted,
            timeout: *timeout,
        },
        other => Error::Serialization(other.to_string()),
    }
}

/// The group-commit loop: drains waiting enqueue calls into one script call per queue.
pub(super) async fn group_commit(broker: Broker, mut rx: mpsc::Receiver<Request>) {
    let inflight = Arc::new(Semaphore::new(ENQUEUE_PIPELINE));
    while let Some(first) = rx.recv().await {
        // Waiting for a free pipeline slot here lets the next batch grow meanwhile.
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_SCRIPT_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let broker = broker.clone();
        tokio::spawn(async move {
            // Usually one queue: a short list beats hashing every request's queue name.
            let mut by_queue: Vec<(String, Vec<NewTask>, Vec<Reply>)> = Vec::new();
            for Request { queue, task, reply } in batch {
                match by_queue.iter_mut().find(|(q, _, _)| *q == queue) {
                    Some((_, news, replies)) => {
                        news.push(task);
                        replies.push(reply);
                    }
                    None => by_queue.push((queue, vec![task], vec![reply])),
                }
            }
            // Concurrently: the partitions of a partitioned queue live on different shards.
            let calls = by_queue.into_iter().map(|(queue, news, replies)| {
                let broker = &broker;
                async move {
                    match broker.enqueue(&queue, &news, EnqueueMode::Each).await {
                        Ok(res) => {
                            for (reply, holder) in replies.into_iter().zip(res) {
                                let _ = reply.send(Ok(holder));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(share_error(&e)));
                            }
                        }
                    }
                }
            });
            futures::future::join_all(calls).await;
            drop(permit);
        });
    }
}

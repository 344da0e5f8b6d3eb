//! Enqueueing a task that depends on others (see `broker::deps` for the protocol).

use std::collections::HashSet;

use crate::broker::deps::{Answer, Dependent, Written};
use crate::broker::record::{self, id_text};
use crate::broker::NewTask;
use crate::{Enqueued, Error, Result, Task};

use super::{duplicate, Client};

impl Client {
    /// Registers a task with each of its dependencies, then writes it into `queue` (its
    /// partition; see `broker::deps` for the protocol).
    pub(super) async fn enqueue_dependent(
        &self,
        task: &Task,
        new: &NewTask,
        queue: &str,
    ) -> Result<Enqueued> {
        let broker = &self.inner.broker;
        let me = record::id_bytes(&task.id)?;
        let known = broker.queues().await?;
        let mut seen = HashSet::new();
        let mut open = Vec::new();
        let mut failed: Option<Vec<u8>> = None;
        // Before the first registration: news that reaches the dependent before it is written
        // is kept only with this mark (see `dep_begin.lua`).
        broker.dep_begin(queue, &me).await?;
        for d in task.options.depends_on.iter().flatten() {
            // Checked in prepare(): every dependency id parses.
            let raw = record::id_bytes(d)?;
            if !seen.insert(raw) {
                continue; // listed twice (perhaps in another case)
            }
            let order = broker
                .id_search_order(&search_order(&known, &task.queue, &raw), &raw)
                .await?;
            match broker.register_dependency(&order, &raw, &me, queue).await? {
                Answer::Done => {}
                Answer::Registered => open.push(raw.to_vec()),
                Answer::Failed => {
                    failed = Some(raw.to_vec());
                    break;
                }
                Answer::Unknown => {
                    // Best effort: a mark left behind only keeps news for a task that never
                    // comes, until the janitor drops it with the early facts.
                    if let Err(e) = broker.dep_abandon(queue, &me).await {
                        tracing::debug!(task = %task.id, error = %e, "could not drop the dependent's mark");
                    }
                    return Err(Error::UnknownDependency {
                        id: d.clone(),
                        task: task.id.clone(),
                    });
                }
            }
        }
        let dependent = Dependent {
            id: &me,
            record: &new.record,
            task_type: &task.task_type,
            delay_ms: new.delay_ms,
            unique: new.unique.as_ref().map(|(k, ttl)| (k.as_str(), *ttl)),
            open: &open,
        };
        // At most twice: a failure found by the script is written on the second call.
        for _ in 0..2 {
            let dead = match &failed {
                Some(dep) => {
                    let mut t = task.clone();
                    t.last_error = Some(format!("dependency {} failed", id_text(dep)));
                    t.last_failed_at = Some(crate::task::now_ms());
                    Some(record::encode(&t)?)
                }
                None => None,
            };
            match broker
                .dep_enqueue(queue, &dependent, dead.as_deref())
                .await?
            {
                Written::Ok => {
                    return Ok(Enqueued {
                        id: task.id.clone(),
                        existing: None,
                    })
                }
                Written::Known(state) => {
                    return Ok(Enqueued {
                        id: task.id.clone(),
                        existing: Some(state),
                    })
                }
                Written::Duplicate(holder) => return Err(duplicate(task, &holder)),
                Written::DependencyFailed(dep) => failed = Some(dep),
            }
        }
        Err(Error::Serialization(format!(
            "dep_enqueue.lua did not write task {}",
            task.id
        )))
    }
}

pub(super) fn has_dependencies(task: &Task) -> bool {
    task.options
        .depends_on
        .as_ref()
        .is_some_and(|d| !d.is_empty())
}

/// The (logical) queues to look for a dependency in: those whose name matches the hint in the
/// id first, then the dependent's own queue, then the rest.
fn search_order(known: &[String], own: &str, dep: &[u8]) -> Vec<String> {
    let hint = dep.get(14..16);
    let mut order: Vec<String> = known
        .iter()
        .filter(|q| hint == Some(&record::queue_hint(q)[..]))
        .cloned()
        .collect();
    for q in std::iter::once(own).chain(known.iter().map(String::as_str)) {
        if !order.iter().any(|o| o == q) {
            order.push(q.to_string());
        }
    }
    order
}

//! Finding tasks: by text in a payload or an error, or by id, in bounded steps with a cursor
//! (`find_tasks`); and everything known about one task (`task`).

use super::{validate_queue_name, Inspector};
use crate::broker::{logical, record, TaskState};
use crate::{Result, Task};

/// One step of [`Inspector::find_tasks`]: the matches among the records it examined, and where
/// the next step starts (`None` when the whole state has been searched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Matching tasks, in the order they were met.
    pub tasks: Vec<Task>,
    /// Pass it to the next call; `None`: done.
    pub cursor: Option<String>,
}

/// Most records one step of [`Inspector::find_tasks`] may examine.
pub const MAX_FIND_SCAN: usize = 10_000;

/// The server running a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The server's id (`host:pid:random`, as `Inspector::workers` lists it).
    pub server: String,
    /// The task's fencing token: a result sent under an older token is refused.
    pub token: u64,
    /// When the server's lease on the queue lapses unless its heartbeat extends it (Unix ms,
    /// Redis clock); after that another server re-delivers the task.
    pub expires_at_ms: Option<u64>,
}

/// Everything known about one task ([`Inspector::task`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDetails {
    /// The task, as stored (its queue is the queue's name, also on a partitioned queue).
    pub task: Task,
    /// Where it is now.
    pub state: TaskState,
    /// The server running it (state `Active`).
    pub lease: Option<Lease>,
    /// The dependencies it still waits for (state `Waiting`).
    pub waiting_for: Vec<String>,
    /// Tasks registered as waiting for this one: (id, queue).
    pub dependents: Vec<(String, String)>,
}

impl Inspector {
    /// One bounded step of a search for tasks of `queue` in `state` whose payload or last
    /// error contains `text`, or, when `text` is a task id, the task with that id. A step
    /// examines about `scan` records (1 ..= [`MAX_FIND_SCAN`]; Redis may return a few more
    /// for a sorted set) from `cursor` (`None` to start) and returns the matches among them
    /// with the cursor of the next step: a step may find nothing while later ones do, so go on
    /// until the cursor is `None`. Every step costs O(`scan`), whatever the queue holds. Tasks
    /// that move while a search runs may be missed or met twice.
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector) -> rediq::Result<()> {
    /// use rediq::TaskState;
    /// let mut cursor = None;
    /// loop {
    ///     let step = inspector
    ///         .find_tasks("emails", TaskState::Dead, "user@example.com", cursor.as_deref(), 1000)
    ///         .await?;
    ///     for t in &step.tasks {
    ///         println!("{} {:?}", t.id, t.last_error);
    ///     }
    ///     match step.cursor {
    ///         Some(c) => cursor = Some(c),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn find_tasks(
        &self,
        queue: &str,
        state: TaskState,
        text: &str,
        cursor: Option<&str>,
        scan: usize,
    ) -> Result<Found> {
        validate_queue_name(queue)?;
        if text.is_empty() {
            return Err(crate::Error::validation("find text", "must not be empty"));
        }
        if !(1..=MAX_FIND_SCAN).contains(&scan) {
            return Err(crate::Error::validation(
                "find scan",
                format!("{scan} is outside 1..={MAX_FIND_SCAN}"),
            ));
        }
        let id = record::id_bytes(text).ok();
        let needle: Vec<u8> = id.map_or_else(|| text.as_bytes().to_vec(), |b| b.to_vec());
        let parts = self.broker.partitions(queue).await?;
        // On a partitioned queue the cursor is `<partition>/<cursor within it>`.
        let bad = || {
            crate::Error::validation(
                "cursor",
                format!("{cursor:?} is not a cursor a previous find returned"),
            )
        };
        let (mut part, inner) = match cursor {
            None => (0, String::new()),
            Some(c) if parts.len() == 1 => (0, c.to_string()),
            Some(c) => {
                let (p, rest) = c.split_once('/').ok_or_else(bad)?;
                (p.parse::<usize>().map_err(|_| bad())?, rest.to_string())
            }
        };
        let Some(physical) = parts.get(part) else {
            return Err(bad());
        };
        let (raw, next) = self
            .broker
            .scan_records(physical, state, &needle, &inner, scan)
            .await?;
        let tasks = raw
            .iter()
            .filter_map(|r| record::decode(queue, r).ok())
            .filter(|t| match id {
                Some(id) => record::id_bytes(&t.id).is_ok_and(|b| b == id),
                None => {
                    t.payload.windows(text.len()).any(|w| w == text.as_bytes())
                        || t.last_error.as_deref().is_some_and(|e| e.contains(text))
                }
            })
            .collect();
        let cursor = match next {
            Some(n) if parts.len() == 1 => Some(n),
            Some(n) => Some(format!("{part}/{n}")),
            None => {
                part += 1;
                (part < parts.len()).then(|| format!("{part}/"))
            }
        };
        Ok(Found { tasks, cursor })
    }

    /// Everything known about the task with id `id`, in `queue` or, with `None`, in whichever
    /// queue knows the id (each queue's id index answers in O(1)). Its record is then found in
    /// bounded steps (a pending or delayed task by a scan of its state, as
    /// [`find_tasks`](Self::find_tasks) does). `None` when no queue holds a record of it: never
    /// enqueued, or finished and not kept (completed tasks are kept only with
    /// `ServerBuilder::completed_retention`).
    ///
    /// ```no_run
    /// # async fn demo(inspector: rediq::Inspector, id: &str) -> rediq::Result<()> {
    /// if let Some(d) = inspector.task(id, None).await? {
    ///     println!("{} is {:?} in {}", d.task.id, d.state, d.task.queue);
    ///     if let Some(lease) = d.lease {
    ///         println!("running on {} (token {})", lease.server, lease.token);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn task(&self, id: &str, queue: Option<&str>) -> Result<Option<TaskDetails>> {
        use crate::broker::cancel::Located;
        let raw = record::id_bytes(id)?;
        let queues = match queue {
            Some(q) => {
                validate_queue_name(q)?;
                vec![q.to_string()]
            }
            None => self.broker.queues().await?,
        };
        for p in self.broker.id_search_order(&queues, &raw).await? {
            let Some(known) = self.broker.known(&p, &raw).await? else {
                continue;
            };
            let name = logical(&p);
            let mut lease = None;
            let found = match known {
                crate::Existing::Live => match self.broker.locate(&p, &raw).await? {
                    Located::Queued(state, r) => Some((state, r)),
                    Located::Blocked(r) => Some((TaskState::Waiting, r)),
                    Located::Running => match self.broker.holder_of(&p, &raw).await? {
                        Some((h, r)) => {
                            lease = Some(Lease {
                                server: h.server,
                                token: h.token,
                                expires_at_ms: h.lease_until_ms,
                            });
                            Some((TaskState::Active, r))
                        }
                        None => None,
                    },
                    Located::NotFound => None,
                },
                crate::Existing::Failed => self
                    .broker
                    .find_queued(&p, TaskState::Dead, &raw)
                    .await?
                    .map(|r| (TaskState::Dead, r)),
                crate::Existing::Completed => self
                    .broker
                    .find_queued(&p, TaskState::Completed, &raw)
                    .await?
                    .map(|r| (TaskState::Completed, r)),
            };
            let Some((state, stored)) = found else {
                continue;
            };
            let task = record::decode(name, &stored).unwrap_or_else(|reason| {
                // Decoding our own stand-in record cannot fail.
                record::decode(name, &record::undecodable(&stored, &reason))
                    .expect("the undecodable stand-in record decodes")
            });
            let waiting_for = if state == TaskState::Waiting {
                self.broker
                    .unmet_dependencies(&p, &raw)
                    .await?
                    .iter()
                    .map(|d| record::id_text(d))
                    .collect()
            } else {
                Vec::new()
            };
            let dependents = self
                .broker
                .dependents_of(&p, &raw)
                .await?
                .into_iter()
                .map(|(d, q)| (record::id_text(&d), logical(&q).to_string()))
                .collect();
            return Ok(Some(TaskDetails {
                task,
                state,
                lease,
                waiting_for,
                dependents,
            }));
        }
        Ok(None)
    }
}

//! The producer's ledger: every task whose enqueue was acknowledged, with the outcome its plan
//! expects, and the enqueue calls that failed or were refused. A task is only counted once its
//! enqueue returned `Ok`: that acknowledgement is what Rediq promises not to lose.

use std::collections::HashMap;

use rediq::{Error, Task};

use crate::workload::{Expect, Plan};

/// One acknowledged task.
#[derive(Debug, Clone)]
pub struct Entry {
    pub queue: String,
    pub plan: Plan,
    pub expect: Expect,
    /// Handler runs a fault-free run makes.
    pub planned_runs: u32,
    /// Acknowledged only by `Error::Duplicate` naming the task itself, after an enqueue that
    /// failed: the unique lock says the earlier try was written.
    pub via_duplicate: bool,
    /// When the producer first tried to enqueue it, and when an enqueue of it returned `Ok`
    /// (Unix ms): the failovers' follow and settle times use them.
    pub first_try_ms: u64,
    pub acked_ms: u64,
}

/// A unique-key pair: the holder, acknowledged, then a second task with the same key.
#[derive(Debug, Clone)]
pub struct UniquePair {
    pub holder: String,
    /// When the second task was accepted (it must not be while the holder is live).
    pub second_accepted_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub tasks: HashMap<String, Entry>,
    /// Enqueue calls that returned an error (then retried with the same task).
    pub enqueue_errors: u64,
    /// Of those, `Error::NotReplicated`: written on the master, not confirmed by a replica in
    /// time (with `wait_for_replicas`), so not acknowledged.
    pub not_replicated: u64,
    /// Tasks given up after errors until the deadline: never acknowledged, so not counted.
    pub gave_up: u64,
    /// Those tasks (an `Entry` each, `acked_ms` = when they were given up): not promised, but
    /// they may have been written, and if they ran, their runs are accounted for.
    pub unacked: HashMap<String, Entry>,
    /// Enqueues refused for a reason other than an error of Redis (the message of the first).
    pub refused: u64,
    pub first_refusal: Option<String>,
    /// Second tasks of a unique key refused as they must be.
    pub duplicates_refused: u64,
    /// Every unique-key pair tried. Whether an accepted second task was a breach depends on
    /// whether its holder was still live then (an enqueue retried through errors for long
    /// enough may come after the holder finished): the accounting decides.
    pub unique_pairs: Vec<UniquePair>,
    /// Distinct enqueue error messages with counts (the first few).
    pub errors: HashMap<String, u64>,
}

impl Ledger {
    pub fn acknowledged(
        &mut self,
        t: &Task,
        parents: &[String],
        via_duplicate: bool,
        first_try_ms: u64,
    ) {
        if let Some(e) = self.entry(t, parents, via_duplicate, first_try_ms) {
            self.tasks.insert(t.id.clone(), e);
        }
    }

    fn entry(
        &self,
        t: &Task,
        parents: &[String],
        via_duplicate: bool,
        first_try_ms: u64,
    ) -> Option<Entry> {
        let Ok(plan) = t.payload_json::<Plan>() else {
            return None; // only this program's tasks are enqueued here
        };
        let (mut expect, mut planned_runs) = plan.expect(t.options.max_retry);
        // A dependent of a task bound for the dead-letter queue follows it there, unrun.
        if parents
            .iter()
            .any(|p| self.tasks.get(p).is_some_and(|e| e.expect == Expect::Dead))
        {
            expect = Expect::Dead;
            planned_runs = 0;
        }
        Some(Entry {
            queue: t.queue.clone(),
            plan,
            expect,
            planned_runs,
            via_duplicate,
            first_try_ms,
            acked_ms: crate::execlog::now_ms(),
        })
    }

    pub fn enqueue_error(&mut self, e: &Error) {
        self.enqueue_errors += 1;
        if matches!(e, Error::NotReplicated { .. }) {
            self.not_replicated += 1;
        }
        let msg = e.to_string();
        let short: String = msg.chars().take(120).collect();
        if self.errors.len() < 8 || self.errors.contains_key(&short) {
            *self.errors.entry(short).or_default() += 1;
        }
    }

    pub fn gave_up(&mut self, t: &Task, parents: &[String], first_try_ms: u64) {
        self.gave_up += 1;
        if let Some(e) = self.entry(t, parents, false, first_try_ms) {
            self.unacked.insert(t.id.clone(), e);
        }
    }

    pub fn enqueue_refused(&mut self, t: &Task, e: &Error) {
        self.refused += 1;
        if self.first_refusal.is_none() {
            self.first_refusal = Some(format!("task {}: {e}", t.id));
        }
    }

    pub fn refused_duplicate(&mut self) {
        self.duplicates_refused += 1;
    }

    /// The second task of `holder`'s unique key was (`true`, now) or was not accepted.
    pub fn unique_checked(&mut self, holder: &str, accepted: bool) {
        self.unique_pairs.push(UniquePair {
            holder: holder.to_string(),
            second_accepted_ms: accepted.then(crate::execlog::now_ms),
        });
    }
}

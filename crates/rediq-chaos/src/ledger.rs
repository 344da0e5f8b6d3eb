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
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub tasks: HashMap<String, Entry>,
    /// Enqueue calls that returned an error (then retried with the same task).
    pub enqueue_errors: u64,
    /// Tasks given up after errors until the deadline: never acknowledged, so not counted.
    pub gave_up: u64,
    /// Enqueues refused for a reason other than an error of Redis (the message of the first).
    pub refused: u64,
    pub first_refusal: Option<String>,
    /// Second tasks of a unique key refused as they must be.
    pub duplicates_refused: u64,
    /// Second tasks of a unique key accepted although the holder was still live.
    pub unique_breaches: u64,
    /// Distinct enqueue error messages with counts (the first few).
    pub errors: HashMap<String, u64>,
}

impl Ledger {
    pub fn acknowledged(&mut self, t: &Task, parents: &[String], via_duplicate: bool) {
        let Ok(plan) = t.payload_json::<Plan>() else {
            return; // only this program's tasks are enqueued here
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
        self.tasks.insert(
            t.id.clone(),
            Entry {
                queue: t.queue.clone(),
                plan,
                expect,
                planned_runs,
                via_duplicate,
            },
        );
    }

    pub fn enqueue_error(&mut self, e: &Error) {
        self.enqueue_errors += 1;
        let msg = e.to_string();
        let short: String = msg.chars().take(120).collect();
        if self.errors.len() < 8 || self.errors.contains_key(&short) {
            *self.errors.entry(short).or_default() += 1;
        }
    }

    pub fn gave_up(&mut self, _t: &Task) {
        self.gave_up += 1;
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

    /// The second task of a unique key was (`true`) or was not accepted.
    pub fn unique_checked(&mut self, accepted: bool) {
        if accepted {
            self.unique_breaches += 1;
        }
    }
}

//! Accounting: after a scenario has drained, every acknowledged task is looked up in the final
//! Redis state and in the execution logs, and the scenario's row is computed.
//!
//! * **lost**: acknowledged, but neither completed nor dead-lettered once drained (missing
//!   from every state, or stuck in a live one).
//! * **double completions**: the queues' processed counters (incremented by the script that
//!   accepts a completion, once per accepted acknowledgement) minus the distinct ids in the
//!   completed sets (workers keep completed tasks for 24 h). A task completed twice counts
//!   twice in the first and once in the second.
//! * **duplicate runs**: handler runs beyond what a fault-free run of the task's plan makes;
//!   allowed under at-least-once, and compared with the tasks in flight at the faults. A task
//!   whose handler returned `Ok` twice is a duplicate *execution*, not a double completion: only
//!   one of the two acknowledgements can be accepted (fencing), or one was lost with a failover.
//! * **time to recover**: per fault, from its start until every task in flight at it ran again
//!   (or finished), and — for faults of Redis or of a queue — a task started after it ended.
//! * **failovers** (faults with a `Switch`): per switch, how long it took, how long until the
//!   producer's first acknowledged enqueue and each worker's first run of a task enqueued after
//!   it (they follow the new master), and until every task acknowledged before it finished.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rediq::{Inspector, Task, TaskState};
use serde::Serialize;

use crate::execlog::Run;
use crate::faults::{Fault, Scope};
use crate::ledger::Ledger;
use crate::scenario::Promises;
use crate::workload::{Expect, Kind, QUEUES};

/// How long after a run ends its acknowledgement may still be on its way (the acker lingers
/// at most 1 ms for company, plus a round trip).
const ACK_WINDOW_MS: u64 = 100;

const STATES: [TaskState; 7] = [
    TaskState::Pending,
    TaskState::Active,
    TaskState::Delayed,
    TaskState::Retry,
    TaskState::Waiting,
    TaskState::Dead,
    TaskState::Completed,
];

/// The final state of the queues.
#[derive(Debug, Default)]
pub struct Final {
    /// id → every state it was found in (a task in two states would be a defect too).
    pub states: HashMap<String, Vec<TaskState>>,
    pub dead: HashMap<String, Task>,
    pub undecodable_payloads: Vec<Vec<u8>>,
    pub cron_ids: HashSet<String>,
    pub processed_total: u64,
}

pub async fn collect(insp: &Inspector) -> rediq::Result<Final> {
    let mut f = Final::default();
    for q in QUEUES {
        f.processed_total += insp.queue_stats(q).await?.processed_total;
        for st in STATES {
            for t in insp.list(q, st, usize::MAX).await? {
                if t.task_type == "rediq:undecodable" {
                    f.undecodable_payloads.push(t.payload.clone());
                    continue;
                }
                if t.task_type == Kind::Cron.task_type() {
                    f.cron_ids.insert(t.id.clone());
                }
                f.states.entry(t.id.clone()).or_default().push(st);
                if st == TaskState::Dead {
                    f.dead.insert(t.id.clone(), t);
                }
            }
        }
    }
    Ok(f)
}

/// One scenario's figures (also printed as one JSON line for the CI test).
#[derive(Debug, Default, Serialize)]
pub struct Row {
    pub scenario: String,
    pub seconds: f64,
    pub enqueued: u64,
    pub completed: u64,
    pub dead_intended: u64,
    pub dead_unplanned: u64,
    pub completed_unplanned: u64,
    pub lost: u64,
    pub lost_missing: u64,
    pub lost_stuck: u64,
    /// Lost tasks acknowledged only by a `Duplicate` naming themselves (see the ledger).
    pub lost_via_duplicate: u64,
    pub duplicate_runs: u64,
    pub tasks_ok_twice: u64,
    pub in_flight_at_faults: u64,
    pub double_completions: u64,
    pub processed_total: u64,
    pub completed_distinct: u64,
    pub cron_fired: u64,
    pub cron_due: u64,
    pub unique_breaches: u64,
    /// Second tasks of a unique key accepted after their holder had finished (their enqueue
    /// was retried through errors until then): allowed.
    pub unique_after_holder: u64,
    pub garbage_planted: u64,
    pub garbage_set_aside: u64,
    /// Tasks run more often than their plan says none of whose runs a fault hit.
    pub reruns_unexplained: u64,
    /// Enqueues that failed with `NotReplicated` (then retried with the same task).
    pub not_replicated: u64,
    /// Tasks never acknowledged (given up after errors): not promised; found in Redis at the
    /// end, and run, how many of them.
    pub unacked: u64,
    pub unacked_found: u64,
    pub unacked_ran: u64,
    pub switches: Vec<SwitchRow>,
    /// Largest over the switches (seconds).
    pub switch_max_s: Option<f64>,
    pub enqueue_follow_max_s: Option<f64>,
    pub worker_follow_max_s: Option<f64>,
    pub settled_max_s: Option<f64>,
    pub faults: u64,
    pub recover_max_s: Option<f64>,
    /// Runs in flight at a fault whose task never ran again (dead-lettered by the recoverer when
    /// its retries were used up, or lost).
    pub not_rerun: u64,
    pub slowest_shutdown_s: Option<f64>,
    pub enqueue_errors: u64,
    pub enqueues_given_up: u64,
    pub worker_warnings: u64,
    pub top_warnings: Vec<String>,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub dir: String,
}

/// One failover's figures, in seconds.
#[derive(Debug, Default, Serialize)]
pub struct SwitchRow {
    pub what: String,
    /// The workload's queues whose master changed.
    pub queues: Vec<String>,
    /// Port of their master before and after.
    pub from: u16,
    pub to: u16,
    /// When the failover command was sent, and when the switch had settled (Unix ms).
    pub start_ms: u64,
    pub end_ms: u64,
    /// From the failover command until the topology settled (the test harness's wait: the
    /// promoted replica is master and every node agrees; under Sentinel also every sentinel
    /// names it and the old master replicates from it).
    pub took_s: f64,
    /// From the end of the switch until the producer first tried to enqueue a new task into a
    /// switched queue (later than the end when every producer slot is busy retrying).
    pub first_try_s: Option<f64>,
    /// From the end of the switch until the first acknowledged enqueue into a switched queue;
    /// `None` if none came.
    pub first_ack_s: Option<f64>,
    /// Per worker that ran before the switch: from the end of the switch until its first run
    /// of a task of a switched queue first tried after it (written to and fetched from the
    /// new master); `None` for a worker that ran none.
    pub worker_follow_s: Vec<(String, Option<f64>)>,
    /// From the end of the switch until every task acknowledged before it and not finished
    /// at its start had finished (its last run ended).
    pub settled_s: Option<f64>,
    /// Runs a fault hit (in flight at or during the switch).
    pub runs_hit: u64,
}

impl SwitchRow {
    fn queues_moved(&self) -> bool {
        !self.queues.is_empty()
    }
}

/// Everything a row is computed from.
pub struct Inputs<'a> {
    pub ledger: &'a Ledger,
    pub runs: &'a [Run],
    pub fin: &'a Final,
    pub faults: &'a [Fault],
    pub promises: Promises,
    pub cron_window_ms: (u64, u64),
    pub garbage_planted: &'a [Vec<u8>],
    pub shutdowns: &'a [(String, std::time::Duration, bool)],
    pub shutdown_allowed: std::time::Duration,
    /// The workers' lease: how long a task leased during a failover may wait in a worker's
    /// lease-ahead buffer before it runs.
    pub lease_ms: u64,
}

pub fn account(row: &mut Row, i: &Inputs<'_>) {
    let mut runs_of: HashMap<&str, Vec<&Run>> = HashMap::new();
    for r in i.runs {
        runs_of.entry(r.id.as_str()).or_default().push(r);
    }
    row.enqueued = i.ledger.tasks.len() as u64;
    let mut stuck_states: HashMap<String, u64> = HashMap::new();
    let mut unplanned_errors: HashMap<String, u64> = HashMap::new();
    for (id, e) in &i.ledger.tasks {
        let states = i.fin.states.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let completed = states.contains(&TaskState::Completed);
        let dead = states.contains(&TaskState::Dead);
        match (completed, dead, e.expect) {
            (true, _, Expect::Completed) => row.completed += 1,
            (true, _, Expect::Dead) => {
                row.completed += 1;
                row.completed_unplanned += 1;
            }
            (false, true, Expect::Dead) => row.dead_intended += 1,
            (false, true, Expect::Completed) => {
                row.dead_unplanned += 1;
                let err = i
                    .fin
                    .dead
                    .get(id)
                    .and_then(|t| t.last_error.clone())
                    .unwrap_or_default();
                let short: String = err.chars().take(90).collect();
                *unplanned_errors
                    .entry(format!("{:?}: {short}", e.plan.k))
                    .or_default() += 1;
            }
            (false, false, _) if states.is_empty() => {
                row.lost_missing += 1;
                row.lost_via_duplicate += u64::from(e.via_duplicate);
            }
            (false, false, _) => {
                row.lost_stuck += 1;
                *stuck_states
                    .entry(format!("{:?} in {}", states[0], e.queue))
                    .or_default() += 1;
            }
        }
        let runs = runs_of.get(id.as_str()).map_or(0, Vec::len) as u32;
        row.duplicate_runs += u64::from(runs.saturating_sub(e.planned_runs));
    }
    // Never acknowledged: not lost when missing, but when written they may run, and then
    // their runs count like any other's.
    row.unacked = i.ledger.unacked.len() as u64;
    for (id, e) in &i.ledger.unacked {
        row.unacked_found += u64::from(i.fin.states.contains_key(id));
        let runs = runs_of.get(id.as_str()).map_or(0, Vec::len) as u32;
        row.unacked_ran += u64::from(runs > 0);
        row.duplicate_runs += u64::from(runs.saturating_sub(e.planned_runs));
    }
    for (id, rs) in &runs_of {
        if rs
            .iter()
            .filter(|r| r.outcome.as_deref() == Some("ok"))
            .count()
            > 1
        {
            row.tasks_ok_twice += 1;
        }
        if i.fin.cron_ids.contains(*id) {
            row.duplicate_runs += rs.len().saturating_sub(1) as u64;
        }
        // Run more often than planned: some fault must have hit one of its runs.
        let planned = i
            .ledger
            .tasks
            .get(*id)
            .or_else(|| i.ledger.unacked.get(*id))
            .map(|e| e.planned_runs as usize)
            .or_else(|| i.fin.cron_ids.contains(*id).then_some(1));
        if let Some(planned) = planned {
            if rs.len() > planned
                && !rs
                    .iter()
                    .any(|r| i.faults.iter().any(|f| hit(f, r, i.lease_ms)))
            {
                row.reruns_unexplained += 1;
            }
        }
    }
    row.not_replicated = i.ledger.not_replicated;
    row.lost = row.lost_missing + row.lost_stuck;

    // Completions: accepted acknowledgements against distinct completed ids (all tasks, cron
    // copies included).
    let completed_distinct = i
        .fin
        .states
        .values()
        .filter(|s| s.contains(&TaskState::Completed))
        .count() as u64;
    row.processed_total = i.fin.processed_total;
    row.completed_distinct = completed_distinct;
    row.double_completions = i.fin.processed_total.saturating_sub(completed_distinct);

    // Cron: at most one copy per tick of the window in which the entry existed.
    let cron_runs: HashSet<&str> = i
        .runs
        .iter()
        .filter(|r| i.fin.cron_ids.contains(&r.id))
        .map(|r| r.id.as_str())
        .collect();
    row.cron_fired = i.fin.cron_ids.len().max(cron_runs.len()) as u64;
    let (from, to) = i.cron_window_ms;
    row.cron_due = to.saturating_sub(from) / 1000 + 1;
    // A second task of a unique key breaches it if accepted before the holder's first
    // successful run ended (the holder was certainly live then; its completion, which frees
    // the key, comes after).
    for pair in &i.ledger.unique_pairs {
        let Some(at) = pair.second_accepted_ms else {
            continue;
        };
        let holder_done = runs_of.get(pair.holder.as_str()).and_then(|rs| {
            rs.iter()
                .filter(|r| r.outcome.as_deref() == Some("ok"))
                .filter_map(|r| r.end_ms)
                .min()
        });
        if holder_done.is_none_or(|done| at < done) {
            row.unique_breaches += 1;
        } else {
            row.unique_after_holder += 1;
        }
    }

    // Garbage: each planted member must be in the dead-letter queue on its own.
    row.garbage_planted = i.garbage_planted.len() as u64;
    row.garbage_set_aside = i
        .garbage_planted
        .iter()
        .filter(|p| i.fin.undecodable_payloads.contains(p))
        .count() as u64;

    recovery(row, i);
    switches(row, i, &runs_of);

    row.slowest_shutdown_s = i
        .shutdowns
        .iter()
        .map(|s| s.1.as_secs_f64())
        .reduce(f64::max);
    row.enqueue_errors = i.ledger.enqueue_errors;
    row.enqueues_given_up = i.ledger.gave_up;

    judge(row, i, &stuck_states, &unplanned_errors);
}

fn recovery(row: &mut Row, i: &Inputs<'_>) {
    row.faults = i.faults.len() as u64;
    for f in i.faults {
        let inflight: Vec<&Run> = i.runs.iter().filter(|r| hit(f, r, i.lease_ms)).collect();
        row.in_flight_at_faults += inflight.len() as u64;
        let mut recovered_at = f.start_ms;
        for r in &inflight {
            let rerun = i
                .runs
                .iter()
                .filter(|o| o.id == r.id && o.start_ms >= f.start_ms)
                .map(|o| o.start_ms)
                .min();
            match [rerun, r.end_ms].into_iter().flatten().min() {
                Some(t) => recovered_at = recovered_at.max(t),
                None => row.not_rerun += 1,
            }
        }
        if f.scope == Scope::All {
            match i
                .runs
                .iter()
                .map(|r| r.start_ms)
                .filter(|s| *s >= f.end_ms)
                .min()
            {
                Some(t) => recovered_at = recovered_at.max(t),
                None => row
                    .notes
                    .push(format!("no task started after the fault ended: {}", f.what)),
            }
        }
        let s = (recovered_at - f.start_ms) as f64 / 1000.0;
        row.recover_max_s = Some(row.recover_max_s.map_or(s, |m: f64| m.max(s)));
    }
}

/// Whether fault `f` hit run `r`: the run was under way when the fault began (or had ended
/// within [`ACK_WINDOW_MS`]: its acknowledgement may still have been on the way), on the
/// worker the fault hit (any, for a fault of Redis or of a queue). A failover hits every run
/// that overlaps it, and every run started up to a lease after it: the writes of the switch
/// (fetches, acknowledgements) may be lost or cut off, and a task leased from the old master
/// can wait up to its lease in a worker's lease-ahead buffer before it runs.
fn hit(f: &Fault, r: &Run, lease_ms: u64) -> bool {
    let on = match &f.scope {
        Scope::Worker(w) => &r.worker == w,
        Scope::All => true,
    };
    let until = if f.switch.is_some() {
        f.end_ms + lease_ms
    } else {
        f.start_ms
    };
    on && r.start_ms < until && r.end_ms.is_none_or(|e| e + ACK_WINDOW_MS > f.start_ms)
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The failovers' figures (see [`SwitchRow`]).
fn switches(row: &mut Row, i: &Inputs<'_>, runs_of: &HashMap<&str, Vec<&Run>>) {
    let secs = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
    // Workers in order of their first run.
    let mut workers: Vec<(&str, u64)> = Vec::new();
    for r in i.runs {
        match workers.iter_mut().find(|(w, _)| *w == r.worker) {
            Some((_, first)) => *first = (*first).min(r.start_ms),
            None => workers.push((&r.worker, r.start_ms)),
        }
    }
    workers.sort_by_key(|w| w.1);
    // When each acknowledged task finished: its last run's end (none for a task that never
    // ran, such as the dependent of a dead-lettered task).
    let finished: HashMap<&str, u64> = i
        .ledger
        .tasks
        .keys()
        .filter_map(|id| {
            let end = runs_of
                .get(id.as_str())?
                .iter()
                .filter_map(|r| r.end_ms)
                .max()?;
            Some((id.as_str(), end))
        })
        .collect();
    // Every task the producer tried (acknowledged or given up), by id.
    let tried = |id: &str| i.ledger.tasks.get(id).or_else(|| i.ledger.unacked.get(id));
    for f in i.faults {
        let Some(sw) = &f.switch else { continue };
        // The producer followed: its first acknowledged enqueue into a switched queue after the
        // switch settled (under Sentinel not before the demoted master has resynchronised:
        // until then no replica confirms).
        let first_ack = i
            .ledger
            .tasks
            .values()
            .filter(|e| e.acked_ms >= f.end_ms && sw.queues.contains(&e.queue))
            .map(|e| e.acked_ms)
            .min();
        let first_try = i
            .ledger
            .tasks
            .values()
            .chain(i.ledger.unacked.values())
            .filter(|e| e.first_try_ms >= f.end_ms && sw.queues.contains(&e.queue))
            .map(|e| e.first_try_ms)
            .min();
        // A worker followed: it ran a task of a switched queue that the producer first tried
        // after the switch settled, so it was written to, and fetched from, the new master
        // (it may run before its enqueue is acknowledged, once it is written).
        let worker_follow_s = workers
            .iter()
            .filter(|(_, first)| *first < f.start_ms)
            .map(|(w, _)| {
                let first = i
                    .runs
                    .iter()
                    .filter(|r| r.worker == *w)
                    .filter(|r| {
                        tried(&r.id).is_some_and(|e| {
                            e.first_try_ms >= f.end_ms && sw.queues.contains(&e.queue)
                        })
                    })
                    .map(|r| r.start_ms)
                    .min();
                (w.to_string(), first.map(|t| secs(f.end_ms, t)))
            })
            .collect::<Vec<_>>();
        let settled = i
            .ledger
            .tasks
            .iter()
            .filter(|(_, e)| e.acked_ms < f.end_ms)
            .filter_map(|(id, _)| finished.get(id.as_str()))
            .filter(|end| **end >= f.start_ms)
            .max()
            .map(|end| secs(f.end_ms, *end));
        let sr = SwitchRow {
            what: f.what.clone(),
            queues: sw.queues.clone(),
            from: sw.from,
            to: sw.to,
            start_ms: f.start_ms,
            end_ms: f.end_ms,
            took_s: secs(f.start_ms, f.end_ms),
            first_try_s: first_try.map(|t| secs(f.end_ms, t)),
            first_ack_s: first_ack.map(|t| secs(f.end_ms, t)),
            worker_follow_s,
            settled_s: settled,
            runs_hit: i.runs.iter().filter(|r| hit(f, r, i.lease_ms)).count() as u64,
        };
        row.switch_max_s = max_opt(row.switch_max_s, Some(sr.took_s));
        row.enqueue_follow_max_s = max_opt(row.enqueue_follow_max_s, sr.first_ack_s);
        for (_, w) in &sr.worker_follow_s {
            row.worker_follow_max_s = max_opt(row.worker_follow_max_s, *w);
        }
        row.settled_max_s = max_opt(row.settled_max_s, sr.settled_s);
        row.switches.push(sr);
    }
}

fn judge(
    row: &mut Row,
    i: &Inputs<'_>,
    stuck: &HashMap<String, u64>,
    unplanned: &HashMap<String, u64>,
) {
    let p = i.promises;
    let mut fail = |s: String| row.failures.push(s);
    if row.lost > 0 {
        let msg = format!(
            "LOST {} acknowledged task(s): {} in no state at all ({} of them acknowledged only by a Duplicate naming themselves), {} stuck ({})",
            row.lost,
            row.lost_missing,
            row.lost_via_duplicate,
            row.lost_stuck,
            top(stuck)
        );
        if p.nothing_lost {
            fail(msg);
        } else {
            row.notes.push(format!("{msg} — reported, not promised"));
        }
    }
    if row.double_completions > 0 {
        fail(format!(
            "DOUBLE COMPLETIONS: {} accepted completions for {} distinct completed ids",
            row.processed_total, row.completed_distinct
        ));
    }
    if row.completed_unplanned > 0 {
        fail(format!(
            "{} task(s) planned to fail completed",
            row.completed_unplanned
        ));
    }
    if row.dead_unplanned > 0 {
        let msg = format!(
            "{} task(s) planned to complete were dead-lettered ({})",
            row.dead_unplanned,
            top(unplanned)
        );
        if p.no_unplanned_dead {
            fail(msg);
        } else {
            row.notes
                .push(format!("{msg} — lost attempts count as failed ones"));
        }
    }
    if p.once && row.cron_fired > row.cron_due {
        fail(format!(
            "cron fired {} copies in a window of {} ticks",
            row.cron_fired, row.cron_due
        ));
    }
    if p.once && row.duplicate_runs > row.in_flight_at_faults {
        fail(format!(
            "{} duplicate run(s), more than the {} task(s) in flight at the faults",
            row.duplicate_runs, row.in_flight_at_faults
        ));
    }
    if p.reruns_explained && row.reruns_unexplained > 0 {
        fail(format!(
            "{} task(s) ran more often than planned although no fault hit any of their runs",
            row.reruns_unexplained
        ));
    }
    if let Some(limit) = p.settled_within {
        for sw in &row.switches {
            if sw.settled_s.is_some_and(|s| s > limit.as_secs_f64()) {
                fail(format!(
                    "tasks acknowledged before a switch finished {:.1} s after it (allowed {limit:?}): {}",
                    sw.settled_s.unwrap_or_default(),
                    sw.what
                ));
            }
        }
    }
    if let Some(limit) = p.follow_within {
        let limit_s = limit.as_secs_f64();
        for sw in &row.switches {
            if sw.queues_moved() && !sw.first_ack_s.is_some_and(|s| s <= limit_s) {
                fail(format!(
                    "the producer's first acknowledged enqueue came {} after the switch (allowed {limit:?}): {}",
                    sw.first_ack_s.map_or("never".into(), |s| format!("{s:.1} s")),
                    sw.what
                ));
            }
            for (w, s) in &sw.worker_follow_s {
                if sw.queues_moved() && !s.is_some_and(|s| s <= limit_s) {
                    fail(format!(
                        "worker {w} first ran a task enqueued after the switch {} after it (allowed {limit:?}): {}",
                        s.map_or("never".into(), |s| format!("{s:.1} s")),
                        sw.what
                    ));
                }
            }
        }
    }
    if p.once && row.unique_breaches > 0 {
        fail(format!(
            "{} second task(s) accepted for a live unique key",
            row.unique_breaches
        ));
    }
    if row.garbage_set_aside < row.garbage_planted {
        fail(format!(
            "only {} of {} undecodable members were set aside in the dead-letter queue",
            row.garbage_set_aside, row.garbage_planted
        ));
    }
    for (w, took, exited) in i.shutdowns {
        if *took > i.shutdown_allowed || !exited {
            fail(format!(
                "worker {w}'s graceful shutdown took {:.1} s (allowed {:.1} s){}",
                took.as_secs_f64(),
                i.shutdown_allowed.as_secs_f64(),
                if *exited { "" } else { ", then SIGKILLed" }
            ));
        }
    }
}

/// The most frequent entries of a count map, for a one-line message.
fn top(m: &HashMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .take(3)
        .map(|(k, n)| format!("{n}× {k}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Counts warning and error lines in the workers' logs; keeps the most frequent messages.
pub fn worker_warnings(row: &mut Row, dir: &Path) {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("worker-") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            let Some(pos) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
                continue;
            };
            row.worker_warnings += 1;
            // The message without its time and fields: "LEVEL target: message".
            let msg = line[pos + 1..].trim();
            let key: String = msg
                .split(['=', '{'])
                .next()
                .unwrap_or(msg)
                .chars()
                .take(100)
                .collect();
            *counts.entry(key.trim().to_string()).or_default() += 1;
        }
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    row.top_warnings = v
        .into_iter()
        .take(5)
        .map(|(k, n)| format!("{n}× {k}"))
        .collect();
}

//! Printing: one machine-readable line per scenario as it finishes (`CHAOS-RESULT {json}`,
//! read by the CI test), and the table of all scenarios at the end.

use crate::accounting::Row;

pub fn result_line(row: &Row) {
    match serde_json::to_string(row) {
        Ok(json) => println!("CHAOS-RESULT {json}"),
        Err(e) => println!(
            "CHAOS-RESULT {{\"scenario\":\"{}\",\"failures\":[\"cannot encode the row: {e}\"]}}",
            row.scenario
        ),
    }
}

pub fn details(row: &Row) {
    println!("── {} ({:.0} s) ─ {}", row.scenario, row.seconds, row.dir);
    for f in &row.failures {
        println!("   FAIL  {f}");
    }
    for n in &row.notes {
        println!("   note  {n}");
    }
    println!(
        "   enqueue errors {} (given up {}), second unique tasks accepted after their holder finished {}, ok runs twice {}, in flight at a fault and never run again {}, completions {} / {} distinct, cron {}/{} ticks, garbage set aside {}/{}",
        row.enqueue_errors,
        row.enqueues_given_up,
        row.unique_after_holder,
        row.tasks_ok_twice,
        row.not_rerun,
        row.processed_total,
        row.completed_distinct,
        row.cron_fired,
        row.cron_due,
        row.garbage_set_aside,
        row.garbage_planted,
    );
    if row.not_replicated > 0 || row.unacked > 0 || row.reruns_unexplained > 0 {
        println!(
            "   not replicated (retried) {}, never acknowledged {} ({} found in Redis, {} ran), reruns no fault explains {} (a failure in the failover scenarios)",
            row.not_replicated,
            row.unacked,
            row.unacked_found,
            row.unacked_ran,
            row.reruns_unexplained,
        );
    }
    let s = |v: Option<f64>| v.map_or("never".to_string(), |s| format!("{s:.1} s"));
    for (k, sw) in row.switches.iter().enumerate() {
        let workers: Vec<String> = sw
            .worker_follow_s
            .iter()
            .map(|(w, f)| format!("{w} {}", s(*f)))
            .collect();
        println!(
            "   switch {}: {} — took {:.1} s; after it: first new enqueue tried {}, first acknowledged {}, first run of a later task per worker: {}, every earlier task finished {}; {} runs hit",
            k + 1,
            sw.what,
            sw.took_s,
            s(sw.first_try_s),
            s(sw.first_ack_s),
            workers.join(", "),
            s(sw.settled_s),
            sw.runs_hit,
        );
    }
    if !row.switches.is_empty() {
        println!(
            "   switches {}: slowest {}; after a switch the producer's first acknowledged enqueue within {}, each worker's first run of a later task within {}, every earlier task finished within {}",
            row.switches.len(),
            s(row.switch_max_s),
            s(row.enqueue_follow_max_s),
            s(row.worker_follow_max_s),
            s(row.settled_max_s),
        );
    }
    if row.worker_warnings > 0 {
        println!("   worker warnings: {}", row.worker_warnings);
        for w in &row.top_warnings {
            println!("     {w}");
        }
    }
}

pub fn table(rows: &[Row]) {
    println!();
    println!(
        "| scenario | enqueued | completed | dead as intended | dead unplanned | **lost** | duplicate runs | in flight at faults | **double completions** | faults | recover max (s) | follow max (s) | slowest shutdown (s) | result |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.enqueued,
            r.completed,
            r.dead_intended,
            r.dead_unplanned,
            r.lost,
            r.duplicate_runs,
            r.in_flight_at_faults,
            r.double_completions,
            r.faults,
            r.recover_max_s.map_or("–".into(), |s| format!("{s:.1}")),
            max_opt(r.enqueue_follow_max_s, r.worker_follow_max_s)
                .map_or("–".into(), |s| format!("{s:.1}")),
            r.slowest_shutdown_s
                .map_or("–".into(), |s| format!("{s:.1}")),
            if r.failures.is_empty() {
                "pass"
            } else {
                "FAIL"
            },
        );
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

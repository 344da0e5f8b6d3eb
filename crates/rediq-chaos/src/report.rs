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
        "   enqueue errors {} (given up {}), ok runs twice {}, in flight at a fault and never run again {}, completions {} / {} distinct, cron {}/{} ticks, garbage set aside {}/{}",
        row.enqueue_errors,
        row.enqueues_given_up,
        row.tasks_ok_twice,
        row.not_rerun,
        row.processed_total,
        row.completed_distinct,
        row.cron_fired,
        row.cron_due,
        row.garbage_set_aside,
        row.garbage_planted,
    );
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
        "| scenario | enqueued | completed | dead as intended | dead unplanned | **lost** | duplicate runs | in flight at faults | **double completions** | faults | recover max (s) | slowest shutdown (s) | result |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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

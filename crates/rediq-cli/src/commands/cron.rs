//! `rediq cron …`: periodic entries.

use rediq::Inspector;
use serde_json::{json, Value};

use super::Result;
use crate::cli::CronCmd;
use crate::output::{print_json, Table};

pub async fn run(i: &Inspector, cmd: CronCmd, json: bool) -> Result {
    let (id, action, ok) = match cmd {
        CronCmd::List => return list(i, json).await,
        CronCmd::Pause { id } => {
            let ok = i.pause_cron(&id).await?;
            (id, "paused", ok)
        }
        CronCmd::Resume { id } => {
            let ok = i.resume_cron(&id).await?;
            (id, "resumed", ok)
        }
        CronCmd::Remove { id } => {
            let ok = i.remove_cron(&id).await?;
            (id, "removed", ok)
        }
    };
    if !ok {
        return Err(format!("no periodic entry {id:?} (see `rediq cron list`)").into());
    }
    if json {
        print_json(&json!({ "id": id, "action": action, "ok": true }));
    } else {
        println!("{action} periodic entry {id}");
    }
    Ok(())
}

/// A Unix-ms time as `YYYY-MM-DD HH:MM:SS` UTC.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

async fn list(i: &Inspector, json: bool) -> Result {
    let entries = i.cron_entries().await?;
    if json {
        let rows: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "queue": e.queue,
                    "expr": e.expr,
                    "type": e.task.task_type,
                    "paused": e.paused,
                    "last_run_ms": e.last_run_ms,
                    "next_run_ms": e.next_run_ms,
                })
            })
            .collect();
        print_json(&Value::Array(rows));
        return Ok(());
    }
    let mut t = Table::new(&[
        "ID",
        "QUEUE",
        "TYPE",
        "STATE",
        "NEXT RUN (UTC)",
        "LAST RUN (UTC)",
        "SCHEDULE",
    ]);
    for e in &entries {
        t.row(vec![
            e.id.clone(),
            e.queue.clone(),
            e.task.task_type.clone(),
            if e.paused { "paused" } else { "active" }.into(),
            e.next_run_ms.map_or("-".into(), utc),
            e.last_run_ms.map_or("-".into(), utc),
            e.expr.clone(),
        ]);
    }
    t.print();
    println!(
        "{} periodic entr{}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_796_128_336_000), "2026-12-01 12:32:16");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}

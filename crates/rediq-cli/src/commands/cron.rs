//! `rediq cron …`: periodic entries.

use rediq::Inspector;
use serde_json::{json, Value};

use super::Result;
use crate::cli::CronCmd;
use crate::output::{print_json, utc, Table};

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
                    "time_zone": e.time_zone,
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
        "TIME ZONE",
    ]);
    for e in &entries {
        t.row(vec![
            e.id.clone(),
            e.queue.clone(),
            e.task.task_type.clone(),
            if e.paused { "paused" } else { "active" }.into(),
            e.next_run_ms.map_or("-".into(), utc),
            e.last_run_ms.map_or("-".into(), utc),
            e.schedule().into(),
            e.time_zone.clone(),
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
        use crate::output::utc;
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_796_128_336_000), "2026-12-01 12:32:16");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}

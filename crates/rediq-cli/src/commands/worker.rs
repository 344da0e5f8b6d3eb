//! `rediq worker list`.

use rediq::Inspector;
use serde_json::{json, Value};

use super::Result;
use crate::cli::WorkerCmd;
use crate::output::{age, now_ms, print_json, Table};

pub async fn run(i: &Inspector, cmd: WorkerCmd, json: bool) -> Result {
    match cmd {
        WorkerCmd::List => {
            let workers = i.workers().await?;
            let field =
                |w: &rediq::WorkerInfo, k: &str| w.fields.get(k).cloned().unwrap_or_default();
            let ms = |w: &rediq::WorkerInfo, k: &str| {
                w.fields.get(k).and_then(|v| v.parse::<u64>().ok())
            };
            if json {
                let rows: Vec<Value> = workers
                    .iter()
                    .map(|w| {
                        json!({
                            "id": w.id,
                            "host": field(w, "host"),
                            "pid": field(w, "pid").parse::<u64>().ok(),
                            "queues": field(w, "queues").split(',').filter(|q| !q.is_empty()).collect::<Vec<_>>(),
                            "concurrency": field(w, "concurrency").parse::<u64>().ok(),
                            "started_at_ms": ms(w, "started_at_ms"),
                            "last_heartbeat_ms": ms(w, "last_heartbeat_ms"),
                        })
                    })
                    .collect();
                print_json(&Value::Array(rows));
                return Ok(());
            }
            let now = now_ms();
            let mut t = Table::new(&[
                "ID",
                "HOST",
                "PID",
                "CONCURRENCY",
                "UP",
                "HEARTBEAT",
                "QUEUES",
            ]);
            for w in &workers {
                t.row(vec![
                    w.id.clone(),
                    field(w, "host"),
                    field(w, "pid"),
                    field(w, "concurrency"),
                    ms(w, "started_at_ms").map_or("-".into(), |s| age(s, now)),
                    ms(w, "last_heartbeat_ms")
                        .map_or("-".into(), |s| format!("{} ago", age(s, now))),
                    field(w, "queues"),
                ]);
            }
            t.print();
            println!("{} server(s)", workers.len());
            Ok(())
        }
    }
}

//! `rediq worker list|inspect`.

use rediq::{Inspector, WorkerInfo};
use serde_json::{json, Value};

use super::Result;
use crate::cli::WorkerCmd;
use crate::output::{age, now_ms, print_json, Table};

fn field(w: &WorkerInfo, k: &str) -> String {
    w.fields.get(k).cloned().unwrap_or_default()
}

fn ms(w: &WorkerInfo, k: &str) -> Option<u64> {
    w.fields.get(k).and_then(|v| v.parse::<u64>().ok())
}

/// A server as JSON (the fields docs/cli.md lists).
fn worker_json(w: &WorkerInfo, now: u64) -> Value {
    json!({
        "id": w.id,
        "host": field(w, "host"),
        "pid": ms(w, "pid"),
        "queues": field(w, "queues").split(',').filter(|q| !q.is_empty()).collect::<Vec<_>>(),
        "concurrency": ms(w, "concurrency"),
        "in_flight": ms(w, "in_flight"),
        "alive": w.alive(now),
        "lease_ms": ms(w, "lease_ms"),
        "started_at_ms": ms(w, "started_at_ms"),
        "last_heartbeat_ms": ms(w, "last_heartbeat_ms"),
    })
}

fn status(w: &WorkerInfo, now: u64) -> &'static str {
    if w.alive(now) {
        "alive"
    } else {
        "dead"
    }
}

pub async fn run(i: &Inspector, cmd: WorkerCmd, json: bool) -> Result {
    let now = now_ms();
    match cmd {
        WorkerCmd::List => {
            let workers = i.workers().await?;
            if json {
                print_json(&Value::Array(
                    workers.iter().map(|w| worker_json(w, now)).collect(),
                ));
                return Ok(());
            }
            let mut t = Table::new(&[
                "ID",
                "STATUS",
                "HOST",
                "PID",
                "CONCURRENCY",
                "IN FLIGHT",
                "UP",
                "HEARTBEAT",
                "QUEUES",
            ]);
            for w in &workers {
                t.row(vec![
                    w.id.clone(),
                    status(w, now).into(),
                    field(w, "host"),
                    field(w, "pid"),
                    field(w, "concurrency"),
                    field(w, "in_flight"),
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
        WorkerCmd::Inspect { id } => {
            let Some(d) = i.worker(&id).await? else {
                return Err(
                    format!("no server {id:?} is registered (see `rediq worker list`)").into(),
                );
            };
            let w = &d.info;
            if json {
                let mut v = worker_json(w, now);
                v["tasks"] = json!(d
                    .in_flight
                    .iter()
                    .map(|(q, id, t)| json!({ "queue": q, "id": id, "type": t }))
                    .collect::<Vec<_>>());
                print_json(&v);
                return Ok(());
            }
            for (k, v) in [
                ("id", w.id.clone()),
                ("status", status(w, now).into()),
                ("host", field(w, "host")),
                ("pid", field(w, "pid")),
                ("queues", field(w, "queues")),
                ("concurrency", field(w, "concurrency")),
                (
                    "up",
                    ms(w, "started_at_ms").map_or("-".into(), |s| age(s, now)),
                ),
                (
                    "heartbeat",
                    ms(w, "last_heartbeat_ms")
                        .map_or("-".into(), |s| format!("{} ago", age(s, now))),
                ),
                (
                    "lease",
                    ms(w, "lease_ms").map_or("-".into(), |l| format!("{l} ms")),
                ),
                ("in flight", d.in_flight.len().to_string()),
            ] {
                println!("{k:<12} {v}");
            }
            let mut t = Table::new(&["QUEUE", "TYPE", "TASK"]);
            for (q, id, ty) in &d.in_flight {
                t.row(vec![q.clone(), ty.clone(), id.clone()]);
            }
            if !d.in_flight.is_empty() {
                println!();
                t.print();
            }
            Ok(())
        }
    }
}

//! `rediq task …`: a page of a queue's tasks, cancel, retry.

use rediq::{CancelOutcome, Inspector};
use serde_json::{json, Value};

use super::{known_queue, Result};
use crate::cli::{State, TaskCmd};
use crate::output::{
    age, now_ms, payload_text, print_json, task_cells, task_json, Table, TASK_COLUMNS,
};

pub async fn run(i: &Inspector, cmd: TaskCmd, json: bool) -> Result {
    match cmd {
        TaskCmd::List {
            queue,
            state,
            page,
            size,
        } => {
            known_queue(i, &queue).await?;
            // Bounded by clap: page ≥ 1, size 1..=1000.
            let tasks = i
                .list_page(
                    &queue,
                    state.to_library(),
                    (page - 1) as usize,
                    size as usize,
                )
                .await?;
            if json {
                print_json(&Value::Array(
                    tasks.iter().map(|t| task_json(t, state.name())).collect(),
                ));
                return Ok(());
            }
            let now = now_ms();
            // Priority after the type: the order a page runs in.
            let mut headers = TASK_COLUMNS.to_vec();
            headers.insert(2, "PRIORITY");
            let mut table = Table::new(&headers);
            for t in &tasks {
                let mut cells = task_cells(t, now).to_vec();
                cells.insert(2, t.options.priority.to_string());
                table.row(cells);
            }
            table.print();
            println!(
                "{} {} task(s) of queue {queue}, page {page} ({size} per page)",
                tasks.len(),
                state.name()
            );
            Ok(())
        }
        TaskCmd::Inspect { id, queue } => inspect(i, &id, queue.as_deref(), json).await,
        TaskCmd::Find {
            queue,
            text,
            state,
            limit,
            cursor,
        } => find(i, &queue, &text, state, limit as usize, cursor, json).await,
        TaskCmd::Cancel { id, queue } => {
            known_queue(i, &queue).await?;
            let outcome = match i.cancel_task(&queue, &id).await? {
                CancelOutcome::Removed => "removed",
                CancelOutcome::Signalled => "signalled",
                CancelOutcome::NotFound => {
                    return Err(format!(
                        "no waiting or running task {id} in queue {queue:?} (it may have finished)"
                    )
                    .into())
                }
            };
            if json {
                print_json(
                    &json!({ "id": id, "queue": queue, "action": "cancel", "outcome": outcome }),
                );
            } else if outcome == "removed" {
                println!("cancelled task {id}: removed from queue {queue}");
            } else {
                println!("cancelled task {id}: its server was told to stop it");
            }
            Ok(())
        }
        TaskCmd::Delete { id, queue } => {
            known_queue(i, &queue).await?;
            if !i.delete_task(&queue, &id).await? {
                return Err(format!(
                    "no task {id} to delete in queue {queue:?} (a running task is stopped with `task cancel`)"
                )
                .into());
            }
            if json {
                print_json(
                    &json!({ "id": id, "queue": queue, "action": "delete", "outcome": "deleted" }),
                );
            } else {
                println!("deleted task {id} of queue {queue}");
            }
            Ok(())
        }
        TaskCmd::Retry { id, queue } => {
            known_queue(i, &queue).await?;
            if !i.rerun_dead(&queue, &id).await? {
                return Err(format!("no dead task {id} in queue {queue:?}").into());
            }
            if json {
                print_json(
                    &json!({ "id": id, "queue": queue, "action": "retry", "outcome": "pending" }),
                );
            } else {
                println!("task {id} of queue {queue} is pending again");
            }
            Ok(())
        }
    }
}

/// Records examined per search step (each step is one bounded Redis call).
const STEP: usize = 1000;

/// Steps through the search until `limit` matches or the end.
async fn find(
    i: &Inspector,
    queue: &str,
    text: &str,
    state: State,
    limit: usize,
    mut cursor: Option<String>,
    json: bool,
) -> Result {
    known_queue(i, queue).await?;
    let mut found = Vec::new();
    loop {
        let step = i
            .find_tasks(queue, state.to_library(), text, cursor.as_deref(), STEP)
            .await?;
        found.extend(step.tasks);
        cursor = step.cursor;
        if cursor.is_none() || found.len() >= limit {
            break;
        }
    }
    if json {
        print_json(&json!({
            "tasks": found.iter().map(|t| task_json(t, state.name())).collect::<Vec<_>>(),
            "cursor": cursor,
        }));
        return Ok(());
    }
    let now = now_ms();
    let mut table = Table::new(&TASK_COLUMNS);
    for t in &found {
        table.row(task_cells(t, now).to_vec());
    }
    table.print();
    match &cursor {
        None => println!(
            "{} {} task(s) of queue {queue} match {text:?}",
            found.len(),
            state.name()
        ),
        Some(c) => println!(
            "{} {} task(s) of queue {queue} match {text:?} so far; go on with --cursor '{c}'",
            found.len(),
            state.name()
        ),
    }
    Ok(())
}

async fn inspect(i: &Inspector, id: &str, queue: Option<&str>, json: bool) -> Result {
    if let Some(q) = queue {
        known_queue(i, q).await?;
    }
    let Some(d) = i.task(id, queue).await? else {
        return Err(format!(
            "no task {id} found (never enqueued, or finished and not kept: completed tasks are kept only with a completed retention)"
        )
        .into());
    };
    let t = &d.task;
    if json {
        let mut v = task_json(t, State::of(d.state).name());
        v["timeout_ms"] = json!(t.options.timeout.as_millis() as u64);
        v["depends_on"] = json!(t.options.depends_on.clone().unwrap_or_default());
        v["waiting_for"] = json!(d.waiting_for);
        v["dependents"] = json!(d
            .dependents
            .iter()
            .map(|(id, q)| json!({ "id": id, "queue": q }))
            .collect::<Vec<_>>());
        v["lease"] = match &d.lease {
            Some(l) => {
                json!({ "server": l.server, "token": l.token, "expires_at_ms": l.expires_at_ms })
            }
            None => Value::Null,
        };
        print_json(&v);
        return Ok(());
    }
    let now = now_ms();
    let mut rows: Vec<(&str, String)> = vec![
        ("id", t.id.clone()),
        ("type", t.task_type.clone()),
        ("queue", t.queue.clone()),
        ("state", State::of(d.state).name().into()),
        ("priority", t.options.priority.to_string()),
        (
            "attempts",
            format!(
                "{} failed of {} retries allowed",
                t.retry_cnt, t.options.max_retry
            ),
        ),
        ("timeout", format!("{:?}", t.options.timeout)),
        (
            "created",
            t.created_at_ms()
                .map_or("-".into(), |c| format!("{} ago", age(c, now))),
        ),
        (
            "unique key",
            t.options.unique_key.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "last error",
            t.last_error.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "last failed",
            t.last_failed_at
                .map_or("-".into(), |f| format!("{} ago", age(f, now))),
        ),
    ];
    if let Some(l) = &d.lease {
        rows.push(("running on", l.server.clone()));
        rows.push(("fencing token", l.token.to_string()));
        rows.push((
            "lease expires",
            l.expires_at_ms
                .map_or("-".into(), |e| format!("in {} ms", e.saturating_sub(now))),
        ));
    }
    let deps = t.options.depends_on.clone().unwrap_or_default();
    rows.push((
        "depends on",
        if deps.is_empty() {
            "-".into()
        } else {
            deps.join(", ")
        },
    ));
    if d.state == rediq::TaskState::Waiting {
        rows.push(("waiting for", d.waiting_for.join(", ")));
    }
    rows.push((
        "dependents",
        if d.dependents.is_empty() {
            "-".into()
        } else {
            d.dependents
                .iter()
                .map(|(id, q)| format!("{id} ({q})"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    rows.push(("payload", payload_text(&t.payload)));
    for (k, v) in rows {
        println!("{k:<14} {v}");
    }
    Ok(())
}

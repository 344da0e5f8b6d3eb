//! `rediq task …`: a page of a queue's tasks, cancel, retry.

use rediq::{CancelOutcome, Inspector};
use serde_json::{json, Value};

use super::{known_queue, Result};
use crate::cli::{State, TaskCmd};
use crate::output::{age, now_ms, payload_text, print_json, task_json, Table};

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
            let mut table = Table::new(&[
                "ID",
                "TYPE",
                "PRIORITY",
                "ATTEMPTS",
                "AGE",
                "LAST ERROR",
                "PAYLOAD",
            ]);
            for t in &tasks {
                table.row(vec![
                    t.id.clone(),
                    t.task_type.clone(),
                    t.options.priority.to_string(),
                    t.retry_cnt.to_string(),
                    t.created_at_ms().map_or("-".into(), |c| age(c, now)),
                    t.last_error.clone().unwrap_or_else(|| "-".into()),
                    payload_text(&t.payload),
                ]);
            }
            table.print();
            println!(
                "{} {} task(s) of queue {queue}, page {page} ({size} per page)",
                tasks.len(),
                state.name()
            );
            Ok(())
        }
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
    let mut table = Table::new(&["ID", "TYPE", "ATTEMPTS", "AGE", "LAST ERROR", "PAYLOAD"]);
    for t in &found {
        table.row(vec![
            t.id.clone(),
            t.task_type.clone(),
            t.retry_cnt.to_string(),
            t.created_at_ms().map_or("-".into(), |c| age(c, now)),
            t.last_error.clone().unwrap_or_else(|| "-".into()),
            payload_text(&t.payload),
        ]);
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

//! `rediq queue …` and `rediq stats`.

use std::io::{BufRead, IsTerminal, Write};

use rediq::{DailyStats, GroupLimits, Inspector, QueueLimits, QueueStats};
use serde_json::{json, Value};

use super::{known_queue, Result};
use crate::cli::{Limit, QueueCmd};
use crate::output::{bytes, limits_cell, limits_text, millis, print_json, queue_state, Table};

pub async fn run(i: &Inspector, cmd: QueueCmd, json: bool) -> Result {
    match cmd {
        QueueCmd::List => list(i, json).await,
        QueueCmd::Inspect { name, days } => inspect(i, &name, days, json).await,
        QueueCmd::Pause { name } => {
            known_queue(i, &name).await?;
            i.pause_queue(&name).await?;
            done(json, "paused", &name);
            Ok(())
        }
        QueueCmd::Resume { name } => {
            known_queue(i, &name).await?;
            i.resume_queue(&name).await?;
            done(json, "resumed", &name);
            Ok(())
        }
        QueueCmd::Flush { name, yes } => flush(i, &name, yes, json).await,
        QueueCmd::Groups { name, limit } => groups(i, &name, limit, json).await,
        QueueCmd::Limit {
            name,
            per_group,
            group,
            concurrency,
            rate,
            clear,
        } => {
            known_queue(i, &name).await?;
            let scope = match (per_group, group) {
                (true, _) => Scope::Rule,
                (false, Some(g)) => Scope::Group(g),
                (false, None) => Scope::Queue,
            };
            let groups = i.group_limits(&name).await?;
            let mut l = match &scope {
                Scope::Queue => i.queue_limits(&name).await?,
                Scope::Rule => groups.rule,
                Scope::Group(g) => groups.for_group(g),
            };
            let changed = clear || concurrency.is_some() || rate.is_some();
            if clear {
                l = QueueLimits::default();
            }
            match concurrency {
                Some(Limit::Set(n)) => l.concurrency = Some(n),
                Some(Limit::Remove) => l.concurrency = None,
                None => {}
            }
            match rate {
                Some(Limit::Set(r)) => l.rate = Some(r),
                Some(Limit::Remove) => l.rate = None,
                None => {}
            }
            if changed {
                match &scope {
                    Scope::Queue => i.set_queue_limits(&name, &l).await?,
                    Scope::Rule => i.set_group_limits(&name, &l).await?,
                    Scope::Group(g) if clear => i.set_group_override(&name, g, None).await?,
                    Scope::Group(g) => i.set_group_override(&name, g, Some(&l)).await?,
                }
            }
            let groups = i.group_limits(&name).await?;
            if let Scope::Group(g) = &scope {
                l = groups.for_group(g);
            }
            let verb = if changed { "set" } else { "are" };
            let what = match &scope {
                Scope::Queue => format!("limits of queue {name}"),
                Scope::Rule => format!("limits of every group of queue {name}"),
                Scope::Group(g) if groups.overrides.contains_key(g) => {
                    format!("limits of group {g} of queue {name} (its override)")
                }
                Scope::Group(g) => format!("limits of group {g} of queue {name} (the rule)"),
            };
            if json {
                let mut v = limits_json(&l);
                v["queue"] = json!(name);
                if let Scope::Group(g) = &scope {
                    v["group"] = json!(g);
                    v["override"] = json!(groups.overrides.contains_key(g));
                }
                if matches!(scope, Scope::Queue) {
                    v["groups"] = group_limits_json(&groups);
                }
                print_json(&v);
            } else {
                println!("{what} {verb}: {}", limits_text(&l));
                if matches!(scope, Scope::Queue) {
                    print_group_limits(&groups);
                }
            }
            Ok(())
        }
    }
}

/// What `queue limit` sets or shows.
enum Scope {
    Queue,
    Rule,
    Group(String),
}

/// The group rule and overrides as JSON: `{"rule": {...}, "overrides": {"acme": {...}}}`.
fn group_limits_json(g: &GroupLimits) -> Value {
    let overrides: serde_json::Map<String, Value> = g
        .overrides
        .iter()
        .map(|(name, l)| (name.clone(), limits_json(l)))
        .collect();
    json!({ "rule": limits_json(&g.rule), "overrides": overrides })
}

/// The group rule and overrides, one line each (nothing when neither is set).
fn print_group_limits(g: &GroupLimits) {
    if g.rule.is_empty() && g.overrides.is_empty() {
        return;
    }
    println!("{:<19} {}", "group rule", limits_text(&g.rule));
    for (name, l) in &g.overrides {
        println!("{:<19} {}", format!("group {name}"), limits_text(l));
    }
}

async fn groups(i: &Inspector, name: &str, limit: usize, json: bool) -> Result {
    known_queue(i, name).await?;
    let groups = i.groups(name, limit).await?;
    let limits = i.group_limits(name).await?;
    let now = rediq_now_ms();
    if json {
        let v: Vec<Value> = groups
            .iter()
            .map(|g| {
                json!({
                    "group": g.name,
                    "pending": g.pending,
                    "running": g.running,
                    "at_limit": g.at_limit,
                    "held_until_ms": g.held_until_ms,
                    "limits": limits_json(&limits.for_group(&g.name)),
                })
            })
            .collect();
        print_json(&json!({ "queue": name, "groups": v }));
        return Ok(());
    }
    let mut t = Table::new(&["GROUP", "PENDING", "RUNNING", "HELD", "LIMITS"]);
    for g in &groups {
        let held = match (g.at_limit, g.held_until_ms) {
            (true, _) => "at limit".to_string(),
            (false, Some(at)) => format!("{} more", millis(at.saturating_sub(now))),
            (false, None) => "-".to_string(),
        };
        t.row(vec![
            g.name.clone(),
            g.pending.to_string(),
            g.running.to_string(),
            held,
            limits.for_group(&g.name).to_string(),
        ]);
    }
    t.print();
    Ok(())
}

/// Unix ms by this machine's clock (a held group's time left is shown to the second or so).
fn rediq_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn done(json: bool, what: &str, queue: &str) {
    if json {
        print_json(&json!({ "queue": queue, "action": what, "ok": true }));
    } else {
        println!("{what} queue {queue}");
    }
}

/// A queue's counts as JSON (the fields docs/cli.md lists).
fn stats_json(s: &QueueStats) -> Value {
    json!({
        "queue": s.queue,
        "paused": s.paused,
        "partitions": s.partitions,
        "pending": s.pending,
        "active": s.active,
        "scheduled": s.delayed,
        "retry": s.retry,
        "waiting": s.waiting,
        "dead": s.dead,
        "completed": s.completed,
        "processed_total": s.processed_total,
        "failed_total": s.failed_total,
        "cancelled_total": s.cancelled_total,
        "dead_trimmed_total": s.dead_trimmed_total,
        "latency_ms": s.latency.as_millis() as u64,
        "limits": limits_json(&s.limits),
        "group_limits_rule": limits_json(&s.group_limits),
        "groups_pending": s.groups,
    })
}

async fn list(i: &Inspector, json: bool) -> Result {
    let all = i.all_queue_stats().await?;
    if json {
        print_json(&Value::Array(all.iter().map(stats_json).collect()));
        return Ok(());
    }
    let mut t = Table::new(&[
        "QUEUE",
        "STATE",
        "LATENCY",
        "PENDING",
        "ACTIVE",
        "SCHEDULED",
        "RETRY",
        "WAITING",
        "DEAD",
        "COMPLETED",
        "PROCESSED",
        "FAILED",
        "LIMITS",
    ]);
    for s in &all {
        t.row(vec![
            s.queue.clone(),
            queue_state(s.paused).into(),
            millis(s.latency.as_millis() as u64),
            s.pending.to_string(),
            s.active.to_string(),
            s.delayed.to_string(),
            s.retry.to_string(),
            s.waiting.to_string(),
            s.dead.to_string(),
            s.completed.to_string(),
            s.processed_total.to_string(),
            s.failed_total.to_string(),
            limits_cell(s),
        ]);
    }
    t.print();
    if all.is_empty() {
        println!("(no queues yet)");
    }
    Ok(())
}

async fn inspect(i: &Inspector, name: &str, days: u32, json: bool) -> Result {
    known_queue(i, name).await?;
    let s = i.queue_stats(name).await?;
    let memory = i.memory_usage(name).await?;
    let history = i.history(name, days).await?;
    let groups = i.group_limits(name).await?;
    if json {
        let mut v = stats_json(&s);
        v["memory_bytes"] = json!(memory);
        v["group_limits"] = group_limits_json(&groups);
        v["groups"] = json!(s.groups);
        v["history"] = history_json(&history);
        print_json(&v);
    } else {
        print_stats(&s);
        let memory = memory.map_or("unknown (Redis refuses MEMORY USAGE)".into(), bytes);
        println!("{:<19} {memory}", "memory");
        println!("{:<19} {}", "limits", limits_text(&s.limits));
        print_group_limits(&groups);
        if s.groups > 0 {
            println!(
                "{:<19} {} with tasks pending (rediq queue groups lists them)",
                "groups", s.groups
            );
        }
        println!();
        print_history(&history);
    }
    Ok(())
}

/// A queue's limits as JSON: `{"concurrency": 5, "rate": {"count": 100, "period_ms": 1000}}`,
/// `null` for a limit not set.
fn limits_json(l: &QueueLimits) -> Value {
    json!({
        "concurrency": l.concurrency,
        "rate": l.rate.map(|r| json!({ "count": r.count, "period_ms": r.period.as_millis() as u64 })),
    })
}

/// Counts per day as JSON: `[{"date": "2026-12-07", "processed": 1, "failed": 0}, …]`.
fn history_json(days: &[DailyStats]) -> Value {
    days.iter()
        .map(
            |d| json!({ "date": d.date.to_string(), "processed": d.processed, "failed": d.failed }),
        )
        .collect()
}

fn print_history(days: &[DailyStats]) {
    let mut t = Table::new(&["DATE (UTC)", "PROCESSED", "FAILED"]);
    for d in days {
        t.row(vec![
            d.date.to_string(),
            d.processed.to_string(),
            d.failed.to_string(),
        ]);
    }
    t.print();
}

fn print_stats(s: &QueueStats) {
    for (k, v) in stats_rows(s) {
        println!("{k:<19} {v}");
    }
}

/// A queue's counts as label and value, in the order `queue inspect` prints them.
fn stats_rows(s: &QueueStats) -> [(&'static str, String); 15] {
    [
        ("queue", s.queue.clone()),
        ("state", queue_state(s.paused).into()),
        ("partitions", s.partitions.to_string()),
        ("pending", s.pending.to_string()),
        ("active", s.active.to_string()),
        ("scheduled", s.delayed.to_string()),
        ("retry", s.retry.to_string()),
        ("waiting", s.waiting.to_string()),
        ("dead", s.dead.to_string()),
        ("completed", s.completed.to_string()),
        ("processed total", s.processed_total.to_string()),
        ("failed total", s.failed_total.to_string()),
        ("cancelled total", s.cancelled_total.to_string()),
        ("dead trimmed total", s.dead_trimmed_total.to_string()),
        ("latency", millis(s.latency.as_millis() as u64)),
    ]
}

async fn flush(i: &Inspector, name: &str, yes: bool, json: bool) -> Result {
    known_queue(i, name).await?;
    if !yes {
        let s = i.queue_stats(name).await?;
        let n = s.pending + s.active + s.delayed + s.retry + s.waiting + s.dead + s.completed;
        if !std::io::stdin().is_terminal() {
            return Err(format!(
                "flushing queue {name:?} removes its {n} task(s); pass --yes to confirm (no terminal to ask on)"
            )
            .into());
        }
        eprint!("Remove all {n} task(s) of queue {name} in every state? [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(format!("queue {name:?} not flushed").into());
        }
    }
    let c = i.flush_queue(name).await?;
    if json {
        print_json(&json!({
            "queue": name,
            "action": "flushed",
            "removed": {
                "pending": c.pending,
                "active": c.active,
                "scheduled": c.delayed,
                "retry": c.retry,
                "waiting": c.waiting,
                "dead": c.dead,
                "completed": c.completed,
            },
        }));
    } else {
        println!(
            "flushed queue {name}: removed {} pending, {} active, {} scheduled, {} retry, {} waiting, {} dead, {} completed",
            c.pending, c.active, c.delayed, c.retry, c.waiting, c.dead, c.completed
        );
    }
    Ok(())
}

/// `rediq stats [--queue q] [--days n]`: one queue's counts, or the sums over every queue,
/// with today's counts (and those of the last `days` days).
pub async fn stats(i: &Inspector, queue: Option<&str>, days: Option<u32>, json: bool) -> Result {
    let all = match queue {
        Some(q) => {
            known_queue(i, q).await?;
            vec![i.queue_stats(q).await?]
        }
        None => i.all_queue_stats().await?,
    };
    let mut total = QueueStats {
        queue: queue.unwrap_or_default().to_string(),
        paused: !all.is_empty() && all.iter().all(|s| s.paused),
        ..QueueStats::default()
    };
    // Summed by date: a queue read after midnight UTC has one day more than one read before.
    let mut by_day: std::collections::BTreeMap<_, (u64, u64)> = Default::default();
    for s in &all {
        total.pending += s.pending;
        total.active += s.active;
        total.delayed += s.delayed;
        total.retry += s.retry;
        total.waiting += s.waiting;
        total.dead += s.dead;
        total.completed += s.completed;
        total.processed_total += s.processed_total;
        total.failed_total += s.failed_total;
        total.cancelled_total += s.cancelled_total;
        total.dead_trimmed_total += s.dead_trimmed_total;
        total.partitions = s.partitions;
        total.latency = total.latency.max(s.latency);
        total.limits = s.limits;
        for d in i.history(&s.queue, days.unwrap_or(1)).await? {
            let e = by_day.entry(d.date).or_default();
            e.0 += d.processed;
            e.1 += d.failed;
        }
    }
    let keep = days.unwrap_or(1) as usize;
    let history: Vec<DailyStats> = by_day
        .iter()
        .skip(by_day.len().saturating_sub(keep))
        .map(|(date, (processed, failed))| DailyStats {
            date: *date,
            processed: *processed,
            failed: *failed,
        })
        .collect();
    let (today_done, today_failed) = history.last().map_or((0, 0), |d| (d.processed, d.failed));
    // Over every queue, a name, a pause flag and a partition count mean nothing.
    let whole = [
        "queue",
        "state",
        "partitions",
        "paused",
        "latency",
        "latency_ms",
        "limits",
    ];
    if json {
        let mut v = stats_json(&total);
        if let Some(o) = v.as_object_mut() {
            if queue.is_none() {
                o.retain(|k, _| !whole.contains(&k.as_str()));
            }
            o.insert("queues".into(), json!(all.len()));
            o.insert("processed_today".into(), json!(today_done));
            o.insert("failed_today".into(), json!(today_failed));
            if days.is_some() {
                o.insert("history".into(), history_json(&history));
            }
        }
        print_json(&v);
    } else {
        println!("{:<19} {}", "queues", all.len());
        for (k, v) in stats_rows(&total) {
            if queue.is_some() || !whole.contains(&k) {
                println!("{k:<19} {v}");
            }
        }
        println!("{:<19} {today_done}", "processed today");
        println!("{:<19} {today_failed}", "failed today");
        if days.is_some() && !history.is_empty() {
            println!();
            print_history(&history);
        }
    }
    Ok(())
}

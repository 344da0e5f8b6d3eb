//! The queues overview (`GET /`): one page of queues (50, by name, filtered by a part of the
//! name) with their counts, latency, totals, limits, memory and the last 14 days as a chart.
//! Paged so that it stays fast with thousands of queues: every read is per queue shown, and the
//! queues of a page are read concurrently over the one multiplexed connection.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures::future::try_join_all;
use maud::{html, Markup};
use serde::Deserialize;

use super::charts::{error_rate, rate_text, throughput};
use super::layout::{bytes, millis, page};
use super::views::redis_failure;
use super::{enc, qp, App};
use crate::{DailyStats, QueueStats};

/// Queues per page of the overview.
pub const QUEUES_PER_PAGE: usize = 50;
/// Days of history each row charts.
const DAYS: u32 = 14;

/// `?page=0&q=mail`.
#[derive(Deserialize)]
pub struct OverviewQuery {
    page: Option<usize>,
    /// Only queues whose name contains this.
    q: Option<String>,
}

/// One queue's row: its stats, history and memory (`None`: Redis refuses `MEMORY USAGE`).
struct Row {
    stats: QueueStats,
    days: Vec<DailyStats>,
    memory: Option<u64>,
}

/// `GET /`.
pub async fn overview(State(app): State<App>, Query(q): Query<OverviewQuery>) -> Response {
    let filter = q.q.as_deref().unwrap_or("").trim().to_string();
    let names = match app.inspector.queues().await {
        Ok(n) => n,
        Err(e) => return redis_failure(&app, &e),
    };
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| n.contains(filter.as_str()))
        .collect();
    let pages = names.len().div_ceil(QUEUES_PER_PAGE).max(1);
    let page_no = q.page.unwrap_or(0).min(pages - 1);
    let shown = &names[(page_no * QUEUES_PER_PAGE).min(names.len())
        ..((page_no + 1) * QUEUES_PER_PAGE).min(names.len())];
    let rows = match read(&app, shown).await {
        Ok(r) => r,
        Err(e) => return redis_failure(&app, &e),
    };
    // The page's queues together, day by day.
    let mut total: Vec<DailyStats> = rows.first().map(|r| r.days.clone()).unwrap_or_default();
    for r in rows.iter().skip(1) {
        for (t, d) in total.iter_mut().zip(&r.days) {
            t.processed += d.processed;
            t.failed += d.failed;
        }
    }
    let link = |p: usize| {
        let mut l = format!("{}?page={p}", app.link("/"));
        if !filter.is_empty() {
            l.push_str("&q=");
            l.push_str(&enc(&filter));
        }
        l
    };
    let body = html! {
        form.search method="get" action=(app.link("/")) {
            input name="q" value=(filter) placeholder="queue name contains…";
            " " button type="submit" { "Filter" }
        }
        @if rows.is_empty() {
            p { @if filter.is_empty() { "No queues yet." } @else { "No queue name contains " (filter) "." } }
        } @else {
            div.history {
                h3 { "Last " (DAYS) " days, the " (rows.len()) " queue(s) below: completed "
                     span.done { "■" } ", failed " span.failed { "■" }
                     " (error rate " (rate_text(error_rate(&total))) ")" }
                (throughput(&total, 560, 90, true))
            }
            table {
                tr {
                    th { "Queue" } th { "State" } th.n { "Latency" } th.n { "Pending" }
                    th.n { "Active" } th.n { "Scheduled" } th.n { "Retry" } th.n { "Waiting" }
                    th.n { "Dead" } th.n { "Completed" } th.n { "Processed" } th.n { "Failed" }
                    th { (DAYS) " days" } th.n { "Error rate" } th { "Limits" } th.n { "Memory" }
                }
                @for r in &rows {
                    (row(&app, r))
                }
            }
            p.pager {
                (names.len()) " queue(s) · page " (page_no + 1) " of " (pages) " "
                @if page_no > 0 { a href=(link(page_no - 1)) { "← previous" } " " }
                @if page_no + 1 < pages { a href=(link(page_no + 1)) { "next →" } }
            }
        }
    };
    page(&app, "Queues", body).into_response()
}

/// The rows of the queues shown: their stats in one pipelined read, their history and memory
/// concurrently.
async fn read(app: &App, shown: &[String]) -> crate::Result<Vec<Row>> {
    let i = &app.inspector;
    let stats = i.queue_stats_many(shown).await?;
    let days = try_join_all(shown.iter().map(|q| i.history(q, DAYS)));
    let memory = try_join_all(shown.iter().map(|q| i.memory_usage(q)));
    let (days, memory) = futures::try_join!(days, memory)?;
    Ok(stats
        .into_iter()
        .zip(days)
        .zip(memory)
        .map(|((stats, days), memory)| Row {
            stats,
            days,
            memory,
        })
        .collect())
}

fn row(app: &App, r: &Row) -> Markup {
    let s = &r.stats;
    html! {
        tr {
            td { a href=(app.link(&qp(&s.queue, ""))) { (s.queue) } }
            td { @if s.paused { span.paused { "paused" } } @else { "running" } }
            td.n { (millis(s.latency.as_millis() as u64)) }
            td.n { (s.pending) } td.n { (s.active) } td.n { (s.delayed) } td.n { (s.retry) }
            td.n { (s.waiting) } td.n { (s.dead) } td.n { (s.completed) }
            td.n { (s.processed_total) } td.n { (s.failed_total) }
            td { (throughput(&r.days, 84, 22, false)) }
            td.n { (rate_text(error_rate(&r.days))) }
            td { (s.limits) @if !s.group_limits.is_empty() { " · group " (s.group_limits) } }
            td.n { (r.memory.map_or_else(|| "-".into(), bytes)) }
        }
    }
}

//! Flow control on a queue's page: its limits, the rule for every group, the overrides of
//! named groups and the groups themselves, with forms that change a limit
//! (`POST /queues/{queue}/limits`) through the same `Inspector` calls as
//! `rediq queue limit` (`--per-group`, `--group NAME`).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::actions::{act, ActionForm};
use super::layout::time;
use super::{qp, App};
use crate::{GroupInfo, GroupLimits, QueueLimits};

/// The limit form's fields: which limits (`queue`, `rule` for every group, `group` for the
/// override of `group`), and the values (blank: no such limit).
#[derive(Deserialize)]
pub struct LimitForm {
    #[serde(flatten)]
    guard: ActionForm,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    rate: String,
}

/// Reads the form's values: a blank field is no limit; a value that does not read names
/// itself (as the CLI's `--concurrency` and `--rate` do).
fn parse(form: &LimitForm) -> crate::Result<QueueLimits> {
    let concurrency = match form.concurrency.trim() {
        "" | "none" => None,
        c => Some(c.parse::<u32>().map_err(|_| {
            crate::Error::validation(
                "concurrency limit",
                format!("{c:?} is not a count of tasks (leave it blank for no limit)"),
            )
        })?),
    };
    let rate = match form.rate.trim() {
        "" | "none" => None,
        r => Some(r.parse()?),
    };
    Ok(QueueLimits { concurrency, rate })
}

/// `POST /queues/{queue}/limits`: sets the queue's limits, the group rule, or one group's
/// override (a blank override removes it: the rule applies to the group again).
pub async fn set(
    State(app): State<App>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<LimitForm>,
) -> Response {
    let call = async {
        let l = parse(&form)?;
        let i = &app.inspector;
        Ok(match form.scope.as_str() {
            "queue" => {
                i.set_queue_limits(&queue, &l).await?;
                format!("limits of {queue}: {l}")
            }
            "rule" => {
                i.set_group_limits(&queue, &l).await?;
                format!("limits of every group of {queue}: {l}")
            }
            "group" if !form.group.is_empty() => {
                let g = &form.group;
                if l.is_empty() {
                    i.set_group_override(&queue, g, None).await?;
                    format!("group {g} follows the rule of {queue} again")
                } else {
                    i.set_group_override(&queue, g, Some(&l)).await?;
                    format!("limits of group {g}: {l}")
                }
            }
            other => {
                return Err(crate::Error::validation(
                    "limit scope",
                    format!("{other:?} is not queue, rule, or group with a group name"),
                ))
            }
        })
    };
    act(&app, &headers, &form.guard, &qp(&queue, ""), call).await
}

/// The flow-control section: what applies, the groups, and (unless read-only) the forms.
pub fn section(
    app: &App,
    queue: &str,
    limits: &QueueLimits,
    g: &GroupLimits,
    groups: &[GroupInfo],
) -> Markup {
    html! {
        h3 { "Flow control" }
        dl {
            dt { "Queue limits" } dd { (limits) }
            dt { "Every group" } dd { (g.rule) }
            @for (name, l) in &g.overrides {
                dt { "Group " (name) } dd { (l) }
            }
        }
        @if !app.read_only {
            (form(app, queue, "queue", None, limits, "Set the queue's limits"))
            (form(app, queue, "rule", None, &g.rule, "Set every group's limits"))
            (form(app, queue, "group", Some(""), &QueueLimits::default(), "Set one group's limits"))
        }
        @if !groups.is_empty() {
            table {
                tr { th { "Group" } th.n { "Pending" } th.n { "Running" } th { "Held" } th { "Limits" } }
                @for x in groups {
                    tr {
                        td { (x.name) } td.n { (x.pending) } td.n { (x.running) }
                        td { @if x.at_limit { "at limit" }
                             @else if let Some(t) = x.held_until_ms { "until " (time(t)) }
                             @else { "-" } }
                        td { (g.for_group(&x.name)) }
                    }
                }
            }
        }
    }
}

/// One limit form, filled with what applies now.
fn form(
    app: &App,
    queue: &str,
    scope: &str,
    group: Option<&str>,
    now: &QueueLimits,
    label: &str,
) -> Markup {
    html! {
        form.limits method="post" action=(app.link(&qp(queue, "/limits"))) {
            input type="hidden" name="csrf" value=(app.csrf);
            input type="hidden" name="scope" value=(scope);
            @if let Some(g) = group {
                label { "group " input name="group" value=(g) size="12" required; } " "
            }
            label { "concurrency " input name="concurrency" size="5" placeholder="none"
                    value=(now.concurrency.map(|c| c.to_string()).unwrap_or_default()); } " "
            label { "rate " input name="rate" size="9" placeholder="e.g. 100/1s"
                    value=(now.rate.map(|r| r.to_string()).unwrap_or_default()); } " "
            button type="submit" { (label) }
        }
    }
}

//! The scheduler: fires the ticks of periodic (cron) entries.
//!
//! Every server runs one, for the entries of every queue. A tick fires exactly once across all of
//! them: each scheduler that sees it due calls `cron_fire.lua`, which moves the entry's next tick
//! on and enqueues only if the tick it was asked to fire is still the entry's next one. Time is
//! Redis' clock, shared by all.
//!
//! A tick found more than [`MISSED_AFTER`] late (or two scheduler intervals, if that is longer)
//! is *missed*: every scheduler was down. Missed
//! ticks collapse into one: with [`MissedTicks::FireOnce`] (the default) that one fires, with
//! [`MissedTicks::Skip`] it does not; either way the next tick is the first one after now, so a
//! day of downtime does not fire a day of ticks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::service::{every, Service};
use super::Ctx;
use crate::broker::cron::Fired;
use crate::broker::record;
use crate::schedule::Schedule;
use crate::task::DEFAULT_UNIQUE_TTL;

/// How late a tick may fire and still count as on time.
pub const MISSED_AFTER: Duration = Duration::from_secs(2);

/// What to do with ticks missed while no scheduler ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MissedTicks {
    /// Fire once for all the missed ticks, then carry on from now (default).
    #[default]
    FireOnce,
    /// Fire none of them; carry on from now.
    Skip,
}

/// Most due entries handled per queue and round.
const BATCH: usize = 100;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    let interval = ctx.cfg.scheduler_interval;
    // The last error per queue, so that a lasting fault warns once, not every interval.
    let failing: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    Service::start("scheduler", move |stop| async move {
        every(stop, interval, || {
            let (ctx, failing) = (ctx.clone(), failing.clone());
            async move {
                let round = async {
                    let now = ctx.broker.time_ms().await?;
                    Ok::<_, crate::Error>((now, ctx.broker.cron_queues().await?))
                };
                let (now, queues) = match round.await {
                    Ok(r) => r,
                    Err(e) => return note(&failing, "", Some(&e)),
                };
                note(&failing, "", None);
                // One queue at a time: a queue whose keys are broken does not stop the others.
                for queue in queues {
                    let r = fire_due(&ctx, &queue, now).await;
                    note(&failing, &queue, r.err().as_ref());
                }
            }
        })
        .await
    })
}

/// Logs a failure of `queue` ("" = all of them) when it starts or changes, and its end.
fn note(failing: &Mutex<HashMap<String, String>>, queue: &str, error: Option<&crate::Error>) {
    let mut f = failing.lock().unwrap_or_else(|p| p.into_inner());
    match error {
        Some(e) => {
            let text = e.to_string();
            if f.get(queue) != Some(&text) {
                tracing::warn!(%queue, error = %text, "firing periodic tasks failed; retrying every interval");
                f.insert(queue.to_string(), text);
            }
        }
        None => {
            if f.remove(queue).is_some() {
                tracing::info!(%queue, "firing periodic tasks works again");
            }
        }
    }
}

/// Fires the due ticks of one queue's entries. An entry whose firing fails (a corrupt key) does
/// not hold up the others: the first error is returned after all were tried.
async fn fire_due(ctx: &Ctx, queue: &str, now: u64) -> crate::Result<()> {
    let mut first_error = None;
    for (id, tick, entry) in ctx.broker.cron_due(queue, now, BATCH).await? {
        let Some(entry) = entry else { continue };
        let schedule = match Schedule::parse(&entry.expr) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%queue, entry = %id, error = %e, "periodic entry has an invalid schedule");
                continue;
            }
        };
        let mut task = match record::decode(queue, &entry.template) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(%queue, entry = %id, error = %e, "periodic entry has an undecodable task");
                continue;
            }
        };
        let grace = MISSED_AFTER.max(ctx.cfg.scheduler_interval * 2);
        let (fire, next) = plan(tick, now, &schedule, ctx.cfg.missed_ticks, grace);
        task.id = uuid::Uuid::now_v7().to_string();
        let rec = record::encode(&task)?;
        let unique = task.options.unique_key.as_deref().map(|k| {
            let ttl = task.options.unique_ttl.unwrap_or(DEFAULT_UNIQUE_TTL);
            (k, ttl.as_secs().max(1))
        });
        match ctx
            .broker
            .cron_fire(queue, &id, tick, next, &rec, unique, fire, &task.task_type)
            .await
        {
            Err(e) => {
                first_error.get_or_insert(e);
            }
            Ok(fired) => match fired {
                Fired::Now => {
                    tracing::info!(%queue, entry = %id, tick, task = %task.id, "periodic task fired");
                    if let Some(m) = &ctx.metrics {
                        m.cron_fired(crate::broker::logical(queue), &id);
                    }
                }
                Fired::Skipped => tracing::info!(%queue, entry = %id, tick, "missed tick skipped"),
                Fired::Duplicate => {
                    tracing::info!(%queue, entry = %id, tick, "tick fired, but its unique key is still held: no task enqueued");
                    if let Some(m) = &ctx.metrics {
                        m.cron_fired(crate::broker::logical(queue), &id);
                    }
                }
                Fired::Claimed => {}
            },
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Whether tick `tick` fires and which tick comes after it, seen at `now` (Unix ms); a tick
/// later than `grace` is missed.
pub(crate) fn plan(
    tick: u64,
    now: u64,
    schedule: &Schedule,
    policy: MissedTicks,
    grace: Duration,
) -> (bool, Option<u64>) {
    if now.saturating_sub(tick) > grace.as_millis() as u64 {
        (policy == MissedTicks::FireOnce, schedule.next_after(now))
    } else {
        (true, schedule.next_after(tick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_time_ticks_fire_and_advance_from_the_tick() {
        let s = Schedule::parse("@every 10s").unwrap();
        // A little late (1.5 s): fires, and the next tick is the following one, not one lost.
        assert_eq!(
            plan(100_000, 101_500, &s, MissedTicks::Skip, MISSED_AFTER),
            (true, Some(110_000))
        );
    }

    #[test]
    fn missed_ticks_collapse_into_one_or_none() {
        let s = Schedule::parse("@every 10s").unwrap();
        // An hour of downtime: one firing at most, then carry on from now.
        let now = 100_000 + 3_600_000 + 3_000;
        assert_eq!(
            plan(100_000, now, &s, MissedTicks::FireOnce, MISSED_AFTER),
            (true, Some(3_710_000))
        );
        assert_eq!(
            plan(100_000, now, &s, MissedTicks::Skip, MISSED_AFTER),
            (false, Some(3_710_000))
        );
    }
}

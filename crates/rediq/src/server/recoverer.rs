//! The recoverer: re-delivers the tasks of servers whose lease lapsed because they died or
//! stalled.
//!
//! Leases belong to servers: each server's heartbeat keeps its lease on every queue alive. When
//! a lease lapses, the recoverer (of any server) reads that server's active tasks and gives each
//! back. A recovered task counts a failed attempt ("lease expired"), so a task that kills every
//! worker it touches ends in the dead-letter queue instead of looping forever. It goes back to
//! pending at the front of its priority (where it was when fetched), or to the dead-letter queue when
//! its retries are used up. Both scripts check again that the lease is still lapsed and the
//! token unchanged, so a server that comes back to life meanwhile keeps its tasks.
//!
//! Lease deadlines are Redis time. If the Redis clock jumps forward (a VM restored, an NTP step)
//! by more than a quarter of the lease, every lease looks lapsed at once although every server
//! lives; the recoverer notices the jump (Redis time against this process's monotonic clock)
//! and holds off for one lease, in which the live servers' heartbeats renew their leases on the
//! new clock. Only the servers that are really gone are then recovered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::service::{every, Service};
use super::Ctx;
use crate::broker::record;
use crate::task::now_ms;

/// Most lapsed servers handled per queue and round.
const BATCH: usize = 50;

pub(crate) fn start(ctx: Arc<Ctx>) -> Service {
    let interval = ctx.cfg.recover_interval;
    let clock = Arc::new(Mutex::new(ClockWatch::new(ctx.cfg.lease)));
    Service::start("recoverer", move |stop| async move {
        every(stop, interval, || {
            let (ctx, clock) = (ctx.clone(), clock.clone());
            async move {
                for (i, (q, _)) in ctx.cfg.queues.iter().enumerate() {
                    if let Err(e) = recover_queue(&ctx, &clock, i, q).await {
                        tracing::warn!(queue = %q, error = %e, "recovering expired leases failed");
                    }
                }
            }
        })
        .await
    })
}

/// Watches the Redis clock against this process's monotonic clock.
#[derive(Debug)]
struct ClockWatch {
    lease: Duration,
    /// The previous sample: Redis time (Unix ms) and when the call that read it was sent.
    last: Option<(u64, Instant)>,
    /// No recovery before this instant (after a jump).
    hold_until: Option<Instant>,
}

impl ClockWatch {
    fn new(lease: Duration) -> ClockWatch {
        ClockWatch {
            lease,
            last: None,
            hold_until: None,
        }
    }

    /// Takes a sample of the Redis clock, read by a call sent at `sent` whose reply was handled
    /// at `at`; returns whether recovery may act on it. Redis read its clock somewhere in
    /// between, so the most time that can have passed since the previous sample is from the
    /// previous call's sending to this reply: a reply handled late (the runtime busy, a handler
    /// blocking a thread) only widens that bound and is never taken for a jump.
    fn may_recover(&mut self, redis_ms: u64, sent: Instant, at: Instant) -> bool {
        if let Some((prev_ms, prev_sent)) = self.last.replace((redis_ms, sent)) {
            let redis = redis_ms.saturating_sub(prev_ms);
            let here = at.saturating_duration_since(prev_sent).as_millis() as u64;
            let ahead = redis.saturating_sub(here);
            if ahead > (self.lease / 4).as_millis() as u64 {
                tracing::warn!(jump_ms = ahead, hold = ?self.lease, "the Redis clock jumped forward: every lease looks lapsed; recovery waits one lease for live servers to renew theirs");
                self.hold_until = Some(at + self.lease);
            }
        }
        self.hold_until.is_none_or(|until| at >= until)
    }
}

async fn recover_queue(
    ctx: &Ctx,
    clock: &Mutex<ClockWatch>,
    q: usize,
    queue: &str,
) -> crate::Result<()> {
    let count = |task_type: &str, dead: bool| {
        if let Some(m) = &ctx.metrics {
            let m = m.task(q, task_type);
            m.recovered.inc();
            if dead {
                m.dead.inc();
            }
        }
    };
    let sent = Instant::now();
    let (redis_now, lapsed) = ctx.broker.expired_servers_at(queue, BATCH).await?;
    let may = clock.lock().unwrap_or_else(|p| p.into_inner()).may_recover(
        redis_now,
        sent,
        Instant::now(),
    );
    if !may {
        return Ok(());
    }
    for server in lapsed {
        let (held, garbage) = ctx.broker.held_all(queue, &server).await?;
        // An entry without the token|record shape was never written by a script of ours; it
        // is set aside on its own (fenced by its exact value and the lapsed lease), or it would
        // keep the lapsed lease, and itself, there forever.
        for entry in &garbage {
            let reason = "active entry without the token|record shape";
            let dead = record::undecodable(&entry.1, reason);
            if ctx.broker.bury_active(queue, &server, entry, &dead).await? {
                tracing::error!(queue, %server, reason, "unparsable active entry of a lapsed lease moved to the dead-letter queue");
                count(record::UNDECODABLE_TYPE, true);
            }
        }
        let mut back = Vec::new();
        let mut back_types = Vec::new();
        for e in held {
            match record::decode(queue, &e.record) {
                Ok(mut task) => {
                    task.retry_cnt += 1;
                    task.last_error = Some("lease expired: its server died or stalled".into());
                    task.last_failed_at = Some(now_ms());
                    let rec = record::encode_traced(&task, record::trace_of(&e.record).as_deref())?;
                    if task.retry_cnt <= task.options.max_retry {
                        back.push((e.id, e.token, Some(rec)));
                        back_types.push((task.id, task.task_type, task.retry_cnt));
                    } else if ctx
                        .broker
                        .kill(
                            queue,
                            &server,
                            &e.id,
                            e.token,
                            &rec,
                            task.options.unique_key.as_deref(),
                            ctx.cfg.dead,
                            true,
                        )
                        .await?
                    {
                        tracing::warn!(task_id = %task.id, task_type = %task.task_type, queue, %server, attempts = task.retry_cnt, "lease lapsed and retries used up: task moved to the dead-letter queue");
                        count(&task.task_type, true);
                    }
                }
                Err(reason) => {
                    let dead = record::undecodable(&e.record, &reason);
                    if ctx
                        .broker
                        .kill(
                            queue,
                            &server,
                            &e.id,
                            e.token,
                            &dead,
                            None,
                            ctx.cfg.dead,
                            true,
                        )
                        .await?
                    {
                        tracing::error!(queue, %server, %reason, "undecodable record of a lapsed lease moved to the dead-letter queue");
                        count(record::UNDECODABLE_TYPE, true);
                    }
                }
            }
        }
        // Also with nothing to move back: this drops the lapsed lease of a server that holds
        // nothing any more.
        // Logged and counted once the move landed: requeue.lua refuses a task whose server
        // renewed its lease meanwhile, or whose token changed.
        for i in ctx
            .broker
            .requeue_which(queue, &server, &back, true)
            .await?
        {
            let Some((id, task_type, attempt)) = back_types.get(i) else {
                continue;
            };
            tracing::warn!(task_id = %id, %task_type, queue, %server, attempt, "task recovered from a lapsed lease: back to pending");
            count(task_type, false);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_jump_of_the_redis_clock_holds_recovery_for_one_lease() {
        let lease = Duration::from_secs(30);
        let mut w = ClockWatch::new(lease);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert!(w.may_recover(1_000_000, t0, t0 + ms(1)));
        // 5 s later on both clocks, give or take a few ms: fine.
        let t1 = t0 + Duration::from_secs(5);
        assert!(w.may_recover(1_005_020, t1, t1 + ms(1)));
        // Redis jumped an hour ahead while 5 s passed here: hold.
        let t2 = t0 + Duration::from_secs(10);
        assert!(!w.may_recover(1_005_020 + 3_605_000, t2, t2 + ms(1)));
        assert!(!w.may_recover(1_005_020 + 3_610_000, t2 + ms(5_000), t2 + ms(5_001)));
        // One lease after the jump recovery resumes.
        assert!(w.may_recover(1_005_020 + 3_635_000, t2 + lease, t2 + lease + ms(1)));
        // A jump backwards only makes leases last longer: nothing to hold.
        let t3 = t2 + lease + ms(5_000);
        assert!(w.may_recover(900_000, t3, t3 + ms(1)));
    }

    /// Seen in the fault suite: a reply handled 3 s late (handlers blocking the runtime) made
    /// the next, prompt sample look 3 s ahead: "the Redis clock jumped forward", untrue.
    #[test]
    fn a_reply_handled_late_is_no_jump() {
        let lease = Duration::from_secs(2);
        let mut w = ClockWatch::new(lease);
        let t0 = Instant::now();
        // Sent at t0, Redis answered at once (its clock: 1,000,000), handled 3 s later.
        assert!(w.may_recover(1_000_000, t0, t0 + Duration::from_secs(3)));
        // The next call is sent and handled promptly, 3.5 s after t0.
        let t1 = t0 + Duration::from_millis(3_500);
        assert!(w.may_recover(1_003_500, t1, t1 + Duration::from_millis(1)));
    }
}

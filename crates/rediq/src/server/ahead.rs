//! The lease-ahead buffer of a fetch loop (see `fetcher`): tasks leased before a slot is free
//! for them, and the pace of task starts that sizes it.
//!
//! Why: a fetch script call costs Redis a fixed ~30 µs however few tasks it leases, and the
//! server a round trip; under a backlog of quick tasks slots free up a few at a time. Holding
//! about one round trip's worth of starts ahead lets fetches carry dozens of tasks. Slow tasks
//! (fewer than one start per [`LOOKAHEAD`]) get none held ahead, and a task that finds no free
//! slot within [`MAX_HOLD`] goes back to Redis, so a server does not sit on tasks that another
//! server's idle slots could run. A buffered task is leased like a running one: the heartbeat
//! extends it, a crash gives it back when the lease lapses, a shutdown gives it back at once,
//! and a cancel reaches it (its handle is registered when it is leased).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{worker, Ctx};

/// How much of its recent pace a fetch loop leases ahead: about one fetch round trip's worth of
/// task starts, so the next batch arrives before the buffer runs dry.
pub(crate) const LOOKAHEAD: Duration = Duration::from_millis(2);

/// The longest a task waits in the lease-ahead buffer: when no slot frees up for it that long
/// (the tasks turned slow, or the handlers hang), the buffer goes back to Redis, where another
/// server's idle slots can take it.
pub(crate) const MAX_HOLD: Duration = Duration::from_millis(20);

/// A leased task waiting for a free slot.
pub(crate) struct Ready {
    pub queue: usize,
    pub token: u64,
    pub record: Vec<u8>,
    pub cancel: Arc<Notify>,
    /// When it was leased.
    pub at: Instant,
}

/// The lease-ahead buffer of one fetch loop and the pace that sizes it.
#[derive(Default)]
pub(crate) struct Ahead {
    pub ready: VecDeque<Ready>,
    pub pace: Pace,
    /// The last fetch found less than it asked for.
    pub drained: bool,
}

impl Ahead {
    /// How many tasks to hold ahead: the starts of the last [`LOOKAHEAD`] at the current pace,
    /// at most `cap`; none while the queues run dry.
    pub fn lookahead(&mut self, cap: usize) -> usize {
        if self.drained || cap == 0 {
            return 0;
        }
        // Rounded down: a loop starting fewer than one task per LOOKAHEAD holds none ahead.
        let per_sec = self.pace.per_sec();
        ((per_sec * LOOKAHEAD.as_secs_f64()) as usize).min(cap)
    }

    /// Gives buffered tasks back to the head of their queues (requeue.lua, which refuses any
    /// whose lease was taken over meanwhile): all of them at shutdown (`leased_before` None),
    /// else those leased before the given time. A task cancelled while it waited is removed
    /// as cancelled instead. Whatever Redis does not take back (three tries) stays leased by
    /// this server, and another server re-delivers it when the lease lapses.
    pub async fn give_back(&mut self, ctx: &Ctx, leased_before: Option<Instant>) {
        type Item = (Vec<u8>, u64, Option<Vec<u8>>);
        let mut by_queue: Vec<Vec<Item>> = vec![Vec::new(); ctx.cfg.queues.len()];
        while let Some(t) = self.ready.front() {
            if leased_before.is_some_and(|before| t.at >= before) {
                break;
            }
            let Some(t) = self.ready.pop_front() else {
                break;
            };
            let id = crate::broker::record::raw_id(&t.record).to_vec();
            ctx.cancels.unregister(t.queue, &id, t.token);
            if worker::cancel_requested(&t.cancel)
                && worker::cancel_unstarted(ctx, t.queue, t.token, &t.record).await
            {
                continue;
            }
            by_queue[t.queue].push((id, t.token, None));
        }
        for (q, items) in by_queue.iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let qname = ctx.queue_name(q);
            let mut given = false;
            for attempt in 0..3u64 {
                match ctx
                    .broker
                    .requeue(qname, &ctx.server_id, items, false)
                    .await
                {
                    Ok(n) => {
                        tracing::debug!(queue = qname, tasks = n, "leased-ahead tasks given back");
                        given = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(queue = qname, error = %e, attempt, tasks = items.len(), "could not give back leased-ahead tasks; retrying");
                        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
                    }
                }
            }
            if !given {
                tracing::warn!(queue = qname, tasks = items.len(), "leased-ahead tasks not given back; they run again when this server's lease lapses");
                continue;
            }
            for (id, token, _) in items {
                ctx.inflight.remove(q, id, *token);
            }
        }
    }
}

/// Task starts per second of one fetch loop, averaged over windows of at least a millisecond.
pub(crate) struct Pace {
    since: Instant,
    started: u64,
    per_sec: f64,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            since: Instant::now(),
            started: 0,
            per_sec: 0.0,
        }
    }
}

impl Pace {
    pub fn started(&mut self, n: u64) {
        self.started = self.started.saturating_add(n);
    }

    fn per_sec(&mut self) -> f64 {
        let window = self.since.elapsed();
        if window >= Duration::from_millis(1) {
            let sample = self.started as f64 / window.as_secs_f64();
            self.per_sec = (self.per_sec + sample) / 2.0;
            self.started = 0;
            self.since = Instant::now();
        }
        self.per_sec
    }

    /// The queues ran dry: the pace starts again from nothing.
    pub fn idle(&mut self) {
        *self = Pace::default();
    }
}

//! The fetcher: leases batches of tasks and hands each to a worker.
//!
//! It takes as many free concurrency slots as it can (at least one), leases that many tasks in
//! one script call, trying the queues in weighted-random order (or strictly in order), and
//! spawns a worker per task. When every queue is empty it blocks on the queues' wake markers
//! (BZPOPMIN on a dedicated connection), so an idle server costs nothing and there is no
//! polling sleep. A server of one queue pipelines a fetch behind that wait, so a new task comes
//! back with the wake itself, without a second round trip for the fetch.
//!
//! Lease-ahead: a fetch script call costs Redis a fixed ~30 µs however few tasks it leases, and
//! the server a round trip. While a backlog is served quickly, slots free up a few at a time,
//! so the fetcher also leases ahead: as many tasks as its workers started in the last
//! 2 ms (at most `ServerBuilder::prefetch`), kept in a local buffer (`super::ahead`) and
//! handed to the next free slots.
//!
//! Faults stay inside the queue that has them: a queue whose fetch fails is retried on its own
//! backoff while the others are served, and a wake marker of the wrong type (which would fail
//! the blocking wait of every queue) is replaced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

mod idle;

use super::ahead::{Ahead, Ready, MAX_HOLD};
use super::service::{Service, Stop};
use super::{worker, Ctx};
use crate::broker::{record, Fetched};
use crate::processor::Mux;
use idle::{idle, Waiter};

/// The longest a blocking wait lasts before the fetcher looks again on its own.
const IDLE_WAIT: Duration = Duration::from_secs(1);

pub(crate) fn start(
    ctx: Arc<Ctx>,
    mux: Arc<Mux>,
    slots: Arc<Semaphore>,
    acks: mpsc::Sender<super::acker::Done>,
    hard_stop: watch::Receiver<bool>,
) -> Service {
    Service::start("fetcher", move |stop| {
        run(ctx, mux, slots, acks, hard_stop, stop)
    })
}

async fn run(
    ctx: Arc<Ctx>,
    mux: Arc<Mux>,
    slots: Arc<Semaphore>,
    acks: mpsc::Sender<super::acker::Done>,
    hard_stop: watch::Receiver<bool>,
    mut stop: Stop,
) {
    let mut ahead = Ahead::default();
    let hand = Hand {
        ctx: &ctx,
        mux: &mux,
        acks: &acks,
        hard_stop: &hard_stop,
    };
    serve(&hand, &slots, &mut ahead, &mut stop).await;
    ahead.give_back(&ctx, None).await;
}

/// What a fetch loop needs to start a worker.
struct Hand<'a> {
    ctx: &'a Arc<Ctx>,
    mux: &'a Arc<Mux>,
    acks: &'a mpsc::Sender<super::acker::Done>,
    hard_stop: &'a watch::Receiver<bool>,
}

impl Hand<'_> {
    fn spawn(&self, t: Ready, permit: OwnedSemaphorePermit) {
        let (ctx, mux, acks, hard_stop) = (
            self.ctx.clone(),
            self.mux.clone(),
            self.acks.clone(),
            self.hard_stop.clone(),
        );
        let leased = worker::Leased {
            queue: t.queue,
            token: t.token,
            record: t.record,
            cancel: t.cancel,
        };
        // The worker's future is ~2 KB (the handler's state, its timeout, the middleware
        // chain); spawned as it is, tokio copies it into the task cell more than once, which
        // showed as memmove at the top of the client's profile. Spawned small, it is built
        // once, on the heap, when the task first runs.
        tokio::spawn(async move {
            Box::pin(worker::run(ctx, mux, leased, permit, acks, hard_stop)).await
        });
    }

    /// Takes the tasks of one fetch reply: each is tracked, then started on one of `permits`
    /// or, with none left (or the server stopping), kept in the lease-ahead buffer. Returns how
    /// many tasks the reply leased.
    fn take(
        &self,
        q: usize,
        mut batch: Option<Fetched>,
        permits: &mut Vec<OwnedSemaphorePermit>,
        ahead: &mut Ahead,
        health: &mut Health,
    ) -> usize {
        let ctx = self.ctx;
        // Garbage at the head of pending that cannot be set aside would otherwise be fetched
        // again at once (fetch.lua re-sets the wake marker), in a loop.
        match batch.as_mut().and_then(|b| b.bury_error.take()) {
            Some(e) => health.failed(q, ctx.queue_name(q), &e),
            None => health.succeeded(q, ctx.queue_name(q)),
        }
        if let Some(b) = batch.as_ref() {
            if b.held_for.is_some() || b.held.any() || b.held.grouped {
                ctx.inflight.mark_limited(q);
            }
            if let Some(wait) = b.held_for {
                // Held by the concurrency limit alone: a local release may end it early.
                let by_slots = b.held.rate + b.held.group_rate == 0;
                health.hold(q, wait, by_slots.then(|| ctx.inflight.released(q)));
            }
        }
        if let (Some(m), Some(b)) = (&ctx.metrics, batch.as_ref()) {
            if b.held.any() {
                m.held(q, b.held);
            }
        }
        // Garbage the fetch moved to the dead-letter queue is dead-lettered like an
        // undecodable record a worker kills, and counted the same way.
        if let (Some(m), Some(n)) = (&ctx.metrics, batch.as_ref().map(|b| b.buried)) {
            if n > 0 {
                m.task(q, record::UNDECODABLE_TYPE).dead.inc_by(n as u64);
            }
        }
        let mut got = 0;
        for (token, record) in batch.into_iter().flat_map(|b| {
            let token = b.token;
            b.records.into_iter().map(move |r| (token, r))
        }) {
            let id = crate::broker::record::raw_id(&record);
            let cancel = ctx.cancels.register(q, id, token);
            ctx.inflight.insert(q, id.to_vec(), token);
            got += 1;
            let t = Ready {
                queue: q,
                token,
                record,
                cancel,
                at: Instant::now(),
            };
            // Once the server stops, the buffer's give-back takes them all in one call instead
            // of a worker each.
            let stopping = ctx.stopping.load(std::sync::atomic::Ordering::SeqCst);
            match permits.pop() {
                Some(p) if !stopping => {
                    self.spawn(t, p);
                    ahead.pace.started(1);
                }
                _ => ahead.ready.push_back(t),
            }
        }
        got
    }
}

/// The fetch loop; returns when the server stops (the caller gives back what is buffered).
async fn serve(hand: &Hand<'_>, slots: &Arc<Semaphore>, ahead: &mut Ahead, stop: &mut Stop) {
    let ctx = hand.ctx;
    let names: Vec<String> = ctx.cfg.queues.iter().map(|(q, _)| q.clone()).collect();
    let mut health = Health::new(names.len());
    let mut waiter = Waiter::new(
        &ctx.broker,
        names.clone(),
        ctx.server_id.clone(),
        ctx.cfg.lease,
    );
    loop {
        if ctx.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let hold_until = ahead.ready.front().map(|t| t.at + MAX_HOLD);
        let first = tokio::select! {
            _ = stop.stopped() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // the semaphore is never closed; treat it as a stop
            },
            _ = tokio::time::sleep_until(hold_until.unwrap_or_else(Instant::now).into()), if hold_until.is_some() => {
                ahead.give_back(ctx, Some(Instant::now() - MAX_HOLD)).await;
                ahead.pace.idle();
                continue;
            }
        };
        let mut permits: Vec<OwnedSemaphorePermit> = vec![first];
        while permits.len() < ctx.cfg.fetch_batch {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        // A buffered task held past MAX_HOLD goes back before any is started: after a stall
        // (the process stopped, the machine swapped) both branches above are ready and
        // `select!` may take the slot first, and a task leased seconds ago may have had its
        // lease lapse and run elsewhere meanwhile.
        // (The clock is read only while the buffer holds a task.)
        if let Some(old) = ahead.ready.front().map(|t| t.at + MAX_HOLD) {
            let now = Instant::now();
            if old <= now {
                ahead.give_back(ctx, Some(now - MAX_HOLD)).await;
            }
        }
        // Tasks leased ahead go first: they were at the head of their queues.
        while !permits.is_empty() {
            let Some(t) = ahead.ready.pop_front() else {
                break;
            };
            if let Some(p) = permits.pop() {
                hand.spawn(t, p);
                ahead.pace.started(1);
            }
        }
        let lookahead = ahead.lookahead(ctx.cfg.prefetch);
        // Every slot is busy and the buffer holds at least half of what the pace asks for:
        // nothing to fetch yet.
        if permits.is_empty() && ahead.ready.len() * 2 >= lookahead.max(1) {
            continue;
        }
        let asked = permits.len() + lookahead.saturating_sub(ahead.ready.len());

        let mut got = 0usize;
        let (mut tried, mut failed) = (0usize, 0usize);
        for q in order(&ctx.cfg.groups, ctx.cfg.strict) {
            if got == asked {
                break;
            }
            health.release(q, ctx.inflight.released(q));
            // A queue whose fetch keeps failing waits out its own backoff; the others go on.
            if !health.due(q) {
                continue;
            }
            // A limited queue is asked for free slots only (no lease-ahead), but for one task
            // at least: tasks leased ahead from other queues may have taken every free slot,
            // and a limited queue asked for nothing would never run beside a busy one.
            let want = if ctx.inflight.is_limited(q) {
                (asked - got).min(permits.len().max(1))
            } else {
                asked - got
            };
            tried += 1;
            // Held until the leased tasks are tracked: the heartbeat's orphan sweep waits for it.
            let ticket = ctx.inflight.begin_fetch();
            match ctx
                .broker
                .fetch(ctx.queue_name(q), &ctx.server_id, want, ctx.cfg.lease)
                .await
            {
                Ok(batch) => got += hand.take(q, batch, &mut permits, ahead, &mut health),
                Err(e) => {
                    failed += 1;
                    health.failed(q, ctx.queue_name(q), &e);
                }
            }
            drop(ticket);
        }
        // The queues had less than asked for: no lookahead until a fetch comes back full again
        // (a queue served as fast as it fills would otherwise cost a fetch per freed slot).
        if asked > 0 {
            ahead.drained = got < asked;
        }
        let idle_slots = !permits.is_empty();
        drop(permits);

        // Back to the top while every slot is busy. Slots left idle mean the fetch came back
        // short, the queues ran dry: wait on the wake markers at once instead of asking again
        // (an empty fetch per pickup). Nothing is missed: a task enqueued since sets its
        // queue's marker, and fetch.lua sets it again when it leaves tasks behind.
        if !idle_slots {
            continue;
        }
        ahead.pace.idle();
        // Every queue tried failed (Redis itself is unreachable, most likely): the backoffs
        // decide when to try again.
        let wait = health.until_next().unwrap_or(IDLE_WAIT).min(IDLE_WAIT);
        if tried > 0 && failed == tried {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        // A queue held by its limits is due again soon (the next token, a slot's poll): a
        // plain timer, since a blocking wait's timeout is only as fine as Redis's event loop
        // (up to 100 ms late), which would lose a rate limit's starts. The other queues are
        // fetched again when it fires.
        if let Some(held) = health.until_held().filter(|d| *d < IDLE_WAIT) {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = tokio::time::sleep(held) => {}
                // One of this server's tasks was let go of: perhaps a slot of a held queue.
                _ = ctx.inflight.freed() => {}
            }
            continue;
        }
        // Every queue was empty: sleep on the wake markers until an enqueue or forward sets one
        // (or a queue in backoff is due again). A server of one queue whose fetch just worked
        // has the fetch ride along with the wait.
        if names.len() == 1 && tried == 1 && failed == 0 {
            if idle(hand, slots, ahead, &mut health, &mut waiter, stop).await {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = stop.stopped() => return,
            _ = waiter.wait(&ctx.broker, wait) => {}
        }
    }
}

/// Per-queue fetch failures: a queue that fails is skipped for a backoff that doubles from
/// 50 ms up to [`MAX_BACKOFF`], while the other queues are served as usual.
struct Health {
    failures: Vec<u32>,
    retry_at: Vec<Option<Instant>>,
    /// Whether `retry_at` is a limit's hold (not a failure's backoff).
    held: Vec<bool>,
    /// For a hold by the concurrency limit: the queue's release count at the hold (a release
    /// of one of its tasks by this server frees a slot, so the hold ends early).
    held_at_release: Vec<Option<u64>>,
}

/// The longest a failing queue waits between two fetch attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Health {
    fn new(n: usize) -> Health {
        Health {
            failures: vec![0; n],
            retry_at: vec![None; n],
            held: vec![false; n],
            held_at_release: vec![None; n],
        }
    }

    fn due(&self, q: usize) -> bool {
        self.retry_at[q].is_none_or(|at| Instant::now() >= at)
    }

    fn failed(&mut self, q: usize, name: &str, e: &crate::Error) {
        self.failures[q] += 1;
        let n = self.failures[q];
        let backoff = (Duration::from_millis(50) * 2u32.pow(n.min(6) - 1)).min(MAX_BACKOFF);
        self.retry_at[q] = Some(Instant::now() + backoff);
        self.held[q] = false;
        // The first failure, then one line per ~minute at most while it lasts.
        if n == 1 || n.is_multiple_of(30) {
            tracing::warn!(queue = name, error = %e, failures = n, "fetch failed; this queue is retried with backoff, the others are served as usual");
        }
    }

    fn succeeded(&mut self, q: usize, name: &str) {
        if self.failures[q] > 0 {
            tracing::info!(queue = name, after = self.failures[q], "fetch works again");
        }
        self.failures[q] = 0;
        self.retry_at[q] = None;
        self.held[q] = false;
    }

    /// The queue's limits (concurrency, rate) allow nothing now: skip it for `wait`, as a
    /// queue in backoff is skipped, without counting a failure. Its tasks stay pending and
    /// occupy no slot; the other queues are served meanwhile.
    fn hold(&mut self, q: usize, wait: Duration, released: Option<u64>) {
        self.retry_at[q] = Some(Instant::now() + wait);
        self.held[q] = true;
        self.held_at_release[q] = released;
    }

    /// Ends a concurrency hold early when this server has let go of one of the queue's tasks
    /// since: that freed a slot (Redis applied it before the release was counted).
    fn release(&mut self, q: usize, released: u64) {
        if self.held[q] && self.held_at_release[q].is_some_and(|at| released > at) {
            self.retry_at[q] = None;
            self.held_at_release[q] = None;
        }
    }

    /// Time until the next held queue may be asked again, if a queue is held by its limits.
    fn until_held(&self) -> Option<Duration> {
        let now = Instant::now();
        self.retry_at
            .iter()
            .zip(&self.held)
            .filter(|(_, h)| **h)
            .filter_map(|(at, _)| *at)
            .map(|at| at.saturating_duration_since(now))
            .min()
    }

    /// Time until the next queue in backoff is due, if any is.
    fn until_next(&self) -> Option<Duration> {
        let now = Instant::now();
        self.retry_at
            .iter()
            .flatten()
            .map(|at| at.saturating_duration_since(now))
            .min()
    }
}

/// The order in which the physical queues are tried this round: the configured queues as
/// listed when strict, else in a weighted-random permutation (a queue's chance to come first is
/// proportional to its weight, and every queue comes at some place, so none starves); the
/// partitions of a partitioned queue follow each other from a random one on, so each gets its
/// turn first as often as the others.
pub(crate) fn order(groups: &[(Vec<usize>, u32)], strict: bool) -> Vec<usize> {
    let mut picked: Vec<usize> = (0..groups.len()).collect();
    if !strict && groups.len() > 1 {
        let mut left = picked;
        picked = Vec::with_capacity(groups.len());
        while !left.is_empty() {
            let total: u64 = left.iter().map(|&i| u64::from(groups[i].1)).sum();
            let mut pick = rand::random_range(0..total.max(1));
            let mut chosen = 0;
            for (pos, &i) in left.iter().enumerate() {
                let w = u64::from(groups[i].1);
                if pick < w {
                    chosen = pos;
                    break;
                }
                pick -= w;
            }
            picked.push(left.remove(chosen));
        }
    }
    let mut out = Vec::new();
    for g in picked {
        let members = &groups[g].0;
        let start = match members.len() {
            0 | 1 => 0,
            n => rand::random_range(0..n),
        };
        out.extend(members.iter().cycle().skip(start).take(members.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_order_follows_weights() {
        let qs = vec![(vec![0], 6), (vec![1], 3), (vec![2], 1)];
        let mut first = [0u32; 3];
        for _ in 0..10_000 {
            let o = order(&qs, false);
            assert_eq!(o.len(), 3);
            first[o[0]] += 1;
        }
        assert!((5_500..6_500).contains(&first[0]), "{first:?}");
        assert!((2_500..3_500).contains(&first[1]), "{first:?}");
        assert!((700..1_300).contains(&first[2]), "{first:?}");
        assert_eq!(order(&qs, true), vec![0, 1, 2]);
    }

    #[test]
    fn partitions_take_turns_and_share_their_queue_weight() {
        // "a" (weight 3) has partitions 0, 1, 2; "b" (weight 1) is physical queue 3.
        let qs = vec![(vec![0, 1, 2], 3), (vec![3], 1)];
        let mut first = [0u32; 4];
        for _ in 0..12_000 {
            let o = order(&qs, false);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3], "every physical queue once: {o:?}");
            first[o[0]] += 1;
        }
        // "a" comes first 3 times in 4, spread evenly over its partitions.
        for p in &first[..3] {
            assert!((2_700..3_300).contains(p), "{first:?}");
        }
        assert!((2_700..3_300).contains(&first[3]), "{first:?}");
        let strict = order(&qs, true);
        assert_eq!(strict[3], 3, "strict: b only after every partition of a");
    }
}

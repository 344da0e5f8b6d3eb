//! The blocking wait of an idle fetcher: one connection per fetch loop, parked in `BZPOPMIN`
//! on the wake markers of its queues. A server of one queue pipelines a fetch behind the wait
//! ([`idle`]), so a task enqueued while it idles comes back with the wake; at shutdown that
//! wait is ended with `CLIENT UNBLOCK` and what its fetch leased is given back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Hand, Health, IDLE_WAIT};
use crate::broker::{BlockingConnection, Broker, Waited};
use crate::server::ahead::Ahead;
use crate::server::service::Stop;

/// How long a stopping fetcher waits for the fetch behind its ended wait before it abandons it
/// (Redis does not answer): whatever that fetch leased then goes back when the lease lapses,
/// as for every call a shutdown cannot finish in time.
const UNBLOCK_WAIT: Duration = Duration::from_secs(2);

/// The idle fetch loop of a server with one queue: blocks on the queue's wake marker with a
/// fetch for the free slots pipelined behind the wait (`Broker::wait_then_fetch`), so a task
/// enqueued meanwhile is leased in the round trip that brings the wake, and again while those
/// fetches come back short. Returns true when the server stops; the tasks a stopping fetch
/// leased are in the buffer then, which the caller gives back. Returns false to hand back to
/// the fetch loop (a fetch came back full, failed, or put the queue in backoff).
pub(super) async fn idle(
    hand: &Hand<'_>,
    slots: &Arc<Semaphore>,
    ahead: &mut Ahead,
    health: &mut Health,
    waiter: &mut Waiter,
    stop: &mut Stop,
) -> bool {
    let ctx = hand.ctx;
    loop {
        if ctx.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        // A queue in backoff waits it out in the fetch loop, not in a wait cut short.
        if !health.due(0) {
            return false;
        }
        let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
        while permits.len() < ctx.cfg.fetch_batch {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let asked = permits.len();
        if asked == 0 {
            return false;
        }
        tokio::select! {
            connected = waiter.connect(&ctx.broker) => if !connected { return false },
            _ = stop.stopped() => return true,
        }
        let unblock = waiter.client_id;
        // Held until the leased tasks are tracked: the heartbeat's orphan sweep waits for it.
        let ticket = ctx.inflight.begin_fetch();
        let (waited, stopped) = {
            let fetch = waiter.wait_then_fetch(&ctx.broker, ctx.queue_name(0), asked, IDLE_WAIT);
            tokio::pin!(fetch);
            tokio::select! {
                biased;
                w = &mut fetch => (w, false),
                _ = stop.stopped() => {
                    // End the wait now, so that the fetch behind it runs and its tasks are
                    // given back with the buffer, not left leased to a server that has left.
                    let ended = end_wait(&ctx.broker, unblock);
                    let w = tokio::time::timeout(IDLE_WAIT + UNBLOCK_WAIT, async {
                        tokio::select! {
                            biased;
                            w = &mut fetch => w,
                            () = ended => fetch.await,
                        }
                    })
                    .await;
                    (w.ok().flatten(), true)
                }
            }
        };
        let Some(waited) = waited else {
            return stopped;
        };
        let fetch_failed = waited.fetched.is_none();
        let got = match waited.fetched {
            Some(batch) => hand.take(0, batch, &mut permits, ahead, health),
            None => 0,
        };
        drop(ticket);
        drop(permits);
        if let Some(e) = waited.wait_error {
            waiter.failed(&ctx.broker, e).await;
        }
        // A fetch that failed: the fetch loop's plain fetch deals with what made it fail.
        if stopped || fetch_failed {
            return stopped;
        }
        ahead.drained = got < asked;
        if got == asked {
            return false;
        }
        ahead.pace.idle();
    }
}

/// Ends the blocking wait of connection `id` (`CLIENT UNBLOCK`), then never resolves. The
/// unblock goes out on another connection than the wait, so it may reach Redis first and end
/// nothing: it is sent again until it ends a wait. Without an id, or without the `CLIENT`
/// permission, the wait runs out by itself (at most [`IDLE_WAIT`]).
async fn end_wait(broker: &Broker, id: Option<i64>) {
    if let Some(id) = id {
        for _ in 0..100 {
            match broker.unblock(id).await {
                Ok(true) => break,
                Ok(false) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => {
                    tracing::debug!(error = %e, "CLIENT UNBLOCK refused; the blocking wait runs out by itself");
                    break;
                }
            }
        }
    }
    std::future::pending::<()>().await
}

/// The blocking wait of an idle fetcher, on its own connection. A wake marker of the wrong type
/// makes the one BZPOPMIN over all markers fail every time: such a marker is replaced, as every
/// script that sets one does.
pub(super) struct Waiter {
    names: Vec<String>,
    conn: Option<BlockingConnection>,
    /// The connection's Redis client id, for ending its wait at shutdown (`CLIENT UNBLOCK`);
    /// `None` when Redis would not tell.
    client_id: Option<i64>,
    server: String,
    lease: Duration,
}

impl Waiter {
    pub(super) fn new(names: Vec<String>, server: String, lease: Duration) -> Waiter {
        Waiter {
            names,
            conn: None,
            client_id: None,
            server,
            lease,
        }
    }

    /// Opens the blocking connection unless it is open; false (after a short pause) when it
    /// cannot be opened.
    async fn connect(&mut self, broker: &Broker) -> bool {
        if self.conn.is_some() {
            return true;
        }
        match broker.blocking_connection().await {
            Ok(mut c) => {
                self.client_id = Broker::client_id(&mut c).await.ok();
                self.conn = Some(c);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the blocking connection");
                tokio::time::sleep(Duration::from_millis(500)).await;
                false
            }
        }
    }

    /// `Broker::wait_then_fetch` on the blocking connection; `None` when no reply came (the
    /// connection is dropped, as in [`Waiter::wait`]).
    async fn wait_then_fetch(
        &mut self,
        broker: &Broker,
        queue: &str,
        n: usize,
        timeout: Duration,
    ) -> Option<Waited> {
        let conn = self.conn.as_mut()?;
        match broker
            .wait_then_fetch(conn, queue, &self.server, n, self.lease, timeout)
            .await
        {
            Ok(w) => Some(w),
            Err(e) => {
                self.failed(broker, e).await;
                None
            }
        }
    }

    pub(super) async fn wait(&mut self, broker: &Broker, timeout: Duration) {
        if !self.connect(broker).await {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Err(e) = Broker::wait_for_work(conn, &self.names, timeout).await else {
            return;
        };
        self.failed(broker, e).await;
    }

    /// After a failed wait: a broken connection is dropped (the next wait opens another), and
    /// wake markers of the wrong type are replaced.
    async fn failed(&mut self, broker: &Broker, e: crate::Error) {
        if e.is_connection_problem() {
            tracing::warn!(error = %e, "blocking wait failed; reconnecting");
            self.conn = None;
            self.client_id = None;
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
        // Redis answered with an error: repair the markers it refused.
        match broker.repair_wake_markers(&self.names).await {
            Ok(broken) if !broken.is_empty() => {
                for (queue, kind) in broken {
                    tracing::error!(%queue, held = %kind, "the queue's wake marker was not a sorted set: replaced");
                }
            }
            other => {
                let check = other.err().map(|e| e.to_string());
                tracing::warn!(error = %e, ?check, "blocking wait failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

//! The blocking wait of an idle fetcher: one connection per fetch loop (per queue on a
//! cluster), parked in `BZPOPMIN` on the wake markers of its queues. A server of one queue pipelines a fetch behind the wait
//! ([`idle`]), so a task enqueued while it idles comes back with the wake; at shutdown that
//! wait is ended with `CLIENT UNBLOCK` and what its fetch leased is given back.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
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
            connected = waiter.connect_single(&ctx.broker) => if !connected { return false },
            _ = stop.stopped() => return true,
        }
        let unblock = waiter.unblock_target(&ctx.broker);
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
            waiter.failed(&ctx.broker, 0, e).await;
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

/// Opens a blocking connection for `names`; `None` (after a short pause, so that a Redis that
/// does not answer is not asked in a tight loop) when it cannot.
async fn open(broker: &Broker, names: &[String]) -> Option<BlockingConnection> {
    match broker.blocking_connection(names).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the blocking connection");
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        }
    }
}

/// Ends the blocking wait of connection `id` (`CLIENT UNBLOCK`), then never resolves. The
/// unblock goes out on another connection than the wait, so it may reach Redis first and end
/// nothing: it is sent again until it ends a wait. Without an id, or without the `CLIENT`
/// permission, the wait runs out by itself (at most [`IDLE_WAIT`]).
async fn end_wait(broker: &Broker, (id, node): (Option<i64>, Option<(String, u16)>)) {
    if let Some(id) = id {
        for _ in 0..100 {
            match broker.unblock(id, node.as_ref()).await {
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

/// The blocking wait of an idle fetcher, on connections of its own: one over all the queues'
/// wake markers, or, on a cluster, one per queue (a blocking command cannot wait on keys of
/// several slots). A wait that did not end when [`Waiter::wait`] returned stays armed, and is
/// taken up by the next call, so a connection never has two waits queued on it. A wake
/// marker of the wrong type makes a BZPOPMIN over it fail every time: such a marker is
/// replaced, as every script that sets one does.
pub(super) struct Waiter {
    groups: Vec<Group>,
    armed: FuturesUnordered<BoxFuture<'static, Armed>>,
    server: String,
    lease: Duration,
}

/// One blocking connection and the queues it waits on.
struct Group {
    names: Vec<String>,
    /// `None` while closed, or while an armed wait holds it.
    conn: Option<BlockingConnection>,
    /// The connection's Redis client id, for ending its wait at shutdown (`CLIENT UNBLOCK`);
    /// `None` when Redis would not tell.
    client_id: Option<i64>,
    armed: bool,
}

/// A wait that ended: which group, its connection back, and what the wait said.
type Armed = (usize, Option<BlockingConnection>, crate::Result<bool>);

impl Waiter {
    /// A waiter over `names`: one connection for all, or one per queue when the broker says
    /// so (a cluster).
    pub(super) fn new(
        broker: &Broker,
        names: Vec<String>,
        server: String,
        lease: Duration,
    ) -> Waiter {
        let groups = if broker.blocks_per_queue() {
            names.into_iter().map(|n| vec![n]).collect()
        } else {
            vec![names]
        };
        Waiter {
            groups: groups
                .into_iter()
                .map(|names| Group {
                    names,
                    conn: None,
                    client_id: None,
                    armed: false,
                })
                .collect(),
            armed: FuturesUnordered::new(),
            server,
            lease,
        }
    }

    /// Drops group `g`'s connection when it reaches a master that was since replaced (a
    /// demoted master may answer for seconds, and a wait there hears of no new task).
    fn drop_stale(&mut self, broker: &Broker, g: usize) {
        let group = &mut self.groups[g];
        if group
            .conn
            .as_ref()
            .is_some_and(|c| !broker.blocking_is_current(c))
        {
            tracing::info!("the Redis master moved; the blocking wait follows it");
            group.conn = None;
            group.client_id = None;
        }
    }

    /// Opens group `g`'s connection unless it is open; false (after a short pause) when it
    /// cannot be opened.
    async fn connect(&mut self, broker: &Broker, g: usize) -> bool {
        self.drop_stale(broker, g);
        let group = &mut self.groups[g];
        if group.conn.is_some() {
            return true;
        }
        group.conn = open(broker, &group.names).await;
        group.conn.is_some()
    }

    /// Readies the single queue's connection for [`Waiter::wait_then_fetch`]: a wait still
    /// armed on it is waited out first.
    async fn connect_single(&mut self, broker: &Broker) -> bool {
        while self.groups[0].armed {
            match self.armed.next().await {
                Some(done) => self.disarm(broker, done).await,
                None => self.groups[0].armed = false,
            }
        }
        if !self.connect(broker, 0).await {
            return false;
        }
        let group = &mut self.groups[0];
        if let (None, Some(c)) = (group.client_id, group.conn.as_mut()) {
            group.client_id = Broker::client_id(c).await.ok();
        }
        true
    }

    /// What ends the single queue's wait at shutdown: its client id and node; no id when the
    /// connection reaches a master that was since replaced (the id would name another client
    /// on the new one).
    fn unblock_target(&self, broker: &Broker) -> (Option<i64>, Option<(String, u16)>) {
        let g = &self.groups[0];
        match &g.conn {
            Some(c) if broker.blocking_is_current(c) => (g.client_id, c.node.clone()),
            _ => (None, None),
        }
    }

    /// `Broker::wait_then_fetch` on the single queue's connection; `None` when no reply came
    /// (the connection is dropped, as after a failed [`Waiter::wait`]).
    async fn wait_then_fetch(
        &mut self,
        broker: &Broker,
        queue: &str,
        n: usize,
        timeout: Duration,
    ) -> Option<Waited> {
        let conn = self.groups[0].conn.as_mut()?;
        match broker
            .wait_then_fetch(conn, queue, &self.server, n, self.lease, timeout)
            .await
        {
            Ok(w) => Some(w),
            Err(e) => {
                self.failed(broker, 0, e).await;
                None
            }
        }
    }

    /// Waits until a queue signals work or `timeout` passes.
    pub(super) async fn wait(&mut self, broker: &Broker, timeout: Duration) {
        // Each wait opens its own connection when it needs one, inside its future: a shard
        // that does not answer delays its own queue's wait, not the others'.
        for g in 0..self.groups.len() {
            if self.groups[g].armed {
                continue;
            }
            self.drop_stale(broker, g);
            let group = &mut self.groups[g];
            let (conn, names, broker) = (group.conn.take(), group.names.clone(), broker.clone());
            group.armed = true;
            self.armed.push(Box::pin(async move {
                let conn = match conn {
                    Some(c) => Some(c),
                    None => open(&broker, &names).await,
                };
                let Some(mut conn) = conn else {
                    return (g, None, Ok(false));
                };
                let r = Broker::wait_for_work(&mut conn, &names, timeout).await;
                (g, Some(conn), r)
            }));
        }
        // One connection: its BZPOPMIN times out by itself. Several: the first to end does,
        // and the others stay armed.
        let first = if self.groups.len() == 1 {
            self.armed.next().await
        } else {
            tokio::time::timeout(timeout, self.armed.next())
                .await
                .ok()
                .flatten()
        };
        if let Some(done) = first {
            self.disarm(broker, done).await;
        }
        while let Some(Some(done)) = self.armed.next().now_or_never() {
            self.disarm(broker, done).await;
        }
    }

    /// Takes back the connection of a wait that ended (a fresh one has no client id yet).
    async fn disarm(&mut self, broker: &Broker, (g, conn, r): Armed) {
        let group = &mut self.groups[g];
        group.armed = false;
        if conn.is_some() && group.conn.is_none() {
            group.client_id = None;
        }
        group.conn = conn;
        if let Err(e) = r {
            self.failed(broker, g, e).await;
        }
    }

    /// After a failed wait: a broken connection, or one to a node that no longer serves the
    /// queue (a failover, a moved slot), is dropped (the next wait opens another, to the node
    /// that serves it now), and wake markers of the wrong type are replaced.
    async fn failed(&mut self, broker: &Broker, g: usize, e: crate::Error) {
        let group = &mut self.groups[g];
        if e.is_connection_problem() || e.is_topology_change() {
            if e.is_topology_change() {
                tracing::info!(error = %e, "the node no longer serves the queue (a failover or a moved slot); reconnecting to the one that does");
            } else {
                tracing::warn!(error = %e, "blocking wait failed; reconnecting");
            }
            group.conn = None;
            group.client_id = None;
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
        // Redis answered with an error: repair the markers it refused.
        match broker.repair_wake_markers(&group.names).await {
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

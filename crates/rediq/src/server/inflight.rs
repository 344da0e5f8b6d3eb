//! What a running server tracks in memory about the tasks it holds: their fencing tokens
//! (what the heartbeat extends), the fetch calls on their way, and the cancellation handles of
//! running handlers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Tasks this server holds a lease on, with their fencing tokens: the heartbeat extends exactly
/// these leases. It also tracks the fetch calls on their way, so that the heartbeat (on its own
/// thread) does not take a task the fetch script leased, but whose reply the fetcher has not
/// handled yet, for an orphan.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    map: Mutex<HashMap<(usize, Vec<u8>), u64>>,
    fetches: Mutex<FetchTickets>,
    /// Per queue: tasks this server let go of (acknowledged, retried, given back ...), after
    /// Redis applied it. A queue held at its concurrency limit has a slot again then.
    released: Mutex<Vec<u64>>,
    /// Notified at each release.
    freed: tokio::sync::Notify,
    /// Per queue: until when it counts as limited (a limit held back one of its fetches
    /// lately). The fetcher then asks it for free slots only (no lease-ahead, which would keep
    /// its few slots in a busy server's buffer), and the acknowledger sends its acks at once
    /// (a slot is reused only after its ack reached Redis).
    limited_until: Mutex<Vec<Option<std::time::Instant>>>,
}

/// How long a queue counts as limited after a limit last held back one of its fetches.
const LIMITED_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Fetch calls on their way: each gets the next ticket number when it starts.
#[derive(Debug, Default)]
struct FetchTickets {
    next: u64,
    open: std::collections::BTreeSet<u64>,
}

/// A fetch call on its way; dropping it (reply handled, or the call abandoned) ends it.
pub(crate) struct FetchTicket<'a> {
    owner: &'a InFlight,
    number: u64,
}

impl Drop for FetchTicket<'_> {
    fn drop(&mut self) {
        self.owner.tickets().open.remove(&self.number);
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, Vec<u8>), u64>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map stays valid.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tickets(&self) -> std::sync::MutexGuard<'_, FetchTickets> {
        // As above: a poisoned lock leaves the tickets valid.
        self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a fetch call as on its way until the ticket is dropped, which must happen only
    /// after the tasks of its reply were inserted.
    pub fn begin_fetch(&self) -> FetchTicket<'_> {
        let mut t = self.tickets();
        let number = t.next;
        t.next += 1;
        t.open.insert(number);
        FetchTicket {
            owner: self,
            number,
        }
    }

    /// A mark in time: every fetch call started before now has a smaller ticket.
    pub fn fetch_mark(&self) -> u64 {
        self.tickets().next
    }

    /// Whether every fetch call started before `mark` has been handled.
    pub fn fetches_done_before(&self, mark: u64) -> bool {
        self.tickets().open.first().is_none_or(|&n| n >= mark)
    }

    /// Whether this delivery (queue, id, token) is still tracked.
    pub fn holds(&self, queue: usize, id: &[u8], token: u64) -> bool {
        self.lock().get(&(queue, id.to_vec())) == Some(&token)
    }

    pub fn insert(&self, queue: usize, id: Vec<u8>, token: u64) {
        self.lock().insert((queue, id), token);
    }

    /// Forgets a task, unless a newer delivery of it (another token) has replaced the entry.
    pub fn remove(&self, queue: usize, id: &[u8], token: u64) {
        let mut m = self.lock();
        let key = (queue, id.to_vec());
        if m.get(&key) == Some(&token) {
            m.remove(&key);
            drop(m);
            let mut r = self.released.lock().unwrap_or_else(|p| p.into_inner());
            if r.len() <= queue {
                r.resize(queue + 1, 0);
            }
            r[queue] += 1;
            drop(r);
            self.freed.notify_waiters();
        }
    }

    /// A limit held back one of `queue`'s fetches.
    pub fn mark_limited(&self, queue: usize) {
        let mut l = self.limited_until.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() <= queue {
            l.resize(queue + 1, None);
        }
        l[queue] = Some(std::time::Instant::now() + LIMITED_FOR);
    }

    /// Whether a limit held back one of `queue`'s fetches lately.
    pub fn is_limited(&self, queue: usize) -> bool {
        let l = self.limited_until.lock().unwrap_or_else(|p| p.into_inner());
        l.get(queue)
            .copied()
            .flatten()
            .is_some_and(|at| std::time::Instant::now() < at)
    }

    /// How many tasks of `queue` this server has let go of so far.
    pub fn released(&self, queue: usize) -> u64 {
        let r = self.released.lock().unwrap_or_else(|p| p.into_inner());
        r.get(queue).copied().unwrap_or(0)
    }

    /// Resolves at the next release of any task.
    pub async fn freed(&self) {
        self.freed.notified().await
    }

    /// Held tasks grouped by queue.
    pub fn snapshot(&self) -> HashMap<usize, Vec<(Vec<u8>, u64)>> {
        let mut out: HashMap<usize, Vec<(Vec<u8>, u64)>> = HashMap::new();
        for ((q, id), t) in self.lock().iter() {
            out.entry(*q).or_default().push((id.clone(), *t));
        }
        out
    }
}

/// (queue index, task id) → the cancellation handles of its running handlers, by fencing token.
/// Usually one; two when a task whose lease was taken over is delivered to this same server
/// again while its first run still runs, and a cancel must reach both.
type CancelMap = HashMap<(usize, Vec<u8>), Vec<(u64, Arc<tokio::sync::Notify>)>>;

/// Cancellation handles of the tasks whose handlers run on this server.
#[derive(Debug, Default)]
pub(crate) struct Cancels {
    map: Mutex<CancelMap>,
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, CancelMap> {
        // A poisoned lock only means a panic elsewhere while holding it; the map stays valid.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, queue: usize, id: &[u8], token: u64) -> Arc<tokio::sync::Notify> {
        let n = Arc::new(tokio::sync::Notify::new());
        self.lock()
            .entry((queue, id.to_vec()))
            .or_default()
            .push((token, n.clone()));
        n
    }

    /// Forgets the handle of one run (the one with `token`), leaving other runs' handles.
    pub fn unregister(&self, queue: usize, id: &[u8], token: u64) {
        let mut m = self.lock();
        let key = (queue, id.to_vec());
        if let Some(runs) = m.get_mut(&key) {
            runs.retain(|(t, _)| *t != token);
            if runs.is_empty() {
                m.remove(&key);
            }
        }
    }

    /// Signals every run of a task on this server; returns whether one runs here.
    pub fn cancel(&self, queue: usize, id: &[u8]) -> bool {
        match self.lock().get(&(queue, id.to_vec())) {
            Some(runs) => {
                for (_, n) in runs {
                    n.notify_one();
                }
                !runs.is_empty()
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The map used to be keyed by (queue, id) alone: a second run of the same id on this
    /// server replaced the first run's handle, and the first run's end then removed the
    /// second's, so a cancel could no longer reach the run still going.
    #[tokio::test]
    async fn cancel_reaches_every_run_of_an_id() {
        let c = Cancels::default();
        let first = c.register(0, b"id", 1);
        let second = c.register(0, b"id", 2);
        c.unregister(0, b"id", 1);
        assert!(c.cancel(0, b"id"), "the second run is no longer reachable");
        tokio::time::timeout(Duration::from_secs(1), second.notified())
            .await
            .expect("the second run was not signalled");
        drop(first);
        c.unregister(0, b"id", 2);
        assert!(!c.cancel(0, b"id"));
    }

    /// A task leased ahead is registered before its handler starts: a cancel that arrives
    /// while it waits in the buffer must still be seen when the handler starts waiting.
    #[tokio::test]
    async fn a_cancel_before_the_handler_starts_is_kept() {
        let c = Cancels::default();
        let handle = c.register(0, b"id", 7);
        assert!(c.cancel(0, b"id"), "a registered task is reachable");
        tokio::time::timeout(Duration::from_secs(1), handle.notified())
            .await
            .expect("the cancel made before anyone waited was lost");
    }
}

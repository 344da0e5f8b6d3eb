//! The lifecycle every background component of the server shares: `start` backgrounds it (or
//! `start_thread`, on a thread of its own), `stop_by` signals it and returns once it has fully
//! stopped or its deadline passed, and is harmless to call twice.
//! Shutdown is then one ordered walk over the services.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Handed to a running service: tells it when to stop.
#[derive(Clone, Debug)]
pub(crate) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once a stop was requested.
    pub async fn stopped(&mut self) {
        // An error means the sender is gone, which also means: stop.
        let _ = self.0.wait_for(|s| *s).await;
    }
}

/// A started background component.
#[derive(Debug)]
pub(crate) struct Service {
    name: &'static str,
    stop: watch::Sender<bool>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Service {
    /// Spawns `body`, which must return soon after its [`Stop`] fires.
    pub fn start<F, Fut>(name: &'static str, body: F) -> Service
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(body(Stop(rx)));
        Service {
            name,
            stop: tx,
            handle: Mutex::new(Some(handle)),
        }
    }

    /// Like [`Service::start`], but on a thread of its own with a one-thread runtime: the
    /// service keeps running while handlers block every thread of the shared runtime (a
    /// handler calling `std::thread::sleep`, say). `body` must build its own Redis connection
    /// on that runtime ([`Broker::detached`](crate::broker::Broker::detached)).
    pub fn start_thread<F, Fut>(name: &'static str, body: F) -> Service
    where
        F: FnOnce(Stop) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (tx, rx) = watch::channel(false);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name(format!("rediq-{name}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(body(Stop(rx))),
                    Err(e) => {
                        tracing::error!(service = name, error = %e, "cannot build the service's runtime")
                    }
                }
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            tracing::error!(service = name, error = %e, "cannot start the service's thread");
        }
        // Waiting for the thread's signal is what `stop` awaits (a dropped sender counts too).
        let handle = tokio::spawn(async move {
            let _ = done_rx.await;
        });
        Service {
            name,
            stop: tx,
            handle: Mutex::new(Some(handle)),
        }
    }

    /// Requests a stop and waits until the service has ended, but only until `deadline`: a
    /// service stuck on a Redis that stopped answering is then abandoned (aborted; a thread is
    /// left to end by itself), so shutdown stays bounded. Returns whether it ended in time. A
    /// second call returns at once.
    pub async fn stop_by(&self, deadline: Instant) -> bool {
        let _ = self.stop.send(true);
        let handle = self.handle.lock().await.take();
        let Some(mut h) = handle else { return true };
        match tokio::time::timeout_at(deadline, &mut h).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(service = self.name, error = %e, "service ended abnormally");
                true
            }
            Err(_) => {
                h.abort();
                tracing::warn!(
                    service = self.name,
                    "service did not stop in time (is Redis answering?): abandoned"
                );
                false
            }
        }
    }
}

/// Runs `tick` every `interval` until stopped. Used by the periodic services.
pub(crate) async fn every<F, Fut>(mut stop: Stop, interval: Duration, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep(interval) => tick().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn stop_waits_and_is_harmless_twice() {
        let ticks = Arc::new(AtomicU32::new(0));
        let t = ticks.clone();
        let s = Service::start("test", move |stop| async move {
            every(stop, Duration::from_millis(5), || {
                let t = t.clone();
                async move {
                    t.fetch_add(1, Ordering::SeqCst);
                }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(40)).await;
        let far = Instant::now() + Duration::from_secs(60);
        assert!(s.stop_by(far).await);
        let after = ticks.load(Ordering::SeqCst);
        assert!(after > 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), after, "ticked after stop");
        assert!(s.stop_by(far).await);
    }
}

//! The lifecycle every background component of the server shares: `start` backgrounds it,
//! `stop` signals it and returns only once it has fully stopped, and is harmless to call twice.
//! Shutdown is then one ordered walk over the services.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

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

    /// Requests a stop and waits until the service has ended. A second call returns at once.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let handle = self.handle.lock().await.take();
        if let Some(h) = handle {
            if let Err(e) = h.await {
                tracing::error!(service = self.name, error = %e, "service ended abnormally");
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
        s.stop().await;
        let after = ticks.load(Ordering::SeqCst);
        assert!(after > 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), after, "ticked after stop");
        s.stop().await;
    }
}

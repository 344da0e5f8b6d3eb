//! Handlers and the [`Mux`] that routes a task to the handler of its type.
//!
//! Handlers run concurrently (up to the server's concurrency), so the mux is shared read-only:
//! no lock is held while a handler runs.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Error, Result, Task};

/// Processes tasks of one or more types.
///
/// Return `Ok(())` on success. Any error counts as a failed attempt and the task is retried with
/// backoff until its `max_retry` is used up; [`Error::non_retryable`] sends it straight to the
/// dead-letter queue.
///
/// ```
/// use async_trait::async_trait;
/// use rediq::processor::Handler;
/// use rediq::Task;
///
/// struct EmailHandler;
///
/// #[async_trait]
/// impl Handler for EmailHandler {
///     async fn handle(&self, task: &Task) -> rediq::Result<()> {
///         let body: serde_json::Value = task.payload_json()?;
///         if body["to"].is_null() {
///             return Err(rediq::Error::non_retryable("no recipient"));
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one task.
    async fn handle(&self, task: &Task) -> Result<()>;
}

#[async_trait]
impl<H: Handler> Handler for Arc<H> {
    async fn handle(&self, task: &Task) -> Result<()> {
        (**self).handle(task).await
    }
}

/// Routes tasks to handlers by exact task type.
///
/// ```
/// # use async_trait::async_trait;
/// # use rediq::{processor::{Handler, Mux}, Task};
/// # struct EmailHandler;
/// # #[async_trait] impl Handler for EmailHandler { async fn handle(&self, _: &Task) -> rediq::Result<()> { Ok(()) } }
/// let mut mux = Mux::new();
/// mux.handle("email:send", EmailHandler);
/// assert!(mux.has_handler("email:send"));
/// ```
#[derive(Clone, Default)]
pub struct Mux {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<&String> = self.handlers.keys().collect();
        types.sort();
        f.debug_struct("Mux").field("types", &types).finish()
    }
}

impl Mux {
    /// An empty mux.
    pub fn new() -> Self {
        Mux::default()
    }

    /// Registers `handler` for tasks of `task_type` (replacing any earlier one).
    pub fn handle(&mut self, task_type: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(task_type.into(), Arc::new(handler));
        self
    }

    /// Whether a handler is registered for `task_type`.
    pub fn has_handler(&self, task_type: &str) -> bool {
        self.handlers.contains_key(task_type)
    }
}

impl Mux {
    /// Runs the handler of the task's type. A type without handler is an ordinary (retryable)
    /// failure, so that a rolling deploy in which old servers meet new task types loses nothing.
    ///
    /// (The mux deliberately does not implement [`Handler`]: with that trait in scope, its
    /// `handle` would shadow [`Mux::handle`] for registration.)
    pub async fn dispatch(&self, task: &Task) -> Result<()> {
        match self.handlers.get(&task.task_type) {
            Some(h) => h.handle(task).await,
            None => Err(Error::NoHandler(task.task_type.clone())),
        }
    }
}

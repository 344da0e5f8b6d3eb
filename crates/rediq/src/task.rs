//! Tasks: what a producer enqueues and a handler receives.
//!
//! A [`Task`] is built with [`Task::builder`], which validates every option at `build()` so that a
//! bad task fails in the producer, next to the code that made it, and never reaches Redis.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

/// Queue used when none is given.
pub const DEFAULT_QUEUE: &str = "default";
/// Retries after the first attempt when none is given.
pub const DEFAULT_MAX_RETRY: u32 = 3;
/// Handler timeout when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Priority when none is given (0 runs first, 100 last).
pub const DEFAULT_PRIORITY: i32 = 50;
/// Largest payload accepted by default (512 KiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 512 * 1024;
/// How long a unique key is held at most when no TTL is given (on top of any delay).
pub const DEFAULT_UNIQUE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted delay, timeout and unique-key TTL (10 years): beyond it Redis expiry and
/// millisecond arithmetic would overflow.
pub const MAX_SPAN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Longest accepted queue name, in bytes.
pub const MAX_QUEUE_NAME: usize = 128;

/// Options of a task. Defaults follow the option table of the README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOptions {
    /// Retries after the first attempt (default 3).
    pub max_retry: u32,
    /// How long one attempt may run before it is cancelled (default 30 s).
    pub timeout: Duration,
    /// Run no earlier than this long after enqueue.
    pub delay: Option<Duration>,
    /// 0 (first) to 100 (last); default 50.
    pub priority: i32,
    /// Cron expression for periodic tasks.
    pub cron: Option<String>,
    /// Deduplication key: at most one live task per key and queue.
    pub unique_key: Option<String>,
    /// How long the unique key is held at most (default 24 h plus the delay).
    pub unique_ttl: Option<Duration>,
    /// Ids of tasks that must complete before this one runs.
    pub depends_on: Option<Vec<String>>,
    /// The group (tenant) the task belongs to, e.g. a customer id: a queue serves its groups
    /// round-robin, and a group may have its own limits (see [`TaskBuilder::group`]).
    pub group: Option<String>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            max_retry: DEFAULT_MAX_RETRY,
            timeout: DEFAULT_TIMEOUT,
            delay: None,
            priority: DEFAULT_PRIORITY,
            cron: None,
            unique_key: None,
            unique_ttl: None,
            depends_on: None,
            group: None,
        }
    }
}

/// A unit of background work.
///
/// ```
/// use rediq::Task;
/// let task = Task::builder("email:send")
///     .queue("emails")
///     .payload(&serde_json::json!({"to": "user@example.com"}))?
///     .build()?;
/// assert_eq!(task.queue, "emails");
/// let body: serde_json::Value = task.payload_json()?;
/// assert_eq!(body["to"], "user@example.com");
/// # Ok::<(), rediq::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Unique id (a UUID v7, so ids sort by creation time).
    pub id: String,
    /// Routes the task to its handler.
    pub task_type: String,
    /// The queue it lives in.
    pub queue: String,
    /// The payload bytes (JSON when set with [`TaskBuilder::payload`]).
    pub payload: Vec<u8>,
    /// Options.
    pub options: TaskOptions,
    /// How many attempts have failed so far.
    pub retry_cnt: u32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// When the last attempt failed (Unix milliseconds).
    pub last_failed_at: Option<u64>,
}

impl Task {
    /// Starts building a task of the given type.
    pub fn builder(task_type: impl Into<String>) -> TaskBuilder {
        TaskBuilder::new(task_type)
    }

    /// Decodes the payload as JSON into `T`.
    pub fn payload_json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            Error::Serialization(format!(
                "payload of task {} ({}) is not the expected JSON: {e}",
                self.id, self.task_type
            ))
        })
    }

    /// The raw payload bytes.
    pub fn payload_bytes(&self) -> &[u8] {
        &self.payload
    }

    /// The attempt now running or last run, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.retry_cnt + 1
    }

    /// When the task was created (Unix milliseconds), read from its UUID v7 id.
    pub fn created_at_ms(&self) -> Option<u64> {
        let id = uuid::Uuid::parse_str(&self.id).ok()?;
        let (secs, nanos) = id.get_timestamp()?.to_unix();
        Some(secs * 1000 + u64::from(nanos) / 1_000_000)
    }
}

/// Builds and validates a [`Task`]: every option is checked at [`build`](Self::build), and a
/// refusal names the offending value.
///
/// ```
/// use std::time::Duration;
/// use rediq::Task;
/// let task = Task::builder("invoice:send")
///     .queue("billing")
///     .priority(10) // 0 runs first, 100 last
///     .max_retry(5)
///     .timeout(Duration::from_secs(30))
///     .delay(Duration::from_secs(60))
///     .unique_key("invoice-2026-12-0042")
///     .payload(&serde_json::json!({"invoice": 42}))?
///     .build()?;
/// assert_eq!(task.queue, "billing");
/// assert_eq!(task.options.priority, 10);
///
/// let refused = Task::builder("invoice:send").priority(101).build().unwrap_err();
/// assert_eq!(refused.to_string(), "invalid priority: 101 is outside 0..=100 (0 runs first)");
/// # Ok::<(), rediq::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TaskBuilder {
    task_type: String,
    queue: String,
    payload: Vec<u8>,
    options: TaskOptions,
    max_payload: usize,
}

impl TaskBuilder {
    /// A builder for a task of the given type, with default options.
    pub fn new(task_type: impl Into<String>) -> Self {
        TaskBuilder {
            task_type: task_type.into(),
            queue: DEFAULT_QUEUE.to_string(),
            payload: Vec::new(),
            options: TaskOptions::default(),
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }

    /// The queue (default `"default"`).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Serializes `payload` as JSON.
    pub fn payload<T: Serialize + ?Sized>(mut self, payload: &T) -> Result<Self> {
        self.payload = serde_json::to_vec(payload)?;
        Ok(self)
    }

    /// Sets raw payload bytes.
    pub fn payload_bytes(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Largest payload this builder accepts (default 512 KiB).
    pub fn max_payload_size(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Priority from 0 (runs first) to 100 (runs last); default 50.
    pub fn priority(mut self, priority: i32) -> Self {
        self.options.priority = priority;
        self
    }

    /// Run no earlier than `delay` after enqueue.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.options.delay = Some(delay);
        self
    }

    /// Retries after the first attempt (default 3; 0 means one attempt only).
    pub fn max_retry(mut self, max_retry: u32) -> Self {
        self.options.max_retry = max_retry;
        self
    }

    /// How long one attempt may run (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// Deduplicate: while a task with this key lives in the queue, enqueueing another fails
    /// with [`Error::Duplicate`].
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.options.unique_key = Some(key.into());
        self
    }

    /// Longest time the unique key is held (default 24 h plus the delay), so that a lost
    /// holder cannot block the key forever.
    pub fn unique_ttl(mut self, ttl: Duration) -> Self {
        self.options.unique_ttl = Some(ttl);
        self
    }

    /// Makes the task periodic: `client.enqueue(task)` then registers an entry that enqueues a
    /// copy of the task at every tick. Accepted: 5-field cron (`0 2 * * *`), 6 fields with
    /// seconds first, `@hourly` / `@daily` / `@weekly` / `@monthly` / `@yearly`, `@every 30s`
    /// (units s, m, h, d), each optionally prefixed by `CRON_TZ=<IANA zone> ` (default UTC). An
    /// invalid expression fails at `build()` with the parser's message.
    pub fn cron(mut self, expr: impl Into<String>) -> Self {
        self.options.cron = Some(expr.into());
        self
    }

    /// Puts the task in a group (a tenant: a customer id, an account, a user). A queue serves
    /// the groups with tasks pending round-robin, one task of each in turn, so a backlog of
    /// one group does not delay the tasks of another; within a group tasks run in the order
    /// they became pending (priorities order only the tasks without a group). A group may
    /// have its own concurrency and rate limits ([`crate::Client::set_group_limits`]).
    /// A name is 1 to 128 bytes without control characters.
    ///
    /// ```
    /// let task = rediq::Task::builder("invoice:render")
    ///     .group("customer-42")
    ///     .build()?;
    /// assert_eq!(task.options.group.as_deref(), Some("customer-42"));
    /// # Ok::<(), rediq::Error>(())
    /// ```
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.options.group = Some(group.into());
        self
    }

    /// Ids of tasks that must complete successfully before this one runs.
    pub fn depends_on<S: AsRef<str>>(mut self, ids: &[S]) -> Self {
        self.options.depends_on = Some(ids.iter().map(|s| s.as_ref().to_string()).collect());
        self
    }

    /// Validates the options and returns the task with a fresh id.
    pub fn build(self) -> Result<Task> {
        validate_task_type(&self.task_type)?;
        validate_queue_name(&self.queue)?;
        validate_options(&self.options)?;
        if self.payload.len() > self.max_payload {
            return Err(Error::validation(
                "payload",
                format!(
                    "{} bytes is above the limit of {} bytes",
                    self.payload.len(),
                    self.max_payload
                ),
            ));
        }
        Ok(Task {
            id: crate::broker::record::new_id(&self.queue),
            task_type: self.task_type,
            queue: self.queue,
            payload: self.payload,
            options: self.options,
            retry_cnt: 0,
            last_error: None,
            last_failed_at: None,
        })
    }
}

/// Checks the options of a task (also at enqueue: `Task`'s fields are public and may have been
/// changed after `build()`).
pub(crate) fn validate_options(o: &TaskOptions) -> Result<()> {
    if !(0..=100).contains(&o.priority) {
        return Err(Error::validation(
            "priority",
            format!("{} is outside 0..=100 (0 runs first)", o.priority),
        ));
    }
    if o.timeout.is_zero() {
        return Err(Error::validation("timeout", "must be greater than zero"));
    }
    if let Some(key) = &o.unique_key {
        if key.is_empty() {
            return Err(Error::validation("unique_key", "must not be empty"));
        }
    }
    if let Some(ttl) = o.unique_ttl {
        if ttl < Duration::from_secs(1) || ttl > MAX_SPAN {
            return Err(Error::validation(
                "unique_ttl",
                format!("{ttl:?} is outside 1 s ..= 10 years"),
            ));
        }
    }
    if let Some(delay) = o.delay {
        if delay > MAX_SPAN {
            return Err(Error::validation(
                "delay",
                format!("{delay:?} is longer than 10 years"),
            ));
        }
    }
    if o.timeout > MAX_SPAN {
        return Err(Error::validation(
            "timeout",
            format!("{:?} is longer than 10 years", o.timeout),
        ));
    }
    if let Some(expr) = &o.cron {
        crate::schedule::Schedule::parse(expr)
            .map_err(|e| Error::validation("cron", format!("{expr:?}: {e}")))?;
        if o.delay.is_some() {
            return Err(Error::validation(
                "cron",
                "a periodic task runs at its ticks; it cannot also have a delay",
            ));
        }
        if o.depends_on.is_some() {
            return Err(Error::validation(
                "cron",
                "a periodic task cannot depend on other tasks",
            ));
        }
    }
    if let Some(group) = &o.group {
        validate_group(group)?;
    }
    if let Some(deps) = &o.depends_on {
        if deps.len() > crate::broker::MAX_DEPENDENCIES {
            return Err(Error::validation(
                "depends_on",
                format!(
                    "{} dependencies is more than {}",
                    deps.len(),
                    crate::broker::MAX_DEPENDENCIES
                ),
            ));
        }
        if let Some(bad) = deps.iter().find(|d| d.is_empty()) {
            return Err(Error::validation(
                "depends_on",
                format!("dependency id {bad:?} is empty"),
            ));
        }
    }
    Ok(())
}

/// Longest accepted group name, in bytes.
pub const MAX_GROUP_NAME: usize = 128;

/// Checks a group name: 1 to [`MAX_GROUP_NAME`] bytes, no control characters (the name is
/// stored in the record's head and shown by the CLI).
pub(crate) fn validate_group(g: &str) -> Result<()> {
    if g.is_empty() {
        return Err(Error::validation("group", "must not be empty"));
    }
    if g.len() > MAX_GROUP_NAME {
        return Err(Error::validation(
            "group",
            format!("{} bytes is longer than {MAX_GROUP_NAME}", g.len()),
        ));
    }
    if g.chars().any(char::is_control) {
        return Err(Error::validation(
            "group",
            format!("{g:?} contains a control character"),
        ));
    }
    Ok(())
}

/// Checks a task type: non-empty, at most 1 KiB, no control characters.
pub(crate) fn validate_task_type(t: &str) -> Result<()> {
    if t.is_empty() {
        return Err(Error::validation("task type", "must not be empty"));
    }
    if t.len() > 1024 {
        return Err(Error::validation(
            "task type",
            format!("{} bytes is longer than 1024", t.len()),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(Error::validation(
            "task type",
            format!("{t:?} contains a control character"),
        ));
    }
    Ok(())
}

/// Checks a queue name. Braces would break the `{queue}` hash tag that keeps a queue's keys in
/// one cluster slot; whitespace and control characters would break the CLI and logs.
pub fn validate_queue_name(q: &str) -> Result<()> {
    if q.is_empty() {
        return Err(Error::validation("queue name", "must not be empty"));
    }
    if q.len() > MAX_QUEUE_NAME {
        return Err(Error::validation(
            "queue name",
            format!(
                "{:?}… is {} bytes, longer than {MAX_QUEUE_NAME}",
                &q[..q.char_indices().nth(16).map_or(q.len(), |(i, _)| i)],
                q.len()
            ),
        ));
    }
    if let Some(c) = q
        .chars()
        .find(|c| *c == '{' || *c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::validation(
            "queue name",
            format!(
                "{q:?} contains {c:?}; braces, whitespace and control characters are not allowed"
            ),
        ));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_readme() {
        let t = Task::builder("a").build().unwrap();
        assert_eq!(t.queue, "default");
        assert_eq!(t.options.max_retry, 3);
        assert_eq!(t.options.timeout, Duration::from_secs(30));
        assert_eq!(t.options.priority, 50);
        assert!(t.payload.is_empty());
        assert!(t.created_at_ms().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn rejects_bad_input_naming_the_value() {
        let e = Task::builder("").build().unwrap_err().to_string();
        assert!(e.contains("task type"), "{e}");
        for q in ["", "a{b}", "a b", "tab\t", "nl\n"] {
            let e = Task::builder("t").queue(q).build().unwrap_err().to_string();
            assert!(e.contains("queue name"), "{q:?}: {e}");
        }
        let long = "q".repeat(129);
        assert!(Task::builder("t").queue(long).build().is_err());
        assert!(Task::builder("t").queue("q".repeat(128)).build().is_ok());
        let e = Task::builder("t")
            .priority(101)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("101"), "{e}");
        assert!(Task::builder("t").priority(-1).build().is_err());
        let e = Task::builder("t")
            .payload_bytes(vec![0u8; DEFAULT_MAX_PAYLOAD + 1])
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains(&(DEFAULT_MAX_PAYLOAD + 1).to_string()), "{e}");
        assert!(Task::builder("t")
            .payload_bytes(vec![0u8; DEFAULT_MAX_PAYLOAD + 1])
            .max_payload_size(DEFAULT_MAX_PAYLOAD * 2)
            .build()
            .is_ok());
        assert!(Task::builder("t").timeout(Duration::ZERO).build().is_err());
        let ages = Duration::from_secs(11 * 365 * 24 * 3600);
        assert!(Task::builder("t").delay(ages).build().is_err());
        assert!(Task::builder("t")
            .unique_key("k")
            .unique_ttl(ages)
            .build()
            .is_err());
        assert!(Task::builder("t").timeout(ages).build().is_err());
    }

    #[test]
    fn cron_is_parsed_at_build() {
        assert!(Task::builder("c").cron("0 2 * * *").build().is_ok());
        assert!(Task::builder("c").cron("@every 30s").build().is_ok());
        let e = Task::builder("c")
            .cron("0 25 * * *")
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("cron") && e.contains("0 25 * * *"), "{e}");
        assert!(Task::builder("c")
            .cron("@daily")
            .delay(Duration::from_secs(1))
            .build()
            .is_err());
    }

    #[test]
    fn depends_on_accepts_str_and_string_slices() {
        let t = Task::builder("b")
            .depends_on(&["task-a-id"])
            .build()
            .unwrap();
        assert_eq!(t.options.depends_on, Some(vec!["task-a-id".to_string()]));
        let ids = vec![String::from("x")];
        let t = Task::builder("b").depends_on(&ids).build().unwrap();
        assert_eq!(t.options.depends_on.unwrap().len(), 1);
    }
}

//! The one error type of Rediq.
//!
//! Every fallible call returns [`Result<T>`]. Messages are written for the person reading a log at
//! 3 a.m.: they name the offending value and, where one exists, the fix. Passwords never appear in
//! them (URLs are masked before they are stored in an error).

use std::time::Duration;

/// `Result` with Rediq's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Rediq.
///
/// Handlers return it too: use [`Error::handler`] for an ordinary (retryable) failure and
/// [`Error::non_retryable`] for one that must go straight to the dead-letter queue.
///
/// ```
/// use rediq::Error;
/// let e = Error::handler("smtp server said 451");
/// assert!(e.is_retryable());
/// let e = Error::non_retryable("address does not exist");
/// assert!(!e.is_retryable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A task, client or server option is invalid; the message names the value.
    #[error("invalid {what}: {reason}")]
    Validation {
        /// Which option or field.
        what: &'static str,
        /// Why, naming the offending value.
        reason: String,
    },
    /// Could not reach Redis at the given (password-masked) URL.
    #[error("cannot connect to Redis at {url}: {source}")]
    Connection {
        /// The URL with its password masked.
        url: String,
        /// What the Redis client said.
        #[source]
        source: redis::RedisError,
    },
    /// The Redis reached is not the topology the builder named (cluster mode against a
    /// standalone server, a standalone connection to a cluster node or a sentinel, a master name
    /// no sentinel knows, …): the reason says which, and what to change.
    #[error("wrong Redis topology at {url}: {reason}")]
    Topology {
        /// The URL with its password masked.
        url: String,
        /// What was found, and the fix.
        reason: String,
    },
    /// With [`ClientBuilder::wait_for_replicas`](crate::ClientBuilder::wait_for_replicas): the
    /// tasks were written on the master, but fewer replicas than asked confirmed them in time,
    /// so a failover now could lose them. Enqueueing the same task (same id) again is safe: a
    /// task the queue knows already is not written twice.
    #[error("enqueue to queue {queue:?} is on the master but only {reached} of {wanted} replicas confirmed it within {timeout:?}: it may be lost if the master fails now; enqueue the same task again (same id) to be sure, it is never written twice")]
    NotReplicated {
        /// The queue.
        queue: String,
        /// Replicas that confirmed.
        reached: u32,
        /// Replicas asked for.
        wanted: u32,
        /// How long the enqueue waited.
        timeout: Duration,
    },
    /// A Redis command failed.
    #[error("redis error: {0}")]
    Redis(redis::RedisError),
    /// A key of Rediq holds data of the wrong kind (written by something other than Rediq, or
    /// damaged), so a transition refused to run. Nothing moved: every task is still where it
    /// was, and the transition succeeds again once the key is repaired or deleted.
    #[error("corrupt data in Redis: key {key} {reason}; the transition was refused and no task moved; inspect the key (redis-cli TYPE / DUMP) and repair or delete it")]
    Corrupt {
        /// The key, as Redis names it.
        key: String,
        /// What it holds, and what was expected.
        reason: String,
    },
    /// A payload or record could not be encoded or decoded.
    #[error("serialization error: {0}")]
    Serialization(String),
    /// Another live task in the same queue holds this unique key.
    #[error("duplicate task: unique key {unique_key:?} is held by task {existing_id} in queue {queue:?}")]
    Duplicate {
        /// The queue.
        queue: String,
        /// The unique key that is taken.
        unique_key: String,
        /// The id of the task that holds it.
        existing_id: String,
    },
    /// A task was enqueued with a dependency id that names no task Rediq knows: none of the
    /// known queues holds a task with that id, and no completion record of it is kept.
    #[error("unknown dependency {id:?}: no queue holds a task with this id and no completion record of it is kept (records are kept for the dependency retention, 24 h by default); task {task} was not enqueued")]
    UnknownDependency {
        /// The dependency id as given.
        id: String,
        /// The task that was not enqueued.
        task: String,
    },
    /// The feature exists in the API but not yet in this version.
    #[error("not supported yet: {0}")]
    NotSupported(String),
    /// A handler failed. `retryable: false` sends the task straight to the dead-letter queue.
    #[error("{message}")]
    Handler {
        /// What went wrong.
        message: String,
        /// Whether the task may be retried.
        retryable: bool,
    },
    /// The handler was told to slow down by the service it called (a quota, HTTP 429): the
    /// task goes back to wait `retry_after` without using an attempt or counting as a failure.
    /// Made with [`Error::rate_limited`].
    #[error("rate limited; trying again in {retry_after:?}")]
    RateLimited {
        /// How long the task waits before it runs again.
        retry_after: Duration,
    },
    /// No handler is registered for the task's type.
    #[error("no handler registered for type {0}")]
    NoHandler(String),
    /// The handler ran past the task's timeout and was cancelled.
    #[error("task timed out after {0:?}")]
    Timeout(Duration),
    /// The handler panicked.
    #[error("handler panicked: {0}")]
    Panic(String),
    /// A middleware's `before` hook failed (or panicked): the handler did not run and the
    /// attempt failed with this error. Retryable exactly when `source` is.
    #[error("middleware {name} failed: {source}")]
    Middleware {
        /// The middleware's name ([`Middleware::name`](crate::middleware::Middleware::name)).
        name: String,
        /// What it returned.
        #[source]
        source: Box<Error>,
    },
    /// The metrics endpoint could not listen on its address.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsEndpoint {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An ordinary handler failure: the task is retried with backoff.
    pub fn handler(message: impl Into<String>) -> Self {
        Error::Handler {
            message: message.into(),
            retryable: true,
        }
    }

    /// The service the handler called said "slow down" (a quota, HTTP 429 with `Retry-After`):
    /// the task goes back and runs again after `retry_after`, without using an attempt, without
    /// counting as a failure, and without a retry backoff.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rediq::Error;
    /// let e = Error::rate_limited(Duration::from_secs(30));
    /// assert!(e.to_string().contains("30s"));
    /// ```
    pub fn rate_limited(retry_after: Duration) -> Self {
        Error::RateLimited { retry_after }
    }

    /// A permanent handler failure: the task goes to the dead-letter queue without retries.
    pub fn non_retryable(message: impl Into<String>) -> Self {
        Error::Handler {
            message: message.into(),
            retryable: false,
        }
    }

    /// Whether this is a failure to reach Redis (refused, dropped or timed-out connection) rather
    /// than an error Redis answered with: the first heals by reconnecting, the second does not.
    pub(crate) fn is_connection_problem(&self) -> bool {
        match self {
            Error::Connection { .. } => true,
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
            }
            _ => false,
        }
    }

    /// Whether the node answered that it no longer serves what was asked (a failover or a slot
    /// that moved): a dedicated connection to it is dropped and opened again to the node that
    /// does now.
    pub(crate) fn is_topology_change(&self) -> bool {
        match self {
            Error::Redis(e) => matches!(
                e.code(),
                Some(
                    "READONLY"
                        | "MOVED"
                        | "ASK"
                        | "CLUSTERDOWN"
                        | "TRYAGAIN"
                        | "MASTERDOWN"
                        | "LOADING"
                        // A blocked client of a master that became a replica.
                        | "UNBLOCKED"
                )
            ),
            _ => false,
        }
    }

    /// Whether a task that failed with this error may be retried.
    ///
    /// [`Error::Serialization`] is not: a payload that does not decode today will not decode on
    /// the next attempt either.
    pub fn is_retryable(&self) -> bool {
        if let Error::Middleware { source, .. } = self {
            return source.is_retryable();
        }
        !matches!(
            self,
            Error::Handler {
                retryable: false,
                ..
            } | Error::Serialization(_)
        )
    }

    pub(crate) fn validation(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Validation {
            what,
            reason: reason.into(),
        }
    }
}

impl From<redis::RedisError> for Error {
    /// A script's refusal to touch a corrupt key (`CORRUPT <key length> <key> <reason>`, raised
    /// by the scripts' prelude) becomes [`Error::Corrupt`]; anything else stays [`Error::Redis`].
    fn from(e: redis::RedisError) -> Self {
        let e = one_pipeline_error(e);
        if e.code() == Some("CORRUPT") {
            if let Some((key, reason)) = e.detail().and_then(parse_corrupt) {
                return Error::Corrupt { key, reason };
            }
        }
        Error::Redis(e)
    }
}

/// A pipeline whose every command failed the same way (a connection that lost its
/// authentication answers `NOAUTH` to each of the 19 reads of a `queue_stats`) reports that
/// error once, not once per command. Different failures stay listed with their indices.
fn one_pipeline_error(e: redis::RedisError) -> redis::RedisError {
    let Some(items) = e.clone().into_server_errors() else {
        return e;
    };
    match items.first() {
        Some((_, first))
            if items.len() > 1
                && items
                    .iter()
                    .all(|(_, x)| x.to_string() == first.to_string()) =>
        {
            redis::RedisError::from(first.clone())
        }
        _ => e,
    }
}

/// Splits `<key length> <key> <reason>[ script: <sha>, on @user_script:<line>.]`.
fn parse_corrupt(detail: &str) -> Option<(String, String)> {
    let (len, rest) = detail.split_once(' ')?;
    let len: usize = len.parse().ok()?;
    let key = rest.get(..len)?;
    let reason = rest.get(len..)?.trim_start();
    // Redis appends where the script raised; the reason is ours and never contains this.
    let reason = reason.rsplit_once(" script: ").map_or(reason, |(r, _)| r);
    Some((key.to_string(), reason.to_string()))
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::handler(format!("{e:#}"))
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::handler(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::handler(message)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Serialization(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::handler(format!("i/o error: {e}"))
    }
}

/// Masks the password of a Redis URL so it can be logged or put in an error.
pub(crate) fn mask_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            // Setting a password only fails on URLs that cannot have one; this one has one.
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        // Anything else that holds an '@' may hide a secret before it: keep only what follows.
        _ => match raw.rfind('@') {
            Some(at) => format!("****@{}", &raw[at + 1..]),
            None => raw.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_url("redis://:hunter2@host:6379/0"),
            "redis://:****@host:6379/0"
        );
        assert_eq!(
            mask_url("redis://user:hunter2@host/"),
            "redis://user:****@host/"
        );
        assert_eq!(mask_url("redis://host:1"), "redis://host:1");
        assert!(!mask_url("weird:secret@x y").contains("secret"));
    }

    #[test]
    fn corrupt_detail_parses() {
        assert_eq!(
            parse_corrupt(
                "17 rediq:{q w}:token holds a non-integer value script: abc, on @user_script:3."
            ),
            Some((
                "rediq:{q w}:token".into(),
                "holds a non-integer value".into()
            ))
        );
        assert_eq!(parse_corrupt("99 short"), None);
        assert_eq!(parse_corrupt("x y"), None);
    }

    #[test]
    fn retryability() {
        assert!(Error::from("x").is_retryable());
        assert!(Error::from(anyhow::anyhow!("boom")).is_retryable());
        assert!(!Error::non_retryable("no").is_retryable());
        assert!(!Error::Serialization("bad payload".into()).is_retryable());
        let refused = Error::Middleware {
            name: "auth".into(),
            source: Box::new(Error::non_retryable("no tenant")),
        };
        assert!(!refused.is_retryable());
        assert_eq!(refused.to_string(), "middleware auth failed: no tenant");
        assert_eq!(
            Error::NoHandler("a:b".into()).to_string(),
            "no handler registered for type a:b"
        );
    }
}

//! The command tree (clap derive): what `rediq --help` shows. Each subcommand's work is in
//! `commands/`.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command-line tool for the Rediq distributed task queue.
#[derive(Parser, Debug)]
#[command(name = "rediq", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Args, Debug)]
pub struct Global {
    /// Redis URL: one server, a cluster seed (with --cluster) or the sentinels (with
    /// --sentinel, e.g. redis+sentinel://s1:26379,s2:26379/mymaster).
    #[arg(
        long,
        env = "REDIS_URL",
        // The URL may hold a password: never show its value in --help.
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    pub redis_url: String,
    /// The URL names a Redis Cluster node.
    #[arg(long, global = true, conflicts_with = "sentinel")]
    pub cluster: bool,
    /// The URL names Redis Sentinels.
    #[arg(long, global = true)]
    pub sentinel: bool,
    /// Print machine-readable JSON instead of tables (field names are stable; see docs/cli.md).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// A live dashboard of queues, throughput, latency, errors and servers (q to quit).
    Dash {
        /// Time between refreshes: 500ms, 2s, …
        #[arg(long, default_value = "1s", value_parser = crate::dash::parse_interval)]
        interval: std::time::Duration,
    },
    /// Queues: list, inspect, pause, resume, flush.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Tasks: list, inspect, find, cancel, retry.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Servers (workers) registered in Redis.
    #[command(subcommand)]
    Worker(WorkerCmd),
    /// Task counts and totals, over all queues or one.
    Stats {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Also the counts of each of the last N days (1-90; Redis keeps 90).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=90))]
        days: Option<u32>,
    },
    /// Periodic (cron) entries: list, pause, resume, remove.
    #[command(subcommand)]
    Cron(CronCmd),
    /// Serve the web UI (queues, tasks by state, task details) until Ctrl-C.
    ///
    /// Authentication comes from the environment: REDIQ_WEB_TOKEN (a bearer token), or
    /// REDIQ_WEB_USER and REDIQ_WEB_PASSWORD (basic auth); with neither, every request is let
    /// in, so bind to localhost or put it behind a proxy that authenticates.
    Web {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The path prefix the UI is served under (links start with it).
        #[arg(long, default_value = "/")]
        base_path: String,
        /// Show only: no page offers an action, and every action is refused (403).
        #[arg(long)]
        read_only: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// Every queue with its counts.
    List,
    /// One queue's counts, totals, latency, memory and counts per day.
    Inspect {
        name: String,
        /// Days of history to show (1-90; Redis keeps 90).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=90))]
        days: u32,
    },
    /// Show or set the queue's flow-control limits, kept in Redis for every server.
    ///
    /// Without options, shows them. `--concurrency 5` allows at most 5 of the queue's tasks
    /// running at once across all servers; `--rate 100/1s` at most 100 starts per second.
    /// `none` removes one limit, `--clear` both; a limit not named is kept.
    ///
    /// With `--per-group` the same options set the rule every group (tenant) of the queue
    /// follows; with `--group NAME` they set that group's override of the rule (`--clear`
    /// removes the override).
    Limit {
        name: String,
        /// Set or show the rule for every group of the queue instead.
        #[arg(long, conflicts_with = "group")]
        per_group: bool,
        /// Set or show one group's override of the group rule instead.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// Most tasks running at once across all servers, or `none`.
        #[arg(long, value_parser = parse_concurrency)]
        concurrency: Option<Limit<u32>>,
        /// Most starts per period, as COUNT/PERIOD (`100/1s`, `5/500ms`, `1000/60s`), or `none`.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<Limit<rediq::RateLimit>>,
        /// Remove every limit of the queue.
        #[arg(long, conflicts_with_all = ["concurrency", "rate"])]
        clear: bool,
    },
    /// The queue's groups (tenants) with tasks pending or running, or held by a limit.
    Groups {
        name: String,
        /// Most groups to show (by name).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Stop servers fetching from the queue (kept in Redis across restarts).
    Pause { name: String },
    /// Let servers fetch from the queue again.
    Resume { name: String },
    /// Remove every task of the queue, in every state.
    Flush {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// A page of a queue's tasks in one state.
    List {
        queue: String,
        /// The state to list.
        #[arg(long, value_enum, default_value_t = State::Pending)]
        state: State,
        /// The page, from 1.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        page: u64,
        /// Tasks per page.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        size: u64,
    },
    /// Everything known about one task: state, payload, attempts, lease, dependencies.
    Inspect {
        id: String,
        /// The task's queue (default: whichever queue knows the id).
        #[arg(long)]
        queue: Option<String>,
    },
    /// Tasks of a queue in one state whose payload or last error contains a text, or the task
    /// with an id; searched in bounded steps.
    Find {
        queue: String,
        /// The text (or a task id).
        text: String,
        /// The state to search.
        #[arg(long, value_enum, default_value_t = State::Pending)]
        state: State,
        /// Stop after this many matches (the output gives the cursor to go on from).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
        /// Go on from where an earlier find stopped.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancel a waiting or running task.
    Cancel {
        #[arg(long)]
        id: String,
        #[arg(long)]
        queue: String,
    },
    /// Delete a task that is not running (dead, completed, or waiting).
    Delete {
        #[arg(long)]
        id: String,
        #[arg(long)]
        queue: String,
    },
    /// Run a dead task again.
    Retry {
        #[arg(long)]
        id: String,
        #[arg(long)]
        queue: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkerCmd {
    /// Every registered server, alive or recently dead.
    List,
    /// One server and the tasks it runs now.
    Inspect { id: String },
}

#[derive(Subcommand, Debug)]
pub enum CronCmd {
    /// Every periodic entry.
    List,
    /// Stop an entry's ticks until it is resumed.
    Pause { id: String },
    /// Resume a paused entry from its next tick.
    Resume { id: String },
    /// Remove an entry.
    Remove { id: String },
}

/// A task state, as the CLI names it (`scheduled` is the library's `Delayed`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Active,
    #[value(alias = "delayed")]
    Scheduled,
    Retry,
    Waiting,
    Dead,
    Completed,
}

impl State {
    pub fn to_library(self) -> rediq::TaskState {
        use rediq::TaskState as S;
        match self {
            State::Pending => S::Pending,
            State::Active => S::Active,
            State::Scheduled => S::Delayed,
            State::Retry => S::Retry,
            State::Waiting => S::Waiting,
            State::Dead => S::Dead,
            State::Completed => S::Completed,
        }
    }

    /// The CLI's name for a library state.
    pub fn of(s: rediq::TaskState) -> State {
        use rediq::TaskState as S;
        match s {
            S::Pending => State::Pending,
            S::Active => State::Active,
            S::Delayed => State::Scheduled,
            S::Retry => State::Retry,
            S::Waiting => State::Waiting,
            S::Dead => State::Dead,
            S::Completed => State::Completed,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::Scheduled => "scheduled",
            State::Retry => "retry",
            State::Waiting => "waiting",
            State::Dead => "dead",
            State::Completed => "completed",
        }
    }
}

/// A limit to set, or `none` to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit<T> {
    Set(T),
    Remove,
}

fn parse_concurrency(s: &str) -> Result<Limit<u32>, String> {
    if s == "none" {
        return Ok(Limit::Remove);
    }
    match s.parse::<u32>() {
        Ok(0) => Err(
            "0 would run nothing: use `rediq queue pause`, or `none` to remove the limit".into(),
        ),
        Ok(n) => Ok(Limit::Set(n)),
        Err(_) => Err(format!("{s:?} is not a count of tasks (or `none`)")),
    }
}

fn parse_rate(s: &str) -> Result<Limit<rediq::RateLimit>, String> {
    if s == "none" {
        return Ok(Limit::Remove);
    }
    s.parse()
        .map(Limit::Set)
        .map_err(|e: rediq::Error| format!("{e} (or `none`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse() {
        assert_eq!(parse_concurrency("5"), Ok(Limit::Set(5)));
        assert_eq!(parse_concurrency("none"), Ok(Limit::Remove));
        assert!(parse_concurrency("0").unwrap_err().contains("pause"));
        let r = |count, ms| {
            Ok(Limit::Set(rediq::RateLimit {
                count,
                period: std::time::Duration::from_millis(ms),
            }))
        };
        assert_eq!(parse_rate("100/1s"), r(100, 1000));
        assert_eq!(parse_rate("5/500ms"), r(5, 500));
        assert_eq!(parse_rate("1000/2m"), r(1000, 120_000));
        assert_eq!(parse_rate("7/3"), r(7, 3000));
        assert_eq!(parse_rate("none"), Ok(Limit::Remove));
        for bad in ["100", "x/1s", "0/1s", "5/0s", "5/abc"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}

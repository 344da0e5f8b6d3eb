//! The scenarios: their names, the Redis durability each needs, the workload mix, and what
//! Rediq promises under each (which the accounting turns into pass or fail).

use crate::redis_proc::Persistence;
use crate::workload::Mix;
use crate::ScenarioArg;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Kill,
    Stop,
    RedisRestartAlways,
    RedisRestartEverysec,
    RedisDown,
    Garbage,
    Handlers,
}

/// What must hold at the end of a scenario.
#[derive(Debug, Clone, Copy)]
pub struct Promises {
    /// No acknowledged task is lost.
    pub nothing_lost: bool,
    /// A task planned to complete is not dead-lettered. Off where workers are killed or
    /// stopped: each lost attempt counts as a failed one (documented), so enough of them may
    /// dead-letter a task; the planned retries carry a slack of 5 for that.
    pub no_unplanned_dead: bool,
    /// Every cron tick fires at most once, a unique key refuses a second live task, and
    /// handlers run again only for tasks in flight at a fault (at-least-once, not more).
    pub once: bool,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Kill,
        Scenario::Stop,
        Scenario::RedisRestartAlways,
        Scenario::RedisRestartEverysec,
        Scenario::RedisDown,
        Scenario::Garbage,
        Scenario::Handlers,
    ];

    pub fn from_args(args: &[ScenarioArg]) -> Vec<Scenario> {
        let mut out = Vec::new();
        for a in args {
            let add: &[Scenario] = match a {
                ScenarioArg::All => &Scenario::ALL,
                ScenarioArg::Kill => &[Scenario::Kill],
                ScenarioArg::Stop => &[Scenario::Stop],
                ScenarioArg::RedisRestartAlways => &[Scenario::RedisRestartAlways],
                ScenarioArg::RedisRestartEverysec => &[Scenario::RedisRestartEverysec],
                ScenarioArg::RedisDown => &[Scenario::RedisDown],
                ScenarioArg::Garbage => &[Scenario::Garbage],
                ScenarioArg::Handlers => &[Scenario::Handlers],
            };
            for s in add {
                if !out.contains(s) {
                    out.push(*s);
                }
            }
        }
        out
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Kill => "kill",
            Scenario::Stop => "stop",
            Scenario::RedisRestartAlways => "redis-restart-always",
            Scenario::RedisRestartEverysec => "redis-restart-everysec",
            Scenario::RedisDown => "redis-down",
            Scenario::Garbage => "garbage",
            Scenario::Handlers => "handlers",
        }
    }

    /// Shortest workload phase that fits the scenario's faults (one 10 s outage; one round of
    /// garbage), whatever `--seconds` says.
    pub fn min_seconds(self) -> u64 {
        match self {
            Scenario::RedisDown => 15,
            Scenario::Garbage => 24,
            _ => 0,
        }
    }

    pub fn persistence(self) -> Persistence {
        match self {
            Scenario::RedisRestartAlways => Persistence::AofAlways,
            Scenario::RedisRestartEverysec => Persistence::AofEverysec,
            _ => Persistence::None,
        }
    }

    pub fn mix(self, lease: std::time::Duration) -> Mix {
        Mix {
            handlers: self == Scenario::Handlers,
            lease,
        }
    }

    pub fn promises(self) -> Promises {
        match self {
            Scenario::Kill | Scenario::Stop => Promises {
                nothing_lost: true,
                no_unplanned_dead: false,
                once: true,
            },
            // Up to a second of acknowledged writes may vanish: reported, not failed on.
            Scenario::RedisRestartEverysec => Promises {
                nothing_lost: false,
                no_unplanned_dead: false,
                once: false,
            },
            _ => Promises {
                nothing_lost: true,
                no_unplanned_dead: true,
                once: true,
            },
        }
    }
}

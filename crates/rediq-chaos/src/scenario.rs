//! The scenarios: their names, the Redis durability each needs, the workload mix, and what
//! Rediq promises under each (which the accounting turns into pass or fail).

use std::time::Duration;

use crate::redis_proc::Persistence;
use crate::workload::Mix;
use crate::{ScenarioArg, Topology};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Kill,
    Stop,
    RedisRestartAlways,
    RedisRestartEverysec,
    RedisDown,
    Garbage,
    Handlers,
    ClusterFailover,
    SentinelFailover,
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
    /// Task by task: a task run more often than planned had a run some fault hit. Checked
    /// where the faults' reach is known exactly (failovers); elsewhere a fault's effects can
    /// outlast it (garbage refuses acknowledgements of runs that started after it began, whose
    /// tasks the orphan sweep puts back), and the count of duplicate runs is checked instead.
    pub reruns_explained: bool,
    /// Failovers: every acknowledged task that was not finished when a switch began is
    /// finished (completed, or dead-lettered as planned) within this long after the switch.
    pub settled_within: Option<Duration>,
    /// Failovers: after each switch has settled, an acknowledged enqueue, and on every worker a
    /// run of a task enqueued after it, within this long (the producer's client and every
    /// server followed the new master without a restart).
    pub follow_within: Option<Duration>,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::Kill,
        Scenario::Stop,
        Scenario::RedisRestartAlways,
        Scenario::RedisRestartEverysec,
        Scenario::RedisDown,
        Scenario::Garbage,
        Scenario::Handlers,
        Scenario::ClusterFailover,
        Scenario::SentinelFailover,
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
                ScenarioArg::ClusterFailover => &[Scenario::ClusterFailover],
                ScenarioArg::SentinelFailover => &[Scenario::SentinelFailover],
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
            Scenario::ClusterFailover => "cluster-failover",
            Scenario::SentinelFailover => "sentinel-failover",
        }
    }

    /// The topology the scenario runs on, given `--topology`: a failover scenario has its own;
    /// the worker and handler faults run on any; the faults of the suite's own redis-server
    /// need it (`Err` says why the scenario is skipped).
    pub fn topology(self, requested: Topology) -> Result<Topology, String> {
        match self {
            Scenario::ClusterFailover => Ok(Topology::Cluster),
            Scenario::SentinelFailover => Ok(Topology::Sentinel),
            Scenario::Kill | Scenario::Stop | Scenario::Handlers => Ok(requested),
            _ if requested == Topology::Standalone => Ok(requested),
            _ => Err(format!(
                "skipped on --topology {}: it kills, freezes or corrupts the suite's own standalone redis-server",
                requested.name()
            )),
        }
    }

    /// Shortest workload phase that fits the scenario's faults (one 10 s outage; one round of
    /// garbage), whatever `--seconds` says.
    pub fn min_seconds(self) -> u64 {
        match self {
            Scenario::RedisDown => 15,
            Scenario::Garbage => 24,
            // At least one switch, with workload on both sides of it.
            Scenario::ClusterFailover => 12,
            Scenario::SentinelFailover => 25,
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
        let base = Promises {
            nothing_lost: true,
            no_unplanned_dead: true,
            once: true,
            reruns_explained: false,
            settled_within: None,
            follow_within: None,
        };
        match self {
            Scenario::Kill | Scenario::Stop => Promises {
                no_unplanned_dead: false,
                ..base
            },
            // Up to a second of acknowledged writes may vanish: reported, not failed on.
            Scenario::RedisRestartEverysec => Promises {
                nothing_lost: false,
                no_unplanned_dead: false,
                once: false,
                ..base
            },
            // Coordinated: the master pauses its clients until the replica caught up, so no
            // write is lost; what a switch does is move slots under the connections.
            Scenario::ClusterFailover => Promises {
                reruns_explained: true,
                settled_within: Some(Duration::from_secs(60)),
                follow_within: Some(Duration::from_secs(15)),
                ..base
            },
            // Not coordinated: the writes the old master took after the promotion are lost
            // (the producer's are not acknowledged: it waits for a replica; the workers'
            // fetches and acknowledgements are, and those tasks run again). See
            // docs/reliability.md.
            Scenario::SentinelFailover => Promises {
                reruns_explained: true,
                settled_within: Some(Duration::from_secs(60)),
                follow_within: Some(Duration::from_secs(15)),
                ..base
            },
            _ => base,
        }
    }

    /// Whether the producer's client waits for a replica (`wait_for_replicas(1, 1 s)`): on a
    /// sentinel set, where a failover loses what no replica had.
    pub fn wait_for_replica(topology: Topology) -> Option<(u32, Duration)> {
        (topology == Topology::Sentinel).then_some((1, Duration::from_secs(1)))
    }
}

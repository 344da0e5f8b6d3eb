//! Redis process control: a private `redis-server` that can be SIGKILLed and restarted on the
//! same port and directory (so its AOF is replayed), or frozen with SIGSTOP. The library's
//! `rediq::testing::RedisServer` runs without persistence and cannot restart, hence this.
//!
//! [`Deployment`] is what the scenarios talk to: that standalone server, or a Redis Cluster or a
//! Sentinel set of `rediq::testing` (no persistence: no node of theirs is restarted, their
//! faults are failovers), with the calls their failover scenarios make.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rediq::testing::{RedisCluster, RedisSentinel};

use crate::Topology;

/// Durability of the Redis data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Memory only: a restart loses everything (not used by a restarting scenario).
    None,
    /// `appendonly yes`, `appendfsync always`: a reply is sent after the write is on disk.
    AofAlways,
    /// `appendonly yes`, `appendfsync everysec`: up to about a second of writes can be lost.
    AofEverysec,
}

/// The Redis the workers and the producer use.
#[derive(Debug)]
pub enum Deployment {
    /// One redis-server of the suite's own, which the Redis faults kill, freeze or corrupt.
    Standalone(RedisProc),
    /// `rediq::testing::RedisCluster`: 3 masters, 3 replicas, no persistence (no node
    /// restarts). Shared with the blocking failover calls, which run off the driver's thread.
    Cluster(Arc<RedisCluster>),
    /// `rediq::testing::RedisSentinel`: a master, one replica, 3 sentinels (`mymaster`).
    Sentinel(Arc<RedisSentinel>),
}

impl Deployment {
    pub async fn start(
        topology: Topology,
        persistence: Persistence,
        dir: &Path,
    ) -> Result<Self, String> {
        match topology {
            Topology::Standalone => Ok(Deployment::Standalone(RedisProc::start(dir, persistence)?)),
            // Both settle before they return (seconds): off the driver's thread.
            Topology::Cluster => tokio::task::spawn_blocking(RedisCluster::try_start)
                .await
                .map_err(|e| format!("starting the cluster: {e}"))?
                .map(|c| Deployment::Cluster(Arc::new(c))),
            Topology::Sentinel => tokio::task::spawn_blocking(RedisSentinel::try_start)
                .await
                .map_err(|e| format!("starting the sentinel set: {e}"))?
                .map(|s| Deployment::Sentinel(Arc::new(s))),
        }
    }

    pub fn topology(&self) -> Topology {
        match self {
            Deployment::Standalone(_) => Topology::Standalone,
            Deployment::Cluster(_) => Topology::Cluster,
            Deployment::Sentinel(_) => Topology::Sentinel,
        }
    }

    /// The URL the builders take: the server's, the cluster's seed list, the sentinels'
    /// (`redis+sentinel://…/mymaster`).
    pub fn url(&self) -> String {
        match self {
            Deployment::Standalone(p) => p.url(),
            Deployment::Cluster(c) => c.seed_list_url(),
            Deployment::Sentinel(s) => s.url(),
        }
    }

    /// SIGKILL the primary (no shutdown, no final fsync). Standalone only.
    pub fn kill_primary(&mut self) -> Result<(), String> {
        self.standalone()?.kill();
        Ok(())
    }

    /// Starts the primary again on its port and directory; waits until it answers.
    pub async fn restart_primary(&mut self) -> Result<(), String> {
        let p = self.standalone()?;
        p.spawn()?;
        p.wait_ready(Duration::from_secs(30)).await
    }

    /// SIGSTOP: connections stay open, nothing answers. Standalone only.
    pub fn freeze(&mut self) -> Result<(), String> {
        self.standalone()?.signal(libc::SIGSTOP);
        Ok(())
    }

    /// SIGCONT (nothing to do on the other topologies, which are never frozen).
    pub fn thaw(&self) {
        if let Deployment::Standalone(p) = self {
            p.signal(libc::SIGCONT);
        }
    }

    pub fn stop(&mut self) {
        if let Deployment::Standalone(p) = self {
            p.kill();
        }
        // The topologies of rediq::testing stop every process when dropped.
    }

    fn standalone(&mut self) -> Result<&mut RedisProc, String> {
        match self {
            Deployment::Standalone(p) => Ok(p),
            other => Err(format!(
                "this fault needs the suite's own standalone redis-server, not a {}",
                other.topology().name()
            )),
        }
    }

    /// The cluster's shards (slot ranges with their master and replicas), as a node that
    /// answers sees them now.
    pub fn shards(&self) -> Result<Vec<Shard>, String> {
        let Deployment::Cluster(c) = self else {
            return Err("not a cluster".into());
        };
        let mut last = String::from("no node answered");
        for port in c.ports() {
            match cluster_slots(port) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The slot of a queue's keys, as the cluster computes it (`CLUSTER KEYSLOT {queue}`):
    /// every key of a queue carries the hash tag `{queue}`.
    pub fn slot_of(&self, name: &str) -> Result<u16, String> {
        let Deployment::Cluster(c) = self else {
            return Err("not a cluster".into());
        };
        let port = c.ports()[0];
        query::<u16>(port, &["CLUSTER", "KEYSLOT", &format!("{{{name}}}")])
    }

    /// `CLUSTER FAILOVER` on `replica` (coordinated), waiting until it is master and the
    /// cluster settled again.
    pub async fn cluster_fail_over(&self, replica: u16) -> Result<(), String> {
        let Deployment::Cluster(c) = self else {
            return Err("not a cluster".into());
        };
        let c = c.clone();
        tokio::task::spawn_blocking(move || c.fail_over(replica))
            .await
            .map_err(|e| format!("the failover call: {e}"))?
    }

    /// The sentinels' current master.
    pub fn sentinel_master_port(&self) -> Result<u16, String> {
        let Deployment::Sentinel(s) = self else {
            return Err("not a sentinel set".into());
        };
        s.current_master_port()
    }

    /// `SENTINEL FAILOVER mymaster` (retried on NOGOODSLAVE / INPROG), waiting until every
    /// sentinel names the new master and the old one replicates from it; the new master's port.
    pub async fn sentinel_fail_over(&self) -> Result<u16, String> {
        let Deployment::Sentinel(s) = self else {
            return Err("not a sentinel set".into());
        };
        let s = s.clone();
        tokio::task::spawn_blocking(move || s.fail_over())
            .await
            .map_err(|e| format!("the failover call: {e}"))?
    }
}

/// One slot range of a cluster and the nodes serving it.
#[derive(Debug, Clone)]
pub struct Shard {
    pub slots: (u16, u16),
    pub master: u16,
    pub replicas: Vec<u16>,
}

impl Shard {
    pub fn holds(&self, slot: u16) -> bool {
        (self.slots.0..=self.slots.1).contains(&slot)
    }
}

/// The shards as the node on `port` sees them (`CLUSTER NODES`), in slot order. (Not `CLUSTER
/// SLOTS`: Redis 7.0 leaves out a replica there until it has received data.)
fn cluster_slots(port: u16) -> Result<Vec<Shard>, String> {
    let text: String = query(port, &["CLUSTER", "NODES"])?;
    // <id> <ip:port@cport> <flags> <master id or -> <ping> <pong> <epoch> <link> <slot>...
    let mut masters: Vec<(String, Shard)> = Vec::new();
    let mut replicas: Vec<(String, u16)> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[2].contains("fail") || f[7] != "connected" {
            continue;
        }
        let Some(node_port) = f[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        if f[2].contains("master") {
            // One contiguous range per master in a cluster made by `redis-cli --cluster create`.
            let Some((from, to)) = f.get(8).and_then(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                Some((a.parse().ok()?, b.parse().ok()?))
            }) else {
                continue; // a master without slots
            };
            masters.push((
                f[0].to_string(),
                Shard {
                    slots: (from, to),
                    master: node_port,
                    replicas: Vec::new(),
                },
            ));
        } else if f[2].contains("slave") {
            replicas.push((f[3].to_string(), node_port));
        }
    }
    for (master_id, port) in replicas {
        if let Some((_, s)) = masters.iter_mut().find(|(id, _)| *id == master_id) {
            s.replicas.push(port);
        }
    }
    let mut shards: Vec<Shard> = masters.into_iter().map(|(_, s)| s).collect();
    shards.sort_by_key(|s| s.slots.0);
    Ok(shards)
}

/// One command to 127.0.0.1:`port` on a short-lived connection.
fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .map_err(|e| format!("port {port}: {e}"))?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .map_err(|e| format!("port {port}: {e}"))?;
    let _ = con.set_read_timeout(Some(Duration::from_secs(2)));
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con).map_err(|e| format!("port {port}: {e}"))
}

#[derive(Debug)]
pub struct RedisProc {
    port: u16,
    dir: PathBuf,
    persistence: Persistence,
    child: Option<Child>,
}

impl RedisProc {
    fn start(dir: &Path, persistence: Persistence) -> Result<Self, String> {
        if !rediq::testing::redis_server_available() {
            return Err(rediq::testing::INSTALL_HINT.to_string());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        let mut last = String::new();
        // A port found free can be taken before redis binds it: try again.
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let mut p = RedisProc {
                port,
                dir: dir.to_path_buf(),
                persistence,
                child: None,
            };
            p.spawn()?;
            if p.wait_ready_blocking(Duration::from_secs(10)) {
                return Ok(p);
            }
            p.kill();
            last = format!("redis-server on port {port} did not answer PING within 10 s");
        }
        Err(last)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        // Its own process group: a Ctrl-C at the terminal is for the driver, which cleans up.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match self.persistence {
            Persistence::None => {
                cmd.args(["--appendonly", "no"]);
            }
            Persistence::AofAlways => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
            }
            Persistence::AofEverysec => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
            }
        }
        self.child = Some(
            cmd.spawn()
                .map_err(|e| format!("cannot run redis-server: {e}"))?,
        );
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A frozen process dies of SIGKILL too.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid; the child is not reaped until `kill`.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    fn wait_ready_blocking(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false; // exited: port taken or bad config
            }
            if rediq::testing::ping(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "redis-server on port {} exited on restart ({st})",
                    self.port
                ));
            }
            if rediq::testing::ping(self.port) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "redis-server on port {} did not answer within {within:?} of its restart",
            self.port
        ))
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> std::io::Result<u16> {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if port != 6379 {
            return Ok(port);
        }
    }
}

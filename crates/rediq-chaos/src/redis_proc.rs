//! Redis process control: a private `redis-server` that can be SIGKILLed and restarted on the
//! same port and directory (so its AOF is replayed), or frozen with SIGSTOP. The library's
//! `rediq::testing::RedisServer` runs without persistence and cannot restart, hence this.
//!
//! [`Deployment`] is what the scenarios talk to; it takes the topology, so that cluster and
//! sentinel failover can be added beside standalone without touching the scenarios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
pub struct Deployment {
    primary: RedisProc,
}

impl Deployment {
    pub fn start(topology: Topology, persistence: Persistence, dir: &Path) -> Result<Self, String> {
        match topology {
            Topology::Standalone => Ok(Deployment {
                primary: RedisProc::start(dir, persistence)?,
            }),
            Topology::Cluster | Topology::Sentinel => Err(format!(
                "topology {topology:?} is not supported yet: Rediq's cluster and sentinel connections come in a later release; use --topology standalone"
            )),
        }
    }

    pub fn url(&self) -> String {
        self.primary.url()
    }

    /// SIGKILL the primary (no shutdown, no final fsync).
    pub fn kill_primary(&mut self) {
        self.primary.kill();
    }

    /// Starts the primary again on its port and directory; waits until it answers.
    pub async fn restart_primary(&mut self) -> Result<(), String> {
        self.primary.spawn()?;
        self.primary.wait_ready(Duration::from_secs(30)).await
    }

    /// SIGSTOP: connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.primary.signal(libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.primary.signal(libc::SIGCONT);
    }

    pub fn stop(&mut self) {
        self.primary.kill();
    }
}

#[derive(Debug)]
struct RedisProc {
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

//! Private `redis-server` processes for tests, examples and demos.
//!
//! [`RedisServer::start`] runs a fresh `redis-server` on a free port (never 6379), with no
//! persistence, in its own temporary directory, waits until it answers `PING`, and stops it when
//! dropped. If `redis-server` is not installed it panics with an install hint: tests must fail,
//! never skip silently. [`RedisCluster`] and [`RedisSentinel`] build the two high-availability
//! topologies out of such servers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod any;
mod tls;
mod topology;
pub use any::Topology;
pub use tls::TlsFiles;
pub use topology::{RedisCluster, RedisSentinel};

/// How to install Redis, for error messages.
pub const INSTALL_HINT: &str =
    "redis-server was not found on PATH; install it (Debian/Ubuntu: `apt-get install redis-server redis-tools`, macOS: `brew install redis`)";

/// A `redis-server` child process on a free local port.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Whether it listens with TLS only ([`RedisServer::start_tls`]).
    tls: bool,
}

impl RedisServer {
    /// Starts a private server, panicking with a clear message when that is impossible.
    pub fn start() -> RedisServer {
        match Self::try_start() {
            Ok(s) => s,
            Err(e) => panic!("cannot start a private redis-server: {e}"),
        }
    }

    /// Starts a private server.
    pub fn try_start() -> Result<RedisServer, String> {
        if !redis_server_available() {
            return Err(INSTALL_HINT.to_string());
        }
        Self::try_start_binary(std::path::Path::new("redis-server"))
    }

    /// Starts a private server from the given `redis-server` binary (say, a newer build than
    /// the one on `PATH`, to measure on it).
    ///
    /// ```no_run
    /// use rediq::testing::RedisServer;
    /// let redis = RedisServer::try_start_binary("/opt/redis-8.6/bin/redis-server".as_ref())?;
    /// println!("{}", redis.url());
    /// # Ok::<(), String>(())
    /// ```
    pub fn try_start_binary(binary: &std::path::Path) -> Result<RedisServer, String> {
        Self::spawn(binary, None, &[])
    }

    /// Starts a private server from `binary` with a configuration file holding `conf` (when
    /// given; its path comes first, as Sentinel requires, and the server may rewrite it) and
    /// `extra` arguments after the defaults.
    pub(crate) fn spawn(
        binary: &std::path::Path,
        conf: Option<&str>,
        extra: &[&str],
    ) -> Result<RedisServer, String> {
        Self::spawn_with(binary, conf, extra, None)
    }

    /// [`RedisServer::spawn`], listening with TLS only when `tls` is given (`--port 0`, the
    /// free port as `--tls-port`, the certificates of `tls`).
    pub(crate) fn spawn_with(
        binary: &std::path::Path,
        conf: Option<&str>,
        extra: &[&str],
        tls: Option<&TlsFiles>,
    ) -> Result<RedisServer, String> {
        let mut last = String::new();
        // A port found free can be taken by someone else before redis binds it: try again.
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let dir = std::env::temp_dir().join(format!(
                "rediq-redis-{}-{port}-{}",
                std::process::id(),
                crate::task::now_ms()
            ));
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
            let mut cmd = Command::new(binary);
            if let Some(conf) = conf {
                let path = dir.join("redis.conf");
                std::fs::write(&path, conf).map_err(|e| format!("cannot write {path:?}: {e}"))?;
                cmd.arg(path);
            }
            // Its own process group: a Ctrl-C typed at the terminal must reach the demo (which
            // then shuts down gracefully), not kill its Redis in the middle of that.
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            match tls {
                Some(files) => cmd
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(files.server_args()),
                None => cmd.args(["--port", &port.to_string()]),
            };
            let child = cmd
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
            let mut server = RedisServer {
                child: Some(child),
                port,
                dir,
                tls: tls.is_some(),
            };
            if server.wait_ready(Duration::from_secs(10)) {
                return Ok(server);
            }
            last = format!("redis-server on port {port} did not answer PING within 10 s");
            server.stop();
        }
        Err(last)
    }

    /// Starts a private replica of this server (same binary as `redis-server` on PATH) and
    /// waits until its link to this server is up.
    pub fn try_start_replica(&self) -> Result<RedisServer, String> {
        let port = self.port.to_string();
        let replica = Self::spawn(
            std::path::Path::new("redis-server"),
            None,
            &["--replicaof", "127.0.0.1", &port],
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = redis::Client::open(replica.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut c)
                })
                .is_ok_and(|info| info.contains("master_link_status:up"));
            if up {
                return Ok(replica);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the replica on port {} did not sync within 20 s",
                    replica.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the `redis-server`, to pause (SIGSTOP) or kill it in fault tests;
    /// `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL) and removes its directory. Harmless twice.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return false; // exited: port taken or bad config
                }
            }
            // A TLS server does not answer a plain PING: that it accepts connections will do.
            let ready = if self.tls {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                ping(self.port)
            };
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Picks a Redis for a demo or example, the way `cargo run --example quickstart` promises:
/// `REDIS_URL` when set; else the Redis answering on 127.0.0.1:6379; else a private
/// `redis-server` started here (announced on stdout; it stops when the returned value is
/// dropped); else an error with [`INSTALL_HINT`]. `REDIQ_DEMO_PRIVATE=1` forces the private one.
pub fn redis_for_demo() -> Result<(String, Option<RedisServer>), String> {
    let force_private = std::env::var("REDIQ_DEMO_PRIVATE").is_ok_and(|v| v == "1");
    if !force_private {
        if let Some(url) = std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            return Ok((url, None));
        }
        if ping(6379) {
            return Ok(("redis://127.0.0.1:6379".to_string(), None));
        }
    }
    if !redis_server_available() {
        return Err(INSTALL_HINT.to_string());
    }
    let server = RedisServer::try_start()?;
    println!(
        "Started a private redis-server on port {} for this demo (it stops when the demo exits).",
        server.port()
    );
    Ok((server.url(), Some(server)))
}

/// The `main` of a demo: picks a Redis with [`redis_for_demo`], runs `demo` with its URL, and
/// turns the outcome into an exit code (printing the error, if any).
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     rediq::testing::run_demo(|url| async move {
///         let client = rediq::Client::builder().redis_url(url).build().await?;
///         client.enqueue(rediq::Task::builder("hello").build()?).await?;
///         Ok(())
///     })
///     .await
/// }
/// ```
pub async fn run_demo<F, Fut>(demo: F) -> std::process::ExitCode
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    let (url, _private_redis) = match redis_for_demo() {
        Ok(chosen) => chosen,
        Err(why) => {
            eprintln!("{why}");
            return std::process::ExitCode::from(1);
        }
    };
    match demo(url).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Whether `redis-server` can be run.
pub fn redis_server_available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether something answers Redis `PING` on 127.0.0.1:`port`.
pub fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // A server that requires a password answers too, with -NOAUTH.
    let mut buf = [0u8; 7];
    matches!(s.read(&mut buf), Ok(n) if n >= 5 && (&buf[..5] == b"+PONG" || &buf[..5] == b"-NOAU"))
}

fn free_port() -> std::io::Result<u16> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port != 6379 {
            return Ok(port);
        }
    }
}

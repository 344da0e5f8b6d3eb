//! The worker processes of a scenario: this binary re-run with `worker`, each a separate
//! process that can be SIGKILLed, SIGSTOPped or asked to shut down (SIGTERM), with its stderr
//! (its warnings) in `worker-<name>.log` and its runs in `exec-<name>.log`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings passed to every worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub url: String,
    pub mode: crate::Topology,
    pub lease: Duration,
    pub shutdown_timeout: Duration,
    pub concurrency: usize,
    pub threads: usize,
}

#[derive(Debug)]
pub struct Worker {
    pub name: String,
    child: Child,
}

impl Worker {
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child, not yet reaped (we hold its `Child`).
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }
}

#[derive(Debug)]
pub struct Pool {
    dir: PathBuf,
    cfg: WorkerConfig,
    pub live: Vec<Worker>,
    next: usize,
    /// Graceful shutdowns measured: (worker, how long it took, whether it exited by itself).
    pub shutdowns: Vec<(String, Duration, bool)>,
}

impl Pool {
    pub fn new(dir: &Path, cfg: WorkerConfig) -> Pool {
        Pool {
            dir: dir.to_path_buf(),
            cfg,
            live: Vec::new(),
            next: 1,
            shutdowns: Vec::new(),
        }
    }

    /// Starts one more worker.
    pub fn spawn(&mut self) -> Result<(), String> {
        let name = format!("w{}", self.next);
        self.next += 1;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let log = File::create(self.dir.join(format!("worker-{name}.log")))
            .map_err(|e| format!("cannot create the log of worker {name}: {e}"))?;
        let mut cmd = Command::new(exe);
        // Its own process group: a Ctrl-C at the terminal is for the driver, which cleans up.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .arg("worker")
            .args(["--redis-url", &self.cfg.url])
            .args(["--mode", self.cfg.mode.name()])
            .args(["--name", &name])
            .arg("--exec-log")
            .arg(self.dir.join(format!("exec-{name}.log")))
            .args(["--lease-ms", &self.cfg.lease.as_millis().to_string()])
            .args([
                "--shutdown-ms",
                &self.cfg.shutdown_timeout.as_millis().to_string(),
            ])
            .args(["--concurrency", &self.cfg.concurrency.to_string()])
            .args(["--threads", &self.cfg.threads.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start worker {name}: {e}"))?;
        self.live.push(Worker { name, child });
        Ok(())
    }

    /// Starts workers until `n` are live, after reaping those that exited by themselves.
    pub fn top_up(&mut self, n: usize) -> Result<(), String> {
        self.live
            .retain_mut(|w| !matches!(w.child.try_wait(), Ok(Some(_))));
        while self.live.len() < n {
            self.spawn()?;
        }
        Ok(())
    }

    /// SIGKILLs worker `i`; returns its name.
    pub fn kill(&mut self, i: usize) -> String {
        let mut w = self.live.remove(i);
        let _ = w.child.kill();
        let _ = w.child.wait();
        w.name
    }

    pub fn freeze(&self, i: usize) {
        self.live[i].signal(libc::SIGSTOP);
    }

    pub fn thaw(&self, i: usize) {
        self.live[i].signal(libc::SIGCONT);
    }

    /// SIGTERMs worker `i` and waits up to `patience` for it to exit (then SIGKILLs it);
    /// records how long it took.
    pub async fn terminate(&mut self, i: usize, patience: Duration) -> (String, Duration, bool) {
        let mut w = self.live.remove(i);
        w.signal(libc::SIGCONT); // a frozen worker could not even see the SIGTERM
        w.signal(libc::SIGTERM);
        let t0 = Instant::now();
        let mut exited = false;
        while t0.elapsed() < patience {
            if let Ok(Some(_)) = w.child.try_wait() {
                exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = t0.elapsed();
        if !exited {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        let r = (w.name, took, exited);
        self.shutdowns.push(r.clone());
        r
    }

    /// Terminates every live worker at once; records each shutdown.
    pub async fn terminate_all(&mut self, patience: Duration) {
        for w in &self.live {
            w.signal(libc::SIGCONT);
            w.signal(libc::SIGTERM);
        }
        let t0 = Instant::now();
        let mut waiting: Vec<Worker> = std::mem::take(&mut self.live);
        while !waiting.is_empty() && t0.elapsed() < patience {
            waiting.retain_mut(|w| {
                if let Ok(Some(_)) = w.child.try_wait() {
                    self.shutdowns.push((w.name.clone(), t0.elapsed(), true));
                    false
                } else {
                    true
                }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for mut w in waiting {
            let _ = w.child.kill();
            let _ = w.child.wait();
            self.shutdowns.push((w.name.clone(), t0.elapsed(), false));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in &mut self.live {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

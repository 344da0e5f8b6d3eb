//! The execution log: every handler run, recorded by the worker outside Redis, in an
//! append-only file per worker process, so that neither a Redis fault nor the queue's own keys
//! can hide a run. A run writes a start line before it works and an end line with its outcome
//! after; a run cut short by SIGKILL has no end line, one whose future was dropped (timeout,
//! shutdown) ends with `dropped`.
//!
//! Lines: `S <ms> <task id> <attempt> <worker>` and `E <ms> <task id> <attempt> <worker> <outcome>`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The writing side, in a worker.
#[derive(Debug)]
pub struct ExecLog {
    file: Mutex<File>,
    worker: String,
}

impl ExecLog {
    pub fn open(path: &Path, worker: &str) -> std::io::Result<Arc<ExecLog>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Arc::new(ExecLog {
            file: Mutex::new(file),
            worker: worker.to_string(),
        }))
    }

    fn line(&self, line: &str) {
        // One write per line on an O_APPEND file: a SIGKILL leaves whole lines (the page cache
        // survives the process). A failed write would make the accounting wrong: stop loudly.
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            eprintln!("cannot write the execution log: {e}");
            std::process::exit(70);
        }
    }

    /// Records the start of a run; the returned guard records its end.
    pub fn start(self: &Arc<Self>, id: &str, attempt: u32) -> RunGuard {
        self.line(&format!("S {} {id} {attempt} {}\n", now_ms(), self.worker));
        RunGuard {
            log: self.clone(),
            id: id.to_string(),
            attempt,
            done: false,
        }
    }
}

/// Records the end of a run: explicitly with its outcome, or `dropped` when the run's future
/// is dropped first.
pub struct RunGuard {
    log: Arc<ExecLog>,
    id: String,
    attempt: u32,
    done: bool,
}

impl RunGuard {
    pub fn end(mut self, outcome: &str) {
        self.write(outcome);
    }

    fn write(&mut self, outcome: &str) {
        if !self.done {
            self.done = true;
            self.log.line(&format!(
                "E {} {} {} {} {outcome}\n",
                now_ms(),
                self.id,
                self.attempt,
                self.log.worker
            ));
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.write("dropped");
    }
}

/// One run, as read back by the driver.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub attempt: u32,
    pub worker: String,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub outcome: Option<String>,
}

/// Reads every `exec-*.log` of `dir`, pairing each end line with the oldest open start of the
/// same task and attempt in the same file.
pub fn read_runs(dir: &Path) -> std::io::Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("exec-") && n.ends_with(".log"))
        })
        .collect();
    paths.sort();
    for p in paths {
        let first = runs.len();
        for line in BufReader::new(File::open(&p)?).lines() {
            let line = line?;
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["S", ms, id, attempt, worker] => runs.push(Run {
                    id: id.to_string(),
                    attempt: attempt.parse().unwrap_or(0),
                    worker: worker.to_string(),
                    start_ms: ms.parse().unwrap_or(0),
                    end_ms: None,
                    outcome: None,
                }),
                ["E", ms, id, attempt, _worker, outcome] => {
                    let attempt: u32 = attempt.parse().unwrap_or(0);
                    if let Some(r) = runs[first..]
                        .iter_mut()
                        .find(|r| r.end_ms.is_none() && r.id == *id && r.attempt == attempt)
                    {
                        r.end_ms = ms.parse().ok();
                        r.outcome = Some(outcome.to_string());
                    }
                }
                _ => {} // a torn last line of a killed process: its run has no end
            }
        }
    }
    Ok(runs)
}

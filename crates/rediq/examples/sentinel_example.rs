//! Rediq under Redis Sentinel: the client and the server find the master through the
//! sentinels and follow it across a failover, without a restart.
//!
//! ```text
//! cargo run --example sentinel_example
//! ```
//!
//! Redis: `$REDIS_SENTINEL_URL` if set (`redis+sentinel://s1:26379,s2:26379/mymaster`, or the
//! seed's `redis://sentinel:26379` with the master name `mymaster`); else a private set of a
//! master, a replica and three sentinels, started for this run and stopped when it ends. Logs:
//! `RUST_LOG` (default `info`).
//!
//! It processes a stream of tasks, fails the master over (`SENTINEL FAILOVER`, private set
//! only) while the stream goes on, and shows that every task the client acknowledged was
//! processed on the new master. The client waits for one replica per enqueue
//! (`wait_for_replicas`), which is what makes an acknowledged enqueue survive a failover. The
//! queue is `sentinel-example`, flushed at start and at exit.

mod common;

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::RedisSentinel;
use rediq::{Client, Task};

const QUEUE: &str = "sentinel-example";

#[tokio::main]
async fn main() -> ExitCode {
    // Logs to stderr, filtered by RUST_LOG (default: info).
    common::init_logging("info");
    let (url, private) = match std::env::var("REDIS_SENTINEL_URL") {
        Ok(url) if !url.trim().is_empty() => (url, None),
        _ => match RedisSentinel::try_start() {
            Ok(s) => {
                println!(
                    "Started a private master, replica and three sentinels (sentinel ports {:?}).",
                    s.sentinel_ports()
                );
                (s.url(), Some(s))
            }
            Err(e) => {
                eprintln!("cannot start a private Redis Sentinel set: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let result = demo(&url, private.as_ref()).await;
    drop(private);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Remembers the ids of the tasks it runs.
struct Seen(Arc<Mutex<HashSet<String>>>);

#[async_trait]
impl Handler for Seen {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task.id.clone());
        Ok(())
    }
}

async fn demo(
    url: &str,
    private: Option<&RedisSentinel>,
) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder()
        .redis_url(url)
        .sentinel_mode()
        .wait_for_replicas(1, Duration::from_secs(1))
        .build()
        .await?;
    client.flush_queue(QUEUE).await?;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut mux = Mux::new();
    mux.handle("work", Seen(seen.clone()));
    let state = ServerBuilder::new()
        .redis_url(url)
        .sentinel_mode()
        .queues(&[QUEUE])
        .build()
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::from(state).run_until(mux, async {
        let _ = stop_rx.await;
    }));

    // A steady stream: one task every 10 ms, each acknowledged by the master and a replica.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), 0u64);
            while !stop.load(Ordering::SeqCst) {
                match client
                    .enqueue(Task::builder("work").queue(QUEUE).build()?)
                    .await
                {
                    Ok(id) => acked.push((Instant::now(), id)),
                    Err(_) => refused += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, rediq::Error>((acked, refused))
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut switched = None;
    if let Some(ha) = private {
        let old = ha.current_master_port()?;
        println!("Master on port {old}; failing it over (SENTINEL FAILOVER mymaster) while tasks flow...");
        let t = Instant::now();
        let new = tokio::task::block_in_place(|| ha.fail_over())?;
        println!(
            "  the sentinels name port {new} as master now ({:?}).",
            t.elapsed()
        );
        switched = Some(Instant::now());
        // The demoted master resynchronises after the new master's diskless-sync delay (5 s
        // by default); until then no replica confirms, and enqueues say so instead of Ok.
        tokio::time::sleep(Duration::from_secs(8)).await;
    } else {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (acked, refused) = producer.await??;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let missing = {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            acked.iter().filter(|(_, id)| !seen.contains(id)).count()
        };
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{missing} acknowledged tasks were not processed").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = switched.map_or(0, |s| acked.iter().filter(|(at, _)| *at > s).count());
    println!(
        "All {} acknowledged tasks were processed ({after} of them acknowledged by the new master); {refused} enqueues were refused while no replica could confirm them.",
        acked.len()
    );
    let _ = stop_tx.send(());
    server.await??;
    client.flush_queue(QUEUE).await?;
    Ok(())
}

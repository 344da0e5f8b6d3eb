//! A worker process: one real `rediq::server::Server` serving the chaos queues, whose handlers
//! act out each task's plan and record every run in the execution log. It registers the
//! periodic entry at start-up, as the docs recommend, and exits if its driver dies.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rediq::processor::{Handler, Mux};
use rediq::server::Server;
use rediq::{Error, Task};

use crate::execlog::ExecLog;
use crate::workload::{Kind, Plan, CRON_EXPR, QUEUES};
use crate::Topology;

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[arg(long)]
    pub redis_url: String,
    /// The topology `--redis-url` names (the builders' mode).
    #[arg(long, value_enum, default_value = "standalone")]
    pub mode: Topology,
    /// Name in the execution log (w1, w2, …).
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub exec_log: PathBuf,
    #[arg(long)]
    pub lease_ms: u64,
    #[arg(long)]
    pub shutdown_ms: u64,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Tokio worker threads: a small runtime, as many deployments have.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

pub fn main(args: WorkerArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("worker {}: cannot start a runtime: {e}", args.name);
            return ExitCode::from(2);
        }
    };
    match rt.block_on(serve(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker {}: {e}", args.name);
            ExitCode::from(1)
        }
    }
}

async fn serve(args: &WorkerArgs) -> Result<(), Box<dyn std::error::Error>> {
    watch_parent();
    let log = ExecLog::open(&args.exec_log, &args.name)?;
    // Register the periodic entry at every start-up (the pattern docs/configuration.md gives).
    let client = args.mode.client(&args.redis_url).build().await?;
    let cron = Task::builder(Kind::Cron.task_type())
        .queue(QUEUES[0])
        .payload(&Plan {
            k: Kind::Cron,
            fail: 0,
            ms: 5,
        })?
        .max_retry(5)
        .cron(CRON_EXPR)
        .build()?;
    client.enqueue(cron).await?;

    let state = args
        .mode
        .server(&args.redis_url)
        .queues_weighted(&[(QUEUES[0], 3), (QUEUES[1], 2), (QUEUES[2], 2)])
        .concurrency(args.concurrency)
        .lease_duration(Duration::from_millis(args.lease_ms))
        .shutdown_timeout(Duration::from_millis(args.shutdown_ms))
        .retry_backoff(Duration::from_millis(100), Duration::from_secs(1))
        // Completed tasks are kept, so the driver can count completions per id.
        .completed_retention(Duration::from_secs(24 * 3600))
        .metrics(false)
        .build()
        .await?;
    let handler = Arc::new(ChaosHandler { log });
    let mut mux = Mux::new();
    for k in Kind::ALL {
        mux.handle(k.task_type(), handler.clone());
    }
    Server::from(state).run(mux).await?;
    Ok(())
}

/// Exits when the driver is gone (its pid is no longer our parent), so that a driver killed
/// by Ctrl-C or SIGKILL leaves no worker behind.
fn watch_parent() {
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() };
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            std::process::exit(3);
        }
    });
}

struct ChaosHandler {
    log: Arc<ExecLog>,
}

#[rediq::async_trait]
impl Handler for ChaosHandler {
    async fn handle(&self, task: &Task) -> rediq::Result<()> {
        let plan: Plan = task.payload_json()?;
        let attempt = task.attempt();
        let run = self.log.start(&task.id, attempt);
        let failing = attempt <= plan.fail;
        let work = Duration::from_millis(plan.ms);
        match plan.k {
            Kind::Plain | Kind::Slow | Kind::Cron => tokio::time::sleep(work).await,
            Kind::Flaky if failing => {
                run.end("fail");
                return Err(Error::handler(format!(
                    "planned failure on attempt {attempt}"
                )));
            }
            Kind::Flaky => tokio::time::sleep(work).await,
            Kind::Doomed => {
                tokio::time::sleep(work).await;
                run.end("fail");
                return Err(Error::handler("planned: this task always fails"));
            }
            Kind::Nonretry => {
                run.end("fail");
                return Err(Error::non_retryable("planned: not retryable"));
            }
            Kind::Panic if failing => {
                run.end("panic");
                panic!("planned panic on attempt {attempt}");
            }
            Kind::Hang if failing => {
                // Never returns: the task's timeout drops this future (the guard ends the run).
                std::future::pending::<()>().await;
            }
            Kind::Panic | Kind::Hang => {}
            // Deliberately blocks the runtime thread, as careless handlers do.
            Kind::Block => std::thread::sleep(work),
        }
        run.end("ok");
        Ok(())
    }
}

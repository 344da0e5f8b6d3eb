//! One module per command group; each reads and acts through the library's `Inspector`, so the
//! CLI sees exactly what servers and clients see, on any topology.

mod cron;
mod queue;
mod task;
mod worker;

use rediq::Inspector;

use crate::cli::{Command, Global};

/// What a command failed with: printed as one line on stderr, exit status 1.
pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Connects as the global flags say, checking the topology (`Inspector`'s build does).
pub async fn connect(g: &Global) -> rediq::Result<Inspector> {
    let mut b = Inspector::builder().redis_url(&g.redis_url);
    if g.cluster {
        b = b.cluster_mode();
    }
    if g.sentinel {
        b = b.sentinel_mode();
    }
    b.build().await
}

pub async fn run(cmd: Command, g: &Global) -> Result {
    let i = connect(g).await?;
    match cmd {
        Command::Queue(c) => queue::run(&i, c, g.json).await,
        Command::Task(c) => task::run(&i, c, g.json).await,
        Command::Worker(c) => worker::run(&i, c, g.json).await,
        Command::Stats { queue, days } => queue::stats(&i, queue.as_deref(), days, g.json).await,
        Command::Cron(c) => cron::run(&i, c, g.json).await,
        Command::Dash { interval } => crate::dash::run(&i, interval).await,
        Command::Web {
            listen,
            base_path,
            read_only,
        } => web(i, listen, base_path, read_only).await,
    }
}

/// `rediq web`: serves the UI until Ctrl-C.
async fn web(
    i: Inspector,
    listen: std::net::SocketAddr,
    base_path: String,
    read_only: bool,
) -> Result {
    let auth = rediq::web::Auth::from_env().map_err(|e| e.to_string())?;
    let prefix = base_path.trim_end_matches('/').to_string();
    let ui = rediq::web::router(
        i,
        rediq::web::WebConfig {
            base_path: prefix.clone(),
            auth,
            read_only,
        },
    );
    let app = if prefix.is_empty() {
        ui
    } else {
        axum::Router::new().nest(&prefix, ui)
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let home = if prefix.is_empty() { "/" } else { &prefix };
    eprintln!("serving the web UI on http://{listen}{home} (Ctrl-C stops it)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("the web UI stopped: {e}"))?;
    Ok(())
}

/// Fails with a clear line when `queue` is not a queue Rediq knows (a typo would otherwise
/// read as an empty queue, or pause a queue nobody uses).
async fn known_queue(i: &Inspector, queue: &str) -> Result {
    let known = i.queues().await?;
    if known.iter().any(|q| q == queue) {
        return Ok(());
    }
    let list = if known.is_empty() {
        "no queue is known yet".to_string()
    } else if known.len() <= 10 {
        format!("known queues: {}", known.join(", "))
    } else {
        format!("{} queues are known; see `rediq queue list`", known.len())
    };
    Err(format!("unknown queue {queue:?} ({list})").into())
}

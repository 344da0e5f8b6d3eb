//! `rediq`: the command-line tool of the Rediq task queue.
//!
//! This first version answers `--help` and `--version`; queue, task and worker commands and the
//! live dashboard build on the library's `Inspector` in later releases.

use clap::Parser;

/// Command-line tool for the Rediq distributed task queue.
#[derive(Parser, Debug)]
#[command(name = "rediq", version, about, long_about = None)]
struct Cli {
    /// Redis URL (also read from REDIS_URL).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    redis_url: String,
}

fn main() {
    let cli = Cli::parse();
    println!(
        "rediq {}: no command given (the queue, task and worker commands are not implemented yet; see `rediq --help`). Redis: {}",
        env!("CARGO_PKG_VERSION"),
        mask(&cli.redis_url)
    );
}

fn mask(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}****{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

//! `rediq`: the command-line tool of the Rediq task queue.
//!
//! The command tree is in `cli.rs`, each command group in `commands/`, tables and JSON in
//! `output.rs`. Every command reads and acts through the library's `Inspector`. Errors print one
//! line on stderr and exit with status 1; no output shows a password (the library masks URLs
//! in its errors, and `--help` hides `REDIS_URL`'s value).

mod cli;
mod commands;
mod dash;
mod output;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli.command, &cli.global).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The library names its builder methods; here they are flags.
            let line = e
                .to_string()
                .replace(".cluster_mode()", "--cluster")
                .replace(".sentinel_mode()", "--sentinel");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

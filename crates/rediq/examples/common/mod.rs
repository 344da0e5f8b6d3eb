//! What every demo shares: its logging. Not an example by itself (cargo runs only
//! `examples/*.rs` and `examples/*/main.rs`).

/// Logs go to stderr, coloured only on a terminal; `RUST_LOG` filters them, `default` when unset.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

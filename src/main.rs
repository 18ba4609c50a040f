//! `eventyard`: parse the command line, set up logging, run, map errors to exit codes.

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: the router allocates many small short-lived values per event (JSON trees,
/// ids); mimalloc serves them faster than the system allocator under concurrency.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = eventyard::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match eventyard::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

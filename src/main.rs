//! `eventyard`: parse the command line, set up logging, run, map errors to exit codes.

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: the router allocates many small short-lived values per event (JSON trees,
/// ids); mimalloc serves them faster than the system allocator under concurrency.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = eventyard::cli::Cli::parse();
    let runtime = match eventyard::cli::runtime(&cli) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: eventyard::cli::Cli) -> ExitCode {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if matches!(cli.command, eventyard::cli::Command::Plugin { .. }) {
        // `plugin test` is there to show what the plugin says, whatever RUST_LOG hides.
        filter = filter.add_directive("plugin=trace".parse().expect("a valid directive"));
    }
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match eventyard::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

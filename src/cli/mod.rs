//! The `eventyard` command line: `serve`, `schemas generate|list`, `validate`, `dead-letters`,
//! `plugin test`.
//!
//! Exit codes: 0 success; 1 the check ran and failed (an invalid event, drifted schemas);
//! 2 the command could not run (unknown type, unreadable file, bad table, bad config).

pub mod dead_letters;
pub mod plugin;
pub mod progress;

use crate::config::Config;
use crate::schema::catalog::{generate, Catalog};
use crate::schema::{Registry, SchemaError, Strictness};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "eventyard", version, about = "A WebAssembly-extensible event router with schema-validated ingestion")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Progress of long jobs on stderr: `auto` while stderr is a terminal, `always` (plain
    /// lines when it is not), `never`.
    #[arg(long, value_enum, global = true, default_value = "auto")]
    pub progress: progress::When,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the router. With no config it starts on the built-in catalogue.
    Serve {
        /// TOML config file (see README "Configuration").
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the config (default 127.0.0.1:7878).
        #[arg(long, short)]
        listen: Option<SocketAddr>,
        /// Threads of the runtime that serves the doors (HTTP, WebSockets, NATS, AMQP,
        /// admin); default one per core. Plugins run on their own threads
        /// (`pipeline.workers`). Fewer when other busy processes share the machine (README
        /// "Threads").
        #[arg(long, env = "EVENTYARD_THREADS")]
        threads: Option<std::num::NonZeroUsize>,
    },
    /// Generate or check the JSON Schemas of the event catalogue.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
    /// Inspect, replay or purge the dead letters of a running router.
    DeadLetters {
        /// The router's address.
        #[arg(long, default_value = "http://127.0.0.1:7878", global = true)]
        server: String,
        /// The router's admin token (see README "Tokens").
        #[arg(long, env = "EVENTYARD_TOKEN", global = true, hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: crate::cli::dead_letters::DeadLetterCommand,
    },
    /// Work on plugins: `plugin test` runs a component on events outside the server.
    Plugin {
        #[command(subcommand)]
        command: crate::cli::plugin::PluginCommand,
    },
    /// Validate one event against its type's schema: exit 0 when valid, 1 when not.
    Validate {
        /// The event type, e.g. `infrahub/check.generator.run`.
        #[arg(value_name = "TYPE")]
        type_name: String,
        /// The event body (JSON), or `-` for standard input.
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
        /// Markdown tables to build the catalogue from instead of the built-in one.
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        /// Accept fields the schema does not list.
        #[arg(long)]
        allow_unknown_fields: bool,
        /// Print the report as JSON (the HTTP API's error body).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SchemasCommand {
    /// Turn the Markdown tables into `<out>/<family>/<name>.schema.json` files.
    Generate {
        /// Directory of Markdown tables.
        #[arg(long, default_value = "schemas/source")]
        source: PathBuf,
        /// Where the schema files go.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
        /// Write nothing; exit 1 and name every file that differs from what the tables generate.
        #[arg(long)]
        check: bool,
    },
    /// List the event types of the catalogue.
    List {
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
    },
}

/// The runtime the command runs on: `serve --threads` sizes it, anything else takes tokio's
/// default (one thread per core).
pub fn runtime(cli: &Cli) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve { threads: Some(n), .. } = &cli.command {
        builder.worker_threads(n.get());
    }
    builder.enable_all().build()
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let when = cli.progress;
    match cli.command {
        Command::Serve { config, listen, .. } => serve(config, listen).await,
        Command::Schemas { command: SchemasCommand::Generate { source, out, check } } => {
            schemas_generate(source, out, check, when)
        }
        Command::Schemas { command: SchemasCommand::List { source } } => {
            for def in catalog(source.as_ref())?.events {
                println!("{}", def.type_name());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters { server, token, command } => {
            tokio::task::spawn_blocking(move || crate::cli::dead_letters::run(&server, token.as_deref(), command, when))
                .await?
        }
        Command::Plugin { command } => {
            tokio::task::spawn_blocking(move || crate::cli::plugin::run(command, when)).await?
        }
        Command::Validate { type_name, file, source, allow_unknown_fields, json } => {
            validate(&type_name, &file, source.as_ref(), allow_unknown_fields, json)
        }
    }
}

async fn serve(config: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let mut config = match config {
        Some(p) => Config::load(&p)?,
        None => Config::embedded_default(),
    };
    if let Some(addr) = listen {
        config.listen = addr;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    crate::app::run(&config, listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

fn catalog(source: Option<&PathBuf>) -> anyhow::Result<Catalog> {
    Ok(match source {
        Some(dir) => Catalog::from_dir(dir)?,
        None => Catalog::embedded()?,
    })
}

fn schemas_generate(source: PathBuf, out: PathBuf, check: bool, when: progress::When) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::from_dir(&source)?;
    let progress =
        progress::Progress::new(when, catalog.events.len() as u64, if check { "checking" } else { "writing" });
    let step = |path: &std::path::Path| progress.step(path.display().to_string());
    if check {
        let drift = generate::check_each(&catalog, &out, step).with_context(|| format!("reading {}", out.display()))?;
        progress.finish();
        if drift.is_empty() {
            println!("{} schemas in {} match {}", catalog.events.len(), out.display(), source.display());
            return Ok(ExitCode::SUCCESS);
        }
        for d in &drift {
            eprintln!("{d}");
        }
        eprintln!("{} file(s) out of date; run `eventyard schemas generate` and commit the result", drift.len());
        return Ok(ExitCode::from(1));
    }
    let written = generate::write_each(&catalog, &out, step).with_context(|| format!("writing {}", out.display()))?;
    progress.finish();
    println!("wrote {} schemas to {}", written.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

fn validate(
    type_name: &str,
    file: &PathBuf,
    source: Option<&PathBuf>,
    open: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let strictness = if open { Strictness::allow_unknown_fields(&["*".to_string()])? } else { Strictness::default() };
    let registry = Registry::from_catalog(&catalog(source)?, &strictness)?;
    let ty = match registry.get(type_name) {
        Ok(t) => t,
        Err(SchemaError::UnknownType { suggestions, .. }) => {
            eprintln!("unknown event type `{type_name}`");
            if !suggestions.is_empty() {
                eprintln!("close names: {}", suggestions.join(", "));
            }
            eprintln!("`eventyard schemas list` shows every type");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let event: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => bail!("{}: not JSON at line {}, column {}: {e}", file.display(), e.line(), e.column()),
    };
    match ty.validate(&event) {
        Ok(()) => {
            if json {
                println!("{}", serde_json::json!({ "valid": true, "type": &*ty.name }));
            } else {
                println!("valid: {}", ty.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            if json {
                println!("{}", serde_json::json!({ "valid": false, "type": &*ty.name, "errors": errors }));
            } else {
                println!("invalid: {} ({} error(s))", ty.name, errors.len());
                for e in &errors {
                    let at = if e.instance_path.is_empty() { "(root)" } else { &e.instance_path };
                    println!("  {at}: {} [schema {}]", e.message, e.schema_path);
                }
            }
            Ok(ExitCode::from(1))
        }
    }
}

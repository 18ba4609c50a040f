//! `eventyard dead-letters list|show|replay|purge`: the dead-letter API of a running router,
//! from the command line. Prints the server's JSON; exit 0 on success, 1 when the server
//! refused (the error body is printed), 2 when it cannot be reached.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum DeadLetterCommand {
    /// List dead letters, newest first.
    List(Selection),
    /// Show one dead letter.
    Show { id: String },
    /// Try one dead letter again (by id), or every one the selection matches.
    Replay {
        id: Option<String>,
        #[command(flatten)]
        selection: Selection,
    },
    /// Delete one dead letter (by id), or every one the selection matches (`--all` for all).
    Purge {
        id: Option<String>,
        #[command(flatten)]
        selection: Selection,
        /// Needed to purge every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// Which dead letters (each option narrows the selection).
#[derive(Args, Debug, Default)]
pub struct Selection {
    /// Failure kind, e.g. `deadline`, `trap`, `handler_error`.
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    plugin: Option<String>,
    /// Event type, e.g. `infrahub/send.echo.request`.
    #[arg(long = "type")]
    type_name: Option<String>,
    /// Recorded at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Recorded before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    limit: Option<usize>,
}

impl Selection {
    fn query(&self) -> String {
        let pairs = [
            ("kind", self.kind.clone()),
            ("plugin", self.plugin.clone()),
            ("type", self.type_name.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
            ("limit", self.limit.map(|l| l.to_string())),
        ];
        let q: Vec<String> =
            pairs.into_iter().filter_map(|(k, v)| v.map(|v| format!("{k}={}", urlencode(&v)))).collect();
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }

    fn is_empty(&self) -> bool {
        self.query().is_empty()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn run(server: &str, token: Option<&str>, command: DeadLetterCommand) -> anyhow::Result<ExitCode> {
    let base = format!("{}/v1/dead-letters", server.trim_end_matches('/'));
    let (method, url) = match &command {
        DeadLetterCommand::List(s) => ("GET", format!("{base}{}", s.query())),
        DeadLetterCommand::Show { id } => ("GET", format!("{base}/{}", urlencode(id))),
        DeadLetterCommand::Replay { id: Some(id), .. } => ("POST", format!("{base}/{}/replay", urlencode(id))),
        DeadLetterCommand::Replay { id: None, selection } => ("POST", format!("{base}/replay{}", selection.query())),
        DeadLetterCommand::Purge { id: Some(id), .. } => ("DELETE", format!("{base}/{}", urlencode(id))),
        DeadLetterCommand::Purge { id: None, selection, all } => {
            if selection.is_empty() && !all {
                anyhow::bail!("purge needs an id, a selection (--kind, --plugin, --type, --since, --until) or --all");
            }
            ("DELETE", format!("{base}{}", selection.query()))
        }
    };
    let mut request = ureq::request(method, &url);
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(res) => {
            println!("{}", res.into_string().context("reading the answer")?);
            Ok(ExitCode::SUCCESS)
        }
        Err(ureq::Error::Status(_, res)) => {
            eprintln!("{}", res.into_string().unwrap_or_default());
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(anyhow::anyhow!("cannot reach the router at {server}: {e}")),
    }
}

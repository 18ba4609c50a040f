//! `eventyard dead-letters list|show|replay|purge`: the dead-letter API of a running router,
//! from the command line. Prints the server's JSON; exit 0 on success, 1 when the server
//! refused (the error body is printed), 2 when it cannot be reached.
//!
//! `replay --wait` follows the attempts until every replayed letter has left the list
//! (showing progress on stderr, see [`super::progress`]), then prints how many were
//! replayed and how many new dead letters the selection gained meanwhile.

use super::progress::{Progress, When};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often `replay --wait` asks which letters are still there.
const WAIT_POLL: Duration = Duration::from_millis(250);
/// How long `replay --wait` follows the attempts: retries back off up to a minute each,
/// so a few rounds of them; past it the command says so and exits 1.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

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
        /// Wait until every replayed letter's attempt is done (progress on stderr), then print
        /// `{"replayed", "failed_again"}`.
        #[arg(long)]
        wait: bool,
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
#[derive(Args, Debug, Default, Clone)]
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

pub fn run(server: &str, token: Option<&str>, command: DeadLetterCommand, when: When) -> anyhow::Result<ExitCode> {
    let base = format!("{}/v1/dead-letters", server.trim_end_matches('/'));
    if let DeadLetterCommand::Replay { id, selection, wait: true } = &command {
        let api = Api { server, token };
        return replay_and_wait(&api, &base, id.as_deref(), selection, when);
    }
    let (method, url) = match &command {
        DeadLetterCommand::List(s) => ("GET", format!("{base}{}", s.query())),
        DeadLetterCommand::Show { id } => ("GET", format!("{base}/{}", urlencode(id))),
        DeadLetterCommand::Replay { id: Some(id), .. } => ("POST", format!("{base}/{}/replay", urlencode(id))),
        DeadLetterCommand::Replay { id: None, selection, .. } => {
            ("POST", format!("{base}/replay{}", selection.query()))
        }
        DeadLetterCommand::Purge { id: Some(id), .. } => ("DELETE", format!("{base}/{}", urlencode(id))),
        DeadLetterCommand::Purge { id: None, selection, all } => {
            if selection.is_empty() && !all {
                anyhow::bail!("purge needs an id, a selection (--kind, --plugin, --type, --since, --until) or --all");
            }
            ("DELETE", format!("{base}{}", selection.query()))
        }
    };
    match (Api { server, token }).call(method, &url)? {
        Ok(body) => {
            println!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            eprintln!("{refusal}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The router's dead-letter API.
struct Api<'a> {
    server: &'a str,
    token: Option<&'a str>,
}

impl Api<'_> {
    /// The answer's body, or the body of the server's refusal; `Err` when it cannot be reached.
    fn call(&self, method: &str, url: &str) -> anyhow::Result<Result<String, String>> {
        let mut request = ureq::request(method, url);
        if let Some(token) = self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        match request.call() {
            Ok(res) => Ok(Ok(res.into_string().context("reading the answer")?)),
            Err(ureq::Error::Status(_, res)) => Ok(Err(res.into_string().unwrap_or_default())),
            Err(e) => Err(anyhow::anyhow!("cannot reach the router at {}: {e}", self.server)),
        }
    }

    /// The ids of the dead letters at `url` (a list, or one letter).
    fn ids(&self, url: &str) -> anyhow::Result<Result<BTreeSet<String>, String>> {
        Ok(self.call("GET", url)?.map(|body| {
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            match v["dead_letters"].as_array() {
                Some(list) => list.iter().filter_map(|d| d["id"].as_str().map(String::from)).collect(),
                None => v["id"].as_str().map(String::from).into_iter().collect(),
            }
        }))
    }
}

/// `replay --wait`: notes which letters are replayed, replays them, then follows the list
/// until none of them is left.
fn replay_and_wait(
    api: &Api,
    base: &str,
    id: Option<&str>,
    selection: &Selection,
    when: When,
) -> anyhow::Result<ExitCode> {
    let (list, replay) = match id {
        Some(id) => (format!("{base}/{}", urlencode(id)), format!("{base}/{}/replay", urlencode(id))),
        None => (format!("{base}{}", selection.query()), format!("{base}/replay{}", selection.query())),
    };
    // All letters of the selection (without `limit`): new failures are told apart by id.
    let everything = format!("{base}{}", Selection { limit: None, ..selection.clone() }.query());
    let refused = |body: String| {
        eprintln!("{body}");
        Ok(ExitCode::from(1))
    };
    let replayed = match api.ids(&list)? {
        Ok(ids) => ids,
        Err(body) => return refused(body),
    };
    let before = api.ids(&everything)?.unwrap_or_default();
    if let Err(body) = api.call("POST", &replay)? {
        return refused(body);
    }
    let progress = Progress::new(when, replayed.len() as u64, "replaying");
    let started = Instant::now();
    let left = loop {
        let now = api.ids(&everything)?.unwrap_or_default();
        let left = replayed.intersection(&now).count();
        progress.set_position((replayed.len() - left) as u64);
        if left == 0 || started.elapsed() > WAIT_LIMIT {
            break left;
        }
        std::thread::sleep(WAIT_POLL);
    };
    progress.finish();
    if left > 0 {
        eprintln!("{left} of {} replayed letters still waiting after {} s", replayed.len(), WAIT_LIMIT.as_secs());
        return Ok(ExitCode::from(1));
    }
    let after = api.ids(&everything)?.unwrap_or_default();
    let failed_again = after.difference(&before).count();
    println!("{}", serde_json::json!({ "replayed": replayed.len(), "failed_again": failed_again }));
    Ok(ExitCode::SUCCESS)
}

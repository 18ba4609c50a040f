//! Shared test helpers: an in-process server on port 0, the CLI binary, the corpus.

use eventyard::config::Config;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tokio::sync::oneshot;

/// A router serving on an ephemeral port; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Server {
    pub async fn start() -> Server {
        Self::with_config(Config::default()).await
    }

    pub async fn with_config(config: Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let state = eventyard::server::state(&config).expect("server state");
        tokio::spawn(eventyard::ingest::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Server { addr, _stop: stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// The repository root (where `schemas/` lives).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the real `eventyard` binary.
pub fn eventyard(args: &[&str], cwd: &Path, stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eventyard"));
    cmd.args(args).current_dir(cwd).env("RUST_LOG", "warn");
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn eventyard");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One corpus file: a type with valid bodies and invalid ones with their failing paths.
pub struct Case {
    pub type_name: String,
    pub valid: Vec<Value>,
    /// (why, body, sorted distinct instance paths that must fail)
    pub invalid: Vec<(String, Value, Vec<String>)>,
}

pub fn corpus() -> Vec<Case> {
    let mut out = Vec::new();
    for family in ["fixinventory", "infrahub", "idem"] {
        let dir = repo().join("tests/corpus").join(family);
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            out.push(Case {
                type_name: v["type"].as_str().unwrap().to_string(),
                valid: v["valid"].as_array().unwrap().clone(),
                invalid: v["invalid"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        let paths =
                            c["errors"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
                        (c["why"].as_str().unwrap().to_string(), c["body"].clone(), paths)
                    })
                    .collect(),
            });
        }
    }
    out
}

/// The distinct instance paths of a list of violations (HTTP body or CLI `--json`).
pub fn failing_paths(errors: &Value) -> Vec<String> {
    let mut p: Vec<String> =
        errors.as_array().unwrap().iter().map(|e| e["instance_path"].as_str().unwrap().to_string()).collect();
    p.sort();
    p.dedup();
    p
}

//! Shared test helpers: an in-process server on port 0, the CLI binary, the corpus.

use eventyard::config::Config;
use futures_util::StreamExt;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

pub mod browser;
pub mod nats;
pub mod rabbitmq;

/// A router serving on an ephemeral port; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    /// This server's own event log (the artifact cache is shared).
    _log: Option<tempfile::TempDir>,
    /// Its pipeline's workers are stopped on drop: otherwise they outlive the test, and with
    /// them every engine's pooled address space (~4 TiB each; a process has 128 TiB).
    app: eventyard::app::App,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.app.http.pipeline.close();
    }
}

impl Server {
    pub async fn start() -> Server {
        Self::with_config(Config::default()).await
    }

    pub async fn with_config(mut config: Config) -> Server {
        // The router's log, shown for failing tests (`RUST_LOG=debug cargo test` for more).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        if config.data_dir == Config::default().data_dir {
            // One artifact cache for the whole test run: each component compiles once.
            config.data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("eventyard-data");
        }
        config.auth.admin_token.get_or_insert_with(|| ADMIN_TOKEN.to_string());
        // No test runs on the wall clock: the default hourly workflow schedule is off.
        config.workflows.iter_mut().for_each(|w| w.schedule = None);
        let log = config.store.dir.is_none().then(|| tempfile::tempdir().expect("temp dir for the log"));
        if let Some(dir) = &log {
            config.store.dir = Some(dir.path().to_path_buf());
        }
        let app = eventyard::app::build(&config).await.expect("server state");
        let mut server = Self::with_state(app).await;
        server._log = log;
        server
    }

    /// Serves an already assembled state (for tests that inject a clock).
    pub async fn with_state(app: eventyard::app::App) -> Server {
        let log = None;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(eventyard::app::serve(listener, app.clone(), async move {
            let _ = stopped.await;
        }));
        Server { addr, _stop: stop, _log: log, app }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

/// The admin token of every test router; [`client`] sends it (tests of auth use their own client).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// The repository root (where `schemas/` lives).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the real `eventyard` binary.
pub fn eventyard(args: &[&str], cwd: &Path, stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eventyard"));
    cmd.args(args).current_dir(cwd).env("RUST_LOG", "warn").env("EVENTYARD_TOKEN", ADMIN_TOKEN);
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

/// The next JSON text frame of a WebSocket (30 s at most: CI machines are loaded while the
/// other tests build guests).
pub async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    next_json_within(ws, Duration::from_secs(30)).await
}

/// [`next_json`] with its own limit.
pub async fn next_json_within<S>(ws: &mut S, limit: Duration) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(limit, ws.next()).await.expect("frame in time").unwrap().unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// A WebSocket handshake as a plain HTTP request, for the answers that refuse it (400, 409).
pub async fn ws_handshake(s: &Server, path: &str) -> reqwest::Response {
    client()
        .get(s.url(path))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap()
}

/// Posts one native event; asserts 202 and returns its id.
pub async fn post(s: &Server, ty: &str, body: Value) -> String {
    post_to(&s.url(""), ty, body).await
}

/// [`post`] to a router at `base` (`http://host:port`), such as one run as a child process.
pub async fn post_to(base: &str, ty: &str, body: Value) -> String {
    let res = client().post(format!("{base}/v1/events/{ty}")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// The Rust example plugins, built from `guest-examples/rust/` once per test run.
pub fn guest(crate_name: &str) -> String {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let ws = repo().join("guest-examples/rust");
        // The guests' own target dir, explicitly: a CARGO_TARGET_DIR in the environment
        // (set for the router's build) would otherwise put them where nothing looks.
        let out = Command::new("cargo")
            .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--target-dir", "target"])
            .current_dir(&ws)
            .output()
            .expect("run cargo for the guest examples");
        assert!(out.status.success(), "guest examples do not build:\n{}", text(&out.stderr));
        ws.join("target/wasm32-wasip2/release")
    });
    let path = dir.join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.exists(), "{} was not built", path.display());
    path.to_string_lossy().into_owned()
}

/// An example plugin in another language than Rust: `guest-examples/<lang>/build.sh` (which
/// installs its toolchain from the package registry) runs once per language per test run.
pub fn lang_guest(lang: &str, name: &str) -> String {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let dir = repo().join("guest-examples").join(lang);
    {
        let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
        if !built.iter().any(|l| l == lang) {
            let out = Command::new("bash").arg(dir.join("build.sh")).output().expect("run build.sh");
            assert!(out.status.success(), "{lang} guests do not build:\n{}{}", text(&out.stdout), text(&out.stderr));
            built.push(lang.to_string());
        }
    }
    let path = dir.join("target").join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} was not built", path.display());
    path.to_string_lossy().into_owned()
}

/// The Prometheus sample `name{labels}` from `/metrics`, or `None` when absent.
pub async fn metric(s: &Server, series: &str) -> Option<f64> {
    let text = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.parse().unwrap()))
}

/// Polls `/metrics` until `series` reads `value` (10 s at most), for counts that are
/// updated after the event a test waits for was published.
pub async fn wait_metric(s: &Server, series: &str, value: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(s, series).await != Some(value) {
        assert!(std::time::Instant::now() < deadline, "{series} = {:?}, expected {value}", metric(s, series).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `GET /v1/dead-letters{query}` until `n` are there (10 s at most).
pub async fn dead_letters(s: &Server, query: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body: Value =
            client().get(s.url(&format!("/v1/dead-letters{query}"))).send().await.unwrap().json().await.unwrap();
        let items = body["dead_letters"].as_array().unwrap().clone();
        if items.len() >= n || std::time::Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it holds; panics naming `what` after 60 s.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! Nothing accepted is lost: the real `eventyard` binary is killed with SIGKILL in the
//! middle of a stream from several clients, restarted on the same data directory, and every
//! event that was answered 202 ends processed (with its handler's effect) or dead-lettered.

use crate::support::{client, guest, post, post_to, Server};
use eventyard::config::Config;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The router as a child process on a free port, with `config` in `dir` (data in `dir/data`).
pub(crate) struct Router {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Router {
    pub(crate) async fn start(dir: &Path, config: &str) -> Router {
        Self::start_logging_to(dir, config, Stdio::inherit()).await
    }

    /// [`start`](Self::start) with the router's log (stderr) sent to `log`.
    pub(crate) async fn start_logging_to(dir: &Path, config: &str, log: Stdio) -> Router {
        Self::start_with(dir, config, &[], log).await
    }

    /// [`start_logging_to`](Self::start_logging_to) with more arguments for `serve`.
    pub(crate) async fn start_with(dir: &Path, config: &str, args: &[&str], log: Stdio) -> Router {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let path = dir.join("eventyard.toml");
        std::fs::write(&path, format!("listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n{config}")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_eventyard"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while client().get(format!("{base}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "router did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Router { child, base }
    }

    async fn status(&self, id: &str) -> Value {
        let res = client().get(format!("{}/v1/events/{id}", self.base)).send().await.unwrap();
        res.json().await.unwrap()
    }

    /// Waits until the event is finished; returns its status.
    pub(crate) async fn finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status(id).await;
            if matches!(s["state"].as_str(), Some("processed" | "dead_lettered")) {
                return s;
            }
            assert!(Instant::now() < deadline, "{id} never finished: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) const ECHO: &str = r#"
[[plugin]]
name = "echo"
component = "builtin:echo"
world = "handler"
emits = ["infrahub/response/send.echo.request"]

[[route]]
match = "infrahub/send.echo.request"
handlers = ["echo"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_answered_202_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut router = Router::start(dir.path(), ECHO).await;
    // Four clients stream events; the router is killed while they are at it.
    let mut clients = Vec::new();
    for c in 0..4 {
        let base = router.base.clone();
        clients.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..2000 {
                let body = json!({ "message": format!("c{c}-{i}") });
                let sent =
                    client().post(format!("{base}/v1/events/infrahub/send.echo.request")).json(&body).send().await;
                match sent {
                    Ok(res) if res.status() == 202 => {
                        accepted.push(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string())
                    }
                    Ok(res) => panic!("unexpected {}", res.status()),
                    Err(_) => break, // the router is gone
                }
            }
            accepted
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    Command::new("kill").args(["-9", &router.child.id().to_string()]).status().unwrap();
    let _ = router.child.wait();
    let mut accepted = Vec::new();
    for c in clients {
        accepted.extend(c.await.unwrap());
    }
    assert!(accepted.len() > 100, "the kill came too early to prove anything ({} accepted)", accepted.len());
    assert!(accepted.len() < 8000, "the kill came after the stream ended");

    let restarted = Router::start(dir.path(), ECHO).await;
    for id in &accepted {
        let s = restarted.finished(id).await;
        assert_eq!(s["state"], "processed", "{s}");
        let emitted = s["emitted"].as_array().unwrap();
        assert_eq!(emitted.len(), 1, "the echo handler's answer is recorded: {s}");
        assert_eq!(emitted[0]["type"], "infrahub/response/send.echo.request");
    }
    drop(router);
}

/// A second router started on the data directory of a running one is refused with a clear
/// error and a non-zero exit, before it reads the log (whose newest record it would cut as a
/// torn tail, and whose segments it would delete as finished); the first goes on serving, and
/// once it is gone the directory opens again with everything it accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_router_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Router::start(dir.path(), ECHO).await;
    let accept =
        |base: String| async move { post_to(&base, "infrahub/send.echo.request", json!({ "message": "kept" })).await };
    let before = accept(first.base.clone()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let second = dir.path().join("second.toml");
    std::fs::write(&second, format!("listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n{ECHO}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eventyard"))
        .args(["serve", "--config", second.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let holder = format!("is in use by another eventyard (pid {})", first.child.id());
    assert!(stderr.contains(&holder), "names the holder: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The first one was not disturbed: it answers and finishes what it takes.
    let after = accept(first.base.clone()).await;
    for id in [&before, &after] {
        assert_eq!(first.finished(id).await["state"], "processed");
    }
    Command::new("kill").args(["-TERM", &first.child.id().to_string()]).status().unwrap();
    assert_eq!(first.child.wait().unwrap().code(), Some(0));
    let restarted = Router::start(dir.path(), ECHO).await;
    for id in [&before, &after] {
        assert_eq!(restarted.finished(id).await["state"], "processed", "kept across the refusal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_nothing_queued_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let slow = format!(
        r#"
[pipeline]
workers = 1

[[plugin]]
name = "slow"
component = "{}"
world = "handler"
config = {{ mode = "loop" }}
limits = {{ deadline_ms = 30 }}
breaker = {{ failures = 0 }}

[[route]]
match = "fixinventory/collect"
handlers = ["slow"]
"#,
        guest("hostile")
    );
    let mut router = Router::start(dir.path(), &slow).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            post_to(
                &router.base,
                "fixinventory/collect",
                json!({ "kind": "event", "message_type": "collect", "data": {} }),
            )
            .await,
        );
    }
    Command::new("kill").args(["-TERM", &router.child.id().to_string()]).status().unwrap();
    let status = router.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM ends with exit 0");

    // Each call takes its 30 ms deadline: most were still queued at SIGTERM. They are not lost.
    let restarted = Router::start(dir.path(), &slow).await;
    for id in &ids {
        let s = restarted.finished(id).await;
        assert_eq!(s["state"], "dead_lettered", "{s}");
        assert_eq!(s["failed"][0]["kind"], "deadline");
    }
}

#[tokio::test]
async fn event_status_shows_what_became_of_each_event() {
    let toml = format!(
        "{}\n[[plugin]]\nname = \"boom\"\ncomponent = \"{}\"\nworld = \"handler\"\nconfig = {{ mode = \"trap\" }}\n[[route]]\nmatch = \"fixinventory/collect\"\nhandlers = [\"boom\"]\n",
        ECHO.replace("builtin:echo", &guest("echo")),
        guest("hostile")
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let get = |id: String| {
        let url = s.url(&format!("/v1/events/{id}"));
        async move { client().get(url).send().await.unwrap() }
    };
    let wait = |id: String| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v: Value = get(id.clone()).await.json().await.unwrap();
            if v["state"] != "queued" && v["state"] != "in_progress" {
                return v;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let echo = post(&s, "infrahub/send.echo.request", json!({ "message": "hi" })).await;
    let v = wait(echo.clone()).await;
    assert_eq!(v["state"], "processed");
    assert_eq!(v["type"], "infrahub/send.echo.request");
    assert_eq!(v["priority"], 5);
    assert_eq!(v["emitted"][0]["plugin"], "echo");
    let reply = v["emitted"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(wait(reply).await["type"], "infrahub/response/send.echo.request");

    let boom =
        post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} })).await;
    let v = wait(boom).await;
    assert_eq!(v["state"], "dead_lettered");
    assert_eq!((v["failed"][0]["plugin"].as_str(), v["failed"][0]["kind"].as_str()), (Some("boom"), Some("trap")));

    // No route: processed as soon as it is durable.
    let unrouted =
        post(&s, "fixinventory/cleanup", json!({ "kind": "event", "message_type": "cleanup", "data": {} })).await;
    let v: Value = get(unrouted).await.json().await.unwrap();
    assert_eq!((v["state"].as_str(), v["emitted"].as_array().map(Vec::len)), (Some("processed"), Some(0)));
    let res = get("no-such-id".into()).await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "unknown_event");
}

fn event(i: usize) -> eventyard::event::Event {
    eventyard::event::Event {
        id: format!("e-{i}"),
        type_name: eventyard::name::Name::intern("infrahub/send.echo.request"),
        time: time::OffsetDateTime::now_utc(),
        priority: 3,
        source: None,
        data: eventyard::event::Body::from_value(json!({ "message": format!("m{i}") })),
        hops: 0,
        keyed: false,
        pin: Default::default(),
    }
}

#[tokio::test]
async fn the_log_cuts_a_torn_tail_and_compacts_finished_segments() {
    use eventyard::event::Outcome;
    use eventyard::store::local::LocalOptions;
    use eventyard::store::{Durability, LocalStore};
    let dir = tempfile::tempdir().unwrap();
    let options = LocalOptions {
        dir: dir.path().to_path_buf(),
        durability: Durability::Group { window: Duration::ZERO },
        segment_bytes: 4096,
        max_bytes: 1 << 30,
    };
    {
        let (store, recovered) = LocalStore::open(&options, |_| true).unwrap();
        assert!(recovered.pending.is_empty());
        let mut appended = Vec::new();
        for chunk in (0..100).collect::<Vec<_>>().chunks(10) {
            let events: Vec<_> = chunk.iter().map(|&i| event(i)).collect();
            store.append(&events, &vec![true; events.len()]).unwrap().await.unwrap().unwrap();
            appended.extend(events);
        }
        // Finished as the router finishes them: the events the log took, not copies.
        for e in &appended[..50] {
            store.complete(&[(e, Outcome::default())]);
        }
        store.flush().await.unwrap();
    }
    // A crash in the middle of a write leaves half a record at the end.
    let segments = eventyard::store::segment::segments(dir.path()).unwrap();
    let last = &segments.last().unwrap().1;
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(f);

    let (store, recovered) = LocalStore::open(&options, |_| true).unwrap();
    let pending: Vec<&str> = recovered.pending.iter().map(|e| e.id.as_str()).collect();
    let expected: Vec<String> = (50..100).map(|i| format!("e-{i}")).collect();
    assert_eq!(pending, expected.iter().map(String::as_str).collect::<Vec<_>>(), "oldest first, none lost");
    // Segments holding only finished events were already deleted in the first run.
    assert!(recovered.finished.len() < 50, "{} finished events still on disk", recovered.finished.len());
    // Finishing everything (in one go, as a worker finishes its run) lets the writer delete
    // every segment before its current one.
    let before = eventyard::store::segment::segments(dir.path()).unwrap().len();
    store.complete(&recovered.pending.iter().map(|e| (e, Outcome::default())).collect::<Vec<_>>());
    store.flush().await.unwrap();
    let after = eventyard::store::segment::segments(dir.path()).unwrap().len();
    assert!(before > 2 && after == 1, "segments before {before}, after {after}");
}

/// Events handled through the router (NDJSON runs through the echo handler) give their
/// segments back: each finished event lets go of the segment it held ([`LogPin`]), so once
/// all are processed the log is compacted down to its newest segments.
///
/// [`LogPin`]: eventyard::event::LogPin
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_of_events_handled_end_to_end_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::parse(ECHO).unwrap();
    config.store.dir = Some(dir.path().to_path_buf());
    // Smaller than one batch: each batch (its own append, awaited) rolls the log at least once.
    config.store.segment_bytes = 1024;
    let s = Server::with_config(config).await;
    let mut ids = Vec::new();
    const BATCHES: u64 = 8;
    for batch in 0..BATCHES {
        let body: String = (0..60)
            .map(|i| format!("{{\"type\":\"infrahub/send.echo.request\",\"data\":{{\"message\":\"m{batch}-{i}\"}}}}\n"))
            .collect();
        let res = client()
            .post(s.url("/v1/events"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["accepted"], 60, "{v}");
        ids.extend(v["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()));
    }
    let segments = || eventyard::store::segment::segments(dir.path()).unwrap();
    // Segment numbers only grow: the newest one's says how many were written.
    let written = segments().last().unwrap().0;
    assert!(written > BATCHES, "the events took {written} segments");
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v: Value = client().get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().json().await.unwrap();
            if v["state"] == "processed" {
                assert_eq!(v["emitted"].as_array().map(Vec::len), Some(1), "{v}");
                break;
            }
            assert!(Instant::now() < deadline, "{id} never finished: {v}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while segments().len() > 2 {
        let kept: Vec<u64> = segments().into_iter().map(|(n, _)| n).collect();
        assert!(
            Instant::now() < deadline,
            "segments {kept:?} still kept after every event finished ({written} written while posting)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_resent_event_is_answered_like_the_first_and_processed_once() {
    let s = Server::with_config(Config::parse(&ECHO.replace("builtin:echo", &guest("echo"))).unwrap()).await;
    let send = |key: &'static str| {
        let url = s.url("/v1/events/infrahub/send.echo.request");
        async move {
            let res = client()
                .post(url)
                .header("idempotency-key", key)
                .json(&json!({ "message": "once" }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
            res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(send("order-42").await, "order-42");
    assert_eq!(send("order-42").await, "order-42", "the retry gets the first answer");
    // CloudEvents ids and NDJSON ids are idempotency keys too, also within one batch.
    let ce = json!({ "specversion": "1.0", "id": "ce-1", "source": "test", "type": "infrahub/send.echo.request",
                     "data": { "message": "once" } });
    for _ in 0..2 {
        let res = client()
            .post(s.url("/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .json(&ce)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
    let line = r#"{"type":"infrahub/send.echo.request","id":"nd-1","data":{"message":"once"}}"#;
    let res = client()
        .post(s.url("/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(format!("{line}\n{line}\n"))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["accepted"], 2);
    assert_eq!((body["results"][0]["id"].as_str(), body["results"][1]["id"].as_str()), (Some("nd-1"), Some("nd-1")));
    crate::support::wait_metric(&s, r#"eventyard_plugin_calls_total{plugin="echo"}"#, 3.0).await;
    assert_eq!(crate::support::metric(&s, "eventyard_events_duplicate_total").await, Some(3.0));
    let bad = client()
        .post(s.url("/v1/events/infrahub/send.echo.request"))
        .header("idempotency-key", "x".repeat(300))
        .json(&json!({ "message": "once" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn failures_that_may_pass_are_retried_with_backoff_then_dead_lettered() {
    use eventyard::router::retry::ManualClock;
    use std::sync::Arc;
    let toml = format!(
        r#"
[[plugin]]
name = "busy"
component = "{hostile}"
world = "handler"
config = {{ mode = "fail-retryable" }}
breaker = {{ failures = 0 }}

[[plugin]]
name = "broken"
component = "{hostile}"
world = "handler"
config = {{ mode = "read-env" }}

[[route]]
match = "fixinventory/collect"
handlers = ["busy"]
retry = {{ max_attempts = 3, base_ms = 1000, max_ms = 10000 }}

[[route]]
match = "fixinventory/cleanup"
handlers = ["broken"]
"#,
        hostile = guest("hostile")
    );
    let clock = Arc::new(ManualClock::default());
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::parse(&toml).unwrap();
    config.data_dir = dir.path().to_path_buf();
    config.auth.admin_token = Some(crate::support::ADMIN_TOKEN.into());
    let s = Server::with_state(eventyard::app::build_with_clock(&config, clock.clone()).await.unwrap()).await;
    let calls = r#"eventyard_plugin_calls_total{plugin="busy"}"#;
    let status = |id: String| {
        let url = s.url(&format!("/v1/events/{id}"));
        async move { client().get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let id = post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} })).await;
    // The call is counted before its failure is settled, and the back-off starts from the
    // (manual) clock's time at settling: wait for the retry to be scheduled before moving time.
    let retrying = |attempt: u64| {
        let status = &status;
        let id = id.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let v = status(id.clone()).await;
                if v["state"] == "retrying" && v["attempt"] == attempt {
                    return v;
                }
                assert!(Instant::now() < deadline, "not retrying attempt {attempt}: {v}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let v = retrying(1).await;
    assert_eq!(v["plugin"], "busy");
    assert_eq!(v["last_error"], "handler_error: upstream busy");
    // The first wait is 1 s with equal jitter: between 0.5 and 1 s. Not before 0.5 s...
    clock.advance(Duration::from_millis(450));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(crate::support::metric(&s, calls).await, Some(1.0), "no retry before half the back-off");
    // ...and by 1 s it has happened.
    clock.advance(Duration::from_millis(550));
    crate::support::wait_metric(&s, calls, 2.0).await;
    retrying(2).await;
    // The second wait doubles: 1 to 2 s.
    clock.advance(Duration::from_millis(950));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(crate::support::metric(&s, calls).await, Some(2.0), "the back-off grows");
    clock.advance(Duration::from_millis(1050));
    crate::support::wait_metric(&s, calls, 3.0).await;
    // Three attempts were allowed: now it is a dead letter, with the count.
    let letters = crate::support::dead_letters(&s, "?plugin=busy", 1).await;
    assert_eq!((letters[0]["kind"].as_str(), letters[0]["retryable"].as_bool()), (Some("handler_error"), Some(true)));
    let mut v = status(id.clone()).await;
    while v["state"] != "dead_lettered" {
        tokio::time::sleep(Duration::from_millis(10)).await;
        v = status(id.clone()).await;
    }
    assert_eq!(v["failed"][0]["attempts"], 3);
    assert_eq!(crate::support::metric(&s, "eventyard_handler_retries_total").await, Some(2.0));
    assert!(crate::support::metric(&s, "eventyard_log_bytes").await.unwrap() > 0.0, "the log size is exported");

    // A failure that will not pass goes straight to the dead letters.
    post(&s, "fixinventory/cleanup", json!({ "kind": "event", "message_type": "cleanup", "data": {} })).await;
    let letters = crate::support::dead_letters(&s, "?plugin=broken", 1).await;
    assert_eq!(letters[0]["retryable"], false);
    assert_eq!(crate::support::metric(&s, r#"eventyard_plugin_calls_total{plugin="broken"}"#).await, Some(1.0));
}

/// A route whose handler `boom` is `component` (first the hostile trap, later the fix).
pub(crate) fn boom(component: &str, mode: &str) -> String {
    format!(
        r#"
[[plugin]]
name = "boom"
component = "{component}"
world = "handler"
emits = ["infrahub/response/send.echo.request"]
config = {{ mode = "{mode}" }}
breaker = {{ failures = 0 }}

[[route]]
name = "echo"
match = "infrahub/send.echo.request"
handlers = ["boom"]
retry = {{ max_attempts = 1 }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_survive_a_restart_and_replay_after_a_fix() {
    let log = tempfile::tempdir().unwrap();
    let config = |toml: String| {
        let mut c = Config::parse(&toml).unwrap();
        c.store.dir = Some(log.path().to_path_buf());
        c
    };
    let before = time::OffsetDateTime::now_utc();
    let ids = {
        let s = Server::with_config(config(boom(&guest("hostile"), "trap"))).await;
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(post(&s, "infrahub/send.echo.request", json!({ "message": format!("m{i}") })).await);
        }
        let letters = crate::support::dead_letters(&s, "", 3).await;
        assert_eq!(letters.len(), 3);
        ids
    };
    // A new version of the plugin, a new router process on the same data: the letters are there.
    let s = Server::with_config(config(boom(&guest("echo"), ""))).await;
    let list = |q: String| {
        let url = s.url(&format!("/v1/dead-letters{q}"));
        async move { client().get(url).send().await.unwrap() }
    };
    let all: Value = list(String::new()).await.json().await.unwrap();
    assert_eq!(all["count"], 3);
    let since = before.format(&time::format_description::well_known::Rfc3339).unwrap();
    let filtered: Value = list(format!("?kind=trap&plugin=boom&type=infrahub/send.echo.request&since={since}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["count"], 3);
    let none: Value = list(format!("?until={since}")).await.json().await.unwrap();
    assert_eq!(none["count"], 0);
    let bad = list("?since=yesterday".into()).await;
    assert_eq!(bad.status(), 400);
    let first = all["dead_letters"][0]["id"].as_str().unwrap().to_string();
    let one: Value =
        client().get(s.url(&format!("/v1/dead-letters/{first}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["plugin"], "boom");
    assert!(ids.contains(&one["event"]["id"].as_str().unwrap().to_string()));
    assert_eq!(client().get(s.url("/v1/dead-letters/nope")).send().await.unwrap().status(), 404);

    // The CLI speaks to the same API.
    let server = format!("http://{}", s.addr);
    let out = crate::support::eventyard(
        &["dead-letters", "list", "--server", &server, "--plugin", "boom"],
        &crate::support::repo(),
        None,
    );
    assert!(out.status.success(), "{}", crate::support::text(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["count"], 3);
    let out = crate::support::eventyard(&["dead-letters", "purge", "--server", &server], &crate::support::repo(), None);
    assert_eq!(out.status.code(), Some(2), "purging everything needs --all");
    let out = crate::support::eventyard(
        &["dead-letters", "show", "nope", "--server", &server],
        &crate::support::repo(),
        None,
    );
    assert_eq!(out.status.code(), Some(1));

    // Replay one by id, then the rest by selection: the fixed plugin answers each.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/response/*")).await.unwrap();
    let res = client().post(s.url(&format!("/v1/dead-letters/{first}/replay"))).send().await.unwrap();
    assert_eq!(res.status(), 202);
    let reply = crate::support::next_json(&mut ws).await;
    assert!(reply["data"]["data"]["response"].as_str().unwrap().starts_with("Reply to: m"));
    let out = crate::support::eventyard(
        &["dead-letters", "replay", "--server", &server, "--kind", "trap"],
        &crate::support::repo(),
        None,
    );
    assert!(out.status.success());
    crate::support::next_json(&mut ws).await;
    crate::support::next_json(&mut ws).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all: Value = list(String::new()).await.json().await.unwrap();
        if all["count"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "replayed letters are removed: {all}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Purge works on what is there (a fresh failure here).
    let res = client().delete(s.url("/v1/dead-letters?kind=trap")).send().await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["purged"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_higher_priority_is_processed_first() {
    let toml = format!(
        r#"
[pipeline]
workers = 1

[[plugin]]
name = "slow"
component = "{hostile}"
world = "handler"
config = {{ mode = "loop" }}
limits = {{ deadline_ms = 300 }}

[[plugin]]
name = "echo"
component = "{echo}"
world = "handler"
emits = ["infrahub/response/send.echo.request"]

[[route]]
match = "fixinventory/collect"
handlers = ["slow"]
retry = {{ max_attempts = 1 }}

[[route]]
match = "infrahub/send.echo.request"
handlers = ["echo"]
"#,
        hostile = guest("hostile"),
        echo = guest("echo")
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/response/*")).await.unwrap();
    // The one worker is kept busy while the queue fills up.
    post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} })).await;
    crate::support::wait_metric(&s, r#"eventyard_plugin_calls_total{plugin="slow"}"#, 1.0).await;
    let send = |priority: &'static str, message: String| {
        let url = s.url("/v1/events/infrahub/send.echo.request");
        async move {
            let res = client()
                .post(url)
                .header("priority", priority)
                .json(&json!({ "message": message }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
        }
    };
    for i in 0..3 {
        send("1", format!("low-{i}")).await;
    }
    for i in 0..3 {
        send("5", format!("high-{i}")).await;
    }
    let mut order = Vec::new();
    for _ in 0..6 {
        let r = crate::support::next_json(&mut ws).await;
        order.push(r["data"]["data"]["response"].as_str().unwrap().trim_start_matches("Reply to: ").to_string());
    }
    assert_eq!(order, ["high-0", "high-1", "high-2", "low-0", "low-1", "low-2"]);
    // A priority outside 1..5 is refused; CloudEvents carry it as the `priority` extension.
    let res = client()
        .post(s.url("/v1/events/infrahub/send.echo.request"))
        .header("priority", "9")
        .json(&json!({ "message": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let ce = json!({ "specversion": "1.0", "id": "p-1", "source": "t", "type": "infrahub/send.echo.request", "priority": 2,
                     "data": { "message": "ce" } });
    let res = client()
        .post(s.url("/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .json(&ce)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let v: Value = client().get(s.url("/v1/events/p-1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["priority"], 2);
}

#[tokio::test]
async fn the_log_stays_bounded_and_refuses_appends_past_its_limit() {
    use eventyard::store::local::LocalOptions;
    use eventyard::store::{Durability, LocalStore, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let mut options = LocalOptions {
        dir: dir.path().to_path_buf(),
        durability: Durability::Off,
        segment_bytes: 4096,
        max_bytes: 16 * 4096,
    };
    // Events no route wants are finished on arrival: old segments go as the log rolls on.
    let (store, _) = LocalStore::open(&options, |_| false).unwrap();
    for i in 0..500 {
        store.append(&[event(i)], &[false]).unwrap().await.unwrap().unwrap();
    }
    store.flush().await.unwrap();
    let segments = eventyard::store::segment::segments(dir.path()).unwrap().len();
    assert!(segments <= 2, "{segments} segments kept for finished events");
    drop(store);
    // Routed events that never finish fill the log up to max_bytes; then appends are refused.
    options.dir = dir.path().join("busy");
    let (store, _) = LocalStore::open(&options, |_| true).unwrap();
    let mut refused = None;
    for i in 0..2000 {
        match store.append(&[event(i)], &[true]) {
            Ok(ack) => ack.await.unwrap().unwrap(),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, err) = refused.expect("the log refuses appends past max_bytes");
    assert!(matches!(err, StoreError::Full { .. }), "{err}");
    assert!(at > 50, "refused only once full ({at} events in)");
}

#[tokio::test]
async fn a_recovered_event_keeps_the_producers_text() {
    use eventyard::store::local::LocalOptions;
    use eventyard::store::{Durability, LocalStore};
    let dir = tempfile::tempdir().unwrap();
    let options = LocalOptions {
        dir: dir.path().to_path_buf(),
        durability: Durability::Group { window: Duration::ZERO },
        segment_bytes: 1 << 20,
        max_bytes: 1 << 30,
    };
    // Keys out of order, spaces, an escape: what plugins got before the restart.
    let text = r#"{ "message": "m\"1",  "meta": {"priority": 4, "correlation_id": "c-9"} }"#;
    let registry = eventyard::app::registry(&Default::default()).unwrap();
    let ty = registry.get("infrahub/send.echo.request").unwrap();
    let (data, priority) = eventyard::event::Body::check(ty, text.into()).unwrap();
    let event = eventyard::event::Event { data, priority, ..event(0) };
    {
        let (store, _) = LocalStore::open(&options, |_| true).unwrap();
        store.append(std::slice::from_ref(&event), &[true]).unwrap().await.unwrap().unwrap();
        store.flush().await.unwrap();
    }
    let (_store, recovered) = LocalStore::open(&options, |_| true).unwrap();
    let back = &recovered.pending[0];
    assert_eq!(&**back.data.text(), text);
    assert_eq!((back.data.correlation_id(), back.priority), (Some("c-9"), 4));
}

/// Producers that hang up before reading their answer (their request futures dropped by the
/// server, maybe while the event is being written or while it waits for room in the queue)
/// leave no event half admitted: each id is either unknown (the request was never admitted)
/// or finished, never queued for good; and the room it reserved in the queue comes back (the
/// router still accepts a full queue's worth).
///
/// The producers hang up together once the router has admitted one of their events: had
/// they hung up right after sending, a loaded router could read each request with its
/// end-of-stream and drop it before admission began (hyper ends a connection whose producer
/// hung up mid-request), and the test would show nothing (CI of `4201e46` and `84a2757`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_that_hang_up_leave_no_event_half_admitted() {
    use tokio::io::AsyncWriteExt;
    // A queue of 8: eight leaked reservations would make every later event wait, then 503.
    let s =
        Server::with_config(Config::parse(&format!("{ECHO}\n[pipeline]\nqueue = 8\nqueue_wait_ms = 200\n")).unwrap())
            .await;
    let body = json!({ "message": "then gone" }).to_string();
    const HUNG_UP: usize = 40;
    let mut producers = Vec::new();
    for i in 0..HUNG_UP {
        let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let request = format!(
            "POST /v1/events/infrahub/send.echo.request HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nidempotency-key: gone-{i}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        producers.push(conn);
    }
    let (mut known, deadline) = (0, Instant::now() + Duration::from_secs(30));
    let first_seen = Instant::now() + Duration::from_secs(10);
    while Instant::now() < first_seen
        && crate::support::metric(&s, "eventyard_events_accepted_total").await.unwrap_or_default() == 0.0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every producer hangs up without reading its answer: the rest are being written, waiting
    // for room in the queue of 8, or not read yet.
    drop(producers);
    for i in 0..HUNG_UP {
        loop {
            let res = client().get(s.url(&format!("/v1/events/gone-{i}"))).send().await.unwrap();
            if res.status() == 404 {
                break;
            }
            let state = res.json::<Value>().await.unwrap()["state"].as_str().unwrap_or_default().to_string();
            if state == "processed" {
                known += 1;
                break;
            }
            assert!(Instant::now() < deadline, "gone-{i} stays {state}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eprintln!("{known} of {HUNG_UP} requests whose producer hung up were admitted and processed");
    assert!(known > 0, "no request reached admission: the test showed nothing");
    for _ in 0..16 {
        post(&s, "infrahub/send.echo.request", json!({ "message": "after" })).await;
    }
    // Admissions finished after their producer left are counted too (at least those seen).
    let accepted = crate::support::metric(&s, "eventyard_events_accepted_total").await.unwrap() as usize;
    assert!((known + 16..=HUNG_UP + 16).contains(&accepted), "{accepted} counted accepted, {known} + 16 seen");
}

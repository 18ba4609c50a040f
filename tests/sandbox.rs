//! The hostile-plugin suite: components built to misbehave (`guest-examples/rust/hostile`)
//! are each stopped with the right failure kind and recorded as dead letters, while a
//! concurrent stream of good events through another plugin is delivered in full.

use crate::support::{client, dead_letters, guest, metric, next_json, next_json_within, post, wait_metric, Server};
use eventyard::config::Config;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `(mode, extra manifest lines, expected failure kind)`; `None`: the call succeeds.
const HOSTILE: &[(&str, &str, Option<&str>)] = &[
    ("loop", "limits = { deadline_ms = 50 }", Some("deadline")),
    // A long deadline, so that the memory cap (not the clock) stops it even on a loaded machine.
    ("alloc", "limits = { memory_bytes = 16_777_216, deadline_ms = 10_000 }", Some("memory")),
    ("recurse", "", Some("stack_overflow")),
    ("trap", "", Some("trap")),
    ("huge-emit", "", Some("emit_budget")),
    ("emit-flood", "limits = { max_emits = 10 }", Some("emit_budget")),
    ("emit-denied", "", Some("emit_denied")),
    ("emit-invalid", "", Some("emit_invalid")),
    ("log-denied", "", Some("capability_denied")),
    // 262144 labels it was not granted to send: refused before a single one is copied.
    ("metrics-denied", "limits = { memory_bytes = 67_108_864, deadline_ms = 10_000 }", Some("capability_denied")),
    ("open-file", "", Some("handler_error")),
    ("read-env", "", Some("handler_error")),
    ("flood-stdout", "limits = { output_bytes = 4096, deadline_ms = 5_000 }", None),
];

fn hostile_plugin(name: &str, mode: &str, extra: &str) -> String {
    hostile_plugin_with(name, mode, r#"["emit"]"#, extra)
}

/// A hostile plugin granted `capabilities` (a TOML array).
fn hostile_plugin_with(name: &str, mode: &str, capabilities: &str, extra: &str) -> String {
    format!(
        r#"
        [[plugin]]
        name = "{name}"
        component = "{path}"
        world = "handler"
        capabilities = {capabilities}
        emits = ["infrahub/send.echo.request"]
        config = {{ mode = "{mode}" }}
        breaker = {{ failures = 0 }}
        {extra}
        "#,
        path = guest("hostile"),
    )
}

fn echo_plugin() -> String {
    format!(
        r#"
        [[plugin]]
        name = "echo"
        component = "{}"
        world = "handler"
        emits = ["infrahub/response/send.echo.request"]

        [[route]]
        name = "echo"
        match = "infrahub/send.echo.request"
        handlers = ["echo"]
        "#,
        guest("echo")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_stopped_and_good_events_all_get_through() {
    let mut toml = echo_plugin();
    let mut names = Vec::new();
    for (mode, extra, _) in HOSTILE {
        let name = format!("hostile-{mode}");
        toml += &hostile_plugin(&name, mode, extra);
        names.push(format!("\"{name}\""));
    }
    // A fuel budget: the same endless loop, stopped by fuel before its (long) deadline.
    toml += &hostile_plugin("hostile-fuel", "loop", "limits = { fuel = 5_000_000, deadline_ms = 10_000 }");
    names.push("\"hostile-fuel\"".into());
    // One attempt each: this suite is about how each call is stopped, not about retries.
    toml += &format!(
        "[[route]]\nname = \"hostile\"\nmatch = \"fixinventory/collect\"\nhandlers = [{}]\nretry = {{ max_attempts = 1 }}\n",
        names.join(", ")
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;

    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/response/*")).await.unwrap();
    // The hostile event and a stream of 300 good ones, at the same time.
    let hostile = post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} }));
    let good = async {
        let mut ids = Vec::new();
        for i in 0..300 {
            ids.push(post(&s, "infrahub/send.echo.request", json!({ "message": format!("good-{i}") })).await);
        }
        ids
    };
    let (hostile_id, good_ids) = tokio::join!(hostile, good);
    let mut replies = std::collections::HashSet::new();
    while replies.len() < good_ids.len() {
        let r = next_json(&mut ws).await;
        replies.insert(r["data"]["data"]["response"].as_str().unwrap().to_string());
    }
    assert!((0..300).all(|i| replies.contains(&format!("Reply to: good-{i}"))), "every good event was answered");

    let expected: BTreeMap<String, &str> = HOSTILE
        .iter()
        .filter_map(|(mode, _, kind)| kind.map(|k| (format!("hostile-{mode}"), k)))
        .chain([("hostile-fuel".to_string(), "fuel")])
        .collect();
    let letters = dead_letters(&s, "?limit=1000", expected.len()).await;
    let got: BTreeMap<String, &str> =
        letters.iter().map(|d| (d["plugin"].as_str().unwrap().to_string(), d["kind"].as_str().unwrap())).collect();
    assert_eq!(got, expected, "{letters:#?}");
    for d in &letters {
        assert_eq!(d["event"]["id"], hostile_id.as_str());
        assert_eq!(d["route"], "hostile");
    }
    let message = |plugin: &str| -> String {
        letters.iter().find(|d| d["plugin"] == plugin).unwrap()["message"].as_str().unwrap().to_string()
    };
    // The sandbox, seen from inside: no file system, no environment, no arguments.
    assert_eq!(message("hostile-open-file"), "open /etc/passwd: No such file or directory (os error 44)");
    assert_eq!(message("hostile-read-env"), "env: 0 variables, 0 arguments, cwd: /");
    assert!(message("hostile-emit-denied").contains("idem/idem-run"));
    assert!(message("hostile-emit-invalid").contains("/message"));
    assert!(message("hostile-log-denied").contains("`log`"));
    assert!(message("hostile-metrics-denied").contains("`metrics`"));

    // Counted per plugin and kind; the stdout flood was cut at its cap, not logged whole.
    assert_eq!(
        metric(&s, r#"eventyard_plugin_failures_total{plugin="hostile-loop",kind="deadline"}"#).await,
        Some(1.0)
    );
    assert_eq!(metric(&s, r#"eventyard_plugin_failures_total{plugin="hostile-alloc",kind="memory"}"#).await, Some(1.0));
    assert_eq!(metric(&s, "eventyard_events_dead_lettered_total").await, Some(expected.len() as f64));
    let dropped =
        metric(&s, r#"eventyard_plugin_output_dropped_bytes_total{plugin="hostile-flood-stdout"}"#).await.unwrap();
    assert_eq!(dropped, (4096 * 1024 - 4096) as f64);
    // Filters on the dead-letter list.
    let deadline = dead_letters(&s, "?kind=deadline", 1).await;
    assert_eq!(deadline.len(), 1);
    assert_eq!(deadline[0]["plugin"], "hostile-loop");
    assert_eq!(dead_letters(&s, "?plugin=hostile-trap&type=fixinventory/collect", 1).await.len(), 1);

    // And the router still serves.
    let health: Value = client().get(s.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn a_plugin_that_keeps_failing_trips_its_circuit_breaker() {
    let toml = hostile_plugin("flaky", "trap", "").replace("failures = 0", "failures = 3, cool_down_ms = 600_000")
        + "[[route]]\nmatch = \"fixinventory/collect\"\nhandlers = [\"flaky\"]\n";
    let mut config = Config::parse(&toml).unwrap();
    config.pipeline.workers = 1; // one event after the other, so the count is exact
    let s = Server::with_config(config).await;
    for i in 0..5 {
        post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} })).await;
        // Each finished before the next is sent: two waiting together would be one batch call
        // (hostile takes runs), an instance more, and the count would not be exact.
        dead_letters(&s, "", i + 1).await;
    }
    let letters = dead_letters(&s, "", 5).await;
    let mut kinds: Vec<&str> = letters.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["circuit_open", "circuit_open", "trap", "trap", "trap"]);
    assert_eq!(metric(&s, r#"eventyard_plugin_circuit_open{plugin="flaky"}"#).await, Some(1.0));
    assert_eq!(
        metric(&s, r#"eventyard_plugin_instantiations_total{plugin="flaky"}"#).await,
        Some(3.0),
        "calls stopped"
    );
}

#[tokio::test]
async fn plugins_emitting_at_each_other_stop_at_the_hop_limit() {
    let toml = format!(
        "[pipeline]\nhop_limit = 3\n{}[[route]]\nmatch = \"infrahub/send.echo.request\"\nhandlers = [\"boomerang\"]\n",
        hostile_plugin("boomerang", "echo-back", "")
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/*")).await.unwrap();
    post(&s, "infrahub/send.echo.request", json!({ "message": "start" })).await;
    let letters = dead_letters(&s, "", 1).await;
    assert_eq!(letters[0]["kind"], "hop_limit");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let f = next_json(&mut ws).await;
        seen.push((f["data"]["message"].as_str().unwrap().to_string(), f["hops"].as_u64().unwrap_or(0)));
    }
    assert_eq!(seen, [("start".into(), 0), ("again".into(), 1), ("again".into(), 2), ("again".into(), 3)]);
    assert_eq!(metric(&s, "eventyard_events_emitted_total").await, Some(3.0));
}

#[tokio::test]
async fn strict_mode_instantiates_per_event_and_warm_instances_recycle() {
    let echo = guest("echo");
    let toml = format!(
        r#"
        [[plugin]]
        name = "strict"
        component = "{echo}"
        world = "handler"
        emits = ["infrahub/response/send.echo.request"]
        limits = {{ strict = true }}

        [[plugin]]
        name = "recycled"
        component = "{echo}"
        world = "handler"
        emits = ["infrahub/response/send.echo.request"]
        limits = {{ recycle_after_calls = 2 }}

        [[route]]
        match = "infrahub/send.echo.request"
        handlers = ["strict", "recycled"]
        "#
    );
    let mut config = Config::parse(&toml).unwrap();
    config.pipeline.workers = 1;
    let s = Server::with_config(config).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/response/*")).await.unwrap();
    for i in 0..5 {
        post(&s, "infrahub/send.echo.request", json!({ "message": format!("m{i}") })).await;
        next_json(&mut ws).await;
        next_json(&mut ws).await;
    }
    assert_eq!(metric(&s, r#"eventyard_plugin_instantiations_total{plugin="strict"}"#).await, Some(5.0));
    assert_eq!(metric(&s, r#"eventyard_plugin_instantiations_total{plugin="recycled"}"#).await, Some(3.0));
}

/// A router whose one worker is busy for `deadline_ms` with each `fixinventory/collect`
/// (an endless loop stopped at its deadline), with room for one queued event, producers
/// waiting up to `queue_wait_ms` for more; the first event is already in the worker.
async fn a_busy_worker_and_a_queue_of_one(queue_wait_ms: u64) -> (Server, Value) {
    let toml = hostile_plugin("slow", "loop", "limits = { deadline_ms = 300 }")
        + &format!("[pipeline]\nworkers = 1\nqueue = 1\nqueue_wait_ms = {queue_wait_ms}\n")
        + "[[route]]\nmatch = \"fixinventory/collect\"\nhandlers = [\"slow\"]\nretry = { max_attempts = 1 }\n";
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let collect = json!({ "kind": "event", "message_type": "collect", "data": {} });
    post(&s, "fixinventory/collect", collect.clone()).await;
    // Wait until the one worker is busy with it, so the queue state is known.
    while metric(&s, r#"eventyard_plugin_calls_total{plugin="slow"}"#).await != Some(1.0) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    (s, collect)
}

#[tokio::test]
async fn a_full_pipeline_queue_answers_503_with_retry_after() {
    let (s, collect) = a_busy_worker_and_a_queue_of_one(0).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let res = client().post(s.url("/v1/events/fixinventory/collect")).json(&collect).send().await.unwrap();
        let status = res.status().as_u16();
        if status == 503 {
            assert_eq!(res.headers()["retry-after"], "1");
            assert_eq!(res.json::<Value>().await.unwrap()["error"], "overloaded");
        }
        statuses.push(status);
    }
    // One in the worker, one in the queue; the rest are refused, never silently dropped.
    assert_eq!(statuses, [202, 503, 503]);
    assert_eq!(metric(&s, r#"eventyard_events_rejected_total{error="overloaded"}"#).await, Some(2.0));
}

/// Back-pressure: with a wait, a producer facing a full queue is held until a worker makes
/// room, then accepted; nothing is refused, every event is processed.
#[tokio::test]
async fn a_producer_facing_a_full_queue_waits_for_room_instead_of_a_503() {
    let (s, collect) = a_busy_worker_and_a_queue_of_one(30_000).await;
    let url = s.url("/v1/events/fixinventory/collect");
    let queued = client().post(&url).json(&collect).send().await.unwrap();
    assert_eq!(queued.status(), 202, "the queue's one place");
    // Two more: each waits for the worker to take the one before it (300 ms each).
    let (a, b) = tokio::join!(client().post(&url).json(&collect).send(), client().post(&url).json(&collect).send());
    assert_eq!((a.unwrap().status().as_u16(), b.unwrap().status().as_u16()), (202, 202), "held, then accepted");
    let refused = metric(&s, r#"eventyard_events_rejected_total{error="overloaded"}"#).await;
    assert_eq!(refused.unwrap_or(0.0), 0.0, "none refused");
    wait_metric(&s, r#"eventyard_plugin_calls_total{plugin="slow"}"#, 4.0).await;
}

/// Issue 11, item 1: handlers that block in WASI (`std::thread::sleep`; `poll` on a list of
/// timers, then `block`) end at their deadline with kind `deadline`, and the workers they
/// held go back to good traffic. Before: 0 of 20 good events answered in 10 s. An event a
/// worker holds is `in_progress` meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_blocked_in_wasi_end_at_their_deadline_and_free_their_workers() {
    let mut toml = echo_plugin();
    toml += &hostile_plugin("sleeper", "sleep", "limits = { deadline_ms = 200 }");
    toml += &hostile_plugin("poller", "poll", "limits = { deadline_ms = 200 }");
    for (route, ty, handler) in
        [("sleepy", "fixinventory/collect", "sleeper"), ("pollsy", "fixinventory/cleanup", "poller")]
    {
        toml += &format!(
            "[[route]]\nname = \"{route}\"\nmatch = \"{ty}\"\nhandlers = [\"{handler}\"]\nretry = {{ max_attempts = 1 }}\n"
        );
    }
    // Default workers (one per core): six sleepers are more than there are workers.
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/response/*")).await.unwrap();
    let mut sleepers = Vec::new();
    for i in 0..6 {
        let (ty, step) =
            if i % 2 == 0 { ("fixinventory/collect", "collect") } else { ("fixinventory/cleanup", "cleanup") };
        sleepers.push(post(&s, ty, json!({ "kind": "event", "message_type": step, "data": {} })).await);
    }
    // The first sleeper is `in_progress` while a worker holds it (its 200 ms), then ends.
    let mut states = Vec::new();
    while states.last().is_none_or(|s| s != "dead_lettered") {
        let v: Value =
            client().get(s.url(&format!("/v1/events/{}", sleepers[0]))).send().await.unwrap().json().await.unwrap();
        states.push(v["state"].as_str().unwrap().to_string());
        assert!(states.len() < 2_000, "{states:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(states.iter().any(|s| s == "in_progress"), "{states:?}");
    let started = Instant::now();
    for i in 0..20 {
        post(&s, "infrahub/send.echo.request", json!({ "message": format!("good-{i}") })).await;
    }
    let mut answered = std::collections::HashSet::new();
    let mut within_10s = 0;
    while answered.len() < 20 {
        let r = next_json_within(&mut ws, Duration::from_secs(60)).await;
        answered.insert(r["data"]["data"]["response"].as_str().unwrap().to_string());
        if started.elapsed() < Duration::from_secs(10) {
            within_10s = answered.len();
        }
    }
    eprintln!("good events processed during the sleep attack: {within_10s} of 20 within 10 s");
    assert!((0..20).all(|i| answered.contains(&format!("Reply to: good-{i}"))));

    let letters = dead_letters(&s, "?limit=100", 6).await;
    assert_eq!(letters.len(), 6, "{letters:#?}");
    for d in &letters {
        assert_eq!(d["kind"], "deadline", "{d:#}");
        assert!(sleepers.contains(&d["event"]["id"].as_str().unwrap().to_string()));
    }
    let by_plugin = |p: &str| letters.iter().filter(|d| d["plugin"] == p).count();
    assert_eq!((by_plugin("sleeper"), by_plugin("poller")), (3, 3));
    assert_eq!(metric(&s, r#"eventyard_plugin_failures_total{plugin="poller",kind="deadline"}"#).await, Some(3.0));
}

/// The peak resident memory (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).expect("VmHWM in /proc/<pid>/status");
    kib.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

/// Issue 11, item 2: a handler (memory cap 256 MiB) failing with an 80 MiB message of
/// control characters and forged log lines. The real `eventyard` binary runs it; its dead
/// letter holds a short, clean message, and the router's peak memory grows by less than
/// twice the plugin's cap (README, "Sandbox limits"). Before: 2.8 GB, a 480 MiB dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_message_is_capped_and_cleaned_and_router_memory_stays_bounded() {
    const CAP: u64 = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n{}[[route]]\nmatch = \"fixinventory/collect\"\nhandlers = [\"loud\"]\nretry = {{ max_attempts = 1 }}\n[auth]\nadmin_token = \"{}\"\n",
        hostile_plugin("loud", "huge-error", &format!("limits = {{ memory_bytes = {CAP}, deadline_ms = 30_000 }}")),
        crate::support::ADMIN_TOKEN,
    );
    let path = dir.path().join("eventyard.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eventyard"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while client().get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "router did not start");
        assert!(child.try_wait().unwrap().is_none(), "router exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let child = Kill(child);
    let before = peak_rss(pid);
    let collect = json!({ "kind": "event", "message_type": "collect", "data": {} });
    let res = client().post(format!("{base}/v1/events/fixinventory/collect")).json(&collect).send().await.unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let letters = loop {
        let body: Value = client().get(format!("{base}/v1/dead-letters")).send().await.unwrap().json().await.unwrap();
        let items = body["dead_letters"].as_array().unwrap().clone();
        if !items.is_empty() {
            break items;
        }
        assert!(Instant::now() < deadline, "no dead letter for {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let after = peak_rss(pid);
    drop(child);
    eprintln!(
        "router peak memory under the huge-error attack: {} MiB before the event, {} MiB after",
        before >> 20,
        after >> 20
    );
    assert_eq!(letters[0]["event"]["id"], id.as_str());
    assert_eq!(letters[0]["kind"], "handler_error");
    let message = letters[0]["message"].as_str().unwrap();
    assert!(message.len() <= eventyard::event::text::MAX_PLUGIN_MESSAGE_BYTES, "{} bytes", message.len());
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(message.contains("ERROR eventyard: forged line") && message.contains("more bytes cut]"), "{message}");
    assert!(after - before < 2 * CAP, "router grew by {} MiB", (after - before) >> 20);
}

/// Issue 11, item 2: `log.write` is capped per call (lines and bytes) and each line is
/// capped and cleaned; what was dropped is counted.
#[tokio::test]
async fn a_log_flood_is_capped_per_call_and_counted() {
    use eventyard::event::text::MAX_PLUGIN_MESSAGE_BYTES;
    use eventyard::wasm::link::{MAX_LOG_BYTES_PER_CALL, MAX_LOG_LINES_PER_CALL};
    let toml = hostile_plugin_with("flood", "log-flood", r#"["log"]"#, "limits = { deadline_ms = 10_000 }")
        + "[[route]]\nmatch = \"fixinventory/collect\"\nhandlers = [\"flood\"]\n";
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let id = post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} })).await;
    assert_eq!(finished(&s, &id).await, "processed");
    // 1000 lines of 64 KiB: each is cut to the message cap, so the byte budget keeps 16.
    let kept = (MAX_LOG_LINES_PER_CALL as usize).min(MAX_LOG_BYTES_PER_CALL / MAX_PLUGIN_MESSAGE_BYTES);
    wait_metric(&s, r#"eventyard_plugin_log_dropped_lines_total{plugin="flood"}"#, (1000 - kept) as f64).await;
    let bytes = metric(&s, r#"eventyard_plugin_log_dropped_bytes_total{plugin="flood"}"#).await.unwrap();
    assert!(bytes > (1000 * (64 << 10) - kept * MAX_PLUGIN_MESSAGE_BYTES) as f64, "{bytes}");
}

/// Waits until an event is finished (20 s at most); returns its state.
async fn finished(s: &Server, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: Value =
            client().get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().json().await.unwrap();
        let state = status["state"].as_str().unwrap_or("").to_string();
        if matches!(state.as_str(), "processed" | "dead_lettered") || Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Python of `tests/run.sh`'s venv with the reference Prometheus client installed.
fn prometheus_python() -> std::path::PathBuf {
    let python = crate::support::repo().join("target/prometheus-venv/bin/python");
    assert!(python.exists(), "{} is missing: `bash tests/run.sh` installs prometheus_client", python.display());
    python
}

/// Parses a scrape with `prometheus_client`'s text parser: every sample as
/// `[name, {labels}, value]`, or the parser's error.
fn parse_with_prometheus_client(text: &str) -> Result<Vec<Value>, String> {
    use std::io::Write;
    const SCRIPT: &str = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families as parse\nprint(json.dumps([[s.name, s.labels, s.value] for f in parse(sys.stdin.read()) for s in f.samples]))";
    let mut child = std::process::Command::new(prometheus_python())
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// Issue 11, item 5: plugin metrics with a label `1bad`, the reserved label `plugin`, a name
/// with spaces, a value with quotes and a newline, and a flood of series: `/metrics` still
/// parses with the reference Prometheus parser and keeps the router's own metrics; each
/// refused sample is counted and the calls succeed.
#[tokio::test]
async fn plugin_metrics_cannot_break_or_bloat_the_scrape() {
    use eventyard::metrics::{MAX_SERIES_BYTES_PER_PLUGIN, MAX_SERIES_PER_PLUGIN};
    let modes = ["metric-bad-label", "metric-plugin-label", "metric-bad-name", "metric-quoted-value", "metric-flood"];
    let mut toml = String::new();
    for mode in modes {
        toml += &hostile_plugin_with(mode, mode, r#"["metrics"]"#, "limits = { deadline_ms = 10_000 }");
    }
    let handlers: Vec<String> = modes.iter().map(|m| format!("\"{m}\"")).collect();
    toml += &format!("[[route]]\nmatch = \"fixinventory/collect\"\nhandlers = [{}]\n", handlers.join(", "));
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let id = post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} })).await;
    // Every call succeeded: a refused sample does not fail it.
    assert_eq!(finished(&s, &id).await, "processed");
    let text = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let samples = parse_with_prometheus_client(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let find = |name: &str, labels: Value| {
        samples.iter().find(|s| s[0] == name && s[1] == labels).map(|s| s[2].as_f64().unwrap())
    };
    // The router's own metrics are all there.
    assert!(find("eventyard_events_accepted_total", json!({})).is_some());
    assert_eq!(find("eventyard_plugin_calls_total", json!({ "plugin": "metric-flood" })), Some(1.0));
    // The value came through whole, quotes and newline included.
    let said = json!({ "plugin": "metric-quoted-value", "said": "say \"hi\" \\ then\nnext line" });
    assert_eq!(find("eventyard_plugin_quoted", said), Some(7.0));
    let refused = |plugin: &str, reason: &str| {
        find("eventyard_plugin_samples_refused_total", json!({ "plugin": plugin, "reason": reason })).unwrap_or(0.0)
    };
    assert_eq!(refused("metric-bad-label", "invalid_label"), 1.0);
    assert_eq!(refused("metric-plugin-label", "reserved_label"), 1.0);
    assert_eq!(refused("metric-bad-name", "invalid_name"), 1.0);
    for name in ["eventyard_plugin_bad_label", "eventyard_plugin_plugin_label"] {
        assert!(!samples.iter().any(|s| s[0].as_str().unwrap().starts_with(name)), "{name} was exported");
    }
    // The parser names a counter's samples `<family>_total`.
    let kept = samples.iter().filter(|s| s[0] == "eventyard_plugin_flood_total").count();
    assert!(kept > 0 && kept <= MAX_SERIES_PER_PLUGIN, "{kept}");
    let flood_bytes: usize =
        text.lines().filter(|l| l.starts_with("eventyard_plugin_flood{")).map(|l| l.len() + 1).sum();
    assert!(flood_bytes <= MAX_SERIES_BYTES_PER_PLUGIN, "{flood_bytes}");
    let limited = refused("metric-flood", "series_limit") + refused("metric-flood", "bytes_limit");
    assert_eq!(limited as usize, 5000 - kept);
}

/// Posts an NDJSON batch of echo requests with these messages; their ids, in order.
async fn post_echo_batch(s: &Server, messages: &[String]) -> Vec<String> {
    let body: Vec<String> = messages
        .iter()
        .map(|m| json!({ "type": "infrahub/send.echo.request", "data": { "message": m } }).to_string())
        .collect();
    let res = client()
        .post(s.url("/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(body.join("\n"))
        .send()
        .await
        .unwrap();
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["accepted"].as_u64(), Some(messages.len() as u64), "{v}");
    v["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

/// Handlers built against `batch-handler` get a waiting run of events in one call. When such
/// a call fails as a whole (here: one event of the run traps; then: an answer one result
/// short), every event of the run is handled again alone, so only the bad event fails, and
/// the other handler of the route answers every event either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_events_is_one_batch_call_and_a_failed_batch_fails_only_its_bad_event() {
    let mut toml = echo_plugin()
        .replace("handlers = [\"echo\"]", "handlers = [\"echo\", \"picky\", \"short\"]\nretry = { max_attempts = 1 }");
    toml += &hostile_plugin("picky", "trap-marked", "");
    toml += &hostile_plugin("short", "batch-short", "");
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let plugins: Value = client().get(s.url("/v1/plugins")).send().await.unwrap().json().await.unwrap();
    let batches = |name: &str| {
        plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["batches"].clone()
    };
    assert_eq!((batches("echo"), batches("picky")), (json!(true), json!(true)), "{plugins}");

    // One request: its 40 events are queued at once, so the workers take them in runs.
    let messages: Vec<String> = (0..40).map(|i| if i == 17 { "boom".to_string() } else { format!("m{i}") }).collect();
    let ids = post_echo_batch(&s, &messages).await;
    for (i, id) in ids.iter().enumerate() {
        let status: Value = loop {
            let v: Value = client().get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().json().await.unwrap();
            if v["state"] == "processed" || v["state"] == "dead_lettered" {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let emitted = status["emitted"].as_array().unwrap();
        assert_eq!(emitted.len(), 1, "echo answered event {i}: {status}");
        assert_eq!(emitted[0]["plugin"], "echo");
        let failed = status["failed"].as_array().unwrap();
        if i == 17 {
            assert_eq!(status["state"], "dead_lettered", "{status}");
            assert_eq!(
                (failed.len(), &failed[0]["plugin"], &failed[0]["kind"]),
                (1, &json!("picky"), &json!("trap")),
                "{status}"
            );
        } else {
            assert_eq!(status["state"], "processed", "event {i}: {status}");
        }
    }
    let letters = dead_letters(&s, "?limit=100", 1).await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["event"]["id"], ids[17].as_str());

    let m = |name: &str, plugin: &str| {
        let series = format!("eventyard_plugin_{name}{{plugin=\"{plugin}\"}}");
        let s = &s;
        async move { metric(s, &series).await.unwrap() }
    };
    let echo_batches = m("batch_calls_total", "echo").await;
    assert!(echo_batches >= 1.0 && echo_batches < 40.0, "runs of more than one event: {echo_batches}");
    assert_eq!(m("calls_total", "echo").await, 40.0, "one call per event, counted per event");
    assert_eq!(m("batch_fallbacks_total", "echo").await, 0.0);
    assert!(m("batch_fallbacks_total", "picky").await >= 1.0, "the run with the marked event fell back");
    assert_eq!(m("batch_calls_total", "short").await, 0.0, "a short answer is never taken");
    assert!(m("batch_fallbacks_total", "short").await >= 1.0);
}

/// A component built against the earlier `batch-handler` world, whose `handle-batch` took
/// `list<event>` (the prebuilt echo of `d4fb611`, kept in `tests/fixtures/`), no longer
/// matches the export's type: it still loads, as a plain handler, and answers every event of
/// a run with one `handle` call each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handler_built_against_the_earlier_world_runs_as_a_plain_handler() {
    let fixture = crate::support::repo().join("tests/fixtures/echo-batch-list-event.wasm");
    let toml = echo_plugin().replace(&guest("echo"), fixture.to_str().unwrap());
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let plugins: Value = client().get(s.url("/v1/plugins")).send().await.unwrap().json().await.unwrap();
    let echo = plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "echo").unwrap();
    assert_eq!(echo["batches"], json!(false), "{plugins}");
    let messages: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    post_echo_batch(&s, &messages).await;
    wait_metric(&s, "eventyard_events_emitted_total", 20.0).await;
    assert_eq!(metric(&s, "eventyard_plugin_calls_total{plugin=\"echo\"}").await, Some(20.0));
    assert_eq!(metric(&s, "eventyard_plugin_batch_calls_total{plugin=\"echo\"}").await, Some(0.0));
}

/// In a batch call `emit.send` answers an error (an event sent there could not be told apart
/// by the event it answers); alone, the same handler's send goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_send_is_refused_in_a_batch_call_and_works_alone() {
    let toml = hostile_plugin("sender", "emit-report", "")
        + "[[route]]\nname = \"collect\"\nmatch = \"fixinventory/collect\"\nhandlers = [\"sender\"]\nretry = { max_attempts = 1 }\n";
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let line =
        json!({ "type": "fixinventory/collect", "data": { "kind": "event", "message_type": "collect", "data": {} } })
            .to_string();
    let res = client()
        .post(s.url("/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(vec![line; 20].join("\n"))
        .send()
        .await
        .unwrap();
    let v: Value = res.json().await.unwrap();
    let ids: Vec<String> =
        v["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 20, "{v}");
    let (mut refused, mut sent) = (0, 0);
    for id in &ids {
        assert!(matches!(finished(&s, id).await.as_str(), "processed" | "dead_lettered"));
        let status: Value =
            client().get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().json().await.unwrap();
        match status["state"].as_str().unwrap() {
            "processed" => {
                assert_eq!(status["emitted"][0]["type"], "infrahub/send.echo.request", "{status}");
                sent += 1;
            }
            _ => {
                let failure = &status["failed"][0];
                assert_eq!(failure["kind"], "handler_error", "{status}");
                assert!(
                    failure["message"].as_str().unwrap().contains("emit.send is not available in handle-batch"),
                    "{status}"
                );
                refused += 1;
            }
        }
    }
    let batches = metric(&s, "eventyard_plugin_batch_calls_total{plugin=\"sender\"}").await.unwrap();
    assert!(batches >= 1.0, "20 events queued at once are taken in runs");
    assert!(refused >= 2, "every event of a run was refused its send: {refused}");
    assert_eq!(refused + sent, 20);
}

//! Wasm plugins end to end: the example plugins built from `guest-examples/rust/`, loaded
//! by a real server on port 0, driven over HTTP, their emitted events read by a real
//! WebSocket subscriber and their metrics from `/metrics`.

use crate::support::{client, guest, metric, next_json, post, repo, wait_metric, Server};
use eventyard::config::Config;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The five examples on their routes, built from source (`builtin:` would use the copies
/// shipped in the binary; the embedded-default test covers those).
fn examples_toml() -> String {
    format!(
        r#"
        [[plugin]]
        name = "cleanup-plan"
        component = "{cleanup}"
        world = "handler"
        capabilities = ["log"]
        emits = ["fixinventory/cleanup_plan"]
        config = {{ max_age_days = 30, required_tags = ["owner"], protected_kinds = ["aws_s3_bucket"] }}

        [[plugin]]
        name = "generator"
        component = "{generator}"
        world = "handler"
        emits = ["infrahub/finalize.validator.execution"]

        [[plugin]]
        name = "metrics"
        component = "{metrics}"
        world = "handler"
        capabilities = ["metrics"]
        emits = ["fixinventory/post_generate_metrics"]

        [[plugin]]
        name = "echo"
        component = "{echo}"
        world = "handler"
        emits = ["infrahub/response/send.echo.request"]

        [[plugin]]
        name = "priority-filter"
        component = "{filter}"
        world = "filter"
        config = {{ min_priority = 2, max_priority = 4 }}

        [[route]]
        match = "fixinventory/cleanup_plan"
        handlers = ["cleanup-plan"]

        [[route]]
        match = "fixinventory/generate_metrics"
        handlers = ["metrics"]

        [[route]]
        name = "generators"
        regex = "^infrahub/check\\.generator\\.(run|other)$"
        filters = ["priority-filter"]
        handlers = ["generator"]

        [[route]]
        match = "infrahub/send.echo.request"
        handlers = ["echo"]
        "#,
        cleanup = guest("cleanup-plan"),
        generator = guest("generator"),
        metrics = guest("metrics"),
        echo = guest("echo"),
        filter = guest("priority-filter"),
    )
}

async fn examples_server() -> Server {
    Server::with_config(Config::parse(&examples_toml()).expect("example config")).await
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(s: &Server, types: &str) -> Ws {
    tokio_tungstenite::connect_async(s.ws_url(&format!("/v1/subscribe?types={types}"))).await.unwrap().0
}

fn generator_run(priority: u8) -> Value {
    json!({
        "meta": { "correlation_id": "corr-7", "priority": priority },
        "commit": "9fceb02", "repository_id": "r-1", "repository_name": "acme/net", "repository_kind": "git",
        "branch_name": "main", "target_id": "t-17", "target_name": "edge-01", "query": "q",
        "variables": {}, "validator_id": "v-88", "proposed_change": "pc-1"
    })
}

#[tokio::test]
async fn cleanup_plan_handler_answers_with_the_resources_to_clean_up() {
    let s = examples_server().await;
    let mut ws = subscribe(&s, "fixinventory/cleanup_plan").await;
    let resources = json!([
        { "id": "i-old-untagged", "kind": "aws_ec2_instance", "age_days": 40, "tags": {} },
        { "id": "i-old-owned", "kind": "aws_ec2_instance", "age_days": 90, "tags": { "owner": "ana" } },
        { "id": "i-new", "kind": "aws_ec2_instance", "age_days": 2, "tags": {} },
        { "id": "b-old", "kind": "aws_s3_bucket", "age_days": 400, "tags": {} },
        { "id": "v-old", "kind": "aws_ebs_volume", "age_days": 31, "tags": { "team": "x" } }
    ]);
    let body = json!({ "kind": "action", "message_type": "cleanup_plan",
                       "data": { "task": "t-1", "step": "cleanup_plan", "resources": resources } });
    let id = post(&s, "fixinventory/cleanup_plan", body).await;
    assert_eq!(next_json(&mut ws).await["id"], id.as_str(), "subscribers see the original first");
    let done = next_json(&mut ws).await;
    assert_eq!(done["type"], "fixinventory/cleanup_plan");
    assert_eq!(done["source"], "plugin:cleanup-plan");
    assert_eq!(done["data"]["kind"], "action_done");
    assert_eq!(done["data"]["data"]["task"], "t-1");
    let ids: Vec<&str> =
        done["data"]["data"]["cleanup"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["i-old-untagged", "v-old"]);
    assert_eq!(done["data"]["data"]["kept"], 3);
    assert!(done["data"]["data"]["cleanup"][1]["reason"].as_str().unwrap().contains("missing tag(s) owner"));
    // Its own action_done came back through the route and was left alone: no third event.
    wait_metric(&s, r#"eventyard_plugin_calls_total{plugin="cleanup-plan"}"#, 2.0).await;
    assert_eq!(metric(&s, "eventyard_events_emitted_total").await, Some(1.0));
}

#[tokio::test]
async fn generator_finalizes_the_same_validator() {
    let s = examples_server().await;
    let mut ws = subscribe(&s, "infrahub/finalize.*").await;
    post(&s, "infrahub/check.generator.run", generator_run(3)).await;
    let f = next_json(&mut ws).await;
    assert_eq!(f["type"], "infrahub/finalize.validator.execution");
    assert_eq!(f["data"]["validator_id"], "v-88");
    assert_eq!(f["data"]["proposed_change"], "pc-1");
    assert_eq!(f["data"]["validator_type"], "GeneratorValidator");
    assert_eq!(f["data"]["meta"]["correlation_id"], "corr-7");
    assert_eq!(f["priority"], 3);
}

#[tokio::test]
async fn filter_drops_low_priority_and_rewrites_high_priority() {
    let s = examples_server().await;
    let mut ws = subscribe(&s, "infrahub/finalize.*").await;
    post(&s, "infrahub/check.generator.run", generator_run(1)).await; // below min_priority 2: dropped
    post(&s, "infrahub/check.generator.run", generator_run(5)).await; // above max_priority 4: rewritten to 4
    let f = next_json(&mut ws).await;
    assert_eq!(f["data"]["meta"]["priority"], 4, "the handler saw the rewritten event");
    assert_eq!(f["priority"], 4);
    // Two workers: the dropped event may finish after the rewritten one.
    wait_metric(&s, "eventyard_events_dropped_total", 1.0).await;
    assert_eq!(metric(&s, r#"eventyard_plugin_calls_total{plugin="generator"}"#).await, Some(1.0));
}

#[tokio::test]
async fn metrics_handler_publishes_samples_and_emits_post_generate_metrics() {
    let s = examples_server().await;
    let mut ws = subscribe(&s, "fixinventory/post_generate_metrics").await;
    let body = json!({ "kind": "action", "message_type": "generate_metrics", "data": { "task": "t-9", "step": "generate_metrics",
        "resources": [ { "kind": "aws_ec2_instance", "age_days": 3 }, { "kind": "aws_ec2_instance", "age_days": 50 },
                       { "kind": "aws_s3_bucket", "age_days": 7 } ] } });
    post(&s, "fixinventory/generate_metrics", body).await;
    let f = next_json(&mut ws).await;
    assert_eq!(
        f["data"],
        json!({ "kind": "event", "message_type": "post_generate_metrics",
                                  "data": { "step": "post_generate_metrics", "kinds": 2, "task": "t-9" } })
    );
    let m = |series: &'static str| metric(&s, series);
    assert_eq!(m(r#"eventyard_plugin_resources{plugin="metrics",kind="aws_ec2_instance"}"#).await, Some(2.0));
    assert_eq!(m(r#"eventyard_plugin_resources{plugin="metrics",kind="aws_s3_bucket"}"#).await, Some(1.0));
    assert_eq!(m(r#"eventyard_plugin_runs{plugin="metrics"}"#).await, Some(1.0));
    assert_eq!(m(r#"eventyard_plugin_resource_age_days_count{plugin="metrics"}"#).await, Some(3.0));
    assert_eq!(m(r#"eventyard_plugin_resource_age_days_sum{plugin="metrics"}"#).await, Some(60.0));
    assert_eq!(m(r#"eventyard_plugin_calls_total{plugin="metrics"}"#).await, Some(1.0));
    assert!(m(r#"eventyard_plugin_call_seconds_count{plugin="metrics"}"#).await.unwrap() >= 1.0);
}

#[tokio::test]
async fn echo_answers_with_the_response_type_and_correlation_id() {
    let s = examples_server().await;
    let mut ws = subscribe(&s, "infrahub/response/*").await;
    post(&s, "infrahub/send.echo.request", json!({ "message": "ping", "meta": { "correlation_id": "c-1" } })).await;
    let r = next_json(&mut ws).await;
    assert_eq!(r["type"], "infrahub/response/send.echo.request");
    assert_eq!(r["data"]["data"]["response"], "Reply to: ping");
    assert_eq!(r["data"]["meta"]["correlation_id"], "c-1");
    assert_eq!(r["data"]["passed"], true);
    assert_eq!(metric(&s, "eventyard_events_routed_total").await, Some(1.0));
    // Text that must be escaped, in the message and the correlation id, comes back as sent;
    // the response has the request's priority.
    let message = "say \"hi\"\n\\ \u{1} ünïcode 🦀";
    let meta = json!({ "correlation_id": "c\"2\\", "priority": 4 });
    post(&s, "infrahub/send.echo.request", json!({ "message": message, "meta": meta })).await;
    let r = next_json(&mut ws).await;
    assert_eq!(r["data"]["data"]["response"], format!("Reply to: {message}"));
    assert_eq!(r["data"]["meta"]["correlation_id"], "c\"2\\");
    assert_eq!(r["data"]["meta"]["priority"], 4);
    assert_eq!(r["priority"], 4);
    // A message larger than the guest's arena (its allocations go to the system allocator),
    // then a small one again (the arena starts over): both answered in full.
    for message in ["z".repeat(300 * 1024), "after the large one".to_string()] {
        post(&s, "infrahub/send.echo.request", json!({ "message": message })).await;
        let r = next_json(&mut ws).await;
        assert_eq!(r["data"]["data"]["response"], format!("Reply to: {message}"));
    }
}

#[tokio::test]
async fn embedded_default_runs_the_prebuilt_examples() {
    let s = Server::with_config(Config::embedded_default()).await;
    let health: Value = client().get(s.url("/healthz")).send().await.unwrap().json().await.unwrap();
    let mut handlers: Vec<&str> =
        health["plugins"]["handlers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    handlers.sort();
    assert_eq!(handlers, ["cleanup-plan", "echo", "generator", "metrics"]);
    assert_eq!(health["plugins"]["filters"], json!(["priority-filter"]));
    let mut ws = subscribe(&s, "infrahub/response/*").await;
    post(&s, "infrahub/send.echo.request", json!({ "message": "from the default" })).await;
    assert_eq!(next_json(&mut ws).await["data"]["data"]["response"], "Reply to: from the default");
}

/// The same walk and hash as `guest-examples/sources-hash.sh`.
fn sources_hash() -> String {
    use sha2::{Digest, Sha256};
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with("guest-examples/rust/target") {
                    walk(&p, out);
                }
            } else if p.extension().is_none_or(|e| e != "md") {
                out.push(p);
            }
        }
    }
    let root = repo();
    let mut files = vec![root.join("wit/eventyard.wit")];
    walk(&root.join("guest-examples/rust"), &mut files);
    let mut rel: Vec<String> =
        files.iter().map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().into_owned()).collect();
    rel.sort();
    let listing: String =
        rel.iter().map(|r| format!("{:x}  {r}\n", Sha256::digest(std::fs::read(root.join(r)).unwrap()))).collect();
    format!("{:x}", Sha256::digest(listing.as_bytes()))
}

#[test]
fn prebuilt_plugins_match_their_sources() {
    let recorded = std::fs::read_to_string(repo().join("guest-examples/prebuilt/SOURCES.sha256")).unwrap();
    assert_eq!(
        recorded.trim(),
        sources_hash(),
        "guest-examples/ or wit/ changed since the shipped plugins were built: run `bash guest-examples/build.sh`"
    );
}

#[tokio::test]
async fn an_invalid_replacement_is_a_dead_letter_not_a_routed_event() {
    // max_priority = 0 makes the filter rewrite meta.priority to 0, which the schema forbids.
    let toml =
        examples_toml().replace("config = { min_priority = 2, max_priority = 4 }", "config = { max_priority = 0 }");
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    post(&s, "infrahub/check.generator.run", generator_run(3)).await;
    let letters = crate::support::dead_letters(&s, "", 1).await;
    assert_eq!(letters[0]["kind"], "bad_output");
    assert_eq!(letters[0]["plugin"], "priority-filter");
    assert_eq!(letters[0]["route"], "generators");
    assert!(letters[0]["message"].as_str().unwrap().contains("/meta/priority"), "{}", letters[0]["message"]);
    assert_eq!(metric(&s, r#"eventyard_plugin_calls_total{plugin="generator"}"#).await, Some(0.0));
}

#[test]
fn precompiled_artifacts_are_cached_under_a_key_of_component_and_engine() {
    use eventyard::wasm::WasmEngine;
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest("echo")).unwrap();
    let plain = WasmEngine::new(false, Some(dir.path().to_path_buf())).unwrap();
    let metered = WasmEngine::new(true, Some(dir.path().to_path_buf())).unwrap();
    assert_ne!(plain.cache_key(&bytes), metered.cache_key(&bytes), "another engine config, another artifact");
    assert_ne!(plain.cache_key(&bytes), plain.cache_key(b"other bytes"));
    plain.load(&bytes).unwrap();
    let artifact = dir.path().join(format!("{}.cwasm", plain.cache_key(&bytes)));
    let written = std::fs::metadata(&artifact).unwrap().modified().unwrap();
    plain.load(&bytes).unwrap();
    assert_eq!(std::fs::metadata(&artifact).unwrap().modified().unwrap(), written, "loaded, not recompiled");
    metered.load(&bytes).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    // A damaged artifact is recompiled, never trusted.
    std::fs::write(&artifact, b"garbage").unwrap();
    plain.load(&bytes).unwrap();
    assert!(std::fs::read(&artifact).unwrap().len() > 1000);
}

/// Replaces `path` atomically (write beside it, rename over it), as a deploy would.
fn deploy(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_component_is_hot_reloaded_under_load_and_a_broken_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("live.wasm");
    std::fs::copy(crate::support::repo().join("guest-examples/prebuilt/echo.wasm"), &component).unwrap();
    let toml = format!(
        r#"
[[plugin]]
name = "live"
component = "{}"
world = "handler"
emits = ["infrahub/response/send.echo.request"]

[[route]]
name = "echo"
match = "infrahub/send.echo.request"
handlers = ["live"]
"#,
        component.display()
    );
    let s = std::sync::Arc::new(Server::with_config(Config::parse(&toml).unwrap()).await);
    let mut updates = subscribe(&s, "fixinventory/config-updated").await;
    let plugin = |s: std::sync::Arc<Server>| async move {
        let v: Value = client().get(s.url("/v1/plugins")).send().await.unwrap().json().await.unwrap();
        v["plugins"][0].clone()
    };
    let first = plugin(s.clone()).await;
    assert_eq!((first["name"].as_str(), first["reloads"].as_u64()), (Some("live"), Some(0)));

    // A steady stream of requests while the component changes under it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                ids.push(post(&s, "infrahub/send.echo.request", json!({ "message": format!("m{i}") })).await);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Not a component: refused, the running version stays.
    deploy(&component, b"definitely not wasm");
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let p = plugin(s.clone()).await;
        if p["last_reload_error"].is_string() {
            break p;
        }
        assert!(Instant::now() < deadline, "the broken component was not looked at");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((refused["revision"].clone(), refused["reloads"].as_u64()), (first["revision"].clone(), Some(0)));

    // A new version (the hostile plugin, which answers nothing in its default mode).
    deploy(&component, &std::fs::read(guest("hostile")).unwrap());
    // Compiling can take a while on a loaded machine (the other tests build guests meanwhile).
    let update = crate::support::next_json_within(&mut updates, Duration::from_secs(120)).await;
    assert_eq!(update["data"]["data"]["id"], "plugin:live");
    let swapped = plugin(s.clone()).await;
    assert_eq!((swapped["reloads"].as_u64(), &swapped["last_reload_error"]), (Some(1), &Value::Null));
    assert_eq!(update["data"]["data"]["revision"], swapped["revision"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ids = producer.await.unwrap();
    // Requests made after the swap are all handled by the new version.
    let before_swap = ids.len();
    for i in 0..20 {
        ids.push(post(&s, "infrahub/send.echo.request", json!({ "message": format!("after {i}") })).await);
    }

    // Nothing was lost: every accepted request was processed, by one version or the other;
    // the first ones were answered by the old version, the last ones by the new one (no answer).
    let mut answered = Vec::new();
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        let v = loop {
            let v: Value = client().get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().json().await.unwrap();
            if v["state"] == "processed" {
                break v;
            }
            assert!(Instant::now() < deadline, "{id} was not processed: {v}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        answered.push(v["emitted"].as_array().is_some_and(|e| !e.is_empty()));
    }
    assert!(before_swap > 5, "only {before_swap} requests while reloading");
    assert!(answered[0], "the old version answered the first requests");
    assert!(answered[before_swap..].iter().all(|a| !a), "after the swap, calls go to the new version");
}

/// `PUT /v1/plugins/{name}` with a manifest and a component.
async fn upload(s: &Server, name: &str, manifest: &str, component: Vec<u8>) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part("component", reqwest::multipart::Part::bytes(component).file_name("plugin.wasm"));
    let res = client().put(s.url(&format!("/v1/plugins/{name}"))).multipart(form).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_uploaded_kept_across_restarts_replaced_and_deleted() {
    let store = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = Config::default();
        c.store.dir = Some(store.path().to_path_buf());
        c
    };
    let echo = std::fs::read(repo().join("guest-examples/prebuilt/echo.wasm")).unwrap();
    let manifest = r#"
world = "handler"
emits = ["infrahub/response/send.echo.request"]
routes = [{ match = "infrahub/send.echo.request" }]
"#;
    let s = Server::with_config(config()).await;
    // Refused: not a component, a bad manifest, no token.
    let (code, v) = upload(&s, "echo-up", manifest, b"nope".to_vec()).await;
    assert_eq!((code, v["error"].as_str()), (400, Some("bad_request")), "{v}");
    let (code, v) = upload(&s, "echo-up", "world = \"handler\"\nlimitz = 1\n", echo.clone()).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("limitz"), "{v}");
    let anonymous = reqwest::Client::new()
        .put(s.url("/v1/plugins/echo-up"))
        .multipart(reqwest::multipart::Form::new().text("manifest", manifest.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Uploaded: routed at once.
    let (code, v) = upload(&s, "echo-up", manifest, echo.clone()).await;
    assert_eq!(code, 201, "{v}");
    let mut ws = subscribe(&s, "infrahub/response/*").await;
    post(&s, "infrahub/send.echo.request", json!({ "message": "uploaded" })).await;
    assert_eq!(next_json(&mut ws).await["data"]["data"]["response"], "Reply to: uploaded");
    drop((ws, s));

    // A new router on the same store loads it again.
    let s = Server::with_config(config()).await;
    let listed: Value = client().get(s.url("/v1/plugins")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["plugins"][0]["name"], "echo-up");
    let mut ws = subscribe(&s, "infrahub/response/*").await;
    post(&s, "infrahub/send.echo.request", json!({ "message": "again" })).await;
    assert_eq!(next_json(&mut ws).await["data"]["data"]["response"], "Reply to: again");

    // The same manifest with another component: swapped in place; another manifest: 409.
    let mut updates = subscribe(&s, "fixinventory/config-updated").await;
    let (code, v) = upload(&s, "echo-up", manifest, std::fs::read(guest("hostile")).unwrap()).await;
    assert_eq!((code, v["replaced"].as_bool()), (200, Some(true)), "{v}");
    let update = next_json(&mut updates).await["data"]["data"].take();
    assert_eq!(update, json!({ "id": "plugin:echo-up", "revision": v["revision"] }), "the swap is announced");
    let (code, _) = upload(&s, "echo-up", "world = \"handler\"\n", echo.clone()).await;
    assert_eq!(code, 409);

    // The echo again (so a routed event would show an answer), then deleted: no longer
    // routed, and gone after a restart.
    assert_eq!(upload(&s, "echo-up", manifest, echo.clone()).await.0, 200);
    let routed = post(&s, "infrahub/send.echo.request", json!({ "message": "still here" })).await;
    let answered = |id: String| {
        let s = &s;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let v: Value =
                    client().get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().json().await.unwrap();
                if v["state"] == "processed" {
                    return v["emitted"].as_array().is_some_and(|e| !e.is_empty());
                }
                assert!(Instant::now() < deadline, "{id} not processed: {v}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert!(answered(routed).await, "routed to the echo before the delete");
    assert_eq!(client().delete(s.url("/v1/plugins/echo-up")).send().await.unwrap().status(), 204);
    let id = post(&s, "infrahub/send.echo.request", json!({ "message": "nobody" })).await;
    assert!(!answered(id).await, "not routed after the delete");
    assert_eq!(client().delete(s.url("/v1/plugins/echo-up")).send().await.unwrap().status(), 404);
    drop(s);
    let s = Server::with_config(config()).await;
    let listed: Value = client().get(s.url("/v1/plugins")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["count"], 0);
}

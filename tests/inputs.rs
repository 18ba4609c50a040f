//! Inputs and access (issue 11, items 10, 11, 12, 15, 16, 19), each attack performed against
//! a real server: Fix Inventory's WebSockets (sizes, tokens, subscriber timeouts and ids),
//! batch caps and bounded answers, bounded "did you mean", `/v1/subscribe` tokens, caps and
//! regex limits, plugin deletion by a traversing name, and the published CloudEvents SDK.

use crate::support::{client, next_json, Server, ADMIN_TOKEN};
use eventyard::config::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const FI_TOKEN: &str = "fixinventory-token-0123456789";
const SUB_TOKEN: &str = "subscribe-token-0123456789";
const FI_PRODUCER: &str = "fixinventory-producer-0123456789";
const INFRAHUB_PRODUCER: &str = "infrahub-producer-0123456789";

/// A client that sends `token` (or nothing).
fn with(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
    }
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// A WebSocket to `path`, sending `token` (or nothing); the refusal's status and body when
/// the handshake is refused.
async fn ws(s: &Server, path: &str, token: Option<&str>) -> Result<Ws, (u16, Value)> {
    let mut req = s.ws_url(path).into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res.body().as_deref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or_default();
            Err((res.status().as_u16(), body))
        }
        Err(e) => panic!("handshake to {path}: {e}"),
    }
}

/// Reads until the server ends the connection (a close frame, an error or the end), within
/// 30 s; panics when it stays open.
async fn until_closed(ws: &mut Ws) {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("the server closes the connection")
        {
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            Some(Ok(_)) => {}
        }
    }
}

/// The next JSON text frame that is not a `message-listener-*` event.
async fn next_reply(ws: &mut Ws) -> Value {
    loop {
        let v = next_json(ws).await;
        if !v["message_type"].as_str().is_some_and(|t| t.starts_with("message-listener")) {
            return v;
        }
    }
}

fn collect_message() -> Value {
    json!({ "kind": "event", "message_type": "collect", "data": {} })
}

// ---------------------------------------------------------------- item 10: Fix Inventory

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overflowing_subscriber_timeout_is_refused_clamped_when_saved_and_a_run_completes() {
    // A subscription saved by an older version with the issue's timeout: it used to make
    // every collect_and_cleanup run panic, across restarts.
    let store = tempfile::tempdir().unwrap();
    std::fs::write(
        store.path().join("subscribers.json"),
        r#"{"x": {"pre_collect": {"message_type": "pre_collect", "wait_for_completion": true, "timeout": 9223372036854775808}}}"#,
    )
    .unwrap();
    let mut config = Config::default();
    config.store.dir = Some(store.path().to_path_buf());
    config.workflows = vec![eventyard::config::WorkflowConfig {
        step_timeout_secs: 5,
        ..eventyard::config::WorkflowConfig::named("collect_and_cleanup")
    }];
    let s = Server::with_config(config).await;
    let max = eventyard::protocols::fixinventory::actors::MAX_SUBSCRIPTION_TIMEOUT_SECS;
    let x: Value = with(None).get(s.url("/subscriber/x")).send().await.unwrap().json().await.unwrap();
    assert_eq!(x["subscriptions"]["pre_collect"]["timeout"], max, "clamped when loaded");

    // The attack itself, without a token: refused, nothing saved.
    for timeout in ["9223372036854775808".to_string(), (max + 1).to_string()] {
        let res = with(None).post(s.url(&format!("/subscriber/y/pre_collect?timeout={timeout}"))).send().await.unwrap();
        assert_eq!(res.status(), 400);
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "bad_request");
    }
    assert_eq!(with(None).get(s.url("/subscriber/y")).send().await.unwrap().status(), 404);
    let res = with(None).put(s.url("/subscriber/y")).json(&json!([{ "message_type": "collect", "timeout": u64::MAX }]));
    assert_eq!(res.send().await.unwrap().status(), 400);

    // A whole run completes: x gets pre_collect's action, answers it, every step finishes.
    let mut actor = ws(&s, "/subscriber/x/handle", None).await.unwrap();
    let mut bus = ws(&s, "/v1/subscribe?types=fixinventory/task_end", None).await.unwrap();
    let run = client().post(s.url("/v1/workflows/collect_and_cleanup/run")).send().await.unwrap();
    assert_eq!(run.status(), 202);
    let id = run.json::<Value>().await.unwrap()["task_id"].as_str().unwrap().to_string();
    let action = next_reply(&mut actor).await;
    assert_eq!((action["kind"].as_str(), action["message_type"].as_str()), (Some("action"), Some("pre_collect")));
    let done =
        json!({ "kind": "action_done", "message_type": "pre_collect", "data": { "task": id, "step": "pre_collect" } });
    actor.send(Message::Text(done.to_string().into())).await.unwrap();
    let end = next_json(&mut bus).await;
    assert_eq!(end["data"]["data"]["task_id"], id.as_str());
    let task: Value = client().get(s.url(&format!("/v1/tasks/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(task["state"], "done");
    assert_eq!(task["steps"][0]["answered"], json!([{ "name": "x", "kind": "action_done" }]));
}

#[tokio::test]
async fn subscriber_ids_are_bounded_with_a_json_error() {
    let s = Server::start().await;
    let max = eventyard::protocols::fixinventory::actors::MAX_SUBSCRIBERS;
    for i in 0..max {
        let res = with(None).post(s.url(&format!("/subscriber/w{i}/collect?timeout=1"))).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = with(None).post(s.url("/subscriber/one-too-many/collect")).send().await.unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "too_many_subscribers");
    let (status, body) = ws(&s, "/subscriber/one-too-many/handle", None).await.map(|_| ()).unwrap_err();
    assert_eq!((status, body["error"].as_str()), (409, Some("too_many_subscribers")));
    // Known ids keep working; one that leaves makes room.
    assert_eq!(with(None).post(s.url("/subscriber/w0/cleanup")).send().await.unwrap().status(), 200);
    assert_eq!(with(None).put(s.url("/subscriber/w1")).json(&json!([])).send().await.unwrap().status(), 200);
    assert_eq!(with(None).post(s.url("/subscriber/one-too-many/collect")).send().await.unwrap().status(), 200);

    // Ids are capped like every id a client chooses, on every path that keeps one.
    let long = "x".repeat(eventyard::event::MAX_ID_BYTES + 1);
    for res in [
        with(None).post(s.url(&format!("/subscriber/{long}/collect"))).send().await.unwrap(),
        with(None).put(s.url(&format!("/subscriber/{long}"))).json(&json!([])).send().await.unwrap(),
    ] {
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!((body["error"].as_str(), body["field"].as_str()), (Some("id_too_long"), Some("subscriber_id")));
    }
    for path in [format!("/subscriber/{long}/handle"), format!("/events?id={long}")] {
        let (status, body) = ws(&s, &path, None).await.map(|_| ()).unwrap_err();
        assert_eq!((status, body["error"].as_str()), (400, Some("id_too_long")), "{path}");
    }
}

#[tokio::test]
async fn fixinventory_websockets_refuse_oversized_messages() {
    let mut config = Config::default();
    config.ingest.max_body_bytes = 64 * 1024;
    let s = Server::with_config(config).await;
    let mut bus = ws(&s, "/v1/subscribe?types=fixinventory/collect", None).await.unwrap();
    let mut big = collect_message();
    big["data"]["padding"] = json!("x".repeat(100 * 1024));
    for path in ["/events", "/subscriber/big/handle"] {
        // A message within the limit is ingested (and answered only when refused).
        let mut socket = ws(&s, path, None).await.unwrap();
        let mut small = collect_message();
        small["message_type"] = json!("nope");
        socket.send(Message::Text(small.to_string().into())).await.unwrap();
        assert_eq!(next_reply(&mut socket).await["error"], "unknown_event_type", "{path}");
        // Over it, the connection ends instead of the message being buffered and ingested.
        let _ = socket.send(Message::Text(big.to_string().into())).await;
        until_closed(&mut socket).await;
        // It was not ingested: the next collect event on the bus is a probe sent after it.
        let probe = json!({ "kind": "event", "message_type": "collect", "data": { "probe": path } });
        crate::support::post(&s, "fixinventory/collect", probe).await;
        assert_eq!(next_json(&mut bus).await["data"]["data"]["probe"], path);
    }
    // `/v1/subscribe` reads nothing from its clients: a few KiB end it too.
    let mut socket = ws(&s, "/v1/subscribe", None).await.unwrap();
    let _ = socket.send(Message::Text("x".repeat(64 * 1024).into())).await;
    until_closed(&mut socket).await;
}

#[tokio::test]
async fn fixinventory_endpoints_require_their_token_when_configured() {
    let mut config = Config::default();
    config.auth.fixinventory_token = Some(FI_TOKEN.into());
    let s = Server::with_config(config).await;
    for (token, expected) in [(None, 401), (Some("not-the-fixinventory-token"), 403), (Some(FI_TOKEN), 200)] {
        let res = with(token).post(s.url("/subscriber/w/collect?timeout=5")).send().await.unwrap();
        assert_eq!(res.status(), expected, "{token:?}");
        assert_eq!(with(token).get(s.url("/subscribers")).send().await.unwrap().status(), expected, "{token:?}");
        for path in ["/events", "/subscriber/w/handle"] {
            match ws(&s, path, token).await {
                Ok(_) => assert_eq!(expected, 200, "{path} {token:?}"),
                Err((status, body)) => {
                    assert_eq!(status, expected, "{path} {token:?}");
                    assert!(body["error"].is_string());
                }
            }
        }
    }
    assert_eq!(with(Some(ADMIN_TOKEN)).get(s.url("/subscriber/w")).send().await.unwrap().status(), 200);
    // The reads of workflows and tasks stay open.
    assert_eq!(with(None).get(s.url("/v1/workflows")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn messages_sent_over_fixinventory_websockets_obey_the_ingestion_tokens() {
    let toml = format!(
        "[[auth.ingest]]\ntoken = \"{FI_PRODUCER}\"\ntypes = [\"fixinventory/*\"]\n\
         [[auth.ingest]]\ntoken = \"{INFRAHUB_PRODUCER}\"\ntypes = [\"infrahub/*\"]\n"
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let mut bus = ws(&s, "/v1/subscribe?types=fixinventory/collect", None).await.unwrap();
    for (i, (token, refusal)) in
        [(None, Some("unauthorized")), (Some(INFRAHUB_PRODUCER), Some("forbidden_type")), (Some(FI_PRODUCER), None)]
            .into_iter()
            .enumerate()
    {
        for path in ["/events".to_string(), format!("/subscriber/producer-{i}/handle")] {
            let path = path.as_str();
            let mut socket = ws(&s, path, token).await.unwrap();
            let mut message = collect_message();
            message["data"]["sent_by"] = json!(format!("{token:?} {path}"));
            socket.send(Message::Text(message.to_string().into())).await.unwrap();
            match refusal {
                Some(code) => assert_eq!(next_reply(&mut socket).await["error"], code, "{path} {token:?}"),
                None => {
                    let seen = next_json(&mut bus).await;
                    assert_eq!(seen["data"]["data"]["sent_by"], message["data"]["sent_by"]);
                }
            }
        }
    }
    // Nothing refused reached the bus: the next event on it is a new, allowed one.
    let probe = json!({ "kind": "event", "message_type": "collect", "data": { "probe": true } });
    let res = with(Some(FI_PRODUCER)).post(s.url("/v1/events/fixinventory/collect")).json(&probe).send().await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(next_json(&mut bus).await["data"]["data"]["probe"], true);
}

// ---------------------------------------------------------------- item 11: batches

fn ndjson(lines: impl IntoIterator<Item = Value>) -> String {
    lines.into_iter().map(|l| l.to_string() + "\n").collect()
}

async fn post_batch(s: &Server, content_type: &str, body: String) -> (u16, Value, usize) {
    let res = client().post(s.url("/v1/events")).header("content-type", content_type).body(body).send().await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap(), bytes.len())
}

#[tokio::test]
async fn batches_have_an_item_cap() {
    let mut config = Config::default();
    config.ingest.max_batch_items = 5;
    let s = Server::with_config(config).await;
    let line = json!({ "type": "fixinventory/collect", "data": collect_message() });
    let (status, body, _) = post_batch(&s, "application/x-ndjson", ndjson(vec![line.clone(); 5])).await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(5)));
    let (status, body, _) = post_batch(&s, "application/x-ndjson", ndjson(vec![line; 6])).await;
    assert_eq!((status, body["error"].as_str(), body["limit"].as_u64()), (413, Some("too_many_items"), Some(5)));
    let event = |i: usize| json!({ "specversion": "1.0", "id": format!("cap-{i}"), "source": "test", "type": "fixinventory/collect", "data": collect_message() });
    let (status, body, _) =
        post_batch(&s, "application/cloudevents-batch+json", Value::from_iter((0..6).map(event)).to_string()).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too_many_items")));
    let (status, body, _) =
        post_batch(&s, "application/cloudevents-batch+json", Value::from_iter((0..5).map(event)).to_string()).await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(5)));
}

#[tokio::test]
async fn per_item_errors_are_summarised_and_the_answer_is_bounded() {
    use eventyard::http::{MAX_DETAILED_ERRORS, MAX_ERROR_DETAIL_BYTES};
    let s = Server::start().await;
    // 1000 lines, each invalid with an 8 KiB value its violation quotes back.
    let n = 1000;
    let mut bad = collect_message();
    bad["kind"] = json!("k".repeat(8 * 1024));
    let body = ndjson((0..n).map(|_| json!({ "type": "fixinventory/collect", "data": bad })));
    let (status, v, size) = post_batch(&s, "application/x-ndjson", body.clone()).await;
    assert_eq!((status, v["rejected"].as_u64()), (200, Some(n as u64)));
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), n);
    assert!(results.iter().all(|r| r["error"] == "validation_failed" && r["status"] == 400));
    assert!(results[..MAX_DETAILED_ERRORS].iter().all(|r| r["message"].is_string()), "the first ones are detailed");
    assert_eq!(results[0]["truncated"], true, "a detail quoting 8 KiB is cut");
    assert!(results[MAX_DETAILED_ERRORS..].iter().all(|r| r.get("message").is_none()), "the rest are summarised");
    assert_eq!(v["errors_without_detail"], n - MAX_DETAILED_ERRORS);
    // Before: every violation quoted its 8 KiB value, an answer larger than the request.
    let bound = n * 100 + MAX_DETAILED_ERRORS * MAX_ERROR_DETAIL_BYTES;
    assert!(size < bound && size < body.len() / 10, "answer of {size} bytes to a request of {}", body.len());
    // A few bad lines are still answered in full.
    let (_, v, _) =
        post_batch(&s, "application/x-ndjson", ndjson([json!({ "type": "fixinventory/colect", "data": {} })])).await;
    assert_eq!(v["results"][0]["did_you_mean"][0], "fixinventory/collect");
}

// ---------------------------------------------------------------- item 12: suggestions

#[tokio::test]
async fn a_400_kb_type_name_is_answered_404_with_bounded_suggestions() {
    let s = Server::start().await;
    let huge = format!("fixinventory/collect{}", "x".repeat(400 * 1024));
    let check = |v: &Value| {
        assert_eq!(v["error"], "unknown_event_type");
        assert_eq!(v["did_you_mean"], json!(["fixinventory/collect"]), "only the known name it starts with");
        assert!(v["type"].as_str().unwrap().len() < 300, "the name is echoed cut");
    };
    // Two such lines in one batch, and the native endpoint.
    let line = json!({ "type": huge, "data": {} });
    let (status, v, size) = post_batch(&s, "application/x-ndjson", ndjson([line.clone(), line])).await;
    assert_eq!(status, 200);
    v["results"].as_array().unwrap().iter().for_each(|r| {
        assert_eq!(r["status"], 404);
        check(r)
    });
    assert!(size < 4096, "{size}");
    // A URI is at most 64 KiB (the `http` crate's limit, client and server): the longest
    // name the native endpoint can be sent.
    let long = &huge[..60 * 1024];
    let res = client().post(s.url(&format!("/v1/events/{long}"))).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), 404);
    check(&res.json().await.unwrap());
    // A name with no known prefix gets no suggestion at all.
    let res = client().post(s.url(&format!("/v1/events/{}", "y".repeat(60 * 1024)))).json(&json!({})).send();
    assert_eq!(res.await.unwrap().json::<Value>().await.unwrap()["did_you_mean"], json!([]));
}

// ---------------------------------------------------------------- item 15: /v1/subscribe

#[tokio::test]
async fn subscribe_requires_its_token_when_configured() {
    let mut config = Config::default();
    config.auth.subscribe_token = Some(SUB_TOKEN.into());
    let s = Server::with_config(config).await;
    assert_eq!(ws(&s, "/v1/subscribe", None).await.map(|_| ()).unwrap_err().0, 401);
    assert_eq!(ws(&s, "/v1/subscribe", Some("some-other-token-123456")).await.map(|_| ()).unwrap_err().0, 403);
    let mut sub = ws(&s, "/v1/subscribe?types=fixinventory/collect", Some(SUB_TOKEN)).await.unwrap();
    assert!(ws(&s, "/v1/subscribe", Some(ADMIN_TOKEN)).await.is_ok());
    crate::support::post(&s, "fixinventory/collect", collect_message()).await;
    assert_eq!(next_json(&mut sub).await["type"], "fixinventory/collect");
}

#[tokio::test]
async fn concurrent_streams_are_capped_before_the_upgrade() {
    let mut config = Config::default();
    config.subscribers.max_connections = 2;
    let s = Server::with_config(config).await;
    let first = ws(&s, "/v1/subscribe", None).await.unwrap();
    let _second = ws(&s, "/events", None).await.unwrap();
    for path in ["/v1/subscribe", "/events"] {
        let (status, body) = ws(&s, path, None).await.map(|_| ()).unwrap_err();
        assert_eq!(
            (status, body["error"].as_str(), body["limit"].as_u64()),
            (503, Some("too_many_connections"), Some(2))
        );
    }
    // A stream that leaves gives its slot back.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ws(&s, "/v1/subscribe", None).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the slot of a closed stream is given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn subscribe_patterns_are_compiled_within_limits() {
    let s = Server::start().await;
    for path in [
        "/v1/subscribe?regex=a%7B1000%7D%7B1000%7D".to_string(),
        format!("/v1/subscribe?regex={}", "a".repeat(2000)),
        format!("/v1/subscribe?types={}", "a,".repeat(1000)),
    ] {
        let (status, body) = ws(&s, &path, None).await.map(|_| ()).unwrap_err();
        assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{path}");
    }
    assert!(ws(&s, "/v1/subscribe?regex=%5Eidem-(low%7Chigh)%24", None).await.is_ok());
}

// ---------------------------------------------------------------- item 16: plugin names

#[tokio::test]
async fn deleting_a_plugin_by_a_traversing_name_is_refused() {
    let store = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.store.dir = Some(store.path().to_path_buf());
    let s = Server::with_config(config).await;
    // Files one level above the uploads directory (`<store>/plugins`).
    let victims = [store.path().join("victim.toml"), store.path().join("victim.wasm")];
    victims.iter().for_each(|v| std::fs::write(v, "keep me").unwrap());
    for name in ["..%2Fvictim", "..%2F..%2Fvictim", "Victim", "a.b"] {
        let res = client().delete(s.url(&format!("/v1/plugins/{name}"))).send().await.unwrap();
        assert_eq!(res.status(), 400, "{name}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "bad_request");
    }
    assert!(victims.iter().all(|v| std::fs::read_to_string(v).unwrap() == "keep me"), "nothing outside was deleted");
    assert_eq!(client().delete(s.url("/v1/plugins/not-there")).send().await.unwrap().status(), 404);
}

// ---------------------------------------------------------------- item 19: CloudEvents SDK

/// The Python of `tests/run.sh`'s venv with the CloudEvents SDK installed.
fn cloudevents_python() -> std::path::PathBuf {
    let python = crate::support::repo().join("target/cloudevents-venv/bin/python");
    assert!(python.exists(), "{} is missing: `bash tests/run.sh` installs the CloudEvents SDK", python.display());
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_cloudevents_sdk_posts_in_binary_and_structured_mode() {
    let s = Server::start().await;
    let script = crate::support::repo().join("tests/cloudevents/send.py");
    let run = tokio::process::Command::new(cloudevents_python())
        .args([script.to_str().unwrap(), &format!("http://{}", s.addr)])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sent: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(sent.len(), 8, "2 APIs x 2 modes x (valid, invalid)");
    for r in &sent {
        if r["mode"] == "binary" {
            assert_eq!(r["content_type_sent"], Value::Null, "the SDK sends no content type in binary mode");
        }
        if r["valid"] == true {
            assert_eq!(r["status"], 202, "{r}");
            assert_eq!(r["body"]["id"], r["id"], "{r}");
            let status =
                client().get(s.url(&format!("/v1/events/{}", r["id"].as_str().unwrap()))).send().await.unwrap();
            assert_eq!(status.status(), 200, "{r}");
        } else {
            assert_eq!(r["status"], 400, "{r}");
            assert_eq!(r["body"]["error"], "validation_failed", "{r}");
            assert_eq!(r["body"]["errors"][0]["instance_path"], "/message_type", "{r}");
        }
    }
}

//! The documented systems' own protocols: the config service (Fix Inventory), Idem profiles,
//! Infrahub request/response.

use crate::support::{client, next_json, Server};
use eventyard::config::Config;
use serde_json::{json, Value};

/// A router whose durable state (log, dead letters, config documents) is in `dir`.
async fn server_on(dir: &std::path::Path) -> Server {
    let mut config = Config::default();
    config.store.dir = Some(dir.to_path_buf());
    Server::with_config(config).await
}

#[tokio::test]
async fn config_documents_are_revisioned_durable_and_announced() {
    let state = tempfile::tempdir().unwrap();
    let s = server_on(state.path()).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=fixinventory/config-*")).await.unwrap();
    let url = s.url("/v1/config/fix.core");

    // Create: 200 with the document and its revision (also the ETag), and an event.
    let res = client().put(&url).json(&json!({ "workers": 4 })).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let first: Value = res.json().await.unwrap();
    assert_eq!((first["id"].as_str(), &first["config"]), (Some("fix.core"), &json!({ "workers": 4 })));
    let rev1 = first["revision"].as_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{rev1}\""));
    let event = next_json(&mut ws).await;
    assert_eq!(event["type"], "fixinventory/config-updated");
    assert_eq!(
        event["data"],
        json!({ "kind": "event", "message_type": "config-updated", "data": { "id": "fix.core", "revision": rev1 } })
    );

    // Update naming the revision read: a new revision.
    let res = client().put(&url).header("if-match", &etag).json(&json!({ "workers": 8 })).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let rev2 = res.json::<Value>().await.unwrap()["revision"].as_str().unwrap().to_string();
    assert_ne!(rev1, rev2);
    assert_eq!(next_json(&mut ws).await["data"]["data"]["revision"], rev2);

    // A writer still holding the first revision is refused, and told the current one.
    let res = client().put(format!("{url}?revision={rev1}")).json(&json!({ "workers": 1 })).send().await.unwrap();
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["error"].as_str(), body["current_revision"].as_str()),
        (Some("stale_revision"), Some(rev2.as_str()))
    );

    // Bad input: clear errors, nothing stored.
    let bad = |res: reqwest::Response| async move {
        (res.status().as_u16(), res.json::<Value>().await.unwrap()["error"].clone())
    };
    assert_eq!(bad(client().put(&url).json(&json!([1, 2])).send().await.unwrap()).await, (400, json!("bad_request")));
    assert_eq!(
        bad(client().put(&url).header("content-type", "text/plain").body("x").send().await.unwrap()).await,
        (415, json!("unsupported_media_type"))
    );
    assert_eq!(
        bad(client().put(&url).header("content-type", "application/json").body("{").send().await.unwrap()).await,
        (400, json!("malformed_json"))
    );
    assert_eq!(bad(client().get(s.url("/v1/config/.hidden")).send().await.unwrap()).await, (400, json!("bad_request")));
    assert_eq!(bad(client().get(s.url("/v1/config/nope")).send().await.unwrap()).await, (404, json!("unknown_config")));
    drop(ws);
    drop(s);

    // A new router process on the same state: the document is there, at the same revision.
    let s = server_on(state.path()).await;
    let url = s.url("/v1/config/fix.core");
    let doc: Value = client().get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!((&doc["config"], doc["revision"].as_str()), (&json!({ "workers": 8 }), Some(rev2.as_str())));
    let ids: Value = client().get(s.url("/v1/config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ids, json!({ "count": 1, "ids": ["fix.core"] }));

    // Delete: a stale revision is refused; then 204, an event, and 404 after.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=fixinventory/config-deleted")).await.unwrap();
    assert_eq!(client().delete(format!("{url}?revision={rev1}")).send().await.unwrap().status(), 409);
    assert_eq!(client().delete(&url).header("if-match", format!("\"{rev2}\"")).send().await.unwrap().status(), 204);
    let event = next_json(&mut ws).await;
    assert_eq!(
        event["data"],
        json!({ "kind": "event", "message_type": "config-deleted", "data": { "id": "fix.core" } })
    );
    assert_eq!(client().get(&url).send().await.unwrap().status(), 404);
    assert_eq!(client().delete(&url).send().await.unwrap().status(), 404);
}

/// The first valid body of a type from the corpus.
fn corpus_body(family: &str, name: &str) -> Value {
    let path = crate::support::repo().join(format!("tests/corpus/{family}/{name}.json"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["valid"][0].clone()
}

#[tokio::test]
async fn idem_events_are_posted_by_profile_and_matched_by_profile_glob_or_regex() {
    // A route by profile regex: its handler (the hostile trap) fails only idem-low/high.
    let toml = format!(
        r#"
[[plugin]]
name = "boom"
component = "{}"
world = "handler"
config = {{ mode = "trap" }}
breaker = {{ failures = 0 }}

[[route]]
name = "low-high"
regex = "^idem-(low|high)$"
handlers = ["boom"]
retry = {{ max_attempts = 1 }}
"#,
        crate::support::guest("hostile")
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let (mut by_glob, _) = tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=idem-*")).await.unwrap();
    let (mut by_regex, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?regex=%5Eidem-(low%7Chigh)%24")).await.unwrap();

    // Posted with the profile alone as the type; other families keep needing theirs.
    let state_id = crate::support::post(&s, "idem-state", corpus_body("idem", "idem-state")).await;
    let low_id = crate::support::post(&s, "idem-low", corpus_body("idem", "idem-low")).await;
    let res = client().post(s.url("/v1/events/cleanup_plan")).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), 404, "bare names are for Idem profiles only");

    let mut seen = [next_json(&mut by_glob).await, next_json(&mut by_glob).await];
    seen.sort_by_key(|f| f["type"].as_str().unwrap().to_string());
    let seen: Vec<_> = seen.iter().map(|f| (f["type"].as_str().unwrap(), f["id"].as_str().unwrap())).collect();
    assert_eq!(seen, [("idem/idem-low", low_id.as_str()), ("idem/idem-state", state_id.as_str())]);
    let only = next_json(&mut by_regex).await;
    assert_eq!((only["type"].as_str(), only["id"].as_str()), (Some("idem/idem-low"), Some(low_id.as_str())));

    // The route matched the profile regex: idem-low went through (and trapped in) the
    // handler, idem-state did not.
    let letters = crate::support::dead_letters(&s, "?plugin=boom", 1).await;
    assert_eq!(letters[0]["event"]["id"], low_id);
    assert_eq!(crate::support::metric(&s, r#"eventyard_plugin_calls_total{plugin="boom"}"#).await, Some(1.0));

    // Both ways of choosing at once, or a bad regex: 400.
    for q in ["types=idem-*&regex=x", "regex=("] {
        let res = crate::support::ws_handshake(&s, &format!("/v1/subscribe?{q}")).await;
        assert_eq!(res.status(), 400, "{q}");
    }
}

/// `POST /v1/rpc/{type}` with `body`; the status and the JSON answer.
async fn rpc(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let res = client().post(s.url(&format!("/v1/rpc/{path}"))).json(&body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn infrahub_rpc_is_answered_by_the_echo_handler() {
    let s = Server::with_config(Config::embedded_default()).await;
    let (status, answer) = rpc(&s, "infrahub/send.echo.request", json!({ "message": "hi" })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["response"], "Reply to: hi");
    assert_eq!(answer["passed"], true);
    assert!(!answer["meta"]["correlation_id"].as_str().unwrap().is_empty(), "the router made a correlation id");

    // The caller's own correlation id is kept, and several calls wait side by side.
    let calls = (0..8).map(|i| {
        let s = &s;
        async move {
            let body = json!({ "message": format!("m{i}"), "meta": { "correlation_id": format!("c-{i}") } });
            rpc(s, "infrahub/send.echo.request", body).await
        }
    });
    for (i, (status, answer)) in futures_util::future::join_all(calls).await.into_iter().enumerate() {
        assert_eq!(status, 200);
        assert_eq!(
            (answer["meta"]["correlation_id"].as_str(), answer["data"]["response"].as_str()),
            (Some(format!("c-{i}").as_str()), Some(format!("Reply to: m{i}").as_str()))
        );
    }

    // Refused up front: a type with no response type, an unknown type, a bad timeout, a
    // request that fails its schema.
    let (status, v) = rpc(&s, "infrahub/check.generator.run", json!({})).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_request")));
    assert_eq!(rpc(&s, "infrahub/send.echo", json!({})).await.0, 404);
    assert_eq!(rpc(&s, "infrahub/send.echo.request?timeout=0", json!({ "message": "x" })).await.0, 400);
    let (status, v) = rpc(&s, "infrahub/send.echo.request", json!({ "message": 1 })).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("validation_failed")));
}

/// A router whose only route sends `infrahub/send.echo.request` to the hostile plugin in `mode`.
async fn hostile_echo(mode: &str, max_attempts: u32) -> Server {
    let toml = format!(
        r#"
[[plugin]]
name = "responder"
component = "{}"
world = "handler"
emits = ["infrahub/response/send.echo.request"]
config = {{ mode = "{mode}" }}
breaker = {{ failures = 0 }}

[[route]]
name = "echo"
match = "infrahub/send.echo.request"
handlers = ["responder"]
retry = {{ max_attempts = {max_attempts}, base_ms = 10, max_ms = 20 }}
"#,
        crate::support::guest("hostile")
    );
    Server::with_config(Config::parse(&toml).unwrap()).await
}

#[tokio::test]
async fn infrahub_rpc_retries_with_a_growing_retry_count_and_reports_failures() {
    // The handler answers only once meta.retry_count reached 2: the caller waits through
    // two retries and gets the answer.
    let s = hostile_echo("retry-count", 3).await;
    let (status, answer) = rpc(&s, "infrahub/send.echo.request", json!({ "message": "hi" })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["response"], "answered at retry_count 2");

    // Out of attempts: a response with passed = false and the handler's error.
    let s = hostile_echo("fail-retryable", 2).await;
    let (status, answer) =
        rpc(&s, "infrahub/send.echo.request", json!({ "message": "hi", "meta": { "correlation_id": "c-9" } })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["passed"].as_bool(), answer["meta"]["correlation_id"].as_str()), (Some(false), Some("c-9")));
    assert_eq!(answer["errors"], json!(["responder: handler_error: upstream busy"]));

    // Processed, but the handler emitted nothing: 502 naming the request.
    let s = hostile_echo("none", 1).await;
    let (status, v) = rpc(&s, "infrahub/send.echo.request", json!({ "message": "hi" })).await;
    assert_eq!((status, v["error"].as_str()), (502, Some("rpc_unanswered")), "{v}");
    assert!(v["id"].is_string());

    // Nothing routes the request at all: the wait ends at the timeout with 504.
    let s = Server::start().await;
    let (status, v) = rpc(&s, "infrahub/send.echo.request?timeout=0.2", json!({ "message": "hi" })).await;
    assert_eq!((status, v["error"].as_str()), (504, Some("rpc_timeout")), "{v}");
    let id = v["id"].as_str().unwrap();
    let accepted: Value = client().get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(accepted["id"], id, "the request itself was accepted");
}

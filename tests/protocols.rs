//! The documented systems' own protocols: the config service (Fix Inventory), Idem profiles.

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
        let res = client()
            .get(s.url(&format!("/v1/subscribe?{q}")))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{q}");
    }
}

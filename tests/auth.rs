//! Bearer tokens: admin endpoints, ingestion tokens limited to event types, the generated
//! admin token.

use crate::support::{Server, ADMIN_TOKEN};
use eventyard::config::Config;
use serde_json::{json, Value};

/// A client that sends `token` (or nothing).
fn with(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
    }
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

const PRODUCER: &str = "infrahub-producer-token-42";
const ECHO: &str = "/v1/events/infrahub/send.echo.request";

#[tokio::test]
async fn admin_endpoints_need_the_admin_token_and_ingest_tokens_are_limited_to_their_types() {
    let toml = format!("[[auth.ingest]]\ntoken = \"{PRODUCER}\"\ntypes = [\"infrahub/*\", \"idem-*\"]\n");
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let status = |res: reqwest::Response| async move {
        let code = res.status().as_u16();
        let auth = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
        (code, res.json::<Value>().await.map(|v| v["error"].clone()).unwrap_or_default(), auth)
    };

    // Admin endpoints: 401 without a token (saying how to authenticate), 403 with another.
    for (method, path) in [
        ("GET", "/v1/dead-letters"),
        ("GET", "/v1/plugins"),
        ("GET", "/v1/config"),
        ("POST", "/v1/workflows/collect/run"),
    ] {
        let req = |c: reqwest::Client| c.request(method.parse().unwrap(), s.url(path)).send();
        assert_eq!(
            status(req(with(None)).await.unwrap()).await,
            (401, json!("unauthorized"), Some("Bearer".into())),
            "{path}"
        );
        assert_eq!(status(req(with(Some(PRODUCER))).await.unwrap()).await.0, 403, "{path}");
        assert!(req(with(Some(ADMIN_TOKEN))).await.unwrap().status().is_success(), "{path}");
    }
    let put = with(None).put(s.url("/v1/config/x")).json(&json!({})).send().await.unwrap();
    assert_eq!(put.status(), 401);

    // Ingestion: the token is required and limits the types.
    let echo = json!({ "message": "hi" });
    assert_eq!(status(with(None).post(s.url(ECHO)).json(&echo).send().await.unwrap()).await.0, 401);
    assert_eq!(
        status(with(Some("not-a-known-token-at-all")).post(s.url(ECHO)).json(&echo).send().await.unwrap()).await.0,
        403
    );
    let ok = with(Some(PRODUCER)).post(s.url(ECHO)).json(&echo).send().await.unwrap();
    assert_eq!(ok.status(), 202);
    let collect = json!({ "kind": "event", "message_type": "collect", "data": {} });
    let (code, error, _) = status(
        with(Some(PRODUCER)).post(s.url("/v1/events/fixinventory/collect")).json(&collect).send().await.unwrap(),
    )
    .await;
    assert_eq!((code, error), (403, json!("forbidden_type")));
    // In a batch, the forbidden line fails alone.
    let batch = format!(
        "{}\n{}\n",
        json!({ "type": "infrahub/send.echo.request", "data": echo }),
        json!({ "type": "fixinventory/collect", "data": collect })
    );
    let res: Value = with(Some(PRODUCER))
        .post(s.url("/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<u64> = res["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [202, 403]);
    // Idem profiles by glob, and RPC, with the same token.
    let idem = json!({ "tags": { "ref": "x", "type": "state-low-data" }, "message": [], "run_name": "cli" });
    let res = with(Some(PRODUCER)).post(s.url("/v1/events/idem-low")).json(&idem).send().await.unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let rpc = with(None).post(s.url("/v1/rpc/infrahub/send.echo.request")).json(&echo).send().await.unwrap();
    assert_eq!(rpc.status(), 401);

    // Reading stays open: health, schemas, an event's status.
    for path in ["/healthz", "/v1/schemas", "/metrics"] {
        assert_eq!(with(None).get(s.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    let id = ok.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(with(None).get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn without_a_configured_admin_token_one_is_generated_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.store.dir = Some(dir.path().to_path_buf());
    let s = Server::with_state(eventyard::app::build(&config).await.unwrap()).await;
    let file = dir.path().join("admin-token");
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(token.len() >= 32);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "only the owner reads it");
    assert_eq!(with(Some(&token)).get(s.url("/v1/dead-letters")).send().await.unwrap().status(), 200);
    assert_eq!(with(Some(ADMIN_TOKEN)).get(s.url("/v1/dead-letters")).send().await.unwrap().status(), 403);
    drop(s);
    // The next start keeps it.
    let s = Server::with_state(eventyard::app::build(&config).await.unwrap()).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), token);
    assert_eq!(with(Some(&token)).get(s.url("/v1/dead-letters")).send().await.unwrap().status(), 200);
    // A short configured token is refused at start-up, naming the key.
    let err = Config::parse("[auth]\nadmin_token = \"short\"\n").unwrap_err().to_string();
    assert!(err.contains("auth.admin_token"), "{err}");
}

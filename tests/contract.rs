//! The API contract: `/openapi.json` describes every endpoint (the README's endpoints table
//! is compared with it, so neither can drift), every error is JSON with a stable code (bad
//! query strings, paths, methods and handshakes included), and schemathesis, run for real
//! with every check and phase, finds nothing.

use crate::support::{client, repo, text, Server};
use serde_json::Value;
use std::collections::BTreeSet;

/// `(METHOD, path)` pairs, paths as the README writes them (`/v1/events/{type}`).
type Endpoints = BTreeSet<(String, String)>;

/// The endpoints of the README's "HTTP API" table: the first cell of each row names them as
/// `` `GET /v1/config` ``, `` `GET/PUT/DELETE /v1/config/{id}` `` (query strings dropped).
fn readme_endpoints() -> Endpoints {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme.split("\n## HTTP API\n").nth(1).expect("README has an `## HTTP API` section");
    let table = section.split("\n#").next().unwrap();
    let cell = regex::Regex::new(r"`([A-Z]+(?:/[A-Z]+)*) (/[^`?\s]*)[^`]*`").unwrap();
    let mut out = Endpoints::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split(" | ").next().unwrap();
        for c in cell.captures_iter(first) {
            for method in c[1].split('/') {
                out.insert((method.to_string(), c[2].to_string()));
            }
        }
    }
    assert!(out.len() > 20, "the README's endpoints table was not found or not parsed: {out:?}");
    out
}

/// The endpoints of `/openapi.json`; a path standing for a template (one per event type)
/// counts as its template.
fn openapi_endpoints(doc: &Value) -> Endpoints {
    let mut out = Endpoints::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let path = op["x-path-template"].as_str().unwrap_or(path);
            out.insert((method.to_ascii_uppercase(), path.to_string()));
        }
    }
    out
}

async fn openapi(s: &Server) -> Value {
    client().get(s.url("/openapi.json")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn the_readme_endpoints_table_is_what_openapi_describes() {
    let s = Server::start().await;
    let (readme, api) = (readme_endpoints(), openapi_endpoints(&openapi(&s).await));
    let only_readme: Vec<_> = readme.difference(&api).collect();
    let only_api: Vec<_> = api.difference(&readme).collect();
    assert!(
        only_readme.is_empty() && only_api.is_empty(),
        "README.md's endpoints table and /openapi.json differ:\n  only in the README: {only_readme:?}\n  only in /openapi.json: {only_api:?}"
    );
}

#[tokio::test]
async fn each_event_type_has_its_ingestion_path_with_its_schema() {
    let s = Server::start().await;
    let doc = openapi(&s).await;
    let types: Value = client().get(s.url("/v1/schemas")).send().await.unwrap().json().await.unwrap();
    for t in types["types"].as_array().unwrap() {
        let name = t["type"].as_str().unwrap();
        let op = &doc["paths"][format!("/v1/events/{name}")]["post"];
        let schema = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        let component = schema.as_str().unwrap_or_else(|| panic!("{name}: no body schema")).rsplit('/').next().unwrap();
        let served: Value =
            client().get(s.url(&format!("/v1/schemas/{name}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            doc["components"]["schemas"][component]["properties"].as_object().map(|p| p.len()),
            served["properties"].as_object().map(|p| p.len()),
            "{name}"
        );
        for status in ["202", "400", "401", "403", "413", "415"] {
            assert!(op["responses"][status].is_object(), "{name}: {status} undocumented");
        }
    }
    // Every error answer refers to the one Error schema, and says its codes.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, r) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                    assert!(r["x-error-codes"].as_str().is_some_and(|c| !c.is_empty()), "{method} {path} {status}");
                }
            }
        }
    }
    // Every link (the stateful phase follows them) names an operation of the document.
    let ids: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values().map(|op| op["operationId"].as_str().unwrap()))
        .collect();
    for op in doc["paths"].as_object().unwrap().values().flat_map(|i| i.as_object().unwrap().values()) {
        for r in op["responses"].as_object().unwrap().values() {
            for link in r["links"].as_object().into_iter().flat_map(|l| l.values()) {
                assert!(ids.contains(link["operationId"].as_str().unwrap()), "{link}");
            }
        }
    }
    assert_eq!(doc["paths"]["/v1/plugins"]["get"]["security"], serde_json::json!([{ "admin": [] }]));
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], serde_json::json!([]));
}

/// `(status, error code, content type)` of a response; its body must be JSON.
async fn answer(res: reqwest::Response) -> (u16, String, String, reqwest::header::HeaderMap) {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let ct = headers.get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = res.text().await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{status} is not JSON: {body}"));
    (status, v["error"].as_str().unwrap_or_default().to_string(), ct, headers)
}

#[tokio::test]
async fn every_error_is_json_with_a_stable_code() {
    let s = Server::start().await;
    let c = client();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        // A query string that does not deserialise: it used to be axum's text/plain.
        (
            c.post(s.url("/v1/rpc/infrahub/send.echo.request?timeout=soon")).json(&serde_json::json!({})),
            400,
            "invalid_query",
        ),
        (c.get(s.url("/v1/dead-letters?since=yesterday")), 400, "invalid_query"),
        (c.get(s.url("/v1/dead-letters?colour=red")), 400, "invalid_query"),
        (c.post(s.url("/subscriber/w1/collect?timeout=-1")), 400, "invalid_query"),
        // A path segment that is not UTF-8.
        (c.get(s.url("/v1/tasks/%FF")), 400, "invalid_path"),
        (c.get(s.url("/nowhere")), 404, "not_found"),
        (c.patch(s.url("/v1/tasks")), 405, "method_not_allowed"),
        // A plain GET on a WebSocket endpoint.
        (c.get(s.url("/v1/subscribe")), 426, "websocket_required"),
        (c.get(s.url("/events")), 426, "websocket_required"),
        // An upload that is not multipart.
        (c.put(s.url("/v1/plugins/p")).body("x"), 400, "bad_request"),
        // A CloudEvent attribute of the wrong JSON type.
        (
            c.post(s.url("/v1/events"))
                .header("content-type", "application/cloudevents+json")
                .body(r#"{"specversion":"1.0","id":"1","source":"s","type":"idem/idem-status","time":{},"data":{}}"#),
            400,
            "invalid_cloudevent",
        ),
    ];
    for (request, status, code) in cases {
        let (got, error, ct, _) = answer(request.send().await.unwrap()).await;
        assert_eq!((got, error.as_str(), ct.as_str()), (status, code, "application/json"));
    }
}

#[tokio::test]
async fn a_405_allows_only_what_the_path_serves() {
    let s = Server::start().await;
    let c = client();
    // `/v1/events/{*rest}` is one route for ingestion (POST, on a type's name) and status
    // (GET, on an id): each path allows its own.
    for (method, path, allow) in [
        (reqwest::Method::OPTIONS, "/v1/events/idem/idem-state", "POST"),
        (reqwest::Method::GET, "/v1/events/idem/idem-state", "POST"),
        (reqwest::Method::DELETE, "/v1/events/idem%2Fidem-state", "POST"),
        (reqwest::Method::PUT, "/v1/events/01a21927-a520-7635-9ded-844ad204b397", "GET,HEAD"),
        (reqwest::Method::GET, "/v1/dead-letters/replay", "POST"),
        (reqwest::Method::POST, "/v1/config/x", "GET,PUT,DELETE,HEAD"),
    ] {
        let (status, error, _, headers) = answer(c.request(method.clone(), s.url(path)).send().await.unwrap()).await;
        assert_eq!((status, error.as_str()), (405, "method_not_allowed"), "{method} {path}");
        let mut got: Vec<&str> = headers["allow"].to_str().unwrap().split(',').collect();
        let mut want: Vec<&str> = allow.split(',').collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{method} {path}");
    }
}

/// schemathesis (PyPI) with `--checks all` against a real router, every phase (examples,
/// coverage, fuzzing, stateful), a few examples per operation so that it stays short:
/// `bash scripts/schemathesis.sh` is the full run. The script installs schemathesis into
/// `target/schemathesis-venv` when missing.
#[test]
fn schemathesis_finds_nothing() {
    /// Examples per operation and phase: enough to send every operation valid and invalid
    /// requests, few enough for about a minute on CI's two cores.
    const EXAMPLES: &str = "2";
    /// The ingestion and RPC paths of three event types (one per family) stand for the
    /// other 50: they are made by one function from the catalogue, and their bodies are
    /// checked with the very schema they document. The coverage phase is most of the time
    /// (about a minute for the remaining 35 operations on two cores); the full run
    /// (`bash scripts/schemathesis.sh`) takes every path.
    const SAMPLED: &str =
        r"^/v1/(events|rpc)/(?!idem/idem-state$|infrahub/send\.echo\.request$|fixinventory/cleanup_plan$)[a-z]+/";
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/schemathesis.sh"))
        .args(["--max-examples", EXAMPLES, "--seed", "1", "--exclude-path-regex", SAMPLED])
        .env("EVENTYARD_BIN", env!("CARGO_BIN_EXE_eventyard"))
        .output()
        .expect("run scripts/schemathesis.sh");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "schemathesis found something:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("Stateful"), "the stateful phase did not run:\n{stdout}");
}

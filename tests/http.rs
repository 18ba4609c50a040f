//! The HTTP API over real sockets: every status code, CloudEvents modes, NDJSON.

use crate::support::{client, Server};
use eventyard::config::Config;
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

const ECHO_TYPE: &str = "infrahub/send.echo.request";

fn echo() -> Value {
    json!({ "meta": { "priority": 5 }, "message": "ping" })
}

async fn post_raw(server: &Server, path: &str, ct: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut req = client().post(server.url(path)).body(body);
    if let Some(ct) = ct {
        req = req.header(CONTENT_TYPE, ct);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn native_event_is_accepted_with_a_uuidv7() {
    let s = Server::start().await;
    let (status, v) =
        post_raw(&s, &format!("/v1/events/{ECHO_TYPE}"), Some("application/json"), echo().to_string()).await;
    assert_eq!(status, 202);
    let id = uuid::Uuid::parse_str(v["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);
}

#[tokio::test]
async fn unknown_type_is_404_with_suggestions() {
    let s = Server::start().await;
    let (status, v) = post_raw(&s, "/v1/events/infrahub/send.echo", Some("application/json"), "{}").await;
    assert_eq!(status, 404);
    assert_eq!(v["error"], "unknown_event_type");
    assert_eq!(v["type"], "infrahub/send.echo");
    assert!(v["did_you_mean"].as_array().unwrap().contains(&json!(ECHO_TYPE)));
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let s = Server::start().await;
    let path = format!("/v1/events/{ECHO_TYPE}");
    let (status, v) = post_raw(&s, &path, Some("text/plain"), echo().to_string()).await;
    assert_eq!((status, v["error"].as_str()), (415, Some("unsupported_media_type")));
    let (status, _) = post_raw(&s, &path, None, echo().to_string()).await;
    assert_eq!(status, 415);
    let (status, _) = post_raw(&s, &path, Some("application/vnd.acme+json; charset=utf-8"), echo().to_string()).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn malformed_json_is_400_with_line_and_column() {
    let s = Server::start().await;
    let (status, v) = post_raw(
        &s,
        &format!("/v1/events/{ECHO_TYPE}"),
        Some("application/json"),
        "{\n  \"message\": \"a\",\n  oops\n}",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"], "malformed_json");
    assert_eq!((v["line"].as_u64(), v["column"].as_u64()), (Some(3), Some(3)));
}

#[tokio::test]
async fn oversized_body_is_413_with_or_without_content_length() {
    let mut config = Config::default();
    config.ingest.max_body_bytes = 1024;
    let s = Server::with_config(config).await;
    let big = json!({ "meta": {}, "message": "x".repeat(2000) }).to_string();
    let path = format!("/v1/events/{ECHO_TYPE}");
    let (status, v) = post_raw(&s, &path, Some("application/json"), big.clone()).await;
    assert_eq!(status, 413);
    assert_eq!(v["error"], "payload_too_large");
    assert_eq!(v["limit_bytes"], 1024);
    // Chunked: no Content-Length, the limit still holds while reading.
    let chunks: Vec<Result<String, std::io::Error>> =
        big.as_bytes().chunks(100).map(|c| Ok(String::from_utf8(c.to_vec()).unwrap())).collect();
    let stream = futures_util::stream::iter(chunks);
    let (status, v) = post_raw(&s, &path, Some("application/json"), reqwest::Body::wrap_stream(stream)).await;
    assert_eq!((status, v["error"].as_str()), (413, Some("payload_too_large")));
    // Just under the limit is fine.
    let (status, _) = post_raw(&s, &path, Some("application/json"), echo().to_string()).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn schemas_are_listed_and_served() {
    let s = Server::start().await;
    let v: Value = client().get(s.url("/v1/schemas")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["count"], 43);
    let echo_entry = v["types"].as_array().unwrap().iter().find(|t| t["type"] == ECHO_TYPE).unwrap();
    assert_eq!(echo_entry["priority"], 5);
    let res = client().get(s.url("/v1/schemas/infrahub/response/git.file.get")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let schema: Value = res.json().await.unwrap();
    assert_eq!(schema["title"], "infrahub/response/git.file.get");
    let res = client().get(s.url("/v1/schemas/nope/nothing")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "unknown_event_type");
}

#[tokio::test]
async fn health_metrics_openapi_and_json_404_405() {
    let s = Server::start().await;
    let v: Value = client().get(s.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!((v["status"].as_str(), v["event_types"].as_u64()), (Some("ok"), Some(43)));
    post_raw(&s, &format!("/v1/events/{ECHO_TYPE}"), Some("application/json"), echo().to_string()).await;
    post_raw(&s, &format!("/v1/events/{ECHO_TYPE}"), Some("application/json"), "{}").await;
    let m = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("eventyard_events_accepted_total 1\n"), "{m}");
    assert!(m.contains("eventyard_events_rejected_total{error=\"validation_failed\"} 1\n"), "{m}");
    let api: Value = client().get(s.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(api["openapi"], "3.1.0");
    let res = client().get(s.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "not_found");
    let res = client().delete(s.url("/v1/schemas")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "method_not_allowed");
}

#[tokio::test]
async fn unknown_fields_can_be_allowed_per_type() {
    let mut config = Config::default();
    config.schemas.allow_unknown_fields = vec!["infrahub/send.*".into()];
    let s = Server::with_config(config).await;
    let mut ev = echo();
    ev["tenant"] = json!("acme");
    ev["meta"]["trace"] = json!("t");
    let (status, v) = post_raw(&s, &format!("/v1/events/{ECHO_TYPE}"), Some("application/json"), ev.to_string()).await;
    assert_eq!(status, 202, "{v}");
    // Typed fields are still checked, and other types stay strict.
    ev["message"] = json!(1);
    let (status, _) = post_raw(&s, &format!("/v1/events/{ECHO_TYPE}"), Some("application/json"), ev.to_string()).await;
    assert_eq!(status, 400);
    let (status, _) =
        post_raw(&s, "/v1/events/infrahub/refresh.registry.branches", Some("application/json"), r#"{"x":1}"#).await;
    assert_eq!(status, 400);
}

fn cloudevent(id: &str) -> Value {
    json!({ "specversion": "1.0", "id": id, "source": "urn:test", "type": ECHO_TYPE, "time": "2026-11-23T10:00:00Z", "data": echo() })
}

#[tokio::test]
async fn cloudevents_structured_mode_keeps_the_producer_id() {
    let s = Server::start().await;
    let (status, v) =
        post_raw(&s, "/v1/events", Some("application/cloudevents+json"), cloudevent("ce-1").to_string()).await;
    assert_eq!((status, v["id"].as_str()), (202, Some("ce-1")));
    let mut bad = cloudevent("ce-2");
    bad["data"]["message"] = json!(3);
    let (status, v) = post_raw(&s, "/v1/events", Some("application/cloudevents+json"), bad.to_string()).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("validation_failed")));
    assert_eq!(v["errors"][0]["instance_path"], "/message");
}

#[tokio::test]
async fn cloudevents_missing_attributes_are_named() {
    let s = Server::start().await;
    let ev = json!({ "specversion": "1.0", "type": ECHO_TYPE, "data": echo() });
    let (status, v) = post_raw(&s, "/v1/events", Some("application/cloudevents+json"), ev.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"], "invalid_cloudevent");
    assert_eq!(v["missing"], json!(["id", "source"]));
    let mut old = cloudevent("x");
    old["specversion"] = json!("0.3");
    let (status, v) = post_raw(&s, "/v1/events", Some("application/cloudevents+json"), old.to_string()).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_cloudevent")));
    let mut b64 = cloudevent("x");
    b64.as_object_mut().unwrap().remove("data");
    b64["data_base64"] = json!("e30=");
    let (status, _) = post_raw(&s, "/v1/events", Some("application/cloudevents+json"), b64.to_string()).await;
    assert_eq!(status, 415);
    let mut bad_time = cloudevent("x");
    bad_time["time"] = json!("yesterday");
    let (status, v) = post_raw(&s, "/v1/events", Some("application/cloudevents+json"), bad_time.to_string()).await;
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().contains("RFC 3339"));
}

#[tokio::test]
async fn cloudevents_binary_mode() {
    let s = Server::start().await;
    let send = |headers: Vec<(&'static str, &'static str)>| {
        let mut req =
            client().post(s.url("/v1/events")).header(CONTENT_TYPE, "application/json").body(echo().to_string());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let res = send(vec![("ce-specversion", "1.0"), ("ce-id", "bin-1"), ("ce-source", "urn:x"), ("ce-type", ECHO_TYPE)])
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], "bin-1");
    let res = send(vec![("ce-specversion", "1.0"), ("ce-type", ECHO_TYPE)]).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["missing"], json!(["id", "source"]));
    // No CloudEvents headers and a plain JSON body: not something /v1/events understands.
    let res =
        client().post(s.url("/v1/events")).header(CONTENT_TYPE, "application/json").body("{}").send().await.unwrap();
    assert_eq!(res.status(), 415);
}

#[tokio::test]
async fn cloudevents_batch_answers_per_event() {
    let s = Server::start().await;
    let mut bad = cloudevent("b-2");
    bad["data"]["meta"]["priority"] = json!(0);
    let unknown = json!({ "specversion": "1.0", "id": "b-3", "source": "urn:x", "type": "infrahub/nope", "data": {} });
    let batch = json!([cloudevent("b-1"), bad, unknown, { "id": "b-4" }]);
    let (status, v) = post_raw(&s, "/v1/events", Some("application/cloudevents-batch+json"), batch.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!((v["accepted"].as_u64(), v["rejected"].as_u64()), (Some(1), Some(3)));
    let r = v["results"].as_array().unwrap();
    assert_eq!(r[0], json!({ "index": 0, "status": 202, "id": "b-1" }));
    assert_eq!((r[1]["status"].as_u64(), r[1]["error"].as_str()), (Some(400), Some("validation_failed")));
    assert_eq!(r[1]["errors"][0]["instance_path"], "/meta/priority");
    assert_eq!((r[2]["status"].as_u64(), r[2]["error"].as_str()), (Some(404), Some("unknown_event_type")));
    assert_eq!(r[3]["missing"], json!(["specversion", "source", "type"]));
    let (status, v) = post_raw(&s, "/v1/events", Some("application/cloudevents-batch+json"), "{}").await;
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_request")));
}

#[tokio::test]
async fn ndjson_batch_answers_per_line() {
    let s = Server::start().await;
    let body = [
        json!({ "type": ECHO_TYPE, "data": echo() }).to_string(),
        String::new(),
        json!({ "type": ECHO_TYPE, "data": { "message": 1 } }).to_string(),
        "{not json".to_string(),
        json!({ "type": "fixinventory/collect", "data": { "kind": "event", "message_type": "collect", "data": {} }, "id": "mine" }).to_string(),
        json!({ "data": {} }).to_string(),
    ]
    .join("\n");
    let (status, v) = post_raw(&s, "/v1/events", Some("application/x-ndjson"), body).await;
    assert_eq!(status, 200);
    assert_eq!((v["accepted"].as_u64(), v["rejected"].as_u64()), (Some(2), Some(3)));
    let r = v["results"].as_array().unwrap();
    let lines: Vec<u64> = r.iter().map(|x| x["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 3, 4, 5, 6]);
    assert_eq!(r[0]["status"], 202);
    assert_eq!(
        (r[1]["error"].as_str(), r[1]["errors"][0]["instance_path"].as_str()),
        (Some("validation_failed"), Some("/message"))
    );
    assert_eq!((r[2]["error"].as_str(), r[2]["column"].as_u64()), (Some("malformed_json"), Some(2)));
    assert_eq!(r[3], json!({ "line": 5, "status": 202, "id": "mine" }));
    assert_eq!(r[4]["error"], "invalid_batch_line");
}

#[tokio::test]
async fn resoto_alias_is_accepted() {
    let s = Server::start().await;
    let ev = json!({ "kind": "action", "message_type": "collect", "data": { "task": "t", "step": "collect" } });
    let (status, _) = post_raw(&s, "/v1/events/resoto/collect", Some("application/json"), ev.to_string()).await;
    assert_eq!(status, 202);
}

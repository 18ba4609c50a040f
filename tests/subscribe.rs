//! `GET /v1/subscribe`: real WebSocket clients.

use crate::support::{client, next_json, post, Server};
use eventyard::config::Config;
use serde_json::{json, Value};

#[tokio::test]
async fn subscriber_gets_matching_events_only() {
    let s = Server::start().await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/send.*,idem/*")).await.unwrap();
    post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} })).await;
    let id = post(&s, "infrahub/send.echo.request", json!({ "meta": { "priority": 2 }, "message": "hi" })).await;
    let idem = json!({ "tags": { "ref": "r", "type": "state-status" }, "message": "RUNNING", "run_name": "x" });
    let id2 = post(&s, "idem/idem-status", idem.clone()).await;
    let f = next_json(&mut ws).await;
    assert_eq!(f["id"], id.as_str());
    assert_eq!(f["type"], "infrahub/send.echo.request");
    assert_eq!(f["priority"], 2, "the event's own meta.priority wins over x-priority 5");
    assert_eq!(f["data"]["message"], "hi");
    assert!(time::OffsetDateTime::parse(f["time"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
        .is_ok());
    let f = next_json(&mut ws).await;
    assert_eq!((f["id"].as_str(), f["priority"].as_u64()), (Some(id2.as_str()), Some(3)));
    assert_eq!(f["data"], idem);
}

#[tokio::test]
async fn slow_subscriber_is_told_what_it_missed_and_never_blocks_ingestion() {
    let mut config = Config::default();
    config.subscribers.buffer = 8;
    let s = Server::with_config(config).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe")).await.unwrap();
    // The client reads nothing while 16 MB of events go in (more than the kernel's socket
    // buffers hold, so the server side really falls behind); every one is still accepted.
    let pad = "x".repeat(40_000);
    for i in 0..400 {
        post(&s, "infrahub/send.echo.request", json!({ "message": format!("m{i}"), "meta": { "request_id": pad } }))
            .await;
    }
    let mut lagged = 0;
    let mut last = String::new();
    while last != "m399" {
        let f = next_json(&mut ws).await;
        if f["error"] == "lagged" {
            lagged += f["missed"].as_u64().unwrap();
        } else {
            last = f["data"]["message"].as_str().unwrap().to_string();
        }
    }
    assert!(lagged > 0, "a subscriber 400 large events behind with a buffer of 8 must have missed some");
    let m = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains(&format!("eventyard_subscriber_frames_lagged_total {lagged}\n")), "{m}");
}

#[tokio::test]
async fn bad_glob_is_400() {
    let s = Server::start().await;
    let res = crate::support::ws_handshake(&s, "/v1/subscribe?types=[").await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "bad_request");
}

#[tokio::test]
async fn subscribers_get_the_producers_text_on_one_line() {
    use futures_util::StreamExt;
    let s = Server::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe")).await.unwrap();
    // Validated in place and kept as written: key order (not sorted) and all.
    let compact = r#"{"message":"first","meta":{"priority":4,"correlation_id":"c-1"}}"#;
    let pretty = "{\n  \"message\": \"second\",\n  \"meta\": { \"priority\": 2 }\n}";
    for body in [compact, pretty] {
        let res = client()
            .post(s.url("/v1/events/infrahub/send.echo.request"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let msg = ws.next().await.unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            frames.push(t.to_string());
        }
    }
    assert!(frames[0].contains(&format!(r#""data":{compact}"#)), "{}", frames[0]);
    assert!(!frames[1].contains('\n'), "one frame, one line: {}", frames[1]);
    let second: Value = serde_json::from_str(&frames[1]).unwrap();
    assert_eq!((second["data"]["message"].as_str(), second["priority"].as_u64()), (Some("second"), Some(2)));
    let first: Value = serde_json::from_str(&frames[0]).unwrap();
    assert_eq!(first["priority"], 4, "meta.priority read in place");
}

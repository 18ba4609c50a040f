//! Plugins written in other languages than Rust, built from `guest-examples/` by their
//! documented commands and run through the router.

use crate::support::{client, guest, lang_guest, metric, next_json, post, Server};
use eventyard::config::Config;
use serde_json::{json, Value};

/// An Idem post-state body; `result` says whether the state succeeded.
fn post_state(result: bool) -> Value {
    json!({
        "message": { "changes": { "old": [], "new": [] }, "comment": "", "name": "web", "result": result },
        "run_name": "cli",
        "tags": { "ref": "states.aws.ec2.instance.present", "type": "state-post" }
    })
}

/// Waits until `GET /v1/events/{id}` says the event is finished.
async fn finished(s: &Server, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v: Value = client().get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().json().await.unwrap();
        if v["state"] == "processed" || v["state"] == "dead_lettered" {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{id} not finished: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_idem_state_filter_keeps_failed_states_only() {
    let toml = format!(
        r#"
[[plugin]]
name = "failed-states"
component = "{}"
world = "filter"
limits = {{ memory_bytes = 134217728, deadline_ms = 1000 }}

[[plugin]]
name = "sink"
component = "{}"
world = "handler"

[[route]]
name = "idem-state"
match = "idem-state"
filters = ["failed-states"]
handlers = ["sink"]
"#,
        lang_guest("python", "idem-state-filter"),
        guest("hostile"),
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let ok = post(&s, "idem-state", post_state(true)).await;
    let failed = post(&s, "idem-state", post_state(false)).await;
    let ok = finished(&s, &ok).await;
    assert_eq!(ok["dropped"], json!([["failed-states", "state states.aws.ec2.instance.present succeeded"]]));
    let failed = finished(&s, &failed).await;
    assert!(failed["dropped"].is_null(), "kept: {failed}");
    assert_eq!(
        metric(&s, r#"eventyard_plugin_calls_total{plugin="sink"}"#).await,
        Some(1.0),
        "only the failed state got through"
    );
    assert_eq!(metric(&s, r#"eventyard_plugin_calls_total{plugin="failed-states"}"#).await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_echo_answers_like_the_rust_one() {
    let toml = format!(
        r#"
[[plugin]]
name = "echo-js"
component = "{}"
world = "handler"
emits = ["infrahub/response/send.echo.request"]
limits = {{ memory_bytes = 134217728, deadline_ms = 1000 }}

[[route]]
name = "echo"
match = "infrahub/send.echo.request"
handlers = ["echo-js"]
"#,
        lang_guest("js", "echo"),
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/response/*")).await.unwrap();
    post(&s, "infrahub/send.echo.request", json!({ "message": "hi", "meta": { "correlation_id": "c-js" } })).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["data"]["data"]["response"], "Reply to: hi");
    assert_eq!(reply["data"]["meta"]["correlation_id"], "c-js");
    // The same through Infrahub RPC.
    let answer: Value = client()
        .post(s.url("/v1/rpc/infrahub/send.echo.request"))
        .json(&json!({ "message": "rpc" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["data"]["response"], "Reply to: rpc");
    assert_eq!(metric(&s, r#"eventyard_plugin_calls_total{plugin="echo-js"}"#).await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_priority_filter_drops_events_outside_its_range() {
    let toml = format!(
        r#"
[[plugin]]
name = "priority-c"
component = "{}"
world = "filter"
config = {{ min_priority = 4 }}

[[plugin]]
name = "sink"
component = "{}"
world = "handler"

[[route]]
name = "urgent"
match = "infrahub/send.echo.request"
filters = ["priority-c"]
handlers = ["sink"]
"#,
        lang_guest("c", "priority-filter"),
        guest("hostile"),
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let low = post(&s, "infrahub/send.echo.request", json!({ "message": "low", "meta": { "priority": 2 } })).await;
    let high = post(&s, "infrahub/send.echo.request", json!({ "message": "high", "meta": { "priority": 5 } })).await;
    assert_eq!(finished(&s, &low).await["dropped"], json!([["priority-c", "priority 2 is outside 4..5"]]));
    assert!(finished(&s, &high).await["dropped"].is_null());
    assert_eq!(metric(&s, r#"eventyard_plugin_calls_total{plugin="sink"}"#).await, Some(1.0));
}

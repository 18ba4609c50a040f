//! The router's own limits, attacked for real: the work one ingested event may cause (a
//! plugin fanning out through its own route), config values that would overflow the time
//! and count arithmetic, RPC callers that disconnect or forge answers, and idempotency keys
//! (per producer, length-capped at every door, kept for the whole window, across restarts).

use crate::support::{
    client, dead_letters, eventyard, guest, metric, next_json, post, repo, text, wait_metric, Server,
};
use eventyard::config::Config;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn collect() -> Value {
    json!({ "kind": "event", "message_type": "collect", "data": {} })
}

/// A router where the hostile `fan-out` handler answers every `fixinventory/collect` with 4
/// copies of it, routed back to itself (4^8 calls within the hop limit), next to the echo
/// handler; `budget` is the `[pipeline] root_budget` table.
async fn fan_out(budget: &str) -> Server {
    let toml = format!(
        r#"
        [pipeline]
        hop_limit = 8
        root_budget = {budget}

        [[plugin]]
        name = "fanout"
        component = "{hostile}"
        world = "handler"
        emits = ["fixinventory/collect"]
        config = {{ mode = "fan-out", n = 4 }}
        breaker = {{ failures = 0 }}

        [[plugin]]
        name = "echo"
        component = "{echo}"
        world = "handler"
        emits = ["infrahub/response/send.echo.request"]

        [[route]]
        name = "fan"
        match = "fixinventory/collect"
        handlers = ["fanout"]
        retry = {{ max_attempts = 1 }}

        [[route]]
        match = "infrahub/send.echo.request"
        handlers = ["echo"]
        "#,
        hostile = guest("hostile"),
        echo = guest("echo"),
    );
    Server::with_config(Config::parse(&toml).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_plugin_is_stopped_by_the_root_budget_and_the_router_serves_on() {
    // (budget, the limit the dead letter names, calls made at most: each emitted event that
    // fits the budget is handled once, after the first call)
    let copies = 1000 / collect().to_string().len();
    let cases = [
        ("{ calls = 40 }", "40 plugin calls", 40.0),
        ("{ emits = 30 }", "30 emitted events", 31.0),
        ("{ bytes = 1000 }", "1000 bytes of emitted events", (copies + 1) as f64),
    ];
    for (budget, limit, max_calls) in cases {
        let s = fan_out(budget).await;
        let root = post(&s, "fixinventory/collect", collect()).await;
        let letters = dead_letters(&s, "?kind=root_budget", 1).await;
        assert_eq!(letters.len(), 1, "{budget}: {letters:#?}");
        let letter = &letters[0];
        assert_eq!((letter["event"]["id"].as_str(), letter["plugin"].as_str()), (Some(root.as_str()), Some("fanout")));
        let message = letter["message"].as_str().unwrap();
        assert!(message.contains(limit) && message.contains("pipeline.root_budget"), "{message}");

        // The root's status says why; the work stopped at the budget.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            let st: Value =
                client().get(s.url(&format!("/v1/events/{root}"))).send().await.unwrap().json().await.unwrap();
            if st["state"] == "dead_lettered" || std::time::Instant::now() > deadline {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status["state"], "dead_lettered", "{status}");
        assert!(status["failed"].as_array().unwrap().iter().any(|f| f["kind"] == "root_budget"), "{status}");
        let calls = metric(&s, r#"eventyard_plugin_calls_total{plugin="fanout"}"#).await.unwrap();
        assert!(calls <= max_calls, "{budget}: {calls} calls (4^8 = 65536 without a budget)");
        assert_eq!(metric(&s, "eventyard_events_over_budget_total").await, Some(1.0));

        // Everyone else is still served.
        let (mut ws, _) =
            tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/response/*")).await.unwrap();
        for i in 0..5 {
            post(&s, "infrahub/send.echo.request", json!({ "message": format!("good-{i}") })).await;
            assert_eq!(next_json(&mut ws).await["data"]["data"]["response"], format!("Reply to: good-{i}"));
        }
        // And the calls stay where the budget stopped them.
        let after = metric(&s, r#"eventyard_plugin_calls_total{plugin="fanout"}"#).await.unwrap();
        assert_eq!(after, calls, "{budget}: no work of the root went on");
    }
}

#[test]
fn serve_refuses_config_values_that_would_overflow_naming_the_field() {
    let plugin = "[[plugin]]\nname = \"echo\"\ncomponent = \"builtin:echo\"\nworld = \"handler\"\n";
    let route = "[[route]]\nmatch = \"infrahub/send.echo.request\"\nhandlers = [\"echo\"]\n";
    let big = i64::MAX; // the largest TOML integer
    let cases: Vec<(String, &str)> = vec![
        ("[pipeline]\nhop_limit = 255\n".into(), "pipeline.hop_limit"),
        ("[pipeline]\nroot_budget = { calls = 0 }\n".into(), "pipeline.root_budget.calls"),
        (format!("[ingest]\nidempotency_window_secs = {big}\n"), "ingest.idempotency_window_secs"),
        (format!("[store]\ngroup_window_us = {big}\n"), "store.group_window_us"),
        (
            format!("[[workflow]]\nname = \"collect\"\nstep_timeout_secs = {big}\n"),
            "workflow[0] (collect).step_timeout_secs",
        ),
        (format!("{plugin}limits = {{ deadline_ms = {big} }}\n"), "plugin[0] (echo).limits.deadline_ms"),
        (format!("{plugin}breaker = {{ cool_down_ms = {big} }}\n"), "plugin[0] (echo).breaker.cool_down_ms"),
        (format!("{plugin}{route}retry = {{ max_ms = {big} }}\n"), "route[0].retry.max_ms"),
        (format!("{plugin}{route}retry = {{ base_ms = {big}, max_ms = {big} }}\n"), "route[0].retry.base_ms"),
        (format!("{plugin}{route}retry = {{ max_attempts = 4294967295 }}\n"), "route[0].retry.max_attempts"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (toml, field) in cases {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, format!("listen = \"127.0.0.1:0\"\n{toml}")).unwrap();
        let out = eventyard(&["serve", "--config", cfg.to_str().unwrap()], &repo(), None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(&format!("{field}: ")), "{toml}: {err}");
    }
}

/// An Infrahub echo response for `correlation_id`.
fn response(correlation_id: &str, text: &str) -> Value {
    json!({
        "meta": { "correlation_id": correlation_id },
        "data": { "response": text },
        "errors": [],
        "passed": true,
    })
}

#[tokio::test]
async fn an_rpc_caller_that_disconnects_leaves_no_waiter_and_producers_cannot_answer() {
    // No route: a request waits until its timeout, or its caller goes.
    let s = Server::start().await;
    let body = json!({ "message": "hello", "meta": { "correlation_id": "c-gone" } }).to_string();
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let request = format!(
        "POST /v1/rpc/infrahub/send.echo.request?timeout=300 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    wait_metric(&s, "eventyard_rpc_waiters", 1.0).await;

    // An open-ingestion producer posts the response: accepted as an event, answers nobody.
    post(&s, "infrahub/response/send.echo.request", response("c-gone", "forged")).await;
    assert_eq!(metric(&s, "eventyard_rpc_waiters").await, Some(1.0), "a producer's response resolved the waiter");

    drop(conn);
    wait_metric(&s, "eventyard_rpc_waiters", 0.0).await;

    // Correlation ids are capped like event ids.
    let long = json!({ "message": "x", "meta": { "correlation_id": "c".repeat(10_000) } });
    let res = client().post(s.url("/v1/rpc/infrahub/send.echo.request")).json(&long).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    assert_eq!((v["error"].as_str(), v["field"].as_str()), (Some("id_too_long"), Some("meta.correlation_id")));
    assert_eq!(metric(&s, "eventyard_rpc_waiters").await, Some(0.0));
}

#[tokio::test]
async fn only_a_token_granted_the_response_type_answers_an_rpc_caller() {
    const CALLER: &str = "caller-token-0123456789";
    const GRANTED: &str = "granted-token-0123456789";
    let toml = format!(
        r#"
        [[auth.ingest]]
        token = "{CALLER}"
        types = ["infrahub/*"]

        [[auth.ingest]]
        token = "{GRANTED}"
        types = ["infrahub/*"]
        answers = ["infrahub/response/send.echo.request"]
        "#
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let as_token = |token: &str, path: &str, body: &Value| {
        reqwest::Client::new().post(s.url(path)).bearer_auth(token).json(body).send()
    };
    let request = json!({ "message": "hi", "meta": { "correlation_id": "c-1" } });
    let call = tokio::spawn(as_token(CALLER, "/v1/rpc/infrahub/send.echo.request?timeout=60", &request));
    wait_metric(&s, "eventyard_rpc_waiters", 1.0).await;

    // A token that may send responses but was not granted to answer: accepted, answers nobody.
    let forged = as_token(CALLER, "/v1/events/infrahub/response/send.echo.request", &response("c-1", "forged"));
    assert_eq!(forged.await.unwrap().status(), 202);
    assert_eq!(metric(&s, "eventyard_rpc_waiters").await, Some(1.0), "an ungranted producer answered");

    let real = as_token(GRANTED, "/v1/events/infrahub/response/send.echo.request", &response("c-1", "granted"));
    assert_eq!(real.await.unwrap().status(), 202);
    let answer = call.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    let v: Value = answer.json().await.unwrap();
    assert_eq!(v["data"]["response"], "granted");
    assert_eq!(metric(&s, "eventyard_rpc_waiters").await, Some(0.0));
}

#[test]
fn answers_must_name_response_types() {
    let toml = "[[auth.ingest]]\ntoken = \"some-token-0123456789\"\ntypes = [\"*\"]\nanswers = [\"infrahub/*\"]\n";
    let err = Config::parse(toml).unwrap_err().to_string();
    assert!(err.starts_with("auth.ingest[0].answers:"), "{err}");
}

/// A structured CloudEvent of an unrouted type from `source` with `id`.
fn cloudevent(source: &str, id: &str) -> Value {
    json!({ "specversion": "1.0", "id": id, "source": source, "type": "infrahub/send.echo.request",
            "time": "2001-01-01T00:00:00Z", "data": { "message": format!("from {source}") } })
}

async fn post_cloudevent(s: &Server, event: &Value) -> (u16, Value) {
    let res = client()
        .post(s.url("/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .json(event)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_is_per_producer_and_ids_are_capped_at_every_door() {
    let log = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = Config::default();
        c.store.dir = Some(log.path().to_path_buf());
        c
    };
    let first_ids = {
        let s = Server::with_config(config()).await;
        // Two producers, one id: two events.
        let (status_a, a) = post_cloudevent(&s, &cloudevent("producer-a", "order-1")).await;
        let (status_b, b) = post_cloudevent(&s, &cloudevent("producer-b", "order-1")).await;
        assert_eq!((status_a, status_b), (202, 202));
        assert_eq!(a["id"], "order-1");
        assert_ne!(a["id"], b["id"], "the second producer's event got its own id: {b}");
        for id in [&a["id"], &b["id"]] {
            let st: Value = client()
                .get(s.url(&format!("/v1/events/{}", id.as_str().unwrap())))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(st["state"], "processed", "{st}");
        }
        // One producer, one id, twice: a duplicate, answered like the first.
        assert_eq!(post_cloudevent(&s, &cloudevent("producer-a", "order-1")).await, (202, a.clone()));
        assert_eq!(post_cloudevent(&s, &cloudevent("producer-b", "order-1")).await, (202, b.clone()));
        assert_eq!(metric(&s, "eventyard_events_duplicate_total").await, Some(2.0));

        // A 10 KB id is refused at every door with the same code.
        let long = "i".repeat(10 * 1024);
        let refused = |v: &Value| v["error"] == "id_too_long" && v["limit_bytes"] == 256;
        let (status, v) = post_cloudevent(&s, &cloudevent("producer-a", &long)).await;
        assert!(status == 400 && refused(&v), "structured: {status} {v}");
        let batch = client()
            .post(s.url("/v1/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .json(&json!([cloudevent("producer-a", &long), cloudevent("producer-a", "fine")]))
            .send()
            .await
            .unwrap();
        let v: Value = batch.json().await.unwrap();
        assert!(v["results"][0]["status"] == 400 && refused(&v["results"][0]), "batch: {v}");
        assert_eq!(v["results"][1]["status"], 202, "batch: {v}");
        let line = json!({ "type": "infrahub/send.echo.request", "id": long, "data": { "message": "x" } });
        let ndjson = client()
            .post(s.url("/v1/events"))
            .header("content-type", "application/x-ndjson")
            .body(format!("{line}\n"))
            .send()
            .await
            .unwrap();
        let v: Value = ndjson.json().await.unwrap();
        assert!(v["results"][0]["status"] == 400 && refused(&v["results"][0]), "ndjson: {v}");
        for (door, request) in [
            (
                "native",
                client()
                    .post(s.url("/v1/events/infrahub/send.echo.request"))
                    .header("idempotency-key", &long)
                    .json(&json!({ "message": "x" })),
            ),
            (
                "binary",
                client()
                    .post(s.url("/v1/events"))
                    .header("ce-specversion", "1.0")
                    .header("ce-id", &long)
                    .header("ce-source", "producer-a")
                    .header("ce-type", "infrahub/send.echo.request")
                    .header("content-type", "application/json")
                    .json(&json!({ "message": "x" })),
            ),
        ] {
            let res = request.send().await.unwrap();
            let status = res.status().as_u16();
            let v: Value = res.json().await.unwrap();
            assert!(status == 400 && refused(&v), "{door}: {status} {v}");
        }
        (a, b)
    };

    // After a restart, the ids come back from the log, remembered from the restart on (the
    // events' own `time`, 2001, is the producer's, not when the router accepted them).
    let s = Server::with_config(config()).await;
    assert_eq!(post_cloudevent(&s, &cloudevent("producer-a", "order-1")).await, (202, first_ids.0));
    assert_eq!(metric(&s, "eventyard_events_duplicate_total").await, Some(1.0));
}

#[tokio::test]
async fn an_id_is_remembered_for_its_window_and_then_forgotten() {
    let mut config = Config::default();
    config.ingest.idempotency_window_secs = 1;
    let s = Server::with_config(config).await;
    let send = || {
        client()
            .post(s.url("/v1/events/infrahub/send.echo.request"))
            .header("idempotency-key", "k-1")
            .json(&json!({ "message": "x" }))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 202);
    assert_eq!(send().await.unwrap().status(), 202);
    assert_eq!(metric(&s, "eventyard_events_duplicate_total").await, Some(1.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(send().await.unwrap().status(), 202);
    assert_eq!(metric(&s, "eventyard_events_duplicate_total").await, Some(1.0), "the window is over: a new event");
    assert_eq!(metric(&s, "eventyard_idempotency_keys").await, Some(1.0), "the expired key left memory");
}

//! Fix Inventory's workflows and message bus: a test acting as a Fix Inventory worker over a
//! real WebSocket, and a whole `collect_and_cleanup` run with the Wasm cleanup-plan handler.

use crate::support::{client, next_json, Server};
use eventyard::config::{Config, WorkflowConfig};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(s: &Server, path: &str) -> Ws {
    tokio_tungstenite::connect_async(s.ws_url(path)).await.unwrap().0
}

/// Reads Fix Inventory messages from a `/v1/subscribe` stream until `task_end`, leaving
/// out listener events.
async fn until_task_end(stream: &mut Ws) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let message = next_json(stream).await["data"].take();
        let mt = message["message_type"].as_str().unwrap().to_string();
        if !mt.starts_with("message-listener") {
            seen.push(message);
        }
        if mt == "task_end" {
            return seen;
        }
    }
}

async fn post(s: &Server, path: &str) -> (u16, Value) {
    let res = client().post(s.url(path)).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

async fn task(s: &Server, id: &str) -> Value {
    client().get(s.url(&format!("/v1/tasks/{id}"))).send().await.unwrap().json().await.unwrap()
}

/// Waits for the next Fix Inventory event of `message_type` on a `/v1/subscribe` stream.
async fn next_of(stream: &mut Ws, message_type: &str) -> Value {
    loop {
        let e = next_json(stream).await;
        if e["data"]["message_type"] == message_type {
            return e;
        }
    }
}

fn no_schedule(mut config: Config, step_timeout_secs: u64) -> Config {
    config.workflows = ["collect", "collect_and_cleanup"]
        .iter()
        .map(|n| WorkflowConfig { step_timeout_secs, ..WorkflowConfig::named(n) })
        .collect();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_subscribes_gets_actions_answers_times_out_and_reconnects() {
    let store = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = no_schedule(Config::default(), 5);
        c.store.dir = Some(store.path().to_path_buf());
        c
    };
    let s = Server::with_config(config()).await;
    // w1 waits on `collect` (answers), w2 too (never answers: times out after 1 s), w3
    // listens to `post_collect` without blocking the step.
    let (status, w1) = post(&s, "/subscriber/w1/collect?timeout=10").await;
    assert_eq!(status, 200);
    assert_eq!(
        w1["subscriptions"]["collect"],
        json!({ "message_type": "collect", "wait_for_completion": true, "timeout": 10 })
    );
    assert_eq!(post(&s, "/subscriber/w2/collect?timeout=1").await.0, 200);
    let res = client()
        .put(s.url("/subscriber/w3"))
        .json(&json!([{ "message_type": "post_collect", "wait_for_completion": false }]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(post(&s, "/subscriber/w3/no_such_step").await.0, 404);
    let listed: Value = client().get(s.url("/subscribers")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["subscribers"].as_array().unwrap().len(), 3);

    let mut bus = ws(&s, "/v1/subscribe?types=fixinventory/*").await;
    let mut listener = ws(&s, "/events?show=collect,task_end&id=dash").await;
    let mut w1 = ws(&s, "/subscriber/w1/handle").await;
    // Both announce themselves (in either order: they connected concurrently).
    let mut connected = Vec::new();
    for _ in 0..2 {
        connected.push(next_of(&mut bus, "message-listener-connected").await["data"]["data"].take());
    }
    connected.sort_by_key(|c| c["subscriber_id"].as_str().unwrap().to_string());
    assert_eq!(
        connected,
        [
            json!({ "subscriber_id": "dash", "channels": ["collect", "task_end"] }),
            json!({ "subscriber_id": "w1", "channels": ["collect"] })
        ]
    );
    // One connection per subscriber.
    let second = tokio_tungstenite::connect_async(s.ws_url("/subscriber/w1/handle")).await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 409),
        other => panic!("a second connection was not refused: {other:?}"),
    }

    let (status, run) = post(&s, "/v1/workflows/collect/run").await;
    assert_eq!(status, 202);
    let id = run["task_id"].as_str().unwrap().to_string();

    // The action for `collect` arrives; w1 drops before answering and reconnects: the
    // pending action is sent again.
    let action = next_json(&mut w1).await;
    assert_eq!(
        action,
        json!({ "kind": "action", "message_type": "collect", "data": { "task": id, "step": "collect", "workflow": "collect" } })
    );
    drop(w1);
    let gone = next_of(&mut bus, "message-listener-disconnected").await;
    assert_eq!(gone["data"]["data"]["subscriber_id"], "w1");
    let mut w1 = ws(&s, "/subscriber/w1/handle").await;
    assert_eq!(next_json(&mut w1).await, action, "the pending action is re-sent");
    let done = json!({ "kind": "action_done", "message_type": "collect", "data": { "task": id, "step": "collect" } });
    w1.send(Message::Text(done.to_string().into())).await.unwrap();
    // A message that is not a valid event gets an error frame back, and changes nothing.
    w1.send(Message::Text(r#"{"kind":"nope","message_type":"collect","data":{}}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut w1).await["error"], "validation_failed");

    // The listener sees the Fix Inventory wire form of what it asked for.
    assert_eq!(next_json(&mut listener).await["kind"], "action");
    assert_eq!(next_json(&mut listener).await, done);
    assert_eq!(next_json(&mut listener).await["message_type"], "task_end");

    let t = task(&s, &id).await;
    assert_eq!(t["state"], "done");
    let steps: Vec<&str> = t["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["pre_collect", "collect", "merge_outer_edges", "post_collect"]);
    let collect = &t["steps"][1];
    assert_eq!(collect["answered"], json!([{ "name": "w1", "kind": "action_done" }]));
    assert_eq!(collect["timed_out"], json!(["w2"]));
    assert_eq!(collect["state"], "failed");
    assert_eq!(t["steps"][3]["state"], "done", "w3 does not block post_collect");
    let tasks: Value = client().get(s.url("/v1/tasks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tasks["tasks"][0]["id"], id.as_str());
    assert_eq!(client().get(s.url("/v1/tasks/nope")).send().await.unwrap().status(), 404);
    assert_eq!(post(&s, "/v1/workflows/nope/run").await.0, 404);

    // Subscriptions are removed one by one, and survive a restart (they are durable).
    let res = client().delete(s.url("/subscriber/w2/collect")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["subscriptions"], json!({}));
    assert_eq!(client().delete(s.url("/subscriber/w2/collect")).send().await.unwrap().status(), 404);
    assert_eq!(client().get(s.url("/subscriber/nobody")).send().await.unwrap().status(), 404);
    drop((bus, listener, w1, s));
    let s = Server::with_config(config()).await;
    let w1: Value = client().get(s.url("/subscriber/w1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (w1["subscriptions"]["collect"]["timeout"].as_u64(), w1["connected"].as_bool()),
        (Some(10), Some(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_and_cleanup_steps_through_every_phase_with_a_wasm_cleanup_plan() {
    let s = Server::with_config(no_schedule(Config::embedded_default(), 10)).await;
    assert_eq!(post(&s, "/subscriber/collector/collect?timeout=10").await.0, 200);
    let mut bus = ws(&s, "/v1/subscribe?types=fixinventory/*").await;
    let mut worker = ws(&s, "/subscriber/collector/handle").await;

    // Candidate resources for the cleanup plan ride on the cleanup_plan action.
    let resources = json!([
        { "id": "i-1", "kind": "aws_ec2_instance", "age_days": 90, "tags": {} },
        { "id": "i-2", "kind": "aws_ec2_instance", "age_days": 2, "tags": { "owner": "ops" } }
    ]);
    let res = client()
        .post(s.url("/v1/workflows/collect_and_cleanup/run"))
        .json(&json!({ "steps": { "cleanup_plan": { "resources": resources } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["task_id"].as_str().unwrap().to_string();
    // A second run waits for the first to end.
    let (_, second) = post(&s, "/v1/workflows/collect_and_cleanup/run").await;

    // The worker answers its step.
    let action = next_json(&mut worker).await;
    assert_eq!(action["message_type"], "collect");
    let done = json!({ "kind": "action_done", "message_type": "collect", "data": { "task": id, "step": "collect" } });
    worker.send(Message::Text(done.to_string().into())).await.unwrap();

    let messages = until_task_end(&mut bus).await;
    let pair = |m: &str, k: &str| (m.to_string(), k.to_string());
    let seen: Vec<_> =
        messages.iter().map(|m| pair(m["message_type"].as_str().unwrap(), m["kind"].as_str().unwrap())).collect();
    let mut expected = vec![pair("task_started", "event")];
    for step in [
        "pre_collect",
        "collect",
        "merge_outer_edges",
        "post_collect",
        "pre_cleanup_plan",
        "cleanup_plan",
        "post_cleanup_plan",
        "pre_cleanup",
        "cleanup",
        "post_cleanup",
        "pre_generate_metrics",
        "generate_metrics",
        "post_generate_metrics",
    ] {
        expected.push(pair(step, "action"));
        match step {
            "collect" => expected.push(pair("collect", "action_done")), // the worker
            "cleanup_plan" => expected.push(pair("cleanup_plan", "action_done")), // the Wasm handler
            "generate_metrics" => expected.push(pair("post_generate_metrics", "event")), // the metrics handler
            _ => {}
        }
        expected.push(pair("progress", "event"));
    }
    expected.push(pair("task_end", "event"));
    assert_eq!(seen, expected);

    let t = task(&s, &id).await;
    let plan = t["steps"].as_array().unwrap().iter().find(|s| s["step"] == "cleanup_plan").unwrap();
    assert_eq!(plan["answered"], json!([{ "name": "wasm:cleanup-plan", "kind": "action_done" }]));
    assert_eq!(plan["state"], "done");
    // What the Wasm plan decided: the old instance without an owner goes.
    let status: Value = client()
        .get(s.url(&format!("/v1/events/{}", plan["action_id"].as_str().unwrap())))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "processed");
    assert_eq!(status["emitted"][0]["type"], "fixinventory/cleanup_plan");
    let answer = messages.iter().find(|m| m["message_type"] == "cleanup_plan" && m["kind"] == "action_done").unwrap();
    assert_eq!(answer["data"]["task"], id.as_str());
    let cleaned: Vec<&str> =
        answer["data"]["cleanup"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(cleaned, ["i-1"], "the old instance without an owner goes, the young owned one stays");

    // The second run started after the first ended.
    let mut worker_again = next_json(&mut worker).await;
    assert_eq!(worker_again["data"]["task"], second["task_id"]);
    worker_again["kind"] = json!("action_done");
    worker.send(Message::Text(worker_again.to_string().into())).await.unwrap();
    until_task_end(&mut bus).await;
    let first = task(&s, &id).await;
    let next = task(&s, second["task_id"].as_str().unwrap()).await;
    let at = |t: &Value, k: &str| {
        time::OffsetDateTime::parse(t[k].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert!(at(&next, "created_at") < at(&first, "finished_at"), "asked for while the first ran");
    assert!(at(&next, "started_at") >= at(&first, "finished_at"), "and started only after it ended");
    assert_eq!(next["state"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_triggers_a_workflow_and_bad_triggers_are_refused_at_start() {
    let toml = r#"
[[workflow]]
name = "metrics"
on_event = ["fixinventory/collect"]
step_timeout_secs = 5
"#;
    let s = Server::with_config(Config::parse(toml).unwrap()).await;
    let mut bus = ws(&s, "/v1/subscribe?types=fixinventory/task_*").await;
    crate::support::post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} }))
        .await;
    let started = next_json(&mut bus).await;
    assert_eq!(started["data"]["data"]["task"], "metrics");
    let id = started["data"]["data"]["task_id"].as_str().unwrap().to_string();
    assert_eq!(next_json(&mut bus).await["data"]["message_type"], "task_end");
    let t = task(&s, &id).await;
    assert_eq!((t["trigger"].as_str(), t["state"].as_str()), (Some("event:fixinventory/collect"), Some("done")));
    let described: Value = client().get(s.url("/v1/workflows")).send().await.unwrap().json().await.unwrap();
    let metrics = described["workflows"].as_array().unwrap().iter().find(|w| w["name"] == "metrics").unwrap();
    assert_eq!(metrics["on_event"], json!(["fixinventory/collect"]));

    // A workflow's own events never trigger it: one run only.
    let tasks: Value = client().get(s.url("/v1/tasks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tasks["count"], 1);

    // A burst of trigger events while runs are slow (a subscriber that never answers holds
    // each run 1 s): one run going, one waiting, the rest join the waiting one.
    assert_eq!(post(&s, "/subscriber/slow/pre_generate_metrics?timeout=1").await.0, 200);
    let collect = json!({ "kind": "event", "message_type": "collect", "data": {} });
    for _ in 0..20 {
        crate::support::post(&s, "fixinventory/collect", collect.clone()).await;
    }
    let mut ended = 0;
    while ended < 2 {
        if next_json(&mut bus).await["data"]["message_type"] == "task_end" {
            ended += 1;
        }
    }
    let tasks: Value = client().get(s.url("/v1/tasks")).send().await.unwrap().json().await.unwrap();
    let count = tasks["count"].as_u64().unwrap();
    assert!((2..=3).contains(&count), "20 trigger events made {count} runs");

    for (bad, key) in [
        ("[[workflow]]\nname = \"collect\"\nschedule = \"every hour\"\n", "workflow[0] (collect).schedule"),
        ("[[workflow]]\nname = \"nope\"\n", "workflow[0] (nope).name"),
    ] {
        let err = Config::parse(bad).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
}

/// The Python of `tests/run.sh`'s venv with resotolib installed.
fn resotolib_python() -> std::path::PathBuf {
    let python = crate::support::repo().join("target/resotolib-venv/bin/python");
    assert!(python.exists(), "{} is missing: `bash tests/run.sh` installs resotolib", python.display());
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_resotolib_client_works_as_a_worker() {
    let s = Server::with_config(no_schedule(Config::default(), 30)).await;
    let base = format!("http://{}", s.addr);
    let script = crate::support::repo().join("tests/resotolib/worker.py");
    let worker = tokio::process::Command::new(resotolib_python())
        .args([script.to_str().unwrap(), &base, "resotoworker", "1"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // It registers over HTTP, then connects its actor channel.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let res = client().get(s.url("/subscriber/resotoworker")).send().await.unwrap();
        if res.status() == 200 && res.json::<Value>().await.unwrap()["connected"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "resotolib's worker did not register and connect");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut bus = ws(&s, "/v1/subscribe?types=fixinventory/task_end").await;
    let (_, run) = post(&s, "/v1/workflows/collect/run").await;
    let id = run["task_id"].as_str().unwrap();
    next_json(&mut bus).await;
    let t = task(&s, id).await;
    assert_eq!(t["steps"][1]["answered"], json!([{ "name": "resotoworker", "kind": "action_done" }]));
    assert_eq!(t["steps"][1]["state"], "done");
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(30), worker.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let action: Value = serde_json::from_str(printed.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(action["data"]["task"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_starts_runs() {
    // Every second (6 fields, seconds first), so the test need not wait for a minute.
    let mut config = Config::parse("[[workflow]]\nname = \"metrics\"\nschedule = \"* * * * * *\"\n").unwrap();
    let store = tempfile::tempdir().unwrap();
    config.store.dir = Some(store.path().to_path_buf());
    // `with_state`, unlike `with_config`, keeps the schedule.
    config.auth.admin_token = Some(crate::support::ADMIN_TOKEN.into());
    let s = Server::with_state(eventyard::app::build(&config).await.unwrap()).await;
    let mut bus = ws(&s, "/v1/subscribe?types=fixinventory/task_started").await;
    let started = next_json(&mut bus).await;
    let t = task(&s, started["data"]["data"]["task_id"].as_str().unwrap()).await;
    assert_eq!((t["workflow"].as_str(), t["trigger"].as_str()), (Some("metrics"), Some("schedule")));
}

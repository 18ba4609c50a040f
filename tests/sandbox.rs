//! The hostile-plugin suite: components built to misbehave (`guest-examples/rust/hostile`)
//! are each stopped with the right failure kind and recorded as dead letters, while a
//! concurrent stream of good events through another plugin is delivered in full.

use crate::support::{client, dead_letters, guest, metric, next_json, post, Server};
use eventyard::config::Config;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `(mode, extra manifest lines, expected failure kind)`; `None`: the call succeeds.
const HOSTILE: &[(&str, &str, Option<&str>)] = &[
    ("loop", "limits = { deadline_ms = 50 }", Some("deadline")),
    // A long deadline, so that the memory cap (not the clock) stops it even on a loaded machine.
    ("alloc", "limits = { memory_bytes = 16_777_216, deadline_ms = 10_000 }", Some("memory")),
    ("recurse", "", Some("stack_overflow")),
    ("trap", "", Some("trap")),
    ("huge-emit", "", Some("emit_budget")),
    ("emit-flood", "limits = { max_emits = 10 }", Some("emit_budget")),
    ("emit-denied", "", Some("emit_denied")),
    ("emit-invalid", "", Some("emit_invalid")),
    ("log-denied", "", Some("capability_denied")),
    ("open-file", "", Some("handler_error")),
    ("read-env", "", Some("handler_error")),
    ("flood-stdout", "limits = { output_bytes = 4096, deadline_ms = 5_000 }", None),
];

fn hostile_plugin(name: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"
        [[plugin]]
        name = "{name}"
        component = "{path}"
        world = "handler"
        capabilities = ["emit"]
        emits = ["infrahub/send.echo.request"]
        config = {{ mode = "{mode}" }}
        breaker = {{ failures = 0 }}
        {extra}
        "#,
        path = guest("hostile"),
    )
}

fn echo_plugin() -> String {
    format!(
        r#"
        [[plugin]]
        name = "echo"
        component = "{}"
        world = "handler"
        emits = ["infrahub/response/send.echo.request"]

        [[route]]
        name = "echo"
        match = "infrahub/send.echo.request"
        handlers = ["echo"]
        "#,
        guest("echo")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_stopped_and_good_events_all_get_through() {
    let mut toml = echo_plugin();
    let mut names = Vec::new();
    for (mode, extra, _) in HOSTILE {
        let name = format!("hostile-{mode}");
        toml += &hostile_plugin(&name, mode, extra);
        names.push(format!("\"{name}\""));
    }
    // A fuel budget: the same endless loop, stopped by fuel before its (long) deadline.
    toml += &hostile_plugin("hostile-fuel", "loop", "limits = { fuel = 5_000_000, deadline_ms = 10_000 }");
    names.push("\"hostile-fuel\"".into());
    // One attempt each: this suite is about how each call is stopped, not about retries.
    toml += &format!(
        "[[route]]\nname = \"hostile\"\nmatch = \"fixinventory/collect\"\nhandlers = [{}]\nretry = {{ max_attempts = 1 }}\n",
        names.join(", ")
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;

    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/response/*")).await.unwrap();
    // The hostile event and a stream of 300 good ones, at the same time.
    let hostile = post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} }));
    let good = async {
        let mut ids = Vec::new();
        for i in 0..300 {
            ids.push(post(&s, "infrahub/send.echo.request", json!({ "message": format!("good-{i}") })).await);
        }
        ids
    };
    let (hostile_id, good_ids) = tokio::join!(hostile, good);
    let mut replies = std::collections::HashSet::new();
    while replies.len() < good_ids.len() {
        let r = next_json(&mut ws).await;
        replies.insert(r["data"]["data"]["response"].as_str().unwrap().to_string());
    }
    assert!((0..300).all(|i| replies.contains(&format!("Reply to: good-{i}"))), "every good event was answered");

    let expected: BTreeMap<String, &str> = HOSTILE
        .iter()
        .filter_map(|(mode, _, kind)| kind.map(|k| (format!("hostile-{mode}"), k)))
        .chain([("hostile-fuel".to_string(), "fuel")])
        .collect();
    let letters = dead_letters(&s, "?limit=1000", expected.len()).await;
    let got: BTreeMap<String, &str> =
        letters.iter().map(|d| (d["plugin"].as_str().unwrap().to_string(), d["kind"].as_str().unwrap())).collect();
    assert_eq!(got, expected, "{letters:#?}");
    for d in &letters {
        assert_eq!(d["event"]["id"], hostile_id.as_str());
        assert_eq!(d["route"], "hostile");
    }
    let message = |plugin: &str| -> String {
        letters.iter().find(|d| d["plugin"] == plugin).unwrap()["message"].as_str().unwrap().to_string()
    };
    // The sandbox, seen from inside: no file system, no environment, no arguments.
    assert_eq!(message("hostile-open-file"), "open /etc/passwd: No such file or directory (os error 44)");
    assert_eq!(message("hostile-read-env"), "env: 0 variables, 0 arguments, cwd: /");
    assert!(message("hostile-emit-denied").contains("idem/idem-run"));
    assert!(message("hostile-emit-invalid").contains("/message"));
    assert!(message("hostile-log-denied").contains("`log`"));

    // Counted per plugin and kind; the stdout flood was cut at its cap, not logged whole.
    assert_eq!(
        metric(&s, r#"eventyard_plugin_failures_total{plugin="hostile-loop",kind="deadline"}"#).await,
        Some(1.0)
    );
    assert_eq!(metric(&s, r#"eventyard_plugin_failures_total{plugin="hostile-alloc",kind="memory"}"#).await, Some(1.0));
    assert_eq!(metric(&s, "eventyard_events_dead_lettered_total").await, Some(expected.len() as f64));
    let dropped =
        metric(&s, r#"eventyard_plugin_output_dropped_bytes_total{plugin="hostile-flood-stdout"}"#).await.unwrap();
    assert_eq!(dropped, (4096 * 1024 - 4096) as f64);
    // Filters on the dead-letter list.
    let deadline = dead_letters(&s, "?kind=deadline", 1).await;
    assert_eq!(deadline.len(), 1);
    assert_eq!(deadline[0]["plugin"], "hostile-loop");
    assert_eq!(dead_letters(&s, "?plugin=hostile-trap&type=fixinventory/collect", 1).await.len(), 1);

    // And the router still serves.
    let health: Value = client().get(s.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn a_plugin_that_keeps_failing_trips_its_circuit_breaker() {
    let toml = hostile_plugin("flaky", "trap", "").replace("failures = 0", "failures = 3, cool_down_ms = 600_000")
        + "[[route]]\nmatch = \"fixinventory/collect\"\nhandlers = [\"flaky\"]\n";
    let mut config = Config::parse(&toml).unwrap();
    config.pipeline.workers = 1; // one event after the other, so the count is exact
    let s = Server::with_config(config).await;
    for _ in 0..5 {
        post(&s, "fixinventory/collect", json!({ "kind": "event", "message_type": "collect", "data": {} })).await;
    }
    let letters = dead_letters(&s, "", 5).await;
    let mut kinds: Vec<&str> = letters.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["circuit_open", "circuit_open", "trap", "trap", "trap"]);
    assert_eq!(metric(&s, r#"eventyard_plugin_circuit_open{plugin="flaky"}"#).await, Some(1.0));
    assert_eq!(
        metric(&s, r#"eventyard_plugin_instantiations_total{plugin="flaky"}"#).await,
        Some(3.0),
        "calls stopped"
    );
}

#[tokio::test]
async fn plugins_emitting_at_each_other_stop_at_the_hop_limit() {
    let toml = format!(
        "[pipeline]\nhop_limit = 3\n{}[[route]]\nmatch = \"infrahub/send.echo.request\"\nhandlers = [\"boomerang\"]\n",
        hostile_plugin("boomerang", "echo-back", "")
    );
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/*")).await.unwrap();
    post(&s, "infrahub/send.echo.request", json!({ "message": "start" })).await;
    let letters = dead_letters(&s, "", 1).await;
    assert_eq!(letters[0]["kind"], "hop_limit");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let f = next_json(&mut ws).await;
        seen.push((f["data"]["message"].as_str().unwrap().to_string(), f["hops"].as_u64().unwrap_or(0)));
    }
    assert_eq!(seen, [("start".into(), 0), ("again".into(), 1), ("again".into(), 2), ("again".into(), 3)]);
    assert_eq!(metric(&s, "eventyard_events_emitted_total").await, Some(3.0));
}

#[tokio::test]
async fn strict_mode_instantiates_per_event_and_warm_instances_recycle() {
    let echo = guest("echo");
    let toml = format!(
        r#"
        [[plugin]]
        name = "strict"
        component = "{echo}"
        world = "handler"
        emits = ["infrahub/response/send.echo.request"]
        limits = {{ strict = true }}

        [[plugin]]
        name = "recycled"
        component = "{echo}"
        world = "handler"
        emits = ["infrahub/response/send.echo.request"]
        limits = {{ recycle_after_calls = 2 }}

        [[route]]
        match = "infrahub/send.echo.request"
        handlers = ["strict", "recycled"]
        "#
    );
    let mut config = Config::parse(&toml).unwrap();
    config.pipeline.workers = 1;
    let s = Server::with_config(config).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(s.ws_url("/v1/subscribe?types=infrahub/response/*")).await.unwrap();
    for i in 0..5 {
        post(&s, "infrahub/send.echo.request", json!({ "message": format!("m{i}") })).await;
        next_json(&mut ws).await;
        next_json(&mut ws).await;
    }
    assert_eq!(metric(&s, r#"eventyard_plugin_instantiations_total{plugin="strict"}"#).await, Some(5.0));
    assert_eq!(metric(&s, r#"eventyard_plugin_instantiations_total{plugin="recycled"}"#).await, Some(3.0));
}

#[tokio::test]
async fn a_full_pipeline_queue_answers_503_with_retry_after() {
    let toml = hostile_plugin("slow", "loop", "limits = { deadline_ms = 300 }")
        + "[pipeline]\nworkers = 1\nqueue = 1\n[[route]]\nmatch = \"fixinventory/collect\"\nhandlers = [\"slow\"]\n";
    let s = Server::with_config(Config::parse(&toml).unwrap()).await;
    let collect = json!({ "kind": "event", "message_type": "collect", "data": {} });
    post(&s, "fixinventory/collect", collect.clone()).await;
    // Wait until the one worker is busy with it, so the queue state is known.
    while metric(&s, r#"eventyard_plugin_calls_total{plugin="slow"}"#).await != Some(1.0) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let res = client().post(s.url("/v1/events/fixinventory/collect")).json(&collect).send().await.unwrap();
        let status = res.status().as_u16();
        if status == 503 {
            assert_eq!(res.headers()["retry-after"], "1");
            assert_eq!(res.json::<Value>().await.unwrap()["error"], "overloaded");
        }
        statuses.push(status);
    }
    // One in the worker, one in the queue; the rest are refused, never silently dropped.
    assert_eq!(statuses, [202, 503, 503]);
    assert_eq!(metric(&s, r#"eventyard_events_rejected_total{error="overloaded"}"#).await, Some(2.0));
}

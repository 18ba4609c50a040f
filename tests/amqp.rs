//! RabbitMQ sources with real producers: a private broker (Debian's rabbitmq-server), an
//! Infrahub-style client built with PyPI `aio-pika`, a real `idem state` run publishing
//! through PyPI `evbus-pika`, and a Rust (lapin) producer across a broker `kill -9`; and
//! the AMQP sink, read by a lapin consumer, across a broker that is down.

use crate::support::rabbitmq::Broker;
use crate::support::{client, eventually, guest, lang_guest, repo, Server};
use eventyard::config::Config;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn python(venv: &str) -> std::path::PathBuf {
    let python = repo().join(format!("target/{venv}/bin/python"));
    assert!(python.exists(), "{} is missing: `bash tests/run.sh` installs it", python.display());
    python
}

async fn metric(s: &Server, series: &str) -> f64 {
    crate::support::metric(s, series).await.unwrap_or(0.0)
}

/// Waits until `series` reaches at least `value`.
async fn at_least(s: &Server, series: &str, value: f64) {
    eventually(&format!("{series} reaches {value}"), || async { metric(s, series).await >= value }).await;
}

/// Waits until every id is processed as seen through `base`, each with one echo answer
/// (processed once: a duplicate is not run again).
async fn all_processed_once(base: &str, ids: &[String]) {
    for id in ids {
        let status = || async {
            let res = client().get(format!("{base}/v1/events/{id}")).send().await.unwrap();
            res.json::<Value>().await.unwrap_or(Value::Null)
        };
        eventually(&format!("{id} processed"), || async { status().await["state"] == "processed" }).await;
        let v = status().await;
        assert_eq!(v["emitted"].as_array().map(Vec::len), Some(1), "processed once, one answer: {v}");
    }
}

const ECHO_ROUTE: &str = r#"
[[plugin]]
name = "echo"
component = "builtin:echo"
world = "handler"
emits = ["infrahub/response/send.echo.request"]

[[route]]
match = "infrahub/send.echo.request"
handlers = ["echo"]
"#;

fn infrahub_source(url: &str) -> String {
    format!("\n[[sources.amqp]]\nname = \"infrahub\"\nurl = \"{url}\"\npreset = \"infrahub\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infrahub_client_with_aio_pika_gets_the_echo_handlers_answers_by_priority_and_correlation_id() {
    let broker = Broker::start();
    let s =
        Server::with_config(Config::parse(&format!("{ECHO_ROUTE}{}", infrahub_source(&broker.url()))).unwrap()).await;
    at_least(&s, r#"eventyard_amqp_connected{source="infrahub"}"#, 1.0).await;
    let script = r#"
import asyncio, json, sys, uuid
import aio_pika

async def main(url):
    conn = await aio_pika.connect_robust(url)
    ch = await conn.channel(publisher_confirms=True)
    events = await ch.declare_exchange("infrahub.events", aio_pika.ExchangeType.TOPIC, durable=True)
    callback = await ch.declare_queue(f"api-callback-{uuid.uuid4().hex[:8]}", exclusive=True)
    futures = {}
    async def on_reply(msg):
        fut = futures.pop(msg.correlation_id, None)
        if fut:
            fut.set_result({"correlation_id": msg.correlation_id, "body": json.loads(msg.body)})
    await callback.consume(on_reply, no_ack=True)
    waits = []
    for priority in (1, 3, 5):
        corr = str(uuid.uuid4())
        fut = asyncio.get_running_loop().create_future()
        futures[corr] = fut
        body = {"meta": {"request_id": "", "correlation_id": corr, "reply_to": callback.name}, "message": f"ping {priority}"}
        await events.publish(aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                             correlation_id=corr, reply_to=callback.name, priority=priority, message_id=corr),
                             routing_key="send.echo.request")
        waits.append(fut)
    print(json.dumps(await asyncio.wait_for(asyncio.gather(*waits), 30)))
    await conn.close()

asyncio.run(main(sys.argv[1]))
"#;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/", broker.port);
    let out = tokio::process::Command::new(python("amqp-venv")).args(["-c", script, &url]).output().await.unwrap();
    assert!(out.status.success(), "aio-pika client: {}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers.len(), 3);
    for (answer, priority) in answers.iter().zip([1, 3, 5]) {
        let corr = answer["correlation_id"].as_str().unwrap();
        assert_eq!(answer["body"]["meta"]["correlation_id"], corr, "{answer}");
        assert!(answer["body"].to_string().contains(&format!("ping {priority}")), "the echo of the request: {answer}");
        // The request is an event with the message's id and its AMQP priority.
        let status: Value =
            client().get(s.url(&format!("/v1/events/{corr}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            (status["type"].as_str(), status["priority"].as_u64()),
            (Some("infrahub/send.echo.request"), Some(priority)),
            "{status}"
        );
    }
    assert_eq!(metric(&s, r#"eventyard_amqp_replies_total{source="infrahub"}"#).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_idem_run_publishes_every_event_and_each_ends_routed_or_rejected_with_its_reason() {
    let broker = Broker::start();
    let store = tempfile::tempdir().unwrap();
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

[[sources.amqp]]
name = "idem"
url = "{}"
preset = "idem"
queue = "idem-events"
"#,
        lang_guest("python", "idem-state-filter"),
        guest("hostile"),
        broker.url()
    );
    let mut config = Config::parse(&toml).unwrap();
    config.store.dir = Some(store.path().to_path_buf());
    let s = Server::with_config(config).await;
    at_least(&s, r#"eventyard_amqp_connected{source="idem"}"#, 1.0).await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("test.sls"),
        "ping_it:\n  exec.run:\n    - path: test.ping\n\nnap:\n  time.sleep:\n    - duration: 0.1\n    - require:\n      - exec: ping_it\n",
    )
    .unwrap();
    std::fs::write(
        work.path().join("creds.yaml"),
        format!("pika:\n  idem-*:\n    connection:\n      host: 127.0.0.1\n      port: {}\n      login: guest\n      password: guest\n    routing_key: idem-events\n", broker.port),
    )
    .unwrap();
    let idem = repo().join("target/idem-venv/bin/idem");
    assert!(idem.exists(), "{} is missing: `bash tests/run.sh` installs idem and evbus-pika", idem.display());
    let out = tokio::process::Command::new(idem)
        .args(["state", "test.sls", "--acct-file", "creds.yaml", "--run-name", "eventyard-test"])
        .current_dir(work.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "idem state: {}", String::from_utf8_lossy(&out.stderr));
    // A failed state result in the documented shape, put on the idem-state profile by idem
    // itself (its `test.event`): what the Python filter keeps. (Idem 25's own state events
    // do not match the documented tables; they are rejected records, counted below.)
    let out = tokio::process::Command::new(repo().join("target/idem-venv/bin/idem"))
        .args([
            "exec",
            "test.event",
            r#"body={"changes": {"old": [], "new": []}, "comment": "", "name": "web", "result": false}"#,
            "ingress_profile=idem-state",
            r#"tags={"ref": "states.aws.ec2.instance.present", "type": "state-post"}"#,
            "--acct-file",
            "creds.yaml",
        ])
        .current_dir(work.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "idem exec test.event: {}", String::from_utf8_lossy(&out.stderr));
    // Every message of the run is in the queue when idem exits (it awaits each confirm).
    let series = |n: &str| format!("eventyard_amqp_{n}{{source=\"idem\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut seen, mut stable_since) = (-1.0, Instant::now());
    loop {
        let now = metric(&s, &series("messages_total")).await;
        if now != seen {
            (seen, stable_since) = (now, Instant::now());
        } else if now > 0.0 && stable_since.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the run's messages never all arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (accepted, rejected) =
        (metric(&s, &series("accepted_total")).await, metric(&s, &series("rejected_total")).await);
    eprintln!("idem run: {seen} messages, {accepted} routed Idem events, {rejected} rejected records");
    assert!(seen >= 10.0, "a two-state run publishes a score of events: {seen}");
    assert_eq!(accepted + rejected, seen, "every message ends as an event or a rejected record");
    let records = std::fs::read_to_string(store.path().join("rejected-idem.jsonl")).unwrap_or_default();
    let records: Vec<Value> = records.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len() as f64, rejected, "one record per rejected message");
    assert!(
        records.iter().any(|r| r["error"] == "unknown_type" && r["data"].as_str().unwrap().contains("esm-metadata")),
        "Idem's undocumented esm-metadata kept with its reason: {records:?}"
    );
    assert!(records.iter().all(|r| r["errors"].as_array().is_some_and(|e| !e.is_empty())), "each with its errors");
    for r in &records {
        eprintln!("  rejected {}: {}", r["type"], r["errors"].to_string().chars().take(160).collect::<String>());
    }
    at_least(&s, r#"eventyard_plugin_calls_total{plugin="failed-states"}"#, 1.0).await;
    at_least(&s, r#"eventyard_plugin_calls_total{plugin="sink"}"#, 1.0).await;
}

/// A producer that publishes persistent echo requests with ids and confirms, connecting
/// again (and publishing again what was not confirmed) when the broker goes away; answers
/// the ids the broker confirmed.
async fn publish_through_restarts(url: String, n: usize, stop_after: Duration) -> Vec<String> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let mut confirmed = Vec::new();
    let started = Instant::now();
    let mut i = 0;
    while i < n && started.elapsed() < stop_after {
        let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else { continue };
        if ch.confirm_select(ConfirmSelectOptions::default()).await.is_err() {
            continue;
        }
        while i < n {
            let id = format!("amqp-{i}");
            let body = json!({ "meta": {}, "message": id.clone() }).to_string();
            let props =
                BasicProperties::default().with_delivery_mode(2).with_message_id(id.as_str().into()).with_priority(3);
            let sent = ch
                .basic_publish(
                    "infrahub.events".into(),
                    "send.echo.request".into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    props,
                )
                .await;
            match sent {
                Ok(confirm) => match confirm.await {
                    Ok(c) if c.is_ack() => {
                        confirmed.push(id);
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    _ => break,
                },
                Err(_) => break,
            }
        }
    }
    confirmed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_reconnects_after_a_broker_kill_9_and_loses_nothing_the_broker_confirmed() {
    let mut broker = Broker::start();
    let s =
        Server::with_config(Config::parse(&format!("{ECHO_ROUTE}{}", infrahub_source(&broker.url()))).unwrap()).await;
    at_least(&s, r#"eventyard_amqp_connected{source="infrahub"}"#, 1.0).await;
    let producer = tokio::spawn(publish_through_restarts(broker.url(), 400, Duration::from_secs(120)));
    at_least(&s, r#"eventyard_amqp_accepted_total{source="infrahub"}"#, 50.0).await;
    broker.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let broker = tokio::task::spawn_blocking(move || {
        broker.start_again();
        broker
    })
    .await
    .unwrap();
    let confirmed = producer.await.unwrap();
    assert_eq!(confirmed.len(), 400, "the producer got every message confirmed in the end");
    all_processed_once(&s.url(""), &confirmed).await;
    assert!(metric(&s, r#"eventyard_amqp_reconnects_total{source="infrahub"}"#).await >= 1.0);
    eprintln!(
        "broker kill -9: 400 confirmed, all processed; {} redelivered duplicates",
        metric(&s, "eventyard_events_duplicate_total").await
    );
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventyard_killed_mid_stream_leaves_unacked_messages_to_come_back_and_each_is_processed_once() {
    use crate::durability::Router;
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[ingest]\nidempotency_window_secs = 3600\n{ECHO_ROUTE}{}", infrahub_source(&broker.url()));
    let mut router = Router::start(dir.path(), &config).await;
    // Declared by the router: wait for its source before publishing.
    eventually("the AMQP source connects", || async {
        let m = client().get(format!("{}/metrics", router.base)).send().await.unwrap().text().await.unwrap();
        m.contains("eventyard_amqp_connected{source=\"infrahub\"} 1")
    })
    .await;
    let producer = tokio::spawn(publish_through_restarts(broker.url(), 600, Duration::from_secs(120)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::process::Command::new("kill").args(["-9", &router.child.id().to_string()]).status().unwrap();
    let _ = router.child.wait();
    let confirmed = producer.await.unwrap();
    assert_eq!(confirmed.len(), 600);
    let restarted = Router::start(dir.path(), &config).await;
    all_processed_once(&restarted.base, &confirmed).await;
    drop(router);
}

/// A queue `out` (durable, so it outlives a broker restart) bound with `#` to the durable
/// topic exchange `eventyard.out`, declared by the test as a consumer would.
async fn bound_queue(url: &str) -> lapin::Channel {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = connection.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare("eventyard.out".into(), lapin::ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .unwrap();
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("out".into(), durable, FieldTable::default()).await.unwrap();
    ch.queue_bind("out".into(), "eventyard.out".into(), "#".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    // The channel keeps its connection open.
    std::mem::forget(connection);
    ch
}

/// The messages of queue `out` with these ids (message_id), one each: the sink delivers at
/// least once (an attempt whose confirm was slow is made again), so a consumer dedups by id.
async fn take(ch: &lapin::Channel, ids: &[&str]) -> Vec<lapin::message::Delivery> {
    let mut got: Vec<lapin::message::Delivery> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let id_of =
        |m: &lapin::message::Delivery| m.properties.message_id().as_ref().map(|v| v.to_string()).unwrap_or_default();
    while !ids.iter().all(|id| got.iter().any(|m| id_of(m) == *id)) {
        assert!(Instant::now() < deadline, "only {} of {ids:?} arrived", got.len());
        let options = lapin::options::BasicGetOptions { no_ack: true };
        match ch.basic_get("out".into(), options).await.unwrap() {
            Some(m)
                if ids.contains(&id_of(&m.delivery).as_str())
                    && !got.iter().any(|g| id_of(g) == id_of(&m.delivery)) =>
            {
                got.push(m.delivery)
            }
            Some(_) => {}
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    got
}

async fn state_of(s: &Server, id: &str) -> Value {
    let status = || async {
        client().get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().json::<Value>().await.unwrap()
    };
    eventually(&format!("{id} finished"), || async {
        matches!(status().await["state"].as_str(), Some("processed" | "dead_lettered"))
    })
    .await;
    status().await
}

async fn post(s: &Server, type_name: &str, body: Value, priority: u8) -> String {
    let url = s.url(&format!("/v1/events/{type_name}"));
    let res = client().post(url).header("priority", priority.to_string()).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 202);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Routes deliver to an exchange with publisher confirms; a message no queue takes is
/// refused, not dropped; with the broker down the route retries, then dead-letters, and
/// the letter replayed once the broker is back is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_publishes_with_confirms_and_a_broker_that_is_down_means_retries_then_a_dead_letter() {
    let mut broker = Broker::start();
    let consumer = bound_queue(&broker.url()).await;
    let config = format!(
        r#"
[[sinks.amqp]]
name = "out"
url = "{url}"
exchange = "eventyard.out"
strip_prefix = "infrahub/"
headers = {{ origin = "eventyard-test" }}

[[sinks.amqp]]
name = "nowhere"
url = "{url}"
exchange = "eventyard.nowhere"

[[route]]
match = "infrahub/send.echo.request"
sinks = ["out"]
retry = {{ max_attempts = 3, base_ms = 50, max_ms = 100 }}

[[route]]
match = "infrahub/refresh.registry.branches"
sinks = ["nowhere"]
retry = {{ max_attempts = 2, base_ms = 50, max_ms = 100 }}
"#,
        url = broker.url()
    );
    let s = Server::with_config(Config::parse(&config).unwrap()).await;
    let mut ids = Vec::new();
    for priority in [2u8, 5] {
        let body = json!({ "meta": { "correlation_id": format!("corr-{priority}") }, "message": format!("to the bus {priority}") });
        ids.push(post(&s, "infrahub/send.echo.request", body, priority).await);
    }
    for id in &ids {
        assert_eq!(state_of(&s, id).await["state"], "processed");
    }
    let mut messages = take(&consumer, &[ids[0].as_str(), ids[1].as_str()]).await;
    messages.sort_by_key(|m| m.properties.priority().unwrap_or(0));
    for (m, (id, priority)) in messages.iter().zip(ids.iter().zip([2u8, 5])) {
        let p = &m.properties;
        assert_eq!(m.routing_key.as_str(), "send.echo.request");
        assert_eq!(p.message_id().as_ref().map(|v| v.as_str()), Some(id.as_str()));
        assert_eq!(p.priority(), &Some(priority));
        assert_eq!(p.correlation_id().as_ref().map(|v| v.to_string()), Some(format!("corr-{priority}")));
        let headers = p.headers().as_ref().expect("headers").inner();
        let header = |k: &str| headers.get(k).and_then(eventyard::amqp::text);
        assert_eq!(header("cloudEvents:type").as_deref(), Some("infrahub/send.echo.request"));
        assert_eq!(header("origin").as_deref(), Some("eventyard-test"));
        let body: Value = serde_json::from_slice(&m.data).unwrap();
        assert_eq!(body["message"], format!("to the bus {priority}"));
    }
    assert_eq!(metric(&s, r#"eventyard_amqp_sink_published_total{sink="out"}"#).await, 2.0);

    // No queue is bound to `eventyard.nowhere`: refused (mandatory), retried, dead-lettered.
    let lost = post(&s, "infrahub/refresh.registry.branches", json!({}), 3).await;
    let status = state_of(&s, &lost).await;
    assert_eq!(status["state"], "dead_lettered", "{status}");
    assert_eq!(
        (status["failed"][0]["kind"].as_str(), status["failed"][0]["attempts"].as_u64()),
        (Some("sink_refused"), Some(2)),
        "{status}"
    );

    // The broker down: each attempt fails at once, the route retries, then a dead letter.
    broker.kill9();
    let late = post(&s, "infrahub/send.echo.request", json!({ "message": "while the broker is down" }), 3).await;
    let status = state_of(&s, &late).await;
    assert_eq!(status["state"], "dead_lettered", "{status}");
    let failure = &status["failed"][0];
    assert_eq!(
        (failure["plugin"].as_str(), failure["kind"].as_str(), failure["attempts"].as_u64()),
        (Some("out"), Some("sink_unavailable"), Some(3)),
        "{status}"
    );
    assert_eq!(metric(&s, r#"eventyard_amqp_sink_connected{sink="out"}"#).await, 0.0);

    // Back: the letter replayed is delivered (and leaves the list).
    let mut broker = tokio::task::spawn_blocking(move || {
        broker.start_again();
        broker
    })
    .await
    .unwrap();
    let letters: Value = client().get(s.url("/v1/dead-letters?plugin=out")).send().await.unwrap().json().await.unwrap();
    let letter =
        letters["dead_letters"].as_array().unwrap().iter().find(|l| l["event"]["id"] == late.as_str()).unwrap().clone();
    let res = client()
        .post(s.url(&format!("/v1/dead-letters/{}/replay", letter["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let consumer = bound_queue(&broker.url()).await;
    take(&consumer, &[late.as_str()]).await;
    eventually("the replayed letter leaves the list", || async {
        let list: Value =
            client().get(s.url("/v1/dead-letters?plugin=out")).send().await.unwrap().json().await.unwrap();
        list["dead_letters"].as_array().is_some_and(|l| l.iter().all(|x| x["event"]["id"] != late.as_str()))
    })
    .await;
    assert!(
        metric(&s, r#"eventyard_amqp_sink_connects_total{sink="out"}"#).await >= 2.0,
        "connected again after the restart"
    );
    broker.kill9();
}

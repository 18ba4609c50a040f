//! Several routers as one on NATS JetStream (`store.backend = "nats"`): a real
//! `nats-server` with file storage, real `eventyard` processes, real HTTP and WebSocket
//! clients. Instances and the server are killed with SIGKILL mid-stream.

use crate::durability::Router;
use crate::support::nats::NatsServer;
use crate::support::{client, eventually, guest, next_json_within, ADMIN_TOKEN};
use eventyard::store::nats::NatsConfig;
use eventyard::store::{conformance, NatsLog};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ECHO_TYPE: &str = "infrahub/send.echo.request";

/// A stream and subject prefix of its own for each use of one server.
fn unique(tag: &str) -> String {
    format!("{tag}{}", uuid::Uuid::now_v7().simple())
}

/// Router config: the NATS log named `stream`, the admin token the test client sends,
/// and `routes` (plugins and routes).
fn config(url: &str, stream: &str, routes: &str) -> String {
    format!(
        r#"
[auth]
admin_token = "{ADMIN_TOKEN}"

[store]
backend = "nats"
[store.nats]
urls = ["{url}"]
stream = "{stream}"
subject_prefix = "{stream}"
ack_wait_ms = 2000
{routes}"#
    )
}

/// The echo handler on echo requests.
fn echo() -> String {
    format!(
        r#"
[[plugin]]
name = "echo"
component = "builtin:echo"
world = "handler"
emits = ["infrahub/response/send.echo.request"]

[[route]]
match = "{ECHO_TYPE}"
handlers = ["echo"]
"#
    )
}

struct Cluster {
    routers: Vec<Router>,
    dirs: Vec<tempfile::TempDir>,
    config: String,
}

impl Cluster {
    async fn start(n: usize, url: &str) -> Cluster {
        Self::with_routes(n, url, &echo()).await
    }

    async fn with_routes(n: usize, url: &str, routes: &str) -> Cluster {
        let config = config(url, &unique("T"), routes);
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut routers = Vec::new();
        for dir in &dirs {
            routers.push(Router::start(dir.path(), &config).await);
        }
        Cluster { routers, dirs, config }
    }

    async fn restart(&mut self, i: usize) {
        self.routers[i] = Router::start(self.dirs[i].path(), &self.config).await;
    }

    fn kill9(&mut self, i: usize) {
        let child = &mut self.routers[i].child;
        std::process::Command::new("kill").args(["-9", &child.id().to_string()]).status().unwrap();
        let _ = child.wait();
    }
}

async fn status(base: &str, id: &str) -> Option<Value> {
    let res = client().get(format!("{base}/v1/events/{id}")).send().await.ok()?;
    res.json().await.ok()
}

/// Waits until `id` is finished as seen through `base`; answers its status.
async fn finished(base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(base, id).await;
        if let Some(s) = s.as_ref().filter(|s| matches!(s["state"].as_str(), Some("processed" | "dead_lettered"))) {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "{id} never finished through {base}: {s:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn metric(base: &str, series: &str) -> f64 {
    let text = client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// Producers posting echo requests to every base in turn until `stop`; answers the ids
/// answered 202 (a refused or failed post is the producer's to retry, not counted).
fn producers(bases: Vec<String>, n: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..n)
        .map(|p| {
            let (bases, stop) = (bases.clone(), stop.clone());
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let base = &bases[(p + i) % bases.len()];
                    i += 1;
                    let body = json!({ "message": format!("p{p}-{i}") });
                    let sent = client()
                        .post(format!("{base}/v1/events/{ECHO_TYPE}"))
                        .timeout(Duration::from_secs(10))
                        .json(&body)
                        .send()
                        .await;
                    match sent {
                        Ok(res) if res.status() == 202 => {
                            accepted.push(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string())
                        }
                        Ok(res) => assert_eq!(res.status(), 503, "only unavailability may refuse"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                accepted
            })
        })
        .collect()
}

/// Four producers posting to every instance of a cluster until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    running: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(cluster: &Cluster) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let bases: Vec<String> = cluster.routers.iter().map(|r| r.base.clone()).collect();
        Load { running: producers(bases, 4, stop.clone()), stop }
    }

    /// Stops the producers; answers the ids answered 202 (enough of them to prove something).
    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut accepted = Vec::new();
        for p in self.running {
            accepted.extend(p.await.unwrap());
        }
        assert!(accepted.len() > 50, "too few accepted to prove anything: {}", accepted.len());
        accepted
    }
}

/// Every accepted id ends processed, with the echo handler's answer, as seen through every
/// instance; reports the redeliveries `fault` caused.
async fn all_processed(cluster: &Cluster, accepted: &[String], fault: &str) {
    for (k, id) in accepted.iter().enumerate() {
        let first = finished(&cluster.routers[k % cluster.routers.len()].base, id).await;
        assert_eq!(first["state"], "processed", "{first}");
        let emitted = first["emitted"].as_array().unwrap();
        assert_eq!(emitted.len(), 1, "one echo answer recorded: {first}");
        for r in &cluster.routers {
            let seen = status(&r.base, id).await.unwrap();
            assert_eq!(seen, first, "every instance answers the same final status for {id}");
        }
    }
    eprintln!("{fault}: {} events accepted, all processed; {} redelivered", accepted.len(), redelivered(cluster).await);
}

async fn redelivered(cluster: &Cluster) -> f64 {
    let mut n = 0.0;
    for r in &cluster.routers {
        n += metric(&r.base, "eventyard_nats_redelivered_total").await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_log_passes_the_conformance_kit() {
    let server = NatsServer::start();
    let url = server.url();
    conformance::run(|dir: &Path| {
        // The directory names the stream: a reopened log finds its events again.
        let name = format!("K{:016x}", {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            dir.hash(&mut h);
            h.finish()
        });
        let config = NatsConfig {
            urls: vec![url.clone()],
            stream: name.clone(),
            subject_prefix: name,
            ack_wait_ms: 1000,
            ..NatsConfig::default()
        };
        async move { NatsLog::connect(&config, Duration::from_secs(3600)).await.expect("connect to nats-server") }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_lose_nothing_when_one_is_killed_mid_stream() {
    let server = NatsServer::start();
    let mut cluster = Cluster::start(3, &server.url()).await;
    let load = Load::start(&cluster);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill9(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.restart(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = load.stop().await;
    all_processed(&cluster, &accepted, "kill -9 of one instance of three").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_nats_server_is_killed_mid_stream() {
    let mut server = NatsServer::start();
    let cluster = Cluster::start(2, &server.url()).await;
    let load = Load::start(&cluster);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.start_again();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let accepted = load.stop().await;
    all_processed(&cluster, &accepted, "kill -9 of the nats-server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_producer_id_posted_to_two_instances_is_one_event() {
    let server = NatsServer::start();
    let cluster = Cluster::start(2, &server.url()).await;
    let mut ids = Vec::new();
    for r in &cluster.routers {
        let res = client()
            .post(format!("{}/v1/events/{ECHO_TYPE}", r.base))
            .header("Idempotency-Key", "order-42")
            .json(&json!({ "message": "once" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        ids.push(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids, ["order-42", "order-42"], "the second instance answers with the first's id");
    assert_eq!(metric(&cluster.routers[1].base, "eventyard_events_duplicate_total").await, 1.0);
    let s = finished(&cluster.routers[1].base, "order-42").await;
    assert_eq!(s["emitted"].as_array().unwrap().len(), 1, "processed once: {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_of_one_instance_sees_events_accepted_by_another() {
    let server = NatsServer::start();
    let cluster = Cluster::start(2, &server.url()).await;
    let ws_url = format!("{}/v1/subscribe?types=infrahub/*", cluster.routers[1].base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let res = client()
        .post(format!("{}/v1/events/{ECHO_TYPE}", cluster.routers[0].base))
        .json(&json!({ "message": "across" }))
        .send()
        .await
        .unwrap();
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let frame = next_json_within(&mut ws, Duration::from_secs(10)).await;
        seen.push((frame["type"].as_str().unwrap().to_string(), frame["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(seen[0], (ECHO_TYPE.to_string(), id), "the event posted to the other instance");
    assert_eq!(seen[1].0, "infrahub/response/send.echo.request", "and the answer a plugin emitted (anywhere)");
}

async fn letters(base: &str) -> Vec<Value> {
    let list: Value = client().get(format!("{base}/v1/dead-letters")).send().await.unwrap().json().await.unwrap();
    list["dead_letters"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_made_on_one_instance_is_listed_and_replayed_on_another() {
    let server = NatsServer::start();
    let cluster = Cluster::with_routes(2, &server.url(), &crate::durability::boom(&guest("hostile"), "trap")).await;
    let (a, b) = (&cluster.routers[0].base, &cluster.routers[1].base);
    let res =
        client().post(format!("{a}/v1/events/{ECHO_TYPE}")).json(&json!({ "message": "m" })).send().await.unwrap();
    let event = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(finished(b, &event).await["state"], "dead_lettered");
    eventually("the letter is listed by both instances", || async {
        letters(a).await.len() == 1 && letters(b).await.len() == 1
    })
    .await;
    let letter = letters(b).await[0].clone();
    assert_eq!(letter["event"]["id"], event.as_str());
    assert_eq!(letter, letters(a).await[0], "the same letter through either instance");
    let id = letter["id"].as_str().unwrap();
    let res = client().post(format!("{b}/v1/dead-letters/{id}/replay")).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    // Replayed (and, the plugin still trapping, dead-lettered again under a new letter id).
    eventually("the replayed letter leaves both lists", || async {
        let (la, lb) = (letters(a).await, letters(b).await);
        [la, lb].iter().all(|l| l.iter().all(|x| x["id"] != id))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_document_written_on_one_instance_is_read_on_another() {
    let server = NatsServer::start();
    let cluster = Cluster::start(2, &server.url()).await;
    let (a, b) = (&cluster.routers[0].base, &cluster.routers[1].base);
    let put = |base: &str, body: Value, revision: Option<&str>| {
        let mut req = client().put(format!("{base}/v1/config/fix.core")).json(&body);
        if let Some(rev) = revision {
            req = req.header("If-Match", format!("\"{rev}\""));
        }
        req.send()
    };
    let first: Value = put(a, json!({ "n": 1 }), None).await.unwrap().json().await.unwrap();
    let read: Value = client().get(format!("{b}/v1/config/fix.core")).send().await.unwrap().json().await.unwrap();
    assert_eq!(read, first, "the document and its revision, through the other instance");
    let rev = first["revision"].as_str().unwrap();
    let second = put(b, json!({ "n": 2 }), Some(rev)).await.unwrap();
    assert_eq!(second.status(), 200);
    let stale = put(a, json!({ "n": 3 }), Some(rev)).await.unwrap();
    assert_eq!(stale.status(), 409, "a write at an old revision is refused on every instance");
    let ids: Value = client().get(format!("{a}/v1/config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ids["ids"], json!(["fix.core"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_one_workflow_on_two_instances_never_overlap() {
    let server = NatsServer::start();
    let cluster = Cluster::start(2, &server.url()).await;
    let mut tasks = Vec::new();
    for r in &cluster.routers {
        // A subscriber that never answers holds each run's step for 1 s.
        let res =
            client().post(format!("{}/subscriber/slow/pre_generate_metrics?timeout=1", r.base)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    for r in &cluster.routers {
        for _ in 0..2 {
            let res = client().post(format!("{}/v1/workflows/metrics/run", r.base)).send().await.unwrap();
            let task: Value = res.json().await.unwrap();
            tasks.push((r.base.clone(), task["id"].as_str().or(task["task_id"].as_str()).unwrap().to_string()));
        }
    }
    let mut spans = Vec::new();
    for (base, id) in &tasks {
        let deadline = Instant::now() + Duration::from_secs(60);
        let t = loop {
            let t: Value = client().get(format!("{base}/v1/tasks/{id}")).send().await.unwrap().json().await.unwrap();
            if t["state"] == "done" {
                break t;
            }
            assert!(Instant::now() < deadline, "task {id} never ended: {t}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let at = |k: &str| {
            time::OffsetDateTime::parse(t[k].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap()
        };
        spans.push((at("started_at"), at("finished_at")));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "runs overlap across instances: {spans:?}");
    }
}

/// A producer with the published Python client (PyPI `nats-py`): publishes `messages`
/// (subject, headers, body) to JetStream and waits for each PubAck.
fn nats_py_publish(url: &str, messages: &Value) {
    let python = crate::support::repo().join("target/nats-venv/bin/python");
    assert!(python.exists(), "{} is missing: `bash tests/run.sh` installs nats-py", python.display());
    let script = r#"
import asyncio, json, sys
import nats

async def main(url, messages):
    nc = await nats.connect(url)
    js = nc.jetstream()
    for m in messages:
        await js.publish(m["subject"], m["body"].encode(), headers=m["headers"] or None)
    await nc.close()

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
"#;
    let out = std::process::Command::new(python).args(["-c", script, url, &messages.to_string()]).output().unwrap();
    assert!(out.status.success(), "nats-py: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_py_producer_publishes_straight_to_the_stream_and_invalid_messages_are_kept_rejected() {
    let server = NatsServer::start();
    let routes = format!("{}\n[sources.nats]\nenabled = true\n", echo());
    let cluster = Cluster::with_routes(2, &server.url(), &routes).await;
    let prefix =
        cluster.config.lines().find_map(|l| l.strip_prefix("subject_prefix = ")).unwrap().trim_matches('"').to_string();
    let stream = prefix.clone();
    let messages = json!([
        { "subject": format!("{prefix}.in.{ECHO_TYPE}"), "headers": { "ce-id": "py-1" }, "body": r#"{"message": "from python"}"# },
        { "subject": format!("{prefix}.in.{ECHO_TYPE}"), "headers": { "Nats-Msg-Id": "py-2", "ce-priority": "2" }, "body": r#"{"message": "two"}"# },
        // The type in a CloudEvents header (binary mode) rather than the subject.
        { "subject": format!("{prefix}.in.cloudevent"), "headers": { "ce-type": ECHO_TYPE, "ce-id": "py-3", "ce-source": "/py" }, "body": r#"{"message": "three"}"# },
        // Sent twice (a producer's retry): one event.
        { "subject": format!("{prefix}.in.{ECHO_TYPE}"), "headers": { "ce-id": "py-1" }, "body": r#"{"message": "from python"}"# },
        { "subject": format!("{prefix}.in.no/such.type"), "headers": {}, "body": "{}" },
        { "subject": format!("{prefix}.in.{ECHO_TYPE}"), "headers": {}, "body": "{not json" },
        { "subject": format!("{prefix}.in.{ECHO_TYPE}"), "headers": {}, "body": r#"{"message": 7}"# },
    ]);
    nats_py_publish(&server.url(), &messages);
    // Echo requests are x-priority 5 in the catalogue; a `ce-priority` header overrides it.
    for (id, priority) in [("py-1", 5), ("py-2", 2), ("py-3", 5)] {
        let s = finished(&cluster.routers[1].base, id).await;
        assert_eq!(s["state"], "processed", "{s}");
        assert_eq!(s["emitted"].as_array().unwrap().len(), 1, "{s}");
        assert_eq!(s["priority"], priority, "{s}");
    }
    // The rejected records, read with the Rust client.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let rejected = js.get_stream(format!("{stream}_REJECTED")).await.unwrap();
    let mut reasons = Vec::new();
    eventually("three rejected records", || {
        let rejected = rejected.clone();
        async move { rejected.get_raw_message(3).await.is_ok() }
    })
    .await;
    for seq in 1..=3 {
        let record: Value = serde_json::from_slice(&rejected.get_raw_message(seq).await.unwrap().payload).unwrap();
        assert!(record["errors"].as_array().is_some_and(|e| !e.is_empty()), "{record}");
        reasons.push(record["error"].as_str().unwrap().to_string());
    }
    reasons.sort();
    assert_eq!(reasons, ["malformed_json", "unknown_type", "validation_failed"]);
    assert!(rejected.get_raw_message(4).await.is_err(), "the duplicate is not a rejection");
    assert_eq!(
        metric(&cluster.routers[0].base, "eventyard_events_duplicate_total").await
            + metric(&cluster.routers[1].base, "eventyard_events_duplicate_total").await,
        1.0,
        "the retried message is one event"
    );
}

/// A feed that keeps the priorities of the work it is handed, in order, taking a moment
/// for each (as workers do: what an instance has pulled waits, and its order is the log's).
#[derive(Default)]
struct Order(std::sync::Mutex<Vec<u8>>);

impl eventyard::store::Feed for Order {
    fn work(&self, event: eventyard::event::Event, _: Option<Vec<u8>>) -> futures_util::future::BoxFuture<'_, ()> {
        self.0.lock().unwrap().push(event.priority);
        Box::pin(tokio::time::sleep(Duration::from_millis(3)))
    }
    fn admitted(&self, _: eventyard::event::Event, _: bool) {}
    fn finished(&self, _: &str, _: &eventyard::event::Outcome) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_takes_higher_priorities_first_without_starving_the_rest() {
    use eventyard::store::{Batch, EventLog};
    let server = NatsServer::start();
    let name = unique("P");
    let config =
        NatsConfig { urls: vec![server.url()], stream: name.clone(), subject_prefix: name, ..NatsConfig::default() };
    let window = Duration::from_secs(60);
    let producer = NatsLog::connect(&config, window).await.unwrap();
    // A backlog: low-priority events first, then high-priority ones.
    for priority in [1u8, 5] {
        let events: Vec<_> = (0..100)
            .map(|_| eventyard::event::Event { priority, ..conformance::event(conformance::ROUTED, None) })
            .collect();
        let routed = vec![true; events.len()];
        producer.append(Batch { events, routed, producer: None }).await.unwrap();
    }
    let instances =
        [NatsLog::connect(&config, window).await.unwrap(), NatsLog::connect(&config, window).await.unwrap()];
    let orders = [Arc::new(Order::default()), Arc::new(Order::default())];
    for (log, order) in instances.iter().zip(&orders) {
        log.attach(order.clone());
    }
    eventually("all 200 handed out", || async {
        orders.iter().map(|o| o.0.lock().unwrap().len()).sum::<usize>() == 200
    })
    .await;
    for order in &orders {
        let order = order.0.lock().unwrap().clone();
        assert!(order.len() >= 20, "both instances take work: {order:?}");
        let first = &order[..order.len() / 2];
        let high = first.iter().filter(|p| **p == 5).count();
        assert!(
            high * 10 >= first.len() * 7,
            "the first half of what an instance takes is mostly priority 5: {order:?}"
        );
        let last_high = order.iter().rposition(|p| *p == 5).unwrap();
        assert!(order[..last_high].contains(&1), "low priorities are served while high ones wait: {order:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_back_to_the_stream_with_their_back_off_and_any_instance_makes_them() {
    let server = NatsServer::start();
    // Fails (retryably) until Infrahub's meta.retry_count reaches 2: two retries per event.
    let routes = format!(
        r#"
[[plugin]]
name = "flaky"
component = "{}"
world = "handler"
emits = ["infrahub/response/send.echo.request"]
config = {{ mode = "retry-count" }}

[[route]]
name = "echo"
match = "{ECHO_TYPE}"
handlers = ["flaky"]
retry = {{ max_attempts = 4, base_ms = 300, max_ms = 300 }}
"#,
        guest("hostile")
    );
    let cluster = Cluster::with_routes(2, &server.url(), &routes).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let base = &cluster.routers[i % 2].base;
        let res = client()
            .post(format!("{base}/v1/events/{ECHO_TYPE}"))
            .json(&json!({ "meta": {}, "message": format!("m{i}") }))
            .send()
            .await
            .unwrap();
        ids.push(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let s = finished(&cluster.routers[0].base, id).await;
        assert_eq!(s["state"], "processed", "{s}");
        let emitted = s["emitted"].as_array().unwrap();
        assert_eq!(emitted.len(), 1, "{s}");
    }
    let mut deferred = 0.0;
    let mut redelivered = 0.0;
    for r in &cluster.routers {
        deferred += metric(&r.base, "eventyard_nats_deferred_total").await;
        redelivered += metric(&r.base, "eventyard_nats_redelivered_total").await;
    }
    assert_eq!(deferred, 20.0, "two retries per event, each handed back to the stream");
    assert!(redelivered >= 20.0, "each retry is a redelivery: {redelivered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_uploaded_on_one_instance_is_routed_by_all_and_deleted_from_all() {
    let server = NatsServer::start();
    let mut cluster = Cluster::with_routes(2, &server.url(), "").await;
    let echo = std::fs::read(crate::support::repo().join("guest-examples/prebuilt/echo.wasm")).unwrap();
    let manifest = format!("world = \"handler\"\nemits = [\"infrahub/response/send.echo.request\"]\nroutes = [{{ match = \"{ECHO_TYPE}\" }}]\n");
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest)
        .part("component", reqwest::multipart::Part::bytes(echo).file_name("plugin.wasm"));
    let res =
        client().put(format!("{}/v1/plugins/echo-up", cluster.routers[0].base)).multipart(form).send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let has_plugin = |base: String| async move {
        let list: Value = client().get(format!("{base}/v1/plugins")).send().await.unwrap().json().await.unwrap();
        list.to_string().contains("echo-up")
    };
    // Every instance (and one started after the upload) loads it and routes by it.
    let late = tempfile::tempdir().unwrap();
    cluster.routers.push(Router::start(late.path(), &cluster.config).await);
    cluster.dirs.push(late);
    for r in &cluster.routers {
        let base = r.base.clone();
        eventually("every instance loads the upload", || has_plugin(base.clone())).await;
    }
    for r in &cluster.routers {
        // Posted to each: routed by the uploaded plugin wherever it is processed.
        let res = client()
            .post(format!("{}/v1/events/{ECHO_TYPE}", r.base))
            .json(&json!({ "message": "up" }))
            .send()
            .await
            .unwrap();
        let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let s = finished(&r.base, &id).await;
        assert_eq!(s["emitted"].as_array().unwrap().len(), 1, "{s}");
    }
    let res = client().delete(format!("{}/v1/plugins/echo-up", cluster.routers[1].base)).send().await.unwrap();
    assert_eq!(res.status(), 204);
    for r in &cluster.routers {
        let base = r.base.clone();
        eventually("every instance drops the deleted upload", || {
            let base = base.clone();
            async move { !has_plugin(base).await }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_larger_than_a_nats_message_is_refused_with_413_and_nothing_is_kept() {
    let server = NatsServer::start();
    let cluster = Cluster::with_routes(1, &server.url(), "[ingest]\nmax_body_bytes = 4000000\n").await;
    let base = &cluster.routers[0].base;
    let big = json!({ "message": "x".repeat(1_100_000) });
    let res = client()
        .post(format!("{base}/v1/events/{ECHO_TYPE}"))
        .header("Idempotency-Key", "big-1")
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large", "{body}");
    assert_eq!(client().get(format!("{base}/v1/events/big-1")).send().await.unwrap().status(), 404, "nothing kept");
    let small = client()
        .post(format!("{base}/v1/events/{ECHO_TYPE}"))
        .header("Idempotency-Key", "big-1")
        .json(&json!({ "message": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 202, "its id was not claimed either");
}

/// A key left by an append that failed (the server went away before the append could give
/// it back, with the status it claimed) does not swallow the producer's retries: while young
/// it may belong to an append still publishing, and a retry is told to try again (never
/// answered as a duplicate of an event not stored); once older than `claim_timeout_ms` with
/// its event neither in the stream nor finished, it is cleared, and the next try is stored
/// with its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_left_by_a_failed_append_is_cleared_and_the_retry_stored() {
    use eventyard::store::{Batch, EventLog};
    let server = NatsServer::start();
    let stream = unique("LEFT");
    let config = NatsConfig {
        urls: vec![server.url()],
        stream: stream.clone(),
        subject_prefix: stream.clone(),
        claim_timeout_ms: 1500,
        ..NatsConfig::default()
    };
    let log = NatsLog::connect(&config, Duration::from_secs(3600)).await.expect("connect to nats-server");
    // What such an append leaves behind: the key, naming an event never published, and the
    // status it claimed.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let keys = js.get_key_value(format!("{stream}_KEYS")).await.unwrap();
    let statuses = js.get_key_value(format!("{stream}_STATUS")).await.unwrap();
    // A routed event, and an unrouted one (whose claimed status already says `processed`).
    let cases = [("order-9", conformance::ROUTED, "queued"), ("order-10", conformance::UNROUTED, "processed")];
    for (id, _, state) in cases {
        let key = eventyard::store::nats::dedup_key(None, None, id);
        keys.put(&key, format!("{id}\n{}", uuid::Uuid::now_v7()).into()).await.unwrap();
        statuses.put(id, format!(r#"{{"id":"{id}","state":"{state}"}}"#).into()).await.unwrap();
    }
    let append = |id: &str, type_name: &str| {
        let events = vec![conformance::event(type_name, Some(id))];
        log.append(Batch { events, routed: vec![type_name == conformance::ROUTED], producer: None })
    };
    for (id, type_name, _) in cases {
        let young = append(id, type_name).await.expect_err("a young key may be an append still publishing: try again");
        assert!(young.to_string().contains("still under way; try again"), "{id}: {young}");
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for (id, type_name, _) in cases {
        let cleared = append(id, type_name).await.expect_err("the left key is cleared and this try refused");
        assert!(cleared.to_string().contains("left its claim, now cleared; try again"), "{id}: {cleared}");
        let retry = append(id, type_name).await.expect("the retry is appended");
        assert_eq!((retry.duplicates, retry.ids.clone()), (0, vec![id.to_string()]), "stored with its own id");
        assert!(log.status(id).await.is_some(), "and found");
        let again = append(id, type_name).await.expect("appended");
        assert_eq!((again.duplicates, again.fresh.len()), (1, 0), "{id}: now a duplicate of a stored event");
    }
}

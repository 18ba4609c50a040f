//! The web dashboard (`/ui`): its JSON endpoints and auth over plain HTTP and WebSocket,
//! then the page itself in a real headless Chromium (through chromedriver and fantoccini):
//! an event posted by the test appears in the live tail, a dead letter replayed from the
//! page leaves its list, a body pasted into the schema browser shows its errors at their
//! JSON pointers. `screenshots` (ignored; run by `scripts/screenshots.sh`) saves one PNG
//! per page for the README.

use crate::support::browser::Browser;
use crate::support::nats::NatsServer;
use crate::support::{client, dead_letters, eventually, next_json, post, Server, ADMIN_TOKEN};
use eventyard::config::Config;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

const ECHO: &str = "infrahub/send.echo.request";

/// The echo handler routed without the right to emit its answer: every echo request it
/// handles fails with `emit_denied` and becomes a dead letter (and again when replayed).
const MUTE_ECHO: &str = r#"
[[plugin]]
name = "mute-echo"
component = "builtin:echo"
world = "handler"

[[route]]
match = "infrahub/send.echo.request"
handlers = ["mute-echo"]
"#;

async fn server() -> Server {
    Server::with_config(Config::parse(MUTE_ECHO).unwrap()).await
}

/// An error body: its status and stable code.
async fn error_of(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (status, body["error"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn the_page_is_open_but_every_piece_of_data_needs_the_admin_token() {
    let s = server().await;
    let anonymous = reqwest::Client::new();
    for asset in ["/ui", "/ui/app.js", "/ui/style.css"] {
        let res = anonymous.get(s.url(asset)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("script-src 'self'"), "{asset}: {csp}");
        assert!(!res.text().await.unwrap().contains("https://"), "{asset} loads nothing from elsewhere");
    }
    for (method, path) in [
        (reqwest::Method::POST, "/ui/ticket"),
        (reqwest::Method::POST, "/v1/validate/infrahub/send.echo.request"),
        (reqwest::Method::GET, "/v1/cluster"),
        (reqwest::Method::GET, "/ui/live"),
    ] {
        let res = anonymous.request(method.clone(), s.url(path)).send().await.unwrap();
        assert_eq!(error_of(res).await, (401, "unauthorized".into()), "{method} {path} without a token");
    }
    let wrong = anonymous.post(s.url("/ui/ticket")).bearer_auth("not-the-admin-token").send().await.unwrap();
    assert_eq!(error_of(wrong).await, (403, "forbidden".into()));
}

#[tokio::test]
async fn validate_checks_a_body_without_ingesting_it() {
    let s = server().await;
    let url = s.url(&format!("/v1/validate/{ECHO}"));
    let ok: Value =
        client().post(&url).json(&json!({"meta": {}, "message": "ping"})).send().await.unwrap().json().await.unwrap();
    assert_eq!(ok, json!({"valid": true, "type": ECHO}));

    let bad = client().post(&url).json(&json!({"meta": {"priority": 9}, "message": 1})).send().await.unwrap();
    assert_eq!(bad.status(), 200);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["valid"], false);
    assert_eq!(crate::support::failing_paths(&bad["errors"]), ["/message", "/meta/priority"]);

    let res = client().post(&url).body("{\"meta\":").header("content-type", "application/json").send().await.unwrap();
    assert_eq!(error_of(res).await, (400, "malformed_json".into()));
    let res = client().post(s.url("/v1/validate/infrahub/no.such.type")).body("{}").send().await.unwrap();
    assert_eq!(error_of(res).await, (404, "unknown_event_type".into()));
    let huge = vec![b' '; eventyard::http::config::IngestConfig::default().max_body_bytes + 1];
    let res = client().post(&url).body(huge).send().await.unwrap();
    assert_eq!(error_of(res).await, (413, "payload_too_large".into()));

    // Nothing was ingested, so nothing was routed to the failing plugin.
    let metric = crate::support::metric(&s, "eventyard_events_accepted_total").await;
    assert_eq!(metric, Some(0.0));
}

#[tokio::test]
async fn plugins_list_limits_and_latency_and_cluster_says_local() {
    let s = server().await;
    post(&s, ECHO, json!({"meta": {}, "message": "ping"})).await;
    dead_letters(&s, "", 1).await;
    let body: Value = client().get(s.url("/v1/plugins")).send().await.unwrap().json().await.unwrap();
    let p = &body["plugins"][0];
    assert_eq!(p["name"], "mute-echo");
    assert_eq!(p["limits"]["deadline_ms"], 100);
    assert_eq!(p["latency"]["count"], 1);
    assert!(p["latency"]["sum_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(p["failures"]["emit_denied"], 1);
    let cluster: Value = client().get(s.url("/v1/cluster")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cluster, json!({"backend": "local"}));
}

/// A ticket from `POST /ui/ticket` opens the live stream once: events and stats frames.
#[tokio::test]
async fn the_live_stream_opens_with_a_one_use_ticket() {
    let s = server().await;
    let ticket: Value = client().post(s.url("/ui/ticket")).send().await.unwrap().json().await.unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_string();
    let url = s.ws_url(&format!("/ui/live?ticket={ticket}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("the ticket opens the stream");
    let id = post(&s, ECHO, json!({"meta": {}, "message": "live"})).await;
    let (mut event, mut stats) = (None, None);
    while event.is_none() || stats.is_none() {
        let frame = next_json(&mut ws).await;
        match frame.get("stats") {
            Some(st) => stats = Some(st.clone()),
            None if frame["id"] == id.as_str() => event = Some(frame),
            None => {}
        }
    }
    assert_eq!(event.unwrap()["data"]["message"], "live");
    let stats = stats.unwrap();
    assert_eq!(stats["plugins"][0]["name"], "mute-echo");
    assert_eq!(stats["cluster"], json!({"backend": "local"}));
    // Used: the same ticket opens nothing.
    let again = crate::support::ws_handshake(&s, &format!("/ui/live?ticket={ticket}")).await;
    assert_eq!(error_of(again).await, (401, "unauthorized".into()));
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
}

/// Two routers sharing a new stream on `nats`.
async fn two_on_nats(nats: &NatsServer) -> (Server, Server) {
    let stream = format!("UI{}", uuid::Uuid::now_v7().simple());
    let text = format!(
        "[store]\nbackend = \"nats\"\n[store.nats]\nurls = [\"{}\"]\nstream = \"{stream}\"\nsubject_prefix = \"{stream}\"\n",
        nats.url()
    );
    (Server::with_config(Config::parse(&text).unwrap()).await, Server::with_config(Config::parse(&text).unwrap()).await)
}

/// Two routers on one NATS log list each other (needs `nats-server`, see `tests/run.sh`).
#[tokio::test]
async fn cluster_lists_the_instances_sharing_a_nats_log() {
    let nats = NatsServer::start();
    let (a, b) = two_on_nats(&nats).await;
    let list = |s: &Server| {
        let url = s.url("/v1/cluster");
        async move { client().get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let (seen_a, seen_b) = (list(&a).await, list(&b).await);
    assert_eq!(seen_a["backend"], "nats");
    assert_ne!(seen_a["instance"], seen_b["instance"]);
    let ids = |v: &Value| v["instances"].as_array().unwrap().iter().map(|i| i["instance"].clone()).collect::<Vec<_>>();
    for seen in [&seen_a, &seen_b] {
        let ids = ids(seen);
        assert!(ids.contains(&seen_a["instance"]) && ids.contains(&seen_b["instance"]), "{seen}");
    }
}

/// The page in a real browser: sign in, see a posted event in the tail (and not while
/// paused or filtered out), replay a dead letter and see it leave the list, validate a body.
#[tokio::test]
async fn the_dashboard_works_in_a_real_browser() {
    let s = server().await;
    let base = s.url("");
    let b = Browser::start(1280, 900).await;
    b.sign_in(&base, ADMIN_TOKEN).await;

    // The tail: an event posted over HTTP appears.
    let first = post(&s, ECHO, json!({"meta": {}, "message": "seen in the tail"})).await;
    b.find(&format!("#tail-rows tr[data-id='{first}']")).await;
    // Filtered out by type, then back.
    b.type_into("#tail-filter", "idem/*").await;
    b.gone(&format!("#tail-rows tr[data-id='{first}']")).await;
    b.type_into("#tail-filter", "infrahub/*").await;
    b.find(&format!("#tail-rows tr[data-id='{first}']")).await;
    // Paused: a new event waits until the tail resumes.
    b.click("#tail-pause").await;
    let second = post(&s, ECHO, json!({"meta": {}, "message": "held while paused"})).await;
    b.text_contains("#tail-note", "1 new").await;
    assert!(b.client.find_all(fantoccini::Locator::Css(&format!("tr[data-id='{second}']"))).await.unwrap().is_empty());
    b.click("#tail-pause").await;
    b.find(&format!("#tail-rows tr[data-id='{second}']")).await;

    // Dead letters: both events failed in `mute-echo`; replay the older one from the page.
    let letters = dead_letters(&s, "", 2).await;
    let letter = letters.iter().find(|l| l["event"]["id"] == first.as_str()).expect("a letter for the first event");
    let letter_id = letter["id"].as_str().unwrap();
    b.page(&base, "dead-letters").await;
    let row = format!("#dl-rows tr[data-id='{letter_id}']");
    b.find(&row).await;
    b.click(&format!("{row} button.replay")).await;
    b.gone(&row).await;
    let still: Vec<Value> = dead_letters(&s, "", 2).await;
    assert!(still.iter().all(|l| l["id"] != letter_id), "the replayed letter left the router's list too");

    // The schema browser: a wrong body shows each error at its JSON pointer.
    b.page(&base, "schemas").await;
    b.click(&format!("#schema-list li[data-type='{ECHO}']")).await;
    b.type_into("#schema-body", r#"{"meta":{"priority":9},"message":1}"#).await;
    b.click("#schema-validate").await;
    b.text_contains("#schema-result li[data-pointer='/meta/priority']", "maximum of 5").await;
    b.text_contains("#schema-result li[data-pointer='/message']", "not of type").await;
    b.type_into("#schema-body", r#"{"meta":{"priority":5},"message":"ok"}"#).await;
    b.click("#schema-validate").await;
    b.text_contains("#schema-result", "valid").await;
    b.close().await;
}

/// One PNG per page into `$SCREENSHOTS_DIR` (default `docs/screenshots`): run by
/// `scripts/screenshots.sh`, not by the suite.
#[tokio::test]
#[ignore = "writes docs/screenshots; run scripts/screenshots.sh"]
async fn screenshots() {
    let config = format!("{}\n{MUTE_ECHO}", include_str!("../src/default.toml"));
    let s = Server::with_config(Config::parse(&config).unwrap()).await;
    let base = s.url("");
    let dir = std::env::var("SCREENSHOTS_DIR")
        .unwrap_or_else(|_| crate::support::repo().join("docs/screenshots").display().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let b = Browser::start(1280, 800).await;
    b.sign_in(&base, ADMIN_TOKEN).await;

    // Some traffic for every page: events of several types, failures, a workflow run.
    let run = client().post(s.url("/v1/workflows/metrics/run")).send().await.unwrap();
    assert!(run.status().is_success(), "{}", run.text().await.unwrap());
    let corpus = std::fs::read_to_string(crate::support::repo().join("tests/corpus/infrahub/check.generator.run.json"));
    let generator_run = serde_json::from_str::<Value>(&corpus.unwrap()).unwrap()["valid"][0].clone();
    for i in 0..12 {
        post(&s, ECHO, json!({"meta": {"priority": 1 + i % 5}, "message": format!("ping {i}")})).await;
        let mut run = generator_run.clone();
        run["validator_id"] = json!(format!("v-{i}"));
        post(&s, "infrahub/check.generator.run", run).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    eventually("the workflow run finished", || async {
        let tasks: Value = client().get(s.url("/v1/tasks")).send().await.unwrap().json().await.unwrap();
        tasks["tasks"][0]["state"] == "done"
    })
    .await;

    let shoot = |name: &'static str| {
        let (b, dir) = (&b, dir.clone());
        async move {
            let png = b.client.screenshot().await.unwrap();
            std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
        }
    };
    b.page(&base, "tail").await;
    shoot("tail").await;
    b.page(&base, "plugins").await;
    b.find("#plugin-cards .card").await;
    shoot("plugins").await;
    b.page(&base, "dead-letters").await;
    b.find("#dl-rows tr.event").await;
    b.click("#dl-rows tr.event").await;
    shoot("dead-letters").await;
    b.page(&base, "schemas").await;
    b.click(&format!("#schema-list li[data-type='{ECHO}']")).await;
    b.type_into("#schema-body", r#"{"meta":{"priority":9},"message":1}"#).await;
    b.click("#schema-validate").await;
    b.find("#schema-result li").await;
    shoot("schemas").await;
    b.page(&base, "workflows").await;
    b.find("#tasks .task").await;
    shoot("workflows").await;
    // The cluster page on a NATS log when a nats-server is at hand (tests/run.sh installs
    // one), else what a lone router shows.
    let nats = crate::support::nats::binary().exists().then(NatsServer::start);
    let cluster = match &nats {
        Some(nats) => Some(two_on_nats(nats).await),
        None => None,
    };
    match &cluster {
        Some((a, _)) => {
            b.sign_in(&a.url(""), ADMIN_TOKEN).await;
            b.page(&a.url(""), "cluster").await;
            b.text_contains("#cluster-note", "2 instance(s)").await;
        }
        None => {
            b.page(&base, "cluster").await;
            b.text_contains("#cluster-note", "alone").await;
        }
    }
    shoot("cluster").await;
    b.close().await;
}

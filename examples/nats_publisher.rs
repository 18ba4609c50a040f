//! A plain JetStream publisher: the reference the NATS backend's ingestion is compared with
//! (benches/nats/run.py). No HTTP, no validation, no router: it publishes the messages the
//! router would publish for accepted `infrahub/send.echo.request` events, to a stream set up
//! as the router sets up its own, and counts PubAcks.
//!
//! - subject `<prefix>.ev.0.<id>` (level 0: an event no route takes), one subject per event;
//! - payload: the event as the router stores it (`id`, `type`, `time`, `priority`, `data`),
//!   ~290 bytes of JSON;
//! - header `Nats-Msg-Id` = the event id (JetStream's deduplication, as the router sends it).
//!
//! `--listen` adds what each router did on its connection before it set `no_echo` (41dee64):
//! a subscription to `<prefix>.ev.>` that gets every event back (each instance's `listen`
//! task), its own skipped by the instance header.
//!
//! `--connections C` tasks share one client (one TCP connection, as the router has) unless
//! `--clients` says more. In single mode each task publishes one event and awaits its PubAck
//! before the next (a wrk connection awaiting its 202); in batch mode (`--batch 100`) it
//! publishes 100 and then awaits all 100 acks (an NDJSON request of 100 lines).
//!
//! ```text
//! CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --example nats_publisher
//! target/release/examples/nats_publisher --url nats://127.0.0.1:4222 --connections 64 --seconds 5 --batch 100
//! ```
//! Prints one line of JSON: events/s, acks, p50/p99 of a publish round (one event, or one
//! batch) in ms.

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use clap::Parser;
use futures_util::future::join_all;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Plain async-nats JetStream publisher (the reference for benches/nats/run.py)")]
struct Args {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Stream name (created if missing, with the router's settings).
    #[arg(long, default_value = "PLAIN")]
    stream: String,
    /// First subject token (`<prefix>.ev.0.<id>`).
    #[arg(long, default_value = "plain")]
    prefix: String,
    /// Concurrent publishers (like wrk's -c).
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// NATS connections the publishers are spread over (the router uses one).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Seconds to publish for.
    #[arg(long, short = 'd', default_value_t = 5.0)]
    seconds: f64,
    /// Events per round: 1 = await each ack before the next; N = publish N, then await all N.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seconds of warm-up before measuring (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Do not send `Nats-Msg-Id` (no deduplication work on the server).
    #[arg(long)]
    no_msg_id: bool,
    /// Also do what every router instance did besides publishing before `no_echo`
    /// (src/store/nats/mod.rs, `Shared::listen`): subscribe on the same connection to
    /// `<prefix>.ev.>` (so the server sends every event back) and skip its own by the
    /// instance header it then sends. A diagnostic: the difference it makes is that
    /// subscription's cost.
    #[arg(long)]
    listen: bool,
    /// A label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

/// The router's header naming the instance that published (`INSTANCE_HEADER`).
const INSTANCE_HEADER: &str = "Eventyard-Instance";

/// The data of the router's benchmark body (benches/http/echo.json).
const DATA: &str = r#"{"meta":{"request_id":"01HZX3K9V7Q2M8N4P6R5T0W1YA","correlation_id":"c0a8-77f1","priority":5},"message":"ping from the end-to-end benchmark"}"#;
const TYPE: &str = "infrahub/send.echo.request";

/// One event as the router serialises it for the stream (field order of `Event`).
fn event(id: &str) -> Bytes {
    let now = time::OffsetDateTime::now_utc();
    let t = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let mut s = String::with_capacity(320);
    s.push_str(r#"{"id":""#);
    s.push_str(id);
    s.push_str(r#"","type":""#);
    s.push_str(TYPE);
    s.push_str(r#"","time":""#);
    s.push_str(&t);
    s.push_str(r#"","priority":5,"data":"#);
    s.push_str(DATA);
    s.push('}');
    debug_assert!(serde_json::from_str::<serde_json::Value>(&s).is_ok());
    Bytes::from(s)
}

struct Shot {
    subject: String,
    message: PublishMessage,
}

fn shot(args: &Args, instance: &str) -> Shot {
    let id = uuid::Uuid::now_v7().to_string();
    let mut message = PublishMessage::build().payload(event(&id));
    if !args.no_msg_id {
        message = message.message_id(&id);
    }
    if args.listen {
        message = message.header(INSTANCE_HEADER, instance);
    }
    Shot { subject: format!("{}.ev.0.{id}", args.prefix), message }
}

/// Publishes one round (one event, or a batch) and awaits every ack.
async fn round(js: &jetstream::Context, args: &Args, instance: &str) -> Result<(), async_nats::Error> {
    if args.batch <= 1 {
        let s = shot(args, instance);
        js.send_publish(s.subject, s.message).await?.await?;
        return Ok(());
    }
    let mut acks = Vec::with_capacity(args.batch);
    for _ in 0..args.batch {
        let s = shot(args, instance);
        acks.push(js.send_publish(s.subject, s.message).await?);
    }
    for ack in join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await {
        ack?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let args = Arc::new(Args::parse());
    let mut contexts = Vec::new();
    for _ in 0..args.clients.max(1) {
        let client = async_nats::ConnectOptions::new().name("nats_publisher").connect(args.url.as_str()).await?;
        contexts.push(jetstream::new(client));
    }
    // The stream as the router creates its own (src/store/nats/mod.rs, NatsLog::connect).
    contexts[0]
        .get_or_create_stream(stream::Config {
            name: args.stream.clone(),
            subjects: vec![format!("{}.ev.>", args.prefix)],
            storage: stream::StorageType::File,
            num_replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            allow_direct: true,
            ..Default::default()
        })
        .await?;

    let instance: Arc<str> = uuid::Uuid::now_v7().to_string().into();
    let mut listeners = Vec::new();
    let echoed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    if args.listen {
        for js in &contexts {
            let mut sub = js.client().subscribe(format!("{}.ev.>", args.prefix)).await?;
            let (instance, echoed) = (instance.clone(), echoed.clone());
            listeners.push(tokio::spawn(async move {
                use futures_util::StreamExt;
                while let Some(m) = sub.next().await {
                    let own = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(INSTANCE_HEADER))
                        .is_some_and(|v| v.as_str() == &*instance);
                    if own {
                        echoed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup);
    let measuring = Arc::new(AtomicBool::new(args.warmup <= 0.0));
    let end = warm_until + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        let js = contexts[i % contexts.len()].clone();
        let args = args.clone();
        let measuring = measuring.clone();
        let instance = instance.clone();
        tasks.push(tokio::spawn(async move {
            let (mut events, mut errors) = (0u64, 0u64);
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let counted = measuring.load(Ordering::Relaxed);
                match round(&js, &args, &instance).await {
                    Ok(()) if counted => {
                        events += args.batch.max(1) as u64;
                        latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("publish failed: {e}");
                        }
                    }
                }
            }
            (events, errors, latencies)
        }));
    }
    tokio::time::sleep_until(warm_until.into()).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (mut events, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
    for task in tasks {
        let (e, x, l) = task.await?;
        events += e;
        errors += x;
        latencies.extend(l);
    }
    // Rounds still in flight at the deadline finish after it: count the time they took.
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let out = serde_json::json!({
        "label": args.label,
        "mode": if args.batch <= 1 { "single".to_string() } else { format!("batch{}", args.batch) },
        "connections": args.connections,
        "clients": contexts.len(),
        "msg_id": !args.no_msg_id,
        "listen": args.listen,
        "echoed": echoed.load(Ordering::Relaxed),
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "events": events,
        "errors": errors,
        "events_per_s": (events as f64 / elapsed).round(),
        "rounds_per_s": (latencies.len() as f64 / elapsed).round(),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "payload_bytes": event(&uuid::Uuid::now_v7().to_string()).len(),
    });
    println!("{out}");
    for listener in listeners {
        listener.abort();
    }
    for js in &contexts {
        js.client().flush().await?;
    }
    Ok(())
}

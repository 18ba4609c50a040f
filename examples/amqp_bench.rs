//! The AMQP side of benches/amqp/run.py: fills a RabbitMQ queue with echo requests, and is the
//! plain consumer the router's AMQP source is compared with (issue 14).
//!
//! - `publish`: declares the durable topic exchange `--exchange` and the durable queue
//!   `--queue` bound to it with `send.*.*`, then publishes `--count` persistent messages
//!   (delivery mode 2) with publisher confirms, `--window` at a time (publish them all, then
//!   await their confirms). Each has a unique `message_id` (a UUIDv7, the router's event id),
//!   routing key `send.echo.request` and the body of benches/http/end_to_end.py's
//!   `infrahub/send.echo.request` event.
//! - `consume`: the plain consumer. `basic_consume` with manual acks and `basic_qos(--prefetch)`,
//!   acking each delivery without any work until `--count`. `--concurrency 1` (the default)
//!   awaits each ack before taking the next delivery; `--concurrency 64` acks up to 64
//!   deliveries at once, the way the router's source takes them (`for_each_concurrent`).
//!   It prints `{"ready": true}` once consuming, so the script can pause it before the queue
//!   is filled, and at the end one line of JSON: the time and this process's CPU from the
//!   first delivery to the last ack.
//! - `purge`: empties the queue (after a measurement given up half-way).
//!
//! ```text
//! CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --example amqp_bench
//! target/release/examples/amqp_bench publish --url amqp://guest:guest@127.0.0.1:5672/%2f --queue bench --count 20000
//! target/release/examples/amqp_bench consume --url amqp://guest:guest@127.0.0.1:5672/%2f --queue bench --count 20000 --prefetch 64
//! ```

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The data of the router's benchmark event (benches/http/echo.json).
const BODY: &str = r#"{"meta":{"request_id":"01HZX3K9V7Q2M8N4P6R5T0W1YA","correlation_id":"c0a8-77f1","priority":5},"message":"ping from the end-to-end benchmark"}"#;
const ROUTING_KEY: &str = "send.echo.request";

#[derive(Parser, Debug)]
#[command(about = "RabbitMQ publisher and plain consumer for benches/amqp/run.py")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Declare the queue and publish `--count` persistent messages with confirms.
    Publish {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "bench")]
        queue: String,
        /// A durable topic exchange bound to the queue with `send.*.*`.
        #[arg(long, default_value = "bench.events")]
        exchange: String,
        #[arg(long, default_value_t = 20_000)]
        count: u64,
        /// Messages published before their confirms are awaited.
        #[arg(long, default_value_t = 1_000)]
        window: usize,
    },
    /// Consume `--count` messages, acking each without any work.
    Consume {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "bench")]
        queue: String,
        #[arg(long, default_value_t = 20_000)]
        count: u64,
        #[arg(long, default_value_t = 64)]
        prefetch: u16,
        /// Deliveries acked at once: 1 awaits each ack before the next delivery.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// Empty the queue.
    Purge {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "bench")]
        queue: String,
    },
}

/// A connection (named as the router names its own, through the same
/// [`eventyard::amqp::connect`]) and a channel on it.
async fn connect(url: &str, name: &str) -> Result<(Connection, Channel), Error> {
    let connection = eventyard::amqp::connect(url, &format!("amqp_bench {name}")).await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// The queue as every subcommand (and the router, with `declare = false`) sees it: durable,
/// no arguments.
async fn declare_queue(channel: &Channel, queue: &str) -> Result<(), Error> {
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), durable, FieldTable::default()).await?;
    Ok(())
}

/// CPU seconds this process used so far (user + system, all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime, in clock ticks (100 per second on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn publish(url: &str, queue: &str, exchange: &str, count: u64, window: usize) -> Result<(), Error> {
    let (connection, channel) = connect(url, "publish").await?;
    eventyard::amqp::declare_exchange(&channel, exchange, "topic").await?;
    declare_queue(&channel, queue).await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "send.*.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let started = Instant::now();
    let (mut sent, mut nacked) = (0u64, 0u64);
    while sent < count {
        let n = (count - sent).min(window.max(1) as u64);
        let mut confirms = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let id = uuid::Uuid::now_v7().to_string();
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(id.as_str().into());
            let options = BasicPublishOptions::default();
            confirms.push(
                channel
                    .basic_publish(exchange.into(), ROUTING_KEY.into(), options, BODY.as_bytes(), properties)
                    .await?,
            );
        }
        for confirm in confirms {
            if !confirm.await?.is_ack() {
                nacked += 1;
            }
        }
        sent += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "published": sent,
        "nacked": nacked,
        "seconds": round3(elapsed),
        "msgs_per_s": (sent as f64 / elapsed).round(),
        "body_bytes": BODY.len(),
    });
    println!("{out}");
    connection.close(200, "done".into()).await?;
    if nacked > 0 {
        return Err(format!("{nacked} messages nacked by the broker").into());
    }
    Ok(())
}

async fn consume(url: &str, queue: &str, count: u64, prefetch: u16, concurrency: usize) -> Result<(), Error> {
    let (connection, channel) = connect(url, "consume").await?;
    declare_queue(&channel, queue).await?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let consumer = channel
        .basic_consume(queue.into(), "amqp_bench".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    println!("{}", serde_json::json!({ "ready": true }));
    std::io::stdout().flush()?;
    // Set by the first delivery: the clock and the CPU start there.
    let start: Mutex<Option<(Instant, f64)>> = Mutex::new(None);
    let acked = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    consumer
        .take(count as usize)
        .for_each_concurrent(concurrency.max(1), |delivery| {
            let (start, acked, failed) = (&start, &acked, &failed);
            async move {
                {
                    let mut s = start.lock().unwrap();
                    if s.is_none() {
                        *s = Some((Instant::now(), cpu_seconds()));
                    }
                }
                let ok = match delivery {
                    Ok(d) => d.ack(BasicAckOptions::default()).await.is_ok(),
                    Err(_) => false,
                };
                if ok { acked } else { failed }.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
    let (t0, cpu0) = start.lock().unwrap().unwrap_or((Instant::now(), cpu_seconds()));
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let acked = acked.load(Ordering::Relaxed);
    let out = serde_json::json!({
        "acked": acked,
        "failed": failed.load(Ordering::Relaxed),
        "prefetch": prefetch,
        "concurrency": concurrency.max(1),
        "seconds": elapsed,
        "msgs_per_s": (acked as f64 / elapsed).round(),
        "cpu_s": round3(cpu),
        "cpu_us_per_msg": round3(cpu * 1e6 / acked.max(1) as f64),
    });
    println!("{out}");
    connection.close(200, "done".into()).await?;
    Ok(())
}

async fn purge(url: &str, queue: &str) -> Result<(), Error> {
    let (connection, channel) = connect(url, "purge").await?;
    declare_queue(&channel, queue).await?;
    let purged = channel.queue_purge(queue.into(), QueuePurgeOptions::default()).await?;
    println!("{}", serde_json::json!({ "purged": purged }));
    connection.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    match Cli::parse().command {
        Command::Publish { url, queue, exchange, count, window } => {
            publish(&url, &queue, &exchange, count, window).await
        }
        Command::Consume { url, queue, count, prefetch, concurrency } => {
            consume(&url, &queue, count, prefetch, concurrency).await
        }
        Command::Purge { url, queue } => purge(&url, &queue).await,
    }
}

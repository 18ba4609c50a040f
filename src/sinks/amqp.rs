//! The AMQP sink: routed events published to an exchange (RabbitMQ), one message per
//! event, with publisher confirms. The message is the event's data (JSON); its properties
//! carry the event: `message_id` = the event id (a consumer dedups redeliveries with it),
//! `type`, `priority`, `correlation_id` (Infrahub's `meta.correlation_id`, else the event
//! id), `timestamp`, persistent delivery, and the CloudEvents AMQP binding's
//! `cloudEvents:*` headers beside the configured ones. The routing key is the configured
//! one or the event's type minus `strip_prefix`.
//!
//! Deliveries are pipelined: each is a task on the router's runtime publishing on the one
//! channel, and the worker that started it goes on. A delivery is done when the broker
//! confirmed the message; a broker that is down, cuts
//! the connection or does not confirm within `confirm_timeout_ms` fails the attempt as
//! `sink_unavailable`; a negative confirm, or a `mandatory` message no queue takes, as
//! `sink_refused`. Both are retried by the route, then dead-lettered. The connection is
//! made on the first delivery and made again after it drops, which the log and `/metrics`
//! tell (`eventyard_amqp_sink_connected`, `eventyard_amqp_sink_connects_total`).

use super::config::Resolved;
use crate::event::{rfc3339, Event, Failure, FailureKind};
use crate::metrics::{render_per_part, PartSeries, Render};
use crate::router::sink::{Done, Sink};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// AMQP's persistent delivery mode: the broker writes the message to disk (in a durable
/// queue) before it confirms.
const PERSISTENT: u8 = 2;

pub struct AmqpSink {
    inner: Arc<Inner>,
    /// The runtime the connection lives on; deliveries come from worker threads outside it.
    runtime: tokio::runtime::Handle,
}

struct Inner {
    config: Resolved,
    link: tokio::sync::Mutex<Option<Link>>,
    counters: Counters,
}

/// One connection and its channel in confirm mode.
struct Link {
    connection: Connection,
    channel: Channel,
}

#[derive(Default)]
pub struct Counters {
    connected: AtomicU64,
    connects: AtomicU64,
    published: AtomicU64,
    failed: AtomicU64,
}

impl AmqpSink {
    /// Made inside the tokio runtime that will run its connection (the router's).
    pub fn new(config: Resolved) -> Self {
        let inner = Arc::new(Inner { config, link: tokio::sync::Mutex::new(None), counters: Counters::default() });
        AmqpSink { inner, runtime: tokio::runtime::Handle::current() }
    }
}

impl Sink for AmqpSink {
    fn name(&self) -> &str {
        &self.inner.config.name
    }

    fn deliver(&self, event: Event, done: Done) {
        let inner = self.inner.clone();
        // Deliveries run side by side on the router's runtime, pipelined on the one channel;
        // a runtime that is shutting down drops the task, and the event, unfinished in the
        // log, is delivered again after the restart.
        self.runtime.spawn(async move {
            let result = inner.deliver(&event).await;
            let counter = if result.is_ok() { &inner.counters.published } else { &inner.counters.failed };
            counter.fetch_add(1, Ordering::Relaxed);
            done(result);
        });
    }
}

fn unavailable(message: String) -> Failure {
    Failure::new(FailureKind::SinkUnavailable, message)
}

impl Inner {
    async fn deliver(&self, event: &Event) -> Result<(), Failure> {
        let timeout = Duration::from_millis(self.config.confirm_timeout_ms);
        match tokio::time::timeout(timeout, self.publish(event)).await {
            Ok(result) => result,
            Err(_) => {
                // A connection that stalls is not trusted with the next message.
                self.drop_link("no confirm in time").await;
                Err(unavailable(format!("the broker did not confirm within {} ms", timeout.as_millis())))
            }
        }
    }

    async fn publish(&self, event: &Event) -> Result<(), Failure> {
        let channel = self.channel().await?;
        let c = &self.config;
        let key = match &c.routing_key {
            Some(key) => key.as_str(),
            None => event.type_name.strip_prefix(c.strip_prefix.as_str()).unwrap_or(&event.type_name),
        };
        let options = BasicPublishOptions { mandatory: c.mandatory, ..BasicPublishOptions::default() };
        let body = event.data.text().as_bytes();
        let refused = |why: String| Failure::new(FailureKind::SinkRefused, why);
        match crate::amqp::publish_confirmed(&channel, &c.exchange, key, options, body, self.properties(event)).await {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(returned))) => Err(refused(format!(
                "no queue takes it: exchange `{}`, routing key `{key}` ({} {})",
                c.exchange, returned.reply_code, returned.reply_text
            ))),
            Ok(Confirmation::Nack(_)) => {
                Err(refused(format!("the broker refused it (nack): exchange `{}`", c.exchange)))
            }
            Ok(Confirmation::NotRequested) => Err(unavailable("the channel is not in confirm mode".into())),
            Err(e) => {
                self.drop_link(&e.to_string()).await;
                Err(unavailable(format!("publish failed: {e}")))
            }
        }
    }

    /// The channel of the live connection, connecting first when there is none.
    async fn channel(&self) -> Result<Channel, Failure> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref() {
            if l.channel.status().connected() {
                return Ok(l.channel.clone());
            }
            tracing::warn!(sink = %self.config.name, "AMQP sink lost its connection; connecting again");
            self.counters.connected.store(0, Ordering::Relaxed);
            *link = None;
        }
        let fresh = self.connect().await.map_err(|e| unavailable(format!("cannot reach the broker: {e}")))?;
        let channel = fresh.channel.clone();
        *link = Some(fresh);
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        self.counters.connected.store(1, Ordering::Relaxed);
        tracing::info!(sink = %self.config.name, exchange = %self.config.exchange, "AMQP sink connected");
        Ok(channel)
    }

    async fn connect(&self) -> Result<Link, lapin::Error> {
        let c = &self.config;
        let connection = crate::amqp::connect(&c.url, &format!("sink {}", c.name)).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        if c.declare && !c.exchange.is_empty() {
            crate::amqp::declare_exchange(&channel, &c.exchange, &c.exchange_type).await?;
        }
        Ok(Link { connection, channel })
    }

    /// Forgets the connection after a failure (the next delivery connects again).
    async fn drop_link(&self, why: &str) {
        if let Some(old) = self.link.lock().await.take() {
            self.counters.connected.store(0, Ordering::Relaxed);
            tracing::warn!(sink = %self.config.name, error = why, "AMQP sink dropped its connection");
            tokio::spawn(async move {
                let _ = old.connection.close(0, "eventyard sink reconnecting".into()).await;
            });
        }
    }

    fn properties(&self, event: &Event) -> BasicProperties {
        let time = rfc3339(event.time);
        let mut headers = FieldTable::default();
        let binding = [
            ("cloudEvents:specversion", "1.0"),
            ("cloudEvents:id", event.id.as_str()),
            ("cloudEvents:type", &event.type_name),
            ("cloudEvents:source", event.source.as_deref().unwrap_or("eventyard")),
            ("cloudEvents:time", time.as_str()),
        ];
        let configured = self.config.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        for (name, value) in binding.into_iter().chain(configured) {
            headers.insert(name.into(), AMQPValue::LongString(value.into()));
        }
        BasicProperties::default()
            .with_message_id(event.id.as_str().into())
            .with_type(event.type_name.as_ref().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_priority(event.priority)
            .with_correlation_id(event.data.correlation_id().unwrap_or(&event.id).into())
            .with_timestamp(event.time.unix_timestamp().max(0) as u64)
            .with_headers(headers)
    }
}

/// The AMQP sinks' lines of `/metrics`.
pub struct SinksMetrics(pub Vec<Arc<AmqpSink>>);

impl Render for SinksMetrics {
    fn render(&self, out: &mut String) {
        let series: [PartSeries<Counters>; 4] = [
            ("eventyard_amqp_sink_connected", "1 while the AMQP sink holds a connection to its broker.", |c| {
                &c.connected
            }),
            (
                "eventyard_amqp_sink_connects_total",
                "Connections the AMQP sink made (the first and each after a drop).",
                |c| &c.connects,
            ),
            ("eventyard_amqp_sink_published_total", "Events the AMQP sink's broker confirmed.", |c| &c.published),
            (
                "eventyard_amqp_sink_failures_total",
                "Deliveries that failed (retried by the route, then dead-lettered).",
                |c| &c.failed,
            ),
        ];
        let parts: Vec<(&str, &Counters)> = self.0.iter().map(|s| (s.name(), &s.inner.counters)).collect();
        render_per_part(out, "sink", &parts, &series);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With nothing listening, a delivery fails at once as retryable `sink_unavailable`
    /// (the route retries it), and the failure is counted.
    #[test]
    fn a_delivery_to_a_broker_that_is_down_fails_retryably() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let toml = format!("name = \"down\"\nurl = \"amqp://guest:guest@127.0.0.1:{port}/%2f\"\nexchange = \"x\"\n");
        let config: super::super::config::AmqpSinkConfig = toml::from_str(&toml).unwrap();
        let sink = Arc::new(runtime.block_on(async { AmqpSink::new(config.resolve()) }));
        let event = Event {
            id: "e1".into(),
            type_name: crate::name::Name::intern("infrahub/send.echo.request"),
            time: time::OffsetDateTime::now_utc(),
            priority: 3,
            source: None,
            data: crate::event::Body::from_value(serde_json::json!({ "message": "x" })),
            hops: 0,
            keyed: false,
            pin: Default::default(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        sink.deliver(event, Box::new(move |result| tx.send(result).unwrap()));
        let failure = rx.recv_timeout(Duration::from_secs(30)).unwrap().expect_err("nothing listens");
        assert_eq!(failure.kind, FailureKind::SinkUnavailable);
        assert!(failure.retryable);
        let mut out = String::new();
        SinksMetrics(vec![sink]).render(&mut out);
        assert!(out.contains("eventyard_amqp_sink_failures_total{sink=\"down\"} 1\n"), "{out}");
        assert!(out.contains("eventyard_amqp_sink_connected{sink=\"down\"} 0\n"), "{out}");
    }
}

//! AMQP 0-9-1 sources (RabbitMQ): a queue's messages made into events. Each message is
//! typed (by routing key, a fixed type, a body field or the CloudEvents AMQP binding; see
//! [`config::TypeFrom`]), validated like an HTTP event, admitted, and acked only once its
//! event is durable in the router's log. Its `message_id` (or CloudEvents id) is the
//! event's id, so a redelivered message is a duplicate, not a second event; its AMQP
//! priority is the event's. A message that is not a valid event is not lost: it goes, with
//! its errors, to the `dead_letter_exchange` if one is set, else into the source's
//! rejected-records file, and is then acked. A message the router cannot take now
//! (overloaded, the log unavailable) is handed back to the broker after [`RETRY_PAUSE`].
//!
//! A request with `reply_to` (Infrahub's RPC, `reply = true`) is answered with its response
//! event (`infrahub/response/<type>`, matched by Infrahub's `meta.correlation_id`), published
//! to the default exchange with the request's `correlation_id`.
//!
//! The connection recovers by itself: when it drops (broker restart, network cut) the
//! source says so in the log and in `/metrics` (`eventyard_amqp_connected`,
//! `eventyard_amqp_reconnects_total`) and connects again with a growing pause, up to
//! [`MAX_RECONNECT_PAUSE`]; unacked messages go back to the queue and are delivered again.

pub mod config;

use super::Reason;
use crate::files;
use crate::metrics::{render_per_part, PartSeries, Render};
use crate::router::admit::{prepare, Data, Envelope, Producer};
use crate::router::{AcceptError, Pipeline};
use crate::schema::Registry;
use config::{Resolved, TypeFrom};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::{json, Value};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Messages being made into events at once (each waits for its durable append); at most
/// the prefetch arrive anyway.
pub const CONCURRENCY: usize = 64;
/// When a message the router could not take now is handed back.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// First pause before connecting again; doubled up to [`MAX_RECONNECT_PAUSE`].
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(200);
pub const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counters {
    consumed: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    handed_back: AtomicU64,
    replies: AtomicU64,
    reconnects: AtomicU64,
    connected: AtomicU64,
}

pub struct AmqpSource {
    config: Resolved,
    /// Where rejected records are kept without a dead-letter exchange.
    rejected_file: PathBuf,
    counters: Counters,
}

/// What one connection gives the message handlers.
struct Link {
    /// Publishes replies and rejected messages, with publisher confirms.
    publish: Channel,
}

impl AmqpSource {
    /// `dir`: where the rejected-records file goes (the store's directory).
    pub fn new(config: Resolved, dir: &std::path::Path) -> Self {
        let rejected_file = dir.join(format!("rejected-{}.jsonl", config.name));
        AmqpSource { config, rejected_file, counters: Counters::default() }
    }

    /// Consumes until the task is dropped, connecting again whenever the connection drops.
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>, pipeline: Arc<Pipeline>) {
        let mut pause = FIRST_RECONNECT_PAUSE;
        loop {
            match self.session(&registry, &pipeline).await {
                Ok(()) => tracing::warn!(source = %self.config.name, "AMQP consumer ended; connecting again"),
                Err(e) => {
                    tracing::warn!(source = %self.config.name, error = %e, "AMQP connection lost or refused; connecting again")
                }
            }
            // A session that got as far as consuming starts the back-off afresh.
            if self.counters.connected.swap(0, Ordering::Relaxed) == 1 {
                pause = FIRST_RECONNECT_PAUSE;
            }
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
        }
    }

    /// One connection: declares the topology, then takes messages until it drops.
    async fn session(&self, registry: &Registry, pipeline: &Pipeline) -> Result<(), lapin::Error> {
        let c = &self.config;
        let connection = crate::amqp::connect(&c.url, &format!("source {}", c.name)).await?;
        let consume = connection.create_channel().await?;
        let publish = connection.create_channel().await?;
        publish.confirm_select(ConfirmSelectOptions::default()).await?;
        if c.declare {
            let mut arguments = FieldTable::default();
            if let Some(p) = c.max_priority {
                arguments.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(p));
            }
            let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
            consume.queue_declare(c.queue.as_str().into(), durable, arguments).await?;
            if let Some((exchange, kind)) = &c.exchange {
                crate::amqp::declare_exchange(&consume, exchange, kind).await?;
                for key in &c.bindings {
                    let (q, e) = (c.queue.as_str().into(), exchange.as_str().into());
                    consume
                        .queue_bind(q, e, key.as_str().into(), QueueBindOptions::default(), FieldTable::default())
                        .await?;
                }
            }
        }
        consume.basic_qos(c.prefetch, BasicQosOptions::default()).await?;
        let consumer = consume
            .basic_consume(
                c.queue.as_str().into(),
                format!("eventyard-{}", c.name).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.counters.connected.store(1, Ordering::Relaxed);
        tracing::info!(source = %c.name, queue = %c.queue, "AMQP source consuming");
        let link = Link { publish };
        consumer
            .for_each_concurrent(CONCURRENCY, |delivery| {
                let link = &link;
                async move {
                    match delivery {
                        Ok(delivery) => self.take(registry, pipeline, link, delivery).await,
                        Err(e) => tracing::warn!(source = %self.config.name, error = %e, "AMQP delivery failed"),
                    }
                }
            })
            .await;
        let _ = connection.close(0, "eventyard reconnecting".into()).await;
        Ok(())
    }

    async fn take(&self, registry: &Registry, pipeline: &Pipeline, link: &Link, delivery: Delivery) {
        self.counters.consumed.fetch_add(1, Ordering::Relaxed);
        let props = &delivery.properties;
        let header = |names: &[&str]| -> Option<String> {
            let headers = props.headers().as_ref()?;
            names.iter().find_map(|n| headers.inner().get(*n).and_then(crate::amqp::text))
        };
        let body = String::from_utf8_lossy(&delivery.data).into_owned();
        let type_name = self.type_of(&delivery, &body, &header);
        let envelope = Envelope {
            id: props
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_string())
                .or_else(|| header(&["cloudEvents:id", "cloudEvents_id", "ce-id"])),
            source: header(&["cloudEvents:source", "cloudEvents_source", "ce-source"])
                .or_else(|| Some(format!("amqp:{}", self.config.name))),
            time: header(&["cloudEvents:time", "cloudEvents_time", "ce-time"])
                .and_then(|t| time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()),
            priority: props.priority().map(|p| p.clamp(1, 5)),
        };
        let prepared = match type_name.as_deref().map(|t| registry.get(t)) {
            Some(Ok(ty)) => prepare(ty, Data::Text(&body), envelope).map_err(Reason::of),
            _ => Err((
                Reason::UnknownType,
                json!([{ "message": format!("no event type {:?}", type_name.as_deref().unwrap_or("")) }]),
            )),
        };
        let event = match prepared {
            Ok(event) => event,
            Err((reason, errors)) => {
                self.reject(link, &delivery, type_name.as_deref(), reason, errors).await;
                return;
            }
        };
        // Registered before the admission, so an answer cannot come before its waiter.
        let answer = self.config.reply.then(|| self.awaited_reply(pipeline, &delivery, &event)).flatten();
        match pipeline.admit(vec![event], Producer::default()).await {
            Ok(_) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    tracing::warn!(source = %self.config.name, error = %e, "ack failed; the message comes again (a duplicate if it has an id)");
                }
            }
            Err(AcceptError::Overloaded) | Err(AcceptError::Store(_)) => {
                self.counters.handed_back.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY_PAUSE).await;
                let _ = delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
                return;
            }
        }
        if let Some((reply_to, correlation_id, waiting)) = answer {
            self.reply(link, reply_to, correlation_id, waiting).await;
        }
    }

    /// The event type of a message, by the configured rule.
    fn type_of(&self, delivery: &Delivery, body: &str, header: &dyn Fn(&[&str]) -> Option<String>) -> Option<String> {
        let c = &self.config;
        match c.type_from {
            TypeFrom::RoutingKey => Some(format!("{}{}", c.type_prefix, delivery.routing_key.as_str())),
            TypeFrom::Fixed => c.fixed_type.clone(),
            TypeFrom::Cloudevents => header(&["cloudEvents:type", "cloudEvents_type", "ce-type"]),
            TypeFrom::Body => {
                let value: Value = serde_json::from_str(body).ok()?;
                let found = c.type_field.iter().try_fold(&value, |v, key| v.get(key))?.as_str()?;
                Some(c.type_map.get(found).cloned().unwrap_or_else(|| format!("{}{found}", c.type_prefix)))
            }
        }
    }

    /// For a request with `reply_to`: its waiter for the response, by Infrahub's
    /// `meta.correlation_id` (the response event's), and where to send the answer.
    fn awaited_reply<'p>(
        &self,
        pipeline: &'p Pipeline,
        delivery: &Delivery,
        event: &crate::event::Event,
    ) -> Option<(String, String, crate::router::rpc::Waiting<'p>)> {
        let reply_to = delivery.properties.reply_to().as_ref()?.as_str().to_string();
        let correlation_id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_string())
            .or_else(|| event.data.correlation_id().map(String::from))?;
        let key = event.data.correlation_id().unwrap_or(&correlation_id).to_string();
        match pipeline.core().rpc.register(&key) {
            Ok(waiting) => Some((reply_to, correlation_id, waiting)),
            Err(e) => {
                tracing::warn!(source = %self.config.name, error = %e, "request not answered");
                None
            }
        }
    }

    /// Waits for the response event and publishes its data to `reply_to`.
    async fn reply(
        &self,
        link: &Link,
        reply_to: String,
        correlation_id: String,
        mut waiting: crate::router::rpc::Waiting<'_>,
    ) {
        let timeout = Duration::from_millis(self.config.reply_timeout_ms);
        let Ok(Ok(response)) = tokio::time::timeout(timeout, &mut waiting.reply).await else {
            tracing::warn!(source = %self.config.name, correlation_id, "no response event in time; the request stays unanswered");
            return;
        };
        let properties = BasicProperties::default()
            .with_correlation_id(correlation_id.as_str().into())
            .with_content_type("application/json".into())
            .with_type(response.type_name.as_ref().into())
            .with_message_id(response.id.as_str().into());
        let body = response.data.text().as_bytes();
        match crate::amqp::publish_confirmed(
            &link.publish,
            "",
            &reply_to,
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        {
            Ok(c) if c.is_ack() => {
                self.counters.replies.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => tracing::warn!(source = %self.config.name, "the broker refused a reply (nack)"),
            Err(e) => tracing::warn!(source = %self.config.name, error = %e, "a reply was not published"),
        }
    }

    /// Keeps a message that is not a valid event, with why; then acks it. If it cannot be
    /// kept, it is handed back to the broker instead (never dropped).
    async fn reject(&self, link: &Link, delivery: &Delivery, type_name: Option<&str>, reason: Reason, errors: Value) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source = %self.config.name, reason = reason.as_str(), r#type = ?type_name, "message rejected");
        let kept = match &self.config.dead_letter_exchange {
            Some(exchange) => {
                let mut headers = delivery.properties.headers().clone().unwrap_or_default();
                headers.insert("x-eventyard-error".into(), AMQPValue::LongString(reason.as_str().into()));
                headers.insert("x-eventyard-errors".into(), AMQPValue::LongString(errors.to_string().into()));
                let properties = delivery.properties.clone().with_headers(headers);
                let key = delivery.routing_key.as_str();
                let options = BasicPublishOptions::default();
                crate::amqp::publish_confirmed(&link.publish, exchange, key, options, &delivery.data, properties)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.is_ack().then_some(()).ok_or_else(|| "the broker refused it (nack)".to_string()))
            }
            None => self.keep(delivery, type_name, reason, errors).map_err(|e| e.to_string()),
        };
        match kept {
            Ok(()) => {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            Err(e) => {
                tracing::error!(source = %self.config.name, error = %e, "cannot keep a rejected message; handed back");
                tokio::time::sleep(RETRY_PAUSE).await;
                let _ = delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
            }
        }
    }

    /// Appends a rejected record (one JSON line, synced) to the source's file.
    fn keep(&self, delivery: &Delivery, type_name: Option<&str>, reason: Reason, errors: Value) -> std::io::Result<()> {
        let p = &delivery.properties;
        let record = json!({
            "source": self.config.name,
            "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).ok(),
            "routing_key": delivery.routing_key.as_str(),
            "exchange": delivery.exchange.as_str(),
            "message_id": p.message_id().as_ref().map(|m| m.as_str()),
            "type": type_name,
            "error": reason.as_str(),
            "errors": errors,
            "data": String::from_utf8_lossy(&delivery.data),
        });
        let mut line = record.to_string();
        line.push('\n');
        if let Some(dir) = self.rejected_file.parent() {
            files::private_dir(dir)?;
        }
        let mut f = files::open_append(&self.rejected_file)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()
    }
}

/// The AMQP sources' lines of `/metrics`: each series once, a line per source (a series'
/// `HELP` and `TYPE` may appear only once in the text format).
pub struct SourcesMetrics(pub Vec<Arc<AmqpSource>>);

impl Render for SourcesMetrics {
    fn render(&self, out: &mut String) {
        let series: [PartSeries<Counters>; 7] = [
            ("eventyard_amqp_connected", "1 while the AMQP source is connected and consuming.", |c| &c.connected),
            (
                "eventyard_amqp_reconnects_total",
                "Times the AMQP source lost its connection and connected again.",
                |c| &c.reconnects,
            ),
            ("eventyard_amqp_messages_total", "Messages the AMQP source received.", |c| &c.consumed),
            (
                "eventyard_amqp_accepted_total",
                "Messages made into durable events (duplicates included) and acked.",
                |c| &c.accepted,
            ),
            ("eventyard_amqp_rejected_total", "Messages that were not valid events, kept as rejected records.", |c| {
                &c.rejected
            }),
            (
                "eventyard_amqp_handed_back_total",
                "Messages handed back to the broker because the router could not take them then.",
                |c| &c.handed_back,
            ),
            ("eventyard_amqp_replies_total", "Requests answered on their reply_to queue.", |c| &c.replies),
        ];
        let parts: Vec<(&str, &Counters)> = self.0.iter().map(|s| (s.config.name.as_str(), &s.counters)).collect();
        render_per_part(out, "source", &parts, &series);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sources_share_each_series_help_and_type() {
        let source = |name: &str| {
            let toml = format!("name = \"{name}\"\nurl = \"amqp://localhost\"\nqueue = \"q\"\n");
            let config: config::AmqpSourceConfig = toml::from_str(&toml).expect("a source");
            Arc::new(AmqpSource::new(config.resolve(), std::path::Path::new("/tmp")))
        };
        let (a, b) = (source("a"), source("b"));
        b.counters.rejected.store(3, Ordering::Relaxed);
        let mut out = String::new();
        SourcesMetrics(vec![a, b]).render(&mut out);
        assert_eq!(out.matches("# HELP eventyard_amqp_rejected_total").count(), 1, "{out}");
        assert!(out.contains("eventyard_amqp_rejected_total{source=\"a\"} 0\n"), "{out}");
        assert!(out.contains("eventyard_amqp_rejected_total{source=\"b\"} 3\n"), "{out}");
        let mut none = String::new();
        SourcesMetrics(Vec::new()).render(&mut none);
        assert!(none.is_empty(), "no AMQP source, no AMQP lines");
    }
}

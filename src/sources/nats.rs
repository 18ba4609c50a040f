//! The NATS source: producers publish events straight to JetStream, on the subject
//! `<prefix>.in.<type>` (the event type in the subject, as `eventyard.in.idem/state`) or
//! with the type in a CloudEvents header (`ce-type`); the body is the event's data. The
//! stream `<stream>_IN` keeps them until one instance (a shared durable consumer) has made
//! each an event: validated like an HTTP event, admitted, durable, then acked.
//!
//! Headers read, all optional: `ce-id` (else `Nats-Msg-Id`; else the message's stream
//! sequence, so a redelivered message is still a duplicate), `ce-source`, `ce-time`
//! (RFC 3339), `ce-priority` or `priority` (1-5).
//!
//! A message that is not a valid event (unknown type, not JSON, not matching the schema)
//! is published, with its errors, to the stream `<stream>_REJECTED` (subject
//! `<prefix>.rejected.<reason>`), then acked: kept for whoever looks, never dropped. A
//! message the router cannot take now (overloaded, the log unavailable) is handed back to
//! be delivered again after [`RETRY_DELAY`].

use super::Reason;
use crate::router::admit::{prepare, Data, Envelope, Producer};
use crate::router::{AcceptError, Pipeline};
use crate::schema::Registry;
use crate::store::nats::{connect_client, nats, NatsConfig};
use crate::store::StoreError;
use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Messages being made into events at once (each waits for its durable append).
pub const CONCURRENCY: usize = 64;
/// When a message the router could not take now comes again.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How long the source waits before pulling again after losing the server.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

pub struct NatsSource {
    js: jetstream::Context,
    consumer: consumer::Consumer<consumer::pull::Config>,
    prefix: String,
    rejected_stream: String,
}

impl NatsSource {
    /// Connects with `[store.nats]`'s settings; makes sure the input and rejected streams and
    /// the shared consumer exist.
    pub async fn open(config: &NatsConfig) -> Result<Self, StoreError> {
        let client = connect_client(config).await?;
        let js = jetstream::new(client);
        let prefix = config.subject_prefix.clone();
        let (input, rejected) = (format!("{}_IN", config.stream), format!("{}_REJECTED", config.stream));
        for (name, subject, retention) in [
            (&input, format!("{prefix}.in.>"), stream::RetentionPolicy::WorkQueue),
            (&rejected, format!("{prefix}.rejected.>"), stream::RetentionPolicy::Limits),
        ] {
            js.create_or_update_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subject],
                retention,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| nats(&format!("create the stream {name}"), e))?;
        }
        let consumer = js
            .get_stream(&input)
            .await
            .map_err(|e| nats("open the input stream", e))?
            .create_consumer(consumer::pull::Config {
                durable_name: Some("source".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(config.ack_wait_ms),
                max_deliver: -1,
                ..Default::default()
            })
            .await
            .map_err(|e| nats("create the source consumer", e))?;
        Ok(NatsSource { js, consumer, prefix, rejected_stream: rejected })
    }

    /// Takes messages until the task is dropped; pulls again after the server went away.
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>, pipeline: Arc<Pipeline>) {
        tracing::info!(subjects = %format!("{}.in.>", self.prefix), "NATS source running");
        loop {
            match self.consumer.messages().await {
                Ok(messages) => {
                    messages
                        .for_each_concurrent(CONCURRENCY, |message| {
                            let (me, registry, pipeline) = (&self, &registry, &pipeline);
                            async move {
                                match message {
                                    Ok(message) => me.take(registry, pipeline, message).await,
                                    Err(e) => tracing::warn!(error = %e, "NATS source: pulling failed"),
                                }
                            }
                        })
                        .await
                }
                Err(e) => tracing::warn!(error = %e, "NATS source: cannot pull yet"),
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }

    async fn take(&self, registry: &Registry, pipeline: &Pipeline, message: jetstream::Message) {
        let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
        let type_name = header("ce-type")
            .or_else(|| message.subject.strip_prefix(&format!("{}.in.", self.prefix)).map(String::from));
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let envelope = Envelope {
            id: header("ce-id").or_else(|| header("Nats-Msg-Id")).or_else(|| Some(format!("nats-in-{sequence}"))),
            source: header("ce-source"),
            time: header("ce-time")
                .and_then(|t| time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()),
            priority: header("ce-priority")
                .or_else(|| header("priority"))
                .and_then(|p| p.parse().ok())
                .filter(|p| (1..=5).contains(p)),
        };
        let prepared = match type_name.as_deref().map(|t| registry.get(t)) {
            Some(Ok(ty)) => {
                let text = String::from_utf8_lossy(&message.payload);
                prepare(ty, Data::Text(&text), envelope).map_err(Reason::of)
            }
            _ => Err((
                Reason::UnknownType,
                json!([{ "message": format!("no event type {:?}", type_name.as_deref().unwrap_or("")) }]),
            )),
        };
        let outcome = match prepared {
            Ok(event) => match pipeline.admit(vec![event], Producer::default()).await {
                Ok(_) => AckKind::Ack,
                Err(AcceptError::Overloaded) | Err(AcceptError::Store(_)) => AckKind::Nak(Some(RETRY_DELAY)),
            },
            Err((reason, errors)) => match self.reject(&message, type_name.as_deref(), reason, errors).await {
                Ok(()) => AckKind::Ack,
                Err(e) => {
                    tracing::warn!(error = %e, "NATS source: cannot keep a rejected message yet");
                    AckKind::Nak(Some(RETRY_DELAY))
                }
            },
        };
        if let Err(e) = message.ack_with(outcome).await {
            tracing::warn!(error = %e, "NATS source: ack failed; the message comes again (and is a duplicate)");
        }
    }

    /// Keeps a message that is not a valid event, with why, in the rejected stream.
    async fn reject(
        &self,
        message: &jetstream::Message,
        type_name: Option<&str>,
        reason: Reason,
        errors: Value,
    ) -> Result<(), StoreError> {
        let headers: serde_json::Map<String, Value> = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(k, v)| (k.to_string(), json!(v.iter().map(|v| v.as_str()).collect::<Vec<_>>())))
            .collect();
        let record = json!({
            "subject": message.subject.as_str(),
            "type": type_name,
            "error": reason.as_str(),
            "errors": errors,
            "headers": headers,
            "data": String::from_utf8_lossy(&message.payload),
        });
        let subject = format!("{}.rejected.{}", self.prefix, reason.as_str());
        let payload = serde_json::to_vec(&record).expect("records serialise");
        let ack = self.js.publish(subject, payload.into()).await.map_err(|e| nats("reject", e))?;
        ack.await.map_err(|e| nats("reject", e))?;
        tracing::warn!(stream = %self.rejected_stream, reason = reason.as_str(), "NATS source: message rejected");
        Ok(())
    }
}

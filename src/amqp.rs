//! The AMQP 0-9-1 client pieces the source ([`crate::sources::amqp`]) and the sink
//! ([`crate::sinks::amqp`]) share: connecting under a name the broker shows, declaring a
//! durable exchange, reading header values. lapin 4 speaks the protocol (see the README for
//! why lapin).

use crate::settings::Invalid;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// Connects to `url`; `name` is what the broker's management shows for the connection
/// (`eventyard source infrahub`), so an operator can tell the router's links apart.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(format!("eventyard {name}").into());
    Connection::connect(url, properties).await
}

/// Declares the durable exchange `name` of type `kind` (`direct`, `fanout`, `headers`,
/// `topic`, or a plugin's type such as `x-delayed-message`); one that exists with the same
/// settings is left as it is.
pub async fn declare_exchange(channel: &Channel, name: &str, kind: &str) -> Result<(), lapin::Error> {
    let kind = match kind {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        "topic" => ExchangeKind::Topic,
        other => ExchangeKind::Custom(other.to_string()),
    };
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(name.into(), kind, durable, FieldTable::default()).await
}

/// A header's value as text (AMQP tables carry strings in a few shapes).
pub fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Publishes on a channel in confirm mode and waits for the broker's confirm: `Ack` once
/// the broker has taken responsibility for the message (with the message itself when a
/// `mandatory` publish found no queue), `Nack` when it could not.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    options: lapin::options::BasicPublishOptions,
    body: &[u8],
    properties: lapin::BasicProperties,
) -> Result<lapin::Confirmation, lapin::Error> {
    channel.basic_publish(exchange.into(), routing_key.into(), options, body, properties).await?.await
}

/// The settings every AMQP link has: a `name` that may name a file (letters, digits, `-`,
/// `_`) and an `amqp://` or `amqps://` URL; `key` is how the user names the table.
pub fn check_link(key: &str, name: &str, url: &str) -> Result<(), Invalid> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Invalid::new(format!("{key}.name"), "letters, digits, `-` and `_` (it names a file)"));
    }
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err(Invalid::new(format!("{key}.url"), "an amqp:// or amqps:// URL"));
    }
    Ok(())
}

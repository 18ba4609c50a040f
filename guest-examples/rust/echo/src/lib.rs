//! Echo responder for `infrahub/send.echo.request`: answers every request with
//! `infrahub/response/send.echo.request` whose `data.response` is `"Reply to: <message>"`,
//! keeping the request's correlation id (Infrahub's RPC reference case).
//!
//! Written for the hot path, as a plugin that runs for every event should be:
//! - it reads the request into borrowed typed structs (not `serde_json::Value`), taking the
//!   correlation id from the data it parses anyway instead of one more host call;
//! - it writes the answer as a template whose keys are literal text, and copies each value
//!   in as it is when it needs no escaping (nearly always), leaving serde_json only the
//!   values that do;
//! - it is built against the `batch-handler` world, so the router hands it a run of waiting
//!   requests in one call instead of entering the sandbox once per request;
//! - it keeps nothing between calls, so it allocates from an arena that starts over when
//!   everything it gave out was freed ([`arena`]).

use serde::Deserialize;
use std::borrow::Cow;

mod arena;

#[global_allocator]
static ARENA: arena::Arena = arena::Arena::new();

wit_bindgen::generate!({ path: "../../../wit", world: "batch-handler" });

struct Echo;

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(borrow, default)]
    meta: RequestMeta<'a>,
}

#[derive(Deserialize, Default)]
struct RequestMeta<'a> {
    #[serde(borrow, default)]
    correlation_id: Option<Cow<'a, str>>,
}

impl Guest for Echo {
    fn handle(event: &Event) -> Result<Vec<Emitted>, HandlerError> {
        answer(&event.data(), || event.priority())
    }

    /// A batch call hands each event's data and priority over with it: no host call per event.
    fn handle_batch(events: Vec<BatchEvent>) -> Vec<Result<Vec<Emitted>, HandlerError>> {
        events.iter().map(|e| answer(&e.data, || e.priority)).collect()
    }
}

/// The response to one request (`data`), at the request's priority.
fn answer(data: &str, priority: impl FnOnce() -> u8) -> Result<Vec<Emitted>, HandlerError> {
    let request: Request = serde_json::from_str(data)
        .map_err(|e| HandlerError { message: format!("not an echo request: {e}"), retryable: false })?;
    let mut out = String::with_capacity(160 + 2 * request.message.len());
    out.push_str(r#"{"meta":{"correlation_id":"#);
    match &request.meta.correlation_id {
        Some(id) => push_string(&mut out, id),
        None => out.push_str("null"),
    }
    out.push_str(r#","priority":"#);
    // A `u8` as text, without the formatting machinery.
    let p = priority();
    if p >= 100 {
        out.push(char::from(b'0' + p / 100));
    }
    if p >= 10 {
        out.push(char::from(b'0' + p / 10 % 10));
    }
    out.push(char::from(b'0' + p % 10));
    out.push_str(r#"},"data":{"response":"Reply to: "#);
    push_escaped(&mut out, &request.message);
    out.push_str(r#""},"errors":[],"passed":true,"routing_key":"send.echo.request"}"#);
    Ok(vec![Emitted { type_: "infrahub/response/send.echo.request".into(), data: out }])
}

/// Appends `text` as a JSON string.
fn push_string(out: &mut String, text: &str) {
    out.push('"');
    push_escaped(out, text);
    out.push('"');
}

/// Appends `text` escaped for the inside of a JSON string. Nearly every message needs no
/// escaping and is copied as it is (one pass over it); serde_json escapes the others.
fn push_escaped(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push_str(text);
    } else {
        let quoted = serde_json::to_string(text).expect("a string serialises");
        out.push_str(&quoted[1..quoted.len() - 1]);
    }
}

export!(Echo);

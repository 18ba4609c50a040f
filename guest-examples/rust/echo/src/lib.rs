//! Echo responder for `infrahub/send.echo.request`: answers every request with
//! `infrahub/response/send.echo.request` whose `data.response` is `"Reply to: <message>"`,
//! keeping the request's correlation id (Infrahub's RPC reference case).
//!
//! Written for the hot path, as a plugin that runs for every event should be:
//! - it reads the request into borrowed typed structs (not `serde_json::Value`), taking the
//!   correlation id from the data it parses anyway instead of one more host call;
//! - it writes the answer as a template whose keys are literal text, with serde_json
//!   escaping only the values (escaping scans every byte, and keys never need it);
//! - it is built against the `batch-handler` world, so the router hands it a run of waiting
//!   requests in one call instead of entering the sandbox once per request.

use serde::Deserialize;
use std::borrow::Cow;

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
        answer(event)
    }

    fn handle_batch(events: Vec<Event>) -> Vec<Result<Vec<Emitted>, HandlerError>> {
        events.iter().map(answer).collect()
    }
}

/// The response to one request.
fn answer(event: &Event) -> Result<Vec<Emitted>, HandlerError> {
    let data = event.data();
    let request: Request = serde_json::from_str(&data)
        .map_err(|e| HandlerError { message: format!("not an echo request: {e}"), retryable: false })?;
    let mut out = Vec::with_capacity(160 + 2 * request.message.len());
    let value = |out: &mut Vec<u8>, v: &dyn erased::Value| v.write(out);
    out.extend_from_slice(br#"{"meta":{"correlation_id":"#);
    value(&mut out, &request.meta.correlation_id);
    out.extend_from_slice(br#","priority":"#);
    value(&mut out, &event.priority());
    out.extend_from_slice(br#"},"data":{"response":"Reply to: "#);
    // The message's escaped text, inside the answer's string.
    let message = serde_json::to_string(&request.message).expect("a string serialises");
    out.extend_from_slice(&message.as_bytes()[1..]);
    out.extend_from_slice(br#"},"errors":[],"passed":true,"routing_key":"send.echo.request"}"#);
    let data = String::from_utf8(out).expect("serde_json writes UTF-8");
    Ok(vec![Emitted { type_: "infrahub/response/send.echo.request".into(), data }])
}

/// One JSON value written by serde_json (escaped as needed).
mod erased {
    pub trait Value {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize> Value for T {
        fn write(&self, out: &mut Vec<u8>) {
            serde_json::to_writer(out, self).expect("a JSON value serialises");
        }
    }
}

export!(Echo);

//! Echo responder for `infrahub/send.echo.request`: answers every request with
//! `infrahub/response/send.echo.request` whose `data.response` is `"Reply to: <message>"`,
//! keeping the request's correlation id (Infrahub's RPC reference case).
//!
//! It reads and writes typed structs (borrowing from the input where it can) rather than
//! `serde_json::Value`: on the hot path that is several times less work in the guest.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

wit_bindgen::generate!({ path: "../../../wit", world: "handler" });

struct Echo;

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    message: Cow<'a, str>,
}

#[derive(Serialize)]
struct Response<'a> {
    meta: Meta<'a>,
    data: Data,
    errors: [(); 0],
    passed: bool,
    routing_key: &'static str,
}

#[derive(Serialize)]
struct Meta<'a> {
    correlation_id: Option<&'a str>,
    priority: u8,
}

#[derive(Serialize)]
struct Data {
    response: String,
}

impl Guest for Echo {
    fn handle(event: &Event) -> Result<Vec<Emitted>, HandlerError> {
        let (data, correlation_id) = (event.data(), event.correlation_id());
        let request: Request = serde_json::from_str(&data)
            .map_err(|e| HandlerError { message: format!("not an echo request: {e}"), retryable: false })?;
        let response = Response {
            meta: Meta { correlation_id: correlation_id.as_deref(), priority: event.priority() },
            data: Data { response: format!("Reply to: {}", request.message) },
            errors: [],
            passed: true,
            routing_key: "send.echo.request",
        };
        let data = serde_json::to_string(&response).expect("serialises");
        Ok(vec![Emitted { type_: "infrahub/response/send.echo.request".into(), data }])
    }
}

export!(Echo);

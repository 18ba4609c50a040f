//! Echo responder for `infrahub/send.echo.request`: answers every request with
//! `infrahub/response/send.echo.request` whose `data.response` is `"Reply to: <message>"`,
//! keeping the request's correlation id (Infrahub's RPC reference case).

use serde_json::{json, Value};

wit_bindgen::generate!({ path: "../../../wit", world: "handler" });

struct Echo;

impl Guest for Echo {
    fn handle(event: Event) -> Result<Vec<Emitted>, HandlerError> {
        let request: Value = serde_json::from_str(&event.data)
            .map_err(|e| HandlerError { message: format!("event data is not JSON: {e}"), retryable: false })?;
        let message = request["message"].as_str().unwrap_or_default();
        let response = json!({
            "meta": {"correlation_id": event.correlation_id, "priority": event.priority},
            "data": {"response": format!("Reply to: {message}")},
            "errors": [],
            "passed": true,
            "routing_key": "send.echo.request",
        });
        Ok(vec![Emitted { type_: "infrahub/response/send.echo.request".into(), data: response.to_string() }])
    }
}

export!(Echo);

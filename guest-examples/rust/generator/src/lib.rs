//! Generator handler for `infrahub/check.generator.run`.
//!
//! Runs the (here: trivial) generator for the target and then finalizes the validator it
//! belongs to: it emits `infrahub/finalize.validator.execution` for the same
//! `validator_id`, carrying the request's correlation id so the two can be tied together.
//!
//! Config: `validator_type` (default `"GeneratorValidator"`).

use serde_json::{json, Value};

wit_bindgen::generate!({ path: "../../../wit", world: "handler" });

use eventyard::plugin::config;

struct Generator;

impl Guest for Generator {
    fn handle(event: &Event) -> Result<Vec<Emitted>, HandlerError> {
        let run: Value = serde_json::from_str(&event.data())
            .map_err(|e| HandlerError { message: format!("event data is not JSON: {e}"), retryable: false })?;
        let conf: Value = serde_json::from_str(&config::get()).unwrap_or(Value::Null);
        let validator_type = conf.get("validator_type").and_then(Value::as_str).unwrap_or("GeneratorValidator");
        let validator_id = run["validator_id"]
            .as_str()
            .ok_or_else(|| HandlerError { message: "no validator_id".into(), retryable: false })?;
        let meta = &run["meta"];
        let execution =
            meta["validator_execution_id"].as_str().map_or_else(|| format!("exec-{}", event.id()), str::to_string);
        let finalize = json!({
            "meta": {
                "correlation_id": event.correlation_id(),
                "request_id": meta["request_id"].as_str().unwrap_or(""),
                "priority": meta["priority"].as_i64().unwrap_or(3),
            },
            "validator_id": validator_id,
            "validator_execution_id": execution,
            "start_time": event.time(),
            "validator_type": validator_type,
            "proposed_change": run["proposed_change"].as_str().unwrap_or(""),
        });
        Ok(vec![Emitted { type_: "infrahub/finalize.validator.execution".into(), data: finalize.to_string() }])
    }
}

export!(Generator);

//! Metrics handler for `fixinventory/generate_metrics`.
//!
//! Counts the resources listed in `data.resources` by `kind` and publishes them through
//! the host's metrics import (gauge `resources{kind=...}`, counter `runs`, histogram
//! `resource_age_days`), which the router exports at `GET /metrics` as
//! `eventyard_plugin_<name>{plugin="<plugin>",...}`; then emits
//! `fixinventory/post_generate_metrics` for the same task.

use serde_json::{json, Value};
use std::collections::BTreeMap;

wit_bindgen::generate!({ path: "../../../wit", world: "handler" });

use eventyard::plugin::metrics;

struct Metrics;

impl Guest for Metrics {
    fn handle(event: &Event) -> Result<Vec<Emitted>, HandlerError> {
        let body: Value = serde_json::from_str(&event.data())
            .map_err(|e| HandlerError { message: format!("event data is not JSON: {e}"), retryable: false })?;
        if !matches!(body["kind"].as_str(), Some("action" | "event")) {
            return Ok(Vec::new());
        }
        let data = &body["data"];
        let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
        for r in data.get("resources").and_then(Value::as_array).into_iter().flatten() {
            let kind = r["kind"].as_str().unwrap_or("unknown").to_string();
            *by_kind.entry(kind).or_default() += 1.0;
            if let Some(age) = r["age_days"].as_f64() {
                metrics::histogram("resource_age_days", age, &[]);
            }
        }
        for (kind, n) in &by_kind {
            metrics::gauge("resources", *n, &[("kind".to_string(), kind.clone())]);
        }
        metrics::counter("runs", 1.0, &[]);
        let mut done = json!({"kind": "event", "message_type": "post_generate_metrics", "data": {"step": "post_generate_metrics", "kinds": by_kind.len()}});
        if let Some(task) = data["task"].as_str() {
            done["data"]["task"] = json!(task);
        }
        Ok(vec![Emitted { type_: "fixinventory/post_generate_metrics".into(), data: done.to_string() }])
    }
}

export!(Metrics);

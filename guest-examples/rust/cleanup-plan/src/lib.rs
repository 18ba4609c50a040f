//! Cleanup-plan handler for `fixinventory/cleanup_plan`.
//!
//! Reads candidate resources from `data.resources` (`id`, `kind`, `age_days`, `tags`) of an
//! `action` (or plain `event`) message and answers with a `cleanup_plan` message of kind
//! `action_done` whose `data.cleanup` lists the resources to clean up, each with its reason.
//!
//! Rules, from the plugin config:
//! - `max_age_days` (default 30): a resource older than this is a candidate;
//! - `required_tags` (default `["owner"]`): a candidate is cleaned up only when it lacks one
//!   of these tags (so old resources with an owner are kept);
//! - `protected_kinds` (default `[]`): kinds that are never cleaned up.

use serde_json::{json, Value};

wit_bindgen::generate!({ path: "../../../wit", world: "handler" });

use eventyard::plugin::{config, log};

struct CleanupPlan;

struct Rules {
    max_age_days: f64,
    required_tags: Vec<String>,
    protected_kinds: Vec<String>,
}

impl Rules {
    fn from_config() -> Rules {
        let c: Value = serde_json::from_str(&config::get()).unwrap_or(Value::Null);
        let strings = |key: &str, default: &[&str]| -> Vec<String> {
            match c.get(key).and_then(Value::as_array) {
                Some(a) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                None => default.iter().map(|s| s.to_string()).collect(),
            }
        };
        Rules {
            max_age_days: c.get("max_age_days").and_then(Value::as_f64).unwrap_or(30.0),
            required_tags: strings("required_tags", &["owner"]),
            protected_kinds: strings("protected_kinds", &[]),
        }
    }

    /// Why `resource` should be cleaned up, or `None` to keep it.
    fn verdict(&self, resource: &Value) -> Option<String> {
        let kind = resource.get("kind").and_then(Value::as_str).unwrap_or("");
        if self.protected_kinds.iter().any(|k| k == kind) {
            return None;
        }
        let age = resource.get("age_days").and_then(Value::as_f64)?;
        if age <= self.max_age_days {
            return None;
        }
        let tags = resource.get("tags");
        let missing: Vec<&str> = self
            .required_tags
            .iter()
            .filter(|t| tags.and_then(|tags| tags.get(t.as_str())).is_none())
            .map(String::as_str)
            .collect();
        if !self.required_tags.is_empty() && missing.is_empty() {
            return None;
        }
        let mut reason = format!("older than {} days ({age})", self.max_age_days);
        if !missing.is_empty() {
            reason.push_str(&format!(", missing tag(s) {}", missing.join(", ")));
        }
        Some(reason)
    }
}

impl Guest for CleanupPlan {
    fn handle(event: &Event) -> Result<Vec<Emitted>, HandlerError> {
        let body: Value = serde_json::from_str(&event.data())
            .map_err(|e| HandlerError { message: format!("event data is not JSON: {e}"), retryable: false })?;
        // Our own answers (action_done) come back through the router: nothing to do.
        if !matches!(body["kind"].as_str(), Some("action" | "event")) {
            return Ok(Vec::new());
        }
        let rules = Rules::from_config();
        let data = &body["data"];
        let resources = data.get("resources").and_then(Value::as_array).cloned().unwrap_or_default();
        let cleanup: Vec<Value> = resources
            .iter()
            .filter_map(|r| rules.verdict(r).map(|reason| json!({"id": r["id"], "kind": r["kind"], "reason": reason})))
            .collect();
        log::write(
            log::Level::Info,
            &format!("cleanup plan: {} of {} resources to clean up", cleanup.len(), resources.len()),
        );
        let mut answer = json!({"task": data["task"], "step": "cleanup_plan", "cleanup": cleanup, "kept": resources.len() - cleanup.len()});
        if data["task"].is_null() {
            answer.as_object_mut().map(|o| o.remove("task"));
        }
        let done = json!({"kind": "action_done", "message_type": "cleanup_plan", "data": answer});
        Ok(vec![Emitted { type_: "fixinventory/cleanup_plan".into(), data: done.to_string() }])
    }
}

export!(CleanupPlan);

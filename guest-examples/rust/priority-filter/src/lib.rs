//! Priority filter for Infrahub messages.
//!
//! Config:
//! - `min_priority` (default 1): events whose priority is below it are dropped;
//! - `max_priority` (optional): events whose `meta.priority` is above it are rewritten with
//!   `meta.priority` lowered to it (a `replace` verdict, which the router validates again).
//!
//! The priority is the event's (the catalogue's `x-priority`, or `meta.priority` when the
//! producer set one).

use serde_json::Value;
use std::sync::OnceLock;

wit_bindgen::generate!({ path: "../../../wit", world: "filter" });

use eventyard::plugin::config;
use eventyard::plugin::types::Emitted;

struct PriorityFilter;

/// The config is read once per instance (it cannot change while the instance lives).
static RULE: OnceLock<Rule> = OnceLock::new();

#[derive(Clone, Copy)]
struct Rule {
    min: u64,
    max: Option<u64>,
}

impl Rule {
    fn from_config() -> Rule {
        let conf: Value = serde_json::from_str(&config::get()).unwrap_or(Value::Null);
        Rule {
            min: conf.get("min_priority").and_then(Value::as_u64).unwrap_or(1),
            max: conf.get("max_priority").and_then(Value::as_u64),
        }
    }
}

impl Guest for PriorityFilter {
    fn filter(event: &Event) -> Verdict {
        let Rule { min, max } = *RULE.get_or_init(Rule::from_config);
        if u64::from(event.priority()) < min {
            return Verdict::Drop(format!("priority {} is below {min}", event.priority()));
        }
        let Some(max) = max else { return Verdict::Keep };
        let Ok(mut data) = serde_json::from_str::<Value>(&event.data()) else { return Verdict::Keep };
        match data.pointer_mut("/meta/priority") {
            Some(p) if p.as_u64().is_some_and(|p| p > max) => {
                *p = Value::from(max);
                Verdict::Replace(Emitted { type_: event.type_(), data: data.to_string() })
            }
            _ => Verdict::Keep,
        }
    }
}

export!(PriorityFilter);

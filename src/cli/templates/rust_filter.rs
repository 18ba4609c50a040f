//! {{name}}: an Eventyard filter. Keeps events whose priority is at least the plugin
//! config's `min_priority` (default 1), drops the others with a reason.

wit_bindgen::generate!({ path: "wit", world: "filter" });

struct Plugin;

impl Guest for Plugin {
    fn filter(event: &Event) -> Verdict {
        let config: serde_json::Value = serde_json::from_str(&eventyard::plugin::config::get()).unwrap_or_default();
        let min = config["min_priority"].as_u64().unwrap_or(1);
        if u64::from(event.priority()) >= min {
            Verdict::Keep
        } else {
            Verdict::Drop(format!("priority {} is below {min}", event.priority()))
        }
    }
}

export!(Plugin);

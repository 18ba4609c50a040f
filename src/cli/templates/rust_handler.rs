//! {{name}}: an Eventyard handler. Logs each event it gets and emits nothing; emit events by
//! returning them (their types must be in the manifest's `emits`).

wit_bindgen::generate!({ path: "wit", world: "handler" });

use eventyard::plugin::log;

struct Plugin;

impl Guest for Plugin {
    fn handle(event: &Event) -> Result<Vec<Emitted>, HandlerError> {
        let data: serde_json::Value = serde_json::from_str(&event.data())
            .map_err(|e| HandlerError { message: format!("data is not JSON: {e}"), retryable: false })?;
        let fields = data.as_object().map_or(0, |o| o.len());
        log::write(log::Level::Info, &format!("{} got {} ({fields} fields)", "{{name}}", event.type_()));
        Ok(Vec::new())
    }
}

export!(Plugin);

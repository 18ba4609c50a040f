//! {{name}}: an Eventyard handler that also takes runs of events (the `batch-handler` world):
//! the router calls `handle-batch` with the events of a route that wait together (an NDJSON
//! batch arrives as such a run) and `handle` when one waits alone. Both must answer the same
//! for the same event (`eventyard plugin test --batch` checks it). Logs each event it gets and
//! emits nothing; emit events by returning them (their types must be in the manifest's
//! `emits`): `emit.send` is not available during a batch call.

wit_bindgen::generate!({ path: "wit", world: "batch-handler" });

use eventyard::plugin::log;

struct Plugin;

/// What both exports do with one event (`data`: its data, which a batch call hands over
/// with the event, as it does the priority; other fields are the event's getters).
fn one(event: &Event, data: &str) -> Result<Vec<Emitted>, HandlerError> {
    let data: serde_json::Value = serde_json::from_str(data)
        .map_err(|e| HandlerError { message: format!("data is not JSON: {e}"), retryable: false })?;
    let fields = data.as_object().map_or(0, |o| o.len());
    log::write(log::Level::Info, &format!("{} got {} ({fields} fields)", "{{name}}", event.type_()));
    Ok(Vec::new())
}

impl Guest for Plugin {
    fn handle(event: &Event) -> Result<Vec<Emitted>, HandlerError> {
        one(event, &event.data())
    }

    /// One result per event, in order. Work shared by the run (parsing the config, say)
    /// goes before the loop: that is what a batch call saves.
    fn handle_batch(events: Vec<BatchEvent>) -> Vec<Result<Vec<Emitted>, HandlerError>> {
        events.iter().map(|e| one(&e.event, &e.data)).collect()
    }
}

export!(Plugin);

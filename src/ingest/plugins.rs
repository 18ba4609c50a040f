//! `GET /v1/plugins` (each plugin with its version and statistics) and hot reload: a
//! plugin whose component file changes is compiled again and swapped in while events flow
//! (calls in flight finish on the old version); a component that does not compile or does
//! not fit its world is refused and the running version stays. A reload emits
//! `fixinventory/config-updated` with `id` = `plugin:<name>` and the new revision.

use super::AppState;
use crate::wasm::{FailureKind, Plugin};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often component files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_millis(500);

pub async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let plugins: Vec<Value> = state.pipeline.core().plugins.iter().map(|p| describe(p)).collect();
    Json(json!({ "count": plugins.len(), "plugins": plugins }))
}

fn describe(p: &Plugin) -> Value {
    let (revision, loaded_at) = p.revision();
    let failures: serde_json::Map<String, Value> = FailureKind::ALL
        .iter()
        .zip(&p.stats.failures)
        .map(|(k, n)| (k.as_str().to_string(), json!(n.load(Ordering::Relaxed))))
        .filter(|(_, n)| n != &json!(0))
        .collect();
    json!({
        "name": p.name(),
        "world": p.world().as_str(),
        "component": p.ctx.manifest.component,
        "revision": revision,
        "loaded_at": crate::router::rfc3339(loaded_at),
        "reloads": p.reloads.load(Ordering::Relaxed),
        "last_reload_error": *p.last_reload_error.lock().expect("reload error"),
        "calls": p.stats.calls.load(Ordering::Relaxed),
        "failures": failures,
        "instantiations": p.stats.instantiations.load(Ordering::Relaxed),
        "peak_memory_bytes": p.stats.peak_memory_bytes.load(Ordering::Relaxed),
        "circuit_open": p.breaker_open(),
    })
}

/// Watches the component files of the plugins loaded from files; reloads what changed.
pub async fn watch(state: Arc<AppState>) {
    let Some(engine) = state.wasm.clone() else { return };
    let watched: Vec<Arc<Plugin>> =
        state.pipeline.core().plugins.iter().filter(|p| p.source.is_some()).cloned().collect();
    if watched.is_empty() {
        return;
    }
    let stamp = |p: &Plugin| {
        let meta = std::fs::metadata(p.source.as_ref()?).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut seen: HashMap<String, Option<(SystemTime, u64)>> =
        watched.iter().map(|p| (p.name().to_string(), stamp(p))).collect();
    loop {
        tokio::time::sleep(RELOAD_POLL).await;
        for p in &watched {
            let now = stamp(p);
            if now.is_none() || seen.get(p.name()) == Some(&now) {
                continue;
            }
            seen.insert(p.name().to_string(), now);
            let (plugin, engine) = (p.clone(), engine.clone());
            let reloaded = tokio::task::spawn_blocking(move || {
                let path = plugin.source.as_ref().expect("watched plugins have a file");
                let bytes = std::fs::read(path).map_err(|e| crate::wasm::WasmError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                plugin.replace(&engine, &bytes)
            })
            .await;
            match reloaded {
                Ok(Ok(true)) => {
                    let revision = p.revision().0;
                    tracing::info!(plugin = p.name(), revision = %revision, "plugin reloaded");
                    let body = json!({ "kind": "event", "message_type": "config-updated",
                                       "data": { "id": format!("plugin:{}", p.name()), "revision": revision } });
                    if let Err(e) = state.emit_internal("fixinventory/config-updated", body, "eventyard:plugins").await
                    {
                        tracing::warn!(plugin = p.name(), error = %e, "config-updated for a reload not accepted");
                    }
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::error!(plugin = p.name(), error = %e, "new component refused; the running version stays")
                }
                Err(e) => tracing::error!(plugin = p.name(), error = %e, "reload task failed"),
            }
        }
    }
}

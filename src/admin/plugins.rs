//! `GET /v1/plugins` (each plugin with its version and statistics) and hot reload: a
//! plugin whose component file changes is compiled again and swapped in while events flow
//! (calls in flight finish on the old version); a component that does not compile or does
//! not fit its world is refused and the running version stays. A reload emits
//! `fixinventory/config-updated` with `id` = `plugin:<name>` and the new revision.

use crate::event::FailureKind;
use crate::http::extract::{Multipart, Path};
use crate::http::{ApiError, AppState};
use crate::store::nats::plugins::{Change, SharedPlugins};
use crate::wasm::Plugin;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The largest upload (component + manifest): Python and JavaScript components embed their
/// interpreter (12-18 MB).
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// How often component files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_millis(500);

/// What the plugin endpoints own besides the HTTP state.
pub struct PluginAdmin {
    /// The Wasm engine plugins were compiled with (reloads and uploads use it); made at the
    /// first upload when the router started without plugins.
    pub wasm: std::sync::Mutex<Option<Arc<crate::wasm::WasmEngine>>>,
    /// Where uploaded plugins are kept (`<store dir>/plugins/<name>.{wasm,toml}`).
    pub uploads: std::path::PathBuf,
    /// The precompiled-artifact cache.
    pub wasm_cache: std::path::PathBuf,
    /// On a shared log: where uploads are shared with the other instances.
    pub shared: Option<Arc<SharedPlugins>>,
}

impl PluginAdmin {
    /// The engine plugins run on; made now when the router started without plugins.
    fn engine(&self) -> Result<Arc<crate::wasm::WasmEngine>, ApiError> {
        let mut engine = self.wasm.lock().expect("engine");
        if engine.is_none() {
            let made = crate::wasm::WasmEngine::new(false, Some(self.wasm_cache.clone()))
                .map_err(|e| ApiError::Internal(format!("wasm engine: {e}")))?;
            *engine = Some(Arc::new(made));
        }
        Ok(engine.clone().expect("set above"))
    }
}

pub async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let plugins: Vec<Value> = state.pipeline.core().plugins().iter().map(|p| describe(p)).collect();
    Json(json!({ "count": plugins.len(), "plugins": plugins }))
}

/// One plugin as `GET /v1/plugins` lists it (the dashboard reads the same).
pub fn describe(p: &Plugin) -> Value {
    let (revision, loaded_at) = p.revision();
    let failures: serde_json::Map<String, Value> = FailureKind::ALL
        .iter()
        .zip(&p.stats.failures)
        .map(|(k, n)| (k.as_str().to_string(), json!(n.load(Ordering::Relaxed))))
        .filter(|(_, n)| n != &json!(0))
        .collect();
    let latency = p.stats.latency.count_and_sum();
    json!({
        "name": p.name(),
        "world": p.world().as_str(),
        "component": p.ctx.manifest.component,
        "revision": revision,
        "loaded_at": crate::event::rfc3339(loaded_at),
        "reloads": p.reloads.load(Ordering::Relaxed),
        "last_reload_error": *p.last_reload_error.lock().expect("reload error"),
        "calls": p.stats.calls.load(Ordering::Relaxed),
        "failures": failures,
        "instantiations": p.stats.instantiations.load(Ordering::Relaxed),
        "batches": p.batches(),
        "batch_calls": p.stats.batch_calls.load(Ordering::Relaxed),
        "batch_fallbacks": p.stats.batch_fallbacks.load(Ordering::Relaxed),
        "peak_memory_bytes": p.stats.peak_memory_bytes.load(Ordering::Relaxed),
        "circuit_open": p.breaker_open(),
        "limits": limits(&p.ctx.manifest.limits),
        "latency": { "count": latency.0, "sum_seconds": latency.1 },
    })
}

/// A plugin's `limits` as its manifest gave them (defaults filled in).
fn limits(l: &crate::wasm::config::PluginLimits) -> Value {
    json!({
        "memory_bytes": l.memory_bytes, "deadline_ms": l.deadline_ms, "fuel": l.fuel, "max_emits": l.max_emits,
        "max_emit_bytes": l.max_emit_bytes, "recycle_after_calls": l.recycle_after_calls, "strict": l.strict,
        "output_bytes": l.output_bytes,
    })
}

/// Watches the component files of the plugins loaded from files; reloads what changed.
pub async fn watch(state: Arc<AppState>, admin: Arc<PluginAdmin>) {
    let Some(engine) = admin.wasm.lock().expect("engine").clone() else { return };
    let watched: Vec<Arc<Plugin>> =
        state.pipeline.core().plugins().iter().filter(|p| p.source.is_some()).cloned().collect();
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
                    announce(&state, p.name(), &revision).await;
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

/// `PUT /v1/plugins/{name}` (multipart: `manifest` as TOML, `component` as bytes). A new
/// plugin is compiled, checked against its world, stored under the store directory (so it is
/// loaded again at the next start) and added with its routes: 201. An uploaded plugin sent
/// again with the same manifest gets the new component hot-swapped: 200. A plugin of the
/// config file, or a changed manifest, is a 409 (delete the upload first).
pub async fn upload(
    State(state): State<Arc<AppState>>,
    Extension(admin): Extension<Arc<PluginAdmin>>,
    Path(name): Path<String>,
    Multipart { mut form }: Multipart,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let (mut manifest, mut component) = (None, None);
    while let Some(field) = form.next_field().await.map_err(|e| ApiError::BadRequest(format!("multipart: {e}")))? {
        let part = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|e| ApiError::BadRequest(format!("multipart: {e}")))?;
        match part.as_str() {
            "manifest" => manifest = Some(String::from_utf8(bytes.to_vec()).map_err(|_| bad("manifest is not UTF-8"))?),
            "component" => component = Some(bytes),
            other => {
                return Err(ApiError::BadRequest(format!("unknown part `{other}`; send `manifest` and `component`")))
            }
        }
    }
    let (Some(manifest), Some(component)) = (manifest, component) else {
        return Err(bad("send the parts `manifest` (TOML) and `component` (the .wasm)"));
    };
    // Finished even if the client hangs up while the component compiles: a swapped
    // component is also kept on disk and in the shared store.
    let (pipeline, plugin) = (state.pipeline.clone(), name.clone());
    let (status, revision, replaced) = pipeline
        .finish_anyway(async move {
            let installed = install(&state, &admin, &plugin, &manifest, &component, false).await?;
            if let Some(shared) = &admin.shared {
                // The others follow the store; answered only once it is there.
                shared.put(&plugin, &manifest, &component).await.map_err(|e| ApiError::Internal(e.to_string()))?;
            }
            Ok::<_, ApiError>(installed)
        })
        .await?;
    Ok((status, Json(json!({ "name": name, "revision": revision, "replaced": replaced }))).into_response())
}

/// Loads (or, for an upload with the same manifest, hot-swaps) plugin `name` and keeps it
/// in the uploads directory; answers the status, the revision and whether it replaced one.
/// `followed`: it comes from the shared store, where this instance's own uploads come
/// back too (a swap to the running version is then not announced again).
async fn install(
    state: &Arc<AppState>,
    admin: &PluginAdmin,
    name: &str,
    manifest: &str,
    component: &bytes::Bytes,
    followed: bool,
) -> Result<(StatusCode, String, bool), ApiError> {
    let (toml_path, wasm_path) =
        (admin.uploads.join(format!("{name}.toml")), admin.uploads.join(format!("{name}.wasm")));
    let engine = admin.engine()?;
    let core = state.pipeline.core();
    if let Some(running) = core.plugins().iter().find(|p| p.name() == name).cloned() {
        if std::fs::read_to_string(&toml_path).ok().as_deref() != Some(manifest) {
            return Err(ApiError::Conflict(if toml_path.exists() {
                format!("`{name}` runs with another manifest: DELETE it first to change the manifest")
            } else {
                format!("`{name}` is defined in the config file")
            }));
        }
        let bytes = component.clone();
        let (swapped, changed) = tokio::task::spawn_blocking(move || {
            running.replace(&engine, &bytes).map(|changed| (running.revision().0, changed))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::BadRequest(format!("component refused, the running version stays: {e}")))?;
        write_atomically(&wasm_path, component)?;
        if changed || !followed {
            announce(state, name, &swapped).await;
        }
        return Ok((StatusCode::OK, swapped, true));
    }
    let (plugin_config, route_configs) = crate::router::routes::parse_upload(name, manifest, &wasm_path)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    for t in &plugin_config.emits {
        state.registry.get(t).map_err(|_| bad(&format!("manifest.emits: unknown event type `{t}`")))?;
    }
    if plugin_config.limits.fuel.is_some() && !engine.fuel {
        return Err(bad("fuel budgets need a router started with a fuel-budgeted plugin in its config"));
    }
    let (registry, samples, bytes) = (state.registry.clone(), core.samples.clone(), component.clone());
    let plugin = tokio::task::spawn_blocking(move || Plugin::load(&engine, plugin_config, &bytes, registry, samples))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::BadRequest(format!("component refused: {e}")))?;
    let plugin = Arc::new(plugin);
    let routes = route_configs
        .iter()
        .enumerate()
        .map(|(i, r)| crate::router::routes::build(i, r, std::slice::from_ref(&plugin), &[]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    crate::files::private_dir(&admin.uploads).map_err(|e| ApiError::Internal(e.to_string()))?;
    write_atomically(&wasm_path, component)?;
    write_atomically(&toml_path, manifest.as_bytes())?;
    let revision = plugin.revision().0;
    core.add_plugin(plugin, routes);
    tracing::info!(plugin = %name, revision = %revision, "plugin uploaded");
    announce(state, name, &revision).await;
    Ok((StatusCode::CREATED, revision, false))
}

/// On a shared log: loads, swaps and removes what the other instances upload and delete
/// (and, at start, every upload in the store), for as long as the router runs.
pub async fn follow(state: Arc<AppState>, admin: Arc<PluginAdmin>) {
    let Some(shared) = admin.shared.clone() else { return };
    let changes = match shared.follow().await {
        Ok(changes) => changes,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the shared plugins");
            return;
        }
    };
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        match change {
            Change::Put(name) => match shared.get(&name).await {
                Ok((manifest, component)) => {
                    if let Err(e) = install(&state, &admin, &name, &manifest, &component.into(), true).await {
                        tracing::error!(plugin = %name, error = %e, "a plugin uploaded on another instance was refused here");
                    }
                }
                Err(e) => tracing::error!(plugin = %name, error = %e, "cannot fetch a shared plugin"),
            },
            Change::Deleted(name) => {
                let _ = uninstall(&state, &admin, &name);
            }
        }
    }
}

/// `DELETE /v1/plugins/{name}`: an uploaded plugin stops getting events (retries already
/// scheduled finish) and is not loaded at the next start.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(admin): Extension<Arc<PluginAdmin>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    uninstall(&state, &admin, &name)?;
    if let Some(shared) = admin.shared.clone() {
        // Finished even if the client hangs up: the other instances stop running it too.
        let deleted = state.pipeline.finish_anyway(async move { shared.delete(&name).await });
        deleted.await.map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Stops routing to uploaded plugin `name` and forgets its files.
fn uninstall(state: &AppState, admin: &PluginAdmin, name: &str) -> Result<(), ApiError> {
    let toml_path = admin.uploads.join(format!("{name}.toml"));
    let core = state.pipeline.core();
    if !toml_path.exists() {
        return Err(if core.plugins().iter().any(|p| p.name() == name) {
            ApiError::Conflict(format!("`{name}` is defined in the config file"))
        } else {
            ApiError::NotFound
        });
    }
    core.remove_plugin(name);
    for path in [toml_path, admin.uploads.join(format!("{name}.wasm"))] {
        std::fs::remove_file(&path).map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// `fixinventory/config-updated` for a plugin whose component changed (`id` = `plugin:<name>`).
async fn announce(state: &AppState, name: &str, revision: &str) {
    let body = json!({ "kind": "event", "message_type": "config-updated",
                       "data": { "id": format!("plugin:{name}"), "revision": revision } });
    if let Err(e) = state.emit_internal("fixinventory/config-updated", body, "eventyard:plugins").await {
        tracing::warn!(plugin = name, error = %e, "config-updated for a plugin change not accepted");
    }
}

/// Longest plugin name: it becomes file names under the uploads directory.
pub const MAX_PLUGIN_NAME: usize = 64;

/// A plugin name as `PUT` and `DELETE` accept it: 1 to [`MAX_PLUGIN_NAME`] of `a-z 0-9 -`,
/// so it names a file in the uploads directory and nothing outside it (`..%2F` arrives here
/// decoded as `../`).
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PLUGIN_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(ApiError::BadRequest(format!("a plugin name is 1-{MAX_PLUGIN_NAME} of a-z 0-9 -"))),
    }
}

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_string())
}

/// A crash leaves the old file or the new one; owner-only ([`crate::files`]).
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), ApiError> {
    crate::files::write_atomic(path, bytes).map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn plugin_names_cannot_leave_the_uploads_directory() {
        for bad in ["", "../victim", "..", "a/b", "a.b", "A", &"a".repeat(super::MAX_PLUGIN_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["echo", "my-plugin-2", &"a".repeat(super::MAX_PLUGIN_NAME)] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}

//! Fix Inventory's (Resoto's) message-bus endpoints, so its workers and listeners work
//! against Eventyard as they do against their core:
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /events?show=<types>` | WebSocket listener: every `fixinventory/*` event as `{"kind","message_type","data"}`; messages sent in are ingested |
//! | `GET /subscriber/{id}/handle` | WebSocket actor channel: `action` messages of the steps `id` subscribed to; `action_done` / `action_error` / `action_progress` / `action_info` back |
//! | `POST` / `DELETE /subscriber/{id}/{message_type}` | add (`?timeout=`, `?wait_for_completion=`) / remove one subscription |
//! | `PUT /subscriber/{id}`, `GET /subscriber/{id}`, `GET /subscribers` | replace all / show / list |
//! | `POST /v1/workflows/{name}/run`, `GET /v1/workflows` | start a run (202 with the task id) / the workflows |
//! | `GET /v1/tasks`, `GET /v1/tasks/{id}` | runs and each step's state |
//!
//! A listener or actor that connects or leaves emits `message-listener-connected` /
//! `message-listener-disconnected` with `subscriber_id` and `channels`.
//!
//! Limits: a message (and a frame) sent in over either WebSocket is at most
//! `ingest.max_body_bytes`, like an HTTP body (a larger one ends the connection); what is
//! sent in is ingestion and obeys the ingestion tokens (see [`crate::http::auth`]); `/events`
//! listeners count against `subscribers.max_connections`; subscriber ids and timeouts are
//! bounded by [`crate::protocols::fixinventory::actors`].

use crate::http::extract::{Path, Query, WebSocketUpgrade};
use crate::http::subscribe::capped;
use crate::http::{ApiError, AppState, Grant};
use crate::protocols::fixinventory::actors::{ActorError, Subscription};
use crate::protocols::fixinventory::workflows::WorkflowError;
use axum::extract::ws::Message;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The `source` of events that came in over these endpoints.
const SOURCE: &str = "fixinventory";

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::Unknown(id) => ApiError::UnknownSubscriber { id },
            ActorError::AlreadyConnected(id) => ApiError::AlreadyConnected { id },
            ActorError::TooMany(limit) => ApiError::TooManySubscribers { limit },
            ActorError::BadTimeout(_) => ApiError::BadRequest(e.to_string()),
            ActorError::Io(detail) => ApiError::Internal(format!("subscribers: {detail}")),
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::Unknown(name) => ApiError::UnknownWorkflow { name },
        }
    }
}

#[derive(Deserialize)]
pub struct ShowParams {
    #[serde(default)]
    show: String,
    /// The listener's name in `message-listener-*` events; a new one when absent.
    id: Option<String>,
}

/// Subscriber and listener ids are kept (subscriber lists on disk, `message-listener-*`
/// events, the actors' table), so they are capped like every other id a client chooses.
fn subscriber_id(id: &str) -> Result<(), ApiError> {
    match id.len() > crate::event::MAX_ID_BYTES {
        true => Err(ApiError::IdTooLong { field: "subscriber_id", limit: crate::event::MAX_ID_BYTES }),
        false => Ok(()),
    }
}

/// `GET /events?show=collect,cleanup_plan` (all when absent or `*`).
pub async fn listen(
    State(state): State<Arc<AppState>>,
    Query(params): Query<ShowParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let show: Vec<String> =
        params.show.split(',').map(str::trim).filter(|s| !s.is_empty() && *s != "*").map(String::from).collect();
    let id = params.id.unwrap_or_else(|| format!("listener-{}", uuid::Uuid::now_v7()));
    subscriber_id(&id)?;
    let grant = state.auth.fixinventory_grant(&headers);
    let slot = state.streams.take()?;
    // Subscribed before the 101, like /v1/subscribe: nothing accepted after the handshake is missed.
    let rx = state.pipeline.bus.subscribe();
    Ok(capped(ws, state.limits.max_body_bytes).on_upgrade(move |socket| async move {
        let _slot = slot;
        listener_connected(&state, &id, &show, true).await;
        let (mut tx, mut incoming) = socket.split();
        let mut rx = rx;
        loop {
            tokio::select! {
                frame = rx.recv() => {
                    let msg = match frame {
                        Ok(f) => {
                            let Some(name) = f.type_name.strip_prefix("fixinventory/") else { continue };
                            if !show.is_empty() && !show.iter().any(|s| s == name) {
                                continue;
                            }
                            // The message as sent (its data), one line, without re-parsing the frame.
                            let text = serde_json::to_string(&f.data).expect("a body serialises");
                            Message::Text(text.into())
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => crate::http::subscribe::lagged(&state, missed),
                        Err(_) => break,
                    };
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
                msg = incoming.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Err(e) = ingest_message(&state, &grant, &text).await {
                            if tx.send(Message::Text(e.body().to_string().into())).await.is_err() { break; }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        listener_connected(&state, &id, &show, false).await;
    }))
}

/// `GET /subscriber/{id}/handle`: one connection per subscriber (a second gets 409).
pub async fn handle(
    State(state): State<Arc<AppState>>,
    axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    subscriber_id(&id)?;
    let grant = state.auth.fixinventory_grant(&headers);
    let (n, mut outgoing, channels) = fi.workflows.actors.connect(&id)?;
    Ok(capped(ws, state.limits.max_body_bytes).on_upgrade(move |socket| async move {
        listener_connected(&state, &id, &channels, true).await;
        let (mut tx, mut incoming) = socket.split();
        loop {
            tokio::select! {
                out = outgoing.recv() => match out {
                    Some(text) => if tx.send(Message::Text(text.into())).await.is_err() { break },
                    None => break,
                },
                msg = incoming.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Err(e) = answer(&state, &fi, &grant, &id, &text).await {
                            if tx.send(Message::Text(e.body().to_string().into())).await.is_err() { break; }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let channels = fi.workflows.actors.disconnect(&id, n);
        listener_connected(&state, &id, &channels, false).await;
    }))
}

/// An actor's message: ingested as an event; an `action_done` / `action_error` also answers
/// its step (named by `data.task` and `data.step`, or the message type).
async fn answer(
    state: &AppState,
    fi: &super::FixInventory,
    grant: &Result<Grant, ApiError>,
    id: &str,
    text: &str,
) -> Result<(), ApiError> {
    let message = ingest_message(state, grant, text).await?;
    let kind = message["kind"].as_str().unwrap_or_default();
    if matches!(kind, "action_done" | "action_error") {
        let data = &message["data"];
        let task = data["task"].as_str().unwrap_or_default();
        let step = data["step"].as_str().or(message["message_type"].as_str()).unwrap_or_default();
        fi.workflows.actors.answer(id, task, step, kind, data.clone());
    }
    Ok(())
}

/// Validates and accepts one `{"kind","message_type","data"}` message as
/// `fixinventory/<message_type>`, if the connection's `grant` (see
/// [`crate::http::Auth::fixinventory_grant`]) allows it.
async fn ingest_message(state: &AppState, grant: &Result<Grant, ApiError>, text: &str) -> Result<Value, ApiError> {
    let grant = grant.as_ref().map_err(ApiError::clone)?;
    let message = crate::http::body::parse_json(text.as_bytes())?;
    let Some(message_type) = message["message_type"].as_str() else {
        return Err(ApiError::BadRequest("a message is {\"kind\", \"message_type\", \"data\"}".into()));
    };
    state.ingest_tree(grant, &format!("fixinventory/{message_type}"), message.clone(), SOURCE).await?;
    Ok(message)
}

async fn listener_connected(state: &AppState, id: &str, channels: &[String], connected: bool) {
    let message_type = if connected { "message-listener-connected" } else { "message-listener-disconnected" };
    let body =
        json!({ "kind": "event", "message_type": message_type, "data": { "subscriber_id": id, "channels": channels } });
    if let Err(e) = state.emit_internal(&format!("fixinventory/{message_type}"), body, SOURCE).await {
        tracing::warn!(subscriber = id, error = %e, "listener event not accepted");
    }
}

#[derive(Deserialize)]
pub struct SubscribeParams {
    /// Seconds.
    timeout: Option<u64>,
    /// `true` / `false` in any case (Python clients send `True`), or 1 / 0.
    wait_for_completion: Option<String>,
}

pub async fn subscribe(
    State(state): State<Arc<AppState>>,
    axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>,
    Path((id, message_type)): Path<(String, String)>,
    Query(q): Query<SubscribeParams>,
) -> Result<Response, ApiError> {
    subscriber_id(&id)?;
    state.registry.get(&format!("fixinventory/{message_type}"))?;
    let wait_for_completion = match q.wait_for_completion.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!("`wait_for_completion` is true or false, not `{other}`")))
        }
    };
    let sub = Subscription {
        message_type,
        wait_for_completion,
        timeout: q.timeout.unwrap_or(crate::protocols::fixinventory::actors::DEFAULT_SUBSCRIPTION_TIMEOUT_SECS),
    };
    Ok(Json(fi.workflows.actors.subscribe(&id, sub)?).into_response())
}

pub async fn unsubscribe(
    axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>,
    Path((id, message_type)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(fi.workflows.actors.unsubscribe(&id, &message_type)?).into_response())
}

pub async fn replace(
    State(state): State<Arc<AppState>>,
    axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    subscriber_id(&id)?;
    let subs: Vec<Subscription> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("expected [{{\"message_type\", \"wait_for_completion\"?, \"timeout\"?}}]: {e}"))
    })?;
    for s in &subs {
        state.registry.get(&format!("fixinventory/{}", s.message_type))?;
    }
    Ok(Json(fi.workflows.actors.replace(&id, subs)?).into_response())
}

pub async fn subscriber(
    axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let view = fi.workflows.actors.get(&id).ok_or(ApiError::UnknownSubscriber { id })?;
    Ok(Json(view).into_response())
}

pub async fn subscribers(axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>) -> Json<Value> {
    Json(json!({ "subscribers": fi.workflows.actors.list() }))
}

/// Optional body: `{"steps": {"<step>": {extra fields of that step's action data}}}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    #[serde(default)]
    steps: std::collections::HashMap<String, serde_json::Map<String, Value>>,
}

pub async fn run_workflow(
    State(state): State<Arc<AppState>>,
    axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let expected = |e: &dyn std::fmt::Display| {
        ApiError::BadRequest(format!("expected {{\"steps\": {{\"<step>\": {{...}}}}}}: {e}"))
    };
    let body: RunBody = match body.is_empty() {
        true => RunBody::default(),
        // An object: serde would also take a struct from an array (`[]` as no steps).
        false => match crate::http::body::parse_json(&body)? {
            v @ Value::Object(_) => serde_json::from_value(v).map_err(|e| expected(&e))?,
            _ => return Err(expected(&"the body is a JSON object")),
        },
    };
    if let Some(steps) = crate::protocols::fixinventory::workflows::steps(&name) {
        if let Some(unknown) = body.steps.keys().find(|k| !steps.contains(&k.as_str())) {
            return Err(ApiError::BadRequest(format!("`{unknown}` is not a step of {name}")));
        }
    }
    let id = fi.workflows.start(state.clone(), &name, "api".into(), body.steps)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "task_id": id, "workflow": name }))).into_response())
}

pub async fn workflows(axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>) -> Json<Value> {
    Json(fi.workflows.describe())
}

pub async fn tasks(axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>) -> Json<Value> {
    let tasks = fi.workflows.list();
    Json(json!({ "count": tasks.len(), "tasks": tasks }))
}

pub async fn task(
    axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = fi.workflows.task(&id).ok_or(ApiError::UnknownTask { id })?;
    Ok(Json(task).into_response())
}

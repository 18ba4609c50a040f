//! `GET /v1/subscribe?types=<glob>` (or `?regex=<re>`): a WebSocket streaming every routed
//! event whose type matches, as JSON text frames (`id`, `type`, `time`, `priority`,
//! `source`, `data`). Profile globs (`idem-*`) and regexes also match the name within the
//! family (see [`Matcher`]).
//!
//! Subscribers read from the bounded broadcast ring of [`crate::router::bus`]: one that
//! falls more than `subscribers.buffer` events behind skips the oldest ones and receives a
//! `{"error":"lagged","missed":N}` frame in their place; ingestion never waits for it.

use super::{ApiError, AppState};
use crate::router::bus::Frame;
use crate::router::pattern::{Matcher, TypePattern};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

#[derive(Deserialize)]
pub struct Params {
    #[serde(default)]
    types: String,
    regex: Option<String>,
}

pub async fn subscribe(
    State(state): State<Arc<AppState>>,
    Query(params): Query<Params>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let pattern = match params.regex {
        Some(_) if !params.types.is_empty() => {
            return Err(ApiError::BadRequest("give `types` (globs) or `regex`, not both".into()))
        }
        Some(re) => {
            Matcher::Regex(regex::Regex::new(&re).map_err(|e| ApiError::BadRequest(format!("bad `regex`: {e}")))?)
        }
        None => Matcher::Glob(
            TypePattern::parse(&params.types).map_err(|e| ApiError::BadRequest(format!("bad `types` glob: {e}")))?,
        ),
    };
    // Subscribe before the 101 is sent, not in the upgrade callback: a client that posts an
    // event right after its handshake completed must see it.
    let rx = state.pipeline.bus.subscribe();
    Ok(ws.on_upgrade(move |socket| stream(state, pattern, rx, socket)))
}

/// The frame a subscriber that fell `missed` events behind gets in their place (counted in
/// `/metrics`); every WebSocket reader of the bus sends it.
pub fn lagged(state: &AppState, missed: u64) -> Message {
    state.metrics.subscriber_lagged.fetch_add(missed, Ordering::Relaxed);
    Message::Text(format!(r#"{{"error":"lagged","missed":{missed}}}"#).into())
}

async fn stream(state: Arc<AppState>, pattern: Matcher, mut rx: Receiver<Arc<Frame>>, socket: WebSocket) {
    let (mut tx, mut incoming) = socket.split();
    tracing::debug!(types = pattern.as_str(), "subscriber connected");
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let msg = match frame {
                    Ok(f) if pattern.matches(&f.type_name) => Message::Text(f.json.clone()),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => lagged(&state, missed),
                    Err(RecvError::Closed) => break,
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
            msg = incoming.next() => match msg {
                // Pings are answered by axum; anything else from the client is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    tracing::debug!(types = pattern.as_str(), "subscriber left");
}

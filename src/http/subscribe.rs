//! `GET /v1/subscribe?types=<glob>` (or `?regex=<re>`): a WebSocket streaming every routed
//! event whose type matches, as JSON text frames (`id`, `type`, `time`, `priority`,
//! `source`, `data`). Profile globs (`idem-*`) and regexes also match the name within the
//! family (see [`Matcher`]).
//!
//! Subscribers read from the bounded broadcast ring of [`crate::router::bus`]: one that
//! falls more than `subscribers.buffer` events behind skips the oldest ones and receives a
//! `{"error":"lagged","missed":N}` frame in their place; ingestion never waits for it.
//!
//! At most `subscribers.max_connections` streams (these and Fix Inventory's `/events`
//! listeners) are open at once: past it the handshake is answered 503
//! `too_many_connections` before the upgrade. Patterns are at most
//! [`crate::event::pattern::MAX_PATTERN_LEN`] bytes and regexes compile
//! within explicit size limits ([`compile_regex`]).

use super::extract::{Query, WebSocketUpgrade};
use super::{ApiError, AppState};
use crate::event::pattern::{compile_regex, Matcher, TypePattern, MAX_PATTERN_LEN};
use crate::router::bus::Subscription;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Largest message a stream's client may send (they are read and ignored; pings and closes
/// are tiny): a client cannot make the router buffer a large message.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4096;

/// The open event streams, against `subscribers.max_connections`.
pub struct StreamSlots {
    open: AtomicUsize,
    max: usize,
}

/// One open stream; gives its slot back when dropped (the stream's task ended).
pub struct StreamSlot(Arc<StreamSlots>);

impl StreamSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { open: AtomicUsize::new(0), max })
    }

    /// A slot for one more stream, or 503 `too_many_connections`.
    pub fn take(self: &Arc<Self>) -> Result<StreamSlot, ApiError> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .map(|_| StreamSlot(self.clone()))
            .map_err(|_| ApiError::TooManyConnections { limit: self.max })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

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
        Some(re) => Matcher::Regex(compile_regex(&re).map_err(|e| ApiError::BadRequest(format!("bad `regex`: {e}")))?),
        None if params.types.len() > MAX_PATTERN_LEN => {
            return Err(ApiError::BadRequest(format!("`types` is longer than {MAX_PATTERN_LEN} bytes")))
        }
        None => Matcher::Glob(
            TypePattern::parse(&params.types).map_err(|e| ApiError::BadRequest(format!("bad `types` glob: {e}")))?,
        ),
    };
    let slot = state.streams.take()?;
    // Subscribe before the 101 is sent, not in the upgrade callback: a client that posts an
    // event right after its handshake completed must see it.
    let rx = state.pipeline.bus.subscribe();
    Ok(capped(ws, MAX_CLIENT_MESSAGE_BYTES).on_upgrade(move |socket| async move {
        stream(state, pattern, rx, socket).await;
        drop(slot);
    }))
}

/// `ws` refusing client messages and frames over `max` bytes: reading one fails, which ends
/// the connection before the message is buffered.
pub fn capped(ws: WebSocketUpgrade, max: usize) -> axum::extract::ws::WebSocketUpgrade {
    ws.upgrade.max_message_size(max).max_frame_size(max)
}

/// The frame a subscriber that fell `missed` events behind gets in their place (counted in
/// `/metrics`); every WebSocket reader of the bus sends it.
pub fn lagged(state: &AppState, missed: u64) -> Message {
    state.metrics.subscriber_lagged.fetch_add(missed, Ordering::Relaxed);
    Message::Text(format!(r#"{{"error":"lagged","missed":{missed}}}"#).into())
}

async fn stream(state: Arc<AppState>, pattern: Matcher, mut rx: Subscription, socket: WebSocket) {
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

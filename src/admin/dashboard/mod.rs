//! The web dashboard at `/ui`: one page (HTML, JavaScript and CSS compiled into the binary,
//! no framework, no CDN, no build step) showing the live tail of events, the plugins with
//! their numbers and charts, dead letters (replay, purge), the schema browser with a
//! validation box, workflows and tasks, and the cluster's instances.
//!
//! **Auth.** The page itself holds no data and is served to anyone; every piece of data
//! comes from the admin endpoints, which the page calls with `Authorization: Bearer
//! <admin token>` (the operator pastes the token; it stays in the tab's `sessionStorage`).
//! A browser cannot put that header on a WebSocket, and the token must not travel in a URL
//! (URLs end up in logs and histories), so the live stream is opened with a **ticket**:
//! `POST /ui/ticket` (admin token) answers a random ticket that opens `GET /ui/live` once,
//! within [`TICKET_TTL`]. No cookie is set, so no other site can make the browser act on
//! the router's behalf.
//!
//! **Live.** `/ui/live` is one WebSocket carrying every routed event (as `/v1/subscribe`
//! sends them; the page filters by type and pauses) and, every [`STATS_EVERY`], a
//! `{"stats": ...}` frame: each plugin as `GET /v1/plugins` lists it, the dead letters'
//! count and newest id (the page reloads the list when they change), and the cluster's
//! instances. The page keeps the samples its charts draw (see `assets/app.js`).
//!
//! Small read endpoints the page needs and no other endpoint gives (admin token):
//! `POST /v1/validate/{type}` (a body checked against its schema, nothing ingested) and
//! `GET /v1/cluster` (the instances sharing a NATS log).

use crate::http::events::{prepare_typed, Data, Envelope};
use crate::http::extract::{Path, Query, WebSocketUpgrade};
use crate::http::openapi::{shape, Guard, Operation};
use crate::http::subscribe::{capped, lagged, MAX_CLIENT_MESSAGE_BYTES};
use crate::http::{auth, body, ApiError, AppState};
use crate::router::bus::Subscription;
use crate::store::dead_letters::Query as LetterQuery;
use crate::store::nats::instances::Instances;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// How long a ticket opens `/ui/live`: the page asks for one right before it connects.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Tickets issued and not yet used that are kept (the oldest goes first): a page that asks
/// for tickets without connecting cannot grow the router's memory.
pub const MAX_TICKETS: usize = 64;
/// How often the live stream carries a stats frame: often enough for charts of the last
/// minutes, rarely enough that a frame of every plugin costs nothing noticeable.
pub const STATS_EVERY: Duration = Duration::from_secs(2);

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Only the page's own scripts, styles and connections (same origin, WebSockets
/// included); never framed by another site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the dashboard's endpoints share besides the HTTP state.
pub struct Dashboard {
    tickets: Tickets,
    /// On a shared log: the instances of the cluster.
    instances: Option<Arc<Instances>>,
}

/// One-use tickets for `/ui/live`, each valid for [`TICKET_TTL`].
#[derive(Default)]
struct Tickets(Mutex<VecDeque<(String, Instant)>>);

impl Tickets {
    fn issue(&self) -> String {
        let ticket = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let mut issued = self.0.lock().unwrap_or_else(|p| p.into_inner());
        issued.retain(|(_, at)| at.elapsed() < TICKET_TTL);
        if issued.len() >= MAX_TICKETS {
            issued.pop_front();
        }
        issued.push_back((ticket.clone(), Instant::now()));
        ticket
    }

    /// True once for a ticket issued within [`TICKET_TTL`].
    fn redeem(&self, ticket: &str) -> bool {
        let mut issued = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let found = issued.iter().position(|(t, _)| auth::same(t, ticket));
        found.and_then(|i| issued.remove(i)).is_some_and(|(_, at)| at.elapsed() < TICKET_TTL)
    }
}

/// The dashboard's routes: the page and its assets (open), the ticket and the read
/// endpoints (admin token), the live stream (a ticket).
pub fn routes(state: &Arc<AppState>, instances: Option<Arc<Instances>>) -> axum::Router<Arc<AppState>> {
    let admin = || axum::middleware::from_fn_with_state(state.clone(), auth::require_admin);
    let dashboard = Arc::new(Dashboard { tickets: Tickets::default(), instances });
    axum::Router::new()
        .route("/ui", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/ui/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/ui/ticket", post(ticket).route_layer(admin()))
        .route("/ui/live", get(live))
        .route("/v1/validate/{*type}", post(validate).route_layer(admin()))
        .route("/v1/cluster", get(cluster).route_layer(admin()))
        .layer(Extension(dashboard))
}

/// An embedded asset with the headers that keep the page to itself.
fn asset(content_type: &'static str, text: &'static str) -> Response {
    let mut res = ([(header::CONTENT_TYPE, content_type)], text).into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The assets change with the binary: a browser asks again rather than run an old page.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// `POST /ui/ticket`: `{"ticket", "expires_in_secs"}`, opening `/ui/live` once.
async fn ticket(Extension(d): Extension<Arc<Dashboard>>) -> Json<Value> {
    Json(json!({ "ticket": d.tickets.issue(), "expires_in_secs": TICKET_TTL.as_secs() }))
}

#[derive(Deserialize)]
struct LiveParams {
    #[serde(default)]
    ticket: String,
}

/// The dashboard's endpoints, for `/openapi.json`.
pub fn operations(registry: &crate::schema::Registry) -> Vec<Operation> {
    let text = json!({ "type": "string" });
    let page = |path: &str, what: &str, media: &str| {
        Operation::get(path, what).answers(200, what, Some((media, text.clone())))
    };
    let admin = |op: Operation| op.guard(Guard::Admin);
    let types = shape::one_of(registry.iter().map(|t| &*t.name));
    vec![
        page("/ui", "The dashboard (no data without the admin token)", "text/html"),
        page("/ui/", "The dashboard (no data without the admin token)", "text/html"),
        page("/ui/app.js", "The dashboard's script", "text/javascript"),
        page("/ui/style.css", "The dashboard's styles", "text/css"),
        admin(Operation::post("/ui/ticket", "A one-use ticket that opens the dashboard's live stream within 30 s")).ok(
            200,
            "the ticket",
            shape::object(&["ticket", "expires_in_secs"]),
        ),
        shape::websocket(Operation::get("/ui/live", "The dashboard's live stream: every event, and stats every 2 s"))
            .query("ticket", text.clone(), "from POST /ui/ticket (required)")
            .fails(401, "unauthorized (no, a used or an expired ticket)")
            .fails(503, "too_many_connections"),
        admin(Operation::post("/v1/validate/{type}", "Validate a body against a type's schema without ingesting it"))
            .path_param("type", types)
            .body([("application/json", json!({}))])
            .ok(200, "whether it is valid, and the errors at their JSON pointers", shape::object(&["valid", "type"]))
            .fails(400, "malformed_json")
            .fails(404, "unknown_event_type")
            .fails(413, "payload_too_large"),
        admin(Operation::get("/v1/cluster", "The instances sharing this router's log (NATS), or `local`")).ok(
            200,
            "the backend and its instances",
            shape::object(&["backend"]),
        ),
    ]
}

/// `GET /ui/live?ticket=<ticket>`: the dashboard's WebSocket (events and stats frames).
/// A missing, used or expired ticket is a 401 before the upgrade; the stream takes one of
/// the `subscribers.max_connections` slots like any other.
async fn live(
    State(state): State<Arc<AppState>>,
    Extension(d): Extension<Arc<Dashboard>>,
    Query(params): Query<LiveParams>,
    ws: Result<WebSocketUpgrade, ApiError>,
) -> Result<Response, ApiError> {
    // The ticket first: a request without one learns nothing else about this endpoint.
    if !d.tickets.redeem(&params.ticket) {
        return Err(ApiError::Unauthorized);
    }
    let ws = ws?;
    let slot = state.streams.take()?;
    // Subscribed before the 101, so an event posted right after the handshake is seen.
    let rx = state.pipeline.bus.subscribe();
    Ok(capped(ws, MAX_CLIENT_MESSAGE_BYTES).on_upgrade(move |socket| async move {
        stream(state, d, rx, socket).await;
        drop(slot);
    }))
}

async fn stream(state: Arc<AppState>, d: Arc<Dashboard>, mut rx: Subscription, socket: WebSocket) {
    let (mut tx, mut incoming) = socket.split();
    let mut tick = tokio::time::interval(STATS_EVERY);
    loop {
        let msg = tokio::select! {
            frame = rx.recv() => match frame {
                Ok(f) => Message::Text(f.json.clone()),
                Err(RecvError::Lagged(missed)) => lagged(&state, missed),
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => Message::Text(json!({ "stats": stats(&state, &d).await }).to_string().into()),
            msg = incoming.next() => match msg {
                // The page sends nothing; pings are answered by axum.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
        };
        if tx.send(msg).await.is_err() {
            break;
        }
    }
}

/// One stats frame: every plugin, the dead letters' count and newest id, the instances.
async fn stats(state: &AppState, d: &Dashboard) -> Value {
    let core = state.pipeline.core();
    let plugins: Vec<Value> = core.plugins().iter().map(|p| super::plugins::describe(p)).collect();
    let newest = core.dead_letters.list(&LetterQuery { limit: Some(1), ..LetterQuery::default() });
    json!({
        "time": crate::event::rfc3339(time::OffsetDateTime::now_utc()),
        "plugins": plugins,
        "dead_letters": { "count": core.dead_letters.len(), "newest": newest.first().map(|l| &l.id) },
        "cluster": instances(d).await.ok(),
    })
}

/// `POST /v1/validate/{type}`: the body checked against the type's schema, as ingestion
/// would check it, and nothing ingested. `200 {"valid": true, "type"}` or `200 {"valid":
/// false, "type", "errors": [{instance_path, schema_path, message}]}`; a body that is not
/// JSON is 400 `malformed_json` (line, column), an unknown type 404 `unknown_event_type`,
/// a body over `ingest.max_body_bytes` 413 `payload_too_large`. Any content type is read
/// as JSON: this is a checking tool, not a door.
async fn validate(
    State(state): State<Arc<AppState>>,
    Path(type_name): Path<String>,
    headers: HeaderMap,
    payload: Body,
) -> Result<Json<Value>, ApiError> {
    let ty = state.registry.get(&type_name)?;
    let bytes = body::read(&headers, payload, state.limits.max_body_bytes).await?;
    match prepare_typed(ty, Data::Text(body::json_text(&bytes)?), Envelope::default()) {
        Ok(_) => Ok(Json(json!({ "valid": true, "type": &*ty.name }))),
        Err(ApiError::Validation { type_name, errors }) => {
            Ok(Json(json!({ "valid": false, "type": type_name, "errors": errors })))
        }
        Err(e) => Err(e),
    }
}

/// `GET /v1/cluster`: `{"backend": "local"}`, or on NATS `{"backend": "nats", "instance":
/// <this one>, "instances": [{instance, version, started_at, seen_at}]}`.
async fn cluster(Extension(d): Extension<Arc<Dashboard>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(instances(&d).await?))
}

async fn instances(d: &Dashboard) -> Result<Value, ApiError> {
    let Some(instances) = &d.instances else { return Ok(json!({ "backend": "local" })) };
    let list = instances.list().await.map_err(|e| ApiError::Internal(format!("cluster instances: {e}")))?;
    Ok(json!({ "backend": "nats", "instance": instances.me(), "instances": list }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_once() {
        let tickets = Tickets::default();
        let t = tickets.issue();
        assert!(!tickets.redeem("not-a-ticket"));
        assert!(tickets.redeem(&t));
        assert!(!tickets.redeem(&t), "a ticket is good for one connection");
    }

    #[test]
    fn tickets_are_bounded_oldest_first() {
        let tickets = Tickets::default();
        let first = tickets.issue();
        let rest: Vec<String> = (0..MAX_TICKETS).map(|_| tickets.issue()).collect();
        assert!(!tickets.redeem(&first), "the oldest made room");
        assert!(rest.iter().all(|t| tickets.redeem(t)));
    }

    #[test]
    fn an_expired_ticket_is_refused() {
        let tickets = Tickets::default();
        let old = Instant::now().checked_sub(TICKET_TTL + Duration::from_secs(1));
        // Some clocks cannot go back that far right after boot; nothing to test then.
        let Some(old) = old else { return };
        tickets.0.lock().unwrap().push_back(("t".into(), old));
        assert!(!tickets.redeem("t"));
    }
}

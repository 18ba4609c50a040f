//! Bearer tokens. The admin endpoints (plugins, dead letters, the config service, workflow
//! runs) need the admin token: configured, or generated at the first start, kept in
//! `<store dir>/admin-token` (mode 0600), its first characters and the file printed to the log. Ingestion is open unless
//! `[[auth.ingest]]` tokens are configured; then each request needs one, and each token may
//! send only the event types its globs match (checked per event, so one batch item of a type
//! the token may not send fails alone with 403).
//!
//! A token may also be granted `answers = ["infrahub/response/..."]`: only then do its
//! response events answer a caller waiting on `POST /v1/rpc/{type}` (plugins always may).
//!
//! Event streams and Fix Inventory's endpoints are open unless a token is configured for
//! them: `[auth] subscribe_token` guards `GET /v1/subscribe`, `[auth] fixinventory_token`
//! guards `/events`, `/subscriber/...` and `/subscribers` (the admin token passes both).
//! Fix Inventory messages sent in over `/events` and `/subscriber/{id}/handle` are
//! ingestion: with `[[auth.ingest]]` tokens configured, the connection's bearer must be one
//! of them and its globs decide which messages it may send (or it is the
//! `fixinventory_token`, which may send Fix Inventory's messages), exactly as over HTTP.

use super::config::AuthConfig;
use super::{ApiError, AppState};
use crate::event::pattern::TypePattern;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use std::path::Path;
use std::sync::Arc;

pub struct Auth {
    admin: String,
    ingest: Vec<(String, Grant)>,
    subscribe: Option<String>,
    fixinventory: Option<String>,
}

/// What the request's token may do. The default (open ingestion, or the router's own
/// events) may send any type and answer no RPC caller.
#[derive(Clone, Default)]
pub struct Grant {
    /// The types it may send: `None` means any.
    pub types: Option<Arc<TypePattern>>,
    /// The response types with which it may answer a waiting RPC caller (`answers`).
    pub answers: Option<Arc<TypePattern>>,
    /// The token itself, as the producer part of idempotency keys (hashed, never shown).
    pub token: Option<Arc<str>>,
}

impl Grant {
    pub fn allows(&self, type_name: &str) -> bool {
        self.types.as_ref().is_none_or(|p| p.matches(type_name))
    }

    /// Who sends, for the pipeline: the idempotency namespace and the RPC answer right.
    pub fn producer(&self) -> crate::router::Producer<'_> {
        crate::router::Producer { token: self.token.as_deref(), answers: self.answers.as_deref() }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("admin token file {path}: {message}")]
pub struct AuthError {
    path: String,
    message: String,
}

impl Auth {
    /// The configured tokens; without an admin token, the one in `state_dir` (made at the
    /// first start).
    pub fn open(config: &AuthConfig, state_dir: &Path) -> Result<Self, AuthError> {
        let admin = match &config.admin_token {
            Some(t) => t.clone(),
            None => stored_admin_token(&state_dir.join("admin-token"))?,
        };
        let ingest = config
            .ingest
            .iter()
            .map(|t| {
                let pattern = |globs: &[String]| Arc::new(TypePattern::parse(&globs.join(",")).expect("checked"));
                let grant = Grant {
                    types: Some(pattern(&t.types)),
                    // An empty list would parse as "any type": it means none.
                    answers: (!t.answers.is_empty()).then(|| pattern(&t.answers)),
                    token: Some(t.token.as_str().into()),
                };
                (t.token.clone(), grant)
            })
            .collect();
        Ok(Self {
            admin,
            ingest,
            subscribe: config.subscribe_token.clone(),
            fixinventory: config.fixinventory_token.clone(),
        })
    }
}

/// Characters of a generated admin token printed to the log, enough to tell tokens apart.
pub const TOKEN_SHOWN: usize = 6;

fn stored_admin_token(path: &Path) -> Result<String, AuthError> {
    let err = |e: std::io::Error| AuthError { path: path.display().to_string(), message: e.to_string() };
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(err)?;
        f.write_all(token.as_bytes()).and_then(|_| f.sync_all()).map_err(err)?;
    }
    // Not the token itself: logs are read by more people than the data directory.
    tracing::warn!(path = %path.display(), "generated the admin token {}… (read it in full from that file, owner-only)", &token[..TOKEN_SHOWN]);
    Ok(token)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Compares without stopping at the first difference, so timing tells nothing about a token.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Route layer of the admin endpoints.
pub async fn require_admin(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Result<Response, ApiError> {
    match bearer(req.headers()) {
        Some(t) if same(t, &state.auth.admin) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::Forbidden("this token is not the admin token".into())),
        None => Err(ApiError::Unauthorized),
    }
}

impl Auth {
    /// What the request's bearer may send: anything while no ingestion token is configured,
    /// else the globs of the ingestion token it carries.
    pub fn ingest_grant(&self, headers: &HeaderMap) -> Result<Grant, ApiError> {
        if self.ingest.is_empty() {
            return Ok(Grant::default());
        }
        let token = bearer(headers).ok_or(ApiError::Unauthorized)?;
        match self.ingest.iter().find(|(t, _)| same(t, token)) {
            Some((_, grant)) => Ok(grant.clone()),
            None => Err(ApiError::Forbidden("unknown ingestion token".into())),
        }
    }

    /// What a Fix Inventory WebSocket may send in: as [`Self::ingest_grant`], and the
    /// `fixinventory_token` (or the admin token) may send Fix Inventory's messages (the only
    /// ones these endpoints take). Worked out once at the handshake; a connection that may
    /// send nothing can still listen, and each message it sends gets this error back.
    pub fn fixinventory_grant(&self, headers: &HeaderMap) -> Result<Grant, ApiError> {
        let own = bearer(headers)
            .is_some_and(|t| same(t, &self.admin) || self.fixinventory.as_deref().is_some_and(|f| same(t, f)));
        match own {
            true => Ok(Grant::default()),
            false => self.ingest_grant(headers),
        }
    }

    /// `configured` (when set) or the admin token; nothing when not set.
    fn require(&self, configured: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = configured else { return Ok(()) };
        match bearer(headers) {
            Some(t) if same(t, token) || same(t, &self.admin) => Ok(()),
            Some(_) => Err(ApiError::Forbidden("this token is not valid here".into())),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// The ingestion endpoints take the token's [`Grant`] as an extractor, listed before the
/// body's, so a request without a valid token is refused before its body is read. Not a
/// route layer: on the hot path a layer cost every request a boxed future, a clone of the
/// route's service and an extensions map for the grant.
impl axum::extract::FromRequestParts<Arc<AppState>> for Grant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        state.auth.ingest_grant(&parts.headers)
    }
}

/// Route layer of `GET /v1/subscribe`: `[auth] subscribe_token` when configured.
pub async fn require_subscribe(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    state.auth.require(state.auth.subscribe.as_deref(), req.headers())?;
    Ok(next.run(req).await)
}

/// Route layer of Fix Inventory's endpoints: `[auth] fixinventory_token` when configured.
pub async fn require_fixinventory(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    state.auth.require(state.auth.fixinventory.as_deref(), req.headers())?;
    Ok(next.run(req).await)
}

//! Bearer tokens. The admin endpoints (plugins, dead letters, the config service, workflow
//! runs) need the admin token: configured, or generated at the first start, kept in
//! `<store dir>/admin-token` (mode 0600), its first characters and the file printed to the log. Ingestion is open unless
//! `[[auth.ingest]]` tokens are configured; then each request needs one, and each token may
//! send only the event types its globs match (checked per event, so one batch item of a type
//! the token may not send fails alone with 403).
//!
//! Fix Inventory's own endpoints (`/events`, `/subscriber/...`) stay as that system's clients
//! expect them: without bearer tokens.

use super::{ApiError, AppState};
use crate::config::AuthConfig;
use crate::router::pattern::TypePattern;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use std::path::Path;
use std::sync::Arc;

pub struct Auth {
    admin: String,
    ingest: Vec<(String, Arc<TypePattern>)>,
}

/// What the request's token may send: `None` means any type (open ingestion, or the
/// router's own events).
#[derive(Clone, Default)]
pub struct Grant(pub Option<Arc<TypePattern>>);

impl Grant {
    pub fn allows(&self, type_name: &str) -> bool {
        self.0.as_ref().is_none_or(|p| p.matches(type_name))
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
                (t.token.clone(), Arc::new(TypePattern::parse(&t.types.join(",")).expect("checked with the config")))
            })
            .collect();
        Ok(Self { admin, ingest })
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
fn same(a: &str, b: &str) -> bool {
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

/// Route layer of the ingestion endpoints: finds the token's [`Grant`] for the handlers.
pub async fn ingest_grant(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let grant = if state.auth.ingest.is_empty() {
        Grant(None)
    } else {
        let token = bearer(req.headers()).ok_or(ApiError::Unauthorized)?;
        match state.auth.ingest.iter().find(|(t, _)| same(t, token)) {
            Some((_, types)) => Grant(Some(types.clone())),
            None => return Err(ApiError::Forbidden("unknown ingestion token".into())),
        }
    };
    req.extensions_mut().insert(grant);
    Ok(next.run(req).await)
}

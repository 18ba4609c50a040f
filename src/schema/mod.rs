//! Compiled validators: every event type's schema compiled once at start-up, looked up by
//! name on the hot path without allocating, and validation reports with exact paths.

pub mod catalog;
pub mod config;
mod registry;
pub mod tape;

pub use registry::{clip, EventType, Registry, Strictness};

use serde::Serialize;

/// Priority given to an event whose type documents none and which carries none itself.
pub const DEFAULT_PRIORITY: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("unknown event type `{name}`{}", suggest(.suggestions))]
    UnknownType { name: String, suggestions: Vec<String> },
    #[error("schema of `{name}` does not compile: {message}")]
    Invalid { name: String, message: String },
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error(transparent)]
    Catalog(#[from] crate::schema::catalog::CatalogError),
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", s.join(", "))
    }
}

/// Why a document was refused by [`EventType::check`].
#[derive(Debug)]
pub enum Rejection {
    NotJson(serde_json::Error),
    Invalid(Vec<Violation>),
    /// Nests deeper than the router can store and read back (`router::body::MAX_DATA_DEPTH`).
    TooDeep {
        limit: usize,
    },
}

impl std::fmt::Display for Rejection {
    /// "is not JSON: ..." or "fails its schema: `<path>: <message>`; ...", after a subject.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::NotJson(e) => write!(f, "is not JSON: {e}"),
            Rejection::TooDeep { limit } => write!(f, "nests deeper than {limit} levels"),
            Rejection::Invalid(violations) => {
                f.write_str("fails its schema: ")?;
                for (i, v) in violations.iter().enumerate() {
                    write!(f, "{}{}: {}", if i == 0 { "" } else { "; " }, v.instance_path, v.message)?;
                }
                Ok(())
            }
        }
    }
}

/// One reason an event does not match its schema.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer of the failing value in the event (`""` is the whole event).
    pub instance_path: String,
    /// JSON pointer of the schema keyword that failed.
    pub schema_path: String,
    /// What was expected, in words.
    pub message: String,
}

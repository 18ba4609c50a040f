//! The event catalogue: documented Markdown tables in, JSON Schemas out.
//!
//! The tables under `schemas/source/` are the single source of truth (as ripgrep generates
//! its docs from one place). Each source file starts with a front matter naming its family
//! and its format; one parser per format turns the document into [`EventDef`]s whose
//! `schema` is a complete draft 2020-12 JSON Schema. [`generate`] writes and checks the
//! committed `schemas/<family>/<name>.schema.json` files; the router compiles the very
//! same values at start-up, so the files and the running server cannot disagree.

mod body_examples;
mod event_table;
pub mod generate;
mod key_table;
pub mod markdown;
mod types;

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// The catalogue compiled into the binary, so `eventyard serve` works with no files around.
const EMBEDDED: [(&str, &str); 3] = [
    ("schemas/source/fixinventory.md", include_str!("../../../schemas/source/fixinventory.md")),
    ("schemas/source/infrahub.md", include_str!("../../../schemas/source/infrahub.md")),
    ("schemas/source/idem.md", include_str!("../../../schemas/source/idem.md")),
];

/// Base of every generated schema's `$id`.
pub const SCHEMA_ID_BASE: &str = "https://eventyard.dev/schemas";
/// The dialect every generated schema declares.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{}:{line}: {message}", file.display())]
    Parse { file: PathBuf, line: usize, message: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: no catalogue sources (*.md) found", .0.display())]
    Empty(PathBuf),
}

/// A family of event types (`fixinventory`, `infrahub`, `idem`) and the other names it answers to.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub aliases: Vec<String>,
    /// Whether its event names are accepted without the family (`bare_names: true` in the
    /// front matter): Idem's names are its profiles, which Idem producers use alone.
    pub bare_names: bool,
}

/// One documented event type and its generated schema.
#[derive(Debug, Clone)]
pub struct EventDef {
    pub family: String,
    /// The name within the family (`cleanup_plan`, `response/git.file.get`, `idem-state`).
    pub name: String,
    pub schema: Value,
}

impl EventDef {
    /// The full type name, `<family>/<name>`.
    pub fn type_name(&self) -> String {
        format!("{}/{}", self.family, self.name)
    }

    /// Where the generated file lives below the schema output directory.
    pub fn relative_path(&self) -> PathBuf {
        PathBuf::from(&self.family).join(format!("{}.schema.json", self.name))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub families: Vec<Family>,
    pub events: Vec<EventDef>,
}

impl Catalog {
    /// The built-in catalogue (the committed `schemas/source/*.md`, compiled in).
    pub fn embedded() -> Result<Catalog, CatalogError> {
        Self::from_sources(EMBEDDED.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())))
    }

    /// Every `*.md` file of `dir`, in name order.
    pub fn from_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let io = |source| CatalogError::Io { path: dir.to_path_buf(), source };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(CatalogError::Empty(dir.to_path_buf()));
        }
        let sources = paths
            .into_iter()
            .map(|p| {
                std::fs::read_to_string(&p)
                    .map(|t| (p.clone(), t))
                    .map_err(|source| CatalogError::Io { path: p, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_sources(sources)
    }

    pub fn from_sources(sources: impl IntoIterator<Item = (PathBuf, String)>) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::default();
        for (path, text) in sources {
            let origin = markdown::Origin { path: &path };
            let doc = markdown::parse(&text, &origin)?;
            let front = |key: &str| {
                doc.front.get(key).cloned().ok_or_else(|| origin.err(1, format!("front matter needs `{key}:`")))
            };
            let family = front("family")?;
            let format = front("format")?;
            let events = match format.as_str() {
                "event-table" => event_table::parse(&family, &doc, &origin)?,
                "key-table" => key_table::parse(&family, &doc, &origin)?,
                "body-examples" => body_examples::parse(&family, &doc, &origin)?,
                other => {
                    return Err(
                        origin.err(1, format!("unknown format `{other}` (event-table, key-table or body-examples)"))
                    )
                }
            };
            let aliases = doc
                .front
                .get("aliases")
                .map(|a| a.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default();
            let bare_names = doc.front.get("bare_names").is_some_and(|v| v == "true");
            catalog.families.push(Family { name: family, aliases, bare_names });
            catalog.events.extend(events);
        }
        Ok(catalog)
    }
}

/// The fields every generated schema starts with.
fn schema_header(family: &str, name: &str, description: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("$schema".into(), json!(DIALECT));
    m.insert("$id".into(), json!(format!("{SCHEMA_ID_BASE}/{family}/{name}.schema.json")));
    m.insert("title".into(), json!(format!("{family}/{name}")));
    if !description.is_empty() {
        m.insert("description".into(), json!(description));
    }
    m
}

/// An object schema over `properties`, strict about unknown fields: the router relaxes
/// this at load time for the types a deployment chooses (see `schema::Strictness`).
fn strict_object(properties: Map<String, Value>, required: Vec<String>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!("object"));
    if !required.is_empty() {
        m.insert("required".into(), json!(required));
    }
    m.insert("properties".into(), Value::Object(properties));
    m.insert("additionalProperties".into(), json!(false));
    m
}

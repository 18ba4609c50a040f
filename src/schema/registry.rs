use super::tape::{Tape, TapeJson};
use super::{Rejection, SchemaError, Violation, DEFAULT_PRIORITY};
use crate::name::Name;
use crate::schema::catalog::{generate::schema_files, Catalog};
use bytes::Bytes;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Close names offered for an unknown type ("did you mean").
pub const MAX_SUGGESTIONS: usize = 3;
/// How much longer than the longest known type name an unknown name may be and still be
/// compared character by character. Jaro-Winkler costs the product of the two lengths: a
/// 400 KB name took 0.66 s of CPU against the catalogue; a name this much longer than every
/// known one is no typo of any, and only gets the known names it starts with.
pub const SUGGESTION_SLACK: usize = 16;
/// Longest part of an unknown name echoed back in errors: the answer to a request must not
/// grow with the junk it sent.
pub const MAX_ECHOED_NAME: usize = 256;

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut: for
/// what the router echoes back or keeps from someone else's input.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn echoed(name: &str) -> String {
    clip(name, MAX_ECHOED_NAME)
}

/// Which event types accept fields their schema does not list.
///
/// Generated schemas are strict (`additionalProperties: false`); a deployment can open
/// chosen types (globs such as `idem/*`) when its producers send extra fields.
#[derive(Debug, Clone, Default)]
pub struct Strictness {
    open: Option<GlobSet>,
}

impl Strictness {
    pub fn allow_unknown_fields(patterns: &[String]) -> Result<Self, globset::Error> {
        if patterns.is_empty() {
            return Ok(Self::default());
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(Glob::new(p)?);
        }
        Ok(Self { open: Some(b.build()?) })
    }

    fn is_open(&self, type_name: &str) -> bool {
        self.open.as_ref().is_some_and(|g| g.is_match(type_name))
    }
}

/// One event type, ready for the hot path.
pub struct EventType {
    /// The canonical name, `<family>/<name>`.
    pub name: Name,
    /// The schema as compiled (after [`Strictness`]), for `GET /v1/schemas/{type}`.
    pub schema: Value,
    /// `schema` serialised once, so serving it never re-encodes.
    pub schema_json: Bytes,
    /// The catalogue's `x-priority`, if documented.
    pub default_priority: Option<u8>,
    validator: jsonschema::Validator,
    /// The same schema compiled for documents read in place (no tree built).
    tape_validator: jsonschema::Validator<TapeJson>,
}

impl EventType {
    /// Validates `event`; on failure, every violation (not just the first).
    pub fn validate(&self, event: &Value) -> Result<(), Vec<Violation>> {
        // `is_valid` short-circuits and allocates nothing: the common case stays cheap.
        if self.validator.is_valid(event) {
            return Ok(());
        }
        Err(violations(self.validator.iter_errors(event)))
    }

    /// Reads `text` in place and validates it without building a tree: the hot path of
    /// ingestion and of plugin output. Refusals are reported like [`Self::validate`]'s, with
    /// members in the order the document has them.
    pub fn check<'t>(&self, text: &'t str) -> Result<Tape<'t>, Rejection> {
        let tape = Tape::parse(text).map_err(Rejection::NotJson)?;
        if self.tape_validator.is_valid(tape.root()) {
            return Ok(tape);
        }
        Err(Rejection::Invalid(violations(self.tape_validator.iter_errors(tape.root()))))
    }

    /// The event's priority: its own `meta.priority` (Infrahub), else the documented one.
    pub fn priority_of(&self, event: &Value) -> u8 {
        // Not `pointer()`: it unescapes every token with `str::replace`; this runs per event.
        self.priority_from(event.get("meta").and_then(|m| m.get("priority")).and_then(Value::as_u64))
    }

    /// [`Self::priority_of`] for a document read in place.
    pub fn priority_of_tape(&self, tape: &Tape<'_>) -> u8 {
        self.priority_from(tape.root().get("meta").and_then(|m| m.get("priority")).and_then(|p| p.as_u64()))
    }

    fn priority_from(&self, own: Option<u64>) -> u8 {
        own.filter(|p| (1..=5).contains(p)).map(|p| p as u8).or(self.default_priority).unwrap_or(DEFAULT_PRIORITY)
    }
}

fn violations<'i>(errors: impl Iterator<Item = jsonschema::ValidationError<'i>>) -> Vec<Violation> {
    errors
        .map(|e| Violation {
            instance_path: e.instance_path().as_str().to_string(),
            schema_path: e.schema_path().as_str().to_string(),
            message: e.to_string(),
        })
        .collect()
}

/// All event types by name, plus family aliases (`resoto` for `fixinventory`).
#[derive(Default)]
pub struct Registry {
    /// foldhash: looked up for every event (and every emitted one); SipHash showed in profiles.
    types: HashMap<Box<str>, Arc<EventType>, foldhash::fast::RandomState>,
    order: Vec<Arc<EventType>>,
    family_aliases: HashMap<String, String>,
    /// The families whose names are accepted bare (Idem profiles).
    bare_families: Vec<String>,
    /// The longest type name, in bytes (bounds the names [`Self::close_names`] compares).
    longest: usize,
}

impl Registry {
    pub fn from_catalog(catalog: &Catalog, strictness: &Strictness) -> Result<Self, SchemaError> {
        let mut r = Registry::default();
        for f in &catalog.families {
            for a in &f.aliases {
                r.family_aliases.insert(a.clone(), f.name.clone());
            }
            if f.bare_names {
                r.bare_families.push(f.name.clone());
            }
        }
        for def in &catalog.events {
            r.insert(def.type_name(), def.schema.clone(), strictness)?;
        }
        Ok(r)
    }

    /// Loads `<dir>/<family>/<name>.schema.json` files (for example ones a user generated
    /// from their own tables), keeping the catalogue's aliases.
    pub fn from_schema_dir(dir: &Path, aliases: &Catalog, strictness: &Strictness) -> Result<Self, SchemaError> {
        let mut r = Self::from_catalog(&Catalog { families: aliases.families.clone(), events: vec![] }, strictness)?;
        let load = |p: &Path, m: String| SchemaError::Load { path: p.display().to_string(), message: m };
        for path in schema_files(dir).map_err(|e| load(dir, e.to_string()))? {
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let name = rel.trim_end_matches(".schema.json").to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| load(&path, e.to_string()))?;
            let schema: Value = serde_json::from_str(&text).map_err(|e| load(&path, e.to_string()))?;
            r.insert(name, schema, strictness)?;
        }
        Ok(r)
    }

    fn insert(&mut self, name: String, mut schema: Value, strictness: &Strictness) -> Result<(), SchemaError> {
        if strictness.is_open(&name) {
            open_objects(&mut schema);
        }
        let invalid =
            |e: jsonschema::ValidationError| SchemaError::Invalid { name: name.clone(), message: e.to_string() };
        let validator = jsonschema::draft202012::options().build(&schema).map_err(invalid)?;
        let tape_validator = jsonschema::options_for::<TapeJson>()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .map_err(invalid)?;
        let default_priority = schema.get("x-priority").and_then(Value::as_u64).and_then(|p| u8::try_from(p).ok());
        let t = Arc::new(EventType {
            name: Name::intern(&name),
            schema_json: Bytes::from(serde_json::to_vec(&schema).expect("a JSON value always serialises")),
            schema,
            default_priority,
            validator,
            tape_validator,
        });
        self.longest = self.longest.max(name.len());
        self.order.push(t.clone());
        self.types.insert(name.into_boxed_str(), t);
        Ok(())
    }

    /// The type called `name` (or an alias of it); unknown names come with close matches.
    pub fn get(&self, name: &str) -> Result<&Arc<EventType>, SchemaError> {
        if let Some(t) = self.types.get(name) {
            return Ok(t);
        }
        match name.split_once('/') {
            Some((fam, rest)) => {
                let alias = self.family_aliases.get(fam);
                if let Some(t) = alias.and_then(|f| self.types.get(format!("{f}/{rest}").as_str())) {
                    return Ok(t);
                }
            }
            None => {
                for f in &self.bare_families {
                    if let Some(t) = self.types.get(format!("{f}/{name}").as_str()) {
                        return Ok(t);
                    }
                }
            }
        }
        Err(SchemaError::UnknownType { name: echoed(name), suggestions: self.close_names(name) })
    }

    /// Up to [`MAX_SUGGESTIONS`] known names that look like `name` (typos, or a name without
    /// its family); for a name past [`SUGGESTION_SLACK`], only the known names it starts with.
    pub fn close_names(&self, name: &str) -> Vec<String> {
        if name.len() > self.longest + SUGGESTION_SLACK {
            return self
                .order
                .iter()
                .filter(|t| name.starts_with(&*t.name))
                .take(MAX_SUGGESTIONS)
                .map(|t| t.name.to_string())
                .collect();
        }
        let mut scored: Vec<(f64, &str)> = self
            .order
            .iter()
            .map(|t| {
                let full = strsim::jaro_winkler(name, &t.name);
                let short = t.name.split_once('/').map_or(0.0, |(_, n)| strsim::jaro_winkler(name, n));
                (full.max(short), &*t.name)
            })
            .filter(|(s, _)| *s > 0.8)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(MAX_SUGGESTIONS).map(|(_, n)| n.to_string()).collect()
    }

    /// All types in catalogue order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<EventType>> {
        self.order.iter()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Drops every `additionalProperties: false`, so unknown fields pass (typed ones still check).
fn open_objects(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("additionalProperties") == Some(&Value::Bool(false)) {
                m.remove("additionalProperties");
            }
            m.values_mut().for_each(open_objects);
        }
        Value::Array(a) => a.iter_mut().for_each(open_objects),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::from_catalog(&Catalog::embedded().unwrap(), &Strictness::default()).unwrap()
    }

    #[test]
    fn typos_get_suggestions_and_huge_names_only_prefixes() {
        let r = registry();
        assert_eq!(r.close_names("fixinventory/colect")[0], "fixinventory/collect");
        // A name far longer than any known one is compared by prefix only, and echoed cut.
        let huge = format!("fixinventory/collect{}", "x".repeat(400_000));
        assert_eq!(r.close_names(&huge), vec!["fixinventory/collect"]);
        assert!(r.close_names(&"x".repeat(400_000)).is_empty());
        match r.get(&huge) {
            Err(SchemaError::UnknownType { name, suggestions }) => {
                assert_eq!(name.len(), MAX_ECHOED_NAME + "…".len());
                assert!(suggestions.len() <= MAX_SUGGESTIONS);
            }
            _ => panic!("an unknown type"),
        }
        assert!(r.close_names("collect").len() <= MAX_SUGGESTIONS);
    }

    #[test]
    fn echoed_names_are_cut_at_a_character_boundary() {
        assert_eq!(echoed("short"), "short");
        let long = "é".repeat(MAX_ECHOED_NAME);
        let cut = echoed(&long);
        assert!(cut.len() <= MAX_ECHOED_NAME + "…".len() && cut.ends_with('…'));
    }
}

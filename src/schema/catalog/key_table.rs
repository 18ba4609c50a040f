//! Format `key-table`: Infrahub's message-bus reference.
//!
//! `## Meta` holds the shared Meta table; `## Messages events` and `## Responses events`
//! hold `#### Event <name>` entries, each with `**Description**:`, `**Priority**:` and a
//! `| Key | Description | Type | Default Value |` table. Responses become `response/<name>`.
//!
//! Required fields follow the rule the tables imply: a concrete type whose default prints
//! as `None` is required (unless the type admits `null`, which makes `None` a real default);
//! `N/A` is optional and untyped; an explicit default makes the field optional with it.
//! Dotted keys (`data.content`) are fields of a nested object, required when any child is.

use super::markdown::{Block, Document, Origin, Table};
use super::{schema_header, strict_object, types, CatalogError, EventDef};
use serde_json::{json, Map, Value};

/// How many dotted levels a key may have (`data.content` has two): the nested objects are
/// built recursively, and a key thousands of levels deep overflowed the stack (found by
/// tests/properties.rs). Past it the row is refused with its line.
pub const MAX_KEY_DEPTH: usize = 16;

/// The key every message carries for its Meta object; it points at the shared definition.
const META_KEY: &str = "meta";

pub fn parse(family: &str, doc: &Document<'_>, origin: &Origin<'_>) -> Result<Vec<EventDef>, CatalogError> {
    let mut section = "";
    let mut meta: Option<Value> = None;
    let mut current: Option<Pending> = None;
    let mut out = Vec::new();
    for block in &doc.blocks {
        match block {
            Block::Heading { level: 2, text, .. } => section = text,
            Block::Heading { level: 4, text, line } => {
                let Some(name) = text.strip_prefix("Event ") else {
                    continue;
                };
                let name =
                    if section.starts_with("Responses") { format!("response/{name}") } else { name.trim().to_string() };
                current = Some(Pending { name, description: String::new(), priority: None, line: *line });
            }
            Block::Field { label, value, line } => {
                let Some(p) = current.as_mut() else { continue };
                match *label {
                    "Description" => p.description = value.to_string(),
                    "Priority" => {
                        let n: u8 = value
                            .parse()
                            .map_err(|_| origin.err(*line, format!("priority `{value}` is not a number")))?;
                        if !(1..=5).contains(&n) {
                            return Err(origin.err(*line, format!("priority {n} is outside 1..5")));
                        }
                        p.priority = Some(n)
                    }
                    _ => {}
                }
            }
            Block::Table(t) if section == "Meta" => meta = Some(Value::Object(object_schema(t, origin, None)?.0)),
            Block::Table(t) => {
                let p = current
                    .take()
                    .ok_or_else(|| origin.err(t.line, "a key table must follow an `#### Event <name>` heading"))?;
                let meta = meta
                    .clone()
                    .ok_or_else(|| origin.err(t.line, "the `## Meta` table must come before the events"))?;
                out.push(p.finish(family, t, meta, origin)?);
            }
            _ => {}
        }
    }
    if let Some(p) = current {
        return Err(origin.err(p.line, format!("event `{}` has no key table", p.name)));
    }
    Ok(out)
}

struct Pending {
    name: String,
    description: String,
    priority: Option<u8>,
    line: usize,
}

impl Pending {
    fn finish(self, family: &str, t: &Table, meta: Value, origin: &Origin<'_>) -> Result<EventDef, CatalogError> {
        let description = match (self.description.is_empty(), self.name.strip_prefix("response/")) {
            (true, Some(req)) => format!("The response to {family}/{req}."),
            _ => self.description,
        };
        let mut schema = schema_header(family, &self.name, &description);
        if let Some(p) = self.priority {
            schema.insert("x-priority".into(), json!(p));
        }
        let (body, _) = object_schema(t, origin, Some(META_KEY))?;
        schema.extend(body);
        schema.insert("$defs".into(), json!({ META_KEY: meta }));
        Ok(EventDef { family: family.to_string(), name: self.name, schema: Value::Object(schema) })
    }
}

/// The object schema of a key table, and whether any of its fields is required.
/// `meta_key`, when given, is the field that refers to the shared Meta definition.
fn object_schema(
    t: &Table,
    origin: &Origin<'_>,
    meta_key: Option<&str>,
) -> Result<(Map<String, Value>, bool), CatalogError> {
    let (k, d, ty, def) = (
        t.column("Key", origin)?,
        t.column("Description", origin)?,
        t.column("Type", origin)?,
        t.column("Default Value", origin)?,
    );
    // (path, schema, required) in table order; nested objects are assembled afterwards.
    let mut fields: Vec<(Vec<String>, Value, bool)> = Vec::new();
    for r in &t.rows {
        let path: Vec<String> = r.cells[k].split('.').map(str::to_string).collect();
        if path.len() > MAX_KEY_DEPTH {
            return Err(origin.err(r.line, format!("key nests {} deep; at most {MAX_KEY_DEPTH} levels", path.len())));
        }
        let typed = types::type_schema(&r.cells[ty]).map_err(|m| origin.err(r.line, m))?;
        let default = types::default_value(&r.cells[def]);
        let mut s = match (&typed, meta_key) {
            (_, Some(mk)) if path.len() == 1 && path[0] == mk => {
                json!({ "$ref": format!("#/$defs/{mk}") })
            }
            (Some(Value::Object(m)), _) => Value::Object(m.clone()),
            _ => json!({}),
        };
        let m = s.as_object_mut().expect("field schemas are objects");
        if r.cells[d] != "N/A" && !r.cells[d].is_empty() {
            m.insert("description".into(), json!(r.cells[d]));
        }
        let required = match (&typed, &default) {
            (Some(t), None) => !types::admits_null(t),
            _ => false,
        };
        match default {
            Some(v) => {
                m.insert("default".into(), v);
            }
            None if typed.as_ref().is_some_and(types::admits_null) => {
                m.insert("default".into(), Value::Null);
            }
            None => {}
        }
        fields.push((path, s, required));
    }
    Ok(assemble(&fields, 0))
}

/// Builds the (possibly nested) object from dotted field paths.
fn assemble(fields: &[(Vec<String>, Value, bool)], depth: usize) -> (Map<String, Value>, bool) {
    let mut props = Map::new();
    let mut required = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (path, schema, req) in fields {
        let key = path[depth].as_str();
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        if path.len() == depth + 1 {
            props.insert(key.to_string(), schema.clone());
            if *req {
                required.push(key.to_string());
            }
        } else {
            let children: Vec<_> =
                fields.iter().filter(|(p, _, _)| p.len() > depth + 1 && p[depth] == key).cloned().collect();
            let (child, child_required) = assemble(&children, depth + 1);
            props.insert(key.to_string(), Value::Object(child));
            if child_required {
                required.push(key.to_string());
            }
        }
    }
    let any_required = !required.is_empty();
    (strict_object(props, required), any_required)
}

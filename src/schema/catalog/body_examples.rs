//! Format `body-examples`: Idem's documentation, where each profile shows an example body.
//!
//! The first JSON block (before any `##` heading) is the general format; its `tags` keys
//! (`ref`, `type`) are required in every profile, other tag keys are optional. Each `##`
//! heading is a profile and becomes the type `<family>/<profile>`; its JSON blocks are the
//! bodies it documents. Several bodies (`###` pre/post) are told apart by `tags.type`.
//!
//! The schema is read off the example by these rules:
//! - keys of an example object are required; a key containing a space is a placeholder
//!   ("Name of the state") and types every other key (`additionalProperties`); objects with
//!   only named keys reject unknown ones, an empty object `{}` is free-form;
//! - `tags.type` holding an identifier becomes a `const` (it is the discriminator);
//! - a string like `A/B/C` of upper-case words is an enum of those words;
//! - other strings with spaces are descriptions; their type comes from [`PROSE_TYPES`]
//!   (the first matching phrase), or is `string`;
//! - numbers, booleans and arrays type as what they are; `[]` is any array.

use super::markdown::{Block, Document, Origin};
use super::{schema_header, CatalogError, EventDef};
use serde_json::{json, Map, Value};

/// Phrases of a prose example value and the type they name, first match wins.
/// `None` leaves the value untyped.
const PROSE_TYPES: &[(&str, Option<&str>)] = &[
    ("any serializable", None),
    ("any object", None),
    ("state of a resource", None),
    ("information that can link", None),
    ("an integer", Some("integer")),
    ("number", Some("integer")),
    ("true if", Some("boolean")),
    ("a dictionary", Some("object")),
];

/// The tag that tells several bodies of one profile apart.
const DISCRIMINATOR: &str = "type";

pub fn parse(family: &str, doc: &Document<'_>, origin: &Origin<'_>) -> Result<Vec<EventDef>, CatalogError> {
    let mut general_tags: Option<Vec<String>> = None;
    let mut profiles: Vec<Profile> = Vec::new();
    for block in &doc.blocks {
        match block {
            Block::Heading { level: 2, text, .. } => {
                profiles.push(Profile { name: text.to_string(), description: String::new(), bodies: Vec::new() })
            }
            Block::Text(text) => {
                if let Some(p) = profiles.last_mut().filter(|p| p.description.is_empty()) {
                    p.description = text.to_string();
                }
            }
            Block::Code { lang, text, line } if lang.is_empty() || *lang == "json" => {
                let body: Value = serde_json::from_str(text)
                    .map_err(|e| origin.err(line + e.line(), format!("example is not JSON: {e}")))?;
                match profiles.last_mut() {
                    None => {
                        let tags = body.get("tags").and_then(Value::as_object);
                        general_tags = Some(tags.map(|t| t.keys().cloned().collect()).unwrap_or_default());
                    }
                    Some(p) => p.bodies.push((body, *line)),
                }
            }
            _ => {}
        }
    }
    let general_tags =
        general_tags.ok_or_else(|| origin.err(1, "no general format example before the first profile"))?;
    profiles
        .into_iter()
        .map(|p| {
            let mut schema = schema_header(family, &p.name, &p.description);
            let inferred: Vec<Value> = p.bodies.iter().map(|(b, _)| infer(b, &[], &general_tags)).collect();
            match inferred.len() {
                0 => return Err(origin.err(1, format!("profile `{}` has no example body", p.name))),
                1 => {
                    schema.extend(inferred.into_iter().next().and_then(|v| v.as_object().cloned()).unwrap_or_default())
                }
                _ => schema.extend(discriminated(&p, inferred, origin)?),
            }
            Ok(EventDef { family: family.to_string(), name: p.name, schema: Value::Object(schema) })
        })
        .collect()
}

struct Profile {
    name: String,
    description: String,
    bodies: Vec<(Value, usize)>,
}

/// `tags.type` picks which body schema applies: an enum of the types, then one `if/then` each.
fn discriminated(p: &Profile, bodies: Vec<Value>, origin: &Origin<'_>) -> Result<Map<String, Value>, CatalogError> {
    let mut kinds = Vec::new();
    let mut branches = Vec::new();
    for ((example, line), schema) in p.bodies.iter().zip(bodies) {
        let kind = example.pointer(&format!("/tags/{DISCRIMINATOR}")).and_then(Value::as_str).ok_or_else(|| {
            origin.err(*line, format!("profile `{}` has several bodies; each needs `tags.{DISCRIMINATOR}`", p.name))
        })?;
        kinds.push(kind.to_string());
        branches.push(json!({
            "if": { "properties": { "tags": { "properties": { DISCRIMINATOR: { "const": kind } } } } },
            "then": schema,
        }));
    }
    let mut m = Map::new();
    m.insert("type".into(), json!("object"));
    m.insert("required".into(), json!(["tags"]));
    m.insert(
        "properties".into(),
        json!({ "tags": { "type": "object", "required": [DISCRIMINATOR], "properties": { DISCRIMINATOR: { "enum": kinds } } } }),
    );
    m.insert("allOf".into(), Value::Array(branches));
    Ok(m)
}

fn infer(v: &Value, path: &[&str], general_tags: &[String]) -> Value {
    match v {
        Value::Object(o) if o.is_empty() => json!({ "type": "object" }),
        Value::Object(o) => {
            let mut props = Map::new();
            let mut required = Vec::new();
            let mut placeholder = None;
            for (k, child) in o {
                let mut child_path = path.to_vec();
                child_path.push(k);
                let s = infer(child, &child_path, general_tags);
                if k.contains(' ') {
                    placeholder = Some(s);
                    continue;
                }
                let in_tags = path == ["tags"];
                if !in_tags || general_tags.iter().any(|g| g == k) {
                    required.push(k.clone());
                }
                props.insert(k.clone(), s);
            }
            let mut m = Map::new();
            m.insert("type".into(), json!("object"));
            if !required.is_empty() {
                m.insert("required".into(), json!(required));
            }
            if !props.is_empty() {
                m.insert("properties".into(), Value::Object(props));
            }
            m.insert("additionalProperties".into(), placeholder.unwrap_or(json!(false)));
            Value::Object(m)
        }
        Value::Array(a) => match a.first() {
            Some(first) => json!({ "type": "array", "items": infer(first, path, general_tags) }),
            None => json!({ "type": "array" }),
        },
        Value::Bool(_) => json!({ "type": "boolean" }),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({ "type": "integer" }),
        Value::Number(_) => json!({ "type": "number" }),
        Value::Null => json!({}),
        Value::String(s) => infer_string(s, path),
    }
}

fn infer_string(s: &str, path: &[&str]) -> Value {
    let identifier = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if path == ["tags", DISCRIMINATOR] && identifier {
        return json!({ "const": s });
    }
    let words: Vec<&str> = s.split('/').collect();
    if words.len() > 1 && words.iter().all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')) {
        return json!({ "enum": words });
    }
    if !s.contains(' ') {
        return json!({ "type": "string" });
    }
    let lower = s.to_lowercase();
    let ty = PROSE_TYPES.iter().find(|(phrase, _)| lower.contains(phrase)).map_or(Some("string"), |(_, t)| *t);
    match ty {
        Some(t) => json!({ "type": t, "description": s }),
        None => json!({ "description": s }),
    }
}

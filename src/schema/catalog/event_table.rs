//! Format `event-table`: Fix Inventory's documentation style.
//!
//! - `| Event Name | Event Description |` tables list the events (under any headings);
//! - one `| Field | Type | Description |` table describes the envelope every event shares
//!   (type `event-name` means "must equal the event's own name");
//! - `| Event Name | Field | Type | Description |` tables type known fields of `data`
//!   (several comma-separated event names may share a row).
//!
//! The envelope is strict; `data` stays open, since the real system carries free-form
//! step data there (a cleanup plan's candidate resources, say).

use super::markdown::{Block, Document, Origin, Table};
use super::{schema_header, strict_object, types, CatalogError, EventDef};
use serde_json::{json, Map, Value};

/// The envelope field holding the event data; its object stays open to other fields.
const DATA_FIELD: &str = "data";

pub fn parse(family: &str, doc: &Document<'_>, origin: &Origin<'_>) -> Result<Vec<EventDef>, CatalogError> {
    let mut events: Vec<(String, String, usize)> = Vec::new();
    let mut envelope: Option<&Table> = None;
    let mut data_tables: Vec<&Table> = Vec::new();
    for block in &doc.blocks {
        let Block::Table(t) = block else { continue };
        let has = |c: &str| t.header.iter().any(|h| h.eq_ignore_ascii_case(c));
        if has("Event Name") && has("Field") {
            data_tables.push(t);
        } else if has("Event Name") {
            let (n, d) = (t.column("Event Name", origin)?, t.column("Event Description", origin)?);
            for r in &t.rows {
                if events.iter().any(|(name, _, _)| *name == r.cells[n]) {
                    return Err(origin.err(r.line, format!("event `{}` is listed twice", r.cells[n])));
                }
                events.push((r.cells[n].clone(), r.cells[d].clone(), r.line));
            }
        } else if has("Field") {
            envelope = Some(t);
        }
    }
    let envelope = envelope.ok_or_else(|| origin.err(1, "no envelope table (`| Field | Type | Description |`)"))?;

    // Known data fields per event, checked against the event list so a typo names its line.
    let mut data_fields: Vec<(String, String, Value)> = Vec::new();
    for t in &data_tables {
        let (e, f, ty, d) = (
            t.column("Event Name", origin)?,
            t.column("Field", origin)?,
            t.column("Type", origin)?,
            t.column("Description", origin)?,
        );
        for r in &t.rows {
            let schema = field_schema(&r.cells[ty], &r.cells[d]).map_err(|m| origin.err(r.line, m))?;
            for ev in r.cells[e].split(',').map(str::trim) {
                if !events.iter().any(|(n, _, _)| n == ev) {
                    return Err(origin.err(r.line, format!("data field for unknown event `{ev}`")));
                }
                data_fields.push((ev.to_string(), r.cells[f].clone(), schema.clone()));
            }
        }
    }

    let (f, ty, d) =
        (envelope.column("Field", origin)?, envelope.column("Type", origin)?, envelope.column("Description", origin)?);
    events
        .iter()
        .map(|(name, description, _)| {
            let mut props = Map::new();
            let mut required = Vec::new();
            for r in &envelope.rows {
                let field = &r.cells[f];
                let schema = if r.cells[ty] == "event-name" {
                    json!({ "const": name, "description": r.cells[d] })
                } else if field == DATA_FIELD {
                    let known: Map<String, Value> = data_fields
                        .iter()
                        .filter(|(e, _, _)| e == name)
                        .map(|(_, k, s)| (k.clone(), s.clone()))
                        .collect();
                    json!({ "type": "object", "description": r.cells[d], "properties": known })
                } else {
                    field_schema(&r.cells[ty], &r.cells[d]).map_err(|m| origin.err(r.line, m))?
                };
                props.insert(field.clone(), schema);
                required.push(field.clone());
            }
            let mut schema = schema_header(family, name, description);
            schema.extend(strict_object(props, required));
            Ok(EventDef { family: family.to_string(), name: name.clone(), schema: Value::Object(schema) })
        })
        .collect()
}

fn field_schema(ty: &str, description: &str) -> Result<Value, String> {
    let mut m = match types::type_schema(ty)? {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    m.insert("description".into(), json!(description));
    Ok(Value::Object(m))
}

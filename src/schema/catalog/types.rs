//! Type expressions and default values as the catalogue tables print them.
//!
//! A `Type` cell holds a JSON Schema type name (`string`, `integer`, `number`, `boolean`,
//! `object`, `array`, `null`), `N/A` or `any` (untyped), `array(T)`, `enum(a, b, ...)`, a range
//! `integer(1..5)`, or a union `T | U`. A `Default Value` cell holds `None` (no default),
//! `True`/`False`, a number, a `"quoted"` string or a bare word.

use serde_json::{json, Map, Value};

/// How deeply type expressions may nest (`array(array(...))`): parsing them recurses, and
/// a table cell nested thousands deep overflowed the stack (found by tests/properties.rs).
/// Past it the cell is refused with its line; real tables nest two deep.
pub const MAX_TYPE_NESTING: usize = 16;

/// The JSON Schema fragment for a type expression; `None` when the field is untyped.
pub fn type_schema(expr: &str) -> Result<Option<Value>, String> {
    let expr = expr.trim();
    let deepest = expr
        .chars()
        .scan(0i64, |depth, c| {
            *depth += match c {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            Some(*depth)
        })
        .max()
        .unwrap_or(0);
    if deepest > MAX_TYPE_NESTING as i64 {
        return Err(format!("type nests {deepest} deep; at most {MAX_TYPE_NESTING} levels"));
    }
    if expr.eq_ignore_ascii_case("n/a") || expr == "any" {
        return Ok(None);
    }
    let terms: Vec<&str> = split_top_level(expr, '|');
    let parsed: Vec<Value> = terms.iter().map(|t| term(t.trim())).collect::<Result<_, _>>()?;
    if parsed.len() == 1 {
        return Ok(parsed.into_iter().next());
    }
    // A union of bare types reads best as `"type": [..]`; anything richer needs `anyOf`.
    let bare: Option<Vec<Value>> = parsed
        .iter()
        .map(|p| match p.as_object() {
            Some(o) if o.len() == 1 => o.get("type").cloned(),
            _ => None,
        })
        .collect();
    Ok(Some(match bare {
        Some(types) => json!({ "type": types }),
        None => json!({ "anyOf": parsed }),
    }))
}

fn term(t: &str) -> Result<Value, String> {
    const BASE: [&str; 7] = ["string", "integer", "number", "boolean", "object", "array", "null"];
    if BASE.contains(&t) {
        return Ok(json!({ "type": t }));
    }
    let (head, args) = t.strip_suffix(')').and_then(|t| t.split_once('(')).ok_or_else(|| {
        format!("unknown type `{t}` (expected one of {}, N/A, array(T), enum(..), integer(a..b))", BASE.join(", "))
    })?;
    match head.trim() {
        "array" => Ok(match type_schema(args)? {
            Some(items) => json!({ "type": "array", "items": items }),
            None => json!({ "type": "array" }),
        }),
        "enum" => Ok(json!({ "enum": args.split(',').map(|a| a.trim()).collect::<Vec<_>>() })),
        kind @ ("integer" | "number") => {
            let (lo, hi) = args.split_once("..").ok_or_else(|| format!("range `{t}` must be `{kind}(min..max)`"))?;
            let mut o = Map::new();
            o.insert("type".into(), json!(kind));
            for (key, bound) in [("minimum", lo), ("maximum", hi)] {
                if !bound.trim().is_empty() {
                    let n: Value =
                        serde_json::from_str(bound.trim()).map_err(|_| format!("bad bound `{bound}` in `{t}`"))?;
                    o.insert(key.into(), n);
                }
            }
            Ok(Value::Object(o))
        }
        other => Err(format!("unknown type constructor `{other}` in `{t}`")),
    }
}

/// Splits on `sep` outside parentheses.
fn split_top_level(s: &str, sep: char) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Whether `null` is a value the schema admits, so that a printed `None` default is a real one.
pub fn admits_null(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "null"),
        _ => schema.get("anyOf").and_then(Value::as_array).is_some_and(|a| a.iter().any(admits_null)),
    }
}

/// A `Default Value` cell: `None` means "no default printed"; anything else is the default.
pub fn default_value(cell: &str) -> Option<Value> {
    let c = cell.trim();
    match c {
        "None" | "" => None,
        "True" => Some(Value::Bool(true)),
        "False" => Some(Value::Bool(false)),
        _ if c.len() >= 2 && c.starts_with('"') && c.ends_with('"') => {
            Some(Value::String(c[1..c.len() - 1].to_string()))
        }
        _ => Some(
            serde_json::from_str::<serde_json::Number>(c)
                .map(Value::Number)
                .unwrap_or_else(|_| Value::String(c.to_string())),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        assert_eq!(type_schema("N/A").unwrap(), None);
        assert_eq!(type_schema("string | null").unwrap(), Some(json!({"type": ["string", "null"]})));
        assert_eq!(type_schema("integer(1..5)").unwrap(), Some(json!({"type": "integer", "minimum": 1, "maximum": 5})));
        assert_eq!(type_schema("array(string)").unwrap(), Some(json!({"type": "array", "items": {"type": "string"}})));
        assert_eq!(type_schema("enum(a, b)").unwrap(), Some(json!({"enum": ["a", "b"]})));
        assert!(type_schema("strnig").unwrap_err().contains("unknown type `strnig`"));
        // Found by fuzzing: 3000 levels overflowed the stack.
        let deep = format!("{}string{}", "array(".repeat(3000), ")".repeat(3000));
        assert!(type_schema(&deep).unwrap_err().contains("at most 16 levels"));
    }

    #[test]
    fn defaults() {
        assert_eq!(default_value("None"), None);
        assert_eq!(default_value("True"), Some(json!(true)));
        assert_eq!(default_value("3"), Some(json!(3)));
        assert_eq!(default_value("\"\""), Some(json!("")));
        assert_eq!(default_value("git.file.get"), Some(json!("git.file.get")));
    }
}

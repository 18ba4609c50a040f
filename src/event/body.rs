//! An event's data as the router keeps it: the JSON text exactly as the producer (or a
//! plugin) wrote it, which is what plugins get, what the log stores and what subscribers
//! receive; the parsed tree only for the code that asks for it.
//!
//! Why: on the hot paths (ingestion, a plugin's output) the data is validated in place
//! ([`crate::schema::tape`]) and only two fields are read, so building and dropping a
//! `serde_json::Value` for every event was pure cost.

use crate::schema::tape::Tape;
use crate::schema::{EventType, Rejection};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::{Arc, OnceLock};

/// Deepest nesting of arrays and objects in an event's data. Why this number: the log and
/// the dead-letter file store the data two JSON levels down (`{"event": {"data": ...}}`)
/// and read it back with serde_json, which refuses a 128th level; so 125 is the
/// most that is certain to come back after a restart. Deeper data is refused when it
/// arrives (400 `too_deep`), never skipped at recovery.
pub const MAX_DATA_DEPTH: usize = 125;

/// Whether `value` nests deeper than [`MAX_DATA_DEPTH`] (for data that arrives parsed).
pub fn too_deep(value: &Value) -> bool {
    fn deeper(v: &Value, room: usize) -> bool {
        match v {
            Value::Array(items) => room == 0 || items.iter().any(|i| deeper(i, room - 1)),
            Value::Object(members) => room == 0 || members.values().any(|m| deeper(m, room - 1)),
            _ => false,
        }
    }
    deeper(value, MAX_DATA_DEPTH)
}

/// Bytes of an event's data [`Body::prefetch`] asks for: more than the events of the hot
/// paths hold, and a plugin that reads a larger body streams through the rest anyway.
pub const PREFETCH_TEXT_BYTES: usize = 512;

pub struct Body {
    text: Arc<str>,
    /// Parsed on first use (the text is valid JSON by construction).
    tree: OnceLock<Value>,
    /// Infrahub's `meta.correlation_id`, read when the body was made: plugins and RPC
    /// callers need it for every event.
    correlation_id: Correlation,
}

#[derive(Clone)]
enum Correlation {
    None,
    /// Where it is in `text` (it had no escapes): no copy.
    Span(u32, u32),
    Owned(Box<str>),
}

impl Correlation {
    fn of(text: &str, id: Option<&str>) -> Correlation {
        let Some(id) = id else { return Correlation::None };
        // A string read in place points into the text; an unescaped one was copied.
        let start = (id.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
        match start.checked_add(id.len()).and_then(|end| text.get(start..end)) {
            Some(span) if span.as_ptr() == id.as_ptr() => Correlation::Span(start as u32, (start + id.len()) as u32),
            _ => Correlation::Owned(id.into()),
        }
    }
}

impl Body {
    /// Validates `text` as a `ty` in place and keeps it (no tree is built): the body and
    /// the priority it carries (`meta.priority`, else its type's). Data nesting deeper
    /// than [`MAX_DATA_DEPTH`] is refused: the log could not read it back.
    pub fn check(ty: &EventType, text: Arc<str>) -> Result<(Body, u8), Rejection> {
        let tape = ty.check(&text)?;
        if tape.deeper_than(MAX_DATA_DEPTH) {
            return Err(Rejection::TooDeep { limit: MAX_DATA_DEPTH });
        }
        let priority = ty.priority_of_tape(&tape);
        let body = Body::read(text.clone(), &tape);
        drop(tape);
        Ok((body, priority))
    }

    /// The body whose text `tape` was just read from (and validated).
    pub fn read(text: Arc<str>, tape: &Tape<'_>) -> Body {
        let root = tape.root();
        let correlation_id = root.get("meta").and_then(|m| m.get("correlation_id")).and_then(|c| c.as_str());
        Body { correlation_id: Correlation::of(&text, correlation_id), text, tree: OnceLock::new() }
    }

    pub fn from_value(value: Value) -> Body {
        // Not `pointer()`: it unescapes every token with `str::replace`.
        let correlation_id = value.get("meta").and_then(|m| m.get("correlation_id")).and_then(Value::as_str);
        let correlation_id = correlation_id.map_or(Correlation::None, |c| Correlation::Owned(c.into()));
        Body { correlation_id, text: value.to_string().into(), tree: value.into() }
    }

    /// Starts loading the text (its first [`PREFETCH_TEXT_BYTES`]) to be read and its
    /// reference count to be written ([`super::prefetch`]).
    pub fn prefetch(&self) {
        super::prefetch::read(self.text.as_bytes(), PREFETCH_TEXT_BYTES);
        // The count sits just before the text, in `Arc`'s allocation.
        super::prefetch::write(self.text.as_ptr().wrapping_sub(std::mem::size_of::<usize>() * 2));
    }

    /// The JSON text.
    pub fn text(&self) -> &Arc<str> {
        &self.text
    }

    /// The parsed data (parsed now if nobody asked before).
    pub fn value(&self) -> &Value {
        self.tree.get_or_init(|| serde_json::from_str(&self.text).expect("a body's text is valid JSON"))
    }

    pub fn into_value(self) -> Value {
        let text = self.text;
        self.tree.into_inner().unwrap_or_else(|| serde_json::from_str(&text).expect("a body's text is valid JSON"))
    }

    pub fn correlation_id(&self) -> Option<&str> {
        match &self.correlation_id {
            Correlation::None => None,
            Correlation::Span(start, end) => Some(&self.text[*start as usize..*end as usize]),
            Correlation::Owned(id) => Some(id),
        }
    }
}

impl Clone for Body {
    /// Shares the text; the tree is not copied (a clone that needs it parses it again), so
    /// handing a body to plugins costs a reference count, however large it is.
    fn clone(&self) -> Self {
        Body { text: self.text.clone(), tree: OnceLock::new(), correlation_id: self.correlation_id.clone() }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Written as is, unless the producer's text spans lines: records and frames are one
        // line each (newlines in JSON text are only ever whitespace between tokens).
        if !self.text.contains(['\n', '\r']) {
            if let Ok(raw) = serde_json::from_str::<&RawValue>(&self.text) {
                return raw.serialize(s);
            }
        }
        self.value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Body {
    /// As a tree: records read back may come through serde's buffered content (internally
    /// tagged enums), which cannot hand out raw text. The log's reader puts the text back
    /// (`store::segment::read_segment`); elsewhere the data is re-serialised.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(Body::from_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_kept_and_the_tree_made_on_demand() {
        let text = r#"{ "meta": {"correlation_id": "c-1"},  "b": [1, 2] }"#;
        let tape = Tape::parse(text).unwrap();
        let body = Body::read(text.into(), &tape);
        assert_eq!(&**body.text(), text);
        assert_eq!(body.correlation_id(), Some("c-1"));
        assert_eq!(body.value()["b"][1], 2);
        // Serialised as written (one line), and read back the same, also inside a tagged enum.
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(json, text);
        let back: Body = serde_json::from_str(&json).unwrap();
        assert_eq!(back.value(), body.value());
        assert_eq!(back.correlation_id(), Some("c-1"));
        #[derive(Serialize, Deserialize)]
        #[serde(tag = "record")]
        enum Record {
            Event { data: Body },
        }
        let record = serde_json::to_string(&Record::Event { data: body.clone() }).unwrap();
        let Record::Event { data } = serde_json::from_str(&record).unwrap();
        assert_eq!(data.value(), body.value());
    }

    #[test]
    fn a_correlation_id_with_escapes_is_unescaped() {
        let text = r#"{"meta":{"correlation_id":"a\"b"}}"#;
        let body = Body::read(text.into(), &Tape::parse(text).unwrap());
        assert_eq!(body.correlation_id(), Some("a\"b"));
        let plain: Arc<str> = r#"{"meta":{"correlation_id":"ab"}}"#.into();
        let body = Body::read(plain.clone(), &Tape::parse(&plain).unwrap());
        assert!(matches!(body.correlation_id, Correlation::Span(..)));
        assert_eq!(body.clone().correlation_id(), Some("ab"));
    }

    #[test]
    fn the_deepest_data_accepted_reads_back_inside_a_record_and_one_level_more_is_refused() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let record = |data: &str| format!(r#"{{"record":"event","event":{{"data":{data}}}}}"#);
        let deepest = nested(MAX_DATA_DEPTH);
        let tape = Tape::parse(&deepest).unwrap();
        assert!(!tape.deeper_than(MAX_DATA_DEPTH));
        assert!(!too_deep(&serde_json::from_str(&deepest).unwrap()));
        assert!(serde_json::from_str::<Value>(&record(&deepest)).is_ok(), "the record reads back");
        let deeper = nested(MAX_DATA_DEPTH + 1);
        assert!(Tape::parse(&deeper).unwrap().deeper_than(MAX_DATA_DEPTH));
        assert!(too_deep(&serde_json::from_str(&deeper).unwrap()));
        assert!(serde_json::from_str::<Value>(&record(&deeper)).is_err(), "the limit is exactly serde_json's");
        let wide = format!("[{}]", vec![nested(3); 200].join(","));
        assert!(!Tape::parse(&wide).unwrap().deeper_than(MAX_DATA_DEPTH), "many entries, shallow");
        assert!(!Tape::parse(&wide).unwrap().deeper_than(4) && Tape::parse(&wide).unwrap().deeper_than(3));
    }

    #[test]
    fn a_text_over_several_lines_serialises_on_one() {
        let text = "{\n  \"a\": 1\n}";
        let body = Body::read(text.into(), &Tape::parse(text).unwrap());
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"a":1}"#);
        assert_eq!(&**body.text(), text, "plugins still get it as sent");
    }
}

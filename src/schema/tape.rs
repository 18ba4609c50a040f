//! A JSON document read in place: one flat vector of entries whose strings borrow from
//! the text, which the compiled validators walk directly (jsonschema's `Json` extension
//! point). Why: building a `serde_json::Value` (a `BTreeMap` and a `String` per key) and
//! dropping it again was about half the cost of ingesting an event and of checking a
//! plugin's output, although the router only keeps the producer's text and two fields.
//!
//! Parsing goes through serde_json's own parser (same grammar, errors and nesting limit as
//! everywhere else); only the tree it builds differs. A container entry records how many
//! members it has and where it ends, so lookups skip whole subtrees.

use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};
use std::borrow::Cow;
use std::fmt;

/// One parsed document; strings borrow from the text unless they had escapes.
pub struct Tape<'s> {
    entries: Vec<Entry<'s>>,
}

enum Entry<'s> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'s, str>),
    /// An object member's name; its value follows.
    Key(Cow<'s, str>),
    /// A member whose name comes again later in its object: kept in the text, skipped by
    /// lookups and iteration, as a tree (`serde_json::Value`) keeps only the last one. Without
    /// it the validators checked shadowed members too and disagreed with the tree ones
    /// (found by tests/properties.rs).
    Shadowed(Cow<'s, str>),
    /// `len` elements follow; the next sibling is at `end`.
    Array {
        len: u32,
        end: u32,
    },
    /// (key, value) pairs follow, `len` of them not shadowed; the next sibling is at `end`.
    Object {
        len: u32,
        end: u32,
    },
}

impl<'s> Tape<'s> {
    /// Parses `text` (one JSON value, nothing after it but whitespace).
    pub fn parse(text: &'s str) -> Result<Self, serde_json::Error> {
        let mut entries = Vec::with_capacity(text.len() / 8 + 4);
        let mut de = serde_json::Deserializer::from_str(text);
        Seed(&mut entries).deserialize(&mut de)?;
        de.end()?;
        Ok(Tape { entries })
    }

    /// Whether arrays and objects nest more than `limit` levels deep (a scalar is 0 deep,
    /// `[]` 1, `[[1]]` 2). Free for small documents: nesting that deep takes more entries.
    pub fn deeper_than(&self, limit: usize) -> bool {
        if self.entries.len() <= limit {
            return false;
        }
        let mut ends: Vec<u32> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            while ends.last().is_some_and(|&end| end as usize <= i) {
                ends.pop();
            }
            if let Entry::Array { end, .. } | Entry::Object { end, .. } = e {
                ends.push(*end);
                if ends.len() > limit {
                    return true;
                }
            }
        }
        false
    }

    /// The whole document.
    pub fn root(&self) -> TapeNode<'_> {
        TapeNode { entries: &self.entries, at: 0 }
    }
}

/// A handle on one value of a [`Tape`].
#[derive(Clone, Copy)]
pub struct TapeNode<'a> {
    entries: &'a [Entry<'a>],
    at: usize,
}

impl<'a> TapeNode<'a> {
    fn entry(&self) -> &'a Entry<'a> {
        &self.entries[self.at]
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<TapeNode<'a>> {
        self.as_object()?.member(key)
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match self.entry() {
            Entry::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self.entry() {
            Entry::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// Where the next sibling of the entry at `at` starts.
    fn skip(entries: &[Entry<'_>], at: usize) -> usize {
        match entries[at] {
            Entry::Array { end, .. } | Entry::Object { end, .. } => end as usize,
            _ => at + 1,
        }
    }
}

/// The members of an object entry.
#[derive(Clone, Copy)]
pub struct TapeObject<'a> {
    entries: &'a [Entry<'a>],
    at: usize,
    len: usize,
}

pub struct Members<'a> {
    entries: &'a [Entry<'a>],
    next: usize,
    left: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, TapeNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        while self.left > 0 {
            let at = self.next;
            self.next = TapeNode::skip(self.entries, at + 1);
            match &self.entries[at] {
                Entry::Key(key) => {
                    self.left -= 1;
                    return Some((key, TapeNode { entries: self.entries, at: at + 1 }));
                }
                Entry::Shadowed(_) => {}
                _ => unreachable!("a key precedes every member"),
            }
        }
        None
    }
}

/// The elements of an array entry.
#[derive(Clone, Copy)]
pub struct TapeArray<'a> {
    entries: &'a [Entry<'a>],
    at: usize,
    len: usize,
}

pub struct Elements<'a> {
    entries: &'a [Entry<'a>],
    next: usize,
    left: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = TapeNode<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let node = TapeNode { entries: self.entries, at: self.next };
        self.next = TapeNode::skip(self.entries, self.next);
        Some(node)
    }
}

/// The representation the raw validators are compiled for.
pub struct TapeJson;

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = String;
    type StringBuffer = NameBuffer;

    /// Members are a linear scan, as in a small ordered map: passes over them are cheap.
    const KEYS_PER_LOOKUP: usize = 8;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(buffer: &mut NameBuffer, string: &str, f: impl FnOnce(TapeNode<'_>) -> T) -> T {
        buffer.0.clear();
        buffer.0.push(Entry::String(Cow::Owned(string.to_owned())));
        f(TapeNode { entries: &buffer.0, at: 0 })
    }
}

/// Holds a property name as a node, for `propertyNames`.
#[derive(Default)]
pub struct NameBuffer(Vec<Entry<'static>>);

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        match self.entry() {
            Entry::Object { len, .. } => Some(TapeObject { entries: self.entries, at: self.at, len: *len as usize }),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<TapeArray<'a>> {
        match self.entry() {
            Entry::Array { len, .. } => Some(TapeArray { entries: self.entries, at: self.at, len: *len as usize }),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.as_str().map(Cow::Borrowed)
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self.entry() {
            Entry::Number(n) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.entry() {
            Entry::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.entry(), Entry::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.entry() {
            Entry::Null => JsonType::Null,
            Entry::Bool(_) => JsonType::Boolean,
            Entry::Number(_) => JsonType::Number,
            Entry::String(_) | Entry::Key(_) | Entry::Shadowed(_) => JsonType::String,
            Entry::Array { .. } => JsonType::Array,
            Entry::Object { .. } => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // `enum`/`const` of strings are common in the catalogue: compare without building.
        match (self.entry(), expected) {
            (Entry::String(s), Value::String(e)) => s == e,
            (Entry::String(_), _) => false,
            _ => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(match self.entry() {
            Entry::Null => Value::Null,
            Entry::Bool(b) => Value::Bool(*b),
            Entry::Number(n) => Value::Number(n.clone()),
            Entry::String(s) | Entry::Key(s) | Entry::Shadowed(s) => Value::String(s.to_string()),
            Entry::Array { .. } => {
                Value::Array(self.as_array().expect("an array").elements().map(|e| e.to_value().into_owned()).collect())
            }
            Entry::Object { .. } => Value::Object(
                self.as_object()
                    .expect("an object")
                    .members()
                    .map(|(k, v)| (k.to_string(), v.to_value().into_owned()))
                    .collect(),
            ),
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(std::ptr::from_ref(self.entry()) as usize))
    }
}

impl<'a> TapeObject<'a> {
    /// The member called `key` (the last one, as `serde_json::Value` keeps it).
    fn member(&self, key: &str) -> Option<TapeNode<'a>> {
        self.members().filter(|(k, _)| *k == key).last().map(|(_, v)| v)
    }
}

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: &String) -> Option<TapeNode<'a>> {
        self.member(key)
    }

    fn members(&self) -> Members<'a> {
        Members { entries: self.entries, next: self.at + 1, left: self.len }
    }
}

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = Elements<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn elements(&self) -> Elements<'a> {
        Elements { entries: self.entries, next: self.at + 1, left: self.len }
    }
}

/// Appends one value (and everything in it) to the tape.
struct Seed<'t, 's>(&'t mut Vec<Entry<'s>>);

/// Appends one object key.
struct KeySeed<'t, 's>(&'t mut Vec<Entry<'s>>);

impl<'de> DeserializeSeed<'de> for Seed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(Entry::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Entry::Bool(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(Entry::Number(v.into()));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Entry::Number(v.into()));
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json never yields a non-finite number; `Value` would store it as null.
        self.0.push(Number::from_f64(v).map_or(Entry::Null, Entry::Number));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Entry::String(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Entry::String(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(Entry::String(Cow::Owned(v)));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.len();
        self.0.push(Entry::Array { len: 0, end: 0 });
        let mut len = 0u32;
        while seq.next_element_seed(Seed(&mut *self.0))?.is_some() {
            len += 1;
        }
        self.0[at] = Entry::Array { len, end: self.0.len() as u32 };
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.0.len();
        self.0.push(Entry::Object { len: 0, end: 0 });
        let mut len = 0u32;
        while map.next_key_seed(KeySeed(&mut *self.0))?.is_some() {
            map.next_value_seed(Seed(&mut *self.0))?;
            len += 1;
        }
        let len = shadow_repeated_names(self.0, at, len);
        self.0[at] = Entry::Object { len, end: self.0.len() as u32 };
        Ok(())
    }
}

/// Marks every member of the object at `at` whose name comes again later in it as
/// [`Entry::Shadowed`]; returns how many members are left. No allocation for objects of up
/// to 16 members without repeats (pairwise); a hash set past that, so a huge object costs
/// linear time.
fn shadow_repeated_names(entries: &mut [Entry<'_>], at: usize, len: u32) -> u32 {
    const PAIRWISE: usize = 16;
    if len < 2 {
        return len;
    }
    let (mut small, mut large) = ([0usize; PAIRWISE], Vec::new());
    let positions: &mut [usize] = if len as usize <= PAIRWISE {
        &mut small[..len as usize]
    } else {
        large.resize(len as usize, 0);
        &mut large
    };
    let mut p = at + 1;
    for slot in positions.iter_mut() {
        *slot = p;
        p = TapeNode::skip(entries, p + 1);
    }
    let key = |p: usize| match &entries[p] {
        Entry::Key(k) => &**k,
        _ => "",
    };
    let mut repeated = Vec::new();
    if positions.len() <= PAIRWISE {
        for (i, &p) in positions.iter().enumerate() {
            if positions[i + 1..].iter().any(|&q| key(q) == key(p)) {
                repeated.push(p);
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(positions.len());
        for &p in positions.iter().rev() {
            if !seen.insert(key(p)) {
                repeated.push(p);
            }
        }
    }
    for &p in &repeated {
        if let Entry::Key(k) = std::mem::replace(&mut entries[p], Entry::Null) {
            entries[p] = Entry::Shadowed(k);
        }
    }
    len - repeated.len() as u32
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Entry::Key(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Entry::Key(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(Entry::Key(Cow::Owned(v)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tape_reads_back_as_the_same_value() {
        let text = r#"{"a":[1,-2,3.5,{"b":null}],"c":"x\"y","d":{"e":true,"f":{}},"g":[],"a2":18446744073709551615}"#;
        let tape = Tape::parse(text).unwrap();
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(tape.root().to_value().into_owned(), expected);
        assert_eq!(tape.root().get("d").and_then(|d| d.get("e")).and_then(|e| e.as_boolean()), Some(true));
        assert_eq!(tape.root().get("c").and_then(|c| c.as_str()), Some("x\"y"));
        assert!(tape.root().get("missing").is_none());
    }

    #[test]
    fn the_representation_meets_the_validators_contract() {
        let text = jsonschema::json::conformance::document().to_string();
        let tape = Tape::parse(&text).unwrap();
        jsonschema::json::conformance::assert_conformance::<TapeJson>(&tape.root());
    }

    #[test]
    fn a_repeated_member_name_reads_like_a_tree() {
        // Found by tests/properties.rs: the shadowed member was validated too.
        let text = r#"{"a":null,"b":1,"a":{"x":[1]},"c":{"k":1,"k":2,"k":3}}"#;
        let tape = Tape::parse(text).unwrap();
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(tape.root().to_value().into_owned(), expected);
        assert_eq!(tape.root().as_object().unwrap().len(), 3);
        assert_eq!(tape.root().as_object().unwrap().members().map(|(k, _)| k).collect::<Vec<_>>(), ["b", "a", "c"]);
        let wide = format!("{{{}\"k\":0}}", (0..40).map(|i| format!("\"k\":{i},\"m{i}\":1,")).collect::<String>());
        let tape = Tape::parse(&wide).unwrap();
        assert_eq!(tape.root().as_object().unwrap().len(), 41);
        assert_eq!(tape.root().to_value().into_owned(), serde_json::from_str::<Value>(&wide).unwrap());
    }

    #[test]
    fn bad_json_and_trailing_text_are_refused() {
        assert!(Tape::parse("{\"a\":").is_err());
        assert!(Tape::parse("{} x").is_err());
        assert!(Tape::parse(&"[".repeat(200)).is_err(), "the nesting limit holds");
    }

    #[test]
    fn validators_agree_with_the_value_validators() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["meta", "n"],
            "additionalProperties": false,
            "properties": {
                "meta": {"type": "object", "properties": {"priority": {"type": "integer", "minimum": 1, "maximum": 5}}},
                "n": {"type": "integer"},
                "kind": {"enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string", "minLength": 2}, "uniqueItems": true},
                "names": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}
            }
        });
        let by_value = jsonschema::draft202012::options().build(&schema).unwrap();
        let by_tape =
            jsonschema::options_for::<TapeJson>().with_draft(jsonschema::Draft::Draft202012).build(&schema).unwrap();
        for doc in [
            r#"{"meta":{"priority":3},"n":1}"#,
            r#"{"meta":{"priority":7},"n":1}"#,
            r#"{"meta":{},"n":1.5}"#,
            r#"{"meta":{},"n":1.0}"#,
            r#"{"meta":{},"n":1,"extra":1}"#,
            r#"{"meta":{},"n":1,"kind":"a"}"#,
            r#"{"meta":{},"n":1,"kind":"c"}"#,
            r#"{"meta":{},"n":1,"tags":["ab","cd"]}"#,
            r#"{"meta":{},"n":1,"tags":["ab","ab"]}"#,
            r#"{"meta":{},"n":1,"tags":["a"]}"#,
            r#"{"meta":{},"n":1,"names":{"ok":1}}"#,
            r#"{"meta":{},"n":1,"names":{"NO":1}}"#,
            r#"{"n":1}"#,
            r#"[]"#,
        ] {
            let value: Value = serde_json::from_str(doc).unwrap();
            let tape = Tape::parse(doc).unwrap();
            assert_eq!(by_tape.is_valid(tape.root()), by_value.is_valid(&value), "{doc}");
        }
    }
}

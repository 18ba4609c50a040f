//! Names that many events share (event types, plugin and sink names), kept once for the life
//! of the process.
//!
//! Why: every event carries its type's name, every emission its plugin's and its type's, every
//! status entry its type's. As `Arc<str>` each copy wrote the name's reference count, and all of
//! those counts were the same few cache lines, written by the HTTP threads that admit, the
//! workers that handle and the status board that evicts, on both cores: a profile of the
//! end-to-end NDJSON row had 86% of dropping an emission record on that one `lock decq`, and
//! ~12% of the router's samples on such contended instructions. A [`Name`] is a pointer to
//! text that lives as long as the process; copying or dropping one writes nothing.
//!
//! Names come from two places. The router's own configuration (the schema catalogue, plugin
//! and sink names) is kept with [`Name::intern`]. Names read back from the log, a shared
//! stream or a dead-letter file go through [`Name::read`], which keeps at most
//! [`MAX_NAMES`] distinct names, so records written by someone else cannot make the process
//! keep text without bound.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{OnceLock, RwLock};

/// Most distinct names kept. A router knows tens of event types and plugins; this leaves room
/// for far more and bounds what text from records it did not write can pin (~100 bytes a
/// name, so ~10 MB at worst).
pub const MAX_NAMES: usize = 100_000;

/// A shared name: copied as a pointer, compared and hashed as its text.
#[derive(Clone, Copy)]
pub struct Name(&'static str);

/// [`Name::read`] met a new name with [`MAX_NAMES`] already kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyNames;

impl fmt::Display for TooManyNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {MAX_NAMES} distinct names (event types, plugins) were read")
    }
}

impl std::error::Error for TooManyNames {}

fn kept() -> &'static RwLock<HashSet<&'static str>> {
    static KEPT: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    KEPT.get_or_init(Default::default)
}

thread_local! {
    /// This thread's copy of the names it has used: a look-up here reads no memory another
    /// thread writes (a read lock on the shared set would write its lock word).
    static SEEN: RefCell<HashSet<&'static str>> = RefCell::default();
}

impl Name {
    /// The name of configured text (a schema's type, a plugin's name): always kept.
    pub fn intern(text: &str) -> Name {
        Self::find_or_keep(text, usize::MAX).expect("no limit")
    }

    /// The name of text read from a record: kept while fewer than [`MAX_NAMES`] are.
    pub fn read(text: &str) -> Result<Name, TooManyNames> {
        Self::find_or_keep(text, MAX_NAMES)
    }

    fn find_or_keep(text: &str, limit: usize) -> Result<Name, TooManyNames> {
        if let Some(name) = SEEN.with(|seen| seen.borrow().get(text).copied()) {
            return Ok(Name(name));
        }
        let found = kept().read().unwrap_or_else(|e| e.into_inner()).get(text).copied();
        let name = match found {
            Some(name) => name,
            None => {
                let mut all = kept().write().unwrap_or_else(|e| e.into_inner());
                match all.get(text) {
                    Some(name) => name,
                    None if all.len() >= limit => return Err(TooManyNames),
                    None => {
                        let name: &'static str = Box::leak(text.into());
                        all.insert(name);
                        name
                    }
                }
            }
        };
        SEEN.with(|seen| seen.borrow_mut().insert(name));
        Ok(Name(name))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        // A name is only made by `find_or_keep`, which keeps one copy of each text: the same
        // text is the same pointer (and length).
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.0.cmp(other.0)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Name::read(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_is_the_same_name_on_every_thread() {
        let here = Name::intern("test/name.same");
        let there = std::thread::spawn(|| Name::read("test/name.same").unwrap()).join().unwrap();
        assert!(std::ptr::eq(here.as_str(), there.as_str()), "one copy of the text");
        assert_eq!(here, there);
        assert_eq!(here, "test/name.same");
        assert_eq!(here.to_string(), "test/name.same");
        let back: Name = serde_json::from_str(&serde_json::to_string(&here).unwrap()).unwrap();
        assert!(std::ptr::eq(back.as_str(), here.as_str()));
        let escaped: Name = serde_json::from_str(r#""test\/name.same""#).unwrap();
        assert_eq!(escaped, here, "escaped text is read into the same name");
    }

    #[test]
    fn read_names_stop_at_the_limit_and_configured_ones_do_not() {
        assert!(Name::find_or_keep("test/name.limit", 0).is_err(), "a new name past the limit");
        let kept = Name::intern("test/name.limit");
        assert_eq!(Name::find_or_keep("test/name.limit", 0), Ok(kept), "a name already kept is found");
        assert_eq!(
            TooManyNames.to_string(),
            format!("more than {MAX_NAMES} distinct names (event types, plugins) were read")
        );
    }
}

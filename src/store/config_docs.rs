//! The config service's documents (`/v1/config/{id}`), Fix Inventory style: JSON
//! documents stored durably, each with a revision that changes on every write, so that a
//! writer holding an old revision is refused instead of overwriting someone else's change.
//!
//! One file per document, `<dir>/<id>.json`, replaced atomically (write a temporary file,
//! fsync it, rename it over the old one, fsync the directory): a crash leaves either the
//! old or the new document, never a torn one. Writes are rare and serialised by one lock,
//! which also makes the revision check and the write one atomic step.
//!
//! On a shared log the documents live in its bucket `<stream>_CONFIG` instead, so a
//! document written through one instance is read through every other: the revision is the
//! bucket's (a number), and a write with a revision is a compare-and-set on the server.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Longest id accepted: ids become file names.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("config id `{0}` is not valid: use 1-128 of A-Z a-z 0-9 . _ -, not starting with . or -")]
    BadId(String),
    #[error("no config has id `{0}`")]
    NotFound(String),
    #[error("config `{id}` is at revision {current:?}, not {given:?}")]
    Stale { id: String, given: String, current: Option<String> },
    #[error("{0}")]
    Io(String),
}

/// One stored document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigDoc {
    pub id: String,
    pub revision: String,
    pub config: Value,
}

pub struct ConfigDocs {
    dir: PathBuf,
    /// Serialises writers: the revision check and the write are one step.
    write: Mutex<()>,
    shared: Option<Shared>,
}

/// The documents in a shared log's bucket. Its calls block on `runtime`: the documents'
/// callers run them off the async workers (`spawn_blocking`), as they do file writes.
struct Shared {
    kv: async_nats::jetstream::kv::Store,
    runtime: tokio::runtime::Handle,
}

impl ConfigDocs {
    pub fn open(dir: PathBuf) -> Result<Self, ConfigError> {
        crate::files::private_dir(&dir).map_err(|e| io(&dir, e))?;
        Ok(Self { dir, write: Mutex::new(()), shared: None })
    }

    /// The documents in a shared log's bucket (see the module doc).
    pub fn shared(kv: async_nats::jetstream::kv::Store, runtime: tokio::runtime::Handle) -> Self {
        Self { dir: PathBuf::new(), write: Mutex::new(()), shared: Some(Shared { kv, runtime }) }
    }

    /// The ids of every stored document, sorted.
    pub fn list(&self) -> Result<Vec<String>, ConfigError> {
        if let Some(s) = &self.shared {
            return s.list();
        }
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let path = entry.map_err(|e| io(&self.dir, e))?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                if let Some(id) = path.file_stem().and_then(|s| s.to_str()).filter(|id| valid_id(id)) {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    pub fn get(&self, id: &str) -> Result<ConfigDoc, ConfigError> {
        let path = self.path(id)?;
        if let Some(s) = &self.shared {
            return s.get(id)?.ok_or_else(|| ConfigError::NotFound(id.to_string()));
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ConfigError::NotFound(id.to_string())),
            Err(e) => return Err(io(&path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| ConfigError::Io(format!("{}: {e}", path.display())))
    }

    /// Stores `config` under `id` with a new revision. With `expected`, refuses unless the
    /// stored revision is exactly that (a document that does not exist has none).
    pub fn put(&self, id: &str, config: Value, expected: Option<&str>) -> Result<ConfigDoc, ConfigError> {
        let path = self.path(id)?;
        if let Some(s) = &self.shared {
            return s.put(id, config, expected);
        }
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        self.check(id, expected)?;
        let doc = ConfigDoc { id: id.to_string(), revision: uuid::Uuid::now_v7().to_string(), config };
        let body = serde_json::to_vec(&doc).map_err(|e| ConfigError::Io(e.to_string()))?;
        crate::files::write_atomic(&path, &body).map_err(|e| io(&path, e))?;
        Ok(doc)
    }

    /// Deletes `id` (with `expected`, only at that revision); returns the deleted document.
    pub fn delete(&self, id: &str, expected: Option<&str>) -> Result<ConfigDoc, ConfigError> {
        let path = self.path(id)?;
        if let Some(s) = &self.shared {
            return s.delete(id, expected);
        }
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let doc = self.check(id, expected)?.ok_or_else(|| ConfigError::NotFound(id.to_string()))?;
        std::fs::remove_file(&path).and_then(|_| crate::files::sync_parent(&path)).map_err(|e| io(&path, e))?;
        Ok(doc)
    }

    /// The current document, if any, after checking it is at `expected`.
    fn check(&self, id: &str, expected: Option<&str>) -> Result<Option<ConfigDoc>, ConfigError> {
        let current = match self.get(id) {
            Ok(doc) => Some(doc),
            Err(ConfigError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        match expected {
            Some(given) if current.as_ref().map(|d| d.revision.as_str()) != Some(given) => Err(ConfigError::Stale {
                id: id.to_string(),
                given: given.to_string(),
                current: current.map(|d| d.revision),
            }),
            _ => Ok(current),
        }
    }

    fn path(&self, id: &str) -> Result<PathBuf, ConfigError> {
        if !valid_id(id) {
            return Err(ConfigError::BadId(id.to_string()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }
}

impl Shared {
    fn list(&self) -> Result<Vec<String>, ConfigError> {
        use futures_util::TryStreamExt;
        let mut ids: Vec<String> = self.runtime.block_on(async {
            match self.kv.keys().await {
                Ok(keys) => keys.try_collect().await.map_err(shared),
                Err(e) => Err(shared(e)),
            }
        })?;
        ids.retain(|id| valid_id(id));
        ids.sort();
        Ok(ids)
    }

    fn get(&self, id: &str) -> Result<Option<ConfigDoc>, ConfigError> {
        use async_nats::jetstream::kv::Operation;
        let entry = self.runtime.block_on(self.kv.entry(id)).map_err(shared)?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else { return Ok(None) };
        let config = serde_json::from_slice(&entry.value).map_err(|e| ConfigError::Io(format!("config {id}: {e}")))?;
        Ok(Some(ConfigDoc { id: id.to_string(), revision: entry.revision.to_string(), config }))
    }

    /// A revision given by the client that is not the stored one.
    fn stale(&self, id: &str, given: &str) -> ConfigError {
        let current = self.get(id).ok().flatten().map(|d| d.revision);
        ConfigError::Stale { id: id.to_string(), given: given.to_string(), current }
    }

    fn put(&self, id: &str, config: Value, expected: Option<&str>) -> Result<ConfigDoc, ConfigError> {
        let body: bytes::Bytes = serde_json::to_vec(&config).map_err(|e| ConfigError::Io(e.to_string()))?.into();
        let revision = match expected {
            None => self.runtime.block_on(self.kv.put(id, body)).map_err(shared)?,
            Some(given) => {
                let Ok(at) = given.parse::<u64>() else { return Err(self.stale(id, given)) };
                match self.runtime.block_on(self.kv.update(id, body, at)) {
                    Ok(revision) => revision,
                    Err(e) if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {
                        return Err(self.stale(id, given))
                    }
                    Err(e) => return Err(shared(e)),
                }
            }
        };
        Ok(ConfigDoc { id: id.to_string(), revision: revision.to_string(), config })
    }

    fn delete(&self, id: &str, expected: Option<&str>) -> Result<ConfigDoc, ConfigError> {
        let doc = self.get(id)?.ok_or_else(|| ConfigError::NotFound(id.to_string()))?;
        if let Some(given) = expected.filter(|given| *given != doc.revision) {
            return Err(self.stale(id, given));
        }
        let at = doc.revision.parse::<u64>().ok();
        match self.runtime.block_on(self.kv.delete_expect_revision(id, at)) {
            Ok(()) => Ok(doc),
            Err(_) if expected.is_some() => Err(self.stale(id, expected.unwrap_or_default())),
            Err(e) => Err(shared(e)),
        }
    }
}

fn shared(e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Io(format!("shared config store (NATS): {e}"))
}

/// Ids become file names: a conservative alphabet, so no id can leave the directory.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with(['.', '-'])
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn io(path: &Path, e: std::io::Error) -> ConfigError {
    ConfigError::Io(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn revisions_guard_writes_and_ids_cannot_leave_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let docs = ConfigDocs::open(dir.path().join("config")).unwrap();
        let first = docs.put("fix.core", json!({"a": 1}), None).unwrap();
        let second = docs.put("fix.core", json!({"a": 2}), Some(&first.revision)).unwrap();
        assert_ne!(first.revision, second.revision);
        let stale = docs.put("fix.core", json!({"a": 3}), Some(&first.revision)).unwrap_err();
        assert!(matches!(stale, ConfigError::Stale { current: Some(c), .. } if c == second.revision));
        assert_eq!(docs.get("fix.core").unwrap(), second);
        assert_eq!(docs.list().unwrap(), vec!["fix.core".to_string()]);
        for bad in ["", "../x", "a/b", ".hidden", "-x", &"x".repeat(129)] {
            assert_eq!(docs.get(bad).unwrap_err(), ConfigError::BadId(bad.to_string()));
        }
        assert!(matches!(docs.delete("fix.core", Some("nope")), Err(ConfigError::Stale { .. })));
        docs.delete("fix.core", Some(&second.revision)).unwrap();
        assert_eq!(docs.get("fix.core").unwrap_err(), ConfigError::NotFound("fix.core".into()));
    }
}

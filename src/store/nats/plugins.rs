//! Uploaded plugins shared by every instance: the object store `<stream>_PLUGINS` keeps
//! each upload as `<name>.wasm` and `<name>.toml` (the component first, the manifest last:
//! a manifest in the store always has its component). Every instance follows the store
//! and loads, swaps or removes what changed, so an upload or swap through one instance
//! reaches all, and an instance started later loads every upload.

use super::{nats, NatsLog};
use crate::store::StoreError;
use async_nats::jetstream::object_store::{self, ObjectStore};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncReadExt;

/// A change of one uploaded plugin in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Uploaded or swapped: fetch it with [`SharedPlugins::get`].
    Put(String),
    Deleted(String),
}

pub struct SharedPlugins {
    store: ObjectStore,
}

impl SharedPlugins {
    pub async fn open(log: &NatsLog) -> Result<Self, StoreError> {
        let name = format!("{}_PLUGINS", log.stream_name());
        let store = log
            .jetstream()
            .create_object_store(object_store::Config {
                bucket: name.clone(),
                storage: async_nats::jetstream::stream::StorageType::File,
                num_replicas: log.replicas(),
                ..Default::default()
            })
            .await
            .map_err(|e| nats(&format!("create the object store {name}"), e))?;
        Ok(SharedPlugins { store })
    }

    /// Stores an upload (component, then manifest).
    pub async fn put(&self, name: &str, manifest: &str, component: &[u8]) -> Result<(), StoreError> {
        for (object, mut bytes) in [(format!("{name}.wasm"), component), (format!("{name}.toml"), manifest.as_bytes())]
        {
            self.store.put(object.as_str(), &mut bytes).await.map_err(|e| nats(&format!("store {object}"), e))?;
        }
        Ok(())
    }

    /// An upload's manifest and component.
    pub async fn get(&self, name: &str) -> Result<(String, Vec<u8>), StoreError> {
        let manifest = String::from_utf8_lossy(&self.read(&format!("{name}.toml")).await?).into_owned();
        Ok((manifest, self.read(&format!("{name}.wasm")).await?))
    }

    async fn read(&self, object: &str) -> Result<Vec<u8>, StoreError> {
        let mut reader = self.store.get(object).await.map_err(|e| nats(&format!("read {object}"), e))?;
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.map_err(|e| nats(&format!("read {object}"), e))?;
        Ok(bytes)
    }

    /// Removes an upload (the manifest first: followers act on it).
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        for object in [format!("{name}.toml"), format!("{name}.wasm")] {
            if let Err(e) = self.store.delete(&object).await {
                tracing::warn!(object = %object, error = %e, "cannot delete a shared plugin object");
            }
        }
        Ok(())
    }

    /// Every upload in the store now, then each change as it happens.
    pub async fn follow(&self) -> Result<impl Stream<Item = Change> + Send + use<>, StoreError> {
        let watch = self.store.watch_with_history().await.map_err(|e| nats("watch the plugins", e))?;
        Ok(watch.filter_map(|info| async move {
            let info = info.ok()?;
            let name = info.name.strip_suffix(".toml")?.to_string();
            Some(if info.deleted { Change::Deleted(name) } else { Change::Put(name) })
        }))
    }
}

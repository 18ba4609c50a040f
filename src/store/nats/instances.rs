//! The instances of a cluster, for the dashboard: each instance writes itself into the
//! bucket `<stream>_INSTANCES` every [`HEARTBEAT`] (its id, version and start time); the
//! bucket forgets an entry [`INSTANCE_TTL`] after its last write, so an instance that died
//! or was cut off from NATS leaves the list by itself, with no one to clean up after it.

use super::{nats, NatsLog};
use crate::store::StoreError;
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often an instance says it is there.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long an instance stays listed after its last heartbeat: three missed beats, so one
/// slow write does not make a live instance blink out of the list.
pub const INSTANCE_TTL: Duration = Duration::from_secs(15);
/// Most instances listed: the list is read for a page, and a bucket full of stale keys
/// (it should never be) must not make one request read without end.
pub const MAX_LISTED: usize = 256;

/// One instance as it describes itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub instance: String,
    pub version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: time::OffsetDateTime,
    /// When its last heartbeat was written (the bucket's own time, not the instance's).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub seen_at: Option<time::OffsetDateTime>,
}

pub struct Instances {
    kv: kv::Store,
    me: String,
}

impl Instances {
    /// Opens the bucket and starts this instance's heartbeat, which runs as long as `log`.
    pub async fn open(log: &NatsLog) -> Result<Self, StoreError> {
        let kv = log.bucket("INSTANCES", INSTANCE_TTL).await?;
        let me = Instance {
            instance: log.instance().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: time::OffsetDateTime::now_utc(),
            seen_at: None,
        };
        let value: bytes::Bytes = serde_json::to_vec(&me).expect("an instance serialises").into();
        kv.put(&me.instance, value.clone()).await.map_err(|e| nats("write this instance's heartbeat", e))?;
        let (bucket, key) = (kv.clone(), me.instance.clone());
        log.spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = bucket.put(&key, value.clone()).await {
                    tracing::warn!(error = %e, "cannot write this instance's heartbeat; others may not list it");
                }
            }
        });
        Ok(Instances { kv, me: me.instance })
    }

    /// This instance's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The instances heard from within [`INSTANCE_TTL`], oldest first (ids are UUIDv7).
    pub async fn list(&self) -> Result<Vec<Instance>, StoreError> {
        let mut keys = self.kv.keys().await.map_err(|e| nats("list the instances", e))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| nats("list the instances", e))?;
            let Some(entry) = self.kv.entry(&key).await.map_err(|e| nats("read an instance", e))? else { continue };
            // A deleted or purged key, or a value some other writer left: not an instance.
            let Ok(mut instance) = serde_json::from_slice::<Instance>(&entry.value) else { continue };
            instance.seen_at = Some(entry.created);
            out.push(instance);
            if out.len() == MAX_LISTED {
                break;
            }
        }
        out.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(out)
    }
}

//! Dead letters shared by every instance: the bucket `<stream>_DEAD` holds one entry per
//! letter (by its id); each instance keeps a copy in memory, loaded from the bucket at
//! start and kept current by watching it. A letter made, replayed or purged on one
//! instance is listed, or gone, on all.

use super::{nats, NatsLog};
use crate::store::dead_letters::{DeadLetter, DeadLetters, Mirror};
use crate::store::StoreError;
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Wait between attempts to write a letter while the server is away.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

struct Bucket {
    kv: kv::Store,
    runtime: tokio::runtime::Handle,
}

impl Mirror for Bucket {
    fn put(&self, letter: &DeadLetter) {
        let (kv, id) = (self.kv.clone(), letter.id.clone());
        let value: bytes::Bytes = serde_json::to_vec(letter).expect("dead letters serialise").into();
        self.runtime.spawn(async move {
            while let Err(e) = kv.put(&id, value.clone()).await {
                tracing::warn!(letter = %id, error = %e, "cannot share a dead letter yet; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        });
    }

    fn remove(&self, ids: &[String]) {
        let (kv, ids) = (self.kv.clone(), ids.to_vec());
        self.runtime.spawn(async move {
            for id in ids {
                if let Err(e) = kv.delete(&id).await {
                    tracing::warn!(letter = %id, error = %e, "cannot remove a shared dead letter");
                }
            }
        });
    }
}

/// Shares `letters` through `log`'s bucket: loads what is there, then follows it.
pub async fn share(log: &NatsLog, letters: Arc<DeadLetters>) -> Result<(), StoreError> {
    let kv = log.bucket("DEAD", Duration::ZERO).await?;
    let mut watch = kv.watch_with_history(">").await.map_err(|e| nats("watch the dead letters", e))?;
    letters.mirror_to(Arc::new(Bucket { kv, runtime: log.runtime().clone() }));
    log.spawn(async move {
        while let Some(entry) = watch.next().await {
            let Ok(entry) = entry else { continue };
            match entry.operation {
                kv::Operation::Put => match serde_json::from_slice::<DeadLetter>(&entry.value) {
                    Ok(letter) => letters.merge(letter),
                    Err(e) => tracing::warn!(key = %entry.key, error = %e, "not a dead letter in the bucket"),
                },
                kv::Operation::Delete | kv::Operation::Purge => letters.forget(&[entry.key]),
            }
        }
    });
    Ok(())
}

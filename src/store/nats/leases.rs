//! Leases in the bucket `<stream>_LEASES`: taken by creating the key (only one instance
//! can), renewed by a compare-and-set every third of [`LEASE_TTL`], released by purging it
//! at its revision. The bucket forgets an entry [`LEASE_TTL`] after its last write, so the
//! lease of an instance that died lapses by itself.

use super::NatsLog;
use crate::store::lease::{Lease, Leases};
use crate::store::StoreError;
use async_nats::jetstream::kv;
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a lease outlives its holder's last renewal: short enough that a dead holder's
/// workflow is not blocked for long, long enough to ride out a slow renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a waiting instance tries again.
const ACQUIRE_PAUSE: Duration = Duration::from_millis(100);

pub struct NatsLeases {
    kv: kv::Store,
    instance: String,
    runtime: tokio::runtime::Handle,
}

impl NatsLeases {
    pub async fn open(log: &NatsLog) -> Result<Self, StoreError> {
        Ok(NatsLeases {
            kv: log.bucket("LEASES", LEASE_TTL).await?,
            instance: log.instance().to_string(),
            runtime: log.runtime().clone(),
        })
    }
}

impl Leases for NatsLeases {
    fn acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lease> {
        Box::pin(async move {
            let revision = loop {
                match self.kv.create(name, self.instance.clone().into()).await {
                    Ok(revision) => break revision,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                    Err(e) => tracing::warn!(lease = name, error = %e, "cannot take a lease yet"),
                }
                tokio::time::sleep(ACQUIRE_PAUSE).await;
            };
            // The lease's revision now: renewals move it, the release needs it.
            let held = Arc::new(AtomicU64::new(revision));
            let (kv, key, me, at) = (self.kv.clone(), name.to_string(), self.instance.clone(), held.clone());
            let renew = self.runtime.spawn(async move {
                loop {
                    tokio::time::sleep(LEASE_TTL / 3).await;
                    match kv.update(&key, me.clone().into(), at.load(Ordering::Acquire)).await {
                        Ok(next) => at.store(next, Ordering::Release),
                        // A renewal the server made but answered too late (a timeout, a
                        // reconnect) left the revision behind: every later one would fail and
                        // the lease lapse while held. Read back: still ours, at its revision.
                        Err(e) => match still_ours(&kv, &key, &me).await {
                            Some(revision) => at.store(revision, Ordering::Release),
                            None => tracing::error!(lease = %key, error = %e, "cannot renew a lease; another instance may take it"),
                        },
                    }
                }
            });
            let (kv, key) = (self.kv.clone(), name.to_string());
            let runtime = self.runtime.clone();
            let me = self.instance.clone();
            Lease::new(move || {
                renew.abort();
                runtime.spawn(async move {
                    // A renewal under way when it was aborted may still move the revision.
                    let _ = renew.await;
                    // At its revision: a lease that lapsed and was taken by another instance
                    // stays theirs.
                    let mut at = held.load(Ordering::Acquire);
                    if kv.purge_expect_revision(&key, Some(at)).await.is_err() {
                        // A renewal whose answer was lost moved it on: still ours, at that one.
                        match still_ours(&kv, &key, &me).await {
                            Some(revision) => at = revision,
                            None => return tracing::warn!(lease = %key, "cannot release a lease (it lapsed, or another instance holds it now)"),
                        }
                        if let Err(e) = kv.purge_expect_revision(&key, Some(at)).await {
                            tracing::warn!(lease = %key, error = %e, "cannot release a lease; it lapses by itself");
                        }
                    }
                });
            })
        })
    }
}

/// The revision of lease `key` when it is still held by `me`: a write whose answer was lost
/// (a timeout, a reconnect) moved it on without this instance learning the new revision.
async fn still_ours(kv: &kv::Store, key: &str, me: &str) -> Option<u64> {
    match kv.entry(key.to_string()).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put && entry.value == me.as_bytes() => {
            Some(entry.revision)
        }
        _ => None,
    }
}

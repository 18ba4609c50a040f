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
                        Err(e) => match kv.entry(key.clone()).await {
                            Ok(Some(entry)) if entry.operation == kv::Operation::Put && entry.value == me.as_bytes() => {
                                at.store(entry.revision, Ordering::Release)
                            }
                            _ => tracing::error!(lease = %key, error = %e, "cannot renew a lease; another instance may take it"),
                        },
                    }
                }
            });
            let (kv, key) = (self.kv.clone(), name.to_string());
            let runtime = self.runtime.clone();
            Lease::new(move || {
                renew.abort();
                runtime.spawn(async move {
                    // At its revision: a lease that lapsed and was taken by another instance
                    // stays theirs.
                    if let Err(e) = kv.purge_expect_revision(&key, Some(held.load(Ordering::Acquire))).await {
                        tracing::warn!(lease = %key, error = %e, "cannot release a lease (it lapses by itself, or another instance holds it now)");
                    }
                });
            })
        })
    }
}

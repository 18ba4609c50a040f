//! Cluster-wide leases: "at most one instance does this at a time" (a workflow's runs). One
//! router needs none (its own lock is enough); a shared log gives [`Leases`] that hold
//! across instances and lapse on their own when the holder dies.

use futures_util::future::BoxFuture;

/// Hands out named leases.
pub trait Leases: Send + Sync {
    /// Waits until this instance holds `name`; it is held until the [`Lease`] is dropped
    /// (or, should this instance die, until the lease lapses).
    fn acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lease>;
}

/// A held lease: released when dropped.
pub struct Lease(Option<Box<dyn FnOnce() + Send>>);

impl Lease {
    /// A lease that `release` gives back.
    pub fn new(release: impl FnOnce() + Send + 'static) -> Self {
        Lease(Some(Box::new(release)))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

//! Work that is not given up halfway: polled in place while its caller waits, and moved to a
//! task of its own when the caller stops waiting (its future dropped: an HTTP client that
//! hung up, a WebSocket closed, a source task stopped at shutdown, a timeout around the
//! call). An admission dropped during its append would otherwise leave events written to the
//! log but never queued (processed only after a restart), queue room reserved for good and,
//! should the append fail, claims (an idempotency key, a status) nothing gives back; an
//! upload dropped after its swap would leave a component running that is neither on disk
//! nor in the shared store; a config document written but never announced.
//!
//! Spawning only on drop keeps the common path free of a task per request. The tasks are
//! tracked, so a graceful stop waits for them ([`Pipeline::shutdown`](super::Pipeline)).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// How long a graceful stop waits for work whose callers went away: longer than what one
/// append may take on a slow shared log (the NATS client's 5 s wait for an acknowledgement),
/// short enough not to hold a stop that an operator is waiting for.
pub const DETACHED_WAIT: Duration = Duration::from_secs(10);

/// See the module: `work`, finished even if this future is dropped.
pub struct Unabandoned<F: Future + Send + 'static>
where
    F::Output: Send,
{
    work: Option<Pin<Box<F>>>,
    tracker: TaskTracker,
}

impl<F: Future + Send + 'static> Unabandoned<F>
where
    F::Output: Send,
{
    /// `work`, moved to a task `tracker` counts should it be dropped unfinished.
    pub fn new(tracker: &TaskTracker, work: F) -> Self {
        Unabandoned { work: Some(Box::pin(work)), tracker: tracker.clone() }
    }
}

impl<F: Future + Send + 'static> Future for Unabandoned<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let work = self.work.as_mut().expect("polled after it finished");
        let out = std::task::ready!(work.as_mut().poll(cx));
        self.work = None;
        Poll::Ready(out)
    }
}

impl<F: Future + Send + 'static> Drop for Unabandoned<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        let Some(work) = self.work.take() else { return };
        // Dropped while unwinding from a panic in its own poll: it cannot be polled again.
        if std::thread::panicking() {
            return;
        }
        // Outside a runtime (it is gone) nothing can run it; what the log holds is recovered
        // at the next start.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tracker.spawn_on(work, &runtime);
        }
    }
}

/// Waits up to [`DETACHED_WAIT`] for the work `tracker` counts; false when some was still
/// running then.
pub async fn wait_for_detached(tracker: &TaskTracker) -> bool {
    tracker.close();
    tokio::time::timeout(DETACHED_WAIT, tracker.wait()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Dropped after it started, the work still runs to its end, and a stop waits for it.
    #[tokio::test]
    async fn dropped_work_finishes_and_a_stop_waits_for_it() {
        let tracker = TaskTracker::new();
        let (done, gate) = (Arc::new(AtomicBool::new(false)), Arc::new(tokio::sync::Notify::new()));
        let (d, g) = (done.clone(), gate.clone());
        let mut work = Box::pin(Unabandoned::new(&tracker, async move {
            g.notified().await;
            d.store(true, Ordering::SeqCst);
        }));
        assert!(futures_util::poll!(work.as_mut()).is_pending(), "waits at the gate");
        drop(work);
        assert!(!done.load(Ordering::SeqCst));
        gate.notify_one();
        assert!(wait_for_detached(&tracker).await, "the stop saw it finish");
        assert!(done.load(Ordering::SeqCst), "the dropped work ran to its end");
    }
}

//! What a shared log ([`crate::store::EventLog::shared`]) hands this instance: its share
//! of the work, queued like events admitted here, and what the other instances admitted
//! and finished, told to this instance's live subscribers, RPC callers and watchers.

use super::pipeline::{Core, Job};
use crate::event::{Event, Outcome};
use crate::store::Feed;
use futures_util::future::BoxFuture;
use std::sync::Weak;
use std::time::Duration;

/// How long the feed waits for queue room at a time before looking again whether the
/// router is shutting down.
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// The core as a shared log's [`Feed`]. Weak: the log lives in the core, and must not keep
/// it alive.
pub(super) struct CoreFeed(pub(super) Weak<Core>);

impl Feed for CoreFeed {
    fn work(&self, event: Event, note: Option<Vec<u8>>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Back-pressure: the log hands out no more than the workers have room for; what
            // this instance does not take stays in the stream for the others.
            loop {
                let Some(core) = self.0.upgrade() else { return };
                if core.queue.reserve_within(1, ROOM_WAIT).await.is_ok() {
                    let priority = event.priority;
                    let job = match &note {
                        Some(note) => core.resume(event, note),
                        None => Job::Event { event, reserved: true },
                    };
                    if !matches!(job, Job::Event { .. }) {
                        // Only new events hold room until a worker takes them.
                        core.queue.release(1);
                    }
                    core.queue.push(priority, job);
                    return;
                }
                if core.queue.is_closed() {
                    return;
                }
            }
        })
    }

    fn admitted(&self, event: Event, emitted: bool) {
        if let Some(core) = self.0.upgrade() {
            core.announce(&event, emitted);
        }
    }

    fn finished(&self, id: &str, outcome: &Outcome) {
        if let Some(core) = self.0.upgrade() {
            core.completions.finish(id, outcome);
        }
    }
}

//! Settling: what one accepted event's work produced, across its hops, retries and
//! workers. Each part of the work is charged to the event's budget ([`RootWork`],
//! `pipeline.root_budget`); a failed handler call is retried later or becomes a dead
//! letter; when no part is left, the event is finished: its outcome goes to the log and
//! whoever waits is told (`completion`).

use super::pipeline::Core;
use super::pipeline::Job;
use super::retry::{RetryNote, RetryTask};
use super::Route;
use crate::event::{Event, Failure, FailureKind, FailureNote, Outcome};
use crate::router::config::RootBudget;
use crate::store::status::State;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// One accepted event's work, across its hops, retries and workers: what it may still cost
/// (`pipeline.root_budget`) and what it produced until now.
pub struct RootWork {
    pub event: Event,
    pub(super) limits: RootBudget,
    pub(super) calls: AtomicU64,
    pub(super) emits: AtomicU64,
    pub(super) bytes: AtomicU64,
    /// Past its budget: whatever is left of its work is skipped.
    pub(super) exhausted: AtomicBool,
    pub(super) settled: Mutex<Settled>,
}

/// What the finished parts of an event's work produced, and how many retries are pending.
#[derive(Default)]
pub(super) struct Settled {
    pub(super) outcome: Outcome,
    pub(super) remaining: usize,
}

impl std::fmt::Debug for RootWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootWork").field("event", &self.event.id).finish_non_exhaustive()
    }
}

/// The accepted event, for plugins (see [`crate::wasm::host::PluginEvent`]).
impl std::borrow::Borrow<Event> for RootWork {
    fn borrow(&self) -> &Event {
        &self.event
    }
}

impl RootWork {
    pub(super) fn new(event: Event, limits: RootBudget) -> Arc<Self> {
        Arc::new(Self {
            event,
            limits,
            calls: AtomicU64::new(0),
            emits: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            exhausted: AtomicBool::new(false),
            settled: Mutex::default(),
        })
    }

    pub(super) fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Acquire)
    }

    /// Adds a cost; which limit it went past, if any. Atomic counters: retries of one event
    /// may run on several workers at once, and their sum is what is bounded.
    pub(super) fn spend(&self, calls: u64, emits: u64, bytes: u64) -> Option<String> {
        let l = self.limits;
        for (counter, n, limit, what) in [
            (&self.calls, calls, l.calls, "plugin calls"),
            (&self.emits, emits, l.emits, "emitted events"),
            (&self.bytes, bytes, l.bytes, "bytes of emitted events"),
        ] {
            if n > 0 && counter.fetch_add(n, Ordering::Relaxed).saturating_add(n) > limit {
                return Some(format!("{limit} {what}"));
            }
        }
        None
    }
}

/// What processing (part of) one accepted event produced.
pub(super) struct Run {
    /// The accepted event's work.
    pub(super) root: Arc<RootWork>,
    pub(super) outcome: Outcome,
    pub(super) retries: Vec<RetryTask>,
    pub(super) last_error: String,
}

impl Run {
    pub(super) fn new(root: Arc<RootWork>) -> Self {
        Run { root, outcome: Outcome::default(), retries: Vec::new(), last_error: String::new() }
    }
}

impl Core {
    /// Adds what some work on an accepted event produced; schedules its retries; once none
    /// is left, finishes the event (the `done` record in the log, the final status).
    /// `finished_tasks`: retries this work ended.
    pub(super) fn settle(&self, run: Run, finished_tasks: usize) {
        let mut done = Vec::new();
        self.settle_into(run, finished_tasks, &mut done);
        self.finish_logged(done);
    }

    /// [`settle`](Self::settle), but an accepted event it finishes is added to `done` (with
    /// its outcome) instead: a worker finishes its run's events together
    /// ([`finish_logged`](Self::finish_logged)).
    pub(super) fn settle_into(&self, run: Run, finished_tasks: usize, done: &mut Vec<(Arc<RootWork>, Outcome)>) {
        let Run { root, outcome, mut retries, last_error } = run;
        if root.exhausted() {
            // Past its budget: its retries are not made.
            retries.clear();
        }
        let shared = self.log.shared();
        let (finished, mut alone) = {
            // A panic elsewhere cannot leave this state half-written: it only adds.
            let mut entry = root.settled.lock().unwrap_or_else(PoisonError::into_inner);
            entry.outcome.emitted.extend(outcome.emitted);
            entry.outcome.failed.extend(outcome.failed);
            entry.outcome.dropped.extend(outcome.dropped);
            entry.remaining = (entry.remaining + retries.len()).saturating_sub(finished_tasks);
            // On a shared log, a retry that is all that is left of an event goes back to
            // the stream (any instance makes it after the back-off), with the outcome so far.
            if shared && retries.len() == 1 && entry.remaining == 1 {
                (None, Some(std::mem::take(&mut entry.outcome)))
            } else {
                ((entry.remaining == 0).then(|| std::mem::take(&mut entry.outcome)), None)
            }
        };
        let id = &root.event.id;
        for task in retries {
            let routes = self.routes();
            let delay = routes[task.route].retry.delay(task.attempt);
            let plugin = routes[task.route].handlers[task.handler].name().to_string();
            let now = time::OffsetDateTime::now_utc();
            let next_at = now.checked_add(delay.try_into().unwrap_or(time::Duration::MAX)).unwrap_or(now);
            let state = State::Retrying {
                plugin: plugin.clone(),
                attempt: task.attempt,
                next_at,
                last_error: last_error.clone(),
            };
            self.log.progress(id, state);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            if let Some(outcome) = alone.take() {
                let note = RetryNote {
                    route: routes[task.route].name.clone(),
                    plugin,
                    attempt: task.attempt,
                    event: task.event.clone(),
                    outcome,
                    calls: root.calls.load(Ordering::Relaxed),
                    emits: root.emits.load(Ordering::Relaxed),
                    bytes: root.bytes.load(Ordering::Relaxed),
                };
                let bytes = serde_json::to_vec(&note).expect("retry notes serialise");
                if self.log.defer(&root.event, delay, bytes) {
                    continue;
                }
                // The log did not take it: retried here after all, with its outcome back.
                root.settled.lock().unwrap_or_else(PoisonError::into_inner).outcome = note.outcome;
            }
            let due = self.retries.due_in(delay);
            self.retries.schedule_at(task, due);
        }
        if let Some(outcome) = finished {
            done.push((root, outcome));
        }
    }

    /// The job for an event a shared log delivers again with the `note` of a deferred
    /// retry: that handler's call alone, with the outcome and budget spent until then. A
    /// note that no longer fits the routes (the route or plugin is gone) runs the event
    /// through every route again.
    pub(super) fn resume(&self, event: Event, note: &[u8]) -> Job {
        let Ok(note) = serde_json::from_slice::<RetryNote>(note) else {
            tracing::warn!(event = %event.id, "an unreadable retry note; processing the event again");
            return Job::Event { event, reserved: true };
        };
        let routes = self.routes();
        let target = routes
            .iter()
            .position(|r| r.name == note.route && !r.disabled)
            .and_then(|ri| routes[ri].handlers.iter().position(|h| h.name() == note.plugin).map(|hi| (ri, hi)));
        let Some((route, handler)) = target else { return Job::Event { event, reserved: true } };
        let root = RootWork::new(event, self.root_budget);
        root.calls.store(note.calls, Ordering::Relaxed);
        root.emits.store(note.emits, Ordering::Relaxed);
        root.bytes.store(note.bytes, Ordering::Relaxed);
        {
            let mut entry = root.settled.lock().unwrap_or_else(PoisonError::into_inner);
            entry.outcome = note.outcome;
            entry.remaining = 1;
        }
        Job::Retry(RetryTask { root, event: note.event, route, handler, attempt: note.attempt })
    }

    /// An emitted event (not in the log) is finished with `outcome`: its final status, then its
    /// watchers (that order: see `completion`). The outcome is moved into the status; it is
    /// copied only when someone watches.
    pub(super) fn finish_emitted(&self, event: &Event, outcome: Outcome) {
        let watched = (self.completions.watching() > 0).then(|| outcome.clone());
        self.log.progress(&event.id, crate::store::status::finished(outcome));
        match watched {
            Some(outcome) => self.completions.finish(&event.id, &outcome),
            // Counted again now that the status is written (see `completion`).
            None => self.completions.wake(&event.id),
        }
    }

    /// Accepted events (of the log) finished with their outcomes, together: their final
    /// statuses and `done` records in one go ([`EventLog::complete_many`]), then their
    /// watchers.
    ///
    /// [`EventLog::complete_many`]: crate::store::EventLog::complete_many
    pub(super) fn finish_logged(&self, mut done: Vec<(Arc<RootWork>, Outcome)>) {
        if done.is_empty() {
            return;
        }
        let watched: Vec<Outcome> = match self.completions.watching() > 0 {
            true => done.iter().map(|(_, outcome)| outcome.clone()).collect(),
            false => Vec::new(),
        };
        self.log.complete_many(done.iter_mut().map(|(root, outcome)| (&root.event, std::mem::take(outcome))).collect());
        if watched.is_empty() {
            // Counted again now that the statuses are written (see `completion`): a watcher
            // that came since the first count is woken to read its event's status.
            if self.completions.watching() > 0 {
                done.iter().for_each(|(root, _)| self.completions.wake(&root.event.id));
            }
            return;
        }
        for ((root, _), outcome) in done.iter().zip(watched) {
            self.completions.finish(&root.event.id, &outcome);
        }
    }

    /// Charges work to the accepted event's budget before it is done: false when the
    /// budget is spent (the first time, the accepted event becomes a `root_budget` dead
    /// letter naming `plugin` and `route`), and the work is skipped.
    pub(super) fn charge(
        &self,
        run: &mut Run,
        plugin: &str,
        route: &Route,
        calls: u64,
        emits: u64,
        bytes: u64,
    ) -> bool {
        if run.root.exhausted() {
            return false;
        }
        let Some(limit) = run.root.spend(calls, emits, bytes) else { return true };
        // A clone only now (`dead_letter` takes the run): two atomic writes per call saved.
        let root = run.root.clone();
        if !root.exhausted.swap(true, Ordering::AcqRel) {
            self.counters.over_budget.fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "event {} went past its budget of {limit} (pipeline.root_budget), all hops and retries together; the rest of its work was skipped",
                root.event.id
            );
            self.dead_letter(&root.event, plugin, route, Failure::new(FailureKind::RootBudget, message), 1, run);
        }
        false
    }

    /// A handler call failed: retried later when the failure may pass and the route allows
    /// more attempts, else a dead letter.
    pub(super) fn handler_failed(
        &self,
        event: &Event,
        route: usize,
        handler: usize,
        fail: Failure,
        attempts: u32,
        run: &mut Run,
    ) {
        let routes = self.routes();
        let policy = routes[route].retry;
        if fail.retryable && attempts < policy.max_attempts && !run.root.exhausted() {
            run.last_error = format!("{}: {}", fail.kind.as_str(), fail.message);
            let task = RetryTask { root: run.root.clone(), event: event.clone(), route, handler, attempt: attempts };
            run.retries.push(task);
        } else {
            let r = &routes[route];
            self.dead_letter(event, r.handlers[handler].name(), r, fail, attempts, run);
        }
    }

    pub(super) fn dead_letter(
        &self,
        event: &Event,
        plugin: &str,
        route: &Route,
        failure: Failure,
        attempts: u32,
        run: &mut Run,
    ) {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        run.outcome.failed.push(FailureNote {
            plugin: plugin.to_string(),
            kind: failure.kind.as_str().to_string(),
            message: failure.message.clone(),
            attempts,
        });
        self.dead_letters.push(event, plugin, &route.name, failure, attempts);
    }
}

//! Retries of failed handler calls: exponential back-off with jitter up to a per-route
//! number of attempts, timed by a [`Clock`] that tests can drive by hand.

use crate::event::{Event, Outcome};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often the scheduler looks at the clock when nothing is due sooner; also the
/// resolution of retry times under a [`ManualClock`].
pub const SCHEDULER_TICK: Duration = Duration::from_millis(5);

/// Monotonic time for retries.
pub trait Clock: Send + Sync {
    /// Time since some fixed origin.
    fn now(&self) -> Duration;
}

/// The real clock.
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock that moves only when told to (tests of retry timing).
#[derive(Default)]
pub struct ManualClock(Mutex<Duration>);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.0.lock().expect("clock")
    }
}

/// A route's retry policy (`retry = { max_attempts, base_ms, max_ms }`).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Calls in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

/// Most doublings of the first wait: `1 << 31` is the largest factor a `u32` holds, and
/// 2^31 times the smallest first wait (1 ms) is past the largest `max` (a day), so the
/// configured `max`, not this cap, is what bounds a wait.
const MAX_DOUBLINGS: u32 = 31;

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: `base * 2^(attempt-1)` capped at `max`, with
    /// "equal jitter" (half fixed, half random) so that retries of many events spread out.
    /// Saturating: no attempt count or configured wait can overflow it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(MAX_DOUBLINGS)).min(self.max);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// One handler call to make again.
#[derive(Debug, Clone)]
pub struct RetryTask {
    /// The accepted event's work (its completion waits for this task; its budget pays).
    pub root: Arc<super::settle::RootWork>,
    /// The event the handler failed on (the root, or one emitted while handling it).
    pub event: Event,
    pub route: usize,
    pub handler: usize,
    /// Calls made so far.
    pub attempt: u32,
}

/// A retry handed to a shared log ([`crate::store::EventLog::defer`]): what any instance
/// needs to make it when the event comes back after its back-off. Routes and plugins are
/// named (indexes may differ between instances, uploads add routes in their own order).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RetryNote {
    pub(super) route: String,
    pub(super) plugin: String,
    /// Calls made so far.
    pub(super) attempt: u32,
    /// The event the handler failed on (the accepted one, or one emitted while handling it).
    pub(super) event: Event,
    /// What the event's work produced until now.
    pub(super) outcome: Outcome,
    /// Its budget spent until now.
    pub(super) calls: u64,
    pub(super) emits: u64,
    pub(super) bytes: u64,
}

/// Holds tasks until they are due, then hands them to `deliver`.
pub struct Scheduler {
    clock: Arc<dyn Clock>,
    inner: Mutex<Pending>,
    wake: Condvar,
    stopped: AtomicBool,
}

#[derive(Default)]
struct Pending {
    heap: BinaryHeap<Reverse<(Duration, u64)>>,
    tasks: HashMap<u64, RetryTask>,
    seq: u64,
}

impl Scheduler {
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self { clock, inner: Mutex::default(), wake: Condvar::new(), stopped: AtomicBool::new(false) })
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The clock reading `delay` from now, for [`schedule_at`](Self::schedule_at).
    pub fn due_in(&self, delay: Duration) -> Duration {
        self.clock.now().saturating_add(delay)
    }

    /// Runs the task once the clock reads `due`. Taking the due time rather than a delay lets
    /// the caller fix it before publishing it (the event's status), so what is shown is what
    /// will happen even when the clock moves in between.
    pub fn schedule_at(&self, task: RetryTask, due: Duration) {
        let mut p = self.inner.lock().expect("scheduler");
        p.seq += 1;
        let seq = p.seq;
        p.heap.push(Reverse((due, seq)));
        p.tasks.insert(seq, task);
        self.wake.notify_one();
    }

    /// The scheduler thread: delivers due tasks until [`stop`](Self::stop).
    pub fn run(&self, deliver: impl Fn(RetryTask)) {
        let mut p = self.inner.lock().expect("scheduler");
        while !self.stopped.load(Ordering::Acquire) {
            let now = self.clock.now();
            let mut due = Vec::new();
            while let Some(Reverse((at, seq))) = p.heap.peek().copied() {
                if at > now {
                    break;
                }
                p.heap.pop();
                due.extend(p.tasks.remove(&seq));
            }
            if !due.is_empty() {
                drop(p);
                due.into_iter().for_each(&deliver);
                p = self.inner.lock().expect("scheduler");
                continue;
            }
            let wait =
                p.heap.peek().map_or(SCHEDULER_TICK, |Reverse((at, _))| at.saturating_sub(now).min(SCHEDULER_TICK));
            p = self.wake.wait_timeout(p, wait.max(Duration::from_millis(1))).expect("scheduler").0;
        }
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_all();
    }
}

/// The event as a retried handler sees it: Infrahub's `meta.retry_count` says how many
/// calls failed before (only events with a `meta` object; `None` when nothing changes).
pub(super) fn with_retry_count(event: &Event, attempts: u32) -> Option<Event> {
    if attempts == 0 || !event.data.value().get("meta").is_some_and(serde_json::Value::is_object) {
        return None;
    }
    let mut data = event.data.value().clone();
    data["meta"]["retry_count"] = attempts.into();
    Some(Event { data: crate::event::Body::from_value(data), ..event.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(base_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy { max_attempts: 10, base: Duration::from_millis(base_ms), max: Duration::from_millis(max_ms) }
    }

    /// The wait before the next attempt without jitter: `base * 2^(attempt-1)`, capped.
    fn ceiling(p: &RetryPolicy, attempt: u32) -> Duration {
        p.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(MAX_DOUBLINGS)).min(p.max)
    }

    #[test]
    fn delays_double_from_base_and_stay_between_half_and_all_of_it() {
        let p = policy(100, 60_000);
        let expected = [100, 100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 51_200, 60_000, 60_000];
        for (attempt, ms) in expected.into_iter().enumerate() {
            let exp = Duration::from_millis(ms);
            assert_eq!(ceiling(&p, attempt as u32), exp, "attempt {attempt}");
            for _ in 0..200 {
                let d = p.delay(attempt as u32);
                assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?} not in [{:?}, {exp:?}]", exp / 2);
            }
        }
    }

    #[test]
    fn jitter_spreads_the_delays_over_the_random_half() {
        let p = policy(1000, 1000);
        let samples: Vec<Duration> = (0..2000).map(|_| p.delay(1)).collect();
        let (lo, hi) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
        assert!(*lo >= Duration::from_millis(500) && *hi <= Duration::from_millis(1000));
        assert!(*lo < Duration::from_millis(600), "some delays near the fixed half: {lo:?}");
        assert!(*hi > Duration::from_millis(900), "some near the whole: {hi:?}");
    }

    #[test]
    fn the_delay_never_exceeds_max_whatever_the_attempt() {
        let p = policy(200, 60_000);
        for attempt in [20, 21, 31, 32, 33, 64, 100, 1000, u32::MAX - 1, u32::MAX] {
            for _ in 0..50 {
                let d = p.delay(attempt);
                assert!(d >= Duration::from_millis(30_000) && d <= p.max, "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn huge_configured_waits_do_not_overflow() {
        let p = RetryPolicy { max_attempts: 3, base: Duration::MAX, max: Duration::MAX };
        for attempt in [0, 1, 2, 100, u32::MAX] {
            assert!(p.delay(attempt) >= Duration::MAX / 2);
        }
        let p = policy(crate::router::config::MAX_WAIT_MS, crate::router::config::MAX_WAIT_MS);
        for attempt in [1, 50, u32::MAX] {
            assert!(p.delay(attempt) <= p.max);
        }
    }

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::default();
        assert_eq!(clock.now(), Duration::ZERO);
        assert_eq!(clock.now(), Duration::ZERO);
        clock.advance(Duration::from_millis(250));
        clock.advance(Duration::from_millis(750));
        assert_eq!(clock.now(), Duration::from_secs(1));
    }

    #[test]
    fn due_in_reads_the_schedulers_clock_and_saturates() {
        let clock = Arc::new(ManualClock::default());
        let scheduler = Scheduler::new(clock.clone());
        assert_eq!(scheduler.due_in(Duration::from_millis(40)), Duration::from_millis(40));
        clock.advance(Duration::from_secs(5));
        assert_eq!(scheduler.clock().now(), Duration::from_secs(5));
        assert_eq!(scheduler.due_in(Duration::from_millis(40)), Duration::from_millis(5040));
        assert_eq!(scheduler.due_in(Duration::MAX), Duration::MAX);
    }
}

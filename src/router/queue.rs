//! The work queue between ingestion and the pipeline workers: bounded, by priority, and
//! fair enough that low priorities are never starved.
//!
//! Five FIFO lanes, one per priority (1 lowest .. 5 highest). A worker takes from the
//! highest non-empty lane, except that a waiting lower lane is served after it has been
//! passed over [`STARVATION_LIMIT`] times: under a flood of priority-5 events a priority-1
//! event still moves, at one in `STARVATION_LIMIT + 1` picks at worst.
//!
//! Capacity counts new events only (reserved before they are written to the log, so a full
//! queue answers 503 before anything is accepted); retries of accepted events always fit.
//! A producer may wait a bounded time for room ([`JobQueue::reserve_within`]): under a
//! flood, producers are slowed to the pace of the workers instead of being refused, and no
//! CPU goes into parsing and validating events only to refuse them (which took the workers'
//! CPU and made the flood worse).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Picks a higher lane may take in a row while a lower one waits.
pub const STARVATION_LIMIT: u32 = 8;
const LANES: usize = 5;

pub struct JobQueue<T> {
    inner: Mutex<Lanes<T>>,
    ready: Condvar,
    /// Room for new events: one permit each, taken by a reservation and given back when a
    /// worker takes the job (or the reservation is not used). A semaphore, so waiting
    /// producers are served in order and none waits past its deadline.
    room: Semaphore,
    capacity: usize,
}

struct Lanes<T> {
    lanes: [VecDeque<T>; LANES],
    /// Times each lane was passed over while non-empty.
    passed_over: [u32; LANES],
    closed: bool,
}

/// The queue is full (or closed): answer 503.
#[derive(Debug)]
pub struct Full;

impl<T> JobQueue<T> {
    pub fn new(capacity: usize) -> Self {
        let lanes = Lanes { lanes: Default::default(), passed_over: [0; LANES], closed: false };
        let capacity = capacity.min(Semaphore::MAX_PERMITS);
        Self { inner: Mutex::new(lanes), ready: Condvar::new(), room: Semaphore::new(capacity), capacity }
    }

    /// Reserves room for `n` new events, now or not at all.
    pub fn reserve(&self, n: usize) -> Result<(), Full> {
        let n = u32::try_from(n).map_err(|_| Full)?;
        self.room.try_acquire_many(n).map_err(|_| Full)?.forget();
        Ok(())
    }

    /// Reserves room for `n` new events, waiting up to `wait` for the workers to make it
    /// (in order with other waiting producers). Full at once when `n` is more than the queue
    /// ever holds or the queue is closed.
    pub async fn reserve_within(&self, n: usize, wait: Duration) -> Result<(), Full> {
        if n == 0 || self.reserve(n).is_ok() {
            return Ok(());
        }
        // Above the capacity it never fits; `reserve` already refused what is not a u32.
        if wait.is_zero() || n > self.capacity {
            return Err(Full);
        }
        let n = n as u32;
        match tokio::time::timeout(wait, self.room.acquire_many(n)).await {
            Ok(Ok(permit)) => {
                permit.forget();
                Ok(())
            }
            Ok(Err(_)) | Err(_) => Err(Full), // closed, or no room in time
        }
    }

    /// Gives back a reservation that will not be used (the log refused the events).
    pub fn release(&self, n: usize) {
        if n > 0 {
            self.room.add_permits(n);
        }
    }

    /// Queues a job at `priority` (1..=5). `reserved`: it holds a reservation, which is
    /// given back when a worker takes it.
    pub fn push(&self, priority: u8, job: T) {
        let lane = usize::from(priority.clamp(1, 5)) - 1;
        self.inner.lock().expect("queue").lanes[lane].push_back(job);
        self.ready.notify_one();
    }

    /// Queues several jobs under one lock, with one wake-up call: `push` per event made a
    /// `futex` wake system call per event of a batch, whether a worker waited or not.
    pub fn push_all(&self, jobs: impl IntoIterator<Item = (u8, T)>) {
        let mut n = 0;
        {
            let mut q = self.inner.lock().expect("queue");
            for (priority, job) in jobs {
                q.lanes[usize::from(priority.clamp(1, 5)) - 1].push_back(job);
                n += 1;
            }
        }
        match n {
            0 => {}
            1 => self.ready.notify_one(),
            _ => self.ready.notify_all(),
        }
    }

    /// The next job, waiting for one; `None` once closed (queued jobs stay unprocessed:
    /// they are in the log and are recovered at the next start).
    pub fn pop(&self, reserved: impl Fn(&T) -> bool) -> Option<T> {
        let mut q = self.inner.lock().expect("queue");
        let job = loop {
            if q.closed {
                return None;
            }
            if let Some(lane) = q.pick() {
                break q.lanes[lane].pop_front().expect("picked lane is non-empty");
            }
            q = self.ready.wait(q).expect("queue");
        };
        drop(q);
        if reserved(&job) {
            self.room.add_permits(1);
        }
        Some(job)
    }

    /// A run of jobs, waiting for the first: up to `max`, and no more than an even share of
    /// what waits among `sharers` workers (so one worker does not take a whole batch while
    /// another idles), in the order single pops would give; `None` once closed.
    pub fn pop_run(&self, max: usize, sharers: usize, reserved: impl Fn(&T) -> bool) -> Option<Vec<T>> {
        let mut q = self.inner.lock().expect("queue");
        loop {
            if q.closed {
                return None;
            }
            let waiting: usize = q.lanes.iter().map(VecDeque::len).sum();
            if waiting > 0 {
                let take = waiting.div_ceil(sharers.max(1)).clamp(1, max.max(1));
                let mut run = Vec::with_capacity(take);
                while run.len() < take {
                    let Some(lane) = q.pick() else { break };
                    run.push(q.lanes[lane].pop_front().expect("picked lane is non-empty"));
                }
                drop(q);
                let permits = run.iter().filter(|j| reserved(j)).count();
                if permits > 0 {
                    self.room.add_permits(permits);
                }
                return Some(run);
            }
            q = self.ready.wait(q).expect("queue");
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.room.is_closed()
    }

    /// Refuses new reservations (waiting producers are answered at once) and wakes the
    /// workers so they stop.
    pub fn close(&self) {
        self.inner.lock().expect("queue").closed = true;
        self.room.close();
        self.ready.notify_all();
    }
}

impl<T> Lanes<T> {
    fn pick(&mut self) -> Option<usize> {
        let top = (0..LANES).rev().find(|&l| !self.lanes[l].is_empty())?;
        // The lowest starving lane goes first; otherwise the highest.
        let starving = (0..top).find(|&l| !self.lanes[l].is_empty() && self.passed_over[l] >= STARVATION_LIMIT);
        let chosen = starving.unwrap_or(top);
        for l in 0..LANES {
            if l == chosen {
                self.passed_over[l] = 0;
            } else if !self.lanes[l].is_empty() && l < chosen {
                self.passed_over[l] += 1;
            }
        }
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_without_starving_the_rest() {
        let q = JobQueue::new(1000);
        for i in 0..20 {
            q.push(1, (1, i));
        }
        for i in 0..40 {
            q.push(5, (5, i));
        }
        q.push(3, (3, 0));
        let order: Vec<(u8, i32)> = (0..61).map(|_| q.pop(|_| false).unwrap()).collect();
        // The middle lane waits its STARVATION_LIMIT turns, then the lowest does too.
        assert_eq!(&order[..8], &[(5, 0), (5, 1), (5, 2), (5, 3), (5, 4), (5, 5), (5, 6), (5, 7)]);
        assert_eq!(order[8], (1, 0), "priority 1 passed over 8 times is served");
        assert_eq!(order[9], (3, 0));
        let first_lows: Vec<usize> =
            order.iter().enumerate().filter(|(_, j)| j.0 == 1).map(|(i, _)| i).take(3).collect();
        assert_eq!(first_lows, [8, 17, 26], "one low per STARVATION_LIMIT + 1 picks while highs wait");
        assert!(order[..48].iter().filter(|j| j.0 == 5).count() == 40, "all highs done before the lows' tail");
        let mut lows: Vec<i32> = order.iter().filter(|j| j.0 == 1).map(|j| j.1).collect();
        let sorted = {
            let mut s = lows.clone();
            s.sort();
            s
        };
        assert_eq!(lows, sorted, "FIFO within a lane");
        lows.dedup();
        assert_eq!(lows.len(), 20);
    }

    #[test]
    fn capacity_counts_reservations_and_close_wakes_workers() {
        let q: JobQueue<u8> = JobQueue::new(2);
        q.reserve(2).unwrap();
        assert!(q.reserve(1).is_err());
        q.push(3, 1);
        assert_eq!(q.pop(|_| true), Some(1));
        q.reserve(1).unwrap();
        q.close();
        assert_eq!(q.pop(|_| true), None);
    }

    /// A run is an even share of what waits, in priority order, and gives back the room of
    /// its reserved jobs.
    #[test]
    fn a_run_takes_its_share_in_the_order_of_single_pops() {
        let q: JobQueue<(u8, i32)> = JobQueue::new(100);
        q.reserve(10).unwrap();
        for i in 0..6 {
            q.push(1, (1, i));
        }
        for i in 0..4 {
            q.push(5, (5, i));
        }
        let first = q.pop_run(32, 2, |_| true).unwrap();
        assert_eq!(first, [(5, 0), (5, 1), (5, 2), (5, 3), (1, 0)], "half of the 10 waiting, highest first");
        assert_eq!(q.pop_run(2, 2, |_| true).unwrap(), [(1, 1), (1, 2)], "at most `max`");
        assert_eq!(q.pop_run(32, 1, |_| true).unwrap(), [(1, 3), (1, 4), (1, 5)], "one sharer takes all");
        q.reserve(10).expect("every taken job gave its room back");
        q.close();
        assert_eq!(q.pop_run(32, 2, |_| true), None);
    }

    /// A producer waits for room the workers make; past its wait, or asking for more than
    /// the queue ever holds, it is refused.
    #[tokio::test]
    async fn a_producer_waits_for_room_within_its_wait() {
        let q: std::sync::Arc<JobQueue<u8>> = std::sync::Arc::new(JobQueue::new(2));
        q.reserve(2).unwrap();
        q.push(3, 1);
        q.push(3, 2);
        let short = Duration::from_millis(20);
        assert!(q.reserve_within(1, short).await.is_err(), "no worker took a job: no room");
        assert!(q.reserve_within(3, Duration::from_secs(60)).await.is_err(), "more than the queue holds");
        let worker = q.clone();
        let taken = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            worker.pop(|_| true)
        });
        q.reserve_within(1, Duration::from_secs(60)).await.expect("room once a worker took a job");
        assert_eq!(taken.join().unwrap(), Some(1));
        assert!(q.reserve(1).is_err(), "the room made was taken by the waiting producer");
        assert!(q.reserve_within(0, short).await.is_ok(), "nothing to reserve");
    }
}

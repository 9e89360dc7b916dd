//! Batches waiting for an uploader: fresh ones, and failed ones waiting for their retry.
//!
//! Uploaders take the oldest retry that is due, else the oldest fresh batch. After a run of
//! consecutive failures (X-Ray down or throttling hard) fresh batches also wait for the backoff, so
//! an outage is not hammered. Everything here is still charged to the budget; when ingest needs room
//! the budget takes the oldest segments of the retry list, then of the fresh batches, from here
//! ([`EvictOldest`]).
//!
//! At shutdown [`Backlog::hurry`] makes every waiting retry due and opens the gate: the drain has
//! a deadline, and a retry backed off past it would be dropped although X-Ray may well answer now.
//!
//! A new batch wakes the uploader that went idle last. Below full load most batches are then
//! uploaded by the same one or two threads, whose request buffers and stacks are still in the CPU
//! cache; a first-in-first-out wake-up would rotate every batch through all the uploaders and find
//! each one's memory cold.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};

use crate::batch::Batch;
use crate::budget::{EvictOldest, Stage};
use crate::segment::Segment;

/// Consecutive failures after which fresh batches wait for the backoff too.
pub const GATE_AFTER_FAILURES: u32 = 3;

/// A batch and its upload history.
#[derive(Debug)]
pub struct Pending {
    pub batch: Batch,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not to be retried before this instant.
    pub not_before: Instant,
}

#[derive(Default)]
struct Inner {
    retry: VecDeque<Pending>,
    fresh: VecDeque<Batch>,
    in_flight: usize,
    closed: bool,
    failure_streak: u32,
    gate_until: Option<Instant>,
    /// Uploaders waiting in [`Backlog::take`], the most recently idle last.
    idle: Vec<Thread>,
}

impl Inner {
    /// Takes the most recently idle uploader off the idle list, to be woken by [`unlock_and_wake`].
    fn wake_one(&mut self) -> Option<Thread> {
        self.idle.pop()
    }

    /// Adds to the retry list, which is kept ordered by age of data: the oldest batch first.
    fn insert_retry(&mut self, pending: Pending) {
        let pos = self
            .retry
            .iter()
            .position(|p| p.batch.opened > pending.batch.opened)
            .unwrap_or(self.retry.len());
        self.retry.insert(pos, pending);
    }

    /// Takes every idle uploader off the idle list, to be woken by [`unlock_and_wake`].
    fn wake_all(&mut self) -> Vec<Thread> {
        std::mem::take(&mut self.idle)
    }
}

/// Releases the lock, then unparks `threads` (so that they do not wake into a held lock).
fn unlock_and_wake(inner: MutexGuard<'_, Inner>, threads: impl IntoIterator<Item = Thread>) {
    drop(inner);
    threads.into_iter().for_each(|t| t.unpark());
}

/// The shared backlog.
pub struct Backlog {
    inner: Mutex<Inner>,
    /// Shutting down: nothing waits for a backoff or the gate any more.
    hurrying: AtomicBool,
}

impl Default for Backlog {
    fn default() -> Self {
        Self::new()
    }
}

impl Backlog {
    /// An empty backlog.
    pub fn new() -> Self {
        Backlog {
            inner: Mutex::new(Inner::default()),
            hurrying: AtomicBool::new(false),
        }
    }

    /// Adds a batch from the batcher.
    pub fn push_fresh(&self, batch: Batch) {
        let mut inner = self.inner.lock();
        inner.fresh.push_back(batch);
        let waiter = inner.wake_one();
        unlock_and_wake(inner, waiter);
    }

    /// No more fresh batches will come; uploaders stop once everything is done.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        let waiters = inner.wake_all();
        unlock_and_wake(inner, waiters);
    }

    /// Shutdown: every retry becomes due now and fresh batches are no longer gated, so that the
    /// drain delivers whatever X-Ray accepts before the deadline. Failures after this wait only the
    /// first step of the backoff (see [`Backlog::hurrying`]).
    pub fn hurry(&self) {
        let mut inner = self.inner.lock();
        self.hurrying.store(true, Ordering::Relaxed);
        let now = Instant::now();
        for p in &mut inner.retry {
            p.not_before = p.not_before.min(now);
        }
        inner.gate_until = None;
        let waiters = inner.wake_all();
        unlock_and_wake(inner, waiters);
    }

    /// True once [`Backlog::hurry`] was called.
    pub fn hurrying(&self) -> bool {
        self.hurrying.load(Ordering::Relaxed)
    }

    /// Waits for the next batch to upload. `None` once closed and fully drained.
    pub fn take(&self) -> Option<Pending> {
        let mut inner = self.inner.lock();
        loop {
            let now = Instant::now();
            if let Some(p) = take_due(&mut inner, now) {
                inner.in_flight += 1;
                // More work that can go now (the backlog after a gate or a retry time, or batches
                // that came faster than uploaders woke): pass the wake-up on, so that idle
                // uploaders join one after the other instead of one uploader draining it alone.
                let next = if has_due(&inner, now) {
                    inner.wake_one()
                } else {
                    None
                };
                unlock_and_wake(inner, next);
                return Some(p);
            }
            if inner.closed
                && inner.fresh.is_empty()
                && inner.retry.is_empty()
                && inner.in_flight == 0
            {
                let waiters = inner.wake_all();
                unlock_and_wake(inner, waiters);
                return None;
            }
            // Park outside the lock; an unpark that comes first makes the park return at once,
            // and waking up with nothing to do just goes round again.
            let me = std::thread::current();
            inner.idle.push(me.clone());
            let wake_at = next_wake(&inner);
            drop(inner);
            match wake_at {
                Some(at) => std::thread::park_timeout(at.saturating_duration_since(now)),
                None => std::thread::park(),
            }
            inner = self.inner.lock();
            inner.idle.retain(|t| t.id() != me.id());
        }
    }

    /// The batch was delivered (or given up); resets the failure streak when `success`.
    pub fn finished(&self, success: bool) {
        let mut inner = self.inner.lock();
        inner.in_flight -= 1;
        let mut opened_gate = false;
        if success {
            inner.failure_streak = 0;
            opened_gate = inner.gate_until.take().is_some() && !inner.fresh.is_empty();
        }
        let last_at_close = inner.closed
            && inner.in_flight == 0
            && inner.fresh.is_empty()
            && inner.retry.is_empty();
        // Only wake the idle uploaders when this changes what they wait for: waking them all
        // after every delivery made each batch cost every idle uploader a futile wake-up.
        let waiters = if opened_gate || last_at_close {
            inner.wake_all()
        } else {
            Vec::new()
        };
        unlock_and_wake(inner, waiters);
    }

    /// The batch failed in a retryable way: it waits until `not_before`. `gate_until` is when
    /// fresh batches may go again should failures keep coming.
    pub fn retry_later(&self, pending: Pending, gate_until: Instant) {
        let mut inner = self.inner.lock();
        inner.in_flight -= 1;
        inner.failure_streak += 1;
        if inner.failure_streak >= GATE_AFTER_FAILURES && !self.hurrying() {
            inner.gate_until = Some(gate_until);
        }
        inner.insert_retry(pending);
        let waiters = inner.wake_all();
        unlock_and_wake(inner, waiters);
    }

    /// A part split off a batch still in flight goes back, due at once, before fresh work; the
    /// batch in flight stays counted as one.
    pub fn put_back(&self, pending: Pending) {
        let mut inner = self.inner.lock();
        inner.insert_retry(pending);
        let waiter = inner.wake_one();
        unlock_and_wake(inner, waiter);
    }

    /// True when no batch waits (fresh or for a retry).
    pub fn is_empty(&self) -> bool {
        let i = self.inner.lock();
        i.fresh.is_empty() && i.retry.is_empty()
    }

    /// Current consecutive failures.
    pub fn failure_streak(&self) -> u32 {
        self.inner.lock().failure_streak
    }

    /// Batches waiting (fresh + retry) and in flight.
    pub fn counts(&self) -> (usize, usize, usize) {
        let i = self.inner.lock();
        (i.fresh.len(), i.retry.len(), i.in_flight)
    }
}

fn take_due(inner: &mut Inner, now: Instant) -> Option<Pending> {
    if inner.retry.front().is_some_and(|p| p.not_before <= now) {
        return inner.retry.pop_front();
    }
    // A due retry further back (different attempt counts) goes before fresh work too.
    if let Some(pos) = inner.retry.iter().position(|p| p.not_before <= now) {
        return inner.retry.remove(pos);
    }
    let gated = inner.gate_until.is_some_and(|g| g > now);
    if !gated && let Some(batch) = inner.fresh.pop_front() {
        return Some(Pending {
            batch,
            attempts: 0,
            not_before: now,
        });
    }
    None
}

/// True when [`take_due`] would find something.
fn has_due(inner: &Inner, now: Instant) -> bool {
    let gated = inner.gate_until.is_some_and(|g| g > now);
    (!gated && !inner.fresh.is_empty()) || inner.retry.iter().any(|p| p.not_before <= now)
}

fn next_wake(inner: &Inner) -> Option<Instant> {
    let retry = inner.retry.iter().map(|p| p.not_before).min();
    let gate = if inner.fresh.is_empty() {
        None
    } else {
        inner.gate_until
    };
    match (retry, gate) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl EvictOldest for Backlog {
    /// The oldest segment of the batch first in the retry list (kept by age of data) or of the
    /// oldest fresh batch.
    fn evict_oldest(&self, stage: Stage) -> Option<Segment> {
        let mut inner = self.inner.lock();
        match stage {
            Stage::Retry => {
                let p = inner.retry.front_mut()?;
                let seg = p.batch.pop_oldest();
                if p.batch.is_empty() {
                    inner.retry.pop_front();
                }
                seg
            }
            Stage::Fresh => {
                let b = inner.fresh.front_mut()?;
                let seg = b.pop_oldest();
                if b.is_empty() {
                    inner.fresh.pop_front();
                }
                seg
            }
            Stage::Queued => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batcher;
    use std::sync::Arc;
    use std::time::Duration;

    fn batch(tags: &[u8]) -> Batch {
        let mut b = Batcher::new(tags.len(), Duration::from_secs(1));
        let mut out = None;
        for &t in tags {
            out = b.push(Segment::new(&[t]), Instant::now());
        }
        out.unwrap()
    }

    fn tags(b: &Batch) -> Vec<u8> {
        b.segments.iter().map(|s| s.bytes()[0]).collect()
    }

    #[test]
    fn fresh_in_order_then_drained_and_closed() {
        let bl = Backlog::new();
        bl.push_fresh(batch(&[1, 2]));
        bl.push_fresh(batch(&[3]));
        bl.close();
        let a = bl.take().unwrap();
        assert_eq!((tags(&a.batch), a.attempts), (vec![1, 2], 0));
        let b = bl.take().unwrap();
        assert_eq!(tags(&b.batch), vec![3]);
        bl.finished(true);
        bl.finished(true);
        assert!(bl.take().is_none());
    }

    #[test]
    fn due_retries_go_first_and_not_before_is_respected() {
        let bl = Backlog::new();
        bl.push_fresh(batch(&[1]));
        let p = bl.take().unwrap();
        let now = Instant::now();
        bl.retry_later(
            Pending {
                attempts: 1,
                not_before: now + Duration::from_millis(150),
                ..p
            },
            now,
        );
        bl.push_fresh(batch(&[2]));
        // Retry not due yet: fresh work proceeds (one failure does not gate).
        assert_eq!(tags(&bl.take().unwrap().batch), vec![2]);
        bl.finished(true);
        let started = Instant::now();
        let r = bl.take().unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "waited for the retry"
        );
        assert_eq!((tags(&r.batch), r.attempts), (vec![1], 1));
    }

    /// Fails batches until fresh ones are gated until `gate`; the failed batches wait an hour.
    fn fail_until_gated(bl: &Backlog, gate: Instant) {
        let far = Instant::now() + Duration::from_secs(3600);
        for i in 0..GATE_AFTER_FAILURES as u8 {
            bl.push_fresh(batch(&[i]));
            let p = bl.take().unwrap();
            bl.retry_later(
                Pending {
                    attempts: 1,
                    not_before: far,
                    ..p
                },
                gate,
            );
        }
    }

    fn an_hour() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// Waits until `n` uploaders are parked in `take`.
    fn wait_idle(bl: &Backlog, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while bl.inner.lock().idle.len() < n {
            assert!(Instant::now() < deadline, "uploader {n} never went idle");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_failure_streak_gates_fresh_batches() {
        let bl = Backlog::new();
        fail_until_gated(&bl, an_hour());
        bl.push_fresh(batch(&[9]));
        assert!(bl.inner.lock().gate_until.is_some());
        assert!(
            take_due(&mut bl.inner.lock(), Instant::now()).is_none(),
            "gated"
        );
        bl.push_fresh(batch(&[10]));
        // A success opens the gate again.
        bl.inner.lock().in_flight += 1;
        bl.finished(true);
        assert_eq!(
            tags(
                &take_due(&mut bl.inner.lock(), Instant::now())
                    .unwrap()
                    .batch
            ),
            vec![9]
        );
    }

    /// Runs `take` on `n` threads; their results arrive on the returned channel.
    fn waiters(bl: &Arc<Backlog>, n: usize) -> crossbeam_channel::Receiver<Option<Vec<u8>>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..n {
            let (bl, tx) = (bl.clone(), tx.clone());
            std::thread::spawn(move || {
                let _ = tx.send(bl.take().map(|p| tags(&p.batch)));
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        rx
    }

    #[test]
    fn idle_uploaders_leave_when_the_last_batch_in_flight_ends_after_close() {
        let bl = Arc::new(Backlog::new());
        bl.push_fresh(batch(&[1]));
        let held = bl.take().unwrap();
        let rx = waiters(&bl, 3);
        bl.close();
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "a batch is still in flight");
        drop(held);
        bl.finished(true);
        for _ in 0..3 {
            let got = rx.recv_timeout(Duration::from_secs(5));
            assert_eq!(got, Ok(None), "a waiting uploader was left asleep");
        }
    }

    #[test]
    fn a_success_that_opens_the_gate_wakes_a_waiting_uploader() {
        let bl = Arc::new(Backlog::new());
        fail_until_gated(&bl, an_hour());
        bl.push_fresh(batch(&[9]));
        bl.inner.lock().in_flight += 1; // a batch whose upload is under way
        let rx = waiters(&bl, 1);
        assert!(rx.try_recv().is_err(), "gated for an hour");
        bl.finished(true);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(Some(vec![9])));
    }

    #[test]
    fn a_new_batch_goes_to_the_uploader_that_went_idle_last() {
        let bl = Arc::new(Backlog::new());
        let (tx, rx) = crossbeam_channel::unbounded();
        let idle = |n: usize| wait_idle(&bl, n);
        for (i, name) in ["first", "second", "third"].into_iter().enumerate() {
            let (bl, tx) = (bl.clone(), tx.clone());
            std::thread::spawn(move || {
                while let Some(p) = bl.take() {
                    let _ = tx.send((name, tags(&p.batch)));
                    bl.finished(true);
                }
            });
            idle(i + 1);
        }
        bl.push_fresh(batch(&[1]));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(("third", vec![1]))
        );
        // Once it is idle again, it is again the last one to have gone idle.
        idle(3);
        bl.push_fresh(batch(&[2]));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(("third", vec![2]))
        );
        idle(3);
        bl.close();
    }

    #[test]
    fn when_a_gate_opens_idle_uploaders_join_in() {
        let bl = Arc::new(Backlog::new());
        fail_until_gated(&bl, Instant::now() + Duration::from_millis(200));
        // Four uploaders wait; four batches arrive while the gate is shut. Each uploader keeps
        // its batch (an upload that takes long): only wake-ups can bring in the others.
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..4 {
            let (bl, tx) = (bl.clone(), tx.clone());
            std::thread::spawn(move || {
                if let Some(p) = bl.take() {
                    let _ = tx.send(tags(&p.batch));
                }
            });
        }
        wait_idle(&bl, 4);
        for t in 10..14 {
            bl.push_fresh(batch(&[t]));
        }
        let mut got: Vec<u8> = (0..4)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(5))
                    .expect("an idle uploader was left asleep after the gate opened")[0]
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![10, 11, 12, 13]);
    }

    #[test]
    fn hurry_makes_retries_due_and_opens_the_gate() {
        let bl = Arc::new(Backlog::new());
        fail_until_gated(&bl, an_hour());
        bl.push_fresh(batch(&[9]));
        let rx = waiters(&bl, 1);
        assert!(rx.try_recv().is_err(), "everything waits an hour");
        bl.hurry();
        assert!(bl.hurrying());
        let mut got = vec![rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap()[0]];
        got.extend((0..3).map(|_| bl.take().unwrap().batch.segments[0].bytes()[0]));
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 9]);
        // A failure while hurrying does not shut the gate again.
        bl.push_fresh(batch(&[10]));
        let p = bl.take().unwrap();
        bl.retry_later(p, an_hour());
        assert!(bl.inner.lock().gate_until.is_none());
    }

    #[test]
    fn a_part_put_back_goes_before_fresh_work() {
        let bl = Backlog::new();
        bl.push_fresh(batch(&[1, 2]));
        bl.push_fresh(batch(&[3]));
        let mut p = bl.take().unwrap();
        let tail = p.batch.split_off(1);
        bl.put_back(Pending {
            batch: tail,
            attempts: 2,
            not_before: Instant::now(),
        });
        let next = bl.take().unwrap();
        assert_eq!((tags(&next.batch), next.attempts), (vec![2], 2));
        assert_eq!(bl.counts(), (1, 0, 2));
        bl.finished(true);
        bl.finished(true);
        assert_eq!(tags(&bl.take().unwrap().batch), vec![3]);
    }

    #[test]
    fn each_list_gives_up_its_oldest_segment() {
        let bl = Backlog::new();
        bl.push_fresh(batch(&[1, 2]));
        let p = bl.take().unwrap();
        let later = Instant::now() + Duration::from_secs(60);
        bl.retry_later(
            Pending {
                attempts: 1,
                not_before: later,
                ..p
            },
            later,
        );
        bl.push_fresh(batch(&[3, 4]));
        bl.push_fresh(batch(&[5]));
        let oldest = |stage| bl.evict_oldest(stage).map(|s| s.bytes()[0]);
        assert_eq!(oldest(Stage::Queued), None, "nothing of the ring is here");
        assert_eq!(oldest(Stage::Fresh), Some(3));
        assert_eq!(oldest(Stage::Retry), Some(1));
        assert_eq!(oldest(Stage::Fresh), Some(4));
        assert_eq!(bl.counts(), (1, 1, 0));
        assert_eq!(oldest(Stage::Retry), Some(2));
        assert_eq!(oldest(Stage::Retry), None);
        assert_eq!(oldest(Stage::Fresh), Some(5));
        assert_eq!(oldest(Stage::Fresh), None);
        assert_eq!(bl.counts(), (0, 0, 0));
    }
}

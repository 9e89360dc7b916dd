//! The queue between ingest and batching.
//!
//! Ingest pushes segments into a lock-free bounded ring (a crossbeam array channel); the batcher
//! drains it. A push asks the [`crate::budget`] first: it charges the segment, or makes room by
//! evicting the oldest held segments (this ring's head among them), or refuses it.
//! The ring also has a fixed number of slots; when they are all taken, its oldest segment makes
//! way (spillover too).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::budget::{Budget, EvictOldest, Stage};
use crate::segment::Segment;
use crate::stats::Stats;

/// Producer side: admits segments within the budget.
#[derive(Clone)]
pub struct QueueWriter {
    tx: Sender<Segment>,
    ring: Ring,
    budget: Budget,
}

/// Consumer side, owned by the batcher.
pub struct QueueReader {
    pub rx: Receiver<Segment>,
}

/// The ring seen from the budget: its head is the oldest queued segment.
#[derive(Clone)]
struct Ring(Receiver<Segment>);

impl EvictOldest for Ring {
    fn evict_oldest(&self, stage: Stage) -> Option<Segment> {
        match stage {
            Stage::Queued => self.0.try_recv().ok(),
            Stage::Retry | Stage::Fresh => None,
        }
    }
}

/// Creates the ring with room for `slots` segments and a budget of `budget` bytes. `older` is where
/// segments that left the ring still count against the budget (batches awaiting upload).
pub fn bounded(
    slots: usize,
    budget: u64,
    stats: Arc<Stats>,
    older: Arc<dyn EvictOldest>,
) -> (QueueWriter, QueueReader) {
    let (tx, rx) = crossbeam_channel::bounded(slots.max(1));
    (
        QueueWriter {
            tx,
            ring: Ring(rx.clone()),
            budget: Budget::new(budget, stats, older),
        },
        QueueReader { rx },
    )
}

/// What happened to a pushed segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Queued; `evicted` older segments were dropped to make room.
    Queued { evicted: u64 },
    /// Nothing older could be dropped (all in flight), so this one was dropped.
    Dropped,
}

impl QueueWriter {
    /// Queues a segment if the budget admits it (dropping the oldest held segments if it must).
    pub fn push(&self, segment: Segment) -> Admission {
        let Some(mut evicted) = self.budget.admit(&segment, &self.ring) else {
            return Admission::Dropped;
        };
        let mut segment = segment;
        loop {
            match self.tx.try_send(segment) {
                Ok(()) => return Admission::Queued { evicted },
                Err(TrySendError::Full(back)) => {
                    // The ring is full by count: the oldest queued segment makes way.
                    segment = back;
                    if let Some(old) = self.ring.evict_oldest(Stage::Queued) {
                        self.budget.spill(old);
                        evicted += 1;
                    }
                }
                Err(TrySendError::Disconnected(back)) => {
                    // The batcher is gone (shutdown): this segment cannot be delivered.
                    self.budget.undeliverable(back);
                    return Admission::Dropped;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{BodyAllowance, SEGMENT_OVERHEAD};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Batches waiting for their first upload, as one list of segments.
    #[derive(Default)]
    struct Older(Mutex<VecDeque<Segment>>);
    impl Older {
        fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Segment>> {
            self.0.lock().unwrap()
        }
    }
    impl EvictOldest for Older {
        fn evict_oldest(&self, stage: Stage) -> Option<Segment> {
            (stage == Stage::Fresh).then(|| self.lock().pop_front())?
        }
    }

    fn seg(n: usize, tag: u8) -> Segment {
        Segment::new(&vec![tag; n])
    }

    #[test]
    fn within_budget_everything_is_queued() {
        let stats = Arc::new(Stats::default());
        let (w, r) = bounded(16, 10_000, stats.clone(), Arc::new(Older::default()));
        for i in 0..5 {
            assert_eq!(w.push(seg(100, i)), Admission::Queued { evicted: 0 });
        }
        let s = stats.snapshot();
        assert_eq!(
            (s.segments_held, s.bytes_held),
            (5, 5 * (100 + SEGMENT_OVERHEAD))
        );
        let got: Vec<u8> = r.rx.try_iter().map(|s| s.bytes()[0]).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn over_budget_drops_oldest_first_from_older_holders_then_the_ring() {
        let stats = Arc::new(Stats::default());
        let older = Arc::new(Older::default());
        let cost = 100 + SEGMENT_OVERHEAD;
        // Two segments already batched (held elsewhere), charged to the budget.
        older.lock().extend([seg(100, 100), seg(100, 101)]);
        let _batched = stats.ledger.hold_raw(2, 2 * cost);
        let (w, r) = bounded(16, 4 * cost, stats.clone(), older.clone());
        assert_eq!(w.push(seg(100, 0)), Admission::Queued { evicted: 0 });
        assert_eq!(w.push(seg(100, 1)), Admission::Queued { evicted: 0 });
        // Full: the next pushes evict the batched ones first, then the ring's head.
        assert_eq!(w.push(seg(100, 2)), Admission::Queued { evicted: 1 });
        assert_eq!(older.lock().front().map(|s| s.bytes()[0]), Some(101));
        assert_eq!(w.push(seg(100, 3)), Admission::Queued { evicted: 1 });
        assert!(older.lock().is_empty());
        assert_eq!(w.push(seg(100, 4)), Admission::Queued { evicted: 1 });
        let s = stats.snapshot();
        assert_eq!(s.spillover, 3);
        assert_eq!((s.segments_held, s.bytes_held), (4, 4 * cost));
        let got: Vec<u8> = r.rx.try_iter().map(|s| s.bytes()[0]).collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
    }

    #[test]
    fn request_bodies_in_flight_count_against_the_budget() {
        let stats = Arc::new(Stats::default());
        let older = Arc::new(Older::default());
        let cost = 100 + SEGMENT_OVERHEAD;
        let (w, _r) = bounded(16, 3 * cost, stats.clone(), older.clone());
        older.lock().extend([seg(100, 0), seg(100, 1)]);
        let _batched = stats.ledger.hold_raw(2, 2 * cost);
        let bodies = BodyAllowance::new(1 << 20);
        let _body = bodies.acquire(cost, &stats.ledger);
        assert_eq!(w.push(seg(100, 2)), Admission::Queued { evicted: 1 });
        assert_eq!(stats.snapshot().spillover, 1);
    }

    #[test]
    fn a_big_segment_evicts_as_many_as_needed() {
        let stats = Arc::new(Stats::default());
        let (w, r) = bounded(16, 1000, stats.clone(), Arc::new(Older::default()));
        for i in 0..4 {
            w.push(seg(150, i));
        }
        assert_eq!(w.push(seg(700, 9)), Admission::Queued { evicted: 3 });
        let got: Vec<u8> = r.rx.try_iter().map(|s| s.bytes()[0]).collect();
        assert_eq!(got, vec![3, 9]);
        assert_eq!(stats.snapshot().spillover, 3);
    }

    #[test]
    fn nothing_evictable_drops_the_newcomer() {
        let stats = Arc::new(Stats::default());
        let _in_flight = stats.ledger.hold_raw(1, 900); // not evictable
        let (w, _r) = bounded(16, 1000, stats.clone(), Arc::new(Older::default()));
        assert_eq!(w.push(seg(100, 1)), Admission::Dropped);
        let s = stats.snapshot();
        assert_eq!((s.spillover, s.segments_held, s.bytes_held), (1, 1, 900));
    }

    #[test]
    fn a_full_ring_drops_its_oldest() {
        let stats = Arc::new(Stats::default());
        let (w, r) = bounded(2, 1 << 20, stats.clone(), Arc::new(Older::default()));
        for i in 0..3 {
            w.push(seg(10, i));
        }
        let got: Vec<u8> = r.rx.try_iter().map(|s| s.bytes()[0]).collect();
        assert_eq!(got, vec![1, 2]);
        let s = stats.snapshot();
        assert_eq!((s.spillover, s.segments_held), (1, 2));
    }
}

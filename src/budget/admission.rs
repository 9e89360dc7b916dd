//! Admission and eviction: may a segment be held, and what must be dropped first to make room.
//!
//! [`Budget::admit`] compares what is charged (segments held and large bodies, see
//! [`super::Ledger::charged`]) plus the newcomer's cost with the limit. Over it, the oldest data is
//! evicted first, in [`EVICTION_ORDER`]; each holder only says "here is my oldest segment at this
//! stage" ([`EvictOldest`]), the order is decided here. Every segment evicted, and a newcomer for
//! which nothing could be evicted, is counted as spillover.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::segment::Segment;
use crate::stats::Stats;

/// Where an evictable segment waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// In a batch whose upload failed, waiting for its retry: the oldest data held.
    Retry,
    /// In a batch waiting for its first upload.
    Fresh,
    /// In the ring between ingest and the batcher: the newest data.
    Queued,
}

/// The order in which stages give up their oldest segment when the budget is full: the oldest data
/// first. (The batcher's open batch and batches in flight are held but not evictable.)
pub const EVICTION_ORDER: [Stage; 3] = [Stage::Retry, Stage::Fresh, Stage::Queued];

/// A place that holds charged segments and can give up its oldest one.
pub trait EvictOldest: Send + Sync {
    /// Removes and returns the oldest segment held here at `stage`, if any. The budget accounts
    /// for it.
    fn evict_oldest(&self, stage: Stage) -> Option<Segment>;
}

/// The budget's admission: the limit, and the holders it may evict from.
#[derive(Clone)]
pub struct Budget {
    limit: u64,
    stats: Arc<Stats>,
    /// Holders of segments that left the ring (batches awaiting upload or retry).
    older: Arc<dyn EvictOldest>,
}

impl Budget {
    /// A budget of `limit` bytes, charged to `stats`' ledger; `older` holds the batches that wait
    /// for an uploader.
    pub fn new(limit: u64, stats: Arc<Stats>, older: Arc<dyn EvictOldest>) -> Self {
        Budget {
            limit,
            stats,
            older,
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Charges `segment` if it fits, evicting the oldest segments (from the older holders, then
    /// from `ring`) until it does. Returns how many were evicted, or `None` when nothing more could
    /// be evicted and the newcomer is dropped instead (counted as spillover; not charged).
    #[must_use]
    pub fn admit(&self, segment: &Segment, ring: &dyn EvictOldest) -> Option<u64> {
        let cost = segment.cost();
        let ledger = &self.stats.ledger;
        let mut evicted = 0;
        while ledger.charged() + cost > self.limit {
            match self.evict_oldest(ring) {
                Some(old) => {
                    self.spill(old);
                    evicted += 1;
                }
                None => {
                    self.stats.spillover.fetch_add(1, Relaxed);
                    return None;
                }
            }
        }
        ledger.hold(segment);
        Some(evicted)
    }

    /// The oldest evictable segment, stage by stage in [`EVICTION_ORDER`].
    fn evict_oldest(&self, ring: &dyn EvictOldest) -> Option<Segment> {
        EVICTION_ORDER.iter().find_map(|&stage| {
            self.older
                .evict_oldest(stage)
                .or_else(|| ring.evict_oldest(stage))
        })
    }

    /// Drops a held segment to make room (the ring is full by count, or the budget by bytes):
    /// released and counted as spillover.
    pub fn spill(&self, old: Segment) {
        self.stats.ledger.release_segment(old);
        self.stats.spillover.fetch_add(1, Relaxed);
    }

    /// Drops an admitted segment that can no longer be delivered (the batcher is gone at
    /// shutdown): released and counted as dropped at shutdown.
    pub fn undeliverable(&self, segment: Segment) {
        self.stats.ledger.release_segment(segment);
        self.stats.dropped_at_shutdown.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{BodyAllowance, SEGMENT_OVERHEAD};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// A holder with a list of segments per stage, oldest first.
    #[derive(Default)]
    struct Holder(Mutex<Vec<(Stage, VecDeque<Segment>)>>);

    impl Holder {
        fn with(stages: &[(Stage, &[u8])]) -> Arc<Self> {
            let h = Holder::default();
            for &(stage, tags) in stages {
                h.0.lock()
                    .unwrap()
                    .push((stage, tags.iter().map(|&t| seg(100, t)).collect()));
            }
            Arc::new(h)
        }

        fn tags(&self) -> Vec<u8> {
            let lists = self.0.lock().unwrap();
            lists
                .iter()
                .flat_map(|(_, l)| l.iter().map(|s| s.bytes()[0]))
                .collect()
        }
    }

    impl EvictOldest for Holder {
        fn evict_oldest(&self, stage: Stage) -> Option<Segment> {
            let mut lists = self.0.lock().unwrap();
            let (_, list) = lists.iter_mut().find(|(s, _)| *s == stage)?;
            list.pop_front()
        }
    }

    fn seg(n: usize, tag: u8) -> Segment {
        Segment::new(&vec![tag; n])
    }

    const COST: u64 = 100 + SEGMENT_OVERHEAD;

    /// A budget of `n` segments of 100 bytes, with `older` already charged.
    fn budget(n: u64, older: &Arc<Holder>) -> (Budget, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let held = older.tags().len() as u64;
        let _charged = stats.ledger.hold_raw(held, held * COST);
        (Budget::new(n * COST, stats.clone(), older.clone()), stats)
    }

    #[test]
    fn within_the_limit_a_segment_is_charged_and_nothing_evicted() {
        let older = Holder::with(&[]);
        let (b, stats) = budget(2, &older);
        let ring = Holder::with(&[]);
        assert_eq!(b.admit(&seg(100, 1), &*ring), Some(0));
        assert_eq!(b.admit(&seg(100, 2), &*ring), Some(0));
        let s = stats.snapshot();
        assert_eq!(
            (s.segments_held, s.bytes_held, s.spillover),
            (2, 2 * COST, 0)
        );
        assert_eq!(b.limit(), 2 * COST);
    }

    #[test]
    fn eviction_takes_retry_data_then_fresh_then_the_ring() {
        // The older holder is asked first at each stage; the ring only has queued segments.
        let older = Holder::with(&[(Stage::Fresh, &[3, 4]), (Stage::Retry, &[1, 2])]);
        let ring = Holder::with(&[(Stage::Queued, &[5, 6])]);
        let (b, stats) = budget(6, &older);
        let _ring_charge = stats.ledger.hold_raw(2, 2 * COST);
        let mut order = vec![];
        for t in 10..16 {
            let before: Vec<u8> = [older.tags(), ring.tags()].concat();
            assert_eq!(b.admit(&seg(100, t), &*ring), Some(1));
            let after: Vec<u8> = [older.tags(), ring.tags()].concat();
            order.extend(before.into_iter().filter(|t| !after.contains(t)));
        }
        assert_eq!(order, vec![1, 2, 3, 4, 5, 6]);
        let s = stats.snapshot();
        assert_eq!(
            (s.spillover, s.segments_held, s.bytes_held),
            (6, 6, 6 * COST)
        );
    }

    #[test]
    fn a_big_segment_evicts_as_many_as_needed() {
        let older = Holder::with(&[(Stage::Fresh, &[1, 2, 3, 4])]);
        let (b, stats) = budget(5, &older);
        // Costs four segments of 100 bytes: three must go besides the room that was left.
        let big = seg(4 * 100 + 3 * SEGMENT_OVERHEAD as usize, 9);
        assert_eq!(big.cost(), 4 * COST);
        assert_eq!(b.admit(&big, &*Holder::with(&[])), Some(3));
        assert_eq!(older.tags(), vec![4]);
        assert_eq!(stats.snapshot().spillover, 3);
        assert_eq!(stats.ledger.bytes_held(), 5 * COST);
    }

    #[test]
    fn nothing_evictable_drops_the_newcomer_uncharged() {
        let stats = Arc::new(Stats::default());
        let _in_flight = stats.ledger.hold_raw(1, 900);
        let b = Budget::new(1000, stats.clone(), Holder::with(&[]));
        assert_eq!(b.admit(&seg(100, 1), &*Holder::with(&[])), None);
        let s = stats.snapshot();
        assert_eq!((s.spillover, s.segments_held, s.bytes_held), (1, 1, 900));
    }

    #[test]
    fn large_bodies_count_against_the_limit() {
        let older = Holder::with(&[(Stage::Fresh, &[1, 2])]);
        let (b, stats) = budget(3, &older);
        let bodies = BodyAllowance::new(1 << 20);
        let body = bodies.acquire(COST, &stats.ledger);
        assert_eq!(stats.ledger.charged(), 3 * COST);
        assert_eq!(b.admit(&seg(100, 3), &*Holder::with(&[])), Some(1));
        drop(body);
        assert_eq!(b.admit(&seg(100, 4), &*Holder::with(&[])), Some(0));
        assert_eq!(older.tags(), vec![2]);
    }

    #[test]
    fn spilled_and_undeliverable_segments_are_released_and_counted_apart() {
        let older = Holder::with(&[]);
        let (b, stats) = budget(10, &older);
        let ring = Holder::with(&[]);
        for t in 0..3 {
            assert_eq!(b.admit(&seg(100, t), &*ring), Some(0));
        }
        b.spill(seg(100, 0));
        b.undeliverable(seg(100, 1));
        let s = stats.snapshot();
        assert_eq!(
            (
                s.spillover,
                s.dropped_at_shutdown,
                s.segments_held,
                s.bytes_held
            ),
            (1, 1, 1, COST)
        );
    }

    #[test]
    fn eviction_takes_retry_data_first_then_fresh_oldest_first_from_the_backlog() {
        use crate::batch::Batcher;
        use crate::upload::backlog::{Backlog, Pending};
        use std::time::{Duration, Instant};

        let batch = |tags: &[u8]| {
            let mut b = Batcher::new(tags.len(), Duration::from_secs(1));
            let mut out = None;
            for &t in tags {
                out = b.push(seg(100, t), Instant::now());
            }
            out.unwrap()
        };
        let backlog = Arc::new(Backlog::new());
        backlog.push_fresh(batch(&[1, 2]));
        let p = backlog.take().unwrap();
        let later = Instant::now() + Duration::from_secs(60);
        backlog.retry_later(
            Pending {
                attempts: 1,
                not_before: later,
                ..p
            },
            later,
        );
        backlog.push_fresh(batch(&[3, 4]));
        /// Records the tag of every segment the inner holder gives up.
        struct Recording(Arc<dyn EvictOldest>, Arc<Mutex<Vec<u8>>>);
        impl EvictOldest for Recording {
            fn evict_oldest(&self, stage: Stage) -> Option<Segment> {
                let s = self.0.evict_oldest(stage)?;
                self.1.lock().unwrap().push(s.bytes()[0]);
                Some(s)
            }
        }
        let order = Arc::new(Mutex::new(vec![]));
        let ring = Recording(Holder::with(&[(Stage::Queued, &[5])]), order.clone());
        let older = Arc::new(Recording(backlog.clone(), order.clone()));
        let stats = Arc::new(Stats::default());
        let _held = stats.ledger.hold_raw(5, 5 * COST);
        let b = Budget::new(5 * COST, stats.clone(), older);
        for t in 10..15 {
            assert_eq!(b.admit(&seg(100, t), &ring), Some(1));
        }
        assert_eq!(*order.lock().unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(backlog.counts(), (0, 0, 0));
        assert_eq!(b.admit(&seg(100, 15), &ring), None, "nothing left to evict");
    }
}

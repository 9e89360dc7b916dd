//! The queue between ingest and batching, and the byte budget that covers everything held.
//!
//! Ingest pushes segments into a lock-free bounded ring (a crossbeam array channel); the batcher
//! drains it. Every held segment is charged to [`Stats::bytes_held`] from the moment it is queued
//! until it is delivered or dropped, so the budget covers what is queued, batched, in flight and
//! awaiting retry. A push that would exceed the budget first drops the **oldest** held segments
//! (batches awaiting upload or retry, then the ring's head), counted as spillover. Large request
//! bodies being sent ([`Stats::body_bytes`]) count against the budget too.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::stats::Stats;

/// Bytes charged per segment on top of its body: the allocation's bookkeeping and the ring slot.
pub const SEGMENT_OVERHEAD: u64 = 48;

/// Most bytes of segments that share one allocation ([`Segment::copy_shared`]): a segment held
/// long (awaiting a retry) keeps at most this much of its neighbours' memory alive.
pub const SHARED_ALLOCATION_BYTES: usize = 64 * 1024;

/// One accepted segment document, byte-exact as received.
///
/// Its bytes live in an allocation it may share with the segments received with it, so ingest
/// allocates (and an uploader frees) once per receive call rather than once per datagram.
#[derive(Clone)]
pub struct Segment {
    shared: Arc<Vec<u8>>,
    start: u32,
    end: u32,
}

impl Segment {
    /// Copies a validated body into an allocation of its own.
    pub fn new(body: &[u8]) -> Self {
        Segment {
            shared: Arc::new(body.to_vec()),
            start: 0,
            end: body.len() as u32,
        }
    }

    /// Copies `bodies` (each at most 64 KiB) into as few allocations as
    /// [`SHARED_ALLOCATION_BYTES`] allows, and hands `each` one segment per body, in order.
    pub fn copy_shared(bodies: &[&[u8]], mut each: impl FnMut(Segment)) {
        let mut rest = bodies;
        while !rest.is_empty() {
            let mut total = rest[0].len();
            let mut n = 1;
            while n < rest.len() && total + rest[n].len() <= SHARED_ALLOCATION_BYTES {
                total += rest[n].len();
                n += 1;
            }
            let (group, after) = rest.split_at(n);
            let mut bytes = Vec::with_capacity(total);
            for body in group {
                bytes.extend_from_slice(body);
            }
            let shared = Arc::new(bytes);
            let mut start = 0;
            for body in group {
                let end = start + body.len() as u32;
                each(Segment {
                    shared: shared.clone(),
                    start,
                    end,
                });
                start = end;
            }
            rest = after;
        }
    }

    /// The document's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.shared[self.start as usize..self.end as usize]
    }

    /// What holding this segment costs against the budget.
    pub fn cost(&self) -> u64 {
        u64::from(self.end - self.start) + SEGMENT_OVERHEAD
    }
}

impl PartialEq for Segment {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Segment")
            .field(&String::from_utf8_lossy(self.bytes()))
            .finish()
    }
}

/// A place that holds segments within the budget and can give up its oldest one.
pub trait EvictOldest: Send + Sync {
    /// Removes and returns the oldest segment held here, if any. The caller accounts for it.
    fn evict_oldest(&self) -> Option<Segment>;
}

/// Producer side: admits segments within the budget.
#[derive(Clone)]
pub struct QueueWriter {
    tx: Sender<Segment>,
    rx: Receiver<Segment>,
    budget: u64,
    stats: Arc<Stats>,
    older: Arc<dyn EvictOldest>,
}

/// Consumer side, owned by the batcher.
pub struct QueueReader {
    pub rx: Receiver<Segment>,
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
            rx: rx.clone(),
            budget,
            stats,
            older,
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
    /// Queues a segment, dropping the oldest held segments if the budget requires it.
    pub fn push(&self, segment: Segment) -> Admission {
        let cost = segment.cost();
        let mut evicted = 0;
        while self.stats.bytes_held.load(Relaxed) + self.stats.body_bytes.load(Relaxed) + cost
            > self.budget
        {
            match self
                .older
                .evict_oldest()
                .or_else(|| self.rx.try_recv().ok())
            {
                Some(old) => {
                    self.drop_held(&old);
                    evicted += 1;
                }
                None => {
                    self.stats.spillover.fetch_add(1, Relaxed);
                    return Admission::Dropped;
                }
            }
        }
        self.stats.hold(1, cost);
        let mut segment = segment;
        loop {
            match self.tx.try_send(segment) {
                Ok(()) => return Admission::Queued { evicted },
                Err(TrySendError::Full(back)) => {
                    // The ring is full by count: the oldest queued segment makes way.
                    segment = back;
                    if let Ok(old) = self.rx.try_recv() {
                        self.drop_held(&old);
                        evicted += 1;
                    }
                }
                Err(TrySendError::Disconnected(back)) => {
                    // The batcher is gone (shutdown): this segment cannot be delivered.
                    self.stats.release(1, back.cost());
                    self.stats.dropped_at_shutdown.fetch_add(1, Relaxed);
                    return Admission::Dropped;
                }
            }
        }
    }

    fn drop_held(&self, old: &Segment) {
        self.stats.release(1, old.cost());
        self.stats.spillover.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::collections::VecDeque;

    #[derive(Default)]
    struct Older(Mutex<VecDeque<Segment>>);
    impl EvictOldest for Older {
        fn evict_oldest(&self) -> Option<Segment> {
            self.0.lock().pop_front()
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
        older.0.lock().extend([seg(100, 100), seg(100, 101)]);
        stats.hold(2, 2 * cost);
        let (w, r) = bounded(16, 4 * cost, stats.clone(), older.clone());
        assert_eq!(w.push(seg(100, 0)), Admission::Queued { evicted: 0 });
        assert_eq!(w.push(seg(100, 1)), Admission::Queued { evicted: 0 });
        // Full: the next pushes evict the batched ones first, then the ring's head.
        assert_eq!(w.push(seg(100, 2)), Admission::Queued { evicted: 1 });
        assert_eq!(older.0.lock().front().map(|s| s.bytes()[0]), Some(101));
        assert_eq!(w.push(seg(100, 3)), Admission::Queued { evicted: 1 });
        assert!(older.0.lock().is_empty());
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
        older.0.lock().extend([seg(100, 0), seg(100, 1)]);
        stats.hold(2, 2 * cost);
        stats.body_bytes.store(cost, Relaxed);
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
        stats.hold(1, 900); // in flight, not evictable
        let (w, _r) = bounded(16, 1000, stats.clone(), Arc::new(Older::default()));
        assert_eq!(w.push(seg(100, 1)), Admission::Dropped);
        let s = stats.snapshot();
        assert_eq!((s.spillover, s.segments_held, s.bytes_held), (1, 1, 900));
    }

    #[test]
    fn shared_copies_keep_each_body_exact_and_group_at_most_64_kib() {
        let bodies: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1000 + 97 * i as usize]).collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let mut got = Vec::new();
        Segment::copy_shared(&refs, |s| got.push(s));
        assert_eq!(got.len(), bodies.len());
        for (s, b) in got.iter().zip(&bodies) {
            assert_eq!(s.bytes(), &b[..]);
            assert_eq!(s.cost(), b.len() as u64 + SEGMENT_OVERHEAD);
        }
        // Groups: consecutive bodies share an allocation of at most 64 KiB.
        let mut groups: Vec<(*const Vec<u8>, usize)> = Vec::new();
        for s in &got {
            let p = Arc::as_ptr(&s.shared);
            match groups.last_mut() {
                Some((q, n)) if *q == p => *n += s.bytes().len(),
                _ => groups.push((p, s.bytes().len())),
            }
        }
        assert!(
            groups.len() > 1 && groups.len() < bodies.len(),
            "{}",
            groups.len()
        );
        assert!(groups.iter().all(|&(_, n)| n <= SHARED_ALLOCATION_BYTES));
        // A body of exactly the limit gets an allocation alone; nothing is empty.
        let big = vec![7u8; SHARED_ALLOCATION_BYTES];
        let mut n = 0;
        Segment::copy_shared(&[b"{}", &big, b"{}"], |s| {
            assert!(!s.bytes().is_empty());
            n += 1;
        });
        assert_eq!(n, 3);
        Segment::copy_shared(&[], |_| panic!("no bodies, no segments"));
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

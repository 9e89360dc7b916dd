//! Batching: segments in, batches of at most 50 out.
//!
//! A batch is closed when it holds [`MAX_BATCH_SEGMENTS`] documents or when its oldest segment has
//! waited [`FLUSH_INTERVAL`]. [`Batcher`] is pure: it is fed segments and the current time and says
//! when a batch is ready; the thread in [`run`] wires it to the queue and the backlog.

use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::budget::Charge;
use crate::queue::QueueReader;
use crate::segment::Segment;

/// PutTraceSegments accepts at most 50 documents per call.
pub const MAX_BATCH_SEGMENTS: usize = 50;

/// A segment waits at most this long for its batch to fill.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Segments uploaded together.
#[derive(Debug)]
pub struct Batch {
    /// The documents, in arrival order.
    pub segments: Vec<Segment>,
    /// What the documents are charged to the budget: it moves with them when the batch is split
    /// or a document evicted, and is released when the batch is delivered or dropped.
    charge: Charge,
    /// When the first segment joined.
    pub opened: Instant,
}

impl Batch {
    fn new(now: Instant) -> Self {
        Batch {
            segments: Vec::with_capacity(MAX_BATCH_SEGMENTS),
            charge: Charge::default(),
            opened: now,
        }
    }

    /// Sum of the documents' budget costs.
    pub fn cost(&self) -> u64 {
        self.charge.bytes()
    }

    /// Takes the batch's charge, to release it: its documents were delivered or dropped. The
    /// batch is then charged nothing, so a second release releases nothing.
    pub fn take_charge(&mut self) -> Charge {
        self.charge.take()
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// True when it holds no document.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Splits the batch at `at`: `self` keeps the first `at` documents, the rest are returned as
    /// a batch opened at the same time.
    pub fn split_off(&mut self, at: usize) -> Batch {
        let segments = self.segments.split_off(at.min(self.segments.len()));
        let charge = self.charge.split(&segments);
        Batch {
            segments,
            charge,
            opened: self.opened,
        }
    }

    /// Removes and returns the oldest document (used when the budget must shrink); its charge
    /// leaves with it.
    pub fn pop_oldest(&mut self) -> Option<Segment> {
        if self.segments.is_empty() {
            return None;
        }
        let s = self.segments.remove(0);
        let _leaves_with_it = self.charge.split(std::slice::from_ref(&s));
        Some(s)
    }
}

/// The batching state machine.
pub struct Batcher {
    open: Option<Batch>,
    max: usize,
    interval: Duration,
}

impl Default for Batcher {
    fn default() -> Self {
        Batcher::new(MAX_BATCH_SEGMENTS, FLUSH_INTERVAL)
    }
}

impl Batcher {
    /// A batcher with a size limit (≤ 50) and a flush interval.
    pub fn new(max: usize, interval: Duration) -> Self {
        Batcher {
            open: None,
            max: max.clamp(1, MAX_BATCH_SEGMENTS),
            interval,
        }
    }

    /// Adds a segment; returns the batch it completed, if any.
    pub fn push(&mut self, segment: Segment, now: Instant) -> Option<Batch> {
        let batch = self.open.get_or_insert_with(|| Batch::new(now));
        // The segment brings the charge it carried in the ring.
        batch.charge.add(&segment);
        batch.segments.push(segment);
        if batch.segments.len() >= self.max {
            return self.open.take();
        }
        None
    }

    /// When the open batch must be flushed, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|b| b.opened + self.interval)
    }

    /// Returns the open batch if its time has come.
    pub fn poll(&mut self, now: Instant) -> Option<Batch> {
        match self.deadline() {
            Some(d) if now >= d => self.open.take(),
            _ => None,
        }
    }

    /// Returns the open batch whatever its age (shutdown).
    pub fn flush(&mut self) -> Option<Batch> {
        self.open.take()
    }
}

/// Runs the batcher until every producer is gone and the queue is drained, handing each batch to
/// `out`. Idle, it sleeps in the queue's blocking receive.
pub fn run(queue: QueueReader, mut out: impl FnMut(Batch)) {
    let mut batcher = Batcher::default();
    loop {
        let received = match batcher.deadline() {
            Some(deadline) => queue.rx.recv_deadline(deadline),
            None => queue.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(segment) => {
                // One clock read per wake-up: what is waiting arrived within microseconds.
                let now = Instant::now();
                if let Some(b) = batcher.push(segment, now) {
                    out(b);
                }
                // Take what is already waiting without blocking again.
                while let Ok(segment) = queue.rx.try_recv() {
                    if let Some(b) = batcher.push(segment, now) {
                        out(b);
                    }
                }
                if let Some(b) = batcher.poll(Instant::now()) {
                    out(b);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(b) = batcher.poll(Instant::now()) {
                    out(b);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(b) = batcher.flush() {
                    out(b);
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(i: u32) -> Segment {
        Segment::new(format!("{{\"i\":{i}}}").as_bytes())
    }

    #[test]
    fn flushes_when_full() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        for i in 0..49 {
            assert!(b.push(seg(i), t0).is_none());
        }
        let full = b.push(seg(49), t0).expect("50th segment closes the batch");
        assert_eq!(full.len(), 50);
        assert_eq!(full.segments[0], seg(0));
        assert_eq!(
            full.cost(),
            full.segments.iter().map(Segment::cost).sum::<u64>()
        );
        assert!(b.deadline().is_none());
        assert!(b.push(seg(50), t0).is_none());
    }

    #[test]
    fn flushes_one_interval_after_the_first_segment() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        assert!(
            b.poll(t0 + Duration::from_secs(5)).is_none(),
            "nothing open"
        );
        b.push(seg(1), t0);
        b.push(seg(2), t0 + Duration::from_millis(900));
        assert_eq!(b.deadline(), Some(t0 + FLUSH_INTERVAL));
        assert!(b.poll(t0 + Duration::from_millis(999)).is_none());
        let batch = b.poll(t0 + FLUSH_INTERVAL).expect("due");
        assert_eq!(batch.len(), 2);
        assert!(b.poll(t0 + Duration::from_secs(10)).is_none());
    }

    #[test]
    fn pop_oldest_keeps_cost_right() {
        let t0 = Instant::now();
        let mut b = Batcher::new(3, FLUSH_INTERVAL);
        b.push(seg(1), t0);
        b.push(seg(22), t0);
        let mut batch = b.push(seg(333), t0).unwrap();
        assert_eq!(batch.pop_oldest(), Some(seg(1)));
        assert_eq!(batch.cost(), seg(22).cost() + seg(333).cost());
        assert_eq!(batch.pop_oldest(), Some(seg(22)));
        assert_eq!(batch.segments, vec![seg(333)]);
        assert_eq!(batch.cost(), seg(333).cost());
    }

    #[test]
    fn split_off_keeps_order_cost_and_age() {
        let t0 = Instant::now();
        let mut b = Batcher::new(3, FLUSH_INTERVAL);
        b.push(seg(1), t0);
        b.push(seg(22), t0);
        let mut head = b.push(seg(333), t0).unwrap();
        let tail = head.split_off(1);
        assert_eq!(head.segments, vec![seg(1)]);
        assert_eq!(head.cost(), seg(1).cost());
        assert_eq!(tail.segments, vec![seg(22), seg(333)]);
        assert_eq!(tail.cost(), seg(22).cost() + seg(333).cost());
        assert_eq!(tail.opened, head.opened);
        let mut h = head;
        assert!(h.split_off(5).is_empty());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn run_drains_everything_then_stops() {
        let stats = std::sync::Arc::new(crate::stats::Stats::default());
        struct NoOlder;
        impl crate::budget::EvictOldest for NoOlder {
            fn evict_oldest(&self, _: crate::budget::Stage) -> Option<Segment> {
                None
            }
        }
        let (w, r) = crate::queue::bounded(1000, 1 << 30, stats, std::sync::Arc::new(NoOlder));
        for i in 0..120 {
            w.push(seg(i));
        }
        drop(w);
        let mut sizes = vec![];
        run(r, |b| sizes.push(b.len()));
        assert_eq!(sizes, vec![50, 50, 20]);
    }
}

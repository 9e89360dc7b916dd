//! Batching: segments in, batches of at most 50 out.
//!
//! A batch is closed when it holds [`MAX_BATCH_SEGMENTS`] documents or when its oldest segment has
//! waited [`FLUSH_INTERVAL`]. [`Batcher`] is pure: it is fed segments and the current time and says
//! when a batch is ready; the thread in [`run`] wires it to the queue and the backlog.

use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TryRecvError};

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

/// Longest the batcher lets segments gather in the ring before taking them (see [`gather`]).
pub const MAX_GATHER: Duration = Duration::from_millis(20);

/// Shorter gathering is not worth a timer: the batcher waits on the ring instead.
const MIN_GATHER: Duration = Duration::from_micros(500);

/// A rate no sender reaches without the kernel dropping first: a gathering pause never lets this
/// rate fill more than a quarter of the ring, so even a sudden surge does not spill.
const SURGE_RATE: u64 = 250_000;

/// How long to let segments gather in the ring before the next look, given that the open batch
/// holds `open` segments, that the last look took `taken` segments, which arrived over
/// `elapsed`, that the open batch is due in `until_due`, and that the ring has `slots` slots.
///
/// Waiting on the ring wakes the batcher at every push, i.e. at every read of an ingest worker;
/// under light traffic a segment only needs taking when its batch is full or due. So with a
/// batch open and less than a batch taken per look, the batcher sleeps until, at the rate just
/// seen, the batch would be full, but never past its due time, never longer than
/// [`MAX_GATHER`], and never so long that [`SURGE_RATE`] would fill more than a quarter of the
/// ring. Zero (wait on the ring, whose next push wakes the batcher) with no batch open, when
/// nothing came since the last look (the producers paused or stopped), under heavy traffic, when
/// the batch is full within about one more look anyway, or when that leaves less than
/// [`MIN_GATHER`].
pub fn gather(
    open: usize,
    taken: u64,
    elapsed: Duration,
    until_due: Duration,
    slots: usize,
) -> Duration {
    if open == 0 || open >= MAX_BATCH_SEGMENTS || taken == 0 || taken >= MAX_BATCH_SEGMENTS as u64 {
        return Duration::ZERO;
    }
    let missing = (MAX_BATCH_SEGMENTS - open) as u128;
    let nanos = elapsed.as_nanos().saturating_mul(missing) / u128::from(taken);
    let fill = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    if fill < elapsed.saturating_mul(2) {
        // Full within about one more look: waiting on the ring costs no more wake-ups.
        return Duration::ZERO;
    }
    let surge = Duration::from_nanos(
        u64::try_from(slots as u128 / 4 * 1_000_000_000 / u128::from(SURGE_RATE))
            .unwrap_or(u64::MAX),
    );
    let wait = fill.min(MAX_GATHER).min(until_due).min(surge);
    if wait < MIN_GATHER {
        Duration::ZERO
    } else {
        wait
    }
}

/// Runs the batcher until every producer is gone and the queue is drained, handing each batch to
/// `out`. Idle, it sleeps in the queue's blocking receive; under light traffic it lets segments
/// gather between looks ([`gather`]).
pub fn run(queue: QueueReader, mut out: impl FnMut(Batch)) {
    let mut batcher = Batcher::default();
    let slots = queue.rx.capacity().unwrap_or(usize::MAX);
    let mut last_look = Instant::now();
    loop {
        let received = match batcher.deadline() {
            Some(deadline) => queue.rx.recv_deadline(deadline),
            None => queue.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(segment) => {
                // Woken by a producer's first push: let it finish pushing what it read (on a
                // shared core it was preempted), so that one look takes all of it.
                std::thread::yield_now();
                // One clock read per wake-up: what is waiting arrived within microseconds.
                let mut now = Instant::now();
                if let Some(b) = batcher.push(segment, now) {
                    out(b);
                }
                let mut taken = 1;
                loop {
                    // Take what is already waiting without blocking again.
                    let mut gone = false;
                    loop {
                        match queue.rx.try_recv() {
                            Ok(segment) => {
                                taken += 1;
                                if let Some(b) = batcher.push(segment, now) {
                                    out(b);
                                }
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                gone = true;
                                break;
                            }
                        }
                    }
                    if let Some(b) = batcher.poll(Instant::now()) {
                        out(b);
                    }
                    let open = batcher.open.as_ref().map_or(0, Batch::len);
                    let until_due = batcher
                        .deadline()
                        .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
                    let wait = gather(open, taken, now.duration_since(last_look), until_due, slots);
                    last_look = now;
                    if gone || wait.is_zero() {
                        break;
                    }
                    std::thread::sleep(wait);
                    now = Instant::now();
                    taken = 0;
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

    const MS: Duration = Duration::from_millis(1);
    const SLOTS: usize = 60_000;

    #[test]
    fn light_traffic_gathers_until_the_batch_would_be_full() {
        // 1 k/s: 5 segments in 5 ms, 10 open; 40 more take 40 ms, longer than the longest gathering.
        assert_eq!(gather(10, 5, 5 * MS, FLUSH_INTERVAL, SLOTS), MAX_GATHER);
        // 2 k/s, 20 open: the batch is full in 15 ms, three looks from now.
        assert_eq!(gather(20, 10, 5 * MS, FLUSH_INTERVAL, SLOTS), 15 * MS);
        // Within the due time.
        assert_eq!(gather(3, 2, 5 * MS, 7 * MS, SLOTS), 7 * MS);
    }

    #[test]
    fn no_open_batch_heavy_traffic_or_a_short_gathering_waits_on_the_ring() {
        assert_eq!(gather(0, 5, 5 * MS, FLUSH_INTERVAL, SLOTS), Duration::ZERO);
        assert_eq!(
            gather(10, MAX_BATCH_SEGMENTS as u64, 5 * MS, FLUSH_INTERVAL, SLOTS),
            Duration::ZERO
        );
        // Nothing came since the last look: the next push wakes the batcher.
        assert_eq!(gather(3, 0, 20 * MS, FLUSH_INTERVAL, SLOTS), Duration::ZERO);
        // 10 k/s read every 5 ms, 10 open: the next read fills the batch.
        assert_eq!(
            gather(10, 48, 5 * MS, FLUSH_INTERVAL, SLOTS),
            Duration::ZERO
        );
        // 1 k/s, 5 per look: with 35 open the batch is full in 15 ms; with 47 open, at the next look.
        assert_eq!(gather(35, 5, 5 * MS, FLUSH_INTERVAL, SLOTS), 15 * MS);
        assert_eq!(gather(47, 5, 5 * MS, FLUSH_INTERVAL, SLOTS), Duration::ZERO);
        // Due in 0.3 ms.
        assert_eq!(
            gather(3, 1, 5 * MS, Duration::from_micros(300), SLOTS),
            Duration::ZERO
        );
    }

    #[test]
    fn a_surge_during_the_gathering_fits_in_a_quarter_of_the_ring() {
        let wait = gather(10, 5, 5 * MS, FLUSH_INTERVAL, 4096);
        assert!(wait > 4 * MS && wait < MAX_GATHER, "{wait:?}");
        assert!(wait.as_secs_f64() * SURGE_RATE as f64 <= 1024.0);
        assert_eq!(gather(10, 5, 5 * MS, FLUSH_INTERVAL, 256), Duration::ZERO);
    }

    #[test]
    fn run_delivers_what_trickles_in_and_stops_when_the_producers_go() {
        let stats = std::sync::Arc::new(crate::stats::Stats::default());
        struct NoOlder;
        impl crate::budget::EvictOldest for NoOlder {
            fn evict_oldest(&self, _: crate::budget::Stage) -> Option<Segment> {
                None
            }
        }
        let (w, r) = crate::queue::bounded(1000, 1 << 30, stats, std::sync::Arc::new(NoOlder));
        let batcher = std::thread::spawn(move || {
            let mut sizes = vec![];
            run(r, |b| sizes.push(b.len()));
            sizes
        });
        // 120 segments at about 2 k/s: the batcher gathers between looks.
        for i in 0..120 {
            w.push(seg(i));
            std::thread::sleep(Duration::from_micros(500));
        }
        let t = Instant::now();
        drop(w);
        let sizes = batcher.join().unwrap();
        assert_eq!(sizes, vec![50, 50, 20]);
        assert!(t.elapsed() < FLUSH_INTERVAL / 2, "{:?}", t.elapsed());
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

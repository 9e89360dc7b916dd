//! Charging and release: what the budget holds right now, in bytes and segments.
//!
//! The [`Ledger`] owns the gauges; only this module writes them, and [`crate::stats::Stats`] (which
//! keeps the one ledger of the process) reads them for logs, telemetry and metrics. A segment is
//! charged when [`super::Budget::admit`] lets it in; its charge then travels with it: as the
//! segment itself while it is in the ring, as the [`Charge`] of the batch it joins afterwards. A
//! charge is released by consuming it ([`Ledger::release`], [`Ledger::release_segment`]), so the
//! same charge cannot be released twice; once the shutdown deadline gave up on everything held
//! ([`Ledger::abandon`]), [`Ledger::record_outcome`] tells uploaders not to release any more.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::{Mutex, MutexGuard};

use crate::segment::Segment;

/// The bytes and segments a holder of segments is charged for. Not `Clone`: it moves with the
/// segments it covers, and releasing consumes it.
#[must_use = "a charge is released once, with Ledger::release, or moves on with its segments"]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Charge {
    segments: u64,
    bytes: u64,
}

impl Charge {
    /// Segments covered.
    pub fn segments(&self) -> u64 {
        self.segments
    }

    /// Bytes charged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// `segment`, charged when it was queued, joins the segments this charge covers.
    pub fn add(&mut self, segment: &Segment) {
        self.segments += 1;
        self.bytes += segment.cost();
    }

    /// `segments`, covered by this charge, leave with their part of it.
    pub fn split(&mut self, segments: &[Segment]) -> Charge {
        let part = Charge {
            segments: segments.len() as u64,
            bytes: segments.iter().map(Segment::cost).sum(),
        };
        debug_assert!(part.segments <= self.segments && part.bytes <= self.bytes);
        self.segments -= part.segments;
        self.bytes -= part.bytes;
        part
    }

    /// The whole charge, leaving nothing behind (so a second release releases nothing).
    pub fn take(&mut self) -> Charge {
        std::mem::take(self)
    }

    /// A charge of any size, for tests that set up what is held.
    #[cfg(test)]
    pub(crate) fn raw(segments: u64, bytes: u64) -> Charge {
        Charge { segments, bytes }
    }
}

/// What the budget holds: the gauges admission compares with the limit.
#[derive(Default, Debug)]
pub struct Ledger {
    /// Bytes of segments held (queued, batched, in flight or awaiting retry).
    bytes: AtomicU64,
    /// Segments held.
    segments: AtomicU64,
    /// Bytes of large request bodies being encoded or sent ([`super::allowance`]).
    bodies: AtomicU64,
    /// True once the daemon gave up on what it still held at the shutdown deadline. Outcomes are
    /// recorded under this lock, so a late answer is never counted on top of the drop. A
    /// `parking_lot` lock: every uploader takes it for each batch and holds it while it logs the
    /// outcome, so under load it is contended on the per-batch path.
    settled: Mutex<bool>,
}

impl Ledger {
    /// Bytes of segments held, as charged.
    pub fn bytes_held(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Segments held.
    pub fn segments_held(&self) -> u64 {
        self.segments.load(Relaxed)
    }

    /// Bytes of large request bodies that exist right now.
    pub fn body_bytes(&self) -> u64 {
        self.bodies.load(Relaxed)
    }

    /// Everything counted against the limit: segments held and large bodies.
    pub fn charged(&self) -> u64 {
        self.bytes.load(Relaxed) + self.bodies.load(Relaxed)
    }

    /// Charges a segment being admitted (admission only; it then carries its charge).
    pub(super) fn hold(&self, segment: &Segment) {
        self.segments.fetch_add(1, Relaxed);
        self.bytes.fetch_add(segment.cost(), Relaxed);
    }

    /// Releases a segment delivered or dropped on its own (evicted, or undeliverable).
    pub fn release_segment(&self, segment: Segment) {
        self.segments.fetch_sub(1, Relaxed);
        self.bytes.fetch_sub(segment.cost(), Relaxed);
    }

    /// Releases what `charge` covers: its segments were delivered or dropped.
    pub fn release(&self, charge: Charge) {
        self.segments.fetch_sub(charge.segments, Relaxed);
        self.bytes.fetch_sub(charge.bytes, Relaxed);
    }

    /// Charges `bytes` of request body ([`super::allowance`] only).
    pub(super) fn hold_body(&self, bytes: u64) {
        self.bodies.fetch_add(bytes, Relaxed);
    }

    /// Releases `bytes` of request body ([`super::allowance`] only).
    pub(super) fn release_body(&self, bytes: u64) {
        self.bodies.fetch_sub(bytes, Relaxed);
    }

    /// Locks the right to record the outcome of held segments (and release them); `None` once
    /// everything still held was counted as dropped at shutdown ([`Ledger::abandon`]).
    pub fn record_outcome(&self) -> Option<MutexGuard<'_, bool>> {
        let guard = self.settled.lock();
        (!*guard).then_some(guard)
    }

    /// At the shutdown deadline: counts everything still held (queued, batched, awaiting retry, or
    /// in flight with an unknown outcome) into `dropped_at_shutdown`, releases it all, and returns
    /// how many segments that was. Outcomes recorded later are not counted again.
    pub fn abandon(&self, dropped_at_shutdown: &AtomicU64) -> u64 {
        let mut settled = self.settled.lock();
        *settled = true;
        let left = self.segments.swap(0, Relaxed);
        self.bytes.store(0, Relaxed);
        dropped_at_shutdown.fetch_add(left, Relaxed);
        left
    }

    /// Charges `segments` and `bytes` held somewhere a test does not model, and returns the charge.
    #[cfg(test)]
    pub(crate) fn hold_raw(&self, segments: u64, bytes: u64) -> Charge {
        self.segments.fetch_add(segments, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        Charge::raw(segments, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::SEGMENT_OVERHEAD;

    fn seg(n: usize) -> Segment {
        Segment::new(&vec![b'x'; n])
    }

    #[test]
    fn a_charge_moves_with_its_segments_and_is_released_once() {
        let ledger = Ledger::default();
        let segments = [seg(10), seg(20), seg(30)];
        let mut charge = Charge::default();
        for s in &segments {
            ledger.hold(s);
            charge.add(s);
        }
        let total = 60 + 3 * SEGMENT_OVERHEAD;
        assert_eq!((charge.segments(), charge.bytes()), (3, total));
        assert_eq!((ledger.segments_held(), ledger.bytes_held()), (3, total));
        // The last two leave (a batch split): the charge is divided, not copied.
        let tail = charge.split(&segments[1..]);
        assert_eq!(
            (tail.segments(), tail.bytes()),
            (2, 50 + 2 * SEGMENT_OVERHEAD)
        );
        assert_eq!(
            (charge.segments(), charge.bytes()),
            (1, 10 + SEGMENT_OVERHEAD)
        );
        ledger.release(tail);
        // Taking a charge leaves nothing behind: releasing "again" releases nothing.
        let head = charge.take();
        ledger.release(head);
        ledger.release(charge.take());
        assert_eq!((ledger.segments_held(), ledger.bytes_held()), (0, 0));
        assert_eq!(charge, Charge::default());
    }

    #[test]
    fn a_segment_on_its_own_is_released_by_value() {
        let ledger = Ledger::default();
        let s = seg(100);
        ledger.hold(&s);
        assert_eq!(ledger.charged(), 100 + SEGMENT_OVERHEAD);
        ledger.release_segment(s);
        assert_eq!((ledger.segments_held(), ledger.charged()), (0, 0));
    }

    #[test]
    fn abandoning_counts_what_is_held_once_and_stops_later_outcomes() {
        let ledger = Ledger::default();
        let dropped = AtomicU64::new(0);
        let in_flight = ledger.hold_raw(3, 300);
        assert!(ledger.record_outcome().is_some());
        assert_eq!(ledger.abandon(&dropped), 3);
        assert_eq!(dropped.load(Relaxed), 3);
        assert_eq!((ledger.segments_held(), ledger.bytes_held()), (0, 0));
        // A late answer for what was in flight must not be recorded (nor released) again.
        assert!(ledger.record_outcome().is_none());
        drop(in_flight);
        assert_eq!(ledger.abandon(&dropped), 0);
        assert_eq!(dropped.load(Relaxed), 3);
    }
}

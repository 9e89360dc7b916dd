//! Every counter of the daemon, in one place.
//!
//! Ingest, the queue, the uploader and shutdown all report here; log summaries, the shutdown line,
//! telemetry and metrics read from here, so they can never disagree. Counters are monotonic; gauges
//! (bytes and segments held) go up and down.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::ingest::datagram::Rejection;

/// Classes of failed calls to X-Ray, as PutTelemetryRecords' `BackendConnectionErrors` has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// The request or connection timed out.
    Timeout,
    /// The connection was refused.
    ConnectionRefused,
    /// X-Ray answered 4xx (including 429 throttling).
    Http4xx,
    /// X-Ray answered 5xx.
    Http5xx,
    /// The endpoint's host name did not resolve.
    UnknownHost,
    /// Anything else (reset, TLS, garbage answer, ...).
    Other,
}

impl BackendError {
    /// All classes, in counter order.
    pub const ALL: [BackendError; 6] = [
        BackendError::Timeout,
        BackendError::ConnectionRefused,
        BackendError::Http4xx,
        BackendError::Http5xx,
        BackendError::UnknownHost,
        BackendError::Other,
    ];

    /// Short machine name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendError::Timeout => "timeout",
            BackendError::ConnectionRefused => "connection_refused",
            BackendError::Http4xx => "http_4xx",
            BackendError::Http5xx => "http_5xx",
            BackendError::UnknownHost => "unknown_host",
            BackendError::Other => "other",
        }
    }
}

/// The daemon's counters and gauges. Shared as `Arc<Stats>`; all updates are relaxed atomics.
#[derive(Default, Debug)]
pub struct Stats {
    /// Non-empty datagrams received.
    pub received: AtomicU64,
    rejected: [AtomicU64; 4],
    /// Segments dropped to stay within the memory budget (oldest first).
    pub spillover: AtomicU64,
    /// Segments X-Ray accepted (2xx, not listed as unprocessed).
    pub sent: AtomicU64,
    /// Segments X-Ray returned in `UnprocessedTraceSegments`.
    pub unprocessed: AtomicU64,
    /// Segments dropped because X-Ray refused their batch with a non-retryable 4xx.
    pub rejected_by_xray: AtomicU64,
    /// Segments still held when the shutdown deadline passed.
    pub dropped_at_shutdown: AtomicU64,
    /// Upload attempts that will be retried.
    pub retries: AtomicU64,
    /// Batches X-Ray answered with 2xx.
    pub batches_sent: AtomicU64,
    backend_errors: [AtomicU64; 6],
    /// Bytes currently held (queued, batched, in flight or awaiting retry), as charged to the budget.
    pub bytes_held: AtomicU64,
    /// Segments currently held.
    pub segments_held: AtomicU64,
}

/// A plain copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub received: u64,
    pub rejected: [u64; 4],
    pub spillover: u64,
    pub sent: u64,
    pub unprocessed: u64,
    pub rejected_by_xray: u64,
    pub dropped_at_shutdown: u64,
    pub retries: u64,
    pub batches_sent: u64,
    pub backend_errors: [u64; 6],
    pub bytes_held: u64,
    pub segments_held: u64,
}

impl Stats {
    /// Counts rejected datagrams.
    pub fn add_rejected(&self, reason: Rejection, n: u64) {
        self.rejected[reason.index()].fetch_add(n, Relaxed);
    }

    /// Counts one failed call to X-Ray.
    pub fn add_backend_error(&self, class: BackendError) {
        self.backend_errors[class as usize].fetch_add(1, Relaxed);
    }

    /// Records that `bytes` in `segments` segments are now held.
    pub fn hold(&self, segments: u64, bytes: u64) {
        self.segments_held.fetch_add(segments, Relaxed);
        self.bytes_held.fetch_add(bytes, Relaxed);
    }

    /// Records that `bytes` in `segments` segments are no longer held.
    pub fn release(&self, segments: u64, bytes: u64) {
        self.segments_held.fetch_sub(segments, Relaxed);
        self.bytes_held.fetch_sub(bytes, Relaxed);
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            received: self.received.load(Relaxed),
            rejected: std::array::from_fn(|i| self.rejected[i].load(Relaxed)),
            spillover: self.spillover.load(Relaxed),
            sent: self.sent.load(Relaxed),
            unprocessed: self.unprocessed.load(Relaxed),
            rejected_by_xray: self.rejected_by_xray.load(Relaxed),
            dropped_at_shutdown: self.dropped_at_shutdown.load(Relaxed),
            retries: self.retries.load(Relaxed),
            batches_sent: self.batches_sent.load(Relaxed),
            backend_errors: std::array::from_fn(|i| self.backend_errors[i].load(Relaxed)),
            bytes_held: self.bytes_held.load(Relaxed),
            segments_held: self.segments_held.load(Relaxed),
        }
    }
}

impl Snapshot {
    /// All rejected datagrams, whatever the reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Rejections for one reason.
    pub fn rejected(&self, reason: Rejection) -> u64 {
        self.rejected[reason.index()]
    }

    /// Failed calls of one class.
    pub fn backend_errors(&self, class: BackendError) -> u64 {
        self.backend_errors[class as usize]
    }

    /// `key=value` pairs of every counter, for the shutdown line and test harnesses.
    pub fn to_kv_line(&self) -> String {
        use std::fmt::Write;
        let mut s = format!(
            "received={} rejected={}",
            self.received,
            self.rejected_total()
        );
        for r in Rejection::ALL {
            let _ = write!(s, " rejected_{}={}", r.as_str(), self.rejected(r));
        }
        let _ = write!(
            s,
            " spillover={} sent={} unprocessed={} rejected_by_xray={} dropped_at_shutdown={} retries={} batches_sent={}",
            self.spillover,
            self.sent,
            self.unprocessed,
            self.rejected_by_xray,
            self.dropped_at_shutdown,
            self.retries,
            self.batches_sent
        );
        for b in BackendError::ALL {
            let _ = write!(s, " backend_{}={}", b.as_str(), self.backend_errors(b));
        }
        let _ = write!(s, " segments_held={}", self.segments_held);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_land_in_their_own_buckets() {
        let s = Stats::default();
        s.add_rejected(Rejection::BadJson, 2);
        s.add_rejected(Rejection::TooLarge, 1);
        s.add_backend_error(BackendError::Http5xx);
        s.add_backend_error(BackendError::Http5xx);
        s.add_backend_error(BackendError::UnknownHost);
        s.hold(3, 300);
        s.release(1, 100);
        let snap = s.snapshot();
        assert_eq!(snap.rejected(Rejection::BadJson), 2);
        assert_eq!(snap.rejected(Rejection::BadHeader), 0);
        assert_eq!(snap.rejected_total(), 3);
        assert_eq!(snap.backend_errors(BackendError::Http5xx), 2);
        assert_eq!(snap.backend_errors(BackendError::UnknownHost), 1);
        assert_eq!(snap.backend_errors(BackendError::Timeout), 0);
        assert_eq!((snap.segments_held, snap.bytes_held), (2, 200));
        let line = snap.to_kv_line();
        assert!(line.starts_with("received=0 rejected=3 rejected_no_newline=0 rejected_bad_header=0 rejected_bad_json=2 rejected_too_large=1 "), "{line}");
        assert!(line.contains(" backend_http_5xx=2 "), "{line}");
        assert!(line.ends_with(" segments_held=2"), "{line}");
    }
}

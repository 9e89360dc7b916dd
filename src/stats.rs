//! Every counter of the daemon, in one place.
//!
//! Ingest, the queue, the uploader and shutdown all report here; log summaries, the shutdown line,
//! telemetry and metrics read from here, so they can never disagree. Counters are monotonic; gauges
//! (bytes and segments held) go up and down. The budget's gauges are its [`Ledger`], kept here so
//! that every stage reaches the same one; only the budget writes them.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::time::{Duration, Instant};

use std::sync::{Mutex, PoisonError};

use crate::budget::{Charge, Ledger};

/// The counters of datagrams rejected at ingest, one per reason (ingest maps its own rejection
/// reasons onto these: stats depends on no pipeline stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectedCounter {
    /// No newline between header and segment, or nothing after it.
    NoNewline,
    /// An unreadable or unsupported header.
    BadHeader,
    /// A segment that is not a JSON object.
    BadJson,
    /// A segment over the size limit (or truncated by the receive buffer).
    TooLarge,
}

impl RejectedCounter {
    /// All counters, in the order of logs, reports and metrics.
    pub const ALL: [RejectedCounter; 4] = [
        RejectedCounter::NoNewline,
        RejectedCounter::BadHeader,
        RejectedCounter::BadJson,
        RejectedCounter::TooLarge,
    ];

    /// Short machine name (metrics labels, log summaries, the shutdown line).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectedCounter::NoNewline => "no_newline",
            RejectedCounter::BadHeader => "bad_header",
            RejectedCounter::BadJson => "bad_json",
            RejectedCounter::TooLarge => "too_large",
        }
    }
}

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
    /// What the budget holds: bytes and segments (queued, batched, in flight or awaiting retry)
    /// and large request bodies.
    pub ledger: Ledger,
    /// Batches being delivered right now (between [`Stats::upload_started`] and
    /// [`Stats::upload_finished`]).
    pub batches_in_flight: AtomicU64,
    /// How many uploads may run at once (`--concurrency`; set by the daemon at start).
    pub upload_slots: AtomicU64,
    /// Credentials fetched or refreshed successfully, by any source (metrics only).
    pub credential_refreshes: AtomicU64,
    /// Credential fetches or refreshes that failed (metrics only).
    pub credential_refresh_errors: AtomicU64,
    /// True while UDP ingest runs (set by the daemon; read by `/readyz` and `/metrics`).
    pub ingest_running: AtomicBool,
    upload_latency: Histogram,
    /// [`mono_ms`] when the current streak of failed deliveries began; 0 while deliveries succeed.
    upload_failing_since: AtomicU64,
    /// Requests answered on the TCP port, by path label and status.
    proxy_requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

/// Upper bounds (seconds) of the upload latency histogram buckets; a last `+Inf` bucket follows.
pub const UPLOAD_LATENCY_BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket latency histogram of relaxed atomics.
#[derive(Default, Debug)]
struct Histogram {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; UPLOAD_LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

/// A copy of a histogram: cumulative counts per bound (last = `+Inf` = total), and the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)`; the last bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// Milliseconds on a process-wide monotonic clock, starting at 1 (0 means "never").
fn mono_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
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
    pub fn add_rejected(&self, reason: impl Into<RejectedCounter>, n: u64) {
        self.rejected[reason.into() as usize].fetch_add(n, Relaxed);
    }

    /// Counts one failed call to X-Ray.
    pub fn add_backend_error(&self, class: BackendError) {
        self.backend_errors[class as usize].fetch_add(1, Relaxed);
    }

    /// Records a failed delivery attempt that will be retried: its error class, then the retry
    /// (release; read first by [`Stats::snapshot`], as `sent`), so a reader that sees the retry
    /// also sees why.
    pub fn retrying(&self, class: BackendError) {
        self.add_backend_error(class);
        self.retries.fetch_add(1, Release);
    }

    /// Records a batch X-Ray accepted: the segments `charge` covers left the buffer,
    /// `unprocessed` of them were returned unprocessed, the rest were sent. `sent` is written last
    /// (release) and read first by [`Stats::snapshot`] (acquire), so a reader that sees a batch as
    /// sent also sees it out of the buffer and counted in `batches_sent`: a scrape never shows it
    /// both held and sent.
    pub fn delivered(&self, charge: Charge, unprocessed: u64) {
        let segments = charge.segments();
        let unprocessed = unprocessed.min(segments);
        self.ledger.release(charge);
        self.unprocessed.fetch_add(unprocessed, Relaxed);
        self.batches_sent.fetch_add(1, Relaxed);
        self.sent.fetch_add(segments - unprocessed, Release);
    }

    /// Records that a delivery attempt starts (a batch is in flight).
    pub fn upload_started(&self) {
        self.batches_in_flight.fetch_add(1, Relaxed);
    }

    /// Records the end of a delivery attempt: its latency, and whether it succeeded (a success
    /// ends a failure streak; a failure starts one unless one is running).
    pub fn upload_finished(&self, latency: Duration, delivered: bool) {
        let _ = self
            .batches_in_flight
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        let secs = latency.as_secs_f64();
        let i = UPLOAD_LATENCY_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(UPLOAD_LATENCY_BOUNDS.len());
        self.upload_latency.buckets[i].fetch_add(1, Relaxed);
        self.upload_latency
            .sum_micros
            .fetch_add(latency.as_micros() as u64, Relaxed);
        if delivered {
            self.upload_failing_since.store(0, Relaxed);
        } else {
            let _ = self
                .upload_failing_since
                .compare_exchange(0, mono_ms(), Relaxed, Relaxed);
        }
    }

    /// How long deliveries have been failing without a success in between; `None` while the
    /// last attempt succeeded (or none was made).
    pub fn upload_failing_for(&self) -> Option<Duration> {
        match self.upload_failing_since.load(Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(mono_ms().saturating_sub(since))),
        }
    }

    /// The upload latency histogram.
    pub fn upload_latency(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(UPLOAD_LATENCY_BOUNDS.len() + 1);
        for (i, b) in self.upload_latency.buckets.iter().enumerate() {
            cumulative += b.load(Relaxed);
            let bound = UPLOAD_LATENCY_BOUNDS
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        HistogramSnapshot {
            buckets,
            sum_seconds: self.upload_latency.sum_micros.load(Relaxed) as f64 / 1e6,
            count: cumulative,
        }
    }

    /// Counts one request answered on the TCP port. `path` is a fixed label (never the raw
    /// request path, to keep the number of series bounded).
    pub fn add_proxy_request(&self, path: &'static str, status: u16) {
        *self
            .proxy_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((path, status))
            .or_insert(0) += 1;
    }

    /// Requests answered on the TCP port: `((path label, status), count)`, sorted.
    pub fn proxy_requests(&self) -> Vec<((&'static str, u16), u64)> {
        self.proxy_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> Snapshot {
        // First: see `Stats::delivered` and `Stats::retrying`.
        let sent = self.sent.load(Acquire);
        let retries = self.retries.load(Acquire);
        Snapshot {
            received: self.received.load(Relaxed),
            rejected: std::array::from_fn(|i| self.rejected[i].load(Relaxed)),
            spillover: self.spillover.load(Relaxed),
            sent,
            unprocessed: self.unprocessed.load(Relaxed),
            rejected_by_xray: self.rejected_by_xray.load(Relaxed),
            dropped_at_shutdown: self.dropped_at_shutdown.load(Relaxed),
            retries,
            batches_sent: self.batches_sent.load(Relaxed),
            backend_errors: std::array::from_fn(|i| self.backend_errors[i].load(Relaxed)),
            bytes_held: self.ledger.bytes_held(),
            segments_held: self.ledger.segments_held(),
        }
    }
}

impl Snapshot {
    /// What the counters did between `earlier` and this snapshot (per-interval telemetry); gauges
    /// keep this snapshot's values.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        Snapshot {
            received: d(self.received, earlier.received),
            rejected: std::array::from_fn(|i| d(self.rejected[i], earlier.rejected[i])),
            spillover: d(self.spillover, earlier.spillover),
            sent: d(self.sent, earlier.sent),
            unprocessed: d(self.unprocessed, earlier.unprocessed),
            rejected_by_xray: d(self.rejected_by_xray, earlier.rejected_by_xray),
            dropped_at_shutdown: d(self.dropped_at_shutdown, earlier.dropped_at_shutdown),
            retries: d(self.retries, earlier.retries),
            batches_sent: d(self.batches_sent, earlier.batches_sent),
            backend_errors: std::array::from_fn(|i| {
                d(self.backend_errors[i], earlier.backend_errors[i])
            }),
            ..*self
        }
    }

    /// All rejected datagrams, whatever the reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Rejections for one reason.
    pub fn rejected(&self, reason: impl Into<RejectedCounter>) -> u64 {
        self.rejected[reason.into() as usize]
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
        for r in RejectedCounter::ALL {
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
        s.add_rejected(RejectedCounter::BadJson, 2);
        s.add_rejected(RejectedCounter::TooLarge, 1);
        s.add_backend_error(BackendError::Http5xx);
        s.add_backend_error(BackendError::Http5xx);
        s.add_backend_error(BackendError::UnknownHost);
        let _held = s.ledger.hold_raw(3, 300);
        s.ledger.release(Charge::raw(1, 100));
        let snap = s.snapshot();
        assert_eq!(snap.rejected(RejectedCounter::BadJson), 2);
        assert_eq!(snap.rejected(RejectedCounter::BadHeader), 0);
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

    #[test]
    fn a_delivered_batch_leaves_the_buffer_and_counts_once() {
        let s = Stats::default();
        let batch = s.ledger.hold_raw(50, 50_000);
        let _other = s.ledger.hold_raw(1, 900);
        s.delivered(batch, 2);
        let snap = s.snapshot();
        assert_eq!(
            (
                snap.sent,
                snap.unprocessed,
                snap.batches_sent,
                snap.segments_held,
                snap.bytes_held
            ),
            (48, 2, 1, 1, 900)
        );
        // More unprocessed than the batch held cannot make `sent` wrap.
        let batch = s.ledger.hold_raw(3, 30);
        s.delivered(batch, 7);
        let snap = s.snapshot();
        assert_eq!((snap.sent, snap.unprocessed, snap.batches_sent), (48, 5, 2));
    }

    #[test]
    fn a_retry_is_counted_with_its_cause() {
        let s = Stats::default();
        s.retrying(BackendError::Timeout);
        s.retrying(BackendError::Http5xx);
        s.retrying(BackendError::Http5xx);
        let snap = s.snapshot();
        assert_eq!(
            (
                snap.retries,
                snap.backend_errors(BackendError::Timeout),
                snap.backend_errors(BackendError::Http5xx),
                snap.sent
            ),
            (3, 1, 2, 0)
        );
    }

    #[test]
    fn upload_latency_in_flight_and_failure_streak() {
        let s = Stats::default();
        assert_eq!(s.upload_failing_for(), None);
        s.upload_started();
        s.upload_started();
        assert_eq!(s.batches_in_flight.load(Relaxed), 2);
        s.upload_finished(Duration::from_millis(3), false);
        let first = s.upload_failing_for().expect("failing");
        std::thread::sleep(Duration::from_millis(20));
        s.upload_started();
        s.upload_finished(Duration::from_millis(40), false);
        assert!(s.upload_failing_for().unwrap() >= first + Duration::from_millis(15));
        s.upload_finished(Duration::from_secs(60), true);
        assert_eq!(s.upload_failing_for(), None);
        assert_eq!(s.batches_in_flight.load(Relaxed), 0);
        let h = s.upload_latency();
        assert_eq!(h.count, 3);
        assert_eq!(h.buckets.len(), UPLOAD_LATENCY_BOUNDS.len() + 1);
        assert_eq!(h.buckets[0], (0.005, 1));
        assert_eq!(h.buckets[3], (0.05, 2));
        assert_eq!(h.buckets[11], (30.0, 2));
        assert_eq!(h.buckets[12], (f64::INFINITY, 3));
        assert!((h.sum_seconds - 60.043).abs() < 1e-9, "{}", h.sum_seconds);
    }

    #[test]
    fn proxy_requests_by_path_and_status() {
        let s = Stats::default();
        s.add_proxy_request("/SamplingTargets", 200);
        s.add_proxy_request("/GetSamplingRules", 200);
        s.add_proxy_request("/SamplingTargets", 200);
        s.add_proxy_request("/SamplingTargets", 502);
        assert_eq!(
            s.proxy_requests(),
            vec![
                (("/GetSamplingRules", 200), 1),
                (("/SamplingTargets", 200), 2),
                (("/SamplingTargets", 502), 1)
            ]
        );
    }
}

//! Upload: uploader threads take batches from the backlog and deliver them through a [`Sink`].
//!
//! Each thread owns one request buffer and loops: take a batch, deliver it, account for the result.
//! Retryable failures go back to the backlog with a backoff; everything held stays within the budget.
//! A batch refused as malformed is sent again in halves until the documents X-Ray cannot read are
//! alone; only those are dropped, each logged by trace and segment id.
//!
//! The request body is the batch once more, escaped (up to twice its size, more for control
//! bytes): 50 segments of 60 KB would make a 3 to 6.5 MB body per uploader. So a batch whose body
//! would exceed [`MAX_BODY`] goes in several requests; large bodies share the budget's fixed
//! [`BODY_ALLOWANCE`] (uploaders wait for room, one body always may go) and are charged to the
//! budget while they exist; an uploader gives its buffer back after a large request; and large
//! buffers come straight from the kernel and return to it (see [`tune_allocator`]). Batches of
//! small segments never touch any of this.

pub mod backlog;
pub mod retry;
pub mod sink;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Once};

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use backlog::{Backlog, Pending};
use retry::{Backoff, Jitter};
use sink::{Delivery, Sink};

use crate::budget::{BODY_ALLOWANCE, BODY_ALLOWANCE_BYTES};
use crate::log::Throttle;
use crate::stats::Stats;
use crate::xray::segments::segment_ids;

/// Everything an uploader thread needs.
#[derive(Clone)]
pub struct Uploader {
    pub backlog: Arc<Backlog>,
    pub sink: Arc<dyn Sink>,
    pub stats: Arc<Stats>,
    pub backoff: Backoff,
    pub failures_logged: Arc<Throttle>,
}

impl Uploader {
    /// Runs until the backlog is closed and drained.
    pub fn run(&self, salt: u64) {
        tune_allocator();
        let mut scratch = Vec::with_capacity(SCRATCH_CAPACITY);
        let mut jitter = Jitter::new(salt);
        let mut freed = 0;
        while let Some(pending) = self.backlog.take() {
            freed += pending.batch.cost();
            self.attempt(pending, &mut scratch, &mut jitter);
            // Once much has been freed and the work is done, give the memory back.
            if freed > TRIM_AFTER_BYTES && self.backlog.is_empty() {
                release_free_memory();
                freed = 0;
            }
        }
    }

    /// Keeps the first documents of a large batch whose body fits in [`MAX_BODY`] (at least one)
    /// and puts the rest back to go next, in one or more requests of their own.
    fn send_rest_later(&self, p: &mut Pending) {
        let mut cost = 0;
        let keep = p
            .batch
            .segments
            .iter()
            .take_while(|s| {
                cost += s.cost();
                body_estimate(cost) <= MAX_BODY
            })
            .count()
            .max(1);
        if keep < p.batch.len() {
            let rest = p.batch.split_off(keep);
            self.backlog.put_back(Pending {
                batch: rest,
                attempts: p.attempts,
                not_before: p.not_before,
            });
        }
    }

    fn attempt(&self, mut p: Pending, scratch: &mut Vec<u8>, jitter: &mut Jitter) {
        let started = Instant::now();
        if body_estimate(p.batch.cost()) > MAX_BODY {
            self.send_rest_later(&mut p);
        }
        let n = p.batch.len() as u64;
        self.stats.upload_started();
        let body = body_estimate(p.batch.cost());
        let permit = (body > SMALL_BODY).then(|| BODY_ALLOWANCE.acquire(body, &self.stats.ledger));
        let delivery = self.sink.deliver(&p.batch, scratch);
        if scratch.capacity() > SMALL_BODY as usize {
            *scratch = Vec::with_capacity(SCRATCH_CAPACITY);
        }
        drop(permit);
        let delivered = matches!(delivery, Delivery::Delivered { .. });
        self.stats.upload_finished(started.elapsed(), delivered);
        let Some(_recording) = self.stats.ledger.record_outcome() else {
            // The shutdown deadline passed during this call: already counted as dropped.
            return;
        };
        match delivery {
            Delivery::Delivered { unprocessed } => {
                let secs = started.elapsed().as_secs_f64();
                let m = (unprocessed.len() as u64).min(n);
                self.stats.delivered(p.batch.take_charge(), m);
                if m == 0 {
                    match self.sink.local_destination() {
                        None => crate::info!(
                            "Successfully sent batch of {n} segments ({secs:.3} seconds)"
                        ),
                        Some(to) => crate::info!(
                            "Wrote batch of {n} segments to the local sink ({to}) ({secs:.3} seconds)"
                        ),
                    }
                } else {
                    crate::warn!(
                        "Sent batch of {n} segments but had {m} Unprocessed segments ({secs:.3} seconds)"
                    );
                    for u in &unprocessed {
                        let trace_id = p
                            .batch
                            .segments
                            .iter()
                            .map(|s| segment_ids(s.bytes()))
                            .find(|(_, id)| *id == u.id)
                            .map(|(t, _)| t)
                            .unwrap_or_default();
                        crate::error!(
                            "Unprocessed segment: trace id {trace_id}, segment id {}: {} {}",
                            u.id,
                            u.error_code,
                            u.message
                        );
                    }
                }
                self.backlog.finished(true);
            }
            Delivery::Retry { class, detail } => {
                self.stats.retrying(class);
                p.attempts += 1;
                let now = Instant::now();
                // Shutting down: the drain's deadline is near, a long backoff would outlast it.
                let delay = if self.backlog.hurrying() {
                    self.backoff.delay(1, jitter.draw()).min(DRAIN_RETRY_DELAY)
                } else {
                    self.backoff.delay(p.attempts, jitter.draw())
                };
                let gate = self
                    .backoff
                    .delay(self.backlog.failure_streak() + 1, jitter.draw());
                if let Some(suppressed) = self.failures_logged.allow(now) {
                    crate::warn!(
                        "Sending batch of {n} segments failed ({detail}); retry {} in {:.3} seconds{}",
                        p.attempts,
                        delay.as_secs_f64(),
                        suffix(suppressed)
                    );
                }
                p.not_before = now + delay;
                self.backlog.retry_later(p, now + gate);
            }
            Delivery::Malformed { class, detail } if n > 1 => {
                // Halves go again at once, until the documents X-Ray cannot read are alone.
                self.stats.add_backend_error(class);
                let half = p.batch.split_off(p.batch.len() / 2);
                crate::warn!(
                    "X-Ray refused a batch of {n} segments ({detail}); sending it again in halves to find the document at fault"
                );
                self.backlog.put_back(Pending {
                    batch: half,
                    attempts: p.attempts,
                    not_before: p.not_before,
                });
                self.backlog.put_back(p);
                self.backlog.finished(false);
            }
            Delivery::Malformed { class, detail } => {
                self.stats.add_backend_error(class);
                self.stats.rejected_by_xray.fetch_add(n, Relaxed);
                for s in &p.batch.segments {
                    let (trace_id, id) = segment_ids(s.bytes());
                    crate::error!(
                        "Dropping segment: trace id {trace_id}, segment id {id}: X-Ray refused it ({detail})"
                    );
                }
                self.stats.ledger.release(p.batch.take_charge());
                self.backlog.finished(false);
            }
            Delivery::Rejected { class, detail } => {
                self.stats.add_backend_error(class);
                self.stats.rejected_by_xray.fetch_add(n, Relaxed);
                crate::error!("Dropping batch of {n} segments: X-Ray refused it ({detail})");
                self.stats.ledger.release(p.batch.take_charge());
                self.backlog.finished(false);
            }
        }
    }
}

/// Capacity of an uploader's request buffer: a batch of small segments never grows it.
pub const SCRATCH_CAPACITY: usize = 64 * 1024;

/// Bodies up to this size are encoded without asking the [`BODY_ALLOWANCE`]; a buffer grown past
/// it is given back after the request.
pub const SMALL_BODY: u64 = 256 * 1024;

/// Largest body a batch is sent in: a larger batch goes in several requests.
pub const MAX_BODY: u64 = 512 * 1024;

// The budget's allowance holds four bodies of the largest size sent.
const _: () = assert!(BODY_ALLOWANCE_BYTES == 4 * MAX_BODY);

/// The size of a batch's body, from its cost: escaping at most doubles the usual segment (quotes
/// and backslashes; control bytes, six times, are rare), and the cost's per-segment overhead
/// covers the JSON around each document.
fn body_estimate(cost: u64) -> u64 {
    2 * cost
}

/// With the C library's allocator: allocations from 256 KiB up (request bodies) are mapped from
/// the kernel and unmapped when freed. By default glibc raises that threshold to the largest
/// block freed so far, after which multi-megabyte bodies come from per-thread arenas that keep
/// the memory after the request: with eight uploaders, tens of megabytes above the budget that
/// were never given back.
pub fn tune_allocator() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only sets an allocator parameter; it is thread-safe and takes no
        // pointers.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, SMALL_BODY as libc::c_int);
        }
    });
}

/// Bytes of segments an uploader frees before it returns free memory to the kernel, when it
/// finds nothing left to do.
pub const TRIM_AFTER_BYTES: u64 = 8 * 1024 * 1024;

/// Least time between two returns of free memory to the kernel: under steady load the backlog is
/// often empty for a moment, and memory given back is soon faulted in again.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Hands the allocator's free pages back to the kernel, at most once per [`TRIM_INTERVAL`].
/// Segments freed by uploaders return to the arena of the thread that received them, where the C
/// library keeps them (it only trims the top of a heap): after an outage, RSS stayed at the size
/// of the whole budget with nothing held.
fn release_free_memory() {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let now = Instant::now();
    {
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| now.duration_since(t) < TRIM_INTERVAL) {
            return;
        }
        *last = Some(now);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn suffix(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} similar failures not logged)")
    }
}

/// Longest wait before retrying a batch once shutdown has begun: the drain has a deadline, and a
/// short pause still keeps a failing X-Ray from being hammered by every uploader at once.
pub const DRAIN_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Default interval between repeated failure lines.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

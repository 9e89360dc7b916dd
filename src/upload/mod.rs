//! Upload: uploader threads take batches from the backlog and deliver them through a [`Sink`].
//!
//! Each thread owns one request buffer and loops: take a batch, deliver it, account for the result.
//! Retryable failures go back to the backlog with a backoff; everything held stays within the budget.

pub mod backlog;
pub mod client;
pub mod dns;
pub mod encode;
pub mod retry;
pub mod sink;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use backlog::{Backlog, Pending};
use retry::{Backoff, Jitter};
use sink::{Delivery, Sink};

use crate::log::Throttle;
use crate::stats::Stats;

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
        let mut scratch = Vec::with_capacity(64 * 1024);
        let mut jitter = Jitter::new(salt);
        while let Some(pending) = self.backlog.take() {
            self.attempt(pending, &mut scratch, &mut jitter);
        }
    }

    fn attempt(&self, mut p: Pending, scratch: &mut Vec<u8>, jitter: &mut Jitter) {
        let started = Instant::now();
        let n = p.batch.len() as u64;
        self.stats.upload_started();
        let delivery = self.sink.deliver(&p.batch, scratch);
        let delivered = matches!(delivery, Delivery::Delivered { .. });
        self.stats.upload_finished(started.elapsed(), delivered);
        let Some(_recording) = self.stats.record_outcome() else {
            // The shutdown deadline passed during this call: already counted as dropped.
            return;
        };
        match delivery {
            Delivery::Delivered { unprocessed } => {
                let secs = started.elapsed().as_secs_f64();
                let m = (unprocessed.len() as u64).min(n);
                self.stats.delivered(n, m, p.batch.cost);
                if m == 0 {
                    crate::info!("Successfully sent batch of {n} segments ({secs:.3} seconds)");
                } else {
                    crate::warn!(
                        "Sent batch of {n} segments but had {m} Unprocessed segments ({secs:.3} seconds)"
                    );
                    for u in &unprocessed {
                        let trace_id = p
                            .batch
                            .segments
                            .iter()
                            .map(|s| encode::segment_ids(s.bytes()))
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
            Delivery::Rejected { class, detail } => {
                self.stats.add_backend_error(class);
                self.stats.rejected_by_xray.fetch_add(n, Relaxed);
                crate::error!("Dropping batch of {n} segments: X-Ray refused it ({detail})");
                self.stats.release(n, p.batch.cost);
                self.backlog.finished(false);
            }
        }
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

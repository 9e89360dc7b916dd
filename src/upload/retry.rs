//! The retry schedule: capped exponential backoff with jitter, and which failures are retried.

use std::time::Duration;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1 = first retry), with "equal jitter": half fixed,
    /// half random, so retries spread out but never come back sooner than half the step.
    /// `random` is a uniformly distributed number.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        let half = step / 2;
        let jitter_ns = (half.as_nanos() as u64).saturating_add(1);
        half + Duration::from_nanos(random % jitter_ns)
    }
}

/// Is an HTTP answer with this status worth retrying? Throttling and server errors are; other
/// client errors would fail again.
pub fn status_is_retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

/// A small fast PRNG (xorshift64*) for jitter; not for anything secret.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock and a per-thread value.
    pub fn new(salt: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        Jitter((t ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    /// Next random number.
    pub fn draw(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_bounds_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for (attempt, step_ms) in [
            (1, 100u64),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1600),
            (6, 2000),
            (40, 2000),
        ] {
            let lo = b.delay(attempt, 0);
            let hi = b.delay(attempt, u64::MAX - 1);
            assert_eq!(lo, Duration::from_millis(step_ms / 2), "attempt {attempt}");
            assert!(
                hi <= Duration::from_millis(step_ms),
                "attempt {attempt}: {hi:?}"
            );
            assert!(hi >= lo);
        }
        assert_eq!(b.delay(0, 0), Duration::from_millis(50));
    }

    #[test]
    fn jitter_spreads_delays() {
        let b = Backoff::default();
        let mut j = Jitter::new(7);
        let delays: std::collections::HashSet<_> = (0..50).map(|_| b.delay(3, j.draw())).collect();
        assert!(
            delays.len() > 40,
            "jitter should vary delays, got {}",
            delays.len()
        );
    }

    #[test]
    fn which_statuses_retry() {
        for s in [429, 500, 502, 503, 504] {
            assert!(status_is_retryable(s), "{s}");
        }
        for s in [400, 401, 403, 404, 413] {
            assert!(!status_is_retryable(s), "{s}");
        }
    }
}

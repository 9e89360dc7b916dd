//! Rate pacing: how many datagrams are due after some time, and how long to sleep for the next
//! slice. Pure arithmetic, so the sender's schedule is testable without a clock.

use std::time::Duration;

/// Datagrams due `elapsed` after the start at `rate` per second. A rate of 0 means unpaced: all of
/// them are due at once.
pub fn due(rate: u64, elapsed: Duration) -> u64 {
    if rate == 0 {
        return u64::MAX;
    }
    let n = u128::from(rate) * elapsed.as_nanos() / 1_000_000_000;
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// How many datagrams to send now: what is due and not yet sent, at most `max_burst`, and never
/// beyond `total` (the step's datagram count, if it has one).
pub fn burst(due: u64, sent: u64, max_burst: u64, total: Option<u64>) -> u64 {
    let mut n = due.saturating_sub(sent).min(max_burst);
    if let Some(t) = total {
        n = n.min(t.saturating_sub(sent));
    }
    n
}

/// The time (since the start) at which datagram number `n` (counting from 1) becomes due.
pub fn due_at(rate: u64, n: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let nanos = (u128::from(n) * 1_000_000_000).div_ceil(u128::from(rate));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Datagrams sent together per wake-up: about one millisecond's worth, at least 1 and at most
/// `max_burst`. Keeps syscalls batched at high rates without bunching low rates.
pub fn slice(rate: u64, max_burst: u64) -> u64 {
    if rate == 0 {
        return max_burst.max(1);
    }
    (rate / 1000).clamp(1, max_burst.max(1))
}

/// Datagrams of one send call of the even load: at most `rate/4000` (at least 1), so that a paced
/// load is spread over at least 4,000 calls a second; `max` when unpaced.
pub fn even_slice(rate: u64, max: u64) -> u64 {
    if rate == 0 {
        return max.max(1);
    }
    (rate / 4000).max(1)
}

/// Datagrams a step sends: `count` if given, else `rate × duration` (None when unpaced and
/// time-bound: it sends until the time is up).
pub fn step_total(rate: u64, duration: Duration, count: Option<u64>) -> Option<u64> {
    match count {
        Some(c) => Some(c),
        None if rate == 0 => None,
        None => Some(due(rate, duration)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_grows_linearly_and_unpaced_is_unbounded() {
        assert_eq!(due(100_000, Duration::ZERO), 0);
        assert_eq!(due(100_000, Duration::from_millis(1)), 100);
        assert_eq!(due(100_000, Duration::from_secs(5)), 500_000);
        assert_eq!(due(3, Duration::from_millis(999)), 2);
        assert_eq!(due(0, Duration::from_secs(1)), u64::MAX);
    }

    #[test]
    fn burst_is_capped_by_batch_and_total() {
        assert_eq!(burst(500, 100, 64, None), 64);
        assert_eq!(burst(120, 100, 64, None), 20);
        assert_eq!(burst(100, 120, 64, None), 0);
        assert_eq!(burst(u64::MAX, 990, 64, Some(1000)), 10);
        assert_eq!(burst(2000, 1000, 64, Some(1000)), 0);
    }

    #[test]
    fn due_at_inverts_due() {
        for rate in [1, 7, 1000, 250_000] {
            for n in [1, 2, 10, 12_345] {
                let t = due_at(rate, n);
                assert!(due(rate, t) >= n, "rate {rate} n {n}");
                assert!(
                    due(rate, t - Duration::from_nanos(1)) < n,
                    "rate {rate} n {n}"
                );
            }
        }
        assert_eq!(due_at(0, 5), Duration::ZERO);
    }

    #[test]
    fn slices_are_about_a_millisecond() {
        assert_eq!(slice(300_000, 512), 300);
        assert_eq!(slice(10_000, 512), 10);
        assert_eq!(slice(500, 512), 1);
        assert_eq!(slice(10_000_000, 512), 512);
        assert_eq!(slice(0, 512), 512);
    }

    #[test]
    fn even_slices_spread_a_second_over_4000_calls() {
        assert_eq!(even_slice(1_000, 64), 1);
        assert_eq!(even_slice(10_000, 64), 2);
        assert_eq!(even_slice(100_000, 64), 25);
        assert_eq!(even_slice(1_000_000, 64), 250);
        assert_eq!(even_slice(0, 64), 64);
    }

    #[test]
    fn step_totals() {
        assert_eq!(
            step_total(10_000, Duration::from_secs(5), None),
            Some(50_000)
        );
        assert_eq!(
            step_total(5_000, Duration::from_secs(5), Some(20_000)),
            Some(20_000)
        );
        assert_eq!(step_total(0, Duration::from_secs(5), None), None);
    }
}

//! Waiting for conditions, never for time: polls of a probe with a deadline ([`poll`],
//! [`poll_until`]) and of a file's contents ([`wait_for_file`]), for states reached by another
//! process that has no way to wake the test.

use std::time::{Duration, Instant};

/// How often a probe is tried.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Tries `probe` every 20 ms until it returns `Some` (that value) or `timeout` passes (`None`).
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(PROBE_INTERVAL.min(deadline - now));
    }
}

/// Like [`poll`], but panics with `what()` after `timeout`. For states the daemon reaches at a
/// moment of its own.
pub fn poll_until<T>(
    timeout: Duration,
    what: impl FnOnce() -> String,
    probe: impl FnMut() -> Option<T>,
) -> T {
    poll(timeout, probe).unwrap_or_else(|| panic!("not within {timeout:?}: {}", what()))
}

/// Polls the file at `path` (10 s at most) until `pred` holds for its text, and returns it;
/// panics with `what`, the path and the text otherwise.
pub fn wait_for_file(path: &str, pred: impl Fn(&str) -> bool, what: &str) -> String {
    let mut last = String::new();
    poll(Duration::from_secs(10), || {
        last = std::fs::read_to_string(path).unwrap_or_default();
        pred(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("{what}: {path}: {last}"))
}

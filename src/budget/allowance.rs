//! The large-body allowance: request bodies larger than a small one share a fixed number of bytes,
//! charged to the budget beside the segments they are made of.
//!
//! A request body is a batch once more, escaped (up to twice its size): without a bound, every
//! uploader could hold several megabytes outside the budget. Uploaders ask for room before they
//! encode a large body and wait while the bodies in use leave none; one body always may go, however
//! large, so nothing waits forever.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::Ledger;

/// Most bytes of large request bodies encoded or in flight at once, across all uploaders: four
/// requests of [`crate::upload::MAX_BODY`].
pub const BODY_ALLOWANCE_BYTES: u64 = 2 * 1024 * 1024;

/// The allowance every uploader of the process shares.
pub static BODY_ALLOWANCE: BodyAllowance = BodyAllowance::new(BODY_ALLOWANCE_BYTES);

/// Bytes of request bodies that may exist at once: a counting semaphore in bytes. A `std` lock:
/// only bodies larger than [`crate::upload::SMALL_BODY`] ask for it, a few per second at most.
pub struct BodyAllowance {
    limit: u64,
    in_use: Mutex<u64>,
    freed: Condvar,
}

impl BodyAllowance {
    /// An allowance of `limit` bytes.
    pub const fn new(limit: u64) -> Self {
        BodyAllowance {
            limit,
            in_use: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// The bytes granted, whatever a panicking holder left behind (a count stays a count).
    fn lock(&self) -> MutexGuard<'_, u64> {
        self.in_use.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `bytes` fit beside the bodies in use, or none is in use (a body larger than
    /// the whole allowance goes alone rather than never). The bytes are charged to `ledger` until
    /// the permit is dropped.
    pub fn acquire<'a>(&'a self, bytes: u64, ledger: &'a Ledger) -> BodyPermit<'a> {
        let mut in_use = self.lock();
        while *in_use > 0 && *in_use + bytes > self.limit {
            in_use = self
                .freed
                .wait(in_use)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *in_use += bytes;
        ledger.hold_body(bytes);
        BodyPermit {
            allowance: self,
            ledger,
            bytes,
        }
    }

    /// Bytes currently granted.
    pub fn in_use(&self) -> u64 {
        *self.lock()
    }
}

/// Room for one body; given back (and released from the budget) when dropped.
pub struct BodyPermit<'a> {
    allowance: &'a BodyAllowance,
    ledger: &'a Ledger,
    bytes: u64,
}

impl Drop for BodyPermit<'_> {
    fn drop(&mut self) {
        self.ledger.release_body(self.bytes);
        *self.allowance.lock() -= self.bytes;
        self.allowance.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn body_allowance_lets_bodies_in_while_they_fit_and_one_alone_always() {
        let a = Arc::new(BodyAllowance::new(100));
        let ledger = Arc::new(Ledger::default());
        let first = a.acquire(60, &ledger);
        let second = a.acquire(40, &ledger);
        assert_eq!(a.in_use(), 100);
        assert_eq!(ledger.body_bytes(), 100);
        // A third must wait until room is given back.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (a2, l2) = (a.clone(), ledger.clone());
        let waiter = std::thread::spawn(move || {
            let p = a2.acquire(50, &l2);
            tx.send(()).unwrap();
            drop(p);
        });
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        drop(first);
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        waiter.join().unwrap();
        drop(second);
        assert_eq!(a.in_use(), 0);
        // Larger than the allowance: goes when nothing else is in use.
        let huge = a.acquire(1000, &ledger);
        assert_eq!(a.in_use(), 1000);
        drop(huge);
        assert_eq!(a.in_use(), 0);
        assert_eq!(ledger.body_bytes(), 0);
    }

    #[test]
    fn bodies_are_charged_beside_held_segments() {
        let a = BodyAllowance::new(1000);
        let ledger = Ledger::default();
        let segments = ledger.hold_raw(2, 300);
        let body = a.acquire(600, &ledger);
        assert_eq!(
            (ledger.bytes_held(), ledger.body_bytes(), ledger.charged()),
            (300, 600, 900)
        );
        drop(body);
        ledger.release(segments);
        assert_eq!(ledger.charged(), 0);
    }
}

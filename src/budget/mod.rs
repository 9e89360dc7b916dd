//! The memory budget: every byte of segment data the daemon holds, and the large request bodies
//! made from it, counted against one limit (`-m`).
//!
//! **The guarantee.** Memory held is the budget plus a fixed overhead, whatever the traffic: the
//! ring's slots, one request buffer per uploader, the TCP server's pool and the code itself do not
//! grow with the data (README states the measured bound).
//!
//! **What counts.** A segment costs its body plus [`SEGMENT_OVERHEAD`] (allocation bookkeeping and
//! its ring slot), charged once when it is queued and released once when it is delivered or
//! dropped, wherever it is in between: in the ring, in the batcher's open batch, in a batch waiting
//! for an uploader or for a retry, or in flight. Request bodies larger than a small one are charged
//! beside it while they exist ([`allowance`]): the same bytes, escaped, a second time.
//!
//! **Eviction.** A segment that does not fit makes room by dropping the oldest data first, counted
//! as spillover: batches awaiting a retry, then batches awaiting their first upload, then the
//! ring's head ([`EVICTION_ORDER`]). The open batch and batches in flight are not evictable; when
//! nothing else is left, the newcomer is dropped instead.
//!
//! One concern per file: [`admission`] decides what may be held and what is evicted for it,
//! [`ledger`] charges and releases (and is what [`crate::stats::Stats`] reports), [`allowance`]
//! bounds the request bodies uploaders build.

pub mod admission;
pub mod allowance;
pub mod ledger;

pub use admission::{Budget, EVICTION_ORDER, EvictOldest, Stage};
pub use allowance::{BODY_ALLOWANCE, BODY_ALLOWANCE_BYTES, BodyAllowance, BodyPermit};
pub use ledger::{Charge, Ledger};

/// Bytes charged per segment on top of its body: the allocation's bookkeeping and the ring slot.
pub const SEGMENT_OVERHEAD: u64 = 48;

/// What holding a segment of `body_len` bytes costs against the budget.
pub fn segment_cost(body_len: usize) -> u64 {
    body_len as u64 + SEGMENT_OVERHEAD
}

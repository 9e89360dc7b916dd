//! The segment that travels through the pipeline: one accepted document, byte-exact as received,
//! in an allocation it may share with the documents received with it. Ingest creates segments,
//! the budget charges them, the queue, batcher and uploaders carry them.

use std::sync::Arc;

/// Most bytes of segments that share one allocation ([`Segment::copy_shared`]): a segment held
/// long (awaiting a retry) keeps at most this much of its neighbours' memory alive.
pub const SHARED_ALLOCATION_BYTES: usize = 64 * 1024;

/// One accepted segment document, byte-exact as received.
///
/// Its bytes live in an allocation it may share with the segments received with it, so ingest
/// allocates (and an uploader frees) once per receive call rather than once per datagram.
#[derive(Clone)]
pub struct Segment {
    shared: Arc<Vec<u8>>,
    start: u32,
    end: u32,
}

impl Segment {
    /// Copies a validated body into an allocation of its own.
    pub fn new(body: &[u8]) -> Self {
        Segment {
            shared: Arc::new(body.to_vec()),
            start: 0,
            end: body.len() as u32,
        }
    }

    /// Copies `bodies` (each at most 64 KiB) into as few allocations as
    /// [`SHARED_ALLOCATION_BYTES`] allows, and hands `each` one segment per body, in order.
    pub fn copy_shared(bodies: &[&[u8]], mut each: impl FnMut(Segment)) {
        let mut rest = bodies;
        while !rest.is_empty() {
            let mut total = rest[0].len();
            let mut n = 1;
            while n < rest.len() && total + rest[n].len() <= SHARED_ALLOCATION_BYTES {
                total += rest[n].len();
                n += 1;
            }
            let (group, after) = rest.split_at(n);
            let mut bytes = Vec::with_capacity(total);
            for body in group {
                bytes.extend_from_slice(body);
            }
            let shared = Arc::new(bytes);
            let mut start = 0;
            for body in group {
                let end = start + body.len() as u32;
                each(Segment {
                    shared: shared.clone(),
                    start,
                    end,
                });
                start = end;
            }
            rest = after;
        }
    }

    /// The document's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.shared[self.start as usize..self.end as usize]
    }

    /// What holding this segment costs against the budget.
    pub fn cost(&self) -> u64 {
        crate::budget::segment_cost((self.end - self.start) as usize)
    }
}

impl PartialEq for Segment {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Segment")
            .field(&String::from_utf8_lossy(self.bytes()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::SEGMENT_OVERHEAD;

    #[test]
    fn shared_copies_keep_each_body_exact_and_group_at_most_64_kib() {
        let bodies: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1000 + 97 * i as usize]).collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let mut got = Vec::new();
        Segment::copy_shared(&refs, |s| got.push(s));
        assert_eq!(got.len(), bodies.len());
        for (s, b) in got.iter().zip(&bodies) {
            assert_eq!(s.bytes(), &b[..]);
            assert_eq!(s.cost(), b.len() as u64 + SEGMENT_OVERHEAD);
        }
        // Groups: consecutive bodies share an allocation of at most 64 KiB.
        let mut groups: Vec<(*const Vec<u8>, usize)> = Vec::new();
        for s in &got {
            let p = Arc::as_ptr(&s.shared);
            match groups.last_mut() {
                Some((q, n)) if *q == p => *n += s.bytes().len(),
                _ => groups.push((p, s.bytes().len())),
            }
        }
        assert!(
            groups.len() > 1 && groups.len() < bodies.len(),
            "{}",
            groups.len()
        );
        assert!(groups.iter().all(|&(_, n)| n <= SHARED_ALLOCATION_BYTES));
        // A body of exactly the limit gets an allocation alone; nothing is empty.
        let big = vec![7u8; SHARED_ALLOCATION_BYTES];
        let mut n = 0;
        Segment::copy_shared(&[b"{}", &big, b"{}"], |s| {
            assert!(!s.bytes().is_empty());
            n += 1;
        });
        assert_eq!(n, 3);
        Segment::copy_shared(&[], |_| panic!("no bodies, no segments"));
    }
}

//! One write per request: ureq transmits a request's head and its body separately, which on a
//! kept-alive connection costs a second `send`, a second TCP segment (and, over TLS, a second
//! record). [`Coalesce`] wraps every transport ureq opens and holds a small transmission back
//! until the next one, sending both in one; anything held goes out before the transport waits
//! for input, so no exchange can stall on it.
//!
//! ureq also probes a pooled connection twice per exchange (three system calls each): when it
//! goes back to the pool, right after the answer was read, and when it is taken out again. Only
//! the second probe tells anything the first did not, so the first is answered without one.

use std::fmt;

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// Largest transmission held back to go with the next one (a request head).
const HOLD_BYTES: usize = 16 * 1024;

/// A connector wrapping the transports of the connector before it in [`Coalescing`].
#[derive(Debug, Default)]
pub struct Coalesce;

impl<In: Transport> Connector<In> for Coalesce {
    type Out = Coalescing<In>;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(|inner| Coalescing {
            inner,
            held: Vec::new(),
            answered: false,
        }))
    }
}

/// A transport holding a small transmission back to send it with the next one.
pub struct Coalescing<T> {
    inner: T,
    /// Bytes transmitted by ureq and not yet passed on.
    held: Vec<u8>,
    /// Input came since the last probe: the next probe is the one of a connection going back to
    /// the pool after its answer, and the probe when it is taken out follows anyway.
    answered: bool,
}

impl<T> fmt::Debug for Coalescing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalescing")
            .field("held", &self.held.len())
            .finish()
    }
}

impl<T: Transport> Coalescing<T> {
    /// Passes on what is held, alone.
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if self.held.is_empty() {
            return Ok(());
        }
        let n = self.held.len();
        self.inner.buffers().output()[..n].copy_from_slice(&self.held);
        self.held.clear();
        self.inner.transmit_output(n, timeout)
    }
}

impl<T: Transport> Transport for Coalescing<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if self.held.is_empty() {
            if amount <= HOLD_BYTES {
                let output = self.inner.buffers().output();
                self.held.extend_from_slice(&output[..amount]);
                return Ok(());
            }
            return self.inner.transmit_output(amount, timeout);
        }
        // Put what is held in front of this transmission, in the output buffer: as much of it as
        // fits goes in one transmission, the rest (at most the size of what was held) in another.
        let held = std::mem::take(&mut self.held);
        let output = self.inner.buffers().output();
        let fits = amount.min(output.len().saturating_sub(held.len()));
        let rest = output[fits..amount].to_vec();
        shift_right(output, fits, held.len());
        output[..held.len()].copy_from_slice(&held);
        self.inner.transmit_output(held.len() + fits, timeout)?;
        if !rest.is_empty() {
            self.inner.buffers().output()[..rest.len()].copy_from_slice(&rest);
            self.inner.transmit_output(rest.len(), timeout)?;
        }
        // Keep the allocation for the next request head.
        self.held = held;
        self.held.clear();
        Ok(())
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.flush(timeout)?;
        self.answered = true;
        self.inner.maybe_await_input(timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.flush(timeout)?;
        self.answered = true;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        // Something held means an exchange was abandoned half-sent: not reusable.
        if !self.held.is_empty() {
            return false;
        }
        if std::mem::take(&mut self.answered) {
            return true;
        }
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// Moves `buf[..len]` to `buf[by..by + len]`. In blocks of at most `by` bytes from the end, so
/// that no copy overlaps: an overlapping `memmove` of a body by a few hundred bytes ran several
/// times slower than the copies.
fn shift_right(buf: &mut [u8], len: usize, by: usize) {
    if by == 0 {
        return;
    }
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(by);
        let (from, to) = buf.split_at_mut(end);
        to[start + by - end..by].copy_from_slice(&from[start..end]);
        end = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::unversioned::transport::LazyBuffers;

    /// A transport recording each transmission.
    #[derive(Debug)]
    struct Recorder {
        buffers: LazyBuffers,
        sent: Vec<Vec<u8>>,
        reads: usize,
        probes: usize,
    }

    impl Transport for Recorder {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }
        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), ureq::Error> {
            self.sent.push(self.buffers.output()[..amount].to_vec());
            Ok(())
        }
        fn await_input(&mut self, _: NextTimeout) -> Result<bool, ureq::Error> {
            self.reads += 1;
            Ok(false)
        }
        fn is_open(&mut self) -> bool {
            self.probes += 1;
            true
        }
    }

    fn transport(output: usize) -> Coalescing<Recorder> {
        Coalescing {
            inner: Recorder {
                buffers: LazyBuffers::new(1024, output),
                sent: Vec::new(),
                reads: 0,
                probes: 0,
            },
            held: Vec::new(),
            answered: false,
        }
    }

    fn write(t: &mut Coalescing<Recorder>, bytes: &[u8]) {
        t.buffers().output()[..bytes.len()].copy_from_slice(bytes);
        t.transmit_output(bytes.len(), NextTimeout::default())
            .unwrap();
    }

    #[test]
    fn head_and_body_go_in_one_transmission() {
        let mut t = transport(64 * 1024);
        write(&mut t, b"POST /TraceSegments HTTP/1.1\r\n\r\n");
        assert!(t.inner.sent.is_empty());
        assert!(!t.is_open(), "half-sent exchange");
        let body = vec![b'x'; 50_000];
        write(&mut t, &body);
        assert_eq!(t.inner.sent.len(), 1);
        let mut want = b"POST /TraceSegments HTTP/1.1\r\n\r\n".to_vec();
        want.extend_from_slice(&body);
        assert_eq!(t.inner.sent[0], want);
        assert!(t.is_open());
        // A large transmission with nothing held goes at once.
        write(&mut t, &body);
        assert_eq!(t.inner.sent.len(), 2);
        assert_eq!(t.inner.sent[1], body);
    }

    #[test]
    fn probes_once_per_exchange_when_taken_from_the_pool() {
        let mut t = transport(64 * 1024);
        // A fresh connection: probed.
        assert!(t.is_open());
        assert_eq!(t.inner.probes, 1);
        write(&mut t, b"POST / HTTP/1.1\r\n\r\n");
        write(&mut t, b"{}");
        t.await_input(NextTimeout::default()).unwrap();
        // Back to the pool right after the answer: not probed.
        assert!(t.is_open());
        assert_eq!(t.inner.probes, 1);
        // Taken out of the pool: probed, and every probe after it too.
        assert!(t.is_open());
        assert!(t.is_open());
        assert_eq!(t.inner.probes, 3);
        // Half-sent: never reusable, whatever came before.
        t.await_input(NextTimeout::default()).unwrap();
        write(&mut t, b"GET");
        assert!(!t.is_open());
    }

    #[test]
    fn shifts_without_losing_a_byte() {
        for (len, by) in [
            (0, 3),
            (1, 1),
            (10, 3),
            (10, 10),
            (10, 25),
            (1000, 7),
            (5, 0),
        ] {
            let mut buf: Vec<u8> = (0..(len + by + 4) as u32).map(|i| i as u8).collect();
            let original = buf.clone();
            shift_right(&mut buf, len, by);
            assert_eq!(buf[by..by + len], original[..len], "{len} by {by}");
            assert_eq!(buf[by + len..], original[by + len..], "{len} by {by}");
        }
    }

    #[test]
    fn held_bytes_go_before_waiting_for_input() {
        let mut t = transport(64 * 1024);
        write(&mut t, b"GET / HTTP/1.1\r\n\r\n");
        assert!(t.inner.sent.is_empty());
        t.await_input(NextTimeout::default()).unwrap();
        assert_eq!(t.inner.sent, vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()]);
        assert_eq!(t.inner.reads, 1);
        write(&mut t, b"again");
        t.maybe_await_input(NextTimeout::default()).unwrap();
        assert_eq!(t.inner.sent.len(), 2);
        assert_eq!(t.inner.sent[1], b"again");
    }

    #[test]
    fn a_body_filling_the_buffer_goes_whole_in_order() {
        let mut t = transport(1000);
        let head: Vec<u8> = (0..100u8).collect();
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        write(&mut t, &head);
        write(&mut t, &body);
        assert_eq!(t.inner.sent.len(), 2);
        assert_eq!(t.inner.sent[0].len(), 1000);
        let all: Vec<u8> = t.inner.sent.concat();
        assert_eq!(all, [head, body].concat());
    }
}

//! Ingest: UDP datagrams in, validated segments into the queue.
//!
//! A fixed pool of worker threads waits on the socket with mio and drains it with `recvmmsg`, many
//! datagrams per call. Each datagram is validated ([`datagram`]); valid bodies are copied once into
//! a [`Segment`] and pushed into the budgeted queue. Counters are added once per call, not per
//! datagram. Problems are summarised at most once per interval (a bad JSON body with the rule it
//! breaks and where); rejections held back meanwhile are reported when the interval ends, even if
//! no datagram arrives then. Bytes are dumped only at debug.

pub mod datagram;
pub mod grammar;
pub mod recvmmsg;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datagram::{Rejection, Validator, Verdict};
use grammar::Violation;
use mio::{Events, Interest, Poll, Token, Waker};
use recvmmsg::RecvBatch;

use crate::log::{Level, Throttle};
use crate::queue::{Admission, QueueWriter};
use crate::segment::Segment;
use crate::stats::Stats;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);

/// Datagrams received per `recvmmsg` call.
pub const RECV_BATCH: usize = 32;

/// `recvmmsg` calls allowed for the final drain at shutdown (at most this × [`RECV_BATCH`]).
const FINAL_DRAIN_CALLS: usize = 4096;

/// Longest pause between reads under light traffic.
pub const MAX_PAUSE: Duration = Duration::from_millis(5);

/// Shorter pauses are not worth a sleep.
const MIN_PAUSE: Duration = Duration::from_micros(500);

/// A wake-up that served fewer datagrams than this cost more than its datagrams: pause after it.
/// Busier wake-ups are followed at once by the next read (under load, a pause only delays the
/// reader behind the uploaders sharing its core).
const FEW_DATAGRAMS: u64 = 2 * RECV_BATCH as u64;

/// How often a rejection or spillover summary may be logged.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// The bound UDP socket.
pub struct Listener {
    socket: UdpSocket,
    /// The address actually bound (port 0 resolved).
    pub local_addr: SocketAddr,
    /// The receive buffer the kernel granted, in bytes.
    pub receive_buffer: usize,
    /// Whether the kernel coalesces datagrams for us (UDP GRO).
    pub gro: bool,
}

/// Binds the UDP socket and sizes its receive buffer.
pub fn bind(addr: SocketAddr, receive_buffer: usize) -> io::Result<Listener> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    let granted = recvmmsg::set_receive_buffer(socket.as_raw_fd(), receive_buffer)?;
    // Best effort: without GRO every datagram is its own receive, which is only slower.
    let gro = recvmmsg::enable_gro(socket.as_raw_fd()).is_ok();
    let local_addr = socket.local_addr()?;
    Ok(Listener {
        socket,
        local_addr,
        receive_buffer: granted,
        gro,
    })
}

/// Running ingest workers.
pub struct Ingest {
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    workers: Vec<JoinHandle<()>>,
}

impl Ingest {
    /// Starts `workers` threads reading `listener` into `queue`.
    pub fn start(
        listener: Listener,
        workers: usize,
        queue: QueueWriter,
        stats: Arc<Stats>,
    ) -> io::Result<Ingest> {
        let stop = Arc::new(AtomicBool::new(false));
        let summaries = Arc::new(Summaries::new(SUMMARY_INTERVAL));
        let mut wakers = Vec::new();
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let socket = mio::net::UdpSocket::from_std(listener.socket.try_clone()?);
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let mut worker = Worker {
                socket,
                poll,
                // Workers share the socket and may pause at the same time: each plans its
                // pauses against its share of the buffer, at the rate it sees itself.
                receive_buffer: listener.receive_buffer / workers.max(1),
                stop: stop.clone(),
                queue: queue.clone(),
                stats: stats.clone(),
                summaries: summaries.clone(),
            };
            worker
                .poll
                .registry()
                .register(&mut worker.socket, SOCKET, Interest::READABLE)?;
            wakers.push(waker);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("xrayd-ingest-{i}"))
                    .spawn(move || worker.run())?,
            );
        }
        Ok(Ingest {
            stop,
            wakers,
            workers: handles,
        })
    }

    /// Stops receiving and waits for the workers (what they already read is queued).
    pub fn stop(self) {
        self.stop.store(true, Relaxed);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for h in self.workers {
            let _ = h.join();
        }
    }
}

struct Summaries {
    rejected: Throttle,
    spilled: Throttle,
}

impl Summaries {
    fn new(interval: Duration) -> Self {
        Summaries {
            rejected: Throttle::new(interval),
            spilled: Throttle::new(interval),
        }
    }
}

struct Worker {
    socket: mio::net::UdpSocket,
    poll: Poll,
    /// This worker's share of the socket's receive buffer, in bytes.
    receive_buffer: usize,
    stop: Arc<AtomicBool>,
    queue: QueueWriter,
    stats: Arc<Stats>,
    summaries: Arc<Summaries>,
}

/// Counts gathered during one `recvmmsg` call, added to [`Stats`] once.
#[derive(Default)]
struct Tally {
    received: u64,
    rejected: [u64; 4],
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(8);
        let mut batch = RecvBatch::new(RECV_BATCH, recvmmsg::DATAGRAM_BUFFER);
        let mut validator = Validator::new();
        let mut last_wake = Instant::now();
        // Set after a pause: the next read goes to the socket directly. Whatever arrived during
        // the pause is read without asking epoll first (its edge-triggered readiness then holds
        // at most one stale event, which costs one empty read when traffic stops).
        let mut paused = false;
        loop {
            if !paused {
                // Wake up when held-back rejections are due to be reported; otherwise only for
                // data.
                let due = self.summaries.rejected.pending().map(|at| {
                    at.saturating_duration_since(Instant::now()) + Duration::from_millis(1)
                });
                if let Err(e) = self.poll.poll(&mut events, due) {
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    crate::error!("UDP poll failed: {e}");
                    return;
                }
                if events.is_empty() && !self.stop.load(Relaxed) {
                    // Woken by the timeout, not by data.
                    self.held_back_summary();
                    continue;
                }
            }
            self.held_back_summary();
            if self.stop.load(Relaxed) {
                // What already sits in the kernel's buffer was sent to us: take it before leaving,
                // within a bound so a sender that never stops cannot hold up shutdown.
                self.drain(&mut batch, &mut validator, FINAL_DRAIN_CALLS);
                return;
            }
            let wake = Instant::now();
            let (datagrams, bytes) = self.drain(&mut batch, &mut validator, usize::MAX);
            paused = false;
            if datagrams == 0 {
                // Nothing arrived (a pause with no traffic, or a stale readiness event): wait for
                // data in epoll.
                last_wake = wake;
                continue;
            }
            // Let datagrams gather in the kernel's buffer before the next read: one wake-up then
            // serves many of them, for this thread and for the batcher it feeds.
            let rest = pause(
                datagrams,
                bytes,
                wake.duration_since(last_wake),
                self.receive_buffer,
            );
            last_wake = wake;
            if !rest.is_zero() && !self.stop.load(Relaxed) {
                std::thread::sleep(rest);
                paused = true;
            }
        }
    }

    /// Edge-triggered readiness: receive until the socket is empty (a call that would block or
    /// filled fewer buffers than it offered), or `max_calls` calls. Returns the datagrams and
    /// bytes read.
    fn drain(
        &self,
        batch: &mut RecvBatch,
        validator: &mut Validator,
        max_calls: usize,
    ) -> (u64, u64) {
        let fd = self.socket.as_raw_fd();
        let (mut datagrams, mut bytes) = (0, 0);
        let mut calls = 0;
        while calls < max_calls {
            calls += 1;
            match batch.recv(fd) {
                Ok(_) => {
                    let (d, b) = self.handle(batch, validator);
                    datagrams += d;
                    bytes += b;
                    if batch.buffers() < RECV_BATCH && max_calls == usize::MAX {
                        // A short read emptied the socket: another call would only say so. A
                        // datagram arriving from now on raises a new edge-triggered event.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::error!("UDP receive failed: {e}");
                    break;
                }
            }
            if max_calls == usize::MAX && self.stop.load(Relaxed) {
                // Shutdown began mid-burst: finish with the bounded final drain.
                self.drain(batch, validator, FINAL_DRAIN_CALLS);
                break;
            }
        }
        (datagrams, bytes)
    }

    /// Validates and queues one call's datagrams; returns how many there were and their bytes.
    fn handle(&self, batch: &RecvBatch, validator: &mut Validator) -> (u64, u64) {
        let mut tally = Tally::default();
        let mut bytes = 0;
        let mut accepted = Vec::with_capacity(RECV_BATCH);
        for (datagram, truncated) in batch.datagrams() {
            bytes += datagram.len() as u64;
            match validator.check(datagram, truncated) {
                Verdict::Empty => {}
                Verdict::Accepted(body) => {
                    tally.received += 1;
                    accepted.push(body);
                }
                Verdict::Rejected(reason) => {
                    tally.received += 1;
                    tally.rejected[reason.index()] += 1;
                    self.rejection_summary(reason, validator.violation(), datagram);
                }
            }
        }
        // Counted before they are queued: a segment is never held or sent before it is received.
        self.stats.received.fetch_add(tally.received, Relaxed);
        for r in Rejection::ALL {
            if tally.rejected[r.index()] > 0 {
                self.stats.add_rejected(r, tally.rejected[r.index()]);
            }
        }
        Segment::copy_shared(&accepted, |segment| {
            if let Admission::Dropped | Admission::Queued { evicted: 1.. } =
                self.queue.push(segment)
            {
                self.spillover_warning();
            }
        });
        (tally.received, bytes)
    }

    fn rejection_summary(&self, reason: Rejection, why: Option<Violation>, datagram: &[u8]) {
        if let Some(held_back) = self.summaries.rejected.allow(Instant::now()) {
            crate::warn!(
                "Rejected a datagram of {} bytes: {}{}{}",
                datagram.len(),
                describe(reason),
                why.map(|v| format!(" ({v} of the segment)"))
                    .unwrap_or_default(),
                if held_back > 0 {
                    format!(" ({held_back} more rejected since the last report)")
                } else {
                    String::new()
                }
            );
        }
        if crate::log::enabled(Level::Debug) {
            crate::debug!(
                "Rejected datagram ({}): {}",
                reason.as_str(),
                String::from_utf8_lossy(datagram).escape_debug()
            );
        }
    }

    /// Reports the rejections held back since the last report once the interval is over.
    fn held_back_summary(&self) {
        if let Some(n) = self.summaries.rejected.flush(Instant::now()) {
            crate::warn!(
                "Rejected {n} more datagram{} since the last report",
                if n == 1 { "" } else { "s" }
            );
        }
    }

    fn spillover_warning(&self) {
        if self.summaries.spilled.allow(Instant::now()).is_some() {
            let s = &self.stats;
            crate::warn!(
                "Segment buffer full: dropping the oldest segments ({} dropped so far). {}",
                s.spillover.load(Relaxed),
                spill_advice(
                    s.upload_failing_for().is_some(),
                    s.batches_in_flight.load(Relaxed),
                    s.upload_slots.load(Relaxed),
                )
            );
        }
    }
}

/// How long to let datagrams gather before the next read, given that a wake-up read `datagrams`
/// totalling `bytes`, which arrived over `elapsed`. Only after a wake-up that served few
/// datagrams: up to [`MAX_PAUSE`], but never so long that, at that rate, they would fill more than
/// a quarter of the `receive_buffer` (so a burst still fits), and no pause when that leaves less
/// than [`MIN_PAUSE`].
pub fn pause(datagrams: u64, bytes: u64, elapsed: Duration, receive_buffer: usize) -> Duration {
    if datagrams >= FEW_DATAGRAMS {
        return Duration::ZERO;
    }
    // The kernel charges each queued datagram its bytes plus its bookkeeping (about a KiB on
    // Linux, more for small datagrams in large buffers): counted generously.
    let charged = bytes
        .saturating_mul(2)
        .saturating_add(datagrams.saturating_mul(1024));
    let room = receive_buffer as u128 / 4;
    let pause = if charged == 0 {
        MAX_PAUSE
    } else {
        let nanos = elapsed.as_nanos().saturating_mul(room) / u128::from(charged);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(MAX_PAUSE)
    };
    if pause < MIN_PAUSE {
        Duration::ZERO
    } else {
        pause
    }
}

/// What to do about a full buffer, from why it filled: X-Ray refusing or unreachable (memory
/// buys time), every upload slot busy while uploads succeed (uploads are the bottleneck: each
/// round trip carries at most 50 segments per slot), or neither (a burst).
pub fn spill_advice(uploads_failing: bool, in_flight: u64, slots: u64) -> String {
    if uploads_failing {
        "Uploads are failing; consider increasing memory limit (-m) to hold more while X-Ray is unavailable".into()
    } else if slots > 0 && in_flight >= slots {
        format!(
            "All {slots} uploads are busy: X-Ray round trips limit throughput to {slots} x 50 segments per round trip; consider increasing --concurrency"
        )
    } else {
        "Consider increasing memory limit (-m)".into()
    }
}

fn describe(reason: Rejection) -> &'static str {
    match reason {
        Rejection::MissingHeaderOrSegment => "missing header or segment",
        Rejection::BadHeader => "invalid header (expected {\"format\":\"json\",\"version\":1})",
        Rejection::BadJson => "segment is not a valid JSON object",
        Rejection::TooLarge => "segment exceeds 64 KB",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn light_traffic_pauses_longest() {
        // 10 k/s of 1 KB datagrams seen over 1 ms with an 8 MiB buffer.
        assert_eq!(
            pause(10, 10_000, Duration::from_millis(1), 8 * MIB),
            MAX_PAUSE
        );
        // Nothing read (woken for nothing), or a long silence before one datagram.
        assert_eq!(pause(0, 0, Duration::from_millis(1), 8 * MIB), MAX_PAUSE);
        assert_eq!(pause(1, 500, Duration::from_secs(3), 8 * MIB), MAX_PAUSE);
    }

    #[test]
    fn the_pause_never_lets_a_quarter_of_the_buffer_fill() {
        // 60 datagrams of 16 KB in 1 ms: about 2 GB/s charged; a quarter of 8 MiB lasts 1.06 ms.
        let p = pause(60, 60 * 16_000, Duration::from_millis(1), 8 * MIB);
        assert!(
            p > Duration::from_millis(1) && p < Duration::from_micros(1100),
            "{p:?}"
        );
        let charged_during_pause = 60.0 * (2.0 * 16_000.0 + 1024.0) * p.as_secs_f64() * 1000.0;
        assert!(
            charged_during_pause <= (2 * MIB) as f64,
            "{charged_during_pause}"
        );
    }

    #[test]
    fn spill_advice_names_the_bottleneck() {
        assert!(spill_advice(true, 8, 8).contains("Uploads are failing"));
        let busy = spill_advice(false, 8, 8);
        assert!(busy.contains("All 8 uploads are busy") && busy.contains("--concurrency"));
        assert_eq!(
            spill_advice(false, 3, 8),
            "Consider increasing memory limit (-m)"
        );
        assert_eq!(
            spill_advice(false, 0, 0),
            "Consider increasing memory limit (-m)"
        );
    }

    #[test]
    fn busy_wake_ups_are_followed_by_the_next_read_at_once() {
        assert_eq!(
            pause(FEW_DATAGRAMS, 64_000, Duration::from_secs(1), 8 * MIB),
            Duration::ZERO
        );
        assert_eq!(
            pause(FEW_DATAGRAMS - 1, 63_000, Duration::from_secs(1), 8 * MIB),
            MAX_PAUSE
        );
    }

    #[test]
    fn a_small_buffer_or_a_flood_of_bytes_means_no_pause() {
        // The kernel's default buffer (about 416 KiB granted) at 100 k/s: under 0.5 ms of room.
        assert_eq!(
            pause(50, 50_000, Duration::from_micros(500), 425_984),
            Duration::ZERO
        );
        assert_eq!(
            pause(10, u64::MAX / 4, Duration::from_millis(1), 8 * MIB),
            Duration::ZERO
        );
    }
}

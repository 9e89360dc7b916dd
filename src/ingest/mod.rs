//! Ingest: UDP datagrams in, validated segments into the queue.
//!
//! A fixed pool of worker threads waits on the socket with mio and drains it with `recvmmsg`, many
//! datagrams per call. Each datagram is validated ([`datagram`]); valid bodies are copied once into
//! a [`Segment`] and pushed into the budgeted queue. Counters are added once per call, not per
//! datagram. Problems are summarised at most once per interval; bytes are dumped only at debug.

pub mod datagram;
pub mod recvmmsg;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datagram::{Rejection, Validator, Verdict};
use mio::{Events, Interest, Poll, Token, Waker};
use recvmmsg::RecvBatch;

use crate::log::{Level, Throttle};
use crate::queue::{Admission, QueueWriter, Segment};
use crate::stats::Stats;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);

/// Datagrams received per `recvmmsg` call.
pub const RECV_BATCH: usize = 32;

/// `recvmmsg` calls allowed for the final drain at shutdown (at most this × [`RECV_BATCH`]).
const FINAL_DRAIN_CALLS: usize = 4096;

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
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                crate::error!("UDP poll failed: {e}");
                return;
            }
            if self.stop.load(Relaxed) {
                // What already sits in the kernel's buffer was sent to us: take it before leaving,
                // within a bound so a sender that never stops cannot hold up shutdown.
                self.drain(&mut batch, &mut validator, FINAL_DRAIN_CALLS);
                return;
            }
            self.drain(&mut batch, &mut validator, usize::MAX);
        }
    }

    /// Edge-triggered readiness: receive until the socket would block (or `max_calls` calls).
    fn drain(&self, batch: &mut RecvBatch, validator: &mut Validator, max_calls: usize) {
        let fd = self.socket.as_raw_fd();
        let mut calls = 0;
        while calls < max_calls {
            calls += 1;
            match batch.recv(fd) {
                Ok(_) => self.handle(batch, validator),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::error!("UDP receive failed: {e}");
                    return;
                }
            }
            if max_calls == usize::MAX && self.stop.load(Relaxed) {
                // Shutdown began mid-burst: finish with the bounded final drain.
                return self.drain(batch, validator, FINAL_DRAIN_CALLS);
            }
        }
    }

    fn handle(&self, batch: &RecvBatch, validator: &mut Validator) {
        let mut tally = Tally::default();
        for (datagram, truncated) in batch.datagrams() {
            match validator.check(datagram, truncated) {
                Verdict::Empty => {}
                Verdict::Accepted(body) => {
                    tally.received += 1;
                    if let Admission::Dropped | Admission::Queued { evicted: 1.. } =
                        self.queue.push(Segment::new(body))
                    {
                        self.spillover_warning();
                    }
                }
                Verdict::Rejected(reason) => {
                    tally.received += 1;
                    tally.rejected[reason.index()] += 1;
                    self.rejection_summary(reason, datagram);
                }
            }
        }
        self.stats.received.fetch_add(tally.received, Relaxed);
        for r in Rejection::ALL {
            if tally.rejected[r.index()] > 0 {
                self.stats.add_rejected(r, tally.rejected[r.index()]);
            }
        }
    }

    fn rejection_summary(&self, reason: Rejection, datagram: &[u8]) {
        if let Some(held_back) = self.summaries.rejected.allow(Instant::now()) {
            crate::warn!(
                "Rejected a datagram of {} bytes: {}{}",
                datagram.len(),
                describe(reason),
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

    fn spillover_warning(&self) {
        if self.summaries.spilled.allow(Instant::now()).is_some() {
            crate::warn!(
                "Segment buffer full: dropping the oldest segments ({} dropped so far). Consider increasing memory limit (-m)",
                self.stats.spillover.load(Relaxed)
            );
        }
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

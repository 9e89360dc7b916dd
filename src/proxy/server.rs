//! The event loop of the TCP port and its upstream workers.
//!
//! Every connection is a small state machine driven by readiness events (edge-triggered):
//! flush pending output, then (unless a forwarded request is in flight) read what is available
//! and parse the next request. Requests on one connection are answered in order, one at a time;
//! pipelined bytes wait in the connection's buffer. Timeouts are checked by a sweep every
//! [`SWEEP`]. Request bytes are accounted in a [`Pool`] and connections are counted against a
//! limit that leaves file descriptors to the rest of the daemon (see the parent module's doc).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::forward::{Upstream, no_upstream};
use super::http::{self, CONTINUE, Head, HttpError, Limits, Response};
use super::routes::{self, INVALID_LABEL, Route};
use super::{Config, FREE_PER_CONNECTION, Options, fdlimit};
use crate::log::Throttle;
use crate::stats::Stats;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// How often timeouts are checked (their precision).
const SWEEP: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 16 * 1024;
/// Descriptors left free when accepting failed for lack of them (the connection limit is lowered
/// to leave this many to the rest of the daemon).
const FD_HEADROOM: usize = 32;
/// The connection limit is never lowered below this.
const MIN_CONNECTIONS: usize = 16;

/// What the loop and the workers share.
struct Shared {
    stats: Arc<Stats>,
    upstream: Option<Upstream>,
    options: Options,
    limits: Limits,
    budget_bytes: u64,
    local_sink: bool,
    failures_logged: Throttle,
    /// X-Ray refused a forwarded call (403, 404): logged with a hint, each sampling API on its
    /// own (one permission may be missing and not the others), then every other path.
    refusals_logged: [Throttle; 4],
    /// The port is under pressure, one throttle per [`Pressure`].
    pressure_logged: [Throttle; 4],
    /// Credentials failures seen by `/readyz` (the detail goes to the log, not to the client).
    readiness_logged: Throttle,
}

/// What the port runs short of (each warned about on its own, rate-limited).
#[derive(Clone, Copy)]
enum Pressure {
    Connections = 0,
    FileDescriptors = 1,
    Requests = 2,
    Answers = 3,
}

impl Shared {
    /// `Some(note)` when a warning about `p` may be logged now; `note` tells how many were not.
    fn pressure(&self, p: Pressure) -> Option<String> {
        self.pressure_logged[p as usize]
            .allow(Instant::now())
            .map(|n| not_logged(n, "warnings"))
    }
}

/// ` (n similar <what> not logged)`, or nothing when none were suppressed.
fn not_logged(n: u64, what: &str) -> String {
    if n > 0 {
        format!(" ({n} similar {what} not logged)")
    } else {
        String::new()
    }
}

/// The request bytes connections may hold beyond their free part (see the parent module's
/// doc). Owned by the loop thread.
struct Pool {
    cap: usize,
    used: usize,
}

impl Pool {
    fn available(&self) -> usize {
        self.cap.saturating_sub(self.used)
    }

    /// Takes `n` bytes if that many are left.
    fn take(&mut self, n: usize) -> bool {
        let ok = n <= self.available();
        if ok {
            self.used += n;
        }
        ok
    }

    fn give(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }
}

/// A request for a worker.
struct Job {
    conn: usize,
    target: String,
    body: Vec<u8>,
    label: &'static str,
    /// Bytes taken from the pool for the body, given back when the answer comes.
    charge: usize,
}

/// A worker's answer.
struct Done {
    conn: usize,
    response: Response,
    charge: usize,
}

/// How to answer the request being served.
#[derive(Debug, Clone, Copy)]
struct Meta {
    label: &'static str,
    head_only: bool,
    keep_alive: bool,
    /// HTTP/1.0 client that asked for keep-alive: say `Connection: keep-alive`.
    keep_alive_header: bool,
}

/// What [`spawn`] gives back: the stop flag, the loop's waker and its thread.
pub(super) type Handles = (Arc<AtomicBool>, Arc<Waker>, JoinHandle<()>);

/// Starts the loop and the workers.
pub(super) fn spawn(listener: std::net::TcpListener, cfg: Config) -> Result<Handles, String> {
    let err = |e: io::Error| format!("Cannot start the sampling proxy: {e}");
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new().map_err(err)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(err)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(err)?);
    let stop = Arc::new(AtomicBool::new(false));
    let options = cfg.options;
    let limits = Limits {
        max_body: options.max_body,
        ..Limits::default()
    };
    let shared = Arc::new(Shared {
        stats: cfg.stats,
        upstream: cfg.upstream,
        limits,
        budget_bytes: cfg.budget_bytes,
        local_sink: cfg.local_sink,
        failures_logged: Throttle::new(Duration::from_secs(10)),
        refusals_logged: std::array::from_fn(|_| Throttle::new(Duration::from_secs(60))),
        pressure_logged: std::array::from_fn(|_| Throttle::new(Duration::from_secs(60))),
        readiness_logged: Throttle::new(Duration::from_secs(60)),
        options,
    });
    let soft = fdlimit::current().map(|(soft, _)| soft);
    let max_conns = fdlimit::max_connections(shared.options.max_connections, soft);
    if max_conns < shared.options.max_connections {
        crate::info!(
            "Sampling proxy: keeping at most {max_conns} client connections (open-files limit {})",
            soft.unwrap_or_default()
        );
    }
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Job>(shared.options.queue.max(1));
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    if shared.upstream.is_some() {
        for i in 0..shared.options.workers.max(1) {
            let (jobs, done, waker, sh) = (
                jobs_rx.clone(),
                done_tx.clone(),
                waker.clone(),
                shared.clone(),
            );
            std::thread::Builder::new()
                .name(format!("xrayd-proxy-{i}"))
                .spawn(move || worker(&sh, &jobs, &done, &waker))
                .map_err(err)?;
        }
    }
    drop(done_tx);
    let pool = shared.options.buffer_pool;
    let lp = Loop {
        poll,
        listener,
        shared,
        jobs: jobs_tx,
        done: done_rx,
        conns: HashMap::new(),
        next_id: FIRST_CONN,
        accept_again: false,
        stop: stop.clone(),
        pool: Pool { cap: pool, used: 0 },
        max_conns,
    };
    let thread = std::thread::Builder::new()
        .name("xrayd-proxy".into())
        .spawn(move || lp.run())
        .map_err(err)?;
    Ok((stop, waker, thread))
}

fn worker(sh: &Shared, jobs: &Receiver<Job>, done: &Sender<Done>, waker: &Waker) {
    let Some(upstream) = &sh.upstream else { return };
    while let Ok(job) = jobs.recv() {
        let started = Instant::now();
        let out = upstream.forward(&job.target, &job.body);
        drop(job.body);
        crate::debug!(
            "Proxy: POST {} forwarded to X-Ray: {} ({:.1} ms)",
            job.label,
            out.response.status,
            started.elapsed().as_secs_f64() * 1e3
        );
        if let Some(why) = &out.failure
            && let Some(suppressed) = sh.failures_logged.allow(Instant::now())
        {
            let more = not_logged(suppressed, "failures");
            crate::warn!(
                "Sampling proxy: answered {} to POST {}: {why}{more}",
                out.response.status,
                job.label
            );
        }
        if out.failure.is_none() {
            log_refusal(sh, &out.response, job.label);
        }
        if done
            .send(Done {
                conn: job.conn,
                response: out.response,
                charge: job.charge,
            })
            .is_err()
        {
            return;
        }
        let _ = waker.wake();
    }
}

/// X-Ray refused a forwarded call: say at warn (rate-limited) what is most likely missing.
fn log_refusal(sh: &Shared, r: &Response, label: &'static str) {
    let hint = match r.status {
        401 | 403 => match routes::permission(label) {
            Some(p) => format!(
                "the daemon's credentials most likely lack the IAM permission {p}; grant it to the role or user xrayd runs as"
            ),
            None => "the daemon's credentials are not allowed to call this X-Ray API".to_string(),
        },
        404 => "the endpoint does not serve this X-Ray API; check --endpoint and the region"
            .to_string(),
        _ => return,
    };
    let which = routes::SAMPLING_PATHS
        .iter()
        .position(|p| *p == label)
        .unwrap_or(routes::SAMPLING_PATHS.len());
    let Some(suppressed) = sh.refusals_logged[which].allow(Instant::now()) else {
        return;
    };
    let kind = r
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-amzn-ErrorType"))
        .map(|(_, v)| format!(" {}", v.split(':').next().unwrap_or(v)))
        .unwrap_or_default();
    let more = not_logged(suppressed, "refusals");
    crate::warn!(
        "Sampling proxy: X-Ray refused POST {label}: {}{kind}: {hint}{more}",
        r.status
    );
}

struct Loop {
    poll: Poll,
    listener: TcpListener,
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    done: Receiver<Done>,
    conns: HashMap<usize, Conn>,
    next_id: usize,
    /// The last accept failed (e.g. out of file descriptors): try again on the next tick.
    accept_again: bool,
    stop: Arc<AtomicBool>,
    pool: Pool,
    /// Most client connections kept (lowered when file descriptors run out).
    max_conns: usize,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut last_sweep = Instant::now();
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(SWEEP))
                && e.kind() != io::ErrorKind::Interrupted
            {
                crate::error!("Sampling proxy: poll failed: {e}; the TCP port stops serving");
                return;
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let mut accept = self.accept_again;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => accept = true,
                    WAKER => {}
                    Token(id) => self.drive(id),
                }
            }
            if accept {
                self.accept();
            }
            while let Ok(d) = self.done.try_recv() {
                self.pool.give(d.charge);
                if let Some(c) = self.conns.get_mut(&d.conn)
                    && let Some(meta) = c.pending.take()
                {
                    c.respond(d.response, meta, &self.shared.stats);
                    self.drive(d.conn);
                }
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= SWEEP {
                last_sweep = now;
                self.sweep(now);
            }
        }
    }

    fn accept(&mut self) {
        self.accept_again = false;
        // The limit is lowered at most once per round of accepts (another thread may take a
        // freed descriptor first: that is not a reason to keep lowering).
        let mut lowered = false;
        loop {
            match self.listener.accept() {
                Ok((mut stream, _peer)) => {
                    if self.conns.len() >= self.max_conns && !self.make_room() {
                        // Every connection waits for X-Ray: nothing can be closed.
                        let r = Response::aws_error(
                            503,
                            "TooManyConnections",
                            "xrayd: too many open connections to the sampling proxy",
                        )
                        .closing();
                        let mut out = Vec::new();
                        http::encode_response(&r, false, false, &mut out);
                        let _ = stream.write(&out);
                        self.shared.stats.add_proxy_request(INVALID_LABEL, 503);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let id = self.next_id;
                    self.next_id += 1;
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(id),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    self.conns.insert(id, Conn::new(stream));
                    self.drive(id);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of file descriptors: keep fewer connections from now on, so that
                    // uploads and credentials have some, and close some to accept this one.
                    let lower = self
                        .conns
                        .len()
                        .saturating_sub(FD_HEADROOM)
                        .max(MIN_CONNECTIONS);
                    if lower < self.max_conns && !lowered {
                        lowered = true;
                        self.max_conns = lower;
                        if let Some(more) = self.shared.pressure(Pressure::FileDescriptors) {
                            crate::warn!(
                                "Sampling proxy: out of file descriptors ({e}); keeping at most {lower} client connections from now on. Raise the open-files limit (ulimit -n) to keep more{more}"
                            );
                        }
                    }
                    let mut freed = false;
                    while self.conns.len() > self.max_conns && self.make_room() {
                        freed = true;
                    }
                    if !freed && !self.make_room() {
                        // Nothing to close: the connection waits in the backlog until the
                        // next tick.
                        self.accept_again = true;
                        return;
                    }
                }
                Err(e) => {
                    if let Some(suppressed) = self.shared.failures_logged.allow(Instant::now()) {
                        crate::warn!(
                            "Sampling proxy: cannot accept a connection: {e}{}",
                            not_logged(suppressed, "failures")
                        );
                    }
                    self.accept_again = true;
                    return;
                }
            }
        }
    }

    /// Closes the connection that matters least (the longest-idle one, else the oldest
    /// unfinished request; never one waiting for X-Ray). `false`: nothing could be closed.
    fn make_room(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| c.pending.is_none())
            .min_by_key(|(_, c)| c.eviction_rank())
            .map(|(id, _)| *id);
        let Some(id) = victim else {
            return false;
        };
        if let Some(more) = self.shared.pressure(Pressure::Connections) {
            crate::warn!(
                "Sampling proxy: {} client connections open (the limit); closing the longest-idle one for each new connection{more}",
                self.conns.len()
            );
        }
        self.close(id);
        true
    }

    fn drive(&mut self, id: usize) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.drive(id, &self.shared, &self.jobs, &mut self.pool) {
            self.close(id);
        }
    }

    fn close(&mut self, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.pool.give(c.charged + c.out_charged);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let sh = self.shared.clone();
        let o = &sh.options;
        let mut expired_idle = Vec::new();
        let mut expired_request = Vec::new();
        for (id, c) in &self.conns {
            if c.pending.is_some() {
                // Bounded by the upstream timeout.
                continue;
            }
            if let Some(t) = c.write_started {
                if now.duration_since(t) > o.read_timeout {
                    expired_idle.push(*id);
                }
            } else if let Some(t) = c.request_started {
                if now.duration_since(t) > o.read_timeout {
                    expired_request.push(*id);
                }
            } else if now.duration_since(c.last_active) > o.idle_timeout {
                expired_idle.push(*id);
            }
        }
        for id in expired_idle {
            self.close(id);
        }
        for id in expired_request {
            if let Some(c) = self.conns.get_mut(&id) {
                c.request_started = None;
                c.head = None;
                c.inbuf.clear();
                c.fit(&mut self.pool);
                let r = Response::aws_error(
                    408,
                    "RequestTimeout",
                    &format!(
                        "xrayd: the request was not received within {:.1} seconds",
                        o.read_timeout.as_secs_f64()
                    ),
                )
                .closing();
                c.respond(r, Meta::error(), &sh.stats);
                crate::debug!("Sampling proxy: request read timeout, connection closed");
            }
            self.drive(id);
        }
    }
}

impl Meta {
    /// For answers to requests that could not be read.
    fn error() -> Meta {
        Meta {
            label: INVALID_LABEL,
            head_only: false,
            keep_alive: false,
            keep_alive_header: false,
        }
    }
}

/// What parsing the buffer gave.
enum Step {
    /// More bytes are needed.
    Need,
    /// Loop again (output was queued, e.g. `100 Continue`).
    Again,
    /// Answer this.
    Respond(Response, Meta),
    /// Forward this to X-Ray.
    Forward(Job, Meta),
}

struct Conn {
    stream: TcpStream,
    inbuf: Vec<u8>,
    /// Bytes of `inbuf`'s capacity taken from the pool (beyond [`FREE_PER_CONNECTION`]).
    charged: usize,
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes of `out` taken from the pool while the client is slow to read them.
    out_charged: usize,
    /// Head of the request being received.
    head: Option<Head>,
    continue_sent: bool,
    /// A forwarded request is in flight; how to answer it.
    pending: Option<Meta>,
    /// Close once the output is flushed.
    closing: bool,
    /// The client shut down its sending side.
    eof: bool,
    /// When the first byte of the request being received arrived.
    request_started: Option<Instant>,
    /// When a write first had to wait for the client.
    write_started: Option<Instant>,
    last_active: Instant,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            inbuf: Vec::new(),
            charged: 0,
            out: Vec::new(),
            out_pos: 0,
            out_charged: 0,
            head: None,
            continue_sent: false,
            pending: None,
            closing: false,
            eof: false,
            request_started: None,
            write_started: None,
            last_active: Instant::now(),
        }
    }

    /// Which connection to close first at the connection limit (smallest first): idle ones by
    /// their last activity, then unfinished requests and stalled writes by their start.
    fn eviction_rank(&self) -> (u8, Instant) {
        match (self.request_started, self.write_started) {
            (None, None) if self.head.is_none() && self.inbuf.is_empty() => (0, self.last_active),
            (started, writing) => (1, started.or(writing).unwrap_or(self.last_active)),
        }
    }

    /// Takes from (or gives back to) the pool what `inbuf`'s capacity needs beyond the free part.
    fn account(&mut self, pool: &mut Pool) {
        let now = self.inbuf.capacity().saturating_sub(FREE_PER_CONNECTION);
        if now >= self.charged {
            pool.used += now - self.charged;
        } else {
            pool.give(self.charged - now);
        }
        self.charged = now;
    }

    /// Gives buffer memory back once a request was consumed: freed when nothing is left, else
    /// shrunk to what is left (at least the free part).
    fn fit(&mut self, pool: &mut Pool) {
        if self.inbuf.is_empty() {
            self.inbuf = Vec::new();
        } else {
            let keep = self.inbuf.len().max(FREE_PER_CONNECTION);
            if self.inbuf.capacity() > keep {
                self.inbuf.shrink_to(keep);
            }
        }
        self.account(pool);
    }

    /// Queues a final answer.
    fn respond(&mut self, mut r: Response, meta: Meta, stats: &Stats) {
        r.close |= !meta.keep_alive || self.eof;
        stats.add_proxy_request(meta.label, r.status);
        http::encode_response(
            &r,
            meta.head_only,
            meta.keep_alive_header && !r.close,
            &mut self.out,
        );
        if r.close {
            self.closing = true;
        }
    }

    /// Makes all the progress possible without blocking. `false`: close the connection.
    fn drive(&mut self, id: usize, sh: &Shared, jobs: &Sender<Job>, pool: &mut Pool) -> bool {
        loop {
            // 1. Flush what is queued.
            while self.out_pos < self.out.len() {
                match self.stream.write(&self.out[self.out_pos..]) {
                    Ok(0) => return false,
                    Ok(n) => self.out_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.write_started.get_or_insert_with(Instant::now);
                        // The client is slow to take its answer: what is left is held, from
                        // the pool; a client that leaves more than the pool has is closed.
                        let held = self.out.capacity();
                        if held > self.out_charged && !pool.take(held - self.out_charged) {
                            if let Some(more) = sh.pressure(Pressure::Answers) {
                                crate::warn!(
                                    "Sampling proxy: answers not taken by their clients fill the {} bytes the port may hold; closing a connection that does not read{more}",
                                    pool.cap
                                );
                            }
                            return false;
                        }
                        self.out_charged = self.out_charged.max(held);
                        return true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            if !self.out.is_empty() {
                self.out = Vec::new();
                pool.give(self.out_charged);
                self.out_charged = 0;
                self.out_pos = 0;
                self.write_started = None;
                self.last_active = Instant::now();
            }
            if self.closing {
                return false;
            }
            if self.pending.is_some() {
                return true;
            }
            // 2. Read what is available (bounded: a full buffer always parses to a request or
            //    an error; and by what the pool has left).
            let starved = match self.eof {
                true => false,
                false => match self.read(sh.limits.max_request(), pool) {
                    Ok(starved) => starved,
                    Err(_) => return false,
                },
            };
            // 3. Parse.
            match self.step(sh, pool) {
                Step::Need if starved => {
                    let meta = self.head.as_ref().map_or(Meta::error(), meta_for);
                    self.head = None;
                    self.inbuf.clear();
                    self.fit(pool);
                    if let Some(more) = sh.pressure(Pressure::Requests) {
                        crate::warn!(
                            "Sampling proxy: {} bytes of requests are being received at once (the limit); a request was refused with 503{more}",
                            pool.cap + FREE_PER_CONNECTION
                        );
                    }
                    let r = Response::aws_error(
                        503,
                        "ProxyBusy",
                        "xrayd: too many large requests are being received at once; retry later",
                    )
                    .closing();
                    self.respond(r, meta, &sh.stats);
                }
                Step::Need => return !self.eof,
                Step::Again => {}
                Step::Respond(r, meta) => self.respond(r, meta, &sh.stats),
                Step::Forward(job, meta) => {
                    // The connection's free part covers the first bytes of what it holds (its
                    // buffer and this body; it reads nothing more while the call is in flight):
                    // the usual SDK call never waits for the pool.
                    let held = self.inbuf.capacity() + job.body.capacity();
                    let charge = held
                        .saturating_sub(FREE_PER_CONNECTION)
                        .saturating_sub(self.charged);
                    let busy = |why: &str| {
                        Response::aws_error(503, "ProxyBusy", &format!("xrayd: {why}; retry later"))
                    };
                    if !pool.take(charge) {
                        let r = busy("too many large requests are waiting for X-Ray");
                        self.respond(r, meta, &sh.stats);
                        continue;
                    }
                    match jobs.try_send(Job {
                        conn: id,
                        charge,
                        ..job
                    }) {
                        Ok(()) => self.pending = Some(meta),
                        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                            pool.give(charge);
                            let r = busy("too many sampling calls are waiting for X-Ray");
                            self.respond(r, meta, &sh.stats);
                        }
                    }
                }
            }
        }
    }

    /// Reads what is available into `inbuf`, up to `max` bytes buffered and what the pool
    /// allows. `Ok(true)`: it stopped short of `max` because the pool is spent.
    fn read(&mut self, max: usize, pool: &mut Pool) -> io::Result<bool> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let limit = max.min(FREE_PER_CONNECTION + self.charged + pool.available());
            let len = self.inbuf.len();
            if len >= limit {
                return Ok(limit < max);
            }
            let want = (limit - len).min(READ_CHUNK);
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    if len == 0 && self.head.is_none() {
                        self.request_started = Some(Instant::now());
                    }
                    if len + n > self.inbuf.capacity() {
                        // Grow geometrically, within the allowance.
                        let cap = (self.inbuf.capacity() * 2)
                            .max(FREE_PER_CONNECTION)
                            .min(limit)
                            .max(len + n);
                        self.inbuf.reserve_exact(cap - len);
                        self.account(pool);
                    }
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn step(&mut self, sh: &Shared, pool: &mut Pool) -> Step {
        let limits = &sh.limits;
        if self.head.is_none() {
            if self.inbuf.is_empty() {
                self.request_started = None;
                return Step::Need;
            }
            self.request_started.get_or_insert_with(Instant::now);
            match http::parse_head(&self.inbuf, limits) {
                Ok(None) => return Step::Need,
                Ok(Some(h)) => {
                    let forwarded =
                        routes::route(&h.method, h.path(), sh.options.allow_all) == Route::Forward;
                    if forwarded
                        && let Some(why) = routes::from_browser(h.origin, h.content_type.as_deref())
                    {
                        // Refused before anything is signed; the body is not read.
                        crate::debug!("Sampling proxy: refused a browser request: {why}");
                        self.inbuf.clear();
                        self.fit(pool);
                        let r = Response::aws_error(
                            403,
                            "BrowserRequestRefused",
                            &format!(
                                "xrayd does not forward requests from web browsers ({why}): X-Ray SDKs do not send one"
                            ),
                        );
                        return Step::Respond(r.closing(), meta_for(&h));
                    }
                    self.head = Some(h);
                }
                Err(e) => return self.refuse(e, pool),
            }
        }
        let Some(head) = self.head.as_ref() else {
            return Step::Need;
        };
        if head.expect_continue && !self.continue_sent {
            self.continue_sent = true;
            // Refuse now rather than have the client send a body that would be discarded.
            if routes::route(&head.method, head.path(), sh.options.allow_all) != Route::Forward {
                let head = self.head.take().unwrap_or_else(|| unreachable!());
                let (r, meta) = answer_locally(&head, sh);
                self.inbuf.clear();
                self.fit(pool);
                return Step::Respond(r.closing(), meta);
            }
            self.out.extend_from_slice(CONTINUE);
            return Step::Again;
        }
        let body = match http::parse_body(head.body, &self.inbuf[head.len..], limits) {
            Ok(None) => return Step::Need,
            Ok(Some(b)) => b,
            Err(e) => return self.refuse(e, pool),
        };
        let (body, n) = body;
        let Some(head) = self.head.take() else {
            return Step::Need;
        };
        self.inbuf.drain(..head.len + n);
        self.fit(pool);
        self.continue_sent = false;
        self.request_started = (!self.inbuf.is_empty()).then(Instant::now);
        let path = head.path();
        let meta = meta_for(&head);
        match routes::route(&head.method, path, sh.options.allow_all) {
            Route::Forward if sh.upstream.is_some() => Step::Forward(
                Job {
                    conn: 0,
                    target: head.target.clone(),
                    body,
                    label: meta.label,
                    charge: 0,
                },
                meta,
            ),
            _ => {
                let (r, meta) = answer_locally(&head, sh);
                Step::Respond(r, meta)
            }
        }
    }

    /// Answers a request that cannot be read, and closes.
    fn refuse(&mut self, e: HttpError, pool: &mut Pool) -> Step {
        crate::debug!("Sampling proxy: refused a request: {e}");
        self.head = None;
        self.inbuf.clear();
        self.fit(pool);
        let r = Response::aws_error(e.status(), "InvalidRequest", &format!("xrayd: {e}")).closing();
        Step::Respond(r, Meta::error())
    }
}

fn meta_for(head: &Head) -> Meta {
    Meta {
        label: routes::label(head.path()),
        head_only: head.method == "HEAD",
        keep_alive: head.keep_alive,
        keep_alive_header: !head.http11 && head.keep_alive,
    }
}

/// The answer to every request that is not forwarded.
fn answer_locally(head: &Head, sh: &Shared) -> (Response, Meta) {
    let meta = meta_for(head);
    let path = head.path();
    let r = match routes::route(&head.method, path, sh.options.allow_all) {
        Route::Forward => no_upstream(),
        Route::Healthz => Response::text(200, "ok"),
        Route::Readyz => match readiness(sh) {
            Ok(()) => Response::text(200, "ready"),
            Err(why) => Response::text(503, &format!("not ready: {}", why.join("; "))),
        },
        Route::Metrics => {
            let inputs = ready_inputs(sh);
            let extra = crate::metrics::Extra {
                budget_bytes: sh.budget_bytes,
                ready: crate::health::readiness(&inputs).is_ok(),
                ingest_running: inputs.ingest_running,
                upload_failing_for: inputs.upload_failing_for,
            };
            Response::new(
                200,
                crate::metrics::CONTENT_TYPE,
                crate::metrics::render(&sh.stats, &extra),
            )
        }
        Route::MethodNotAllowed { allow } => Response::aws_error(
            405,
            "MethodNotAllowed",
            &format!(
                "xrayd: {} is not allowed on {}; use {allow}",
                head.method,
                routes::label(path)
            ),
        )
        .with_header("Allow", allow),
        Route::NotFound => Response::aws_error(404, "NotFound", &routes::not_found_message(path)),
    };
    (r, meta)
}

fn readiness(sh: &Shared) -> Result<(), Vec<String>> {
    crate::health::readiness(&ready_inputs(sh))
}

/// What readiness is decided on, each read once. Why credentials are missing goes to the log
/// (rate-limited), not to the client: the detail may quote a credentials endpoint's answer.
fn ready_inputs(sh: &Shared) -> crate::health::ReadyInputs {
    let credentials = if sh.local_sink {
        Ok(())
    } else {
        match &sh.upstream {
            Some(u) => u.credentials_status().map_err(|why| {
                if let Some(n) = sh.readiness_logged.allow(Instant::now()) {
                    let more = not_logged(n, "messages");
                    crate::warn!("Not ready: no AWS credentials: {why}{more}");
                }
                crate::health::SEE_LOG.to_string()
            }),
            None => Err("no X-Ray endpoint configured".to_string()),
        }
    };
    crate::health::ReadyInputs {
        ingest_running: sh.stats.ingest_running.load(Ordering::Relaxed),
        credentials,
        upload_failing_for: sh.stats.upload_failing_for(),
        threshold: sh.options.ready_failure_threshold,
    }
}

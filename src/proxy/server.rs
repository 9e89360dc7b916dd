//! The event loop of the TCP port and its upstream workers.
//!
//! Every connection is a small state machine driven by readiness events (edge-triggered):
//! flush pending output, then (unless a forwarded request is in flight) read what is available
//! and parse the next request. Requests on one connection are answered in order, one at a time;
//! pipelined bytes wait in the connection's buffer. Timeouts are checked by a sweep every
//! [`SWEEP`].

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
use super::{Config, Options};
use crate::log::Throttle;
use crate::stats::Stats;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// How often timeouts are checked (their precision).
const SWEEP: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 16 * 1024;

/// What the loop and the workers share.
struct Shared {
    stats: Arc<Stats>,
    upstream: Option<Upstream>,
    options: Options,
    limits: Limits,
    budget_bytes: u64,
    local_sink: bool,
    failures_logged: Throttle,
}

/// A request for a worker.
struct Job {
    conn: usize,
    target: String,
    body: Vec<u8>,
    label: &'static str,
}

/// A worker's answer.
struct Done {
    conn: usize,
    response: Response,
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
        options,
    });
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
        crate::debug!(
            "Proxy: POST {} forwarded to X-Ray: {} ({:.1} ms)",
            job.label,
            out.response.status,
            started.elapsed().as_secs_f64() * 1e3
        );
        if let Some(why) = &out.failure
            && let Some(suppressed) = sh.failures_logged.allow(Instant::now())
        {
            let more = if suppressed > 0 {
                format!(" ({suppressed} similar failures not logged)")
            } else {
                String::new()
            };
            crate::warn!(
                "Sampling proxy: answered {} to POST {}: {why}{more}",
                out.response.status,
                job.label
            );
        }
        if done
            .send(Done {
                conn: job.conn,
                response: out.response,
            })
            .is_err()
        {
            return;
        }
        let _ = waker.wake();
    }
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
        loop {
            match self.listener.accept() {
                Ok((mut stream, _peer)) => {
                    if self.conns.len() >= self.shared.options.max_connections {
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
                Err(e) => {
                    if let Some(suppressed) = self.shared.failures_logged.allow(Instant::now()) {
                        crate::warn!(
                            "Sampling proxy: cannot accept a connection: {e} ({suppressed} similar failures not logged)"
                        );
                    }
                    self.accept_again = true;
                    return;
                }
            }
        }
    }

    fn drive(&mut self, id: usize) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.drive(id, &self.shared, &self.jobs) {
            self.close(id);
        }
    }

    fn close(&mut self, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.stream);
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
    out: Vec<u8>,
    out_pos: usize,
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
            out: Vec::new(),
            out_pos: 0,
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
    fn drive(&mut self, id: usize, sh: &Shared, jobs: &Sender<Job>) -> bool {
        loop {
            // 1. Flush what is queued.
            while self.out_pos < self.out.len() {
                match self.stream.write(&self.out[self.out_pos..]) {
                    Ok(0) => return false,
                    Ok(n) => self.out_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.write_started.get_or_insert_with(Instant::now);
                        return true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            if !self.out.is_empty() {
                self.out.clear();
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
            //    an error).
            if !self.eof && self.read(sh.limits.max_request()).is_err() {
                return false;
            }
            // 3. Parse.
            match self.step(sh) {
                Step::Need => return !self.eof,
                Step::Again => {}
                Step::Respond(r, meta) => self.respond(r, meta, &sh.stats),
                Step::Forward(job, meta) => match jobs.try_send(Job { conn: id, ..job }) {
                    Ok(()) => self.pending = Some(meta),
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        let r = Response::aws_error(
                            503,
                            "ProxyBusy",
                            "xrayd: too many sampling calls are waiting for X-Ray; retry later",
                        );
                        self.respond(r, meta, &sh.stats);
                    }
                },
            }
        }
    }

    fn read(&mut self, cap: usize) -> io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK];
        while self.inbuf.len() < cap {
            let want = (cap - self.inbuf.len()).min(READ_CHUNK);
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    if self.inbuf.is_empty() && self.head.is_none() {
                        self.request_started = Some(Instant::now());
                    }
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn step(&mut self, sh: &Shared) -> Step {
        let limits = &sh.limits;
        if self.head.is_none() {
            if self.inbuf.is_empty() {
                self.request_started = None;
                return Step::Need;
            }
            self.request_started.get_or_insert_with(Instant::now);
            match http::parse_head(&self.inbuf, limits) {
                Ok(None) => return Step::Need,
                Ok(Some(h)) => self.head = Some(h),
                Err(e) => return self.refuse(e),
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
                return Step::Respond(r.closing(), meta);
            }
            self.out.extend_from_slice(CONTINUE);
            return Step::Again;
        }
        let body = match http::parse_body(head.body, &self.inbuf[head.len..], limits) {
            Ok(None) => return Step::Need,
            Ok(Some(b)) => b,
            Err(e) => return self.refuse(e),
        };
        let (body, n) = body;
        let Some(head) = self.head.take() else {
            return Step::Need;
        };
        self.inbuf.drain(..head.len + n);
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
    fn refuse(&mut self, e: HttpError) -> Step {
        crate::debug!("Sampling proxy: refused a request: {e}");
        self.head = None;
        self.inbuf.clear();
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

/// What readiness is decided on, each read once.
fn ready_inputs(sh: &Shared) -> crate::health::ReadyInputs {
    let credentials = if sh.local_sink {
        Ok(())
    } else {
        match &sh.upstream {
            Some(u) => u.credentials_status(),
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

//! The TCP port (`-t`): X-Ray's sampling proxy, and the operator endpoints `/healthz`, `/readyz`
//! and `/metrics`.
//!
//! One mio event-loop thread owns the listener and every client connection (keep-alive,
//! pipelining, slow or idle clients cost no thread); complete requests for X-Ray are handed to a
//! small pool of worker threads that make the signed, blocking upstream call and hand the answer
//! back through a channel and a [`mio::Waker`]. Local endpoints are answered on the loop.
//!
//! Whatever reaches the port (a hostile pod, slowloris clients, a slow upstream), memory stays
//! bounded and `/healthz` / `/readyz` keep answering:
//! - **Memory.** Bytes held for clients (read buffers, bodies waiting for or in an upstream
//!   call, answers a client is slow to take) are at most [`FREE_PER_CONNECTION`] per connection
//!   plus a shared pool of [`Options::buffer_pool`] (4 MiB): about 8 MiB for 1,024
//!   connections, whatever the budget. A request that needs more while the pool is spent gets
//!   `503 ProxyBusy` and its connection is closed, and so is a connection whose unread answers
//!   the pool cannot hold; buffers are shrunk once a request is consumed and freed when a
//!   connection is idle or closed. A health probe fits in the free part (and its answer in the
//!   kernel's socket buffer), so it never waits for the pool.
//! - **Connections and file descriptors.** The daemon raises its soft open-files limit at start
//!   ([`raise_fd_limit`]); the port keeps at most [`Options::max_connections`] client
//!   connections, fewer when the open-files limit would not leave an eighth (at least 64) of the
//!   descriptors to uploads, credentials and files. A connection arriving at the limit takes the
//!   place of the longest-idle one (else of the oldest unfinished request), so a new client, a
//!   probe in particular, is always served. When accepting fails for lack of descriptors anyway,
//!   the port lowers its limit below what it holds, closes connections to get there, and accepts
//!   again (no busy loop: a failed accept is retried on the next tick).
//! - **Time.** Requests must arrive within `read_timeout`; slow upstream calls run on workers,
//!   never on the loop.
//!
//! - [`http`]: pure request parsing and response encoding (fuzzable).
//! - [`routes`]: which paths are served, and how.
//! - [`forward`]: the signed call to X-Ray.

mod fdlimit;
pub mod forward;
pub mod http;
pub mod routes;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub use forward::{DEFAULT_UPSTREAM_TIMEOUT, Upstream};
pub use http::Limits;

use crate::stats::Stats;

/// Tunables of the TCP port. `Default` gives the production values.
#[derive(Debug, Clone)]
pub struct Options {
    /// Forward every `POST` path to X-Ray, not only the sampling APIs (`--proxy-allow-all`).
    pub allow_all: bool,
    /// Largest request body accepted (413 above).
    pub max_body: usize,
    /// Time allowed to receive a whole request once its first byte arrived, and to write a
    /// response (408 / close when exceeded): slow clients cannot hold the port.
    pub read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// `/readyz` fails once uploads have been failing (no success in between) for longer.
    pub ready_failure_threshold: Duration,
    /// Threads making upstream calls (concurrent forwarded requests).
    pub workers: usize,
    /// Forwarded requests waiting for a worker before new ones get 503.
    pub queue: usize,
    /// Open client connections (fewer if the open-files limit is low); a new one takes the place
    /// of the longest-idle one.
    pub max_connections: usize,
    /// Bytes of requests held for all connections together beyond [`FREE_PER_CONNECTION`] each
    /// (503 when spent).
    pub buffer_pool: usize,
}

/// Request bytes each connection may hold without drawing on [`Options::buffer_pool`]: enough
/// for a probe or a typical sampling call.
pub const FREE_PER_CONNECTION: usize = 4 * 1024;

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_all: false,
            max_body: Limits::default().max_body,
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            ready_failure_threshold: Duration::from_secs(300),
            workers: 4,
            queue: 256,
            max_connections: 1024,
            buffer_pool: 4 * 1024 * 1024,
        }
    }
}

/// Raises the soft open-files limit towards the hard limit (see the module doc); called once at
/// start-up.
pub fn raise_fd_limit() {
    match fdlimit::raise() {
        Some((before, after)) if after > before => {
            crate::debug!("Raised the open-files limit from {before} to {after}")
        }
        Some((soft, _)) => crate::debug!("Open-files limit: {soft}"),
        None => crate::debug!("Cannot read the open-files limit"),
    }
}

/// Everything the server needs.
pub struct Config {
    /// `-t` address (`host:port`, IPv4 or `[IPv6]`).
    pub bind: String,
    pub options: Options,
    /// Where sampling calls go; `None` when segments go to a local sink.
    pub upstream: Option<Upstream>,
    /// The daemon's counters (read by `/metrics` and `/readyz`; proxy requests are counted here).
    pub stats: Arc<Stats>,
    /// The memory budget, reported by `/metrics`.
    pub budget_bytes: u64,
    /// Segments go to a local sink: `/readyz` does not need credentials.
    pub local_sink: bool,
}

/// The running server. Dropping it (or [`Server::stop`]) closes the listener and every client
/// connection; worker threads finish their current upstream call and exit.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `cfg.bind` and starts serving. A bind failure is an error naming the address (the
    /// daemon exits 1 on it). Logs `Starting proxy http server on <addr>` with the bound address.
    pub fn start(cfg: Config) -> Result<Server, String> {
        let addr = crate::config::parse_addr("-t/--bind-tcp", &cfg.bind).map_err(|e| e.0)?;
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            format!(
                "Cannot listen on TCP {} for the sampling proxy: {e}. Use -t to choose another address",
                cfg.bind
            )
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("Cannot read the TCP address of the sampling proxy: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("Cannot set up the TCP listener: {e}"))?;
        let (stop, waker, thread) = server::spawn(listener, cfg)?;
        crate::info!("Starting proxy http server on {addr}");
        Ok(Server {
            addr,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the event loop to close every connection.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

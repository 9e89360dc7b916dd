//! `--raw`: a receiver that does nothing but `recvmmsg` and count, with the same socket setup as
//! xrayd's ingest (receive buffer, batch size). What it sustains is the machine's limit.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use xrayd::ingest::RECV_BATCH;
use xrayd::ingest::recvmmsg::{DATAGRAM_BUFFER, RecvBatch, enable_gro, set_receive_buffer};

/// A running receiver thread.
pub struct RawReceiver {
    /// UDP port it listens on (127.0.0.1).
    pub port: u16,
    /// Receive buffer the kernel granted.
    pub receive_buffer: usize,
    /// `/proc/PID/task/TID/stat` of the thread, for its CPU time.
    pub stat_path: String,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl RawReceiver {
    /// Binds a socket on a free loopback port and starts receiving on a thread pinned to `cpus`
    /// (unpinned when empty).
    pub fn start(cpus: Vec<usize>, receive_buffer: usize) -> io::Result<RawReceiver> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        let granted = set_receive_buffer(socket.as_raw_fd(), receive_buffer)?;
        // The same socket set-up as xrayd's ingest, so the limit is measured like for like.
        let _ = enable_gro(socket.as_raw_fd());
        let port = socket.local_addr()?.port();
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (c, s) = (count.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("bench-raw-recv".into())
            .spawn(move || {
                if !cpus.is_empty() {
                    let _ = xrayd_kit::pin_current_thread(&cpus);
                }
                let _ = tid_tx.send(std::fs::read_link("/proc/thread-self").ok());
                let _ = receive(socket, &c, &s);
            })?;
        let me = tid_rx
            .recv_timeout(Duration::from_secs(5))
            .ok()
            .flatten()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "self".into());
        Ok(RawReceiver {
            port,
            receive_buffer: granted,
            stat_path: format!("/proc/{me}/stat"),
            count,
            stop,
            handle: Some(handle),
        })
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.count.load(Relaxed)
    }
}

impl Drop for RawReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn receive(socket: UdpSocket, count: &AtomicU64, stop: &AtomicBool) -> io::Result<()> {
    let mut socket = mio::net::UdpSocket::from_std(socket);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(4);
    let mut batch = RecvBatch::new(RECV_BATCH, DATAGRAM_BUFFER);
    let fd = socket.as_raw_fd();
    while !stop.load(Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        loop {
            match batch.recv(fd) {
                Ok(n) => {
                    count.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_arrives() {
        let r = RawReceiver::start(vec![], 1 << 20).unwrap();
        assert!(r.receive_buffer > 0);
        assert!(std::fs::metadata(&r.stat_path).is_ok(), "{}", r.stat_path);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..10 {
            tx.send_to(b"x", ("127.0.0.1", r.port)).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while r.received() < 10 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(r.received(), 10);
    }
}

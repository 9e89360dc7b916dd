//! The few system calls the harness needs that std does not offer: `sendmmsg`, UDP GSO and the
//! clock tick rate (CPU affinity and signals are the kit's, with its process runner). Every `unsafe`
//! of the harness lives here.

use std::io;
use std::os::fd::RawFd;

/// Most segments the kernel accepts in one GSO send (`UDP_MAX_SEGMENTS`, 64 before Linux 6.9).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// Largest UDP payload of one GSO send (IPv4: 65,535 minus IP and UDP headers).
pub const GSO_MAX_BYTES: usize = 65_507;

/// Reusable headers for `sendmmsg` on a connected socket.
pub struct SendBatch {
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    /// Empty headers; they grow to the largest call made.
    pub fn new() -> Self {
        SendBatch {
            iovecs: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Sends `buf` split into messages of `chunk` bytes (the last one may be shorter) with one
    /// `sendmmsg` call on the connected socket `fd`. Returns the bytes of the messages the kernel
    /// took (whole messages only; it may take fewer than all).
    pub fn send(&mut self, fd: RawFd, buf: &[u8], chunk: usize) -> io::Result<usize> {
        let chunk = chunk.max(1);
        let n = buf.len().div_ceil(chunk);
        if n == 0 {
            return Ok(0);
        }
        self.iovecs.clear();
        self.headers.clear();
        for c in buf.chunks(chunk) {
            self.iovecs.push(libc::iovec {
                iov_base: c.as_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            });
        }
        for i in 0..n {
            // SAFETY: mmsghdr is a plain C struct of integers and raw pointers; all-zero bytes are
            // a valid value (null name and control pointers, zero lengths and flags).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = &mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1 as _;
            self.headers.push(h);
        }
        // SAFETY: `headers` holds `n` initialised mmsghdr values, each pointing at one iovec of
        // `iovecs` (not moved or resized until this call returns) that describes a sub-slice of
        // `buf`, which is borrowed for the whole call. The kernel only reads those buffers (the
        // `iov_base` cast to *mut is never written through) and writes `msg_len` in the headers.
        let sent = unsafe { libc::sendmmsg(fd, self.headers.as_mut_ptr(), n as _, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.iovecs[..sent as usize].iter().map(|v| v.iov_len).sum())
    }
}

/// UDP GSO for the sender: the daemon's socket module sets it, beside its receiving twin (GRO).
pub use xrayd::ingest::recvmmsg::set_udp_segment;

/// Clock ticks per second, the unit of utime/stime in /proc (USER_HZ, 100 almost everywhere).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf takes an integer name and has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn sendmmsg_splits_a_buffer_into_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut b = SendBatch::new();
        assert_eq!(b.send(tx.as_raw_fd(), b"aaabbbcc", 3).unwrap(), 8);
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = rx.recv(&mut buf).unwrap();
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got, vec![b"aaa".to_vec(), b"bbb".to_vec(), b"cc".to_vec()]);
        assert_eq!(b.send(tx.as_raw_fd(), b"", 3).unwrap(), 0);
    }

    #[test]
    fn gso_send_arrives_as_separate_datagrams_or_is_refused_cleanly() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        if set_udp_segment(tx.as_raw_fd(), 4).is_err() {
            return; // No GSO on this kernel: the caller falls back to plain sendmmsg.
        }
        let mut b = SendBatch::new();
        match b.send(tx.as_raw_fd(), b"0000111122", 10) {
            Ok(n) => {
                assert_eq!(n, 10);
                let mut buf = [0u8; 16];
                let mut got = Vec::new();
                for _ in 0..3 {
                    let n = rx.recv(&mut buf).unwrap();
                    got.push(buf[..n].to_vec());
                }
                assert_eq!(
                    got,
                    vec![b"0000".to_vec(), b"1111".to_vec(), b"22".to_vec()]
                );
            }
            Err(e) => eprintln!("GSO send refused: {e}"),
        }
    }

    #[test]
    fn clock_ticks_is_positive() {
        assert!(clock_ticks() > 0);
    }
}

//! Batched UDP receive: one `recvmmsg` call fills many buffers. The only `unsafe` of ingest.

use std::io;
use std::os::fd::RawFd;

/// Size of each receive buffer: the largest UDP payload fits (IPv4 max is 65,507 bytes).
pub const DATAGRAM_BUFFER: usize = 65_536;

/// Reusable buffers and headers for up to `n` datagrams per call.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    lens: Vec<(usize, bool)>,
    filled: usize,
}

impl RecvBatch {
    /// Buffers for `n` datagrams of up to `buffer_size` bytes each.
    pub fn new(n: usize, buffer_size: usize) -> Self {
        let n = n.max(1);
        let bufs: Vec<Box<[u8]>> = (0..n)
            .map(|_| vec![0u8; buffer_size].into_boxed_slice())
            .collect();
        let iovecs = (0..n)
            .map(|_| libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            })
            .collect();
        let headers = (0..n).map(|_| empty_mmsghdr()).collect();
        RecvBatch {
            bufs,
            iovecs,
            headers,
            lens: vec![(0, false); n],
            filled: 0,
        }
    }

    /// Receives as many datagrams as are waiting (up to the batch size) without blocking.
    /// Returns how many arrived; `WouldBlock` when none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..self.bufs.len() {
            self.iovecs[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            self.iovecs[i].iov_len = self.bufs[i].len();
            let mut h = empty_mmsghdr();
            h.msg_hdr.msg_iov = &mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1 as _;
            self.headers[i] = h;
        }
        // SAFETY: `headers` holds `headers.len()` initialised mmsghdr values whose single iovec
        // points at a live, exclusively borrowed buffer of `iov_len` bytes owned by `self.bufs`;
        // no name/control buffers are given; MSG_DONTWAIT makes the call non-blocking and a null
        // timeout is allowed. The kernel writes only within those buffers and the headers.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as _,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.filled = 0;
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let h = &self.headers[i];
            let len = (h.msg_len as usize).min(self.bufs[i].len());
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lens[i] = (len, truncated);
        }
        self.filled = n;
        Ok(n)
    }

    /// The datagrams of the last call: bytes and whether each was truncated.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], bool)> {
        (0..self.filled).map(|i| (&self.bufs[i][..self.lens[i].0], self.lens[i].1))
    }
}

/// Asks for a receive buffer of `bytes` (SO_RCVBUFFORCE when privileged, else SO_RCVBUF, which the
/// kernel caps at `net.core.rmem_max`) and returns the size the kernel granted.
pub fn set_receive_buffer(fd: RawFd, bytes: usize) -> io::Result<usize> {
    let want = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    let forced = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want);
    if forced.is_err() {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, want)?;
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `got`, a live c_int, and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(got.max(0) as usize)
}

/// Sets an integer socket option at `level` (`SOL_SOCKET`, `SOL_UDP`, ...).
pub fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads exactly size_of::<c_int>() bytes from `value`, a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn empty_mmsghdr() -> libc::mmsghdr {
    // Zeroed field by field: musl and glibc lay msghdr out differently (padding fields).
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers, for which all-zero bytes
    // are a valid value (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn receives_several_datagrams_in_one_call_and_flags_truncation() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = rx.local_addr().unwrap();
        let mut batch = RecvBatch::new(8, 16);
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        tx.send_to(b"one", addr).unwrap();
        tx.send_to(b"", addr).unwrap();
        tx.send_to(b"0123456789abcdefXYZ", addr).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let n = batch.recv(rx.as_raw_fd()).unwrap();
        assert_eq!(n, 3);
        let got: Vec<(Vec<u8>, bool)> = batch.datagrams().map(|(d, t)| (d.to_vec(), t)).collect();
        assert_eq!(got[0], (b"one".to_vec(), false));
        assert_eq!(got[1], (Vec::new(), false));
        assert_eq!(got[2], (b"0123456789abcdef".to_vec(), true));
    }
}

//! Batched UDP receive: one `recvmmsg` call fills many buffers. The only `unsafe` of ingest.
//!
//! With UDP GRO turned on ([`enable_gro`]) the kernel may hand over several datagrams of one sender
//! in one buffer, all of the size it reports in a control message except the last; [`RecvBatch`]
//! splits them again, so callers always see single datagrams.

use std::io;
use std::os::fd::RawFd;

/// Size of each receive buffer: the largest UDP payload fits (IPv4 max is 65,507 bytes).
pub const DATAGRAM_BUFFER: usize = 65_536;

/// `UDP_GRO` (linux/udp.h); the libc crate does not export it for every target.
const UDP_GRO: libc::c_int = 104;

/// `UDP_SEGMENT` (linux/udp.h); the libc crate only exports it for uClibc.
const UDP_SEGMENT: libc::c_int = 103;

/// Room for the control messages of one receive (the GRO segment size needs 24 bytes).
const CONTROL_WORDS: usize = 8;

/// One received buffer: its length, whether it was truncated, and the size of the datagrams it
/// holds when the kernel coalesced several (0: a single datagram).
#[derive(Clone, Copy, Default)]
struct Received {
    len: usize,
    truncated: bool,
    segment: usize,
}

/// Reusable buffers and headers for up to `n` buffers per call.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    controls: Vec<[u64; CONTROL_WORDS]>,
    received: Vec<Received>,
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
            controls: vec![[0; CONTROL_WORDS]; n],
            received: vec![Received::default(); n],
            filled: 0,
        }
    }

    /// Receives as many buffers as are waiting (up to the batch size) without blocking.
    /// Returns how many datagrams arrived; `WouldBlock` when none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..self.bufs.len() {
            self.iovecs[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            self.iovecs[i].iov_len = self.bufs[i].len();
            let mut h = empty_mmsghdr();
            h.msg_hdr.msg_iov = &mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1 as _;
            h.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = std::mem::size_of_val(&self.controls[i]) as _;
            self.headers[i] = h;
        }
        // SAFETY: `headers` holds `headers.len()` initialised mmsghdr values whose single iovec
        // points at a live, exclusively borrowed buffer of `iov_len` bytes owned by `self.bufs`,
        // and whose control buffer points at `msg_controllen` live, exclusively borrowed,
        // word-aligned bytes owned by `self.controls`; no name buffer is given; MSG_DONTWAIT makes
        // the call non-blocking and a null timeout is allowed. The kernel writes only within those
        // buffers and the headers.
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
        let mut datagrams = 0;
        for i in 0..n {
            let h = &self.headers[i];
            let len = (h.msg_len as usize).min(self.bufs[i].len());
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // A usize with glibc, a u32 with musl.
            #[allow(clippy::unnecessary_cast)]
            let control_len = (h.msg_hdr.msg_controllen as usize).min(CONTROL_WORDS * 8);
            let segment = if control_len == 0 {
                0
            } else {
                let mut bytes = [0u8; CONTROL_WORDS * 8];
                for (dst, w) in bytes.chunks_exact_mut(8).zip(&self.controls[i]) {
                    dst.copy_from_slice(&w.to_ne_bytes());
                }
                gro_segment_size(&bytes[..control_len]).unwrap_or(0)
            };
            let r = Received {
                len,
                truncated,
                segment,
            };
            datagrams += r.pieces();
            self.received[i] = r;
        }
        self.filled = n;
        Ok(datagrams)
    }

    /// Buffers the last call filled (fewer than offered: the socket was emptied).
    pub fn buffers(&self) -> usize {
        self.filled
    }

    /// The datagrams of the last call: bytes and whether each was truncated.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], bool)> {
        (0..self.filled).flat_map(move |i| {
            let r = self.received[i];
            let buf = &self.bufs[i][..r.len];
            let step = r.step();
            let last = r.pieces() - 1;
            (0..=last).map(move |k| {
                let start = (k * step).min(buf.len());
                let end = (start + step).min(buf.len());
                (&buf[start..end], r.truncated && k == last)
            })
        })
    }
}

impl Received {
    /// Bytes per datagram in this buffer (at least 1).
    fn step(self) -> usize {
        if self.segment == 0 || self.segment >= self.len {
            self.len.max(1)
        } else {
            self.segment
        }
    }

    /// Datagrams in this buffer (an empty datagram counts as one).
    fn pieces(self) -> usize {
        self.len.div_ceil(self.step()).max(1)
    }
}

/// Asks the kernel to coalesce datagrams of one flow (UDP GRO, Linux 5.0+): fewer, larger
/// receives for senders that batch, e.g. with UDP GSO. Fails on kernels without it.
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, UDP_GRO, 1)
}

/// The sending side of GRO (UDP GSO, Linux 4.18+): turns it on for every send of `fd`, each
/// message cut into datagrams of `size` bytes by the kernel (`0` turns it off). Fails with
/// `ENOPROTOOPT` on kernels without it. For senders that test or load the receive path.
pub fn set_udp_segment(fd: RawFd, size: u16) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, UDP_SEGMENT, libc::c_int::from(size))
}

/// The datagram size of a coalesced receive, from its control messages (`SOL_UDP`/`UDP_GRO`, an
/// int). Parsed by the kernel's layout: `cmsg_len` as a native word, then level and type as ints,
/// then the data aligned to a word.
fn gro_segment_size(control: &[u8]) -> Option<usize> {
    const WORD: usize = std::mem::size_of::<usize>();
    const HEADER: usize = WORD + 8;
    let data_at = HEADER.next_multiple_of(WORD);
    let int = |b: &[u8], at: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let mut off = 0;
    while off + HEADER <= control.len() {
        let len = usize::from_ne_bytes(control.get(off..off + WORD)?.try_into().ok()?);
        if len < HEADER || len > control.len() - off {
            return None;
        }
        let level = int(control, off + WORD)?;
        let kind = int(control, off + WORD + 4)?;
        if level == libc::SOL_UDP && kind == UDP_GRO && len >= data_at + 4 {
            let size = int(control, off + data_at)?;
            return usize::try_from(size).ok().filter(|&s| s > 0);
        }
        off += len.next_multiple_of(WORD);
    }
    None
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

    #[test]
    fn coalesced_datagrams_come_out_one_by_one() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_gro(rx.as_raw_fd()).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Ten-byte datagrams cut by the kernel from one send (UDP GSO), then a plain one.
        set_udp_segment(tx.as_raw_fd(), 10).unwrap();
        tx.send_to(
            b"aaaaaaaaaabbbbbbbbbbcccccccccc12345",
            rx.local_addr().unwrap(),
        )
        .unwrap();
        set_udp_segment(tx.as_raw_fd(), 0).unwrap();
        tx.send_to(b"plain", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut batch = RecvBatch::new(8, DATAGRAM_BUFFER);
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 5);
        let got: Vec<Vec<u8>> = batch.datagrams().map(|(d, _)| d.to_vec()).collect();
        assert_eq!(
            got,
            [
                &b"aaaaaaaaaa"[..],
                b"bbbbbbbbbb",
                b"cccccccccc",
                b"12345",
                b"plain"
            ]
        );
        // The kernel handed the first four over in one buffer, with their size.
        assert_eq!(batch.filled, 2);
        assert_eq!(batch.received[0].segment, 10);
        assert_eq!(batch.received[1].segment, 0);
    }

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        const WORD: usize = std::mem::size_of::<usize>();
        let data_at = (WORD + 8).next_multiple_of(WORD);
        let mut b = (data_at + data.len()).to_ne_bytes()[..WORD].to_vec();
        b.extend(level.to_ne_bytes());
        b.extend(kind.to_ne_bytes());
        b.resize(data_at, 0);
        b.extend(data);
        b.resize(b.len().next_multiple_of(WORD), 0);
        b
    }

    #[test]
    fn reads_the_gro_size_and_ignores_other_or_broken_control_messages() {
        let gro = cmsg(libc::SOL_UDP, UDP_GRO, &1000i32.to_ne_bytes());
        assert_eq!(gro_segment_size(&gro), Some(1000));
        let mut two = cmsg(libc::SOL_IP, 8, &[1, 2, 3, 4]);
        two.extend(&gro);
        assert_eq!(gro_segment_size(&two), Some(1000));
        assert_eq!(gro_segment_size(&[]), None);
        assert_eq!(gro_segment_size(&gro[..gro.len() - 8]), None);
        assert_eq!(
            gro_segment_size(&cmsg(libc::SOL_UDP, UDP_GRO, &0i32.to_ne_bytes())),
            None
        );
        let mut huge = gro.clone();
        huge[..std::mem::size_of::<usize>()].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(gro_segment_size(&huge), None);
        let mut tiny = gro.clone();
        tiny[..std::mem::size_of::<usize>()].copy_from_slice(&3usize.to_ne_bytes());
        assert_eq!(gro_segment_size(&tiny), None);
    }

    #[test]
    fn split_buffers_flag_only_their_last_piece_as_truncated() {
        // Three filled buffers as the kernel would leave them: a coalesced one that was
        // truncated, an empty datagram, and a single one whose reported size exceeds its length.
        let mut batch = RecvBatch::new(3, 32);
        batch.bufs[0][..25].copy_from_slice(b"aaaaaaaaaabbbbbbbbbbccccc");
        batch.bufs[2][..7].copy_from_slice(b"single!");
        batch.received = vec![
            Received {
                len: 25,
                truncated: true,
                segment: 10,
            },
            Received::default(),
            Received {
                len: 7,
                truncated: false,
                segment: 100,
            },
        ];
        batch.filled = 3;
        let got: Vec<(&[u8], bool)> = batch.datagrams().collect();
        assert_eq!(
            got,
            [
                (&b"aaaaaaaaaa"[..], false),
                (b"bbbbbbbbbb", false),
                (b"ccccc", true),
                (b"", false),
                (b"single!", false),
            ]
        );
        let pieces: usize = batch.received.iter().map(|r| r.pieces()).sum();
        assert_eq!(pieces, got.len());
    }
}

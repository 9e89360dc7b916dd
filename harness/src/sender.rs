//! The UDP load generator: benchmark segments sent with `sendmmsg`, paced or unpaced. The even load
//! (the default) models many SDK clients: datagrams spread evenly over time, at most `rate/4000`
//! per call, round-robin over several client sockets (each its own source port). The bursty load
//! sends about a millisecond's worth per call from one socket, optionally as UDP GSO
//! super-datagrams.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::pace;
use super::sys::{self, GSO_MAX_BYTES, GSO_MAX_SEGMENTS, SendBatch};
use xrayd_kit::bench_segment::{Template, format_epoch_us, make_id};

/// What to send in one step.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Datagrams per second; 0 = as fast as possible.
    pub rate: u64,
    /// How long to send (ignored when `count` is set).
    pub duration: Duration,
    /// Send exactly this many datagrams, however long it takes.
    pub count: Option<u64>,
    /// Messages per `sendmmsg` call of the bursty load and of an unpaced even load.
    pub batch: usize,
    /// Bursty load: one socket, one-millisecond slices of up to `batch` messages.
    pub bursty: bool,
    /// Client sockets of the even load, used in turn.
    pub clients: usize,
    /// Use UDP GSO when the kernel has it (a bursty load).
    pub gso: bool,
    /// Step number, carried in every segment id.
    pub step: u16,
}

/// What was sent.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    /// Datagrams the kernel took (the offered load).
    pub sent: u64,
    /// From the first send to the last.
    pub elapsed: Duration,
    /// Failed `sendmmsg` calls (e.g. ECONNREFUSED while nobody listened).
    pub errors: u64,
    /// `sendmmsg` calls made.
    pub calls: u64,
    /// Whether GSO was used.
    pub gso: bool,
    /// Why GSO was not used although asked for.
    pub gso_note: Option<String>,
}

impl SendReport {
    /// Datagrams per second actually sent.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.sent as f64 / s } else { 0.0 }
    }
}

/// Largest burst of one GSO `sendmmsg` call, in datagrams.
const GSO_MAX_BURST: usize = 1024;

/// How long past its duration a paced step may run to send its last datagrams.
const LATE: Duration = Duration::from_millis(50);

/// Consecutive failed calls after which the step gives up.
const MAX_CONSECUTIVE_ERRORS: u64 = 10_000;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Sends one step's load to `target`. Stops early when `stop` is set.
pub fn send(
    target: SocketAddr,
    template: &Template,
    cfg: &SendConfig,
    stop: &AtomicBool,
) -> io::Result<SendReport> {
    let local: SocketAddr = if target.is_ipv4() {
        "127.0.0.1:0".parse().map_err(io::Error::other)?
    } else {
        "[::1]:0".parse().map_err(io::Error::other)?
    };
    let bursty = cfg.bursty || cfg.gso;
    let clients = if bursty { 1 } else { cfg.clients.max(1) };
    let socks = (0..clients)
        .map(|_| {
            let sock = UdpSocket::bind(local)?;
            sock.connect(target)?;
            Ok(sock)
        })
        .collect::<io::Result<Vec<UdpSocket>>>()?;
    let fds: Vec<_> = socks.iter().map(AsRawFd::as_raw_fd).collect();
    let mut next = 0usize;
    let fd = fds[0];
    let size = template.size();
    let mut report = SendReport::default();

    // GSO: each message carries `segs` datagrams, cut by the kernel.
    let mut segs = 1usize;
    if cfg.gso {
        let k = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / size);
        match u16::try_from(size) {
            _ if k < 2 => {
                report.gso_note = Some(format!("segments of {size} bytes are too large for GSO"))
            }
            Err(_) => report.gso_note = Some("segment too large for GSO".into()),
            Ok(s) => match sys::set_udp_segment(fd, s) {
                Ok(()) => segs = k,
                Err(e) => report.gso_note = Some(format!("UDP_SEGMENT unavailable: {e}")),
            },
        }
    }
    let batch = cfg.batch.max(1);
    let max_burst = if segs > 1 {
        (batch * segs).min(GSO_MAX_BURST)
    } else if bursty {
        batch
    } else {
        pace::even_slice(cfg.rate, batch as u64) as usize
    } as u64;
    let mut buf: Vec<u8> = Vec::with_capacity(max_burst as usize * size);
    for _ in 0..max_burst {
        buf.extend_from_slice(&template.bytes);
    }
    let mut mm = SendBatch::new();
    let total = pace::step_total(cfg.rate, cfg.duration, cfg.count);
    let slice = if bursty {
        pace::slice(cfg.rate, max_burst)
    } else {
        max_burst
    };
    let mut consecutive_errors = 0u64;
    let mut gso_confirmed = segs == 1;
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        if stop.load(Relaxed) || total == Some(sent) {
            break;
        }
        let elapsed = start.elapsed();
        // Time-bound steps end on time; a paced one may finish its last slice, or give up a
        // little late when the sender cannot keep up with the rate.
        let late = if cfg.rate == 0 { Duration::ZERO } else { LATE };
        if cfg.count.is_none() && elapsed >= cfg.duration + late {
            break;
        }
        let remaining = total.map_or(u64::MAX, |t| t - sent);
        let want = slice.min(remaining);
        let n = pace::burst(pace::due(cfg.rate, elapsed), sent, max_burst, total);
        if n < want {
            let at = pace::due_at(cfg.rate, sent + want);
            std::thread::sleep(at.saturating_sub(elapsed));
            continue;
        }
        let ts = format_epoch_us(now_us());
        for i in 0..n as usize {
            template.patch(
                &mut buf[i * size..(i + 1) * size],
                make_id(cfg.step, sent + i as u64),
                &ts,
            );
        }
        report.calls += 1;
        let fd = fds[next];
        next = (next + 1) % fds.len();
        match mm.send(fd, &buf[..n as usize * size], segs * size) {
            Ok(bytes) => {
                consecutive_errors = 0;
                gso_confirmed = true;
                sent += (bytes / size) as u64;
            }
            Err(e) => {
                report.errors += 1;
                consecutive_errors += 1;
                let gso_refused = matches!(
                    e.raw_os_error(),
                    Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP)
                );
                if segs > 1 && !gso_confirmed && gso_refused {
                    // The route or device does not take GSO: fall back to one datagram per message.
                    let _ = sys::set_udp_segment(fd, 0);
                    report.gso_note = Some(format!(
                        "GSO send refused ({e}); fell back to plain sendmmsg"
                    ));
                    segs = 1;
                    continue;
                }
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("sendmmsg keeps failing: {e}"),
                    ));
                }
                if e.raw_os_error() != Some(libc::ECONNREFUSED) {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
    }
    report.elapsed = start.elapsed();
    report.sent = sent;
    report.gso = segs > 1;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xrayd_kit::bench_segment::{HEADER, find_sub, parse_hex16, split_id};

    /// Sends 300 datagrams of 500 bytes at 20k/s as `shape` configures, to a fresh socket;
    /// returns the report and, in arrival order, each datagram's step, sequence number and source
    /// port.
    fn send_300(shape: impl FnOnce(&mut SendConfig)) -> (SendReport, Vec<(u16, u64, u16)>) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        xrayd::ingest::recvmmsg::set_receive_buffer(rx.as_raw_fd(), 4 << 20).unwrap();
        let t = Template::new(500).unwrap();
        let mut cfg = SendConfig {
            rate: 20_000,
            duration: Duration::from_secs(10),
            count: Some(300),
            batch: 16,
            bursty: true,
            clients: 1,
            gso: false,
            step: 9,
        };
        shape(&mut cfg);
        let r = send(rx.local_addr().unwrap(), &t, &cfg, &AtomicBool::new(false)).unwrap();
        assert_eq!(r.sent, 300);
        // 300 datagrams at 20k/s take about 15 ms; allow for a slow machine but catch no pacing.
        assert!(r.elapsed >= Duration::from_millis(10), "{:?}", r.elapsed);
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::new();
        while out.len() < 300 {
            let (len, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(len, 500);
            assert!(buf.starts_with(HEADER));
            // The document is not escaped here: look the id up directly.
            let doc = &buf[HEADER.len()..len];
            let at = find_sub(doc, b"\"id\":\"").unwrap() + 6;
            let (step, seq) = split_id(parse_hex16(&doc[at..at + 16]).unwrap());
            out.push((step, seq, from.port()));
        }
        (r, out)
    }

    fn run(gso: bool) {
        let (r, got) = send_300(|c| c.gso = gso);
        let got: Vec<(u16, u64)> = got.iter().map(|&(step, seq, _)| (step, seq)).collect();
        let want: Vec<(u16, u64)> = (0..300).map(|s| (9, s)).collect();
        assert_eq!(got, want);
        if gso {
            assert!(r.gso || r.gso_note.is_some());
        }
    }

    #[test]
    fn sends_an_exact_count_in_sequence() {
        run(false);
    }

    #[test]
    fn sends_with_gso_or_falls_back() {
        run(true);
    }

    #[test]
    fn even_load_spreads_small_calls_over_every_client_socket() {
        let (r, got) = send_300(|c| {
            (c.bursty, c.clients, c.batch, c.step) = (false, 4, 64, 3);
        });
        // At most 20,000 / 4,000 = 5 datagrams per call.
        assert_eq!(r.calls, 60, "{r:?}");
        for (i, &(step, seq, _)) in got.iter().enumerate() {
            assert_eq!((step, seq), (3, i as u64));
        }
        // Calls go round-robin: datagram i comes from client (i / 5) % 4.
        let ports: Vec<u16> = got.iter().map(|&(_, _, port)| port).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 4, "{distinct:?}");
        for (i, p) in ports.iter().enumerate() {
            assert_eq!(*p, ports[(i / 5 % 4) * 5], "datagram {i}");
        }
    }

    #[test]
    fn unpaced_duration_stops_in_time() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = Template::new(1000).unwrap();
        let cfg = SendConfig {
            rate: 0,
            duration: Duration::from_millis(50),
            count: None,
            batch: 64,
            bursty: true,
            clients: 1,
            gso: false,
            step: 0,
        };
        let r = send(rx.local_addr().unwrap(), &t, &cfg, &AtomicBool::new(false)).unwrap();
        assert!(r.sent > 0);
        assert!(r.elapsed < Duration::from_secs(5));
    }
}

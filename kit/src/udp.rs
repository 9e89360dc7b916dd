//! Sending segments to the daemon over real UDP sockets: the datagram format (header and
//! document), paced senders, and the documents the tests send.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header SDKs send before each document.
pub const HEADER: &str = "{\"format\":\"json\",\"version\":1}\n";

/// How fast to send: a pause after every `burst` datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub burst: usize,
    pub pause: Duration,
}

impl Pace {
    /// Gentle enough that the kernel's receive buffer never overflows on loopback.
    pub const GENTLE: Pace = Pace {
        burst: 32,
        pause: Duration::from_millis(1),
    };
    /// Chunks of 100 datagrams 50 ms apart: even a slow debug build drains its
    /// socket between chunks, so several MB can be sent without kernel drops.
    pub const CHUNKED: Pace = Pace {
        burst: 100,
        pause: Duration::from_millis(50),
    };
    /// No pauses at all.
    pub const FLAT_OUT: Pace = Pace {
        burst: usize::MAX,
        pause: Duration::ZERO,
    };
}

/// The header as the AWS SDKs write it (with spaces).
pub const SDK_HEADER: &str = "{\"format\": \"json\", \"version\": 1}\n";

/// `SDK_HEADER` + `doc`: the datagram an SDK sends.
pub fn sdk_datagram(doc: &str) -> Vec<u8> {
    format!("{SDK_HEADER}{doc}").into_bytes()
}

/// Sends whole datagrams to `to` as they are, pausing `gap` between them (pacing is the
/// scenario: none with `Duration::ZERO`).
pub fn send_datagrams(to: SocketAddr, datagrams: &[Vec<u8>], gap: Duration) {
    let sock = sender_for(to);
    for d in datagrams {
        send_one(&sock, to, d);
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
}

/// A small valid segment document of about `size` bytes (at least ~100): fixed times, the
/// `id` encoding `i`, padding in a `pad` field.
pub fn small_segment(i: u64, size: usize) -> String {
    let head = format!(
        "{{\"trace_id\":\"1-5759e988-bd862e3fe1be46a9{i:08x}\",\"id\":\"{i:016x}\",\"name\":\"svc\",\"start_time\":1.0,\"end_time\":2.0,\"pad\":\""
    );
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// `HEADER` + `doc`.
pub fn datagram(doc: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(HEADER.len() + doc.len());
    d.extend_from_slice(HEADER.as_bytes());
    d.extend_from_slice(doc.as_bytes());
    d
}

/// A UDP socket of the same family as `addr`.
pub fn sender_for(addr: SocketAddr) -> UdpSocket {
    let local = if addr.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    UdpSocket::bind(local).expect("bind UDP sender")
}

fn send_one(sock: &UdpSocket, addr: SocketAddr, bytes: &[u8]) {
    let mut tries = 0;
    loop {
        match sock.send_to(bytes, addr) {
            Ok(n) => {
                assert_eq!(n, bytes.len(), "short UDP send");
                return;
            }
            // ENOBUFS / EAGAIN under pressure: back off and retry.
            Err(e) if tries < 1000 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("UDP send to {addr} failed: {e}"),
        }
    }
}

/// Send one datagram per document (header + document) at a gentle pace.
pub fn send_segments<S: AsRef<str>>(addr: SocketAddr, docs: &[S]) {
    send_segments_paced(addr, docs, Pace::GENTLE)
}

pub fn send_segments_paced<S: AsRef<str>>(addr: SocketAddr, docs: &[S], pace: Pace) {
    let sock = sender_for(addr);
    for (i, d) in docs.iter().enumerate() {
        send_one(&sock, addr, &datagram(d.as_ref()));
        if pace.burst != usize::MAX && (i + 1) % pace.burst.max(1) == 0 {
            // Pacing is the point: the kernel buffer and the daemon keep up.
            std::thread::sleep(pace.pause);
        }
    }
}

/// Send raw datagrams as they are (no header added).
pub fn send_raw(addr: SocketAddr, datagrams: &[&[u8]]) {
    let sock = sender_for(addr);
    for d in datagrams {
        send_one(&sock, addr, d);
    }
}

/// Segment id for index `i`: 16 hex digits.
pub fn segment_id(i: u64) -> String {
    format!("{i:016x}")
}

/// Trace id for index `i`: `1-<8 hex current epoch>-<24 hex>`.
pub fn trace_id(i: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    format!(
        "1-{:08x}-5eed{:04x}{i:016x}",
        now as u32,
        (i >> 48) & 0xffff
    )
}

/// A realistic, valid segment document of `size` bytes (or the minimal size,
/// ~500 bytes, if `size` is smaller) whose `id` encodes `i` (see
/// `segment_index`). It contains escapes (`\"`, `\\`, `\/`, `\u00e9`, `\t`) and
/// raw UTF-8 so that any re-encoding on the way is visible.
pub fn make_segment(i: u64, size: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let start = now - 0.25;
    let end = now - 0.005;
    let build = |pad: &str| {
        format!(
            concat!(
                r#"{{"name":"xrayd-test-service","id":"{id}","trace_id":"{trace}","#,
                r#""start_time":{start:.6},"end_time":{end:.6},"origin":"AWS::EC2::Instance","#,
                r#""http":{{"request":{{"method":"GET","url":"https:\/\/example.com\/items\/{i}","#,
                r#""user_agent":"curl\/8.5.0","client_ip":"192.0.2.{ip}"}},"#,
                r#""response":{{"status":200,"content_length":{i}}}}},"#,
                r#""annotations":{{"seq":{i},"note":"quote \" backslash \\ caf\u00e9 café ✓ tab\t."}},"#,
                r#""metadata":{{"default":{{"pad":"{pad}"}}}},"#,
                r#""aws":{{"xray":{{"sdk":"xrayd-tests","sdk_version":"0.1.0"}}}}}}"#
            ),
            id = segment_id(i),
            trace = trace_id(i),
            start = start,
            end = end,
            i = i,
            ip = i % 250 + 1,
            pad = pad
        )
    };
    let base = build("");
    if size <= base.len() {
        return base;
    }
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let pad: String = (0..size - base.len())
        .map(|k| ALPHABET[(k + i as usize) % ALPHABET.len()] as char)
        .collect();
    let doc = build(&pad);
    debug_assert_eq!(doc.len(), size);
    doc
}

/// The index `i` a `make_segment` document was made from.
pub fn segment_index(doc: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(doc).ok()?;
    u64::from_str_radix(v.get("id")?.as_str()?, 16).ok()
}

/// Datagrams the kernel dropped on the UDP socket bound to `addr` for want of buffer space (the
/// `drops` column of /proc/net/udp).
pub fn kernel_drops(addr: SocketAddr) -> u64 {
    let SocketAddr::V4(v4) = addr else {
        panic!("{addr} is not IPv4")
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}
